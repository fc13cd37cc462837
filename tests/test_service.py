"""The long-running service: per-source schedules, no overlapping passes, one poller per DATA_DIR."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.config import Settings
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.service import Service
from patchmoi.core.store import Store

from .feeds import atom_releases, source
from .loopback import LoopbackServer, Reply


def make_settings(tmp_path: Path, sources: list[dict[str, object]]) -> Settings:
    (tmp_path / "feed-sources.json").write_text(json.dumps({"sources": sources}))
    return Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "FEED_SOURCES_PATH": str(tmp_path / "feed-sources.json"),
            "PATCHMOI_MIN_POLL_SECONDS": "0.2",
        }
    )


async def test_poll_loop_honours_intervals_and_never_overlaps(tmp_path: Path, server: LoopbackServer) -> None:
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow(_req: object) -> Reply:
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        time.sleep(0.6)  # slower than the interval: a second pass must not start meanwhile
        with lock:
            active["now"] -= 1
        return Reply(body=atom_releases(["v1"]))

    server.route("/slow.atom", slow)
    server.route("/fast.atom", Reply(body=atom_releases(["v1"])))
    fast = source("fast", f"{server.url}/fast.atom")
    fast["pollIntervalSeconds"] = 0.2
    slow_src = source("slow", f"{server.url}/slow.atom")
    slow_src["pollIntervalSeconds"] = 0.2
    lazy = source("lazy", f"{server.url}/fast.atom?lazy=1")
    lazy["pollIntervalSeconds"] = 3600
    service = Service(make_settings(tmp_path, [fast, slow_src, lazy]))
    await service.start()
    assert service.polling
    await asyncio.sleep(2.5)
    health = service.health()
    await service.stop()
    fast_polls = len([r for r in server.hits("/fast.atom") if not r.query])
    assert fast_polls >= 5  # every ~0.2 s (with jitter)
    assert active["max"] == 1  # the slow source's passes never overlapped
    assert len([r for r in server.requests if r.query.get("lazy") is not None]) == 1  # polled once, then waits
    by_id = {s["sourceId"]: s for s in health["sources"]}
    assert by_id["lazy"]["nextDueAt"] > by_id["fast"]["nextDueAt"]
    assert health["dispatchQueueDepth"] == 0 and health["store"]["skippedLines"] == 0


async def test_one_poller_per_data_dir(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/r.atom", Reply(body=atom_releases(["v1"])))
    settings = make_settings(tmp_path, [source("r", f"{server.url}/r.atom")])
    first = Service(settings)
    await first.start()
    second = Service(settings)
    await second.start()
    try:
        assert first.polling and not second.polling
        assert "another process" in (second.last_error or "")
        with pytest.raises(PatchmoiError, match="is polling"):
            await second.poll_once()
    finally:
        await second.stop()
        await first.stop()


async def test_invalid_sources_edit_keeps_last_good_list(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/r.atom", Reply(body=atom_releases(["v1"])))
    settings = make_settings(tmp_path, [source("r", f"{server.url}/r.atom")])
    service = Service(settings)
    assert [s.id for s in service.sources_file.load()] == ["r"]
    time.sleep(0.01)
    (tmp_path / "feed-sources.json").write_text('{"sources": [ {"id": "broken", }')
    import os

    os.utime(tmp_path / "feed-sources.json", (time.time() + 5, time.time() + 5))
    assert [s.id for s in service.sources_file.load()] == ["r"]
    assert "invalid JSON" in (service.health()["sourcesError"] or "")
    await service.stop()


async def test_an_event_in_flight_to_a_slow_backend_is_sent_once(tmp_path: Path, server: LoopbackServer) -> None:
    """Recovery looks for events without a dispatch record every second; one still being delivered has none."""
    posts: list[float] = []

    def slow(req: Any) -> Reply:
        if req.method == "POST":
            posts.append(time.monotonic())
            time.sleep(3.0)
        return Reply.json({"status": "accepted", "eventId": "x", "runIds": ["r1"], "matched": 1}, 202)

    server.route("/events", slow)
    server.route("/r.atom", Reply(body=atom_releases(["v1"])))
    target = {"mode": "workspace_flow", "eventType": "upstream.release", "workspaceUrl": server.url}
    settings = make_settings(tmp_path, [source("rel", f"{server.url}/r.atom", target=target)])
    store = Store(settings.data_dir)
    store.record_event(
        {"id": "patch:rel:v0:upstream.release", "type": "upstream.release", "payload": {"sourceId": "rel"}}
    )
    store.close()
    service = Service(settings)
    await service.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not service.store.list_dispatches():
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # recovery passes while the POST was in flight, and after
    finally:
        await service.stop()
    assert len(posts) == 1
    assert len(Store(settings.data_dir).list_dispatches()) == 1
