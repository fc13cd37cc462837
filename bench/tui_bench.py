"""Dashboard benchmark: first paint on a 1,000,000-event store, append-to-render latency across processes
(local and remote), and searches of the whole history.

Cold: the store's index does not exist yet; time until the status line shows the build's progress, and until
the first page is in once it is built. Warm (the index built):
first paint = from creating the app to the Events table holding its first page (headless, via run_test).
Append-to-render = a second process appends an event carrying its send time; the app's live tail
(watchfiles, 30 ms debounce) re-queries and the row is in the table. Targets: first paint <= 1 s, p95 <= 150 ms.
Remote: the same, with the dashboard on a real `patchmoi serve` (a subprocess on the same DATA_DIR) whose
`/stream` announces the append and whose list endpoint the dashboard then reads. Target: p95 <= 300 ms.
History: `/` searches of the store (core.history) as the dashboard runs them: an indexed term on the newest
page, an indexed term one in 1,000 records, free text (read record by record); and `G` paging past the 5,000
rows a table keeps.

    .venv/bin/python bench/tui_bench.py [--events 1000000] [--samples 60] [--no-remote]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store_bench import make_event  # noqa: E402

from patchmoi.core.config import Settings  # noqa: E402
from patchmoi.core.history import Query, search  # noqa: E402
from patchmoi.core.store import Kind, Store  # noqa: E402
from patchmoi.tui.app import PatchmoiApp  # noqa: E402
from patchmoi.tui.client import LocalClient, RemoteClient  # noqa: E402

TOKEN = "tui-bench-token"

WRITER = r"""
import json, sys, time
from patchmoi.core.store import Kind, Store
store = Store(sys.argv[1])
for i in range(int(sys.argv[2])):
    time.sleep(0.1)
    # the send time in the id: the server's event view keeps only the spec's fields
    store.append(Kind.EVENTS, {"id": f"bench-live-{i}-{time.time():.6f}", "type": "upstream.release",
                              "payload": {"repo": "acme/live", "tag": f"v{i}"}})
"""


class TimedApp(PatchmoiApp):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latencies: list[float] = []
        self.seen: set[str] = set()

    def render_table(self, kind: str, *, keep: str | None = None) -> None:
        super().render_table(kind, keep=keep)
        self.note(kind)

    def prepend_rows(self, kind: str, added: list[dict[str, Any]]) -> None:
        super().prepend_rows(kind, added)
        self.note(kind)

    def note(self, kind: str) -> None:
        """The rows in the table now: each live row's latency from its send time (in its id)."""
        if kind != "events":
            return
        now = time.time()
        for rec in self.rows[kind][:20]:
            rid = str(rec.get("id"))
            if rid.startswith("bench-live-") and rid not in self.seen:
                self.seen.add(rid)
                self.latencies.append((now - float(rid.rsplit("-", 1)[1])) * 1000)


async def cold(data: Path) -> None:
    """A fresh store, no index yet: how soon the screen shows the build's progress and the newest events (read
    from the end of the file meanwhile), and how soon everything is in once the indexes are built."""
    t0 = time.perf_counter()
    app = TimedApp(LocalClient(Settings.from_env({"DATA_DIR": str(data)})), health_interval=3600)
    progress = rows = None
    async with app.run_test(size=(80, 24)) as pilot:
        while True:
            status = str(app.query_one("#status").render())
            building = "indexing" in status or "building its indexes" in status
            now = time.perf_counter() - t0
            if progress is None and building:
                progress = now
            if rows is None and app.table("events").row_count:
                rows = now
            if rows is not None and not building and app.last_refresh is not None:
                break
            await pilot.pause(0.005)
        ready = time.perf_counter() - t0

    def ms(value: float | None) -> str:
        return f"{value * 1000:8.0f} ms" if value is not None else "       - (none)"

    print(f"cold: progress line on screen     {ms(progress)}   (fresh store, no index yet)")
    print(f"cold: newest events on screen     {ms(rows)}   (read from the end of the file during the build)")
    print(f"cold: every tab loaded            {ms(ready)}   (indexes built)")


