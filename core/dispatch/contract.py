"""The transport contract: what every way of reaching the place that runs a dispatch provides.

One module per transport (`local`, `http`, `ws`) exposes one object that fits `Transport`; the registry
(core.dispatch.transports) picks one by name or by a backend URL's scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx


@dataclass(frozen=True)
class Backend:
    """Where one event is dispatched: a transport by name, with its URL and secret or its local workspace."""

    transport: str  # a REGISTRY name: "local", "workspace-http", "workspace-ws"
    url: str | None = None
    secret: str | None = None
    workspace: Path | None = None

    @property
    def handler(self) -> Transport:
        from patchmoi.core.dispatch.transports import by_name  # the registry imports every transport module

        return by_name(self.transport)

    @property
    def runs_here(self) -> bool:
        return self.handler.runs_here

    @property
    def base(self) -> str | None:
        """The backend's base URL (for records, signatures and queries); None for a local workspace."""
        return None if self.url is None else self.handler.base(self.url)

    @property
    def target(self) -> str:
        return "local" if self.runs_here else "workspace-backend"


@dataclass
class Delivery:
    """What a remote transport reports for one dispatch or replay: the dispatch record's fields (`status`
    `dispatched` or `failed`, `runIds`, `error`, `httpStatus`, ...) and the runs the backend answered with."""

    fields: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """One doctor line about a backend or workspace: `status` PASS | WARN | FAIL; `what` names the thing
    checked ("workspace" or "backend")."""

    status: str
    what: str
    detail: str


class BackendQueries(Protocol):
    """A backend's read side (GET /workspace-runs and /workspace-events proxy it)."""

    async def get_run(self, run_id: str) -> dict[str, Any]: ...
    async def list_runs(
        self, event_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> dict[str, Any]: ...
    async def get_event(self, event_id: str) -> dict[str, Any]: ...
    async def list_events(self, type: str | None = None, limit: int | None = None) -> dict[str, Any]: ...


class WorkspaceState(Protocol):
    """What a transport that runs steps here remembers in the workspace (actions-local): the runs of each event
    it ran, so that a second dispatch of it is a duplicate; and the environment its steps get."""

    def claim(
        self, workspace: Path, event_id: str, operation: str, finished: Callable[[list[str]], bool]
    ) -> list[str] | None:
        """Atomically across processes: the runs of the event's earlier dispatch here when it is a duplicate
        (those runs went on or ended, `finished`, or another live process is starting them), else None, after
        marking the event as being run by this process (a replay always runs)."""
        ...

    def remember(self, workspace: Path, event_id: str, run_ids: list[str], operation: str) -> None: ...
    def step_env(self, workspace: Path) -> dict[str, str]: ...


class Transport(Protocol):
    name: str  # the `transport` value of dispatch records
    schemes: tuple[str, ...]  # backend URL schemes it serves (none for the local runner)
    runs_here: bool  # steps run in this process (the dispatcher's local runner); False: a backend runs them
    available: bool  # implemented: a retry may go back to a backend of this transport
    workspace_state: WorkspaceState | None  # runs_here transports with a memory of the events they ran

    def base(self, url: str) -> str:
        """The base URL records keep and requests are built on."""
        ...

    async def deliver(
        self, backend: Backend, event: dict[str, Any], operation: str, webhook_id: str, client: httpx.AsyncClient
    ) -> Delivery:
        """Send one dispatch (`operation` "dispatch") or replay; never raises for a backend failure (the
        Delivery says `failed`, with the error an operator reads)."""
        ...

    async def fetch_runs(
        self, backend: Backend, run_ids: list[str], event_id: str, client: httpx.AsyncClient
    ) -> list[dict[str, Any]]:
        """The runs of an attempt, for sync (by id, else the event's); raises BackendError."""
        ...

    def queries(self, backend: Backend, client: httpx.AsyncClient) -> BackendQueries | None:
        """The backend's read side, if it has one."""
        ...

    def doctor(self, backend: Backend, timeout: float) -> list[Finding]:
        """What `patchmoi doctor` says about this backend or workspace."""
        ...
