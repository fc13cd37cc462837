"""HTTP benchmark of `patchmoi serve` (#14): the cold start, steady load, and the ceiling of its own server stack.

For each store size a fresh DATA_DIR is written directly as JSONL, so the derived index does not exist yet: N flow
events, and one maintenance attempt per event written as three records as its status moves (started, started with
its run running, then its outcome), interleaved as a maintained target's dispatcher writes them. Then:

1. cold: start `patchmoi serve` and time until /healthz answers; then the first GET /flow-events?limit=50 and the
   first GET /maintenance-attempts?status=changed, and the time until /readyz answers 200 (while the index
   builds it answers 503 "indexing"), while another connection sends GET /healthz back to back all along
   (p50/p99/max: can the server answer anything while the index builds?);
2. steady: p50/p99 and requests/s of /healthz and both lists, at concurrency 16, for each stack and access-log
   mode asked for (`--stacks`, `--access-log`; each restarts the server on the store and waits for /readyz);
3. ceiling: on the same server stack (server.run.uvicorn_config: the same uvicorn protocol class, event loop and log
   settings, one worker, the same client) a constant-body Starlette app whose body is the list's own response;
   the list's requests/s over the constant app's is printed as a ratio (issue #14's target: >= 0.50 with httptools
   on uvloop). The two loads alternate (`--rounds`), so both see whatever else the machine is doing, and the
   ratio is of the two medians.

Each load also prints the server process's CPU time per request (from /proc, all its threads), which what else
runs on the machine disturbs much less than requests/s; the ratio is printed by that measure too. The client is a
callback-driven keep-alive HTTP/1.1 client on uvloop, one request in flight per connection. Its CPU share is
printed: on 2 cores it shares the machine with the server, and a client near 100% would understate the ceiling.
Temporary directories and servers are removed at the end, Ctrl-C included.

    .venv/bin/python bench/http_bench.py [--sizes 10000,1000000] [--seconds 2] [--concurrency 16]
        [--stacks httptools,h11] [--access-log errors,all] [--rounds 4] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store_bench import make_event  # noqa: E402

from patchmoi.core.attempts import attempt_id_for, new_attempt  # noqa: E402

TOKEN = "bench-token"
LIST = "/flow-events?limit=50"
ATTEMPTS = "/maintenance-attempts?status=changed"
PATHS = ["/healthz", LIST, ATTEMPTS]
# An attempt's outcome, by event number modulo 20: mostly nothing to do, some rebuilt, a few needing a person.
OUTCOMES = ["completed"] * 10 + ["skipped"] * 4 + ["changed"] * 3 + ["needs_intervention", "blocked", "failed"]


# -- the store ------------------------------------------------------------------------------------------------
def attempt_records(event: dict[str, Any], i: int) -> list[dict[str, Any]]:
    """The three records the dispatcher writes for one attempt: started, its run running, its outcome."""
    created = f"2026-11-21T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
    run_id = f"run-{i:08d}"
    dispatch = {
        "operation": "dispatch",
        "status": "dispatched",
        "createdAt": created,
        "workspaceBackendUrl": "http://127.0.0.1:8787",
        "runIds": [run_id],
    }
    started = dict(new_attempt(event, dispatch, attempt_id_for(str(event["id"]), "dispatch", created)))
    running = {**started, "workspaceRunStatuses": {run_id: "running"}, "updatedAt": created}
    outcome = OUTCOMES[i % len(OUTCOMES)]
    done: dict[str, Any] = {
        **running,
        "status": outcome,
        "workspaceRunStatuses": {run_id: outcome},
        "message": f"{outcome}: rebuilt the patch stack on {event['payload']['tag']}",
        "updatedAt": created,
        "completedAt": created,
    }
    if outcome == "changed":
        done["candidateRefs"] = [{"repo": "acme/widget-fork", "ref": f"patchmoi/rebuild-{i}", "sha": f"{i:040x}"}]
    if outcome in ("needs_intervention", "blocked", "failed"):
        done["error"] = f"{outcome}: conflict in src/widget.c"
    return [started, running, done]


def write_store(data: Path, n: int) -> tuple[int, int]:
    """N events and 3N attempt records as JSONL, no index. Returns (event lines, attempt lines)."""
    data.mkdir(parents=True)
    encode = msgspec.json.Encoder().encode
    pending: list[list[dict[str, Any]]] = []  # attempts whose later records are still to be written
    attempt_lines = 0
    with (
        open(data / "flow-events.jsonl", "wb") as events,
        open(data / "maintenance-attempts.jsonl", "wb") as attempts,
    ):
        for start in range(0, n, 5000):
            event_chunk, attempt_chunk = [], []
            for i in range(start, min(n, start + 5000)):
                event = make_event(i)
                event_chunk.append(encode(event))
                pending.append(attempt_records(event, i))
                # started now, running for the previous event, the outcome two events back
                for records in pending[-3:]:
                    attempt_chunk.append(encode(records.pop(0)))
                pending = [records for records in pending if records]
            events.write(b"\n".join(event_chunk) + b"\n")
            attempts.write(b"\n".join(attempt_chunk) + b"\n")
            attempt_lines += len(attempt_chunk)
        tail = [encode(record) for records in pending for record in records]
        if tail:
            attempts.write(b"\n".join(tail) + b"\n")
            attempt_lines += len(tail)
    for path in (data / "flow-events.jsonl", data / "maintenance-attempts.jsonl"):
        path.chmod(0o600)
    return n, attempt_lines


# -- the client -----------------------------------------------------------------------------------------------
def request_bytes(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()


def content_length(head: bytes) -> int:
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        at = head.lower().find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"no Content-Length: {head[:300]!r}")
    end = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : end if end >= 0 else len(head)])


class LoadConnection(asyncio.Protocol):
    """Sends `request`, reads its answer, sends it again, until `deadline`; appends each latency (seconds)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buffer = bytearray()
        self.need = -1
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            if not head.startswith(b"HTTP/1.1 200"):
                self.load.fail(head.decode(errors="replace"))
                return
            self.need = end + 4 + content_length(head)
        if len(self.buffer) < self.need:
            return
        if len(self.buffer) > self.need:
            self.load.fail("more bytes than the response")
            return
        self.buffer.clear()
        self.need = -1
        now = time.perf_counter()
        self.load.latencies.append(now - self.sent)
        if now < self.load.deadline:
            self.send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.closed()


