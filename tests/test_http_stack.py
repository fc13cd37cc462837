"""Issue 14, "the HTTP stack": both stacks `serve` offers (httptools on uvloop, the default; h11 on asyncio's loop)
answer pipelined, upgrade and oversized requests the same way on real servers; the access log follows
PATCHMOI_ACCESS_LOG; and a log write never blocks, whatever happens to stderr."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core import log
from patchmoi.core.config import AccessLog, Settings
from patchmoi.core.errors import ConfigError
from patchmoi.core.records import now_iso
from patchmoi.server.app import Api, create_app
from patchmoi.server.run import HTTP_PROTOCOLS, UPGRADE_BODY, http_from_env

from .conftest import PYTHON, ROOT
from .loopback import free_port
from .test_server_edges import TIMEOUT, TOKEN, exchange, parse, running, seed, settings_for


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Every (status, body) in `raw`, a stream of responses with Content-Length bodies."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, headers, _ = parse(head + b"\r\n\r\n")
        length = int(headers.get("content-length", "0"))
        out.append((status, rest[:length]))
        raw = rest[length:]
    return out


def get(path: str, *extra: str, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", f"X-Patch-Admin-Token: {TOKEN}", *extra]
    return ("\r\n".join([*lines, *(["Connection: close"] if close else []), "", ""])).encode()


@pytest.fixture(scope="module", params=HTTP_PROTOCOLS)
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    data = tmp_path_factory.mktemp("stack") / "data"
    seed(data)
    with running(create_app(settings_for(data), poll=False), http=request.param) as port:
        yield request.param, port


# -- the same answers on both stacks ---------------------------------------------------------------------------
def test_pipelined_requests_are_answered_in_order(stack: tuple[str, int]) -> None:
    _, port = stack
    _, raw = exchange(port, get("/healthz") + get("/nope") + get("/flow-events/nope", close=True))
    assert [status for status, _ in responses(raw)] == [200, 404, 404]
    assert [json.loads(body)["error"] for _, body in responses(raw)[1:]] == ["not_found", "flow_event_not_found"]


def test_an_upgrade_request_is_ordinary_and_the_connection_goes_on(stack: tuple[str, int]) -> None:
    """No WebSocket support: `Connection: upgrade` is answered like any request, and so is the next one."""
    _, port = stack
    for upgrade in ("Upgrade: websocket", "Upgrade: h2c"):
        first = get("/healthz", upgrade, "Connection: Upgrade")
        _, raw = exchange(port, first + get("/nope", close=True))  # one write
        assert [status for status, _ in responses(raw)] == [200, 404], raw
        _, raw = exchange(port, first, get("/nope", close=True), gap=0.2)  # two writes
        assert [status for status, _ in responses(raw)] == [200, 404], raw


def test_an_upgrade_request_with_a_body(stack: tuple[str, int]) -> None:
    """h11 reads the body; llhttp skips it, so httptools refuses the request rather than hand the app no body."""
    http, port = stack
    body = b'{"reason": "r"}'
    head = (
        f"POST /flow-events/nope/retry HTTP/1.1\r\nHost: x\r\nX-Patch-Admin-Token: {TOKEN}\r\nUpgrade: h2c\r\n"
        f"Connection: Upgrade\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    _, raw = exchange(port, head + body + get("/healthz", close=True))
    if http == "h11":
        assert [status for status, _ in responses(raw)] == [404, 200]
    else:
        [(status, answer)] = responses(raw)
        assert status == 400 and json.loads(answer) == {"error": "bad_request", "message": UPGRADE_BODY}


def test_an_oversized_head_in_one_write_gets_a_json_400(stack: tuple[str, int]) -> None:
    _, port = stack
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000  # unfinished: no end of line
    _, raw = exchange(port, head)
    status, headers, body = parse(raw)
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "bad_request", "message": "request head too large"}


def test_a_large_head_that_completes_is_served(stack: tuple[str, int]) -> None:
    """The limit is on an unfinished head (h11's rule): 12 KiB of headers in pieces is fine."""
    _, port = stack
    pieces = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n", *[b"X-Pad: " + b"a" * 4000 + b"\r\n"] * 3, b"\r\n"]
    _, raw = exchange(port, *[p.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n") for p in pieces])
    assert parse(raw)[0] == 200


def test_a_head_after_a_body_in_the_same_read_is_not_counted_with_it(stack: tuple[str, int]) -> None:
    """A 40 KiB body and the start of the next request in one write: the next head is small, not 40 KiB."""
    _, port = stack
    body = b"x" * (40 * 1024)
    post = (
        f"POST /flow-events/nope/retry HTTP/1.1\r\nHost: x\r\nX-Patch-Admin-Token: {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    after = get("/healthz", close=True)
    _, raw = exchange(port, post + body + after[:20], after[20:], gap=0.3)
    assert [status for status, _ in responses(raw)] == [404, 200]


# -- PATCHMOI_HTTP -------------------------------------------------------------------------------------------------
def test_http_from_env() -> None:
    assert http_from_env({}) == "httptools" == HTTP_PROTOCOLS[0]
    assert http_from_env({"PATCHMOI_HTTP": " H11 "}) == "h11"
    for bad in ("uvloop", "h2", "auto"):
        with pytest.raises(ConfigError, match="PATCHMOI_HTTP must be one of httptools, h11"):
            http_from_env({"PATCHMOI_HTTP": bad})


def test_serve_refuses_an_unknown_http_stack(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path / "data"), "PATCHMOI_HTTP": "h3"}
    out = subprocess.run(
        [PYTHON, "-m", "patchmoi", "serve", "--no-poll", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "PATCHMOI_HTTP must be one of" in out.stderr


# -- PATCHMOI_ACCESS_LOG -------------------------------------------------------------------------------------------
def test_access_log_setting() -> None:
    assert Settings.from_env({}).access_log == AccessLog("errors") == AccessLog.parse(None)
    cases = {"all": "all", " Errors ": "errors", "OFF": "off", "sample:10": "sample:10", "sample:1": "all"}
    for text, parsed in cases.items():
        assert str(Settings.from_env({"PATCHMOI_ACCESS_LOG": text}).access_log) == parsed, text
    for bad in ("some", "sample", "sample:0", "sample:-2", "sample:x", "sample:1.5"):
        with pytest.raises(ConfigError, match="PATCHMOI_ACCESS_LOG must be all, errors, off or sample:N"):
            Settings.from_env({"PATCHMOI_ACCESS_LOG": bad})


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # 9 fast 200s (/healthz), a 404, a 401, a slow 200 (/readyz): which ones get a line
        ("errors", ["/nope 404", "/flow-events 401", "/readyz 200"]),
        ("all", [*["/healthz 200"] * 9, "/nope 404", "/flow-events 401", "/readyz 200"]),
        ("sample:4", [*["/healthz 200 sampled 4"] * 2, "/nope 404", "/flow-events 401", "/readyz 200"]),
        ("off", []),
    ],
)
def test_access_log_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: list[dict[str, Any]], mode: str, expected: list[str]
) -> None:
    monkeypatch.setattr(AccessLog, "SLOW_SECONDS", 0.5)
    real = Api.ready

    async def slow_ready(self: Api, request: Any, rest: list[str]) -> Any:
        import asyncio

        await asyncio.sleep(0.6)
        return await real(self, request, rest)

    monkeypatch.setattr(Api, "ready", slow_ready)
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path / "data"), "PATCH_ADMIN_TOKEN": TOKEN, "PATCHMOI_ACCESS_LOG": mode}
    )
    with running(create_app(settings, poll=False)) as port:
        pieces = [get("/healthz")] * 9 + [get("/nope"), b"GET /flow-events HTTP/1.1\r\nHost: x\r\n\r\n"]
        _, raw = exchange(port, *pieces, get("/readyz", close=True), gap=0.01)
    assert [status for status, _ in responses(raw)] == [200] * 9 + [404, 401, 200]
    lines = [line for line in logged if line["type"] == "http.request"]
    seen = [
        f"{line['path']} {line['status']}" + (f" sampled {line['sampled']}" if "sampled" in line else "")
        for line in lines
    ]
    assert seen == expected
    assert all(line["method"] == "GET" and isinstance(line["durationMs"], float) for line in lines)
    assert all(line["durationMs"] >= 500 for line in lines if line["path"] == "/readyz")


