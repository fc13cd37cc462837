"""Run and event views (spec §5 RunView/EventView), the same for local runs and a proxied backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from patchmoi.core.attempts import result_payload
from patchmoi.core.records import NEEDS_ATTENTION, RESULT_STATUSES


def run_view(run: Mapping[str, Any]) -> dict[str, Any]:
    payload = result_payload(run)
    process = run.get("processStatus") or run.get("status")
    result_status = payload.get("status") if payload and payload.get("status") in RESULT_STATUSES else None
    if result_status is None and process in RESULT_STATUSES:
        result_status = process
    effective = result_status or process or "unknown"
    output = run.get("output") if isinstance(run.get("output"), list) else []
    assert isinstance(output, list)
    view = {
        "id": run.get("id"),
        "eventId": run.get("eventId"),
        "flowName": run.get("flowName"),
        "flowVersion": run.get("flowVersion"),
        "stepName": run.get("stepName"),
        "runner": run.get("runner"),
        "backend": run.get("backend"),
        "processStatus": process,
        "resultStatus": result_status,
        "status": effective,
        "effectiveStatus": effective,
        "needsAttention": effective in NEEDS_ATTENTION,
        "attemptCount": run.get("attemptCount", 1),
        "attempts": run.get("attempts", []),
        "output": output,
        "latestOutput": output[-1]["text"] if output and isinstance(output[-1], dict) else None,
        "resultPayload": payload,
        "error": run.get("error"),
        "createdAt": run.get("createdAt"),
        "startedAt": run.get("startedAt"),
        "completedAt": run.get("completedAt") or run.get("finishedAt"),
        "log": run.get("log"),
        "raw": run,
    }
    return {k: v for k, v in view.items() if v is not None}


def event_view(event: Mapping[str, Any], runs: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    runs = runs or []
    view = {
        "id": event.get("id"),
        "type": event.get("type"),
        "source": event.get("source"),
        "occurredAt": event.get("occurredAt"),
        "receivedAt": event.get("receivedAt"),
        "payload": event.get("payload"),
        "runIds": event.get("runIds") or [r.get("id") for r in runs],
        "runs": [run_view(r) for r in runs],
        "createdAt": event.get("createdAt") or event.get("receivedAt"),
        "raw": event,
    }
    return {k: v for k, v in view.items() if v is not None}
