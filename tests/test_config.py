from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchmoi.core.config import Settings, redact_url
from patchmoi.core.errors import ConfigError
from patchmoi.core.sources import load_sources

from .conftest import ROOT

REPO = {"owner": "o", "name": "r", "fullName": "o/r", "webUrl": "https://github.com/o/r"}


def write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "feed-sources.json"
    p.write_text(json.dumps(doc, indent=2) if not isinstance(doc, str) else doc)
    return p


def source(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "s1",
        "provider": "github",
        "url": "https://github.com/o/r/releases.atom",
        "event": "release",
        "repo": dict(REPO),
    }
    base.update(over)
    return base


def test_defaults_follow_spec_but_bind_loopback() -> None:
    s = Settings.from_env({})
    assert (s.port, s.data_dir, s.feed_sources_path, s.admin_token) == (3000, Path("data").absolute(), None, None)
    assert s.host == "127.0.0.1"
    assert s.discord_notify_events == ("push", "release") and s.discord_enabled is False


def test_env_chain_and_flags() -> None:
    s = Settings.from_env(
        {
            "PATCH_FLOW_DISPATCH_URL": "http://b/events",
            "PATCH_FLOW_DISPATCH_SECRET": "x",
            "DISCORD_OUTPUT_ENABLED": " Yes ",
            "DISCORD_NOTIFY_EVENTS": " push, ,attempt.failed",
            "DATA_DIR": "/srv/d",
        }
    )
    assert s.backend_url == "http://b/events" and s.backend_secret == "x"
    assert s.discord_enabled and s.discord_notify_events == ("push", "attempt.failed")
    both = {"PATCH_WORKSPACE_BACKEND_URL": "http://a", "PATCH_FLOW_BACKEND_URL": "http://b"}
    assert Settings.from_env(both).backend_url == "http://a"
    assert s.with_overrides(data_dir="/other", port=None).data_dir == Path("/other")
    assert "x" not in json.dumps(s.describe())
    with pytest.raises(ConfigError, match="PORT"):
        Settings.from_env({"PORT": "http"})


def test_redact_url_hides_credentials() -> None:
    assert redact_url("https://user:pw@h.example:8443/p?token=abc") == "https://h.example:8443/p?<redacted>"


def test_bundled_feed_sources_is_valid_and_documented() -> None:
    sources = load_sources(ROOT / "feed-sources.json")
    assert len(sources) >= 2
    assert any(s.target and s.target.is_workflow for s in sources)
    assert "_comment" in json.loads((ROOT / "feed-sources.json").read_text())


def test_both_target_shapes_alias_and_options(tmp_path: Path) -> None:
    doc = {
        "sources": [
            source(id="a", target={"mode": "fork_sync", "provider": "jojo", "repoFullName": "me/r", "branch": "main"}),
            source(
                id="b",
                target={
                    "mode": "flow_dispatch",
                    "eventType": "upstream.release",
                    "dispatchUrl": "http://x/events",
                    "dispatchSecretEnv": "SEC",
                    "payload": {"repo": "o/r"},
                },
            ),
            source(
                id="c",
                primeOnly=False,
                pollIntervalSeconds=5,
                event="push",
                target={"mode": "workspace_flow", "eventType": "upstream.branch_update", "workspace": "/w"},
            ),
        ]
    }
    a, b, c = load_sources(write(tmp_path, doc))
    assert a.target and a.target.mode == "fork_sync" and not a.target.is_workflow
    assert b.target and b.target.is_workflow and b.target.dispatch_url == "http://x/events"
    assert c.prime_only is False and c.poll_interval_seconds == 5.0  # the poller clamps to its minimum
    assert c.target and c.target.workspace == "/w"
    assert load_sources(write(tmp_path, {})) == []


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ('{"sources": [\n  {"id": "x",}\n]}', "feed-sources.json:2:"),
        ({"sources": {}}, "field 'sources' must be an array"),
        ({"sources": [source(provider="gitlub")]}, "source 's1': field 'provider' must be one of"),
        ({"sources": [source(url="file:///etc/passwd")]}, "source 's1': field 'url' must be an http(s) URL"),
        ({"sources": [source(event="tag")]}, "field 'event'"),
        ({"sources": [source(repo={"owner": "o"})]}, "field 'repo.name' is required"),
        ({"sources": [source(pollIntervalSeconds="5m")]}, "field 'pollIntervalSeconds'"),
        ({"sources": [source(primeOnly="no")]}, "field 'primeOnly' must be true or false"),
        ({"sources": [source(pollIntervalSecond=30)]}, "did you mean 'pollIntervalSeconds'"),
        ({"sources": [source(target={"mode": "workspace_flow"})]}, "field 'target.eventType' is required"),
        ({"sources": [source(target={"mode": "rebase"})]}, "field 'target.mode' must be one of"),
        ({"sources": [source(target={"mode": "workspace_flow", "eventType": "e", "secret": "s"})]}, "target.secret"),
        ({"sources": [source(target={"mode": "workspace_flow", "eventType": "e", "payload": []})]}, "target.payload"),
        ({"sources": [source(), source()]}, "duplicates an earlier source"),
        ({"sources": [{"provider": "github"}]}, "sources[0]: field 'id' is required"),
    ],
)
def test_bad_files_name_file_source_and_field(tmp_path: Path, doc: object, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_sources(write(tmp_path, doc))
    assert needle in str(info.value)
    assert str(tmp_path / "feed-sources.json") in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_sources(tmp_path / "nope.json")
