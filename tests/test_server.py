"""Every route and error case through Starlette's test client (spec §5, §10 items 27-31)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from patchmoi.core.config import Settings
from patchmoi.core.store import Kind, Store
from patchmoi.server.app import create_app

from .loopback import FakeBackend, LoopbackServer

EID = "patch:github-openai-codex-releases:tag:github.com,2008:Repository/965415649/rust-v0.131.0:upstream.release"
TOKEN = "t0ken-for-tests"


@pytest.fixture
def backend_server() -> Iterator[LoopbackServer]:
    s = LoopbackServer().start()
    yield s
    s.stop()


def seed(data_dir: Path) -> None:
    store = Store(data_dir)
    store.record_event(
        {
            "id": EID,
            "type": "upstream.release",
            "source": "patch",
            "receivedAt": "2026-05-13T00:00:00.000Z",
            "payload": {"repo": "openai/codex", "tag": "v1"},
        }
    )
    store.append(
        Kind.DISPATCHES,
        {
            "eventId": EID,
            "eventType": "upstream.release",
            "operation": "dispatch",
            "status": "failed",
            "error": "down",
            "createdAt": "2026-05-13T00:00:01.000Z",
        },
    )


def client_for(data_dir: Path, **env: str) -> TestClient:
    settings = Settings.from_env({"DATA_DIR": str(data_dir), "PATCH_ADMIN_TOKEN": TOKEN, **env})
    return TestClient(create_app(settings, poll=False))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_healthz_and_unknown_paths(data_dir: Path) -> None:
    with client_for(data_dir) as c:
        r = c.get("/healthz")
        assert r.status_code == 200 and r.text == "ok\n" and r.headers["content-type"].startswith("text/plain")
        for path in ("/github", "/jojo", "/prefix/github", "/prefix/jojo"):
            r = c.post(path)
            assert r.status_code == 404 and r.json() == {"error": "not_found"}


def test_auth_is_required_and_constant_time(data_dir: Path) -> None:
    seed(data_dir)
    with client_for(data_dir) as c:
        assert c.get("/flow-events").status_code == 401
        assert c.get("/flow-events").json() == {"error": "unauthorized"}
        assert c.get("/flow-events", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/flow-events", headers={"authorization": f"BEARER {TOKEN}"}).status_code == 200
        assert c.get("/flow-events", headers={"x-patch-admin-token": TOKEN}).status_code == 200
        # auth comes before method checks and 404 lookups
        assert c.delete(f"/flow-events/{quote(EID, safe='')}").status_code == 401
        assert c.get("/maintenance-attempts/nope").status_code == 401


def test_lists_gets_filters_and_errors(data_dir: Path) -> None:
    seed(data_dir)
    with client_for(data_dir) as c:
        events = c.get("/flow-events", headers=AUTH).json()["events"]
        assert [e["id"] for e in events] == [EID]
        assert c.get("/flow-events?type=other", headers=AUTH).json() == {"events": []}
        r = c.get(f"/flow-events/{quote(EID, safe='')}", headers=AUTH)
        assert r.status_code == 200 and r.json()["event"]["id"] == EID and len(r.json()["dispatches"]) == 1
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert c.get("/flow-events/nope", headers=AUTH).json() == {"error": "flow_event_not_found"}
        assert c.delete(f"/flow-events/{quote(EID, safe='')}", headers=AUTH).status_code == 405
        assert c.get(f"/flow-events/{quote(EID, safe='')}/retry", headers=AUTH).status_code == 405
        assert c.post("/flow-events", headers=AUTH).status_code == 404
        assert c.get(f"/flow-events/{quote(EID, safe='')}/bogus", headers=AUTH).status_code == 404
        failed = c.get("/workspace-dispatches?status=failed", headers={"x-patch-admin-token": TOKEN}).json()
        assert failed["dispatches"][0]["error"] == "down"
        assert c.get("/flow-dispatches?status=failed", headers=AUTH).json() == failed
        bad = c.get("/workspace-dispatches?status=weird", headers=AUTH)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
        assert c.get("/maintenance-attempts?status=nope", headers=AUTH).status_code == 400
        assert c.post("/workspace-dispatches", headers=AUTH).status_code == 405
        assert c.get("/maintenance-attempts/unknown", headers=AUTH).json() == {"error": "maintenance_attempt_not_found"}
        assert c.post("/maintenance-attempts", headers=AUTH).status_code == 404  # as the Bun service (#15)
        assert c.get("/maintenance-attempts?limit=abc", headers=AUTH).status_code == 200


def test_corrupt_store_line_is_not_a_500(data_dir: Path) -> None:
    seed(data_dir)
    with open(data_dir / "flow-events.jsonl", "ab") as fh:
        fh.write(b"{{{{ corrupt\n")
    with open(data_dir / "maintenance-attempts.jsonl", "ab") as fh:
        fh.write(b"\x00\xff garbage")
    with client_for(data_dir) as c:
        assert c.get("/flow-events", headers=AUTH).status_code == 200
        assert c.get("/maintenance-attempts", headers=AUTH).json() == {"attempts": []}
        ready = c.get("/readyz", headers=AUTH).json()
        assert ready["store"]["skippedLines"] == 1 and ready["store"]["quarantinedBytes"] > 0
        assert ready["config"]["adminToken"] == "set" and TOKEN not in json.dumps(ready)


def test_retry_replay_and_sync_through_a_backend(data_dir: Path, backend_server: LoopbackServer) -> None:
    seed(data_dir)
    backend = FakeBackend(backend_server, secret="sec")
    with client_for(
        data_dir, PATCH_WORKSPACE_BACKEND_URL=f"{backend.url}/events", PATCH_WORKSPACE_BACKEND_SECRET="sec"
    ) as c:
        r = c.post(f"/flow-events/{quote(EID, safe='')}/retry", headers=AUTH, json={"reason": "was down"})
        assert r.status_code == 202, r.text
        assert r.json()["record"]["reason"] == "was down" and r.json()["event"]["id"] == EID
        r = c.post(f"/flow-events/{quote(EID, safe='')}/replay", headers=AUTH)
        assert r.status_code == 202
        replay_req = next(x for x in backend_server.requests if x.path.endswith("/replay"))
        assert replay_req.path == f"/events/{quote(EID, safe='')}/replay" and replay_req.body == b'{"wait":false}'
        attempts = c.get(f"/maintenance-attempts?eventId={quote(EID, safe='')}", headers=AUTH).json()["attempts"]
        assert [(a["operation"], a["status"]) for a in attempts] == [("replay", "started"), ("dispatch", "started")]
        backend.runs["run-1"].update(
            {
                "status": "completed",
                "resultJson": json.dumps(
                    {
                        "status": "changed",
                        "message": "candidate branch ready",
                        "artifacts": {"candidateRefs": [{"kind": "branch", "ref": "refs/heads/main", "sha": "abc123"}]},
                    }
                ),
            }
        )
        dispatch_attempt = attempts[1]["id"]
        r = c.post(f"/maintenance-attempts/{quote(dispatch_attempt, safe='')}/sync", headers=AUTH)
        assert r.status_code == 202 and r.json()["attempt"]["status"] == "changed"
        assert r.json()["attempt"]["workspaceRunStatuses"] == {"run-1": "changed"}
        assert (
            c.get("/maintenance-attempts?status=changed", headers=AUTH).json()["attempts"][0]["id"] == dispatch_attempt
        )
        # inspection is proxied behind the same auth
        assert c.get("/workspace-runs").status_code == 401
        runs = c.get("/workspace-runs", headers=AUTH).json()
        assert runs["runs"][0]["status"] == "changed" and "raw" in runs
        assert c.get("/workspace-runs/run-1", headers=AUTH).json()["run"]["id"] == "run-1"
        assert c.get(f"/workspace-events/{quote(EID, safe='')}", headers=AUTH).json()["event"]["id"] == EID
        paths = [x.path for x in backend_server.requests if x.method == "GET"]
        assert "/runs" in paths and "/runs/run-1" in paths and f"/events/{quote(EID, safe='')}" in paths
        assert c.get("/workspace-runs/missing", headers=AUTH).status_code == 502
        assert c.post("/workspace-runs", headers=AUTH).status_code == 405


def test_backend_down_is_502_with_reason(data_dir: Path) -> None:
    seed(data_dir)
    with client_for(data_dir, PATCH_WORKSPACE_BACKEND_URL="http://127.0.0.1:9/") as c:
        r = c.post(f"/flow-events/{quote(EID, safe='')}/retry", headers=AUTH)
        assert r.status_code == 502 and r.json()["record"]["status"] == "failed"
        assert "unreachable" in r.json()["record"]["error"]
        r = c.get("/workspace-runs", headers=AUTH)
        assert r.status_code == 502 and r.json()["error"] == "backend_error"


def test_local_runs_served_without_backend_and_body_limit(data_dir: Path) -> None:
    seed(data_dir)
    Store(data_dir).append(
        Kind.RUNS,
        {
            "id": "run-x",
            "eventId": EID,
            "status": "changed",
            "processStatus": "completed",
            "resultPayload": {"status": "changed", "message": "ok"},
        },
    )
    with client_for(data_dir) as c:
        runs = c.get("/workspace-runs", headers=AUTH).json()["runs"]
        assert runs[0]["id"] == "run-x" and runs[0]["effectiveStatus"] == "changed"
        assert c.get("/workspace-runs/nope", headers=AUTH).json() == {"error": "workspace_run_not_found"}
        events = c.get("/workspace-events", headers=AUTH).json()["events"]
        assert events[0]["runIds"] == ["run-x"]
        big = c.post(f"/flow-events/{quote(EID, safe='')}/retry", headers=AUTH, content=b"x" * (65 * 1024))
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large"


def test_openapi_lists_every_route(data_dir: Path) -> None:
    with client_for(data_dir) as c:
        doc: dict[str, Any] = c.get("/openapi.json", headers=AUTH).json()
    assert {
        "/flow-events/{id}/retry",
        "/maintenance-attempts/{id}/sync",
        "/workspace-runs/{id}",
        "/flow-dispatches",
        "/readyz",
        "/healthz",
    } <= set(doc["paths"])


def test_serve_refuses_open_public_bind(tmp_path: Path) -> None:
    import subprocess

    from .conftest import PYTHON, ROOT

    out = subprocess.run(
        [PYTHON, "-m", "patchmoi", "serve", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2 and "without PATCH_ADMIN_TOKEN" in out.stderr
