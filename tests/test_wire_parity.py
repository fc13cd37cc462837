"""The last wire details of the Bun service (#15): each seen differ in a side-by-side run, now the same or
better. Real servers on 127.0.0.1: the app through Starlette's TestClient, a backend on a loopback server, and
a real `patchmoi serve` process for start-up on a torn feed-state.json."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from patchmoi.core.store import Kind, Store

from .feeds import atom_releases, source
from .loopback import FakeBackend, LoopbackServer, Reply, free_port
from .test_server import AUTH, TOKEN, client_for
from .test_server_process import start, stop, wait_for


def strict_json(body: bytes) -> Any:
    """JSON as JavaScript's JSON.parse reads it: no NaN or Infinity, no BOM."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def test_lists_with_a_bom_and_nan_lines_are_valid_json_and_the_lines_are_counted(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "flow-events.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id":"e1","type":"t","payload":{}}\n'
        b'{"id":"e2","type":"t","payload":{"x":NaN}}\n'
        b'{"id":"e3","type":"t","payload":{"x":-Infinity}}\n'
        b'{"id":"e4","type":"t","payload":{"x":1}}\n'
    )
    (data_dir / "maintenance-attempts.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id":"a1","eventId":"e1","status":"completed"}\n'
        b'{"id":"a2","eventId":"e4","status":"completed","n":NaN}\n'
    )
    with client_for(data_dir) as c:
        events = strict_json(c.get("/flow-events", headers=AUTH).content)["events"]
        assert [e["id"] for e in events] == ["e4", "e1"]
        attempts = strict_json(c.get("/maintenance-attempts", headers=AUTH).content)["attempts"]
        assert [a["id"] for a in attempts] == ["a1"]
        assert strict_json(c.get("/flow-events/e1", headers=AUTH).content)["event"]["id"] == "e1"
        assert c.get("/flow-events/e2", headers=AUTH).status_code == 404  # skipped, not served broken
        store = strict_json(c.get("/readyz", headers=AUTH).content)["store"]
        assert store["skippedLines"] >= 3


def test_either_auth_header_is_enough(data_dir: Path) -> None:
    with client_for(data_dir) as c:
        both = {"Authorization": "Bearer added-by-a-proxy", "X-Patch-Admin-Token": TOKEN}
        assert c.get("/flow-events", headers=both).status_code == 200
        assert c.get("/flow-events", headers={**AUTH, "X-Patch-Admin-Token": "stale"}).status_code == 200
        wrong = {"Authorization": "Bearer no", "X-Patch-Admin-Token": "no"}
        assert c.get("/flow-events", headers=wrong).status_code == 401


def test_trailing_slashes_and_post_on_the_attempts_list_are_404(data_dir: Path) -> None:
    with client_for(data_dir) as c:
        for path in ("/flow-events/", "/maintenance-attempts/", "/workspace-dispatches/"):
            r = c.get(path, headers=AUTH)
            assert (r.status_code, r.json()) == (404, {"error": "not_found"}), path
        assert c.post("/maintenance-attempts", headers=AUTH).json() == {"error": "not_found"}
        for path in ("/workspace-runs/", "/workspace-events/"):  # "anything else under" them: 405, as the spec says
            assert c.get(path, headers=AUTH).status_code == 405, path
        assert c.get("/flow-events", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("0x3", 3),
        ("0b10", 2),
        (" 4 ", 4),
        ("1e0", 1),
        ("2.9", 2),
        ("1_0", 50),
        ("-0x2", 50),
        ("", 50),
        ("0", 1),
        ("0x" + "f" * 300, 50),  # Infinity in JavaScript: the default (it was a 500)
    ],
)
def test_limit_is_read_as_javascript_number_reads_it(data_dir: Path, limit: str, expected: int) -> None:
    Store(data_dir).append_many(Kind.EVENTS, [{"id": f"e{i}", "type": "t", "payload": {}} for i in range(60)])
    with client_for(data_dir) as c:
        r = c.get(f"/flow-events?limit={quote(limit)}", headers=AUTH)
    assert len(r.json()["events"]) == expected


def test_replay_path_is_escaped_as_encode_uri_component(data_dir: Path, server: LoopbackServer) -> None:
    backend = FakeBackend(server)
    event_id = "patch:src:it's(a)*thing!/x y:upstream.release"
    Store(data_dir).record_event({"id": event_id, "type": "upstream.release", "payload": {}})
    with client_for(data_dir, PATCH_WORKSPACE_BACKEND_URL=backend.url) as c:
        assert c.post(f"/flow-events/{quote(event_id, safe='')}/retry", headers=AUTH).status_code == 202
        r = c.post(f"/flow-events/{quote(event_id, safe='')}/replay", headers=AUTH)
    assert r.status_code == 202, r.text
    replay = next(req for req in server.requests if req.path.endswith("/replay"))
    assert replay.path == "/events/patch%3Asrc%3Ait's(a)*thing!%2Fx%20y%3Aupstream.release/replay"
    assert r.json()["record"]["url"].endswith(replay.path)