async def run(data: Path, samples: int) -> None:
    t0 = time.perf_counter()
    app = TimedApp(LocalClient(Settings.from_env({"DATA_DIR": str(data)})), health_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.table("events").row_count == 0:
            await pilot.pause(0.005)
        first_paint = time.perf_counter() - t0
        print(f"warm: first paint (5 tabs loaded) {first_paint * 1000:8.0f} ms   (target <= 1000 ms)")
        await pilot.press("2")
        await live(app, pilot, data, samples, "local", 150)
        t = time.perf_counter()
        deadline = time.monotonic() + 120
        while not app.trimmed["events"] and time.monotonic() < deadline:  # past the 5,000 rows a table keeps
            await pilot.press("G")  # the last loaded row: older rows load on demand, beyond any fixed cap
            await pilot.pause(0.01)
        oldest = app.rows["events"][-1].get("id") if app.rows["events"] else None
        print(
            f"G pressed until past 5,000 rows  {(time.perf_counter() - t) * 1000:8.0f} ms   "
            f"({app.table('events').row_count:,} rows kept; oldest shown {str(oldest)[-30:]})"
        )


async def live(app: TimedApp, pilot: Any, data: Path, samples: int, label: str, target: int) -> None:
    """A second process appends `samples` events 100 ms apart; each one's send-to-row latency."""
    app.latencies.clear()
    app.seen.update(str(r.get("id")) for r in app.rows["events"])  # an earlier run's rows are not this one's
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(data), str(samples)], cwd=ROOT)
    deadline = time.monotonic() + samples * 0.1 + 20
    while len(app.latencies) < samples and time.monotonic() < deadline:
        await pilot.pause(0.02)
    writer.wait()
    lat = sorted(app.latencies)
    if not lat:
        print(f"{label}: no live rows seen")
        return
    p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
    print(
        f"{label}: append -> row (x-proc)  {statistics.median(lat):8.1f} ms p50  {p95:6.1f} ms p95"
        f"   ({len(lat)} samples; target p95 <= {target} ms)"
    )


async def remote(data: Path, samples: int) -> None:
    """The dashboard on `patchmoi serve` (same DATA_DIR, no feed sources): first paint and streamed appends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN, "HOST": "127.0.0.1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "patchmoi", "serve", "--port", str(port)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{url}/readyz", headers={"authorization": f"Bearer {TOKEN}"}, timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        t0 = time.perf_counter()
        client = RemoteClient(url, TOKEN, interval=3600)  # no polling: only the stream can bring rows
        app = TimedApp(client, health_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.table("events").row_count == 0:
                await pilot.pause(0.005)
            print(f"remote: first paint               {(time.perf_counter() - t0) * 1000:8.0f} ms")
            await pilot.press("2")
            while client.streaming is None:
                await pilot.pause(0.01)
            await live(app, pilot, data, samples, "remote", 300)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)


def history(data: Path) -> None:
    """Searches as `/` runs them, on the store (the first step of each: up to 200 matches or 20,000 records)."""
    store = Store(data)
    store.warm()
    for text, what in (
        ("type:upstream.release", "indexed term, newest page"),
        ("type:downstream.release", "indexed term, 1 in 1,000 records"),
        ("v999123", "free text, read record by record"),
    ):
        t = time.perf_counter()
        found = search(store, "events", Query.parse(text), limit=200)
        took = (time.perf_counter() - t) * 1000
        print(f"search {text!r:26} {took:8.1f} ms   {len(found.hits):3} hits, {found.scanned:,} records read ({what})")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--no-remote", action="store_true", help="skip the dashboard on a `patchmoi serve`")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="patchmoi-tui-bench-"))
    data = base / "data"
    try:
        t = time.perf_counter()
        store = Store(data)
        for start in range(0, args.events, 2000):
            store.append_many(Kind.EVENTS, [make_event(i) for i in range(start, min(args.events, start + 2000))])
        store.close()
        print(f"store of {args.events:,} events written in {time.perf_counter() - t:.1f} s (no index yet)")
        asyncio.run(cold(data))
        asyncio.run(run(data, args.samples))
        history(data)
        if not args.no_remote:
            asyncio.run(remote(data, args.samples))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
