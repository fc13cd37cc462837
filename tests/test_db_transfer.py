"""`patchmoi db import|export|migrate` (core.store.transfer) on a real PostgreSQL and real DATA_DIRs: the round
trip keeps every version of every kind in write order, running twice adds nothing, a transfer stopped between a
write and its mark (or killed) resumes without duplicates, and bad inputs fail with one clear line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.store import Kind
from patchmoi.core.store.contract import FILTERS, RecordStore
from patchmoi.core.store.local import FILES, STATE_FILE, JsonlStore
from patchmoi.core.store.postgres import PostgresStore
from patchmoi.core.store.transfer import TransferConflict, export_to_dir, import_data_dir

from .conftest import PYTHON, ROOT

SOURCE = "github-acme-widget-releases"


class Crash(Exception):
    """What the write hook raises: a process dying after a write and before its mark."""


def event(i: int) -> dict[str, Any]:
    return {
        "id": f"patch:{SOURCE}:tag:v{i}:upstream.release",
        "type": ("upstream.release", "upstream.branch_update")[i % 2],
        "source": "patch",
        "occurredAt": f"2026-11-21T10:{i % 60:02d}:00.000Z",
        "payload": {"sourceId": SOURCE, "entryId": f"tag:v{i}", "tag": f"v{i}", "title": f"v{i} — «é»", "n": 1.5},
    }


def build_data_dir(path: Path, n: int = 40, *, offset: int = 0) -> JsonlStore:
    """A DATA_DIR as a running service leaves it: every kind, dispatches repeating per event, attempts and runs
    with several versions, notifications, feed states."""
    store = JsonlStore(path)
    store.ensure()
    add_records(store, n, offset=offset)
    store.save_feed_states(
        {SOURCE: {"lastSeenId": f"tag:v{offset + n - 1}", "seen": [f"tag:v{i}" for i in range(n)], "primed": True}}
    )
    store.close()
    return JsonlStore(path)


def add_records(store: RecordStore, n: int, *, offset: int = 0) -> None:
    ids = range(offset, offset + n)
    store.append_many(
        Kind.SIGNALS, [{"sourceId": SOURCE, "entryId": f"tag:v{i}", "event": "release", "n": i} for i in ids]
    )
    store.append_many(Kind.JOBS, [{"id": f"job:{i}", "sourceId": SOURCE, "kind": "fork_sync"} for i in ids])
    store.append_many(Kind.EVENTS, [event(i) for i in ids])
    for i in ids:
        eid = event(i)["id"]
        dispatches = [{"eventId": eid, "status": "dispatched", "transport": "local", "n": k} for k in range(1 + i % 3)]
        store.append_many(Kind.DISPATCHES, dispatches)
        attempt = {"id": f"attempt:{eid}:1", "eventId": eid}
        store.append_many(
            Kind.ATTEMPTS,
            [
                {**attempt, "status": "queued", "updatedAt": "2026-11-21T10:00:02.000Z"},
                {**attempt, "status": "running", "runIds": [f"run-{i}"]},
                {**attempt, "status": ("changed", "needs_intervention")[i % 2], "runIds": [f"run-{i}"]},
            ],
        )
        run = {"id": f"run-{i}", "eventId": eid}
        store.append(Kind.RUNS, {**run, "status": "running"})
        store.append(Kind.RUNS, {**run, "status": "completed", "exitCode": 0})
        if i % 4 == 0:
            note = {"id": f"note:{eid}", "kind": "attempt", "status": "pending"}
            store.append(Kind.NOTIFICATIONS, note)
            store.append(Kind.NOTIFICATIONS, {**note, "status": "sent"})
    store.append(Kind.LEGACY_DISPATCHES, {"eventId": event(offset)["id"], "status": "ok"})  # an older version's


def versions(store: RecordStore, kind: Kind) -> list[dict[str, Any]]:
    return [record for _, record in store.scan(kind)]


def view(store: RecordStore) -> dict[str, Any]:
    """What readers see of a store: every version in order, the newest-first lists, counts, feed states."""
    out: dict[str, Any] = {"states": store.feed_states(repair=False)}
    for kind in Kind:
        out[kind.value] = {
            "versions": versions(store, kind),
            "select": [record for _, record in store.select(kind, limit=500)],
            "count": store.count(kind),
            "by": {field: store.count_by(kind, field) for field in FILTERS[kind]},
        }
    return out


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_url)
    yield store
    store.close()


def crash_after(writes: int, kind: Kind | None = None) -> Any:
    """A write hook that raises after the `writes`-th write (of `kind`, if given): written, not yet marked."""
    seen = [0]

    def hook(k: Kind, appended: int) -> None:
        if kind is None or k is kind:
            seen[0] += 1
            if seen[0] >= writes:
                raise Crash(f"{k.value} after {seen[0]} writes")

    return hook


def patchmoi(*args: str, url: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHMOI_", "DATA_DIR"))}
    if url is not None:
        env["PATCHMOI_DATABASE_URL"] = url
    return subprocess.run(
        [PYTHON, "-m", "patchmoi", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# -- the round trip --------------------------------------------------------------------------------------------
def test_round_trip_jsonl_to_postgres_to_jsonl_keeps_every_version(tmp_path: Path, pg: PostgresStore) -> None:
    source = build_data_dir(tmp_path / "data")
    report = import_data_dir(tmp_path / "data", pg, batch_size=7)
    expected = view(source)
    assert expected["attempts"]["count"] == 40 and len(expected["attempts"]["versions"]) == 120
    assert len(expected["dispatches"]["versions"]) > 40  # several per event: the id repeats, every one is kept
    assert view(pg) == expected
    assert report.added == report.read == sum(len(expected[k.value]["versions"]) for k in Kind)
    assert report.feed_states == 1

    out = tmp_path / "out"
    exported = export_to_dir(pg, out, batch_size=11)
    assert exported.added == report.added
    assert view(JsonlStore(out)) == expected
    for kind, (filename, _) in FILES.items():  # byte for byte the same lines, as the Bun service reads them
        assert (out / filename).exists() == (tmp_path / "data" / filename).exists(), kind
        if (out / filename).exists():
            assert (out / filename).read_bytes() == (tmp_path / "data" / filename).read_bytes(), kind
        assert stat.S_IMODE((out / filename).stat().st_mode) == 0o600
    assert json.loads((out / STATE_FILE).read_text()) == expected["states"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_import_twice_adds_nothing_and_a_grown_data_dir_adds_only_its_new_records(
    tmp_path: Path, pg: PostgresStore
) -> None:
    data = tmp_path / "data"
    build_data_dir(data, 20)
    import_data_dir(data, pg, batch_size=5)
    again = import_data_dir(data, pg, batch_size=5)
    assert again.added == 0 and again.read == 0  # the marks say everything was copied
    assert view(pg) == view(JsonlStore(data))

    grown = JsonlStore(data)
    add_records(grown, 5, offset=20)
    grown.append(Kind.ATTEMPTS, {"id": f"attempt:{event(3)['id']}:1", "eventId": event(3)["id"], "status": "adopted"})
    grown.close()
    third = import_data_dir(data, pg, batch_size=5)
    assert third.added == third.read > 0
    assert view(pg) == view(JsonlStore(data))
    assert pg.get(Kind.ATTEMPTS, f"attempt:{event(3)['id']}:1")["status"] == "adopted"  # type: ignore[index]


def test_another_copy_of_the_files_is_compared_by_content_and_adds_only_what_is_missing(
    tmp_path: Path, pg: PostgresStore
) -> None:
    build_data_dir(tmp_path / "data", 15)
    import_data_dir(tmp_path / "data", pg)
    shutil.copytree(tmp_path / "data", tmp_path / "copy")  # other inodes: the marks' cursors do not apply
    copy = JsonlStore(tmp_path / "copy")
    add_records(copy, 3, offset=15)
    again = versions(copy, Kind.ATTEMPTS)[0]
    copy.append_many(Kind.ATTEMPTS, [again, again])  # a version written twice more: both copies are kept
    copy.close()
    with pytest.raises(Crash):  # and a comparing run stopped half-way resumes right too
        import_data_dir(tmp_path / "copy", pg, batch_size=4, on_write=crash_after(3, Kind.ATTEMPTS))
    report = import_data_dir(tmp_path / "copy", pg, batch_size=4)
    assert report.kinds[Kind.ATTEMPTS].present > 0
    assert view(pg) == view(JsonlStore(tmp_path / "copy"))


# -- resuming ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "writes"),
    [(Kind.EVENTS, 2), (Kind.DISPATCHES, 3), (Kind.ATTEMPTS, 1), (Kind.ATTEMPTS, 4), (Kind.RUNS, 5), (None, 1)],
)
def test_an_import_stopped_after_a_write_and_before_its_mark_resumes_without_duplicates(
    tmp_path: Path, pg: PostgresStore, kind: Kind | None, writes: int
) -> None:
    data = tmp_path / "data"
    build_data_dir(data, 25)
    with pytest.raises(Crash):
        import_data_dir(data, pg, batch_size=6, on_write=crash_after(writes, kind))
    with pytest.raises(Crash):  # stopped again at its first write, with another batch size
        import_data_dir(data, pg, batch_size=4, on_write=crash_after(1, kind))
    report = import_data_dir(data, pg, batch_size=6)
    assert report.present > 0  # the batch written before the last crash, found and not written again
    assert view(pg) == view(JsonlStore(data))


def test_an_export_stopped_after_a_write_resumes_and_the_files_match(tmp_path: Path, pg: PostgresStore) -> None:
    data = tmp_path / "data"
    build_data_dir(data, 25)
    import_data_dir(data, pg)
    out = tmp_path / "out"
    for kind, writes in ((Kind.EVENTS, 2), (Kind.ATTEMPTS, 3), (Kind.NOTIFICATIONS, 1)):
        with pytest.raises(Crash):
            export_to_dir(pg, out, batch_size=8, on_write=crash_after(writes, kind))
    export_to_dir(pg, out, batch_size=8)
    for filename, _ in FILES.values():
        if (data / filename).exists():
            assert (out / filename).read_bytes() == (data / filename).read_bytes(), filename
    assert view(JsonlStore(out)) == view(pg)
    assert export_to_dir(pg, out).added == 0  # an earlier export of the same database: brought up to date


def test_a_cut_batch_in_an_exported_file_is_completed_not_duplicated(tmp_path: Path, pg: PostgresStore) -> None:
    """A JSONL batch is not one transaction: a crash can leave part of it (complete lines and a torn one)."""
    data = tmp_path / "data"
    build_data_dir(data, 25)
    import_data_dir(data, pg)
    out = tmp_path / "out"
    with pytest.raises(Crash):
        export_to_dir(pg, out, batch_size=10, on_write=crash_after(2, Kind.ATTEMPTS))
    attempts = out / FILES[Kind.ATTEMPTS][0]
    lines = attempts.read_bytes().splitlines(keepends=True)
    attempts.write_bytes(b"".join(lines[:-4]) + lines[-4][:9])  # the last batch's end never reached the disk
    export_to_dir(pg, out, batch_size=10)
    assert attempts.read_bytes() == (data / FILES[Kind.ATTEMPTS][0]).read_bytes()


def test_another_writer_between_a_crash_and_the_resume_stops_the_import(tmp_path: Path, pg: PostgresStore) -> None:
    data = tmp_path / "data"
    build_data_dir(data, 20)
    with pytest.raises(Crash):
        import_data_dir(data, pg, batch_size=5, on_write=crash_after(2, Kind.ATTEMPTS))
    pg.append(Kind.ATTEMPTS, {"id": "attempt:someone-else", "eventId": "e", "status": "queued"})
    with pytest.raises(TransferConflict, match="did not write"):
        import_data_dir(data, pg, batch_size=5)


def test_export_refuses_a_directory_that_is_not_an_earlier_export_of_this_database(
    tmp_path: Path, pg: PostgresStore, postgres_server: Any
) -> None:
    from patchmoi.core.errors import UsageError

    build_data_dir(tmp_path / "data", 5)
    import_data_dir(tmp_path / "data", pg)
    with pytest.raises(UsageError, match="not empty"):
        export_to_dir(pg, tmp_path / "data")  # a DATA_DIR of its own
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        export_to_dir(pg, tmp_path / "notes")
    export_to_dir(pg, tmp_path / "out")
    name = postgres_server.create_database()
    other = PostgresStore(postgres_server.url(name))
    try:
        import_data_dir(tmp_path / "data", other)  # the same records, another database
        with pytest.raises(UsageError, match="not an earlier export"):
            export_to_dir(other, tmp_path / "out")
    finally:
        other.close()
        postgres_server.drop_database(name)


# -- the command ------------------------------------------------------------------------------------------------
def test_db_commands_migrate_import_and_export(tmp_path: Path, postgres_url: str) -> None:
    build_data_dir(tmp_path / "data", 10)
    first = patchmoi("db", "migrate", url=postgres_url)
    assert first.returncode == 0 and "schema version 1 (applied: 1)" in first.stdout, first.stderr
    again = patchmoi("db", "migrate", "--json", "--database-url", postgres_url)
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == [], again.stderr
    assert "up to date at 1" in patchmoi("db", "migrate", url=postgres_url).stdout

    imported = patchmoi("db", "import", str(tmp_path / "data"), "--json", url=postgres_url)
    assert imported.returncode == 0, imported.stderr
    summary = json.loads(imported.stdout)
    assert summary["kinds"]["attempts"] == {**summary["kinds"]["attempts"], "read": 30, "added": 30, "present": 0}
    assert "importing" in imported.stderr and "records/s" in imported.stderr
    text = patchmoi("db", "import", str(tmp_path / "data"), url=postgres_url)
    assert text.returncode == 0 and "total" in text.stdout and "feed states: 1 source(s)" in text.stdout

    exported = patchmoi("db", "export", str(tmp_path / "out"), url=postgres_url)
    assert exported.returncode == 0, exported.stderr
    assert view(JsonlStore(tmp_path / "out")) == view(JsonlStore(tmp_path / "data"))
    refused = patchmoi("db", "export", str(tmp_path / "data"), url=postgres_url)
    assert refused.returncode == 2 and "not empty" in refused.stderr


@pytest.mark.parametrize(
    ("args", "url", "code", "message"),
    [
        (("db", "import", "{tmp}/missing"), "postgresql://u:pw-s3cret@127.0.0.1:9/x", 1, "does not exist"),
        (("db", "import", "{tmp}"), "postgresql://u:pw-s3cret@127.0.0.1:9/x", 2, "not a patchmoi data directory"),
        (("db", "import", "{tmp}/data"), "postgresql://u:pw-s3cret@127.0.0.1:9/x", 1, "cannot connect to PostgreSQL"),
        (("db", "export", "{tmp}/out"), "postgresql://u:pw-s3cret@127.0.0.1:9/x", 1, "cannot connect to PostgreSQL"),
        (("db", "migrate"), "postgresql://u:pw-s3cret@127.0.0.1:9/x", 1, "u:***@127.0.0.1:9"),
        (("db", "import", "{tmp}/data"), "mysql://u:pw-s3cret@db/x", 2, "must be a PostgreSQL connection string"),
        (("db", "import", "{tmp}/data"), None, 2, "no database"),
        (("db",), None, 2, "needs an ACTION"),
        (("db", "import", "{tmp}/data", "--batch-size", "0"), "host=/nowhere password=pw-s3cret", 2, "batch size"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line_and_no_secret(
    tmp_path: Path, args: tuple[str, ...], url: str | None, code: int, message: str
) -> None:
    build_data_dir(tmp_path / "data", 2)
    out = patchmoi(*(a.replace("{tmp}", str(tmp_path)) for a in args), url=url)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr  # one line, no traceback
    assert "s3cret" not in out.stderr + out.stdout


def test_a_killed_import_resumes_without_duplicates(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "data"
    source = JsonlStore(data)
    source.ensure()
    for start in range(0, 6000, 1000):  # attempts: a kind whose versions share ids
        source.append_many(
            Kind.ATTEMPTS,
            [
                {"id": f"a{i // 3}", "eventId": f"e{i // 3}", "status": "running", "v": i}
                for i in range(start, start + 1000)
            ],
        )
    source.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHMOI_")}
    env["PATCHMOI_DATABASE_URL"] = postgres_url
    command = [PYTHON, "-m", "patchmoi", "db", "import", str(data), "--batch-size", "10"]
    killed = 0
    for _ in range(3):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first progress line: it is copying
        assert b"importing" in line, line + proc.stderr.read()
        time.sleep(0.3)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        proc.stderr.close()
    assert killed > 0
    final = subprocess.run([*command, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    store = PostgresStore(postgres_url)
    try:
        assert versions(store, Kind.ATTEMPTS) == versions(JsonlStore(data), Kind.ATTEMPTS)
        assert store.count(Kind.ATTEMPTS) == 2000
    finally:
        store.close()
