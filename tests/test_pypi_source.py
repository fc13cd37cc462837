"""PyPI JSON API documents: realistic ones, malformed ones, and one served over real HTTP with an ETag."""

from __future__ import annotations

import json
from typing import Any

import pytest

from patchmoi.core.feeds.entries import MAX_ID_CHARS, FeedParseError
from patchmoi.core.feeds.fetch import Fetcher
from patchmoi.core.feeds.pypi import normalize_name, parse_pypi
from tests.loopback import LoopbackServer, Reply, Request


def upload(when: str, *, kind: str = "bdist_wheel", yanked: bool = False, reason: str | None = None) -> dict[str, Any]:
    """One file as PyPI lists it (fields trimmed to the ones that vary)."""
    return {
        "filename": f"foo_bar.baz-x-{kind}",
        "packagetype": kind,
        "size": 1234,
        "upload_time": when[:19],
        "upload_time_iso_8601": when,
        "digests": {"sha256": "0" * 64},
        "yanked": yanked,
        "yanked_reason": reason,
    }


def document(releases: dict[str, Any], name: str = "Foo_Bar.baz", **info: Any) -> dict[str, Any]:
    return {
        "info": {
            "name": name,
            "version": "2.1.0",
            "project_url": f"https://pypi.org/project/{name}/",
            "package_url": f"https://pypi.org/project/{name}/",
            "project_urls": {"Home": "https://evil.example/"},
            **info,
        },
        "last_serial": 123,
        "releases": releases,
        "urls": [],
        "vulnerabilities": [],
    }


REALISTIC = document(
    {
        "1.0.0": [upload("2023-01-10T08:00:00.000000Z", kind="sdist")],
        # a wheel added a month later does not make 2.0.0 newer: dated by its first upload
        "2.0.0": [upload("2024-02-01T09:00:00.000000Z"), upload("2024-01-15T12:34:56.789012Z", kind="sdist")],
        "2.0.0.dev1": [upload("2023-12-01T00:00:00.500000Z")],
        "2.0.1": [
            upload("2024-02-02T00:00:00.000000Z", yanked=True, reason="broken metadata"),
            upload("2024-02-02T00:00:01.000000Z", yanked=True),
        ],
        "2.0.2": [upload("2024-02-03T00:00:00.000000Z", yanked=True), upload("2024-02-03T00:00:00.000000Z")],
        "2.1.0": [upload("2024-03-01T12:34:56.789012Z")],
        "3.0.0rc1": [upload("2024-04-01T10:00:00.123456Z")],
        "0.9.0": [],
        "0.8.0": [],
    }
)


def test_realistic_document() -> None:
    parsed = parse_pypi(json.dumps(REALISTIC).encode())
    assert parsed.kind == "pypi" and parsed.skipped == [] and parsed.package == "Foo_Bar.baz"
    assert [e.version for e in parsed.entries] == [
        "3.0.0rc1",
        "2.1.0",
        "2.0.2",
        "2.0.1",
        "2.0.0",
        "2.0.0.dev1",
        "1.0.0",
    ]
    assert parsed.warnings == ["2 versions have no uploaded files; left out"]
    by_version = {e.version: e for e in parsed.entries}
    first = by_version["2.0.0"]
    assert (first.id, first.title, first.url, first.author) == (
        "pypi:foo-bar-baz:2.0.0",
        "2.0.0",
        "https://pypi.org/project/Foo_Bar.baz/2.0.0/",
        "pypi",
    )
    assert first.published_raw == "2024-01-15T12:34:56.789012Z"
    assert first.published_at == "2024-01-15T12:34:56.789Z"  # milliseconds kept
    assert first.error is None and first.extra == {} and first.tag is None
    assert by_version["2.0.0.dev1"].published_at == "2023-12-01T00:00:00.500Z"
    assert by_version["2.0.1"].extra == {"yanked": True, "yankedReason": "broken metadata"}
    assert by_version["2.0.2"].extra == {}  # one file still available: not yanked


