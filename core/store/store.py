"""The store over DATA_DIR's files (spec §7): the one place records are read and written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from patchmoi.core.attempt_states import STATES, derive_states
from patchmoi.core.errors import ConfigError, PatchmoiError, StoreWriteError, UsageError
from patchmoi.core.fsutil import atomic_write, ensure_dir
from patchmoi.core.log import log_event
from patchmoi.core.records import ATTEMPT_STATUSES, DISPATCH_STATUSES, now_iso
from patchmoi.core.store.index import IndexSpec
from patchmoi.core.store.log import Log

STATE_REBUILD_SEEN = 500  # as the poller's seen-id cap
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RUN_STATUSES = (
    "queued", "running", "completed", "changed", "skipped", "needs_intervention", "blocked", "failed", "unknown",
)


def parse_limit(value: Any, default: int = DEFAULT_LIMIT) -> int:
    """Spec §5: empty or non-finite → default; truncated; clamped to 1..500."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
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


def _key(name: str) -> Any:
    def get(obj: dict[str, Any]) -> str | None:
        value = obj.get(name)
        return value if isinstance(value, str) else None

    return get


def _signal_id(obj: dict[str, Any]) -> str | None:
    sid, eid = obj.get("sourceId"), obj.get("entryId")
    return f"{sid}:{eid}" if isinstance(sid, str) and isinstance(eid, str) else None


FILES: dict[str, tuple[str, IndexSpec]] = {
    "feed_events": ("feed-events.jsonl", IndexSpec(_signal_id, k1="sourceId", k2="event")),
    "feed_jobs": ("feed-jobs.jsonl", IndexSpec(_key("id"), k1="sourceId", k2="kind")),
    "flow_events": ("flow-events.jsonl", IndexSpec(_key("id"), k1="type")),
    "legacy_dispatches": ("flow-dispatches.jsonl", IndexSpec(_key("eventId"), k1="eventId", k2="status")),
    "dispatches": ("workspace-dispatches.jsonl", IndexSpec(_key("eventId"), k1="eventId", k2="status")),
    "attempts": ("maintenance-attempts.jsonl", IndexSpec(_key("id"), k1="eventId", k2="status", latest=True)),
    "runs": ("workspace-runs.jsonl", IndexSpec(_key("id"), k1="eventId", k2="status", latest=True)),
    "outbox": ("notifications.jsonl", IndexSpec(_key("id"), k1="kind", k2="status", latest=True)),
}


