"""`workspace-ws` (spec §3): JSON-RPC 2.0 over WebSocket against a real backend on 127.0.0.1, a connection per
call, `workspace.initialize` first. Dispatch, retry, replay, sync, the inspection routes, doctor, and every way a
backend can fail: each failure is a `failed` record that says what happened, never an exception or a secret."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from patchmoi.core.config import Settings
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.dispatch.transports import backend_for_url
from patchmoi.core.dispatch.ws import CLIENT_INFO, WS_TRANSPORT
from patchmoi.core.doctor import run_checks
from patchmoi.core.store import Kind, Store
from patchmoi.server.app import create_app

SECRET = "ws-backend-secret-never-sent"
EID = "patch:rel:tag:github.com,2008:Repository/1/v1.2.3:upstream.release"
TOKEN = "admin-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLOW_METHODS = ["flow.dispatch", "flow.replay", "flow.listRuns", "flow.getRun", "flow.listEvents", "flow.getEvent"]


class RpcBackend:
    """A workspace backend as codex-flows serves it over WebSocket: idempotent by event id, replays make new
    runs, unknown ids are JSON-RPC errors. Every connection's requests are recorded; `misbehave` makes a method
    fail in one way ("error", "close", "drop", "hang", "garbage", "no-result", "list"), `reject` refuses the
    upgrade with that HTTP status."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.connections: list[list[dict[str, Any]]] = []
        self.handshakes: list[tuple[str, Headers]] = []
        self.misbehave: dict[str, str] = {}
        self.error_text = "boom"
        self.reject: int | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.server: Server = serve(self._handle, "127.0.0.1", 0, process_request=self._process_request)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    def start(self) -> RpcBackend:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.thread.join(5)

    def methods(self) -> list[list[str]]:
        with self._lock:
            return [[m["method"] for m in conn] for conn in self.connections]

    def sent(self) -> str:
        """Everything patchmoi sent, as text (to look for secrets)."""
        with self._lock:
            frames = json.dumps(self.connections)
            heads = json.dumps([(path, list(h.raw_items())) for path, h in self.handshakes])
        return frames + heads

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.handshakes.append((request.path, request.headers))
        if self.reject is not None:
            return ws.respond(self.reject, "no\n")
        return None

    def _handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # a client that gave up (a timeout) is not a server error
            self._serve(ws)

    def _serve(self, ws: ServerConnection) -> None:
        log: list[dict[str, Any]] = []
        with self._lock:
            self.connections.append(log)
        # codex-flows announces itself with a notification before any answer; a client must skip it
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "workspace.event", "params": {"event": {"type": "connected"}}}))
        for frame in ws:
            msg = json.loads(frame)
            with self._lock:
                log.append(msg)
            method, rid = msg.get("method"), msg.get("id")
            if len(log) == 1 and method != "workspace.initialize":
                ws.send(
                    json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32002, "message": "not initialized"}})
                )
                continue
            how = self.misbehave.get(method or "")
            if how == "close":
                ws.close(1011, "backend crashed")
                return
            if how == "drop":
                ws.socket.shutdown(socket.SHUT_RDWR)
                return
            if how == "hang":
                self._release.wait()
                return
            if how == "garbage":
                ws.send("<html>not json</html>")
                continue
            if how == "no-result":
                ws.send(json.dumps({"jsonrpc": "2.0", "id": rid}))
                continue
            if how == "error":
                ws.send(
                    json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": self.error_text}})
                )
                continue
            try:
                result: Any = [] if how == "list" else self._answer(method or "", msg.get("params") or {})
            except LookupError as exc:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": exc.args[0]}}))
            else:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}))

    def _new_run(self, event_id: str) -> str:
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {"id": run_id, "eventId": event_id, "status": "queued", "flowName": "fork"}
        self.events[event_id]["runIds"].append(run_id)
        return run_id

    def _answer(self, method: str, params: dict[str, Any]) -> Any:
        with self._lock:
            if method == "workspace.initialize":
                return {
                    "ok": True,
                    "serverInfo": {"name": "test-workspace-backend", "version": "0.3.5"},
                    "capabilities": {"appServerPassThrough": True, "workspaceMethods": FLOW_METHODS},
                }
            if method == "flow.dispatch":
                event = params["event"]
                if event["id"] in self.events:
                    ids = self.events[event["id"]]["runIds"]
                    return {"status": "duplicate", "eventId": event["id"], "runIds": list(ids), "matched": 0}
                self.events[event["id"]] = {**event, "runIds": []}
                return {
                    "status": "accepted",
                    "eventId": event["id"],
                    "runIds": [self._new_run(event["id"])],
                    "matched": 1,
                }
            if method == "flow.replay":
                if params["eventId"] not in self.events:
                    raise LookupError(f"Unknown event: {params['eventId']}")
                run_id = self._new_run(params["eventId"])
                return {"status": "accepted", "eventId": params["eventId"], "runIds": [run_id], "matched": 1}
            if method == "flow.listRuns":
                runs = [r for r in self.runs.values() if params.get("eventId") in (None, r["eventId"])]
                return {**({"eventId": params["eventId"]} if "eventId" in params else {}), "runs": runs}
            if method == "flow.getRun":
                if params["runId"] not in self.runs:
                    raise LookupError(f"Unknown run: {params['runId']}")
                return {"run": self.runs[params["runId"]]}
            if method == "flow.listEvents":
                return {"events": list(self.events.values())}
            if method == "flow.getEvent":
                if params["eventId"] not in self.events:
                    raise LookupError(f"Unknown event: {params['eventId']}")
                event = self.events[params["eventId"]]
                return {"event": event, "runs": [self.runs[r] for r in event["runIds"]]}
            raise LookupError(f"Unknown workspace backend method: {method}")


