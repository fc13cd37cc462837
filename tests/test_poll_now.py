"""Poll one source now (core/pollnow.py): `POST /feed-sources/{id}/poll` on a server whose poll worker polls, on
one that polls in-process and on one that does not poll; and `poll_source_now` for the local dashboard, which
refuses while another process holds the poller lease. Against real loopback feeds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.testclient import TestClient

from patchmoi.core import service as service_module
from patchmoi.core.config import Settings
from patchmoi.core.errors import NotFoundError
from patchmoi.core.operations import POLLER_LEASE, build_dispatcher
from patchmoi.core.pollnow import PollerBusy, poll_source_now
from patchmoi.core.service import POLL_NOW_REUSE_SECONDS, Service
from patchmoi.core.store import Kind, Store
from patchmoi.server.app import create_app

from .feeds import atom_releases, source
from .loopback import FakeBackend, LoopbackServer, Reply, free_port
from .test_server_process import start, stop, wait_for

TOKEN = "poll-now-token"
H = {"Authorization": f"Bearer {TOKEN}"}
SID = "gh:rel/1"  # an id with ':' and '/': percent-encoded in the path
PATH = f"/feed-sources/{quote(SID, safe='')}/poll"
INTERVAL = 3600.0  # the schedule never polls again during a test: what changes is the poll-now's doing


class Feed:
    """A loopback feed whose document (or failure) the test sets."""

    def __init__(self, server: LoopbackServer, tags: list[str]) -> None:
        self.reply = Reply(body=atom_releases(tags))
        self.server = server
        server.route("/r.atom", lambda _r: self.reply)

    def set(self, tags: list[str]) -> None:
        self.reply = Reply(body=atom_releases(tags))

    def fail(self) -> None:
        self.reply = Reply(500, b"upstream down")

    @property
    def fetches(self) -> int:
        return len(self.server.hits("/r.atom"))


def write_sources(tmp_path: Path, server: LoopbackServer) -> Path:
    src = source(SID, f"{server.url}/r.atom", target={"mode": "workspace_flow", "eventType": "upstream.release"})
    src["pollIntervalSeconds"] = INTERVAL
    path = tmp_path / "feed-sources.json"
    path.write_text(json.dumps({"sources": [src]}))
    return path


def env_for(tmp_path: Path, sources: Path, **more: str) -> dict[str, str]:
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "FEED_SOURCES_PATH": str(sources),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCHMOI_MIN_POLL_SECONDS": "0.2",
        **more,
    }


def seconds_between(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


# -- serve, with its poll worker ----------------------------------------------------------------------------
@pytest.mark.slow
def test_poll_now_in_the_poll_worker(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    sources = write_sources(tmp_path, server)
    port = free_port()
    proc = start(tmp_path, port, {"PATH": os.environ["PATH"], **env_for(tmp_path, sources)})
    base = f"http://127.0.0.1:{port}"

    def ready_source() -> dict[str, Any]:
        sources = httpx.get(f"{base}/readyz", headers=H, timeout=10).json()["sources"]
        assert isinstance(sources, list) and sources[0]["sourceId"] == SID
        return dict(sources[0])

    def poll() -> dict[str, Any]:
        time.sleep(POLL_NOW_REUSE_SECONDS + 0.1)  # presses apart: each polls (one at once gets the last answer)
        r = httpx.post(base + PATH, headers=H, timeout=60)
        assert r.status_code == 200, r.text
        return dict(r.json())

    try:
        wait_for(lambda: ready_source().get("lastStatus") == "primed")  # the schedule's first poll
        fetched = feed.fetches
        planned = ready_source()["nextDueAt"]
        # failures are counted, but a poll-now's failure never puts the schedule's next poll later
        feed.fail()
        assert poll()["status"] == "error"
        failed = poll()
        assert failed["status"] == "error" and "500" in str(failed["error"]) and failed["newEntries"] == 0
        health = ready_source()
        assert health["consecutiveErrors"] == 2 and health["lastPolledAt"] == failed["polledAt"]
        assert health["nextDueAt"] == failed["nextDueAt"]
        assert seconds_between(health["nextDueAt"], planned) < 1  # no later than planned (jitter may be earlier)
        # a new release: one signal, one flow event, and the back-off is over
        feed.set(["v1.1.0", "v1.0.0"])
        done = poll()
        assert done["status"] == "ok" and done["newEntries"] == 1 and len(done["events"]) == 1, done
        assert done["sourceId"] == SID and done["error"] is None
        health = ready_source()
        assert health["consecutiveErrors"] == 0 and health["lastPolledAt"] == done["polledAt"]
        assert 0.9 * INTERVAL <= seconds_between(health["nextDueAt"], health["lastPolledAt"]) <= 1.1 * INTERVAL
        signals = httpx.get(f"{base}/feed-signals", params={"sourceId": SID}, headers=H).json()["signals"]
        assert [s["title"] for s in signals] == ["v1.1.0"]
        events = httpx.get(f"{base}/flow-events", headers=H).json()["events"]
        assert [e["id"] for e in events] == done["events"]
        # again, nothing new: nothing is recorded twice
        again = poll()
        assert again["status"] == "ok" and again["newEntries"] == 0 and again["events"] == []
        assert len(httpx.get(f"{base}/feed-signals", headers=H).json()["signals"]) == 1
        assert feed.fetches == fetched + 4  # one fetch per poll-now; the schedule itself polled no more
        # errors
        r = httpx.post(f"{base}/feed-sources/nope/poll", headers=H)
        assert r.status_code == 404 and r.json()["error"] == "not_found" and "nope" in r.json()["message"]
        assert httpx.post(f"{base}/feed-sources/{SID}/poll", headers=H).status_code == 404  # '/' not encoded
        assert httpx.post(base + PATH).status_code == 401
        r = httpx.get(base + PATH, headers=H)
        assert r.status_code == 405 and r.headers["allow"] == "POST, OPTIONS"
        assert httpx.options(base + PATH, headers=H).status_code == 204
        assert httpx.post(f"{base}/feed-sources", headers=H).status_code == 404
        # the dashboard on the same DATA_DIR, local mode: refused, told to use the server
        settings = Settings.from_env(env_for(tmp_path, sources))
        with pytest.raises(PollerBusy, match="--url"):
            asyncio.run(poll_source_now(settings, Store(settings.data_dir), SID))
    finally:
        code, log = stop(proc)
    assert code in (0, -signal.SIGTERM)
    assert '"type": "feed.poll_now"' in log


# -- a server that polls in its own process ------------------------------------------------------------------
def test_poll_now_in_process(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    settings = Settings.from_env(env_for(tmp_path, write_sources(tmp_path, server)))
    service = Service(settings)  # polls here, not in a worker
    with TestClient(create_app(settings, service=service)) as client:
        wait_for(lambda: service.poller.health.get(SID, {}).get("lastStatus") == "primed")
        feed.set(["v1.1.0", "v1.0.0"])
        r = client.post(PATH, headers=H)
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "ok" and done["newEntries"] == 1 and len(done["events"]) == 1
        assert [s["title"] for s in service.store.select(Kind.SIGNALS, filters={"sourceId": SID})] == ["v1.1.0"]
        ready = client.get("/readyz", headers=H).json()["sources"][0]
        assert ready["lastPolledAt"] == done["polledAt"] and ready["nextDueAt"] == done["nextDueAt"]
        assert 0.9 * INTERVAL <= seconds_between(done["nextDueAt"], done["polledAt"]) <= 1.1 * INTERVAL
        assert SID not in service._running  # reaped and scheduled, once
        assert client.post("/feed-sources/nope/poll", headers=H).status_code == 404


@pytest.mark.slow
def test_poll_now_of_a_failing_source_keeps_its_schedule_and_repeats_are_one_poll(
    tmp_path: Path, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review of #16) 12 poll-nows of a failing feed moved its next poll from ~10 to ~80 minutes away, and 20
    at once made 11 fetches; an invalid feed-sources.json answered `not_found`."""
    feed = Feed(server, ["v1.0.0"])
    sources = write_sources(tmp_path, server)
    settings = Settings.from_env(env_for(tmp_path, sources))
    service = Service(settings)
    with TestClient(create_app(settings, service=service)) as client:
        wait_for(lambda: service.poller.health.get(SID, {}).get("lastStatus") == "primed")
        planned = client.get("/readyz", headers=H).json()["sources"][0]["nextDueAt"]
        feed.fail()
        answers = []
        for _ in range(6):
            answers.append(client.post(PATH, headers=H).json())
            service._polled_now.clear()  # past the reuse window, as presses seconds apart are
        assert all(a["status"] == "error" for a in answers)
        assert service.poller.health[SID]["consecutiveErrors"] == 6
        assert client.get("/readyz", headers=H).json()["sources"][0]["nextDueAt"] <= planned  # not pushed back
        fetches = feed.fetches
        monkeypatch.setattr(service_module, "POLL_NOW_REUSE_SECONDS", 30.0)  # (a loaded machine is slow to ask)
        again = [client.post(PATH, headers=H).json() for _ in range(5)]  # a key held down
        assert feed.fetches == fetches + 1 and [a.get("reused") for a in again] == [None, True, True, True, True]
        sources.write_text("{not json")  # an operator's broken edit: the last good list is kept, and said
        r = client.post("/feed-sources/added-in-the-broken-edit/poll", headers=H)
        assert r.status_code == 500 and r.json()["error"] == "invalid_config" and str(sources) in r.json()["message"]


