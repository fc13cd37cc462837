from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from patchmoi.core.store import Kind, Store, parse_limit
from patchmoi.core.store.jsonl import JsonlFile

from .conftest import PYTHON, ROOT, present


def ev(i: int, type_: str = "upstream.release") -> dict[str, object]:
    return {"id": f"patch:src:{i}:{type_}", "type": type_, "source": "patch", "payload": {"n": i}}


def test_append_list_get_and_limits(data_dir: Path) -> None:
    store = Store(data_dir)
    types = ["upstream.branch_update", "upstream.release", "upstream.release"]
    store.append_many(Kind.EVENTS, [ev(i, types[i % 3]) for i in range(200)])
    newest = store.list_events(limit=5)
    assert [e["payload"]["n"] for e in newest] == [199, 198, 197, 196, 195]
    assert len(store.list_events()) == 50
    assert len(store.list_events(limit="9999")) == 200
    assert len(store.list_events(limit="0")) == 1
    assert len(store.list_events(limit="-4")) == 1
    assert len(store.list_events(limit="abc")) == 50
    assert len(store.list_events(limit="7.9")) == 7
    branch = store.list_events(type="upstream.branch_update", limit=500)
    assert {e["type"] for e in branch} == {"upstream.branch_update"}
    assert len(branch) == 67
    assert present(store.get_event("patch:src:41:upstream.release"))["payload"] == {"n": 41}
    assert store.get_event("nope") is None


def test_parse_limit_matches_spec() -> None:
    assert parse_limit(None) == 50
    assert parse_limit("") == 50
    assert parse_limit("inf") == 50
    assert parse_limit("1e9") == 500
    assert parse_limit(3.7) == 3


