"""The Starlette app: spec §5 routes on the raw path, admin auth, body limits, JSON errors everywhere.

Ids contain `:` and `/` and arrive percent-encoded, so routing splits `scope["raw_path"]` and decodes each
segment itself (Starlette's router would decode `%2F` first and mis-split the id).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from patchmoi.core.adopt import adopt
from patchmoi.core.attempt_states import derive_states
from patchmoi.core.config import Settings
from patchmoi.core.errors import PatchmoiError, http_status
from patchmoi.core.history import KINDS, Query, QueryError, search
from patchmoi.core.log import log_event
from patchmoi.core.operations import chain
from patchmoi.core.pollnow import PollerBusy, PollerUnavailable
from patchmoi.core.service import Service
from patchmoi.core.store import Cursor, Kind, parse_limit
from patchmoi.server.openapi import openapi_document
from patchmoi.server.stream import ChangeStreams, StreamRefused, parse_kinds

MAX_BODY = 64 * 1024

# The methods each kind of route answers, in the order its `Allow` header lists them. HEAD runs the GET handler
# and the body is dropped on the way out; OPTIONS is `204` with `Allow`. `/healthz` is for probes: GET and HEAD.
GET = ("GET", "HEAD", "OPTIONS")
POST = ("POST", "OPTIONS")
HEALTH = ("GET", "HEAD")
# The list routes: a list reads only its collections, and answers while other collections are being indexed.
LISTS = ("flow-events", "feed-signals", "maintenance-attempts", "workspace-dispatches", "flow-dispatches")
HISTORY_LIMIT = 200  # matches per `/history` answer unless `limit` says otherwise (at most 500, as every list)
T = TypeVar("T")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or code)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class Answer(Exception):
    """Not an error: a complete response raised from inside a handler (the 204 answer to OPTIONS)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def json_response(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, media_type="application/json; charset=utf-8")


def raw_list(key: str, lines: list[bytes]) -> Response:
    """`{"<key>": [...]}` assembled from stored JSON lines without decoding and re-encoding them."""
    parts = [b",".join(lines)] if lines else []
    body = b"".join([b'{"', key.encode(), b'":[', *parts, b"]}"])  # one copy of the lines
    return Response(body, media_type="application/json; charset=utf-8")


