"""Discord sink (spec §6) behind a durable outbox.

Intake only appends a `pending` notification to `notifications.jsonl` (id = the signal or attempt outcome,
so a restart never enqueues or posts one twice); a sender delivers it later, honouring 429 `retry_after`,
`Retry-After` and the `X-RateLimit-*` headers, retrying 5xx and network errors with back-off, and giving
up on other 4xx (a 404 webhook is never retried). Nothing here can block or roll back intake.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from patchmoi.core.config import Settings
from patchmoi.core.feeds.fetch import USER_AGENT, parse_retry_after
from patchmoi.core.records import AttemptStatus, now_iso
from patchmoi.core.store import Kind, Store

MAX_TRIES = 8
ATTEMPT_COLOURS: dict[str, int] = {
    AttemptStatus.NEEDS_INTERVENTION: 0xD29922,
    AttemptStatus.FAILED: 0xCF222E,
    AttemptStatus.BLOCKED: 0x8250DF,
    AttemptStatus.CHANGED: 0x1A7F37,
    AttemptStatus.COMPLETED: 0x57606A,
    AttemptStatus.SKIPPED: 0x57606A,
}


def _cut(value: Any, n: int) -> str:
    text = "" if value is None else str(value)
    return text[:n]


def signal_embed(signal: dict[str, Any], job_kind: str | None = None) -> dict[str, Any]:
    provider = signal.get("provider", "")
    repo = signal.get("repo") if isinstance(signal.get("repo"), dict) else {}
    assert isinstance(repo, dict)
    full = repo.get("fullName", "")
    ref = signal.get("ref") or ""
    branch = ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ""
    if signal.get("event") == "push":
        title = f"[{provider}] {full} upstream update" + (f" on {branch}" if branch else "")
    else:
        title = f"[{provider}] {full} release {signal.get('title', '')}"
    fields = [
        ("Provider", provider, True),
        ("Repo", full, True),
        ("Event", signal.get("event"), True),
        ("Branch" if branch else "Tag", branch or ref, True),
        ("Author", signal.get("author"), True),
        ("SHA", _cut(signal.get("sha"), 12), True),
        ("Queued", job_kind, True),
        ("Source", signal.get("sourceId"), False),
    ]
    embed: dict[str, Any] = {
        "title": _cut(title, 256),
        "description": _cut(signal.get("title"), 2048),
        "color": 0x24292F if provider == "github" else 0x2185D0,
        "footer": {"text": "feed watcher"},
        "fields": [{"name": n, "value": _cut(v, 1024), "inline": i} for n, v, i in fields if v],
    }
    if signal.get("url"):
        embed["url"] = signal["url"]
    if signal.get("publishedAt"):
        embed["timestamp"] = signal["publishedAt"]
    return embed


def attempt_embed(attempt: Mapping[str, Any]) -> dict[str, Any]:
    status = str(attempt.get("status"))
    upstream = attempt.get("upstreamTag") or attempt.get("upstreamRef") or _cut(attempt.get("upstreamSha"), 12)
    title = f"[patchmoi] {attempt.get('upstreamRepo') or attempt.get('eventId')} {upstream or ''}: {status}"
    fields = [("Event", attempt.get("eventId"), False), ("Operation", attempt.get("operation"), True)]
    for ref in (attempt.get("candidateRefs") or [])[:3]:
        fields.append(("Candidate", f"{ref.get('ref')} {_cut(ref.get('sha'), 12)}", False))
    return {
        "title": _cut(title, 256),
        "description": _cut(attempt.get("error") or attempt.get("message") or status, 2048),
        "color": ATTEMPT_COLOURS.get(status, 0x2185D0),
        "footer": {"text": "maintenance attempt"},
        "timestamp": attempt.get("updatedAt"),
        "fields": [{"name": n, "value": _cut(v, 1024), "inline": i} for n, v, i in fields if v],
    }


@dataclass
class Outbox:
    """Enqueue side (intake) and deliver side (sender) of Discord notifications."""

    store: Store
    settings: Settings

    @property
    def active(self) -> bool:
        return self.settings.discord_enabled and bool(self.settings.discord_webhook_url)

    def wants(self, event_name: str) -> bool:
        return self.active and event_name in self.settings.discord_notify_events

    def enqueue_signal(self, signal: dict[str, Any], job_kind: str | None = None) -> bool:
        if not self.wants(str(signal.get("event"))):
            return False
        note_id = f"signal:{signal.get('sourceId')}:{signal.get('entryId')}"
        return self._enqueue(note_id, "signal", signal_embed(signal, job_kind))

    def enqueue_attempt(self, attempt: Mapping[str, Any]) -> bool:
        if not self.wants(f"attempt.{attempt.get('status')}"):
            return False
        note_id = f"attempt:{attempt.get('id')}:{attempt.get('status')}"
        return self._enqueue(note_id, "attempt", attempt_embed(attempt))

    def _enqueue(self, note_id: str, kind: str, embed: dict[str, Any]) -> bool:
        record = {
            "id": note_id,
            "kind": kind,
            "status": "pending",
            "tries": 0,
            "body": {"username": "patch", "embeds": [embed]},
            "createdAt": now_iso(),
        }
        return self.store.append_if_absent(Kind.NOTIFICATIONS, record, note_id)

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.select(Kind.NOTIFICATIONS, limit=limit, filters={"status": "pending"})[::-1]


class DiscordSender:
    """Delivers pending notifications in order; one request in flight, rate-limit aware."""

    def __init__(self, outbox: Outbox, client: httpx.AsyncClient, *, base_backoff: float = 1.0) -> None:
        self.outbox = outbox
        self.client = client
        self.base_backoff = base_backoff
        self.not_before = 0.0
        self.sent = 0
        self.last_error: str | None = None

    async def deliver_pending(self, *, deadline: float | None = None) -> int:
        """Send what is due; returns how many were sent. Stops early at `deadline` (monotonic)."""
        url = self.outbox.settings.discord_webhook_url
        if not self.outbox.active or url is None:
            return 0
        sent = 0
        for note in self.outbox.pending():
            due = float(note.get("nextAttemptAt", 0) or 0)
            wait = max(self.not_before - time.monotonic(), due - time.time(), 0.0)
            if deadline is not None and time.monotonic() + wait > deadline:
                break
            if wait:
                await asyncio.sleep(wait)
            if await self._send(url, note):
                sent += 1
        return sent

    async def _send(self, url: str, note: dict[str, Any]) -> bool:
        tries = int(note.get("tries", 0)) + 1
        try:
            # The outbox id is this post's idempotency key. Discord itself does not dedupe webhook posts, so a
            # crash between its answer and the "sent" record repeats one post (at-least-once, keyed).
            key = hashlib.sha256(str(note.get("id")).encode()).hexdigest()[:32]
            resp = await self.client.post(
                url, json=note["body"], timeout=15.0, headers={"user-agent": USER_AGENT, "idempotency-key": key}
            )
        except httpx.HTTPError as exc:
            return self._retry(note, tries, f"Discord webhook request failed: {type(exc).__name__}")
        self._note_rate_limit(resp)
        if 200 <= resp.status_code < 300:
            self.outbox.store.append(
                Kind.NOTIFICATIONS,
                {**note, "status": "sent", "tries": tries, "sentAt": now_iso(), "httpStatus": resp.status_code},
            )
            self.sent += 1
            return True
        if resp.status_code == 429:
            delay = _retry_after_429(resp)
            self.not_before = time.monotonic() + delay
            return self._retry(note, tries - 1, f"Discord webhook returned 429; retry after {delay:.1f}s", delay)
        if resp.status_code >= 500:
            return self._retry(note, tries, f"Discord webhook returned {resp.status_code}")
        self.last_error = f"Discord webhook returned {resp.status_code}; not retried"
        self.outbox.store.append(
            Kind.NOTIFICATIONS,
            {
                **note,
                "status": "failed",
                "tries": tries,
                "httpStatus": resp.status_code,
                "error": self.last_error,
                "failedAt": now_iso(),
            },
        )
        return False

    def _retry(self, note: dict[str, Any], tries: int, error: str, delay: float | None = None) -> bool:
        self.last_error = error
        if tries >= MAX_TRIES:
            self.outbox.store.append(
                Kind.NOTIFICATIONS, {**note, "status": "failed", "tries": tries, "error": error, "failedAt": now_iso()}
            )
            return False
        backoff = delay if delay is not None else self.base_backoff * (2 ** (tries - 1))
        self.outbox.store.append(
            Kind.NOTIFICATIONS, {**note, "tries": tries, "error": error, "nextAttemptAt": time.time() + backoff}
        )
        return False

    def _note_rate_limit(self, resp: httpx.Response) -> None:
        if resp.headers.get("x-ratelimit-remaining") == "0":
            reset_after = parse_retry_after(resp.headers.get("x-ratelimit-reset-after"))
            if reset_after:
                self.not_before = max(self.not_before, time.monotonic() + reset_after)


def _retry_after_429(resp: httpx.Response) -> float:
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
            return max(0.0, min(float(body["retry_after"]), 3600.0))
    except ValueError:
        pass
    return (
        parse_retry_after(resp.headers.get("retry-after"))
        or parse_retry_after(resp.headers.get("x-ratelimit-reset-after"))
        or 1.0
    )
