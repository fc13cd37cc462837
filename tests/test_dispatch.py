"""Retry, replay and sync (spec §3 table, §4) over a real backend and the local runner; `run` CLI (spec §8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.events import upstream_release_event
from patchmoi.core.sources import load_sources
from patchmoi.core.store import Kind, Store

from .conftest import PYTHON, ROOT
from .loopback import FakeBackend, LoopbackServer, Reply


def feed_event(source_id: str = "rel") -> dict[str, Any]:
    return {
        "id": f"patch:{source_id}:entry-1:upstream.release",
        "type": "upstream.release",
        "source": "patch",
        "receivedAt": "2026-05-13T00:00:00.000Z",
        "payload": {"sourceId": source_id, "repo": "o/r", "tag": "v1.2.3"},
    }


def write_sources(tmp_path: Path, target: dict[str, Any]) -> Path:
    path = tmp_path / "feed-sources.json"
    path.write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "id": "rel",
                        "provider": "github",
                        "url": "https://github.com/o/r/releases.atom",
                        "event": "release",
                        "repo": {"owner": "o", "name": "r", "fullName": "o/r", "webUrl": "https://github.com/o/r"},
                        "target": target,
                    }
                ]
            }
        )
    )
    return path


async def test_retry_and_replay_use_the_sources_own_backend(
    data_dir: Path, tmp_path: Path, server: LoopbackServer
) -> None:
    backend = FakeBackend(server, secret="per-source", prefix="/b")
    # a decoy global backend that must NOT be used (spec §11.7)
    server.route("/global/events", Reply.json({"status": "accepted", "runIds": ["wrong"]}, 202))
    path = write_sources(
        tmp_path,
        {
            "mode": "workspace_flow",
            "eventType": "upstream.release",
            "workspaceUrlEnv": "REL_URL",
            "workspaceSecretEnv": "REL_SECRET",
        },
    )
    env = {"REL_URL": backend.url, "REL_SECRET": "per-source", "PATCH_WORKSPACE_BACKEND_URL": f"{server.url}/global"}
    store = Store(data_dir)
    event = feed_event()
    store.record_event(event)
    dispatcher = Dispatcher(store, env, sources=lambda: load_sources(path))
    first = await dispatcher.retry(event["id"], reason="backend was down")
    again = await dispatcher.retry(event["id"])
    replay = await dispatcher.replay(event["id"])
    await dispatcher.aclose()
    assert server.hits("/global/events") == [] and backend.bad_signatures == 0
    assert first.record["status"] == "dispatched" and first.record["reason"] == "backend was down"
    assert first.attempt["reason"] == "backend was down"
    assert again.record["idempotent"] is True and again.record["runIds"] == first.record["runIds"]
    assert replay.record["operation"] == "replay" and replay.record["runIds"] == ["run-2"]
    assert replay.record["url"] == f"{backend.url}/events/{'patch%3Arel%3Aentry-1%3Aupstream.release'}/replay"
    replay_req = next(r for r in server.requests if r.path.endswith("/replay"))
    assert replay_req.body == b'{"wait":false}'
    assert replay_req.headers["webhook-id"].startswith(f"replay:{event['id']}:")  # its own key, bound to the event
    attempts = store.list_attempts(event_id=event["id"])
    assert [a["operation"] for a in attempts] == ["replay", "dispatch", "dispatch"]
    assert len({a["id"] for a in attempts}) == 3  # unique even within one millisecond


async def test_sync_from_backend_runs(data_dir: Path, tmp_path: Path, server: LoopbackServer) -> None:
    backend = FakeBackend(server)
    store = Store(data_dir)
    event = feed_event()
    store.record_event(event)
    dispatcher = Dispatcher(store, {"PATCH_WORKSPACE_BACKEND_URL": backend.url})
    outcome = await dispatcher.retry(event["id"])
    assert outcome.attempt["status"] == "started"
    backend.runs["run-1"].update(
        {
            "status": "completed",
            "resultJson": json.dumps(
                {
                    "status": "changed",
                    "message": "candidate branch ready",
                    "artifacts": {"candidateRefs": [{"kind": "branch", "ref": "refs/heads/main", "sha": "abc123"}]},
                }
            ),
        }
    )
    synced = await dispatcher.sync(outcome.attempt["id"])
    assert synced["status"] == "changed" and synced["workspaceRunStatuses"] == {"run-1": "changed"}
    assert synced["candidateRefs"][0]["sha"] == "abc123"
    assert store.list_attempts(status="changed")[0]["id"] == outcome.attempt["id"]
    n = store.count(Kind.ATTEMPTS)
    await dispatcher.sync(outcome.attempt["id"])
    assert store.count(Kind.ATTEMPTS) == n  # unchanged: nothing appended
    backend.server.routes.pop("/b/runs", None)
    await dispatcher.aclose()


def make_workspace(tmp_path: Path, steps: str) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".patchmoi.toml").write_text(steps)
    return ws


STEP_SCRIPT = """
import json, sys
ctx = json.load(sys.stdin)
tag = ctx["event"]["payload"]["tag"]
print("working on", tag)
print("FLOW_RESULT " + json.dumps({"status": "changed", "message": f"built {tag}",
      "artifacts": {"candidateRefs": [{"kind": "branch", "ref": f"refs/heads/candidate/{tag}"}]}}))