def error(status: int, code: str, message: str | None = None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": code}
    if message:
        body["message"] = message
    response = json_response(body, status)
    if headers:
        response.headers.update(headers)
    return response


def authorized(request: Request, token: str) -> bool:
    """Any `Authorization: Bearer` (scheme case-insensitive) or `X-Patch-Admin-Token` value equal to the token.

    Every candidate is compared in constant time, and all of them are compared whatever the outcome, so a wrong
    Bearer added by a proxy does not hide a right X-Patch-Admin-Token (or the other way round). Header values
    are latin-1 strings in Starlette: encoding them back gives the bytes the client sent.
    """
    candidates = []
    for name, raw in request.scope["headers"]:  # the raw (lower-cased) header list: no Headers object per request
        if name == b"x-patch-admin-token":
            candidates.append(raw.strip())
        elif name == b"authorization":
            scheme, _, value = raw.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                candidates.append(value.strip())
    expected = token.encode()
    ok = False
    for given in candidates:
        ok |= bool(given) and hmac.compare_digest(given, expected)
    return ok


Handler = Callable[["Api", Request, list[str]], Awaitable[Response]]


class Api:
    """Holds the service; `dispatch` maps (method, raw path segments) to a handler."""

    def __init__(self, service: Service, streams: ChangeStreams | None = None) -> None:
        self.service = service
        self.store = service.store
        self.streams = streams if streams is not None else ChangeStreams()
        # PATCHMOI_ACCESS_LOG as one number, read once per request: -1 off, 0 errors and slow requests only,
        # 1 every request, N > 1 errors and slow ones plus one in N of the rest.
        policy = service.settings.access_log
        self.log_every = {"off": -1, "errors": 0, "all": 1}.get(policy.mode, policy.every)
        self.slow_seconds = policy.SLOW_SECONDS
        self.unlogged = 0  # ordinary requests since the last sampled line
        # derive_states over every attempt, kept for `/history/attempts` until an attempt record is appended
        self._states: tuple[tuple[Cursor | None, int], dict[str, str]] | None = None

    # -- routing -----------------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        try:
            response = await self.dispatch(request, path)
        except Answer as answer:
            response = answer.response
        except ApiError as exc:
            response = error(exc.status, exc.code, exc.message, exc.headers)
        except PatchmoiError as exc:  # the error table (core.errors) gives the status for the code
            response = error(http_status(exc), exc.code, str(exc))
            if response.status_code >= 500:  # the server's own trouble (a full disk, a bad config): say why
                log_event("http.error", path=path, code=exc.code, error=str(exc))
        except ClientDisconnect:  # gone while its body was read: nobody gets this answer, the log line says why
            response = error(499, "client_disconnected")
        except Exception as exc:  # never a bare 500; the log has the traceback
            log_event("http.error", path=path, exc=exc)
            response = error(500, "internal_error", "unexpected server error; see the server log")
        if self.log_every >= 0:
            self.log_request(request.method, path, response.status_code, time.perf_counter() - started)
        return response

    def log_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """The `http.request` line, if PATCHMOI_ACCESS_LOG wants this one (errors and slow requests, always)."""
        sampled = None
        if self.log_every != 1 and status < 400 and seconds < self.slow_seconds:
            if self.log_every == 0:
                return
            self.unlogged += 1
            if self.unlogged < self.log_every:
                return
            self.unlogged, sampled = 0, self.log_every
        log_event(
            "http.request",
            method=method,
            path=path,
            status=status,
            durationMs=round(seconds * 1000, 1),
            sampled=sampled,  # this line stands for `sampled` ordinary requests
        )

    async def dispatch(self, request: Request, path: str) -> Response:
        # "/flow-events/" is not "/flow-events" (the Bun service answered 404): a trailing slash is an empty
        # last segment, which no route takes
        segments = [unquote(s) for s in path[1:].split("/")] if path not in ("", "/") else []
        head = segments[0] if segments else ""
        if head == "healthz":  # no auth; any path below it is still the probe, as in the Bun service
            _method(request, HEALTH)
            return PlainTextResponse("ok\n")
        routes: dict[str, Handler] = {
            "flow-events": Api.events,
            "workspace-dispatches": Api.dispatches,
            "flow-dispatches": Api.dispatches,
            "maintenance-attempts": Api.attempts,
            "workspace-runs": Api.workspace_runs,
            "workspace-events": Api.workspace_events,
            "readyz": Api.ready,
            "openapi.json": Api.openapi,
            "feed-signals": Api.signals,
            "feed-sources": Api.sources,
            "stream": Api.stream,
            "history": Api.history,
        }
        handler = routes.get(head)
        if handler is None:
            return error(404, "not_found")
        token = self.service.settings.admin_token
        if token and not authorized(request, token):
            return error(401, "unauthorized", headers={"WWW-Authenticate": 'Bearer realm="patchmoi"'})
        # A record, its chain, an action: they may read any collection, so they wait (off the event loop) for
        # every index being built; lists read theirs on a thread meanwhile (`_list`), and so does `/history`.
        detail = head not in ("readyz", "openapi.json", "stream", "history") and (
            len(segments) > 1 or head not in LISTS
        )
        if detail and self.store.warm_for():
            await asyncio.to_thread(self.store.warm)
        return await handler(self, request, segments[1:])

    async def _list(self, kinds: list[Kind] | None, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A list read: inline when its indexes are ready (sub-millisecond), else on a thread, where it reads the
        newest records from the end of the files while the indexes are built, or waits for them."""
        if self.store.networked or self.store.warm_for(kinds):  # (a database read waits on the network)
            return await asyncio.to_thread(read, *args, **kwargs)
        return read(*args, **kwargs)

    # -- handlers ----------------------------------------------------------------------------------------
    async def ready(self, request: Request, rest: list[str]) -> Response:
        _require(request, rest, GET)
        status, body = await self.service.readyz()
        return Response(body, status, media_type="application/json; charset=utf-8")

    async def openapi(self, request: Request, rest: list[str]) -> Response:
        _require(request, rest, GET)
        return json_response(openapi_document())

    async def stream(self, request: Request, rest: list[str]) -> Response:
        """Server-sent events naming the tabs with new records (server/stream.py): a patchmoi extension."""
        _require(request, rest, GET)
        try:
            kinds = parse_kinds(_params(request).get("kinds"))
        except ValueError as exc:
            return error(400, "invalid_request", str(exc))
        if request.method == "HEAD":
            return self.streams.response(None, None)
        try:
            sub, position = self.streams.subscribe(kinds)
        except StreamRefused as exc:
            return error(503, exc.code, str(exc), headers={"Retry-After": "5"})
        return self.streams.response(sub, position)

    async def history(self, request: Request, rest: list[str]) -> Response:
        """`GET /history/{kind}?q=&before=&limit=`: one step of a search through a collection's whole history
        (core.history), newest first: a patchmoi extension. An unknown kind is a 400 naming the known ones, not
        a 404, which the dashboard would take for a server without the route."""
        if len(rest) != 1 or not rest[0]:
            return error(404, "not_found")
        _method(request, GET)
        kind = rest[0]
        if kind not in KINDS:
            return error(400, "invalid_request", f"no history of {kind[:100]!r}: one of {', '.join(KINDS)}")
        q = _params(request)
        try:
            query = Query.parse(q.get("q") or "")
        except QueryError as exc:
            return error(400, "invalid_request", str(exc))
        except OverflowError:  # `since:99999999w`: a time before year 1
            return error(400, "invalid_request", "a time in the query is out of range")
        limit = parse_limit(q.get("limit"), HISTORY_LIMIT)
        # Always on a thread: a step reads up to core.history.BUDGET records, and while the store's indexes are
        # built it reads (or waits for) its own collection's there, as a list does.
        return await asyncio.to_thread(self._history, kind, query, limit, q.get("before") or None)

    def _history(self, kind: str, query: Query, limit: int, before: Cursor | None) -> Response:
        collection = KINDS[kind]
        if before is not None:  # a cursor is opaque: the store says whether it is one of its own
            try:
                self.store.page(collection, limit=1, before=before)
            except (ValueError, OverflowError):
                raise ApiError(
                    400,
                    "invalid_request",
                    f"`before` is not a cursor of the {kind} history: pass back an item's `cursor`, or `next`",
                ) from None
        states = self._attempt_states() if kind == "attempts" else None
        found = search(self.store, kind, query, limit=limit, before=before, states=states)
        body = {
            "items": [{"cursor": cursor, "record": record} for cursor, record in found.hits],
            "next": found.next,
            "scanned": found.scanned,
            "size": self.store.count(collection),
        }
        return json_response(body)  # encoded here, off the event loop

    def _attempt_states(self) -> dict[str, str]:
        """Every attempt's derived state (as `/maintenance-attempts` gives it), computed again only when an
        attempt record was appended since (the newest record, or the count, moved)."""
        newest = self.store.page(Kind.ATTEMPTS, limit=1)
        key = (newest[0][0] if newest else None, self.store.count(Kind.ATTEMPTS))
        cached = self._states
        if cached is None or cached[0] != key:
            cached = (key, derive_states(self.store.all_attempts()))
            self._states = cached
        return cached[1]

    async def sources(self, request: Request, rest: list[str]) -> Response:
        """`POST /feed-sources/{id}/poll`: poll one source now (core.pollnow), in the poll worker if there is one."""
        if len(rest) != 2 or rest[1] != "poll" or not rest[0]:
            return error(404, "not_found")
        self.service.source(rest[0])  # an unknown source is a 404 (NotFoundError), whatever the method
        _method(request, POST)
        await _body(request)  # nothing is read from it; the body limit holds as on every POST
        try:
            summary = await self.service.poll_now(rest[0])
        except PollerBusy as exc:
            return error(409, exc.code, str(exc))
        except PollerUnavailable as exc:
            return error(503, exc.code, str(exc), headers={"Retry-After": "2"})
        return json_response(summary)

    async def events(self, request: Request, rest: list[str]) -> Response:
        q = _params(request)
        if not rest:
            if request.method not in GET:  # the spec's 404 for POST and the like on the list
                return error(404, "not_found")
            _method(request, GET)
            lines = await self._list(
                [Kind.EVENTS], self.store.list_events_raw, type=q.get("type") or None, limit=q.get("limit")
            )
            return raw_list("events", lines)
        if len(rest) > 2 or (len(rest) == 2 and rest[1] not in ("retry", "replay", "chain")) or not rest[0]:
            return error(404, "not_found")
        event_id = rest[0]
        event = await self.store.off_loop(self.store.get_event, event_id)
        if event is None:
            return error(404, "flow_event_not_found")
        if rest[1:] == ["chain"]:
            return await self._chain(request, event_id)
        if len(rest) == 1:
            _method(request, GET)
            dispatches = await self.store.off_loop(self.store.list_dispatches, event_id=event_id, limit=q.get("limit"))
            return json_response({"event": event, "dispatches": dispatches})
        _method(request, POST)
        reason = await _reason(request)
        dispatcher = self.service.dispatcher
        if rest[1] == "replay":
            outcome = await dispatcher.replay(event_id, reason=reason, wait=False)
        else:
            outcome = await dispatcher.retry(event_id, reason=reason, wait=False)
        if outcome.record.get("status") == "failed":  # the spec's 502, with the error code every error carries
            code = "dispatch_failed" if outcome.record.get("errorKind") != "config" else "dispatch_misconfigured"
            return json_response({"error": code, "message": outcome.record.get("error"), **outcome.to_dict()}, 502)
        return json_response(outcome.to_dict(), 202)

    async def _chain(self, request: Request, record_id: str) -> Response:
        """The record's chain (core.operations.chain): one request for what a detail view shows."""
        _method(request, GET)
        found = await asyncio.to_thread(chain, self.store, record_id)
        if found is None:
            return error(404, "not_found")
        return json_response(found)

    async def signals(self, request: Request, rest: list[str]) -> Response:
        if len(rest) == 2 and rest[1] == "chain" and rest[0]:
            if await self.store.off_loop(self.store.get, Kind.SIGNALS, rest[0]) is None:
                return error(404, "feed_signal_not_found")
            return await self._chain(request, rest[0])
        _require(request, rest, GET)
        q = _params(request)
        source = q.get("sourceId") or None
        return raw_list(
            "signals",
            await self._list([Kind.SIGNALS], self.store.list_signals_raw, source_id=source, limit=q.get("limit")),
        )

    async def dispatches(self, request: Request, rest: list[str]) -> Response:
        if rest:
            return error(404, "not_found")
        _method(request, GET)
        q = _params(request)
        dispatches = await self._list(
            [Kind.DISPATCHES, Kind.LEGACY_DISPATCHES],
            self.store.list_dispatches,
            event_id=q.get("eventId") or None,
            status=q.get("status") or None,
            limit=q.get("limit"),
        )
        return json_response({"dispatches": dispatches})

    async def attempts(self, request: Request, rest: list[str]) -> Response:
        q = _params(request)
        if not rest:
            if request.method not in GET:  # as on /flow-events: the Bun service's 404 for POST on the list
                return error(404, "not_found")
            _method(request, GET)
            if q.get("state"):  # derived states (open queue, ...): each attempt carries its `state`
                found = await self._list(
                    None,
                    self.store.list_attempts_in_state,
                    q["state"],
                    event_id=q.get("eventId") or None,
                    status=q.get("status") or None,
                    limit=q.get("limit"),
                )
                return json_response({"attempts": found})
            lines = await self._list(
                [Kind.ATTEMPTS],
                self.store.list_attempts_raw,
                event_id=q.get("eventId") or None,
                status=q.get("status") or None,
                limit=q.get("limit"),
            )
            return raw_list("attempts", lines)
        if len(rest) > 2 or (len(rest) == 2 and rest[1] not in ("sync", "adopt", "chain")) or not rest[0]:
            return error(404, "not_found")
        attempt = await self.store.off_loop(self.store.get_attempt, rest[0])
        if attempt is None:
            return error(404, "maintenance_attempt_not_found")
        if rest[1:] == ["chain"]:
            return await self._chain(request, rest[0])
        if len(rest) == 1:
            _method(request, GET)
            # every attempt's state (cached until one is appended): seconds on a big store, never on the loop
            state = (await asyncio.to_thread(self._attempt_states)).get(rest[0], "done")
            return json_response({"attempt": {**attempt, "state": state}})
        _method(request, POST)
        body = await _body(request)  # enforces the body limit
        if rest[1] == "adopt":
            by = body.get("by") if isinstance(body.get("by"), str) and body["by"].strip() else "api"
            adopted = await asyncio.to_thread(  # AdoptRefused is a 409 by the error table
                adopt,
                self.store,
                rest[0],
                by=str(by)[:200],
                reason=_text(body.get("reason")),
                reviewed=body.get("reviewed") is True,
            )
            return json_response({"attempt": adopted})
        return json_response({"attempt": await self.service.dispatcher.sync(rest[0])}, 202)

    async def workspace_runs(self, request: Request, rest: list[str]) -> Response:
        _shallow(rest)
        _method(request, GET)
        q = _params(request)
        if not rest:
            return json_response(
                await self.service.workspace_runs(q.get("eventId") or None, q.get("status") or None, q.get("limit"))
            )
        run = await self.service.workspace_run(rest[0])
        if run is None:
            return error(404, "workspace_run_not_found")
        return json_response({"run": run})

    async def workspace_events(self, request: Request, rest: list[str]) -> Response:
        _shallow(rest)
        _method(request, GET)
        q = _params(request)
        if not rest:
            return json_response(await self.service.workspace_events(q.get("type") or None, q.get("limit")))
        event = await self.service.workspace_event(rest[0])
        if event is None:
            return error(404, "workspace_event_not_found")
        return json_response({"event": event})


def _require(request: Request, rest: list[str], allowed: tuple[str, ...]) -> None:
    if rest:
        raise ApiError(404, "not_found")
    _method(request, allowed)


def _method(request: Request, allowed: tuple[str, ...]) -> None:
    """Let an allowed method through; answer OPTIONS (`204`) or any other method (`405`) with `Allow`."""
    allow = ", ".join(allowed)
    if request.method == "OPTIONS" and "OPTIONS" in allowed:
        raise Answer(Response(status_code=204, headers={"Allow": allow}))
    if request.method not in allowed:
        raise ApiError(405, "method_not_allowed", headers={"Allow": allow})


def _shallow(rest: list[str]) -> None:
    """Below `/workspace-runs/{id}` and `/workspace-events/{id}` the spec answers 405: no method is allowed there,
    which an empty `Allow` says (RFC 9110 §10.2.1)."""
    if len(rest) > 1 or rest == [""]:  # deeper, or a trailing slash (`/workspace-runs/`): not a route
        raise ApiError(405, "method_not_allowed", headers={"Allow": ""})


async def _reason(request: Request) -> str | None:
    """Read a small optional JSON body `{"reason": "..."}`; larger than 64 KiB is 413."""
    return _text((await _body(request)).get("reason"))


def _params(request: Request) -> dict[str, str]:
    """The query string as Starlette reads it (latin-1, blank values kept, the last of a repeated key wins),
    without its multi-dict (a list request is cheap enough for that to show)."""
    raw = request.scope.get("query_string") or b""
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}


def _text(value: Any) -> str | None:
    return str(value)[:500] if isinstance(value, str) and value.strip() else None


async def _body(request: Request) -> dict[str, Any]:
    """A small optional JSON object body; larger than 64 KiB is 413, anything but an object is `{}`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"request bodies are limited to {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"request bodies are limited to {MAX_BODY} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}  # the Bun API ignored bodies; a non-JSON body is not an error
    return data if isinstance(data, dict) else {}


def create_app(
    settings: Settings, *, poll: bool = True, service: Service | None = None, streams: ChangeStreams | None = None
) -> Starlette:
    """The app; `streams` sets the limits of `/stream` (tests shorten its keepalive), one with defaults if None."""
    holder: dict[str, Api] = {}
    changes = streams if streams is not None else ChangeStreams()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        svc = service or Service(settings, poll_in_worker=True)
        await svc.start(poll=poll, warm_in_background=True)  # /healthz answers while the indexes are built
        changes.start(svc.store)
        holder["api"] = Api(svc, changes)
        log_event("server.started", polling=svc.polling, dataDir=str(settings.data_dir))
        try:
            yield
        finally:
            await changes.aclose()  # open streams end (server.run ends them sooner, as its shutdown begins)
            await svc.stop()
            log_event("server.stopped")

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        api = holder.get("api")
        request = Request(scope, receive)
        response = error(503, "starting") if api is None else await api(request)
        await response(scope, receive, _without_body(send) if scope["method"] == "HEAD" else send)

    # Api catches everything a handler raises; these handlers cover what is left (Starlette's own HTTPException,
    # a failure outside a handler), which Starlette would otherwise answer in plain text.
    app = Starlette(
        routes=[], lifespan=lifespan, exception_handlers={HTTPException: _http_exception, Exception: _internal_error}
    )
    # Every request goes to `endpoint` (the router's default): a path pattern would not match every raw path
    # (a `%0A` in an id, say) and would answer with a non-JSON error.
    app.router.default = endpoint
    app.state.streams = changes  # for server.stream.end_streams, called as the server shuts down
    return app


def _without_body(send: Send) -> Send:
    """HEAD: the GET answer's status and headers (its Content-Length included), no body bytes."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(
        exc.status_code,
        HTTP_CODES.get(exc.status_code, "http_error"),
        exc.detail,
        dict(exc.headers) if exc.headers else None,
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    log_event("http.error", path=request.url.path, exc=exc)
    return error(500, "internal_error", "unexpected server error; see the server log")
