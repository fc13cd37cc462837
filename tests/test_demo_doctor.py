"""`patchmoi demo` (headless and in tmux) and `patchmoi doctor`."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .conftest import PYTHON, ROOT
from .gitfixture import Forge


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "patchmoi", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.slow
def test_demo_headless_three_cycles(tmp_path: Path) -> None:
    out = cli("demo", "--headless", "--cycles", "3", "--interval", "0.5", "--dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "upstream released v1.1.0" in out.stdout
    assert "ok   v1.1.0         expected changed" in out.stdout
    assert "ok   v1.2.0         expected needs_intervention" in out.stdout
    assert "ok   v1.2.0 retry   expected changed" in out.stdout
    assert "ok   v1.3.0         expected changed" in out.stdout
    assert (tmp_path / "demo" / "data" / "maintenance-attempts.jsonl").exists()  # --dir keeps the workspace


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_demo_in_tmux_shows_needs_intervention_within_30s() -> None:
    sock = f"patchmoi-demo-{uuid.uuid4().hex[:8]}"
    # without xdist's COLUMNS/LINES (80x24), which the dashboard would take over the pane's size
    command = f"cd {ROOT} && env -u COLUMNS -u LINES TERM=xterm-256color {PYTHON} -m patchmoi demo --interval 2"
    subprocess.run(
        ["tmux", "-L", sock, "new-session", "-d", "-s", "demo", "-x", "120", "-y", "32", command], check=True
    )
    try:
        deadline = time.monotonic() + 30
        screen = ""
        pressed = False
        while time.monotonic() < deadline:
            if not pressed and "1 Upstream" in screen:
                # the Runs tab: the conflict's run stays `needs_intervention` after the demo resolves it (the
                # queue drops the attempt once its retry succeeds, which at --interval 2 is within seconds)
                subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "demo", "5"], check=True)
                pressed = True
            screen = subprocess.run(
                ["tmux", "-L", sock, "capture-pane", "-p", "-t", "demo"], capture_output=True, text=True
            ).stdout
            if "! needs_intervention" in screen:
                break
            time.sleep(0.25)
        assert "! needs_intervention" in screen, screen
        subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "demo", "q"], check=True)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def test_doctor_passes_on_a_ready_fork_and_fails_clearly(tmp_path: Path) -> None:
    forge = Forge(tmp_path / "git")
    sources = tmp_path / "feed-sources.json"
    sources.write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "id": "rel",
                        "provider": "github",
                        "url": "https://github.com/acme/widget/releases.atom",
                        "event": "release",
                        "repo": {
                            "owner": "acme",
                            "name": "widget",
                            "fullName": "acme/widget",
                            "webUrl": "https://x.invalid",
                        },
                        "target": {
                            "mode": "workspace_flow",
                            "eventType": "upstream.release",
                            "transport": "local",
                            "workspace": str(forge.fork),
                        },
                    }
                ]
            }
        )
    )
    data = tmp_path / "data"
    data.mkdir()
    env = {"DATA_DIR": str(data), "FEED_SOURCES_PATH": str(sources)}
    ok = cli("doctor", env=env)
    assert ok.returncode == 0, ok.stdout
    assert "PASS  workspace rel" in ok.stdout and "ready, 2 patch branch(es)" in ok.stdout
    assert "PASS  git" in ok.stdout
    (forge.fork / "stray.txt").write_text("x")
    bad = cli("doctor", "--json", env={**env, "HOST": "0.0.0.0", "DISCORD_OUTPUT_ENABLED": "1"})
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    fails = {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "FAIL"}
    assert "working tree has local changes" in fails["workspace rel"]
    assert "DISCORD_WEBHOOK_URL is empty" in fails["discord"]
    assert "not loopback" in fails["admin token"]
    sources.write_text("{ broken")
    assert "invalid JSON" in cli("doctor", env=env).stdout


@pytest.mark.slow
async def test_the_dashboards_demo_leaves_the_conflict_for_a_person_to_retry(tmp_path: Path) -> None:
    """(review of #16) The demo's operator resolved its one conflict within seconds, so the queue was empty and
    nothing could be triaged. With patience (the dashboard's demo), the conflict waits for a person's `r`."""
    import asyncio

    from patchmoi.core.demo import Demo

    demo = Demo(tmp_path / "demo", interval=0.5, patience=60.0)
    await demo.start()
    try:
        driver = demo.driver
        assert driver is not None and demo.service is not None
        running = asyncio.create_task(driver.run(2))
        for _ in range(300):  # the v1.2.0 conflict is open, its file fixed in the worktree: a person retries
            if any("waits for you" in line for line in demo.lines):
                break
            await asyncio.sleep(0.1)
        assert any("waits for you" in line for line in demo.lines), demo.lines
        queue = demo.service.store.list_attempts(limit=20)
        assert any(a.get("status") == "needs_intervention" for a in queue)
        await demo.service.dispatcher.retry(driver.event_id("v1.2.0"), reason="a person", wait=False)
        await asyncio.wait_for(running, 60)
        assert any("you retried v1.2.0" in line for line in demo.lines)
        assert not any("operator retried v1.2.0" in line for line in demo.lines)
        assert driver.ok, driver.outcomes
    finally:
        await demo.stop()
