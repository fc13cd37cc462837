"""Poll benchmark: 1,000 feed sources on a loopback server that answers each request after 50 ms, the same
sources polled by a running `patchmoi serve` while its API is measured, and 1,000 `git` sources (local bare
repositories with 10 annotated tags each, read by `git ls-remote`).

Feeds, one pass at a time (`Service.poll_once`, what `patchmoi poll --once` runs):

- cold pass: full bodies, every source primed (10 entries each, nothing emitted);
- steady pass: conditional GET -> 304, nothing parsed;
- burst pass: every source has one new entry (the server serves a changed body with a new ETag): 1,000 feed
  signals, flow events and dispatches (each source targets a local workspace whose only step runs for another
  event type, so every dispatch is recorded as skipped and nothing runs);
- steady pass after the burst: all 304 again, nothing emitted (the burst's cursors were saved);
- burst / cold (target <= 1.5) and cold / network floor (target <= 2). The floor is sources x latency / the
  poller's concurrency (1,000 x 50 ms / 64 = 0.78 s): no poller can finish sooner over these connections.
- with `--profile`, a second fresh run of the cold and burst passes under cProfile (timings above are without
  it): where the time goes, and how much of it is saving feed state (every function of a class or module
  named for state that writes, saves, flushes or puts it, outermost calls only, and the fsyncs).

Serve (`--no-serve` skips it): a real `patchmoi serve` process (DATA_DIR, FEED_SOURCES_PATH, HOST, PORT,
PATCH_ADMIN_TOKEN and PATCHMOI_MIN_POLL_SECONDS from the environment; every source's `pollIntervalSeconds` and
the floor set to `--serve-interval`, so the service re-polls all 1,000 sources that many seconds after each
poll, +-10% jitter). It starts with an empty sources file; then the 1,000 sources are written to it (the
service re-reads it when it changes: a cold pass), the feed server's bodies change once that pass is done
(the next re-polls are a burst), and the sources are removed again (idle). Meanwhile one client sends
`GET /flow-events?limit=50` at `--api-rate` requests per second, open loop (a request is sent on schedule,
on a free keep-alive connection, whatever the earlier ones are doing; with all 32 connections busy it waits
for one; its latency counts from its scheduled time, so a stalled server shows in every request it delayed).
Latency p50/p95/p99/max is printed per window: idle with an empty store, the cold pass (the store still has no
flow events: the same empty answer), the burst (until every entry is recorded and dispatched), idle with the
burst's 1,000 flow events (the same 50-event answer as most of the burst). Target: p99 <= 5 ms while serve
polls. The serve process's CPU time (with any worker processes) is printed per window.

git: a cold pass (priming), a steady pass (refs unchanged: nothing parsed), and a pass after a new tag was
pushed to one repository in ten (those emit).

Temporary directories and processes are removed on errors, Ctrl-C and SIGTERM too (`--keep` keeps the
directories).

    .venv/bin/python bench/poll_bench.py [--sources 1000] [--latency-ms 50] [--git-sources 1000]
        [--no-serve] [--serve-interval 20] [--api-rate 100] [--idle-seconds 5] [--profile] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import inspect
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"
NOOP_STEP = """# written by bench/poll_bench.py: a step for another event type, so a dispatch runs nothing
[[steps]]
name = "bench-noop"
on = ["bench.never"]
command = "true"
"""


# -- the loopback feed server (a subprocess) --------------------------------------------------------------
def feed_body(n: int, gen: int) -> bytes:
    """Source n's Atom feed at generation `gen`: the newest 10 of versions 1.1 .. 1.(9 + gen)."""
    top = 9 + gen
    day0 = dt.date(2026, 5, 1)
    entries = "".join(
        f"<entry><id>tag:github.com,2008:Repository/{n}/v1.{i}</id>"
        f"<updated>{day0 + dt.timedelta(days=i)}T10:00:00Z</updated>"
        f'<link rel="alternate" href="https://github.com/acme/p{n}/releases/tag/v1.{i}"/><title>v1.{i}</title>'
        f'<content type="html">{"Release notes. " * 40}</content><author><name>bot</name></author></entry>'
        for i in range(top, top - 10, -1)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>p{n}</id><title>Releases of acme/p{n}</title><updated>{day0 + dt.timedelta(days=top)}T10:00:00Z"
        f"</updated>{entries}</feed>"
    ).encode()


