"""Moving records between stores: `patchmoi db import` (a DATA_DIR's JSONL files into PostgreSQL) and
`patchmoi db export` (PostgreSQL back into the JSONL files of a DATA_DIR), one engine for both directions.

What is copied: every stored version of every kind, in write order (`scan`), in batches (`append_many`, or
`append_many_if_absent` where ids are unique), then the feed states (read once at the start: cursors older
than the records copied are safe, the poller's intake deduplicates by id). Marks are not copied: a mark holds
a scan cursor of its own store (a JSONL byte position), meaningless to the other one; a recovery watermark
that is missing or of the wrong kind restarts its scan from the start, which is safe.

Where a transfer is (resume). After each write the destination keeps a mark `<direction>:<kind>` (e.g.
`import:attempts`) with the source's scan cursor after the last record copied, the source's first cursor of
that kind (`origin`: which files, or which database, the cursor belongs to), how many versions of the kind the
destination then held (`count`) and whether the destination already held records of the kind when the copy
began (`compare`). A run reads the mark and scans the source from its cursor, so a killed transfer goes on
where it stopped and a finished one finds nothing left to copy (a source that grew since: only the new
records).

Why nothing is copied twice. A write and the mark after it are two transactions; a crash in between leaves
a written batch unmarked. Three rules close that window, using contract operations only:

- Kinds written exactly once per id (signals, jobs, events: `UNIQUE`) go through `append_many_if_absent`:
  writing a batch again appends nothing that is there.
- Kinds whose ids repeat (a flow event's dispatches; each version of an attempt, run or notification, the
  latest wins: `LATEST`) cannot: a second version *must* be appended under the same id. Here the count
  decides: a run that resumes compares the versions the destination holds now with the mark's `count`; the
  difference is the part of the next batch that landed before the crash (all of it in PostgreSQL, whose batch
  is one transaction; a prefix of complete lines in a JSONL file cut by a crash). Those records are checked
  against the source's next ones, content for content (the newest versions: `select` for plain kinds, a
  `scan` of the kind for `LATEST` ones, whose `select` shows only the latest version per id), and skipped.
  Anything else (fewer versions, more than the next records, other content) means another writer changed
  the destination: the transfer stops with `TransferConflict` rather than guess.
- When the destination already holds records of a kind the transfer has no mark for (another copy of the
  files, whose cursors do not match; a database a service already wrote), the transfer compares by content:
  it counts the destination's versions by content digest and appends only the source versions it does not
  already hold (multiset difference, so a version written twice is kept twice). A resumed comparing run
  rebuilds that multiset as "destination minus the source records before the mark", which is exactly what
  was left, whatever landed before the crash.

One transfer writes to a destination at a time: it holds the lease `db-<direction>` there while it runs (a
second one is refused). Replicas must not write to a database being imported into.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchmoi.core.errors import NotFoundError, PatchmoiError, UsageError
from patchmoi.core.store.contract import LATEST, Cursor, Kind, Record, RecordStore
from patchmoi.core.store.local import FILES, STATE_FILE, JsonlStore
from patchmoi.core.store.pgschema import ID_FIELDS

BATCH = 1000
"""Records per write (one transaction in PostgreSQL, one fsync in a JSONL file)."""
MAX_BATCH = 10_000
UNIQUE: frozenset[Kind] = frozenset({Kind.SIGNALS, Kind.JOBS, Kind.EVENTS})
"""Kinds the service writes exactly once per id (`append_if_absent`): copied with `append_many_if_absent`."""
LEASE_TTL = 60.0
RENEW_EVERY = 10.0


class TransferConflict(PatchmoiError):
    """The destination changed under a transfer (another writer), or another transfer holds it."""


@dataclass
class KindReport:
    """One kind's figures for this run: source versions read, appended, and already in the destination."""

    kind: Kind
    read: int = 0
    added: int = 0
    present: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "added": self.added, "present": self.present, "seconds": round(self.seconds, 3)}


