"""The product's records, with the spec's exact JSON field names.

Each record round-trips through JSON and keeps fields it does not know (in `extra`), so files written by
the Bun service or by a newer patchmoi survive a rewrite by this one. `None` fields are omitted on output,
as the Bun service omitted undefined keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self, TypedDict


class DispatchStatus(StrEnum):
    """A dispatch record's `status` (spec §3)."""

    DISPATCHED = "dispatched"
    FAILED = "failed"
    SKIPPED = "skipped"


class AttemptStatus(StrEnum):
    """A maintenance attempt's `status` (spec §4): `started`, then one outcome."""

    STARTED = "started"
    COMPLETED = "completed"
    CHANGED = "changed"
    NEEDS_INTERVENTION = "needs_intervention"
    BLOCKED = "blocked"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunStatus(StrEnum):
    """A workspace run's `status`: queued, running, then a step's outcome (or unknown)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CHANGED = "changed"
    SKIPPED = "skipped"
    NEEDS_INTERVENTION = "needs_intervention"
    BLOCKED = "blocked"
    FAILED = "failed"
    UNKNOWN = "unknown"


# StrEnum members are the strings themselves: records stay plain JSON, and comparisons with stored values work.
DISPATCH_STATUSES = tuple(DispatchStatus)
ATTEMPT_STATUSES = tuple(AttemptStatus)
RUN_STATUSES = tuple(RunStatus)
RESULT_STATUSES = tuple(s for s in AttemptStatus if s is not AttemptStatus.STARTED)  # what a step reports
TERMINAL_ATTEMPT_STATUSES = frozenset(RESULT_STATUSES)
# The one set of outcomes that need a person (the open queue, exit code 1, notifications' urgency).
NEEDS_PERSON = frozenset({AttemptStatus.NEEDS_INTERVENTION, AttemptStatus.BLOCKED, AttemptStatus.FAILED})


STOPPED_PREFIXES = ("interrupted", "orphan")
"""How the error of a run that did not end by itself starts: stopped with its process (recovery, the
dispatcher's shutdown) or started for a dispatch that was never recorded (recovery)."""


def stopped_early(run: Mapping[str, Any]) -> bool:
    """A finished run that was interrupted or orphaned, not one that ended by itself."""
    return str(run.get("error") or "").startswith(STOPPED_PREFIXES)


# codex-flows' `needsAttention` of a run view: a person must act before the work can go on.
NEEDS_ATTENTION = frozenset({AttemptStatus.NEEDS_INTERVENTION, AttemptStatus.BLOCKED})
SUCCESS = frozenset({AttemptStatus.CHANGED, AttemptStatus.COMPLETED})


# -- the stored records' JSON shapes -----------------------------------------------------------------------------
# TypedDicts over the plain dicts the store reads and writes: the known fields are typed, unknown fields (from the
# Bun service or a newer patchmoi) stay in the dict, and the JSON is exactly what is stored. `total=False`: older
# records lack newer fields. Statuses are typed `str`: a stored value may be one this version does not know.


class FlowEventJson(TypedDict, total=False):
    id: str
    type: str
    source: str
    occurredAt: str
    receivedAt: str
    payload: dict[str, Any]


class DispatchJson(TypedDict, total=False):
    eventId: str
    eventType: str
    operation: str
    target: str
    transport: str
    workspaceBackendUrl: str
    workspace: str
    url: str
    webhookId: str
    status: str
    runIds: list[str]
    matched: int
    idempotent: bool
    httpStatus: int
    errorKind: str
    error: str
    reason: str
    supersededBy: str
    createdAt: str


class AttemptJson(TypedDict, total=False):
    id: str
    eventId: str
    eventType: str
    operation: str
    status: str
    state: str  # derived (core.attempt_states), added to answers, never stored
    upstreamRepo: str
    upstreamRef: str
    upstreamSha: str
    upstreamTag: str
    workspace: str
    workspaceBackendUrl: str
    workspaceRunIds: list[str]
    workspaceRunStatuses: dict[str, str]
    workspaceThreadRefs: list[dict[str, Any]]
    candidateRefs: list[dict[str, Any]]
    message: str
    error: str
    reason: str
    supersededBy: str
    adoption: dict[str, Any]
    adoptionError: str
    createdAt: str
    updatedAt: str
    completedAt: str


class RunJson(TypedDict, total=False):
    id: str
    eventId: str
    eventType: str
    flowName: str
    flowVersion: int | float | str  # a number in a codex-flows flow.toml
    stepName: str
    runner: str
    backend: str
    operation: str
    workspace: str
    pid: int
    status: str
    processStatus: str
    resultStatus: str
    effectiveStatus: str
    needsAttention: bool
    attemptCount: int
    resultPayload: dict[str, Any]
    resultJson: str
    output: list[dict[str, Any]]
    log: list[dict[str, Any]]
    error: str
    createdAt: str
    startedAt: str
    completedAt: str
    finishedAt: str


def now_iso() -> str:
    """ISO-8601 with milliseconds and Z, as JavaScript's `toISOString()` writes it."""
    return iso_from_datetime(datetime.now(UTC))


def iso_at(epoch: float) -> str:
    return iso_from_datetime(datetime.fromtimestamp(epoch, UTC))


def iso_from_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_FIELD_KEYS: dict[type, dict[str, str]] = {}


@dataclass
class Record:
    """Base: dataclass fields map to camelCase JSON keys; unknown keys live in `extra`."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    @classmethod
    def _field_keys(cls) -> dict[str, str]:
        cached = _FIELD_KEYS.get(cls)
        if cached is None:
            cached = {
                f.name: f.metadata.get("json", _camel(f.name)) for f in dataclasses.fields(cls) if f.name != "extra"
            }
            _FIELD_KEYS[cls] = cached
        return cached

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        keys = cls._field_keys()
        by_json = {json_key: attr for attr, json_key in keys.items()}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            attr = by_json.get(key)
            if attr is None:
                extra[key] = value
            else:
                kwargs[attr] = value
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name != "extra"
            and f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        for attr in missing:
            kwargs[attr] = None
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, json_key in self._field_keys().items():
            value = getattr(self, attr)
            if value is not None:
                out[json_key] = value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


@dataclass
class FeedSignal(Record):
    source_id: str
    provider: str
    event: str
    entry_id: str
    title: str
    url: str | None = None
    author: str | None = None
    published_at: str | None = None
    repo: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    sha: str | None = None
    target: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    received_at: str | None = None

    @property
    def id(self) -> str:
        return f"{self.source_id}:{self.entry_id}"


@dataclass
class FeedJob(Record):
    id: str
    kind: str
    source_id: str
    provider: str
    upstream_repo_full_name: str | None = None
    target_repo_full_name: str | None = None
    branch: str | None = None
    upstream_ref: str | None = None
    upstream_sha: str | None = None
    entry_id: str | None = None
    url: str | None = None
    created_at: str | None = None


@dataclass
class FlowEvent(Record):
    id: str
    type: str
    source: str = "patch"
    occurred_at: str | None = None
    received_at: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class DispatchRecord(Record):
    event_id: str
    event_type: str | None = None
    operation: str = "dispatch"
    target: str | None = None
    transport: str | None = None
    workspace_backend_url: str | None = None
    url: str | None = None
    status: str = "dispatched"
    run_ids: list[str] | None = None
    matched: int | None = None
    idempotent: bool | None = None
    http_status: int | None = None
    error: str | None = None
    reason: str | None = None
    created_at: str | None = None


@dataclass
class MaintenanceAttempt(Record):
    id: str
    event_id: str
    event_type: str | None = None
    operation: str = "dispatch"
    status: str = "started"
    upstream_repo: str | None = None
    upstream_ref: str | None = None
    upstream_sha: str | None = None
    upstream_tag: str | None = None
    workspace_backend_url: str | None = None
    workspace_run_ids: list[str] = field(default_factory=list)
    workspace_run_statuses: dict[str, str] = field(default_factory=dict)
    candidate_refs: list[dict[str, Any]] = field(default_factory=list)
    workspace_thread_refs: list[dict[str, Any]] | None = None
    message: str | None = None
    error: str | None = None
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None


@dataclass
class WorkspaceRun(Record):
    """One local step execution, durable in `workspace-runs.jsonl` (latest record per id wins)."""

    id: str
    event_id: str
    flow_name: str | None = None
    step_name: str | None = None
    runner: str | None = None
    backend: str | None = "local"
    process_status: str | None = None
    result_status: str | None = None
    status: str = "queued"
    effective_status: str | None = None
    needs_attention: bool | None = None
    attempt_count: int | None = None
    result_payload: dict[str, Any] | None = None
    output: list[dict[str, Any]] | None = None
    log: list[dict[str, Any]] | None = None
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
