"""Short ids (core.shortid): the CRC-32 of a record id in 8 hex digits, or a prefix of 4 or more of them, named
wherever a command takes a record id, and found by the store from its index (plain logs: a range of the `h`
column; latest logs: `crc32(id)` over the `id` column) or, while the index is built, from the file."""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchmoi.core.errors import EXIT_FAIL, EXIT_USAGE, NotFoundError
from patchmoi.core.shortid import AmbiguousShortId, hash_range, is_short, matches, resolve, short_id
from patchmoi.core.store import Kind, Store, Warming
from patchmoi.core.store import index as index_module
from patchmoi.tui.cli import build_parser, main

from .conftest import PYTHON, ROOT

SHOW = (Kind.EVENTS, Kind.ATTEMPTS, Kind.RUNS, Kind.SIGNALS)
# Two flow event ids with the same CRC-32 (found by brute force): every prefix of their short id is ambiguous.
TWINS = ("patch:src:tag:v74c3fcb686:upstream.release", "patch:src:tag:vd362eac706:upstream.release")


def event_id(i: int) -> str:
    return f"patch:src{i % 7}:tag:v1.{i}.0:upstream.release"


def attempt_id(i: int) -> str:
    return f"{event_id(i)}:dispatch:2026-11-22T10:{i // 60 % 60:02d}:{i % 60:02d}.{i:03d}Z"


def add_event(store: Store, record_id: str) -> None:
    tag = record_id.split(":")[-2] if ":" in record_id else record_id
    store.record_event(
        {
            "id": record_id,
            "type": "upstream.release",
            "source": "patch",
            "receivedAt": "2026-11-21T10:00:00.000Z",
            "payload": {"repo": "acme/widget", "tag": tag},
        }
    )


def add_attempt(store: Store, record_id: str, eid: str, status: str = "changed") -> None:
    store.append(
        Kind.ATTEMPTS,
        {"id": record_id, "eventId": eid, "status": status, "operation": "dispatch", "workspaceRunIds": []},
    )


def populate(store: Store, n: int) -> dict[Kind, list[str]]:
    """n records of each kind the CLI takes ids of (and dispatches), with several versions of attempts and
    several dispatch lines per event; what each kind's ids are, in the order of their last write."""
    writes: dict[Kind, list[str]] = {kind: [] for kind in (*SHOW, Kind.DISPATCHES)}
    for i in range(n):
        add_event(store, event_id(i))
        writes[Kind.EVENTS].append(event_id(i))
        store.append(Kind.SIGNALS, {"sourceId": f"src{i % 7}", "entryId": f"tag:v1.{i}.0", "event": "release"})
        writes[Kind.SIGNALS].append(f"src{i % 7}:tag:v1.{i}.0")
        add_attempt(store, attempt_id(i), event_id(i), "started")
        writes[Kind.ATTEMPTS].append(attempt_id(i))
        store.append(Kind.RUNS, {"id": f"run-{i}", "eventId": event_id(i), "status": "completed"})
        writes[Kind.RUNS].append(f"run-{i}")
        store.append(Kind.DISPATCHES, {"eventId": event_id(i), "status": "dispatched"})
        writes[Kind.DISPATCHES].append(event_id(i))
    for i in range(0, n, 3):  # later versions of some: they become the newest
        add_attempt(store, attempt_id(i), event_id(i), "changed")
        writes[Kind.ATTEMPTS].append(attempt_id(i))
        store.append(Kind.DISPATCHES, {"eventId": event_id(i), "status": "failed"})
        writes[Kind.DISPATCHES].append(event_id(i))
    return writes


def newest_first(writes: list[str], prefix: str) -> list[str]:
    """What `ids_by_short` must answer: the distinct ids with this short id prefix, by their last write."""
    last = {record_id: n for n, record_id in enumerate(writes)}
    return sorted((r for r in last if short_id(r).startswith(prefix)), key=lambda r: -last[r])


