"""codex-flows workspaces: `flow.toml` flows under `<workspace>/.codex/flows/*/` and `<workspace>/flows/*/`.

The format is the one codex-flows' flow runtime reads, so a workspace built for the original runs unchanged:

    name = "demo"                       # required; the first flow of a name wins (.codex/flows before flows/)
    version = 1                         # required number
    description = "..."                 # optional
    [config]                            # optional table, handed to every step as flow.config

    [[steps]]                           # at least one
    name = "hello"
    runner = "bun"                      # or "code-mode" (needs the codex app-server: patchmoi fails such runs)
    script = "exec/hello.ts"            # relative to the flow directory; run as `bun <script>`
    timeout_ms = 30000                  # default 300000
    cwd = "."                           # optional, relative to the flow directory (the default)
    [steps.trigger]                     # optional: a step without a trigger never runs
    type = "upstream.release"           # the event type
    schema = "schemas/release.json"     # optional JSON Schema file the event payload must satisfy

Flow directories are read in name order, `.codex/flows` first; a directory without `flow.toml` (or a symlink)
is skipped, as codex-flows does. Every `flow.toml` found is validated, even one whose name an earlier flow
already took. Parsed manifests and compiled schemas are cached by file identity (mtime, ctime, size, inode), so
dispatching many events does not read the same files again, and an edited file is read afresh.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchmoi.core.errors import ConfigError
from patchmoi.core.workspace.filecache import FileCache

FLOW_DIRS = (os.path.join(".codex", "flows"), "flows")
MANIFEST_NAME = "flow.toml"
RUNNERS = ("bun", "code-mode")
DEFAULT_TIMEOUT_MS = 300_000
# codex-flows' own keys; anything else is ignored (as codex-flows does) and `patchmoi doctor` warns about it.
FLOW_KEYS = ("name", "version", "description", "config", "guidance", "steps")
STEP_KEYS = ("name", "runner", "script", "timeout_ms", "cwd", "trigger")
TRIGGER_KEYS = ("type", "schema")


@dataclass(frozen=True)
class FlowStep:
    name: str
    runner: str  # "bun" | "code-mode"
    script: str
    timeout_ms: float
    cwd: str | None = None
    trigger_type: str | None = None
    schema: str | None = None
    index: int = 0


@dataclass(frozen=True)
class Flow:
    name: str
    version: int | float
    root: Path  # the flow's directory (absolute)
    manifest: Path  # its flow.toml
    steps: tuple[FlowStep, ...]
    description: str | None = None
    config: dict[str, Any] | None = None
    ignored: tuple[str, ...] = ()  # keys codex-flows does not know either: `patchmoi doctor` warns

    def script_path(self, step: FlowStep) -> Path:
        return Path(os.path.normpath(self.root / step.script))

    def cwd_path(self, step: FlowStep) -> Path:
        return Path(os.path.normpath(self.root / step.cwd)) if step.cwd else self.root

    def schema_path(self, step: FlowStep) -> Path | None:
        return Path(os.path.normpath(self.root / step.schema)) if step.schema else None

    def where(self, step: FlowStep) -> str:
        return f"{self.manifest}: steps[{step.index}] ({step.name})"


class PayloadSchema:
    """A compiled JSON Schema (the draft named by `$schema`, 2020-12 when none is named)."""

    def __init__(self, path: Path, validator: Any) -> None:
        self.path = path
        self._validator = validator

    def accepts(self, payload: Any) -> bool:
        try:
            return bool(self._validator.is_valid(payload))
        except RecursionError:
            raise ConfigError(f"{self.path}: the schema recurses without end") from None
        except Exception as exc:  # jsonschema's reference errors (a $ref patchmoi will not fetch, a bad pointer)
            raise ConfigError(f"{self.path}: cannot apply the schema: {exc}") from None


# -- cache ---------------------------------------------------------------------------------------------------


# -- flow.toml -----------------------------------------------------------------------------------------------


def _hint(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _required_string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: field '{key}' is required (a non-empty string)")
    return value


def _optional_string(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: field '{key}' must be a string")
    return value


def _parse_manifest(path: Path, data: bytes) -> Flow:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    where = str(path)
    name = _required_string(raw, "name", where)
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int | float) or not math.isfinite(version):
        raise ConfigError(f"{where}: field 'version' is required (a number, e.g. version = 1)")
    description = _optional_string(raw, "description", where)
    config = raw.get("config")
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"{where}: field 'config' must be a table ([config])")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{where}: field 'steps' is required: at least one [[steps]] table")
    ignored = [f"{k}{_hint(k, FLOW_KEYS)}" for k in raw if k not in FLOW_KEYS]
    steps: list[FlowStep] = []
    for i, item in enumerate(raw_steps):
        at = f"{where}: steps[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at}: must be a table ([[steps]])")
        step_name = _required_string(item, "name", at)
        at = f"{at} ({step_name})"
        if any(s.name == step_name for s in steps):
            raise ConfigError(f"{at}: field 'name' duplicates an earlier step of this flow")
        runner = item.get("runner")
        if runner not in RUNNERS:
            raise ConfigError(f'{at}: field \'runner\' must be "bun" or "code-mode", not {runner!r}')
        script = _required_string(item, "script", at)
        timeout_ms = item.get("timeout_ms", DEFAULT_TIMEOUT_MS)
        if (
            isinstance(timeout_ms, bool)
            or not isinstance(timeout_ms, int | float)
            or not math.isfinite(timeout_ms)
            or timeout_ms <= 0
        ):
            raise ConfigError(f"{at}: field 'timeout_ms' must be a positive number of milliseconds")
        cwd = _optional_string(item, "cwd", at)
        trigger = item.get("trigger")
        trigger_type = schema = None
        if trigger is not None:
            if not isinstance(trigger, dict):
                raise ConfigError(f"{at}: field 'trigger' must be a table ([steps.trigger])")
            trigger_type = _required_string(trigger, "type", f"{at}: trigger")
            schema = _optional_string(trigger, "schema", f"{at}: trigger")
            ignored += [f"steps[{i}].trigger.{k}{_hint(k, TRIGGER_KEYS)}" for k in trigger if k not in TRIGGER_KEYS]
        ignored += [f"steps[{i}].{k}{_hint(k, STEP_KEYS)}" for k in item if k not in STEP_KEYS]
        steps.append(
            FlowStep(
                name=step_name,
                runner=str(runner),
                script=script,
                timeout_ms=float(timeout_ms),
                cwd=cwd or None,
                trigger_type=trigger_type,
                schema=schema or None,
                index=i,
            )
        )
    return Flow(
        name=name,
        version=version,
        root=path.parent,
        manifest=path,
        steps=tuple(steps),
        description=description,
        config=config,
        ignored=tuple(ignored),
    )


def _compile_schema(path: Path, data: bytes) -> PayloadSchema:
    import jsonschema  # type: ignore[import-untyped]  # imported on first use: ~80 ms that most commands never need
    import referencing

    try:
        schema = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"{path}: a JSON Schema must be a JSON object")
    cls = jsonschema.validators.validator_for(schema, default=None)
    if cls is None:
        if "$schema" in schema:
            raise ConfigError(f"{path}: unknown $schema {schema['$schema']!r} (use a JSON Schema draft's URI)")
        cls = jsonschema.Draft202012Validator
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ConfigError(f"{path}: not a valid JSON Schema at {at}: {exc.message}") from None
    # An empty registry: a $ref resolves inside the schema only; nothing is fetched from the network.
    return PayloadSchema(path, cls(schema, registry=referencing.Registry()))


_MANIFESTS: FileCache[Flow] = FileCache(_parse_manifest)
_SCHEMAS: FileCache[PayloadSchema] = FileCache(_compile_schema)


def cache_stats() -> dict[str, int]:
    """How many times a flow.toml or a schema file was read and parsed (for tests and benchmarks)."""
    return {"manifestReads": _MANIFESTS.reads, "schemaReads": _SCHEMAS.reads}


def clear_cache() -> None:
    _MANIFESTS.clear()
    _SCHEMAS.clear()


def load_flow(directory: Path) -> Flow:
    path = directory / MANIFEST_NAME
    try:
        return _MANIFESTS.get(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def payload_schema(flow: Flow, step: FlowStep) -> PayloadSchema | None:
    path = flow.schema_path(step)
    if path is None:
        return None
    try:
        return _SCHEMAS.get(path)
    except OSError as exc:
        raise ConfigError(f"{flow.where(step)}: trigger.schema {path}: cannot read: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{flow.where(step)}: trigger.schema {exc}") from None


def accepts(flow: Flow, step: FlowStep, payload: Any) -> bool:
    """Whether the payload satisfies the step's trigger schema (True without one); ConfigError naming the step
    and the schema file when the schema cannot be read, compiled or applied."""
    schema = payload_schema(flow, step)
    try:
        return schema is None or schema.accepts(payload)
    except ConfigError as exc:
        raise ConfigError(f"{flow.where(step)}: trigger.schema {exc}") from None


# -- discovery -----------------------------------------------------------------------------------------------


def _flow_dirs(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigError(f"{root}: cannot list flows: {exc}") from None


def scan_flows(workspace: Path) -> list[Flow]:
    """Every flow.toml in discovery order, shadowed ones included; ConfigError for the first invalid one."""
    base = Path(os.path.abspath(workspace))
    flows = []
    for sub in FLOW_DIRS:
        for directory in _flow_dirs(base / sub):
            if os.path.isfile(directory / MANIFEST_NAME):  # as codex-flows: no flow.toml, no flow
                flows.append(load_flow(directory))
    return flows


def discover_flows(workspace: Path) -> list[Flow]:
    """The workspace's flows: the first of each name, `.codex/flows` before `flows`, each in name order."""
    seen: set[str] = set()
    flows = []
    for flow in scan_flows(workspace):
        if flow.name not in seen:
            seen.add(flow.name)
            flows.append(flow)
    return flows


