"""The store contract (core.store.contract.RecordStore), run against every implementation.

An implementation is added to IMPLEMENTATIONS with how to open it in this process and from a child process;
each test runs once per implementation. What a caller may rely on is exactly what is asserted here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from patchmoi.core.store import LATEST, Kind, RecordStore, Store
from patchmoi.core.store.local import JsonlStore
from patchmoi.core.store.postgres import PostgresStore

from .conftest import PYTHON, ROOT


@dataclass(frozen=True)
class Impl:
    name: str
    open: Callable[[Path], RecordStore]
    # Python source that defines `store` from sys.argv[1] (the same location), for cross-process tests.
    child_open: str
    # What the location needs before it is opened (a database of its own for the test), if anything.
    prepare: Callable[[pytest.FixtureRequest, Path], None] | None = None


DATABASE_URL_FILE = "database-url"  # where a test's PostgreSQL connection string is left for its child processes


def fresh_database(request: pytest.FixtureRequest, where: Path) -> None:
    (where / DATABASE_URL_FILE).write_text(request.getfixturevalue("postgres_url"))


IMPLEMENTATIONS = [
    Impl(
        "jsonl",
        lambda where: JsonlStore(where / "data"),
        "import sys; from pathlib import Path; from patchmoi.core.store.local import JsonlStore; "
        "store = JsonlStore(Path(sys.argv[1]) / 'data')",
    ),
    Impl(
        "postgres",
        lambda where: PostgresStore((where / DATABASE_URL_FILE).read_text()),
        "import sys; from pathlib import Path; from patchmoi.core.store.postgres import PostgresStore; "
        f"store = PostgresStore((Path(sys.argv[1]) / {DATABASE_URL_FILE!r}).read_text())",
        prepare=fresh_database,
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda impl: impl.name)
def impl(request: pytest.FixtureRequest, tmp_path: Path) -> Impl:
    chosen = cast(Impl, request.param)
    if chosen.prepare is not None:
        chosen.prepare(request, tmp_path)
    return chosen


@pytest.fixture
def opened(impl: Impl, tmp_path: Path) -> Iterator[Callable[[], RecordStore]]:
    """Opens a new handle on the same store each call (as another component or a restart would)."""
    handles: list[RecordStore] = []

    def open_one() -> RecordStore:
        handle = impl.open(tmp_path)
        handle.ensure()
        handles.append(handle)
        return handle

    yield open_one
    for handle in handles:
        handle.close()


@pytest.fixture
def rs(opened: Callable[[], RecordStore]) -> RecordStore:
    return opened()


def child(impl: Impl, tmp_path: Path, body: str, *args: str, wait: bool = True) -> Any:
    code = impl.child_open + "\n" + body
    if not wait:
        return subprocess.Popen(
            [PYTHON, "-c", code, str(tmp_path), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
    out = subprocess.run(
        [PYTHON, "-c", code, str(tmp_path), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def event(i: int, type_: str = "upstream.release") -> dict[str, Any]:
    return {"id": f"e{i}", "type": type_, "payload": {"n": i}}


# -- writes and reads -------------------------------------------------------------------------------------------
def test_append_then_select_newest_first_with_limit_and_filters(rs: RecordStore) -> None:
    rs.append_many(Kind.EVENTS, [event(i, ("a", "b")[i % 2]) for i in range(10)])
    rs.append(Kind.EVENTS, event(10, "a"))
    assert [r["id"] for _, r in rs.select(Kind.EVENTS, limit=3)] == ["e10", "e9", "e8"]
    assert [r["id"] for _, r in rs.select(Kind.EVENTS, filters={"type": "b"}, limit=50)] == [
        "e9",
        "e7",
        "e5",
        "e3",
        "e1",
    ]
    assert rs.select(Kind.RUNS, limit=5) == []
    assert rs.count(Kind.EVENTS) == 11
    assert rs.count_by(Kind.EVENTS, "type") == {"a": 6, "b": 5}


def test_latest_kinds_show_the_latest_version_of_each_id(rs: RecordStore) -> None:
    assert Kind.ATTEMPTS in LATEST and Kind.EVENTS not in LATEST
    for status in ("started", "changed"):
        rs.append(Kind.ATTEMPTS, {"id": "a1", "eventId": "e1", "status": status})
    rs.append(Kind.ATTEMPTS, {"id": "a2", "eventId": "e1", "status": "started"})
    assert [(r["id"], r["status"]) for _, r in rs.select(Kind.ATTEMPTS)] == [("a2", "started"), ("a1", "changed")]
    assert rs.get(Kind.ATTEMPTS, "a1") == {"id": "a1", "eventId": "e1", "status": "changed"}
    assert rs.get(Kind.ATTEMPTS, "nope") is None
    assert rs.count(Kind.ATTEMPTS) == 2
    assert rs.count_by(Kind.ATTEMPTS, "status") == {"started": 1, "changed": 1}
    assert [r["id"] for _, r in rs.select(Kind.ATTEMPTS, filters={"status": "started"})] == ["a2"]
    assert len(list(rs.scan(Kind.ATTEMPTS))) == 3  # a scan sees every version


def test_cursors_page_without_gaps_or_repeats(rs: RecordStore) -> None:
    rs.append_many(Kind.EVENTS, [event(i) for i in range(25)])
    seen: list[str] = []
    before = None
    while True:
        page = rs.select(Kind.EVENTS, limit=10, before=before)
        seen += [r["id"] for _, r in page]
        if len(page) < 10:
            break
        before = page[-1][0]
    assert seen == [f"e{i}" for i in reversed(range(25))]
    cursors = [c for c, _ in rs.select(Kind.EVENTS, limit=25)]
    assert len(set(cursors)) == 25 and all(isinstance(c, str) for c in cursors)


def test_select_json_is_the_records_as_json(rs: RecordStore) -> None:
    rs.append_many(Kind.EVENTS, [{**event(i), "title": 'é \u2028 "q"'} for i in range(3)])
    raw = rs.select_json(Kind.EVENTS, limit=2)
    assert [json.loads(line) for line in raw] == [r for _, r in rs.select(Kind.EVENTS, limit=2)]


def test_append_if_absent_and_unique_ids(rs: RecordStore) -> None:
    assert rs.append_if_absent(Kind.EVENTS, event(1), "e1") is True
    assert rs.append_if_absent(Kind.EVENTS, {**event(1), "payload": {"n": 99}}, "e1") is False
    assert rs.get(Kind.EVENTS, "e1") == event(1)
    ids = [rs.append_unique(Kind.ATTEMPTS, {"eventId": "e1", "status": "started"}, "e1:dispatch:t") for _ in range(3)]
    assert ids == ["e1:dispatch:t", "e1:dispatch:t#2", "e1:dispatch:t#3"]
    assert rs.existing_ids(Kind.ATTEMPTS, ["e1:dispatch:t#2", "zz"]) == {"e1:dispatch:t#2"}


def test_append_many_if_absent_takes_each_id_once(rs: RecordStore) -> None:
    rs.append(Kind.EVENTS, event(1))
    batch = [(event(1), "e1"), (event(2), "e2"), ({**event(2), "payload": {"n": 99}}, "e2"), (event(3), "e3")]
    assert rs.append_many_if_absent(Kind.EVENTS, batch) == [False, True, False, True]
    assert rs.append_many_if_absent(Kind.EVENTS, []) == []
    assert [r["id"] for _, r in rs.select(Kind.EVENTS)] == ["e3", "e2", "e1"]
    assert rs.get(Kind.EVENTS, "e2") == event(2)


def test_append_many_if_absent_is_exactly_once_across_processes(impl: Impl, rs: RecordStore, tmp_path: Path) -> None:
    body = (
        "from patchmoi.core.store import Kind\n"
        "wins = 0\n"
        "for i in range(0, 200, 20):\n"
        "    batch = [({'id': f'x{j}', 'type': 't'}, f'x{j}') for j in range(i, i + 20)]\n"
        "    wins += sum(store.append_many_if_absent(Kind.EVENTS, batch))\n"
        "print(wins)"
    )
    procs = [child(impl, tmp_path, body, wait=False) for _ in range(4)]
    wins = sum(int(p.communicate(timeout=120)[0]) for p in procs)
    assert wins == 200
    assert rs.count(Kind.EVENTS) == 200


def test_append_if_absent_is_exactly_once_across_processes(impl: Impl, rs: RecordStore, tmp_path: Path) -> None:
    body = (
        "from patchmoi.core.store import Kind\n"
        "wins = [store.append_if_absent(Kind.EVENTS, {'id': f'x{i}', 'type': 't'}, f'x{i}') for i in range(200)]\n"
        "print(sum(wins))"
    )
    procs = [child(impl, tmp_path, body, wait=False) for _ in range(4)]
    wins = sum(int(p.communicate(timeout=120)[0]) for p in procs)
    assert wins == 200
    assert rs.count(Kind.EVENTS) == 200


def test_scan_resumes_after_a_cursor_and_restarts_on_a_foreign_one(rs: RecordStore) -> None:
    rs.append_many(Kind.DISPATCHES, [{"eventId": f"e{i}", "status": "accepted"} for i in range(5)])
    first = list(rs.scan(Kind.DISPATCHES))
    assert [r["eventId"] for _, r in first] == [f"e{i}" for i in range(5)]
    rs.append(Kind.DISPATCHES, {"eventId": "e5", "status": "accepted"})
    assert [r["eventId"] for _, r in rs.scan(Kind.DISPATCHES, after=first[2][0])] == ["e3", "e4", "e5"]
    assert [r["eventId"] for _, r in rs.scan(Kind.DISPATCHES, after=first[-1][0])] == ["e5"]
    assert len(list(rs.scan(Kind.DISPATCHES, after="not-a-cursor"))) == 6
    assert list(rs.scan(Kind.RUNS)) == []


# -- live tail --------------------------------------------------------------------------------------------------
async def test_follow_yields_what_any_process_appends_after_a_position(
    impl: Impl, rs: RecordStore, tmp_path: Path
) -> None:
    rs.append(Kind.EVENTS, event(0))
    since = rs.position()
    stop = asyncio.Event()
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for batch in rs.follow([Kind.EVENTS, Kind.ATTEMPTS], since=since, stop=stop):
            seen.extend((change.kind.value, str(change.record["id"])) for change in batch)
            if len(seen) >= 3:
                stop.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await asyncio.to_thread(
        child,
        impl,
        tmp_path,
        (
            "from patchmoi.core.store import Kind\n"
            "store.append(Kind.EVENTS, {'id': 'e1', 'type': 't'})\n"
            "store.append(Kind.RUNS, {'id': 'r1', 'eventId': 'e1', 'status': 'queued'})\n"  # not followed
            "store.append(Kind.ATTEMPTS, {'id': 'a1', 'eventId': 'e1', 'status': 'started'})\n"
            "store.append(Kind.EVENTS, {'id': 'e2', 'type': 't'})\n"
        ),
    )
    await asyncio.wait_for(task, timeout=10)
    assert sorted(seen) == [("attempts", "a1"), ("events", "e1"), ("events", "e2")]


async def test_follow_from_start_replays_everything(rs: RecordStore) -> None:
    rs.append_many(Kind.EVENTS, [event(i) for i in range(3)])
    stop = asyncio.Event()
    async for batch in rs.follow([Kind.EVENTS], from_start=True, stop=stop):
        assert [c.record["id"] for c in batch] == ["e0", "e1", "e2"]
        assert all(c.kind is Kind.EVENTS for c in batch)
        stop.set()
        break


# -- feed state and marks ---------------------------------------------------------------------------------------
def test_feed_state_is_saved_per_source(opened: Callable[[], RecordStore]) -> None:
    rs = opened()
    assert rs.feed_states() == {}
    rs.save_feed_states({"a": {"lastSeenId": "1", "seen": ["1"]}, "b": {"lastSeenId": "x"}})
    rs.save_feed_states({"a": {"lastSeenId": "2", "seen": ["2", "1"]}})
    again = opened()
    assert again.feed_states(repair=False) == {"a": {"lastSeenId": "2", "seen": ["2", "1"]}, "b": {"lastSeenId": "x"}}
    again.save_feed_states({"c": {"primed": True}})  # after a restart: the other sources are kept
    assert set(opened().feed_states()) == {"a", "b", "c"}


def test_marks_survive_a_restart(opened: Callable[[], RecordStore]) -> None:
    rs = opened()
    assert rs.mark("flowEvents") is None
    rs.append(Kind.EVENTS, event(1))
    cursor = next(iter(rs.scan(Kind.EVENTS)))[0]
    rs.set_mark("flowEvents", cursor)
    assert opened().mark("flowEvents") == cursor


# -- leadership -------------------------------------------------------------------------------------------------
def test_one_lease_holder_at_a_time_and_a_dead_holder_loses_it(
    impl: Impl, opened: Callable[[], RecordStore], tmp_path: Path
) -> None:
    rs = opened()
    assert rs.lease_holder("poller") is None
    holder = child(
        impl,
        tmp_path,
        ("import sys\nprint(store.acquire_lease('poller', 'child-1', 5.0), flush=True)\nsys.stdin.readline()\n"),
        wait=False,
    )
    assert holder.stdout.readline().strip() == "True"
    try:
        assert rs.acquire_lease("poller", "me", 5.0) is False
        assert rs.lease_holder("poller") == "child-1"
        assert rs.acquire_lease("other", "me", 5.0) is True  # leases are per name
    finally:
        holder.kill()
        holder.communicate()
    assert rs.acquire_lease("poller", "me", 5.0) is True  # the holder died: the lease is free (within the ttl)
    assert rs.renew_lease("poller", "me", 5.0) is True
    assert opened().lease_holder("poller") == "me"
    rs.release_lease("poller", "me")
    assert opened().lease_holder("poller") is None
    assert rs.renew_lease("poller", "me", 5.0) is False


def test_a_lease_is_one_holders_and_asking_who_holds_it_takes_nothing(
    impl: Impl, opened: Callable[[], RecordStore], tmp_path: Path
) -> None:
    rs = opened()
    assert rs.acquire_lease("poller", "a", 5.0) is True
    assert rs.acquire_lease("poller", "a", 5.0) is True  # again: still a's
    assert rs.acquire_lease("poller", "b", 5.0) is False  # the same store, another holder
    rs.release_lease("poller", "b")  # not b's to release
    assert rs.renew_lease("poller", "a", 5.0) is True and rs.lease_holder("poller") == "a"
    rs.release_lease("poller", "a")
    # Another process asks who holds the lease in a tight loop: it must never make an acquire fail.
    asker = child(
        impl,
        tmp_path,
        (
            "import time\n"
            "end = time.monotonic() + 3\n"
            "print('go', flush=True)\n"
            "while time.monotonic() < end:\n"
            "    store.lease_holder('poller')\n"
        ),
        wait=False,
    )
    assert asker.stdout.readline().strip() == "go"
    try:
        for i in range(200):
            assert rs.acquire_lease("poller", f"h{i}", 5.0) is True, i
            rs.release_lease("poller", f"h{i}")
    finally:
        asker.kill()
        asker.communicate()


# -- what callers hold ------------------------------------------------------------------------------------------
def test_store_runs_its_queries_on_any_record_store(rs: RecordStore, tmp_path: Path) -> None:
    store = Store(rs, data_dir=tmp_path / "work")
    assert store.record_event({**event(1), "type": "upstream.release"}) is True
    assert store.record_event(event(1)) is False
    store.append(Kind.ATTEMPTS, {"id": "a1", "eventId": "e1", "status": "needs_intervention"})
    assert [e["id"] for e in store.list_events()] == ["e1"]
    assert store.list_attempts_in_state("open")[0]["id"] == "a1"
    assert store.undispatched(["e1"]) == {"e1"}
    assert set(store.health()) >= {"degraded", "stateProblem"}
