"""Notification sinks (Discord) behind a durable outbox."""
