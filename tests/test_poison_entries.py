"""Issue 11: one odd entry must not disable a source, UTF-16 feeds parse, a 304 nobody asked for is an error.

A poison entry (a year-0 date, a lone surrogate, a link that is not a URL, a 5,000-digit number in an npm
document) costs that entry only: the good entries are emitted, the cursor moves, and the bad one is reported
with its source, id and reason where an operator looks (poll report, /readyz health, feed-state.json).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patchmoi.core.events as events_module
import patchmoi.core.feeds.npm as npm_module
import patchmoi.core.feeds.parse as parse_module
import patchmoi.core.feeds.poller as poller_module
from patchmoi.core.config import Settings
from patchmoi.core.events import build_signal
from patchmoi.core.feeds.parse import FeedParseError, parse_feed
from patchmoi.core.service import Service
from patchmoi.core.sources import FeedSource, load_sources, parse_sources

from .conftest import PYTHON, ROOT
from .feeds import atom_entry, atom_feed, npm_raw, source
from .loopback import LoopbackServer, Reply

BIG = "9" * 5000  # more digits than Python converts by default (sys.get_int_max_str_digits() == 4300)


def settings_for(tmp_path: Path, sources: list[dict[str, Any]]) -> Settings:
    path = tmp_path / "feed-sources.json"
    path.write_text(json.dumps({"sources": sources}))
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(path)})


def signals(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "data" / "feed-events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def feed_source(provider: str = "github") -> FeedSource:
    return parse_sources({"sources": [source("s", "https://example.invalid/f", provider=provider)]})[0]


def feed_state(tmp_path: Path, sid: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((tmp_path / "data" / "feed-state.json").read_text())[sid]
    return state


# -- a poison entry among good ones, through the poller -----------------------------------------------------
async def test_poison_atom_entries_are_skipped_and_reported_the_rest_goes_on(
    tmp_path: Path, server: LoopbackServer
) -> None:
    feed = {"body": atom_feed([atom_entry("v1")]).encode()}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    service = Service(settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")]))
    try:
        assert (await service.poll_once())[0].status == "primed"
        feed["body"] = atom_feed(
            [
                atom_entry("v5"),
                atom_entry("bad-title", "v4-rc&#xD800;"),  # a lone surrogate in the title
                atom_entry("v4", updated="0000-01-01T00:00:00Z"),  # year 0: kept, dated when seen
                atom_entry("bad-link", link="http://[::1/releases/tag/x"),  # not a URL (urlsplit raises)
                atom_entry("v3"),
                atom_entry("v1"),
            ]
        ).encode()
        report = (await service.poll_once())[0]
        health = {h["sourceId"]: h for h in service.health()["sources"]}["rel"]
    finally:
        await service.stop()
    assert report.status == "ok" and report.error is None
    assert report.emitted == 3
    # good entries, oldest first; v4's date could not be read, so it is dated when seen: the newest
    assert [s["ref"] for s in signals(tmp_path)] == ["v3", "v5", "v4"]
    year0 = next(s for s in signals(tmp_path) if s["ref"] == "v4")
    assert year0["warning"].startswith("date '0000-01-01T00:00:00Z' is out of range")
    skipped = {s["entryId"]: s for s in report.skipped}
    assert set(skipped) == {"bad-title", "bad-link"}
    assert all(s["sourceId"] == "rel" and s["retry"] for s in skipped.values())
    assert "title contains a reference to a character XML does not allow" in skipped["bad-title"]["reason"]
    assert "link is not a usable URL" in skipped["bad-link"]["reason"]
    text = " ".join(report.warnings)
    assert "skipped entry 'bad-title'" in text and "skipped entry 'bad-link'" in text
    assert "entry 'v4': date '0000-01-01T00:00:00Z' is out of range" in text
    assert report.to_dict()["skipped"] == report.skipped
    # /readyz shows them per source; feed-state.json keeps them; the cursor moved past them
    assert [s["entryId"] for s in health["skippedEntries"]] == ["bad-title", "bad-link"]
    state = feed_state(tmp_path, "rel")
    assert state["lastSeenId"] == "v5" and state["lastError"] is None
    assert "bad-title" not in state["seen"] and "bad-link" not in state["seen"]
    assert [s["entryId"] for s in state["skipped"]] == ["bad-title", "bad-link"]


async def test_fixed_version_of_a_skipped_entry_is_emitted_later(tmp_path: Path, server: LoopbackServer) -> None:
    feed = {"body": atom_feed([atom_entry("v1")]).encode()}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    service = Service(settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")]))
    try:
        await service.poll_once()
        feed["body"] = atom_feed([atom_entry("v3"), atom_entry("v2", "v2&#0;"), atom_entry("v1")]).encode()
        second = (await service.poll_once())[0]
        # newer entries arrive and push v1 (the only entry seen before v2 was skipped) out of the window
        feed["body"] = atom_feed([atom_entry("v5"), atom_entry("v4"), atom_entry("v3"), atom_entry("v2")]).encode()
        third = (await service.poll_once())[0]
        fourth = (await service.poll_once())[0]
        health = service.health()["sources"][0]
    finally:
        await service.stop()
    assert second.emitted == 1 and [s["entryId"] for s in second.skipped] == ["v2"]
    # v2 now stands below every seen entry, but it was skipped, not seen: its fixed version comes through
    assert third.emitted == 3 and third.skipped == []
    assert [s["ref"] for s in signals(tmp_path)] == ["v3", "v2", "v4", "v5"]
    assert fourth.emitted == 0  # and only once
    assert "skippedEntries" not in health and "skipped" not in feed_state(tmp_path, "rel")


async def test_skipped_history_is_marked_seen(tmp_path: Path, server: LoopbackServer) -> None:
    """Where a readable entry would not have been emitted (priming a primeOnly source), a skipped one is
    history too: marked seen, so its fixed version is not emitted. One that was never seen is new wherever
    it stands (newness is by id), so it is kept for retry and its fixed version is emitted."""
    feed = {"body": atom_feed([atom_entry("old", "old&#xFFFE;")]).encode()}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    service = Service(settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")]))
    try:
        first = (await service.poll_once())[0]
        feed["body"] = atom_feed([atom_entry("v2"), atom_entry("old")]).encode()
        second = (await service.poll_once())[0]
        feed["body"] = atom_feed([atom_entry("v3"), atom_entry("v2"), atom_entry("older", "&#1;")]).encode()
        third = (await service.poll_once())[0]
        feed["body"] = atom_feed([atom_entry("v4"), atom_entry("older")]).encode()  # v3 and v2 scrolled out
        fourth = (await service.poll_once())[0]
    finally:
        await service.stop()
    assert first.status == "primed" and [(s["entryId"], s["retry"]) for s in first.skipped] == [("old", False)]
    assert second.emitted == 1
    assert third.emitted == 1 and [(s["entryId"], s["retry"]) for s in third.skipped] == [("older", True)]
    assert fourth.emitted == 2 and fourth.skipped == []
    assert [s["ref"] for s in signals(tmp_path)] == ["v2", "v3", "older", "v4"]


def test_any_other_failure_of_one_entry_costs_that_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser's last net: whatever else goes wrong while reading one entry skips it, with the reason."""
    real_xml, real_npm = parse_module._xml_entry, npm_module._npm_entry

    def xml_entry(item: Any, atom: bool) -> Any:
        if item.get("id") == "v2":
            raise RuntimeError("something new")
        return real_xml(item, atom)

    def npm_entry(name: str, version: str, *args: Any) -> Any:
        if version == "1.1.0":
            raise RuntimeError("something new")
        return real_npm(name, version, *args)

    monkeypatch.setattr(parse_module, "_xml_entry", xml_entry)
    monkeypatch.setattr(npm_module, "_npm_entry", npm_entry)
    atom = parse_feed(atom_feed([atom_entry("v3"), atom_entry("v2"), atom_entry("v1")]).encode(), provider="github")
    assert [e.id for e in atom.entries] == ["v3", "v1"]
    assert [(x.id, x.reason, x.position) for x in atom.skipped] == [
        ("v2", "could not be read (RuntimeError: something new)", 1)
    ]
    npm = parse_feed(
        npm_raw("p", ['"1.0.0": "2026-05-01T00:00:00Z"', '"1.1.0": "2026-05-02T00:00:00Z"']), provider="npm"
    )
    assert [e.title for e in npm.entries] == ["1.0.0"]
    assert [(x.id, x.reason) for x in npm.skipped] == [
        ("npm:p:1.1.0", "could not be read (RuntimeError: something new)")
    ]


