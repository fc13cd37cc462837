"""The OpenAPI 3.1 document for every route (served at GET /openapi.json)."""

from __future__ import annotations

from typing import Any

from patchmoi.core import __version__
from patchmoi.core.attempt_states import STATES
from patchmoi.core.history import BUDGET, KINDS
from patchmoi.core.records import ATTEMPT_STATUSES, DISPATCH_STATUSES


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ok(description: str, key: str | None = None, status: str = "200") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if key:
        schema = {"type": "object", "required": [key], "properties": {key: {}}}
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "1..500, default 50",
    "schema": {"type": "string"},
}
COMMON_ERRORS = {
    "401": _error("missing or wrong admin token"),
    "400": _error("invalid query parameter"),
    "405": _error("method not allowed (the `Allow` header lists the allowed ones)"),
}


POLL_SUMMARY = {
    "type": "object",
    "required": ["sourceId", "status", "newEntries", "events", "error", "polledAt"],
    "properties": {
        "sourceId": {"type": "string"},
        "status": {"enum": ["ok", "not_modified", "primed", "error"]},
        "newEntries": {"type": "integer", "description": "entries recorded as feed signals"},
        "filtered": {"type": "integer", "description": "of them, turned down by the source's `versions` policy"},
        "events": {"type": "array", "items": {"type": "string"}, "description": "flow events started"},
        "error": {"type": ["string", "null"]},
        "polledAt": {"type": "string"},
        "nextDueAt": {"type": ["string", "null"], "description": "the next scheduled poll (null: none)"},
        "durationMs": {"type": "number"},
    },
}


def _id(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": "percent-encode ':' and '/'",
        "schema": {"type": "string", "minLength": 1},
    }


