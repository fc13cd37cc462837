"""The chain of a record (core.operations.chain): one answer for `patchmoi show`, the dashboard and the API."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from starlette.testclient import TestClient

from patchmoi.core.config import Settings
from patchmoi.core.operations import chain
from patchmoi.core.store import Store
from patchmoi.server.app import create_app
from patchmoi.server.openapi import openapi_document
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.client import RemoteClient
from patchmoi.tui.screens import DetailScreen

from .conftest import PYTHON, ROOT
from .test_tui import EID, NOW, seed
from .test_tui_remote import TOKEN, serving

AID = f"{EID}:dispatch:2026-11-21T10:01:01.000Z"
SIGNAL = "gh-widget:tag:github.com,2008:Repository/1/v1.2.0"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    seed(tmp_path / "data")
    return Store(tmp_path / "data")


def test_the_chain_from_any_id(store: Store) -> None:
    event = chain(store, EID)
    assert event is not None and event["kind"] == "event" and event["event"]["id"] == EID
    assert [a["id"] for a in event["attempts"]] == [AID] and event["attempts"][0]["state"] == "open"
    assert [r["id"] for r in event["runs"]] == ["run-a"] and len(event["dispatches"]) == 1

    attempt = chain(store, AID)
    assert attempt is not None and attempt["kind"] == "attempt" and attempt["attempt"]["state"] == "open"
    assert attempt["event"]["id"] == EID and [r["id"] for r in attempt["runs"]] == ["run-a"]

    run = chain(store, "run-a")
    assert run is not None and run["kind"] == "run" and run["run"]["id"] == "run-a" and run["event"]["id"] == EID

    signal = chain(store, SIGNAL)  # a signal finds the flow event it started, however old
    assert signal is not None and signal["kind"] == "signal" and signal["event"]["id"] == EID
    assert signal["signal"]["title"] == "v1.2.0" and signal["attempts"][0]["id"] == AID

    lone = chain(store, "gh-gadget:c1")  # a push signal that started no flow event
    assert lone is not None and lone["event"] is None and lone["attempts"] == []
    assert chain(store, "nothing") is None


def test_show_prints_the_chain_of_a_signal(store: Store) -> None:
    out = subprocess.run(
        [PYTHON, "-m", "patchmoi", "show", SIGNAL, "--data-dir", str(store.data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"feed signal  {SIGNAL}\n") and f"flow event   {EID}" in out.stdout


def test_the_api_serves_the_chain(store: Store) -> None:
    settings = Settings.from_env({"DATA_DIR": str(store.data_dir), "PATCH_ADMIN_TOKEN": TOKEN})
    with TestClient(create_app(settings, poll=False)) as http:
        h = {"authorization": f"Bearer {TOKEN}"}
        for path, kind in (
            (f"/flow-events/{quote(EID, safe='')}/chain", "event"),
            (f"/maintenance-attempts/{quote(AID, safe='')}/chain", "attempt"),
            (f"/feed-signals/{quote(SIGNAL, safe='')}/chain", "signal"),
        ):
            resp = http.get(path, headers=h)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body == chain(store, body["id"]) and body["kind"] == kind
            assert body["attempts"][0]["state"] == "open"
        assert http.get("/flow-events/nope/chain", headers=h).json() == {"error": "flow_event_not_found"}
        assert http.get("/feed-signals/nope/chain", headers=h).status_code == 404
        assert http.get(f"/flow-events/{quote(EID, safe='')}/chain").status_code == 401
        assert http.post(f"/flow-events/{quote(EID, safe='')}/chain", headers=h).status_code == 405
    assert {"/flow-events/{id}/chain", "/maintenance-attempts/{id}/chain", "/feed-signals/{id}/chain"} <= set(
        openapi_document()["paths"]
    )


async def test_remote_detail_is_one_chain_request(store: Store) -> None:
    with serving(store.data_dir) as url:
        client = RemoteClient(url, TOKEN, interval=0.3)
        paths: list[str] = []

        async def record(request: httpx.Request) -> None:
            paths.append(request.url.raw_path.decode())

        client.http.event_hooks["request"].append(record)
        app = PatchmoiApp(client, clock=lambda: NOW, health_interval=3600)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("1")  # signals: the widget release is the older row
            await pilot.press("j", "enter")
            await pilot.pause(0.3)
            paths.clear()
            assert isinstance(app.screen, DetailScreen)
            await pilot.press("escape", "3")
            await pilot.pause(0.2)
            paths.clear()
            await pilot.press("enter")
            await pilot.pause(0.5)
            assert isinstance(app.screen, DetailScreen)
            chain_view = app.screen.chain
            assert chain_view["kind"] == "attempt" and chain_view["attempt"]["state"] == "open"
            assert chain_view["event"]["id"] == EID and [r["id"] for r in chain_view["runs"]] == ["run-a"]
            detail = [p for p in paths if "%3A" in p or "eventId=" in p]  # requests about one record (not polls)
            assert detail == [f"/maintenance-attempts/{quote(AID, safe='')}/chain"]
