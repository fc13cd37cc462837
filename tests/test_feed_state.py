"""Feed state as a journal of per-source deltas over `feed-state.json` (#14): small appends, exact replays."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core import fsutil
from patchmoi.core.feeds.poller import SEEN_CAP, id_digest
from patchmoi.core.store import Store, feedstate


def poller_like_states(rng: random.Random, steps: int, failures: float = 0.1) -> list[dict[str, Any]]:
    """Successive states of one source as the poller writes them: new ids pushed in front of `seen` (capped),
    the ones that fall off kept as digests in `known`, now and then an entry left unseen, scalars moving."""
    seen: list[str] = []
    known: set[str] = set()
    out = []
    for step in range(steps):
        new = [f"tag:github.com,2008:Repository/1/v{step}.{i}" for i in range(rng.choice([0, 1, 1, 1, 3]))]
        seen = new + seen
        if rng.random() < failures and len(seen) > 3:  # an entry failed: left out of seen, retried later
            seen.pop(rng.randrange(len(seen)))
        known |= {id_digest(x) for x in seen[SEEN_CAP:]}
        seen = seen[:SEEN_CAP]
        if rng.random() < 0.05:
            known.discard(next(iter(known), ""))
        state: dict[str, Any] = {
            "seen": list(seen),
            "known": "".join(sorted(known)),
            "lastSeenId": seen[0] if seen else None,
            "lastCheckedAt": f"2026-11-22T10:{step % 60:02d}:00.000Z",
            "primed": True,
        }
        if rng.random() < 0.3:
            state["etag"] = f'W/"{step}"'
        if rng.random() < 0.1:
            state["lastError"] = "Feed x HTTP 503"
        out.append(state)
    return out


def test_replayed_deltas_rebuild_every_state_exactly_from_any_snapshot() -> None:
    rng = random.Random(14)
    for steps in (40, 40, 40, 700, 700):
        states = poller_like_states(rng, steps)
        lines = [feedstate.delta("src", a, b) for a, b in zip([None, *states], states, strict=False)]
        # the journal starts after a fold at `start`; the snapshot read with it holds the state after `cut`
        # lines (cut > start: a fold wrote it, then the process died before emptying the journal)
        for start in (1, steps // 3):
            for cut in (start, start + 1, steps // 2, steps - 1):
                replayed: dict[str, dict[str, Any]] = {"src": states[cut - 1]}
                journal = b"".join(json.dumps(line).encode() + b"\n" for line in lines[start:] if line)
                assert feedstate.replay(replayed, journal) == 0
                assert replayed["src"] == states[-1], (steps, start, cut)


def test_a_save_costs_a_small_line_not_the_source_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    states = poller_like_states(random.Random(1), 1200, failures=0)
    store.write_state({f"s{i}": states[799] for i in range(200)})
    journal = tmp_path / "data" / "feed-state.journal"
    for state in states[800:1000]:  # 500 seen ids and a growing `known` already
        before = journal.stat().st_size if journal.exists() else 0
        store.write_state({"s7": state})
        grew = (journal.stat().st_size if journal.exists() else 0) - before
        assert 0 <= grew < 1500, grew  # one line; a fold (when due) empties the journal instead
    assert len(json.dumps(states[999])) > 25_000  # what a whole-state save would have written each time
    assert Store(tmp_path / "data").read_state()["s7"] == states[999]
    store.close()
    assert json.loads((tmp_path / "data" / "feed-state.json").read_text())["s7"] == states[999]


def test_a_torn_last_line_loses_that_save_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    store.write_state({"a": {"lastSeenId": "1", "seen": ["1"]}})
    store.write_state({"a": {"lastSeenId": "2", "seen": ["2", "1"]}})
    journal = data / "feed-state.journal"
    journal.write_bytes(journal.read_bytes() + b'{"s":"a","set":{"lastSeenId":"3"')  # killed mid-append
    assert Store(data).read_state()["a"] == {"lastSeenId": "2", "seen": ["2", "1"]}


def test_the_journal_is_folded_when_it_outgrows_the_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    big = {f"s{i}": {"lastSeenId": f"e{i}", "seen": [f"entry-{i}-{j}" for j in range(300)]} for i in range(400)}
    store.write_state(big)  # one batch: 400 lines, over COMPACT_MIN_BYTES, so folded (on a thread)
    store.records.journal.wait()  # type: ignore[attr-defined]
    assert not (data / "feed-state.journal").exists() and not (data / "feed-state.journal.1").exists()
    assert json.loads((data / "feed-state.json").read_text()) == big
    store.write_state({"s1": {**big["s1"], "lastCheckedAt": "now"}})
    assert (data / "feed-state.journal").stat().st_size < 200
    assert Store(data).read_state()["s1"]["lastCheckedAt"] == "now"


def test_a_save_after_a_torn_line_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Store(data).write_state({"a": {"primed": True, "lastSeenId": "a1"}})
    with (data / "feed-state.journal").open("ab") as fh:  # killed mid-append: a line without its newline
        fh.write(b'{"s":"b","set":{"primed":tr')
    Store(data).write_state({"c": {"primed": True, "lastSeenId": "c1"}})  # the next process saves
    assert sorted(Store(data).read_state()) == ["a", "c"]  # b's save is lost, c's is not


def test_snapshot_writes_failing_twice_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    store = Store(data)
    store.write_state({"a": {"primed": True}})
    store.records.flush_feed_states()  # type: ignore[attr-defined]

    def full(path: Path, data: bytes) -> None:  # the whole-file rewrite fails, small appends still fit
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feedstate, "atomic_write", full)
    store.write_state({"b": {"primed": True}})
    store.records.flush_feed_states()  # type: ignore[attr-defined]  # fails: b's line kept aside in .1
    store.write_state({"c": {"primed": True}})
    store.records.flush_feed_states()  # type: ignore[attr-defined]  # fails again: .1 must not be replaced
    assert sorted(Store(data).read_state()) == ["a", "b", "c"]
    monkeypatch.undo()
    store.close()
    assert sorted(json.loads((data / "feed-state.json").read_text())) == ["a", "b", "c"]


def test_a_reader_racing_a_fold_still_sees_the_newest_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    writer = Store(data)
    writer.write_state({"a": {"lastSeenId": "1"}})
    writer.records.flush_feed_states()  # type: ignore[attr-defined]  # the snapshot says 1
    writer.write_state({"a": {"lastSeenId": "2"}})  # the journal says 2
    real_read = Path.read_bytes
    real_write = fsutil.atomic_write

    def slow_write(path: Path, body: bytes) -> None:  # the snapshot takes a moment to write
        time.sleep(0.3)
        real_write(path, body)

    monkeypatch.setattr(feedstate, "atomic_write", slow_write)

    def read_bytes(self: Path) -> bytes:
        try:
            return real_read(self)
        finally:
            if self.name == "feed-state.journal.1" and writer.records.journal.first_at:  # type: ignore[attr-defined]
                writer.records._fold(background=True)  # type: ignore[attr-defined]  # right between the reads

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert Store(data).read_state()["a"]["lastSeenId"] == "2"
    monkeypatch.undo()
    writer.records.journal.wait()  # type: ignore[attr-defined]
