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
from patchmoi.core.config import Settings, redact_url
from patchmoi.core.errors import NotFoundError, PatchmoiError, from_code
from patchmoi.core.history import Query, search
from patchmoi.core.operations import (
    POLLER_LEASE,
    build_dispatcher,
    chain,
    configured_sources,
    feed_health,
    signal_id,
    with_states,
)
from patchmoi.core.pollnow import poll_source_now
from patchmoi.core.records import iso_at
from patchmoi.core.store import Cursor, Kind, store_for
from patchmoi.core.tls import tls_context
from patchmoi.core.workspace.adopt import AdoptRefused
from patchmoi.tui.remote_stream import StreamUnsupported, stream_changes
from patchmoi.tui.textfmt import parse_iso

KINDS = ("signals", "events", "attempts", "dispatches", "runs")
OPEN_LIMIT = 500  # the remote open-queue count is exact up to the API's page limit, then shown as "500+"


class Client(Protocol):
    label: str
    read_only: bool

    async def rows(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]: ...
    async def search(self, kind: str, query: str, *, before: Any = None, limit: int = 200) -> dict[str, Any]:
        """One step of a store search (core.history): `records` (each with `_cursor`), `next` (None: the end),
        `scanned` (records read), `size` (the collection's, or None), `limited` (True: only the newest rows
        could be searched, an older server)."""
        ...

    async def describe(self, kind: str, record: dict[str, Any]) -> dict[str, Any]: ...
    async def retry(self, event_id: str, reason: str | None) -> dict[str, Any]: ...
    async def replay(self, event_id: str, reason: str | None) -> dict[str, Any]: ...
    async def sync(self, attempt_id: str) -> dict[str, Any]: ...
    async def poll_source(self, source_id: str) -> dict[str, Any]:
        """Poll one feed source now (core.pollnow.summary: status, newEntries, events, nextDueAt)."""
        ...

    async def adopt(self, attempt_id: str, reason: str | None, *, reviewed: bool) -> dict[str, Any]:
        """`{"attempt": ...}` as appended with its `adoption`; raises AdoptRefused with the reason when it cannot."""
        ...

    async def open_queue(self) -> tuple[int, bool] | None:
        """How many attempts are `open` (need a person now), and whether that count is only a lower bound;
        None when the other side cannot say."""
        ...

    async def queue(self) -> list[dict[str, Any]]:
        """Every attempt that waits for a person (`open`: needs intervention; `ready`: a candidate to adopt),
        however old, with its `state`, newest first (up to QUEUE_LIMIT)."""
        ...

    async def health(self) -> dict[str, Any]: ...
    def changes(self) -> AsyncIterator[set[str]]: ...
    def runs_in_flight(self) -> int:
        """Local runs started by this client and still going (quitting would interrupt them)."""
        ...

    def connection(self) -> str | None:
        """Why the data on screen may be stale (a server that does not answer), or None."""
        ...

    async def warm(self) -> None:
        """Get ready to read (a local DATA_DIR builds its indexes: seconds on a big one, on a thread)."""
        ...

    def slow_to_warm(self) -> bool:
        """Whether `warm` has a big build to do (then the dashboard comes up before it is done)."""
        ...

    def warming(self) -> str | None:
        """What `warm` is doing, for the status line (None: nothing worth saying)."""
        ...

    async def close(self, grace: float = 5.0) -> None:
        """Stop; local runs still going get `grace` seconds, then are stopped and recorded as interrupted."""
        ...


QUEUE_STATES = ("open", "ready")
QUEUE_LIMIT = 500


