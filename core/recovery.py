"""Crash recovery that finishes (ARCHITECTURE §2): every recorded intent is carried out or visibly failed.

Three passes, run by whichever process starts next (`serve`, `poll --once`):

1. **Dispatches without an attempt** (a crash between the two appends) get their attempt.
2. **Interrupted local runs** (queued or running, owned by a process that is gone) are closed as failed, and
   every local attempt still `started` is merged with its runs, so its outcome (and notification) is recorded.
   Runs that no dispatch record refers to (a crash between the runs append and the dispatch record) are
   closed as orphans: recovery dispatches their event again.
3. **Flow events without a dispatch** are queued, whatever the backlog: the events log is scanned from a
   watermark (`DATA_DIR/.recovery.json`, derived: delete it to rescan everything) in bounded batches, and the
   watermark only moves past events that have a dispatch record, so a crash mid-way loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patchmoi.core.attempts import attempt_id_for, new_attempt
from patchmoi.core.dispatch.dispatcher import Dispatcher, owner_alive
from patchmoi.core.errors import StoreWriteError
from patchmoi.core.fsutil import atomic_write
from patchmoi.core.log import log_event
from patchmoi.core.records import TERMINAL_ATTEMPT_STATUSES, now_iso
from patchmoi.core.store import Store

BATCH = 500
WATERMARKS = ".recovery.json"


@dataclass
class RecoveryState:
    attempts_created: int = 0
    runs_closed: int = 0
    orphan_runs: int = 0
    attempts_closed: int = 0
    events_queued: int = 0
    backlog_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"attemptsCreated": self.attempts_created, "runsClosed": self.runs_closed,
                "orphanRuns": self.orphan_runs, "attemptsClosed": self.attempts_closed,
                "eventsQueued": self.events_queued, "backlogBytes": self.backlog_bytes,
                "done": self.backlog_bytes == 0, "errors": self.errors[-5:]}


def polled_event_id(event: dict[str, Any]) -> str | None:
    """The id of a flow event the poller recorded (it names its source): the ones recovery must dispatch.
    Events run by hand have no source and are dispatched by whoever ran them."""
    payload = event.get("payload")
    if isinstance(event.get("id"), str) and isinstance(payload, dict) and payload.get("sourceId"):
        return str(event["id"])
    return None


class Recovery:
    def __init__(self, store: Store, dispatcher: Dispatcher, enqueue: Callable[[dict[str, Any]], None],
                 *, notify: bool = False) -> None:
        self.store = store
        self.notify = notify
        self.dispatcher = dispatcher
        self.enqueue = enqueue
        self.path = store.data_dir / WATERMARKS
        self.marks = self._load()
        self.state = RecoveryState()

    # -- watermarks --------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mark(self, name: str, log_path: Any) -> int:
        """The watermark for a log, reset when the file was replaced or cut (it is only an optimisation)."""
        entry = self.marks.get(name) if isinstance(self.marks.get(name), dict) else {}
        assert isinstance(entry, dict)
        try:
            st = os.stat(log_path)
        except FileNotFoundError:
            return 0
        offset = entry.get("offset")
        if not isinstance(offset, int) or entry.get("inode") != st.st_ino or offset > st.st_size:
            return 0
        return offset

    def _save(self, name: str, log_path: Any, offset: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.marks[name] = {"offset": offset, "inode": os.stat(log_path).st_ino, "at": now_iso()}
        try:
            atomic_write(self.path, json.dumps(self.marks).encode())
        except StoreWriteError as exc:  # read-only or full: recovery still works, from a wider scan next time
            self.state.errors.append(str(exc))

    # -- passes ------------------------------------------------------------------------------------------
    def notifications_for_outcomes(self) -> int:
        """Re-offer every attempt outcome written since the watermark to the notification hook: a crash
        between an outcome and its outbox entry must not lose the notification (the outbox dedupes by id)."""
        hook = self.dispatcher.on_attempt
        if hook is None or not self.notify:
            return 0
        log = self.store.attempts
        start = self._mark("notifications", log.path)
        end, offered = start, 0
        for _, line_end, attempt in log.scan_records(start):
            end = line_end
            if attempt.get("status") in TERMINAL_ATTEMPT_STATUSES:
                hook(attempt)
                offered += 1
        if end != start:
            self._save("notifications", log.path, end)
        return offered

    def attempts_for_dispatches(self) -> int:
        log = self.store.dispatches
        start = self._mark("dispatches", log.path)
        created = 0
        end = start
        batch: list[tuple[str, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal created
            existing = self.store.attempts.existing_ids([aid for aid, _ in batch])
            for attempt_id, record in batch:
                if attempt_id in existing:
                    continue
                event = self.store.get_event(str(record.get("eventId")))
                if event is not None:
                    self.store.attempts.append(new_attempt(event, record, attempt_id))
                    created += 1
                    log_event("attempt.reconciled", attemptId=attempt_id)
            batch.clear()

        for _, line_end, record in log.scan_records(start):
            end = line_end
            if record.get("operation") in ("dispatch", "replay") and record.get("createdAt"):
                attempt_id = attempt_id_for(str(record.get("eventId")), str(record["operation"]),
                                            str(record["createdAt"]))
                batch.append((attempt_id, record))
                if len(batch) >= BATCH:
                    flush()
        flush()
        if end != start:
            self._save("dispatches", log.path, end)
        self.state.attempts_created += created
        return created

    def close_interrupted(self) -> int:
        """Close local runs whose process is gone and every local attempt left `started`."""
        closed_runs = 0
        for status in ("queued", "running"):
            for run in self._all_runs(status):
                if owner_alive(run):
                    continue
                orphan = not self._dispatched(run)
                error = ("orphan: the process stopped before this run's dispatch was recorded; recovery dispatches "
                         "the event again" if orphan else
                         "interrupted: the process running this step stopped; retry the event")
                self.store.runs.append({**run, "status": "failed", "effectiveStatus": "failed",
                                        "processStatus": "failed", "error": error, "completedAt": now_iso()})
                closed_runs += 1
                self.state.orphan_runs += orphan
        closed_attempts = 0
        for attempt in self._all_attempts_started():
            if attempt.get("workspaceBackendUrl"):
                continue  # a backend's attempt: `sync` asks the backend
            runs = [r for rid in attempt.get("workspaceRunIds") or [] if (r := self.store.get_run(str(rid)))]
            if any(r.get("status") in ("queued", "running") for r in runs):
                continue  # still running in a live process
            merged = self.dispatcher.merge_local_runs(attempt) if runs else None
            if merged is None or merged.get("status") == "started":
                failed = {**attempt, "status": "failed", "completedAt": now_iso(), "updatedAt": now_iso(),
                          "error": "interrupted: no run of this attempt finished; retry the event"}
                self.dispatcher.save_attempt(failed, attempt)
            closed_attempts += 1
        if closed_runs or closed_attempts:
            log_event("recovery.closed", runs=closed_runs, attempts=closed_attempts)
        self.state.runs_closed += closed_runs
        self.state.attempts_closed += closed_attempts
        return closed_runs + closed_attempts

    def _dispatched(self, run: dict[str, Any]) -> bool:
        records = self.store.list_dispatches(event_id=str(run.get("eventId")), limit=500)
        return any(run.get("id") in (r.get("runIds") or []) for r in records)

    def _all_runs(self, status: str) -> list[dict[str, Any]]:
        return self._paged(self.store.runs, {"status": status})

    def _all_attempts_started(self) -> list[dict[str, Any]]:
        return self._paged(self.store.attempts, {"status": "started"})

    @staticmethod
    def _paged(log: Any, filters: dict[str, str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            page = log.list_with_offsets(limit=BATCH, filters=filters, latest=True, before=before)
            out.extend(rec for _, rec in page)
            if len(page) < BATCH:
                return out
            before = page[-1][0]

    def queue_backlog(self, limit: int = 1000) -> int:
        """Queue up to `limit` flow events that have no dispatch record, oldest first, from the watermark."""
        log = self.store.flow_events
        start = self._mark("flowEvents", log.path)
        first_missing: int | None = None
        end = start
        queued = 0
        batch: list[tuple[int, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal first_missing, queued
            missing = self.store.undispatched([str(e["id"]) for _, e in batch])
            for offset, event in batch:
                if str(event["id"]) not in missing:
                    continue
                if first_missing is None:
                    first_missing = offset
                if queued < limit:
                    self.enqueue(event)
                    queued += 1
            batch.clear()

        for offset, line_end, event in log.scan_records(start):
            if polled_event_id(event) is not None:
                batch.append((offset, event))
            end = line_end
            if len(batch) >= BATCH:
                flush()
                if queued >= limit:
                    break
        flush()
        mark = first_missing if first_missing is not None else end
        if mark != start:
            self._save("flowEvents", log.path, mark)
        self.state.events_queued += queued
        self.state.backlog_bytes = max(0, log.file.size() - mark) if first_missing is not None else 0
        if queued:
            log_event("dispatch.reconciled", count=queued, backlogBytes=self.state.backlog_bytes)
        return queued


def recovery_report(store: Store, *, cap: int = 20000) -> dict[str, Any]:
    """What recovery still has to do, for `doctor` (a separate process: it only reads). Flow events past the
    watermark are checked for a dispatch record, at most `cap` of them (the count is then a lower bound)."""
    marks: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((store.data_dir / WATERMARKS).read_text())
        marks = loaded if isinstance(loaded, dict) else {}
    entry = marks.get("flowEvents") if isinstance(marks.get("flowEvents"), dict) else {}
    assert isinstance(entry, dict)
    start = entry.get("offset", 0) if isinstance(entry.get("offset"), int) else 0
    if start > store.flow_events.file.size():
        start = 0
    undispatched, checked, batch = 0, 0, []
    for _, _, event in store.flow_events.scan_records(start):
        if (event_id := polled_event_id(event)) is not None:
            batch.append(event_id)
        if len(batch) >= BATCH or checked + len(batch) >= cap:
            undispatched += len(store.undispatched(batch))
            checked += len(batch)
            batch = []
            if checked >= cap:
                break
    if batch:
        undispatched += len(store.undispatched(batch))
    stuck = [a for a in store.list_attempts(status="started", limit=500) if not a.get("workspaceBackendUrl")
             and not any(owner_alive(r) for rid in a.get("workspaceRunIds") or []
                         if (r := store.get_run(str(rid))))]
    return {"undispatchedEvents": undispatched, "atLeast": checked >= cap, "stuckAttempts": len(stuck),
            "stuckAttemptIds": [a.get("id") for a in stuck[:5]]}