def assert_wire(backend: RpcBackend) -> None:
    """Spec §3 on every connection: `workspace.initialize` first, with the client info, then one method."""
    with backend._lock:
        connections = [list(c) for c in backend.connections]
    assert connections
    for conn in connections:
        assert 1 <= len(conn) <= 2, conn
        first = conn[0]
        assert first["jsonrpc"] == "2.0" and first["method"] == "workspace.initialize"
        assert first["params"] == {"clientInfo": CLIENT_INFO, "capabilities": {"appServerPassThrough": True}}
        assert CLIENT_INFO == {"name": "patch-moi", "title": "patch.moi", "version": "0.1.0"}
        assert all(m["jsonrpc"] == "2.0" and isinstance(m["id"], int) for m in conn)
        assert len({m["id"] for m in conn}) == len(conn)


@pytest.fixture
def backend() -> Iterator[RpcBackend]:
    b = RpcBackend().start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short back-off, and a call timeout short enough for a test yet roomy on a loaded machine (a hung
    backend's tests shorten it to half a second)."""
    monkeypatch.setattr(WS_TRANSPORT, "timeout", 10.0)
    monkeypatch.setattr(WS_TRANSPORT, "backoff", 0.01)


def flow_event(event_id: str = EID) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "upstream.release",
        "source": "patch",
        "receivedAt": "2026-05-13T00:00:00.000Z",
        "payload": {"repo": "o/r", "tag": "v1.2.3"},
    }


def stored_text(data_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in data_dir.rglob("*.jsonl"))


CHANGED = {
    "status": "completed",
    "resultJson": json.dumps(
        {
            "status": "changed",
            "message": "candidate branch ready",
            "artifacts": {"candidateRefs": [{"kind": "branch", "ref": "refs/heads/main", "sha": "abc123"}]},
        }
    ),
}


async def test_dispatch_retry_replay_and_sync_over_websocket(data_dir: Path, backend: RpcBackend) -> None:
    store = Store(data_dir)
    event = flow_event()
    store.record_event(event)
    env = {"PATCH_WORKSPACE_BACKEND_URL": backend.url, "PATCH_WORKSPACE_BACKEND_SECRET": SECRET}
    dispatcher = Dispatcher(store, env)
    try:
        first = await dispatcher.dispatch(event, automatic=True)
        again = await dispatcher.retry(EID, reason="backend restarted")
        replay = await dispatcher.replay(EID)
        backend.runs["run-1"].update(CHANGED)
        synced = await dispatcher.sync(str(first.attempt["id"]))
    finally:
        await dispatcher.aclose()

    record = first.record
    assert record["status"] == "dispatched" and record["transport"] == "workspace-ws"
    assert record["target"] == "workspace-backend" and record["workspaceBackendUrl"] == backend.url
    assert record["runIds"] == ["run-1"] and record["matched"] == 1
    assert "url" not in record and "webhookId" not in record  # spec §3: no url field over WS (nothing is signed)
    assert first.attempt["status"] == "started" and first.attempt["workspaceRunIds"] == ["run-1"]
    # a retry is idempotent by event id: the backend answers `duplicate` with the runs it has
    assert again.record["runIds"] == ["run-1"] and again.record["matched"] == 0
    assert again.record["reason"] == "backend restarted"
    assert replay.record["operation"] == "replay" and replay.record["runIds"] == ["run-2"]
    assert synced["status"] == "changed" and synced["workspaceRunStatuses"] == {"run-1": "changed"}
    assert synced["message"] == "candidate branch ready" and synced["candidateRefs"][0]["sha"] == "abc123"
    assert store.list_attempts(status="changed")[0]["id"] == first.attempt["id"]

    assert backend.methods() == [
        ["workspace.initialize", "flow.dispatch"],
        ["workspace.initialize", "flow.dispatch"],
        ["workspace.initialize", "flow.replay"],
        ["workspace.initialize", "flow.getRun"],
    ]
    assert_wire(backend)
    calls = [conn[1] for conn in backend.connections]
    assert calls[0]["params"] == {"event": event}
    assert calls[2]["params"] == {"eventId": EID, "wait": False}
    assert calls[3]["params"] == {"runId": "run-1"}
    assert SECRET not in backend.sent() and SECRET not in stored_text(data_dir)