# -- doctor --------------------------------------------------------------------------------------------------


def doctor_findings(workspace: Path, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(status, detail) lines about the workspace's flows; none when it has no flow.toml."""
    try:
        found = scan_flows(workspace)
    except ConfigError as exc:
        return [("FAIL", str(exc))]
    if not found:
        return []
    flows = discover_flows(workspace)
    findings: list[tuple[str, str]] = []
    kept = {flow.name: flow for flow in flows}
    for flow in found:
        if kept[flow.name] is not flow:
            findings.append(("WARN", f"{flow.manifest}: ignored: flow {flow.name!r} is {kept[flow.name].manifest}"))
    needs_bun: list[str] = []
    steps = 0
    for flow in flows:
        if flow.ignored:
            findings.append(("WARN", f"{flow.manifest}: unknown key(s) ignored: {', '.join(flow.ignored)}"))
        for step in flow.steps:
            steps += 1
            label = f"{flow.name}/{step.name}"
            try:
                payload_schema(flow, step)
            except ConfigError as exc:
                findings.append(("FAIL", str(exc)))
            if step.trigger_type is None:
                continue  # never runs: nothing else can go wrong
            if step.runner == "code-mode":
                findings.append(
                    (
                        "WARN",
                        f"step {label} uses runner code-mode, which needs the codex app-server: patchmoi cannot "
                        "run it, so its runs will fail (run it under codex-flows, or make it a bun step)",
                    )
                )
                continue
            needs_bun.append(label)
            if not flow.script_path(step).is_file():
                findings.append(("WARN", f"step {label}: script {flow.script_path(step)} does not exist"))
            if not flow.cwd_path(step).is_dir():
                findings.append(("WARN", f"step {label}: cwd {flow.cwd_path(step)} is not a directory"))
    if needs_bun and shutil.which("bun", path=env.get("PATH", os.defpath)) is None:
        findings.append(("WARN", f"runner bun: `bun` not found on PATH: step(s) {', '.join(needs_bun)} will fail"))
    if not any(status == "FAIL" for status, _ in findings):
        names = ", ".join(f"{f.name} v{f.version:g}" for f in flows)
        findings.insert(0, ("PASS", f"{len(flows)} flow(s), {steps} step(s): {names}"))
    return findings
