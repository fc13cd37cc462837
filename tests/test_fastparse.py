"""The fast structural feed reader gives exactly what feedparser gives, or declines; feedparser runs in a worker.

Each document goes through `parse_xml_feed` twice: with the fast reader (which must take it, or decline where
expected) and with `fast=False` (feedparser, the reference). The two ParsedFeeds must be equal. Property tests
also compare the raw values the reader stores (id, title, link, links, author, dates) with feedparser's.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import io
import os
import pickle
import signal
import time
from typing import Any

import feedparser
import pytest
from feedparser.api import StrictFeedParser
from feedparser.datetimes import _parse_date
from feedparser.util import FeedParserDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchmoi.core.feeds import fastparse, kinds, workers
from patchmoi.core.feeds.entries import FeedParseError, ParsedFeed
from patchmoi.core.feeds.fetch import Fetcher
from patchmoi.core.feeds.parse import _iso_from_raw, _prepare, parse_xml_feed, parse_xml_feed_fast
from patchmoi.core.feeds.workers import ParseWorkerError, WorkerPool
from patchmoi.core.sources import parse_sources

from .feeds import source
from .loopback import LoopbackServer, Reply

ATOM_NS = "http://www.w3.org/2005/Atom"


def normalized(parsed: ParsedFeed) -> dict[str, Any]:
    """The ParsedFeed as data, with the time an undated entry was seen (the clock's) left out."""
    data = dataclasses.asdict(parsed)
    for entry in data["entries"]:
        if entry["published_raw"] is None or entry["error"] is not None:
            entry["published_at"] = "(seen)"
    return data


def both(body: bytes, content_type: str | None = "application/atom+xml") -> tuple[ParsedFeed | None, ParsedFeed]:
    """The fast reader's ParsedFeed (None: declined) and feedparser's, for the same body."""
    return parse_xml_feed_fast(body, content_type=content_type), parse_xml_feed(
        body, content_type=content_type, fast=False
    )


def taken(body: bytes, content_type: str | None = "application/atom+xml") -> ParsedFeed:
    """The fast reader must take the document and give what feedparser gives."""
    fast, reference = both(body, content_type)
    assert fast is not None, "the fast reader declined"
    assert normalized(fast) == normalized(reference)
    assert normalized(parse_xml_feed(body, content_type=content_type)) == normalized(reference)
    return fast


def declined(body: bytes, content_type: str | None = "application/atom+xml") -> ParsedFeed:
    fast, reference = both(body, content_type)
    assert fast is None, "the fast reader took a document it should leave to feedparser"
    assert normalized(parse_xml_feed(body, content_type=content_type)) == normalized(reference)
    return reference


def summary(parsed: ParsedFeed) -> list[tuple[str, str, str | None, str | None, str | None]]:
    return [(e.id, e.title, e.url, e.author, e.published_raw) for e in parsed.entries]


# -- realistic documents -----------------------------------------------------------------------------------
GITHUB_RELEASES = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/" xml:lang="en-US">
  <id>tag:github.com,2008:https://github.com/openai/codex/releases</id>
  <link type="text/html" rel="alternate" href="https://github.com/openai/codex/releases"/>
  <link type="application/atom+xml" rel="self" href="https://github.com/openai/codex/releases.atom"/>
  <title>Release notes from codex</title>
  <updated>2026-05-20T10:00:00Z</updated>
  <entry>
    <id>tag:github.com,2008:Repository/965415649/rust-v0.170.0</id>
    <updated>2026-05-20T10:00:00Z</updated>
    <link rel="alternate" type="text/html" href="https://github.com/openai/codex/releases/tag/rust-v0.170.0"/>
    <title>0.170.0</title>
    <content type="html">&lt;h2&gt;Changes&lt;/h2&gt;
&lt;ul&gt;&lt;li&gt;Fix &amp;amp; improve &lt;a href=&quot;/openai/codex/pull/1&quot;&gt;#1&lt;/a&gt;&lt;/li&gt;
&lt;/ul&gt;</content>
    <author>
      <name>github-actions[bot]</name>
    </author>
    <media:thumbnail height="30" width="30" url="https://avatars.githubusercontent.com/in/15368?s=60&amp;v=4"/>
  </entry>
  <entry>
    <id>tag:github.com,2008:Repository/965415649/rust-v0.169.0-alpha.2</id>
    <updated>2026-05-18T09:30:12+02:00</updated>
    <link rel="alternate" type="text/html" href="https://github.com/openai/codex/releases/tag/rust-v0.169.0-alpha.2"/>
    <title>0.169.0-alpha.2</title>
    <content type="html">&lt;p&gt;No notes&lt;/p&gt;</content>
    <author>
      <name>dev</name>
    </author>
    <media:thumbnail height="30" width="30" url="https://avatars.githubusercontent.com/u/1?s=60&amp;v=4"/>
  </entry>
</feed>
"""

GITLAB_TAGS = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/">
<title>gitlab-org/gitlab-runner tags</title>
<link href="https://gitlab.com/gitlab-org/gitlab-runner/-/tags?format=atom" rel="self" type="application/atom+xml"/>
<link href="https://gitlab.com/gitlab-org/gitlab-runner/-/tags" rel="alternate" type="text/html"/>
<id>https://gitlab.com/gitlab-org/gitlab-runner/-/tags</id>
<updated>2026-05-19T08:00:00Z</updated>
<entry>
<id>https://gitlab.com/gitlab-org/gitlab-runner/-/tags/v18.0.1</id>
<link href="https://gitlab.com/gitlab-org/gitlab-runner/-/tags/v18.0.1"/>
<title>v18.0.1</title>
<updated>2026-05-19T08:00:00Z</updated>
<media:thumbnail width="40" height="40" url="https://secure.gravatar.com/avatar/abc?s=80&amp;d=identicon"/>
<author>
<name>Runner Bot</name>
<email>runner-bot@example.com</email>
</author>
<summary>Version v18.0.1</summary>
</entry>
<entry>
<id>https://gitlab.com/gitlab-org/gitlab-runner/-/tags/v18.0.0</id>
<link href="https://gitlab.com/gitlab-org/gitlab-runner/-/tags/v18.0.0"/>
<title>v18.0.0</title>
<updated>2026-05-15T08:00:00.123Z</updated>
<author>
<name>Runner Bot</name>
</author>
<summary></summary>
</entry>
</feed>
"""

FORGEJO_RSS = b"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
  <channel>
    <title>Releases for forgejo/forgejo</title>
    <link>https://codeberg.org/forgejo/forgejo/releases</link>
    <description>Releases of forgejo/forgejo</description>
    <pubDate>Tue, 19 May 2026 10:00:00 +0000</pubDate>
    <item>
      <title>v11.0.1</title>
      <link>https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.1</link>
      <description>&lt;p&gt;Bug fixes&lt;/p&gt;</description>
      <content:encoded><![CDATA[<p>Release notes with <a href="https://codeberg.org">links</a> & more</p>]]>
      </content:encoded>
      <author>release-manager</author>
      <guid isPermaLink="false">4242: https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.1</guid>
      <pubDate>Tue, 19 May 2026 10:00:00 +0000</pubDate>
    </item>
    <item>
      <title>v11.0.0</title>
      <link>https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.0</link>
      <description></description>
      <author>alice@example.org (Alice)</author>
      <guid isPermaLink="false">4241: https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.0</guid>
      <pubDate>Mon, 12 May 2026 08:30:00 GMT</pubDate>
    </item>
  </channel>
</rss>
"""


def test_github_releases_atom() -> None:
    parsed = taken(GITHUB_RELEASES)
    assert parsed.kind == "atom10"
    assert summary(parsed)[0] == (
        "tag:github.com,2008:Repository/965415649/rust-v0.170.0",
        "0.170.0",
        "https://github.com/openai/codex/releases/tag/rust-v0.170.0",
        "github-actions[bot]",
        "2026-05-20T10:00:00Z",
    )
    assert parsed.entries[1].published_at == "2026-05-18T07:30:12.000Z"


def test_gitlab_tags_atom() -> None:
    parsed = taken(GITLAB_TAGS)
    assert [(e.title, e.url, e.author) for e in parsed.entries] == [
        (
            "v18.0.1",
            "https://gitlab.com/gitlab-org/gitlab-runner/-/tags/v18.0.1",
            "Runner Bot (runner-bot@example.com)",
        ),
        ("v18.0.0", "https://gitlab.com/gitlab-org/gitlab-runner/-/tags/v18.0.0", "Runner Bot"),
    ]


def test_forgejo_rss() -> None:
    parsed = taken(FORGEJO_RSS, "application/rss+xml")
    assert parsed.kind == "rss20"
    assert summary(parsed) == [
        (
            "4242: https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.1",
            "v11.0.1",
            "https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.1",
            "release-manager",
            "Tue, 19 May 2026 10:00:00 +0000",
        ),
        (
            "4241: https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.0",
            "v11.0.0",
            "https://codeberg.org/forgejo/forgejo/releases/tag/v11.0.0",
            "alice@example.org (Alice)",
            "Mon, 12 May 2026 08:30:00 GMT",
        ),
    ]


def rss(items: str, *, root: str = '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">') -> bytes:
    return f'<?xml version="1.0" encoding="utf-8"?>\n{root}<channel><title>c</title>{items}</channel></rss>'.encode()


def atom(entries: str, namespaces: str = "") -> bytes:
    return f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="{ATOM_NS}"{namespaces}>{entries}</feed>'.encode()


def test_rss_guid_is_a_link_only_when_it_is_a_permalink() -> None:
    parsed = taken(
        rss(
            "<item><title>a</title><guid>https://e.org/a</guid></item>"  # isPermaLink defaults to true
            '<item><title>b</title><guid isPermaLink="true">https://e.org/b</guid></item>'
            '<item><title>c</title><guid isPermaLink="false">https://e.org/c</guid></item>'
            '<item><title>d</title><guid isPermaLink="True">https://e.org/d</guid></item>'  # not 'true': no
            '<item><title>e</title><guid isPermaLink="false">e</guid><link>https://e.org/e</link></item>'
        )
    )
    # a guid is never the entry's link by itself (core.feeds.parse._entry_link): only a <link> is
    assert [(e.id, e.url) for e in parsed.entries] == [
        ("https://e.org/a", None),
        ("https://e.org/b", None),
        ("https://e.org/c", None),
        ("https://e.org/d", None),
        ("e", "https://e.org/e"),
    ]


def test_cdata_and_references_in_titles_ids_and_links() -> None:
    parsed = taken(
        rss(
            "<item><title><![CDATA[v1 & co < v2]]></title><guid>g1</guid></item>"
            "<item><title>A &amp; B &#233;t&#xE9; &#x201C;q&#x201D;</title><guid>g&amp;2</guid>"
            "<link>https://e.org/?a=1&amp;b=2</link></item>"
            "<item><title>euro &#128; and dash &#150;</title><guid>g3</guid></item>"  # windows-1252 C1 codes
            "<item><title>  padded\n title  </title><guid>  g4  </guid></item>"
        )
    )
    assert [(e.id, e.title, e.url) for e in parsed.entries] == [
        ("g1", "v1 & co < v2", None),
        ("g&2", "A & B été \u201cq\u201d", "https://e.org/?a=1&b=2"),
        ("g3", "euro \u20ac and dash \u2013", None),
        ("g4", "padded\n title", None),
    ]


def test_text_feedparser_repairs_is_repaired_the_same_way() -> None:
    # UTF-8 read as ISO-8859-1 and written again ("Ã©tÃ©"): feedparser decodes it once more
    parsed = taken(atom("<entry><id>x</id><title>\u00c3\u00a9t\u00c3\u00a9</title></entry>"))
    assert parsed.entries[0].title == "été"
    # an id with extra slashes after the scheme: feedparser's URL fixer takes them out
    parsed = taken(atom("<entry><id>http:///e.org/x</id><title>t</title></entry>"))
    assert parsed.entries[0].id == "http://e.org/x"
    # an RSS link whose query was escaped twice: feedparser undoes it
    parsed = taken(rss("<item><guid>g</guid><link>https://e.org/?a=1&amp;amp;b=2&amp;c;d</link></item>"))
    assert parsed.entries[0].url == "https://e.org/?a=1&b=2&cd"


def test_prefixed_atom_namespace() -> None:
    body = f"""<?xml version="1.0"?>
<atom:feed xmlns:atom="{ATOM_NS}"><atom:title>t</atom:title>
<atom:entry><atom:id>urn:x:1</atom:id><atom:title>one</atom:title>
<atom:link href="https://e.org/1"/><atom:updated>2026-05-20T10:00:00Z</atom:updated>
<atom:author><atom:name>n</atom:name></atom:author></atom:entry></atom:feed>""".encode()
    parsed = taken(body)
    assert parsed.kind == "atom10"
    assert summary(parsed) == [("urn:x:1", "one", "https://e.org/1", "n", "2026-05-20T10:00:00Z")]


def test_rss_with_atom_links_and_dc_creator() -> None:
    root = (
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">'
        '<channel><atom:link href="https://e.org/feed" rel="self" type="application/rss+xml"/>'
    )
    body = rss(
        "<item><title>one</title><dc:creator>Jane Doe</dc:creator><guid>1</guid>"
        '<atom:link href="https://e.org/1" rel="alternate"/><dc:date>2026-05-20T10:00:00+00:00</dc:date></item>'
        "<item><title>two</title><author>a@e.org</author><dc:creator>Jane</dc:creator><guid>2</guid></item>",
        root=root,
    ).replace(b"<channel><title>c</title>", b"<title>c</title>")
    parsed = taken(body)
    assert parsed.kind == "rss20"  # the Atom namespace on <rss> does not make it Atom
    assert [(e.author, e.url, e.published_raw) for e in parsed.entries] == [
        ("Jane Doe", "https://e.org/1", "2026-05-20T10:00:00+00:00"),
        ("Jane", None, None),
    ]


def test_entries_without_dates_and_odd_dates() -> None:
    dates = [
        "",
        "Tue, 13 May 2026 10:00:00 PDT",
        "2026-05-20",
        "2026-05-20T10:00:00",
        "2026-05-20T10:00:00.123456789Z",
        "2026-05-20 10:00:00",
        "2026-02-30T00:00:00Z",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "Sun, 31 Dec 1899 23:59:59 -1200",
        "not a date",
        "20260520T100000Z",
    ]
    entries = "".join(f"<entry><id>e{i}</id><updated>{d}</updated></entry>" for i, d in enumerate(dates))
    parsed = taken(atom("<entry><id>undated</id><title>t</title></entry>" + entries))
    assert parsed.entries[0].published_raw is None
    assert any(e.error for e in parsed.entries)
    items = "".join(f"<item><guid>i{i}</guid><pubDate>{d}</pubDate></item>" for i, d in enumerate(dates))
    taken(rss(items))


def test_which_date_counts() -> None:
    # Atom: updated, else published; an unreadable updated takes published's parsed date (feedparser's order)
    parsed = taken(
        atom(
            "<entry><id>a</id><published>2026-05-01T00:00:00Z</published></entry>"
            "<entry><id>b</id><updated>garbage</updated><published>2026-05-02T00:00:00Z</published></entry>"
            "<entry><id>c</id><updated>Tue, 13 May 2026 10:00:00 +0000</updated>"
            "<published>2026-05-02T00:00:00Z</published></entry>"
            "<entry><id>d</id><updated>2026-05-03T00:00:00Z</updated><updated>2026-05-04T00:00:00Z</updated></entry>"
        )
    )
    assert [(e.published_raw, e.published_at) for e in parsed.entries] == [
        ("2026-05-01T00:00:00Z", "2026-05-01T00:00:00.000Z"),
        ("garbage", "2026-05-02T00:00:00.000Z"),
        ("Tue, 13 May 2026 10:00:00 +0000", "2026-05-13T10:00:00.000Z"),
        ("2026-05-04T00:00:00Z", "2026-05-04T00:00:00.000Z"),
    ]
    # RSS: pubDate, else dc:date
    taken(
        rss(
            "<item><guid>a</guid><pubDate></pubDate><dc:date>2026-05-20T10:00:00Z</dc:date></item>"
            "<item><guid>b</guid><pubDate>garbage</pubDate><dc:date>2026-05-20T10:00:00Z</dc:date></item>"
        )
    )


def test_missing_id_link_or_title() -> None:
    parsed = taken(
        atom(
            "<entry><title>only a title</title></entry>"
            '<entry><link href="https://e.org/only-link"/></entry>'
            "<entry><id>only-id</id></entry>"
            "<entry><updated>2026-05-20T10:00:00Z</updated></entry>"
            "<entry></entry>"
            "<entry><id></id><title></title><title>second title</title></entry>"
        )
    )
    assert [(e.id, e.title) for e in parsed.entries] == [
        ("only a title", "only a title"),
        ("https://e.org/only-link", "Untitled feed entry"),
        ("only-id", "Untitled feed entry"),
        ("second title", "second title"),
    ]
    assert [s.reason for s in parsed.skipped] == ["without id, link or title"] * 2


def test_first_title_wins_until_a_source_element() -> None:
    parsed = taken(
        rss(
            "<item><title>A</title><title>B</title><guid>1</guid></item>"
            '<item><title>A</title><source url="https://e.org/f">S</source><title>B</title><guid>2</guid></item>'
            '<item><media:title xmlns:media="http://search.yahoo.com/mrss/">M</media:title><title>T</title>'
            "<guid>3</guid></item>"
        )
    )
    assert [e.title for e in parsed.entries] == ["A", "B", "T"]


def test_links_feedparser_picks() -> None:
    parsed = taken(
        atom(
            '<entry><id>1</id><link rel="self" href="https://e.org/self"/><link href="https://e.org/alt"/></entry>'
            '<entry><id>2</id><link rel="enclosure" href="https://e.org/a.mp3"/>'
            '<link rel="alternate" type="application/pdf" href="https://e.org/doc.pdf"/></entry>'
            '<entry><id>3</id><link rel="ALTERNATE" type="HTML" href="https://e.org/3"/></entry>'
            '<entry><id>4</id><link rel="related" href="https://e.org/r"/>'
            '<link rel="alternate" href="https://e.org/4a"/><link rel="alternate" href="https://e.org/4b"/></entry>'
        )
    )
    assert [e.url for e in parsed.entries] == [
        "https://e.org/alt",
        "https://e.org/doc.pdf",
        "https://e.org/3",
        "https://e.org/4b",
    ]
    taken(rss('<item><guid>g</guid><enclosure url="https://e.org/a.mp3" type="audio/mpeg" length="1"/></item>'))


def test_atom_authors() -> None:
    parsed = taken(
        atom(
            "<entry><id>1</id><author><name>A</name><email>a@e.org</email><uri>https://e.org/a</uri></author></entry>"
            "<entry><id>2</id><author><email>b@e.org</email></author></entry>"
            "<entry><id>3</id><author><name>A</name></author><author><name>B</name></author></entry>"
            "<entry><id>4</id><author><name>A</name></author><author><email>c@e.org</email></author></entry>"
            "<entry><id>5</id><author></author></entry>"
            "<entry><id>6</id><contributor><name>C</name></contributor></entry>"
        )
    )
    assert [e.author for e in parsed.entries] == ["A (a@e.org)", "b@e.org", "B", "A (c@e.org)", None, None]


def test_non_utf8_documents_through_the_decode_path() -> None:
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><item><title>café</title>'
    latin1 += "<guid>é1</guid></item></channel></rss>"
    taken(latin1.encode("iso-8859-1"), "application/rss+xml")
    taken(latin1.encode("iso-8859-1"), "text/xml; charset=iso-8859-1")
    cp1252 = atom("<entry><id>1</id><title>\u201csmart\u201d \u2013 quotes \u20ac</title></entry>").decode()
    cp1252 = cp1252.replace('encoding="utf-8"', 'encoding="windows-1252"')
    taken(cp1252.encode("cp1252"))
    utf16 = atom("<entry><id>1</id><title>\u65e5\u672c\u8a9e</title></entry>").decode()
    taken(codecs.BOM_UTF16_LE + utf16.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16-le"))
    # declared UTF-8, but not: read as windows-1252, with a warning either way
    parsed = taken(atom("<entry><id>1</id><title>caf\u00e9</title></entry>").decode().encode("cp1252"))
    assert parsed.warnings and parsed.entries[0].title == "café"
    shift_jis = atom("<entry><id>1</id><title>\u30ea\u30ea\u30fc\u30b9</title></entry>").decode()
    taken(shift_jis.replace('encoding="utf-8"', 'encoding="shift_jis"').encode("shift_jis"))


def test_a_feed_served_as_text_keeps_feedparsers_warning() -> None:
    parsed = taken(GITHUB_RELEASES, "text/plain; charset=utf-8")
    assert parsed.warnings == ["feed needed repair by the parser: text/plain; charset=utf-8 is not an XML media type"]
    assert taken(GITHUB_RELEASES, "application/octet-stream").warnings == [
        "served as 'application/octet-stream', which is not an XML media type; read as XML"
    ]
    assert taken(GITHUB_RELEASES, None).warnings == []
    assert len(taken(GITHUB_RELEASES, "text/" + "x" * 300).warnings[0]) < 260  # cut as feedparser's path cuts it


def test_other_rss_versions_and_unknown_elements() -> None:
    for version in ("0.91", "0.92", "2.0.1", ""):
        body = rss(
            "<item><title>t</title><guid>g</guid><comments>https://e.org/c</comments><foo:bar>x</foo:bar></item>",
            root=f'<rss version="{version}" xmlns:foo="http://example.org/foo">',
        )
        assert taken(body).kind == {"0.91": "rss091u", "0.92": "rss092", "2.0.1": "rss20", "": "rss"}[version]


BIG = atom(
    "".join(
        f'<entry><id>tag:e.org,2026:{i}</id><title>v{i}</title><link href="https://e.org/{i}"/>'
        f'<updated>2026-05-20T10:00:{i % 60:02d}Z</updated><content type="html">{"&lt;p&gt;notes&lt;/p&gt;" * 20}'
        "</content></entry>"
        for i in range(200)
    )
)


def test_a_big_feed() -> None:
    assert BIG.count(b"<") > kinds.INLINE_MAX_TAGS
    assert len(taken(BIG).entries) == 200


# -- what the fast reader leaves to feedparser -------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        atom('<entry><id>1</id><title type="html">A &amp;amp; B</title></entry>'),
        atom('<entry><id>1</id><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">x</div></title></entry>'),
        atom('<entry xml:base="https://e.org/"><id>1</id><link href="rel"/></entry>'),
        atom('<entry><id>1</id><link href="rel"/></entry>').replace(b"<feed ", b'<feed xml:base="https://e.org/" '),
        rss("<item><guid>1</guid><title>a &lt;b&gt;bold&lt;/b&gt; title</title></item>"),  # looks like HTML
        rss("<item><guid>1</guid><title>x &amp;amp; y</title></item>"),  # so does an escaped entity
        rss("<item><guid>1</guid><title><![CDATA[v1 <b>bold</b>]]></title></item>"),
        b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        b'"http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
        b'<rss version="0.91"><channel><item><title>t</title><link>https://e.org</link></item></channel></rss>',
        atom("<entry><id>1</id><title>unclosed</entry>"),  # not well-formed: feedparser repairs it
        atom("<entry><id>1</id><title>&nbsp;</title></entry>"),  # an HTML entity XML does not know
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">'
        b'<item rdf:about="https://e.org/1"><title>t</title></item></rdf:RDF>',
        atom('<entry><id>1</id><georss:point xmlns:georss="http://www.georss.org/georss">1 2</georss:point></entry>'),
        atom("<entry><id>1</id><summary>a <b>bold</b> move</summary></entry>"),  # markup inside a text construct
        atom("<entry><id>1</id><entry><id>2</id></entry></entry>"),
        atom("<entry><id>1</id><date>2026-05-20</date></entry>"),  # an alias of `updated`
        rss("<item><guid>1</guid><image><url>https://e.org/i.png</url></image></item>"),
        atom('<entry><id>1</id><title mode="base64">dGl0bGU=</title></entry>'),
    ],
)
def test_declines_what_it_does_not_reproduce(body: bytes) -> None:
    declined(body)


def test_refusals_come_first() -> None:
    hostile = b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaa">]><feed xmlns="http://www.w3.org/2005/Atom"/>'
    with pytest.raises(FeedParseError, match="declares XML entities"):
        parse_xml_feed_fast(hostile)
    with pytest.raises(FeedParseError, match="HTML page"):
        parse_xml_feed_fast(b"<!DOCTYPE html><html><body>hi</body></html>", content_type="text/html")


# -- every document of a grammar: the reader's values are feedparser's -------------------------------------
TEXTS = [
    "v1.2.3", "  padded  ", "", "Fix A &amp; B", "a &lt;b&gt;bold&lt;/b&gt;", "caf&#233;", "euro &#128;",
    "\u00c3\u00a9t\u00c3\u00a9", "na\u00efve \u00fcn\u00efcode", "<![CDATA[cdata <b>x</b> & y]]>", "tab\there",
    "x &amp;amp; y", "line\nbreak", "&#x201C;q&#x201D;", "a&amp;b;c", "alice@example.com (Alice)", "bob@e.org",
    "\u00a0nbsp\u00a0", "x &lt; y", "&#x85;", "dash &#150;", "\u00c3",
]  # fmt: skip
URLS = [
    "https://github.com/o/r/releases/tag/v1", "http:///e.org/x", "https://e.org/a?x=1&amp;y=2",
    "tag:github.com,2008:Repository/1/v1", "urn:uuid:1234", "/relative/path", "https://e.org/a&amp;b;c", "",
    "  https://e.org/padded  ", "https://ex.org/\u00e9", "1234: https://codeberg.org/o/r", "http://[::1",
    "https://e.org/q?a=&amp;amp;",
]  # fmt: skip
DATES = [
    "2026-05-20T10:00:00Z", "2026-05-20T10:00:00+02:00", "2026-05-20T10:00:00.123Z", "2026-05-20T10:00:00",
    "2026-05-20", "Tue, 13 May 2026 10:00:00 +0000", "13 May 2026 10:00 PDT", "garbage", "",
    "2026-02-30T00:00:00Z", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2026-05-20 10:00:00",
    "  2026-05-20T10:00:00Z  ", "2026-13-01T00:00:00Z", "20260520T100000Z",
]  # fmt: skip
NAMESPACES = (
    ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/"'
    ' xmlns:media="http://search.yahoo.com/mrss/" xmlns:foo="http://example.org/foo"'
    ' xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"'
)


def _attr(value: str) -> str:
    return value.replace("&amp;", "&").replace("&", "&amp;").replace('"', "&quot;")


HTML_LOOKING = {"a &lt;b&gt;bold&lt;/b&gt;", "<![CDATA[cdata <b>x</b> & y]]>", "x &amp;amp; y"}


@st.composite
def elements(draw: st.DrawFn, atom_feed: bool, plain: bool) -> str:
    """One child of an entry. `plain`: none the reader declines (titles that look like HTML, <name> in an entry)."""
    text, url, date = st.sampled_from(TEXTS), st.sampled_from(URLS), st.sampled_from(DATES)
    title = st.sampled_from([t for t in TEXTS if t not in HTML_LOOKING]) if plain else text
    kind = draw(st.integers(0, 24))
    if kind == 0:
        return f"<id>{draw(url)}</id>"
    if kind == 1:
        permalink = draw(st.sampled_from(["", ' isPermaLink="false"', ' isPermaLink="true"', ' isPermaLink="no"']))
        return f"<guid{permalink}>{draw(st.one_of(url, text))}</guid>"
    if kind == 2:
        types = ["", ' type="text"', ' type="TEXT"', ' type="text/plain"'] + ([] if plain else [' type="html"'])
        return f"<title{draw(st.sampled_from(types))}>{draw(title)}</title>"
    if kind == 3:
        tag = draw(st.sampled_from(["dc:title", "media:title"]))
        return f"<{tag}>{draw(title)}</{tag}>"
    if kind == 4:
        return f"<link>{draw(url)}</link>"
    if kind == 5:
        attrs = []
        for name, values in (
            ("rel", ["alternate", "self", "enclosure", "related", "ALTERNATE"]),
            ("type", ["text/html", "application/atom+xml", "html", "text/plain", ""]),
        ):
            if draw(st.booleans()):
                attrs.append(f'{name}="{draw(st.sampled_from(values))}"')
        attrs.append(f'{draw(st.sampled_from(["href", "href", "url", "uri"]))}="{_attr(draw(url))}"')
        tag = "link" if atom_feed or draw(st.booleans()) else "atom:link"
        return f"<{tag} {' '.join(draw(st.permutations(attrs)))}/>"
    if kind == 6:
        tag = draw(st.sampled_from(["author", "dc:creator", "itunes:author"]))
        return f"<{tag}>{draw(text)}</{tag}>"
    if kind == 7:
        children = draw(st.lists(st.sampled_from(["name", "email", "uri", "foo:x"]), max_size=3, unique=True))
        space = draw(st.sampled_from(["", "\n  ", " stray "]))
        inner = space.join(f"<{c}>{draw(url) if c == 'uri' else draw(text)}</{c}>" for c in children)
        return f"<author>{space}{inner}{space}</author>"
    if kind in (8, 9):
        tag = draw(st.sampled_from(["updated", "published", "pubDate", "dc:date", "dcterms:modified", "issued"]))
        return f"<{tag}>{draw(date)}</{tag}>"
    return draw(
        st.sampled_from(
            [
                f'<content type="html">{draw(text)}</content>',
                f"<summary>{draw(text)}</summary>",
                f"<description>{draw(text)}</description>",
                f"<content:encoded><![CDATA[<p>{draw(url)}</p>]]></content:encoded>",
                '<category term="x"/>',
                f'<enclosure url="{_attr(draw(url))}" type="audio/mpeg" length="1"/>',
                f'<source url="https://e.org/feed">{draw(text)}</source>',
                f"<comments>{draw(url)}</comments>",
                f'<media:thumbnail url="{_attr(draw(url))}" width="30"/>',
                f"<foo:bar>{draw(text)}</foo:bar>",
                f'<foo:baz a="1">{draw(text)}</foo:baz>',
                "<contributor><name>c</name><uri>https://e.org</uri></contributor>",
                '<media:content url="https://e.org/m.mp4"/>',
                f"<dc:subject>{draw(text)}</dc:subject>",
            ]
            + ([] if plain else [f"<name>{draw(text)}</name>"])
        )
    )


@st.composite
def documents(draw: st.DrawFn, plain: bool = False) -> bytes:
    atom_feed = draw(st.booleans())
    space = draw(st.sampled_from(["", "\n", "\n  "]))
    tag = "entry" if atom_feed else "item"
    entries = [
        f"<{tag}>{space}{space.join(draw(st.lists(elements(atom_feed, plain), max_size=8)))}{space}</{tag}>"
        for _ in range(draw(st.integers(0, 3)))
    ]
    declaration = draw(st.sampled_from(['<?xml version="1.0" encoding="UTF-8"?>\n', "", '<?xml version="1.0"?>']))
    if atom_feed:
        document = f'<feed xmlns="{ATOM_NS}"{NAMESPACES}><title>F</title>{space}{space.join(entries)}</feed>'
    else:
        version = draw(st.sampled_from(["2.0", "0.92", ""]))
        # without it, an <atom:link> is not well-formed (an unbound prefix): declined, and so not plain
        atom_ns = f' xmlns:atom="{ATOM_NS}"' if plain or draw(st.booleans()) else ""
        document = (
            f'<rss version="{version}"{atom_ns}{NAMESPACES}><channel><title>C</title><link>https://e.org</link>'
            f"{space}{space.join(entries)}</channel></rss>"
        )
    return (declaration + document).encode()


READ_KEYS = ("id", "title", "link", "author", "updated", "published", "updated_parsed", "published_parsed")


def read_values(entry: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    values = {key: dict.get(entry, key) for key in keys}
    values["links"] = [(link.get("rel"), link.get("href")) for link in dict.get(entry, "links") or []]
    return values


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_document_of_the_grammar(body: bytes) -> None:
    fast, reference = both(body)
    if fast is None:
        return
    assert normalized(fast) == normalized(reference)
    # the values the reader stores are feedparser's (its *_parsed only where it keeps them)
    document = _prepare(body, "application/atom+xml")
    read = fastparse.read(document.data)
    assert read is not None
    parsed = feedparser.parse(io.BytesIO(document.data), response_headers={"content-type": "application/xml"})
    assert not parsed.get("bozo") and parsed.version == read.version
    assert len(parsed.entries) == len(read.entries)
    for ours, theirs in zip(read.entries, parsed.entries, strict=True):
        keys = tuple(k for k in READ_KEYS if not k.endswith("_parsed") or k in ours)
        assert read_values(ours, keys) == read_values(theirs, keys)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(plain=True))
def test_every_plain_document_of_the_grammar_is_read_fast(body: bytes) -> None:
    """Without what it declines (HTML titles, elements it does not know), the reader takes every document."""
    assert parse_xml_feed_fast(body) is not None


@settings(max_examples=400, deadline=None)
@given(st.from_regex(fastparse._RFC3339, fullmatch=True))
def test_a_date_the_reader_does_not_parse_is_one_nobody_needs_parsed(value: str) -> None:
    """What the reader leaves unparsed, _xml_entry reads as text, and feedparser's parser would not fail on."""
    if fastparse._certain_date(value):
        assert _iso_from_raw(value) is not None
        _parse_date(value)


def test_the_reader_knows_feedparsers_text_constructs() -> None:
    """Elements whose handler starts a text construct (push_content) in the installed feedparser."""
    found = set()
    for name in dir(StrictFeedParser):
        if not name.startswith("_start_"):
            continue
        parser = StrictFeedParser("", None, "utf-8")
        parser.entries.append(FeedParserDict())
        parser.inentry = 1
        getattr(parser, name)({})
        if parser.incontent:
            found.add(name.removeprefix("_start_"))
    assert found == fastparse.TEXT_CONSTRUCTS
    assert fastparse.ENTRY_INERT <= fastparse._HANDLED


def test_parsed_feeds_pickle() -> None:
    parsed = taken(FORGEJO_RSS, "application/rss+xml")
    assert pickle.loads(pickle.dumps(parsed)) == parsed


# -- the worker processes ----------------------------------------------------------------------------------
DECLINED = atom('<entry><id>1</id><title type="html">A &lt;b&gt;bold&lt;/b&gt; one</title></entry>')


async def test_a_declined_feed_is_parsed_in_a_worker_process() -> None:
    workers.shutdown()
    try:
        parsed = await kinds.parse_feed_document(DECLINED, "application/atom+xml")
        assert normalized(parsed) == normalized(parse_xml_feed(DECLINED, fast=False))
        assert workers.POOL.pids() and os.getpid() not in workers.POOL.pids()
        with pytest.raises(FeedParseError, match="HTML page"):
            await kinds.parse_feed_document(b"<html>" + b"<p>not a feed</p>" * 200 + b"</html>", "text/html")
    finally:
        workers.shutdown()
    assert workers.POOL.pids() == []


async def test_a_fast_feed_never_starts_a_worker() -> None:
    workers.shutdown()
    parsed = await kinds.parse_feed_document(GITHUB_RELEASES, "application/atom+xml")
    assert len(parsed.entries) == 2 and workers.POOL.pids() == []


async def test_inline_parses_take_turns_with_the_rest_of_the_loop() -> None:
    """Many feeds ready at once are parsed one per turn of the event loop: other tasks run between two."""
    order: list[str] = []
    done = asyncio.Event()

    async def parse(body: bytes) -> None:
        await kinds.parse_feed_document(body, "application/atom+xml")
        order.append("parse")

    async def probe() -> None:
        while not done.is_set():
            order.append("probe")
            await asyncio.sleep(0)

    prober = asyncio.create_task(probe())
    await asyncio.gather(*(parse(GITHUB_RELEASES) for _ in range(20)))
    done.set()
    await prober
    sequence = "".join("P" if step == "parse" else "." for step in order)
    assert sequence.count("P") == 20 and "PP" not in sequence


async def test_a_killed_worker_fails_its_document_and_is_replaced() -> None:
    pool = WorkerPool(1, timeout=60)
    try:
        sleeping = asyncio.ensure_future(pool.run(time.sleep, 30))
        for _ in range(200):
            if pool.pids():
                break
            await asyncio.sleep(0.05)
        [pid] = pool.pids()
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ParseWorkerError, match=r"died while reading this document \(killed by SIGKILL"):
            await sleeping
        parsed = await pool.run(parse_xml_feed, DECLINED, content_type="application/atom+xml", fast=False)
        assert parsed.entries[0].title == "A <b>bold</b> one"
        assert pool.pids() and pool.pids() != [pid]
    finally:
        pool.shutdown()