class Store:
    """Every reader and writer of DATA_DIR goes through this (server, TUI, CLI, poller, runner)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).absolute()  # a later chdir (a step's cwd) must not move it
        self.index_dir = self.data_dir / ".index"
        self.logs: dict[str, Log] = {
            name: Log(self.data_dir / filename, self.index_dir, spec) for name, (filename, spec) in FILES.items()
        }
        self.feed_events = self.logs["feed_events"]
        self.feed_jobs = self.logs["feed_jobs"]
        self.flow_events = self.logs["flow_events"]
        self.dispatches = self.logs["dispatches"]
        self.legacy_dispatches = self.logs["legacy_dispatches"]
        self.attempts = self.logs["attempts"]
        self.runs = self.logs["runs"]
        self.outbox = self.logs["outbox"]
        self.state_path = self.data_dir / "feed-state.json"
        self.state_problem: str | None = None  # set when a cut or invalid feed-state.json was rebuilt

    def ensure(self) -> None:
        ensure_dir(self.data_dir)

    # -- flow events -------------------------------------------------------------------------------------
    def list_events(self, *, type: str | None = None, limit: Any = None) -> list[dict[str, Any]]:
        return self.flow_events.select(limit=parse_limit(limit), filters={"type": type} if type else None)

    def list_events_raw(self, *, type: str | None = None, limit: Any = None) -> list[bytes]:
        return self.flow_events.select_raw(limit=parse_limit(limit), filters={"type": type} if type else None)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        return self.flow_events.get(event_id)

    def record_event(self, event: dict[str, Any]) -> bool:
        """Append a flow event unless its id is already stored (intent is recorded once)."""
        return self.flow_events.append_if_absent(event, str(event["id"]))

    # -- dispatches --------------------------------------------------------------------------------------
    def list_dispatches(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[dict[str, Any]]:
        check_status(status, DISPATCH_STATUSES, "dispatch")
        n = parse_limit(limit)
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        out = self.dispatches.select(limit=n, filters=filters)
        if len(out) < n and self.legacy_dispatches.path.exists():
            out += self.legacy_dispatches.select(limit=n - len(out), filters=filters)
        return out

    def undispatched(self, event_ids: list[str]) -> set[str]:
        """Which of these flow events have no dispatch record (current or legacy file)."""
        return set(event_ids) - self.dispatches.existing_ids(event_ids) - self.legacy_dispatches.existing_ids(event_ids)

    # -- attempts ----------------------------------------------------------------------------------------
    def list_attempts(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[dict[str, Any]]:
        check_status(status, ATTEMPT_STATUSES, "attempt")
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        return self.attempts.select(limit=parse_limit(limit), filters=filters, latest=True)

    def list_attempts_raw(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[bytes]:
        check_status(status, ATTEMPT_STATUSES, "attempt")
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        return self.attempts.select_raw(limit=parse_limit(limit), filters=filters, latest=True)

    def get_attempt(self, attempt_id: str) -> dict[str, Any] | None:
        return self.attempts.get(attempt_id)

    def all_attempts(self) -> list[dict[str, Any]]:
        """The latest record of every attempt, newest first (what derived states are computed from)."""
        return self.attempts.select(limit=max(1, self.attempts.total(latest=True)), latest=True)

    def list_attempts_in_state(
        self, state: str | None = None, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[dict[str, Any]]:
        """Attempts with their derived `state` field (open, ready, resolved, ...), newest first."""
        check_status(status, ATTEMPT_STATUSES, "attempt")
        if state is not None and state not in STATES:
            raise UsageError(f"invalid attempt state {state!r}; expected one of: {', '.join(STATES)}")
        everything = self.all_attempts()
        states = derive_states(everything)
        n = parse_limit(limit)
        out = []
        for attempt in everything:
            current = states.get(str(attempt.get("id")), "done")
            if (state is None or current == state) and (event_id is None or attempt.get("eventId") == event_id) \
                    and (status is None or attempt.get("status") == status):
                out.append({**attempt, "state": current})
                if len(out) >= n:
                    break
        return out

    def count_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for current in derive_states(self.all_attempts()).values():
            counts[current] = counts.get(current, 0) + 1
        return counts

    # -- runs --------------------------------------------------------------------------------------------
    def list_runs(
        self, *, event_id: str | None = None, status: str | None = None, limit: Any = None
    ) -> list[dict[str, Any]]:
        check_status(status, RUN_STATUSES, "run")
        filters = {k: v for k, v in (("eventId", event_id), ("status", status)) if v}
        return self.runs.select(limit=parse_limit(limit), filters=filters, latest=True)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.get(run_id)

    # -- feed state --------------------------------------------------------------------------------------
    def read_state(self, *, repair: bool = True) -> dict[str, Any]:
        """`feed-state.json`; a missing file is `{}`.

        A cut or invalid file never stops the service: with `repair` (the poller) it is kept aside as
        `feed-state.json.corrupt-<time>`, the cursors are rebuilt from `feed-events.jsonl`, and
        `state_problem` says what happened (for /readyz and doctor). Without it (status views) it raises.
        """
        try:
            text = self.state_path.read_text(encoding="utf-8")
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            return data
        except FileNotFoundError:
            return {}
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
        rebuilt = self.rebuild_state()
        problem += f"; cursors of {len(rebuilt)} source(s) rebuilt from {self.feed_events.path.name}"
        try:
            self.write_state(rebuilt)
        except StoreWriteError as exc:
            problem += f"; not saved yet: {exc}"
        self.state_problem = problem
        log_event("feed.state_rebuilt", problem=problem)
        return rebuilt

    def rebuild_state(self) -> dict[str, Any]:
        """Cursors from the signals already recorded: each source's newest entry ids count as seen, so only
        entries newer than them are new. Sources with no signal are primed again on their next poll."""
        state: dict[str, Any] = {}
        for source_id in self.feed_events.count_by("sourceId"):
            signals = self.feed_events.select(limit=STATE_REBUILD_SEEN, filters={"sourceId": source_id})
            seen = [str(s["entryId"]) for s in signals if isinstance(s.get("entryId"), str)]
            if seen:
                state[source_id] = {"lastSeenId": seen[0], "seen": seen, "primed": True,
                                    "rebuiltAt": now_iso(), "rebuiltFrom": self.feed_events.path.name}
        return state

    def read_state_safely(self) -> dict[str, Any]:
        """For status views: a corrupt state file is reported, not raised (and not repaired)."""
        try:
            return self.read_state(repair=False)
        except PatchmoiError as exc:
            return {"error": str(exc)}

    def write_state(self, state: dict[str, Any]) -> None:
        """Atomic: temp file, fsync, rename (pretty JSON with a trailing newline, as the Bun service wrote)."""
        atomic_write(self.state_path, (json.dumps(state, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))

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
        for log in self.logs.values():
            log.close()
