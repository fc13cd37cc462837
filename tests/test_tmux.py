"""End to end in a real terminal: `patchmoi tui` in a detached tmux session, records appended by another
process appear on screen, and `r` + confirm appends a dispatch record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchmoi.core.store import Store

from .conftest import PYTHON, ROOT

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self) -> None:
        self.socket = f"patchmoi-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        # pytest-xdist's workers have COLUMNS=80 and LINES=24, which the dashboard would take over the pane's size
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True, env=env
        ).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "tui")

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; screen was:\n{screen}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    yield t
    subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True)


def test_tui_in_tmux_live_tail_and_retry(tmp_path: Path, data_dir: Path, tmux: Tmux) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".patchmoi.toml").write_text(
        '[[steps]]\nname = "ok"\non = ["upstream.release"]\n'
        'command = \'echo FLOW_RESULT {\\"status\\": \\"completed\\"}\'\n'
    )
    command = f"cd {ROOT} && TERM=xterm-256color {PYTHON} -m patchmoi tui --data-dir {data_dir} --workspace {ws}"
    tmux("new-session", "-d", "-s", "tui", "-x", "140", "-y", "30", command)  # wide: the STATUS column shows
    tmux.wait_for("1 Upstream")
    tmux("send-keys", "-t", "tui", "2")
    # another process appends a flow event: the live tail shows it
    subprocess.run(
        [
            PYTHON,
            "-c",
            (
                "from patchmoi.core.store import Store; Store(__import__('sys').argv[1]).record_event({'id': "
                "'patch:upstream.release:acme/tmuxwidget:v7.0.0', 'type': 'upstream.release', 'source': 'patch', "
                "'receivedAt': '2026-11-21T10:00:00.000Z', 'payload': {'repo': 'acme/tmuxwidget', 'tag': 'v7.0.0'}})"
            ),
            str(data_dir),
        ],
        cwd=ROOT,
        check=True,
    )
    tmux.wait_for("acme/tmuxwidget@v7.0.0")
    tmux("send-keys", "-t", "tui", "r")
    tmux.wait_for("Retry flow event")
    tmux("send-keys", "-t", "tui", "BTab", "Enter")  # Cancel is the default: shift+tab to Confirm
    deadline = time.monotonic() + 15
    path = data_dir / "workspace-dispatches.jsonl"
    while time.monotonic() < deadline and not (path.exists() and path.read_text().strip()):
        time.sleep(0.1)  # (the file may exist, empty, before the record is in it)
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["eventId"] == "patch:upstream.release:acme/tmuxwidget:v7.0.0"
    assert record["transport"] == "local"
    tmux.wait_for("retry: dispatched via local")
    tmux("send-keys", "-t", "tui", "3", "o")  # every attempt (a completed one is not in the queue)
    tmux.wait_for("✓ completed")
    tmux("send-keys", "-t", "tui", "q")
    assert Store(data_dir).list_attempts()[0]["status"] == "completed"
