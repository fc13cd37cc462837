"""Which backend handles an event (spec §3 precedence), the same for dispatch, retry, replay and sync."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from patchmoi.core.config import first_nonempty
from patchmoi.core.dispatch.actions import actions_mode
from patchmoi.core.dispatch.contract import Backend
from patchmoi.core.dispatch.transports import actions_backend, backend_for_url, local_backend
from patchmoi.core.sources import Target

__all__ = ["SECRET_ENVS", "URL_ENVS", "Backend", "select_backend"]

URL_ENVS = ("PATCH_WORKSPACE_BACKEND_URL", "PATCH_FLOW_BACKEND_URL", "PATCH_FLOW_DISPATCH_URL")
SECRET_ENVS = ("PATCH_WORKSPACE_BACKEND_SECRET", "PATCH_FLOW_DISPATCH_SECRET")


def select_backend(target: Target | None, env: Mapping[str, str], workspace: Path | None = None) -> Backend:
    """First non-empty wins. URL: target URLs, target env names, then the global chain (its scheme picks the
    transport); else Actions mode (`CODEX_WORKSPACE_MODE=actions`, `GITHUB_ACTIONS=true`: `actions-local`, in
    the workspace or else the current directory, as the original's root was); else local."""
    if target is not None and target.transport == "local":
        return local_backend(_workspace(target, workspace))
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
        return backend_for_url(url, secret)
    if actions_mode(env):
        return actions_backend(_workspace(target, workspace) or Path.cwd())
    return local_backend(_workspace(target, workspace))


def _workspace(target: Target | None, override: Path | None) -> Path | None:
    if override is not None:
        return override.absolute()
    if target is not None and target.workspace:
        return Path(target.workspace).absolute()
    return None
