"""HTTP benchmark: `patchmoi serve` on a 10,000- and a 1,000,000-event store, concurrency 16.

For GET /flow-events?limit=50, GET /maintenance-attempts?status=changed and GET /healthz (same server) it
prints p50/p99 latency and requests per second. A raw keep-alive HTTP/1.1 client drives the load, so client
overhead stays small. Targets: list p50 within 3x of /healthz; no growth from 10k to 1M events.

    .venv/bin/python bench/http_bench.py [--sizes 10000,1000000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store_bench import make_event  # noqa: E402

from patchmoi.core.store import Kind, Store  # noqa: E402

TOKEN = "bench-token"


def build(data: Path, n: int) -> None:
    store = Store(data)
    for start in range(0, n, 2000):
        store.append_many(Kind.EVENTS, [make_event(i) for i in range(start, min(n, start + 2000))])
    store.append_many(
        Kind.ATTEMPTS,
        [
            {
                "id": f"att-{i}",
                "eventId": f"e{i}",
                "status": ("started", "changed", "failed", "completed")[i % 4],
                "updatedAt": "2026-11-21T10:00:02.000Z",
                "candidateRefs": [],
            }
            for i in range(max(1000, n // 100))
        ],
    )
    store.list_events(limit=1)  # build the index before serving
    store.list_attempts(limit=1)
    store.close()


async def load(port: int, path: str, total: int, concurrency: int) -> tuple[list[float], float]:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode()
    latencies: list[float] = []
    remaining = [total]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while remaining[0] > 0:
            remaining[0] -= 1
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
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
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            latencies.append((time.perf_counter() - t) * 1000)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def serve(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchmoi", "serve", "--no-poll", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="patchmoi-http-bench-"))
    paths = ["/healthz", "/flow-events?limit=50", "/maintenance-attempts?status=changed"]
    try:
        for size in (int(x) for x in args.sizes.split(",")):
            data = base / f"data-{size}"
            t = time.perf_counter()
            build(data, size)
            print(f"store of {size:,} events built and indexed in {time.perf_counter() - t:.1f} s")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proc = serve(data, port)
            try:
                asyncio.run(load(port, paths[1], 200, 4))  # warm up
                p50_health = None
                for path in paths:
                    lat, wall = asyncio.run(load(port, path, args.requests, args.concurrency))
                    lat.sort()
                    p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
                    if path == "/healthz":
                        p50_health = p50
                    ratio = f"   {p50 / p50_health:4.1f}x healthz" if p50_health and path != "/healthz" else ""
                    print(f"  {path:<40} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {len(lat) / wall:7.0f} req/s{ratio}")
            finally:
                proc.terminate()
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
