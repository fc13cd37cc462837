"""The dashboard's remote mode against a server from before the chain endpoints (an answer to every route but
`/…/chain`, which it does not know): the detail view is built from the older requests, not left empty."""

from __future__ import annotations

from urllib.parse import quote

from patchmoi.tui.client import RemoteClient

from .loopback import LoopbackServer, Reply, Request

EID = "patch:src:tag:v1:upstream.release"
AID = f"{EID}:dispatch:2026-11-21T10:01:01.000Z"


def old_server() -> LoopbackServer:
    server = LoopbackServer().start()
    event = {"id": EID, "type": "upstream.release", "payload": {"repo": "acme/widget", "tag": "v1"}}
    attempt = {"id": AID, "eventId": EID, "status": "needs_intervention"}

    def flow_event(req: Request) -> Reply:
        if req.path.endswith("/chain"):
            return Reply.json({"error": "not_found"}, 404)  # the generic 404 of an unknown route
        if req.path == f"/flow-events/{quote(EID, safe='')}":
            return Reply.json({"event": event, "dispatches": [{"eventId": EID, "status": "dispatched"}]})
        return Reply.json({"error": "flow_event_not_found"}, 404)

    def attempt_item(req: Request) -> Reply:
        return Reply.json({"error": "not_found"}, 404)  # /maintenance-attempts/{id}/chain is unknown there

    def attempts(req: Request) -> Reply:
        state = next(iter(req.query.get("state") or []), None)
        event_id = next(iter(req.query.get("eventId") or []), None)
        found = [attempt] if state in (None, "open") and event_id in (None, EID) else []
        return Reply.json({"attempts": [{**a, "state": state} if state else a for a in found]})

    server.route_prefix("/flow-events/", flow_event)
    server.route_prefix("/maintenance-attempts/", attempt_item)
    server.route("/maintenance-attempts", attempts)
    server.route("/workspace-runs", Reply.json({"runs": [{"id": "run-a", "eventId": EID}]}))
    return server


async def test_a_detail_view_from_a_server_without_chain_endpoints() -> None:
    server = old_server()
    client = RemoteClient(server.url, "token")
    try:
        chain = await client.describe("attempts", {"id": AID, "eventId": EID})
        assert chain["kind"] == "attempt" and chain["event"]["id"] == EID
        assert [a["id"] for a in chain["attempts"]] == [AID] and chain["attempts"][0]["state"] == "open"
        assert [r["id"] for r in chain["runs"]] == ["run-a"] and len(chain["dispatches"]) == 1
        gone = await client.describe("events", {"id": "patch:other"})  # an event the old server does not have
        assert gone["event"] is None and gone["attempts"] == []
    finally:
        await client.close()
        server.stop()
