"""The `workspace-http` transport: signed POSTs to a workspace backend, and run/event queries (spec §3)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from patchmoi.core.config import redact_url
from patchmoi.core.dispatch.contract import Backend, BackendQueries, Delivery, Finding, WorkspaceState
from patchmoi.core.dispatch.signing import signed_headers
from patchmoi.core.errors import BackendError
from patchmoi.core.feeds.fetch import USER_AGENT, parse_retry_after
from patchmoi.core.tls import tls_context

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_EVENTS_SUFFIX = re.compile(r"/(events|flow-events)/?$")
__all__ = ["HTTP_TRANSPORT", "BackendError", "BackendReply", "HttpBackend", "HttpTransport"]


def encode_uri_component(value: str) -> str:
    """JavaScript's `encodeURIComponent`: what codex-flows' client put in a path (it leaves `!'()*` as they are,
    which Python's `quote` would escape)."""
    return quote(value, safe="!'()*")


@dataclass
class BackendReply:
    status_code: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> list[dict[str, Any]]:
        runs = self.body.get("runs")
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []

    @property
    def run_ids(self) -> list[str]:
        ids = self.body.get("runIds")
        if isinstance(ids, list):
            return [str(i) for i in ids]
        return [str(r["id"]) for r in self.runs if r.get("id") is not None]


class HttpBackend:
    def __init__(
        self,
        base: str,
        secret: str | None,
        client: httpx.AsyncClient,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        self.base = base.rstrip("/")
        self.secret = secret
        self.client = client
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout

    def events_url(self) -> str:
        return f"{self.base}/events"

    def replay_url(self, event_id: str) -> str:
        return f"{self.base}/events/{encode_uri_component(event_id)}/replay"

    async def _post(self, url: str, body: bytes, msg_id: str) -> BackendReply:
        last: BackendError | None = None
        for attempt in range(self.attempts):
            if attempt:
                delay = self.backoff * (2 ** (attempt - 1))
                if last is not None and last.retry_after is not None:
                    delay = min(30.0, last.retry_after)
                await asyncio.sleep(delay)
            try:
                resp = await self.client.post(
                    url,
                    content=body,
                    headers={**signed_headers(self.secret, msg_id, body), "user-agent": USER_AGENT},
                    timeout=self.timeout,
                )
            except httpx.TimeoutException:
                last = BackendError(f"POST {_path(url)} timed out after {self.timeout:.0f}s")
                continue
            except httpx.HTTPError as exc:
                last = BackendError(f"POST {_path(url)} failed: {type(exc).__name__} (backend unreachable?)")
                continue
            if 200 <= resp.status_code < 300:
                return BackendReply(resp.status_code, _json_object(resp))
            detail = _error_detail(resp)
            last = BackendError(
                f"Flow backend POST {_path(url)} failed with {resp.status_code}{detail}",
                resp.status_code,
                parse_retry_after(resp.headers.get("retry-after")),
            )
            if resp.status_code not in RETRY_STATUSES:
                break
        assert last is not None
        raise last

    async def dispatch(self, event: dict[str, Any], msg_id: str | None = None) -> BackendReply:
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        return await self._post(self.events_url(), body, msg_id or str(event["id"]))

    async def replay(self, event_id: str, msg_id: str | None = None) -> BackendReply:
        # The compat body is exactly {"wait":false}; the Standard Webhooks id binds the signature to this event.
        return await self._post(self.replay_url(event_id), b'{"wait":false}', msg_id or f"replay:{event_id}")

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base}{path}"
        try:
            resp = await self.client.get(
                url,
                params={k: v for k, v in (params or {}).items() if v not in (None, "")},
                headers={"user-agent": USER_AGENT},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise BackendError(f"GET {path} failed: {type(exc).__name__} (backend unreachable?)") from None
        if not 200 <= resp.status_code < 300:
            raise BackendError(
                f"Flow backend GET {path} failed with {resp.status_code}{_error_detail(resp)}", resp.status_code
            )
        return _json_object(resp)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        body = await self.get_json(f"/runs/{encode_uri_component(run_id)}")
        run = body.get("run", body)
        return run if isinstance(run, dict) else {}

    async def list_runs(
        self, event_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        return await self.get_json("/runs", {"eventId": event_id, "status": status, "limit": limit})

    async def get_event(self, event_id: str) -> dict[str, Any]:
        return await self.get_json(f"/events/{encode_uri_component(event_id)}")

    async def list_events(self, type: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.get_json("/events", {"type": type, "limit": limit})


def _path(url: str) -> str:
    return httpx.URL(url).path


def _json_object(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"value": body}


def _error_detail(resp: httpx.Response) -> str:
    text = resp.text[:200].strip()
    return f": {text}" if text else ""


class HttpTransport:
    """`workspace-http`: Standard Webhooks-signed POSTs (bounded retries with backoff and Retry-After), runs and
    events read back over GET."""

    name = "workspace-http"
    schemes: tuple[str, ...] = ("http", "https")
    runs_here = False
    available = True
    workspace_state: WorkspaceState | None = None

    def base(self, url: str) -> str:
        return _EVENTS_SUFFIX.sub("", url).rstrip("/")

    async def deliver(
        self, backend: Backend, event: dict[str, Any], operation: str, webhook_id: str, client: httpx.AsyncClient
    ) -> Delivery:
        http = HttpBackend(_base_of(backend), backend.secret, client)
        replay = operation == "replay"
        url = http.replay_url(str(event["id"])) if replay else http.events_url()
        fields: dict[str, Any] = {"url": redact_url(url), "webhookId": webhook_id}
        try:
            reply = await (http.replay(str(event["id"]), webhook_id) if replay else http.dispatch(event, webhook_id))
        except BackendError as exc:
            fields.update({"status": "failed", "error": str(exc)})
            if exc.status is not None:
                fields["httpStatus"] = exc.status
            return Delivery(fields)
        fields.update({"status": "dispatched", "runIds": reply.run_ids})
        for key, kind in (("matched", int), ("idempotent", bool)):
            if isinstance(reply.body.get(key), kind):
                fields[key] = reply.body[key]
        return Delivery(fields, reply.runs)

    async def fetch_runs(
        self, backend: Backend, run_ids: list[str], event_id: str, client: httpx.AsyncClient
    ) -> list[dict[str, Any]]:
        http = HttpBackend(_base_of(backend), backend.secret, client)
        if run_ids:
            return list(await asyncio.gather(*(http.get_run(rid) for rid in run_ids)))
        body = await http.list_runs(event_id=event_id)
        return [r for r in body.get("runs", []) if isinstance(r, dict)]

    def queries(self, backend: Backend, client: httpx.AsyncClient) -> BackendQueries | None:
        return HttpBackend(_base_of(backend), backend.secret, client)

    def doctor(self, backend: Backend, timeout: float) -> list[Finding]:
        url = _base_of(backend)
        try:
            resp = httpx.get(url, timeout=timeout, verify=tls_context())
        except httpx.HTTPError as exc:
            findings = [Finding("FAIL", "backend", f"{redact_url(url)} unreachable: {type(exc).__name__}")]
        else:
            findings = [Finding("PASS", "backend", f"{redact_url(url)} answered HTTP {resp.status_code}")]
        if not backend.secret:
            findings.append(Finding("WARN", "backend", "no HMAC secret: dispatches are unsigned"))
        return findings


def _base_of(backend: Backend) -> str:
    base = backend.base
    if base is None:
        raise ValueError("an http backend needs a URL")
    return base


HTTP_TRANSPORT = HttpTransport()
