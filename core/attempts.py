"""Maintenance attempts (spec §4): creation from a dispatch record, merge with runs, status precedence."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from patchmoi.core.records import NEEDS_PERSON, AttemptJson, AttemptStatus, DispatchStatus

RECORD_TO_ATTEMPT: dict[str, AttemptStatus] = {
    DispatchStatus.DISPATCHED: AttemptStatus.STARTED,
    DispatchStatus.FAILED: AttemptStatus.FAILED,
    DispatchStatus.SKIPPED: AttemptStatus.SKIPPED,
}
_COMPARED = ("status", "workspaceRunIds", "workspaceRunStatuses", "candidateRefs", "message", "error", "completedAt")


def _nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def new_attempt(event: Mapping[str, Any], record: Mapping[str, Any], attempt_id: str) -> AttemptJson:
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    created = record.get("createdAt")
    attempt: dict[str, Any] = {
        "id": attempt_id,
        "eventId": event.get("id"),
        "eventType": event.get("type"),
        "operation": record.get("operation", "dispatch"),
        "status": RECORD_TO_ATTEMPT.get(str(record.get("status")), AttemptStatus.STARTED),
        "upstreamRepo": _nonempty(payload.get("repo")),
        "upstreamRef": _nonempty(payload.get("ref")),
        "upstreamSha": _nonempty(payload.get("sha")),
        "upstreamTag": _nonempty(payload.get("tag")),
        "workspaceBackendUrl": record.get("workspaceBackendUrl"),
        "workspace": record.get("workspace"),
        "workspaceRunIds": [str(r) for r in record.get("runIds") or []],
        "workspaceRunStatuses": {},
        "candidateRefs": [],
        "error": record.get("error"),
        "reason": record.get("reason"),
        "createdAt": created,
        "updatedAt": created,
    }
    if attempt["status"] != AttemptStatus.STARTED:
        attempt["completedAt"] = created
    return cast(AttemptJson, {k: v for k, v in attempt.items() if v is not None})


def attempt_id_for(event_id: str, operation: str, created_at: str) -> str:
    return f"{event_id}:{operation}:{created_at}"


def result_payload(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """`resultPayload` (or `result`/`resultJson`, object or JSON string), else its nested `result`."""
    for key in ("resultPayload", "result", "resultJson"):
        value = run.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, dict):
            if isinstance(value.get("status"), str):
                return value
            nested = value.get("result")
            if isinstance(nested, dict) and isinstance(nested.get("status"), str):
                return nested
    return None


def run_status(run: Mapping[str, Any]) -> str:
    payload = result_payload(run)
    if payload is not None:
        return str(payload["status"])
    for key in ("effectiveStatus", "status"):
        if isinstance(run.get(key), str) and run[key]:
            return str(run[key])
    return "started"


def aggregate(statuses: Iterable[str]) -> str:
    """needs_intervention > blocked > failed > changed > all skipped > all completed/skipped > started."""
    values = list(statuses)
    for status in (
        AttemptStatus.NEEDS_INTERVENTION,
        AttemptStatus.BLOCKED,
        AttemptStatus.FAILED,
        AttemptStatus.CHANGED,
    ):
        if status in values:
            return status
    if values and all(s == AttemptStatus.SKIPPED for s in values):
        return AttemptStatus.SKIPPED
    if values and all(s in (AttemptStatus.COMPLETED, AttemptStatus.SKIPPED) for s in values):
        return AttemptStatus.COMPLETED
    return AttemptStatus.STARTED


def _candidate_refs(payload: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not payload or not isinstance(payload.get("artifacts"), dict):
        return []
    artifacts = payload["artifacts"]
    raw: list[Any] = []
    for key in ("candidateRefs", "candidates"):
        if isinstance(artifacts.get(key), list):
            raw.extend(artifacts[key])
    if artifacts.get("candidateRef") is not None:
        raw.append(artifacts["candidateRef"])
    out: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, str) and item:
            out.append({"kind": "ref", "ref": item})
        elif isinstance(item, dict) and isinstance(item.get("ref"), str) and item["ref"]:
            ref = {k: v for k, v in item.items() if isinstance(v, str | bool)}
            ref.setdefault("kind", "ref")
            out.append(ref)
    return out


def _ref_key(ref: dict[str, Any]) -> str:
    return ":".join(str(ref.get(k, "")) for k in ("kind", "repo", "remote", "ref", "sha"))


def _thread_refs(value: Any, run: Mapping[str, Any], label: str | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if isinstance(value.get("threadId"), str):
            ref = {k: value[k] for k in ("threadId", "turnId", "threadJsonPath", "turnStatus") if k in value}
            ref["label"] = value.get("label") if isinstance(value.get("label"), str) else label
            for key, src in (("runId", "id"), ("flowName", "flowName"), ("stepName", "stepName")):
                if run.get(src) is not None:
                    ref[key] = run[src]
            found.append({k: v for k, v in ref.items() if v is not None})
        for key, child in value.items():
            found.extend(_thread_refs(child, run, key))
    elif isinstance(value, list):
        for child in value:
            found.extend(_thread_refs(child, run, label))
    return found


def _thread_key(ref: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(ref.get(k) for k in ("runId", "flowName", "stepName", "label", "threadId", "turnId"))


def merge_runs(attempt: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], updated_at: str) -> dict[str, Any]:
    if not runs:
        return dict(attempt)
    merged = dict(attempt)
    statuses = [run_status(run) for run in runs]
    payloads = [result_payload(run) for run in runs]
    merged["status"] = aggregate(statuses)
    ids = list(attempt.get("workspaceRunIds") or [])
    for run in runs:
        if run.get("id") is not None and str(run["id"]) not in ids:
            ids.append(str(run["id"]))
    merged["workspaceRunIds"] = ids
    merged["workspaceRunStatuses"] = {
        str(run.get("id")): str(run.get("effectiveStatus") or status or "unknown")
        if result_payload(run) is None
        else status
        for run, status in zip(runs, statuses, strict=True)
    }
    messages = [p["message"] for p in payloads if p and isinstance(p.get("message"), str) and p["message"]]
    if messages:
        merged["message"] = messages[-1]
    errors = [run["error"] for run in runs if isinstance(run.get("error"), str) and run["error"]]
    errors += [
        p["message"]
        for p in payloads
        if p and p.get("status") in NEEDS_PERSON and isinstance(p.get("message"), str) and p["message"]
    ]
    if errors:
        merged["error"] = errors[-1]
    refs = list(attempt.get("candidateRefs") or [])
    keys = {_ref_key(r) for r in refs}
    for payload in payloads:
        for ref in _candidate_refs(payload):
            if _ref_key(ref) not in keys:
                keys.add(_ref_key(ref))
                refs.append(ref)
    merged["candidateRefs"] = refs
    threads = list(attempt.get("workspaceThreadRefs") or [])
    tkeys = {_thread_key(t) for t in threads}
    for run, payload in zip(runs, payloads, strict=True):
        if payload and isinstance(payload.get("artifacts"), dict | list):
            for ref in _thread_refs(payload["artifacts"], run):
                if _thread_key(ref) not in tkeys:
                    tkeys.add(_thread_key(ref))
                    threads.append(ref)
    if threads:
        merged["workspaceThreadRefs"] = threads
    merged["updatedAt"] = updated_at
    if merged["status"] != AttemptStatus.STARTED:
        done = [r.get("completedAt") or r.get("finishedAt") for r in runs]
        done = [d for d in done if isinstance(d, str) and d]
        if done:
            merged["completedAt"] = done[-1]
        elif not (attempt.get("completedAt") and attempt.get("status") == merged["status"]):
            merged["completedAt"] = updated_at  # else keep it: a re-sync must not look like a change
    return merged


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return any(json.dumps(before.get(k), sort_keys=True) != json.dumps(after.get(k), sort_keys=True) for k in _COMPARED)
