"""The dashboard in remote mode against a real `uvicorn` server on 127.0.0.1 (the same screens, over HTTP)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from patchmoi.core.config import Settings
from patchmoi.core.store import Store
from patchmoi.server.app import create_app
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.client import RemoteClient
from patchmoi.tui.screens import ConfirmScreen, DetailScreen

from .gitfixture import Forge, commit_files, git
from .loopback import free_port
from .test_tui import EID, NOW, cell, changed_release, notes, seed, wait_for

TOKEN = "remote-tui-token"


@contextlib.contextmanager
def serving(
    data: Path, port: int | None = None, *, stream: bool = True, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`patchmoi serve` on DATA_DIR `data` (uvicorn on a loopback port, free unless given, in a thread); yields
    its URL. Without `stream`, `/stream` answers 404 as an older server's (or the Bun service's) does."""
    port = port or free_port()
    settings = Settings.from_env({"DATA_DIR": str(data), "PATCH_ADMIN_TOKEN": TOKEN, **(env or {})})
    app: ASGIApp = create_app(settings, poll=False)
    if not stream:
        app = without_stream(app)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        server.force_exit = True  # not waiting for kept-alive connections (a dashboard's) to go away
        thread.join(timeout=10)


def without_stream(app: ASGIApp) -> ASGIApp:
    async def older(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/stream":
            await JSONResponse({"error": "not_found"}, status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)

    return older


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    data.mkdir()
    seed(data)
    with serving(data) as url:
        yield url, data


async def test_remote_mode_lists_details_and_retries(api: tuple[str, Path]) -> None:
    url, data = api
    app = PatchmoiApp(RemoteClient(url, TOKEN, interval=0.3), clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        assert app.table("signals").row_count == 2
        await pilot.press("3")
        assert app.table("attempts").row_count == 1
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DetailScreen) and app.screen.chain["event"]["id"] == EID
        await pilot.press("escape", "2", "j", "r")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("tab", *"remote", "enter")
        for _ in range(60):
            await pilot.pause(0.1)
            if app.table("dispatches").row_count >= 2:
                break
        records = [json.loads(x) for x in (data / "workspace-dispatches.jsonl").read_text().splitlines()]
        assert records[-1]["eventId"] == EID and records[-1]["reason"] == "remote"
        assert app.table("dispatches").row_count >= 2  # picked up by the remote client's polling


async def test_remote_mode_reports_a_bad_token(api: tuple[str, Path]) -> None:
    url, _ = api
    app = PatchmoiApp(RemoteClient(url, "wrong"), clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(120, 30)):
        assert "refused the admin token" in str(app.query_one("#status").render())


async def test_remote_states_and_open_queue(api: tuple[str, Path]) -> None:
    url, _ = api
    app = PatchmoiApp(RemoteClient(url, TOKEN, interval=0.3), clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3")
        assert cell(app, "attempts", 0, "STATE") == "! open"
        assert "! 1 open" in str(app.query_one("#status").render())
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert "state ! open" in str(app.screen.query_one("#detail-body").render())


async def test_remote_adopt_refused_then_adopted(tmp_path: Path, data_dir: Path) -> None:
    forge = Forge(tmp_path / "git")
    await changed_release(data_dir, forge)
    before, candidate = forge.rev("main"), forge.rev("refs/heads/candidate/v1.1.0")
    moved = commit_files(forge.fork, {"local.txt": "committed after the rebuild\n"}, "local work")
    with serving(data_dir) as url:
        app = PatchmoiApp(RemoteClient(url, TOKEN, interval=0.3), clock=lambda: NOW, health_interval=3600)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("3", "o")  # every attempt: an adopted one leaves the queue
            assert cell(app, "attempts", 0, "STATE") == "✚ ready"
            await pilot.press("a")
            await pilot.pause(0.3)
            assert isinstance(app.screen, ConfirmScreen)
            assert f"main  {before[:12]} → {candidate[:12]}" in str(app.screen.query_one("#dialog-body").render())
            await pilot.press("shift+tab", "enter")
            await wait_for(pilot, lambda: "not adopted" in notes(app))
            assert "not adopted: main moved since the rebuild" in notes(app)  # the 409 body's message, as is
            assert forge.rev("main") == moved
            git(forge.fork, "reset", "-q", "--hard", before)
            await pilot.press("a")
            await pilot.pause(0.3)
            await pilot.press("tab", *"remote ok", "enter")
            await wait_for(pilot, lambda: cell(app, "attempts", 0, "STATE") == "◆ adopted")
            assert forge.rev("main") == candidate
            assert cell(app, "attempts", 0, "STATE") == "◆ adopted"
    lines = [json.loads(x) for x in (data_dir / "maintenance-attempts.jsonl").read_text().splitlines()]
    assert lines[-1]["adoption"]["by"].startswith("tui:") and lines[-1]["adoption"]["reason"] == "remote ok"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def status(app: PatchmoiApp) -> str:
    return str(app.query_one("#status").render())


async def test_remote_mode_says_when_the_server_is_gone_and_catches_up_when_it_is_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    seed(data)
    port = free_port()
    first = serving(data, port)
    url = first.__enter__()
    try:
        app = PatchmoiApp(RemoteClient(url, TOKEN, interval=0.2), clock=lambda: NOW, health_interval=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            assert app.table("events").row_count == 2 and "no answer" not in status(app)
            first.__exit__(None, None, None)
            assert not _listening(port)
            await wait_for(pilot, lambda: "no answer from" in status(app))
            assert f"✖ no answer from {url} since" in status(app) and "reconnecting" in status(app)
            Store(data).record_event({"id": "e-while-down", "type": "upstream.release", "payload": {}})
            with serving(data, port):
                await wait_for(pilot, lambda: app.table("events").row_count == 3 and "no answer" not in status(app))
                assert app.table("events").row_count == 3  # what happened meanwhile is there
                assert "no answer" not in status(app) and "error:" not in status(app)
                await pilot.press("ctrl+r")  # refresh now: still fine
                assert "no answer" not in status(app)
    finally:
        first.__exit__(None, None, None)


async def test_remote_mode_streams_appends_without_polling(api: tuple[str, Path]) -> None:
    """The server's /stream brings a record another process appends: no polling (interval of an hour)."""
    url, data = api
    client = RemoteClient(url, TOKEN, interval=3600)
    app = PatchmoiApp(client, clock=lambda: NOW, health_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        assert app.table("events").row_count == 2
        await wait_for(pilot, lambda: client.streaming is True)
        assert client.streaming is True
        started = time.monotonic()
        Store(data).record_event({"id": "e-streamed", "type": "upstream.release", "payload": {}})
        await wait_for(pilot, lambda: app.table("events").row_count == 3)
        assert time.monotonic() - started < 3
        assert app.table("events").row_count == 3
        assert app.selected("events")["id"] == "e-streamed"  # type: ignore[index]


async def test_remote_mode_polls_a_server_without_a_stream(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    seed(data)
    with serving(data, stream=False) as url:
        client = RemoteClient(url, TOKEN, interval=0.2)
        app = PatchmoiApp(client, clock=lambda: NOW, health_interval=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await wait_for(pilot, lambda: client.streaming is False)
            assert client.streaming is False
            Store(data).record_event({"id": "e-polled", "type": "upstream.release", "payload": {}})
            await wait_for(pilot, lambda: app.table("events").row_count == 3)
            assert app.table("events").row_count == 3 and "error" not in status(app)


async def test_a_refused_token_is_said_and_cleared_by_ctrl_r_once_the_server_takes_it(tmp_path: Path) -> None:
    """(review of #16) The server died, came back with another token, then with the right one: the status line
    said `no answer … reconnecting` forever, even after ctrl+r brought rows again."""
    data = tmp_path / "data"
    data.mkdir()
    seed(data)
    port = free_port()
    first = serving(data, port)
    url = first.__enter__()
    try:
        client = RemoteClient(url, TOKEN, interval=0.2)
        app = PatchmoiApp(client, clock=lambda: NOW, health_interval=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: client.streaming is True)
            first.__exit__(None, None, None)
            await wait_for(pilot, lambda: "no answer from" in status(app))
            with serving(data, port, env={"PATCH_ADMIN_TOKEN": "another-token"}):
                await wait_for(pilot, lambda: "refused the admin token" in status(app), tries=300)
                assert "PATCH_ADMIN_TOKEN" in status(app) and "reconnecting" not in status(app)
            with serving(data, port):  # the right token again
                await pilot.press("ctrl+r")
                await wait_for(pilot, lambda: "refused" not in status(app) and "no answer" not in status(app))
                assert client.connection() is None and not app.tail_stopped
                Store(data).record_event({"id": "e-after", "type": "upstream.release", "payload": {}})
                await pilot.press("2")
                await wait_for(pilot, lambda: app.table("events").row_count == 3)
    finally:
        first.__exit__(None, None, None)


async def test_a_hung_server_is_noticed_by_the_health_check_and_cleared_when_it_answers(tmp_path: Path) -> None:
    """A server that accepts connections but answers nothing (SIGSTOP, a swap storm): the stream stays silent,
    so /readyz's short timeout says it, within seconds, with the time it last answered."""
    import asyncio

    hung = True
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            while hung:
                await asyncio.sleep(0.05)
            body = b'{"status":"ok","sources":[]}'
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
            writer.write(head + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RemoteClient(f"http://127.0.0.1:{port}", TOKEN)
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="cannot reach"):
            await client.health()
        assert time.monotonic() - started < 7  # HEALTH_TIMEOUT, one try
        said = client.connection()
        assert said is not None and "no answer from" in said and "ctrl+r: now" in said[:80]
        hung = False
        assert (await client.health())["status"] == "ok"
        assert client.connection() is None  # it answers again: cleared
    finally:
        await client.close()
        hung = False
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.1)  # the handlers finish (no transport left for a later test's collector)
