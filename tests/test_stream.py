"""`GET /stream` (server/stream.py) on a real server on 127.0.0.1, and the dashboard's reader of it
(patchmoi_tui/remote_stream.py): records appended by another process arrive promptly, auth and limits hold, a
stopping server ends its streams at once, and the reader reconnects (or says the server has no stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from patchmoi.core.config import Settings
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.store import Kind, Store
from patchmoi.server.app import create_app
from patchmoi.server.run import Server, uvicorn_config
from patchmoi.server.stream import ChangeStreams
from patchmoi.tui.remote_stream import TABS, ServerSentEvent, SseParser, StreamUnsupported, stream_changes

from .conftest import PYTHON, ROOT
from .loopback import LoopbackServer, Reply, free_port
from .test_server_process import start, stop

TOKEN = "stream-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    url: str
    port: int
    streams: ChangeStreams
    server: Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextlib.contextmanager
def serving(
    data: Path, *, port: int | None = None, streams: ChangeStreams | None = None, database: str | None = None
) -> Iterator[Served]:
    """`patchmoi serve`'s server (server.run.Server, configured by uvicorn_config) on DATA_DIR `data` (or the
    PostgreSQL `database`), in a thread, without polling."""
    port = port or free_port()
    streams = streams or ChangeStreams(keepalive=0.5)
    env = {"DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN}
    if database:
        env["PATCHMOI_DATABASE_URL"] = database
    settings = Settings.from_env(env)
    server = Server(uvicorn_config(create_app(settings, poll=False, streams=streams), "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    served = Served(f"http://127.0.0.1:{port}", port, streams, server, thread)
    try:
        yield served
    finally:
        served.stop()


@dataclass
class Reader:
    """A raw stream read by the test: every event, and when it came."""

    events: list[tuple[float, ServerSentEvent]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    comments: int = 0
    ended: bool = False

    def changes(self) -> list[list[str]]:
        return [json.loads(e.data)["kinds"] for _, e in self.events if e.event == "change"]


@contextlib.asynccontextmanager
async def reading(url: str, path: str = "/stream", headers: dict[str, str] | None = None) -> AsyncIterator[Reader]:
    """Open the stream and read it in the background while the test runs."""
    reader = Reader()
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(None, connect=5)) as http,
        http.stream("GET", path, headers=AUTH if headers is None else headers) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in resp.headers and resp.headers["cache-control"] == "no-cache"

        async def read() -> None:
            parser = SseParser()
            async for chunk in resp.aiter_bytes():
                reader.raw += chunk
                reader.comments += chunk.count(b": keepalive\n\n")
                for event in parser.feed(chunk):
                    reader.events.append((time.monotonic(), event))
            reader.ended = True

        task = asyncio.create_task(read())
        try:
            yield reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def more_changes(reader: Reader, seen: int, timeout: float = 10.0) -> None:
    await until(lambda: len(reader.changes()) > seen, timeout)


APPENDER = """
import sys
from patchmoi.core.store import Store
if "dbname=" in sys.argv[1]:  # the database store (#17): a record from another replica, say
    from patchmoi.core.store.postgres import PostgresStore
    store = Store(PostgresStore(sys.argv[1]), data_dir=".")
else:
    store = Store(sys.argv[1])
store.warm()
print("ready", flush=True)
n = 0
for line in sys.stdin:
    n += 1
    store.record_event({"id": f"e-{n}", "type": "upstream.release", "payload": {"url": "https://secret@example/x"}})
    print("appended", flush=True)