@dataclass
class Load:
    request: bytes
    deadline: float
    connections: int
    done: asyncio.Future[None]
    latencies: list[float] = field(default_factory=list)
    open: int = 0

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # the client's CPU seconds over wall seconds
    server_us: float | None  # the server process's CPU microseconds per request (all its threads)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def line(self) -> str:
        server = f"server CPU {self.server_us:5.0f} us/req, " if self.server_us is not None else ""
        return (
            f"p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  {self.rate:8.0f} req/s"
            f"  ({server}client CPU {self.client_cpu:4.0%})"
        )


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of process `pid` so far, where /proc says (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_load(port: int, path: str, seconds: float, concurrency: int, pid: int | None = None) -> Result:
    """`concurrency` connections sending GET `path` back to back for `seconds`; `pid` is the server's, for its CPU
    time per request (less sensitive than requests/s to whatever else runs on the machine)."""
    loop = asyncio.get_running_loop()
    load = Load(request_bytes(path), 0.0, concurrency, loop.create_future())
    server_cpu = cpu_seconds(pid) if pid else None
    cpu, start = time.process_time(), time.perf_counter()
    load.deadline = start + seconds
    load.open = concurrency
    transports = []
    for _ in range(concurrency):
        transport, _ = await loop.create_connection(lambda: LoadConnection(load), "127.0.0.1", port)
        transports.append(transport)
    try:
        await asyncio.wait_for(load.done, seconds + 30)
    finally:
        for transport in transports:
            transport.close()
    wall = time.perf_counter() - start
    lat = sorted(load.latencies)
    server_after = cpu_seconds(pid) if pid else None
    server_us = (server_after - server_cpu) / len(lat) * 1e6 if server_cpu is not None and server_after else None
    return Result(
        len(lat),
        wall,
        statistics.median(lat) * 1000,
        p99(lat) * 1000,
        (time.process_time() - cpu) / wall,
        server_us,
    )


class Client:
    """One keep-alive connection for single requests (the cold phase)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=1 << 24))

    async def request(self, path: str) -> tuple[int, float, bytes]:
        """GET `path`: status, seconds, body."""
        started = time.perf_counter()
        self.writer.write(request_bytes(path))
        head = await self.reader.readuntil(b"\r\n\r\n")
        body = await self.reader.readexactly(content_length(head[:-2]))
        return int(head[9:12]), time.perf_counter() - started, body

    async def get(self, path: str) -> tuple[float, bytes]:
        """GET `path`, which must answer 200: seconds, body."""
        status, seconds, body = await self.request(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return seconds, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def p99(ordered: list[float]) -> float:
    """The nearest-rank 99th percentile of sorted values (the maximum below 100 values)."""
    return ordered[min(len(ordered), math.ceil(len(ordered) * 0.99)) - 1]


def describe(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    lat = sorted(s * 1000 for s in samples)
    return f"{len(lat)} samples, p50 {statistics.median(lat):.2f} ms, p99 {p99(lat):.2f} ms, max {lat[-1]:.2f} ms"


# -- the servers -----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 600) -> float:
    """Seconds until `port` answers GET /healthz with 200."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.settimeout(timeout)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"server did not answer in {timeout} s")


class Servers:
    """Every server process started, stopped (SIGTERM, then SIGKILL) at the end whatever happens."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.procs.append(proc)
        return proc

    def patchmoi(self, data: Path, port: int, stack: str, access_log: str) -> subprocess.Popen[bytes]:
        env = {
            "DATA_DIR": str(data),
            "PATCH_ADMIN_TOKEN": TOKEN,
            "PATCHMOI_HTTP": stack,
            "PATCHMOI_ACCESS_LOG": access_log,
        }
        # the server's stderr goes to a file: what it costs to write the log is part of what is measured
        return self.start(["-m", "patchmoi", "serve", "--no-poll", "--port", str(port)], env, self.base / "serve.log")

    def constant(self, body: Path, port: int, stack: str) -> subprocess.Popen[bytes]:
        args = [str(Path(__file__)), "--constant-server", str(port), "--body", str(body), "--stacks", stack]
        return self.start(args, {}, self.base / "constant.log")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


@contextlib.contextmanager
def running(servers: Servers, proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        servers.stop(proc)


def constant_server(port: int, body_path: Path, stack: str) -> None:
    """The ceiling: a Starlette app answering every GET with the same bytes, on `serve`'s own uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from patchmoi.server.run import uvicorn_config

    body = body_path.read_bytes()

    async def endpoint(_request: Request) -> Response:
        return Response(body, media_type="application/json; charset=utf-8")

    app = Starlette(routes=[Route("/{path:path}", endpoint)])
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, http=stack)).run()


