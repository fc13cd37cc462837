"""The remote dashboard's live updates: `GET /stream` (server-sent events) instead of polling every list.

The server names the tabs that have new records as soon as any process appends them (server/stream.py); this
reads that stream, yields the tab names of each `change`, and keeps the stream open: on a dropped connection,
a refused one or a server that stops, it says why (`on_state(reason)`, then an empty set so the status line is
drawn again), tries again after 0.5 s, doubling to 5 s, and once connected again calls `on_state(None)` and
yields every tab (what was appended meanwhile was not announced). A server without the stream (an older
patchmoi, or the Bun service) answers 404: `StreamUnsupported`, and the caller polls as before.

The stream has no read timeout (it is quiet while nothing happens), but the server sends a comment every 15 s,
so a connection that brings nothing for `idle_timeout` (60 s) is taken as dead (a peer gone without a word, a
NAT that forgot the connection) and opened again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from patchmoi.core.errors import PatchmoiError

TABS = ("signals", "events", "attempts", "dispatches", "runs")
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 35.0
MAX_LINE = 1 << 20
"""A line longer than this (no newline in 1 MiB) is not the server's stream: the connection is dropped."""
_EOL = re.compile(r"[\r\n]")


class StreamUnsupported(Exception):
    """The server has no `/stream` (404: an older patchmoi, or the Bun service): poll instead."""


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SseParser:
    """The event-stream format as the HTML standard reads it: UTF-8 (a leading BOM dropped), lines ended by CRLF,
    LF or CR (a CRLF split between two chunks included), `:` comments, one optional space after a field's colon,
    `data` lines joined by newlines, `retry` in ASCII digits only, an event with no data never dispatched."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._after_cr = False  # the last chunk ended in CR: a LF opening the next one ends no other line
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            self._after_cr = False
            text = text.removeprefix("\n")
        buffer = self._buffer + text
        events: list[ServerSentEvent] = []
        start = 0
        while (found := _EOL.search(buffer, start)) is not None:
            end = found.start()
            line = buffer[start:end]
            if buffer[end] == "\r" and end + 1 == len(buffer):
                self._after_cr, start = True, end + 1
            elif buffer.startswith("\r\n", end):
                start = end + 2
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_LINE:
            raise ValueError(f"a line of more than {MAX_LINE} characters: not an event stream")
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (the server's keepalive)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self._last_id, self._retry)


class _Broken(Exception):
    """This connection is of no more use (the reason is the message); the next one may be."""


async def stream_changes(
    http: httpx.AsyncClient,
    *,
    stop: asyncio.Event,
    on_state: Callable[[str | None], None],
    on_open: Callable[[], None] | None = None,
    kinds: Iterable[str] | None = None,
    resumed: bool = False,
    path: str = "/stream",
    connect_timeout: float = CONNECT_TIMEOUT,
    idle_timeout: float | None = IDLE_TIMEOUT,
    backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
) -> AsyncIterator[set[str]]:
    """The tab names of each change the server announces, until `stop` is set (or the caller stops iterating).

    `http` is the dashboard's client (its base URL and admin token). `on_state(reason)` is called whenever a
    connection fails (it is then tried again), followed by an empty set (nothing to reload; the status line is
    drawn again, as the polling client's empty sets do); `on_state(None)` once one works again, and its first
    set is then every tab. `on_open()` is called each time a stream is open (the first one included).
    `resumed`: the caller knew the server as down (a restart after a refused token, say): the first stream that
    opens is then such a return too (`on_state(None)`, every tab). Raises
    StreamUnsupported on a 404 (or a 200 that is not an event stream), and
    PatchmoiError when the token is refused (401): waiting will not help either."""
    delay = backoff[0]
    lost = resumed  # a connection failed since the last one that worked: reload every tab on the next
    reported = resumed  # on_state(reason) was called: on_state(None) is owed
    params = {"kinds": ",".join(sorted(set(kinds)))} if kinds else None
    timeout = httpx.Timeout(None, connect=connect_timeout)
    headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
    while not stop.is_set():
        try:
            async with http.stream("GET", path, params=params, headers=headers, timeout=timeout) as resp:
                await _check(resp, http)
                delay = backoff[0]
                if on_open is not None:
                    on_open()
                if reported:
                    reported = False
                    on_state(None)
                if lost:
                    lost = False
                    yield set(TABS)
                parser = SseParser()
                chunks = resp.aiter_bytes()
                while True:
                    chunk = await _next_chunk(chunks, stop, idle_timeout)
                    if chunk is None:
                        if stop.is_set():
                            return
                        raise _Broken("the server ended the stream")
                    for event in parser.feed(chunk):
                        if event.event == "change":
                            tabs = _tabs(event.data)
                            if tabs:
                                yield tabs
        except httpx.HTTPError as exc:
            reason = f"cannot reach {http.base_url}: {type(exc).__name__}"
        except (_Broken, ValueError) as exc:
            reason = f"{http.base_url}/stream: {exc}"
        if stop.is_set():
            return
        lost = reported = True
        on_state(reason)
        yield set()  # nothing to reload: the consumer draws again what on_state changed (its status line)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, backoff[1])


async def _check(resp: httpx.Response, http: httpx.AsyncClient) -> None:
    """A 200 event stream goes on; 404 is StreamUnsupported, 401 a PatchmoiError, anything else _Broken."""
    if resp.status_code == 200:
        kind = resp.headers.get("content-type") or "no content type"
        if kind.startswith("text/event-stream"):
            return
        raise StreamUnsupported(f"{http.base_url}/stream answered {kind}, not an event stream; poll instead")
    if resp.status_code == 401:
        raise PatchmoiError(f"{http.base_url} refused the admin token (401); pass --token or PATCH_ADMIN_TOKEN")
    if resp.status_code == 404:
        raise StreamUnsupported(f"{http.base_url} has no /stream (404): an older server; poll instead")
    try:
        answer = json.loads((await resp.aread())[:4000])
    except ValueError:
        answer = None
    said = ""
    if isinstance(answer, dict):
        said = " ".join(str(answer[k]) for k in ("error", "message") if isinstance(answer.get(k), str))
    raise _Broken(f"HTTP {resp.status_code} {said}".strip())


async def _next_chunk(chunks: AsyncIterator[bytes], stop: asyncio.Event, idle: float | None) -> bytes | None:
    """The next chunk of the body; None at its end or once `stop` is set; _Broken when nothing comes for `idle`
    seconds (the server's keepalive comes every 15)."""
    read: asyncio.Future[bytes] = asyncio.ensure_future(anext(chunks))
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {read, stopped}
    try:
        done, _ = await asyncio.wait(waiting, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller is cancelled (the dashboard quits): no read is left behind
        read.cancel()
        raise
    finally:
        stopped.cancel()
    if read in done:
        try:
            return read.result()
        except StopAsyncIteration:
            return None
    read.cancel()
    await asyncio.wait({read})  # (never raises: the read's own error or cancellation stays in it)
    if not read.cancelled():
        read.exception()  # retrieved, so that it is not reported as never retrieved
    if stop.is_set():
        return None
    raise _Broken(f"nothing from the server for {idle:g}s")


def _tabs(data: str) -> set[str]:
    """The known tab names of a `change` message; every tab when it cannot be read (reloading is always safe)."""
    try:
        kinds = json.loads(data).get("kinds")
    except (ValueError, AttributeError):
        return set(TABS)
    if not isinstance(kinds, list):
        return set(TABS)
    return {k for k in kinds if isinstance(k, str) and k in TABS}
