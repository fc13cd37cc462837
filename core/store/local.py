"""The embedded store: DATA_DIR's JSONL files (spec §7) with derived SQLite indexes, behind the contract.

Cursors here are byte positions (a record's start offset for `select` and `follow`; `inode:end` for scans and
marks, so a replaced file restarts its scan); callers never see them as numbers. Leases are `flock`s held by
this process on `<name>.lock` (the OS frees them when the process dies, so the ttl is not needed); the
holder's name and pid are written inside, so `lease_holder` answers without touching the lock (a reader that
took it, even shared and briefly, would make a concurrent acquire fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from patchmoi.core import shortid  # a module, not its names: shortid imports the store contract (a cycle)
from patchmoi.core.errors import ConfigError
from patchmoi.core.fsutil import FILE_MODE, atomic_write, ensure_dir
from patchmoi.core.log import log_event
from patchmoi.core.procs import pid_alive
from patchmoi.core.records import now_iso
from patchmoi.core.store import feedstate
from patchmoi.core.store.contract import FILTERS, LATEST, Change, Cursor, Kind, Record, Warming
from patchmoi.core.store.follow import follow as follow_files
from patchmoi.core.store.index import Building, IndexSpec
from patchmoi.core.store.log import Log

STATE_REBUILD_SEEN = 500  # as the poller's seen-id cap
STATE_FILE = "feed-state.json"
MARKS_FILE = ".recovery.json"


def _spec(kind: Kind, *id_fields: str) -> IndexSpec:
    fields = FILTERS[kind]
    return IndexSpec(id_fields, k1=fields[0], k2=fields[1] if len(fields) > 1 else None, latest=kind in LATEST)


# Each collection's file (the Bun service's names) and how its records are identified.
FILES: dict[Kind, tuple[str, IndexSpec]] = {
    Kind.SIGNALS: ("feed-events.jsonl", _spec(Kind.SIGNALS, "sourceId", "entryId")),
    Kind.JOBS: ("feed-jobs.jsonl", _spec(Kind.JOBS, "id")),
    Kind.EVENTS: ("flow-events.jsonl", _spec(Kind.EVENTS, "id")),
    Kind.LEGACY_DISPATCHES: ("flow-dispatches.jsonl", _spec(Kind.LEGACY_DISPATCHES, "eventId")),
    Kind.DISPATCHES: ("workspace-dispatches.jsonl", _spec(Kind.DISPATCHES, "eventId")),
    Kind.ATTEMPTS: ("maintenance-attempts.jsonl", _spec(Kind.ATTEMPTS, "id")),
    Kind.RUNS: ("workspace-runs.jsonl", _spec(Kind.RUNS, "id")),
    Kind.NOTIFICATIONS: ("notifications.jsonl", _spec(Kind.NOTIFICATIONS, "id")),
}
KIND_OF_FILE = {name: kind for kind, (name, _) in FILES.items()}
# What `warm` builds first: what the first screens and requests read.
WARM_ORDER = (
    Kind.EVENTS,
    Kind.ATTEMPTS,
    Kind.DISPATCHES,
    Kind.RUNS,
    Kind.SIGNALS,
    Kind.JOBS,
    Kind.NOTIFICATIONS,
    Kind.LEGACY_DISPATCHES,
)


def _warming(kind: Kind, building: Building) -> Warming:
    return Warming(kind, building.percent, building.done, building.total, building.phase)


def _reporter(kind: Kind, progress: Callable[[Warming], None]) -> Callable[[Building], None]:
    return lambda building: progress(_warming(kind, building))


def _offset(cursor: Cursor | None) -> int | None:
    if cursor is None:
        return None
    # a cursor is the decimal byte offset this store gave out: no sign, space, underscore or leading zero
    if not (cursor.isascii() and cursor.isdigit() and (cursor == "0" or cursor[0] != "0")):
        raise ValueError(f"not a cursor of this store: {cursor[:100]!r}")
    return int(cursor)


class JsonlStore:
    """Every reader and writer of a DATA_DIR goes through this (via `Store`)."""

    networked = False

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).absolute()  # a later chdir (a step's cwd) must not move it
        self.index_dir = self.data_dir / ".index"
        self.logs: dict[Kind, Log] = {
            kind: Log(self.data_dir / filename, self.index_dir, spec) for kind, (filename, spec) in FILES.items()
        }
        self.state_path = self.data_dir / STATE_FILE
        self.journal = feedstate.Journal(self.data_dir, self.state_path)
        self.state_problem: str | None = None  # set when a cut or invalid feed-state.json was rebuilt
        self._leases: dict[str, tuple[int, str]] = {}  # name -> (locked fd, holder)
        self._states: dict[str, dict[str, Any]] | None = None  # as last read or written by this process
        self._generation = 0  # moved by `close`: a `warm` running on another thread stops

    def ensure(self) -> None:
        ensure_dir(self.data_dir)

    # -- writes ------------------------------------------------------------------------------------------
    def append(self, kind: Kind, record: Record) -> None:
        self.logs[kind].append(record)

    def append_many(self, kind: Kind, records: Sequence[Record]) -> None:
        self.logs[kind].append_many(records)

    def append_if_absent(self, kind: Kind, record: Record, record_id: str) -> bool:
        return self.logs[kind].append_if_absent(record, record_id)

    def append_many_if_absent(self, kind: Kind, items: Sequence[tuple[Record, str]]) -> list[bool]:
        return self.logs[kind].append_many_if_absent(items) if items else []

    def append_unique(self, kind: Kind, record: Record, base_id: str) -> str:
        return self.logs[kind].append_with_unique_id(record, base_id)

    # -- reads -------------------------------------------------------------------------------------------
    def _log_for_read(self, kind: Kind) -> Log | None:
        log = self.logs[kind]
        return log if kind is not Kind.LEGACY_DISPATCHES or log.path.exists() else None

    def select(
        self,
        kind: Kind,
        *,
        filters: Mapping[str, str] | None = None,
        limit: int = 50,
        before: Cursor | None = None,
    ) -> list[tuple[Cursor, Record]]:
        log = self._log_for_read(kind)
        if log is None:
            return []
        pairs = log.list_with_offsets(limit=limit, filters=dict(filters or {}), before=_offset(before))
        return [(str(offset), record) for offset, record in pairs]

    def select_json(self, kind: Kind, *, filters: Mapping[str, str] | None = None, limit: int = 50) -> list[bytes]:
        log = self._log_for_read(kind)
        return [] if log is None else log.select_raw(limit=limit, filters=dict(filters or {}))

    def get(self, kind: Kind, record_id: str) -> Record | None:
        log = self._log_for_read(kind)
        return None if log is None else log.get(record_id)

    def existing_ids(self, kind: Kind, ids: Sequence[str]) -> set[str]:
        return self.logs[kind].existing_ids(ids)

    def ids_by_short(self, kind: Kind, prefix: str, limit: int = 10) -> list[str]:
        low, high = shortid.hash_range(prefix.lower())  # the index's `id_hash` is the short id's CRC-32
        log = self._log_for_read(kind)
        return [] if log is None else log.ids_by_hash(low, high, limit)

    def count(self, kind: Kind) -> int:
        log = self._log_for_read(kind)
        return 0 if log is None else log.total()

    def count_by(self, kind: Kind, field: str) -> dict[str, int]:
        log = self._log_for_read(kind)
        return {} if log is None else log.count_by(field)

    def _scan_start(self, kind: Kind, cursor: Cursor | None) -> int:
        """Where a scan resumes: 0 when the cursor is absent, malformed, of a replaced file or past its end."""
        if not cursor:
            return 0
        inode, _, offset = cursor.partition(":")
        try:
            st = os.stat(self.logs[kind].path)
        except FileNotFoundError:
            return 0
        if not (inode.isdigit() and offset.isdigit()) or int(inode) != st.st_ino or int(offset) > st.st_size:
            return 0
        return int(offset)

    def scan(self, kind: Kind, *, after: Cursor | None = None) -> Iterator[tuple[Cursor, Record]]:
        log = self.logs[kind]
        try:
            inode = os.stat(log.path).st_ino
        except FileNotFoundError:
            return
        for _, end, record in log.scan_records(self._scan_start(kind, after)):
            yield f"{inode}:{end}", record

    # -- live tail ---------------------------------------------------------------------------------------
    def position(self) -> Cursor:
        return json.dumps({kind.value: log.file.size() for kind, log in self.logs.items()}, separators=(",", ":"))

    async def follow(
        self,
        kinds: Sequence[Kind] | None = None,
        *,
        since: Cursor | None = None,
        from_start: bool = False,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[list[Change]]:
        chosen = list(kinds or self.logs)
        offsets: dict[Path, int] | None = None
        if from_start:
            offsets = {self.logs[kind].path: 0 for kind in chosen}
        elif since is not None:
            try:
                ends = json.loads(since)
                offsets = {self.logs[kind].path: int(ends[kind.value]) for kind in chosen if kind.value in ends}
            except (ValueError, TypeError, KeyError):
                raise ValueError(f"not a position of this store: {since!r}") from None
        async for batch in follow_files(
            [self.logs[kind].path for kind in chosen], from_offsets=offsets, stop=stop, debounce_ms=30
        ):
            yield [Change(KIND_OF_FILE[item.file], str(item.offset), item.record) for item in batch]

    # -- feed state --------------------------------------------------------------------------------------
    def feed_states(self, *, repair: bool = True) -> dict[str, dict[str, Any]]:
        """`feed-state.json` with its journal replayed (core.store.feedstate); nothing at all is `{}`. A cut or
        invalid snapshot never stops the service: with `repair` it is kept aside as
        `feed-state.json.corrupt-<time>` and the cursors are rebuilt from `feed-events.jsonl` (`stateProblem` in
        health says so); without it, ConfigError."""
        journal = self.journal.read()  # before the snapshot: a fold in between replays lines it holds (harmless)
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            feedstate.replay(data, journal)
            self._states = dict(data)
            return data
        except FileNotFoundError:
            data = {}
            feedstate.replay(data, journal)
            self._states = dict(data)
            return data
        except (ValueError, OSError) as exc:
            problem = f"{self.state_path}: unreadable ({exc})"
            if not repair:
                raise ConfigError(problem) from None
        aside = self.state_path.with_name(f"{self.state_path.name}.corrupt-{now_iso().replace(':', '')}")
        try:
            os.replace(self.state_path, aside)
            problem += f"; kept aside as {aside.name}"
        except OSError as exc:
            problem += f"; could not move it aside ({exc.strerror})"
        rebuilt = self._rebuild_state()
        feedstate.replay(rebuilt, journal)  # what was saved since the last snapshot still counts
        self._states = dict(rebuilt)
        problem += f"; cursors of {len(rebuilt)} source(s) rebuilt from {self.logs[Kind.SIGNALS].path.name}"
        try:
            self.journal.fold(rebuilt)
        except OSError as exc:
            problem += f"; not saved yet: {exc}"
        if self.journal.fold_error:
            problem += f"; not saved yet: {self.journal.fold_error}"
        self.state_problem = problem
        log_event("feed.state_rebuilt", problem=problem)
        return rebuilt

    def _rebuild_state(self) -> dict[str, dict[str, Any]]:
        """Cursors from the signals already recorded: each source's newest entry ids count as seen, so only
        entries newer than them are new. Sources with no signal are primed again on their next poll."""
        signals = self.logs[Kind.SIGNALS]
        state: dict[str, dict[str, Any]] = {}
        for source_id in signals.count_by("sourceId"):
            recent = signals.select(limit=STATE_REBUILD_SEEN, filters={"sourceId": source_id})
            seen = [str(s["entryId"]) for s in recent if isinstance(s.get("entryId"), str)]
            if seen:
                state[source_id] = {
                    "lastSeenId": seen[0],
                    "seen": seen,
                    "primed": True,
                    "rebuiltAt": now_iso(),
                    "rebuiltFrom": signals.path.name,
                }
        return state

    def save_feed_states(self, states: Mapping[str, dict[str, Any]]) -> None:
        """One journal line per changed source, one fsync (the poller, the only writer, holds the lease, so
        the other sources are this process's last read); folded into `feed-state.json` now and then."""
        current = self._states if self._states is not None else self.feed_states()
        lines = []
        for source_id, state in states.items():
            line = feedstate.delta(source_id, current.get(source_id), state)
            if line is not None:
                lines.append(line)
        self.journal.append(lines)
        for source_id, state in states.items():
            current[source_id] = dict(state)
        self._states = current
        if self.journal.due():
            self._fold(background=True)

    def flush_feed_states(self) -> None:
        """Fold the journal into `feed-state.json` (the file the Bun service reads), if this process wrote any,
        and wait for it."""
        if self._states is not None and self.journal.first_at is not None:
            self._fold(background=False)
        self.journal.wait()

    def _fold(self, *, background: bool) -> None:
        assert self._states is not None
        try:
            self.journal.fold(self._states, background=background)
        except OSError as exc:  # the journal still has it all: nothing is lost
            log_event("feed.state_fold_failed", error=str(exc))
        if self.journal.fold_error:
            log_event("feed.state_fold_failed", error=self.journal.fold_error)

    # -- marks -------------------------------------------------------------------------------------------
    def _marks(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / MARKS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def mark(self, name: str) -> Cursor | None:
        entry = self._marks().get(name)
        if not isinstance(entry, dict):
            return None
        if isinstance(entry.get("cursor"), str):
            return str(entry["cursor"])
        if isinstance(entry.get("offset"), int) and isinstance(entry.get("inode"), int):  # before cursors
            return f"{entry['inode']}:{entry['offset']}"
        return None

    def set_mark(self, name: str, cursor: Cursor) -> None:
        marks = self._marks()
        marks[name] = {"cursor": cursor, "at": now_iso()}
        atomic_write(self.data_dir / MARKS_FILE, json.dumps(marks).encode())

    # -- leases ------------------------------------------------------------------------------------------
    def _lease_path(self, name: str) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"invalid lease name {name!r}")
        return self.data_dir / f"{name}.lock"

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        if name in self._leases:
            return self._leases[name][1] == holder
        path = self._lease_path(name)
        ensure_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder}\n{os.getpid()}\n".encode())
        self._leases[name] = (fd, holder)
        return True

    def renew_lease(self, name: str, holder: str, ttl: float) -> bool:
        return name in self._leases and self._leases[name][1] == holder

    def release_lease(self, name: str, holder: str) -> None:
        if name not in self._leases or self._leases[name][1] != holder:
            return  # not this holder's: nothing to release
        fd, _ = self._leases.pop(name)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # nobody holds it now (a holder that dies leaves its name with a dead pid)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def lease_holder(self, name: str) -> str | None:
        if name in self._leases:
            return self._leases[name][1]
        try:
            text = self._lease_path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        holder, _, rest = text.partition("\n")
        pid = rest.strip()
        if not pid.isdigit():  # written before pids were recorded: the name is the pid
            pid = holder.strip()
        if not pid.isdigit() or not pid_alive(int(pid)):
            return None  # a file left by a holder that is gone
        return holder.strip() or "?"

    # -- warming -----------------------------------------------------------------------------------------
    def warm(self, kinds: Sequence[Kind] | None = None, progress: Callable[[Warming], None] | None = None) -> None:
        generation = self._generation
        for kind in kinds or WARM_ORDER:
            if self._generation != generation:
                return  # closed meanwhile
            log = self._log_for_read(kind)
            if log is None:
                continue
            report = None if progress is None else _reporter(kind, progress)
            log.open(report)

    def report_progress(self, progress: Callable[[Warming], None] | None) -> None:
        for kind, log in self.logs.items():
            log.progress = None if progress is None else _reporter(kind, progress)

    def warming(self) -> list[Warming]:
        out = []
        for kind, log in self.logs.items():
            building = log.index.building
            if building is not None:
                out.append(_warming(kind, building))
        return out

    def warm_for(self, kind: Kind) -> bool:
        return self.logs[kind].behind()

    # -- health ------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        files = {}
        for log in self.logs.values():
            if log.path.exists():
                files[log.path.name] = log.health().to_dict()
        return {
            "dataDir": str(self.data_dir),
            "degraded": self.degraded(),
            "stateProblem": self.state_problem,
            "files": files,
            "skippedLines": sum(f["skippedLines"] for f in files.values()),
            "quarantinedBytes": sum(f["quarantinedBytes"] for f in files.values()),
        }

    def degraded(self) -> list[str]:
        """Why any index runs in memory (a read-only or full DATA_DIR); empty when all is well."""
        return [log.index.degraded for log in self.logs.values() if log.index.degraded]

    def close(self) -> None:
        self._generation += 1
        self.flush_feed_states()
        for log in self.logs.values():
            log.index.stop()  # a build in another thread stops after its batch: closing waits for no more
        for name, (_, holder) in list(self._leases.items()):
            with contextlib.suppress(OSError):
                self.release_lease(name, holder)
        for log in self.logs.values():
            log.close()
