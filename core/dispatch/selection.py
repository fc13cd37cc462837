"""Which backend handles an event (spec §3 precedence), the same for dispatch, retry, replay and sync."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patchmoi.core.config import first_nonempty
from patchmoi.core.sources import Target

URL_ENVS = ("PATCH_WORKSPACE_BACKEND_URL", "PATCH_FLOW_BACKEND_URL", "PATCH_FLOW_DISPATCH_URL")
SECRET_ENVS = ("PATCH_WORKSPACE_BACKEND_SECRET", "PATCH_FLOW_DISPATCH_SECRET")
_EVENTS_SUFFIX = re.compile(r"/(events|flow-events)/?$")


@dataclass(frozen=True)
class Backend:
    kind: str  # "http" | "ws" | "local"
    url: str | None = None
    secret: str | None = None
    workspace: Path | None = None

    @property
    def base(self) -> str | None:
        if self.url is None or self.kind != "http":
            return self.url
        return _EVENTS_SUFFIX.sub("", self.url).rstrip("/")

    @property
    def transport(self) -> str:
        return {"http": "workspace-http", "ws": "workspace-ws"}.get(self.kind, "local")

    @property
    def target(self) -> str:
        return "local" if self.kind == "local" else "workspace-backend"


def select_backend(target: Target | None, env: Mapping[str, str], workspace: Path | None = None) -> Backend:
    """First non-empty wins. URL: target URLs, target env names, then the global chain; else local."""
    if target is not None and target.transport == "local":
        return Backend("local", workspace=_workspace(target, workspace))
    url = first_nonempty(
        target.workspace_url if target else None,
        target.dispatch_url if target else None,
        env.get(target.workspace_url_env, "") if target and target.workspace_url_env else None,
        env.get(target.dispatch_url_env, "") if target and target.dispatch_url_env else None,
        *(env.get(name) for name in URL_ENVS),
    )
    secret = first_nonempty(
        env.get(target.workspace_secret_env, "") if target and target.workspace_secret_env else None,
        env.get(target.dispatch_secret_env, "") if target and target.dispatch_secret_env else None,
        *(env.get(name) for name in SECRET_ENVS),
    )
    if url:
        kind = "ws" if url.startswith(("ws://", "wss://")) else "http"
        return Backend(kind, url=url, secret=secret)
    return Backend("local", workspace=_workspace(target, workspace))


def _workspace(target: Target | None, override: Path | None) -> Path | None:
    if override is not None:
        return override.absolute()
    if target is not None and target.workspace:
        return Path(target.workspace).absolute()
    return None