def test_name_normalization() -> None:
    assert normalize_name("Foo_Bar.baz") == "foo-bar-baz"
    assert normalize_name("zope.interface") == "zope-interface"
    assert normalize_name("A-_.-b__C") == "a-b-c"
    parsed = parse_pypi(json.dumps(document({"1": [upload("2024-01-01T00:00:00Z")]}, name="My.Pkg__X")).encode())
    assert parsed.entries[0].id == "pypi:my-pkg-x:1"


def test_yanked_without_reason_and_ties_keep_document_order() -> None:
    same = "2024-01-01T00:00:00.000000Z"
    doc = document({"b": [upload(same, yanked=True, reason="")], "a": [upload(same)], "c": [upload(same)]})
    parsed = parse_pypi(json.dumps(doc).encode())
    assert [e.version for e in parsed.entries] == ["b", "a", "c"]
    assert parsed.entries[0].extra == {"yanked": True}


def test_older_upload_time_field_and_offsets() -> None:
    doc = document(
        {
            "1.0": [{"upload_time": "2020-05-05T05:05:05", "yanked": False}],  # no _iso_8601: UTC assumed
            "1.1": [upload("2020-05-05T07:00:00.250+02:00")],  # 05:00:00.250Z: older than 1.0
        }
    )
    parsed = parse_pypi(json.dumps(doc).encode())
    assert [(e.version, e.published_at) for e in parsed.entries] == [
        ("1.0", "2020-05-05T05:05:05.000Z"),
        ("1.1", "2020-05-05T05:00:00.250Z"),
    ]


def test_private_index_project_url_is_kept_and_odd_ones_ignored() -> None:
    body = document(
        {"1.0": [upload("2024-01-01T00:00:00Z")]},
        name="pkg",
        project_url="https://devpi.example/root/pypi/project/pkg",
        package_url=None,
    )
    assert parse_pypi(json.dumps(body).encode()).entries[0].url == "https://devpi.example/root/pypi/project/pkg/1.0/"
    for odd in ("javascript:alert(1)//project/", "https://u:p@h/project/pkg/", "not a url", 7):
        body = document({"1.0+local": [upload("2024-01-01T00:00:00Z")]}, name="pkg", project_url=odd, package_url=None)
        assert parse_pypi(json.dumps(body).encode()).entries[0].url == "https://pypi.org/project/pkg/1.0%2Blocal/"


