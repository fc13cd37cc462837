"""Several replicas on one database: which sources each polls, and which one runs the shared duties.

Sources are spread over `SHARDS` shards (`shard_of`: the CRC-32 of the source id). A replica polls the sources
of the shards whose lease (`poller-shard:<n>`) it holds, so each source is polled by exactly one replica; the
shards are shared out evenly among the live replicas. Each replica holds one member slot (`member:<n>`, at most
`MEMBER_SLOTS` replicas), which is how the others count it. One replica also holds `coordinator`: it runs what
must happen once (recovery of dispatches and interrupted runs, the notification outbox).

The leases are the store's (PostgreSQL: a row plus a session advisory lock). A replica that dies loses its
connection and with it every lock, so the others see its shards free at their next `step` (every
`STEP_SECONDS`) and take them; one that hangs loses them when their TTL passes. Either way another replica
polls its sources within `TTL` seconds. Intake stays exactly-once whatever the timing (records are unique by
id in the database); leadership keeps replicas from doing the same work twice.

`step` talks to the database: call it on a thread.
"""

from __future__ import annotations

import math
import os
import socket
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from patchmoi.core.errors import PatchmoiError
from patchmoi.core.log import log_event
from patchmoi.core.store import Store

SHARDS = 32
MEMBER_SLOTS = 16
TTL = 9.0
"""A hung replica's shards are free after this; one that died frees them at once (its connection closed)."""
STEP_SECONDS = 2.0
COORDINATOR = "coordinator"


def shard_of(source_id: str, shards: int = SHARDS) -> int:
    return zlib.crc32(source_id.encode()) % shards


