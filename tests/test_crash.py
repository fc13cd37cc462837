"""Kill the poller (a real process, os._exit) at each step of the pipeline, poll again, and count.

No duplicate flow events, dispatches, attempts or Discord posts; no missed entry.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from patchmoi.core.store import Kind, Store

from .conftest import PYTHON, ROOT
from .feeds import atom_releases, source
from .loopback import FakeBackend, LoopbackServer, Reply

CRASHER = r"""
import asyncio, os, sys
from patchmoi.core.config import Settings
from patchmoi.core.service import Service
from patchmoi.core.store.log import Log
from patchmoi.core.store.store import Store
from patchmoi.core.dispatch.http import HttpBackend

point = sys.argv[1]
FILES = {"signal": "feed-events.jsonl", "job": "feed-jobs.jsonl", "event": "flow-events.jsonl",
         "outbox": "notifications.jsonl", "dispatch-record": "workspace-dispatches.jsonl",
         "attempt": "maintenance-attempts.jsonl"}

def die(*_a, **_k):
    os._exit(137)

if point in FILES:
    name = FILES[point]
    for method in ("append_if_absent", "append_many_if_absent", "append", "append_many", "append_with_unique_id"):
        original = getattr(Log, method)
        def wrapped(self, *a, _original=original, **k):
            result = _original(self, *a, **k)
            if self.path.name == name:
                die()
            return result
        setattr(Log, method, wrapped)
elif point == "dispatch-post":
    original_dispatch = HttpBackend.dispatch
    async def wrapped_dispatch(self, event, msg_id=None):
        await original_dispatch(self, event, msg_id)
        die()
    HttpBackend.dispatch = wrapped_dispatch
elif point == "state":
    original_state = Store.write_state
    def wrapped_state(self, state):
        original_state(self, state)
        die()
    Store.write_state = wrapped_state

async def main():
    service = Service(Settings.from_env())
    await service.poll_once()
    await service.stop()
asyncio.run(main())
"""

POINTS = ["signal", "job", "event", "outbox", "state", "dispatch-post", "dispatch-record", "attempt"]


def run_poll(tmp_path: Path, env: dict[str, str], crash: str | None = None) -> int:
    args = [PYTHON, "-c", CRASHER, crash] if crash else [PYTHON, "-m", "patchmoi", "poll", "--once"]
    return subprocess.run(
        args, cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, timeout=120
    ).returncode


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_crash_at_each_step_then_poll_again(tmp_path: Path, server: LoopbackServer, point: str) -> None:
    feed = {"body": atom_releases(["v1"])}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    server.route("/discord", Reply(204))
    backend = FakeBackend(server)
    sources = tmp_path / "feed-sources.json"
    target = {"mode": "workspace_flow", "eventType": "upstream.release", "workspaceUrl": backend.url}
    fork = {"mode": "fork_sync", "repoFullName": "me/r", "branch": "main"}
    sources.write_text(
        json.dumps(
            {
                "sources": [
                    source("rel", f"{server.url}/r.atom", target=target),
                    source("sync", f"{server.url}/r.atom", target=fork),
                ]
            }
        )
    )
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "FEED_SOURCES_PATH": str(sources),
        "DISCORD_OUTPUT_ENABLED": "1",
        "DISCORD_WEBHOOK_URL": f"{server.url}/discord",
        "DISCORD_NOTIFY_EVENTS": "release",
    }
    assert run_poll(tmp_path, env) == 0  # primes
    feed["body"] = atom_releases(["v3", "v2", "v1"])
    assert run_poll(tmp_path, env, crash=point) == 137
    assert run_poll(tmp_path, env) == 0
    assert run_poll(tmp_path, env) == 0  # and once more: nothing new

    store = Store(tmp_path / "data")
    signals = list((r for _, r in store.scan(Kind.SIGNALS)))
    assert sorted((s["sourceId"], s["ref"]) for s in signals) == [
        ("rel", "v2"),
        ("rel", "v3"),
        ("sync", "v2"),
        ("sync", "v3"),
    ]
    assert sorted(j["upstreamRef"] for j in (r for _, r in store.scan(Kind.JOBS))) == ["v2", "v3"]
    events = list((r for _, r in store.scan(Kind.EVENTS)))
    assert sorted(e["payload"]["tag"] for e in events) == ["v2", "v3"]
    dispatches = list((r for _, r in store.scan(Kind.DISPATCHES)))
    assert sorted(d["eventId"] for d in dispatches) == sorted(e["id"] for e in events)
    assert all(d["status"] == "dispatched" for d in dispatches)
    attempts = store.list_attempts(limit=50)
    assert len(attempts) == 2
    assert sorted(backend.events) == sorted(e["id"] for e in events)
    assert len(server.hits("/discord")) == 4  # one per signal (2 sources x 2 releases), never twice
