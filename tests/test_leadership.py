"""core/leadership.py on a real PostgreSQL: shards shared out evenly, handed over to a replica that joins,
taken over from one that dies, one coordinator; and a replica never saves the feed state of another's source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from patchmoi.core.feeds.poller import FeedState
from patchmoi.core.leadership import SHARDS, Shares, shard_of
from patchmoi.core.store import Store
from patchmoi.core.store.postgres import PostgresStore


@pytest.fixture
def stores(postgres_url: str, tmp_path: Path) -> Iterator[list[Store]]:
    """Three replicas' stores: each its own pool and lease connection, as three processes have."""
    opened = [Store(PostgresStore(postgres_url), data_dir=tmp_path / f"r{n}") for n in range(3)]
    yield opened
    for store in opened:
        store.close()


def settle(replicas: list[Shares], rounds: int = 4) -> None:
    """A few steps of every replica, handing surpluses over as the service does."""
    for _ in range(rounds):
        for shares in replicas:
            moves = shares.step()
            assert not any(shares.polls(f"src-{i}") for i in range(200) if shard_of(f"src-{i}") in moves.gained)
            shares.arrived(set(shares.arriving))  # (the service: once their saved feed state is loaded)
            if moves.surplus:  # (nothing under way here: the service waits for its polls and dispatches)
                shares.stop_polling(moves.surplus)
                assert not any(shares.polls(f"src-{i}") for i in range(200) if shard_of(f"src-{i}") in moves.surplus)
                shares.hand_over(moves.surplus)


def test_shards_are_shared_handed_over_and_taken_over(stores: list[Store]) -> None:
    a, b, c = (Shares(store, f"host:{n}") for n, store in enumerate(stores))
    settle([a])
    assert a.held == set(range(SHARDS)) and a.coordinator and a.replicas == 1  # alone: everything
    settle([a, b])
    assert len(a.held) == len(b.held) == SHARDS // 2 and not a.held & b.held  # a joined: an even share
    assert b.replicas == 2 and not b.coordinator
    settle([a, b, c])
    sizes = sorted(len(s.held) for s in (a, b, c))
    assert sizes[0] >= 10 and sizes[-1] <= 11 and sum(sizes) == SHARDS  # 11, 11, 10
    assert not (a.held & b.held or a.held & c.held or b.held & c.held)
    owners = {sid: [s.holder for s in (a, b, c) if s.owns(sid)] for sid in (f"src-{i}" for i in range(200))}
    assert all(len(found) == 1 for found in owners.values())  # each source: exactly one replica polls it
    stores[0].close()  # a dies (its connection closes: every session lock with it)
    settle([b, c], rounds=2)
    assert len(b.held) + len(c.held) == SHARDS and not b.held & c.held
    assert b.coordinator != c.coordinator  # the coordinator role moved, to one replica
    assert {shard_of(f"src-{i}") for i in range(200)} <= b.held | c.held


def test_a_replica_saves_only_the_feed_state_of_the_sources_it_polls(stores: list[Store]) -> None:
    a, b = Shares(stores[0], "host:a"), Shares(stores[1], "host:b")
    settle([a, b])
    mine = next(f"src-{i}" for i in range(100) if a.owns(f"src-{i}"))
    theirs = next(f"src-{i}" for i in range(100) if b.owns(f"src-{i}"))
    state = FeedState(stores[0])
    state.owns = a.owns
    state.put(mine, {"lastSeenId": "x"}, flush=False)
    state.put(theirs, {"lastSeenId": "stale"}, flush=False)  # a poll that finished after its shard was lost
    stores[1].write_state({theirs: {"lastSeenId": "fresh"}})
    state.flush()
    saved = stores[2].read_state()
    assert saved[mine] == {"lastSeenId": "x"} and saved[theirs] == {"lastSeenId": "fresh"}


def test_a_late_renewal_keeps_the_feed_state_for_the_next_flush(stores: list[Store]) -> None:
    """A step that came late (a busy replica) made the leases look stale: the flush then dropped the sources'
    new state, and a replica that took one of them later primed it from nothing, swallowing a release."""
    a = Shares(stores[0], "host:a")
    settle([a])
    state = FeedState(stores[0])
    state.owns, state.holds = a.owns, a.holds
    state.put("src-1", {"lastSeenId": "v2"}, flush=False)
    a.renewed_at = 0.0  # as if the last renewal were long ago
    state.flush()
    assert "src-1" not in stores[1].read_state() and state.changed == {"src-1"}  # not saved yet, not forgotten
    a.step()  # renewed
    state.flush()
    assert stores[1].read_state()["src-1"] == {"lastSeenId": "v2"} and not state.changed
