"""Issue 11 ("Edges") and issue 15, on real servers where the transport matters: HEAD and OPTIONS on every route,
`Allow` on every 405, `/healthz` methods, JSON for every error (malformed HTTP included), the request-head
deadline, and auth with both token headers. Every test on a real server runs on both HTTP stacks `serve` offers
(httptools on uvloop, the default; h11 on asyncio's loop, `PATCHMOI_HTTP=h11`): the answers must not differ."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from starlette.exceptions import HTTPException
from starlette.testclient import TestClient
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from patchmoi.core.config import Settings
from patchmoi.core.errors import ConfigError
from patchmoi.core.store import Kind, Store
from patchmoi.server.app import Api, create_app
from patchmoi.server.run import (
    DEFAULT_HEADER_TIMEOUT,
    HTTP_PROTOCOLS,
    PatchmoiH11Protocol,
    PatchmoiHttpToolsProtocol,
    header_timeout_from_env,
    uvicorn_config,
)

from .conftest import PYTHON, ROOT
from .loopback import free_port

TOKEN = "edge-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EID = "patch:src:tag:github.com,2008:Repository/1/v1:upstream.release"
AID = "attempt:1/x"
RUN = "run-x"
E, A = quote(EID, safe=""), quote(AID, safe="")
TIMEOUT = 1.0  # the header timeout of the servers under test

GET_ROUTES = [
    "/readyz",
    "/openapi.json",
    "/feed-signals",
    "/flow-events",
    f"/flow-events/{E}",
    "/workspace-dispatches",
    "/flow-dispatches",
    "/maintenance-attempts",
    f"/maintenance-attempts/{A}",
    "/workspace-runs",
    f"/workspace-runs/{RUN}",
    "/workspace-events",
    f"/workspace-events/{E}",
]
POST_ROUTES = [
    f"/flow-events/{E}/retry",
    f"/flow-events/{E}/replay",
    f"/maintenance-attempts/{A}/sync",
    f"/maintenance-attempts/{A}/adopt",
]


def seed(data_dir: Path) -> None:
    store = Store(data_dir)
    store.record_event(
        {
            "id": EID,
            "type": "upstream.release",
            "source": "patch",
            "receivedAt": "2026-05-13T00:00:00.000Z",
            "payload": {"tag": "v1"},
        }
    )
    store.append(Kind.ATTEMPTS, {"id": AID, "eventId": EID, "status": "started", "operation": "dispatch"})
    store.append(
        Kind.RUNS,
        {
            "id": RUN,
            "eventId": EID,
            "status": "changed",
            "processStatus": "completed",
            "resultPayload": {"status": "changed", "message": "ok"},
        },
    )


def settings_for(data_dir: Path, token: str | None = TOKEN) -> Settings:
    return Settings.from_env({"DATA_DIR": str(data_dir), **({"PATCH_ADMIN_TOKEN": token} if token else {})})


@contextlib.contextmanager
def running(app: Any, header_timeout: float = TIMEOUT, http: str = HTTP_PROTOCOLS[0]) -> Iterator[int]:
    """An in-process uvicorn on 127.0.0.1, configured exactly as `patchmoi serve` configures it (on `http`)."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, header_timeout=header_timeout, http=http))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module", params=HTTP_PROTOCOLS)
def live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[int]:
    """A seeded server on each HTTP stack: every test that uses it runs once per stack."""
    data = tmp_path_factory.mktemp("edges") / "data"
    seed(data)
    with running(create_app(settings_for(data), poll=False), http=request.param) as port:
        yield port


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    seed(data_dir)
    with TestClient(create_app(settings_for(data_dir), poll=False)) as c:
        yield c


