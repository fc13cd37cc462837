"""Every command in README.md, run as a new user would: the quick start in a fresh clone (`make demo` in
tmux; `make test` is what CI runs, so here only its recipe is checked), and the "Real use" commands against
a real fork, a loopback feed and a running server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from patchmoi.core.store import Store

from .conftest import PYTHON, ROOT
from .gitfixture import Forge, git
from .loopback import Handler, LoopbackServer, Reply, free_port

README = (ROOT / "README.md").read_text()
PATCHMOI = str(Path(PYTHON).with_name("patchmoi"))


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_readme_quick_start_has_exactly_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", quick, re.S)[0]
    assert [re.sub(r"\s{2,}#.*$", "", x).strip() for x in block.splitlines() if x.strip()] == ["make demo", "make test"]


class Tmux:
    def __init__(self) -> None:
        self.socket = f"patchmoi-readme-{uuid.uuid4().hex[:8]}"

    def run(self, name: str, command: str, cwd: Path, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={json.dumps(v)}" for k, v in env.items())
        subprocess.run(
            [
                "tmux",
                "-L",
                self.socket,
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "120",
                "-y",
                "32",
                f"cd {cwd} && env {exports} TERM=xterm-256color {command}",
            ],
            check=True,
        )

    def wait_for(self, name: str, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(
                ["tmux", "-L", self.socket, "capture-pane", "-p", "-t", name], capture_output=True, text=True
            ).stdout
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} did not appear in {name}:\n{screen}")

    def keys(self, name: str, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "-t", name, *keys], check=True)

    def close(self) -> None:
        """Kill the server and what its panes started: a `make demo` that does not exit on SIGHUP would run on."""
        panes = subprocess.run(
            ["tmux", "-L", self.socket, "list-panes", "-a", "-F", "#{pane_pid}"], capture_output=True, text=True
        ).stdout.split()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        for pid in (int(p) for p in panes if p.isdigit()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # each pane's command leads its own process group


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux()
    yield t
    t.close()


@pytest.mark.slow
def test_quick_start_in_a_fresh_clone(tmp_path: Path, tmux: Tmux) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    recipe = subprocess.run(["make", "-n", "test"], cwd=clone, capture_output=True, text=True, check=True).stdout
    assert "pytest" in recipe and "ruff" in recipe and "mypy" in recipe  # `make test` itself is what CI runs
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    tmux.run("demo", "make demo", clone, env)
    tmux.wait_for("demo", "1 Upstream", timeout=600)  # the first run builds .venv
    tmux.keys("demo", "3", "o")  # every attempt, not only the queue (the demo resolves its conflict by itself)
    tmux.wait_for("demo", "◆ adopted", timeout=60)
    tmux.keys("demo", "q")


def close_pipes(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def feed_handler(forge: Forge) -> Handler:
    def handler(_req: object) -> Reply:
        tags = git(
            forge.upstream, "for-each-ref", "--sort=-v:refname", "--format=%(refname:short)", "refs/tags"
        ).split()
        entries = "".join(
            f"<entry><id>tag:github.com,2008:Repository/1/{t}</id><updated>2026-05-{20 - i:02d}T00:00:00Z</updated>"
            f'<link rel="alternate" href="https://x.invalid/acme/widget/releases/tag/{t}"/><title>{t}</title></entry>'
            for i, t in enumerate(tags)
        )
        return Reply(
            body=(
                f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>r</title>{entries}</feed>'
            ).encode()
        )

    return handler


@pytest.mark.slow
def test_real_use_commands(tmp_path: Path, tmux: Tmux) -> None:
    forge = Forge(tmp_path / "forge", config="[fetch]\nallowFetch = true\n")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "my-fork").symlink_to(forge.fork)
    feeds = LoopbackServer().start()
    feeds.route("/releases.atom", feed_handler(forge))
    data = tmp_path / "var" / "lib" / "patchmoi"
    etc = tmp_path / "etc" / "patchmoi"
    etc.mkdir(parents=True)
    (etc / "feed-sources.json").write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "id": "acme-widget",
                        "provider": "github",
                        "url": f"{feeds.url}/releases.atom",
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
                        "pollIntervalSeconds": 1,
                    }
                ]
            }
        )
    )
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PATCH_ADMIN_TOKEN": "readme-token-123456",
        "PORT": str(port),
        "PATCHMOI_MIN_POLL_SECONDS": "1",
    }
    done: list[str] = []
    server: subprocess.Popen[str] | None = None
    follower: subprocess.Popen[str] | None = None
    ids: dict[str, str] = {}

    def sh(command: str, *, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode in ok, f"{command}\n{out.stdout}\n{out.stderr}"
        return out

    try:
        for command in readme_commands():
            cmd = command.replace("patchmoi ", f"{PATCHMOI} ", 1) if command.startswith("patchmoi") else command
            cmd = cmd.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
            if command in ("make demo", "make test", "make venv"):
                continue  # the quick start test above (the .venv of this checkout is the one under test)
            elif command.startswith('export PATH="$PWD/.venv/bin:$PATH"'):
                env["PATH"] = f"{Path(PYTHON).parent}:{env['PATH']}"
            elif command.startswith("export "):
                for pair in command.removeprefix("export ").split():
                    key, _, value = pair.partition("=")
                    value = value.replace("/var/lib/patchmoi", str(data)).replace("/etc/patchmoi", str(etc))
                    env[key] = value
            elif command == "patchmoi serve":
                server = subprocess.Popen(
                    cmd,
                    shell=True,
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok\n":
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                deadline = time.monotonic() + 30  # primed: feed-state.json with its journal says so
                while time.monotonic() < deadline and not any(
                    s.get("primed") for s in Store(data).read_state().values()
                ):
                    time.sleep(0.1)
                forge.release("v1.1.0", {"README": "upstream, improved\n"})  # a release while the server polls
                h = {"authorization": f"Bearer {env['PATCH_ADMIN_TOKEN']}"}
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline:
                    url = f"http://127.0.0.1:{port}/maintenance-attempts"
                    attempts = httpx.get(url, headers=h).json()["attempts"]
                    if attempts and attempts[0]["status"] != "started":
                        ids["EVENT_ID"], ids["ATTEMPT_ID"] = attempts[0]["eventId"], attempts[0]["id"]
                        break
                    time.sleep(0.2)
                assert ids, "the server did not turn the release into an attempt"
            elif command.startswith("patchmoi tui"):
                name = f"tui{len(done)}"
                tmux.run(name, cmd.replace('"$PATCH_ADMIN_TOKEN"', env["PATCH_ADMIN_TOKEN"]), work, env)
                tmux.wait_for(name, "1 Upstream", timeout=30)
                tmux.wait_for(name, "remote" if "--url" in command else "local", timeout=10)
                tmux.keys(name, "q")
            elif command.startswith("patchmoi sources test"):  # before the exports: the file is named outright
                out = sh(f"{PATCHMOI} sources test acme-widget --sources {etc / 'feed-sources.json'} --data-dir {data}")
                assert "next poll:" in out.stdout and "v1.0.0" in out.stdout
            elif command.startswith("patchmoi poll"):
                if server is not None:  # one poller per DATA_DIR: `poll --once` is the cron alternative to serve
                    os.killpg(server.pid, signal.SIGTERM)
                    server.wait(timeout=30)
                    close_pipes(server)
                    server = None
                sh(cmd)
            elif command.startswith("patchmoi follow"):
                follower = subprocess.Popen(
                    cmd, shell=True, cwd=work, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
                )
                time.sleep(1.0)
                sh(f"{PATCHMOI} retry {ids['EVENT_ID']!r}")
                line = follower.stdout.readline() if follower.stdout else ""
                assert json.loads(line)["record"]
            else:
                for placeholder in ("ATTEMPT_OR_EVENT_ID", "EVENT_ID", "ATTEMPT_ID"):
                    key = "EVENT_ID" if placeholder == "ATTEMPT_OR_EVENT_ID" else placeholder
                    if placeholder in cmd:
                        cmd = cmd.replace(placeholder, repr(ids[key]))
                if "--tag v1.2.0" in cmd:
                    forge.release("v1.2.0", {"README": "upstream, improved again\n"})
                out = sh(cmd, ok=(0, 1) if command.startswith(("patchmoi retry", "patchmoi replay")) else (0,))
                assert "Traceback" not in out.stderr
            done.append(command)
    finally:
        for proc in (server, follower):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                close_pipes(proc)
        feeds.stop()
    assert done == [c for c in readme_commands() if c not in ("make demo", "make test", "make venv")]