"""


@pytest.mark.parametrize("store", ["jsonl", "postgres"])
async def test_appends_by_another_process_arrive_promptly(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """Another process appends to the DATA_DIR (as the poll worker and a CLI do), or to the PostgreSQL database
    (as another replica does; LISTEN/NOTIFY): each append is announced, as a tab name only, within a fraction of
    a second."""
    data = tmp_path / "data"
    data.mkdir()
    database = request.getfixturevalue("postgres_url") if store == "postgres" else None
    with serving(data, database=database) as served:
        async with reading(served.url) as reader:
            await until(lambda: reader.events)
            hello = reader.events[0][1]
            assert (
                hello.event == "hello" and hello.retry == 2000 and isinstance(json.loads(hello.data)["position"], str)
            )
            proc = await asyncio.create_subprocess_exec(
                PYTHON,
                "-c",
                APPENDER,
                database or str(data),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None and proc.stdout is not None
            assert (await proc.stdout.readline()) == b"ready\n"  # started: its start-up is not the stream's latency
            latencies = []
            try:
                for _ in range(20):
                    seen = len(reader.changes())
                    began = time.monotonic()
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
                    await more_changes(reader, seen)
                    latencies.append(reader.events[-1][0] - began)  # when it arrived, not when this loop looked
                    assert (await proc.stdout.readline()) == b"appended\n"
                    await asyncio.sleep(0.1)  # past the coalescing window: one message per append
            finally:
                proc.stdin.close()
                await proc.wait()
            p95 = statistics.quantiles(latencies, n=20)[-1]
            p50, worst = statistics.median(latencies), max(latencies)
            print(
                f"\n{store}: stream latency over {len(latencies)} appends by another process: p50 {p50 * 1000:.0f} ms, "
                f"p95 {p95 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
            )
            assert p95 < 1.0
            assert reader.changes() == [["events"]] * 20
            assert b"secret" not in reader.raw and b"example" not in reader.raw  # kind names, never records
            await until(lambda: reader.comments >= 1, timeout=5)  # the keepalive (0.5 s in this server)


async def test_a_burst_is_one_message_and_kinds_filter(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(data)
    with serving(data, streams=ChangeStreams(keepalive=30, coalesce=0.3)) as served:
        async with reading(served.url) as everything, reading(served.url, "/stream?kinds=runs,attempts") as some:
            await until(lambda: everything.events and some.events)
            # a burst: appends 60 ms apart, which the store's tail reports one by one, within the 0.3 s window
            store.record_event({"id": "e1", "type": "upstream.release", "payload": {}})
            await asyncio.sleep(0.06)
            store.append(Kind.ATTEMPTS, {"id": "a1", "eventId": "e1", "status": "started"})
            await asyncio.sleep(0.06)
            store.append(Kind.JOBS, {"id": "j1", "kind": "fork_sync"})  # no tab: never announced
            await until(lambda: everything.changes() and some.changes())
            await asyncio.sleep(0.5)
            assert everything.changes() == [["events", "attempts"]]  # one message, in tab order
            assert some.changes() == [["attempts"]]
            store.append(Kind.NOTIFICATIONS, {"id": "n1", "kind": "signal", "status": "pending"})
            store.append(Kind.RUNS, {"id": "r1", "eventId": "e1", "status": "running"})
            await until(lambda: len(some.changes()) == 2)
            assert some.changes()[1] == ["runs"]


async def test_auth_methods_and_bad_kinds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with serving(data) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            r = await asyncio.wait_for(http.get("/stream"), 5)
            assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = await asyncio.wait_for(http.get("/stream", headers={"Authorization": "Bearer wrong"}), 5)
            assert r.status_code == 401
            r = await asyncio.wait_for(http.get("/stream?kinds=events,jobs", headers=AUTH), 5)
            assert r.status_code == 400 and r.json()["error"] == "invalid_request" and "jobs" in r.json()["message"]
            r = await asyncio.wait_for(http.get("/stream?kinds=,,,", headers=AUTH), 5)
            assert r.status_code == 400 and "names no tab" in r.json()["message"]
            r = await asyncio.wait_for(http.post("/stream", headers=AUTH), 5)
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS"
            r = await asyncio.wait_for(http.head("/stream", headers=AUTH), 5)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert (await asyncio.wait_for(http.get("/stream/x", headers=AUTH), 5)).status_code == 404
            assert not served.streams.subscriptions  # HEAD and refused requests hold no stream
            doc = (await asyncio.wait_for(http.get("/openapi.json", headers=AUTH), 5)).json()
            assert "/stream" in doc["paths"] and "/feed-sources/{id}/poll" in doc["paths"]
        async with reading(served.url, headers={"X-Patch-Admin-Token": TOKEN}) as reader:
            await until(lambda: reader.events)


async def test_streams_are_bounded_and_freed_when_the_client_goes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    streams = ChangeStreams(limit=2, keepalive=30)
    with serving(data, streams=streams) as served:
        async with reading(served.url) as first:
            async with reading(served.url):
                await until(lambda: len(streams.subscriptions) == 2)
                async with httpx.AsyncClient(base_url=served.url) as http:
                    r = await http.get("/stream", headers=AUTH)
                assert r.status_code == 503 and r.headers["retry-after"] == "5"
                assert r.json()["error"] == "too_many_streams" and "2 streams" in r.json()["message"]
            # the client went (its connection closed): the server ends that stream, with no write to notice it by
            await until(lambda: len(streams.subscriptions) == 1, timeout=5)
            async with reading(served.url) as third:
                await until(lambda: third.events)
            await until(lambda: len(streams.subscriptions) == 1, timeout=5)
            assert first.events and not first.ended
        await until(lambda: not streams.subscriptions and streams._follower is None, timeout=5)


async def test_a_stopping_server_ends_its_streams_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with serving(data, streams=ChangeStreams(keepalive=30)) as served:
        async with reading(served.url) as reader:
            await until(lambda: reader.events)
            began = time.monotonic()
            served.server.should_exit = True  # uvicorn would wait for the stream up to 15 s (timeout_graceful_shutdown)
            await until(lambda: reader.ended, timeout=5)
            await asyncio.to_thread(served.thread.join, 10)
            took = time.monotonic() - began
            assert not served.thread.is_alive() and took < 3, took


@pytest.mark.slow
def test_sigterm_stops_serve_with_a_dashboard_streaming(tmp_path: Path) -> None:
    """The real `patchmoi serve`: SIGTERM with a stream open ends it and the process, well before the 15 s
    graceful-shutdown timeout, and the lifespan's shutdown runs."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path / "data"), "PATCH_ADMIN_TOKEN": TOKEN}
    proc = start(tmp_path, port, env)
    try:
        with httpx.stream(
            "GET", f"http://127.0.0.1:{port}/stream", headers=AUTH, timeout=httpx.Timeout(10, connect=5)
        ) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines) == "retry: 2000"
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = list(lines)  # to the end of the stream
            ended = time.monotonic() - began
        assert ended < 5, ended
        assert any(line.startswith("event: hello") for line in rest)
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        assert time.monotonic() - began < 8
    finally:
        _, log = stop(proc) if proc.poll() is None else (0, proc.communicate()[1])
    assert '"type": "server.stopped"' in log