async def feed_server(port: int, latency: float) -> None:
    """A minimal keep-alive HTTP/1.1 server: /feed/<n> with ETag support, answered after `latency`.

    Control paths, answered at once: /stats (counters, per generation), /bump (every feed gets one new entry:
    the next generation), /reset (generation 1, counters zeroed)."""
    gen = [1]
    stats: dict[str, Any] = {}
    bodies: dict[tuple[int, int], bytes] = {}

    def reset() -> None:
        gen[0] = 1
        stats.clear()
        stats.update({"gen": 1, "connections": 0, "requests": 0, "bytes": 0, "ok": {}, "notModified": {}})
        stats.update({"firstOk": {}, "lastOk": {}})

    reset()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                extra = "Content-Type: application/json\r\n"
                status = "200 OK"
                if path in ("/stats", "/bump", "/reset"):
                    if path == "/bump":
                        gen[0] += 1
                        stats["gen"] = gen[0]
                    elif path == "/reset":
                        reset()
                    body = json.dumps(stats).encode()
                else:
                    if not counted:
                        stats["connections"] += 1
                        counted = True
                    stats["requests"] += 1
                    await asyncio.sleep(latency)
                    n, g = int(path.rsplit("/", 1)[1]), gen[0]
                    etag = f'"feed-{n}-g{g}"'
                    key = str(g)
                    if headers.get("if-none-match") == etag:
                        body, status, extra = b"", "304 Not Modified", f"ETag: {etag}\r\n"
                        stats["notModified"][key] = stats["notModified"].get(key, 0) + 1
                    else:
                        body = bodies.get((n, g)) or bodies.setdefault((n, g), feed_body(n, g))
                        extra = f"ETag: {etag}\r\nContent-Type: application/atom+xml\r\n"
                        stats["ok"][key] = stats["ok"].get(key, 0) + 1
                        stats["firstOk"].setdefault(key, time.time())
                        stats["lastOk"][key] = time.time()
                    stats["bytes"] += len(body)
                writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FEED_SERVER_NICE = 10


@dataclass
class FeedServer:
    port: int
    pid: int


