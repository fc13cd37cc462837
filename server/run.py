"""`patchmoi serve`: uvicorn with the app's lifespan (start/stop the core service), JSON logs.

uvicorn runs on uvloop with its httptools (llhttp) parser (#14 measured x1.95 requests/s over h11 on asyncio's own
loop). `PATCHMOI_HTTP=h11` goes back to that stack, h11 on asyncio's loop, if the fast one misbehaves somewhere.
Either protocol is subclassed to close two edges uvicorn leaves open (the installed uvicorn 0.54 has no setting
for either), with the same behaviour, log events and JSON bodies:

- A deadline for the request head. uvicorn's `timeout_keep_alive` only runs between requests on a connection
  that already answered one: a fresh connection that sends nothing, or sends its request line and headers a
  byte at a time, is held open for ever. The protocol arms a timer when the connection opens (and when the first
  bytes of a later request arrive on a kept-alive connection) and cancels it once the parser has the whole
  request head. When it fires the connection is closed: silently if nothing was sent, else after a
  `408 {"error":"request_timeout"}`. Trickling bytes does not push the deadline back.
- JSON for malformed HTTP. A request the parser refuses (bad request line, bad header, head over 16 KiB, bad
  chunked framing) never reaches the app: uvicorn answers it in `send_400_response` with a plain-text body.
  The override sends `400 {"error":"bad_request","message":...}` instead, with the same `Connection: close`.

httptools needs three more things to answer like h11: it has no limit on the size of a request head (the
protocol counts the bytes of an unfinished head against h11's 16 KiB), it accepts HTTP/1.1 without `Host` or
with two (both a 400 by RFC 9112 §3.2, as in h11), and it stops parsing at an `Upgrade` or `CONNECT` request
(there is no WebSocket support here, so the request is an ordinary one and parsing goes on after its head; one
that also carries a body is refused, as llhttp skips that body).

The protocol class and the loop are chosen explicitly (`http=`, `loop=`), so what is installed does not swap
them out. uvicorn's own log lines (a warning per malformed request) go through the same non-blocking writer as
patchmoi's (core.log).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Generator, Mapping
from typing import Any, cast

import h11
import httptools
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # the limit uvicorn gives h11 unless configured
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from patchmoi.core.config import Settings, is_loopback
from patchmoi.core.errors import ConfigError, UsageError
from patchmoi.core.log import configure, log_event
from patchmoi.core.log import flush as flush_logs
from patchmoi.core.store import store_for
from patchmoi.server.app import create_app
from patchmoi.server.stream import end_streams

DEFAULT_HEADER_TIMEOUT = 15.0
HEADER_TIMEOUT_ENV = "PATCHMOI_HEADER_TIMEOUT"
HTTP_ENV = "PATCHMOI_HTTP"
HTTP_PROTOCOLS = ("httptools", "h11")  # the first is the default
MALFORMED = "malformed HTTP request"
TOO_LARGE = "request head too large"
UPGRADE_BODY = "a request asking to upgrade cannot carry a body"


def header_timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """Seconds a client has to send its request line and headers (`PATCHMOI_HEADER_TIMEOUT`, default 15)."""
    text = (os.environ if env is None else env).get(HEADER_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_HEADER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{HEADER_TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def http_from_env(env: Mapping[str, str] | None = None) -> str:
    """The HTTP stack (`PATCHMOI_HTTP`): `httptools` (the default, on uvloop) or `h11` (on asyncio's loop)."""
    text = (os.environ if env is None else env).get(HTTP_ENV, "").strip().lower()
    if not text:
        return HTTP_PROTOCOLS[0]
    if text not in HTTP_PROTOCOLS:
        raise ConfigError(f"{HTTP_ENV} must be one of {', '.join(HTTP_PROTOCOLS)}, got {text!r}")
    return text


def loop_for(http: str) -> str:
    """uvloop under httptools where it is installed (not on Windows); h11, the fallback, keeps asyncio's loop."""
    return "uvloop" if http == "httptools" and importlib.util.find_spec("uvloop") else "asyncio"


class _HeadDeadline:
    """The request-head timer both protocols share (each decides what "the head is in" means)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    loop: asyncio.AbstractEventLoop
    _head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        raise NotImplementedError

    def _timeout_message(self) -> str:
        return f"the request line and headers must arrive within {self.header_timeout:g} s"


class PatchmoiH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and JSON for the 400 on malformed HTTP."""

    # -- the request-head deadline ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in (or the connection is going): the app has it now
        elif self._head_timer is None:
            self._arm_head_timer()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial = bool(self.conn.trailing_data[0])
        log_event("http.header_timeout", client=_peer(self.client), partial=partial, seconds=self.header_timeout)
        if partial and self.conn.our_state is h11.IDLE:
            self._send_json_error(408, "request_timeout", self._timeout_message())
        else:
            self.transport.close()

    # -- malformed HTTP ----------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        oversize = len(self.conn.trailing_data[0]) > limit
        message = TOO_LARGE if oversize else MALFORMED
        log_event("http.bad_request", client=_peer(self.client), error=message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Bad framing in the body of a request the app is handling: the app sees a disconnect, and the
            # client gets the 400 only if no response has started (else the connection just closes).
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self._send_json_error(400, "bad_request", message)

    def _send_json_error(self, status: int, code: str, message: str) -> None:
        body = _error_body(code, message)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            out = self.conn.send(h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]))
            out = (out or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            out += self.conn.send(h11.EndOfMessage()) or b""
            self.transport.write(out)
        except h11.LocalProtocolError:  # a response already under way: nothing more can be said on this connection
            pass
        self.transport.close()


class PatchmoiHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with the same deadline and JSON 400 as `PatchmoiH11Protocol`, a limit on the
    size of a request head, h11's `Host` rule, and `Upgrade`/`CONNECT` served as ordinary requests."""

    _in_head = False  # between the first byte of a request and the end of its head
    _head_began = False  # ... and that first byte is in the chunk being parsed
    _head_bytes = 0  # bytes of the unfinished head so far (see data_received)
    _body_seen = False  # the chunk being parsed held body bytes
    _problem: str | None = None  # the 400's message when it is not "malformed HTTP request"

    # -- the request-head deadline, the head's size ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._head_began = self._body_seen = False
        try:
            self._feed(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."  # uvicorn's own warning, as with h11
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self.transport.is_closing():
            self._cancel_head_timer()
        elif self._in_head:  # a head is still arriving: count it, and give it the deadline
            if self._head_began:
                # It began in this chunk, after whatever the chunk held before it (llhttp does not say where):
                # nothing, or previous messages. After a head without a body the count from the last
                # "\r\n\r\n" is exact; after a body it could be anything, so this chunk counts for nothing
                # (never a false 400; the limit then holds from the next chunk on).
                end = data.rfind(b"\r\n\r\n")
                self._head_bytes = 0 if self._body_seen else len(data) - (end + 4 if end >= 0 else 0)
            else:
                self._head_bytes += len(data)
            if self._head_bytes > (self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE):
                self._problem = TOO_LARGE
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response(TOO_LARGE)
            elif self._head_timer is None and self._idle():
                # The first bytes of the next request on a kept-alive connection. (Pipelined behind a request
                # still being answered, the clock waits, as h11's does: the answer in flight is not cut.)
                self._arm_head_timer()
        elif self._idle() and self._head_timer is None:
            self._arm_head_timer()  # bytes that began no request (blank lines) on an idle connection

    def _feed(self, data: bytes) -> None:
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                # llhttp stops after the head of a request with `Connection: upgrade` (or a CONNECT), skipping
                # any body, and httptools resumes at once. No WebSocket protocol is configured (ws="none"):
                # parse what follows the head as HTTP, as h11 does.
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                    return
                if self._get_upgrade() is not None:
                    self._unsupported_upgrade_warning()
                if self._declares_body():  # ... which llhttp skipped: the app would see an empty body
                    self._problem = UPGRADE_BODY
                    raise httptools.HttpParserError(UPGRADE_BODY) from exc
                offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
                data = data[offset:]

    def _declares_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
                return True
        return False

    def _idle(self) -> bool:
        """No request on this connection is waiting for its response (and none is queued behind one)."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_began = True

    def on_body(self, body: bytes) -> None:
        self._body_seen = True
        super().on_body(body)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()  # the head is in: the app has the request now
        hosts = 0
        for name, _ in self.headers:
            if name == b"host":
                hosts += 1
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1"):
            raise httptools.HttpParserError("HTTP/1.1 needs exactly one Host header")  # h11's rule (RFC 9112)
        super().on_headers_complete()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or (not self._in_head and not self._idle()):
            return
        partial = self._in_head
        log_event("http.header_timeout", client=_peer(self.client), partial=partial, seconds=self.header_timeout)
        if partial and self._idle():
            self._send_json_error(408, "request_timeout", self._timeout_message())
        else:
            self.transport.close()

    # -- malformed HTTP ----------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        message = self._problem or MALFORMED
        log_event("http.bad_request", client=_peer(self.client), error=message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # As with h11: the app sees a disconnect, and the client gets the 400 only if no response has
            # started (nor is queued behind one, with pipelining), else the connection just closes.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started or self.pipeline:
                self.transport.close()
                return
        self._send_json_error(400, "bad_request", message)

    def _send_json_error(self, status: int, code: str, message: str) -> None:
        body = _error_body(code, message)
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            out += [name, b": ", value, b"\r\n"]
        out += [
            b"content-type: application/json; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(out))
        self.transport.close()


PROTOCOLS: dict[str, type[PatchmoiH11Protocol] | type[PatchmoiHttpToolsProtocol]] = {
    "httptools": PatchmoiHttpToolsProtocol,
    "h11": PatchmoiH11Protocol,
}


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


def _peer(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None


def protocol_class(
    header_timeout: float, http: str = HTTP_PROTOCOLS[0]
) -> type[PatchmoiH11Protocol] | type[PatchmoiHttpToolsProtocol]:
    """The protocol for `http` with this header timeout (uvicorn builds one protocol per connection from a class)."""
    base = PROTOCOLS[http]
    protocol = type(base.__name__, (base,), {"header_timeout": header_timeout})
    return cast("type[PatchmoiH11Protocol] | type[PatchmoiHttpToolsProtocol]", protocol)


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    http: str = HTTP_PROTOCOLS[0],
    **overrides: Any,
) -> uvicorn.Config:
    """The uvicorn settings `serve` uses (tests and the HTTP bench run servers from the same function)."""
    options: dict[str, Any] = {
        "access_log": False,  # the app writes its own (`http.request`, PATCHMOI_ACCESS_LOG)
        "log_level": "warning",
        "log_config": _uvicorn_log_config(),
        "lifespan": "on",
        "timeout_graceful_shutdown": 15,
        "http": protocol_class(header_timeout, http),
        "loop": loop_for(http),
        "ws": "none",  # no WebSocket routes: an Upgrade request is an ordinary request (and gets a JSON answer)
        **overrides,
    }
    return uvicorn.Config(app, host=host, port=port, **options)


def _uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging config, its stream handlers swapped for core.log's non-blocking one."""
    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        if handler.get("class") == "logging.StreamHandler":
            handler["class"] = "patchmoi.core.log.BackgroundHandler"
    return config


class Server(uvicorn.Server):
    """uvicorn's server; queued log lines are written before it re-raises the SIGTERM it caught (the default
    action ends the process at once, without running `atexit`). Its shutdown ends the app's open `/stream`
    responses first: uvicorn waits for every open response (up to `timeout_graceful_shutdown`) before the
    lifespan's shutdown, and an event stream never finishes by itself."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self.config.app)
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                flush_logs()


def check_database(settings: Settings) -> None:
    """Before listening: the database answers and its schema is current (migrated here if not). A database that
    cannot be reached is one line and exit 1, not a traceback from the app's start: a supervisor (systemd's
    Restart=on-failure) starts the replica again, and it joins the others once the database answers."""
    store = store_for(settings)
    try:
        store.ensure()
    finally:
        store.close()


def serve(
    settings: Settings,
    *,
    poll: bool = True,
    insecure_no_auth: bool = False,
    header_timeout: float | None = None,
    http: str | None = None,
) -> int:
    if not is_loopback(settings.host) and not settings.admin_token and not insecure_no_auth:
        raise UsageError(
            f"refusing to serve on {settings.host} without PATCH_ADMIN_TOKEN: anyone who can reach it could "
            "retry and replay events. Set PATCH_ADMIN_TOKEN, bind 127.0.0.1, or pass --insecure-no-auth."
        )
    timeout = header_timeout_from_env() if header_timeout is None else header_timeout
    stack = http_from_env() if http is None else http
    configure()
    if settings.database_url:
        check_database(settings)
    app = create_app(settings, poll=poll)
    config = uvicorn_config(app, settings.host, settings.port, header_timeout=timeout, http=stack)
    log_event(
        "server.listening",
        host=settings.host,
        port=settings.port,
        auth=bool(settings.admin_token),
        headerTimeout=timeout,
        http=stack,
        loop=config.loop,
        accessLog=str(settings.access_log),
    )
    print(f"patchmoi serving on http://{settings.host}:{settings.port} (data {settings.data_dir})", file=sys.stderr)
    Server(config).run()
    return 0