async def test_stream_changes_reconnects_and_reloads_every_tab(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(data)
    port = free_port()
    states: list[str | None] = []
    got: list[set[str]] = []
    stop_event = asyncio.Event()
    first = serving(data, port=port)
    served = first.__enter__()
    try:
        async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as http:

            async def consume() -> None:
                async for tabs in stream_changes(http, stop=stop_event, on_state=states.append, idle_timeout=5):
                    got.append(tabs)

            task = asyncio.create_task(consume())
            await until(lambda: served.streams.subscriptions)
            store.record_event({"id": "e1", "type": "upstream.release", "payload": {}})
            await until(lambda: got == [{"events"}])
            assert states == []
            first.__exit__(None, None, None)  # the server stops: the stream ends, connecting is refused
            await until(lambda: len(states) >= 2)
            assert all(isinstance(s, str) for s in states)
            assert "ended the stream" in str(states[0]) and "ConnectError" in str(states[-1])
            assert got[1:] == [set()] * (len(got) - 1)  # one empty set per failure: the status line is redrawn
            store.append(Kind.RUNS, {"id": "r1", "eventId": "e1", "status": "running"})  # while nobody listens
            with serving(data, port=port) as again:
                await until(lambda: states[-1] is None, timeout=10)  # backoff is at most 5 s
                await until(lambda: bool(got[-1]))
                reloads = [tabs for tabs in got if tabs]
                assert reloads == [{"events"}, set(TABS)]  # what happened meanwhile: every tab is reloaded, once
                store.append(Kind.ATTEMPTS, {"id": "a1", "eventId": "e1", "status": "started"})
                await until(lambda: got[-1] == {"attempts"})
                assert [tabs for tabs in got if tabs][2:] == [{"attempts"}]
                stop_event.set()
                await asyncio.wait_for(task, 5)  # stopping ends the iteration promptly
                await until(lambda: not again.streams.subscriptions, timeout=5)
    finally:
        first.__exit__(None, None, None)


async def drain(http: httpx.AsyncClient, states: list[str | None]) -> None:
    """Read stream_changes to its end (it ends only by raising here), at most 10 s."""

    async def read() -> None:
        async for _ in stream_changes(http, stop=asyncio.Event(), on_state=states.append):
            pass

    await asyncio.wait_for(read(), 10)


async def test_stream_changes_404_is_unsupported_and_401_is_an_error(tmp_path: Path) -> None:
    old = LoopbackServer().start()  # an older server (or the Bun service): 404 for /stream
    states: list[str | None] = []
    try:
        async with httpx.AsyncClient(base_url=old.url) as http:
            with pytest.raises(StreamUnsupported):
                await drain(http, states)
    finally:
        old.stop()
    data = tmp_path / "data"
    data.mkdir()
    with serving(data) as served:
        async with httpx.AsyncClient(base_url=served.url, headers={"Authorization": "Bearer wrong"}) as http:
            with pytest.raises(PatchmoiError, match="refused the admin token"):
                await drain(http, states)
    assert states == []  # neither is retried


async def test_stream_changes_retries_a_busy_server() -> None:
    busy = LoopbackServer().start()
    busy.route("/stream", Reply.json({"error": "too_many_streams", "message": "at most 64"}, 503))
    states: list[str | None] = []
    stop_event = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=busy.url) as http:

            async def consume() -> None:
                async for _ in stream_changes(http, stop=stop_event, on_state=states.append, backoff=(0.05, 0.1)):
                    pass

            task = asyncio.create_task(consume())
            await until(lambda: len(states) >= 3)
            stop_event.set()
            await asyncio.wait_for(task, 5)
    finally:
        busy.stop()
    assert "HTTP 503 too_many_streams at most 64" in str(states[0])