@contextlib.contextmanager
def feed_server_process(latency_ms: float) -> Iterator[FeedServer]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--feed-server", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # the stand-in for the internet runs behind what is measured: on two cores its CPU (a Python server
        # answering 1,000 feeds in a second) would otherwise delay the API requests the serve phase times
        preexec_fn=lambda: os.nice(FEED_SERVER_NICE),
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the loopback feed server did not start")
        yield FeedServer(port, proc.pid)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def control(port: int, what: str) -> dict[str, Any]:
    """GET /stats, /bump or /reset on the feed server. A bare socket, not a new httpx client per call: building
    one builds a TLS context (~47 ms of CPU), which stalled this process's loop, and with it the API load
    client's requests, every time the serve phase looked at the counters."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /{what} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        body: dict[str, Any] = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    return body


# -- the fixture -------------------------------------------------------------------------------------------
def write_sources(tmp: Path, port: int, n: int, *, interval: float | None = None, target: bool = True) -> Path:
    """feed-sources.json with n sources (0: an empty list), replaced atomically (the service watches it)."""
    workspace = tmp / "workspace"
    workspace.mkdir(exist_ok=True)
    (workspace / ".patchmoi.toml").write_text(NOOP_STEP)
    sources = []
    for i in range(n):
        source: dict[str, Any] = {
            "id": f"src-{i}",
            "provider": "github",
            "url": f"http://127.0.0.1:{port}/feed/{i}",
            "event": "release",
            "repo": {
                "owner": "acme",
                "name": f"p{i}",
                "fullName": f"acme/p{i}",
                "webUrl": f"https://github.com/acme/p{i}",
            },
        }
        if target:
            source["target"] = {
                "mode": "workspace_flow",
                "eventType": "upstream.release",
                "transport": "local",
                "workspace": str(workspace),
            }
        if interval is not None:
            source["pollIntervalSeconds"] = interval
        sources.append(source)
    path = tmp / "feed-sources.json"
    part = tmp / "feed-sources.json.part"
    part.write_text(json.dumps({"sources": sources}))
    os.replace(part, path)
    return path


# -- profiles ----------------------------------------------------------------------------------------------
STATE_WORDS = re.compile(r"state", re.IGNORECASE)
SAVE_NAMES = re.compile(
    r"^_*(write|save|flush|put|persist|commit|store|dump|append|fold|snapshot)|_(write|save|flush|persist|append)",
    re.IGNORECASE,
)


def _label(code: Any) -> str:
    if isinstance(code, str):
        return code
    return f"{Path(code.co_filename).name}:{getattr(code, 'co_qualname', code.co_name)}"


def state_saving(prof: cProfile.Profile) -> tuple[float, list[tuple[str, int, float]], tuple[int, float]]:
    """Seconds under the outermost calls of functions that save feed state, those functions, and the fsyncs."""
    entries = prof.getstats()

    def is_saver(code: Any) -> bool:
        if isinstance(code, str):
            return False
        qual = str(getattr(code, "co_qualname", code.co_name))
        where = qual + " " + Path(code.co_filename).stem  # a class (FeedState) or a module (feedstate.py)
        return bool(STATE_WORDS.search(where)) and bool(SAVE_NAMES.search(code.co_name))

    total, matched = 0.0, []
    for e in entries:
        if not is_saver(e.code):
            continue
        total += e.totaltime
        matched.append((_label(e.code), e.callcount, e.totaltime))
        for sub in e.calls or []:  # a saver called by a saver is counted once, at the outer one
            if is_saver(sub.code):
                total -= sub.totaltime
    fsync = [e for e in entries if isinstance(e.code, str) and "fsync" in e.code]
    return (
        total,
        sorted(matched, key=lambda m: -m[2]),
        (sum(e.callcount for e in fsync), sum(e.totaltime for e in fsync)),
    )


def print_profile(label: str, prof: cProfile.Profile, wall: float) -> None:
    saving, matched, (fsyncs, fsync_s) = state_saving(prof)
    print(
        f"  {label}: {wall:.2f} s profiled; saving feed state {saving:.2f} s ({saving / wall:.0%}); "
        f"fsync x{fsyncs} {fsync_s:.2f} s"
    )
    for name, calls, took in matched[:6]:
        print(f"      state: {name:<48} x{calls:<7} {took:7.3f} s cumulative")
    ours = [e for e in prof.getstats() if _is_ours(_code_file(e.code))]
    ours.sort(key=lambda e: -e.totaltime)
    print("      top functions of patchmoi by cumulative time (coroutines: time between awaits only):")
    for e in ours[:12]:
        print(f"        {_label(e.code):<60} x{e.callcount:<7} {e.totaltime:7.3f} s  (own {e.inlinetime:.3f} s)")


def _code_file(code: Any) -> str:
    return "" if isinstance(code, str) else str(code.co_filename)


def _is_ours(path: str) -> bool:
    """patchmoi's own code (core/, server/, as imported through patchmoi/), not its dependencies or the bench."""
    parts = Path(path).parts
    return "site-packages" not in parts and any(p in parts for p in ("patchmoi", "core", "server"))


# -- in-process passes -------------------------------------------------------------------------------------
@dataclass
class Pass:
    label: str
    seconds: float
    statuses: Counter[str]
    emitted: int
    bytes: int
    requests: int
    cpu: float
    profile: cProfile.Profile | None = None
    intake: float = 0.0
    """Seconds until the poller's pass returned (every entry recorded); the rest is dispatching them."""


