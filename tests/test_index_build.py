"""First touch of a big store (#14): resumable batched builds, exact hashed lookups, lists from the file's end
while an index is behind, and a server that answers while it builds."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from patchmoi.core.store import Kind, Store
from patchmoi.core.store import index as index_module
from tests.conftest import ROOT
from tests.loopback import free_port

PYTHON = sys.executable


def event(i: int, kind: str = "upstream.release") -> dict[str, Any]:
    return {"id": f"patch:src:tag:v{i}:{kind}", "type": kind, "source": "patch", "payload": {"tag": f"v{i}", "n": i}}


def write_events(data: Path, n: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    kinds = ("upstream.release", "upstream.branch_update", "downstream.release")
    with (data / "flow-events.jsonl").open("wb") as fh:
        for i in range(n):
            fh.write(json.dumps(event(i, kinds[i % 3]), separators=(",", ":")).encode() + b"\n")


def watermark(data: Path, name: str = "flow-events.jsonl") -> int:
    db = sqlite3.connect(data / ".index" / f"{name}.sqlite")
    try:
        return int(dict(db.execute("SELECT key, value FROM meta").fetchall()).get("watermark", "0"))
    finally:
        db.close()


KILLED_BUILD = r"""
import os, signal, sys
from patchmoi.core.store import Kind, Store
from patchmoi.core.store import index, jsonl
jsonl._CHUNK = 16 << 10
index._BATCH_BYTES = 64 << 10
index._BULK_MIN_BYTES = 64 << 10
index._PROGRESS_MIN_BYTES = 0
batches = []
def progress(w):
    batches.append(w.done)
    if len(batches) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, right after a batch committed
