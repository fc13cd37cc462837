"""A real HTTP server on 127.0.0.1 for tests: feeds, workspace backends and Discord receivers.

Routes map a path to a handler `fn(request) -> Reply`; a Reply can also drip its body slowly or never answer.
Every request is recorded (method, raw path, headers, body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from patchmoi.core.dispatch.signing import verify_standard_webhook


@dataclass
class Request:
    method: str
    path: str  # raw, still percent-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_every: float | None = None  # seconds between single bytes
    hang: bool = False
    truncate: bool = False  # announce a longer body, then drop the connection

    @classmethod
    def json(cls, value: Any, status: int = 200, **headers: str) -> Reply:
        return cls(status, json.dumps(value).encode(), {"content-type": "application/json", **headers})


Handler = Callable[[Request], Reply]


def _constant(reply: Reply) -> Handler:
    def handler(_req: Request) -> Reply:
        return reply

    return handler


class LoopbackServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.prefix_routes: list[tuple[str, Handler]] = []
        self.requests: list[Request] = []
        self.connections = 0
        self._lock = threading.Lock()
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                req = Request(
                    self.command,
                    split.path,
                    parse_qs(split.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with server._lock:
                    server.requests.append(req)
                handler = server.routes.get(split.path)
                if handler is None:
                    handler = next((h for p, h in server.prefix_routes if split.path.startswith(p)), None)
                reply = handler(req) if handler else Reply.json({"error": "not_found"}, 404)
                if reply.hang:
                    time.sleep(3600)
                    return
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                announced = len(reply.body) * (2 if reply.truncate else 1)
                self.send_header("content-length", str(announced))
                self.end_headers()
                if reply.drip_every is not None:
                    for i in range(len(reply.body)):
                        try:
                            self.wfile.write(reply.body[i : i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(reply.drip_every)
                    return
                try:
                    self.wfile.write(reply.body)
                except OSError:
                    return
                if reply.truncate:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512

        self.httpd = _Server(("127.0.0.1", 0), _H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str, handler: Handler | Reply) -> None:
        self.routes[path] = handler if callable(handler) else _constant(handler)

    def route_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefix_routes.append((prefix, handler))

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeBackend:
    """A workspace backend (spec §3): verifies signatures, idempotent by event id, replays create new runs."""

    def __init__(self, server: LoopbackServer, secret: str | None = None, prefix: str = "") -> None:
        self.server = server
        self.secret = secret
        self.prefix = prefix
        self.events: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.fail_next: list[int] = []
        self.bad_signatures = 0
        self.webhook_ids: list[str] = []
        self.posts = 0
        server.route(f"{prefix}/events", self._events)
        server.route_prefix(f"{prefix}/events/", self._event_item)
        server.route(f"{prefix}/runs", self._runs)
        server.route_prefix(f"{prefix}/runs/", self._run_item)

    @property
    def url(self) -> str:
        return self.server.url + self.prefix

    def _check(self, req: Request) -> bool:
        if not self.secret:
            return True
        compat = "sha256=" + hmac.new(self.secret.encode(), req.body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(compat, req.headers.get("x-flow-signature-256", ""))
        ok = ok and verify_standard_webhook(self.secret, req.headers, req.body)
        if not ok:
            self.bad_signatures += 1
        return ok

    def _events(self, req: Request) -> Reply:
        if req.method == "GET":
            return Reply.json({"events": list(self.events.values())})
        if self.fail_next:
            return Reply.json({"error": "boom"}, self.fail_next.pop(0))
        if not self._check(req):
            return Reply.json({"error": "invalid signature"}, 401)
        self.webhook_ids.append(req.headers.get("webhook-id", ""))
        self.posts += 1
        event = req.json()
        if event["id"] in self.events:
            return Reply.json(
                {
                    "status": "duplicate",
                    "eventId": event["id"],
                    "runIds": self.events[event["id"]]["runIds"],
                    "matched": 0,
                    "idempotent": True,
                },
                202,
            )
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {
            "id": run_id,
            "eventId": event["id"],
            "status": "queued",
            "flowName": "fork",
            "stepName": "release-cycle",
        }
        self.events[event["id"]] = {**event, "runIds": [run_id]}
        return Reply.json({"status": "accepted", "eventId": event["id"], "runIds": [run_id], "matched": 1}, 202)

    def _event_item(self, req: Request) -> Reply:
        rest = req.path[len(self.prefix) + len("/events/") :]
        if rest.endswith("/replay") and req.method == "POST":
            event_id = unquote(rest[: -len("/replay")])
            if not self._check(req):
                return Reply.json({"error": "invalid signature"}, 401)
            self.webhook_ids.append(req.headers.get("webhook-id", ""))
            if req.headers.get("webhook-id") and not req.headers["webhook-id"].startswith(f"replay:{event_id}:"):
                return Reply.json({"error": "signature is for another event"}, 401)
            if event_id not in self.events:
                return Reply.json({"error": "unknown event"}, 500)
            run_id = f"run-{len(self.runs) + 1}"
            self.runs[run_id] = {"id": run_id, "eventId": event_id, "status": "queued"}
            self.events[event_id]["runIds"].append(run_id)
            return Reply.json({"status": "accepted", "eventId": event_id, "runIds": [run_id], "matched": 1}, 202)
        event_id = unquote(rest)
        if event_id not in self.events:
            return Reply.json({"error": "not found"}, 404)
        return Reply.json({"event": self.events[event_id]})

    def _runs(self, req: Request) -> Reply:
        event_id = next(iter(req.query.get("eventId") or []), None)
        runs = [r for r in self.runs.values() if event_id is None or r["eventId"] == event_id]
        return Reply.json({"runs": runs})

    def _run_item(self, req: Request) -> Reply:
        run_id = unquote(req.path[len(self.prefix) + len("/runs/") :])
        if run_id not in self.runs:
            return Reply.json({"error": "Unknown run"}, 404)
        return Reply.json({"run": self.runs[run_id]})