async def test_sync_of_an_attempt_written_by_the_bun_service(data_dir: Path, backend: RpcBackend) -> None:
    """A Bun-era ws attempt (its URL, no run ids yet) syncs from the event's runs (flow.listRuns)."""
    backend.events[EID] = {**flow_event(), "runIds": []}
    backend._new_run(EID)
    backend.runs["run-1"].update(CHANGED)
    store = Store(data_dir)
    store.record_event(flow_event())
    attempt_id = f"{EID}:dispatch:2026-05-13T00:00:01.000Z"
    attempt: dict[str, Any] = {
        "id": attempt_id,
        "eventId": EID,
        "eventType": "upstream.release",
        "operation": "dispatch",
        "status": "started",
        "workspaceBackendUrl": backend.url,
        "workspaceRunIds": [],
        "candidateRefs": [],
        "createdAt": "2026-05-13T00:00:01.000Z",
        "updatedAt": "2026-05-13T00:00:01.000Z",
    }
    store.append(Kind.ATTEMPTS, attempt)
    dispatcher = Dispatcher(store, {})
    try:
        synced = await dispatcher.sync(attempt_id)
    finally:
        await dispatcher.aclose()
    assert synced["status"] == "changed" and synced["workspaceRunIds"] == ["run-1"]
    assert backend.methods() == [["workspace.initialize", "flow.listRuns"]]
    assert backend.connections[0][1]["params"] == {"eventId": EID}
    assert_wire(backend)


def test_server_routes_retry_replay_sync_and_inspect_through_websocket(data_dir: Path, backend: RpcBackend) -> None:
    Store(data_dir).record_event(flow_event())
    settings = Settings.from_env(
        {
            "DATA_DIR": str(data_dir),
            "PATCH_ADMIN_TOKEN": TOKEN,
            "PATCH_WORKSPACE_BACKEND_URL": backend.url,
            "PATCH_WORKSPACE_BACKEND_SECRET": SECRET,
        }
    )
    eid = quote(EID, safe="")
    with TestClient(create_app(settings, poll=False)) as c:
        r = c.post(f"/flow-events/{eid}/retry", headers=AUTH)
        assert r.status_code == 202, r.text
        assert r.json()["record"]["transport"] == "workspace-ws" and r.json()["record"]["runIds"] == ["run-1"]
        assert c.post(f"/flow-events/{eid}/replay", headers=AUTH).json()["record"]["runIds"] == ["run-2"]
        backend.runs["run-1"].update(CHANGED)
        attempts = c.get(f"/maintenance-attempts?eventId={eid}", headers=AUTH).json()["attempts"]
        dispatch_attempt = next(a["id"] for a in attempts if a["operation"] == "dispatch")
        r = c.post(f"/maintenance-attempts/{quote(dispatch_attempt, safe='')}/sync", headers=AUTH)
        assert r.status_code == 202 and r.json()["attempt"]["status"] == "changed"

        runs = c.get(f"/workspace-runs?eventId={eid}&status=queued", headers=AUTH).json()
        assert [run["id"] for run in runs["runs"]] == ["run-1", "run-2"]
        assert runs["runs"][0]["status"] == "changed" and runs["raw"]["eventId"] == EID
        assert c.get("/workspace-runs/run-2", headers=AUTH).json()["run"]["status"] == "queued"
        events = c.get("/workspace-events?type=upstream.release", headers=AUTH).json()["events"]
        assert [e["id"] for e in events] == [EID]
        event = c.get(f"/workspace-events/{eid}", headers=AUTH).json()["event"]
        assert event["id"] == EID and event["runIds"] == ["run-1", "run-2"]
        r = c.get("/workspace-runs/missing", headers=AUTH)
        assert r.status_code == 502 and r.json()["error"] == "backend_error"
        assert "flow.getRun" in r.json()["message"] and "Unknown run: missing" in r.json()["message"]

    methods = [conn[1] for conn in backend.connections]
    assert [m["method"] for m in methods] == [
        "flow.dispatch",
        "flow.replay",
        "flow.getRun",
        "flow.listRuns",
        "flow.getRun",
        "flow.listEvents",
        "flow.getEvent",
        "flow.getRun",
    ]
    assert methods[3]["params"]["eventId"] == EID and methods[3]["params"]["status"] == "queued"
    assert methods[5]["params"]["type"] == "upstream.release"
    assert methods[6]["params"] == {"eventId": EID}
    assert_wire(backend)
    assert SECRET not in backend.sent() and SECRET not in stored_text(data_dir)