def test_get_returns_last_record_and_attempts_latest_wins(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append(Kind.EVENTS, {"id": "e1", "type": "t", "payload": {"v": 1}})
    store.append(Kind.EVENTS, {"id": "e1", "type": "t", "payload": {"v": 2}})
    assert present(store.get_event("e1"))["payload"] == {"v": 2}
    for rec in (
        {"id": "a1", "eventId": "e1", "status": "started"},
        {"id": "a2", "eventId": "e1", "status": "started"},
        {"id": "a1", "eventId": "e1", "status": "changed"},
    ):
        store.append(Kind.ATTEMPTS, rec)
    assert [a["id"] for a in store.list_attempts()] == ["a1", "a2"]
    assert [a["id"] for a in store.list_attempts(status="started")] == ["a2"]
    assert present(store.get_attempt("a1"))["status"] == "changed"
    with pytest.raises(Exception, match="invalid attempt status"):
        store.list_attempts(status="bogus")


def test_record_event_dedupes_by_id(data_dir: Path) -> None:
    store = Store(data_dir)
    assert store.record_event(ev(1)) is True
    assert store.record_event(ev(1)) is False
    assert len(store.list_events()) == 1


def test_files_are_created_0600(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append(Kind.EVENTS, ev(1))
    store.write_state({"s": {"lastSeenId": "x"}})
    store.list_events()
    journal = data_dir / "feed-state.journal"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    store.close()  # folds the journal into feed-state.json
    for path in [
        data_dir / "flow-events.jsonl",
        data_dir / "flow-events.jsonl.lock",
        data_dir / "feed-state.json",
        *(data_dir / ".index").iterdir(),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_state_is_journaled_then_folded_into_one_source_per_line(data_dir: Path) -> None:
    store = Store(data_dir)
    store.write_state({"src": {"lastSeenId": "a", "lastCheckedAt": "2026-01-01T00:00:00.000Z"}})
    store.write_state({"two": {"lastSeenId": "b"}})
    assert not (data_dir / "feed-state.json").exists()  # saved as two journal lines, not a rewrite
    assert len((data_dir / "feed-state.journal").read_bytes().splitlines()) == 2
    assert Store(data_dir).read_state()["src"]["lastSeenId"] == "a"  # another reader replays the journal
    store.close()
    text = (data_dir / "feed-state.json").read_text()
    assert text.splitlines() == [
        "{",
        '  "src": {"lastSeenId":"a","lastCheckedAt":"2026-01-01T00:00:00.000Z"},',
        '  "two": {"lastSeenId":"b"}',
        "}",
    ]
    assert not (data_dir / "feed-state.journal").exists()  # folded: set aside, then removed
    assert Store(data_dir).read_state() == json.loads(text)
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]


def test_malformed_middle_line_and_torn_tail(data_dir: Path) -> None:
    path = data_dir / "flow-events.jsonl"
    good = [json.dumps(ev(i)) for i in range(3)]
    path.write_bytes(
        (good[0] + "\n" + "{not json at all\n" + good[1] + "\n" + "[1,2]\n" + good[2] + "\n").encode()
        + b'{"id":"torn","ty'
    )
    store = Store(data_dir)
    events = store.list_events()
    assert [e["payload"]["n"] for e in events] == [2, 1, 0]
    health = store.health()["files"]["flow-events.jsonl"]
    assert health["skippedLines"] == 2
    assert health["quarantinedBytes"] == len(b'{"id":"torn","ty')
    assert path.read_bytes().endswith(b"\n")
    quarantine = [json.loads(x) for x in (data_dir / "flow-events.jsonl.quarantine").read_text().splitlines()]
    assert quarantine[0]["offset"] == len(path.read_bytes())
    # appends after repair produce parseable lines
    store.append(Kind.EVENTS, ev(9))
    assert store.list_events(limit=1)[0]["payload"]["n"] == 9


def test_index_rebuilds_when_deleted_or_corrupt_or_file_replaced(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append_many(Kind.EVENTS, [ev(i) for i in range(20)])
    assert len(store.list_events()) == 20
    store.close()
    for p in (data_dir / ".index").glob("flow-events*"):
        p.write_bytes(b"garbage" * 100)
    store = Store(data_dir)
    assert len(store.list_events()) == 20
    store.close()
    # the log is replaced by a different, shorter one: the index notices
    (data_dir / "flow-events.jsonl").write_text(json.dumps(ev(100)) + "\n")
    store = Store(data_dir)
    assert [e["payload"]["n"] for e in store.list_events()] == [100]


def test_reads_bun_service_files(data_dir: Path) -> None:
    """Lines as the Bun service wrote them (spec §3, §4, §7), including the legacy dispatch file."""
    eid = "patch:github-openai-codex-releases:tag:github.com,2008:Repository/965415649/rust-v0.131.0:upstream.release"
    (data_dir / "flow-events.jsonl").write_text(
        json.dumps(
            {
                "id": eid,
                "type": "upstream.release",
                "source": "patch",
                "occurredAt": "2026-05-13T00:00:00.000Z",
                "receivedAt": "2026-05-13T00:00:01.000Z",
                "payload": {"repo": "openai/codex", "tag": "rust-v0.131.0"},
            }
        )
        + "\r\n"
    )
    (data_dir / "flow-dispatches.jsonl").write_text(
        json.dumps(
            {
                "eventId": eid,
                "eventType": "upstream.release",
                "url": "https://w.example/events",
                "status": "failed",
                "httpStatus": 500,
                "error": "Flow backend POST /events failed with 500",
                "createdAt": "2026-05-13T00:00:01.000Z",
            }
        )
        + "\n"
    )
    (data_dir / "workspace-dispatches.jsonl").write_text(
        json.dumps(
            {
                "eventId": eid,
                "eventType": "upstream.release",
                "operation": "dispatch",
                "target": "workspace-backend",
                "transport": "workspace-http",
                "workspaceBackendUrl": "https://w.example",
                "url": "https://w.example/events",
                "status": "dispatched",
                "runIds": ["run-1"],
                "matched": 1,
                "createdAt": "2026-05-14T00:00:00.000Z",
            }
        )
        + "\n"
    )
    aid = f"{eid}:dispatch:2026-05-14T00:00:00.000Z"
    (data_dir / "maintenance-attempts.jsonl").write_text(
        "\n".join(
            json.dumps(a)
            for a in (
                {"id": aid, "eventId": eid, "status": "started", "workspaceRunIds": ["run-1"], "candidateRefs": []},
                {
                    "id": aid,
                    "eventId": eid,
                    "status": "changed",
                    "workspaceRunIds": ["run-1"],
                    "candidateRefs": [{"kind": "branch", "ref": "refs/heads/main"}],
                },
            )
        )
        + "\n"
    )
    store = Store(data_dir)
    assert present(store.get_event(eid))["payload"]["tag"] == "rust-v0.131.0"
    dispatches = store.list_dispatches(event_id=eid)
    assert [d["status"] for d in dispatches] == ["dispatched", "failed"]  # current file first, then legacy
    assert store.list_dispatches(status="failed")[0]["httpStatus"] == 500
    assert present(store.get_attempt(aid))["status"] == "changed"
    assert store.list_attempts(status="started") == []


WRITER = r"""
import sys
from patchmoi.core.store import Kind, Store
store = Store(sys.argv[1])
tag, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    store.append(Kind.EVENTS, {"id": f"{tag}-{i}", "type": "t", "payload": {"w": tag, "i": i, "pad": "x" * (i % 300)}})
    if len(sys.argv) > 4:
        print(f"{tag}-{i}", flush=True)
"""


@pytest.mark.slow
def test_four_processes_append_100k_records(data_dir: Path) -> None:
    procs = [subprocess.Popen([PYTHON, "-c", WRITER, str(data_dir), f"w{n}", "25000"], cwd=ROOT) for n in range(4)]
    try:
        for p in procs:
            assert p.wait(timeout=300) == 0
    finally:
        for p in procs:  # none outlives a failed test
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = (data_dir / "flow-events.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert len(parsed) == 100_000
    assert len({r["id"] for r in parsed}) == 100_000
    for n in range(4):  # each writer's records are in its own order
        seq = [r["payload"]["i"] for r in parsed if r["payload"]["w"] == f"w{n}"]
        assert seq == list(range(25000))
    store = Store(data_dir)
    assert store.count(Kind.EVENTS) == 100_000


@pytest.mark.slow
def test_sigkill_writer_loses_no_acknowledged_record(data_dir: Path) -> None:
    with subprocess.Popen(
        [PYTHON, "-c", WRITER, str(data_dir), "k", "1000000", "ack"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as proc:  # its exit closes the pipe
        assert proc.stdout is not None
        acked = []
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= 3000:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        acked += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    # a crash mid-write leaves a torn tail; simulate the worst case on top of whatever SIGKILL left
    with open(data_dir / "flow-events.jsonl", "ab") as fh:
        fh.write(b'{"id":"k-partial","ty')
    store = Store(data_dir)
    ids = {e["id"] for e in (r for _, r in store.scan(Kind.EVENTS))}
    missing = [a for a in acked if a not in ids]
    assert missing == []
    store.list_events(limit=1)  # a reader repairs the torn tail
    assert (data_dir / "flow-events.jsonl").read_bytes().endswith(b"\n")
    assert store.health()["files"]["flow-events.jsonl"]["quarantinedBytes"] >= len(b'{"id":"k-partial","ty')
    assert store.health()["files"]["flow-events.jsonl"]["skippedLines"] == 0


def test_index_is_shared_across_processes(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append(Kind.EVENTS, ev(1))
    assert len(store.list_events()) == 1
    subprocess.run([PYTHON, "-c", WRITER, str(data_dir), "other", "5"], cwd=ROOT, check=True)
    assert len(store.list_events()) == 6
    assert store.get_event("other-4") is not None


async def test_follow_sees_appends_from_another_process(data_dir: Path) -> None:
    import asyncio

    store = Store(data_dir)
    store.append(Kind.EVENTS, ev(0))
    stop = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async for batch in store.follow([Kind.EVENTS], stop=stop):
            seen.extend(item.record["id"] for item in batch)
            if len(seen) >= 3:
                stop.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    proc = await asyncio.create_subprocess_exec(PYTHON, "-c", WRITER, str(data_dir), "f", "3", cwd=ROOT)
    assert await proc.wait() == 0
    await asyncio.wait_for(task, timeout=10)
    assert seen == ["f-0", "f-1", "f-2"]  # the record before follow started is not replayed


def test_jsonl_file_partial_line_not_indexed_until_complete(data_dir: Path) -> None:
    f = JsonlFile(data_dir / "x.jsonl")
    with f.locked():
        f.append_lines([b'{"a":1}\n'])
    with open(f.path, "ab") as fh:
        fh.write(b'{"a":')
    assert [line for _, line in f.scan(0)] == [b'{"a":1}']
    assert os.path.getsize(f.path) == 13
    assert f.repair() == 5
    assert f.path.read_bytes() == b'{"a":1}\n'
    time.sleep(0)
