"""One small client interface for the dashboard: local (a DATA_DIR through core) or remote (the HTTP API).

Screens call these methods and never know which mode they are in. Attempt rows (and the attempts of a
detail chain) carry their derived `state` (core.attempt_states: open, ready, adopted, ...) in both modes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from patchmoi.core.adopt import adopt, default_actor
from patchmoi.core.attempt_states import STATES, derive_states
from patchmoi.core.config import Settings
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.sources import load_sources
from patchmoi.core.store import Store
from patchmoi.core.store.follow import follow
from patchmoi.core.workspace.adopt import AdoptRefused

KINDS = ("signals", "events", "attempts", "dispatches", "runs")
OPEN_LIMIT = 500  # the remote open-queue count is exact up to the API's page limit, then shown as "500+"


class Client(Protocol):
    label: str
    read_only: bool

    async def rows(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]: ...
    async def describe(self, kind: str, record: dict[str, Any]) -> dict[str, Any]: ...
    async def retry(self, event_id: str, reason: str | None) -> dict[str, Any]: ...
    async def replay(self, event_id: str, reason: str | None) -> dict[str, Any]: ...
    async def sync(self, attempt_id: str) -> dict[str, Any]: ...
    async def adopt(self, attempt_id: str, reason: str | None, *, reviewed: bool) -> dict[str, Any]:
        """`{"attempt": ...}` as appended with its `adoption`; raises AdoptRefused with the reason when it cannot."""
        ...
    async def open_queue(self) -> tuple[int, bool] | None:
        """How many attempts are `open` (need a person now), and whether that count is only a lower bound;
        None when the other side cannot say."""
        ...
    async def health(self) -> dict[str, Any]: ...
    def changes(self) -> AsyncIterator[set[str]]: ...
    async def close(self) -> None: ...


FILE_KIND = {
    "feed-events.jsonl": "signals", "flow-events.jsonl": "events", "maintenance-attempts.jsonl": "attempts",
    "workspace-dispatches.jsonl": "dispatches", "flow-dispatches.jsonl": "dispatches",
    "workspace-runs.jsonl": "runs",
}


class LocalClient:
    """Reads the store directly and live-tails its files; actions dispatch through core (like the CLI)."""

    def __init__(self, settings: Settings, *, read_only: bool = False, workspace: Path | None = None) -> None:
        self.settings = settings
        self.store = Store(settings.data_dir)
        self.store.ensure()
        self.read_only = read_only
        self.label = f"local {settings.data_dir}"
        sources_path = settings.feed_sources_path
        self.dispatcher = Dispatcher(
            self.store, settings.env, workspace=workspace,
            sources=(lambda: load_sources(sources_path)) if sources_path is not None else None,
        )
        self.actor = default_actor("tui")
        self._stop = asyncio.Event()
        self._states_key: tuple[int, int] | None = None
        self._states: dict[str, str] = {}

    def states(self) -> dict[str, str]:
        """derive_states over every attempt (store.all_attempts()), recomputed only when the attempts file
        changed (its size and mtime): the attempts tab, the detail view and the status line share one pass."""
        try:
            st = self.store.attempts.path.stat()
            key: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key is None or key != self._states_key:
            self._states = derive_states(self.store.all_attempts())
            self._states_key = key
        return self._states

    async def rows(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        log, latest = {
            "signals": (self.store.feed_events, False), "events": (self.store.flow_events, False),
            "attempts": (self.store.attempts, True), "dispatches": (self.store.dispatches, False),
            "runs": (self.store.runs, True),
        }[kind]
        pairs = log.list_with_offsets(limit=limit, latest=latest, before=before)
        rows = [{**rec, "_cursor": off} for off, rec in pairs]
        return with_states(rows, self.states()) if kind == "attempts" else rows

    async def describe(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        chain = describe_local(self.store, kind, record)
        if chain.get("attempts"):
            chain["attempts"] = with_states(chain["attempts"], self.states())
        return chain

    async def retry(self, event_id: str, reason: str | None) -> dict[str, Any]:
        return (await self.dispatcher.retry(event_id, reason=reason, wait=False)).to_dict()

    async def replay(self, event_id: str, reason: str | None) -> dict[str, Any]:
        return (await self.dispatcher.replay(event_id, reason=reason, wait=False)).to_dict()

    async def sync(self, attempt_id: str) -> dict[str, Any]:
        return {"attempt": await self.dispatcher.sync(attempt_id)}

    async def adopt(self, attempt_id: str, reason: str | None, *, reviewed: bool) -> dict[str, Any]:
        # Adopt runs git (ref moves, worktree updates, maybe a push): off the event loop.
        attempt = await asyncio.to_thread(adopt, self.store, attempt_id, by=self.actor, reason=reason,
                                          reviewed=reviewed)
        return {"attempt": attempt}

    async def open_queue(self) -> tuple[int, bool] | None:
        return sum(1 for state in self.states().values() if state == "open"), False

    async def health(self) -> dict[str, Any]:
        state = self.store.read_state_safely()
        sources = []
        for sid, st in state.items():
            if isinstance(st, dict):
                sources.append({"sourceId": sid, "lastCheckedAt": st.get("lastCheckedAt"),
                                "lastError": st.get("lastError")})
        lock = self.store.data_dir / "poller.lock"
        return {"sources": sources, "store": self.store.health(), "dispatchQueueDepth": None,
                "localRunsInFlight": len(self.dispatcher.tasks),
                "pollerLockHolder": lock.read_text().strip() if lock.exists() else None}

    async def changes(self) -> AsyncIterator[set[str]]:
        paths = [self.store.data_dir / name for name in FILE_KIND]
        async for batch in follow(paths, stop=self._stop, debounce_ms=30):
            kinds = {FILE_KIND[item.file] for item in batch if item.file in FILE_KIND}
            if kinds:
                yield kinds

    async def close(self) -> None:
        self._stop.set()
        await self.dispatcher.aclose(grace=5.0)  # quitting never waits for a long rebuild
        self.store.close()


def describe_local(store: Store, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """The chain around a record: event → dispatches → attempts → runs (candidate refs and logs inside)."""
    event_id = str(record.get("eventId") or record.get("id") or "")
    if kind == "signals":
        event_id = ""
        for ev in store.list_events(limit=200):
            payload = ev.get("payload") or {}
            if payload.get("sourceId") == record.get("sourceId") and payload.get("entryId") == record.get("entryId"):
                event_id = str(ev["id"])
                break
        if not event_id:
            return {"signal": record}
    event = store.get_event(event_id)
    attempts = store.list_attempts(event_id=event_id, limit=20)
    runs = store.list_runs(event_id=event_id, limit=20)
    out: dict[str, Any] = {"event": event, "dispatches": store.list_dispatches(event_id=event_id, limit=20),
                           "attempts": attempts, "runs": runs}
    if kind == "signals":
        out["signal"] = record
    return out


def with_states(attempts: list[dict[str, Any]], states: dict[str, str] | None) -> list[dict[str, Any]]:
    """Each attempt with its `state` (`done` when in no other state); unchanged when states are unknown."""
    if states is None:
        return attempts
    return [{**a, "state": states.get(str(a.get("id")), "done")} for a in attempts]


class RemoteClient:
    """The HTTP API of a running `patchmoi serve` (admin token as Bearer); refreshes by polling.

    Attempt states: the list endpoint has no `state` field unless asked for one state (`?state=open`), so
    a page of attempt rows costs one request per state except `done` (six, concurrently), each limited
    to the page size: every attempt of the page that is in state S is among the newest `limit`
    attempts in S, so the map is exact for the page, and whatever is in none of them is `done`. A detail
    chain does the same filtered by its event id. The open-queue count is one `?state=open&limit=500`.
    """

    def __init__(self, url: str, token: str | None, *, read_only: bool = False, interval: float = 2.0) -> None:
        self.base = url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=15.0)
        self.read_only = read_only
        self.label = f"remote {self.base}"
        self.interval = interval
        self.actor = default_actor("tui")
        self._stop = asyncio.Event()
        self._last: dict[str, str] = {}

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = await self.http.get(path, params={k: v for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as exc:
            raise PatchmoiError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        return self._json(resp)

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 401:
            raise PatchmoiError(f"{self.base} refused the admin token (401); pass --token or PATCH_ADMIN_TOKEN")
        if resp.status_code >= 400 and resp.status_code != 502:
            raise PatchmoiError(f"{resp.request.method} {resp.request.url.path} → {resp.status_code} "
                                f"{body.get('error', '')} {body.get('message', '')}".strip())
        return body if isinstance(body, dict) else {}

    async def rows(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        rows = await self._page(kind, limit, before)
        if kind != "attempts" or not rows:
            return rows
        return with_states(rows, await self._state_map(min(limit, 500)))

    async def _state_map(self, limit: int, event_id: str | None = None) -> dict[str, str] | None:
        """Attempt id -> derived state, from one `?state=S` query per state but `done` (see the class doc);
        None when the server cannot say (an older server ignores `?state=`, or a query failed)."""
        async def one(state: str) -> list[dict[str, Any]]:
            body = await self._get("/maintenance-attempts", {"state": state, "limit": limit, "eventId": event_id})
            return [a for a in body.get("attempts", []) if isinstance(a, dict)]

        try:
            answers = await asyncio.gather(*(one(s) for s in STATES if s != "done"))
        except PatchmoiError:
            return None
        found: dict[str, str] = {}
        for attempts in answers:
            for a in attempts:
                if not isinstance(a.get("state"), str):
                    return None
                found[str(a.get("id"))] = a["state"]
        return found

    async def _page(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        path, key = {"signals": ("/feed-signals", "signals"), "events": ("/flow-events", "events"),
                     "attempts": ("/maintenance-attempts", "attempts"),
                     "dispatches": ("/workspace-dispatches", "dispatches"), "runs": ("/workspace-runs", "runs")}[kind]
        if before is not None:
            return []  # the API pages by limit only (max 500)
        body = await self._get(path, {"limit": min(limit, 500)})
        rows = body.get(key, [])
        return [r for r in rows if isinstance(r, dict)]

    async def describe(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        event_id = str(record.get("eventId") or record.get("id") or "")
        if kind == "signals":
            return {"signal": record}
        body = await self._get(f"/flow-events/{quote(event_id, safe='')}") if event_id else {}
        attempts = (await self._get("/maintenance-attempts", {"eventId": event_id, "limit": 20})).get("attempts", [])
        try:
            runs = (await self._get("/workspace-runs", {"eventId": event_id, "limit": 20})).get("runs", [])
        except PatchmoiError:
            runs = []
        if attempts and event_id:
            attempts = with_states([a for a in attempts if isinstance(a, dict)], await self._state_map(20, event_id))
        return {"event": body.get("event"), "dispatches": body.get("dispatches", []), "attempts": attempts,
                "runs": runs}

    async def _post(self, path: str, reason: str | None) -> dict[str, Any]:
        try:
            resp = await self.http.post(path, json={"reason": reason} if reason else None)
        except httpx.HTTPError as exc:
            raise PatchmoiError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        return self._json(resp)

    async def retry(self, event_id: str, reason: str | None) -> dict[str, Any]:
        return await self._post(f"/flow-events/{quote(event_id, safe='')}/retry", reason)

    async def replay(self, event_id: str, reason: str | None) -> dict[str, Any]:
        return await self._post(f"/flow-events/{quote(event_id, safe='')}/replay", reason)

    async def sync(self, attempt_id: str) -> dict[str, Any]:
        return await self._post(f"/maintenance-attempts/{quote(attempt_id, safe='')}/sync", None)

    async def adopt(self, attempt_id: str, reason: str | None, *, reviewed: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"by": self.actor, "reviewed": reviewed}
        if reason:
            body["reason"] = reason
        try:  # the server moves the refs (and may push) before it answers: a longer timeout than reads
            resp = await self.http.post(f"/maintenance-attempts/{quote(attempt_id, safe='')}/adopt", json=body,
                                        timeout=330.0)
        except httpx.HTTPError as exc:
            raise PatchmoiError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        if resp.status_code == 409:
            try:
                refused = resp.json()
            except ValueError:
                refused = {}
            message = refused.get("message") if isinstance(refused, dict) else None
            raise AdoptRefused(str(message or f"{self.base} refused the adoption (409)"))
        return self._json(resp)

    async def open_queue(self) -> tuple[int, bool] | None:
        body = await self._get("/maintenance-attempts", {"state": "open", "limit": OPEN_LIMIT})
        attempts = [a for a in body.get("attempts", []) if isinstance(a, dict)]
        if any(a.get("state") != "open" for a in attempts):
            return None  # a server without derived states ignored `?state=open`
        return len(attempts), len(attempts) >= OPEN_LIMIT

    async def health(self) -> dict[str, Any]:
        return await self._get("/readyz")

    async def changes(self) -> AsyncIterator[set[str]]:
        """Poll the newest record of each list; yield the kinds whose head changed."""
        while not self._stop.is_set():
            changed: set[str] = set()
            for kind in KINDS:
                try:
                    head = await self._page(kind, 1)
                except PatchmoiError:
                    continue
                marker = repr(head[:1])
                if self._last.get(kind) not in (None, marker):
                    changed.add(kind)
                self._last[kind] = marker
            if changed:
                yield changed
            started = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - started < self.interval:
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        self._stop.set()
        await self.http.aclose()