async def dispatch_once(data_dir: Path, url: str, operation: str = "dispatch") -> dict[str, Any]:
    store = Store(data_dir)
    event = flow_event()
    store.record_event(event)
    dispatcher = Dispatcher(store, {"PATCH_WORKSPACE_BACKEND_URL": url, "PATCH_WORKSPACE_BACKEND_SECRET": SECRET})
    try:
        outcome = await dispatcher.dispatch(event, operation=operation)
    finally:
        await dispatcher.aclose()
    assert outcome.record["status"] == "failed" and outcome.attempt["status"] == "failed"
    assert outcome.record["transport"] == "workspace-ws" and outcome.attempt["error"] == outcome.record["error"]
    assert SECRET not in stored_text(data_dir)
    return outcome.record


FAILURES = [  # how the backend fails, the error recorded (after "workspace-ws "), connections made
    ("error", "flow.dispatch at {url}: JSON-RPC error -32603: boom", 1),
    (
        "close",
        "flow.dispatch at {url}: the backend closed the connection before answering (close code 1011: "
        "backend crashed) (after 3 attempts)",
        3,
    ),
    ("drop", "flow.dispatch at {url}: the backend dropped the connection before answering (after 3 attempts)", 3),
    ("hang", "flow.dispatch at {url}: no answer within 0.5s", 1),
    ("garbage", "flow.dispatch at {url}: malformed answer: a frame that is not JSON", 1),
    ("no-result", "flow.dispatch at {url}: malformed answer: a JSON-RPC response with neither result nor error", 1),
    ("list", "flow.dispatch at {url}: malformed answer: the result is a list, expected an object", 1),
]