def replica_name() -> str:
    """`host:pid`: unique among replicas on several machines, and says where to look."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Moves:
    gained: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    surplus: set[int] = field(default_factory=set)


class Shares:
    """This replica's shards and coordinator role, kept up to date by `step`."""

    def __init__(self, store: Store, holder: str, *, shards: int = SHARDS, ttl: float = TTL) -> None:
        self.store = store
        self.holder = holder
        self.shards = shards
        self.ttl = ttl
        self.held: set[int] = set()  # the shards whose lease this replica holds
        self.leaving: set[int] = set()  # held, being handed over: no new poll, no new dispatch of theirs
        # held, just taken: nothing of theirs until the caller loaded the state their last owner saved (`arrived`)
        self.arriving: set[int] = set()
        self.coordinator = False
        self.member: int | None = None
        self.replicas = 1
        self.renewed_at = 0.0  # (monotonic) the last step that renewed every lease held

    def fresh(self) -> bool:
        """Whether the leases held are surely still this replica's: renewed within their TTL (less a second). A
        replica that was stopped (SIGSTOP, a long pause) polls nothing until its next step has renewed them."""
        return time.monotonic() - self.renewed_at < self.ttl - 1.0

    def holds(self, source_id: str) -> bool:
        """This replica holds the source's shard, whether or not its leases were renewed lately."""
        return shard_of(source_id, self.shards) in self.held

    def owns(self, source_id: str) -> bool:
        """This replica holds the source's shard: it may save its feed state and finish dispatching its events."""
        shard = shard_of(source_id, self.shards)
        return shard in self.held and shard not in self.arriving and self.fresh()

    def arrived(self, shards: set[int]) -> None:
        """The feed state of these newly taken shards' sources is loaded: poll them. (A poll that started before
        used this replica's own old view of them; a source it had never seen was primed, and the release
        published meanwhile was taken for history and never recorded.)"""
        self.arriving -= shards

    def polls(self, source_id: str) -> bool:
        """This replica polls the source (and dispatches its new events): owned, and not being handed over."""
        return self.owns(source_id) and shard_of(source_id, self.shards) not in self.leaving

    def step(self) -> Moves:
        """Renew what this replica holds, count the live replicas, take free shards up to an even share, and
        name the surplus above it (`Moves.surplus`) when another replica waits for a share: the caller saves
        their feed state and hands them over with `hand_over`."""
        moves = Moves()
        started = time.monotonic()
        self._membership()
        for n in sorted(self.held):
            if not self.store.renew_lease(shard_lease(n), self.holder, self.ttl):
                self.held.discard(n)
                self.leaving.discard(n)
                self.arriving.discard(n)
                moves.lost.add(n)
                log_event("feed.shard_lost", shard=n, holder=self.holder)
        self.renewed_at = started  # (when the renewals began: their TTL counts from no later than that)
        self._coordinate()
        holders = {n: self.store.lease_holder(shard_lease(n)) for n in range(self.shards) if n not in self.held}
        free = [n for n, h in holders.items() if h is None]
        target = math.ceil(self.shards / self.replicas)
        active = self.held - self.leaving
        if self.replicas > 1 and len(active) > target and not free:
            # a replica joined (or came back) and waits for a share
            moves.surplus = set(sorted(active, reverse=True)[: len(active) - target])
        # a replica alone, or the others have their share: take every free shard (a dead replica's included)
        room = len(free) if self._others_full(holders, target) else max(0, target - len(self.held))
        for n in free[:room]:
            if self.store.acquire_lease(shard_lease(n), self.holder, self.ttl):
                self.arriving.add(n)  # (before `held`: the event loop reads these while this thread runs)
                self.held.add(n)
                moves.gained.add(n)
        if moves.gained:
            log_event("feed.shards_taken", shards=sorted(moves.gained), replicas=self.replicas)
        return moves

    def stop_polling(self, shards: set[int]) -> None:
        """The first half of a hand-over (on the event loop): no poll or dispatch of these shards' sources starts
        from now on (`polls` says no); those under way finish, and their feed state is still saved."""
        self.leaving |= shards & self.held

    def hand_over(self, shards: set[int]) -> None:
        """The second half (on a thread), once nothing of theirs is under way: release the leases."""
        for n in shards:
            self.held.discard(n)
            self.leaving.discard(n)
            self._release(shard_lease(n))
        log_event("feed.shards_handed_over", shards=sorted(shards), replicas=self.replicas)

    def _others_full(self, holders: dict[int, str | None], target: int) -> bool:
        """Whether every other live replica already holds its share, so free shards would otherwise wait."""
        counts: dict[str, int] = {}
        for h in holders.values():
            if h is not None:
                counts[h] = counts.get(h, 0) + 1
        return len(counts) >= self.replicas - 1 and all(c >= target for c in counts.values())

    def _membership(self) -> None:
        if self.member is not None and not self.store.renew_lease(_member(self.member), self.holder, self.ttl):
            self.member = None
        live = 0
        for n in range(MEMBER_SLOTS):
            name = _member(n)
            if n == self.member:
                live += 1
                continue
            holder = self.store.lease_holder(name)
            if holder is None and self.member is None and self.store.acquire_lease(name, self.holder, self.ttl):
                self.member = n
                holder = self.holder
            live += holder is not None
        self.replicas = max(1, live)

    def _coordinate(self) -> None:
        if self.coordinator:
            self.coordinator = self.store.renew_lease(COORDINATOR, self.holder, self.ttl)
            if not self.coordinator:
                log_event("service.coordinator_lost", holder=self.holder)
        elif self.store.lease_holder(COORDINATOR) is None:
            self.coordinator = self.store.acquire_lease(COORDINATOR, self.holder, self.ttl)
            if self.coordinator:
                log_event("service.coordinator_taken", holder=self.holder)

    def release_all(self) -> None:
        """On a clean stop: hand everything over at once (the others take it at their next step)."""
        for n in list(self.held):
            self._release(shard_lease(n))
        self.held.clear()
        if self.coordinator:
            self._release(COORDINATOR)
            self.coordinator = False
        if self.member is not None:
            self._release(_member(self.member))
            self.member = None

    def _release(self, name: str) -> None:
        try:
            self.store.release_lease(name, self.holder)
        except PatchmoiError as exc:  # the database is gone: the lease lapses with its TTL (or the connection)
            log_event("service.release_failed", lease=name, error=str(exc))

    def describe(self) -> dict[str, object]:
        return {
            "holder": self.holder,
            "replicas": self.replicas,
            "shards": sorted(self.held),
            "leaving": sorted(self.leaving),
            "of": self.shards,
            "coordinator": self.coordinator,
        }


def shards_of(source_ids: Iterable[str], shards: set[int], total: int = SHARDS) -> set[str]:
    return {sid for sid in source_ids if shard_of(sid, total) in shards}


def shard_lease(n: int) -> str:
    return f"poller-shard:{n}"


def _member(n: int) -> str:
    return f"member:{n}"