async def test_a_hung_worker_is_stopped_after_the_timeout() -> None:
    pool = WorkerPool(1, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ParseWorkerError, match=r"took longer than 0\.5s"):
            await pool.run(time.sleep, 30)
        assert time.monotonic() - started < 20
        assert (await pool.run(parse_xml_feed, GITHUB_RELEASES)).kind == "atom10"
    finally:
        pool.shutdown()


async def test_shutdown_fails_documents_in_flight_and_the_pool_starts_again() -> None:
    pool = WorkerPool(1, timeout=60)
    sleeping = asyncio.ensure_future(pool.run(time.sleep, 30))
    waiting = asyncio.ensure_future(pool.run(parse_xml_feed, GITHUB_RELEASES))
    for _ in range(200):
        if pool.pids():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    pool.shutdown()
    for future in (sleeping, waiting):
        with pytest.raises(ParseWorkerError, match="shut down"):
            await future
    assert pool.pids() == []
    try:
        assert (await pool.run(parse_xml_feed, GITHUB_RELEASES)).kind == "atom10"
    finally:
        pool.shutdown()


async def test_a_source_read_gets_the_workers_error(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.route("/feed", lambda _req: Reply(200, BIG, {"content-type": "application/atom+xml"}))
    feed = parse_sources({"sources": [source("s", f"{server.url}/feed")]})[0]
    fetcher = Fetcher()
    workers.shutdown()
    try:
        read = await kinds.read_source(feed, kinds.ReadContext(fetcher, asyncio.Semaphore(1), {}))
        assert read.error is None and read.parsed is not None and len(read.parsed.entries) == 200
        assert workers.POOL.pids()  # a document that big is read in a worker
        monkeypatch.setattr(workers.POOL, "timeout", 0.001)  # no parse of 100 KB is that fast: the worker is stopped
        read = await kinds.read_source(feed, kinds.ReadContext(fetcher, asyncio.Semaphore(1), {}))
        assert read.parsed is None and read.error is not None
        assert read.error.startswith("Feed s: the feed parser took longer than 0.001s on this document")
    finally:
        await fetcher.aclose()
        workers.shutdown()