def test_run_and_event_views_have_the_codex_flows_shapes(data_dir: Path, server: LoopbackServer) -> None:
    run = {
        "id": "run-1",
        "eventId": "e1",
        "status": "completed",
        "attemptCount": 0,
        "stdout": "building\nFLOW_RESULT {}",
        "stderr": "warning: x",
    }
    server.route("/runs", Reply.json({"runs": [run]}))
    server.route("/runs/run-1", Reply.json({"run": run}))
    server.route("/events/e1", Reply.json({"event": {"id": "e1", "type": "upstream.release"}, "runs": [run]}))
    server.route("/events", Reply.json({"events": [{"id": "e1", "type": "upstream.release", "runIds": ["run-1"]}]}))
    with client_for(data_dir, PATCH_WORKSPACE_BACKEND_URL=server.url) as c:
        runs = c.get("/workspace-runs", headers=AUTH).json()
        one = c.get("/workspace-runs/run-1", headers=AUTH).json()["run"]
        event = c.get("/workspace-events/e1", headers=AUTH).json()["event"]
        c.get("/workspace-runs?limit=7", headers=AUTH)
    view = runs["runs"][0]
    assert view == one
    assert view["attemptCount"] == 0 and view["attempts"] == []
    assert view["output"] == [{"kind": "stdout", "text": run["stdout"]}, {"kind": "stderr", "text": "warning: x"}]
    assert view["latestOutput"] == {"kind": "stderr", "text": "warning: x", "raw": "warning: x"}
    assert view["raw"] == run and runs["raw"] == {"runs": [run]}
    assert [r["id"] for r in event["runs"]] == ["run-1"] and event["raw"]["id"] == "e1"
    listed = [r.query for r in server.requests if r.path == "/runs"]
    assert "limit" not in listed[0] and listed[1]["limit"] == ["7"]  # forwarded only when given


def test_sync_asks_the_configured_backend_for_runs_this_data_dir_never_had(
    data_dir: Path, server: LoopbackServer
) -> None:
    """An attempt the Bun service wrote in its local mode: no backend recorded, runs that are not here."""
    backend = FakeBackend(server)
    backend.runs["run-9"] = {"id": "run-9", "eventId": "e1", "status": "changed"}
    store = Store(data_dir)
    store.record_event({"id": "e1", "type": "upstream.release", "payload": {}})
    attempt = {"id": "a1", "eventId": "e1", "status": "started", "workspaceRunIds": ["run-9"], "operation": "dispatch"}
    store.append(Kind.ATTEMPTS, attempt)
    with client_for(data_dir) as c:  # nothing configured: say so, change nothing
        r = c.post("/maintenance-attempts/a1/sync", headers=AUTH)
        assert r.status_code == 409 and r.json()["error"] == "sync_unavailable"
        assert "PATCH_WORKSPACE_BACKEND_URL" in r.json()["message"]
    assert store.get_attempt("a1") == attempt
    with client_for(data_dir, PATCH_WORKSPACE_BACKEND_URL=backend.url) as c:
        r = c.post("/maintenance-attempts/a1/sync", headers=AUTH)
    assert r.status_code == 202 and r.json()["attempt"]["status"] == "changed"
    assert any(req.path == "/runs/run-9" for req in server.requests)


@pytest.mark.slow
def test_serve_starts_on_a_torn_feed_state_and_retry_works(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/r.atom", Reply(body=atom_releases(["v1.0.0"])))
    backend = FakeBackend(server)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "feed-state.json").write_text('{"rel": {"lastSeenId": "tag:v1", "se')  # cut mid-write
    Store(data).record_event({"id": "e1", "type": "upstream.release", "payload": {}})
    sources = tmp_path / "feed-sources.json"
    sources.write_text(json.dumps({"sources": [source("rel", f"{server.url}/r.atom")]}))
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "DATA_DIR": str(data),
        "FEED_SOURCES_PATH": str(sources),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCH_WORKSPACE_BACKEND_URL": backend.url,
    }
    proc = start(tmp_path, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = wait_for(lambda: (r := httpx.get(f"{base}/readyz", headers=AUTH).json()).get("stateProblem") and r)
        assert ready["status"] == "degraded" and "feed-state.json" in ready["stateProblem"]
        r = httpx.post(f"{base}/flow-events/e1/retry", headers=AUTH)
        assert r.status_code == 202 and r.json()["record"]["status"] == "dispatched"
    finally:
        code, _ = stop(proc)
    assert code in (0, -signal.SIGTERM)
    assert any(p.name.startswith("feed-state.json.corrupt-") for p in data.iterdir())  # kept aside, not lost