async def test_entry_that_cannot_be_recorded_is_skipped_and_retried(
    tmp_path: Path, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller's own net: an entry the parser let through but recording trips on costs that entry only."""
    real = events_module.build_signal  # the function the poller imported
    broken = {"v2"}

    def build_signal(src: FeedSource, entry: Any, *args: Any, **kwargs: Any) -> Any:
        if entry.id in broken:
            raise UnicodeEncodeError("utf-8", entry.id, 0, 1, "surrogates not allowed")
        return real(src, entry, *args, **kwargs)

    monkeypatch.setattr(poller_module, "build_signal", build_signal)
    feed = {"body": atom_feed([atom_entry("v1")]).encode()}
    server.route("/r.atom", lambda _r: Reply(body=feed["body"]))
    service = Service(settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")]))
    try:
        await service.poll_once()
        feed["body"] = atom_feed([atom_entry("v3"), atom_entry("v2"), atom_entry("v1")]).encode()
        second = (await service.poll_once())[0]
        broken.clear()
        third = (await service.poll_once())[0]
    finally:
        await service.stop()
    assert second.status == "ok" and second.emitted == 1
    assert (
        second.skipped[0]["entryId"] == "v2"
        and "could not be recorded (UnicodeEncodeError" in second.skipped[0]["reason"]
    )
    assert third.emitted == 1 and third.skipped == []
    assert [s["ref"] for s in signals(tmp_path)] == ["v3", "v2"]


def npm_source(sid: str, url: str, **kw: Any) -> dict[str, Any]:
    return source(sid, url, provider="npm", repo="@acme/pkg", branch=None, **kw)


async def test_npm_lone_surrogate_version_is_skipped(tmp_path: Path, server: LoopbackServer) -> None:
    good = ['"1.0.0": "2026-05-01T00:00:00.000Z"']
    feed = {"body": npm_raw("@acme/pkg", good)}
    server.route("/npm", lambda _r: Reply(body=feed["body"], headers={"content-type": "application/json"}))
    service = Service(settings_for(tmp_path, [npm_source("npm", f"{server.url}/npm")]))
    try:
        await service.poll_once()
        feed["body"] = npm_raw(
            "@acme/pkg",
            [*good, r'"\ud800": "2026-05-02T00:00:00.000Z"', '"1.1.0": "2026-05-03T00:00:00.000Z"'],
            dist_tags=r'"latest": "1.1.0", "next": "\ud800", "\udfff": "1.1.0"',
        )
        report = (await service.poll_once())[0]
        health = service.health()["sources"][0]
    finally:
        await service.stop()
    assert report.status == "ok" and report.emitted == 1
    only = signals(tmp_path)[0]
    assert only["entryId"] == "npm:@acme/pkg:1.1.0" and only["raw"]["distTags"] == ["latest"]
    assert report.skipped == [
        {
            "sourceId": "npm",
            "entryId": "npm:@acme/pkg:\\ud800",
            "retry": True,
            "reason": "its version contains an unpaired surrogate (U+D800), which is not text",
        }
    ]
    assert "skipped entry 'npm:@acme/pkg:\\ud800'" in " ".join(report.warnings)
    assert sum("ignored dist-tag" in w for w in report.warnings) == 2
    assert health["skippedEntries"] == report.skipped
    state = feed_state(tmp_path, "npm")
    assert state["lastSeenId"] == "npm:@acme/pkg:1.1.0"
    assert state["skipped"][0]["entryId"] == "npm:@acme/pkg:\\ud800"  # stored escaped: the file stays UTF-8


async def test_npm_5000_digit_number_does_not_cost_the_document(tmp_path: Path, server: LoopbackServer) -> None:
    versions = ['"1.0.0": "2026-05-01T00:00:00.000Z"']
    feed = {"body": npm_raw("@acme/pkg", versions)}
    server.route("/npm", lambda _r: Reply(body=feed["body"]))
    service = Service(settings_for(tmp_path, [npm_source("npm", f"{server.url}/npm")]))
    try:
        await service.poll_once()
        feed["body"] = npm_raw(
            "@acme/pkg",
            [*versions, f'"1.1.0": {BIG}', '"1.2.0": "2026-05-03T00:00:00.000Z"'],
            extra=f'"versions": {{"1.0.0": {{}}, "1.1.0": {{}}, "1.2.0": {{"dist": {{"unpackedSize": -{BIG}}}}}}}',
        )
        report = (await service.poll_once())[0]
    finally:
        await service.stop()
    assert report.status == "ok" and report.error is None
    assert report.emitted == 2  # 1.1.0's "date" is the big number: kept, dated when seen
    assert {s["title"] for s in signals(tmp_path)} == {"1.1.0", "1.2.0"}
    text = " ".join(report.warnings)
    assert "npm document has a number with more than 4300 digits; kept it as text" in text
    assert "entry 'npm:@acme/pkg:1.1.0': unparsable date '999" in text


def test_npm_document_that_cannot_be_read_says_why() -> None:
    with pytest.raises(FeedParseError, match="nested too deeply"):
        parse_feed(b'{"time": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", provider="npm")
    with pytest.raises(FeedParseError, match="not valid JSON"):
        parse_feed(b'{"time": {"1.0.0": ' + BIG.encode() + b"}", provider="npm")  # truncated, not just big


def test_npm_invalid_utf8_keeps_the_good_versions() -> None:
    body = npm_raw("x", ['"1.0.0": "2026-05-01T00:00:00.000Z"'], extra='"description": "caf\xe9"'.replace("\xe9", "@"))
    body = body.replace(b"caf@", b"caf\xe9")  # latin-1 byte in a UTF-8 document
    feed = parse_feed(body, provider="npm")
    assert [e.title for e in feed.entries] == ["1.0.0"]
    assert "not valid utf-8" in feed.warnings[0]


# -- UTF-16 ---------------------------------------------------------------------------------------------------
UTF16 = [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")]


@pytest.mark.parametrize(("codec", "bom"), UTF16)
@pytest.mark.parametrize("content_type", ["application/atom+xml", "application/atom+xml; charset=utf-8", "text/xml"])
@pytest.mark.parametrize("declared", [True, False])
def test_utf16_feed_with_bom_parses(codec: str, bom: bytes, content_type: str, declared: bool) -> None:
    text = atom_feed([atom_entry("v2", "v2 \u2013 café"), atom_entry("v1")], encoding="UTF-16")
    if not declared:
        text = text.replace(' encoding="UTF-16"', "")
    feed = parse_feed(bom + text.encode(codec), provider="github", content_type=content_type)
    assert [(e.id, e.title) for e in feed.entries] == [("v2", "v2 \u2013 café"), ("v1", "v1")]
    assert feed.warnings == [] and feed.skipped == []


@pytest.mark.parametrize(
    ("codec", "bom"),
    [*UTF16, ("utf-16-le", b""), ("utf-16-be", b""), ("utf-32-le", b""), ("cp037", b""), ("utf-8", b"\xef\xbb\xbf")],
)
def test_entity_declarations_are_refused_in_any_encoding(codec: str, bom: bytes) -> None:
    body = (
        f'<?xml version="1.0" encoding="{codec}"?><!DOCTYPE r [<!ENTITY x "EXPANDED">]>'
        '<rss version="2.0"><channel><item><guid>g</guid><title>&x;</title></item></channel></rss>'
    )
    with pytest.raises(FeedParseError, match="declares XML entities"):
        parse_feed(bom + body.encode(codec), provider="github")


def test_utf7_cannot_smuggle_an_entity_declaration() -> None:
    body = (
        '<?xml version="1.0" encoding="utf-7"?>+ADw-!DOCTYPE r +AFs-+ADw-!ENTITY x "EXPANDED"+AD4-+AF0-+AD4-'
        '<rss version="2.0"><channel><item><guid>g</guid><title>&x;</title></item></channel></rss>'
    )
    with pytest.raises(FeedParseError, match="declares XML entities"):
        parse_feed(body.encode(), provider="github")


async def test_utf16_feeds_over_http(tmp_path: Path, server: LoopbackServer) -> None:
    for (codec, bom), ctype in zip(UTF16, ["application/atom+xml; charset=utf-8", "text/xml"], strict=True):
        body = bom + atom_feed([atom_entry(f"{codec}-v1")], encoding="UTF-16").encode(codec)
        server.route(f"/{codec}", Reply(body=body, headers={"content-type": ctype}))
    s = settings_for(tmp_path, [source(c, f"{server.url}/{c}", prime_only=False) for c, _ in UTF16])
    service = Service(s)
    try:
        reports = {r.source_id: r for r in await service.poll_once()}
    finally:
        await service.stop()
    assert {sid: (r.status, r.emitted, r.warnings) for sid, r in reports.items()} == {
        "utf-16-le": ("ok", 1, []),
        "utf-16-be": ("ok", 1, []),
    }


# -- 304 to a request without validators -------------------------------------------------------------------------
async def test_304_to_an_unconditional_request_is_an_error(tmp_path: Path, server: LoopbackServer) -> None:
    mode = {"broken": True}

    def handler(req: Any) -> Reply:
        if mode["broken"]:
            return Reply(304)  # a broken cache in front of the feed: 304 whatever was asked
        if req.headers.get("if-none-match") == '"e1"':
            return Reply(304, headers={"etag": '"e1"'})
        return Reply(body=atom_feed([atom_entry("v1")]).encode(), headers={"etag": '"e1"'})

    server.route("/r.atom", handler)
    service = Service(settings_for(tmp_path, [source("rel", f"{server.url}/r.atom")]))
    try:
        first = (await service.poll_once())[0]
        second = (await service.poll_once())[0]
        mode["broken"] = False
        third = (await service.poll_once())[0]
        fourth = (await service.poll_once())[0]
    finally:
        await service.stop()
    for report in (first, second):  # an error every time, not "nothing new" forever
        assert report.status == "error"
        assert report.error and "304 Not Modified to an unconditional request" in report.error
    assert "if-none-match" not in server.requests[0].headers
    assert third.status == "primed"
    assert fourth.status == "not_modified"  # a 304 to a conditional request is still fine
    assert server.requests[-1].headers["if-none-match"] == '"e1"'


# -- what an operator sees: `patchmoi poll --once` -----------------------------------------------------------------
def test_poll_once_prints_skipped_entries(tmp_path: Path, server: LoopbackServer) -> None:
    server.route(
        "/a",
        Reply(
            body=atom_feed(
                [atom_entry("v2"), atom_entry("bad", "&#xDFFF;"), atom_entry("v1", updated="0000-01-01T00:00:00Z")]
            ).encode()
        ),
    )
    server.route(
        "/npm",
        Reply(
            body=npm_raw(
                "p",
                [r'"\ud800": "2026-05-02T00:00:00.000Z"', '"1.0.0": "2026-05-01T00:00:00.000Z"'],
                extra=f'"n": {BIG}',
            )
        ),
    )
    sources = [
        source("atom", f"{server.url}/a", prime_only=False),
        npm_source("npm", f"{server.url}/npm", prime_only=False),
    ]
    path = tmp_path / "feed-sources.json"
    path.write_text(json.dumps({"sources": sources}))
    load_sources(path)
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), "FEED_SOURCES_PATH": str(path)}
    cmd = [PYTHON, "-m", "patchmoi", "poll", "--once"]
    out = subprocess.run([*cmd, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    reports = {r["sourceId"]: r for r in json.loads(out.stdout)["sources"]}
    assert (reports["atom"]["status"], reports["atom"]["emitted"]) == ("ok", 2)
    assert reports["atom"]["skipped"][0]["entryId"] == "bad"
    assert (reports["npm"]["status"], reports["npm"]["emitted"]) == ("ok", 1)
    assert reports["npm"]["skipped"][0]["entryId"] == "npm:p:\\ud800"
    # the next pass reports them again (they are still there, still unreadable) and re-emits nothing
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:] if line.strip()}
    assert "skipped entry 'bad'" in rows["atom"] and "skipped entry 'npm:p:\\ud800'" in rows["npm"]


# -- property: odd but valid feed shapes never cost the good entries ---------------------------------------------
def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_xml_chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\ufffe\uffff\ufdd0").filter(
    lambda c: c in "\t\n\r" or c >= " "
)
_char_refs = (
    st.one_of(
        st.integers(0, 0x10FFFF),
        st.integers(0xD800, 0xDFFF),
        st.integers(0, 0x20),
        st.integers(0x110000, 10**12),
    )
    .map(lambda n: st.sampled_from([f"&#{n};", f"&#x{n:X};", f"&#x{n:x}"]))
    .flatmap(lambda s: s)
)
_odd_text = st.lists(st.one_of(st.text(_xml_chars, max_size=20).map(_xml_escape), _char_refs), max_size=6).map("".join)
_dates = st.one_of(
    _odd_text,
    st.sampled_from(
        [
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "Sat, 01 Jan 0000 00:00:00 +0000",
            "Fri, 31 Dec 9999 23:59:59 -1400",
            "2026-02-30T00:00:00Z",
        ]
    ),
    st.builds(
        lambda y, mo, d, h, mi, s, tz: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{tz}",
        st.integers(0, 99999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["Z", "+14:00", "-14:00", "+99:99", ""]),
    ),
    st.builds(
        lambda d, y: f"{d} 01 Jan {y} 00:00:00 +0000", st.sampled_from(["Mon,", "Sat,", ""]), st.integers(0, 99999)
    ),
)
_links = st.one_of(
    _odd_text,
    st.sampled_from(
        ["http://[::1/x", "http://[", "//[x", "javascript:alert(1)", "http://h:99999999/x", "", "a" * 5000]
    ),
)
_ids = st.one_of(_odd_text, st.just("x" * 3000))
_FIELDS = {"id": _ids, "title": _odd_text, "updated": _dates, "published": _dates, "link": _links, "author": _odd_text}


@st.composite
def odd_entries(draw: Any) -> str:
    """An entry with one or two odd fields, the others ordinary, so every oddity reaches the code that reads it."""
    n = draw(st.integers(0, 10**6))
    fields = {
        "id": f"odd-{n}",
        "title": f"odd {n}",
        "updated": "2026-05-01T00:00:00Z",
        "published": "2026-05-01T00:00:00Z",
        "link": f"https://example.org/releases/tag/odd-{n}",
        "author": "dev",
    }
    for name in draw(st.sets(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=2)):
        fields[name] = draw(_FIELDS[name])
    title_type = draw(st.sampled_from(["", ' type="text"', ' type="html"']))
    return (
        f"<entry><id>{fields['id']}</id><title{title_type}>{fields['title']}</title>"
        f"<updated>{fields['updated']}</updated><published>{fields['published']}</published>"
        f'<link href="{fields["link"]}"/><author><name>{fields["author"]}</name></author></entry>'
    )


def _storable(entry_dict: dict[str, Any]) -> None:
    json.dumps(entry_dict, ensure_ascii=False).encode("utf-8")  # what the store does; raises on a lone surrogate


def _xml_text(value: str) -> bool:
    """Only characters XML 1.0 allows (and not the parser's stand-in for a bad reference, U+FDD0)."""
    return all(
        c in "\t\n\r" or (c >= " " and not "\ud800" <= c <= "\udfff" and c not in "\ufdd0\ufffe\uffff") for c in value
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(odd_entries(), min_size=1, max_size=4), st.data())
def test_odd_atom_entries_never_cost_the_good_ones(odd: list[str], data: Any) -> None:
    good = [atom_entry(f"good-{i}", updated=f"2026-05-{10 + i:02d}T00:00:00Z") for i in range(3)]
    entries = list(good)
    for item in odd:
        entries.insert(data.draw(st.integers(0, len(entries))), item)
    feed = parse_feed(atom_feed(entries).encode(), provider="github", content_type="application/atom+xml")
    by_id = {e.id: e for e in feed.entries}
    assert all(by_id[f"good-{i}"].error is None for i in range(3))
    assert len(feed.entries) + len(feed.skipped) == len(entries)
    # every odd shape is handled by name (a skip with its reason, or a date warning), none by the last-resort net
    assert not [x.reason for x in feed.skipped if x.reason.startswith("could not be read")]
    src = feed_source()
    for entry in feed.entries:
        assert _xml_text(entry.id) and _xml_text(entry.title) and _xml_text(entry.url or "")
        _storable(build_signal(src, entry).to_dict())
        if entry.url:
            urlsplit(entry.url)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ),
        max_size=6,
    ),
    st.lists(st.integers(0xD800, 0xDFFF), max_size=2),
    st.booleans(),
)
def test_odd_npm_versions_never_cost_the_good_ones(odd: dict[str, Any], surrogates: list[int], big: bool) -> None:
    members = [f'"good-{i}": "2026-05-{10 + i:02d}T00:00:00.000Z"' for i in range(3)]
    members += [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in odd.items() if not k.startswith("good-")]
    members += [f'"1.{n}.0\\u{n:04x}": "2026-05-01T00:00:00Z"' for n in surrogates]
    if big:
        members.append(f'"9.9.9": {BIG}')
    feed = parse_feed(npm_raw("@acme/pkg", members, dist_tags=r'"latest": "\udabc"'), provider="npm")
    assert {"good-0", "good-1", "good-2"} <= {e.title for e in feed.entries}
    assert not [x.reason for x in feed.skipped if x.reason.startswith("could not be read")]
    src = feed_source("npm")
    for entry in feed.entries:
        assert _xml_text(entry.id) and _xml_text(entry.title)
        _storable(build_signal(src, entry).to_dict())


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=300),
    st.sampled_from(["github", "npm"]),
    st.sampled_from([None, "text/xml", "application/atom+xml; charset=utf-16", "application/json"]),
)
def test_garbage_is_a_feed_error_never_a_crash(body: bytes, provider: str, content_type: str | None) -> None:
    prefix = b"" if provider == "npm" else b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">'
    with contextlib.suppress(FeedParseError):
        parse_feed(prefix + body, provider=provider, content_type=content_type)