Store(sys.argv[1]).warm([Kind.EVENTS], progress)
"""


def test_a_build_killed_half_way_resumes_from_its_last_batch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_events(data, 6000)  # ~700 KB: about 11 batches of 64 KB
    size = (data / "flow-events.jsonl").stat().st_size
    proc = subprocess.run([PYTHON, "-c", KILLED_BUILD, str(data), "5"], cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    kept = watermark(data)
    assert size * 0.2 < kept < size * 0.7  # four batches committed (the first report is the start), the rest not
    seen: list[int] = []
    store = Store(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "_BATCH_BYTES", 64 << 10)
        patch.setattr(index_module, "_PROGRESS_MIN_BYTES", 0)
        patch.setattr("patchmoi.core.store.jsonl._CHUNK", 16 << 10)
        store.warm([Kind.EVENTS], lambda w: seen.append(w.done))
    assert seen[0] == kept < seen[1]  # the rerun starts where the killed one stopped
    assert watermark(data) == size
    # and the resumed index answers exactly like one built in one go
    assert store.get_event(event(4321, "upstream.branch_update")["id"])["payload"]["n"] == 4321  # type: ignore[index]
    assert [e["payload"]["n"] for e in store.list_events(type="downstream.release", limit=3)] == [5999, 5996, 5993]
    assert store.count(Kind.EVENTS) == 6000


def test_hash_collisions_cost_reads_never_wrong_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("patchmoi.core.store.index.zlib.crc32", lambda data: 7)  # every id collides
    store = Store(tmp_path / "data")
    for i in range(50):
        store.record_event(event(i))
    assert store.record_event(event(7)) is False  # already there, found among 50 candidates
    assert store.get_event(event(33)["id"])["payload"]["n"] == 33  # type: ignore[index]
    assert store.get_event("patch:src:tag:v99:upstream.release") is None
    assert store.undispatched([event(1)["id"]]) == {event(1)["id"]}
    ids = [event(i)["id"] for i in (3, 60, 49)]
    assert store.records.existing_ids(Kind.EVENTS, ids) == {ids[0], ids[2]}


def mixed_store(data: Path) -> None:
    """Odd but valid logs: blank lines, a malformed line, a BOM on the first line, escapes, several versions."""
    data.mkdir(parents=True)
    lines = [b"\xef\xbb\xbf" + json.dumps(event(0)).encode()]
    for i in range(1, 400):
        lines.append(json.dumps(event(i, ("upstream.release", "downstream.release")[i % 2])).encode())
        if i % 50 == 0:
            lines += [b"", b"   ", b'{"id": "broken"', json.dumps({"id": f"esc-{i}", "type": "caf\u00e9"}).encode()]
    (data / "flow-events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    versions = []
    for i in range(300):
        for status in ("running", ("changed", "failed", "needs_intervention")[i % 3]):
            versions.append({"id": f"a{i % 120}", "eventId": f"e{i % 7}", "status": status, "n": i})
    (data / "maintenance-attempts.jsonl").write_bytes(b"".join(json.dumps(v).encode() + b"\n" for v in versions))


def test_lists_from_the_file_end_answer_exactly_as_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    mixed_store(data)
    tail = Store(data)
    monkeypatch.setattr("patchmoi.core.store.log.TAIL_FROM_BYTES", 0)  # no index: these small files use the tail
    cases: list[tuple[Kind, dict[str, str], int]] = [
        (Kind.EVENTS, {}, 50),
        (Kind.EVENTS, {}, 500),
        (Kind.EVENTS, {"type": "downstream.release"}, 7),
        (Kind.EVENTS, {"type": "caf\u00e9"}, 50),
        (Kind.EVENTS, {"type": "nothing"}, 5),
        (Kind.ATTEMPTS, {}, 30),
        (Kind.ATTEMPTS, {"status": "changed"}, 500),
        (Kind.ATTEMPTS, {"eventId": "e3", "status": "failed"}, 10),
        (Kind.ATTEMPTS, {"status": "running"}, 10),  # older versions only: the latest of each id moved on
    ]
    from_tail = [tail.records.select(k, filters=f, limit=n) for k, f, n in cases]
    raw_tail = [tail.records.select_json(k, filters=f, limit=n) for k, f, n in cases]
    pages_tail = tail.records.select(Kind.EVENTS, limit=20, before=from_tail[0][10][0])
    assert not (data / ".index").exists()  # nothing was built for them
    monkeypatch.setattr("patchmoi.core.store.log.TAIL_FROM_BYTES", 1 << 40)
    indexed = Store(data)
    assert [indexed.records.select(k, filters=f, limit=n) for k, f, n in cases] == from_tail
    assert [indexed.records.select_json(k, filters=f, limit=n) for k, f, n in cases] == raw_tail
    assert indexed.records.select(Kind.EVENTS, limit=20, before=from_tail[0][10][0]) == pages_tail
    assert raw_tail[0][-1].startswith(b"{")  # the BOM is never served
    assert len(from_tail[1]) == 399 + 8  # every valid line, the broken and blank ones left out


SERVE_WAIT = 60.0


def test_serve_answers_health_and_lists_while_it_builds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_events(data, 300_000)  # ~30 MB: a build of seconds
    port = free_port()
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(data), "PORT": str(port)}
    proc = subprocess.Popen(
        [PYTHON, "-m", "patchmoi", "serve", "--no-poll"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVE_WAIT
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "serve did not come up"
                    time.sleep(0.02)
            listing = client.get("/flow-events", params={"limit": 3})
            assert listing.status_code == 200
            assert [e["payload"]["n"] for e in listing.json()["events"]] == [299_999, 299_998, 299_997]
            states, slowest = [], 0.0
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                ready = client.get("/readyz")
                states.append(ready.status_code)
                if ready.status_code == 200:
                    break
                assert ready.status_code == 503
                body = ready.json()
                assert body["status"] == "indexing" and 0 <= body["indexing"]["percent"] <= 99
                assert body["indexing"]["message"].startswith("indexing ")
                time.sleep(0.05)
            assert states[-1] == 200, "the build never finished"
            assert 503 in states  # probes were answered while it built (their p99 is in bench/http_bench.py)
            assert slowest < 5.0, slowest  # never held for the whole build
            assert client.get(f"/flow-events/{event(5, 'downstream.release')['id']}").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
