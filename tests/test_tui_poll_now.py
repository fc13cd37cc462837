"""`p` on the dashboard's Sources tab polls the selected source now: locally (under the poller lease, refused
while another process polls the DATA_DIR) and remotely (the server's POST /feed-sources/{id}/poll), against a
real loopback feed."""

from __future__ import annotations

import os
from pathlib import Path

from patchmoi.core.config import Settings
from patchmoi.core.operations import POLLER_LEASE
from patchmoi.core.store import Kind, Store
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.client import LocalClient, RemoteClient

from .loopback import FakeBackend, LoopbackServer
from .test_poll_now import SID, Feed, env_for, write_sources
from .test_tui import NOW, notes, wait_for
from .test_tui_remote import TOKEN, serving


def signals(data: Path) -> list[str]:
    store = Store(data)
    try:
        return [str(s.get("title")) for s in store.select(Kind.SIGNALS)]
    finally:
        store.close()


async def test_p_polls_the_selected_source_locally(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    backend = FakeBackend(server)
    env = env_for(tmp_path, write_sources(tmp_path, server), PATCH_WORKSPACE_BACKEND_URL=backend.url)
    app = PatchmoiApp(LocalClient(Settings.from_env(env)), clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: app.table("sources").row_count == 1)
        await pilot.press("p")  # the first poll primes: nothing is recorded
        await wait_for(pilot, lambda: "primed" in notes(app))
        assert f"poll {SID}: primed, 0 new entries" in notes(app), notes(app)
        feed.set(["v1.1.0", "v1.0.0"])
        await pilot.press("p")
        await wait_for(pilot, lambda: "1 new entry" in notes(app))
        assert "ok, 1 new entry, 1 flow event" in notes(app) and "flow events" not in notes(app)
        assert signals(tmp_path / "data") == ["v1.1.0"]
        await wait_for(pilot, lambda: len(backend.events) == 1)
        assert len(backend.events) == 1  # its flow event was dispatched, as the poller's queue would

        holder = Store(tmp_path / "data")  # another process polls this DATA_DIR: refused, and said why
        assert holder.acquire_lease(POLLER_LEASE, str(os.getpid() + 1), 30)
        try:
            await pilot.press("p")
            await wait_for(pilot, lambda: "another process" in notes(app))
            assert "another process" in notes(app) and "--url" in notes(app), notes(app)
        finally:
            holder.release_lease(POLLER_LEASE, str(os.getpid() + 1))
            holder.close()
        assert feed.fetches == 2

        await pilot.press("1", "p")  # not on the Sources tab: it says where p works
        await pilot.pause(0.1)
        assert "select one on tab 6" in notes(app)


async def test_p_asks_the_server_to_poll_in_remote_mode(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    sources = write_sources(tmp_path, server)
    data = tmp_path / "data"
    data.mkdir()
    with serving(data, env={"FEED_SOURCES_PATH": str(sources), "PATCHMOI_MIN_POLL_SECONDS": "0.2"}) as url:
        app = PatchmoiApp(RemoteClient(url, TOKEN, interval=3600), clock=lambda: NOW, health_interval=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await wait_for(pilot, lambda: app.table("sources").row_count == 1)
            await pilot.press("p")
            await wait_for(pilot, lambda: "primed" in notes(app))
            feed.set(["v1.1.0", "v1.0.0"])
            await pilot.press("p")
            await wait_for(pilot, lambda: "1 new entry" in notes(app))
            assert f"poll {SID}: ok, 1 new entry" in notes(app), notes(app)
            await wait_for(pilot, lambda: app.table("signals").row_count == 1)  # streamed to tab 1
            assert app.table("signals").row_count == 1 and signals(data) == ["v1.1.0"]


async def test_read_only_mode_does_not_poll(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    env = env_for(tmp_path, write_sources(tmp_path, server))
    app = PatchmoiApp(LocalClient(Settings.from_env(env), read_only=True), clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: app.table("sources").row_count == 1)
        await pilot.press("p")
        await pilot.pause(0.2)
        assert "read-only mode: poll now is disabled" in notes(app)
        assert feed.fetches == 0
