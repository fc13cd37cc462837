"""The right upstream releases, once: `versions` policies, npm done right, newness by identity (issue #12).

Every test polls a real HTTP server on 127.0.0.1 through the Service, as `patchmoi poll --once` does, and
reads what was recorded in DATA_DIR.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.config import Settings
from patchmoi.core.errors import ConfigError
from patchmoi.core.service import Service
from patchmoi.core.sources import parse_sources

from .feeds import source
from .loopback import FakeBackend, LoopbackServer, Reply


def settings_for(tmp_path: Path, sources: list[dict[str, Any]]) -> Settings:
    path = tmp_path / "feed-sources.json"
    path.write_text(json.dumps({"sources": sources}))
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(path)})


def jsonl(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / "data" / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def release(tag: str, updated: str, repo: str = "acme/widget") -> str:
    return (
        f"<entry><id>tag:github.com,2008:Repository/42/{tag}</id><updated>{updated}</updated>"
        f'<link rel="alternate" type="text/html" href="https://github.com/{repo}/releases/tag/{tag}"/>'
        f"<title>{tag}</title><author><name>bot</name></author></entry>"
    )


def feed(entries: list[str]) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>tag:github.com,2008:https://github.com/acme/widget/releases</id><title>Release notes</title>"
        f"<updated>2026-05-20T10:00:00Z</updated>{''.join(entries)}</feed>"
    ).encode()


def flow_target(backend: FakeBackend, event_type: str = "upstream.release") -> dict[str, Any]:
    return {"mode": "workspace_flow", "eventType": event_type, "workspaceUrl": backend.url}


async def poll(service: Service) -> Any:
    return (await service.poll_once())[0]


# -- several release lines --------------------------------------------------------------------------------
OLD = [
    release("v3.0.0", "2026-03-01T00:00:00Z"),
    release("v2.1.4", "2026-02-20T00:00:00Z"),
    release("v2.0.8", "2026-02-10T00:00:00Z"),
    release("v1.1.8", "2026-02-01T00:00:00Z"),
]
NEW = [
    release("v3.1.0", "2026-05-10T00:00:00Z"),
    release("v3.1.0-rc.1", "2026-05-05T00:00:00Z"),
    release("v2.1.5", "2026-05-04T00:00:00Z"),
    release("v2.0.9", "2026-05-03T00:00:00Z"),
    release("v1.1.9", "2026-05-02T00:00:00Z"),
    release("v3.0.1", "2026-05-01T00:00:00Z"),
]


async def test_three_release_lines_and_prereleases_only_3x_finals_are_rebuilt(
    tmp_path: Path, server: LoopbackServer
) -> None:
    body = {"doc": feed(OLD)}
    server.route("/releases.atom", lambda _r: Reply(body=body["doc"]))
    backend = FakeBackend(server)
    src = source("widget", f"{server.url}/releases.atom", repo="acme/widget", target=flow_target(backend))
    src["versions"] = {"range": ">=3,<4", "prereleases": False}
    service = Service(settings_for(tmp_path, [src]))
    try:
        assert (await poll(service)).status == "primed"
        body["doc"] = feed(NEW + OLD)
        report = await poll(service)
        again = await poll(service)
    finally:
        await service.stop()
    events = jsonl(tmp_path, "flow-events.jsonl")
    assert [e["payload"]["tag"] for e in events] == ["v3.0.1", "v3.1.0"]  # oldest first, by date
    assert sorted(backend.events) == sorted(e["id"] for e in events)
    assert report.emitted == 2 and again.emitted == 0
    reasons = {f["tag"]: f["reason"] for f in report.filtered}
    assert set(reasons) == {"v3.1.0-rc.1", "v2.1.5", "v2.0.9", "v1.1.9"}
    assert "pre-release" in reasons["v3.1.0-rc.1"] and "outside versions.range '>=3,<4'" in reasons["v2.1.5"]
    # every new entry is still a signal; the turned-down ones say why
    signals = {s["ref"]: s for s in jsonl(tmp_path, "feed-events.jsonl")}
    assert set(signals) == {"v3.1.0", "v3.1.0-rc.1", "v2.1.5", "v2.0.9", "v1.1.9", "v3.0.1"}
    assert "filtered" not in signals["v3.1.0"] and "pre-release" in signals["v3.1.0-rc.1"]["filtered"]
    # turned-down signals notify nobody and start no attempt
    assert len(jsonl(tmp_path, "maintenance-attempts.jsonl")) >= 2
    assert {a["eventId"] for a in jsonl(tmp_path, "maintenance-attempts.jsonl")} == {e["id"] for e in events}


async def test_include_exclude_and_newer_only_ignore_backports(tmp_path: Path, server: LoopbackServer) -> None:
    body = {"doc": feed(OLD)}
    server.route("/releases.atom", lambda _r: Reply(body=body["doc"]))
    backend = FakeBackend(server)
    src = source("widget", f"{server.url}/releases.atom", repo="acme/widget", target=flow_target(backend))
    src["versions"] = {"exclude": "-rc", "newerOnly": True}
    service = Service(settings_for(tmp_path, [src]))
    try:
        await poll(service)
        body["doc"] = feed(NEW + OLD)
        report = await poll(service)
    finally:
        await service.stop()
    # v3.0.1 and v3.1.0 are newer than v3.0.0 (the newest at priming); every backport is older than that
    assert [e["payload"]["tag"] for e in jsonl(tmp_path, "flow-events.jsonl")] == ["v3.0.1", "v3.1.0"]
    reasons = {f["tag"]: f["reason"] for f in report.filtered}
    assert "matches versions.exclude /-rc/" in reasons["v3.1.0-rc.1"]
    # v3.0.1 (dated first) was taken first: the backports that follow are older than it
    assert "not newer than 'v3.0.1', the newest version already seen (versions.newerOnly)" in reasons["v1.1.9"]
    assert set(reasons) == {"v3.1.0-rc.1", "v2.1.5", "v2.0.9", "v1.1.9"}
    state = json.loads((tmp_path / "data" / "feed-state.json").read_text())["widget"]
    assert state["newestVersion"] == "v3.1.0"


# -- newness by identity ----------------------------------------------------------------------------------
async def test_entries_appended_at_the_end_of_a_feed_are_emitted_once(tmp_path: Path, server: LoopbackServer) -> None:
    first = [release(f"v1.{i}.0", f"2026-04-{10 + i:02d}T00:00:00Z") for i in range(5, 0, -1)]
    appended = [release(f"v2.{i}.0", f"2026-05-{10 + i:02d}T00:00:00Z") for i in range(10)]
    body = {"doc": feed(first)}
    server.route("/releases.atom", lambda _r: Reply(body=body["doc"]))
    service = Service(settings_for(tmp_path, [source("widget", f"{server.url}/releases.atom", repo="acme/widget")]))
    try:
        await poll(service)
        body["doc"] = feed(first + appended)  # a feed that lists oldest... then appends the new ones
        report = await poll(service)
        again = await poll(service)
    finally:
        await service.stop()
    assert report.emitted == 10 and again.emitted == 0
    assert [s["ref"] for s in jsonl(tmp_path, "feed-events.jsonl")] == [f"v2.{i}.0" for i in range(10)]


async def test_a_long_document_never_re_emits_its_history(tmp_path: Path, server: LoopbackServer) -> None:
    """1,200 versions (more than the exact seen ids kept): the rest are known by digest, none comes back."""
    versions = {f"1.{i}.0": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z" for i in range(1200)}
    times = {"created": "2025-01-01T00:00:00.000Z", **versions}
    doc = {"name": "big", "time": times}
    body = {"doc": json.dumps(doc).encode()}
    server.route("/big", lambda _r: Reply(body=body["doc"]))
    src = source("big", f"{server.url}/big", provider="npm", repo="big", branch=None)
    service = Service(settings_for(tmp_path, [src]))
    try:
        await poll(service)
        times["2.0.0"] = "2026-05-01T00:00:00.000Z"
        times["0.0.1"] = "2024-01-01T00:00:00.000Z"  # a version published late with an old date
        body["doc"] = json.dumps(doc).encode()
        report = await poll(service)
        again = await poll(service)
    finally:
        await service.stop()
    assert report.emitted == 2 and again.emitted == 0
    state = json.loads((tmp_path / "data" / "feed-state.json").read_text())["big"]
    assert len(state["seen"]) == 500 and len(state["known"]) == 10 * (1202 - 500)


async def test_state_written_before_identity_newness_does_not_burst(tmp_path: Path, server: LoopbackServer) -> None:
    """A state from the position era (no `known`): history below the oldest seen entry stays history."""
    entries = [release(f"v1.{i}.0", f"2026-04-{10 + i:02d}T00:00:00Z") for i in range(9, -1, -1)]
    server.route("/releases.atom", Reply(body=feed(entries)))
    data = tmp_path / "data"
    data.mkdir()
    (data / "feed-state.json").write_text(
        json.dumps(
            {
                "widget": {
                    "lastSeenId": "tag:github.com,2008:Repository/42/v1.8.0",
                    "lastCheckedAt": "2026-05-01T00:00:00.000Z",
                }
            }
        )
    )
    service = Service(settings_for(tmp_path, [source("widget", f"{server.url}/releases.atom", repo="acme/widget")]))
    try:
        report = await poll(service)
        again = await poll(service)
    finally:
        await service.stop()
    assert report.emitted == 1 and [s["ref"] for s in jsonl(tmp_path, "feed-events.jsonl")] == ["v1.9.0"]
    assert again.emitted == 0


# -- npm done right ---------------------------------------------------------------------------------------
PLATFORMS = ["linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64", "win32-x64", "win32-arm64"]


def packument(releases: dict[str, str], dist_tags: dict[str, str], *, modified: str) -> bytes:
    times: dict[str, Any] = {"created": "2025-01-01T00:00:00.000Z", "modified": modified}
    versions: dict[str, Any] = {}
    for version, when in releases.items():
        for name in [version, *(f"{version}-{p}" for p in PLATFORMS)]:
            times[name] = when
            versions[name] = {"name": "@openai/codex", "version": name}
    return json.dumps({"name": "@openai/codex", "dist-tags": dist_tags, "time": times, "versions": versions}).encode()


async def test_codex_style_packument_one_event_per_release_with_the_git_tag(
    tmp_path: Path, server: LoopbackServer
) -> None:
    body = {
        "doc": packument(
            {"0.169.0": "2026-05-01T00:00:00.000Z"}, {"latest": "0.169.0"}, modified="2026-05-01T00:00:00.000Z"
        )
    }
    server.route("/codex", lambda _r: Reply(body=body["doc"]))
    backend = FakeBackend(server)
    src = source(
        "codex", f"{server.url}/codex", provider="npm", repo="@openai/codex", branch=None, target=flow_target(backend)
    )
    src["repo"] = {
        "owner": "openai",
        "name": "codex",
        "fullName": "@openai/codex",
        "webUrl": "https://github.com/openai/codex",
    }
    src["versions"] = {"tagTemplate": "rust-v{version}", "prereleases": False}
    service = Service(settings_for(tmp_path, [src]))
    try:
        await poll(service)
        body["doc"] = packument(
            {
                "0.169.0": "2026-05-01T00:00:00.000Z",
                "0.170.0": "2026-05-10T00:00:00.500Z",
                "0.171.0-alpha.1": "2026-05-11T00:00:00.000Z",
            },
            {"latest": "0.170.0", "next": "0.171.0-alpha.1"},
            modified="2026-05-11T00:00:00.000Z",
        )
        release_poll = await poll(service)
        # latest rolled back to 0.169.0 (a bad release): a signal, not a release
        body["doc"] = packument(
            {
                "0.169.0": "2026-05-01T00:00:00.000Z",
                "0.170.0": "2026-05-10T00:00:00.500Z",
                "0.171.0-alpha.1": "2026-05-11T00:00:00.000Z",
            },
            {"latest": "0.169.0", "next": "0.171.0-alpha.1"},
            modified="2026-05-12T00:00:00.000Z",
        )
        rollback_poll = await poll(service)
        quiet = await poll(service)
    finally:
        await service.stop()
    events = jsonl(tmp_path, "flow-events.jsonl")
    assert len(events) == 1 and release_poll.emitted == 1
    payload = events[0]["payload"]
    assert payload["tag"] == "rust-v0.170.0" and payload["version"] == "0.170.0"
    assert payload["packageName"] == "@openai/codex"
    assert events[0]["occurredAt"] == "2026-05-10T00:00:00.500Z"
    assert sorted(payload["raw"]["platformBuilds"]) == sorted(PLATFORMS)
    assert [f["version"] for f in release_poll.filtered] == ["0.171.0-alpha.1"]
    assert rollback_poll.emitted == 0 and quiet.signals == []
    assert rollback_poll.signals == ["dist-tag latest -> 0.169.0 (was 0.170.0, a rollback)"]
    moves = [s for s in jsonl(tmp_path, "feed-events.jsonl") if s["raw"].get("signal") == "dist-tag"]
    titles = [m["title"] for m in moves]
    assert titles == [
        "dist-tag latest -> 0.170.0 (was 0.169.0)",
        "dist-tag next -> 0.171.0-alpha.1 (new tag)",
        "dist-tag latest -> 0.169.0 (was 0.170.0, a rollback)",
    ]
    assert moves[-1]["raw"]["rollback"] is True and moves[-1]["ref"] == "rust-v0.169.0"


async def test_unpublished_package_emits_nothing_but_a_warning(tmp_path: Path, server: LoopbackServer) -> None:
    body = {
        "doc": packument(
            {"1.0.0": "2026-05-01T00:00:00.000Z"}, {"latest": "1.0.0"}, modified="2026-05-01T00:00:00.000Z"
        )
    }
    server.route("/gone", lambda _r: Reply(body=body["doc"]))
    src = source("gone", f"{server.url}/gone", provider="npm", repo="gone", branch=None, prime_only=False)
    service = Service(settings_for(tmp_path, [src]))
    try:
        await poll(service)
        body["doc"] = json.dumps(
            {
                "_id": "gone",
                "name": "gone",
                "time": {
                    "created": "2025-01-01T00:00:00.000Z",
                    "modified": "2026-05-02T00:00:00.000Z",
                    "1.0.0": "2026-05-01T00:00:00.000Z",
                    "unpublished": {"time": "2026-05-02T00:00:00.000Z", "versions": ["1.0.0"]},
                },
            }
        ).encode()
        report = await poll(service)
    finally:
        await service.stop()
    assert report.emitted == 0 and report.status == "ok"
    assert any("was unpublished at 2026-05-02T00:00:00.000Z" in w for w in report.warnings)
    assert [s["title"] for s in jsonl(tmp_path, "feed-events.jsonl") if s["raw"].get("signal") != "dist-tag"] == [
        "1.0.0"
    ]
    assert all(s["title"] != "unpublished" for s in jsonl(tmp_path, "feed-events.jsonl"))


# -- validation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"versions": {"range": ">=banana"}}, "field 'versions.range' has 'banana', which is not a version"),
        ({"versions": {"include": "("}}, "field 'versions.include' is not a valid regular expression"),
        ({"versions": {"prereleases": "no"}}, "field 'versions.prereleases' must be true or false"),
        ({"versions": {"tagTemplate": "rust-v"}}, "field 'versions.tagTemplate' must contain {version} once"),
        ({"versions": {"scheme": "calver"}}, "field 'versions.scheme' must be one of pep440, semver, loose"),
        (
            {"versions": {"rnage": ">=3"}},
            "field 'versions.rnage' is not a known field (did you mean 'versions.range'?)",
        ),
        ({"versions": {"range": ">=3,<4"}, "event": "push"}, "field 'versions' applies to release sources"),
        ({"kind": "svn"}, "field 'kind' must be one of feed, npm, pypi, git"),
        ({"kind": "git", "url": "ext::sh -c touch% /tmp/x"}, "field 'url' must be a git remote"),
        ({"branches": ["main"]}, "field 'branches' applies to git push sources"),
        ({"kind": "pypi", "event": "push"}, "field 'event' must be 'release' for a pypi source"),
    ],
)
def test_versions_and_kinds_are_validated_with_the_field_named(extra: dict[str, Any], message: str) -> None:
    src = {**source("s", "https://example.invalid/f"), **extra}
    with pytest.raises(ConfigError) as info:
        parse_sources({"sources": [src]}, "feed-sources.json")
    assert message in str(info.value)
    assert str(info.value).startswith("feed-sources.json: source 's': ")


def test_pep440_range_for_pypi_and_semver_ranges_for_npm() -> None:
    pypi = parse_sources(
        {"sources": [{**source("p", "https://pypi.org/pypi/x/json", provider="pypi"), "versions": {"range": "~=3.1"}}]}
    )[0]
    assert pypi.kind == "pypi" and pypi.versions.scheme == "pep440"
    npm = parse_sources(
        {
            "sources": [
                {
                    **source("n", "https://registry.npmjs.org/x", provider="npm"),
                    "versions": {"range": "^0.170 || >=1.2 <2"},
                }
            ]
        }
    )[0]
    assert npm.kind == "npm" and npm.versions.scheme == "semver"
    from patchmoi.core.feeds.selection import decide

    assert decide(pypi.versions, tag=None, version="3.4.0").selected
    assert not decide(pypi.versions, tag=None, version="4.0").selected
    assert [decide(npm.versions, tag=None, version=v).selected for v in ("0.170.5", "0.171.0", "1.9.0", "2.0.0")] == [
        True,
        False,
        True,
        False,
    ]


# -- more kinds of source ---------------------------------------------------------------------------------
def _bare_upstream(root: Path) -> tuple[Path, Path]:
    from .gitfixture import commit_files, git

    bare, work = root / "upstream.git", root / "upstream"
    bare.mkdir()
    git(bare, "init", "-q", "--bare", "-b", "main")
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", str(bare))
    commit_files(work, {"a.txt": "1\n"}, "one")
    git(work, "tag", "-a", "-m", "v1.0.0", "v1.0.0")
    git(work, "tag", "v2.0.0-rc.1")
    git(work, "push", "-q", "origin", "main", "--tags")
    return bare, work


async def test_git_source_emits_new_tags_and_branch_moves(tmp_path: Path) -> None:
    from .gitfixture import commit_files, git

    bare, work = _bare_upstream(tmp_path)
    backend_server = LoopbackServer().start()
    try:
        backend = FakeBackend(backend_server)
        tags = {
            **source("tags", str(bare), repo="acme/widget", target=flow_target(backend)),
            "kind": "git",
            "versions": {"prereleases": False},
        }
        heads = {
            **source(
                "heads",
                f"file://{bare}",
                event="push",
                repo="acme/widget",
                target=flow_target(backend, "upstream.branch_update"),
            ),
            "kind": "git",
            "branches": ["main", "release/*"],
        }
        service = Service(settings_for(tmp_path, [tags, heads]))
        try:
            primed = await service.poll_once()
            unchanged = await service.poll_once()
            sha = commit_files(work, {"a.txt": "2\n"}, "two")
            git(work, "tag", "-a", "-m", "v1.1.0", "v1.1.0")
            git(work, "tag", "v2.0.0-rc.2")
            git(work, "branch", "release/1.x")
            git(work, "push", "-q", "origin", "main", "release/1.x", "--tags")
            moved = await service.poll_once()
        finally:
            await service.stop()
    finally:
        backend_server.stop()
    assert [r.status for r in primed] == ["primed", "primed"]
    assert [r.status for r in unchanged] == ["not_modified", "not_modified"]  # same refs: nothing parsed
    by_id = {r.source_id: r for r in moved}
    assert by_id["tags"].emitted == 1 and [f["tag"] for f in by_id["tags"].filtered] == ["v2.0.0-rc.2"]
    assert by_id["heads"].emitted == 2
    events = {e["id"]: e for e in jsonl(tmp_path, "flow-events.jsonl")}
    release = events["patch:tags:refs/tags/v1.1.0:upstream.release"]
    assert release["payload"]["tag"] == "v1.1.0" and release["payload"]["sha"] == sha  # the peeled commit
    pushes = sorted(e["payload"]["ref"] for e in events.values() if e["type"] == "upstream.branch_update")
    assert pushes == ["refs/heads/main", "refs/heads/release/1.x"]
    assert all(e["payload"]["sha"] == sha for e in events.values() if e["type"] == "upstream.branch_update")


def pypi_doc(releases: dict[str, list[tuple[str, bool]]]) -> bytes:
    return json.dumps(
        {
            "info": {
                "name": "Widget_Lib",
                "version": max(releases),
                "package_url": "https://pypi.org/project/widget-lib/",
            },
            "releases": {
                v: [
                    {"filename": f"widget_lib-{v}-{i}.whl", "upload_time_iso_8601": when, "yanked": yanked}
                    for i, (when, yanked) in enumerate(files)
                ]
                for v, files in releases.items()
            },
        }
    ).encode()


async def test_pypi_source_selects_by_pep440(tmp_path: Path, server: LoopbackServer) -> None:
    releases: dict[str, list[tuple[str, bool]]] = {
        "2.9.0": [("2026-01-01T00:00:00.000000Z", False)],
        "3.0.0": [("2026-02-01T00:00:00.000000Z", False)],
    }
    body = {"doc": pypi_doc(releases)}
    server.route("/pypi/widget-lib/json", lambda _r: Reply(body=body["doc"], headers={"etag": f'"{len(releases)}"'}))
    backend = FakeBackend(server)
    src = {
        **source(
            "widget-lib",
            f"{server.url}/pypi/widget-lib/json",
            provider="pypi",
            repo="widget-lib",
            branch=None,
            target=flow_target(backend),
        ),
        "versions": {"range": ">=3,<4", "prereleases": False},
    }
    service = Service(settings_for(tmp_path, [src]))
    try:
        await poll(service)
        releases.update(
            {
                "3.1.0rc1": [("2026-05-01T00:00:00.000000Z", False)],
                "3.1.0": [("2026-05-02T10:00:00.250123Z", False), ("2026-05-02T09:00:00.125000Z", False)],
                "2.9.1": [("2026-05-03T00:00:00.000000Z", False)],
                "3.0.1": [("2026-05-04T00:00:00.000000Z", True)],
            }
        )
        body["doc"] = pypi_doc(releases)
        report = await poll(service)
    finally:
        await service.stop()
    events = jsonl(tmp_path, "flow-events.jsonl")
    assert [e["payload"]["version"] for e in events] == ["3.1.0"] and report.emitted == 1
    assert events[0]["occurredAt"] == "2026-05-02T09:00:00.125Z"  # the first upload, milliseconds kept
    reasons = {f["version"]: f["reason"] for f in report.filtered}
    assert set(reasons) == {"3.1.0rc1", "2.9.1", "3.0.1"} and reasons["3.0.1"].startswith("yanked")


# -- patchmoi sources -------------------------------------------------------------------------------------
def run_cli(tmp_path: Path, *args: str) -> Any:
    import subprocess

    from .conftest import PYTHON, ROOT

    return subprocess.run(
        [
            PYTHON,
            "-m",
            "patchmoi",
            *args,
            "--sources",
            str(tmp_path / "feed-sources.json"),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_sources_test_shows_what_the_next_poll_would_emit_and_writes_nothing(
    tmp_path: Path, server: LoopbackServer
) -> None:
    import asyncio

    body = {"doc": feed(OLD)}
    server.route("/releases.atom", lambda _r: Reply(body=body["doc"]))
    src = {
        **source("widget", f"{server.url}/releases.atom", repo="acme/widget"),
        "versions": {"range": ">=3,<4", "prereleases": False},
    }
    service = Service(settings_for(tmp_path, [src]))
    try:
        await poll(service)
    finally:
        await service.stop()
    body["doc"] = feed(NEW + OLD)
    state_before = (tmp_path / "data" / "feed-state.json").read_bytes()
    out = await asyncio.to_thread(run_cli, tmp_path, "sources", "test", "widget", "--json")
    assert out.returncode == 0, out.stderr
    preview = json.loads(out.stdout)
    outcomes = {e["tag"]: (e["outcome"], e.get("reason", "")) for e in preview["entries"]}
    assert outcomes["v3.1.0"] == ("emit", "") and outcomes["v3.0.1"] == ("emit", "")
    assert outcomes["v3.1.0-rc.1"][0] == "filtered" and "pre-release" in outcomes["v3.1.0-rc.1"][1]
    assert outcomes["v2.1.5"][0] == "filtered" and outcomes["v3.0.0"] == ("seen", "")
    assert outcomes["v2.1.4"][0] == "seen" and "outside versions.range" in outcomes["v2.1.4"][1]
    assert preview["wouldEmit"] == 2 and preview["wouldFilter"] == 4
    text = await asyncio.to_thread(run_cli, tmp_path, "sources", "test", "widget")
    assert "next poll: 2 emitted, 4 filtered" in text.stdout
    assert (tmp_path / "data" / "feed-state.json").read_bytes() == state_before  # nothing written
    assert not (tmp_path / "data" / "flow-events.jsonl").exists()
    import subprocess

    from .conftest import PYTHON, ROOT

    group = await asyncio.to_thread(  # the group's options before the action work too
        subprocess.run,
        [
            PYTHON,
            "-m",
            "patchmoi",
            "sources",
            "--json",
            "--sources",
            str(tmp_path / "feed-sources.json"),
            "--data-dir",
            str(tmp_path / "data"),
            "test",
            "widget",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(group.stdout)["wouldEmit"] == 2
    listing = await asyncio.to_thread(run_cli, tmp_path, "sources", "list")
    assert "range=>=3,<4, no pre-releases" in listing.stdout
    missing = await asyncio.to_thread(run_cli, tmp_path, "sources", "test", "widgt")
    assert missing.returncode == 1 and "did you mean 'widget'?" in missing.stderr
    server.route("/releases.atom", Reply(status=500))
    down = await asyncio.to_thread(run_cli, tmp_path, "sources", "test", "widget")
    assert down.returncode == 1 and "error: Feed widget returned 500" in down.stderr


def test_dashboard_upstream_tab_marks_filtered_signals_and_dist_tag_moves() -> None:
    from patchmoi.tui.rows import _signal_cells

    base = {"event": "release", "repo": {"fullName": "acme/widget"}, "sourceId": "widget"}
    filtered = _signal_cells(
        {**base, "title": "v2.1.5", "ref": "v2.1.5", "filtered": "'v2.1.5' is outside versions.range '>=3,<4'"}, None
    )
    assert str(filtered["EVENT"]) == "· filtered" and filtered["TITLE"].startswith("v2.1.5 ('v2.1.5' is outside")
    move = _signal_cells({**base, "title": "dist-tag latest -> 0.169.0", "raw": {"signal": "dist-tag"}}, None)
    assert str(move["EVENT"]) == "⇄ dist-tag"
    assert str(_signal_cells({**base, "title": "v3.1.0", "ref": "v3.1.0"}, None)["EVENT"]) == "◆ release"


# -- crash safety of the per-entry saves -----------------------------------------------------------------
CRASH_ON_SECOND_SIGNAL = """
import asyncio, os, sys
import patchmoi.core.feeds.poller as poller
from patchmoi.core.config import Settings
from patchmoi.core.service import Service

