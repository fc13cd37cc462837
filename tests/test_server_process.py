"""A real `patchmoi serve` process on 127.0.0.1: poll a loopback feed, list and retry over HTTP, SIGTERM,
restart, state intact; and a hypothesis fuzz of the API (no 5xx, no non-JSON error)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from patchmoi.core.config import Settings
from patchmoi.core.store import Kind, Store
from patchmoi.server.app import create_app

from .conftest import PYTHON, ROOT
from .feeds import atom_releases, source
from .loopback import FakeBackend, LoopbackServer, Reply, free_port

T = TypeVar("T")

TOKEN = "serve-test-token"


def start(tmp_path: Path, port: int, env: dict[str, str], *, new_session: bool = False) -> subprocess.Popen[str]:
    """`patchmoi serve`, once /healthz answers; `new_session`: in a process group of its own (to signal it whole)."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "patchmoi", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).text == "ok\n":
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    _, err = proc.communicate()  # reaps it and closes its pipes
    raise AssertionError(err)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM the server and wait for it: its exit code and its stderr. The pipes are closed (and a server that
    does not stop in time is killed) whatever happens."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()  # reads both pipes to their end and closes them
    return code, err


def wait_for(fn: Callable[[], T], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_serve_process_end_to_end(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases(["v1.0.0"])}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    backend = FakeBackend(server, secret="s")
    sources = tmp_path / "feed-sources.json"
    src = source("rel", f"{server.url}/r.atom", target={"mode": "workspace_flow", "eventType": "upstream.release"})
    src["pollIntervalSeconds"] = 0.3
    sources.write_text(json.dumps({"sources": [src]}))
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "DATA_DIR": str(tmp_path / "data"),
        "FEED_SOURCES_PATH": str(sources),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCHMOI_MIN_POLL_SECONDS": "0.3",
        "PATCH_WORKSPACE_BACKEND_URL": backend.url,
        "PATCH_WORKSPACE_BACKEND_SECRET": "s",
        "PATCHMOI_ACCESS_LOG": "all",  # a line for every request (the default logs errors and slow requests only)
    }
    proc = start(tmp_path, port, env)
    base = f"http://127.0.0.1:{port}"
    h = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_for(
            lambda: (
                Store(tmp_path / "data").read_state().get("rel", {}).get("primed")  # the file and its journal
            )
        )
        feed["body"] = atom_releases(["v1.1.0", "v1.0.0"])
        events = wait_for(lambda: httpx.get(f"{base}/flow-events", headers=h).json()["events"])
        event_id = events[0]["id"]
        assert events[0]["payload"]["tag"] == "v1.1.0"
        wait_for(lambda: httpx.get(f"{base}/workspace-dispatches", headers=h).json()["dispatches"])
        r = httpx.post(f"{base}/flow-events/{quote(event_id, safe='')}/retry", headers=h, json={"reason": "test"})
        assert r.status_code == 202 and r.json()["record"]["idempotent"] is True
        ready = httpx.get(f"{base}/readyz", headers=h).json()
        assert ready["polling"] is True and ready["sources"][0]["sourceId"] == "rel"
    finally:
        code, access = stop(proc)
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert '"type": "server.stopped"' in access  # the lifespan's shutdown ran
    assert '"type": "http.request"' in access and TOKEN not in access and "secret" not in access.lower()
    for path in (tmp_path / "data").glob("*.jsonl"):
        assert path.read_bytes().endswith(b"\n")  # no torn lines after SIGTERM
    proc = start(tmp_path, port, env)
    try:
        after = httpx.get(f"{base}/maintenance-attempts?eventId={quote(event_id, safe='')}", headers=h).json()
        assert len(after["attempts"]) == 2 and {a["reason"] for a in after["attempts"] if "reason" in a} == {"test"}
        assert len(httpx.get(f"{base}/flow-events", headers=h).json()["events"]) == 1
    finally:
        stop(proc)
    assert len(backend.events) == 1


PATHS = [
    "/flow-events",
    "/flow-events/{id}",
    "/flow-events/{id}/retry",
    "/flow-events/{id}/replay",
    "/workspace-dispatches",
    "/flow-dispatches",
    "/maintenance-attempts",
    "/maintenance-attempts/{id}",
    "/maintenance-attempts/{id}/sync",
    "/workspace-runs",
    "/workspace-runs/{id}",
    "/workspace-events",
    "/workspace-events/{id}",
    "/feed-signals",
    "/readyz",
    "/openapi.json",
    "/healthz",
    "/nope/{id}",
]
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    store = Store(data)
    store.record_event({"id": "e:1/x", "type": "upstream.release", "payload": {}})
    store.append(Kind.ATTEMPTS, {"id": "a:1", "eventId": "e:1/x", "status": "started"})
    with open(data / "workspace-dispatches.jsonl", "ab") as fh:
        fh.write(b"corrupt line\n")
    app = create_app(Settings.from_env({"DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN}), poll=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(PATHS),
    ident=st.one_of(st.sampled_from(["e:1/x", "a:1"]), text),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
    params=st.dictionaries(st.sampled_from(["limit", "status", "type", "eventId"]), text, max_size=3),
    body=st.one_of(st.none(), st.binary(max_size=256)),
    auth=st.booleans(),
)
def test_fuzz_api_never_5xx_and_errors_are_json(
    fuzz_client: TestClient, path: str, ident: str, method: str, params: dict[str, str], body: bytes | None, auth: bool
) -> None:
    url = path.replace("{id}", quote(ident, safe="")) if ident else path.replace("/{id}", "")
    headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
    r = fuzz_client.request(method, url, params=params, content=body, headers=headers)
    assert r.status_code < 500 or r.status_code == 502, (method, url, r.status_code, r.text)
    if r.status_code == 405:
        assert "allow" in r.headers, (method, url)
    if method == "HEAD":
        assert r.content == b"", (url, r.status_code)
    elif r.status_code >= 400:
        assert "error" in r.json()
    elif method == "OPTIONS":
        assert r.status_code == 204 and r.headers["allow"] and r.content == b"", (url, r.status_code)
