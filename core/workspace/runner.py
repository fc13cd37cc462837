"""Run one local step as a subprocess with a timeout and turn its `FLOW_RESULT` into a run record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from patchmoi.core.records import NEEDS_ATTENTION, RESULT_STATUSES, RunStatus, now_iso
from patchmoi.core.workspace.steps import Step

RESULT_PREFIX = "FLOW_RESULT "
OUTPUT_LIMIT = 64 * 1024


def parse_flow_result(stdout: str) -> dict[str, Any] | None:
    """The last non-empty stdout line, if it is `FLOW_RESULT {json}` with a valid status."""
    lines = [line for line in stdout.splitlines() if line.strip()]
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
    context = {
        "event": event,
        "run": {"id": run["id"], "flowName": step.flow, "stepName": step.name},
        "workspace": str(workspace),
        "dataDir": str(data_dir),
    }
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
    try:
        proc = await asyncio.create_subprocess_exec(
            *step.command,
            cwd=workspace,
            env=child_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return _finish(finished, RunStatus.FAILED, None, f"could not start step {step.name!r}: {exc}", b"", b"")
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(context).encode()), step.timeout)
    except TimeoutError:
        await _kill_group(proc)
        out = await _drain(proc)
        message = f"step {step.name!r} timed out after {step.timeout:.0f}s and was killed"
        return _finish(finished, RunStatus.FAILED, None, message, out[0], out[1])
    except asyncio.CancelledError:
        await _kill_group(proc)
        raise
    payload = parse_flow_result(stdout.decode("utf-8", "replace"))
    if proc.returncode != 0 and payload is None:
        err = stderr.decode("utf-8", "replace").strip().splitlines()
        message = f"step {step.name!r} exited with {proc.returncode}" + (f": {err[-1][:300]}" if err else "")
        return _finish(finished, RunStatus.FAILED, None, message, stdout, stderr)
    if payload is None:
        return _finish(
            finished,
            RunStatus.FAILED,
            None,
            f"step {step.name!r} printed no FLOW_RESULT line (its last stdout line must be "
            "'FLOW_RESULT {\"status\": ...}')",
            stdout,
            stderr,
        )
    return _finish(
        finished, RunStatus.COMPLETED if proc.returncode == 0 else RunStatus.FAILED, payload, None, stdout, stderr
    )


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
