from __future__ import annotations

from patchmoi.core.records import DispatchRecord, FlowEvent, MaintenanceAttempt, WorkspaceRun, now_iso


def test_round_trip_keeps_unknown_fields_and_exact_names() -> None:
    raw = {
        "id": "e",
        "type": "upstream.release",
        "source": "patch",
        "receivedAt": "2026-01-01T00:00:00.000Z",
        "payload": {"tag": "v1"},
        "schemaVersion": 3,
        "futureField": {"a": 1},
    }
    event = FlowEvent.from_dict(raw)
    assert event.received_at == "2026-01-01T00:00:00.000Z"
    assert event.to_dict() == raw


def test_none_fields_are_omitted() -> None:
    rec = DispatchRecord(event_id="e", event_type="t", status="failed", error="boom", created_at=now_iso())
    out = rec.to_dict()
    assert "runIds" not in out and "httpStatus" not in out and out["eventId"] == "e"
    attempt = MaintenanceAttempt.from_dict({"id": "a", "eventId": "e", "workspaceRunIds": ["r"]})
    assert attempt.to_dict()["workspaceRunIds"] == ["r"] and attempt.to_dict()["candidateRefs"] == []
    assert WorkspaceRun.from_dict({"id": "r", "eventId": "e", "x": 1}).to_dict()["x"] == 1


def test_now_iso_shape() -> None:
    value = now_iso()
    assert len(value) == 24 and value.endswith("Z") and value[19] == "."