@pytest.fixture
def all_crc_in_3fa9(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id's CRC-32 starts with 3fa9 (short ids 3fa900xx): every id collides with every other at 4 to 6
    digits. zlib.crc32 itself is replaced, so the index, the SQL function and short_id all see it."""
    crc = zlib.crc32
    monkeypatch.setattr(zlib, "crc32", lambda data, value=0: 0x3FA90000 | (crc(data, value) & 0xFF))


# -- the definition ---------------------------------------------------------------------------------------------
def test_short_ids_and_prefix_ranges() -> None:
    assert short_id("patch:a:b:upstream.release") == f"{zlib.crc32(b'patch:a:b:upstream.release'):08x}"
    assert short_id(TWINS[0]) == short_id(TWINS[1]) == "8e1f8c2e"
    assert [is_short(t) for t in ("3fa9", "3fa9c1d2", "3fa", "3fa9c1d20", "3FA9", "3fa:", "patch:x")] == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    assert hash_range("3fa9") == (0x3FA90000, 0x3FA9FFFF)
    assert hash_range("3fa9c1d2") == (0x3FA9C1D2, 0x3FA9C1D2)
    assert hash_range("ffffffff") == (0xFFFFFFFF, 0xFFFFFFFF)
    assert hash_range("00000") == (0, 0xFFF)
    with pytest.raises(ValueError, match="not a short id"):
        hash_range("3fa")


# -- the store: ids_by_short ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [*SHOW, Kind.DISPATCHES], ids=lambda k: k.value)
def test_every_prefix_length_finds_exactly_the_ids_with_it(tmp_path: Path, kind: Kind) -> None:
    store = Store(tmp_path / "data")
    writes = populate(store, 120)[kind]
    for record_id in writes[::7]:
        for n in range(4, 9):
            prefix = short_id(record_id)[:n]
            found = store.ids_by_short(kind, prefix, limit=1000)
            assert record_id in found
            assert found == newest_first(writes, prefix)
        assert record_id in store.ids_by_short(kind, short_id(record_id)[:5].upper(), limit=1000)  # any case
    other = Kind.RUNS if kind is not Kind.RUNS else Kind.SIGNALS
    assert store.ids_by_short(other, short_id(writes[0]), limit=1000) == []  # ids of one kind only
    with pytest.raises(ValueError):
        store.ids_by_short(kind, "3fa")
    with pytest.raises(ValueError):
        store.ids_by_short(kind, "patch:src")


@pytest.mark.parametrize("kind", [*SHOW, Kind.DISPATCHES], ids=lambda k: k.value)
def test_a_shared_prefix_lists_distinct_ids_newest_first_up_to_the_limit(
    tmp_path: Path, kind: Kind, all_crc_in_3fa9: None
) -> None:
    store = Store(tmp_path / "data")
    writes = populate(store, 40)[kind]
    everything = newest_first(writes, "3fa9")
    assert len(everything) == 40  # one per id, however many versions or lines it has
    assert store.ids_by_short(kind, "3fa9", limit=1000) == everything
    assert store.ids_by_short(kind, "3fa9", limit=3) == everything[:3]
    assert store.ids_by_short(kind, "3fa8", limit=1000) == []
    one = everything[5]
    assert store.ids_by_short(kind, short_id(one), limit=1000) == newest_first(writes, short_id(one))


def test_a_latest_log_is_searched_by_its_ids_crc_in_sql(tmp_path: Path) -> None:
    """Latest logs keep the id itself and no hash: the index answers with `crc32(id)`, a SQL function."""
    store = Store(tmp_path / "data")
    populate(store, 30)
    log = store.records.logs[Kind.ATTEMPTS]  # type: ignore[attr-defined]
    log.open()
    conn = log.index._connect()
    rid = attempt_id(4)
    assert conn.execute("SELECT crc32(id) FROM rec WHERE id = ?", [rid]).fetchone() == (zlib.crc32(rid.encode()),)
    assert {r[1] for r in conn.execute("PRAGMA table_info(rec)")} == {"off", "len", "id", "k1", "k2"}  # no new column
    assert conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (index_module.SCHEMA_VERSION,)
    assert index_module.SCHEMA_VERSION == "3"


# -- while the index is being built -----------------------------------------------------------------------------
def odd_logs(data: Path, n: int) -> dict[Kind, list[str]]:
    """Logs written straight to disk (no index yet), with what a build must step over: a BOM, blank lines, a
    malformed line, \\u escapes; several versions of each attempt."""
    data.mkdir(parents=True, exist_ok=True)
    events, attempts = [], []
    lines = [b"\xef\xbb\xbf" + json.dumps({"id": event_id(0), "type": "upstream.release"}).encode()]
    events.append(event_id(0))
    for i in range(1, n):
        lines.append(json.dumps({"id": event_id(i), "type": "upstream.release"}).encode())
        events.append(event_id(i))
        if i % 50 == 0:
            lines += [b"", b"  ", b'{"id": "broken"', json.dumps({"id": f"caf\u00e9-{i}", "type": "x"}).encode()]
            events.append(f"caf\u00e9-{i}")
    (data / "flow-events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    versions = []
    for status in ("started", "changed"):
        for i in range(n) if status == "started" else range(n - 1, -1, -2):
            versions.append(json.dumps({"id": attempt_id(i), "eventId": event_id(i), "status": status}).encode())
            attempts.append(attempt_id(i))
    (data / "maintenance-attempts.jsonl").write_bytes(b"\n".join(versions) + b"\n")
    return {Kind.EVENTS: events, Kind.ATTEMPTS: attempts}


def test_a_store_whose_index_is_behind_answers_from_the_file_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    writes = odd_logs(data, 400)
    monkeypatch.setattr("patchmoi.core.store.log.TAIL_FROM_BYTES", 0)  # every log counts as far behind
    behind = Store(data)
    answers = {}
    for kind, ids in writes.items():
        for record_id in ids[::37]:
            for n in (4, 6, 8):
                prefix = short_id(record_id)[:n]
                answers[kind, prefix] = found = behind.ids_by_short(kind, prefix, limit=1000)
                assert found == newest_first(ids, prefix)
    assert not (data / ".index").exists()  # nothing was built (or waited for)
    assert resolve(behind, short_id(attempt_id(3))[:7], SHOW) == attempt_id(3)
    assert not (data / ".index").exists()
    monkeypatch.setattr("patchmoi.core.store.log.TAIL_FROM_BYTES", 1 << 40)
    indexed = Store(data)
    for (kind, prefix), found in answers.items():
        assert indexed.ids_by_short(kind, prefix, limit=1000) == found  # the index answers the same
    assert (data / ".index" / "flow-events.jsonl.sqlite").exists()


def test_a_shared_prefix_from_the_file_is_ordered_as_the_index_orders_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, all_crc_in_3fa9: None
) -> None:
    data = tmp_path / "data"
    writes = odd_logs(data, 120)
    monkeypatch.setattr("patchmoi.core.store.log.TAIL_FROM_BYTES", 0)
    behind = Store(data)
    for kind, ids in writes.items():
        assert len(newest_first(ids, "3fa9")) == len(set(ids))  # every id shares the prefix
        assert behind.ids_by_short(kind, "3fa9", limit=1000) == newest_first(ids, "3fa9")
        assert behind.ids_by_short(kind, "3fa9", limit=7) == newest_first(ids, "3fa9")[:7]
    assert not (data / ".index").exists()
    monkeypatch.setattr("patchmoi.core.store.log.TAIL_FROM_BYTES", 1 << 40)
    indexed = Store(data)
    for kind, ids in writes.items():
        assert indexed.ids_by_short(kind, "3fa9", limit=1000) == newest_first(ids, "3fa9")


@pytest.fixture
def paused_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, dict[Kind, list[str]]]]:
    """A store whose attempts index is being built by another thread, stopped after its first batch."""
    data = tmp_path / "data"
    writes = odd_logs(data, 3000)  # ~500 KB of attempts: about 8 batches of 64 KB
    monkeypatch.setattr(index_module, "_BATCH_BYTES", 64 << 10)
    monkeypatch.setattr(index_module, "_PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr("patchmoi.core.store.jsonl._CHUNK", 16 << 10)
    store = Store(data)
    Store(data).warm([Kind.EVENTS])  # the events index is ready: only the attempts one is built
    paused, go = threading.Event(), threading.Event()

    def progress(warming: Warming) -> None:
        if warming.phase == "reading" and warming.done > 0 and not paused.is_set():
            paused.set()
            go.wait(60)

    builder = threading.Thread(target=store.warm, args=([Kind.ATTEMPTS], progress))
    builder.start()
    release = threading.Timer(20, go.set)  # a lookup that waited for the build would be let go by this
    release.start()
    try:
        assert paused.wait(30)
        yield store, writes
    finally:
        go.set()
        release.cancel()
        builder.join(30)


def test_lookups_during_a_build_read_the_file_and_do_not_wait(
    paused_build: tuple[Store, dict[Kind, list[str]]],
) -> None:
    store, writes = paused_build
    ids = writes[Kind.ATTEMPTS]
    assert store.warming() and store.warming()[0].percent < 50  # built to its first batch, no further
    for record_id in (attempt_id(0), attempt_id(1500), attempt_id(2999)):
        prefix = short_id(record_id)[:5]
        assert store.ids_by_short(Kind.ATTEMPTS, prefix, limit=1000) == newest_first(ids, prefix)
        assert resolve(store, short_id(record_id), SHOW) == record_id
    assert store.warming() and store.warming()[0].percent < 50  # still where it stopped: nothing waited for it


# -- resolving: exact, ambiguous, not found ---------------------------------------------------------------------
def brute_force_attempt(prefix: str, eid: str) -> str:
    """An attempt id of this event whose short id starts with `prefix` (4 hex digits: ~65,000 tries)."""
    for i in range(2_000_000):
        candidate = f"{eid}:dispatch:{i}"
        if short_id(candidate).startswith(prefix):
            return candidate
    raise AssertionError("no such id")


def test_one_match_resolves_and_a_full_id_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    populate(store, 50)
    for record_id, kinds in (
        (event_id(7), (Kind.EVENTS,)),
        (attempt_id(8), (Kind.ATTEMPTS, Kind.EVENTS)),
        ("run-9", SHOW),
        ("src3:tag:v1.10.0", SHOW),
    ):
        unique = next(
            n for n in range(4, 9) if len(matches(store, short_id(record_id)[:n], SHOW, 1000)) == 1
        )  # the shortest prefix that names one record
        assert resolve(store, short_id(record_id)[:unique], kinds) == record_id
        assert resolve(store, short_id(record_id).upper(), kinds) == record_id
        assert resolve(store, record_id, kinds) == record_id  # a full id is taken as it is
    # an event whose id is itself 4 hex digits, and an attempt whose short id starts with them: the id wins
    add_event(store, "beef")
    other = brute_force_attempt("beef", "beef")
    add_attempt(store, other, "beef")
    assert resolve(store, "beef", SHOW) == "beef"
    assert resolve(store, "beef", (Kind.ATTEMPTS,)) == other  # not an attempt id: a short id
    assert resolve(store, "patch:no:such:id", SHOW) == "patch:no:such:id"  # not short: the caller's lookup says


def test_an_ambiguous_prefix_lists_its_candidates_with_their_kinds(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    for twin in TWINS:
        add_event(store, twin)
    for n in range(4, 9):
        with pytest.raises(AmbiguousShortId) as raised:
            resolve(store, "8e1f8c2e"[:n], SHOW)
        text = str(raised.value)
        assert text.startswith(f"ambiguous short id {'8e1f8c2e'[:n]}: 2 records")
        assert f"8e1f8c2e  flow event  {TWINS[1]}\n  8e1f8c2e  flow event  {TWINS[0]}" in text  # newest first
        assert ("give more digits" in text) == (n < 8)
    assert resolve(store, TWINS[0], SHOW) == TWINS[0]  # the full id still names each one
    # across kinds: an event and an attempt that share 4 digits; a command taking events only is not confused
    eid = event_id(1)
    add_event(store, eid)
    attempt = brute_force_attempt(short_id(eid)[:4], eid)
    add_attempt(store, attempt, eid)
    assert short_id(attempt) != short_id(eid)
    with pytest.raises(AmbiguousShortId, match="2 records") as raised:
        resolve(store, short_id(eid)[:4], (Kind.ATTEMPTS, Kind.EVENTS))
    assert f"maintenance attempt  {attempt}" in str(raised.value) and f"flow event           {eid}" in str(raised.value)
    assert resolve(store, short_id(eid)[:4], (Kind.EVENTS,)) == eid
    assert resolve(store, short_id(eid)[:4], (Kind.ATTEMPTS,)) == attempt
    assert resolve(store, short_id(eid), SHOW) == eid  # all 8 digits tell them apart


def test_more_than_ten_candidates_are_cut_at_ten(tmp_path: Path, all_crc_in_3fa9: None) -> None:
    store = Store(tmp_path / "data")
    populate(store, 15)
    with pytest.raises(AmbiguousShortId) as raised:
        resolve(store, "3fa9", (Kind.EVENTS, Kind.ATTEMPTS))
    lines = str(raised.value).splitlines()
    assert lines[0] == "ambiguous short id 3fa9: more than 10 records; give more digits or the full id:"
    assert len(lines) == 11 and len(raised.value.candidates) == 10
    assert [line.split()[-1] for line in lines[1:]] == [event_id(i) for i in range(14, 4, -1)]


def test_no_match_is_not_found_and_says_the_short_id_was_tried(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    populate(store, 20)
    free = next(p for p in (f"{n:04x}" for n in range(1 << 16)) if not matches(store, p, SHOW, 1))
    with pytest.raises(NotFoundError) as raised:
        resolve(store, free.upper(), (Kind.EVENTS,), what="flow event")
    assert str(raised.value) == f"no flow event with id '{free.upper()}', nor one whose short id starts with {free}"
    with pytest.raises(NotFoundError, match="no maintenance attempt or flow event with id"):
        resolve(store, free, (Kind.ATTEMPTS, Kind.EVENTS))


# -- the CLI ----------------------------------------------------------------------------------------------------
def cli(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "patchmoi", *args, "--data-dir", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=120,
    )


def run_main(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--data-dir", str(data)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_show_and_retry_take_short_ids(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    populate(store, 12)
    eid = event_id(5)
    shown = cli(data, "show", short_id(eid)[:6])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"flow event   {eid}\n")
    found = json.loads(cli(data, "show", short_id(attempt_id(6)).upper(), "--json").stdout)
    assert (found["kind"], found["id"], found["attempt"]["id"]) == ("attempt", attempt_id(6), attempt_id(6))
    # retry runs the event in a local fork checkout whose one step reports a change
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = json.dumps({"status": "changed", "message": "rebuilt"}).replace('"', '\\"')
    (workspace / ".patchmoi.toml").write_text(
        f'[[steps]]\nname = "build"\non = ["upstream.release"]\ncommand = \'echo FLOW_RESULT {result}\'\n'
    )
    retried = cli(data, "retry", short_id(eid)[:5], "--workspace", str(workspace), "--json")
    assert retried.returncode == 0, retried.stderr
    outcome = json.loads(retried.stdout)
    assert outcome["event"]["id"] == eid and outcome["attempt"]["eventId"] == eid
    assert outcome["attempt"]["status"] == "changed"
    assert [a["eventId"] for a in Store(data).list_attempts(event_id=eid)] == [eid, eid]


def test_cli_ambiguous_and_unknown_short_ids(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    for twin in TWINS:
        add_event(store, twin)
    ambiguous = cli(data, "retry", "8e1f8c")
    assert ambiguous.returncode == EXIT_USAGE
    assert ambiguous.stderr.startswith("error: ambiguous short id 8e1f8c: 2 records; give more digits")
    assert TWINS[0] in ambiguous.stderr and TWINS[1] in ambiguous.stderr
    unknown = cli(data, "show", "abcd")
    assert unknown.returncode == EXIT_FAIL
    assert "no flow event, maintenance attempt, run or feed signal with id 'abcd'" in unknown.stderr
    assert "short id starts with abcd" in unknown.stderr
    assert Store(data).list_attempts() == []  # nothing was dispatched


def test_every_id_taking_command_resolves_short_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    store = Store(data)
    populate(store, 12)
    eid, aid = event_id(4), attempt_id(4)
    code, out, _ = run_main(capsys, data, "show", short_id("run-7"))
    assert code == 0 and out.startswith("run          run-7\n")
    code, out, _ = run_main(capsys, data, "show", short_id("src2:tag:v1.9.0"))
    assert code == 0 and out.startswith("feed signal  src2:tag:v1.9.0\n")
    code, out, _ = run_main(capsys, data, "sync", short_id(aid), "--json")
    assert code == 0 and json.loads(out)["attempt"]["id"] == aid
    code, _, err = run_main(capsys, data, "adopt", short_id(eid))  # an event: its newest successful attempt
    assert code == EXIT_FAIL and f"flow event {eid!r} has no successful attempt" in err
    code, _, err = run_main(capsys, data, "adopt", short_id(aid))
    assert code == EXIT_FAIL and f"attempt {aid} is started" in err
    for command in ("attempts", "runs", "dispatches"):
        code, out, _ = run_main(capsys, data, command, "--event-id", short_id(eid), "--json")
        assert code == 0
        assert {r["eventId"] for r in json.loads(out)[command]} == {eid}, command
    code, out, _ = run_main(capsys, data, "attempts", "--event-id", "patch:no:such:event", "--json")
    assert code == 0 and json.loads(out)["attempts"] == []  # an unknown filter is an empty list, as before


def test_help_of_every_id_taking_command_mentions_short_ids() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("show", "retry", "replay", "sync", "adopt", "attempts", "dispatches", "runs"):
        assert "short id" in " ".join(subs[command].format_help().split()), command
    assert "short id" in parser.format_help()
