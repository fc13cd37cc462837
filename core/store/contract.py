"""The store contract: what every reader and writer of records may rely on, and nothing more.

Callers (poller, dispatcher, recovery, Discord, server, CLI, dashboard) hold a `Store` (core.store.store),
which adds the domain queries on top of one `RecordStore`. A second implementation (PostgreSQL) implements
this protocol and passes `tests/test_store_contract.py`; nothing outside `core/store/` may know about files,
byte offsets, indexes or locks (`tests/test_store_boundary.py`).

Sync, not async, decided once: every operation but `follow` is a short local call (an indexed read, an append
with one fsync) that the poller's threads, recovery, the CLI and `git`-running steps call directly; async
callers that must not stall the loop wrap a call in `asyncio.to_thread`, as they do for git. A PostgreSQL
implementation uses psycopg's synchronous pool. `follow` waits for other processes, so it is the one async
iterator.

Positions are opaque strings (`Cursor`): a caller may keep one, hand it back to the operation that gave it and
compare it for equality, never parse it. There are three kinds, not interchangeable: a `select` (or `Change`)
cursor pages `select(before=…)` in its collection; a `scan` cursor resumes `scan(after=…)` (and is what marks
keep); a `position()` resumes `follow(since=…)`. A cursor of the wrong kind restarts a scan from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

Record = dict[str, Any]
Cursor = str


class Kind(StrEnum):
    """The record collections of spec §7 (the wire names of the HTTP API's lists where they have one)."""

    SIGNALS = "signals"  # feed signals, one per upstream entry
    JOBS = "jobs"  # feed jobs (the Bun service's dispatch intent)
    EVENTS = "events"  # flow events
    DISPATCHES = "dispatches"  # workspace dispatches
    LEGACY_DISPATCHES = "legacy_dispatches"  # flow dispatches written by older versions (read only)
    ATTEMPTS = "attempts"  # maintenance attempts (latest record per id wins)
    RUNS = "runs"  # workspace runs (latest record per id wins)
    NOTIFICATIONS = "notifications"  # the Discord outbox (latest record per id wins)


# Collections where a record is updated by appending a new version with the same id: reads see the latest.
LATEST: frozenset[Kind] = frozenset({Kind.ATTEMPTS, Kind.RUNS, Kind.NOTIFICATIONS})

# The fields each collection can be filtered and counted by (spec field names).
FILTERS: Mapping[Kind, tuple[str, ...]] = {
    Kind.SIGNALS: ("sourceId", "event"),
    Kind.JOBS: ("sourceId", "kind"),
    Kind.EVENTS: ("type",),
    Kind.DISPATCHES: ("eventId", "status"),
    Kind.LEGACY_DISPATCHES: ("eventId", "status"),
    Kind.ATTEMPTS: ("eventId", "status"),
    Kind.RUNS: ("eventId", "status"),
    Kind.NOTIFICATIONS: ("kind", "status"),
}


@dataclass(frozen=True)
class Warming:
    """A derived index being built: which collection, how far (percent of its bytes), and the phase."""

    kind: Kind
    percent: int
    done: int
    total: int
    phase: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "percent": self.percent,
            "bytes": self.done,
            "of": self.total,
            "phase": self.phase,
        }


@dataclass(frozen=True)
class Change:
    """One record appended (by any process), as `follow` yields it."""

    kind: Kind
    cursor: Cursor
    record: Record


