"""Poll benchmark: 1,000 feed sources on a loopback server that answers each request after 50 ms, and
1,000 `git` sources (local bare repositories with 10 annotated tags each, read by `git ls-remote`).

Feeds: one cold pass (full bodies, priming every source), a steady-state pass (conditional GET → 304),
requests per second, bytes downloaded, and how many TCP connections the poller opened.
git: a cold pass (priming), a steady pass (refs unchanged: nothing parsed), and a pass after a new tag was
pushed to one repository in ten (those emit).

    .venv/bin/python bench/poll_bench.py [--sources 1000] [--latency-ms 50] [--git-sources 1000]
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
        f'<content type="html">{"Release notes. " * 40}</content><author><name>bot</name></author></entry>'
        for i in range(10, 0, -1)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>p{n}</id><title>Releases of acme/p{n}</title><updated>2026-05-20T10:00:00Z</updated>"
        f"{entries}</feed>"
    ).encode()


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

    from patchmoi.core.config import Settings
    from patchmoi.core.service import Service

    tmp = Path(tempfile.mkdtemp(prefix="patchmoi-poll-bench-"))
    sources = [
        {
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
        for i in range(n_sources)
    ]
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
    print(
        f"cold pass                  {cold_s:8.2f} s   {cold_ok} primed   {n_sources / cold_s:7.0f} req/s"
        f"   {cold_bytes / 1e6:6.2f} MB downloaded   (target < 10 s; Bun's sequential poller ~52 s)"
    )
    print(
        f"steady pass (304s)         {warm_s:8.2f} s   {warm_304} not modified   {n_sources / warm_s:7.0f} req/s"
        f"   {warm_bytes / 1e6:6.3f} MB downloaded"
    )
    ratio = cold_bytes / warm_bytes if warm_bytes else float("inf")
    print(f"bytes cold / steady        {ratio:8.1f} x (target >= 5x; a 304 has no body)")
    print(f"requests sent              {requests}")
    print(f"TCP connections opened     {stats['connections'] - 1}   (for {requests} requests: keep-alive reuse)")


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


async def run_git_bench(n_sources: int) -> None:
    import shutil

    from patchmoi.core.config import Settings
    from patchmoi.core.service import Service

    tmp = Path(tempfile.mkdtemp(prefix="patchmoi-git-bench-"))
    work, template = tmp / "work", tmp / "template.git"
    work.mkdir()
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
            statuses: dict[str, int] = {}
            for r in reports:
                statuses[r.status] = statuses.get(r.status, 0) + 1
            passes.append((label, took, statuses, sum(r.emitted for r in reports)))
    finally:
        await service.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"git sources                {n_sources}   (bare repositories made in {made:.1f} s, 10 annotated tags each)")
    for label, took, statuses, emitted in passes:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
        print(f"git {label:<27}{took:7.2f} s   {took / n_sources * 1000:6.2f} ms/source   {counts}; {emitted} emitted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--git-sources", type=int, default=1000, help="git sources for the ls-remote pass (0: skip)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.latency_ms / 1000))
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        print(f"loopback feed server: 127.0.0.1:{port}, {args.latency_ms:.0f} ms per response")
        asyncio.run(run_bench(args.sources, port))
    finally:
        server.terminate()
        server.wait()
    if args.git_sources:
        asyncio.run(run_git_bench(args.git_sources))


if __name__ == "__main__":
    main()
