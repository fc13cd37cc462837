"""`Store`: the one handle on records that callers hold (the contract plus the domain queries over it)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from patchmoi.core.attempt_states import STATES, derive_states
from patchmoi.core.errors import PatchmoiError, UsageError
from patchmoi.core.records import (
    ATTEMPT_STATUSES,
    DISPATCH_STATUSES,
    RUN_STATUSES,
    AttemptJson,
    DispatchJson,
    FlowEventJson,
    RunJson,
)
from patchmoi.core.store.contract import Change, Cursor, Kind, RecordStore, Warming
from patchmoi.core.store.local import JsonlStore

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


_JS_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Infinity", re.ASCII)
_JS_PREFIXED = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)", re.ASCII)
_JS_SPACE = (  # what String.prototype.trim removes
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_number(text: str) -> float:
    """JavaScript's `Number(text)` for a string: what the Bun service's `limit` went through. Hex, octal and
    binary literals count (`0x10` is 16, unsigned only), `_` separators and non-ASCII digits do not (NaN),
    and `""` is 0."""
    text = text.strip(_JS_SPACE)
    if not text:
        return 0.0
    if _JS_PREFIXED.fullmatch(text):
        try:
            return float(int(text[2:], {"x": 16, "o": 8, "b": 2}[text[1].lower()]))
        except OverflowError:
            return math.inf  # JavaScript's Number() gives Infinity for a literal past the largest double
    if _JS_DECIMAL.fullmatch(text):
        return float(text.replace("Infinity", "inf"))
    return math.nan


def parse_limit(value: Any, default: int = DEFAULT_LIMIT) -> int:
    """Spec §5: the value as JavaScript's `Number()` reads it; empty or non-finite → default; truncated;
    clamped to 1..500."""
    if value is None or (isinstance(value, str) and not value.strip(_JS_SPACE)):
        return default
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        number = js_number(value)
    else:
        return default
    if not math.isfinite(number):
        return default
    return max(1, min(MAX_LIMIT, int(number)))


def check_status(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise UsageError(f"invalid {what} status {value!r}; expected one of: {', '.join(allowed)}")
    return value


class Store:
    """What every caller holds: the contract's operations on one `RecordStore` (the JSONL store for a DATA_DIR
    by default) plus the domain queries built only from them (so every implementation has them)."""

    def __init__(self, where: Path | str | RecordStore, *, data_dir: Path | str | None = None) -> None:
        """`where`: a DATA_DIR (its JSONL files) or another RecordStore. `data_dir` is the local working
        directory (worktrees, candidate refs' checkouts); for the JSONL store it is the same directory."""
        if isinstance(where, Path | str):
            self.records: RecordStore = JsonlStore(where)
            data_dir = where if data_dir is None else data_dir
        else:
            self.records = where
        if data_dir is None:
            raise ValueError("a Store over another RecordStore needs data_dir (the local working directory)")
        self.data_dir = Path(data_dir).absolute()  # a later chdir (a step's cwd) must not move it

    def ensure(self) -> None:
        self.records.ensure()

    # -- the contract, for callers that need the generic form ---------------------------------------------
    # Records may come as TypedDicts (core.records): any mapping of JSON values is stored as a plain dict.
    def append(self, kind: Kind, record: Mapping[str, Any]) -> None:
        self.records.append(kind, dict(record))

    def append_many(self, kind: Kind, records: Sequence[Mapping[str, Any]]) -> None:
        self.records.append_many(kind, [dict(r) for r in records])

    def append_if_absent(self, kind: Kind, record: Mapping[str, Any], record_id: str) -> bool:
        return self.records.append_if_absent(kind, dict(record), record_id)

    def append_many_if_absent(self, kind: Kind, items: Sequence[tuple[Mapping[str, Any], str]]) -> list[bool]:
        return self.records.append_many_if_absent(kind, [(dict(r), rid) for r, rid in items])

    def append_unique(self, kind: Kind, record: Mapping[str, Any], base_id: str) -> str:
        """The id chosen (`base_id`, `#2`, ...); a dict passed in gets it too."""
        record_id = self.records.append_unique(kind, dict(record), base_id)
        if isinstance(record, dict):
            record["id"] = record_id
        return record_id

    def select(
        self, kind: Kind, *, filters: dict[str, str] | None = None, limit: Any = None, before: Cursor | None = None
    ) -> list[dict[str, Any]]:
        return [rec for _, rec in self.records.select(kind, filters=filters, limit=parse_limit(limit), before=before)]

    def page(
        self, kind: Kind, *, limit: int, before: Cursor | None = None, filters: dict[str, str] | None = None
    ) -> list[tuple[Cursor, dict[str, Any]]]:
        """Newest first, each with the cursor a next page starts `before`."""
        return self.records.select(kind, filters=filters, limit=limit, before=before)

    def every(self, kind: Kind, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Every matching record (latest versions), newest first, read in pages."""
        out: list[dict[str, Any]] = []
        before: Cursor | None = None
        while True:
            page = self.records.select(kind, filters=filters, limit=MAX_LIMIT, before=before)
            out.extend(rec for _, rec in page)
            if len(page) < MAX_LIMIT:
                return out
            before = page[-1][0]

    def get(self, kind: Kind, record_id: str) -> dict[str, Any] | None:
        return self.records.get(kind, record_id)

    def count(self, kind: Kind) -> int:
        return self.records.count(kind)

    def count_by(self, kind: Kind, field: str) -> dict[str, int]:
        return self.records.count_by(kind, field)

    def scan(self, kind: Kind, *, after: Cursor | None = None) -> Iterator[tuple[Cursor, dict[str, Any]]]:
        return self.records.scan(kind, after=after)

    def follow(
        self,
        kinds: list[Kind] | None = None,
        *,
        since: Cursor | None = None,
        from_start: bool = False,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[list[Change]]:
        return self.records.follow(kinds, since=since, from_start=from_start, stop=stop)

    def warm(self, kinds: Sequence[Kind] | None = None, progress: Callable[[Warming], None] | None = None) -> None:
        self.records.warm(kinds, progress)

    def report_progress(self, progress: Callable[[Warming], None] | None) -> None:
        self.records.report_progress(progress)

    def warming(self) -> list[Warming]:
        return self.records.warming()

    def indexing(self, *, starting: bool = False) -> dict[str, Any] | None:
        """What `/readyz` says while indexes are built (`starting`: a `warm` is under way that may not have
        reported yet): overall percent, a message, and each collection's progress. None when ready."""
        building = self.warming()
        if not starting and not building:
            return None
        done = sum(b.done for b in building)
        total = sum(b.total for b in building)
        percent = min(99, done * 100 // total) if total else 0
        shown = ", ".join(
            f"{b.kind.value} {b.percent}%" + (f" ({b.phase})" if b.phase != "reading" else "") for b in building
        )
        return {
            "percent": percent,
            "message": f"indexing {percent}%" + (f": {shown}" if shown else ""),
            "collections": [b.to_dict() for b in building],
        }

    def warm_for(self, kinds: Sequence[Kind] | None = None) -> bool:
        """Whether reading any of these kinds (all if None) may build an index first."""
        return any(self.records.warm_for(kind) for kind in (kinds or list(Kind)))

    @property
    def networked(self) -> bool:
        """Whether a read may wait on the network (the database store): an event loop reads on a thread then."""
        return self.records.networked

    async def off_loop(self, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call something that reads this store from an event loop: inline on the JSONL files (an indexed read,
        sub-millisecond), on a thread on a database (a round trip, or a 10 s wait for a connection while it is
        down, which would hold every other task of the loop)."""
        if self.networked:
            return await asyncio.to_thread(read, *args, **kwargs)
        return read(*args, **kwargs)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        return self.records.acquire_lease(name, holder, ttl)

    def renew_lease(self, name: str, holder: str, ttl: float) -> bool:
        return self.records.renew_lease(name, holder, ttl)

    def release_lease(self, name: str, holder: str) -> None:
        self.records.release_lease(name, holder)

    def lease_holder(self, name: str) -> str | None:
        return self.records.lease_holder(name)

    def position(self) -> Cursor:
        return self.records.position()

    def mark(self, name: str) -> Cursor | None:
        return self.records.mark(name)

    def set_mark(self, name: str, cursor: Cursor) -> None:
        self.records.set_mark(name, cursor)

    def existing_ids(self, kind: Kind, ids: list[str]) -> set[str]:
        return self.records.existing_ids(kind, ids)

    def ids_by_short(self, kind: Kind, prefix: str, limit: int = 10) -> list[str]:
        """Ids of this kind whose short id starts with `prefix` (4 to 8 hex digits), newest first (to resolve
        one: `core.shortid.resolve`)."""
        return self.records.ids_by_short(kind, prefix, limit)

    # -- flow events -------------------------------------------------------------------------------------
    def list_events(self, *, type: str | None = None, limit: Any = None) -> list[FlowEventJson]:
        filters = {"type": type} if type else None
        return cast(list[FlowEventJson], self.select(Kind.EVENTS, limit=limit, filters=filters))

    def list_events_raw(self, *, type: str | None = None, limit: Any = None) -> list[bytes]:
        return self.records.select_json(Kind.EVENTS, limit=parse_limit(limit), filters={"type": type} if type else None)

    def get_event(self, event_id: str) -> FlowEventJson | None:
        return cast(FlowEventJson | None, self.records.get(Kind.EVENTS, event_id))

    def record_event(self, event: dict[str, Any]) -> bool:
        """Append a flow event unless its id is already stored (intent is recorded once)."""
        return self.records.append_if_absent(Kind.EVENTS, event, str(event["id"]))

    # -- signals ---------------------------------------------------------------------------------------------
    def list_signals_raw(self, *, source_id: str | None = None, limit: Any = None) -> list[bytes]:
        filters = {"sourceId": source_id} if source_id else None
        return self.records.select_json(Kind.SIGNALS, limit=parse_limit(limit), filters=filters)

    # -- dispatches --------------------------------------------------------------------------------------
    def list_dispatches(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[DispatchJson]:
        check_status(status, DISPATCH_STATUSES, "dispatch")
        n = parse_limit(limit)
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        out = self.select(Kind.DISPATCHES, limit=n, filters=filters)
        if len(out) < n:
            out += self.select(Kind.LEGACY_DISPATCHES, limit=n - len(out), filters=filters)
        return cast(list[DispatchJson], out)

    def undispatched(self, event_ids: list[str]) -> set[str]:
        """Which of these flow events have no dispatch record (current or legacy collection)."""
        return (
            set(event_ids)
            - self.records.existing_ids(Kind.DISPATCHES, event_ids)
            - self.records.existing_ids(Kind.LEGACY_DISPATCHES, event_ids)
        )

    # -- attempts ----------------------------------------------------------------------------------------
    def list_attempts(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[AttemptJson]:
        check_status(status, ATTEMPT_STATUSES, "attempt")
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        return cast(list[AttemptJson], self.select(Kind.ATTEMPTS, limit=limit, filters=filters))

    def list_attempts_raw(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[bytes]:
        check_status(status, ATTEMPT_STATUSES, "attempt")
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        return self.records.select_json(Kind.ATTEMPTS, limit=parse_limit(limit), filters=filters)

    def get_attempt(self, attempt_id: str) -> AttemptJson | None:
        return cast(AttemptJson | None, self.records.get(Kind.ATTEMPTS, attempt_id))

    def all_attempts(self) -> list[AttemptJson]:
        """The latest record of every attempt, newest first (what derived states are computed from)."""
        limit = max(1, self.records.count(Kind.ATTEMPTS))
        return [cast(AttemptJson, rec) for _, rec in self.records.select(Kind.ATTEMPTS, limit=limit)]

    def list_attempts_in_state(
        self, state: str | None = None, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[AttemptJson]:
        """Attempts with their derived `state` field (open, ready, resolved, ...), newest first."""
        check_status(status, ATTEMPT_STATUSES, "attempt")
        if state is not None and state not in STATES:
            raise UsageError(f"invalid attempt state {state!r}; expected one of: {', '.join(STATES)}")
        everything = self.all_attempts()
        states = derive_states(everything)
        n = parse_limit(limit)
        out: list[AttemptJson] = []
        for attempt in everything:
            current = states.get(str(attempt.get("id")), "done")
            if (
                (state is None or current == state)
                and (event_id is None or attempt.get("eventId") == event_id)
                and (status is None or attempt.get("status") == status)
            ):
                out.append({**attempt, "state": current})
                if len(out) >= n:
                    break
        return out

    def count_states(self) -> dict[str, int]:
        """How many attempts are in each derived state."""
        counts: dict[str, int] = {}
        for current in derive_states(self.all_attempts()).values():
            counts[current] = counts.get(current, 0) + 1
        return counts

    # -- runs --------------------------------------------------------------------------------------------
    def list_runs(self, *, event_id: str | None = None, status: str | None = None, limit: Any = None) -> list[RunJson]:
        check_status(status, RUN_STATUSES, "run")
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        return cast(list[RunJson], self.select(Kind.RUNS, limit=limit, filters=filters))

    def get_run(self, run_id: str) -> RunJson | None:
        return cast(RunJson | None, self.records.get(Kind.RUNS, run_id))

    # -- feed state --------------------------------------------------------------------------------------
    def read_state(self, *, repair: bool = True) -> dict[str, Any]:
        """Every source's poll state (see RecordStore.feed_states: repaired, or ConfigError without `repair`)."""
        return self.records.feed_states(repair=repair)

    def read_state_safely(self) -> dict[str, Any]:
        """For status views: a corrupt state is reported, not raised (and not repaired)."""
        try:
            return self.read_state(repair=False)
        except PatchmoiError as exc:
            return {"error": str(exc)}

    def write_state(self, state: dict[str, Any]) -> None:
        self.records.save_feed_states(state)

    # -- health ------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.records.health()

    def close(self) -> None:
        self.records.close()
