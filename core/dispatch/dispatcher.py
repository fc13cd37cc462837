"""Dispatch, retry, replay and sync: every write of a dispatch record, attempt or local run goes here.

One place chooses the backend for an event (the source's target, as at the original dispatch), so retry and
replay reach the same backend the poller used (the Bun service fell back to global env: spec §11.7).
Local runs execute in subprocesses; with `wait=False` (server, poller) they continue in the background and
the caller gets the dispatch record at once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from patchmoi.core.adopt import adopt, auto_adopt_reason, rebuild_report
from patchmoi.core.attempt_states import SUCCESS
from patchmoi.core.attempts import attempt_id_for, changed, merge_runs, new_attempt
from patchmoi.core.config import redact_url
from patchmoi.core.dispatch.contract import Backend
from patchmoi.core.dispatch.selection import SECRET_ENVS, URL_ENVS, select_backend
from patchmoi.core.dispatch.transports import backend_for_url, for_url, record_transport
from patchmoi.core.errors import ConfigError, NotFoundError, PatchmoiError
from patchmoi.core.gc import collect
from patchmoi.core.procs import pid_alive
from patchmoi.core.records import (
    TERMINAL_ATTEMPT_STATUSES,
    AttemptStatus,
    DispatchStatus,
    RunStatus,
    now_iso,
    stopped_early,
)
from patchmoi.core.sources import FeedSource
from patchmoi.core.store import Kind, Store
from patchmoi.core.tls import tls_context
from patchmoi.core.workspace.adopt import AdoptRefused, already_based
from patchmoi.core.workspace.forkconfig import load_fork_config
from patchmoi.core.workspace.gitrun import GitError
from patchmoi.core.workspace.runner import execute_step
from patchmoi.core.workspace.steps import Step, matching_steps

AttemptHook = Callable[[Mapping[str, Any]], None]
AUTO_ACTOR = 'patchmoi (adopt = "clean")'


class SyncUnavailable(PatchmoiError):
    """An attempt cannot be synced from anywhere (409): the message says what to configure."""

    code = "sync_unavailable"


@dataclass
class DispatchOutcome:
    event: dict[str, Any]
    record: dict[str, Any]
    attempt: dict[str, Any]
    task: asyncio.Task[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "record": self.record, "attempt": self.attempt}


HOST = socket.gethostname()
"""This machine, recorded on local runs (`owner_alive`)."""


def new_run_id() -> str:
    return f"run-{now_iso().replace(':', '').replace('-', '').replace('.', '')}-{secrets.token_hex(3)}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        env: Mapping[str, str],
        *,
        sources: Callable[[], list[FeedSource]] | None = None,
        client: httpx.AsyncClient | None = None,
        on_attempt: AttemptHook | None = None,
        workspace: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.env = env
        self.sources = sources
        self._client = client
        self._own_client = client is None
        self.on_attempt = on_attempt
        self.workspace = workspace
        self.progress = progress or (lambda _msg: None)
        self.tasks: set[asyncio.Task[dict[str, Any]]] = set()
        # Set by the service: the id of a newer waiting update of the same branch (checked again just before a
        # local rebuild starts, so a burst of pushes rebuilds once, on the newest).
        self.superseded: Callable[[dict[str, Any]], str | None] = lambda _event: None
        self._run_locks: dict[str, asyncio.Lock] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), verify=tls_context())
        return self._client

    async def aclose(self, grace: float | None = None) -> None:
        """Wait for background local runs (at most `grace` seconds), then stop what is left."""
        await self.shutdown(grace)
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def shutdown(self, grace: float | None) -> None:
        await self.drain(timeout=grace)
        left = list(self.tasks)
        for task in left:
            task.cancel()  # the step's process group is killed and the run recorded as interrupted
        if left:
            await asyncio.gather(*left, return_exceptions=True)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for background local runs (used at shutdown and by `poll --once`)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)

    # -- backend selection -------------------------------------------------------------------------------
    def source_for(self, event: dict[str, Any]) -> FeedSource | None:
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        assert isinstance(payload, dict)
        source_id = payload.get("sourceId")
        if not source_id or self.sources is None:
            return None
        try:
            sources = self.sources()
        except PatchmoiError:
            return None
        return next((s for s in sources if s.id == source_id), None)

    def backend_for(self, event: dict[str, Any]) -> Backend:
        source = self.source_for(event)
        if source is not None:
            return select_backend(source.target, self.env, self.workspace)
        # An event without a source (run by hand): the backend of its last dispatch, then the global chain.
        previous = self.store.list_dispatches(event_id=str(event.get("id")), limit=1)
        last = previous[0] if previous else {}
        used = record_transport(last)
        if used is not None and used.available and not used.runs_here and last.get("workspaceBackendUrl"):
            url = self.configured_url(str(last["workspaceBackendUrl"]))
            return Backend(used.name, url=url, secret=self._global_secret())
        if self.workspace is None and used is not None and used.runs_here and last.get("workspace"):
            return Backend(used.name, workspace=Path(str(last["workspace"])))
        return select_backend(None, self.env, self.workspace)

    # -- dispatch / retry / replay -----------------------------------------------------------------------
    async def dispatch(
        self,
        event: dict[str, Any],
        *,
        operation: str = "dispatch",
        reason: str | None = None,
        backend: Backend | None = None,
        wait: bool = True,
        automatic: bool = False,
    ) -> DispatchOutcome:
        """Dispatch (or replay) an event. `automatic` marks the poller's own dispatch of a new event: its
        delivery id (`webhook-id`) is the event id, the same if recovery sends it again after a crash, so a
        receiver drops the repeat; an operator's retry or replay is a new intended effect with a new id."""
        try:
            backend = backend or self.backend_for(event)
        except ConfigError as exc:  # a backend URL no transport serves: an operator must fix the configuration
            record = {
                "eventId": event.get("id"),
                "eventType": event.get("type"),
                "operation": operation,
                "target": "workspace-backend",
                "transport": "unknown",
                "status": DispatchStatus.FAILED,
                "errorKind": "config",
                "error": str(exc),
                "createdAt": now_iso(),
            }
            return self._finish_without_runs(event, record)
        transport = backend.handler
        self.progress(f"[flow] {operation} {event.get('id')} -> {transport.name}")
        if transport.runs_here:
            return await self._dispatch_local(event, operation, reason, backend, wait)
        base: dict[str, Any] = {
            "eventId": event.get("id"),
            "eventType": event.get("type"),
            "operation": operation,
            "target": backend.target,
            "transport": transport.name,
            "workspaceBackendUrl": redact_url(backend.base or ""),
        }
        if reason:
            base["reason"] = reason
        delivery = await transport.deliver(
            backend, event, operation, webhook_id(str(event["id"]), operation, automatic), self.client
        )
        record = {**base, **delivery.fields, "createdAt": now_iso()}
        runs = delivery.runs
        self.store.append(Kind.DISPATCHES, record)
        attempt = self._new_attempt(event, record)
        if runs:
            merged = merge_runs(attempt, runs, str(record["createdAt"]))
            if changed(attempt, merged):
                self.store.append(Kind.ATTEMPTS, merged)
            attempt = merged
        self._notify(attempt, None)
        return DispatchOutcome(event, record, attempt)

    async def retry(self, event_id: str, *, reason: str | None = None, wait: bool = True) -> DispatchOutcome:
        event = self._event(event_id)
        return await self.dispatch(event, operation="dispatch", reason=reason, wait=wait)

    async def replay(self, event_id: str, *, reason: str | None = None, wait: bool = True) -> DispatchOutcome:
        event = self._event(event_id)
        return await self.dispatch(event, operation="replay", reason=reason, wait=wait)

    def _event(self, event_id: str) -> dict[str, Any]:
        event = self.store.get_event(event_id)
        if event is None:
            raise NotFoundError(f"no flow event with id {event_id!r}")
        return dict(event)

    def _new_attempt(
        self, event: dict[str, Any], record: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A new attempt (spec id `<eventId>:<op>:<createdAt>`), appended at once: the id is made unique
        (`#2`, `#3` when timestamps collide) under the log's lock, so concurrent retries never share one."""
        base_id = attempt_id_for(str(event.get("id")), str(record.get("operation")), str(record.get("createdAt")))
        attempt = {**new_attempt(event, record, base_id), **(extra or {})}
        attempt["id"] = self.store.append_unique(Kind.ATTEMPTS, attempt, base_id)
        return attempt

    def save_attempt(self, attempt: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> None:
        """Append the attempt; a new terminal status notifies (the outbox hook)."""
        self.store.append(Kind.ATTEMPTS, attempt)
        self._notify(attempt, previous)

    def _notify(self, attempt: Mapping[str, Any], previous: Mapping[str, Any] | None) -> None:
        if (
            self.on_attempt is not None
            and attempt.get("status") in TERMINAL_ATTEMPT_STATUSES
            and (previous is None or previous.get("status") != attempt.get("status"))
        ):
            self.on_attempt(attempt)

    # -- local -------------------------------------------------------------------------------------------
    async def _dispatch_local(
        self, event: dict[str, Any], operation: str, reason: str | None, backend: Backend, wait: bool
    ) -> DispatchOutcome:
        base: dict[str, Any] = {
            "eventId": event.get("id"),
            "eventType": event.get("type"),
            "operation": operation,
            "target": backend.target,
            "transport": backend.transport,
        }
        if backend.workspace is not None:
            base["workspace"] = str(backend.workspace)  # a later retry or replay finds the same checkout
        if reason:
            base["reason"] = reason
        workspace = backend.workspace
        steps: list[Step] = []
        error = None
        if workspace is None:
            error = (
                "no workspace backend URL and no local workspace for this event: set target.workspace in "
                "feed-sources.json, pass --workspace, or set PATCH_WORKSPACE_BACKEND_URL"
            )
        elif not workspace.is_dir():
            error = f"local workspace {workspace} does not exist (check target.workspace in feed-sources.json)"
        elif (memory := backend.handler.workspace_state) is not None and (
            (known := memory.claim(workspace, str(event.get("id")), operation, self._ran)) is not None
        ):
            # ran here before (actions-local): a duplicate with the runs it had, as the original's client answered
            record = {
                **base,
                "status": DispatchStatus.DISPATCHED,
                "runIds": known,
                "matched": 0,
                "idempotent": True,
                "createdAt": now_iso(),
            }
            self.store.append(Kind.DISPATCHES, record)
            attempt = self.merge_local_runs(self._new_attempt(event, record))
            self._notify(attempt, None)
            return DispatchOutcome(event, record, attempt)
        else:
            try:
                steps = matching_steps(workspace, event)
            except ConfigError as exc:
                error = str(exc)
            if memory is not None and not steps:  # claimed, and nothing will run: let it go for a later try
                memory.remember(workspace, str(event.get("id")), [], operation)
            if error is None and not steps:
                record = {
                    **base,
                    "status": DispatchStatus.SKIPPED,
                    "matched": 0,
                    "runIds": [],
                    "createdAt": now_iso(),
                    "error": f"no step in {workspace} runs for event type {event.get('type')!r}",
                }
                return self._finish_without_runs(event, record)
        if error is not None:  # configuration: an operator must fix it, so it fails loudly
            record = {
                **base,
                "status": DispatchStatus.FAILED,
                "errorKind": "config",
                "error": error,
                "createdAt": now_iso(),
            }
            return self._finish_without_runs(event, record)
        assert workspace is not None
        created = now_iso()
        runs = [
            {
                "id": new_run_id(),
                "eventId": event.get("id"),
                "eventType": event.get("type"),
                "flowName": step.flow,
                **({"flowVersion": step.flow_version} if step.flow_version is not None else {}),
                "stepName": step.name,
                "runner": step.runner,
                "backend": backend.transport,
                "operation": operation,
                "workspace": str(workspace),
                "status": RunStatus.QUEUED,
                "effectiveStatus": RunStatus.QUEUED,
                "createdAt": created,
                "pid": os.getpid(),
                "host": HOST,  # with replicas on several machines, a pid says something only on its own host
            }
            for step in steps
        ]
        self.store.append_many(Kind.RUNS, runs)
        memory = backend.handler.workspace_state
        if memory is not None:  # remembered once the runs are: a retry after a crash finds them, not new ones
            memory.remember(workspace, str(event.get("id")), [str(r["id"]) for r in runs], operation)
        for run, step in zip(runs, steps, strict=True):
            self.progress(f"[flow] queued {step.flow}/{step.name} ({step.runner}) {run['id']}")
        record = {
            **base,
            "status": DispatchStatus.DISPATCHED,
            "runIds": [r["id"] for r in runs],
            "matched": len(runs),
            "createdAt": created,
        }
        self.store.append(Kind.DISPATCHES, record)
        attempt = self._new_attempt(event, record)
        step_env = memory.step_env(workspace) if memory is not None else {}
        coro = self._execute(event, attempt, list(zip(runs, steps, strict=True)), workspace, step_env)
        if wait:
            attempt = await coro
            return DispatchOutcome(event, record, attempt)
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return DispatchOutcome(event, record, attempt, task)

    def record_superseded(self, event: dict[str, Any], newer: str) -> DispatchOutcome:
        """Record, without running anything, that a newer update of the same branch is rebuilt instead."""
        backend = self.backend_for(event)
        record: dict[str, Any] = {
            "eventId": event.get("id"),
            "eventType": event.get("type"),
            "operation": "dispatch",
            "target": backend.target,
            "transport": backend.transport,
            "status": DispatchStatus.SKIPPED,
            "matched": 0,
            "runIds": [],
            "supersededBy": newer,
            "error": f"superseded by a newer update of the same branch: {newer}",
            "createdAt": now_iso(),
        }
        if backend.workspace is not None:
            record["workspace"] = str(backend.workspace)
        return self._finish_without_runs(event, record)

    def _finish_without_runs(self, event: dict[str, Any], record: dict[str, Any]) -> DispatchOutcome:
        self.store.append(Kind.DISPATCHES, record)
        extra = {k: v for k, v in (("message", record.get("error")), ("supersededBy", record.get("supersededBy"))) if v}
        attempt = self._new_attempt(event, record, extra)
        self._notify(attempt, None)
        return DispatchOutcome(event, record, attempt)

    async def _execute(
        self,
        event: dict[str, Any],
        attempt: dict[str, Any],
        planned: list[tuple[dict[str, Any], Step]],
        workspace: Path,
        step_env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        # One local run per workspace at a time: two rebuilds of one fork must not race on its git state.
        lock = self._run_locks.setdefault(str(workspace.resolve()), asyncio.Lock())
        finished: list[dict[str, Any]] = []
        async with lock:
            newer = self.superseded(event)
            if newer is not None:
                skipped = [
                    {
                        **r,
                        "status": RunStatus.SKIPPED,
                        "effectiveStatus": RunStatus.SKIPPED,
                        "processStatus": RunStatus.SKIPPED,
                        "error": f"superseded by {newer}",
                        "completedAt": now_iso(),
                    }
                    for r, _ in planned
                ]
                self.store.append_many(Kind.RUNS, skipped)
                merged = {
                    **merge_runs(attempt, skipped, now_iso()),
                    "supersededBy": newer,
                    "message": f"not rebuilt: a newer update of the same branch is waiting ({newer})",
                }
                self.save_attempt(merged, attempt)
                return merged
            for run, step in planned:
                running = {
                    **run,
                    "status": RunStatus.RUNNING,
                    "effectiveStatus": RunStatus.RUNNING,
                    "startedAt": now_iso(),
                    "pid": os.getpid(),
                    "host": HOST,
                }
                self.store.append(Kind.RUNS, running)
                self.progress(f"[flow] start {step.flow}/{step.name} {run['id']}")
                try:
                    done = await execute_step(
                        step,
                        running,
                        event,
                        workspace,
                        data_dir=self.store.data_dir,
                        env={**self.env, **(step_env or {})},
                    )
                except asyncio.CancelledError:
                    # Shutdown: this run and the ones still queued are recorded as interrupted, and the
                    # attempt gets its outcome now (a restart would otherwise find nothing left running).
                    stopped = [
                        {
                            **r,
                            "status": RunStatus.FAILED,
                            "effectiveStatus": RunStatus.FAILED,
                            "processStatus": RunStatus.FAILED,
                            "error": "interrupted by shutdown; retry the event",
                            "completedAt": now_iso(),
                        }
                        for r, _ in planned[len(finished) :]
                    ]
                    self.store.append_many(Kind.RUNS, stopped)
                    merged = merge_runs(attempt, finished + stopped, now_iso())
                    self.save_attempt(merged, attempt)
                    raise
                self.store.append(Kind.RUNS, done)
                self.progress(f"[flow] done {step.flow}/{step.name} {run['id']} status={done.get('status')}")
                finished.append(done)
            merged = merge_runs(attempt, finished, now_iso())
            if changed(attempt, merged):
                self.save_attempt(merged, attempt)
            self.progress(f"[flow] attempt {merged.get('status')} {merged.get('id')}")
            # Still under the fork's lock: the next rebuild of this fork starts from the adopted main.
            return await asyncio.to_thread(self._after_local, merged, workspace)

    def _after_local(self, attempt: dict[str, Any], workspace: Path) -> dict[str, Any]:
        """`adopt = "clean"` forks adopt a clean `changed` rebuild; then housekeeping prunes what is done."""
        try:
            config = load_fork_config(workspace)
        except ConfigError:
            return attempt
        if attempt.get("status") in SUCCESS and config.adopt_mode == "clean" and attempt.get("candidateRefs"):
            attempt = self._auto_adopt(attempt)
            if attempt.get("adoption"):
                return attempt  # adopt() has just pruned this fork
        try:
            collect(self.store, workspace=workspace)
        except (GitError, OSError) as exc:
            self.progress(f"[flow] housekeeping skipped: {exc}")
        return attempt

    def _auto_adopt(self, attempt: dict[str, Any]) -> dict[str, Any]:
        try:
            report = rebuild_report(self.store, attempt)
            if attempt.get("status") == AttemptStatus.COMPLETED and already_based(report):
                return attempt  # same tree, same upstream base: adopting would only rewrite history
            reason = auto_adopt_reason(report)
            if reason is None:
                adopted = adopt(self.store, str(attempt["id"]), by=AUTO_ACTOR)
                self.progress(f'[flow] adopted {attempt.get("id")} (adopt = "clean")')
                return adopted
        except (AdoptRefused, GitError) as exc:
            reason = str(exc)
        noted = {**attempt, "adoptionError": f"not adopted automatically: {reason}", "updatedAt": now_iso()}
        self.store.append(Kind.ATTEMPTS, noted)
        self.progress(f"[flow] not adopted {attempt.get('id')}: {reason}")
        return noted

    # -- sync --------------------------------------------------------------------------------------------
    async def sync(self, attempt_id: str) -> dict[str, Any]:
        attempt = self.store.get_attempt(attempt_id)
        if attempt is None:
            raise NotFoundError(f"no maintenance attempt with id {attempt_id!r}")
        run_ids = [str(r) for r in attempt.get("workspaceRunIds") or []]
        backend_url = attempt.get("workspaceBackendUrl")
        if backend_url:
            backend = backend_for_url(self.configured_url(str(backend_url)), self._global_secret())
        elif not run_ids or any(self.store.get_run(rid) is not None for rid in run_ids):
            return self.merge_local_runs(attempt)  # a local attempt: its runs are in this DATA_DIR
        else:
            # Runs this DATA_DIR never held, and no backend recorded (an attempt written by the Bun service in
            # its local mode, or imported): ask the configured backend, as the Bun service's sync did.
            backend = select_backend(None, self.env, None)
            if backend.runs_here:
                raise SyncUnavailable(
                    f"attempt {attempt_id!r} recorded no backend and its runs ({', '.join(run_ids[:3])}"
                    f"{', ...' if len(run_ids) > 3 else ''}) are not in this DATA_DIR; set "
                    "PATCH_WORKSPACE_BACKEND_URL to the backend that ran them to sync it"
                )
        runs = await backend.handler.fetch_runs(backend, run_ids, str(attempt.get("eventId")), self.client)
        return self._merge_and_save(attempt, runs)

    def _ran(self, run_ids: list[str]) -> bool:
        """Whether these runs went on or came to an end of their own: a run still going in a live process, or
        one that finished other than by being interrupted (a cancelled job, a crash) or orphaned."""
        for run_id in run_ids:
            run = self.store.get_run(run_id)
            if run is None:
                continue
            if run.get("status") in ("queued", "running"):
                if owner_alive(run) or run.get("pid") == os.getpid():
                    return True
                continue
            if not stopped_early(run):
                return True
        return False

    def configured_url(self, recorded: str) -> str:
        """The configured backend URL a record names. Records keep URLs without their credentials (userinfo, a
        query token), so a sync or retry that went to the recorded URL as written lost them (and sent
        `?<redacted>`): the configured URL whose redacted form it is, else the recorded one."""
        candidates = [self.env.get(name, "") for name in URL_ENVS]
        try:
            sources = self.sources() if self.sources is not None else []
        except PatchmoiError:
            sources = []
        for src in sources:
            target = src.target
            if target is None:
                continue
            candidates += [target.workspace_url or "", target.dispatch_url or ""]
            candidates += [
                self.env.get(name, "") for name in (target.workspace_url_env, target.dispatch_url_env) if name
            ]
        for url in (c.strip() for c in candidates):
            if not url:
                continue
            try:
                base = for_url(url).base(url)
            except ConfigError:
                continue
            if recorded in (url, redact_url(url), base, redact_url(base)):
                return url
        return recorded

    def _global_secret(self) -> str | None:
        return next((self.env[n].strip() for n in SECRET_ENVS if self.env.get(n, "").strip()), None)

    def merge_local_runs(self, attempt: Mapping[str, Any]) -> dict[str, Any]:
        """Fold the attempt's durable local runs into it (sync, and recovery after a crash)."""
        ids = [str(r) for r in attempt.get("workspaceRunIds") or []]
        return self._merge_and_save(attempt, [run for rid in ids if (run := self.store.get_run(rid)) is not None])

    def _merge_and_save(self, attempt: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        merged = merge_runs(attempt, runs, now_iso())
        if changed(attempt, merged):
            self.save_attempt(merged, attempt)
            return merged
        return dict(attempt) if not runs else merged


def owner_alive(run: Mapping[str, Any]) -> bool:
    """A run whose recorded pid is still alive belongs to another live process (a CLI `run`, say). A run of
    another machine (replicas on one database) counts as alive: only a process on that machine can tell, and
    that machine's replica closes it when it starts again."""
    host = run.get("host")
    if isinstance(host, str) and host != HOST:
        return True
    pid = run.get("pid")
    return pid != os.getpid() and pid_alive(pid)


def webhook_id(event_id: str, operation: str, automatic: bool) -> str:
    """The Standard Webhooks `webhook-id` of one intended delivery. The poller's dispatch of an event has a
    stable id (the event id itself, as before), so a re-send after a crash is recognisably the same delivery;
    each operator retry or replay gets its own. A replay id keeps the event id readable, so a receiver can
    check it against the replay path."""
    if automatic and operation == "dispatch":
        return event_id
    tag = "replay" if operation == "replay" else "retry"
    return f"{tag}:{event_id}:{now_iso()}:{secrets.token_hex(4)}"
