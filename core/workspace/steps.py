"""Local steps: which commands run for an event, from the workspace's `.patchmoi.toml`.

A step is a command run in the workspace with a JSON context on stdin; its last stdout line is
`FLOW_RESULT {json}` (the codex-flows step contract). `[[steps]]` tables declare them:

    [[steps]]
    name = "rebuild"                       # unique in the workspace
    on = ["upstream.release"]              # event types it runs for
    command = ["./scripts/update.sh"]      # or builtin = "rebuild" (the git patch-stack rebuild)
    timeout = 600                          # seconds; the step is killed past it
    match = { repo = "acme/widget" }       # optional: payload fields that must be equal

A workspace with no `[[steps]]` gets the built-in patch-stack rebuild for upstream releases and branch
updates.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchmoi.core.errors import ConfigError

CONFIG_NAME = ".patchmoi.toml"
BUILTINS = {"rebuild": ("patchmoi.core.workspace.rebuild_step",)}
DEFAULT_TIMEOUT = 600.0
REBUILD_EVENTS = ("upstream.release", "upstream.branch_update")


@dataclass(frozen=True)
class Step:
    name: str
    on: tuple[str, ...]
    command: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    match: dict[str, Any] = field(default_factory=dict)
    builtin: str | None = None
    flow: str = "patchmoi"

    def matches(self, event: dict[str, Any]) -> bool:
        if event.get("type") not in self.on:
            return False
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        assert isinstance(payload, dict)
        return all(payload.get(k) == v for k, v in self.match.items())

    @property
    def runner(self) -> str:
        return f"builtin:{self.builtin}" if self.builtin else "command"


def builtin_command(name: str) -> tuple[str, ...]:
    return (sys.executable, "-m", *BUILTINS[name])


def read_config(workspace: Path) -> dict[str, Any]:
    path = workspace / CONFIG_NAME
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def load_steps(workspace: Path) -> list[Step]:
    config = read_config(workspace)
    raw_steps = config.get("steps")
    path = workspace / CONFIG_NAME
    if raw_steps is None:
        return [Step(name="rebuild", on=REBUILD_EVENTS, command=builtin_command("rebuild"), builtin="rebuild")]
    if not isinstance(raw_steps, list):
        raise ConfigError(f"{path}: 'steps' must be an array of tables ([[steps]])")
    steps = []
    names: set[str] = set()
    for i, raw in enumerate(raw_steps):
        where = f"{path}: steps[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: field 'name' is required")
        if name in names:
            raise ConfigError(f"{where}: field 'name' duplicates step {name!r}")
        names.add(name)
        on = raw.get("on")
        if isinstance(on, str):
            on = [on]
        if not isinstance(on, list) or not on or not all(isinstance(x, str) for x in on):
            raise ConfigError(f"{where} ({name}): field 'on' must list event types, e.g. [\"upstream.release\"]")
        builtin = raw.get("builtin")
        command = raw.get("command")
        if builtin is not None:
            if builtin not in BUILTINS:
                raise ConfigError(f"{where} ({name}): unknown builtin {builtin!r}; known: {', '.join(BUILTINS)}")
            argv = builtin_command(builtin)
        elif isinstance(command, str) and command.strip():
            argv = ("/bin/sh", "-c", command)
        elif isinstance(command, list) and command and all(isinstance(x, str) for x in command):
            argv = tuple(command)
        else:
            raise ConfigError(f"{where} ({name}): needs 'command' (string or array) or 'builtin'")
        timeout = raw.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{where} ({name}): field 'timeout' must be a positive number of seconds")
        match = raw.get("match", {})
        if not isinstance(match, dict):
            raise ConfigError(f"{where} ({name}): field 'match' must be a table")
        steps.append(
            Step(
                name=name,
                on=tuple(on),
                command=argv,
                timeout=float(timeout),
                match=match,
                builtin=builtin,
                flow=str(raw.get("flow", "patchmoi")),
            )
        )
    return steps


def matching_steps(workspace: Path, event: dict[str, Any]) -> list[Step]:
    return [step for step in load_steps(workspace) if step.matches(event)]