# -- the phases ----------------------------------------------------------------------------------------------------
async def cold_phase(port: int, spawned: float) -> None:
    """The first lists on a store without an index, then the wait for /readyz to say the index is built, with
    /healthz sent back to back on another connection all along."""
    probe, client = await Client.open(port), await Client.open(port)
    samples: list[float] = []
    building = True

    async def sample_health() -> None:
        while building:
            seconds, _ = await probe.get("/healthz")
            samples.append(seconds)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample_health())
    try:
        for path in (LIST, ATTEMPTS):
            seen = len(samples)
            seconds, _ = await client.get(path)
            print(f"  first GET {path:<38} {seconds * 1000:9.1f} ms;  /healthz meanwhile: {describe(samples[seen:])}")
        first = len(samples)
        polls = 0
        while True:
            status, _, body = await client.request("/readyz")
            polls += 1
            if status == 200:
                break
            if status != 503 or b"indexing" not in body:
                raise RuntimeError(f"GET /readyz: {status} {body[:300]!r}")
            await asyncio.sleep(0.1)
        ready = time.perf_counter() - spawned
        building = False
        await sampler
    finally:
        building = False
        sampler.cancel()
        await probe.close()
        await client.close()
    what = "the index built in the background" if polls > 1 else "/readyz 200 at once"
    print(f"  /readyz 200 (ready) {ready * 1000:9.1f} ms after start ({what})")
    print(f"  /healthz from the first list until ready: {describe(samples)}")
    if polls > 1:
        print(f"  /healthz while only the index built:     {describe(samples[first:])}")