@dataclass
class TransferReport:
    direction: str
    source: str
    destination: str
    kinds: dict[Kind, KindReport] = field(default_factory=dict)
    feed_states: int = 0
    seconds: float = 0.0

    @property
    def read(self) -> int:
        return sum(k.read for k in self.kinds.values())

    @property
    def added(self) -> int:
        return sum(k.added for k in self.kinds.values())

    @property
    def present(self) -> int:
        return sum(k.present for k in self.kinds.values())

    @property
    def rate(self) -> float:
        """Source records handled per second (copied or found already there)."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "source": self.source,
            "destination": self.destination,
            "kinds": {kind.value: report.to_dict() for kind, report in self.kinds.items()},
            "read": self.read,
            "added": self.added,
            "present": self.present,
            "feedStates": self.feed_states,
            "seconds": round(self.seconds, 3),
            "recordsPerSecond": round(self.rate),
        }


@dataclass(frozen=True)
class TransferProgress:
    """How far a transfer is: `done` of about `total` source records (every kind), and the kind it is on."""

    kind: Kind
    done: int
    total: int | None
    elapsed: float
    done_this_run: int
    phase: str  # "copying", "comparing" (reading the destination to resume or compare) or "done"

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, self.done * 100 // self.total)

    @property
    def rate(self) -> float:
        return self.done_this_run / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class _Mark:
    """A mark's value (JSON in the destination's mark `<direction>:<kind>`)."""

    cursor: Cursor | None  # the source's scan cursor after the last record copied (None: none yet)
    origin: Cursor  # the source's scan cursor of the kind's first record: which files or database
    count: int  # versions of the kind in the destination after the last write
    read: int  # source records handled up to `cursor`
    compare: bool  # the destination held records of the kind when the copy began: compare by content

    def encode(self) -> str:
        return json.dumps(
            {
                "cursor": self.cursor,
                "origin": self.origin,
                "count": self.count,
                "read": self.read,
                "compare": self.compare,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None) -> _Mark | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            mark = cls(data["cursor"], data["origin"], int(data["count"]), int(data["read"]), bool(data["compare"]))
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(mark.origin, str) or not (mark.cursor is None or isinstance(mark.cursor, str)):
            return None
        return mark


def record_id(kind: Kind, record: Mapping[str, Any]) -> str | None:
    """The record's id as both stores read it: its kind's id fields joined by ':' when all are strings."""
    parts = [record.get(name) for name in ID_FIELDS[kind]]
    strings = [p for p in parts if isinstance(p, str)]
    return ":".join(strings) if len(strings) == len(parts) else None


def _digest(record: Record) -> bytes:
    """The record's content, whatever its key order or spacing (what "the same version" means here)."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _unique_id(kind: Kind, record: Record) -> str | None:
    """The id `append_many_if_absent` writes it under; None: appended as a version (compared by count/content)."""
    return record_id(kind, record) if kind in UNIQUE else None


def location(store: RecordStore) -> str:
    """Where a store is, without secrets (a PostgreSQL store's `location` is redacted)."""
    where = getattr(store, "location", None) or getattr(store, "data_dir", None)
    return str(where) if where is not None else type(store).__name__


def _first(store: RecordStore, kind: Kind, after: Cursor | None = None) -> tuple[Cursor, Record] | None:
    scan = store.scan(kind, after=after)
    try:
        return next(scan, None)
    finally:
        close = getattr(scan, "close", None)
        if close is not None:
            close()


