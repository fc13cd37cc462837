"""Spec §10 items 21-25 (flow.test.ts) and the signature vector (item 40)."""

from __future__ import annotations

import json

from patchmoi.core.attempts import aggregate, changed, merge_runs, new_attempt
from patchmoi.core.dispatch.signing import flow_signature, standard_webhook_headers, verify_standard_webhook
from patchmoi.core.records import AttemptJson

EVENT = {
    "id": "patch:src:e:upstream.release",
    "type": "upstream.release",
    "payload": {"repo": "o/r", "tag": "v1.2.3", "ref": "v1.2.3", "sha": ""},
}


def attempt(op: str = "dispatch") -> AttemptJson:
    record = {
        "operation": op,
        "status": "dispatched",
        "runIds": ["run-1"],
        "createdAt": "2026-05-13T00:00:01.000Z",
        "workspaceBackendUrl": "https://w.example",
    }
    return new_attempt(EVENT, record, f"{EVENT['id']}:{op}:2026-05-13T00:00:01.000Z")


def run(rid: str, status: str, **extra: object) -> dict[str, object]:
    return {
        "id": rid,
        "status": "completed",
        "flowName": "fork",
        "stepName": "release-cycle",
        "resultPayload": {"status": status, **extra},
        "completedAt": f"2026-05-13T00:0{rid[-1]}:00.000Z",
    }


def test_new_attempt_shape() -> None:
    a = attempt()
    assert a["status"] == "started" and a["upstreamTag"] == "v1.2.3" and "upstreamSha" not in a
    assert a["workspaceRunIds"] == ["run-1"] and a["candidateRefs"] == [] and "completedAt" not in a


def test_fanout_statuses_and_candidate_refs() -> None:
    merged = merge_runs(
        attempt(),
        [
            run("run-1", "completed", artifacts={"candidateRefs": [{"kind": "branch", "ref": "refs/heads/a"}]}),
            run("run-2", "changed", artifacts={"candidateRef": "refs/heads/b"}),
        ],
        "2026-05-13T01:00:00.000Z",
    )
    assert merged["status"] == "changed"
    assert merged["workspaceRunIds"] == ["run-1", "run-2"]
    assert merged["workspaceRunStatuses"] == {"run-1": "completed", "run-2": "changed"}
    assert [r["ref"] for r in merged["candidateRefs"]] == ["refs/heads/a", "refs/heads/b"]
    assert merged["completedAt"] == "2026-05-13T00:02:00.000Z"


def test_failure_precedence() -> None:
    cases = [
        ({"completed", "skipped"}, "completed"),
        ({"skipped"}, "skipped"),
        ({"completed", "changed"}, "changed"),
        ({"changed", "failed"}, "failed"),
        ({"failed", "blocked"}, "blocked"),
        ({"blocked", "needs_intervention"}, "needs_intervention"),
        ({"completed", "running"}, "started"),
    ]
    for statuses, expected in cases:
        assert aggregate(sorted(statuses)) == expected


def test_good_candidates_survive_a_failed_run() -> None:
    merged = merge_runs(
        attempt(),
        [
            run("run-1", "changed", artifacts={"candidateRefs": ["refs/heads/good"]}),
            run("run-2", "failed", message="tests broke"),
        ],
        "t",
    )
    assert merged["status"] == "failed" and merged["error"] == "tests broke"
    assert merged["candidateRefs"] == [{"kind": "ref", "ref": "refs/heads/good"}]


def test_thread_refs_are_collected_with_labels() -> None:
    turn = {"threadId": "th-1", "turnId": "tu-1", "threadJsonPath": "/x.json", "turnStatus": "done"}
    merged = merge_runs(attempt(), [run("run-1", "needs_intervention", artifacts={"interventionTurn": turn})], "t")
    assert merged["workspaceThreadRefs"] == [
        {
            "threadId": "th-1",
            "turnId": "tu-1",
            "threadJsonPath": "/x.json",
            "turnStatus": "done",
            "label": "interventionTurn",
            "runId": "run-1",
            "flowName": "fork",
            "stepName": "release-cycle",
        }
    ]


def test_replay_attempt_and_result_json_strings() -> None:
    a = attempt("replay")
    assert a["id"].endswith(":replay:2026-05-13T00:00:01.000Z")
    result = {
        "status": "changed",
        "message": "candidate branch ready",
        "artifacts": {
            "candidateRefs": [
                {
                    "kind": "branch",
                    "repo": "o/r",
                    "remote": "origin",
                    "ref": "refs/heads/main",
                    "sha": "abc123",
                    "pushed": True,
                    "ignored": {"x": 1},
                }
            ]
        },
    }
    merged = merge_runs(a, [{"id": "run-1", "status": "completed", "resultJson": json.dumps(result)}], "t2")
    assert merged["status"] == "changed" and merged["message"] == "candidate branch ready"
    assert merged["workspaceRunStatuses"] == {"run-1": "changed"}
    assert merged["candidateRefs"] == [
        {"kind": "branch", "repo": "o/r", "remote": "origin", "ref": "refs/heads/main", "sha": "abc123", "pushed": True}
    ]
    assert changed(a, merged) and not changed(merged, dict(merged))


def test_hmac_vector_and_standard_webhooks() -> None:
    assert (
        flow_signature("secret", b"payload")
        == "sha256=b82fcb791acec57859b989b430a826488ce2e479fdf92326bd0a2e8375a42ba4"
    )
    headers = standard_webhook_headers("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "evt-1", b"{}", 1_700_000_000)
    assert verify_standard_webhook("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", headers, b"{}", now=1_700_000_100)
    assert not verify_standard_webhook(
        "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", headers, b"{}", now=1_700_009_999
    )  # stale
    assert not verify_standard_webhook("other", headers, b"{}", now=1_700_000_100)
    assert not verify_standard_webhook("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", headers, b"{ }", now=1_700_000_100)
