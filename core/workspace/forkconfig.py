"""A fork's `.patchmoi.toml` (spec §8 defaults, plus verify, conflict and candidate settings).

    [git]
    upstreamRemote = "upstream"     # the remote that follows the upstream project
    upstreamBranch = "main"
    forkRemote = "origin"
    targetBranch = "main"           # the fork's maintained branch (upstream + patches)
    patchPrefix = "patch/"          # one branch per patch, applied in name order
    upstreamRepo = "acme/widget"    # optional: events for another repo are skipped

    [fetch]
    allowFetch = false              # fetch the upstream remote before a rebuild
    fetchTags = true
    prune = true

    [verify]
    commands = ["make test"]        # run in the rebuilt worktree; a failure needs intervention
    timeout = 600

    [conflict]
    command = "my-agent resolve"    # optional: run in the worktree on a conflict; success continues
    timeout = 900

    [candidate]
    refPrefix = "refs/heads/candidate/"
    push = false                    # push the candidate with --force-with-lease
    pushRemote = "origin"

Keys may also be written in snake_case (`upstream_remote`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.workspace.steps import CONFIG_NAME, read_config


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class ForkConfig:
    path: Path | None
    upstream_remote: str = "upstream"
    upstream_branch: str = "main"
    fork_remote: str = "origin"
    target_branch: str = "main"
    patch_prefix: str = "patch/"
    upstream_repo: str | None = None
    upstream_url: str | None = None
    allow_fetch: bool = False
    fetch_tags: bool = True
    prune: bool = True
    prune_tags: bool = False
    verify_commands: tuple[str, ...] = ()
    verify_timeout: float = 600.0
    conflict_command: str | None = None
    conflict_timeout: float = 900.0
    candidate_prefix: str = "refs/heads/candidate/"
    push: bool = False
    push_remote: str = "origin"

    @property
    def upstream_ref(self) -> str:
        return f"refs/remotes/{self.upstream_remote}/{self.upstream_branch}"


def find_config(start: Path) -> Path | None:
    """The nearest `.patchmoi.toml` at or above `start`."""
    for folder in [start, *start.parents]:
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    return None


def _get(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, table.get(_snake(key), default))
    if value is default:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is str and not value):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def load_fork_config(repo: Path) -> ForkConfig:
    found = find_config(repo)
    if found is None:
        return ForkConfig(path=None)
    raw = read_config(found.parent)
    where = str(found)

    def table(name: str) -> dict[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        return value

    g, f, v, c, cand = table("git"), table("fetch"), table("verify"), table("conflict"), table("candidate")
    prefix = _get(g, "patchPrefix", str, "patch/", where)
    commands = v.get("commands", [])
    if isinstance(commands, str):
        commands = [commands]
    if not isinstance(commands, list) or not all(isinstance(x, str) and x for x in commands):
        raise ConfigError(f"{where}: [verify] commands must be a list of shell commands")
    conflict = c.get("command", raw.get("conflict_command", raw.get("conflictCommand")))
    if conflict is not None and (not isinstance(conflict, str) or not conflict.strip()):
        raise ConfigError(f"{where}: [conflict] command must be a shell command")
    return ForkConfig(
        path=found,
        upstream_remote=_get(g, "upstreamRemote", str, "upstream", where),
        upstream_branch=_get(g, "upstreamBranch", str, "main", where),
        fork_remote=_get(g, "forkRemote", str, "origin", where),
        target_branch=_get(g, "targetBranch", str, "main", where),
        patch_prefix=prefix if prefix.endswith("/") else prefix + "/",
        upstream_repo=_get(g, "upstreamRepo", str, None, where),
        upstream_url=_get(g, "upstreamUrl", str, None, where),
        allow_fetch=_get(f, "allowFetch", bool, False, where),
        fetch_tags=_get(f, "fetchTags", bool, True, where),
        prune=_get(f, "prune", bool, True, where),
        prune_tags=_get(f, "pruneTags", bool, False, where),
        verify_commands=tuple(commands),
        verify_timeout=_get(v, "timeout", float, 600.0, where),
        conflict_command=conflict,
        conflict_timeout=_get(c, "timeout", float, 900.0, where),
        candidate_prefix=_get(cand, "refPrefix", str, "refs/heads/candidate/", where),
        push=_get(cand, "push", bool, False, where),
        push_remote=_get(cand, "pushRemote", str, "origin", where),
    )
