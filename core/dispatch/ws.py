"""`workspace-ws`: a workspace backend reached by JSON-RPC 2.0 over WebSocket (spec §3; ws:// and wss:// URLs).

The codex-flows wire: every call opens its own connection, sends `workspace.initialize` (the client info, and
`capabilities.appServerPassThrough`), then exactly one method, and closes. A call has one deadline (90 s) for
all of that. Answers are read as core.dispatch.http reads HTTP answers, so dispatch records, attempts and runs
look the same whichever transport delivered them.

The backend secret is not sent: the spec signs HTTP bodies only, and this wire has no signature. Credentials
in the URL itself (user:password, sent as Basic auth by the handshake; a query token) go where the URL puts
them and are never written to a record, an error or a log (records and errors name `redact_url(url)`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx

from patchmoi.core.config import redact_url
from patchmoi.core.dispatch.contract import Backend, BackendQueries, Delivery, Finding, WorkspaceState
from patchmoi.core.dispatch.http import BackendReply
from patchmoi.core.errors import BackendError
from patchmoi.core.feeds.fetch import USER_AGENT
from patchmoi.core.log import log_event
from patchmoi.core.tls import tls_context

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection
    from websockets.exceptions import ConnectionClosed

__all__ = ["CLIENT_INFO", "WS_TRANSPORT", "WsBackend", "WsError", "WsTransport"]

INITIALIZE = "workspace.initialize"
CLIENT_INFO = {"name": "patch-moi", "title": "patch.moi", "version": "0.1.0"}  # spec §3, as the original sent it
TIMEOUT = 90.0  # seconds per call: connect, initialize and the method together
MAX_ANSWER = 16 * 2**20  # bytes in one answer (a run list with its output); websockets' default is 1 MiB
MESSAGE_TOO_BIG = 1009  # the close code websockets sends when an answer is over MAX_ANSWER
CLOSE_TIMEOUT = 2.0  # the closing handshake after an answer (or a failure) never holds a call longer
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # handshake answers worth another connection, as over HTTP
OVERLOADED = -32001  # codex app-server's "Server overloaded; retry later": the request was not run
# Steps that may be sent again after the connection failed under them: initialize, dispatch (idempotent by event
# id: a known event is `duplicate`), the reads and cancel. Not a replay: one the backend received may have started
# runs.
REPEATABLE = frozenset(
    {
        "connect",
        INITIALIZE,
        "flow.dispatch",
        "flow.listRuns",
        "flow.getRun",
        "flow.listEvents",
        "flow.getEvent",
        "flow.cancelRun",
    }
)
FETCH_CONCURRENCY = 8  # sync reads an attempt's runs a connection each, this many at a time

# websockets logs every handshake header at DEBUG (the Authorization of a URL's user:password, a query token in
# the request line). A logger of its own, held at WARNING, keeps that out of any log, whatever the root level.
_WIRE_LOG = logging.getLogger("websockets.client.patchmoi")
_WIRE_LOG.setLevel(logging.WARNING)

T = TypeVar("T")


class WsError(BackendError):
    """A workspace-ws call failed. `retryable`: another connection may succeed and cannot repeat an effect;
    `config`: the URL itself is wrong (an operator must fix it)."""

    def __init__(
        self, message: str, status: int | None = None, *, retryable: bool = False, config: bool = False
    ) -> None:
        super().__init__(message, status)
        self.retryable = retryable
        self.config = config


class _Answer(Exception):
    """Inside one call: the backend answered, but not with a usable result (an error object, a bad frame)."""

    def __init__(self, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


class WsBackend:
    """One workspace-ws backend: a JSON-RPC call per connection, with bounded retries of what is safe to retry."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        timeout: float = TIMEOUT,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._hidden = _hidden_values(url, secret)

    # -- the methods (spec §3) ---------------------------------------------------------------------------
    async def initialize(self) -> dict[str, Any]:
        """Connect and initialize only (doctor)."""
        return await self.call(None, None)

    async def dispatch(self, event: dict[str, Any]) -> dict[str, Any]:
        return await self.call("flow.dispatch", {"event": event})

    async def replay(self, event_id: str) -> dict[str, Any]:
        return await self.call("flow.replay", {"eventId": event_id, "wait": False})

    async def get_run(self, run_id: str) -> dict[str, Any]:
        body = await self.call("flow.getRun", {"runId": run_id})
        run = body.get("run", body)
        return run if isinstance(run, dict) else {}

    async def list_runs(
        self, event_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        return await self.call("flow.listRuns", _present({"eventId": event_id, "status": status, "limit": limit}))

    async def get_event(self, event_id: str) -> dict[str, Any]:
        return await self.call("flow.getEvent", {"eventId": event_id})

    async def list_events(self, type: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.call("flow.listEvents", _present({"type": type, "limit": limit}))

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        return await self.call("flow.cancelRun", {"runId": run_id})

    # -- the call ----------------------------------------------------------------------------------------
    async def call(self, method: str | None, params: dict[str, Any] | None) -> dict[str, Any]:
        """`workspace.initialize`, then `method` (None: initialize only) on a new connection; its result, an
        object. Raises WsError naming the step, the URL (redacted) and what happened."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._call_once(method, params)
            except WsError as exc:
                if not exc.retryable or attempt == self.attempts:
                    if attempt > 1:
                        raise WsError(f"{exc} (after {attempt} attempts)", exc.status, config=exc.config) from None
                    raise
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _call_once(self, method: str | None, params: dict[str, Any] | None) -> dict[str, Any]:
        # Imported here: only a process that calls a ws backend pays for websockets (30 ms of a cold start).
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidProxy, InvalidStatus, InvalidURI

        step = "connect"
        ws: ClientConnection | None = None
        deadline = asyncio.timeout(self.timeout)
        tls: dict[str, Any] = {"ssl": tls_context()} if _secure(self.url) else {}  # ws:// refuses an ssl argument
        try:
            async with deadline:
                ws = await connect(
                    self.url,
                    open_timeout=None,  # the call's deadline covers the handshake
                    close_timeout=CLOSE_TIMEOUT,
                    max_size=MAX_ANSWER,
                    user_agent_header=USER_AGENT,
                    logger=_WIRE_LOG,
                    **tls,
                )
                step = INITIALIZE
                hello = {"clientInfo": CLIENT_INFO, "capabilities": {"appServerPassThrough": True}}
                result = await _request(ws, 1, INITIALIZE, hello)
                if method is not None:
                    step = method
                    result = await _request(ws, 2, method, params or {})
        except TimeoutError:
            if deadline.expired():
                raise self._error(step, f"no answer within {self.timeout:g}s") from None
            raise self._error(
                step, "the connection timed out (backend unreachable?)", retryable=step == "connect"
            ) from None
        except _Answer as exc:
            raise self._error(step, self.scrub(exc.detail), retryable=exc.retryable) from None
        except ConnectionClosed as exc:
            raise self._error(step, self._closed(exc), retryable=step in REPEATABLE) from None
        except InvalidStatus as exc:
            code = exc.response.status_code
            raise self._error(
                step, f"the backend refused the WebSocket upgrade with HTTP {code}", code, code in RETRY_STATUSES
            ) from None
        except InvalidURI:
            raise self._error(step, "not a valid ws:// or wss:// URL", config=True) from None
        except (InvalidHandshake, InvalidProxy) as exc:  # before any request: another connection repeats nothing
            raise self._error(step, f"the WebSocket handshake failed ({type(exc).__name__})", retryable=True) from None
        except ssl.SSLError as exc:
            raise self._error(step, f"TLS failed: {exc.reason or type(exc).__name__}") from None
        except ConnectionRefusedError:
            raise self._error(step, "connection refused (backend unreachable?)", retryable=True) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self._error(step, f"cannot connect: {reason} (backend unreachable?)", retryable=True) from None
        except (ValueError, ImportError) as exc:  # websockets' own checks (a proxy it cannot use, say)
            raise self._error(step, f"cannot connect: {type(exc).__name__}", config=True) from None
        except Exception as exc:  # dispatch never raises (spec §3): an unforeseen failure is a failed call too
            log_event("dispatch.ws_unexpected", step=step, error=self.scrub(f"{type(exc).__name__}: {exc}"))
            raise self._error(step, f"unexpected {type(exc).__name__}") from None
        finally:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()  # bounded by CLOSE_TIMEOUT, then the connection is dropped
        if not isinstance(result, dict):
            raise self._error(step, f"malformed answer: the result is {_kind(result)}, expected an object")
        return result

    def _error(
        self, step: str, detail: str, status: int | None = None, retryable: bool = False, *, config: bool = False
    ) -> WsError:
        where = f"connecting to {self.shown}" if step == "connect" else f"{step} at {self.shown}"
        return WsError(f"workspace-ws {where}: {detail}", status, retryable=retryable, config=config)

    def _closed(self, exc: ConnectionClosed) -> str:
        if exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG:
            return f"the answer is larger than {MAX_ANSWER // 2**20} MiB"
        if exc.rcvd is None:
            return "the backend dropped the connection before answering"
        reason = f": {self.scrub(exc.rcvd.reason)}" if exc.rcvd.reason else ""
        return f"the backend closed the connection before answering (close code {int(exc.rcvd.code)}{reason})"

    def scrub(self, text: str) -> str:
        """Text the backend sent, shortened, without any of our secrets in it."""
        for value in self._hidden:
            text = text.replace(value, "<redacted>")
        return text if len(text) <= 300 else text[:300] + "..."


async def _request(ws: ClientConnection, rid: int, method: str, params: dict[str, Any]) -> Any:
    """Send one request; read until its answer. Notifications and requests from the backend (codex-flows sends
    `workspace.event` ones) are skipped; a frame that is not JSON-RPC ends the call at once."""
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, ensure_ascii=False))
    while True:
        frame = await ws.recv()
        try:
            message = json.loads(frame)
        except ValueError:
            raise _Answer("malformed answer: a frame that is not JSON") from None
        if not isinstance(message, dict):
            raise _Answer(f"malformed answer: {_kind(message)} instead of a JSON-RPC message")
        if "method" in message:
            continue
        if message.get("id") != rid and not (message.get("id") is None and "error" in message):
            continue  # an answer to something else
        if "error" in message:
            error = message["error"]
            if not isinstance(error, dict):
                raise _Answer("JSON-RPC error (no error object)")
            code, text = error.get("code"), error.get("message")
            label = f"JSON-RPC error {code}" if isinstance(code, int) else "JSON-RPC error"
            raise _Answer(f"{label}: {text}" if isinstance(text, str) and text else label, retryable=code == OVERLOADED)
        if "result" not in message:
            raise _Answer("malformed answer: a JSON-RPC response with neither result nor error")
        return message["result"]


def _present(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v not in (None, "")}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _secure(url: str) -> bool:
    return url.split(":", 1)[0].lower() == "wss"


def _hidden_values(url: str, secret: str | None) -> list[str]:
    """Strings no error may repeat: the secret, the URL's password and its query values (tokens)."""
    values = [secret or ""]
    try:
        parts = urlsplit(url)
        values.append(parts.password or "")
        values += [v for _k, v in parse_qsl(parts.query)]
    except ValueError:
        pass
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def _blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from synchronous code (doctor), on a thread of its own if this one already
    runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="patchmoi-ws-doctor") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class WsTransport:
    """`workspace-ws`: JSON-RPC 2.0 over WebSocket, a connection per call (spec §3)."""

    name = "workspace-ws"
    schemes: tuple[str, ...] = ("ws", "wss")
    runs_here = False
    available = True
    workspace_state: WorkspaceState | None = None
    # Per call; tests shorten them.
    timeout: float = TIMEOUT
    attempts: int = 3
    backoff: float = 0.5

    def base(self, url: str) -> str:
        return url  # spec §3: workspaceBackendUrl is the raw URL (records keep it redacted)

    def client(self, backend: Backend) -> WsBackend:
        if backend.url is None:
            raise ValueError("a workspace-ws backend needs a URL")
        return WsBackend(
            backend.url, backend.secret, timeout=self.timeout, attempts=self.attempts, backoff=self.backoff
        )

    async def deliver(
        self, backend: Backend, event: dict[str, Any], operation: str, webhook_id: str, client: httpx.AsyncClient
    ) -> Delivery:
        ws = self.client(backend)
        try:
            body = await (ws.replay(str(event["id"])) if operation == "replay" else ws.dispatch(event))
        except WsError as exc:
            fields: dict[str, Any] = {"status": "failed", "error": str(exc)}
            if exc.status is not None:
                fields["httpStatus"] = exc.status
            if exc.config:
                fields["errorKind"] = "config"
            return Delivery(fields)
        reply = BackendReply(200, body)  # the HTTP transport's reading: runIds, else the ids of the runs
        fields = {"status": "dispatched", "runIds": reply.run_ids}
        for key, kind in (("matched", int), ("idempotent", bool)):
            if isinstance(body.get(key), kind):
                fields[key] = body[key]
        return Delivery(fields, reply.runs)

    async def fetch_runs(
        self, backend: Backend, run_ids: list[str], event_id: str, client: httpx.AsyncClient
    ) -> list[dict[str, Any]]:
        ws = self.client(backend)
        if run_ids:
            gate = asyncio.Semaphore(FETCH_CONCURRENCY)

            async def one(run_id: str) -> dict[str, Any]:
                async with gate:
                    return await ws.get_run(run_id)

            return list(await asyncio.gather(*(one(rid) for rid in run_ids)))
        body = await ws.list_runs(event_id=event_id)
        runs = body.get("runs")
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []

    def queries(self, backend: Backend, client: httpx.AsyncClient) -> BackendQueries | None:
        return self.client(backend)

    def doctor(self, backend: Backend, timeout: float) -> list[Finding]:
        ws = self.client(backend)
        ws.timeout, ws.attempts = min(timeout, self.timeout), 1
        try:
            hello = _blocking(ws.initialize)
        except WsError as exc:
            findings = [Finding("FAIL", "backend", str(exc))]
        else:
            findings = [_initialized(ws, hello)]
        if backend.secret:
            findings.append(
                Finding(
                    "WARN",
                    "backend",
                    "a backend secret is set but workspace-ws does not send it (JSON-RPC calls are not signed): "
                    "protect the backend with wss:// and network access",
                )
            )
        return findings


def _initialized(ws: WsBackend, hello: dict[str, Any]) -> Finding:
    info = hello.get("serverInfo")
    server = ""
    if isinstance(info, dict) and isinstance(info.get("name"), str):
        server = f" ({ws.scrub(' '.join(str(info[k]) for k in ('name', 'version') if info.get(k)))})"
    caps = hello.get("capabilities")
    methods = caps.get("workspaceMethods") if isinstance(caps, dict) else None
    if isinstance(methods, list) and "flow.dispatch" not in methods:
        return Finding("WARN", "backend", f"{ws.shown}{server} initialized but does not list flow.dispatch")
    return Finding("PASS", "backend", f"{ws.shown}{server} answered workspace.initialize")


WS_TRANSPORT = WsTransport()
