"""Every tutorial, run literally: its ```sh blocks, in order, as one bash script in an empty directory, offline.

A reader pastes the blocks into one shell, so they run as one script (`set -euo pipefail`: a broken command
fails the test; a command that is expected to fail says so in the tutorial itself). The only block not run
is the one titled "In your clone of patchmoi" (`make venv` and the PATH export): here PATH already holds the
project's virtualenv, and only that block's content and the Makefile recipe are checked, as for the README.
Any HTTP request that is not to loopback goes to a dead proxy, so a tutorial that needs the network fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from .conftest import PYTHON, ROOT
from .loopback import free_port

TUTORIALS = ROOT / "docs" / "tutorials"
BIN = Path(PYTHON).parent
FENCE = re.compile(r"^```sh((?:[ \t][^\n]*)?)\n(.*?)^```[ \t]*$", re.S | re.M)
IN_CLONE = 'title="In your clone of patchmoi"'
TIMEOUT = 180
DEAD_PROXY = "http://127.0.0.1:9"
TUTORIAL_NAMES = ("watch-an-upstream-release.md", "maintain-a-fork-through-a-conflict.md")


def sh_blocks(name: str) -> list[tuple[str, str]]:
    """(fence info, body) of every ```sh block of a tutorial, in order."""
    return [(info.strip(), body) for info, body in FENCE.findall((TUTORIALS / name).read_text())]


def tutorial_script(name: str) -> str:
    runnable = [body for info, body in sh_blocks(name) if info != IN_CLONE]
    assert runnable, f"{name} has no ```sh blocks"
    return "set -euo pipefail\n" + "\n".join(runnable)


def run_tutorial(name: str, tmp_path: Path, **extra_env: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Run the tutorial in a fresh HOME and TMPDIR (its `cd "$(mktemp -d)"` lands there); its directory."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",  # no git configuration at all: the tutorial brings its identity
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "ALL_PROXY": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        **extra_env,
    }
    proc = subprocess.Popen(
        ["bash", "-c", tutorial_script(name)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{name} did not finish in {TIMEOUT}s:\n{out}\n{err}") from None
    finally:
        with suppress(ProcessLookupError):  # a background process the script left behind (an http.server)
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 0, f"{name} failed (exit {done.returncode}):\n{out}\n{err}"
    assert "Traceback" not in err, err
    dirs = [d for d in tmp.iterdir() if d.is_dir()]
    assert len(dirs) == 1, f"{name} should work in exactly one directory made by mktemp -d: {dirs}"
    return dirs[0], done


def patchmoi_json(work: Path, *args: str) -> Any:
    out = subprocess.run(
        [str(BIN / "patchmoi"), *args, "--json"],
        cwd=work,
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "DATA_DIR": str(work / "data")},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_each_tutorial_starts_in_a_clone_with_make_venv() -> None:
    assert sorted(p.name for p in TUTORIALS.glob("*.md")) == sorted(TUTORIAL_NAMES), "a tutorial is not run here"
    for name in TUTORIAL_NAMES:
        blocks = sh_blocks(name)
        assert blocks[0] == (IN_CLONE, 'make venv\nexport PATH="$PWD/.venv/bin:$PATH"\n'), name
        assert [info for info, _ in blocks[1:]] == [""] * (len(blocks) - 1), f"{name}: only one block is not run"
        assert blocks[1][1].startswith('cd "$(mktemp -d)"\n'), f"{name} must start in an empty directory"
    recipe = subprocess.run(["make", "-n", "venv"], cwd=ROOT, capture_output=True, text=True)
    assert recipe.returncode == 0, recipe.stderr  # the target exists (and does nothing when .venv is current)


@pytest.mark.slow
def test_maintain_a_fork_through_a_conflict(tmp_path: Path) -> None:
    work, done = run_tutorial("maintain-a-fork-through-a-conflict.md", tmp_path)
    fork = work / "fork"
    # The conflicting release stopped for a person (the tutorial's expected non-zero exit), and nothing is open now.
    assert "exit code 1 (expected" in done.stdout
    assert patchmoi_json(work, "attempts", "--open") == {"attempts": []}
    attempts = patchmoi_json(work, "attempts", "--states")["attempts"]
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_tag.setdefault(attempt["upstreamTag"], []).append(attempt)
    assert sorted((a["status"], a["state"]) for a in by_tag["v1.1.0"]) == [
        ("changed", "adopted"),
        ("needs_intervention", "resolved"),
    ]
    v11 = next(a for a in by_tag["v1.1.0"] if a["status"] == "changed")
    assert v11["adoption"]["by"].startswith("cli:")
    assert v11["adoption"]["to"] == v11["candidateRefs"][0]["sha"]
    # The next release rebuilt clean (no resolution) and `[adopt] mode = "clean"` adopted it.
    [v12] = by_tag["v1.2.0"]
    assert (v12["status"], v12["state"]) == ("changed", "adopted")
    assert v12["adoption"]["by"] == 'patchmoi (adopt = "clean")'
    assert "conflict" not in v12["message"]
    main = git_out(fork, "rev-parse", "main")
    assert main == git_out(fork, "rev-parse", "candidate/v1.2.0") == v12["adoption"]["to"]
    # main is v1.2.0 + the patches (the resolution included); the branches form a stack; the checkout moved.
    assert git_out(fork, "log", "--format=%s", "v1.2.0..main").splitlines() == [
        "add shout mode",
        "sign the greeting",
        "greet from the fork",
    ]
    assert git_out(fork, "rev-parse", "patch/020-shout") == main
    assert git_out(fork, "rev-parse", "patch/010-fork-greeting") == git_out(fork, "rev-parse", "main~1")
    assert (fork / "greeting.txt").read_text() == "hi from the fork\nworld\n-- the fork\n"
    assert git_out(fork, "status", "--porcelain") == ""
    assert not list((work / "data" / "worktrees").glob("*.json"))  # no stopped rebuild left behind


@pytest.mark.slow
def test_watch_an_upstream_release(tmp_path: Path) -> None:
    work, done = run_tutorial("watch-an-upstream-release.md", tmp_path, FEED_PORT=str(free_port()))
    assert re.search(r"acme-widget\s+primed\s+0", done.stdout), done.stdout
    assert re.search(r"acme-widget\s+ok\s+1", done.stdout), done.stdout
    [event] = patchmoi_json(work, "events")["events"]
    assert event["type"] == "upstream.release" and event["payload"]["tag"] == "v1.1.0"
    assert event["id"] == "patch:acme-widget:tag:github.com,2008:Repository/1/v1.1.0:upstream.release"
    [attempt] = patchmoi_json(work, "attempts")["attempts"]
    assert attempt["status"] == "completed" and attempt["eventId"] == event["id"]
    assert (work / "notes" / "seen.txt").read_text() == event["id"] + "\n"  # the step ran, once
    signals = [json.loads(line) for line in (work / "data" / "feed-events.jsonl").read_text().splitlines()]
    assert [s.get("title") for s in signals] == ["v1.1.0"]  # the primed v1.0.0 was never emitted
