"""XML safety by structure: expat reads the prolog, so quoted markup never costs a feed and declarations always do.

Also the fields an entry keeps as the document has them: its own link (never its id or guid) and the
milliseconds of its date.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.feeds.parse import FeedParseError, _scan_prolog, parse_xml_feed

from .feeds import atom_entry, atom_feed

RSS_ITEM = "<item><guid>g1</guid><title>v1.0</title><link>https://example.org/r/v1.0</link></item>"


def rss(items: str = RSS_ITEM, prolog: str = '<?xml version="1.0" encoding="UTF-8"?>\n', version: str = "2.0") -> str:
    return (
        f'{prolog}<rss version="{version}"><channel><title>Releases</title><link>https://example.org/</link>'
        f"<description>d</description>{items}</channel></rss>"
    )


def refused(body: str | bytes, needle: str, content_type: str | None = None) -> str:
    data = body.encode() if isinstance(body, str) else body
    with pytest.raises(FeedParseError) as caught:
        parse_xml_feed(data, content_type=content_type)
    assert needle in str(caught.value)
    return str(caught.value)


# -- watching for file and network access ---------------------------------------------------------------------
_WATCHING: list[list[str]] = []
_HOOKED: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHING and event in ("open", "socket.connect", "socket.getaddrinfo", "urllib.Request"):
        _WATCHING[-1].append(f"{event} {args[0]!r}")


@pytest.fixture
def accesses() -> Iterator[list[str]]:
    """Files opened and connections tried while the test runs (audit hooks; the hook stays, idle, afterwards)."""
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(True)
    seen: list[str] = []
    _WATCHING.append(seen)
    try:
        yield seen
    finally:
        _WATCHING.remove(seen)


def test_the_watch_sees_file_reads(tmp_path: Path, accesses: list[str]) -> None:
    (tmp_path / "probe.dtd").write_text("")
    assert any("probe.dtd" in a for a in accesses)


# -- quoted markup is text ------------------------------------------------------------------------------------
NOTE = (
    '<![CDATA[Docs: a DTD may say <!DOCTYPE note [<!ENTITY writer "Donald">]> and then &writer; '
    "is expanded. We no longer do that.]]>"
)


@pytest.mark.parametrize("padding", [0, 70_000], ids=["within-64KB", "beyond-64KB"])
def test_entity_declaration_quoted_in_cdata_is_text(padding: int) -> None:
    first = (
        f"<item><guid>g2</guid><title>v2.0</title><link>https://example.org/r/v2.0</link>"
        f"<description>{'x' * padding}</description></item>"
    )
    note = f"<item><guid>g1</guid><title>v1.0</title><description>{NOTE}</description></item>"
    feed = parse_xml_feed(rss(first + note).encode())
    assert [e.id for e in feed.entries] == ["g2", "g1"]
    assert feed.warnings == [] and feed.skipped == []


def test_doctype_quoted_in_cdata_does_not_break_the_document() -> None:
    # a regex taking out '<!DOCTYPE ... [ ... ]>' would cut this document from the CDATA to the next ']>'
    items = (
        f"<item><guid>g1</guid><title>v1.0</title><description>{NOTE}</description></item>"
        "<item><guid>g0</guid><title>v0.9</title><description>a]>b</description></item>"
    )
    feed = parse_xml_feed(rss(items, prolog="").encode())
    assert [(e.id, e.title) for e in feed.entries] == [("g1", "v1.0"), ("g0", "v0.9")]
    assert feed.warnings == []


def test_escaped_entity_text_in_an_atom_title_is_kept() -> None:
    body = atom_feed([atom_entry("v1", "&lt;!ENTITY x SYSTEM &quot;file:///etc/passwd&quot;&gt;")]).encode()
    assert parse_xml_feed(body).entries[0].title == '<!ENTITY x SYSTEM "file:///etc/passwd">'


# -- declarations are refused ---------------------------------------------------------------------------------
def billion_laughs() -> str:
    levels = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    return rss(
        "<item><guid>g</guid><title>&lol9;</title></item>",
        prolog=f'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY lol0 "lol">{levels}]>\n',
    )


def test_billion_laughs_is_refused() -> None:
    assert "entity 'lol0'" in refused(billion_laughs(), "declares XML entities")


def test_external_entity_is_refused_and_never_read(tmp_path: Path, accesses: list[str]) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-xxe")
    accesses.clear()
    for target in ("file:///etc/passwd", secret.as_uri(), "http://127.0.0.1:9/x.ent"):
        body = rss(
            "<item><guid>g</guid><title>&xxe;</title></item>",
            prolog=f'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY xxe SYSTEM "{target}">]>\n',
        )
        message = refused(body, "declares XML entities")
        assert "external entity 'xxe'" in message
        assert "root:" not in message and "TOPSECRET" not in message
    assert [a for a in accesses if "passwd" in a or "secret" in a or "socket" in a or "urllib" in a] == []


def test_external_parameter_entity_is_refused(accesses: list[str]) -> None:
    body = rss(prolog='<!DOCTYPE rss [<!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;]>\n')
    assert "external parameter entity 'ext'" in refused(body, "declares XML entities")
    # a reference to a parameter entity declared elsewhere (in a DTD that is never read)
    refused(
        rss(prolog='<!DOCTYPE rss SYSTEM "http://127.0.0.1:9/evil.dtd" [ %ext; ]>\n'),
        "refers to the parameter entity '%ext;'",
    )
    assert [a for a in accesses if "passwd" in a or "socket" in a or "urllib" in a] == []


def test_unparsed_entity_is_refused() -> None:
    body = rss(prolog='<!DOCTYPE rss [<!NOTATION gif SYSTEM "image/gif"><!ENTITY logo SYSTEM "x.gif" NDATA gif>]>')
    refused(body, "declares XML entities")


def test_utf16_document_with_an_entity_declaration_is_refused() -> None:
    body = rss(
        "<item><guid>g</guid><title>&x;</title></item>",
        prolog='<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE rss [<!ENTITY x "EXPANDED">]>',
    )
    for data in (b"\xff\xfe" + body.encode("utf-16-le"), body.encode("utf-16-be")):
        refused(data, "declares XML entities")


def test_declaration_feedparser_would_find_in_a_prolog_comment_is_refused() -> None:
    # expat sees a comment, but feedparser reads '<!ENTITY' at a line start before the root as a declaration and
    # expands it; in a document that is not well-formed, without expat's limits (19 KB became a 30 MB title)
    big = "A" * 10_000
    body = rss(
        f"<item><guid>g</guid><title>{'&x;' * 3000}</title></item><bad>",
        prolog=f'<?xml version="1.0"?>\n<!--\n<!ENTITY x "{big}">\n-->\n<!DOCTYPE rss>\n',
    )
    refused(body, "'<!ENTITY' outside a DTD, which the feed parser would read as a declaration")


def test_many_entity_openings_in_a_malformed_prolog_are_refused_quickly() -> None:
    # feedparser's own search for declarations takes quadratic time on these (90 KB: 18 s); it never sees them
    started = time.monotonic()
    refused("\n<!ENTITY" * 20_000 + rss(prolog=""), "declares XML entities")
    assert time.monotonic() - started < 2


def test_declaration_behind_a_malformed_prolog_is_refused() -> None:
    body = rss(
        "<item><guid>g</guid><title>&x;</title></item>",
        prolog='<?xml version="1.0"?>\n<!-- a -- b -->\n<!DOCTYPE rss [\n<!ENTITY x "EXPANDED">\n]>\n',
    )
    refused(body, "declares XML entities")


def test_unreadable_doctype_is_refused() -> None:
    message = refused(rss(prolog="<!DOCTYPE rss [<!ELEMENT rss ANY> <broken>]>\n"), "DOCTYPE could not be read")
    assert "line 1" in message
    refused(rss(prolog='<!DOCTYPE rss PUBLIC [<!ENTITY x "y">]>\n'), "DOCTYPE could not be read")
    refused(rss(prolog='<!DOCTYPE a>\n<!DOCTYPE b [<!ENTITY x "y">]>\n'), "DOCTYPE could not be read")


def test_malformed_prolog_without_a_doctype_is_left_to_feedparser() -> None:
    feed = parse_xml_feed(rss(prolog='<?xml version="1.0"?>\n<!-- a -- b -->\n').encode())
    assert feed.kind == "rss20" and [e.id for e in feed.entries] == ["g1"]
    assert "feed needed repair" in feed.warnings[0]


# -- a DOCTYPE that only names a DTD is fine; the DTD is never read ----------------------------------------------
XHTML_TRANSITIONAL = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">'
)


@pytest.mark.parametrize("newline", ["", "\n"])
def test_rss_with_an_xhtml_doctype_is_rss(newline: str, accesses: list[str]) -> None:
    feed = parse_xml_feed(rss(prolog=f'<?xml version="1.0" encoding="utf-8"?>{newline}{XHTML_TRANSITIONAL}\n').encode())
    assert feed.kind == "rss20"
    assert [(e.id, e.title, e.url) for e in feed.entries] == [("g1", "v1.0", "https://example.org/r/v1.0")]
    assert [a for a in accesses if "socket" in a or "urllib" in a or "xhtml1" in a] == []


def test_netscape_rss_091_doctype() -> None:
    doctype = (
        '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"\n'
        ' "http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
    )
    item = "<item><title>v1.0</title><link>https://example.org/r/v1.0</link></item>"
    feed = parse_xml_feed(rss(item, prolog=f'<?xml version="1.0"?>\n{doctype}', version="0.91").encode())
    assert feed.kind == "rss091n"
    assert [(e.title, e.url) for e in feed.entries] == [("v1.0", "https://example.org/r/v1.0")]


def test_system_dtd_is_never_read(tmp_path: Path, accesses: list[str]) -> None:
    dtd = tmp_path / "feed.dtd"
    dtd.write_text('<!ENTITY leak "LEAKED-FROM-DTD">')
    accesses.clear()
    body = rss(
        "<item><guid>g</guid><title>a &leak; b</title></item>", prolog=f'<!DOCTYPE rss SYSTEM "{dtd.as_uri()}">\n'
    )
    feed = parse_xml_feed(body.encode())
    assert "LEAKED" not in repr(feed)
    assert [a for a in accesses if "feed.dtd" in a] == []


# -- HTML is told by its root element ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "page",
    [
        "<!DOCTYPE html><html><head><title>Sign in</title></head><body></body></html>",
        "<html><body>maintenance</body></html>",
        "<!doctype html>\n<html lang=en><meta charset=utf-8><title>x</title><p>unclosed",
        '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head><title>502 Bad Gateway</title></head></html>',
        f'<?xml version="1.0"?>\n{XHTML_TRANSITIONAL}\n<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>',
        "<HTML><BODY>old</BODY></HTML>",
    ],
    ids=["html5", "no-doctype", "html5-lowercase-doctype", "html2-doctype", "xhtml", "uppercase"],
)
def test_html_page_is_called_an_html_page(page: str) -> None:
    refused(page, "got an HTML page, not an Atom or RSS feed", content_type="text/html")


def test_other_root_is_not_a_feed() -> None:
    refused("<svg xmlns='http://www.w3.org/2000/svg'/>", "not an Atom or RSS document (root element <svg>)")


def test_prolog_scan_stops_at_the_root_element() -> None:
    # bytes that are not UTF-8 past the root are never read by the scan (feedparser copes with them later)
    assert _scan_prolog(b'<?xml version="1.0"?>\n<rss version="2.0">' + b"\xff" * (1 << 20)) == "rss"
    assert _scan_prolog(b"<!-- c -->" * 10_000 + b"<feed>" + b"<" * (1 << 20)) == "feed"


# -- encodings: the text is read once, whatever the declaration says --------------------------------------------
@pytest.mark.parametrize("content_type", [None, "application/atom+xml", "text/xml", "application/octet-stream"])
def test_declared_encoding_never_misleads_feedparser(content_type: str | None) -> None:
    text = atom_feed([atom_entry("v2", "v2 \u2013 café")], encoding="UTF-16")
    feed = parse_xml_feed(b"\xff\xfe" + text.encode("utf-16-le"), content_type=content_type)
    assert [(e.id, e.title) for e in feed.entries] == [("v2", "v2 \u2013 café")]
    assert not [w for w in feed.warnings if "declared as" in w]
    latin = atom_feed([atom_entry("v1", "café")], encoding="ISO-8859-1").encode("latin-1")
    assert [e.title for e in parse_xml_feed(latin, content_type=content_type).entries] == ["café"]


def test_unpaired_surrogate_from_utf7_costs_its_entry_only() -> None:
    body = rss(
        "<item><guid>g1</guid><title>a+2AA-b</title></item><item><guid>g2</guid><title>ok</title></item>",
        prolog='<?xml version="1.0" encoding="utf-7"?>',
    )
    feed = parse_xml_feed(body.encode())
    assert [e.id for e in feed.entries] == ["g2"]
    assert [s.id for s in feed.skipped] == ["g1"]


# -- field fidelity: the entry's own link -----------------------------------------------------------------------
def atom(entry: str) -> bytes:
    return atom_feed([entry]).encode()


@pytest.mark.parametrize(
    ("body", "url"),
    [
        (atom("<entry><id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id><title>v1</title></entry>"), None),
        (atom("<entry><id>https://example.org/id/1</id><title>v1</title></entry>"), None),
        (
            atom('<entry><id>urn:uuid:1</id><title>v1</title><link href="https://example.org/v1"/></entry>'),
            "https://example.org/v1",
        ),
        (
            atom('<entry><link href="https://example.org/v1"/><id>urn:uuid:1</id><title>v1</title></entry>'),
            "https://example.org/v1",
        ),
        (
            atom(
                '<entry><id>urn:uuid:1</id><title>v1</title><link rel="enclosure" href="https://example.org/v1.tgz"/>'
                "</entry>"
            ),
            None,
        ),
        (
            atom(
                '<entry><id>urn:uuid:1</id><title>v1</title><link rel="self" type="application/atom+xml" '
                'href="https://example.org/e/1"/><link rel="alternate" type="text/html" href="https://example.org/v1"/>'
                "</entry>"
            ),
            "https://example.org/v1",
        ),
        (rss("<item><guid>https://example.org/guid/1</guid><title>v1</title></item>").encode(), None),
        (rss("<item><guid>abc-1</guid><title>v1</title></item>").encode(), None),
        (rss('<item><guid isPermaLink="false">abc-1</guid><title>v1</title></item>').encode(), None),
        (
            rss("<item><guid>https://example.org/guid/1</guid><link>https://example.org/v1</link></item>").encode(),
            "https://example.org/v1",
        ),
        (
            rss("<item><link>https://example.org/v1</link><guid>https://example.org/guid/1</guid></item>").encode(),
            "https://example.org/v1",
        ),
        (rss("<item><link>https://example.org/v1</link><title>v1</title></item>").encode(), "https://example.org/v1"),
    ],
    ids=[
        "atom-urn-no-link",
        "atom-url-id-no-link",
        "atom-link-after-id",
        "atom-link-before-id",
        "atom-enclosure-only",
        "atom-self-and-alternate",
        "rss-permalink-guid",
        "rss-guid",
        "rss-guid-not-permalink",
        "rss-guid-then-link",
        "rss-link-then-guid",
        "rss-link-only",
    ],
)
def test_url_is_the_entrys_own_link_never_its_id(body: bytes, url: str | None) -> None:
    entry = parse_xml_feed(body).entries[0]
    assert entry.url == url
    assert entry.id  # the id is still the id (or the link, for an RSS item with only a link)


# -- field fidelity: dates keep their milliseconds --------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-05-20T10:00:00.500Z", "2026-05-20T10:00:00.500Z"),
        ("2026-05-20T10:00:00.123456Z", "2026-05-20T10:00:00.123Z"),
        ("2026-05-20T12:00:00.250+02:00", "2026-05-20T10:00:00.250Z"),
        ("2026-05-20T10:00:00.5", "2026-05-20T10:00:00.500Z"),  # no zone: UTC
        ("2026-05-20T10:00:00Z", "2026-05-20T10:00:00.000Z"),
        ("2026-05-20", "2026-05-20T00:00:00.000Z"),
        ("Wed, 20 May 2026 10:00:00 GMT", "2026-05-20T10:00:00.000Z"),  # RFC 822: feedparser's reading
    ],
)
def test_atom_date_keeps_milliseconds(raw: str, expected: str) -> None:
    entry = parse_xml_feed(atom(atom_entry("v1", updated=raw))).entries[0]
    assert (entry.published_at, entry.published_raw, entry.error) == (expected, raw, None)


def test_rss_dates() -> None:
    items = (
        "<item><guid>a</guid><pubDate>Tue, 19 May 2026 12:00:00 +0200</pubDate></item>"
        "<item><guid>b</guid><pubDate>2026-05-19T10:00:00.750Z</pubDate></item>"
    )
    assert [e.published_at for e in parse_xml_feed(rss(items).encode()).entries] == [
        "2026-05-19T10:00:00.000Z",
        "2026-05-19T10:00:00.750Z",
    ]


def test_out_of_range_date_still_keeps_the_entry() -> None:
    entry = parse_xml_feed(atom(atom_entry("v1", updated="0000-01-01T00:00:00Z"))).entries[0]
    assert entry.error is not None and "out of range" in entry.error


def test_a_prolog_of_thousands_of_lines_is_refused_fast() -> None:
    """feedparser's DOCTYPE scan is quadratic in the lines before the root: such a document is refused."""

    doc = (
        '<?xml version="1.0"?>' + "\n" * 200_000 + '<rss version="2.0"><channel><title>t</title>'
        "<item><title>a</title><guid>g</guid></item></channel></rss>"
    ).encode()
    started = time.perf_counter()
    with pytest.raises(FeedParseError, match="more than 1000 lines before its root element"):
        parse_xml_feed(doc)
    assert time.perf_counter() - started < 5  # unguarded, this takes hours
    fine = (
        '<?xml version="1.0"?>\n<!-- a licence header\n' + "line\n" * 50 + '-->\n<rss version="2.0"><channel>'
        "<title>t</title><item><title>a</title><guid>g</guid></item></channel></rss>"
    ).encode()
    assert [e.title for e in parse_xml_feed(fine).entries] == ["a"]