def exchange(port: int, *pieces: bytes, gap: float = 0.0, wait: float = 10.0) -> tuple[float, bytes]:
    """Send `pieces` (`gap` seconds apart) on a raw connection and read until the server closes it.

    Returns the seconds from connect to the server's close, and every byte received. Fails if the server keeps
    the connection open for `wait` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the server may close while we are still trickling
            for i, piece in enumerate(pieces):
                if i and gap:
                    time.sleep(gap)
                sock.sendall(piece)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError as exc:
                raise AssertionError(f"server kept the connection open {wait} s: {received!r}") from exc
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return time.monotonic() - started, received
            received += chunk


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def request(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode()


# -- HEAD ------------------------------------------------------------------------------------------------------
def test_head_answers_like_get_without_a_body(live: int) -> None:
    base = f"http://127.0.0.1:{live}"
    with httpx.Client(base_url=base, headers=AUTH) as http:
        for path in [*GET_ROUTES, "/healthz", "/flow-events/nope", "/maintenance-attempts/nope", "/nope"]:
            get, head = http.get(path), http.head(path)
            assert head.status_code == get.status_code, path
            assert head.content == b"", path
            assert head.headers.get("content-type") == get.headers.get("content-type"), path
            if path != "/readyz":  # its body moves (clock fields); the rest are byte-stable between two calls
                assert head.headers["content-length"] == str(len(get.content)), path
        assert http.head("/flow-events", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # On the wire: status and headers, then nothing (HEAD must not carry body bytes, whatever the status).
    for path, status in (("/healthz", 200), ("/flow-events", 200), ("/flow-events/nope", 404), ("/nope", 404)):
        _, raw = exchange(live, request("HEAD", path, f"X-Patch-Admin-Token: {TOKEN}"))
        code, headers, body = parse(raw)
        assert (code, body) == (status, b"") and int(headers["content-length"]) > 0, path
    _, raw = exchange(live, request("HEAD", "/flow-events"))
    assert parse(raw)[0] == 401 and parse(raw)[2] == b""


async def test_head_body_is_dropped_by_the_app_itself(data_dir: Path) -> None:
    """Not only by uvicorn: the app itself sends no HEAD body bytes, under any ASGI server."""
    seed(data_dir)
    app = create_app(settings_for(data_dir), poll=False)

    async def call(method: str) -> list[MutableMapping[str, Any]]:
        messages: list[MutableMapping[str, Any]] = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": "/flow-events",
            "raw_path": b"/flow-events",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"x-patch-admin-token", TOKEN.encode())],
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        await app(scope, receive, send)
        return messages

    async with app.router.lifespan_context(app):
        get, head = await call("GET"), await call("HEAD")
    assert head[0]["status"] == get[0]["status"] == 200 and head[0]["headers"] == get[0]["headers"]
    get_body = b"".join(m.get("body", b"") for m in get[1:])
    assert get_body and all(m.get("body", b"") == b"" for m in head[1:])
    assert (b"content-length", str(len(get_body)).encode()) in head[0]["headers"]


# -- OPTIONS and Allow -------------------------------------------------------------------------------------------
def test_options_is_204_with_allow_on_every_route(live: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{live}", headers=AUTH) as http:
        for path in GET_ROUTES:
            r = http.options(path)
            assert (r.status_code, r.headers["allow"], r.content) == (204, "GET, HEAD, OPTIONS", b""), path
        for path in POST_ROUTES:
            r = http.options(path)
            assert (r.status_code, r.headers["allow"], r.content) == (204, "POST, OPTIONS", b""), path
        # the same order of checks as every other method: auth, then the route shape, then the id
        assert http.options("/flow-events/nope").json() == {"error": "flow_event_not_found"}
        assert http.options("/maintenance-attempts/nope/sync").status_code == 404
        assert http.options("/nope").status_code == 404
        r = http.options("/flow-events", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_every_405_is_json_with_allow(client: TestClient) -> None:
    cases = {
        f"/flow-events/{E}": ("GET, HEAD, OPTIONS", ["POST", "PUT", "DELETE", "PATCH", "TRACE"]),
        f"/flow-events/{E}/retry": ("POST, OPTIONS", ["GET", "HEAD", "PUT", "DELETE"]),
        f"/maintenance-attempts/{A}/sync": ("POST, OPTIONS", ["GET", "DELETE"]),
        f"/maintenance-attempts/{A}": ("GET, HEAD, OPTIONS", ["POST", "DELETE"]),
        "/workspace-dispatches": ("GET, HEAD, OPTIONS", ["POST"]),
        "/flow-dispatches": ("GET, HEAD, OPTIONS", ["DELETE"]),
        "/readyz": ("GET, HEAD, OPTIONS", ["POST"]),
        "/openapi.json": ("GET, HEAD, OPTIONS", ["PUT"]),
        "/feed-signals": ("GET, HEAD, OPTIONS", ["POST"]),
        "/workspace-runs": ("GET, HEAD, OPTIONS", ["POST"]),
        f"/workspace-events/{E}": ("GET, HEAD, OPTIONS", ["DELETE"]),
        "/workspace-runs/a/b": ("", ["GET", "OPTIONS"]),  # the spec's 405 below an id: nothing is allowed there
        "/healthz": ("GET, HEAD", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "CONNECT"]),
    }
    for path, (allow, methods) in cases.items():
        for method in methods:
            r = client.request(method, path, headers=AUTH)
            assert r.status_code == 405 and r.headers["allow"] == allow, (method, path)
            if method != "HEAD":
                assert r.json() == {"error": "method_not_allowed"}, (method, path)
    # the spec keeps 404 (not 405) for other methods on the event list
    assert client.post("/flow-events", headers=AUTH).json() == {"error": "not_found"}


def test_healthz_answers_get_and_head_only_without_auth(live: int) -> None:
    base = f"http://127.0.0.1:{live}"
    assert httpx.get(f"{base}/healthz").text == "ok\n"
    assert httpx.head(f"{base}/healthz").status_code == 200
    for method in ("POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS"):
        r = httpx.request(method, f"{base}/healthz")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", method
        assert r.json() == {"error": "method_not_allowed"}, method


# -- JSON for every error ----------------------------------------------------------------------------------------
def test_app_errors_are_json(data_dir: Path, live: int) -> None:
    base = f"http://127.0.0.1:{live}"
    assert httpx.get(f"{base}/nope").json() == {"error": "not_found"}
    assert httpx.get(f"{base}/flow-events").json() == {"error": "unauthorized"}
    big = httpx.post(f"{base}/flow-events/{E}/retry", headers=AUTH, content=b"x" * (65 * 1024))
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    assert (
        httpx.get(
            f"{base}/flow-events/{E}", headers={**AUTH, "Upgrade": "websocket", "Connection": "Upgrade"}
        ).status_code
        == 200
    )
    # 503 while the service starts (no lifespan has run in a client used without `with`)
    r = TestClient(create_app(settings_for(data_dir), poll=False)).get("/flow-events")
    assert r.status_code == 503 and r.json() == {"error": "starting"}


def test_failures_outside_a_handler_are_json(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(self: Api, request: Any) -> Any:
        raise RuntimeError("outside the handlers")

    monkeypatch.setattr(Api, "__call__", boom)
    with TestClient(create_app(settings_for(data_dir), poll=False), raise_server_exceptions=False) as c:
        r = c.get("/flow-events")
        assert r.status_code == 500 and r.json()["error"] == "internal_error"

    async def teapot(self: Api, request: Any) -> Any:
        raise HTTPException(418, "short and stout", headers={"X-Why": "tea"})

    monkeypatch.setattr(Api, "__call__", teapot)
    with TestClient(create_app(settings_for(data_dir), poll=False), raise_server_exceptions=False) as c:
        r = c.get("/flow-events")
        assert r.status_code == 418 and r.json() == {"error": "http_error", "message": "short and stout"}
        assert r.headers["x-why"] == "tea"


MALFORMED = {
    "garbage request line": [b"GARBAGE\r\n\r\n"],
    "space in the target": [b"GET /flow events HTTP/1.1\r\nHost: x\r\n\r\n"],
    "no Host in HTTP/1.1": [b"GET /healthz HTTP/1.1\r\n\r\n"],
    "header without a colon": [b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"],
    "two Host headers": [b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"],
    "two Content-Lengths": [b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
    "bad chunk size": [b"POST /flow-events/x/retry HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"],
}


@pytest.mark.parametrize("pieces", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_gets_a_json_400(live: int, pieces: list[bytes]) -> None:
    seconds, raw = exchange(live, *pieces)
    status, headers, body = parse(raw)
    assert status == 400 and headers["content-type"] == "application/json; charset=utf-8", raw
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": "bad_request", "message": "malformed HTTP request"}
    assert seconds < TIMEOUT  # answered at once, not by the head deadline


def test_oversized_head_gets_a_json_400(live: int) -> None:
    # h11 refuses an incomplete head over 16 KiB; sent in pieces so the limit is met before the head ends
    pieces = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n", *[b"X-Pad: " + b"a" * 4000 + b"\r\n"] * 6]
    _, raw = exchange(live, *pieces, gap=0.05)
    status, _, body = parse(raw)
    assert status == 400 and json.loads(body) == {"error": "bad_request", "message": "request head too large"}


def test_the_protocol_overrides_what_uvicorn_has() -> None:
    """The subclasses hook uvicorn's protocols by method name: an upgrade that renames one fails here."""
    for name in ("send_400_response", "connection_made", "data_received", "connection_lost"):
        assert callable(getattr(H11Protocol, name)) and name in vars(PatchmoiH11Protocol), name
    hooks = ("on_message_begin", "on_headers_complete", "on_body", "_unset_keepalive_if_required")
    for name in ("send_400_response", "connection_made", "data_received", "connection_lost", *hooks):
        assert callable(getattr(HttpToolsProtocol, name)), name
    for name in ("_should_upgrade", "_get_upgrade", "_unsupported_upgrade_warning", "handle_websocket_upgrade"):
        assert callable(getattr(HttpToolsProtocol, name)), name
    for name in ("send_400_response", "connection_made", "data_received", "connection_lost", *hooks[:3]):
        assert name in vars(PatchmoiHttpToolsProtocol), name
    for attribute in ("parser", "headers", "cycle", "pipeline", "transport", "server_state", "config"):
        assert attribute in HttpToolsProtocol.__init__.__code__.co_names, attribute  # set by uvicorn's __init__
    default = uvicorn_config(None, "127.0.0.1", 1, header_timeout=2.5)
    h11 = uvicorn_config(None, "127.0.0.1", 1, header_timeout=2.5, http="h11")
    assert isinstance(default.http, type) and issubclass(default.http, PatchmoiHttpToolsProtocol)
    assert isinstance(h11.http, type) and issubclass(h11.http, PatchmoiH11Protocol)
    assert (default.loop, h11.loop) == ("uvloop", "asyncio")  # uvloop is a dependency on every platform we test
    for config in (default, h11):
        assert config.http.header_timeout == 2.5 and config.ws == "none"  # type: ignore[union-attr]


