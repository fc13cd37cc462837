"""Local steps: which commands run for an event, from the workspace's `.patchmoi.toml` and its codex-flows.

A step is a command run in the workspace with a JSON context on stdin; its last stdout line is
`FLOW_RESULT {json}` (the codex-flows step contract). `[[steps]]` tables declare them:

    [[steps]]
    name = "rebuild"                       # unique in the workspace
    on = ["upstream.release"]              # event types it runs for
    command = ["./scripts/update.sh"]      # or builtin = "rebuild" (the git patch-stack rebuild)
    timeout = 600                          # seconds; the step is killed past it
    match = { repo = "acme/widget" }       # optional: payload fields that must be equal

The workspace's codex-flows flows (`.codex/flows/*/flow.toml`, `flows/*/flow.toml`: core/workspace/flows.py)
add their steps after these: a flow step matches when its trigger type is the event's and the payload satisfies
its JSON Schema, runs `bun <script>` in the flow directory, and reads the codex-flows context on stdin.

Flows are read in a workspace built for codex-flows (one without `.patchmoi.toml`). In a patchmoi workspace
(one with `.patchmoi.toml`) they are read only when it asks, with `[flows] discover = true`: a fork of a project
that ships flows of its own (codex-flows itself does) must not start running them.

A workspace whose steps come to nothing (no `[[steps]]` key and no flows read) gets the built-in patch-stack
rebuild for upstream releases and branch updates; one with flows but no `[[steps]]` runs only its flows (add a
`builtin = "rebuild"` step to run both).
"""

from __future__ import annotations

import copy
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchmoi.core.errors import ConfigError
from patchmoi.core.workspace import flows as codex_flows
from patchmoi.core.workspace.filecache import FileCache

CONFIG_NAME = ".patchmoi.toml"
BUILTINS = {"rebuild": ("patchmoi.core.workspace.rebuild_step",)}
DEFAULT_TIMEOUT = 600.0
REBUILD_EVENTS = ("upstream.release", "upstream.branch_update")


@dataclass(frozen=True)
class CodexFlowStep:
    """What a codex-flows step (flow.toml) adds to a Step: its flow, runner, trigger schema and context."""

    flow: codex_flows.Flow
    step: codex_flows.FlowStep

    @property
    def runner(self) -> str:
        return self.step.runner  # "bun" | "code-mode"

    @property
    def version(self) -> int | float:
        return self.flow.version

    def accepts(self, payload: Any) -> bool:
        return codex_flows.accepts(self.flow, self.step, payload)

    def context(self, event: dict[str, Any]) -> dict[str, Any]:
        """The stdin of a codex-flows step (its FlowRunContext)."""
        flow: dict[str, Any] = {
            "name": self.flow.name,
            "version": self.flow.version,
            "root": str(self.flow.root),
            "step": self.step.name,
        }
        if self.flow.config is not None:
            flow["config"] = self.flow.config
        flow["event"] = event
        return {"flow": flow}


@dataclass(frozen=True)
class Step:
    name: str
    on: tuple[str, ...]
    command: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT  # seconds
    match: dict[str, Any] = field(default_factory=dict)
    builtin: str | None = None
    flow: str = "patchmoi"
    cwd: Path | None = None  # None: the workspace
    codex: CodexFlowStep | None = None  # set for a flow.toml step

    def matches(self, event: dict[str, Any]) -> bool:
        if event.get("type") not in self.on:
            return False
        if self.codex is not None:
            return self.codex.accepts(event.get("payload"))
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        assert isinstance(payload, dict)
        return all(payload.get(k) == v for k, v in self.match.items())

    @property
    def runner(self) -> str:
        if self.codex is not None:
            return self.codex.runner
        return f"builtin:{self.builtin}" if self.builtin else "command"

    @property
    def flow_version(self) -> int | float | None:
        return None if self.codex is None else self.codex.version

    @property
    def label(self) -> str:
        """How messages name the step: `flow/step` for a flow.toml step, the step name otherwise."""
        return self.name if self.codex is None else f"{self.flow}/{self.name}"


def builtin_command(name: str) -> tuple[str, ...]:
    return (sys.executable, "-m", *BUILTINS[name])


def _parse_config(path: Path, data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


_CONFIGS: FileCache[dict[str, Any]] = FileCache(_parse_config)


def read_config(workspace: Path) -> dict[str, Any]:
    """`.patchmoi.toml` as a new dict (parsed once per change of the file: a burst of dispatches reads it
    once); `{}` when there is none."""
    path = workspace / CONFIG_NAME
    try:
        return copy.deepcopy(_CONFIGS.get(path))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_steps(workspace: Path) -> list[Step]:
    """`.patchmoi.toml` steps, then the codex-flows steps; the built-in rebuild when neither declares any."""
    own = config_steps(workspace)
    flow_steps = codex_flow_steps(workspace) if reads_flows(workspace) else []
    if own is None and not flow_steps:
        return [Step(name="rebuild", on=REBUILD_EVENTS, command=builtin_command("rebuild"), builtin="rebuild")]
    return [*(own or []), *flow_steps]


def reads_flows(workspace: Path) -> bool:
    """Without `.patchmoi.toml`, always; with it, when its `[flows]` table says `discover = true`."""
    if not (workspace / CONFIG_NAME).exists():
        return True
    table = read_config(workspace).get("flows")
    if table is None:
        return False
    if not isinstance(table, dict) or not isinstance(table.get("discover", False), bool):
        raise ConfigError(f"{workspace / CONFIG_NAME}: [flows] discover must be true or false")
    return bool(table.get("discover", False))


def codex_flow_steps(workspace: Path) -> list[Step]:
    """One Step per step of the workspace's flow.toml flows (a step without a trigger matches nothing)."""
    steps = []
    for flow in codex_flows.discover_flows(workspace):
        for fs in flow.steps:
            steps.append(
                Step(
                    name=fs.name,
                    on=(fs.trigger_type,) if fs.trigger_type else (),
                    command=("bun", str(flow.script_path(fs))) if fs.runner == "bun" else (),
                    timeout=fs.timeout_ms / 1000,
                    flow=flow.name,
                    cwd=flow.cwd_path(fs),
                    codex=CodexFlowStep(flow, fs),
                )
            )
    return steps


def config_steps(workspace: Path) -> list[Step] | None:
    """The `[[steps]]` of `.patchmoi.toml`; None when it declares none (no file, or no `steps` key)."""
    config = read_config(workspace)
    raw_steps = config.get("steps")
    path = workspace / CONFIG_NAME
    if raw_steps is None:
        return None
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