async def wait_ready(port: int, timeout: float = 1800) -> None:
    """Until /readyz answers 200 (a restarted server may finish an index the previous one left incomplete)."""
    client = await Client.open(port)
    try:
        deadline = time.perf_counter() + timeout
        while (await client.request("/readyz"))[0] != 200:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not ready after {timeout} s")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


async def steady_phase(port: int, pid: int, seconds: float, concurrency: int) -> None:
    await run_load(port, LIST, min(1.0, seconds), concurrency)  # warm up
    for path in PATHS:
        result = await run_load(port, path, seconds, concurrency, pid)
        print(f"  {path:<40} {result.line()}")


@dataclass
class Ceiling:
    list_rate: float
    constant_rate: float
    list_us: float | None
    constant_us: float | None

    def line(self) -> str:
        line = f"list {self.list_rate:7.0f} req/s  constant {self.constant_rate:7.0f} req/s  "
        line += f"ratio {self.list_rate / self.constant_rate:.2f}"
        if self.list_us and self.constant_us:
            line += f" (by server CPU per request {self.constant_us / self.list_us:.2f})"
        return line


async def ceiling_phase(
    servers: tuple[tuple[int, int], tuple[int, int]], seconds: float, concurrency: int, rounds: int
) -> Ceiling:
    """The list on one server, the constant body on the other (each a (port, pid)), alternately."""
    (list_port, list_pid), (constant_port, constant_pid) = servers
    await run_load(constant_port, LIST, min(1.0, seconds), concurrency)  # warm up
    listed, constant = [], []
    for _ in range(rounds):
        listed.append(await run_load(list_port, LIST, seconds, concurrency, list_pid))
        constant.append(await run_load(constant_port, LIST, seconds, concurrency, constant_pid))
    for name, results in (("list", listed), ("constant", constant)):
        for i, result in enumerate(results, 1):
            print(f"    {name:<8} round {i}  {result.line()}")

    def median_us(results: list[Result]) -> float | None:
        known = [r.server_us for r in results if r.server_us is not None]
        return statistics.median(known) if known else None

    # medians: one round disturbed by something else on the machine moves neither side much
    return Ceiling(
        statistics.median(r.rate for r in listed),
        statistics.median(r.rate for r in constant),
        median_us(listed),
        median_us(constant),
    )


class Terminated(Exception):
    """SIGTERM: raised like Ctrl-C's KeyboardInterrupt, so the `finally` in main cleans up."""


def _terminate(*_: Any) -> None:
    raise Terminated


def uvloop_run(coro: Any) -> Any:
    """Run `coro` on uvloop. Inside the loop SIGTERM cancels it (an exception raised by a signal handler in a
    protocol callback would be swallowed by the loop); outside, `_terminate` raises."""

    async def main() -> Any:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        terminated: list[bool] = []

        def on_sigterm() -> None:
            terminated.append(True)
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await coro
        except asyncio.CancelledError:
            if terminated:
                raise Terminated from None
            raise  # Ctrl-C: the runner turns it into KeyboardInterrupt
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _terminate)  # remove_signal_handler left the default action

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main())
    return uvloop.run(main())