@pytest.mark.parametrize(("how", "expected", "tries"), [pytest.param(*case, id=case[0]) for case in FAILURES])
async def test_a_failing_backend_is_a_failed_record_that_says_why(
    data_dir: Path, backend: RpcBackend, how: str, expected: str, tries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "hang":
        monkeypatch.setattr(WS_TRANSPORT, "timeout", 0.5)
    backend.misbehave["flow.dispatch"] = how
    record = await dispatch_once(data_dir, backend.url)
    assert record["error"] == "workspace-ws " + expected.format(url=backend.url)
    assert "httpStatus" not in record and "errorKind" not in record
    assert backend.methods() == [["workspace.initialize", "flow.dispatch"]] * tries
    assert_wire(backend)


async def test_a_replay_the_backend_may_have_received_is_not_sent_again(data_dir: Path, backend: RpcBackend) -> None:
    backend.misbehave["flow.replay"] = "close"
    record = await dispatch_once(data_dir, backend.url, operation="replay")
    assert "flow.replay" in record["error"] and "close code 1011" in record["error"]
    assert backend.methods() == [["workspace.initialize", "flow.replay"]]  # once: it may have started runs


async def test_unreachable_and_refusing_backends(data_dir: Path, backend: RpcBackend) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens here once the socket is closed
    down = f"ws://127.0.0.1:{closed_port}/rpc"
    record = await dispatch_once(data_dir / "a", down)
    assert record["error"] == (
        f"workspace-ws connecting to {down}: connection refused (backend unreachable?) (after 3 attempts)"
    )
    backend.reject = 401
    record = await dispatch_once(data_dir / "b", backend.url)
    assert record["error"] == (
        f"workspace-ws connecting to {backend.url}: the backend refused the WebSocket upgrade with HTTP 401"
    )
    assert record["httpStatus"] == 401 and len(backend.handshakes) == 1  # a 401 is not retried
    backend.reject = 503
    record = await dispatch_once(data_dir / "c", backend.url)
    assert record["httpStatus"] == 503 and len(backend.handshakes) == 4  # a 503 is, within the bound
    assert backend.connections == []


async def test_credentials_in_the_url_reach_the_backend_and_nothing_else(data_dir: Path, backend: RpcBackend) -> None:
    password, token = "pa55word-in-url", "query-token-1234"
    url = f"ws://patchmoi:{password}@127.0.0.1:{backend.port}/rpc?token={token}"
    backend.misbehave["flow.dispatch"] = "error"
    backend.error_text = f"token {token} is not allowed to dispatch"  # a backend that echoes what it got
    record = await dispatch_once(data_dir, url)
    path, headers = backend.handshakes[0]
    assert path == f"/rpc?token={token}" and headers["Authorization"].startswith("Basic ")
    assert record["workspaceBackendUrl"] == f"ws://127.0.0.1:{backend.port}/rpc?<redacted>"
    assert record["error"] == (
        f"workspace-ws flow.dispatch at ws://127.0.0.1:{backend.port}/rpc?<redacted>: "
        "JSON-RPC error -32603: token <redacted> is not allowed to dispatch"
    )
    stored = stored_text(data_dir)
    assert password not in stored and token not in stored and SECRET not in backend.sent()


def test_doctor_connects_and_initializes(data_dir: Path, backend: RpcBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def backend_check(**env: str) -> list[tuple[str, str]]:
        settings = Settings.from_env({"DATA_DIR": str(data_dir), **env})
        return [(c.status, c.detail) for c in run_checks(settings, timeout=2.0) if c.name == "backend"]

    checks = backend_check(PATCH_WORKSPACE_BACKEND_URL=backend.url)
    assert checks == [("PASS", f"{backend.url} (test-workspace-backend 0.3.5) answered workspace.initialize")]
    assert backend.methods() == [["workspace.initialize"]]
    assert_wire(backend)

    checks = backend_check(PATCH_WORKSPACE_BACKEND_URL=backend.url, PATCH_WORKSPACE_BACKEND_SECRET=SECRET)
    assert [status for status, _ in checks] == ["PASS", "WARN"] and "does not send it" in checks[1][1]
    assert all(SECRET not in detail for _, detail in checks)

    backend.misbehave["workspace.initialize"] = "hang"
    monkeypatch.setattr(WS_TRANSPORT, "timeout", 0.5)
    ((status, detail),) = backend_check(PATCH_WORKSPACE_BACKEND_URL=backend.url)
    assert status == "FAIL" and detail == f"workspace-ws workspace.initialize at {backend.url}: no answer within 0.5s"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    ((status, detail),) = backend_check(PATCH_WORKSPACE_BACKEND_URL=f"ws://127.0.0.1:{closed_port}")
    assert status == "FAIL" and "connection refused" in detail


async def test_doctor_works_from_inside_an_event_loop(backend: RpcBackend) -> None:
    """doctor is synchronous; called where a loop runs (this test), it runs its call on a thread of its own."""
    findings = WS_TRANSPORT.doctor(backend_for_url(backend.url), 2.0)
    assert [f.status for f in findings] == ["PASS"]


async def test_sync_and_retry_go_to_the_configured_url_with_its_credentials(
    data_dir: Path, backend: RpcBackend
) -> None:
    """Records keep the URL without its token; a later sync or retry must not send `?<redacted>`."""
    token = "query-token-9876"
    url = f"ws://127.0.0.1:{backend.port}/rpc?token={token}"
    store = Store(data_dir)
    event = flow_event()
    store.record_event(event)
    dispatcher = Dispatcher(store, {"PATCH_WORKSPACE_BACKEND_URL": url})
    try:
        outcome = await dispatcher.dispatch(event)
        assert outcome.record["status"] == "dispatched"
        assert outcome.record["workspaceBackendUrl"] == f"ws://127.0.0.1:{backend.port}/rpc?<redacted>"
        await dispatcher.sync(str(outcome.attempt["id"]))
        await dispatcher.retry(str(event["id"]))
    finally:
        await dispatcher.aclose()
    paths = [path for path, _ in backend.handshakes]
    assert len(paths) >= 3 and set(paths) == {f"/rpc?token={token}"}
    assert token not in stored_text(data_dir)
