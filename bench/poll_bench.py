"""Poll benchmark: 1,000 sources on a loopback feed server that answers each request after 50 ms.

Prints one cold pass (full bodies, priming every source), a steady-state pass (conditional GET → 304),
requests per second, bytes downloaded, and how many TCP connections the poller opened.

    .venv/bin/python bench/poll_bench.py [--sources 1000] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def feed_body(n: int) -> bytes:
    entries = "".join(
        f"<entry><id>tag:github.com,2008:Repository/{n}/v1.{i}</id><updated>2026-05-{20 - i:02d}T10:00:00Z</updated>"
        f'<link rel="alternate" href="https://github.com/acme/p{n}/releases/tag/v1.{i}"/><title>v1.{i}</title>'
        f"<content type=\"html\">{'Release notes. ' * 40}</content><author><name>bot</name></author></entry>"
        for i in range(10, 0, -1)
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<id>p{n}</id><title>Releases of acme/p{n}</title><updated>2026-05-20T10:00:00Z</updated>"
            f"{entries}</feed>").encode()


async def serve(port: int, latency: float) -> None:
    """A minimal keep-alive HTTP/1.1 server: /feed/<n> with ETag support, counting connections."""
    stats = {"connections": 0, "requests": 0, "bytes": 0}
    bodies: dict[int, bytes] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                stats["requests"] += 1
                await asyncio.sleep(latency)
                if path == "/stats":
                    body, status, extra = json.dumps(stats).encode(), "200 OK", ""
                else:
                    n = int(path.rsplit("/", 1)[1])
                    etag = f'"feed-{n}-v1"'
                    if headers.get("if-none-match") == etag:
                        body, status, extra = b"", "304 Not Modified", f"ETag: {etag}\r\n"
                    else:
                        body = bodies.setdefault(n, feed_body(n))
                        status, extra = "200 OK", f"ETag: {etag}\r\nContent-Type: application/atom+xml\r\n"
                stats["bytes"] += len(body)
                writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=2048)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def run_bench(n_sources: int, port: int) -> None:
    import httpx

    from core.config import Settings
    from core.service import Service

    tmp = Path(tempfile.mkdtemp(prefix="patchmoi-poll-bench-"))
    sources = [{
        "id": f"src-{i}", "provider": "github", "url": f"http://127.0.0.1:{port}/feed/{i}", "event": "release",
        "repo": {"owner": "acme", "name": f"p{i}", "fullName": f"acme/p{i}", "webUrl": f"https://github.com/acme/p{i}"},
    } for i in range(n_sources)]
    (tmp / "feed-sources.json").write_text(json.dumps({"sources": sources}))
    settings = Settings.from_env({"DATA_DIR": str(tmp / "data"), "FEED_SOURCES_PATH": str(tmp / "feed-sources.json")})
    service = Service(settings)
    t0 = time.perf_counter()
    cold = await service.poll_once()
    cold_s = time.perf_counter() - t0
    cold_bytes = service.fetcher.bytes_downloaded
    t1 = time.perf_counter()
    warm = await service.poll_once()
    warm_s = time.perf_counter() - t1
    warm_bytes = service.fetcher.bytes_downloaded - cold_bytes
    requests = service.fetcher.requests
    await service.stop()
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"http://127.0.0.1:{port}/stats")).json()
    cold_ok = sum(1 for r in cold if r.status == "primed")
    warm_304 = sum(1 for r in warm if r.status == "not_modified")
    print(f"sources                    {n_sources}")
    print(f"cold pass                  {cold_s:8.2f} s   {cold_ok} primed   {n_sources / cold_s:7.0f} req/s"
          f"   {cold_bytes / 1e6:6.2f} MB downloaded   (target < 10 s; Bun's sequential poller ~52 s)")
    print(f"steady pass (304s)         {warm_s:8.2f} s   {warm_304} not modified   {n_sources / warm_s:7.0f} req/s"
          f"   {warm_bytes / 1e6:6.3f} MB downloaded")
    ratio = cold_bytes / warm_bytes if warm_bytes else float("inf")
    print(f"bytes cold / steady        {ratio:8.1f} x (target >= 5x; a 304 has no body)")
    print(f"requests sent              {requests}")
    print(f"TCP connections opened     {stats['connections'] - 1}   (for {requests} requests: keep-alive reuse)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.latency_ms / 1000))
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency-ms", str(args.latency_ms)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert server.stdout is not None
        server.stdout.readline()
        print(f"loopback feed server: 127.0.0.1:{port}, {args.latency_ms:.0f} ms per response")
        asyncio.run(run_bench(args.sources, port))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
