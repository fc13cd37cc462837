"""`serve` polls in a child process (core/worker.py): the API process restarts it when it dies, the child never
outlives the API process, and /readyz reports it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from patchmoi.core.config import Settings
from patchmoi.core.service import Service
from patchmoi.core.store import Store
from patchmoi.core.worker import PollWorker

from .feeds import atom_releases, source
from .loopback import LoopbackServer, Reply, free_port
from .test_server_process import TOKEN, start, stop, wait_for
from .test_service import make_settings

H = {"Authorization": f"Bearer {TOKEN}"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def _env(tmp_path: Path, server: LoopbackServer, feed: dict[str, bytes]) -> dict[str, str]:
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    src = source("rel", f"{server.url}/r.atom", target={"mode": "workspace_flow", "eventType": "upstream.release"})
    src["pollIntervalSeconds"] = 0.3
    sources = tmp_path / "feed-sources.json"
    sources.write_text(json.dumps({"sources": [src]}))
    return {
        "PATH": os.environ["PATH"],
        "DATA_DIR": str(tmp_path / "data"),
        "FEED_SOURCES_PATH": str(sources),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCHMOI_MIN_POLL_SECONDS": "0.3",
    }


def _ready_when(base: str, check: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The first /readyz answer that passes `check`."""
    found: list[dict[str, Any]] = []

    def probe() -> bool:
        body = _ready(base)
        found[:] = [body]
        return bool(check(body))

    wait_for(probe)
    return found[0]


def _ready(base: str) -> dict[str, Any]:
    body = httpx.get(f"{base}/readyz", headers=H, timeout=5).json()
    assert isinstance(body, dict)
    return body


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_polling_goes_on(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases(["v1.0.0"])}
    port = free_port()
    proc = start(tmp_path, port, _env(tmp_path, server, feed))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: Store(tmp_path / "data").read_state().get("rel", {}).get("primed"))
        first = _ready_when(base, lambda r: r["polling"])
        worker = first["worker"]
        assert isinstance(worker, dict) and worker["restarts"] == 0
        pid = worker["pid"]
        assert isinstance(pid, int) and pid != proc.pid and _alive(pid)
        assert first["pollerLockHolder"] is None and first["sources"][0]["sourceId"] == "rel"

        os.kill(pid, signal.SIGKILL)
        down = _ready_when(base, lambda r: r["worker"]["pid"] is None)
        assert down["status"] == "degraded" and down["polling"] is False
        assert "exited with code -9" in str(down["lastError"])
        assert httpx.get(f"{base}/flow-events", headers=H).status_code == 200  # the API never stopped

        again = _ready_when(base, lambda r: r["polling"] and r["sources"][0].get("lastPolledAt"))
        assert again["worker"]["restarts"] == 1 and again["worker"]["pid"] not in (None, pid)
        feed["body"] = atom_releases(["v1.1.0", "v1.0.0"])  # the new worker polls, records and dispatches
        events = wait_for(lambda: httpx.get(f"{base}/flow-events", headers=H).json()["events"])
        assert events[0]["payload"]["tag"] == "v1.1.0"
    finally:
        code, log = stop(proc)
    assert code in (0, -signal.SIGTERM)
    assert '"type": "worker.exited"' in log and '"type": "server.stopped"' in log


@pytest.mark.slow
def test_the_worker_never_outlives_the_api_process(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases(["v1.0.0"])}
    port = free_port()
    proc = start(tmp_path, port, _env(tmp_path, server, feed))
    base = f"http://127.0.0.1:{port}"
    try:
        ready = _ready_when(base, lambda r: r["polling"])
        pid = ready["worker"]["pid"]
        assert isinstance(pid, int)
        proc.kill()  # SIGKILL: no shutdown code runs in the API process
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the poll worker outlived the API process"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # and the next server polls at once: the dead worker's lease went with it
    proc = start(tmp_path, port, _env(tmp_path, server, feed))
    try:
        assert wait_for(lambda: _ready(base)["polling"])
    finally:
        stop(proc)


@pytest.mark.slow
def test_serve_without_sources_or_with_no_poll_has_no_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path / "data"), "PATCH_ADMIN_TOKEN": TOKEN}
    proc = start(tmp_path, port, env)
    try:
        ready = _ready(f"http://127.0.0.1:{port}")
        assert "worker" not in ready and ready["polling"] is False
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children == []
    finally:
        stop(proc)


@pytest.mark.slow
def test_a_sigterm_to_the_whole_group_stops_serve_without_a_new_worker(tmp_path: Path, server: LoopbackServer) -> None:
    """systemd's default KillMode and `kill -- -PGID` signal the worker too: it leaves its stop to serve."""
    feed = {"body": atom_releases(["v1.0.0"])}
    port = free_port()
    proc = start(tmp_path, port, _env(tmp_path, server, feed), new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(base)["polling"])
        os.killpg(proc.pid, signal.SIGTERM)
        _, log = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert log.count('"type": "worker.started"') == 1 and '"type": "worker.exited"' not in log, log[-3000:]
    assert '"type": "server.stopped"' in log


async def test_a_waiting_poller_takes_the_lease_when_the_leader_stops(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/r.atom", Reply(body=atom_releases(["v1"])))
    settings = make_settings(tmp_path, [source("r", f"{server.url}/r.atom")])
    first, second = Service(settings), Service(settings)
    await first.start()
    await second.start()
    try:
        assert first.polling and not second.polling
        await first.stop()  # hands the lease over before its local runs' grace
        deadline = time.monotonic() + 10
        while not second.polling and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert second.polling and second.last_error is None
    finally:
        await second.stop()


def test_only_whole_answers_are_kept(tmp_path: Path) -> None:
    """A child killed mid-write leaves a partial last line; it is never served."""
    worker = PollWorker(Settings.from_env({"DATA_DIR": str(tmp_path)}), "1")
    worker._receive(b'{"type": "health", "id": 1, "head": {"status": "ok"}}\n')
    worker._receive(b'{"sources": [{"sourceId": "a"}, {"sourceId": "b"')  # no newline: the end of its output
    assert worker.last_health is None
    worker._receive(b'{"type": "health", "id": 3, "head": {"status": "ok"}}\n')
    worker._receive(b'{"sources": []}\n')
    assert worker.last_health == ({"status": "ok"}, b'{"sources": []}')
