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
    output = _output(run)
    attempts = run.get("attempts") if isinstance(run.get("attempts"), list) else []
    assert isinstance(attempts, list)
    count = run.get("attemptCount")
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
        "attemptCount": count if isinstance(count, int) and not isinstance(count, bool) else len(attempts),
        "attempts": attempts,
        "output": [{k: v for k, v in o.items() if k != "raw"} for o in output],
        "latestOutput": output[-1] if output else None,
        "resultPayload": payload,
        "error": run.get("error"),
        "createdAt": run.get("createdAt"),
        "startedAt": run.get("startedAt"),
        "completedAt": run.get("completedAt") or run.get("finishedAt"),
        "log": run.get("log"),
        "raw": run,
    }
    return {k: v for k, v in view.items() if v is not None}


def _output(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`output[]` as codex-flows shows it: the run's own `output` items ({kind, text, createdAt?}), or else its
    `stdout` and `stderr`; each keeps what it was made from under `raw` (shown on `latestOutput` only)."""
    items = run.get("output")
    out: list[dict[str, Any]] = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                o = {"kind": str(item.get("kind") or "stdout"), "text": item["text"]}
                if item.get("createdAt"):
                    o["createdAt"] = item["createdAt"]
                out.append({**o, "raw": item})
            elif isinstance(item, str):
                out.append({"kind": "stdout", "text": item, "raw": item})
        return out
    for kind in ("stdout", "stderr"):
        text = run.get(kind)
        if isinstance(text, str) and text:
            out.append({"kind": kind, "text": text, "raw": text})
    return out


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
