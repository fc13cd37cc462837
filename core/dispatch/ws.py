"""`workspace-ws`: a WebSocket JSON-RPC workspace backend (ws:// and wss:// URLs).

Registered so such a URL is recognised everywhere (validation, doctor, records), but not implemented yet:
every dispatch is recorded `failed` with this explanation, and doctor says so.
"""

from __future__ import annotations

from typing import Any

import httpx

from patchmoi.core.dispatch.contract import Backend, BackendQueries, Delivery, Finding
from patchmoi.core.dispatch.http import BackendError

UNSUPPORTED = "workspace-ws (ws:// backend URLs) is not supported by patchmoi yet; use an http(s) URL"


class WsTransport:
    name = "workspace-ws"
    schemes: tuple[str, ...] = ("ws", "wss")
    runs_here = False
    available = False

    def base(self, url: str) -> str:
        return url

    async def deliver(
        self, backend: Backend, event: dict[str, Any], operation: str, webhook_id: str, client: httpx.AsyncClient
    ) -> Delivery:
        return Delivery({"status": "failed", "error": UNSUPPORTED})

    async def fetch_runs(
        self, backend: Backend, run_ids: list[str], event_id: str, client: httpx.AsyncClient
    ) -> list[dict[str, Any]]:
        raise BackendError(UNSUPPORTED)

    def queries(self, backend: Backend, client: httpx.AsyncClient) -> BackendQueries | None:
        return None

    def doctor(self, backend: Backend, timeout: float) -> list[Finding]:
        return [Finding("FAIL", "backend", "ws:// backends are not supported yet; use an http(s) URL")]


WS_TRANSPORT = WsTransport()
