"""`actions-local`: the workspace's steps run here, as `local`, with a memory of the events they ran for.

Spec §3: with no backend URL and `CODEX_WORKSPACE_MODE=actions` or `GITHUB_ACTIONS=true`, the original ran a
workspace's flows through codex-flows' Actions client, whose state persists in the workspace
(`.codex/workspace/actions/flow-client/state.json`) so that a scheduled CI job, which starts afresh every time,
does not run an event twice: a dispatch of an event already run is a duplicate that returns the runs it had
(`matched: 0`). Steps get `CODEX_HOME=<workspace>/.codex`.

Replay (decided here, the original's weakness 7): a replay runs the steps again, as its name says, and its runs
are remembered next to the first ones; the original answered it as a duplicate and ran nothing.

The state file is patchmoi's JSON under the key `patchmoiEvents`; any other key found in it (a file written by
the original's client) is kept as it was. It is written whole, to a temporary file renamed over it (0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from patchmoi.core.dispatch.contract import WorkspaceState
from patchmoi.core.dispatch.local import LocalTransport
from patchmoi.core.errors import StoreWriteError
from patchmoi.core.fsutil import FILE_MODE, ensure_dir
from patchmoi.core.log import log_event
from patchmoi.core.procs import pid_alive
from patchmoi.core.records import now_iso

STATE_PATH = Path(".codex/workspace/actions/flow-client/state.json")
KEY = "patchmoiEvents"
ACTIONS_ENV = (("CODEX_WORKSPACE_MODE", "actions"), ("GITHUB_ACTIONS", "true"))


def actions_mode(env: dict[str, str] | Any) -> bool:
    """`CODEX_WORKSPACE_MODE=actions` or `GITHUB_ACTIONS=true` (case and spaces aside)."""
    return any(str(env.get(name) or "").strip().lower() == value for name, value in ACTIONS_ENV)


class ActionsState:
    """The events a workspace's steps ran for, and their runs: `{eventId: {runIds, replays, at}}`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @staticmethod
    def path(workspace: Path) -> Path:
        return workspace / STATE_PATH

    def _read(self, workspace: Path) -> dict[str, Any]:
        path = self.path(workspace)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # not ours to repair: set it aside, so the events it held run again rather than never
            aside = path.with_name(f"{path.name}.unreadable-{now_iso().replace(':', '')}")
            with contextlib.suppress(OSError):
                path.rename(aside)
            log_event("dispatch.actions_state_unreadable", path=str(path), error=str(exc), keptAs=aside.name)
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self, workspace: Path) -> Iterator[None]:
        """One process at a time, between reading the state and writing it (serve's API process and its
        worker, two CLI retries, a retry and a scheduled poll can share a workspace)."""
        lock = self.path(workspace).with_name("state.json.lock")
        try:
            ensure_dir(lock.parent)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StoreWriteError(f"cannot lock the Actions state {lock}: {exc.strerror or exc}") from exc
        try:
            with self._lock:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _events(self, workspace: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state file's contents and its `patchmoiEvents` table, which is part of them (edit it in place)."""
        data = self._read(workspace)
        if not isinstance(data.get(KEY), dict):
            data[KEY] = {}
        return data, data[KEY]

    def claim(
        self, workspace: Path, event_id: str, operation: str, finished: Callable[[list[str]], bool]
    ) -> list[str] | None:
        with self._locked(workspace):
            data, events = self._events(workspace)
            entry = events.get(event_id) if isinstance(events.get(event_id), dict) else None
            if entry is not None and operation != "replay":
                run_ids = [str(r) for r in entry.get("runIds") or []]
                starting = not run_ids and pid_alive(entry.get("pid"))  # claimed by a live process, runs not yet
                if starting or (run_ids and finished(run_ids)):
                    return run_ids
            # not run here, or its runs were interrupted (a cancelled job): this process runs it now
            claimed = {**(entry or {}), "pid": os.getpid(), "claimedAt": now_iso()}
            if operation != "replay" or entry is None:
                claimed = {**claimed, "runIds": [], "replays": (entry or {}).get("replays", [])}
            events[event_id] = claimed
            self._write(self.path(workspace), data)
            return None

    def remember(self, workspace: Path, event_id: str, run_ids: list[str], operation: str) -> None:
        with self._locked(workspace):
            data, events = self._events(workspace)
            entry = events.get(event_id) if isinstance(events.get(event_id), dict) else {}
            assert isinstance(entry, dict)
            if operation == "replay" and entry.get("runIds"):
                entry = {**entry, "replays": [*entry.get("replays", []), {"runIds": run_ids, "at": now_iso()}]}
            else:
                entry = {**entry, "runIds": run_ids, "at": now_iso()}
            events[event_id] = {k: v for k, v in entry.items() if k not in ("pid", "claimedAt")}
            self._write(self.path(workspace), data)

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            ensure_dir(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreWriteError(f"cannot write the Actions state {path}: {exc.strerror or exc}") from exc

    @staticmethod
    def step_env(workspace: Path) -> dict[str, str]:
        return {"CODEX_HOME": str(workspace / ".codex")}


class ActionsTransport(LocalTransport):
    name = "actions-local"
    workspace_state: WorkspaceState | None = ActionsState()


ACTIONS_TRANSPORT = ActionsTransport()