def queue_order(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The open ones (a person must act) before the ready ones (a candidate to adopt), each newest first by the
    time of its latest record (ISO-8601 strings sort as times): `3` lands on the newest open attempt."""
    newest = sorted(attempts, key=lambda a: str(a.get("updatedAt") or a.get("createdAt") or ""), reverse=True)
    return sorted(newest, key=lambda a: QUEUE_STATES.index(a["state"]) if a.get("state") in QUEUE_STATES else 2)


ROW_KINDS = {
    "signals": Kind.SIGNALS,
    "events": Kind.EVENTS,
    "attempts": Kind.ATTEMPTS,
    "dispatches": Kind.DISPATCHES,
    "runs": Kind.RUNS,
}
TAB_OF_KIND = {**{kind: tab for tab, kind in ROW_KINDS.items()}, Kind.LEGACY_DISPATCHES: "dispatches"}


class LocalClient:
    """Reads the store directly and live-tails its files; actions dispatch through core (like the CLI)."""

    def __init__(self, settings: Settings, *, read_only: bool = False, workspace: Path | None = None) -> None:
        self.settings = settings
        self.store = store_for(settings)
        self.store.ensure()
        self.read_only = read_only
        self.label = f"local {settings.data_dir}"
        self.dispatcher = build_dispatcher(settings, self.store, workspace=workspace)
        self.actor = default_actor("tui")
        self._stop = asyncio.Event()
        self._states_key: Cursor | None = None
        self._states: dict[str, str] = {}

    def states(self) -> dict[str, str]:
        """derive_states over every attempt (store.all_attempts()), recomputed only when an attempt record was
        written since (the newest one moved): the attempts tab, the detail view and the status line share one
        pass."""
        newest = self.store.page(Kind.ATTEMPTS, limit=1)
        key = newest[0][0] if newest else None
        if key is None or key != self._states_key:
            self._states = derive_states(self.store.all_attempts())
            self._states_key = key
        return self._states

    async def rows(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        if kind == "sources":
            return [] if before is not None else self.sources()
        pairs = self.store.page(ROW_KINDS[kind], limit=limit, before=before)
        rows = [{**rec, "_cursor": cursor} for cursor, rec in pairs]
        return with_states(rows, self.states()) if kind == "attempts" else rows

    async def search(self, kind: str, query: str, *, before: Any = None, limit: int = 200) -> dict[str, Any]:
        parsed = Query.parse(query)
        states = self.states() if kind == "attempts" else None
        found = await asyncio.to_thread(search, self.store, kind, parsed, limit=limit, before=before, states=states)
        return {
            "records": [{**rec, "_cursor": cursor} for cursor, rec in found.hits],
            "next": found.next,
            "scanned": found.scanned,
            "size": self.store.count(ROW_KINDS[kind]),
            "limited": False,
        }

    async def describe(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        found = chain(self.store, chain_id(kind, record), states=self.states())
        return found if found is not None else no_chain(kind, record)

    async def retry(self, event_id: str, reason: str | None) -> dict[str, Any]:
        return (await self.dispatcher.retry(event_id, reason=reason, wait=False)).to_dict()

    async def replay(self, event_id: str, reason: str | None) -> dict[str, Any]:
        return (await self.dispatcher.replay(event_id, reason=reason, wait=False)).to_dict()

    async def sync(self, attempt_id: str) -> dict[str, Any]:
        return {"attempt": await self.dispatcher.sync(attempt_id)}

    async def poll_source(self, source_id: str) -> dict[str, Any]:
        """Under the poller lease for this one poll (PollerBusy when a `serve` or `poll` holds it: ask it through
        its API instead); new flow events are dispatched here, as retries are."""
        return await poll_source_now(self.settings, self.store, source_id, dispatcher=self.dispatcher)

    async def adopt(self, attempt_id: str, reason: str | None, *, reviewed: bool) -> dict[str, Any]:
        # Adopt runs git (ref moves, worktree updates, maybe a push): off the event loop.
        attempt = await asyncio.to_thread(
            adopt, self.store, attempt_id, by=self.actor, reason=reason, reviewed=reviewed
        )
        return {"attempt": attempt}

    def sources(self) -> list[dict[str, Any]]:
        """Every configured source with its saved feed state. The next poll is an estimate (`estimated`): the
        last poll plus the interval; only the polling process knows its schedule (remote mode shows it)."""
        try:
            configured = configured_sources(self.settings)
        except PatchmoiError as exc:
            raise PatchmoiError(f"feed sources: {exc}") from exc
        state = self.store.read_state_safely()
        floor = self.settings.min_poll_seconds
        out = []
        for src in configured:
            st = state.get(src.id) if isinstance(state.get(src.id), dict) else {}
            assert isinstance(st, dict)
            row: dict[str, Any] = {
                "sourceId": src.id,
                "kind": src.kind,
                "url": redact_url(src.url),
                "intervalSeconds": max(floor, src.poll_interval_seconds),
                "lastCheckedAt": st.get("lastCheckedAt"),
                "lastError": st.get("lastError"),
                "notBefore": iso_at(float(st["notBefore"])) if st.get("notBefore") else None,
                "lastStatus": "primed" if st.get("primed") else None,
                "etag": bool(st.get("etag")),
            }
            checked = parse_iso(st.get("lastCheckedAt"))
            if checked is not None:
                row["nextDueAt"] = iso_at(checked.timestamp() + row["intervalSeconds"])
                row["estimated"] = True
            out.append(row)
        return out

    async def open_queue(self) -> tuple[int, bool] | None:
        return sum(1 for state in self.states().values() if state == "open"), False

    async def queue(self) -> list[dict[str, Any]]:
        found = [{**a} for state in QUEUE_STATES for a in self.store.list_attempts_in_state(state, limit=QUEUE_LIMIT)]
        return queue_order(found)[:QUEUE_LIMIT]

    async def health(self) -> dict[str, Any]:
        return {
            "sources": feed_health(self.store),
            "store": self.store.health(),
            "dispatchQueueDepth": None,
            "localRunsInFlight": len(self.dispatcher.tasks),
            "pollerLockHolder": self.store.lease_holder(POLLER_LEASE),
        }

    async def changes(self) -> AsyncIterator[set[str]]:
        async for batch in self.store.follow(list(TAB_OF_KIND), stop=self._stop):
            tabs = {TAB_OF_KIND[change.kind] for change in batch}
            if tabs:
                yield tabs

    async def warm(self) -> None:
        await asyncio.to_thread(self.store.warm)

    def slow_to_warm(self) -> bool:
        return self.store.warm_for()

    def warming(self) -> str | None:
        indexing = self.store.indexing()
        if indexing is None:
            return None
        return f"{indexing['message']} in {self.settings.data_dir} (first open of a big store; later opens are instant)"

    def runs_in_flight(self) -> int:
        return len(self.dispatcher.tasks)

    def connection(self) -> str | None:
        return None  # the files are here

    async def close(self, grace: float = 5.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await self.dispatcher.aclose(grace=grace)  # quitting never waits for a long rebuild
        self.store.close()


def chain_id(kind: str, record: dict[str, Any]) -> str:
    """The id the chain of a dashboard row is asked for by (a dispatch row: its event)."""
    if kind == "signals":
        return signal_id(record)
    return str(record.get("eventId") if kind == "dispatches" else record.get("id") or record.get("eventId") or "")


def no_chain(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a detail view shows for a record whose chain cannot be found (a dispatch whose event is gone)."""
    focus = {"signals": "signal", "events": "event", "attempts": "attempt", "runs": "run"}.get(kind, "event")
    return {
        "kind": focus,
        "id": chain_id(kind, record),
        "event": None,
        "dispatches": [],
        "attempts": [],
        "runs": [],
        **({"signal": record} if kind == "signals" else {}),
    }


HEALTH_TIMEOUT = 5.0
"""Seconds a remote dashboard waits for `/readyz` before it says the server does not answer."""


class RemoteClient:
    """The HTTP API of a running `patchmoi serve` (admin token as Bearer); live through its `/stream`.

    Attempt states: the list endpoint has no `state` field unless asked for one state (`?state=open`), so
    a page of attempt rows costs one request per state except `done` (six, concurrently), each limited
    to the page size: every attempt of the page that is in state S is among the newest `limit`
    attempts in S, so the map is exact for the page, and whatever is in none of them is `done`. A detail
    chain does the same filtered by its event id. The open-queue count is one `?state=open&limit=500`.
    """

    def __init__(self, url: str, token: str | None, *, read_only: bool = False, interval: float = 2.0) -> None:
        self.base = url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=15.0, verify=tls_context())
        self.read_only = read_only
        self.label = f"remote {self.base}"
        self.interval = interval
        self.actor = default_actor("tui")
        self._stop = asyncio.Event()
        self._last: dict[str, str] = {}
        self._down: tuple[float, str] | None = None  # since when, and why, the server does not answer
        self._down_by_health = False  # `_down` was set by a failed /readyz (a hung server: the stream is silent)
        self._refused = False  # the server refused the token: waiting will not help
        self._answered = time.time()  # the last time the server answered (what `since` says when it stops)
        self._warming: str | None = None  # the server's /readyz "indexing" message, while it builds
        self.streaming: bool | None = None  # the server streams changes (None: not known yet; False: it polls)

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._json(await self._fetch(path, {k: v for k, v in (params or {}).items() if v is not None}))

    async def _fetch(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        """A GET, tried once more at once: a kept-alive connection the server closed (it restarted) fails the
        first try without saying anything about the server."""
        for again in (True, False):
            try:
                return await self.http.get(path, params=params)
            except httpx.HTTPError as exc:
                if not again:
                    raise PatchmoiError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        raise AssertionError("unreachable")

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 401:
            raise PatchmoiError(f"{self.base} refused the admin token (401); pass --token or PATCH_ADMIN_TOKEN")
        if resp.status_code >= 400 and resp.status_code != 502:  # the server's error code picks the class
            code = body.get("error") if isinstance(body, dict) else None
            message = body.get("message") if isinstance(body, dict) else None
            raise from_code(
                code,
                f"{resp.request.method} {resp.request.url.path} → {resp.status_code} "
                f"{code or ''} {message or ''}".strip(),
            )
        return body if isinstance(body, dict) else {}

    async def rows(self, kind: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        if kind == "sources":  # the server's poller knows each source's schedule: /readyz says it
            if before is not None:
                return []
            health = await self.health()
            return [s for s in health.get("sources") or [] if isinstance(s, dict)]
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
        path, key = {
            "signals": ("/feed-signals", "signals"),
            "events": ("/flow-events", "events"),
            "attempts": ("/maintenance-attempts", "attempts"),
            "dispatches": ("/workspace-dispatches", "dispatches"),
            "runs": ("/workspace-runs", "runs"),
        }[kind]
        if before is not None:  # the spec's lists page by limit only (max 500): older pages come from /history
            found = await self.search(kind, "", before=before, limit=limit)
            return [] if found["limited"] else list(found["records"])
        body = await self._get(path, {"limit": min(limit, 500)})
        rows = body.get(key, [])
        return [r for r in rows if isinstance(r, dict)]

    async def search(self, kind: str, query: str, *, before: Any = None, limit: int = 200) -> dict[str, Any]:
        """The server's `GET /history/KIND` (a patchmoi extension); a server without it (the Bun service, an
        older patchmoi) gets the newest 500 rows filtered here, and `limited` says so."""
        params = {"q": query or None, "before": before, "limit": min(limit, 500)}
        try:
            body = await self._get(f"/history/{kind}", params)
        except NotFoundError as exc:
            if exc.code != "not_found":
                raise
            rows = await self._page(kind, 500) if before is None else []
            if kind == "attempts" and rows:
                rows = with_states(rows, await self._state_map(500))
            parsed = Query.parse(query)
            return {
                "records": [r for r in rows if parsed.matches(r, kind)],
                "next": None,
                "scanned": len(rows),
                "size": None,
                "limited": True,
            }
        items = [i for i in body.get("items") or [] if isinstance(i, dict) and isinstance(i.get("record"), dict)]
        return {
            "records": [{**i["record"], "_cursor": i.get("cursor")} for i in items],
            "next": body.get("next"),
            "scanned": int(body.get("scanned") or 0),
            "size": body.get("size"),
            "limited": False,
        }

    async def describe(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        """One request: the server's chain endpoint of the row's collection."""
        record_id = chain_id(kind, record)
        if kind == "runs":  # runs have no chain endpoint of their own (they may be the backend's): their event's
            record_id = str(record.get("eventId") or "")
        collection = {"signals": "feed-signals", "attempts": "maintenance-attempts"}.get(kind, "flow-events")
        if not record_id:
            return no_chain(kind, record)
        try:
            return await self._get(f"/{collection}/{quote(record_id, safe='')}/chain")
        except NotFoundError as exc:
            if exc.code == "not_found":  # no such route: a server from before the chain endpoints
                return await self._describe_without_chain(kind, record)
            return no_chain(kind, record)

    async def _describe_without_chain(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        """The chain from three requests, as servers without the chain endpoints allow."""
        event_id = str(record.get("eventId") or record.get("id") or "") if kind != "signals" else ""
        if not event_id:
            return no_chain(kind, record)
        try:
            body = await self._get(f"/flow-events/{quote(event_id, safe='')}")
        except NotFoundError:
            body = {}
        attempts = (await self._get("/maintenance-attempts", {"eventId": event_id, "limit": 20})).get("attempts", [])
        try:
            runs = (await self._get("/workspace-runs", {"eventId": event_id, "limit": 20})).get("runs", [])
        except PatchmoiError:
            runs = []
        attempts = with_states([a for a in attempts if isinstance(a, dict)], await self._state_map(20, event_id))
        return {
            **no_chain(kind, record),
            "event": body.get("event"),
            "dispatches": body.get("dispatches", []),
            "attempts": attempts,
            "runs": runs,
        }

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

    async def poll_source(self, source_id: str) -> dict[str, Any]:
        try:  # the server waits for the fetch (its deadline) before it answers
            resp = await self.http.post(f"/feed-sources/{quote(source_id, safe='')}/poll", timeout=120.0)
        except httpx.HTTPError as exc:
            raise PatchmoiError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        return self._json(resp)

    async def adopt(self, attempt_id: str, reason: str | None, *, reviewed: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"by": self.actor, "reviewed": reviewed}
        if reason:
            body["reason"] = reason
        try:  # the server moves the refs (and may push) before it answers: a longer timeout than reads
            resp = await self.http.post(
                f"/maintenance-attempts/{quote(attempt_id, safe='')}/adopt", json=body, timeout=330.0
            )
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

    async def queue(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for state in QUEUE_STATES:
            body = await self._get("/maintenance-attempts", {"state": state, "limit": QUEUE_LIMIT})
            found += [a for a in body.get("attempts", []) if isinstance(a, dict) and a.get("state") == state]
        return queue_order(found)[:QUEUE_LIMIT]

    async def open_queue(self) -> tuple[int, bool] | None:
        body = await self._get("/maintenance-attempts", {"state": "open", "limit": OPEN_LIMIT})
        attempts = [a for a in body.get("attempts", []) if isinstance(a, dict)]
        if any(a.get("state") != "open" for a in attempts):
            return None  # a server without derived states ignored `?state=open`
        return len(attempts), len(attempts) >= OPEN_LIMIT

    async def health(self) -> dict[str, Any]:
        """`/readyz`, with a short timeout and no second try: a server that hangs (stopped, swapping) while its
        stream stays open is noticed within seconds, not at the stream's idle timeout."""
        try:
            resp = await self.http.get("/readyz", timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError as exc:
            reason = f"cannot reach {self.base}: {type(exc).__name__}"
            if self._down is None:
                self._down, self._down_by_health = (self._answered, reason), True
            raise PatchmoiError(reason) from None
        self._answered = time.time()
        if self._down_by_health:
            self._down, self._down_by_health = None, False
        if resp.status_code == 503 and resp.headers.get("content-type", "").startswith("application/json"):
            body = resp.json()  # 503 while the server builds its indexes: the body says how far
            if isinstance(body, dict) and body.get("status") == "indexing":
                indexing = body.get("indexing") or {}
                self._warming = str(indexing.get("message") or "indexing")
                return body
        self._warming = None
        return self._json(resp)

    async def warm(self) -> None:
        return None  # the server builds its own indexes; its /readyz progress shows in the status line

    def slow_to_warm(self) -> bool:
        return False

    def warming(self) -> str | None:
        return None if self._warming is None else f"server {self._warming}"

    async def changes(self) -> AsyncIterator[set[str]]:
        """The tabs with new records, as the server's `GET /stream` announces them (remote_stream); a server
        without it (404: the Bun service, an older patchmoi) is polled instead (`_poll_changes`). Either way a
        server that stops answering is said at once (`connection()`, and an empty set so the status line is
        drawn again), and when it answers again every tab is reloaded (what happened meanwhile is not lost)."""
        if self.streaming is not False:
            try:
                async for tabs in stream_changes(
                    self.http,
                    stop=self._stop,
                    on_state=self._stream_state,
                    on_open=self._stream_open,
                    resumed=self._down is not None,
                ):
                    yield tabs
                return
            except StreamUnsupported:
                self.streaming = False
                was_down, self._down = self._down is not None, None
                if was_down:
                    yield set(KINDS)
            except PatchmoiError as exc:  # the token was refused (401): said until a stream opens again
                self._refused = True
                self._down = (self._down[0] if self._down else time.time(), str(exc))
                raise
        async for tabs in self._poll_changes():
            yield tabs

    def _stream_open(self) -> None:
        self.streaming = True
        self._refused = False
        self._answered = time.time()

    def _stream_state(self, reason: str | None) -> None:
        """The stream's connection failed (why) or works again (None): what `connection()` says."""
        if reason is None:
            self._down, self._down_by_health = None, False
        elif self._down is None:
            self._down = (self._answered, reason)
        else:  # still down: keep since when, say the latest reason
            self._down = (self._down[0], reason)

    async def _poll_changes(self) -> AsyncIterator[set[str]]:
        """Poll the newest record of each list every `interval` seconds; yield the kinds whose head changed."""
        while not self._stop.is_set():
            changed: set[str] = set()
            was_down = self._down is not None
            for kind in KINDS:
                try:
                    head = await self._page(kind, 1)
                except PatchmoiError as exc:
                    if "cannot reach" in str(exc):
                        if self._down is None:
                            self._down = (time.time(), str(exc))
                        break
                    continue
                self._down = None
                marker = repr(head[:1])
                if self._last.get(kind) not in (None, marker):
                    changed.add(kind)
                self._last[kind] = marker
            if was_down and self._down is None:
                changed |= set(KINDS)  # back: reload everything
            if changed or (self._down is not None) != was_down:
                yield changed
            started = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - started < self.interval:
                await asyncio.sleep(0.1)

    def runs_in_flight(self) -> int:
        return 0  # the server runs them; quitting the dashboard does not touch them

    def connection(self) -> str | None:
        if self._down is None:
            return None
        since, error = self._down
        if self._refused:
            return f"{self.base} refused the admin token (401): set --token or PATCH_ADMIN_TOKEN · ctrl+r: again"
        clock = time.strftime("%H:%M:%S", time.localtime(since))
        how = "reconnecting" if self.streaming is not False else f"retrying every {self.interval:g}s"
        return f"no answer from {self.base} since {clock} · ctrl+r: now · {how} ({error.split(': ', 1)[-1]})"

    async def close(self, grace: float = 5.0) -> None:
        self._stop.set()
        await self.http.aclose()