real, calls = poller.build_signal, []
def build_signal(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os._exit(137)  # killed: nothing after the first entry's save runs
    return real(*args, **kwargs)
poller.build_signal = build_signal
settings = Settings.from_env({"DATA_DIR": sys.argv[1], "FEED_SOURCES_PATH": sys.argv[2]})
asyncio.run(Service(settings).poll_once())
"""


async def test_a_kill_mid_poll_neither_re_emits_history_nor_holds_back_the_rest(
    tmp_path: Path, server: LoopbackServer
) -> None:
    """600 versions (beyond the 500 exact ids), three new ones, the poller is killed after the first is taken:
    the next poll reads the document again (the new ETag was not saved, so no 304 hides it) and takes the
    other two, and nothing of the history."""
    import asyncio
    import subprocess

    from .conftest import PYTHON, ROOT

    versions = {f"1.0.{i}": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z" for i in range(600)}
    doc: dict[str, Any] = {"name": "x", "time": {"created": "2025-01-01T00:00:00.000Z", **versions}}

    def reply(req: Any) -> Reply:
        etag = f'"{len(doc["time"])}"'
        if req.headers.get("if-none-match") == etag:
            return Reply(status=304, headers={"etag": etag})
        return Reply(body=json.dumps(doc).encode(), headers={"etag": etag})

    server.route("/x", reply)
    settings = settings_for(tmp_path, [source("x", f"{server.url}/x", provider="npm", repo="x", branch=None)])
    service = Service(settings)
    try:
        await poll(service)
    finally:
        await service.stop()
    for i, when in enumerate(("2026-05-01", "2026-05-02", "2026-05-03")):
        doc["time"][f"2.{i}.0"] = f"{when}T00:00:00.000Z"
    killed = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-c", CRASH_ON_SECOND_SIGNAL, str(tmp_path / "data"), str(tmp_path / "feed-sources.json")],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == 137
    service = Service(settings)
    try:
        recovered = await poll(service)
        quiet = await poll(service)
    finally:
        await service.stop()
    assert recovered.status == "ok" and recovered.emitted == 2 and quiet.status == "not_modified"
    assert [s["title"] for s in jsonl(tmp_path, "feed-events.jsonl")] == ["2.0.0", "2.1.0", "2.2.0"]


async def test_newer_only_with_prime_only_false_and_added_to_a_polled_source(
    tmp_path: Path, server: LoopbackServer
) -> None:
    body = {"doc": feed(OLD)}
    server.route("/releases.atom", lambda _r: Reply(body=body["doc"]))
    fresh = {
        **source("fresh", f"{server.url}/releases.atom", repo="acme/widget", prime_only=False),
        "versions": {"newerOnly": True},
    }
    service = Service(settings_for(tmp_path, [fresh]))
    try:
        first = await poll(service)
    finally:
        await service.stop()
    # emitted oldest first, each newer than the last taken
    assert first.emitted == 4 and first.filtered == []
    plain = source("later", f"{server.url}/releases.atom", repo="acme/widget")
    service = Service(settings_for(tmp_path, [plain]))
    try:
        await poll(service)  # primed without newerOnly
    finally:
        await service.stop()
    body["doc"] = feed([release("v2.1.5", "2026-05-04T00:00:00Z"), *OLD])  # a backport arrives...
    service = Service(settings_for(tmp_path, [{**plain, "versions": {"newerOnly": True}}]))  # ...after this edit
    try:
        report = await poll(service)
    finally:
        await service.stop()
    assert report.emitted == 0 and "not newer than 'v3.0.0'" in report.filtered[0]["reason"]


async def test_dist_tag_moves_are_recorded_but_only_rollbacks_are_notified(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.route("/discord", Reply(status=204))
    body = {
        "doc": packument(
            {"1.0.0": "2026-05-01T00:00:00.000Z"}, {"latest": "1.0.0"}, modified="2026-05-01T00:00:00.000Z"
        )
    }
    server.route("/pkg", lambda _r: Reply(body=body["doc"]))
    path = tmp_path / "feed-sources.json"
    path.write_text(
        json.dumps(
            {
                "sources": [
                    {
                        **source("pkg", f"{server.url}/pkg", provider="npm", repo="pkg", branch=None),
                        "versions": {"prereleases": False},
                    }
                ]
            }
        )
    )
    settings = Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "FEED_SOURCES_PATH": str(path),
            "DISCORD_OUTPUT_ENABLED": "true",
            "DISCORD_WEBHOOK_URL": f"{server.url}/discord",
        }
    )
    service = Service(settings)
    try:
        await poll(service)
        body["doc"] = packument(
            {
                "1.0.0": "2026-05-01T00:00:00.000Z",
                "1.1.0": "2026-05-02T00:00:00.000Z",
                "1.2.0-beta.1": "2026-05-02T00:00:00.000Z",
            },
            {"latest": "1.1.0", "beta": "1.2.0-beta.1"},
            modified="2026-05-02T00:00:00.000Z",
        )
        await poll(service)
        body["doc"] = packument(
            {
                "1.0.0": "2026-05-01T00:00:00.000Z",
                "1.1.0": "2026-05-02T00:00:00.000Z",
                "1.2.0-beta.1": "2026-05-02T00:00:00.000Z",
            },
            {"latest": "1.0.0", "beta": "1.2.0-beta.1"},
            modified="2026-05-03T00:00:00.000Z",
        )
        await poll(service)
    finally:
        await service.stop()
    notes = list(dict.fromkeys(n["id"] for n in jsonl(tmp_path, "notifications.jsonl")))
    assert "signal:pkg:npm:@openai/codex:1.1.0" in notes  # the release
    moves = [n for n in notes if ":dist-tag:" in n]
    assert moves == ["signal:pkg:npm:@openai/codex:dist-tag:latest:1.1.0->1.0.0:2026-05-03T00:00:00.000Z"]
    beta = next(s for s in jsonl(tmp_path, "feed-events.jsonl") if ":dist-tag:beta:" in s["entryId"])
    assert "pre-release" in beta["filtered"]
