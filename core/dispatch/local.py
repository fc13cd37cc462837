"""`local`: the steps of a workspace checkout run in this process (core.workspace), by the dispatcher itself."""

from __future__ import annotations

from typing import Any

import httpx

from patchmoi.core.dispatch.contract import Backend, BackendQueries, Delivery, Finding, WorkspaceState
from patchmoi.core.errors import ConfigError
from patchmoi.core.workspace.patches import doctor as patch_doctor
from patchmoi.core.workspace.steps import load_steps


class LocalTransport:
    name = "local"
    schemes: tuple[str, ...] = ()
    runs_here = True
    available = True
    workspace_state: WorkspaceState | None = None

    def base(self, url: str) -> str:
        return url

    async def deliver(
        self, backend: Backend, event: dict[str, Any], operation: str, webhook_id: str, client: httpx.AsyncClient
    ) -> Delivery:
        raise TypeError("local dispatches run in the dispatcher (runs_here), not through deliver()")

    async def fetch_runs(
        self, backend: Backend, run_ids: list[str], event_id: str, client: httpx.AsyncClient
    ) -> list[dict[str, Any]]:
        raise TypeError("local runs are read from the store")

    def queries(self, backend: Backend, client: httpx.AsyncClient) -> BackendQueries | None:
        return None

    def doctor(self, backend: Backend, timeout: float) -> list[Finding]:
        workspace = backend.workspace
        if workspace is None:
            return [
                Finding(
                    "FAIL",
                    "workspace",
                    "local dispatch but no target.workspace and no backend URL: every dispatch would fail",
                )
            ]
        if not workspace.is_dir():
            return [Finding("FAIL", "workspace", f"{workspace} does not exist")]
        try:
            rebuilds = any(step.builtin == "rebuild" for step in load_steps(workspace))
        except ConfigError as exc:
            if (workspace / ".patchmoi.toml").exists() and "flow.toml" not in str(exc):
                rebuilds = True  # a bad .patchmoi.toml: patch_doctor reports it, with what else it finds
            else:
                return [Finding("FAIL", "workspace", str(exc))]
        if not rebuilds:
            return [
                Finding(
                    "PASS",
                    "workspace",
                    f"{workspace}: its own [[steps]] or flow.toml flows (no built-in patch-stack rebuild to check)",
                )
            ]
        try:
            report = patch_doctor(workspace)
        except ConfigError as exc:
            report = {"ready": False, "issues": [str(exc)], "patches": []}
        if report["ready"]:
            return [Finding("PASS", "workspace", f"{workspace}: ready, {len(report['patches'])} patch branch(es)")]
        return [Finding("FAIL", "workspace", f"{workspace}: " + "; ".join(report["issues"]))]


LOCAL_TRANSPORT = LocalTransport()