# -- a server that does not poll -----------------------------------------------------------------------------
def test_poll_now_on_a_server_that_does_not_poll(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    settings = Settings.from_env(env_for(tmp_path, write_sources(tmp_path, server)))
    with TestClient(create_app(settings, poll=False)) as client:
        assert client.post(PATH, headers=H).json()["status"] == "primed"  # under the lease, for this poll only
        feed.set(["v1.1.0", "v1.0.0"])
        done = client.post(PATH, headers=H).json()
        assert done["newEntries"] == 1 and done["nextDueAt"] is None  # no schedule here
        other = Store(settings.data_dir)
        assert other.lease_holder(POLLER_LEASE) is None  # given back
        assert other.acquire_lease(POLLER_LEASE, "4242", 30)  # another poller now
        try:
            r = client.post(PATH, headers=H)
            assert r.status_code == 409 and r.json()["error"] == "poller_busy"
            assert "pid 4242" in r.json()["message"]
        finally:
            other.release_lease(POLLER_LEASE, "4242")
        assert client.post(PATH, headers=H).json()["status"] == "ok"


# -- the local dashboard ---------------------------------------------------------------------------------------
async def test_poll_source_now_locally(tmp_path: Path, server: LoopbackServer) -> None:
    feed = Feed(server, ["v1.0.0"])
    backend = FakeBackend(server)
    settings = Settings.from_env(
        env_for(tmp_path, write_sources(tmp_path, server), PATCH_WORKSPACE_BACKEND_URL=backend.url)
    )
    store = Store(settings.data_dir)
    store.ensure()
    dispatcher = build_dispatcher(settings, store)
    try:
        first = await poll_source_now(settings, store, SID, dispatcher=dispatcher)
        assert first["status"] == "primed" and first["newEntries"] == 0
        feed.set(["v1.1.0", "v1.0.0"])
        done = await poll_source_now(settings, store, SID, dispatcher=dispatcher)
        assert done["status"] == "ok" and done["newEntries"] == 1 and done["dispatched"] == 1
        assert list(backend.events) == done["events"]  # dispatched, as the poller's queue would
        assert [s["title"] for s in store.select(Kind.SIGNALS)] == ["v1.1.0"]
        assert store.lease_holder(POLLER_LEASE) is None
        state = Store(settings.data_dir).read_state()[SID]
        assert state["primed"] and state["lastSeenId"].endswith("/v1.1.0")
        feed.set(["v1.2.0", "v1.1.0", "v1.0.0"])
        undispatched = await poll_source_now(settings, store, SID)  # no dispatcher: recovery's job, later
        assert undispatched["newEntries"] == 1 and "dispatched" not in undispatched
        assert store.undispatched(undispatched["events"]) == set(undispatched["events"])
        again = await poll_source_now(settings, store, SID)
        assert again["newEntries"] == 0 and len(store.select(Kind.SIGNALS)) == 2
        with pytest.raises(NotFoundError, match="nope"):
            await poll_source_now(settings, store, "nope")
        holder = Store(settings.data_dir)
        assert holder.acquire_lease(POLLER_LEASE, str(os.getpid() + 1), 30)
        try:
            with pytest.raises(PollerBusy, match="ask it") as refused:
                await poll_source_now(settings, store, SID)
            assert "--url" in str(refused.value) and refused.value.code == "poller_busy"
        finally:
            holder.release_lease(POLLER_LEASE, str(os.getpid() + 1))
        assert feed.fetches == 4  # the refused poll fetched nothing
    finally:
        await dispatcher.aclose()
        store.close()