"""


async def test_local_steps_run_in_a_subprocess_and_are_durable(data_dir: Path, tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path,
        f"""
[[steps]]
name = "build"
on = ["upstream.release"]
command = ["{sys.executable}", "step.py"]
timeout = 30

[[steps]]
name = "other-type"
on = ["downstream.release"]
command = "exit 1"
""",
    )
    (ws / "step.py").write_text(STEP_SCRIPT)
    store = Store(data_dir)
    event = upstream_release_event("o/r", "v2.0.0").to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=ws)
    outcome = await dispatcher.retry(event["id"])
    assert outcome.record["transport"] == "local" and outcome.record["matched"] == 1
    assert outcome.attempt["status"] == "changed" and outcome.attempt["message"] == "built v2.0.0"
    run = store.get_run(outcome.record["runIds"][0])
    assert run is not None and run["status"] == "changed" and "working on v2.0.0" in run["output"][0]["text"]
    # sync works in local mode: runs are durable
    synced = await dispatcher.sync(outcome.attempt["id"])
    assert synced["candidateRefs"] == [{"kind": "branch", "ref": "refs/heads/candidate/v2.0.0"}]
    replay = await dispatcher.replay(event["id"])
    assert replay.record["operation"] == "replay" and replay.record["runIds"] != outcome.record["runIds"]
    await dispatcher.aclose()


async def test_step_timeout_kills_and_fails(data_dir: Path, tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path,
        """
[[steps]]
name = "hang"
on = ["upstream.release"]
command = "echo started; sleep 60"
timeout = 1
""",
    )
    store = Store(data_dir)
    event = upstream_release_event("o/r", "v1").to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=ws)
    outcome = await dispatcher.retry(event["id"])
    await dispatcher.aclose()
    assert outcome.attempt["status"] == "failed"
    assert "timed out after 1s" in outcome.attempt["error"]


async def test_bad_step_output_and_missing_workspace(data_dir: Path, tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path,
        """