async def run_passes(
    tmp: Path, feed: FeedServer, n_sources: int, *, target: bool, profile: bool, labels: tuple[str, ...]
) -> list[Pass]:
    """Service.poll_once passes on a fresh DATA_DIR; "burst" first bumps every feed to a new entry."""
    from patchmoi.core.config import Settings
    from patchmoi.core.service import Service

    port = feed.port
    await control(port, "reset")
    sources = write_sources(tmp, port, n_sources, target=target)
    settings = Settings.from_env({"DATA_DIR": str(tmp / "data"), "FEED_SOURCES_PATH": str(sources)})
    service = Service(settings)
    passes: list[Pass] = []
    polled_at = [0.0]
    poll_all = service.poller.poll_all

    async def timed_poll_all(*a: Any, **k: Any) -> Any:
        try:
            return await poll_all(*a, **k)
        finally:
            polled_at[0] = time.perf_counter()

    service.poller.poll_all = timed_poll_all  # type: ignore[method-assign]
    try:
        for label in labels:
            if label == "burst":
                await control(port, "bump")
            prof = cProfile.Profile() if profile else None
            before_bytes, before_requests = service.fetcher.bytes_downloaded, service.fetcher.requests
            cpu = tree_cpu(os.getpid(), exclude=feed.pid)
            t = time.perf_counter()
            if prof is not None:
                prof.enable()
            reports = await service.poll_once()
            if prof is not None:
                prof.disable()
            took = time.perf_counter() - t
            passes.append(
                Pass(
                    label,
                    took,
                    Counter(r.status for r in reports),
                    sum(r.emitted for r in reports),
                    service.fetcher.bytes_downloaded - before_bytes,
                    service.fetcher.requests - before_requests,
                    tree_cpu(os.getpid(), exclude=feed.pid) - cpu,
                    prof,
                    polled_at[0] - t,
                )
            )
    finally:
        await service.stop()
    return passes


def concurrency_of_service() -> tuple[int, str]:
    """The poller's concurrency as the service builds it: min(poll tasks at once, fetch connections)."""
    from patchmoi.core.feeds.fetch import FetchLimits
    from patchmoi.core.service import Service

    param = inspect.signature(Service.__init__).parameters.get("poll_concurrency")
    polls = int(param.default) if param is not None and isinstance(param.default, int) else 64
    connections = int(getattr(FetchLimits(), "max_connections", polls))
    why = f"Service(poll_concurrency={polls}), FetchLimits.max_connections={connections}"
    return min(polls, connections), why


async def feeds_bench(tmp: Path, feed: FeedServer, args: argparse.Namespace) -> None:
    n, port = args.sources, feed.port
    labels = ("cold", "steady", "burst", "steady after burst")
    passes = await run_passes(tmp / "passes", feed, n, target=not args.record_only, profile=False, labels=labels)
    stats = await control(port, "stats")
    by = {p.label: p for p in passes}
    cold, burst = by["cold"], by["burst"]
    print(f"sources                    {n}   (each pass: Service.poll_once, as `patchmoi poll --once`)")
    for p in passes:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(p.statuses.items()))
        print(
            f"{p.label + ' pass':<26} {p.seconds:7.2f} s   CPU {p.cpu:6.2f} s   {n / p.seconds:5.0f} sources/s   "
            f"{counts}; {p.emitted} emitted   {p.bytes / 1e6:5.2f} MB"
        )
    concurrency, why = concurrency_of_service()
    floor = n * args.latency_ms / 1000 / concurrency
    print(
        f"burst / cold               {burst.seconds / cold.seconds:7.2f} x   (target <= 1.5; the burst records "
        f"{burst.emitted} entries{'' if args.record_only else ', flow events and dispatches'})"
    )
    if not args.record_only:
        print(
            f"  of which the poll          {burst.intake:7.2f} s   ({burst.intake / cold.intake:.2f} x the cold pass's "
            f"{cold.intake:.2f} s: every entry recorded as a signal and a flow event)"
        )
        print(
            f"  then dispatching           {burst.seconds - burst.intake:7.2f} s   ({burst.emitted} dispatches, "
            f"{(burst.seconds - burst.intake) / max(1, burst.emitted) * 1000:.2f} ms each; `serve` does this on its "
            "queue while polling goes on)"
        )
    print(
        f"network floor              {floor:7.2f} s   ({n} x {args.latency_ms:.0f} ms / {concurrency} concurrent; "
        f"{why})"
    )
    print(f"cold / floor               {cold.seconds / floor:7.2f} x   (target <= 2)")
    steady = by["steady"]
    ratio = cold.bytes / steady.bytes if steady.bytes else float("inf")
    print(f"bytes cold / steady        {ratio:7.1f} x   (target >= 5x; a 304 has no body)")
    print(
        f"TCP connections opened     {stats['connections']}   (for {stats['requests']} requests over "
        f"{len(passes)} passes: keep-alive reuse)"
    )
    if args.profile:
        print("profile (cProfile; a second fresh run of the cold and burst passes, slower than the timings above):")
        profiled = await run_passes(
            tmp / "profiled", feed, n, target=not args.record_only, profile=True, labels=("cold", "burst")
        )
        for p in profiled:
            assert p.profile is not None
            print_profile(f"{p.label} pass", p.profile, p.seconds)


