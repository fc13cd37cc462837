"""Actions mode (`actions-local`, #15): steps run here and the workspace remembers what ran, so a retry is a
duplicate and a replay runs again; and the documented GitHub Actions workflow, run for real three times against
an upstream repository and a fork, with its cached paths carried between runs as the cache actions would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # (mkdocs brings PyYAML; its stubs are not installed)

from patchmoi.core.dispatch.actions import STATE_PATH
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.store import Kind, Store

from .conftest import ROOT
from .gitfixture import ENV, Forge, commit_files, git

STEP = """import json, os, sys
ctx = json.load(sys.stdin)
with open(os.path.join(os.environ["PATCHMOI_WORKSPACE"], "ran.log"), "a") as fh:
    fh.write(ctx["event"]["id"] + " " + os.environ.get("CODEX_HOME", "-") + "\\n")
print("FLOW_RESULT " + json.dumps({"status": "completed"}))
"""


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "step.py").write_text(STEP)
    (ws / ".patchmoi.toml").write_text(
        f'[[steps]]\nname = "count"\non = ["upstream.release"]\ncommand = ["{sys.executable}", "step.py"]\n'
    )
    return ws


async def test_a_retry_is_a_duplicate_and_a_replay_runs_again(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    store = Store(tmp_path / "data")
    event = {"id": "e1", "type": "upstream.release", "payload": {"repo": "acme/widget", "tag": "v1"}}
    store.record_event(event)
    env = {"GITHUB_ACTIONS": "true", "PATH": os.environ["PATH"]}

    async def act(operation: str) -> Any:
        dispatcher = Dispatcher(store, env, workspace=ws)  # a new one each time: a job starts afresh
        try:
            return await (dispatcher.replay("e1") if operation == "replay" else dispatcher.retry("e1"))
        finally:
            await dispatcher.aclose()

    first = await act("retry")
    assert first.record["transport"] == "actions-local" and first.record["matched"] == 1
    assert first.attempt["status"] == "completed"
    assert (ws / "ran.log").read_text() == f"e1 {ws / '.codex'}\n"  # CODEX_HOME is the workspace's .codex

    again = await act("retry")
    assert (again.record["matched"], again.record["idempotent"]) == (0, True)
    assert again.record["runIds"] == first.record["runIds"] and again.attempt["status"] == "completed"
    assert again.attempt["id"] != first.attempt["id"]  # an attempt of its own, with the runs it had
    assert len((ws / "ran.log").read_text().splitlines()) == 1  # nothing ran

    replay = await act("replay")
    assert replay.record["operation"] == "replay" and replay.record["matched"] == 1
    assert set(replay.record["runIds"]).isdisjoint(first.record["runIds"])
    assert len((ws / "ran.log").read_text().splitlines()) == 2

    state = json.loads((ws / STATE_PATH).read_text())
    entry = state["patchmoiEvents"]["e1"]
    assert entry["runIds"] == first.record["runIds"] and entry["replays"][0]["runIds"] == replay.record["runIds"]
    assert oct((ws / STATE_PATH).stat().st_mode & 0o777) == "0o600"
    assert store.count(Kind.RUNS) == 2


async def test_other_keys_of_the_state_file_are_kept_and_a_bad_file_is_set_aside(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    store = Store(tmp_path / "data")
    for i in (1, 2):
        store.record_event({"id": f"e{i}", "type": "upstream.release", "payload": {}})
    path = ws / STATE_PATH
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"runs": {"x": 1}, "version": 3}))
    dispatcher = Dispatcher(store, {"CODEX_WORKSPACE_MODE": "actions"}, workspace=ws)
    try:
        await dispatcher.retry("e1")
        assert json.loads(path.read_text())["runs"] == {"x": 1}
        path.write_text("{torn")
        outcome = await dispatcher.retry("e2")  # unreadable: set aside, and the event runs
        assert outcome.record["matched"] == 1
    finally:
        await dispatcher.aclose()
    assert [p.name for p in path.parent.iterdir() if ".unreadable-" in p.name]


async def test_a_backend_url_wins_over_actions_mode(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    env = {"GITHUB_ACTIONS": "true", "PATCH_WORKSPACE_BACKEND_URL": "http://127.0.0.1:9/"}
    dispatcher = Dispatcher(Store(tmp_path / "data"), env)
    try:
        assert dispatcher.backend_for({"id": "x", "type": "upstream.release"}).transport == "workspace-http"
        plain = Dispatcher(Store(tmp_path / "data"), {"PATH": "/bin"}, workspace=ws)
        assert plain.backend_for({"id": "x", "type": "upstream.release"}).transport == "local"
        await plain.aclose()
    finally:
        await dispatcher.aclose()


# -- the documented workflow ---------------------------------------------------------------------------------
WORKFLOW = ROOT / "docs" / "guides" / "patchmoi-actions.yml"


class Job:
    """One run of the workflow's `run:` steps, in a fresh clone of the fork's remote, its cache restored."""

    def __init__(self, root: Path, origin: Path, cache: Path) -> None:
        self.root, self.origin, self.cache = root, origin, cache
        self.workflow = yaml.safe_load(WORKFLOW.read_text())
        self.runs = 0

    def cached_paths(self, runner_temp: Path) -> list[str]:
        step = next(
            s
            for s in self.workflow["jobs"]["maintain"]["steps"]
            if str(s.get("uses", "")).startswith("actions/cache/restore")
        )
        return [
            p.strip().replace("${{ runner.temp }}", str(runner_temp))
            for p in step["with"]["path"].splitlines()
            if p.strip()
        ]

    def run(self, extra: list[str] | None = None) -> list[tuple[str, int, str]]:
        self.runs += 1
        checkout, temp = self.root / f"run{self.runs}" / "checkout", self.root / f"run{self.runs}" / "temp"
        temp.mkdir(parents=True)
        git(self.root, "clone", "-q", str(self.origin), str(checkout))  # actions/checkout, fetch-depth 0
        paths = self.cached_paths(temp)
        for i, path in enumerate(paths):  # actions/cache/restore
            saved, live = self.cache / str(i), checkout / path
            if saved.exists():
                shutil.copytree(saved, live)
        env_file = temp / "github_env"
        env_file.touch()
        env = {
            **{k: v for k, v in ENV.items() if not k.startswith("GIT_COMMITTER") and not k.startswith("GIT_AUTHOR")},
            **{str(k): str(v) for k, v in self.workflow["env"].items()},
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "GITHUB_ACTIONS": "true",
            "GITHUB_ENV": str(env_file),
            "RUNNER_TEMP": str(temp),
            "HOME": str(temp),
        }
        results: list[tuple[str, int, str]] = []
        failed = False
        steps = [s for s in self.workflow["jobs"]["maintain"]["steps"] if "run" in s]
        for step in [*steps, *({"name": cmd, "run": cmd} for cmd in extra or [])]:
            if "pip install" in step["run"]:
                continue  # patchmoi is this checkout's, on PATH
            if failed and step.get("if") != "always()":
                continue
            for line in env_file.read_text().splitlines():
                if "=" in line:
                    key, _, value = line.partition("=")
                    env[key] = value
            done = subprocess.run(
                ["bash", "-e", "-c", step["run"]], cwd=checkout, env=env, capture_output=True, text=True, timeout=300
            )
            results.append((step["name"], done.returncode, done.stdout + done.stderr))
            failed = failed or done.returncode != 0
        for i, path in enumerate(paths):  # actions/cache/save
            saved, live = self.cache / str(i), checkout / path
            shutil.rmtree(saved, ignore_errors=True)
            if live.exists():
                shutil.copytree(live, saved)
        self.data_dir = temp / "patchmoi-data"
        return results


@pytest.mark.slow
def test_the_documented_workflow_polls_rebuilds_and_keeps_its_state(tmp_path: Path) -> None:
    forge = Forge(tmp_path / "forge")
    fork, upstream, origin = forge.fork, forge.upstream, forge.origin
    # the CI files are a patch of their own, first in name order, so every rebuild carries them
    (fork / ".git" / "info" / "exclude").write_text("")
    git(fork, "checkout", "-q", "-b", "patch/000-ci", "v1.0.0")
    sources = {
        "sources": [
            {
                "id": "upstream",
                "provider": "generic",
                "kind": "git",
                "url": str(upstream),
                "event": "release",
                "repo": {
                    "owner": "acme",
                    "name": "widget",
                    "fullName": "acme/widget",
                    "webUrl": "https://example.invalid",
                },
                "target": {"mode": "workspace_flow", "eventType": "upstream.release"},  # the job's directory
            }
        ]
    }
    config = f'[git]\nupstreamUrl = "{upstream}"\n[fetch]\nallowFetch = true\n[candidate]\npush = true\n'
    commit_files(
        fork,
        {
            ".patchmoi.toml": config,
            ".github/patchmoi/feed-sources.json": json.dumps(sources, indent=2),
            ".github/workflows/patchmoi.yml": WORKFLOW.read_text(),
        },
        "ci: patchmoi on a schedule",
    )
    git(fork, "checkout", "-q", "-B", "main", "v1.0.0")
    for name in ["patch/000-ci", *forge.patch_names]:
        git(fork, "cherry-pick", name)
    git(fork, "push", "-q", "-f", "origin", "main", "patch/000-ci", *forge.patch_names)
    git(origin, "symbolic-ref", "HEAD", "refs/heads/main")  # the repository's default branch
    job = Job(tmp_path / "jobs", origin, tmp_path / "cache")

    first = job.run()
    assert all(code == 0 for _, code, _ in first), "\n".join(f"{n}: {c}: {o[-600:]}" for n, c, o in first)
    assert Store(job.data_dir).count(Kind.EVENTS) == 0  # primed: releases that exist already are history

    forge.release("v1.1.0", {"README": "upstream project, 1.1\n"})
    second = job.run()
    assert all(code == 0 for _, code, _ in second), "\n".join(f"{n}: {c}: {o[-600:]}" for n, c, o in second)
    store = Store(job.data_dir)
    [event] = store.list_events()
    [attempt] = store.list_attempts()
    assert attempt["status"] in ("changed", "completed"), attempt
    assert git(origin, "rev-parse", "--verify", "refs/heads/candidate/v1.1.0")  # pushed by the rebuild
    dispatch = store.list_dispatches()[0]
    assert dispatch["transport"] == "actions-local"
    state = json.loads((tmp_path / "cache" / "1" / "flow-client" / "state.json").read_text())
    assert list(state["patchmoiEvents"]) == [event["id"]]

    third = job.run(extra=[f"patchmoi retry '{event['id']}'"])  # nothing new; a retry is a duplicate
    assert all(code == 0 for _, code, _ in third), "\n".join(f"{n}: {c}: {o[-600:]}" for n, c, o in third)
    store = Store(job.data_dir)
    assert store.count(Kind.RUNS) == 1 and len(store.list_attempts()) == 2
    latest = store.list_dispatches()[0]
    assert (latest["matched"], latest["idempotent"]) == (0, True)


RACER = r"""
import asyncio, os, sys
from pathlib import Path
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.store import Store
data, ws, event_id = sys.argv[1:4]
async def main():
    dispatcher = Dispatcher(Store(data), {"GITHUB_ACTIONS": "true", "PATH": os.environ["PATH"]}, workspace=Path(ws))
    outcome = await dispatcher.retry(event_id)
    await dispatcher.aclose()
    print(outcome.record["matched"])
