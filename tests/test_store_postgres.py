"""What the PostgreSQL store promises beyond the shared contract (tests/test_store_contract.py runs that one on it):
the same bytes and answers as the JSONL store, no record skipped by `follow` when writers commit out of seq
order, migrations applied once by racing processes, leases that expire, and no password anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchmoi.core.errors import ConfigError, StoreWriteError
from patchmoi.core.shortid import short_id
from patchmoi.core.store import LATEST, Kind
from patchmoi.core.store.contract import FILTERS
from patchmoi.core.store.local import FILES, JsonlStore
from patchmoi.core.store.pgschema import ID_FIELDS, LATEST_VERSION
from patchmoi.core.store.postgres import PostgresStore, redact

from .conftest import PYTHON, ROOT
from .pgfixture import LocalPostgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_url)
    store.ensure()
    yield store
    store.close()


@contextlib.contextmanager
def another(url: str) -> Iterator[PostgresStore]:
    """Another handle on the same database (as another process or a restart would have), closed after."""
    store = PostgresStore(url)
    try:
        yield store
    finally:
        store.close()


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description is not None else []


# -- the same records, shapes and bytes as the JSONL store --------------------------------------------------------
def test_kinds_are_identified_filtered_and_kept_as_the_jsonl_store_does(pg: PostgresStore, postgres_url: str) -> None:
    for kind, (_, spec) in FILES.items():
        assert ID_FIELDS[kind] == spec.id_fields, kind
    rows = sql(postgres_url, "SELECT kind, latest, field1, field2 FROM store_kinds")
    assert {Kind(kind): (latest, (f1, f2)) for kind, latest, f1, f2 in rows} == {
        kind: (kind in LATEST, (FILTERS[kind] + (None,))[:2]) for kind in Kind
    }


def test_answers_are_the_jsonl_stores_byte_for_byte(pg: PostgresStore, tmp_path: Path) -> None:
    jsonl = JsonlStore(tmp_path / "data")
    events = [
        {"type": ("upstream.release", "downstream.release")[i % 2], "id": f"patch:s:e{i}", "z": 1.50, "a": "é \u2028"}
        for i in range(30)
    ]
    attempts = [
        {"id": f"a{i % 7}", "eventId": f"patch:s:e{i}", "status": ("started", "changed")[i % 2]} for i in range(20)
    ]
    signals = [{"sourceId": "s", "entryId": f"x{i}", "event": "release", "n": i} for i in range(5)]
    try:
        for store in (pg, jsonl):
            store.append_many(Kind.EVENTS, events)
            store.append_many(Kind.ATTEMPTS, attempts[:10])
            for attempt in attempts[10:]:
                store.append(Kind.ATTEMPTS, attempt)
            store.append_many_if_absent(Kind.SIGNALS, [(s, f"s:{s['entryId']}") for s in signals + signals[:2]])
        for kind, filters in (
            (Kind.EVENTS, {"type": "downstream.release"}),
            (Kind.ATTEMPTS, {"status": "changed"}),
            (Kind.ATTEMPTS, {"eventId": "patch:s:e3"}),
            (Kind.SIGNALS, {"sourceId": "s", "event": "release"}),
            (Kind.RUNS, {}),
        ):
            for limit in (1, 5, 50):
                assert pg.select_json(kind, filters=filters, limit=limit) == jsonl.select_json(
                    kind, filters=filters, limit=limit
                ), (kind, filters, limit)
            assert [r for _, r in pg.select(kind, filters=filters)] == [
                r for _, r in jsonl.select(kind, filters=filters)
            ]
            assert pg.count(kind) == jsonl.count(kind)
            for field in FILTERS[kind]:
                assert pg.count_by(kind, field) == jsonl.count_by(kind, field)
        assert pg.get(Kind.ATTEMPTS, "a3") == jsonl.get(Kind.ATTEMPTS, "a3")
        assert pg.get(Kind.SIGNALS, "s:x4") == jsonl.get(Kind.SIGNALS, "s:x4") == signals[4]
        prefix = short_id("a3")[:4]
        assert pg.ids_by_short(Kind.ATTEMPTS, prefix.upper()) == jsonl.ids_by_short(Kind.ATTEMPTS, prefix) == ["a3"]
        assert len(list(pg.scan(Kind.ATTEMPTS))) == len(list(jsonl.scan(Kind.ATTEMPTS))) == 20
    finally:
        jsonl.close()


def test_the_json_text_is_kept_as_written(pg: PostgresStore) -> None:
    record = {
        "z": 1,
        "a": [1.0, 1e300, -0.0],
        "id": "e1",
        "type": "t",
        "s": 'q"\\\u0000\U0001f600',
        "m": {"b": 2, "a": 1},
    }
    pg.append(Kind.EVENTS, record)
    assert pg.select_json(Kind.EVENTS) == [json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()]
    assert pg.get(Kind.EVENTS, "e1") == record
    with pytest.raises(ValueError):
        pg.append(Kind.EVENTS, {"id": "a\x00b", "type": "t"})  # PostgreSQL text cannot hold NUL: refused whole
    assert pg.count(Kind.EVENTS) == 1


def test_bad_cursors_and_filters_are_value_errors(pg: PostgresStore) -> None:
    with pytest.raises(ValueError):
        pg.select(Kind.EVENTS, before="abc")
    with pytest.raises(ValueError):
        pg.select(Kind.EVENTS, before=str(1 << 70))
    with pytest.raises(ValueError):
        pg.select(Kind.EVENTS, filters={"status": "x"})
    with pytest.raises(ValueError):
        pg.count_by(Kind.EVENTS, "status")
    with pytest.raises(ValueError):
        pg.ids_by_short(Kind.EVENTS, "xyz")


def test_a_scan_cursor_of_another_database_restarts_the_scan(pg: PostgresStore, postgres_server: LocalPostgres) -> None:
    pg.append_many(Kind.EVENTS, [{"id": f"e{i}", "type": "t"} for i in range(3)])
    cursor = list(pg.scan(Kind.EVENTS))[1][0]
    assert [r["id"] for _, r in pg.scan(Kind.EVENTS, after=cursor)] == ["e2"]
    assert len(list(pg.scan(Kind.DISPATCHES, after=cursor))) == 0  # a cursor of another kind: from the start
    name = postgres_server.create_database()
    other = PostgresStore(postgres_server.url(name))
    try:
        other.append_many(Kind.EVENTS, [{"id": f"o{i}", "type": "t"} for i in range(3)])
        assert [r["id"] for _, r in other.scan(Kind.EVENTS, after=cursor)] == ["o0", "o1", "o2"]
    finally:
        other.close()
        postgres_server.drop_database(name)


def test_a_feed_state_that_is_not_an_object_is_rebuilt_from_the_signals(pg: PostgresStore, postgres_url: str) -> None:
    pg.append_many(Kind.SIGNALS, [{"sourceId": "a", "entryId": f"x{i}", "event": "release"} for i in range(3)])
    pg.save_feed_states({"a": {"lastSeenId": "x2"}, "b": {"lastSeenId": "y"}})
    sql(postgres_url, "UPDATE feed_states SET state = '[1]' WHERE source_id = 'a'")  # by hand, say
    with pytest.raises(ConfigError, match="feed state of a"):
        pg.feed_states(repair=False)
    states = pg.feed_states()
    assert states["b"] == {"lastSeenId": "y"}
    assert states["a"]["lastSeenId"] == "x2" and states["a"]["seen"] == ["x2", "x1", "x0"]
    assert "feed state of a" in str(pg.health()["stateProblem"])
    with another(postgres_url) as again:
        assert again.feed_states(repair=False) == states  # saved


# -- follow when writers commit out of seq order ----------------------------------------------------------------
async def test_follow_misses_nothing_while_writers_race(pg: PostgresStore, postgres_url: str) -> None:
    """Writers in threads and in other processes append one record per transaction as fast as they can; their
    seqs commit in any order unless the store orders them. The follower must see each record exactly once."""
    since = pg.position()
    stop = asyncio.Event()
    seen: list[str] = []
    expected = 4 * 150 + 2 * 150

    async def consume() -> None:
        async for batch in pg.follow([Kind.EVENTS], since=since, stop=stop):
            seen.extend(str(change.record["id"]) for change in batch)
            if len(seen) >= expected:
                stop.set()

    def write(prefix: str) -> None:
        for i in range(150):
            pg.append(Kind.EVENTS, {"id": f"{prefix}-{i}", "type": "t"})

    task = asyncio.create_task(consume())
    children = [
        subprocess.Popen(
            [
                PYTHON,
                "-c",
                "import sys; from patchmoi.core.store import Kind; from patchmoi.core.store.postgres import "
                "PostgresStore; s = PostgresStore(sys.argv[1]); "
                "[s.append(Kind.EVENTS, {'id': f'{sys.argv[2]}-{i}', 'type': 't'}) for i in range(150)]",
                postgres_url,
                f"p{n}",
            ],
            cwd=ROOT,
        )
        for n in range(2)
    ]
    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert [await asyncio.to_thread(child.wait, 120) for child in children] == [0, 0]
    assert pg.count(Kind.EVENTS) == expected
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout=10)  # everything is written: it comes promptly
    stop.set()
    await task
    missed = {str(r["id"]) for _, r in pg.select(Kind.EVENTS, limit=expected)} - set(seen)
    assert sorted(missed) == [] and len(seen) == len(set(seen)) == expected


async def test_follow_goes_on_after_its_connection_is_cut(pg: PostgresStore, postgres_url: str) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async for batch in pg.follow([Kind.EVENTS], stop=stop):
            seen.extend(str(change.record["id"]) for change in batch)
            if len(seen) >= 2:
                stop.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    pg.append(Kind.EVENTS, {"id": "before", "type": "t"})
    await asyncio.sleep(0.3)
    sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'patchmoi-follow'",
    )
    pg.append(Kind.EVENTS, {"id": "after", "type": "t"})  # while it reconnects
    await asyncio.wait_for(task, timeout=15)
    assert seen == ["before", "after"]


# -- schema ---------------------------------------------------------------------------------------------------
def test_processes_that_start_together_apply_each_migration_once(postgres_url: str) -> None:
    code = (
        "import sys; from patchmoi.core.store.postgres import PostgresStore; s = PostgresStore(sys.argv[1]); "
        "s.ensure(); s.close()"
    )
    children = [subprocess.Popen([PYTHON, "-c", code, postgres_url], cwd=ROOT) for _ in range(4)]
    assert [child.wait(timeout=120) for child in children] == [0] * 4
    assert sql(postgres_url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in range(1, LATEST_VERSION + 1)
    ]
    store = PostgresStore(postgres_url)
    try:
        store.ensure()  # again: nothing to do
        assert store.health()["schemaVersion"] == LATEST_VERSION
    finally:
        store.close()


def test_a_schema_newer_than_the_code_is_refused(pg: PostgresStore, postgres_url: str) -> None:
    sql(postgres_url, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from the future')")
    fresh = PostgresStore(postgres_url)
    try:
        with pytest.raises(ConfigError, match="newer than this patchmoi"):
            fresh.ensure()
    finally:
        fresh.close()


# -- leases -----------------------------------------------------------------------------------------------------
def test_a_lease_that_is_not_renewed_expires_and_its_holder_learns_it(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        assert first.acquire_lease("poller", "one", 0.3) is True
        assert second.acquire_lease("poller", "two", 0.3) is False  # alive, holding its lock, not expired
        sql(postgres_url, "SELECT pg_sleep(0.4)")
        assert second.acquire_lease("poller", "two", 5.0) is True  # expired: taken over (one hangs, say)
        assert second.lease_holder("poller") == "two"
        assert first.renew_lease("poller", "one", 5.0) is False  # one learns it lost the lease
        first.release_lease("poller", "one")  # and releasing changes nothing
        assert first.lease_holder("poller") == "two"
        assert second.renew_lease("poller", "two", 5.0) is True
    finally:
        first.close()
        second.close()
    with another(postgres_url) as again:
        assert again.lease_holder("poller") is None  # close released it


# -- secrets ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app:s3cret@db.example:5432/patchmoi?sslmode=require",
            "postgresql://app:***@db.example:5432/patchmoi?sslmode=require",
        ),
        (
            "postgres://app@db/x?password=s3cret&application_name=a",
            "postgres://app@db/x?password=***&application_name=a",
        ),
        ("host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=/tmp/sock dbname=x", "host=/tmp/sock dbname=x"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_an_unreachable_database_says_so_without_its_password(tmp_path: Path) -> None:
    store = PostgresStore(f"host={tmp_path} port=1 user=app password=s3cret dbname=x", connect_timeout=1)
    try:
        health = store.health()
        assert health["degraded"] and "password=***" in health["location"]
        with pytest.raises(StoreWriteError) as raised:
            store.append(Kind.EVENTS, {"id": "e1", "type": "t"})
        assert "s3cret" not in json.dumps(health) + str(raised.value)
    finally:
        store.close()