def bench_size(size: int, base: Path, args: argparse.Namespace, servers: Servers) -> list[str]:
    data = base / f"data-{size}"
    started = time.perf_counter()
    events, attempts = write_store(data, size)
    megabytes = sum(p.stat().st_size for p in data.iterdir()) / 1e6
    print(
        f"\n== {size:,} events: {events:,} event lines and {attempts:,} attempt lines ({megabytes:,.0f} MB) "
        f"written in {time.perf_counter() - started:.1f} s, no index"
    )
    stacks, modes = args.stacks.split(","), args.access_log.split(",")
    summary = []

    # 1. cold: the first server on the fresh store
    port = free_port()
    print(f"cold ({stacks[0]}, access log {modes[0]}):")
    spawned = time.perf_counter()
    with running(servers, servers.patchmoi(data, port, stacks[0], modes[0])) as proc:
        up = wait_listening(proc, port, base / "serve.log")
        print(f"  serve answering /healthz after {up * 1000:9.1f} ms")
        uvloop_run(cold_phase(port, spawned))

    # 2 and 3. steady and ceiling, per stack and access-log mode (the store is indexed now)
    body = base / "list-body.json"
    for stack in stacks:
        for mode in modes:
            port, constant_port = free_port(), free_port()
            print(f"steady ({stack}, access log {mode}, concurrency {args.concurrency}):")
            with running(servers, servers.patchmoi(data, port, stack, mode)) as proc:
                wait_listening(proc, port, base / "serve.log")
                uvloop_run(wait_ready(port))
                _, listed = uvloop_run(_get_once(port, LIST))
                body.write_bytes(listed)
                with running(servers, servers.constant(body, constant_port, stack)) as constant:
                    wait_listening(constant, constant_port, base / "constant.log")
                    uvloop_run(steady_phase(port, proc.pid, args.seconds, args.concurrency))
                    print(f"  ceiling: {LIST} against a constant {len(listed):,}-byte body, same stack:")
                    pair = ((port, proc.pid), (constant_port, constant.pid))
                    ceiling = uvloop_run(ceiling_phase(pair, args.seconds, args.concurrency, args.rounds))
            line = f"{size:>9,} events  {stack:<9} log {mode:<7} {ceiling.line()}"
            print(f"  => {line}")
            summary.append(line)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return summary


async def _get_once(port: int, path: str) -> tuple[float, bytes]:
    client = await Client.open(port)
    try:
        return await client.get(path)
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,1000000", help="store sizes, in flow events (default 10000,1000000)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each load run (default 2)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4, help="list/constant alternations in the ceiling phase (4)")
    ap.add_argument("--stacks", default="httptools", help="PATCHMOI_HTTP values to measure, e.g. httptools,h11")
    ap.add_argument("--access-log", default="errors", help="PATCHMOI_ACCESS_LOG values to measure, e.g. errors,all")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    ap.add_argument("--constant-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--body", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.constant_server:
        constant_server(args.constant_server, args.body, args.stacks)
        return
    signal.signal(signal.SIGTERM, _terminate)  # through the `finally` below, as Ctrl-C does
    base = Path(tempfile.mkdtemp(prefix="patchmoi-http-bench-"))
    servers = Servers(base)
    summary: list[str] = []
    try:
        print(f"{os.cpu_count()} CPUs; servers' logs in {base}" if args.keep else f"{os.cpu_count()} CPUs")
        for size in (int(x) for x in args.sizes.split(",")):
            summary += bench_size(size, base, args, servers)
        print("\nlist requests/s over a constant-body app's on the same stack (target >= 0.50 with httptools):")
        for line in summary:
            print(f"  {line}")
    except (KeyboardInterrupt, Terminated) as exc:
        print("\nterminated" if isinstance(exc, Terminated) else "\ninterrupted", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    finally:
        servers.stop_all()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
