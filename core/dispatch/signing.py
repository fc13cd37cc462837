"""Outbound signatures: the compat `x-flow-signature-256` and Standard Webhooks headers.

The compat header signs only the body (the Bun wire format); Standard Webhooks signs
`{webhook-id}.{webhook-timestamp}.{body}`, so a receiver can reject stale or replayed deliveries. Replay
requests put the request path in the id, so one captured replay signature does not authorise another event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def flow_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_secret_bytes(secret: str) -> bytes:
    """Standard Webhooks secrets are `whsec_<base64>`; any other string is used as raw bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except ValueError:
            pass
    return secret.encode()


def standard_webhook_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    digest = hmac.new(webhook_secret_bytes(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def signed_headers(secret: str | None, msg_id: str, body: bytes) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if secret:
        headers["x-flow-signature-256"] = flow_signature(secret, body)
        headers.update(standard_webhook_headers(secret, msg_id, body))
    return headers


def verify_standard_webhook(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance: int = 300, now: int | None = None
) -> bool:
    """Receiver side (used by tests and documented for backends): constant-time, with a timestamp window."""
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    if not msg_id or not ts.isdigit():
        return False
    current = int(time.time()) if now is None else now
    if abs(current - int(ts)) > tolerance:
        return False
    expected = standard_webhook_headers(secret, msg_id, body, int(ts))["webhook-signature"]
    return any(hmac.compare_digest(expected, sig) for sig in headers.get("webhook-signature", "").split())
