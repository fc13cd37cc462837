"""Store benchmark (ARCHITECTURE §3 targets) on a 1,000,000-event store.

Prints: append rate (batched and fsync-per-record); first touch in a fresh process before any index exists
(first list, full index build, index size against the JSONL files, a build killed half-way and rerun); then
the steady state: store open time in a fresh process, newest-50 list, filtered list, get by id, latest-per-id
attempts, cross-process follow latency (p50/p95) and the reader's peak RSS growth.

    .venv/bin/python bench/store_bench.py [--events 1000000] [--dir DIR] [--keep]
    .venv/bin/python bench/store_bench.py --store postgres [--events 1000000] [--url URL] [--fast]

`--store postgres` runs the same figures on the PostgreSQL store (bench/store_bench_pg.py, which takes the rest
of the arguments).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patchmoi.core.store import Kind, Store  # noqa: E402

TYPES = ("upstream.release", "upstream.branch_update", "downstream.release")


def make_event(i: int) -> dict[str, object]:
    t = TYPES[i % 3] if i % 1000 else "downstream.release"
    return {
        "id": f"patch:github-acme-widget-releases:tag:github.com,2008:Repository/1/v{i}:{t}",
        "type": t,
        "source": "patch",
        "occurredAt": "2026-11-21T10:00:00.000Z",
        "receivedAt": "2026-11-21T10:00:01.000Z",
        "payload": {
            "provider": "github",
            "event": "release",
            "sourceId": "github-acme-widget-releases",
            "entryId": f"tag:github.com,2008:Repository/1/v{i}",
            "title": f"v{i}",
            "url": f"https://github.com/acme/widget/releases/tag/v{i}",
            "author": "octocat",
            "repo": "acme/widget",
            "repoOwner": "acme",
            "repoName": "widget",
            "ref": f"v{i}",
            "tag": f"v{i}",
        },
    }


def make_attempt_versions(i: int) -> list[dict[str, object]]:
    base = {
        "id": f"attempt:patch:github-acme-widget-releases:tag:github.com,2008:Repository/1/v{3 * i}:upstream.release:1",
        "eventId": f"patch:github-acme-widget-releases:tag:github.com,2008:Repository/1/v{3 * i}:upstream.release",
        "eventType": "upstream.release",
        "operation": "dispatch",
        "upstreamRepo": "acme/widget",
        "upstreamRef": f"v{3 * i}",
        "target": "acme/widget-fork",
        "transport": "local",
        "createdAt": "2026-11-21T10:00:02.000Z",
    }
    outcome = ("changed", "completed", "needs_intervention", "failed")[i % 4]
    return [
        {**base, "status": "queued", "updatedAt": "2026-11-21T10:00:02.000Z"},
        {**base, "status": "running", "runIds": [f"run-{i}"], "updatedAt": "2026-11-21T10:00:03.000Z"},
        {
            **base,
            "status": outcome,
            "runIds": [f"run-{i}"],
            "candidateRef": f"refs/patchmoi/candidates/v{3 * i}",
            "updatedAt": "2026-11-21T10:01:03.000Z",
        },
    ]


COLD = r"""
import json, os, sys, time
from pathlib import Path
t0 = time.perf_counter()
from patchmoi.core.store import Kind, Store
data = Path(sys.argv[1])
store = Store(data)
t1 = time.perf_counter()
store.list_events(limit=50)
t2 = time.perf_counter()
store.list_attempts(limit=50)
t3 = time.perf_counter()
store.warm([Kind.EVENTS])
t4 = time.perf_counter()
store.warm()
t5 = time.perf_counter()
sizes = {}
for db in sorted((data / ".index").glob("*.sqlite")):
    log = data / db.name.removesuffix(".sqlite")
    if log.exists() and log.stat().st_size:
        total = sum(p.stat().st_size for p in (data / ".index").glob(db.name + "*"))
        sizes[log.name] = total * 100 / log.stat().st_size
print(json.dumps({"first_list_ms": (t2 - t1) * 1000, "first_attempts_ms": (t3 - t2) * 1000,
                  "events_s": t4 - t3, "build_s": t5 - t3, "index_pct": sizes}))
"""


def kill_and_resume(data: Path, full_s: float) -> dict[str, float]:
    """Build the events index in a child, SIGKILL it half-way, and time a rerun (it resumes from its last batch)."""
    import signal
    import sqlite3

    shutil.rmtree(data / ".index", ignore_errors=True)
    code = "import sys; from patchmoi.core.store import Kind, Store; Store(sys.argv[1]).warm([Kind.EVENTS])"
    child = subprocess.Popen([sys.executable, "-c", code, str(data)], cwd=ROOT)
    time.sleep(full_s / 2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    db = sqlite3.connect(data / ".index" / "flow-events.jsonl.sqlite")
    mark = int(dict(db.execute("SELECT key, value FROM meta").fetchall()).get("watermark", "0"))
    db.close()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(data)], cwd=ROOT, check=True)
    return {"rerun_s": time.perf_counter() - t0, "kept_pct": mark * 100 / (data / "flow-events.jsonl").stat().st_size}


def timed(fn, repeat: int = 200) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


READER = r"""
import json, os, sys, time
def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
t0 = time.perf_counter()
from patchmoi.core.store import Kind, Store
rss0 = rss_kb()
t1 = time.perf_counter()
store = Store(sys.argv[1])
first = store.list_events(limit=50)
t2 = time.perf_counter()
for _ in range(200):
    store.list_events(limit=50); store.list_events(type="downstream.release", limit=50)
    store.get_event(first[-1]["id"]); store.list_attempts(limit=50)
