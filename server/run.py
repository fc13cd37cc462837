"""`patchmoi serve`: uvicorn with the app's lifespan (start/stop the core service), JSON access logs.

uvicorn runs with its h11 protocol, subclassed to close two edges it leaves open (the installed uvicorn 0.54
has no setting for either):

- A deadline for the request head. uvicorn's `timeout_keep_alive` only runs between requests on a connection
  that already answered one: a fresh connection that sends nothing, or sends its request line and headers a
  byte at a time, is held open for ever. `PatchmoiH11Protocol` arms a timer when the connection opens (and
  when the first bytes of a later request arrive on a kept-alive connection) and cancels it once h11 has the
  whole request head. When it fires the connection is closed: silently if nothing was sent, else after a
  `408 {"error":"request_timeout"}`. Trickling bytes does not push the deadline back.
- JSON for malformed HTTP. A request h11 cannot parse (bad request line, bad header, head over 16 KiB, bad
  chunked framing) never reaches the app: uvicorn answers it in `send_400_response` with a plain-text body.
  The override sends `400 {"error":"bad_request","message":...}` instead, with the same `Connection: close`.

The protocol is chosen explicitly (`http=`), so installing httptools later does not swap it out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # the limit uvicorn gives h11 unless configured
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from patchmoi.core.config import Settings, is_loopback
from patchmoi.core.errors import ConfigError, UsageError
from patchmoi.core.log import configure, log_event
from patchmoi.server.app import create_app

DEFAULT_HEADER_TIMEOUT = 15.0
HEADER_TIMEOUT_ENV = "PATCHMOI_HEADER_TIMEOUT"


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


class PatchmoiH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and JSON for the 400 on malformed HTTP."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

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

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial = bool(self.conn.trailing_data[0])
        log_event("http.header_timeout", client=_peer(self.client), partial=partial, seconds=self.header_timeout)
        if partial and self.conn.our_state is h11.IDLE:
            self._send_json_error(
                408, "request_timeout", f"the request line and headers must arrive within {self.header_timeout:g} s"
            )
        else:
            self.transport.close()

    # -- malformed HTTP ----------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        oversize = len(self.conn.trailing_data[0]) > limit
        message = "request head too large" if oversize else "malformed HTTP request"
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
        body = json.dumps({"error": code, "message": message}).encode()
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


def _peer(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None


def protocol_class(header_timeout: float) -> type[PatchmoiH11Protocol]:
    """`PatchmoiH11Protocol` with this header timeout (uvicorn builds one protocol per connection from a class)."""

    class Protocol(PatchmoiH11Protocol):
        pass

    Protocol.header_timeout = header_timeout
    return Protocol


def uvicorn_config(
    app: Any, host: str, port: int, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT, **overrides: Any
) -> uvicorn.Config:
    """The uvicorn settings `serve` uses (tests run an in-process server from the same function)."""
    options: dict[str, Any] = {
        "access_log": False,
        "log_level": "warning",
        "lifespan": "on",
        "timeout_graceful_shutdown": 15,
        "http": protocol_class(header_timeout),
        "ws": "none",  # no WebSocket routes: an Upgrade request is an ordinary request (and gets a JSON answer)
        **overrides,
    }
    return uvicorn.Config(app, host=host, port=port, **options)


def serve(
    settings: Settings, *, poll: bool = True, insecure_no_auth: bool = False, header_timeout: float | None = None
) -> int:
    if not is_loopback(settings.host) and not settings.admin_token and not insecure_no_auth:
        raise UsageError(
            f"refusing to serve on {settings.host} without PATCH_ADMIN_TOKEN: anyone who can reach it could "
            "retry and replay events. Set PATCH_ADMIN_TOKEN, bind 127.0.0.1, or pass --insecure-no-auth."
        )
    timeout = header_timeout_from_env() if header_timeout is None else header_timeout
    configure()
    app = create_app(settings, poll=poll)
    log_event(
        "server.listening",
        host=settings.host,
        port=settings.port,
        auth=bool(settings.admin_token),
        headerTimeout=timeout,
    )
    print(f"patchmoi serving on http://{settings.host}:{settings.port} (data {settings.data_dir})", file=sys.stderr)
    uvicorn.Server(uvicorn_config(app, settings.host, settings.port, header_timeout=timeout)).run()
    return 0
