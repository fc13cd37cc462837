"""Spec §10 items 32-39, plus the outbox: 429 retry_after, back-off, no double post after a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from patchmoi.core.config import Settings
from patchmoi.core.notify.discord import DiscordSender, Outbox, signal_embed
from patchmoi.core.store import Kind, Store

from .loopback import LoopbackServer, Reply

SIGNAL = {
    "sourceId": "github-openai-codex-main",
    "provider": "github",
    "event": "push",
    "entryId": "e1",
    "title": "commit abc",
    "url": "https://github.com/openai/codex/commit/abc",
    "author": "dev",
    "publishedAt": "2026-05-13T00:00:00.000Z",
    "ref": "refs/heads/main",
    "sha": "0123456789abcdef0123",
    "repo": {"fullName": "openai/codex"},
}


def settings(url: str | None, enabled: str = "true", events: str | None = None) -> Settings:
    env = {"DISCORD_OUTPUT_ENABLED": enabled}
    if url:
        env["DISCORD_WEBHOOK_URL"] = url
    if events is not None:
        env["DISCORD_NOTIFY_EVENTS"] = events
    return Settings.from_env(env)


def test_defaults_and_enable_words() -> None:
    s = Settings.from_env({})
    assert (s.discord_enabled, s.discord_notify_events) == (False, ("push", "release"))
    for word, expected in (("true", True), ("1", True), ("yes", True), ("ON", True), ("false", False), ("", False)):
        assert Settings.from_env({"DISCORD_OUTPUT_ENABLED": word}).discord_enabled is expected


def test_embed_shape() -> None:
    embed = signal_embed(SIGNAL)
    assert embed["title"] == "[github] openai/codex upstream update on main"
    assert embed["description"] == "commit abc" and embed["url"] == SIGNAL["url"]
    assert embed["footer"] == {"text": "feed watcher"} and embed["color"] == 0x24292F
    fields = {f["name"]: f for f in embed["fields"]}
    assert fields["Branch"]["value"] == "main" and fields["SHA"]["value"] == "0123456789ab"
    assert fields["Source"]["inline"] is False
    release = signal_embed({**SIGNAL, "event": "release", "title": "v1.2.3", "ref": "v1.2.3"})
    assert release["title"] == "[github] openai/codex release v1.2.3"
    assert "Branch" not in {f["name"] for f in release["fields"]}  # a tag is shown as Tag (spec §11.11)


def test_no_enqueue_without_url_disabled_or_off_list(data_dir: Path) -> None:
    store = Store(data_dir)
    assert not Outbox(store, settings(None)).enqueue_signal(SIGNAL)
    assert not Outbox(store, settings("http://x", enabled="false")).enqueue_signal(SIGNAL)
    assert not Outbox(store, settings("http://x", events="release")).enqueue_signal(SIGNAL)
    outbox = Outbox(store, settings("http://x", events="push"))
    assert outbox.enqueue_signal(SIGNAL) and not outbox.enqueue_signal(SIGNAL)  # once per signal


async def test_posts_pending_and_never_twice_after_restart(data_dir: Path, server: LoopbackServer) -> None:
    server.route("/hook", Reply(204))
    s = settings(f"{server.url}/hook")
    outbox = Outbox(Store(data_dir), s)
    outbox.enqueue_signal(SIGNAL)
    async with httpx.AsyncClient() as client:
        assert await DiscordSender(outbox, client).deliver_pending() == 1
        body = server.hits("/hook")[0].json()
        assert body["username"] == "patch" and body["embeds"][0]["title"].startswith("[github] openai/codex")
        # "restart": a new store, outbox and sender over the same files
        outbox2 = Outbox(Store(data_dir), s)
        assert not outbox2.enqueue_signal(SIGNAL)
        assert await DiscordSender(outbox2, client).deliver_pending() == 0
    assert len(server.hits("/hook")) == 1


async def test_429_retry_after_is_honoured(data_dir: Path, server: LoopbackServer) -> None:
    replies = [Reply.json({"message": "slow down", "retry_after": 0.4, "global": False}, 429), Reply(204)]
    server.route("/hook", lambda _r: replies.pop(0))
    outbox = Outbox(Store(data_dir), settings(f"{server.url}/hook"))
    outbox.enqueue_signal(SIGNAL)
    async with httpx.AsyncClient() as client:
        sender = DiscordSender(outbox, client)
        t0 = time.monotonic()
        assert await sender.deliver_pending() == 0
        assert await sender.deliver_pending() == 1
        assert time.monotonic() - t0 >= 0.35
    hits = server.hits("/hook")
    assert len(hits) == 2
    final = Store(data_dir).select(Kind.NOTIFICATIONS)[0]
    assert final["status"] == "sent"


async def test_5xx_backs_off_and_404_gives_up(data_dir: Path, server: LoopbackServer) -> None:
    server.route("/hook", Reply(500, b"down"))
    outbox = Outbox(Store(data_dir), settings(f"{server.url}/hook"))
    outbox.enqueue_signal(SIGNAL)
    async with httpx.AsyncClient() as client:
        sender = DiscordSender(outbox, client, base_backoff=0.05)
        await sender.deliver_pending()
        assert sender.last_error == "Discord webhook returned 500"
        note = Store(data_dir).select(Kind.NOTIFICATIONS)[0]
        assert note["status"] == "pending" and note["tries"] == 1 and note["nextAttemptAt"] > time.time() - 1
        server.route("/hook", Reply(404, b"Unknown Webhook"))
        await sender.deliver_pending()
    note = Store(data_dir).select(Kind.NOTIFICATIONS)[0]
    assert note["status"] == "failed" and "404" in note["error"]
    assert f"{server.url}/hook" not in json.dumps(note)  # the webhook URL (a secret) is never recorded


async def test_attempt_outcomes_can_be_notified(data_dir: Path) -> None:
    outbox = Outbox(Store(data_dir), settings("http://x", events="attempt.needs_intervention"))
    assert outbox.enqueue_attempt(
        {
            "id": "a1",
            "status": "needs_intervention",
            "upstreamRepo": "o/r",
            "upstreamTag": "v2",
            "error": "conflict in patch/010",
        }
    )
    assert not outbox.enqueue_attempt({"id": "a2", "status": "changed"})
    note = outbox.pending()[0]
    assert note["body"]["embeds"][0]["title"] == "[patchmoi] o/r v2: needs_intervention"