# -- the parser --------------------------------------------------------------------------------------------------
def parse(*chunks: bytes) -> list[ServerSentEvent]:
    parser = SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_sse_parser_reads_the_format_as_browsers_do() -> None:
    events = parse(b'\xef\xbb\xbfretry: 2000\r\nevent: hello\r\ndata: {"a":\r', b"\ndata:1}\r\n\r\n")
    assert events == [ServerSentEvent("hello", '{"a":\n1}', None, 2000)]
    # CR alone ends lines; a comment is nothing; no data, no event; a field without a colon is a name
    assert parse(b": keepalive\r\revent: change\rdata\r\r") == [ServerSentEvent("change", "", None, None)]
    assert parse(b"event: x\n\n: c\n\n") == []
    # a multi-byte character split between chunks; one space after the colon is dropped, not two
    assert parse(b"data:  caf\xc3", b"\xa9\n\n") == [ServerSentEvent("message", " caf\u00e9")]
    assert parse(b"id: 7\nretry: 1x\ndata: d\n\n")[0] == ServerSentEvent("message", "d", "7", None)
    # byte by byte, as a slow proxy may deliver it
    text = b'event: change\r\ndata: {"kinds":["runs"]}\r\n\r\n'
    assert parse(*[text[i : i + 1] for i in range(len(text))]) == [ServerSentEvent("change", '{"kinds":["runs"]}')]
    with pytest.raises(ValueError):
        parse(b"x" * (2 << 20))


def test_sse_frames_are_what_the_parser_reads() -> None:
    from patchmoi.server.stream import frame

    assert parse(frame("change", {"kinds": ["events"]})) == [ServerSentEvent("change", '{"kinds":["events"]}')]