rss1 = rss_kb()
print(json.dumps({"open_ms": (t2 - t1) * 1000, "import_ms": (t1 - t0) * 1000, "rss_growth_mb": (rss1 - rss0) / 1024}))
"""

FOLLOWER = r"""
import asyncio, json, sys, time
from pathlib import Path
from patchmoi.core.store.follow import follow
async def main():
    path = Path(sys.argv[1]); want = int(sys.argv[2]); got = []
    print("ready", flush=True)
    async for batch in follow([path]):
        now = time.time()
        for item in batch:
            if "sentAt" in item.record:
                got.append((now - item.record["sentAt"]) * 1000)
        if len(got) >= want:
            break
    print(json.dumps(got), flush=True)
asyncio.run(main())
"""


def main() -> None:
    if "--store" in sys.argv:
        at = sys.argv.index("--store")
        kind = sys.argv[at + 1] if at + 1 < len(sys.argv) else ""
        if kind not in ("jsonl", "postgres"):
            sys.exit("--store: jsonl (the default) or postgres")
        del sys.argv[at : at + 2]
        if kind == "postgres":
            import store_bench_pg

            store_bench_pg.main()
            return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=("jsonl", "postgres"), default="jsonl", help="which store (see above)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="patchmoi-store-bench-"))
    try:
        run(args, base)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: Path) -> None:
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    print(f"store: {data}  events: {args.events:,}")
    store = Store(data)

    # fsync per record, on a side file
    side = Store(base / "side")
    n_single = 2000
    t0 = time.perf_counter()
    for i in range(n_single):
        side.append(Kind.EVENTS, make_event(i))
    single_rate = n_single / (time.perf_counter() - t0)

    batch = 1000
    t0 = time.perf_counter()
    for start in range(0, args.events, batch):
        store.append_many(Kind.EVENTS, [make_event(i) for i in range(start, min(args.events, start + batch))])
    batched_rate = args.events / (time.perf_counter() - t0)
    # Realistic attempts: a maintained target gets about one attempt per three upstream events here, each written
    # as three versions while it runs (running -> changed/failed/needs_intervention), ~400 bytes each.
    n_attempts = max(1, args.events // 9)
    for start in range(0, n_attempts, 1000):
        store.append_many(
            Kind.ATTEMPTS,
            [rec for i in range(start, min(n_attempts, start + 1000)) for rec in make_attempt_versions(i)],
        )
    size_mb = (data / "flow-events.jsonl").stat().st_size / 1e6
    print(f"append, fsync per record      {single_rate:10,.0f} records/s")
    print(f"append, batches of {batch}       {batched_rate:10,.0f} records/s   ({size_mb:,.0f} MB file)")
    print(f"attempts                      {n_attempts:10,} attempts, {3 * n_attempts:,} records")

    # -- first touch: a fresh process on the store before any index exists ----------------------------------
    cold = json.loads(
        subprocess.run(
            [sys.executable, "-c", COLD, str(data)], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )
    print(f"first list, no index yet      {cold['first_list_ms']:10.1f} ms   (fresh process, file tail; target <= 3 s)")
    print(f"first attempts list           {cold['first_attempts_ms']:10.1f} ms")
    print(f"index build, every file       {cold['build_s']:10.2f} s  (once; progress reported; incremental afterwards)")
    print(f"  events index alone          {cold['events_s']:10.2f} s")
    for name, pct in cold["index_pct"].items():
        print(f"  index size {name:<28} {pct:5.0f}% of the JSONL file")
    resumed = kill_and_resume(data, cold["events_s"])
    Store(data).warm()  # the kill left the other indexes dropped: the steady state below is on built ones
    print(
        f"kill at half-way, then rerun  {resumed['rerun_s']:10.2f} s  (kept {resumed['kept_pct']:.0f}% of the file"
        f" indexed; full build {cold['events_s']:.2f} s)"
    )

    out = subprocess.run(
        [sys.executable, "-c", READER, str(data)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    reader = json.loads(out.stdout)
    print(f"store open + first list       {reader['open_ms']:10.1f} ms   (fresh process; target <= 1000 ms)")

    store2 = Store(data)
    some_id = make_event(args.events // 2)["id"]
    for label, fn in (
        ("list newest 50", lambda: store2.list_events(limit=50)),
        ("list type filter 50", lambda: store2.list_events(type="downstream.release", limit=50)),
        ("get by id", lambda: store2.get_event(str(some_id))),
        ("attempts latest-per-id 50", lambda: store2.list_attempts(status="changed", limit=50)),
    ):
        p50, p95 = timed(fn)
        print(f"{label:<29} {p50:10.2f} ms p50  {p95:6.2f} ms p95   (target <= 5 ms)")

    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, str(data / "flow-events.jsonl"), "200"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    follower.stdout.readline()
    time.sleep(0.5)
    for i in range(200):
        rec = make_event(args.events + i)
        rec["sentAt"] = time.time()
        store.append(Kind.EVENTS, rec)
        time.sleep(0.02)
    lat = sorted(json.loads(follower.stdout.readline()))
    follower.wait(timeout=30)
    p95 = lat[int(len(lat) * 0.95) - 1]
    print(
        f"follow latency (cross-proc)   {statistics.median(lat):10.1f} ms p50  {p95:6.1f} ms p95"
        "   (target p95 <= 100 ms)"
    )
    print(f"reader peak RSS growth        {reader['rss_growth_mb']:10.1f} MB   (target <= 150 MB)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"writer+indexer peak RSS       {peak:10.1f} MB   (whole bench process, index build included)")


if __name__ == "__main__":
    main()
