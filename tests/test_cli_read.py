from __future__ import annotations

import json
import subprocess
from pathlib import Path

from patchmoi.core.store import Kind, Store

from .conftest import PYTHON, ROOT


def patchmoi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "patchmoi", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )


def seed(data_dir: Path) -> None:
    store = Store(data_dir)
    eid = "patch:upstream.release:acme/widget:v1.2.0"
    store.record_event(
        {
            "id": eid,
            "type": "upstream.release",
            "source": "patch",
            "receivedAt": "2026-11-21T10:00:00.000Z",
            "payload": {"repo": "acme/widget", "tag": "v1.2.0"},
        }
    )
    store.append(
        Kind.DISPATCHES,
        {
            "eventId": eid,
            "eventType": "upstream.release",
            "operation": "dispatch",
            "target": "local",
            "transport": "local",
            "status": "dispatched",
            "createdAt": "2026-11-21T10:00:01.000Z",
            "runIds": ["run-1"],
        },
    )
    store.append(
        Kind.DISPATCHES,
        {
            "eventId": eid,
            "eventType": "upstream.release",
            "operation": "replay",
            "target": "workspace-backend",
            "transport": "workspace-http",
            "status": "failed",
            "error": "backend down",
            "createdAt": "2026-11-21T10:05:00.000Z",
        },
    )
    store.append(
        Kind.ATTEMPTS,
        {
            "id": f"{eid}:dispatch:1",
            "eventId": eid,
            "status": "changed",
            "operation": "dispatch",
            "upstreamRepo": "acme/widget",
            "upstreamTag": "v1.2.0",
            "message": "candidate ready",
            "updatedAt": "2026-11-21T10:00:02.000Z",
            "workspaceRunIds": ["run-1"],
            "candidateRefs": [{"kind": "branch", "ref": "refs/heads/candidate/v1.2.0", "sha": "abc"}],
        },
    )


def test_events_text_and_json(data_dir: Path) -> None:
    seed(data_dir)
    out = patchmoi("events", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == ["RECEIVED", "TYPE", "REPO@REF", "ID"]
    assert "ago" in row and "acme/widget@v1.2.0" in row and "{" not in row
    js = json.loads(patchmoi("events", "--data-dir", str(data_dir), "--json").stdout)
    assert js["events"][0]["payload"]["tag"] == "v1.2.0"


def test_dispatch_and_attempt_filters(data_dir: Path) -> None:
    seed(data_dir)
    js = json.loads(patchmoi("dispatches", "--data-dir", str(data_dir), "--status", "failed", "--json").stdout)
    assert [d["operation"] for d in js["dispatches"]] == ["replay"]
    text = patchmoi("attempts", "--data-dir", str(data_dir), "--status", "changed").stdout
    assert "✚ changed" in text and "candidate ready" in text
    assert "no maintenance attempts" in patchmoi("attempts", "--data-dir", str(data_dir), "--status", "failed").stdout


def test_show_walks_the_chain_and_exit_codes(data_dir: Path) -> None:
    seed(data_dir)
    out = patchmoi("show", "patch:upstream.release:acme/widget:v1.2.0", "--data-dir", str(data_dir))
    assert out.returncode == 0 and "dispatches   2" in out.stdout and "attempts     1" in out.stdout
    out = patchmoi("show", "patch:upstream.release:acme/widget:v1.2.0:dispatch:1", "--data-dir", str(data_dir))
    assert "refs/heads/candidate/v1.2.0" in out.stdout
    missing = patchmoi("show", "nope", "--data-dir", str(data_dir))
    assert missing.returncode == 1 and "no flow event" in missing.stderr
    usage = patchmoi("dispatches", "--status", "weird", "--data-dir", str(data_dir))
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    absent = patchmoi("events", "--data-dir", str(data_dir / "absent"))
    assert absent.returncode == 1 and "does not exist" in absent.stderr


def test_status_reports_damage(data_dir: Path) -> None:
    seed(data_dir)
    with open(data_dir / "flow-events.jsonl", "ab") as fh:
        fh.write(b"{garbage\n")
    out = patchmoi("status", "--data-dir", str(data_dir))
    assert out.returncode == 0
    assert "DAMAGED: 1 malformed lines skipped" in out.stdout
    js = json.loads(patchmoi("status", "--data-dir", str(data_dir), "--json").stdout)
    assert js["attemptStatusCounts"] == {"changed": 1} and js["dispatchStatusCounts"] == {"dispatched": 1, "failed": 1}


def test_help_teaches(data_dir: Path) -> None:
    out = patchmoi("--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "DATA_DIR" in out.stdout
    assert patchmoi().returncode == 0