class RecordStore(Protocol):
    """Append-only collections of JSON records, per-source feed state and leases."""

    # Whether every operation may wait on the network (a database): an event loop then calls even the reads it
    # would call inline (sub-millisecond local reads) on a thread, so a slow or lost server never holds it.
    networked: bool

    # -- writes: durable when they return ---------------------------------------------------------------
    def append(self, kind: Kind, record: Record) -> None: ...

    def append_many(self, kind: Kind, records: Sequence[Record]) -> None:
        """One durable write for the batch."""
        ...

    def append_if_absent(self, kind: Kind, record: Record, record_id: str) -> bool:
        """Append unless a record with this id exists, atomically across processes; False if it did."""
        ...

    def append_many_if_absent(self, kind: Kind, items: Sequence[tuple[Record, str]]) -> list[bool]:
        """`append_if_absent` for each (record, id), with one durable write for the batch; an id that repeats
        within the batch is appended once. Which were appended, in order."""
        ...

    def append_unique(self, kind: Kind, record: Record, base_id: str) -> str:
        """Append under `base_id`, or `base_id#2`, `#3`... if taken, chosen atomically; returns the id."""
        ...

    # -- reads -------------------------------------------------------------------------------------------
    def select(
        self,
        kind: Kind,
        *,
        filters: Mapping[str, str] | None = None,
        limit: int = 50,
        before: Cursor | None = None,
    ) -> list[tuple[Cursor, Record]]:
        """Newest first (the latest version per id for `LATEST` kinds), each with its position; `before` pages."""
        ...

    def select_json(self, kind: Kind, *, filters: Mapping[str, str] | None = None, limit: int = 50) -> list[bytes]:
        """As `select`, each record as its stored JSON object text (for responses that would re-encode it)."""
        ...

    def get(self, kind: Kind, record_id: str) -> Record | None:
        """The latest record with this id."""
        ...

    def existing_ids(self, kind: Kind, ids: Sequence[str]) -> set[str]: ...

    def ids_by_short(self, kind: Kind, prefix: str, limit: int = 10) -> list[str]:
        """The distinct ids of this kind whose short id (`core.shortid.short_id`: the CRC-32 of the id, 8 hex
        digits) starts with `prefix` (4 to 8 hex digits; ValueError otherwise), newest first, at most `limit`.
        Exact: every id returned has that short id prefix, and none is left out but by `limit`."""
        ...

    def count(self, kind: Kind) -> int:
        """Records (distinct ids for `LATEST` kinds)."""
        ...

    def count_by(self, kind: Kind, field: str) -> dict[str, int]:
        """Counts per value of one of the kind's `FILTERS` fields (latest versions for `LATEST` kinds)."""
        ...

    def scan(self, kind: Kind, *, after: Cursor | None = None) -> Iterator[tuple[Cursor, Record]]:
        """Every stored version in write order, oldest first, from just after `after` (the start if None or no
        longer valid); each cursor resumes after its record. Bounded memory, for recovery and exports."""
        ...

    # -- live tail ---------------------------------------------------------------------------------------
    def position(self) -> Cursor:
        """Where every collection ends now: `follow(since=position())` yields only what comes later."""
        ...

    def follow(
        self,
        kinds: Sequence[Kind] | None = None,
        *,
        since: Cursor | None = None,
        from_start: bool = False,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[list[Change]]:
        """Batches of records appended by any process after `since` (now, if None; everything with
        `from_start`), until `stop` is set."""
        ...

    # -- per-source feed state ---------------------------------------------------------------------------
    def feed_states(self, *, repair: bool = True) -> dict[str, dict[str, Any]]:
        """Every source's poll state. Unreadable state raises ConfigError without `repair`; with it, the state
        is rebuilt from the stored signals and the problem is reported by `health()`."""
        ...

    def save_feed_states(self, states: Mapping[str, dict[str, Any]]) -> None:
        """Replace the poll state of the sources given (others are kept); durable when it returns."""
        ...

    # -- resumable marks (recovery watermarks) ------------------------------------------------------------
    def mark(self, name: str) -> Cursor | None: ...

    def set_mark(self, name: str, cursor: Cursor) -> None:
        """Raises StoreWriteError when it cannot be saved (callers go on: a scan then starts earlier)."""
        ...

    # -- leadership ----------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take the named lease for `holder` unless another live holder has it (True if `holder` has it
        already). A holder that dies loses it (at the latest after `ttl` seconds without a renewal)."""
        ...

    def renew_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Extend a lease this holder has; False if it was lost (stop acting as leader)."""
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up; a holder that does not have it changes nothing."""
        ...

    def lease_holder(self, name: str) -> str | None:
        """Who holds the lease now (None: nobody)."""
        ...

    # -- lifecycle -------------------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create what the store needs to accept writes."""
        ...

    def health(self) -> dict[str, Any]:
        """`location`, `degraded` (reasons reads run slower), `stateProblem`, and implementation details."""
        ...

    def warm(self, kinds: Sequence[Kind] | None = None, progress: Callable[[Warming], None] | None = None) -> None:
        """Bring what reads of these kinds (all if None) depend on up to date: a store with derived indexes builds
        them here, reporting progress (blocking; call it on a thread). A no-op where there is nothing to build."""
        ...

    def report_progress(self, progress: Callable[[Warming], None] | None) -> None:
        """Where builds that reads start on their own report (the CLI prints them on stderr)."""
        ...

    def warming(self) -> list[Warming]:
        """What `warm` (in any thread) is doing now; empty when reads are ready."""
        ...

    def warm_for(self, kind: Kind) -> bool:
        """Whether a read of this kind may have to build first (then an event loop should read on a thread)."""
        ...

    def close(self) -> None: ...
