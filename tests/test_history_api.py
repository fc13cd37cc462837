"""`GET /history/{kind}` (server/app.py over core/history.py) on a real server on 127.0.0.1: paging the whole
history by `next`, the filter terms, attempt states, its errors, and the dashboard's RemoteClient.search on it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from patchmoi.core.config import Settings
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.history import search
from patchmoi.core.store import Kind, Store
from patchmoi.server import app as server_app
from patchmoi.server.app import create_app
from patchmoi.server.run import Server, uvicorn_config
from patchmoi.tui.client import RemoteClient

from .loopback import free_port

TOKEN = "history-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVENTS = 6000
BASE = datetime(2026, 11, 1, tzinfo=UTC)


def iso(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(i: int) -> dict[str, Any]:
    return {
        "id": f"patch:src-{i % 7}:e{i}:upstream.release",
        "type": "upstream.push" if i % 3 == 0 else "upstream.release",
        "source": "patch",
        "receivedAt": iso(i),
        "upstreamRepo": f"owner{i % 10}/widget",
        "upstreamTag": f"v{i}.0.0",
        "payload": {"sourceId": f"src-{i % 7}"},
    }


def attempt(aid: str, status: str, workspace: str, tag: str, minute: int) -> dict[str, Any]:
    return {
        "id": aid,
        "eventId": f"ev-{aid}",
        "status": status,
        "workspace": workspace,
        "upstreamRepo": "acme/widget",
        "upstreamTag": tag,
        "createdAt": iso(minute),
        "updatedAt": iso(minute),
    }


# The latest record of each attempt, and the derived state it must have (core.attempt_states).
ATTEMPTS = {
    "a-open": ("failed", "/w/a", "v1", "open"),
    "a-resolved": ("failed", "/w/b", "v1", "resolved"),  # a later success of the same fork and release...
    "a-fixed": ("completed", "/w/b", "v1", "done"),  # ...this one
    "a-stuck": ("needs_intervention", "/w/c", "v2", "open"),
    "a-moved": ("failed", "/w/d", "v3", "open"),  # first recorded as started (below): the latest record wins
}
DISPATCH_STATUSES = ("dispatched", "failed", "skipped")


def seed(data: Path) -> None:
    store = Store(data)
    store.ensure()
    store.append_many(Kind.EVENTS, [event(i) for i in range(EVENTS)])
    store.append(Kind.ATTEMPTS, attempt("a-moved", "started", "/w/d", "v3", 1))
    store.append_many(
        Kind.ATTEMPTS,
        [attempt(aid, status, ws, tag, 10 + n) for n, (aid, (status, ws, tag, _)) in enumerate(ATTEMPTS.items())],
    )
    store.append_many(
        Kind.DISPATCHES,
        [
            {
                "eventId": event(i)["id"],
                "eventType": "upstream.release",
                "operation": "dispatch",
                "status": DISPATCH_STATUSES[i % 3],
                "createdAt": iso(i),
            }
            for i in range(300)
        ],
    )
    store.close()


@contextlib.contextmanager
def serving(data: Path) -> Iterator[str]:
    """`patchmoi serve`'s server (server.run.Server) on `data`, in a thread, without polling: its base URL."""
    port = free_port()
    settings = Settings.from_env({"DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN})
    server = Server(uvicorn_config(create_app(settings, poll=False), "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("history") / "data"
    seed(data)
    with serving(data) as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        yield client


def everything(http: httpx.Client, kind: str, q: str = "", limit: int = 500) -> tuple[list[dict[str, Any]], int]:
    """Every match, following `next` until it is null; how many requests that took."""
    records: list[dict[str, Any]] = []
    params: dict[str, Any] = {"q": q, "limit": limit}
    steps = 0
    while True:
        r = http.get(f"/history/{kind}", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        steps += 1
        assert steps <= 100, "`next` does not move on"
        assert set(body) == {"items", "next", "scanned", "size"}
        records += [item["record"] for item in body["items"]]
        if body["next"] is None:
            return records, steps
        # fewer records than a step reads (core.history.BUDGET): a step that goes on ended at `limit` matches
        assert body["next"] == body["items"][-1]["cursor"]
        params["before"] = body["next"]


def event_ids(indexes: Any) -> list[str]:
    return [event(i)["id"] for i in sorted(indexes, reverse=True)]


def test_paging_by_next_reads_the_whole_history_past_the_lists_500(http: httpx.Client) -> None:
    first = http.get("/history/events", params={"limit": 500}).json()
    assert len(first["items"]) == 500 and first["size"] == EVENTS and first["scanned"] == 500
    assert all(isinstance(item["cursor"], str) for item in first["items"])
    records, steps = everything(http, "events")
    assert [r["id"] for r in records] == event_ids(range(EVENTS))  # newest first, each once, none missing
    assert records[-1] == event(0)  # the record as stored
    assert steps == EVENTS // 500 + 1  # the last full page still has a `next`; the step after it ends
    # the default limit is 200; `limit` is read as the other lists read it (Number(): 0x10 is 16), at most 500
    assert len(http.get("/history/events").json()["items"]) == 200
    assert len(http.get("/history/events", params={"limit": "0x10"}).json()["items"]) == 16
    assert len(http.get("/history/events", params={"limit": "9999"}).json()["items"]) == 500
    # a cursor from one answer goes on from there, in a later request as well
    cursor = first["items"][99]["cursor"]
    after = http.get("/history/events", params={"before": cursor, "limit": 3}).json()
    assert [i["record"]["id"] for i in after["items"]] == event_ids(range(EVENTS - 103, EVENTS - 100))


def test_filter_terms(http: httpx.Client) -> None:
    pushes, _ = everything(http, "events", "type:upstream.push")
    assert [r["id"] for r in pushes] == event_ids(i for i in range(EVENTS) if i % 3 == 0)
    both, _ = everything(http, "events", "repo:owner4 type:upstream.push")  # every term must match
    assert [r["id"] for r in both] == event_ids(i for i in range(EVENTS) if i % 10 == 4 and i % 3 == 0)
    sourced, _ = everything(http, "events", "source:src-3")
    assert [r["id"] for r in sourced] == event_ids(i for i in range(EVENTS) if i % 7 == 3)
    word, _ = everything(http, "events", "V17.0.0")  # a free word, anywhere in the record, any case
    assert [r["id"] for r in word] == event_ids([17])
    failed, _ = everything(http, "dispatches", "status:failed")
    assert len(failed) == 100 and {r["status"] for r in failed} == {"failed"}


def test_since_and_until_bound_the_search_by_time(http: httpx.Client) -> None:
    since = http.get("/history/events", params={"q": "since:2026-11-05T00:00:00Z", "limit": 500}).json()
    minute = 4 * 24 * 60  # 2026-11-05 is four days after the first event
    assert [i["record"]["id"] for i in since["items"]] == event_ids(range(minute, EVENTS))
    assert since["next"] is None and since["scanned"] < 1000  # the older records end the search early
    until, _ = everything(http, "events", "until:2026-11-01T01:00:00Z type:upstream.push")
    assert [r["id"] for r in until] == event_ids(i for i in range(61) if i % 3 == 0)


def test_attempts_carry_their_derived_state_and_state_filters(http: httpx.Client) -> None:
    every, _ = everything(http, "attempts")
    assert {r["id"]: (r["status"], r["state"]) for r in every} == {
        aid: (status, state) for aid, (status, _, _, state) in ATTEMPTS.items()
    }
    opened, _ = everything(http, "attempts", "state:open")
    assert [r["id"] for r in opened] == ["a-moved", "a-stuck", "a-open"]  # newest first
    resolved = http.get("/history/attempts", params={"q": "state:resolved"}).json()
    assert [i["record"]["id"] for i in resolved["items"]] == ["a-resolved"] and resolved["size"] == len(ATTEMPTS)


def test_errors_are_400_invalid_request(http: httpx.Client) -> None:
    r = http.get("/history/events", params={"q": "since:yesterday"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert "'yesterday' is not a time" in r.json()["message"]
    r = http.get("/history/events", params={"q": "since:9999999w"})  # before year 1
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # an unknown kind is not the 404 `not_found` the dashboard takes for a server without the route
    r = http.get("/history/notifications")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert "signals, events, attempts, dispatches, runs" in r.json()["message"]
    for bad in ("garbage", "1e3", "12:34", "99999999999999999999999", "-1", "  1", "01", "1_0", "+5"):
        r = http.get("/history/attempts", params={"before": bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"] == "invalid_request" and "`before`" in r.json()["message"], bad
    for path in ("/history", "/history/", "/history/events/more"):
        assert http.get(path).json() == {"error": "not_found"}, path


def test_auth_and_methods(url: str, http: httpx.Client) -> None:
    r = httpx.get(f"{url}/history/events")
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{url}/history/events", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(f"{url}/history/events", headers={"X-Patch-Admin-Token": TOKEN}, params={"limit": 1})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 1
    for method in ("POST", "PUT", "DELETE"):
        r = http.request(method, "/history/events")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS", method
        assert r.json() == {"error": "method_not_allowed"}, method
    head = http.head("/history/events", params={"limit": 5})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(http.get("/history/events", params={"limit": 5}).content)
    options = http.options("/history/events")
    assert (options.status_code, options.headers["allow"]) == (204, "GET, HEAD, OPTIONS")


def test_a_search_runs_off_the_event_loop(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one search is under way (here held up), the server answers everything else."""
    started, release = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        started.set()
        assert release.wait(30)
        return search(*args, **kwargs)

    monkeypatch.setattr(server_app, "search", held)  # what the handler calls
    answers: list[httpx.Response] = []
    searching = threading.Thread(
        target=lambda: answers.append(httpx.get(f"{url}/history/events", headers=AUTH, params={"limit": 2}, timeout=60))
    )
    searching.start()
    try:
        assert started.wait(10)
        assert httpx.get(f"{url}/healthz", timeout=5).text == "ok\n"
        events = httpx.get(f"{url}/flow-events", headers=AUTH, params={"limit": 1}, timeout=5)
        assert events.status_code == 200 and len(events.json()["events"]) == 1
    finally:
        release.set()
        searching.join(30)
    assert answers and answers[0].status_code == 200 and len(answers[0].json()["items"]) == 2


def test_history_does_not_wait_for_every_index(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a list, not as a detail request: it does not wait for every collection's index to be built."""
    warmed: list[object] = []
    monkeypatch.setattr(Store, "warm_for", lambda self, kinds=None: True)
    monkeypatch.setattr(Store, "warm", lambda self, kinds=None, progress=None: warmed.append(kinds))
    assert http.get("/history/runs").json() == {"items": [], "next": None, "scanned": 0, "size": 0}
    assert warmed == []
    assert http.get(f"/flow-events/{quote(event(1)['id'], safe='')}").status_code == 200
    assert warmed == [None]  # a detail request does wait (the check above would see it)


def test_remote_client_searches_the_servers_whole_history(url: str) -> None:
    async def run() -> None:
        client = RemoteClient(url, TOKEN)
        try:
            first = await client.search("events", "type:upstream.push", limit=500)
            assert first["limited"] is False and first["size"] == EVENTS and first["next"] is not None
            records = list(first["records"])
            found = first
            for _ in range(100):
                if found["next"] is None:
                    break
                found = await client.search("events", "type:upstream.push", before=found["next"], limit=500)
                assert found["limited"] is False
                records += found["records"]
            assert [r["id"] for r in records] == event_ids(i for i in range(EVENTS) if i % 3 == 0)
            assert all(isinstance(r["_cursor"], str) for r in records)
            opened = await client.search("attempts", "state:open")
            assert [(r["id"], r["state"]) for r in opened["records"]] == [
                ("a-moved", "open"),
                ("a-stuck", "open"),
                ("a-open", "open"),
            ]
            assert opened["limited"] is False and opened["next"] is None
            with pytest.raises(PatchmoiError, match="invalid_request"):  # not mistaken for an older server
                await client.search("events", "since:yesterday")
        finally:
            await client.close()

    asyncio.run(run())


def test_attempt_states_follow_new_attempt_records(data_dir: Path) -> None:
    """The server keeps the derived states between requests; an attempt record appended since (by any process)
    is seen by the next search."""
    store = Store(data_dir)
    store.append(Kind.ATTEMPTS, attempt("b-1", "failed", "/w/x", "v9", 1))
    settings = Settings.from_env({"DATA_DIR": str(data_dir), "PATCH_ADMIN_TOKEN": TOKEN})
    with TestClient(create_app(settings, poll=False)) as client:

        def ids(q: str) -> list[str]:
            r = client.get("/history/attempts", params={"q": q}, headers=AUTH)
            assert r.status_code == 200, r.text
            return [item["record"]["id"] for item in r.json()["items"]]

        assert ids("state:open") == ["b-1"] and ids("state:resolved") == []
        store.append(Kind.ATTEMPTS, attempt("b-2", "completed", "/w/x", "v9", 2))  # fixed: b-1 is resolved now
        assert ids("state:open") == [] and ids("state:resolved") == ["b-1"]
        store.append(Kind.ATTEMPTS, {**attempt("b-2", "failed", "/w/x", "v9", 2), "updatedAt": iso(3)})
        assert ids("state:open") == ["b-2", "b-1"]  # the new version of b-2 failed: both need a person again
    store.close()


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("history-fuzz") / "data"
    store = Store(data)
    store.append_many(Kind.EVENTS, [event(i) for i in range(50)])
    store.append(Kind.ATTEMPTS, attempt("c-1", "failed", "/w/y", "v1", 1))
    store.close()
    app = create_app(Settings.from_env({"DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN}), poll=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


TERMS = st.sampled_from(["repo:", "source:", "status:", "state:", "type:", "since:", "until:", ""])
VALUES = st.sampled_from(["2h", "9" * 30 + "d", "99999999w", "2026-11-01", "open", "upstream.release"])
FUZZ_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.one_of(st.sampled_from(["events", "attempts", "signals", "dispatches", "runs"]), FUZZ_TEXT),
    terms=st.lists(st.tuples(TERMS, st.one_of(FUZZ_TEXT, VALUES)), max_size=3),
    before=st.one_of(st.none(), FUZZ_TEXT, st.integers().map(str)),
    limit=st.one_of(st.none(), FUZZ_TEXT),
)
def test_fuzz_history_never_5xx(
    fuzz_client: TestClient, kind: str, terms: list[tuple[str, str]], before: str | None, limit: str | None
) -> None:
    q = " ".join(key + value for key, value in terms)
    params = {k: v for k, v in (("q", q), ("before", before), ("limit", limit)) if v is not None}
    r = fuzz_client.get(f"/history/{quote(kind, safe='')}", params=params, headers=AUTH)
    assert r.status_code in (200, 400, 404), (kind, params, r.status_code, r.text)
    body = r.json()
    if r.status_code == 200:
        assert set(body) == {"items", "next", "scanned", "size"}
    else:
        assert body["error"] in ("invalid_request", "not_found"), body