def estimate_versions(store: RecordStore, kind: Kind) -> int | None:
    """About how many versions `scan` yields (for percentages): a JSONL file's lines, a database's rows."""
    if isinstance(store, JsonlStore):
        path = store.logs[kind].path
        try:
            with open(path, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0
    versions = getattr(store, "versions", None)  # PostgresStore: `count` counts ids for latest kinds, not versions
    if callable(versions):
        return int(versions(kind))
    return store.count(kind) if kind not in LATEST else None


class Transfer:
    """Copy every kind's records (and the feed states) from `source` into `destination`; see the module's
    docstring. `on_write(kind, appended)` runs after each write and before its mark (tests crash there)."""

    def __init__(
        self,
        source: RecordStore,
        destination: RecordStore,
        direction: str,
        *,
        batch_size: int = BATCH,
        progress: Callable[[TransferProgress], None] | None = None,
        on_write: Callable[[Kind, int], None] | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise UsageError(f"batch size must be between 1 and {MAX_BATCH:,}, not {batch_size}")
        self.source = source
        self.dest = destination
        self.direction = direction
        self.batch_size = batch_size
        self.progress = progress
        self.on_write = on_write
        self.lease = f"db-{direction}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{direction}"
        self.report = TransferReport(direction, location(source), location(destination))
        self._started = 0.0
        self._renewed = 0.0
        self._done = 0  # source records handled, this run and before it (for the percentage)
        self._total: int | None = None

    # -- the whole transfer ------------------------------------------------------------------------------
    def run(self) -> TransferReport:
        self._started = time.monotonic()
        states = self.source.feed_states(repair=False)  # an unreadable state stops us before anything is written
        self.dest.ensure()
        if not self.dest.acquire_lease(self.lease, self.holder, LEASE_TTL):
            holder = self.dest.lease_holder(self.lease) or "another process"
            raise TransferConflict(f"another transfer ({holder}) is writing to {self.report.destination}; try later")
        self._renewed = time.monotonic()
        try:
            estimates = [estimate_versions(self.source, kind) for kind in Kind]
            self._total = None if any(e is None for e in estimates) else sum(e or 0 for e in estimates)
            for kind in Kind:
                self._copy_kind(kind)
            if states:
                self.dest.save_feed_states(states)
            self.report.feed_states = len(states)
        finally:
            self.dest.release_lease(self.lease, self.holder)
        self.report.seconds = time.monotonic() - self._started
        return self.report

    def _tell(self, kind: Kind, phase: str) -> None:
        if self.progress is not None:
            elapsed = time.monotonic() - self._started
            self.progress(TransferProgress(kind, self._done, self._total, elapsed, self.report.read, phase))

    def _keep_lease(self) -> None:
        now = time.monotonic()
        if now - self._renewed >= RENEW_EVERY:
            if not self.dest.renew_lease(self.lease, self.holder, LEASE_TTL):
                raise TransferConflict(f"lost the lease {self.lease} on {self.report.destination}: stopped")
            self._renewed = now

    def _save(self, name: str, mark: _Mark) -> None:
        self.dest.set_mark(name, mark.encode())

    # -- one kind ----------------------------------------------------------------------------------------
    def _copy_kind(self, kind: Kind) -> None:
        report = self.report.kinds.setdefault(kind, KindReport(kind))
        started = time.monotonic()
        name = f"{self.direction}:{kind.value}"
        first = _first(self.source, kind)
        if first is None:
            return  # nothing of this kind in the source
        origin = first[0]
        mark = _Mark.decode(self.dest.mark(name))
        remaining: Counter[bytes] | None = None
        if mark is not None and mark.origin == origin:
            self._done += mark.read
            if _first(self.source, kind, mark.cursor) is None:
                return  # copied already (and no write can be pending: it would have a record after the mark)
            if mark.compare:
                self._tell(kind, "comparing")
                remaining, mark.count = self._remaining(kind, mark.cursor)
            else:
                mark = self._reconcile(kind, name, mark, report)
        else:  # never copied from these files (or this database): does the destination hold some already?
            self._tell(kind, "comparing")
            remaining, count = self._held(kind)
            mark = _Mark(None, origin, count, 0, remaining is not None)
            self._save(name, mark)
        self._tell(kind, "copying")
        batch: list[tuple[Cursor, Record]] = []
        for i, (cursor, record) in enumerate(self.source.scan(kind, after=mark.cursor)):
            if i == 0 and mark.cursor is not None and cursor == origin:
                raise TransferConflict(
                    f"the position of the earlier {self.direction} of {kind.value} is no longer valid in "
                    f"{self.report.source} (a file rewritten?): nothing was copied twice, but this cannot resume"
                )
            batch.append((cursor, record))
            if len(batch) >= self.batch_size:
                mark = self._write(kind, name, mark, batch, remaining, report)
                batch = []
        if batch:
            mark = self._write(kind, name, mark, batch, remaining, report)
        report.seconds += time.monotonic() - started
        self._tell(kind, "done")

    def _write(
        self,
        kind: Kind,
        name: str,
        mark: _Mark,
        batch: Sequence[tuple[Cursor, Record]],
        remaining: Counter[bytes] | None,
        report: KindReport,
    ) -> _Mark:
        """Write a batch as runs of records of one sort (by id / as versions), each followed by its mark."""
        for by_id, run in itertools.groupby(batch, key=lambda item: _unique_id(kind, item[1]) is not None):
            step = list(run)
            if by_id:
                items = [(record, record_id(kind, record) or "") for _, record in step]
                appended = sum(self.dest.append_many_if_absent(kind, items))
            else:
                fresh = [record for _, record in step if not _take(remaining, record)]
                self.dest.append_many(kind, fresh)
                appended = len(fresh)
            if self.on_write is not None:
                self.on_write(kind, appended)
            mark = _Mark(step[-1][0], mark.origin, mark.count + appended, mark.read + len(step), mark.compare)
            self._save(name, mark)
            report.read += len(step)
            report.added += appended
            report.present += len(step) - appended
            self._done += len(step)
            self._keep_lease()
            self._tell(kind, "copying")
        return mark

    # -- resuming ----------------------------------------------------------------------------------------
    def _versions(self, kind: Kind, tail: int) -> tuple[int, list[bytes]]:
        """The destination's versions of `kind` now, and the digests of its newest `tail` (oldest first)."""
        if kind not in LATEST:
            count = self.dest.count(kind)
            newest = self.dest.select(kind, limit=tail) if tail > 0 else []
            return count, [_digest(record) for _, record in reversed(newest)]
        n, last = 0, deque[Record](maxlen=max(tail, 1))
        for _, record in self.dest.scan(kind):
            n += 1
            last.append(record)
        return n, [_digest(record) for record in list(last)[-tail:]] if tail > 0 else []

    def _reconcile(self, kind: Kind, name: str, mark: _Mark, report: KindReport) -> _Mark:
        """A resumed run: skip the part of the next batch that landed before the mark after it was written."""
        if kind in LATEST:
            self._tell(kind, "comparing")
        count, _ = self._versions(kind, 0)
        landed = count - mark.count
        if landed == 0:
            return mark
        where = f"{self.report.destination} ({kind.value})"
        if landed > MAX_BATCH:
            raise TransferConflict(
                f"{where} has {landed:,} version(s) this {self.direction} did not write since its last mark "
                "(is a service writing to it?); stop the other writer and run it again"
            )
        if landed < 0:
            raise TransferConflict(
                f"{where} holds {-landed:,} version(s) fewer than this {self.direction} wrote: records were removed"
            )
        following = list(itertools.islice(self.source.scan(kind, after=mark.cursor), landed))
        if following and _unique_id(kind, following[0][1]) is not None:
            # written with append_many_if_absent: writing it again appends nothing that landed
            return _Mark(mark.cursor, mark.origin, count, mark.read, False)
        _, newest = self._versions(kind, landed)
        if (
            len(following) < landed
            or any(_unique_id(kind, record) is not None for _, record in following)
            or [_digest(record) for _, record in following] != newest
        ):
            raise TransferConflict(
                f"{where} has {landed:,} version(s) this {self.direction} did not write since its last mark "
                "(is a service writing to it?); stop the other writer and run it again"
            )
        resumed = _Mark(following[-1][0], mark.origin, count, mark.read + landed, False)
        self._save(name, resumed)
        report.read += landed
        report.present += landed
        self._done += landed
        return resumed

    def _held(self, kind: Kind) -> tuple[Counter[bytes] | None, int]:
        """What the destination holds of `kind` that is compared by content (every version of a kind whose
        ids repeat; versions without an id of the others), by digest, and its version count; None if empty."""
        if _first(self.dest, kind) is None:
            return None, 0
        held: Counter[bytes] = Counter()
        n = 0
        for _, record in self.dest.scan(kind):
            n += 1
            if _unique_id(kind, record) is None:
                held[_digest(record)] += 1
        return held, n

    def _remaining(self, kind: Kind, cursor: Cursor | None) -> tuple[Counter[bytes], int]:
        """A resumed comparing run: what the destination holds minus the source records before the mark (what
        the run had not matched yet, whatever landed before the crash)."""
        held, n = self._held(kind)
        remaining = held if held is not None else Counter()
        if cursor is None:
            return remaining, n
        for at, record in self.source.scan(kind):
            if _unique_id(kind, record) is None:
                _take(remaining, record)
            if at == cursor:
                return remaining, n
        raise TransferConflict(f"the earlier {self.direction} position of {kind.value} is gone from the source")


def _take(remaining: Counter[bytes] | None, record: Record) -> bool:
    """Whether the destination already holds this version (then it is counted as matched)."""
    if not remaining:
        return False
    digest = _digest(record)
    if remaining.get(digest, 0) <= 0:
        return False
    remaining[digest] -= 1
    if remaining[digest] <= 0:
        del remaining[digest]
    return True


# -- the two directions ------------------------------------------------------------------------------------
def data_files(data_dir: Path) -> list[str]:
    """The patchmoi files a directory holds (record files, feed state)."""
    names = [filename for filename, _ in FILES.values()] + [STATE_FILE]
    return [name for name in names if (data_dir / name).is_file()]


def import_data_dir(
    data_dir: Path,
    destination: RecordStore,
    *,
    batch_size: int = BATCH,
    progress: Callable[[TransferProgress], None] | None = None,
    on_write: Callable[[Kind, int], None] | None = None,
) -> TransferReport:
    """Copy a DATA_DIR's records and feed states into `destination` (idempotent, resumable)."""
    if not data_dir.is_dir():
        raise NotFoundError(f"data directory {data_dir} does not exist")
    if not data_files(data_dir):
        expected = ", ".join(filename for filename, _ in list(FILES.values())[:3])
        raise UsageError(f"{data_dir} is not a patchmoi data directory: none of its files ({expected}, ...) is there")
    source = JsonlStore(data_dir)
    try:
        return Transfer(
            source, destination, "import", batch_size=batch_size, progress=progress, on_write=on_write
        ).run()
    finally:
        source.close()


def export_to_dir(
    source: RecordStore,
    out_dir: Path,
    *,
    batch_size: int = BATCH,
    progress: Callable[[TransferProgress], None] | None = None,
    on_write: Callable[[Kind, int], None] | None = None,
) -> TransferReport:
    """Write `source`'s records and feed states as the JSONL files of a DATA_DIR in `out_dir`: a new or empty
    directory, or an earlier export of the same database, which is resumed (only what is new is written)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a directory")
    destination = JsonlStore(out_dir)
    try:
        _check_export_dir(source, destination, out_dir)
        return Transfer(
            source, destination, "export", batch_size=batch_size, progress=progress, on_write=on_write
        ).run()
    finally:
        destination.close()  # writes feed-state.json (the file the Bun service reads)


def _check_export_dir(source: RecordStore, destination: JsonlStore, out_dir: Path) -> None:
    """Refuse a directory that holds anything but an earlier export of this very database."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    refuse = (
        f"{out_dir} is not empty and not an earlier export of {location(source)} to resume: "
        "export into a new or empty directory"
    )
    marks = {kind: _Mark.decode(destination.mark(f"export:{kind.value}")) for kind in Kind}
    if not any(marks.values()):
        raise UsageError(refuse)
    for kind in Kind:
        mark = marks[kind]
        first = _first(source, kind)
        if mark is None:
            if _first(destination, kind) is not None:
                raise UsageError(refuse)
        elif first is None or mark.origin != first[0]:
            raise UsageError(refuse)