def _q(name: str, enum: tuple[str, ...] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = list(enum)
    return {"name": name, "in": "query", "required": False, "schema": schema}


def openapi_document() -> dict[str, Any]:
    reason_body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 500}}}
            }
        },
    }
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "liveness (no auth)",
                "security": [],
                "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            },
            "head": {
                "summary": "liveness, no body (no auth)",
                "security": [],
                "responses": {"200": {"description": "ok"}},
            },
        },
        "/readyz": {
            "get": {
                "summary": "poller state per source, queue depth, store health",
                "responses": {
                    **_ok("health"),
                    "503": {"description": "indexing: the store's indexes are being built; the body says how far"},
                    **COMMON_ERRORS,
                },
            }
        },
        "/openapi.json": {"get": {"summary": "this document", "responses": {**_ok("OpenAPI"), **COMMON_ERRORS}}},
        "/feed-signals": {
            "get": {
                "summary": "feed signals (every new upstream entry), newest first",
                "parameters": [_q("sourceId"), LIMIT],
                "responses": {**_ok("signals", "signals"), **COMMON_ERRORS},
            }
        },
        "/flow-events": {
            "get": {
                "summary": "flow events, newest first",
                "parameters": [_q("type"), LIMIT],
                "responses": {**_ok("events", "events"), **COMMON_ERRORS},
            }
        },
        "/flow-events/{id}": {
            "get": {
                "summary": "one flow event and its dispatches",
                "parameters": [_id("id"), LIMIT],
                "responses": {**_ok("event", "event"), "404": _error("unknown id"), **COMMON_ERRORS},
            }
        },
        "/workspace-dispatches": {
            "get": {
                "summary": "dispatch records (legacy file first)",
                "parameters": [_q("eventId"), _q("status", DISPATCH_STATUSES), LIMIT],
                "responses": {**_ok("dispatches", "dispatches"), **COMMON_ERRORS},
            }
        },
        "/flow-dispatches": {
            "get": {
                "summary": "alias of /workspace-dispatches",
                "parameters": [_q("eventId"), _q("status", DISPATCH_STATUSES), LIMIT],
                "responses": {**_ok("dispatches", "dispatches"), **COMMON_ERRORS},
            }
        },
        "/maintenance-attempts": {
            "get": {
                "summary": "latest state of each attempt; with `state`, only attempts in "
                "that derived state (open = the operator queue), each with its `state`",
                "parameters": [_q("eventId"), _q("status", ATTEMPT_STATUSES), _q("state", STATES), LIMIT],
                "responses": {**_ok("attempts", "attempts"), **COMMON_ERRORS},
            }
        },
        "/maintenance-attempts/{id}": {
            "get": {
                "summary": "one attempt, with its derived `state`",
                "parameters": [_id("id")],
                "responses": {**_ok("attempt", "attempt"), "404": _error("unknown id"), **COMMON_ERRORS},
            }
        },
        "/workspace-runs": {
            "get": {
                "summary": "runs (local runner, or proxied backend)",
                "parameters": [_q("eventId"), _q("status"), LIMIT],
                "responses": {**_ok("runs", "runs"), "502": _error("backend"), **COMMON_ERRORS},
            }
        },
        "/workspace-runs/{id}": {
            "get": {
                "summary": "one run",
                "parameters": [_id("id")],
                "responses": {
                    **_ok("run", "run"),
                    "404": _error("unknown run"),
                    "502": _error("backend"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/workspace-events": {
            "get": {
                "summary": "events as the workspace sees them",
                "parameters": [_q("type"), LIMIT],
                "responses": {**_ok("events", "events"), "502": _error("backend"), **COMMON_ERRORS},
            }
        },
        "/workspace-events/{id}": {
            "get": {
                "summary": "one workspace event",
                "parameters": [_id("id")],
                "responses": {
                    **_ok("event", "event"),
                    "404": _error("unknown event"),
                    "502": _error("backend"),
                    **COMMON_ERRORS,
                },
            }
        },
    }
    for op in ("retry", "replay"):
        paths[f"/flow-events/{{id}}/{op}"] = {
            "post": {
                "summary": f"{op} a stored flow event (same backend as its source)",
                "parameters": [_id("id")],
                "requestBody": reason_body,
                "responses": {
                    **_ok("dispatched", "record", "202"),
                    "502": _error("dispatch failed"),
                    "404": _error("unknown id"),
                    "413": _error("body too large"),
                    **COMMON_ERRORS,
                },
            }
        }
    paths["/maintenance-attempts/{id}/sync"] = {
        "post": {
            "summary": "refresh an attempt from its runs",
            "parameters": [_id("id")],
            "responses": {
                **_ok("synced", "attempt", "202"),
                "404": _error("unknown id"),
                "502": _error("backend"),
                "413": _error("body too large"),
                **COMMON_ERRORS,
            },
        }
    }
    chain_schema = {
        "type": "object",
        "required": ["kind", "id", "event", "dispatches", "attempts", "runs"],
        "properties": {
            "kind": {"enum": ["event", "attempt", "run", "signal"]},
            "id": {"type": "string"},
            "event": {"type": ["object", "null"]},
            "dispatches": {"type": "array"},
            "attempts": {"type": "array", "description": "each with its derived `state`"},
            "runs": {"type": "array"},
        },
    }
    for path, what in (
        ("/flow-events/{id}/chain", "flow event"),
        ("/maintenance-attempts/{id}/chain", "attempt"),
        ("/feed-signals/{id}/chain", "feed signal (`sourceId:entryId`)"),
    ):
        paths[path] = {
            "get": {
                "summary": f"the {what} with its chain: flow event, dispatches, attempts (with `state`) and runs "
                "(an attempt's own runs for an attempt), the record asked for under its kind",
                "parameters": [_id("id")],
                "responses": {
                    "200": {"description": "chain", "content": {"application/json": {"schema": chain_schema}}},
                    "404": _error("unknown id"),
                    **COMMON_ERRORS,
                },
            }
        }
    adopt_body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "by": {"type": "string", "maxLength": 200},
                        "reason": {"type": "string", "maxLength": 500},
                        "reviewed": {"type": "boolean"},
                    },
                }
            }
        },
    }
    paths["/maintenance-attempts/{id}/adopt"] = {
        "post": {
            "summary": "adopt the attempt's candidate: move the target branch and the patch branches to the rebuild "
            "(`reviewed: true` is needed when the rebuild flags it for review)",
            "parameters": [_id("id")],
            "requestBody": adopt_body,
            "responses": {
                **_ok("adopted", "attempt"),
                "404": _error("unknown id"),
                "409": _error("refused: a branch moved, local changes, needs review, already adopted"),
                "413": _error("body too large"),
                **COMMON_ERRORS,
            },
        }
    }
    paths["/feed-sources/{id}/poll"] = {
        "post": {
            "summary": "poll one configured source now, through the poller's own intake (exactly once), and move "
            "its next scheduled poll as a poll would; done by the poll worker when the server has one. Answers "
            "when the poll is done: `status` is the poll's (`ok`, `not_modified`, `primed`, `error`), so a feed "
            "that failed is a 200 with `status: error` and its `error`",
            "parameters": [_id("id")],
            "responses": {
                "200": {
                    "description": "the poll's summary",
                    "content": {"application/json": {"schema": POLL_SUMMARY}},
                },
                "404": _error("no configured source has this id"),
                "409": _error("poller_busy: another process polls this DATA_DIR"),
                "413": _error("body too large"),
                "503": _error("poller_unavailable: the poll worker is restarting or did not answer"),
                **COMMON_ERRORS,
            },
        }
    }
    paths["/stream"] = {
        "get": {
            "summary": "server-sent events (a patchmoi extension, not in the Bun service): `event: hello` with "
            '`data: {"position": ...}` at once, then `event: change` with `data: {"kinds": [...]}` (tab names: '
            "signals, events, attempts, dispatches, runs) whenever records are appended by any process, a burst "
            "as one message; a `: keepalive` comment every 15 s; `retry: 2000`. Kind names only, never records",
            "parameters": [
                {
                    "name": "kinds",
                    "in": "query",
                    "required": False,
                    "description": "comma-separated tab names to be told about (default: all)",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {"description": "the stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                "503": _error("too_many_streams (64 open), or stopping"),
                **COMMON_ERRORS,
            },
        }
    }
    history_item = {
        "type": "object",
        "required": ["cursor", "record"],
        "properties": {
            "cursor": {"type": "string", "description": "opaque: `before` for the matches older than this one"},
            "record": {"type": "object", "description": "as stored (an attempt's latest record, with its `state`)"},
        },
    }
    paths["/history/{kind}"] = {
        "get": {
            "summary": "search the whole history of a collection, newest first (a patchmoi extension, not in the Bun "
            f"service, which answers 404 `not_found`): one step reads at most {BUDGET:,} records and returns up to "
            "`limit` matches, with `next` to go on from (null: the history is exhausted) and how many records it "
            "read (`scanned`). Query terms, all of which must match: `repo:` `source:` `status:` `state:` "
            "(attempts) `type:` `since:` `until:` (15m, 2h, 3d, 1w ago, or an ISO date) and free words",
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": list(KINDS)},
                },
                {
                    "name": "q",
                    "in": "query",
                    "required": False,
                    "description": "the query text (default: every record)",
                    "schema": {"type": "string"},
                },
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "description": "an item's `cursor` or an answer's `next`: search the records older than it",
                    "schema": {"type": "string"},
                },
                {**LIMIT, "description": "matches per answer, 1..500, default 200"},
            ],
            "responses": {
                "200": {
                    "description": "one step of the search",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["items", "next", "scanned", "size"],
                                "properties": {
                                    "items": {"type": "array", "items": history_item},
                                    "next": {"type": ["string", "null"]},
                                    "scanned": {"type": "integer", "description": "records read by this step"},
                                    "size": {"type": "integer", "description": "records in the collection"},
                                },
                            }
                        }
                    },
                },
                "400": _error("invalid_request: an unknown kind, a bad query term (`since:`), or a bad `before`"),
                **{k: v for k, v in COMMON_ERRORS.items() if k != "400"},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "patchmoi",
            "version": __version__,
            "description": "Upstream intake, dispatch and maintenance attempts. Errors are JSON "
            '`{"error": code, "message"?: text}`. HEAD is answered wherever GET is (no '
            "body); OPTIONS is 204 with `Allow` (token needed, as for every route but /healthz); "
            "every 405 carries `Allow`.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "header": {"type": "apiKey", "in": "header", "name": "X-Patch-Admin-Token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "security": [{"bearer": []}, {"header": []}],
        "paths": paths,
    }