# -- serve ---------------------------------------------------------------------------------------------------
@dataclass
class Window:
    name: str
    start: float
    end: float = 0.0
    cpu: float = 0.0
    notes: list[str] = field(default_factory=list)


def tree_cpu(pid: int, exclude: int | None = None) -> float:
    """CPU seconds of a process, its reaped children and its live descendants (worker processes), but for the
    subtree of `exclude` (the feed server, when the bench measures itself)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cpu[int(entry.name)] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p == exclude:
            continue
        total += cpu.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


IDLE_REUSE_SECONDS = 2.0  # a pooled connection idle longer is closed, not reused (uvicorn closes at 5 s)
MAX_CONNECTIONS = 32


class ApiLoad:
    """GET /flow-events?limit=50 at a fixed rate, open loop, on a pool of at most MAX_CONNECTIONS keep-alive
    connections (a request due while all of them are busy waits for one: that wait is part of its latency)."""

    def __init__(self, port: int, rate: float) -> None:
        self.port = port
        self.interval = 1.0 / rate
        self.samples: list[tuple[float, float]] = []  # (scheduled wall time, latency ms)
        self.errors: list[str] = []
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # oldest first
        self.opened = 0
        self.stale = 0  # pooled connections the server had closed (keep-alive timeout): reopened, not errors
        self.request = (
            f"GET /flow-events?limit=50 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        self.running = True
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def one(self, scheduled_wall: float, scheduled: float) -> None:
        async with self.slots:
            await self._one(scheduled_wall, scheduled)

    async def _one(self, scheduled_wall: float, scheduled: float) -> None:
        for attempt in (1, 2):
            while self.free and time.monotonic() - self.free[0][2] > IDLE_REUSE_SECONDS:
                self.free.pop(0)[1].close()  # idle too long: the server may be closing it (keep-alive timeout)
            reused = attempt == 1 and bool(self.free)
            writer: asyncio.StreamWriter | None = None
            try:
                if reused:
                    reader, writer, _ = self.free.pop()
                else:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    self.opened += 1
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                length, chunked = 0, False
                for line in head.split(b"\r\n"):
                    low = line.lower()
                    if low.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
                        chunked = True
                if chunked:
                    while True:
                        size = int((await reader.readline()).strip(), 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if writer is not None:
                    writer.close()
                nothing_read = isinstance(exc, ConnectionError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                )
                if reused and nothing_read:
                    self.stale += 1  # the server closed this idle keep-alive connection: again on a new one
                    continue
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            latency = (time.perf_counter() - scheduled) * 1000
            if not head.startswith(b"HTTP/1.1 200"):
                self.errors.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            else:
                self.samples.append((scheduled_wall, latency))
            self.free.append((reader, writer, time.monotonic()))
            return

    async def run(self) -> None:
        start = time.perf_counter()
        k = 0
        while self.running:
            k += 1
            scheduled = start + k * self.interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(time.time() - (time.perf_counter() - scheduled), scheduled))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        self.running = False
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        for _, writer, _ in self.free:
            writer.close()

    def window(self, w: Window) -> list[float]:
        return sorted(lat for t, lat in self.samples if w.start <= t < w.end)


class ServeLog:
    """The serve process's JSON log lines (stderr), counted by type as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.counts: Counter[str] = Counter()
        self.last: dict[str, float] = {}
        self.rest = b""

    def read(self) -> Counter[str]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
                kind = str(record.get("type"))
                at = dt.datetime.fromisoformat(str(record.get("ts"))).timestamp()
            except (ValueError, AttributeError):
                continue
            self.counts[kind] += 1
            self.last[kind] = at  # the serve process's own clock (the same machine)
        return self.counts


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    p = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return f"p50 {p[49]:6.2f}  p95 {p[94]:6.2f}  p99 {p[98]:6.2f}  max {values[-1]:7.2f} ms   n={len(values)}"