def test_unreadable_versions_are_skipped_or_dated_now() -> None:
    doc = document(
        {
            "1.0": [upload("2024-01-01T00:00:00Z")],
            "bad\u0001": [upload("2024-02-01T00:00:00Z")],
            "\ud800": [upload("2023-01-01T00:00:00Z")],
            " ": [upload("2024-01-01T00:00:00Z")],
            "x" * MAX_ID_CHARS: [upload("2024-01-01T00:00:00Z")],
            "notalist": {"file": 1},
            "nodicts": ["a", 1],
            "nodate": [{"upload_time_iso_8601": "yesterday", "yanked": False}, {"yanked": False}],
            "outofrange": [{"upload_time_iso_8601": "9999-12-31T23:59:59-05:00"}],
            "2.0": [upload("2024-03-01T00:00:00Z")],
        }
    )
    parsed = parse_pypi(json.dumps(doc).encode())
    assert [e.version for e in parsed.entries] == ["nodate", "outofrange", "2.0", "1.0"]
    for undated in parsed.entries[:2]:
        assert undated.error is not None and "used the time it was seen" in undated.error
        assert undated.published_at.endswith("Z")
    assert parsed.entries[0].published_raw == "yesterday" and "'yesterday'" in (parsed.entries[0].error or "")
    reasons = {s.id: (s.reason, s.position) for s in parsed.skipped}
    assert reasons["pypi:foo-bar-baz:bad\u0001"] == (
        "its version contains the control character or noncharacter U+0001",
        3,
    )  # newer than 1.0 only
    assert reasons["pypi:foo-bar-baz:\ud800"][0].startswith("its version contains an unpaired surrogate")
    assert reasons["pypi:foo-bar-baz:\ud800"][1] == 4  # older than every entry
    assert reasons["pypi:foo-bar-baz: "][0] == "its version is empty"
    assert "longer than" in reasons["pypi:foo-bar-baz:" + "x" * MAX_ID_CHARS][0]
    assert reasons["pypi:foo-bar-baz:notalist"] == ("its file list is a JSON dict, not a list", 0)
    assert reasons["pypi:foo-bar-baz:nodicts"][0] == "none of its files is a JSON object"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty response body"),
        (b"  \n", "empty response body"),
        (b"<html>Not Found</html>", "not valid JSON"),
        (b"[1, 2]", "is a JSON list, not an object"),
        (b'"text"', "is a JSON str, not an object"),
        (b'{"releases": {}}', "no 'info' object"),
        (b'{"info": {"name": "x"}}', "no 'releases' object"),
        (b'{"info": {"name": "x"}, "releases": []}', "no 'releases' object"),
        (b'{"info": {}, "releases": {}}', "no project name"),
        (b'{"info": {"name": "bad name!"}, "releases": {}}', "not a valid Python project name"),
        (b'{"info": {"name": "-x"}, "releases": {}}', "not a valid Python project name"),
        (b'{"info": {"name": "x\\u0000"}, "releases": {}}', "not a valid Python project name"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_documents(body: bytes, message: str) -> None:
    with pytest.raises(FeedParseError, match=r"PyPI|empty") as info:
        parse_pypi(body)
    assert message in str(info.value)


def test_robust_json_bom_huge_numbers_lone_surrogates_and_utf16() -> None:
    doc = document({"1.0": [upload("2024-01-01T00:00:00Z")]})
    text = json.dumps(doc).replace('"last_serial": 123', '"last_serial": 1' + "0" * 5000)
    text = text.replace('"2.1.0"', '"\\udc80"')  # info.version: a lone surrogate nobody reads
    parsed = parse_pypi(b"\xef\xbb\xbf" + text.encode())
    assert [e.version for e in parsed.entries] == ["1.0"]
    assert parsed.warnings == ["PyPI document has a number with more than 4300 digits; kept it as text"]
    utf16 = parse_pypi(json.dumps(document({"1.0": [upload("2024-01-01T00:00:00Z")]})).encode("utf-16"))
    assert [e.version for e in utf16.entries] == ["1.0"]
    broken = parse_pypi(
        json.dumps(document({"1.0": [upload("2024-01-01T00:00:00Z")]})).encode().replace(b'"urls"', b'"ur\xffls"')
    )
    assert broken.entries and "not valid utf-8" in broken.warnings[0]


async def test_served_over_http_with_etag(server: LoopbackServer) -> None:
    body = json.dumps(REALISTIC).encode()
    etag = '"serial-123"'

    def pypi(req: Request) -> Reply:
        if req.headers.get("if-none-match") == etag:
            return Reply(304, b"", {"etag": etag})
        return Reply(200, body, {"content-type": "application/json", "etag": etag})

    server.route("/pypi/Foo_Bar.baz/json", pypi)
    fetcher = Fetcher()
    try:
        first = await fetcher.fetch(f"{server.url}/pypi/Foo_Bar.baz/json")
        assert first.ok and first.status == 200 and first.etag == etag
        parsed = parse_pypi(first.body)
        assert [e.version for e in parsed.entries][:2] == ["3.0.0rc1", "2.1.0"]
        second = await fetcher.fetch(f"{server.url}/pypi/Foo_Bar.baz/json", etag=first.etag)
        assert second.ok and second.not_modified and second.status == 304 and second.body == b""
    finally:
        await fetcher.aclose()
    assert [r.headers.get("if-none-match") for r in server.hits("/pypi/Foo_Bar.baz/json")] == [None, etag]
