"""Feed parsing costs (#14): the fast structural reader against feedparser, and where feedparser should run.

    .venv/bin/python bench/parse_bench.py [--feeds 200] [--runs 300]

Prints:
- median CPU ms per ~6 KB GitHub-style releases feed (10 entries): `parse_xml_feed` by the fast reader, and by
  feedparser (`fast=False`);
- the worker pool (wall clock): a worker's start, the round trip of a trivial call carrying the feed, and
  feedparser in a worker;
- `--feeds` feeds the fast reader declines, parsed while the event loop also runs a 1 ms ticker (what an API
  request would wait): in a thread (`asyncio.to_thread`, as before #14), in a pool of 1 and of 2 worker
  processes; and as many feeds the fast reader takes, in threads and inline (one per turn of the loop, as
  `kinds.parse_feed_document` does). For each: wall time, this process's CPU time (GIL time the API cannot
  have), and the ticker's lag (p50, p99, max).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patchmoi.core.feeds.kinds import parse_feed_document  # noqa: E402
from patchmoi.core.feeds.parse import parse_xml_feed  # noqa: E402
from patchmoi.core.feeds.workers import WorkerPool  # noqa: E402

NOTES = "&lt;p&gt;Release notes: fixes &amp;amp; improvements.&lt;/p&gt;" * 6


def feed(n: int, *, declined: bool = False) -> bytes:
    """A GitHub releases feed of 10 entries (~6 KB). `declined`: one title is HTML (left to feedparser)."""
    html = ' type="html"'
    entries = "".join(
        f"<entry><id>tag:github.com,2008:Repository/{n}/v1.{i}</id><updated>2026-05-{20 - i:02d}T10:00:00Z</updated>"
        f'<link rel="alternate" type="text/html" href="https://github.com/acme/p{n}/releases/tag/v1.{i}"/>'
        f"<title{html if declined and i == 1 else ''}>v1.{i}</title>"
        f'<content type="html">{NOTES}</content><author><name>release-bot</name></author>'
        f'<media:thumbnail height="30" width="30" url="https://avatars.githubusercontent.com/u/{n}?s=60&amp;v=4"/>'
        "</entry>"
        for i in range(10, 0, -1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        f'xmlns:media="http://search.yahoo.com/mrss/" xml:lang="en-US"><id>p{n}</id>'
        f"<title>Release notes from p{n}</title><updated>2026-05-20T10:00:00Z</updated>{entries}</feed>"
    ).encode()


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median CPU time of one call, in ms (CPU time: other processes on the machine do not inflate it)."""
    times = []
    for _ in range(runs):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times) * 1000


async def with_ticker(work: Callable[[], Awaitable[object]]) -> tuple[float, float, list[float]]:
    """Run `work` while a 1 ms ticker measures how late the loop wakes it: wall s, CPU s, lags in ms."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - start - 0.001) * 1000)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    await tick
    return wall, cpu, lags


def report(name: str, wall: float, cpu: float, lags: list[float]) -> None:
    lags = sorted(lags) or [0.0]
    p50, p99, worst = statistics.median(lags), lags[int(len(lags) * 0.99)], lags[-1]
    print(
        f"  {name:34} wall {wall:6.2f}s  this process's CPU {cpu:6.2f}s  "
        f"loop lag p50 {p50:5.2f} ms  p99 {p99:6.2f} ms  max {worst:6.2f} ms"
    )


async def main_async(feeds: int, runs: int) -> None:
    body = feed(1)
    print(f"feed: {len(body)} bytes, 10 entries")
    fast_ms = median_ms(lambda: parse_xml_feed(body, content_type="application/atom+xml"), runs)
    slow_ms = median_ms(lambda: parse_xml_feed(body, content_type="application/atom+xml", fast=False), runs // 4)
    print(f"median CPU per feed: fast reader {fast_ms:.3f} ms, feedparser {slow_ms:.3f} ms (x{slow_ms / fast_ms:.1f})")

    pool = WorkerPool(1)
    try:
        start = time.perf_counter()
        await pool.run(len, b"")
        print(f"worker pool: start {1000 * (time.perf_counter() - start):.0f} ms (once)")
        trip = []
        for _ in range(runs):
            start = time.perf_counter()
            await pool.run(len, body)
            trip.append(time.perf_counter() - start)
        in_worker = []
        for _ in range(runs // 4):
            start = time.perf_counter()
            await pool.run(parse_xml_feed, body, content_type="application/atom+xml", fast=False)
            in_worker.append(time.perf_counter() - start)
        print(
            f"  round trip of a call carrying the feed: median {1000 * statistics.median(trip):.3f} ms; "
            f"feedparser in a worker, round trip: median {1000 * statistics.median(in_worker):.3f} ms"
        )
    finally:
        pool.shutdown()

    declined = [feed(n, declined=True) for n in range(feeds)]
    taken = [feed(n) for n in range(feeds)]
    print(f"{feeds} feeds at once, with a 1 ms ticker on the loop (an API request's view):")

    async def in_threads() -> None:
        await asyncio.gather(
            *(asyncio.to_thread(parse_xml_feed, b, content_type="application/atom+xml", fast=False) for b in declined)
        )

    report("feedparser in threads (before)", *await with_ticker(in_threads))
    for size in (1, 2):
        pool = WorkerPool(size)
        await asyncio.gather(*(pool.run(len, b"") for _ in range(size)))  # started before the clock

        async def in_pool(pool: WorkerPool = pool) -> None:
            await asyncio.gather(
                *(pool.run(parse_xml_feed, b, content_type="application/atom+xml", fast=False) for b in declined)
            )

        try:
            report(f"feedparser in {size} worker process{'es' if size > 1 else ''}", *await with_ticker(in_pool))
        finally:
            pool.shutdown()

    async def fast_in_threads() -> None:
        await asyncio.gather(
            *(asyncio.to_thread(parse_xml_feed, b, content_type="application/atom+xml") for b in taken)
        )

    report("fast reader in threads", *await with_ticker(fast_in_threads))

    async def inline() -> None:
        async def one(b: bytes) -> None:
            await asyncio.sleep(0)
            await parse_feed_document(b, "application/atom+xml")

        await asyncio.gather(*(one(b) for b in taken))

    report("fast reader inline (after)", *await with_ticker(inline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main_async(args.feeds, args.runs))


if __name__ == "__main__":
    main()