# -- a log write never blocks --------------------------------------------------------------------------------------
def test_log_lines_keep_the_records_timestamp_format(logged: list[dict[str, Any]]) -> None:
    log.log_event("x.y")
    stamp, reference = logged[-1]["ts"], now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp) and len(stamp) == len(reference)
    assert stamp[:16] <= reference[:16]  # the same clock (to the minute, whatever the test's timing)


def test_a_blocked_stream_drops_lines_and_says_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real pipe nobody reads: put() returns at once, the queue holds CAPACITY lines, the rest are counted, and
    once the pipe drains every kept line arrives, in order, followed by the count."""
    monkeypatch.setattr(log, "CAPACITY", 100)
    monkeypatch.setattr(log, "BATCH", 10)
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    handler = log.BackgroundHandler(stream)
    records = [
        logging.LogRecord("t", logging.INFO, __file__, 1, f"{i:05d} " + "x" * 10_000, None, None) for i in range(500)
    ]
    started = time.monotonic()
    for record in records:  # one batch (100 KB) fills the 64 KiB pipe: the writer blocks, the handler does not
        handler.emit(record)
    assert time.monotonic() - started < 2
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 1 << 16), b"")))
    reader.start()
    try:
        assert handler.writer.flush(10)
    finally:
        stream.close()
        reader.join(10)
        os.close(read_fd)
    lines = b"".join(chunks).decode().splitlines()
    kept = [line for line in lines if not line.startswith("{")]
    dropped = [json.loads(line) for line in lines if line.startswith("{")]
    assert [int(line[:5]) for line in kept] == sorted(int(line[:5]) for line in kept)  # in order
    assert len(dropped) == 1 and dropped[0]["type"] == "log.dropped"
    assert len(kept) + dropped[0]["lines"] == 500 and len(kept) <= 100 + 2 * 10 and kept[0].startswith("00000")


def read_all(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 1 << 16):
        into.append(chunk)


@pytest.mark.slow
def test_serve_keeps_answering_while_its_stderr_is_blocked(tmp_path: Path) -> None:
    """`patchmoi serve` with every request logged and a stderr pipe nobody reads: it answers 2,000 requests
    (about 250 KB of log lines, several times what the pipe holds) without stalling, and once the pipe is read
    again every line arrives, the shutdown's included."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "DATA_DIR": str(tmp_path / "data"),
        "PATCH_ADMIN_TOKEN": TOKEN,
        "PATCHMOI_ACCESS_LOG": "all",
    }
    proc = subprocess.Popen(
        [PYTHON, "-m", "patchmoi", "serve", "--no-poll", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(proc.stderr.fileno(), chunks))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.1)
        with sock:
            sock.settimeout(5)  # a server blocked on its stderr stalls here
            for _ in range(2000):
                sock.sendall(get("/healthz"))
                received = b""
                while not received.endswith(b"ok\n"):
                    chunk = sock.recv(65536)
                    assert chunk, "connection closed"
                    received += chunk
    finally:
        reader.start()  # the pipe is read again
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(30)
            proc.stderr.close()
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line["type"] == "http.request") == 2000
    assert lines[-1]["type"] == "server.stopped" and not any(line["type"] == "log.dropped" for line in lines)


@pytest.mark.parametrize("http", HTTP_PROTOCOLS)
def test_a_slow_next_head_does_not_cut_the_response_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: str
) -> None:
    """A pipelined request whose head stalls while the one before it is still being answered: that answer is
    still sent in full (the head deadline counts from when the connection is idle, as with h11)."""
    real = Api.ready

    async def slow_ready(self: Api, request: Any, rest: list[str]) -> Any:
        import asyncio

        await asyncio.sleep(TIMEOUT + 1)
        return await real(self, request, rest)

    monkeypatch.setattr(Api, "ready", slow_ready)
    seed(tmp_path / "data")
    with running(create_app(settings_for(tmp_path / "data"), poll=False), http=http) as port:
        _, raw = exchange(port, get("/readyz") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait=20)
    status, headers, body = parse(raw)
    assert status == 200 and len(body) >= int(headers["content-length"]) and "sources" in json.loads(body)
