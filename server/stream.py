"""`GET /stream`: server-sent events that tell a remote dashboard which of its tabs have new records.

A remote dashboard polled the head of five lists every couple of seconds to notice changes. Here the server
tells it instead, as soon as a record is appended to the store by any process (this one, the poll worker, a CLI
on the same DATA_DIR): `event: change` with `data: {"kinds": [...]}` naming tabs (signals, events, attempts,
dispatches, runs), never records, URLs or anything else a record holds.

One follower per server, not per stream: `Store.follow` watches the directory on a thread of its own (anyio's
pool, 40 threads by default) and decodes every appended line, so a follower per connection would cost a thread
and a decode of each record per dashboard, and the 41st dashboard would wait for a free thread. The follower
runs while at least one stream is open, and each stream keeps the set of tabs changed since its last message: a
burst of appends within `coalesce` seconds is one message, and a slow client never holds up the others.

A stream ends when the client goes (its ASGI receive channel says `http.disconnect`; a write that fails says
so too), and when the server stops: uvicorn's graceful shutdown waits for every open response before it runs
the lifespan's shutdown, so `patchmoi serve`'s server (server.run.Server) ends the streams first
(`end_streams`), and the lifespan does as well (for servers started otherwise, and the test client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from patchmoi.core.log import log_event
from patchmoi.core.store import Kind, Store

TABS: Mapping[Kind, str] = {
    Kind.SIGNALS: "signals",
    Kind.EVENTS: "events",
    Kind.ATTEMPTS: "attempts",
    Kind.DISPATCHES: "dispatches",
    Kind.LEGACY_DISPATCHES: "dispatches",
    Kind.RUNS: "runs",
}
"""The collections a dashboard shows, by its tab names (jobs and notifications have no tab)."""
TAB_NAMES = ("signals", "events", "attempts", "dispatches", "runs")
MAX_STREAMS = 64
KEEPALIVE_SECONDS = 15.0
COALESCE_SECONDS = 0.05
RETRY_MS = 2000


class StreamRefused(Exception):
    """No stream now: too many open (`too_many_streams`), or the server is stopping (`stopping`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_kinds(text: str | None) -> frozenset[str]:
    """`?kinds=attempts,runs` as a set of tab names (all of them when absent or empty); ValueError names the
    unknown ones."""
    if not text or not text.strip():
        return frozenset(TAB_NAMES)
    asked = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(asked - set(TAB_NAMES))
    if unknown:
        raise ValueError(f"unknown kinds {', '.join(unknown)}; known: {', '.join(TAB_NAMES)}")
    if not asked:  # `,,,`: a client that meant something and sent nothing
        raise ValueError(f"kinds names no tab; known: {', '.join(TAB_NAMES)} (or leave it out for all)")
    return frozenset(asked)


class Subscription:
    """One open stream: the tabs it wants, the tabs changed since its last message, and a wake-up."""

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self.pending: set[str] = set()
        self.ended = False
        self.wake = asyncio.Event()

    def offer(self, tabs: set[str]) -> None:
        wanted = tabs & self.kinds
        if wanted:
            self.pending |= wanted
            self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    def take(self) -> list[str]:
        taken, self.pending = self.pending, set()
        self.wake.clear()
        return [tab for tab in TAB_NAMES if tab in taken]


class ChangeStreams:
    """Every open `/stream` of one app, and the one follower of the store that feeds them."""

    def __init__(
        self,
        *,
        limit: int = MAX_STREAMS,
        keepalive: float = KEEPALIVE_SECONDS,
        coalesce: float = COALESCE_SECONDS,
        retry_ms: int = RETRY_MS,
    ) -> None:
        self.limit = limit
        self.keepalive = keepalive
        self.coalesce = coalesce
        self.retry_ms = retry_ms
        self.store: Store | None = None
        self.closed = False
        self.subscriptions: set[Subscription] = set()
        self._follower: asyncio.Task[None] | None = None
        self._follow_stop: asyncio.Event | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # followers told to stop, not yet finished

    def start(self, store: Store) -> None:
        """The app's service is up: streams read this store."""
        self.store, self.closed = store, False

    def close(self) -> None:
        """The server stops: end every open stream now (and refuse new ones), and stop the follower."""
        self.closed = True
        for sub in list(self.subscriptions):
            sub.end()
        self._stop_follower()

    async def aclose(self, timeout: float = 2.0) -> None:
        """`close`, then wait for the followers to finish (their watching thread notices within ~10 ms)."""
        self.close()
        if self._stopping:
            _, late = await asyncio.wait(list(self._stopping), timeout=timeout)
            for task in late:
                task.cancel()

    # -- subscriptions -------------------------------------------------------------------------------------
    def subscribe(self, kinds: frozenset[str]) -> tuple[Subscription, str]:
        """A new stream and the store's position now (what its `hello` says); StreamRefused when full."""
        if self.closed or self.store is None:
            raise StreamRefused("stopping", "the server is stopping")
        if len(self.subscriptions) >= self.limit:
            raise StreamRefused("too_many_streams", f"at most {self.limit} streams are open at once; try again later")
        position = self.store.position()
        sub = Subscription(kinds)
        self.subscriptions.add(sub)
        if self._follower is None or self._follower.done():
            # from the position taken now: whatever is appended once this stream exists reaches it
            stop = self._follow_stop = asyncio.Event()
            self._follower = asyncio.create_task(self._follow(self.store, position, stop))
        return sub, position

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        if not self.subscriptions:  # nobody listens: no thread, no decoding of what others append
            self._stop_follower()

    def _stop_follower(self) -> None:
        if self._follow_stop is not None:
            self._follow_stop.set()
        task = self._follower
        if task is not None and not task.done():
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._follower, self._follow_stop = None, None

    async def _follow(self, store: Store, position: str, stop: asyncio.Event) -> None:
        try:
            async for batch in store.follow(list(TABS), since=position, stop=stop):
                if stop.is_set():
                    return
                tabs = {TABS[change.kind] for change in batch if change.kind in TABS}
                if tabs:
                    for sub in list(self.subscriptions):
                        sub.offer(tabs)
        except Exception as exc:  # the streams end and their clients reconnect, which starts a new follower
            log_event("stream.follow_failed", exc=exc)
            if self._follow_stop is stop:
                self._follower, self._follow_stop = None, None
                for sub in list(self.subscriptions):
                    sub.end()

    # -- the response ----------------------------------------------------------------------------------------
    def response(self, sub: Subscription | None, position: str | None) -> EventStream:
        """The `text/event-stream` answer for a subscription (None: HEAD, headers only)."""
        return EventStream(self, sub, position)


def frame(event: str, data: Mapping[str, Any], *, retry_ms: int | None = None) -> bytes:
    """One SSE message (`data` is one line of JSON: json.dumps never writes a newline)."""
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


KEEPALIVE = b": keepalive\n\n"


class EventStream(Response):
    """A streamed answer that ends when the client goes, the server stops, or its subscription is ended."""

    media_type = "text/event-stream"
    charset = "utf-8"

    def __init__(self, streams: ChangeStreams, sub: Subscription | None, position: str | None) -> None:
        self.streams, self.sub, self.position = streams, sub, position
        self.status_code = 200
        self.background = None
        # no Content-Length: uvicorn sends the body chunked; a proxy must neither cache nor buffer it
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if sub is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            watcher = asyncio.create_task(_until_disconnect(receive, sub))
            try:
                await self._run(sub, send)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client is gone (uvicorn raises on a write to a closed connection)
            pass
        finally:
            if sub is not None:
                self.streams.unsubscribe(sub)

    async def _run(self, sub: Subscription, send: Send) -> None:
        streams = self.streams
        hello = frame("hello", {"position": self.position}, retry_ms=streams.retry_ms)
        await send({"type": "http.response.body", "body": hello, "more_body": True})
        while not sub.ended:
            try:
                await asyncio.wait_for(sub.wake.wait(), streams.keepalive)
            except TimeoutError:
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                continue
            if sub.ended:
                break
            await asyncio.sleep(streams.coalesce)  # the rest of the burst joins this message
            tabs = sub.take()
            if tabs and not sub.ended:
                body = frame("change", {"kinds": tabs})
                await send({"type": "http.response.body", "body": body, "more_body": True})


async def _until_disconnect(receive: Receive, sub: Subscription) -> None:
    """Read the request's channel until the client disconnects (a GET has no body to wait for), then end."""
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    except OSError:
        pass
    sub.end()


def end_streams(app: Any) -> None:
    """End the open streams of an app made by `create_app` (a no-op for any other app): a server calls this as
    it begins to shut down, before it waits for open responses to finish."""
    streams = getattr(getattr(app, "state", None), "streams", None)
    if isinstance(streams, ChangeStreams):
        streams.close()