# -- the request-head deadline -----------------------------------------------------------------------------------
def test_a_partial_head_is_answered_408_and_closed(live: int) -> None:
    seconds, raw = exchange(live, b"GET /flow-events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    status, headers, body = parse(raw)
    assert TIMEOUT * 0.9 <= seconds < TIMEOUT + 2, seconds
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"] == "request_timeout"


def test_a_silent_connection_is_closed(live: int) -> None:
    seconds, raw = exchange(live)
    assert raw == b"" and TIMEOUT * 0.9 <= seconds < TIMEOUT + 2, seconds


def test_trickling_does_not_extend_the_deadline(live: int) -> None:
    pieces = [b"GET /flow-events HTTP/1.1\r\n", *[b"X-Slow: %d\r\n" % i for i in range(40)]]
    seconds, raw = exchange(live, *pieces, gap=0.1)  # 4 s of trickle against a 1 s deadline
    assert TIMEOUT * 0.9 <= seconds < TIMEOUT + 1.5, seconds
    assert parse(raw)[0] == 408


def test_a_kept_alive_connection_gets_the_deadline_for_its_next_head(live: int) -> None:
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    started = time.monotonic()
    seconds, raw = exchange(live, first, b"GET /healthz HTTP/1.1\r\n", gap=0.3)
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.count(b"HTTP/1.1 ") == 2
    assert raw.split(b"HTTP/1.1 ")[2].startswith(b"408"), raw
    assert 0.3 + TIMEOUT * 0.9 <= seconds < 0.3 + TIMEOUT + 2 and time.monotonic() - started < 5


def test_the_deadline_covers_the_head_only(live: int) -> None:
    """Once the head is in the app has the request: a body arriving after the deadline is still read."""
    body = b'{"reason": "late"}'
    head = (
        f"POST /flow-events/nope/retry HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Patch-Admin-Token: {TOKEN}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    seconds, raw = exchange(live, head, body, gap=TIMEOUT + 0.5)
    assert parse(raw)[0] == 404 and json.loads(parse(raw)[2]) == {"error": "flow_event_not_found"}
    assert seconds >= TIMEOUT + 0.5


@pytest.mark.parametrize("http", HTTP_PROTOCOLS)
def test_a_slow_request_is_not_cut_by_the_deadline(data_dir: Path, monkeypatch: pytest.MonkeyPatch, http: str) -> None:
    seed(data_dir)
    real = Api.ready

    async def slow_ready(self: Api, request: Any, rest: list[str]) -> Any:
        import asyncio

        await asyncio.sleep(TIMEOUT + 0.5)
        return await real(self, request, rest)

    monkeypatch.setattr(Api, "ready", slow_ready)
    with running(create_app(settings_for(data_dir), poll=False), http=http) as port:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", headers=AUTH, timeout=10)
        assert r.status_code == 200 and "sources" in r.json()


def test_header_timeout_from_env() -> None:
    assert header_timeout_from_env({}) == DEFAULT_HEADER_TIMEOUT == 15.0
    assert header_timeout_from_env({"PATCHMOI_HEADER_TIMEOUT": " 2.5 "}) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigError, match="PATCHMOI_HEADER_TIMEOUT"):
            header_timeout_from_env({"PATCHMOI_HEADER_TIMEOUT": bad})


@pytest.mark.slow
@pytest.mark.parametrize("http", HTTP_PROTOCOLS)
def test_patchmoi_serve_process_edges(tmp_path: Path, http: str) -> None:
    """The real `patchmoi serve` on each stack (PATCHMOI_HTTP): PATCHMOI_HEADER_TIMEOUT is honoured, malformed
    HTTP is JSON, both logged."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "DATA_DIR": str(tmp_path / "data"),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCHMOI_HEADER_TIMEOUT": "1",
        "PATCHMOI_HTTP": http,
    }
    bad = subprocess.run(
        [PYTHON, "-m", "patchmoi", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**env, "PATCHMOI_HEADER_TIMEOUT": "never"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "PATCHMOI_HEADER_TIMEOUT must be a positive number" in bad.stderr
    proc = subprocess.Popen(
        [PYTHON, "-m", "patchmoi", "serve", "--no-poll", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).text == "ok\n":
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        seconds, raw = exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        assert parse(raw)[0] == 408 and 0.9 <= seconds < 3, (seconds, raw)
        _, raw = exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")  # TLS to a plain port
        assert parse(raw)[0] == 400 and json.loads(parse(raw)[2])["error"] == "bad_request"
        r = httpx.get(
            f"http://127.0.0.1:{port}/readyz",
            headers={"Authorization": "Bearer added-by-a-proxy", "X-Patch-Admin-Token": TOKEN},
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, log = proc.communicate()  # reads both pipes to their end and closes them
    assert '"type": "http.header_timeout"' in log and '"type": "http.bad_request"' in log
    assert '"headerTimeout": 1.0' in log and TOKEN not in log
    loop = "uvloop" if http == "httptools" else "asyncio"
    assert f'"http": "{http}", "loop": "{loop}", "accessLog": "errors"' in log


# -- auth with both headers (issue 15) --------------------------------------------------------------------------
def test_either_token_header_is_enough(client: TestClient) -> None:
    def status(*headers: tuple[str, str]) -> int:
        return int(client.get("/flow-events", headers=list(headers)).status_code)

    right_bearer, wrong_bearer = ("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer from-a-proxy")
    right_header, wrong_header = ("X-Patch-Admin-Token", TOKEN), ("X-Patch-Admin-Token", "stale")
    assert status(wrong_bearer, right_header) == 200  # a proxy added a wrong Bearer
    assert status(right_bearer, wrong_header) == 200
    assert status(wrong_bearer, wrong_header) == 401
    assert status(("Authorization", "Basic dXNlcjpwdw=="), right_header) == 200  # another scheme is not a token
    assert status(("Authorization", "Basic " + TOKEN)) == 401
    assert status(wrong_bearer, right_bearer) == 200  # two Authorization headers: either may carry it
    assert status(("Authorization", "Bearer "), ("X-Patch-Admin-Token", "")) == 401
    assert status(("authorization", f"bEaReR   {TOKEN}  ")) == 200


def test_every_candidate_is_compared_in_constant_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    r = client.get("/flow-events", headers={"X-Patch-Admin-Token": TOKEN, "Authorization": "Bearer wrong"})
    assert r.status_code == 200
    # both were compared (no early exit once one matched), each with compare_digest
    assert sorted(calls) == sorted([(TOKEN.encode(), TOKEN.encode()), (b"wrong", TOKEN.encode())])


@pytest.mark.parametrize("http", HTTP_PROTOCOLS)
def test_a_non_ascii_token_matches_the_bytes_sent(tmp_path: Path, http: str) -> None:
    """On the wire (the test client re-encodes header values): the token's UTF-8 bytes match, its latin-1 don't."""
    token = "tök-ü"
    with running(create_app(settings_for(tmp_path / "data", token), poll=False), http=http) as port:

        def status(header: bytes) -> int:
            head = b"GET /flow-events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + header + b"\r\n\r\n"
            return parse(exchange(port, head)[1])[0]

        assert status(b"X-Patch-Admin-Token: " + token.encode()) == 200
        assert status(b"Authorization: Bearer " + token.encode()) == 200
        assert status(b"X-Patch-Admin-Token: " + token.encode("latin-1")) == 401
