"""Spec §10 feed items (1-20) against real loopback servers, plus the fixes of §11."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.config import Settings
from patchmoi.core.events import downstream_release_event, upstream_branch_event, upstream_release_event
from patchmoi.core.feeds.fetch import FetchLimits
from patchmoi.core.feeds.parse import FeedParseError, parse_feed
from patchmoi.core.service import Service
from patchmoi.core.store import Store

from .feeds import SHA1, SHA2, atom_commits, atom_releases, npm_packument, rss_items, source
from .loopback import FakeBackend, LoopbackServer, Reply

RELEASE_ID = "tag:github.com,2008:Repository/965415649/rust-v0.131.0"


def settings_for(tmp_path: Path, sources: list[dict[str, Any]], **env: str) -> Settings:
    path = tmp_path / "feed-sources.json"
    path.write_text(json.dumps({"sources": sources}))
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(path), **env})


async def poll(settings: Settings, limits: FetchLimits | None = None) -> list[dict[str, Any]]:
    service = Service(settings, fetch_limits=limits)
    try:
        return [r.to_dict() for r in await service.poll_once()]
    finally:
        await service.stop()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# -- parsing (spec tests 1-4) ------------------------------------------------------------------------------
def test_parses_atom_and_rss_entries() -> None:
    atom = parse_feed(atom_commits([SHA1]), provider="github")
    e = atom.entries[0]
    assert e.title == "commit 0123456" and e.author == "dev" and e.url and SHA1 in e.url
    rss = parse_feed(rss_items([("release-123", "v1.2.3")]), provider="codeberg")
    assert (rss.entries[0].id, rss.entries[0].title, rss.entries[0].author) == ("release-123", "v1.2.3", "alice")
    assert rss.entries[0].published_at == "2026-05-13T10:00:00.000Z"


def test_parses_npm_newest_first_with_dist_tags() -> None:
    feed = parse_feed(
        npm_packument(
            "@peezy.tech/codex-flows",
            {"0.3.6": "2026-05-01T00:00:00.000Z", "0.4.0": "2026-05-10T00:00:00.000Z"},
            latest="0.4.0",
        ),
        provider="npm",
    )
    assert [e.title for e in feed.entries] == ["0.4.0", "0.3.6"]
    first = feed.entries[0]
    assert first.id == "npm:@peezy.tech/codex-flows:0.4.0" and first.author == "npm"
    assert first.published_at == "2026-05-10T00:00:00.000Z"
    assert first.url == "https://www.npmjs.com/package/%40peezy.tech%2Fcodex-flows/v/0.4.0"
    assert first.extra == {"distTags": ["latest"]}


@pytest.mark.parametrize(
    ("body", "provider", "needle"),
    [
        (b"", "github", "empty response body"),
        (b"<!DOCTYPE html><html><body>login</body></html>", "github", "HTML page"),
        (b'{"a": 1}', "github", "got JSON"),
        (b"not json", "npm", "not valid JSON"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "github", "not an Atom or RSS document"),
    ],
)
def test_non_feeds_are_errors_not_empty_feeds(body: bytes, provider: str, needle: str) -> None:
    with pytest.raises(FeedParseError, match=needle):
        parse_feed(body, provider=provider)


def test_unparsable_date_is_an_entry_warning_not_a_crash() -> None:
    body = atom_releases(["v1"]).replace(b"2026-05-20T10:00:00Z</updated>\n    <link", b"soon</updated>\n    <link")
    feed = parse_feed(body, provider="github")
    assert feed.entries[0].error and "unparsable date" in feed.entries[0].error


# -- polling (spec tests 6-11) -----------------------------------------------------------------------------
async def test_first_poll_primes_without_emitting(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/releases.atom", Reply(body=atom_releases(["rust-v0.131.0", "rust-v0.130.0"])))
    s = settings_for(
        tmp_path,
        [source("rel", f"{server.url}/releases.atom")],
        DISCORD_OUTPUT_ENABLED="true",
        DISCORD_WEBHOOK_URL=f"{server.url}/discord",
    )
    reports = await poll(s)
    assert reports[0]["status"] == "primed" and reports[0]["emitted"] == 0
    state = json.loads((tmp_path / "data" / "feed-state.json").read_text())
    assert state["rel"]["lastSeenId"] == RELEASE_ID
    assert not (tmp_path / "data" / "feed-events.jsonl").exists()
    assert server.hits("/discord") == []


async def test_empty_first_poll_still_primes(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases([])}
    server.route("/r.atom", lambda _req: Reply(body=feed["body"]))
    s = settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")])
    assert (await poll(s))[0]["status"] == "primed"
    feed["body"] = atom_releases(["v1.0.0"])
    report = (await poll(s))[0]
    assert report["emitted"] == 1  # the first real release is not swallowed (spec §11.2)


async def test_later_polls_emit_new_entries_and_fork_sync_jobs(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases(["v1.0.0"])}
    server.route("/r.atom", lambda _req: Reply(body=feed["body"]))
    target = {"provider": "jojo", "repoFullName": "peezy-tech/jojo", "branch": "forgejo", "mode": "fork_sync"}
    s = settings_for(tmp_path, [source("rel", f"{server.url}/r.atom", target=target)])
    await poll(s)
    feed["body"] = atom_releases(["v1.1.0", "v1.0.0"])
    before = len(server.hits("/r.atom"))
    await poll(s)
    assert len(server.hits("/r.atom")) == before + 1
    signals = lines(tmp_path / "data" / "feed-events.jsonl")
    jobs = lines(tmp_path / "data" / "feed-jobs.jsonl")
    assert [x["event"] for x in signals] == ["release"] and signals[0]["ref"] == "v1.1.0"
    assert jobs[0]["kind"] == "fork_sync" and jobs[0]["upstreamRef"] == "v1.1.0"
    assert jobs[0]["id"] == "github:rel:tag:github.com,2008:Repository/965415649/v1.1.0:fork_sync"


async def test_prime_only_false_emits_existing_releases(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/r.atom", Reply(body=atom_releases(["rust-v0.131.0"], titles={"rust-v0.131.0": "0.131.0"})))
    backend = FakeBackend(server)
    target = {
        "mode": "workspace_flow",
        "eventType": "upstream.release",
        "workspaceUrl": backend.url,
        "payload": {"provider": "github", "repo": "openai/codex"},
    }
    s = settings_for(
        tmp_path, [source("github-openai-codex-releases", f"{server.url}/r.atom", target=target, prime_only=False)]
    )
    await poll(s)
    store = Store(tmp_path / "data")
    event = store.get_event(f"patch:github-openai-codex-releases:{RELEASE_ID}:upstream.release")
    assert event is not None
    assert event["payload"]["tag"] == "rust-v0.131.0" and event["payload"]["title"] == "0.131.0"
    assert json.loads((tmp_path / "data" / "feed-state.json").read_text())["github-openai-codex-releases"]["primed"]


async def test_dispatches_flow_events_through_the_backend_signed(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases(["v1.2.2"])}
    server.route("/r.atom", lambda _req: Reply(body=feed["body"]))
    backend = FakeBackend(server, secret="s3cret")
    target = {
        "mode": "workspace_flow",
        "eventType": "upstream.release",
        "workspaceUrl": f"{backend.url}/events",
        "workspaceSecretEnv": "MY_SECRET",
        "payload": {"provider": "github", "repo": "openai/codex"},
    }
    s = settings_for(tmp_path, [source("rel", f"{server.url}/r.atom", target=target)], MY_SECRET="s3cret")
    await poll(s)
    feed["body"] = atom_releases(["v1.2.3", "v1.2.2"])
    await poll(s)
    posts = [r for r in server.hits("/events") if r.method == "POST"]
    assert len(posts) == 1 and backend.bad_signatures == 0
    body = posts[0].json()
    assert body["type"] == "upstream.release" and body["source"] == "patch" and body["payload"]["tag"] == "v1.2.3"
    assert body["payload"]["repo"] == "openai/codex"
    assert posts[0].headers["x-flow-signature-256"].startswith("sha256=")
    assert posts[0].headers["webhook-id"] == body["id"]
    store = Store(tmp_path / "data")
    record = store.list_dispatches()[0]
    assert record["transport"] == "workspace-http" and record["status"] == "dispatched"
    assert record["url"] == f"{backend.url}/events" and record["runIds"] == ["run-1"]
    attempt = store.list_attempts()[0]
    assert {
        k: attempt[k]
        for k in (
            "operation",
            "status",
            "upstreamRepo",
            "upstreamTag",
            "workspaceBackendUrl",
            "workspaceRunIds",
            "candidateRefs",
        )
    } == {
        "operation": "dispatch",
        "status": "started",
        "upstreamRepo": "openai/codex",
        "upstreamTag": "v1.2.3",
        "workspaceBackendUrl": backend.url,
        "workspaceRunIds": ["run-1"],
        "candidateRefs": [],
    }


async def test_branch_update_and_npm_downstream(tmp_path: Path, server: LoopbackServer) -> None:
    commits = {"body": atom_commits([SHA1])}
    npm = {"body": npm_packument("@peezy.tech/codex", {"0.3.6": "2026-05-01T00:00:00.000Z"})}
    server.route("/commits.atom", lambda _r: Reply(body=commits["body"]))
    server.route("/npm", lambda _r: Reply(body=npm["body"], headers={"content-type": "application/json"}))
    backend = FakeBackend(server)
    s = settings_for(
        tmp_path,
        [
            source(
                "main",
                f"{server.url}/commits.atom",
                event="push",
                target={
                    "mode": "workspace_flow",
                    "eventType": "upstream.branch_update",
                    "payload": {"repo": "openai/codex", "ref": "refs/heads/main"},
                },
            ),
            source(
                "npm",
                f"{server.url}/npm",
                provider="npm",
                repo="@peezy.tech/codex",
                branch=None,
                target={
                    "mode": "workspace_flow",
                    "eventType": "downstream.release",
                    "payload": {"provider": "npm", "packageName": "@peezy.tech/codex", "repo": "peezy-tech/codex"},
                },
            ),
        ],
        PATCH_WORKSPACE_BACKEND_URL=backend.url,
    )
    await poll(s)
    commits["body"] = atom_commits([SHA2, SHA1])
    npm["body"] = npm_packument(
        "@peezy.tech/codex", {"0.3.6": "2026-05-01T00:00:00.000Z", "0.4.0": "2026-05-10T00:00:00.000Z"}
    )
    await poll(s)
    store = Store(tmp_path / "data")
    branch = store.list_events(type="upstream.branch_update")[0]
    assert (branch["payload"]["repo"], branch["payload"]["ref"], branch["payload"]["sha"]) == (
        "openai/codex",
        "refs/heads/main",
        SHA2,
    )
    down = store.list_events(type="downstream.release")[0]
    assert down["payload"]["packageName"] == "@peezy.tech/codex" and down["payload"]["version"] == "0.4.0"
    assert down["payload"]["tag"] == "0.4.0" and down["payload"]["repo"] == "peezy-tech/codex"
    attempt = store.list_attempts(event_id=branch["id"])[0]
    assert attempt["upstreamRef"] == "refs/heads/main" and attempt["upstreamSha"] == SHA2


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"PATCH_WORKSPACE_BACKEND_URL": "{url}"}, "/events"),
        ({"PATCH_FLOW_DISPATCH_URL": "{url}/events"}, "/events"),
        ({"PATCH_FLOW_BACKEND_URL": "{url}/"}, "/events"),
    ],
)
async def test_backend_env_names(tmp_path: Path, server: LoopbackServer, env: dict[str, str], path: str) -> None:
    feed = {"body": atom_releases(["v1"])}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    FakeBackend(server)
    s = settings_for(
        tmp_path,
        [source("rel", f"{server.url}/r.atom", target={"mode": "workspace_flow", "eventType": "upstream.release"})],
        **{k: v.format(url=server.url) for k, v in env.items()},
    )
    await poll(s)
    feed["body"] = atom_releases(["v2", "v1"])
    await poll(s)
    assert len([r for r in server.hits(path) if r.method == "POST"]) == 1
    record = Store(tmp_path / "data").list_dispatches()[0]
    assert (record["target"], record["transport"]) == ("workspace-backend", "workspace-http")


async def test_backend_http_failure_is_recorded(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases(["v1"])}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    backend = FakeBackend(server)
    backend.fail_next = [500]
    s = settings_for(
        tmp_path,
        [
            source(
                "rel",
                f"{server.url}/r.atom",
                target={"mode": "workspace_flow", "eventType": "upstream.release", "workspaceUrl": backend.url},
            )
        ],
    )
    await poll(s)
    feed["body"] = atom_releases(["v2", "v1"])
    await poll(s)
    record = Store(tmp_path / "data").list_dispatches()[0]
    assert record["status"] == "failed" and record["httpStatus"] == 500
    assert Store(tmp_path / "data").list_attempts()[0]["status"] == "failed"


def test_helper_events_are_deterministic() -> None:
    assert (
        upstream_release_event("peezy-tech/patch-moi-harness", "v0.1.3").to_dict()["id"]
        == "patch:upstream.release:peezy-tech/patch-moi-harness:v0.1.3"
    )
    ev = upstream_branch_event("o/r", "refs/heads/main", "abc1234").to_dict()
    assert ev["id"] == "patch:upstream.branch_update:o/r:refs/heads/main:abc1234"
    assert ev["payload"] == {"repo": "o/r", "ref": "refs/heads/main", "sha": "abc1234"}
    down = downstream_release_event("@p/x", "1.0.0", "p/x").to_dict()
    assert down["id"] == "patch:downstream.release:@p/x:1.0.0"
    assert down["payload"] == {"packageName": "@p/x", "version": "1.0.0", "tag": "1.0.0", "repo": "p/x"}
    assert "occurredAt" not in down


async def test_conditional_get_and_connection_reuse(tmp_path: Path, server: LoopbackServer) -> None:
    body = atom_releases(["v1"])

    def handler(req: Any) -> Reply:
        if req.headers.get("if-none-match") == '"v1"':
            return Reply(304, headers={"etag": '"v1"'})
        return Reply(body=body, headers={"etag": '"v1"'})

    server.route("/r.atom", handler)
    s = settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")])
    service = Service(s)
    try:
        await service.poll_once()
        reports = await service.poll_once()
        assert reports[0].status == "not_modified"
        assert server.connections == 1  # both polls on one kept-alive connection
    finally:
        await service.stop()
    assert server.requests[-1].headers["user-agent"].startswith("patchmoi/")


async def test_cursor_scrolled_out_does_not_reemit_whole_feed(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_releases([f"v{i}" for i in range(20, 0, -1)])}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    s = settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")])
    await poll(s)
    # 5 new releases arrive; the window still holds 20 entries, 15 of them seen
    feed["body"] = atom_releases([f"v{i}" for i in range(25, 5, -1)])
    report = (await poll(s))[0]
    assert report["emitted"] == 5
    signals = lines(tmp_path / "data" / "feed-events.jsonl")
    assert [x["ref"] for x in signals] == ["v21", "v22", "v23", "v24", "v25"]  # oldest first


async def test_other_sources_keep_polling_when_one_fails(tmp_path: Path, server: LoopbackServer) -> None:
    server.route("/ok.atom", Reply(body=atom_releases(["v1"])))
    server.route("/bad.atom", Reply(500, b"oops"))
    s = settings_for(tmp_path, [source("bad", f"{server.url}/bad.atom"), source("ok", f"{server.url}/ok.atom")])
    reports = {r["sourceId"]: r for r in await poll(s)}
    assert reports["bad"]["status"] == "error" and "returned 500" in reports["bad"]["error"]
    assert reports["ok"]["status"] == "primed"
    state = json.loads((tmp_path / "data" / "feed-state.json").read_text())
    assert "returned 500" in state["bad"]["lastError"]