[[steps]]
name = "noresult"
on = ["upstream.release"]
command = "echo hello"
""",
    )
    store = Store(data_dir)
    event = upstream_release_event("o/r", "v1").to_dict()
    store.record_event(event)
    outcome = await Dispatcher(store, {}, workspace=ws).retry(event["id"])
    assert outcome.attempt["status"] == "failed" and "no FLOW_RESULT" in outcome.attempt["error"]
    fresh = upstream_release_event("o/r", "v2").to_dict()  # never dispatched anywhere
    store.record_event(fresh)
    failed = await Dispatcher(store, {}).retry(fresh["id"])  # configuration: fails loudly, not a quiet skip
    assert failed.record["status"] == "failed" and failed.attempt["status"] == "failed"
    assert failed.record["errorKind"] == "config" and "no local workspace" in failed.attempt["message"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "patchmoi", *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=120
    )


def test_cli_run_guard_dry_run_and_required_flags(data_dir: Path, tmp_path: Path) -> None:
    out = cli("run", "upstream-release", "--repo", "o/r", "--tag", "v1", "--data-dir", str(data_dir))
    assert out.returncode == 2 and "requires PATCH_WORKSPACE_BACKEND_URL" in out.stderr
    out = cli("run", "upstream-release", "--repo", "o/r", "--data-dir", str(data_dir))
    assert out.returncode == 2 and "requires --tag" in out.stderr
    ws = make_workspace(tmp_path, '[[steps]]\nname = "b"\non = ["upstream.release"]\ncommand = "true"\n')
    out = cli(
        "run",
        "upstream-release",
        "--repo",
        "o/r",
        "--tag",
        "v1",
        "--workspace",
        str(ws),
        "--dry-run",
        "--json",
        "--data-dir",
        str(data_dir),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["matches"] == [{"flow": "patchmoi", "step": "b", "runner": "command"}]
    assert not (data_dir / "flow-events.jsonl").exists()  # dry run writes nothing


def test_cli_run_dispatches_to_backend_and_keeps_json_pipeable(data_dir: Path, server: LoopbackServer) -> None:
    FakeBackend(server, secret="k")
    env = {"PATCH_WORKSPACE_BACKEND_URL": f"{server.url}/events", "PATCH_WORKSPACE_BACKEND_SECRET": "k"}
    out = cli(
        "run",
        "upstream-release",
        "--repo",
        "peezy-tech/patch-moi-harness",
        "--tag",
        "v0.1.3",
        "--json",
        "--data-dir",
        str(data_dir),
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["event"]["id"] == "patch:upstream.release:peezy-tech/patch-moi-harness:v0.1.3"
    assert result["recorded"] is True and result["record"]["runIds"] == ["run-1"]
    assert result["attempt"]["status"] == "started"
    assert "[flow] dispatch" in out.stderr and "[flow]" not in out.stdout
    again = json.loads(
        cli(
            "run",
            "upstream-release",
            "--repo",
            "peezy-tech/patch-moi-harness",
            "--tag",
            "v0.1.3",
            "--json",
            "--data-dir",
            str(data_dir),
            env=env,
        ).stdout
    )
    assert again["recorded"] is False and again["record"]["idempotent"] is True
    store = Store(data_dir)
    assert len(store.list_events()) == 1 and len(store.list_attempts()) == 2
    sync = cli("sync", result["attempt"]["id"], "--json", "--data-dir", str(data_dir), env=env)
    assert sync.returncode == 0 and json.loads(sync.stdout)["attempt"]["workspaceRunIds"] == ["run-1"]
    missing = cli("retry", "nope", "--data-dir", str(data_dir), env=env)
    assert missing.returncode == 1 and "no flow event" in missing.stderr


def test_cli_run_event_file_and_local_outcome_exit_code(data_dir: Path, tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path,
        """
[[steps]]
name = "conflict"
on = ["custom.thing"]
command = 'echo FLOW_RESULT {\\"status\\": \\"needs_intervention\\", \\"message\\": \\"conflict\\"}'
""",
    )
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps({"id": "custom:1", "type": "custom.thing", "payload": {"x": 1}}))
    out = cli("run", "event", "--file", str(ev), "--workspace", str(ws), "--data-dir", str(data_dir))
    assert out.returncode == 1, out.stderr  # needs_intervention → exit 1
    assert "! needs_intervention" in out.stdout and "conflict" in out.stdout
    runs = cli("runs", "--data-dir", str(data_dir))
    assert "patchmoi/conflict" in runs.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    assert cli("run", "event", "--file", str(bad), "--data-dir", str(data_dir)).returncode == 2


async def test_shutdown_interrupts_a_long_local_run_and_records_it(data_dir: Path, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, '[[steps]]\nname = "slow"\non = ["upstream.release"]\ncommand = "sleep 30"\n')
    store = Store(data_dir)
    event = upstream_release_event("o/r", "v1").to_dict()
    store.record_event(event)
    dispatcher = Dispatcher(store, {}, workspace=ws)
    outcome = await dispatcher.retry(event["id"], wait=False)
    assert outcome.task is not None
    import asyncio
    import time

    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await dispatcher.aclose(grace=0.2)
    assert time.monotonic() - t0 < 5
    attempt = store.get_attempt(outcome.attempt["id"])
    assert attempt is not None and attempt["status"] == "failed" and "interrupted by shutdown" in attempt["error"]
    run = store.get_run(outcome.record["runIds"][0])
    assert run is not None and run["status"] == "failed"
