"""A fork's `.patchmoi.toml` (spec §8 defaults, plus series, verify, conflict, candidate and adopt settings).

    [git]
    upstreamRemote = "upstream"     # the remote that follows the upstream project
    upstreamBranch = "main"
    forkRemote = "origin"
    targetBranch = "main"           # the fork's maintained branch (upstream + patches)
    patchPrefix = "patch/"          # one branch per patch (one or more commits), natural name order
    series = "branches"             # or "linear": the commits of targetBranch above the upstream base
    upstreamRepo = "acme/widget"    # optional: events for another repo are skipped

    [fetch]
    allowFetch = false              # fetch the upstream remote before a rebuild
    fetchTags = true
    prune = true

    [verify]
    commands = ["make test"]        # run in the rebuilt worktree; a failure needs intervention
    timeout = 600

    [conflict]
    command = "my-agent resolve"    # optional: run in the worktree on a conflict; it must `git add`/`git rm`
    timeout = 900

    [candidate]
    refPrefix = "refs/heads/candidate/"
    push = false                    # push the candidate with --force-with-lease
    pushRemote = "origin"
    keep = 5                        # candidate refs kept by `patchmoi gc` (besides those awaiting adoption)

    [adopt]
    mode = "manual"                 # or "clean": adopt a clean, verified `changed` rebuild automatically
    pushRemote = "origin"           # optional: push main and the patch branches with --force-with-lease

Keys may also be written in snake_case (`upstream_remote`). Unknown tables and keys are errors (with a
"did you mean" hint): a typo such as `[verfy]` must not silently switch verification off.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchmoi.core.errors import ConfigError
from patchmoi.core.workspace.steps import CONFIG_NAME, read_config

SERIES_MODES = ("branches", "linear")
ADOPT_MODES = ("manual", "clean")

# Known tables and their keys (camelCase; snake_case spellings are accepted too). `safety` and `steps` are
# validated elsewhere (steps) or belong to the Bun-era MCP server (safety), so their keys are not checked here.
KNOWN: dict[str, frozenset[str] | None] = {
    "git": frozenset(
        {
            "upstreamRemote",
            "upstreamBranch",
            "forkRemote",
            "targetBranch",
            "patchPrefix",
            "series",
            "upstreamRepo",
            "upstreamUrl",
        }
    ),
    "fetch": frozenset({"allowFetch", "fetchTags", "prune", "pruneTags"}),
    "verify": frozenset({"commands", "timeout"}),
    "conflict": frozenset({"command", "timeout"}),
    "candidate": frozenset({"refPrefix", "push", "pushRemote", "keep"}),
    "adopt": frozenset({"mode", "pushRemote"}),
    "steps": None,
    "safety": None,
    "flows": frozenset({"discover"}),  # read by core.workspace.steps
}
TOP_LEVEL_KEYS = frozenset({"conflictCommand"})


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
    series: str = "branches"
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
    keep_candidates: int = 5
    adopt_mode: str = "manual"
    adopt_push_remote: str | None = None

    @property
    def upstream_ref(self) -> str:
        return f"refs/remotes/{self.upstream_remote}/{self.upstream_branch}"


def find_config(start: Path) -> Path | None:
    """The nearest `.patchmoi.toml` at or above `start`."""
    for folder in [start, *start.parents]:
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    return None


def _hint(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_known(raw: dict[str, Any], where: str) -> None:
    """Reject unknown tables and keys, naming the file and suggesting the closest known name."""
    for name, value in raw.items():
        if name in KNOWN or name in TOP_LEVEL_KEYS or _snake(name) in {_snake(k) for k in TOP_LEVEL_KEYS}:
            continue
        kind = "table" if isinstance(value, dict) else "key"
        raise ConfigError(
            f"{where}: unknown {kind} [{name}]{_hint(name, sorted([*KNOWN, *TOP_LEVEL_KEYS]))}; "
            f"known tables: {', '.join(f'[{k}]' for k in KNOWN)}"
        )
    for table_name, keys in KNOWN.items():
        table = raw.get(table_name)
        if keys is None or not isinstance(table, dict):
            continue
        spellings = {spelling: key for key in keys for spelling in (key, _snake(key))}
        for key in table:
            if key not in spellings:
                raise ConfigError(
                    f"{where}: unknown key '{key}' in [{table_name}]"
                    f"{_hint(key, sorted(spellings))}; known keys: {', '.join(sorted(keys))}"
                )


def _get(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, table.get(_snake(key), default))
    if value is default:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is str and not value) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _choice(table: dict[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = _get(table, key, str, choices[0], where)
    if value not in choices:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return str(value)


def load_fork_config(repo: Path) -> ForkConfig:
    found = find_config(repo)
    if found is None:
        return ForkConfig(path=None)
    raw = read_config(found.parent)
    where = str(found)
    check_known(raw, where)

    def table(name: str) -> dict[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        return value

    g, f, v, c, cand, adopt = (table(n) for n in ("git", "fetch", "verify", "conflict", "candidate", "adopt"))
    prefix = _get(g, "patchPrefix", str, "patch/", where)
    commands = v.get("commands", [])
    if isinstance(commands, str):
        commands = [commands]
    if not isinstance(commands, list) or not all(isinstance(x, str) and x for x in commands):
        raise ConfigError(f"{where}: [verify] commands must be a list of shell commands")
    conflict = c.get("command", raw.get("conflict_command", raw.get("conflictCommand")))
    if conflict is not None and (not isinstance(conflict, str) or not conflict.strip()):
        raise ConfigError(f"{where}: [conflict] command must be a shell command")
    keep = _get(cand, "keep", int, 5, where)
    if keep < 0:
        raise ConfigError(f"{where}: [candidate] keep must be 0 or more, got {keep}")
    return ForkConfig(
        path=found,
        upstream_remote=_get(g, "upstreamRemote", str, "upstream", where),
        upstream_branch=_get(g, "upstreamBranch", str, "main", where),
        fork_remote=_get(g, "forkRemote", str, "origin", where),
        target_branch=_get(g, "targetBranch", str, "main", where),
        patch_prefix=prefix if prefix.endswith("/") else prefix + "/",
        series=_choice(g, "series", SERIES_MODES, where),
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
        keep_candidates=keep,
        adopt_mode=_choice(adopt, "mode", ADOPT_MODES, where),
        adopt_push_remote=_get(adopt, "pushRemote", str, None, where),
    )
