"""Run one local step as a subprocess with a timeout and turn its `FLOW_RESULT` into a run record.

A `.patchmoi.toml` step runs its command in the workspace with patchmoi's context on stdin. A codex-flows step
(flow.toml) runs as codex-flows runs it: `bun <script>` in the flow directory (or its `cwd`), the codex-flows
context `{"flow": {...}}` on stdin, and its result is the last stdout line that contains `FLOW_RESULT `. A
`code-mode` step needs the codex app-server, which patchmoi does not have: it is a `failed` run that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from patchmoi.core.records import NEEDS_ATTENTION, RESULT_STATUSES, RunStatus, now_iso
from patchmoi.core.workspace.steps import Step

RESULT_PREFIX = "FLOW_RESULT "
OUTPUT_LIMIT = 64 * 1024


def parse_flow_result(stdout: str, *, codex: bool = False) -> dict[str, Any] | None:
    """The last non-empty stdout line, if it is `FLOW_RESULT {json}` with a valid status.

    With `codex` (a flow.toml step), codex-flows' rule: the last line containing `FLOW_RESULT `, wherever it is in
    the line and whatever lines follow it (it accepts everything the first rule does)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if codex:
        found = [line[line.index(RESULT_PREFIX) :] for line in lines if RESULT_PREFIX in line]
        lines = found[-1:]
    if not lines or not lines[-1].startswith(RESULT_PREFIX):
        return None
    try:
        payload = json.loads(lines[-1][len(RESULT_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("status") not in RESULT_STATUSES:
        return None
    return payload


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= OUTPUT_LIMIT else "…" + text[-OUTPUT_LIMIT:]


async def execute_step(
    step: Step,
    run: dict[str, Any],
    event: dict[str, Any],
    workspace: Path,
    *,
    data_dir: Path,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the step; returns the finished run record. Never raises for step failures."""
    started = now_iso()
    codex = step.codex
    if codex is None:
        context: dict[str, Any] = {
            "event": event,
            "run": {"id": run["id"], "flowName": step.flow, "stepName": step.name},
            "workspace": str(workspace),
            "dataDir": str(data_dir),
        }
        stdin = json.dumps(context).encode()
    else:  # as codex-flows writes it: pretty-printed, with a final newline
        stdin = (json.dumps(codex.context(event), indent=2, default=_toml_json) + "\n").encode()
    child_env = dict(os.environ if env is None else env)
    child_env.update(
        {
            "PATCHMOI_RUN_ID": str(run["id"]),
            "PATCHMOI_EVENT_ID": str(event.get("id")),
            "PATCHMOI_DATA_DIR": str(data_dir),
            "PATCHMOI_WORKSPACE": str(workspace),
            "PYTHONUNBUFFERED": "1",
        }
    )
    finished: dict[str, Any] = dict(run)
    finished["startedAt"] = started
    argv = step.command
    cwd = step.cwd or workspace
    if codex is not None:
        finished.update({"flowName": step.flow, "flowVersion": codex.version, "runner": codex.runner})
        if codex.runner == "code-mode":
            message = (
                f"runner code-mode: step {step.label!r} needs the codex app-server (Code Mode), which patchmoi "
                "does not run; run this flow under codex-flows, or make the step a bun step"
            )
            return _finish(finished, RunStatus.FAILED, None, message, b"", b"")
        bun = shutil.which(argv[0], path=child_env.get("PATH", os.defpath))
        if bun is None:
            message = f"runner bun: `bun` not found on PATH (step {step.label!r}); install Bun or add it to PATH"
            return _finish(finished, RunStatus.FAILED, None, message, b"", b"")
        argv = (bun, *argv[1:])
        if not cwd.is_dir():
            message = f"step {step.label!r}: its working directory {cwd} does not exist ({codex.flow.manifest})"
            return _finish(finished, RunStatus.FAILED, None, message, b"", b"")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=child_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return _finish(finished, RunStatus.FAILED, None, f"could not start step {step.label!r}: {exc}", b"", b"")
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), step.timeout)
    except TimeoutError:
        await _kill_group(proc)
        out = await _drain(proc)
        limit = f"{step.timeout:.0f}s" if codex is None else f"{step.timeout * 1000:.0f} ms (timeout_ms)"
        message = f"step {step.label!r} timed out after {limit} and was killed"
        return _finish(finished, RunStatus.FAILED, None, message, out[0], out[1])
    except asyncio.CancelledError:
        await _kill_group(proc)
        raise
    payload = parse_flow_result(stdout.decode("utf-8", "replace"), codex=codex is not None)
    if proc.returncode != 0 and payload is None:
        err = stderr.decode("utf-8", "replace").strip().splitlines()
        message = f"step {step.label!r} exited with {proc.returncode}" + (f": {err[-1][:300]}" if err else "")
        return _finish(finished, RunStatus.FAILED, None, message, stdout, stderr)
    if payload is None:
        return _finish(
            finished,
            RunStatus.FAILED,
            None,
            f"step {step.label!r} printed no FLOW_RESULT line (its last stdout line must be "
            "'FLOW_RESULT {\"status\": ...}')"
            if codex is None
            else f"step {step.label!r} printed no valid FLOW_RESULT line (a stdout line "
            "'FLOW_RESULT {\"status\": ...}' with a known status)",
            stdout,
            stderr,
        )
    return _finish(
        finished, RunStatus.COMPLETED if proc.returncode == 0 else RunStatus.FAILED, payload, None, stdout, stderr
    )


def _toml_json(value: object) -> str:
    """TOML dates and times in a flow's [config], as JSON strings."""
    iso = getattr(value, "isoformat", None)
    if callable(iso):
        return str(iso())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finish(
    run: dict[str, Any],
    process_status: str,
    payload: dict[str, Any] | None,
    error: str | None,
    stdout: bytes,
    stderr: bytes,
) -> dict[str, Any]:
    result_status = payload.get("status") if payload else None
    effective = result_status or process_status
    run.update(
        {
            "processStatus": process_status,
            "status": effective,
            "effectiveStatus": effective,
            "needsAttention": effective in NEEDS_ATTENTION,
            "completedAt": now_iso(),
            "output": [
                o
                for o in ({"kind": "stdout", "text": _tail(stdout)}, {"kind": "stderr", "text": _tail(stderr)})
                if o["text"]
            ],
        }
    )
    if result_status:
        run["resultStatus"] = result_status
    if payload is not None:
        run["resultPayload"] = payload
        if isinstance(payload.get("log"), list):
            run["log"] = payload["log"]
    if error:
        run["error"] = error
    return run


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
            return
        except TimeoutError:
            continue


async def _drain(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    out = b""
    err = b""
    with contextlib.suppress(Exception):
        if proc.stdout is not None:
            out = await asyncio.wait_for(proc.stdout.read(), 1.0)
        if proc.stderr is not None:
            err = await asyncio.wait_for(proc.stderr.read(), 1.0)
    return out, err