asyncio.run(main())
"""


def test_two_processes_on_one_workspace_run_an_event_once(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (ws / "step.py").write_text("import time\ntime.sleep(1.0)\n" + STEP)
    data = tmp_path / "data"
    Store(data).record_event({"id": "e1", "type": "upstream.release", "payload": {}})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(data), str(ws), "e1"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    matched = sorted(int(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs)
    assert matched == [0, 1]  # one ran it, the other was told it is a duplicate
    assert len((ws / "ran.log").read_text().splitlines()) == 1


async def test_an_interrupted_run_is_not_a_reason_to_skip_the_retry(tmp_path: Path) -> None:
    """A cancelled job left its run interrupted: the retry the recovery message advises must run it again."""
    ws = workspace(tmp_path)
    store = Store(tmp_path / "data")
    store.record_event({"id": "e1", "type": "upstream.release", "payload": {}})
    env = {"GITHUB_ACTIONS": "true", "PATH": os.environ["PATH"]}
    dispatcher = Dispatcher(store, env, workspace=ws)
    try:
        first = await dispatcher.retry("e1")
        [run_id] = first.record["runIds"]
        run = store.get_run(run_id)
        assert run is not None
        store.append(Kind.RUNS, {**run, "status": "failed", "error": "interrupted by shutdown; retry the event"})
        again = await dispatcher.retry("e1")
    finally:
        await dispatcher.aclose()
    assert again.record["matched"] == 1 and again.record["runIds"] != first.record["runIds"]
    assert len((ws / "ran.log").read_text().splitlines()) == 2