async def serve_bench(tmp: Path, port: int, args: argparse.Namespace) -> None:
    import httpx

    n, interval = int(args.sources), float(args.serve_interval)
    tmp.mkdir()
    await control(port, "reset")
    sources = write_sources(tmp, port, 0)
    api_port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp / "data"),
        "FEED_SOURCES_PATH": str(sources),
        "HOST": "127.0.0.1",
        "PORT": str(api_port),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCHMOI_MIN_POLL_SECONDS": str(interval),
        "PYTHONPATH": str(ROOT),
    }
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "patchmoi", "serve"], cwd=tmp, env=env, stdout=log_file, stderr=log_file
        )
    log = ServeLog(log_path)
    load = ApiLoad(api_port, args.api_rate)
    windows: list[Window] = []
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {TOKEN}"})

    def alive() -> None:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"patchmoi serve exited with {proc.returncode}:\n{tail}")

    async def wait_for(what: str, check: Any, timeout: float, every: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve bench: timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(every)

    async def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (await client.get("/healthz")).status_code == 200
        return False

    seen_statuses: Counter[str] = Counter()

    async def polled_once() -> bool:
        """Has every source been polled (/readyz)? Primed, or already re-polled (not modified) after that."""
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
            body = (await client.get("/readyz")).json()
            seen_statuses.clear()
            seen_statuses.update(str(s.get("lastStatus")) for s in body.get("sources") or [])
        return seen_statuses["primed"] + seen_statuses["not_modified"] >= n

    def open_window(name: str, start: float | None = None) -> Window:
        w = Window(name, time.time() if start is None else start)
        w.cpu = tree_cpu(proc.pid)
        windows.append(w)
        return w

    def close_window(w: Window) -> None:
        w.end = time.time()
        w.cpu = tree_cpu(proc.pid) - w.cpu

    load_task: asyncio.Task[None] | None = None
    try:
        await wait_for("serve to answer /healthz", healthy, 60)
        load_task = asyncio.create_task(load.run())
        await asyncio.sleep(2.0)  # connections open, first requests out of the way

        w = open_window("idle, empty store")
        await asyncio.sleep(args.idle_seconds)
        close_window(w)

        # cold: the sources appear; all are due at once
        w = open_window("cold pass")
        write_sources(tmp, port, n, interval=interval, target=not args.record_only)

        async def cold_fetched() -> bool:
            return bool(int((await control(port, "stats"))["ok"].get("1", 0)) >= n)

        await wait_for("the cold pass's fetches", cold_fetched, 120)
        try:
            await wait_for("every source polled (/readyz)", polled_once, 60, 0.25)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; /readyz lastStatus counts: {dict(seen_statuses)}") from None
        close_window(w)
        stats = await control(port, "stats")
        w.notes.append(
            f"{n} bodies served in {stats['lastOk']['1'] - stats['firstOk']['1']:.2f} s, "
            f"all polled {w.end - w.start:.2f} s after the sources file changed ({dict(seen_statuses)})"
        )

        # burst: every feed gets a new entry; the re-polls ~interval after each source's cold poll find it
        bumped = await control(port, "bump")
        early = int(bumped["notModified"].get("1", 0))

        async def burst_fetched() -> bool:
            return bool(int((await control(port, "stats"))["ok"].get("2", 0)) >= n)

        cpu_at_bump = tree_cpu(proc.pid)
        await wait_for("the burst's fetches", burst_fetched, 3 * interval + 120, 0.2)
        stats = await control(port, "stats")
        w = Window("burst pass", stats["firstOk"]["2"])
        windows.append(w)

        async def recorded() -> bool:
            return bool(log.read()["feed.accepted"] >= n)

        await wait_for("every new entry recorded (feed.accepted in the log)", recorded, 120, 0.1)
        accepted_at = log.last["feed.accepted"]
        dispatched = True
        if not args.record_only:

            async def all_dispatched() -> bool:
                return bool(log.read()["dispatch.done"] >= n)

            try:
                await wait_for("every flow event dispatched (dispatch.done in the log)", all_dispatched, 120, 0.1)
            except RuntimeError:
                dispatched = False
        w.end = max(log.last.get("dispatch.done", 0.0), accepted_at) if dispatched else time.time()
        w.cpu = tree_cpu(proc.pid) - cpu_at_bump  # the quiet wait for the re-polls costs next to nothing
        w.notes.append(
            f"{n} bodies served in {stats['lastOk']['2'] - stats['firstOk']['2']:.2f} s (poll jitter spreads them), "
            f"all recorded {accepted_at - w.start:.2f} s"
            + (
                ""
                if args.record_only
                else f", all dispatched {w.end - w.start:.2f} s"
                if dispatched
                else ", dispatch completion not seen in the log"
            )
            + " after the first"
        )
        if early:
            w.notes.append(f"{early} sources were re-polled before the bump (raise --serve-interval)")

        # idle: no sources; wait until the poller has nothing running any more
        write_sources(tmp, port, 0)
        quiet_since, last_requests = time.monotonic(), -1
        while time.monotonic() - quiet_since < 1.5:
            requests = int((await control(port, "stats"))["requests"])
            if requests != last_requests:
                quiet_since, last_requests = time.monotonic(), requests
            await asyncio.sleep(0.25)
        w_idle = open_window(f"idle, {n} flow events" if not args.record_only else "idle after")
        await asyncio.sleep(args.idle_seconds)
        close_window(w_idle)
        log.read()
    finally:
        if load_task is not None:
            load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load_task
            await load.close()
        await client.aclose()
        stop(proc)
    print(
        f"serve: `patchmoi serve` polling {n} sources (pollIntervalSeconds = PATCHMOI_MIN_POLL_SECONDS = "
        f"{interval:g} s), GET /flow-events?limit=50 at {args.api_rate:g}/s open loop on {load.opened} "
        f"keep-alive connection(s) ({load.stale} found closed by the server when reused, and replaced); "
        "latency from the scheduled send time"
    )
    for w in windows:
        lat = load.window(w)
        print(f"  {w.name:<22} {percentiles(lat)}   serve CPU {w.cpu:5.2f} s in {w.end - w.start:5.2f} s")
        for note in w.notes:
            print(f"  {'':<22} {note}")
    polling = sorted(lat for w in windows if "pass" in w.name for lat in load.window(w))
    idle = sorted(lat for w in windows if w.name.startswith("idle") for lat in load.window(w))
    if polling and idle:
        p99 = statistics.quantiles(polling, n=100, method="inclusive")[98]
        print(f"  p99 while polling {p99:.2f} ms (target <= 5 ms); idle: {percentiles(idle)}")
    counts = log.counts
    if load.errors:
        print(f"  {len(load.errors)} API requests failed, e.g. {load.errors[0]}")
    problems = {k: v for k, v in counts.items() if "error" in k or "failed" in k}
    print(
        f"  serve log: {counts['feed.accepted']} feed.accepted, {counts['dispatch.done']} dispatch.done"
        + (f", problems: {dict(problems)}" if problems else "")
    )


# -- git sources -----------------------------------------------------------------------------------------------
def _git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.invalid",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


async def run_git_bench(tmp: Path, n_sources: int) -> None:
    from patchmoi.core.config import Settings
    from patchmoi.core.service import Service

    work, template = tmp / "work", tmp / "template.git"
    work.mkdir(parents=True)
    _git(work, "init", "-q", "-b", "main")
    for i in range(10):
        (work / "f.txt").write_text(f"{i}\n")
        _git(work, "add", "-A")
        _git(work, "commit", "-q", "-m", f"c{i}")
        _git(work, "tag", "-a", "-m", f"v1.{i}.0", f"v1.{i}.0")
    _git(tmp, "clone", "-q", "--bare", str(work), str(template))
    _git(template, "gc", "-q")
    t0 = time.perf_counter()
    repos = []
    for i in range(n_sources):
        repo = tmp / "repos" / f"p{i}.git"
        shutil.copytree(template, repo)
        repos.append(repo)
    made = time.perf_counter() - t0
    sources = [
        {
            "id": f"git-{i}",
            "kind": "git",
            "provider": "generic",
            "url": str(repo),
            "event": "release",
            "versions": {"prereleases": False},
            "repo": {
                "owner": "acme",
                "name": f"p{i}",
                "fullName": f"acme/p{i}",
                "webUrl": f"https://example.invalid/p{i}",
            },
        }
        for i, repo in enumerate(repos)
    ]
    (tmp / "feed-sources.json").write_text(json.dumps({"sources": sources}))
    settings = Settings.from_env({"DATA_DIR": str(tmp / "data"), "FEED_SOURCES_PATH": str(tmp / "feed-sources.json")})
    service = Service(settings)
    passes = []
    try:
        for label in ("cold pass (prime)", "steady pass (refs unchanged)", "1 in 10 has a new tag"):
            if label.startswith("1 in 10"):
                _git(work, "commit", "-q", "--allow-empty", "-m", "new")
                _git(work, "tag", "-a", "-m", "v2.0.0", "v2.0.0")
                for repo in repos[::10]:
                    _git(work, "push", "-q", str(repo), "main", "v2.0.0")
            t = time.perf_counter()
            reports = await service.poll_once()
            took = time.perf_counter() - t
            statuses: Counter[str] = Counter(r.status for r in reports)
            passes.append((label, took, statuses, sum(r.emitted for r in reports)))
    finally:
        await service.stop()
    print(f"git sources                {n_sources}   (bare repositories made in {made:.1f} s, 10 annotated tags each)")
    for label, took, statuses, emitted in passes:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
        print(f"git {label:<27}{took:7.2f} s   {took / n_sources * 1000:6.2f} ms/source   {counts}; {emitted} emitted")


# -- main ------------------------------------------------------------------------------------------------------
def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: processes stopped, directories removed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=1000, help="feed sources (default 1000)")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="the feed server's delay per response")
    ap.add_argument("--git-sources", type=int, default=1000, help="git sources for the ls-remote pass (0: skip)")
    ap.add_argument("--no-serve", action="store_true", help="skip the `patchmoi serve` phase")
    ap.add_argument("--serve-interval", type=float, default=20.0, help="serve's poll interval, seconds (default 20)")
    ap.add_argument("--api-rate", type=float, default=100.0, help="GET /flow-events per second during serve")
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="length of each idle window during serve")
    ap.add_argument("--record-only", action="store_true", help="sources without a target: no flow events")
    ap.add_argument("--profile", action="store_true", help="also profile a cold and a burst pass (cProfile)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    ap.add_argument("--feed-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.feed_server:
        signal.signal(signal.SIGTERM, _terminate)
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            asyncio.run(feed_server(args.feed_server, args.latency_ms / 1000))
        return
    if args.sources < 1 or args.api_rate <= 0 or args.serve_interval <= 0:
        raise SystemExit("--sources, --api-rate and --serve-interval must be positive")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background

    tmp = Path(tempfile.mkdtemp(prefix="patchmoi-poll-bench-"))
    try:
        with feed_server_process(args.latency_ms) as feed:
            print(f"loopback feed server: 127.0.0.1:{feed.port}, {args.latency_ms:.0f} ms per response")
            (tmp / "passes").mkdir()
            (tmp / "profiled").mkdir()
            asyncio.run(feeds_bench(tmp, feed, args))
            if not args.no_serve:
                asyncio.run(serve_bench(tmp / "serve", feed.port, args))
        if args.git_sources:
            asyncio.run(run_git_bench(tmp / "git", args.git_sources))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
