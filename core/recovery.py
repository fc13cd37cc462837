"""Crash recovery that finishes (ARCHITECTURE §2): every recorded intent is carried out or visibly failed.

Three passes, run by whichever process starts next (`serve`, `poll --once`):

1. **Dispatches without an attempt** (a crash between the two appends) get their attempt.
2. **Interrupted local runs** (queued or running, owned by a process that is gone) are closed as failed, and
   every local attempt still `started` is merged with its runs, so its outcome (and notification) is recorded.
   Runs that no dispatch record refers to (a crash between the runs append and the dispatch record) are
   closed as orphans: recovery dispatches their event again.
3. **Flow events without a dispatch** are queued, whatever the backlog: the events log is scanned from a
   watermark (a store mark; for the JSONL store `DATA_DIR/.recovery.json`, derived: delete it to rescan
   everything) in bounded batches, and the
   watermark only moves past events that have a dispatch record, so a crash mid-way loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patchmoi.core.attempts import attempt_id_for, new_attempt
from patchmoi.core.dispatch.dispatcher import Dispatcher, owner_alive
from patchmoi.core.errors import StoreWriteError
from patchmoi.core.log import log_event
from patchmoi.core.records import TERMINAL_ATTEMPT_STATUSES, AttemptStatus, now_iso
from patchmoi.core.store import Cursor, Kind, Store

BATCH = 500


@dataclass
class RecoveryState:
    attempts_created: int = 0
    runs_closed: int = 0
    orphan_runs: int = 0
    attempts_closed: int = 0
    events_queued: int = 0
    backlog: bool = False  # flow events past the watermark still wait for a dispatch
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attemptsCreated": self.attempts_created,
            "runsClosed": self.runs_closed,
            "orphanRuns": self.orphan_runs,
            "attemptsClosed": self.attempts_closed,
            "eventsQueued": self.events_queued,
            "backlog": self.backlog,
            "done": not self.backlog,
            "errors": self.errors[-5:],
        }


def polled_event_id(event: dict[str, Any]) -> str | None:
    """The id of a flow event the poller recorded (it names its source): the ones recovery must dispatch.
    Events run by hand have no source and are dispatched by whoever ran them."""
    payload = event.get("payload")
    if isinstance(event.get("id"), str) and isinstance(payload, dict) and payload.get("sourceId"):
        return str(event["id"])
    return None


class Recovery:
    def __init__(
        self, store: Store, dispatcher: Dispatcher, enqueue: Callable[[dict[str, Any]], None], *, notify: bool = False
    ) -> None:
        self.store = store
        self.notify = notify
        self.dispatcher = dispatcher
        self.enqueue = enqueue
        self.state = RecoveryState()
        # Several replicas (core.leadership): an event is dispatched by the replica that polls its source. The
        # others leave it to that one, and keep the watermark before it until it has a dispatch record.
        self.owns: Callable[[str], bool] | None = None
        # Event ids queued or being dispatched already (the service's): not queued again, nor counted, nor a backlog.
        self.claimed: Callable[[str], bool] = lambda _event_id: False

    # -- watermarks --------------------------------------------------------------------------------------
    def _save(self, name: str, cursor: str) -> None:
        try:
            self.store.set_mark(name, cursor)
        except StoreWriteError as exc:  # read-only or full: recovery still works, from a wider scan next time
            self.state.errors.append(str(exc))

    # -- passes ------------------------------------------------------------------------------------------
    def notifications_for_outcomes(self) -> int:
        """Re-offer every attempt outcome written since the watermark to the notification hook: a crash
        between an outcome and its outbox entry must not lose the notification (the outbox dedupes by id)."""
        hook = self.dispatcher.on_attempt
        if hook is None or not self.notify:
            return 0
        start = self.store.mark("notifications")
        end, offered = start, 0
        for cursor, attempt in self.store.scan(Kind.ATTEMPTS, after=start):
            end = cursor
            if attempt.get("status") in TERMINAL_ATTEMPT_STATUSES:
                hook(attempt)
                offered += 1
        if end is not None and end != start:
            self._save("notifications", end)
        return offered

    def attempts_for_dispatches(self) -> int:
        start = self.store.mark("dispatches")
        created = 0
        end = start
        batch: list[tuple[str, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal created
            existing = self.store.existing_ids(Kind.ATTEMPTS, [aid for aid, _ in batch])
            for attempt_id, record in batch:
                if attempt_id in existing:
                    continue
                event = self.store.get_event(str(record.get("eventId")))
                if event is not None:
                    self.store.append(Kind.ATTEMPTS, new_attempt(event, record, attempt_id))
                    created += 1
                    log_event("attempt.reconciled", attemptId=attempt_id)
            batch.clear()

        for cursor, record in self.store.scan(Kind.DISPATCHES, after=start):
            end = cursor
            if record.get("operation") in ("dispatch", "replay") and record.get("createdAt"):
                attempt_id = attempt_id_for(
                    str(record.get("eventId")), str(record["operation"]), str(record["createdAt"])
                )
                batch.append((attempt_id, record))
                if len(batch) >= BATCH:
                    flush()
        flush()
        if end is not None and end != start:
            self._save("dispatches", end)
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
                error = (
                    "orphan: the process stopped before this run's dispatch was recorded; recovery dispatches "
                    "the event again"
                    if orphan
                    else "interrupted: the process running this step stopped; retry the event"
                )
                self.store.append(
                    Kind.RUNS,
                    {
                        **run,
                        "status": "failed",
                        "effectiveStatus": "failed",
                        "processStatus": "failed",
                        "error": error,
                        "completedAt": now_iso(),
                    },
                )
                closed_runs += 1
                self.state.orphan_runs += orphan
        closed_attempts = 0
        for attempt in self._all_attempts_started():
            if attempt.get("workspaceBackendUrl"):
                continue  # a backend's attempt: `sync` asks the backend
            runs = [r for rid in attempt.get("workspaceRunIds") or [] if (r := self.store.get_run(str(rid)))]
            if not runs and not attempt.get("workspace"):
                continue  # not our local runner's (one written elsewhere, by the Bun service say): `sync` asks
            if any(r.get("status") in ("queued", "running") for r in runs):
                continue  # still running in a live process
            merged = self.dispatcher.merge_local_runs(attempt) if runs else None
            if merged is None or merged.get("status") == AttemptStatus.STARTED:
                failed = {
                    **attempt,
                    "status": "failed",
                    "completedAt": now_iso(),
                    "updatedAt": now_iso(),
                    "error": "interrupted: no run of this attempt finished; retry the event",
                }
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
        return self.store.every(Kind.RUNS, {"status": status})

    def _all_attempts_started(self) -> list[dict[str, Any]]:
        return self.store.every(Kind.ATTEMPTS, {"status": AttemptStatus.STARTED})

    def queue_backlog(self, limit: int = 1000) -> int:
        """Queue up to `limit` flow events that have no dispatch record, oldest first, from the watermark."""
        start = self.store.mark("flowEvents")
        first_missing: Cursor | None = None  # the position just before the first event still undispatched
        found_missing = False
        end = start
        queued = 0
        batch: list[tuple[Cursor | None, dict[str, Any]]] = []

        owns = self.owns
        owned_missing = False

        def flush() -> None:
            nonlocal first_missing, found_missing, queued, owned_missing
            missing = self.store.undispatched([str(e["id"]) for _, e in batch])
            for before, event in batch:
                if str(event["id"]) not in missing:
                    continue
                if not found_missing:
                    first_missing, found_missing = before, True
                if owns is not None and not owns(str(event["payload"]["sourceId"])):
                    continue  # another replica's
                if self.claimed(str(event["id"])):
                    continue  # on its way (a slow backend): it was logged as queued when it was
                owned_missing = True
                if queued < limit:
                    self.enqueue(event)
                    queued += 1
            batch.clear()

        previous = start
        for cursor, event in self.store.scan(Kind.EVENTS, after=start):
            if polled_event_id(event) is not None:
                batch.append((previous, event))
            previous = end = cursor
            if len(batch) >= BATCH:
                flush()
                if queued >= limit:
                    break
        flush()
        mark = first_missing if found_missing else end
        if mark is not None and mark != start:
            self._save("flowEvents", mark)
        self.state.backlog = owned_missing
        if queued:
            log_event("dispatch.reconciled", count=queued, backlog=self.state.backlog)
        return queued


def recovery_report(store: Store, *, cap: int = 20000) -> dict[str, Any]:
    """What recovery still has to do, for `doctor` (a separate process: it only reads). Flow events past the
    watermark are checked for a dispatch record, at most `cap` of them (the count is then a lower bound)."""
    undispatched, checked, batch = 0, 0, []
    for _, event in store.scan(Kind.EVENTS, after=store.mark("flowEvents")):
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
    stuck = [
        a
        for a in store.list_attempts(status=AttemptStatus.STARTED, limit=500)
        if not a.get("workspaceBackendUrl")
        and not any(owner_alive(r) for rid in a.get("workspaceRunIds") or [] if (r := store.get_run(str(rid))))
    ]
    return {
        "undispatchedEvents": undispatched,
        "atLeast": checked >= cap,
        "stuckAttempts": len(stuck),
        "stuckAttemptIds": [a.get("id") for a in stuck[:5]],
    }
