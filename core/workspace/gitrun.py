"""Git commands with a run log: every command, its exit code, trimmed output and duration.

Commands run the git CLI directly (one process per call, as GitPython's command layer does too): importing
GitPython costs ~70 ms per step process, a third of a typical step's own overhead (bench/rebuild_bench.py),
and the CLI's text is what the run log shows an operator anyway. GitPython's object model is used where a
short-lived command inspects a repository (`patch doctor`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchmoi.core.errors import GitFailure

OUTPUT_LIMIT = 4000
COMMITTER = {"GIT_COMMITTER_NAME": "patchmoi", "GIT_COMMITTER_EMAIL": "patchmoi@localhost"}


def trim(text: str, limit: int = OUTPUT_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit // 2] + "\n…\n" + text[-limit // 2 :]


@dataclass
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        return "\n".join(x for x in (self.stdout, self.stderr) if x)


@dataclass
class RunLog:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: CommandResult, cwd: Path) -> None:
        self.entries.append(
            {
                "command": result.command,
                "cwd": str(cwd),
                "exitCode": result.exit_code,
                "output": trim(result.output),
                "durationMs": round(result.duration_ms, 1),
            }
        )


class GitError(GitFailure):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(f"`{result.command}` failed ({result.exit_code}): {trim(result.output, 500)}")
        self.result = result


class GitRunner:
    def __init__(self, cwd: Path, log: RunLog | None = None) -> None:
        self.cwd = cwd
        self.log = log if log is not None else RunLog()
        env = {k: v for k, v in COMMITTER.items() if k not in os.environ}
        env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "LC_ALL": "C"})
        self._env = {**os.environ, **env}

    def at(self, cwd: Path) -> GitRunner:
        """The same log, another directory (a worktree)."""
        return GitRunner(cwd, self.log)

    def run(
        self, *args: str, check: bool = True, timeout: float | None = None, input: str | None = None
    ) -> CommandResult:
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=self.cwd,
                env=self._env,
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                stdin=subprocess.DEVNULL if input is None else None,
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            code, out, err = -9, "", f"killed after {timeout}s (timeout)"
        result = CommandResult(
            "git " + shlex.join(args), code, out.rstrip("\n"), err.rstrip("\n"), (time.perf_counter() - started) * 1000
        )
        self.log.add(result, self.cwd)
        if check and not result.ok:
            raise GitError(result)
        return result

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    def try_out(self, *args: str) -> str | None:
        result = self.run(*args, check=False)
        return result.stdout.strip() if result.ok else None

    def rev(self, ref: str) -> str | None:
        return self.try_out("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def run_shell(command: str, cwd: Path, timeout: float, log: RunLog) -> CommandResult:
    """A verify or conflict command (shell syntax), killed at its timeout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "GIT_EDITOR": "true"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a shell's children hold the pipes
        out, _ = proc.communicate()
        err, code = f"killed after {timeout:.0f}s (timeout)", -9
    result = CommandResult(command, code, out, err, (time.perf_counter() - started) * 1000)
    log.add(result, cwd)
    return result
