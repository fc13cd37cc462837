"""The transport contract and registry: transports are chosen by name or URL scheme, and a new one is a module
plus a registry entry; the dispatcher, doctor and service never branch on a transport's name."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from patchmoi.core.config import Settings
from patchmoi.core.dispatch import transports
from patchmoi.core.dispatch.contract import Backend, BackendQueries, Delivery, Finding
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.doctor import run_checks
from patchmoi.core.errors import ConfigError
from patchmoi.core.store import Kind, Store

from .conftest import ROOT


def test_transports_are_found_by_name_and_by_scheme() -> None:
    assert set(transports.REGISTRY) == {"local", "actions-local", "workspace-http", "workspace-ws"}
    assert transports.for_url("https://ws.example/events").name == "workspace-http"
    assert transports.for_url("HTTP://ws.example").name == "workspace-http"
    assert transports.for_url("wss://ws.example/rpc").name == "workspace-ws"
    backend = transports.backend_for_url("https://ws.example/flow-events/", "s")
    assert backend.base == "https://ws.example" and backend.target == "workspace-backend" and not backend.runs_here
    assert transports.local_backend(None).runs_here
    with pytest.raises(ConfigError, match=r"no transport for ftp:// backend URLs; known schemes: http, https, ws"):
        transports.for_url("ftp://x")
    with pytest.raises(ConfigError, match="unknown transport 'carrier-pigeon'"):
        transports.by_name("carrier-pigeon")


def _names_in(node: ast.AST, names: set[str]) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in names:
        return [str(node.value)]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [n for elt in node.elts for n in _names_in(elt, names)]
    return []


def test_callers_never_branch_on_a_transport_name() -> None:
    """No comparison with a transport's name (or a URL scheme), and no `backend.kind` any more."""
    names = {*transports.REGISTRY, "http", "https", "ws", "wss"}
    found = []
    for rel in (
        "core/dispatch/dispatcher.py",
        "core/doctor.py",
        "core/service.py",
        "core/operations.py",
        "core/recovery.py",
        "patchmoi_tui/commands_ops.py",
    ):
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.Compare):
                hits = [n for operand in (node.left, *node.comparators) for n in _names_in(operand, names)]
                found += [f"{rel}:{node.lineno} compares with {n!r}" for n in hits]
            elif isinstance(node, ast.Attribute) and node.attr == "kind":
                found.append(f"{rel}:{node.lineno} uses .kind")
    assert found == []


@dataclass
class Echo:
    """A transport a test adds: it 'delivers' by remembering the event, and its runs complete."""

    name: str = "echo"
    schemes: tuple[str, ...] = ("echo",)
    runs_here: bool = False
    available: bool = True
    delivered: list[str] = field(default_factory=list)

    def base(self, url: str) -> str:
        return url.rstrip("/")

    async def deliver(
        self, backend: Backend, event: dict[str, Any], operation: str, webhook_id: str, client: httpx.AsyncClient
    ) -> Delivery:
        self.delivered.append(f"{operation} {event['id']} {webhook_id}")
        run = {"id": "echo-1", "eventId": event["id"], "status": "running"}
        return Delivery({"status": "dispatched", "runIds": ["echo-1"]}, [run])

    async def fetch_runs(
        self, backend: Backend, run_ids: list[str], event_id: str, client: httpx.AsyncClient
    ) -> list[dict[str, Any]]:
        return [
            {
                "id": rid,
                "eventId": event_id,
                "status": "changed",
                "resultPayload": {"status": "changed", "message": "echoed"},
            }
            for rid in run_ids
        ]

    def queries(self, backend: Backend, client: httpx.AsyncClient) -> BackendQueries | None:
        return None

    def doctor(self, backend: Backend, timeout: float) -> list[Finding]:
        return [Finding("PASS", "backend", f"echo at {backend.base}")]


async def test_a_new_transport_is_one_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    echo = Echo()
    monkeypatch.setitem(transports.REGISTRY, "echo", echo)
    env = {"PATCH_WORKSPACE_BACKEND_URL": "echo://workspace/"}
    store = Store(tmp_path / "data")
    event = {"id": "e1", "type": "upstream.release", "payload": {"repo": "acme/widget", "tag": "v1"}}
    store.record_event(event)
    dispatcher = Dispatcher(store, env)
    try:
        outcome = await dispatcher.dispatch(event)
        assert outcome.record["transport"] == "echo" and outcome.record["status"] == "dispatched"
        assert outcome.record["workspaceBackendUrl"] == "echo://workspace"
        assert outcome.attempt["status"] == "started" and outcome.attempt["workspaceRunIds"] == ["echo-1"]
        retried = await dispatcher.retry("e1", reason="again")  # the same transport, by the record
        assert retried.record["transport"] == "echo" and len(echo.delivered) == 2
        synced = await dispatcher.sync(str(outcome.attempt["id"]))
        assert synced["status"] == "changed" and synced["message"] == "echoed"
    finally:
        await dispatcher.aclose()
    checks = {c.name: c for c in run_checks(Settings.from_env({**env, "DATA_DIR": str(tmp_path / "data")}))}
    assert checks["backend"].status == "PASS" and checks["backend"].detail == "echo at echo://workspace"


async def test_a_backend_url_no_transport_serves_is_a_config_failure(tmp_path: Path) -> None:
    env = {"PATCH_WORKSPACE_BACKEND_URL": "ftp://files.example/x"}
    store = Store(tmp_path / "data")
    event = {"id": "e1", "type": "upstream.release", "payload": {}}
    store.record_event(event)
    dispatcher = Dispatcher(store, env)
    try:
        outcome = await dispatcher.dispatch(event)
    finally:
        await dispatcher.aclose()
    assert outcome.record["status"] == "failed" and outcome.record["errorKind"] == "config"
    assert "no transport for ftp:// backend URLs" in outcome.record["error"]
    assert outcome.attempt["status"] == "failed"
    checks = {c.name: c for c in run_checks(Settings.from_env({**env, "DATA_DIR": str(tmp_path / "data")}))}
    assert checks["backend"].status == "FAIL" and "no transport for ftp://" in checks["backend"].detail


async def test_a_retry_does_not_go_back_to_a_transport_that_cannot_deliver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pigeon = Echo(name="carrier-pigeon", schemes=("pigeon",), available=False)
    monkeypatch.setitem(transports.REGISTRY, pigeon.name, pigeon)
    store = Store(tmp_path / "data")
    event = {"id": "e1", "type": "upstream.release", "payload": {}}
    store.record_event(event)
    store.append(
        Kind.DISPATCHES,
        {
            "eventId": "e1",
            "operation": "dispatch",
            "transport": "carrier-pigeon",
            "workspaceBackendUrl": "pigeon://old.example/loft",
            "status": "failed",
        },
    )
    dispatcher = Dispatcher(store, {"PATCH_WORKSPACE_BACKEND_URL": "https://new.example"})
    try:
        assert dispatcher.backend_for(event).url == "https://new.example"  # the configured backend, not the pigeon
        for transport, url in (("workspace-http", "https://pinned.example"), ("workspace-ws", "wss://ws.example/rpc")):
            store.append(
                Kind.DISPATCHES,
                {
                    "eventId": "e1",
                    "operation": "dispatch",
                    "transport": transport,
                    "workspaceBackendUrl": url,
                    "status": "failed",
                },
            )
            backend = dispatcher.backend_for(event)  # a backend of an available transport is kept
            assert (backend.transport, backend.url) == (transport, url)
    finally:
        await dispatcher.aclose()
