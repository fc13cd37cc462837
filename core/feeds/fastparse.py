"""A fast structural reader for well-formed Atom and RSS (#14): what feedparser would give, or nothing.

feedparser takes ~3 ms per 6 KB feed: SAX on expat, bookkeeping for every element, and HTML content
sanitized and its links resolved, none of which patchmoi reads. This reader walks the same bytes feedparser's
strict parser would (`parse_xml_feed` has decoded and checked them; feedparser's rewrite of the XML
declaration is applied here) with expat alone, and stores for each entry what feedparser would store under
the keys `parse._xml_entry` reads: `id`, `title`, `link`, `links`, `author`, `updated`, `published` and
their `*_parsed` dates, skipping the rest. It follows feedparser 6's rules for these exactly, and uses
feedparser's own tables and code where they decide a value (its namespace table, URL fixer, windows-1252
table, HTML guess on RSS titles, author bookkeeping and date parser).

Anything whose handling it does not reproduce makes it decline (`read` returns None) and feedparser reads the
document: a document expat cannot read (feedparser would repair it), a DOCTYPE or entity declaration, any
`xml:base` (relative links), markup inside a text construct, a title that is not plain text (Atom
`type="html"`/`"xhtml"`, an RSS title that looks like HTML, which feedparser sanitizes), an element inside an
entry that feedparser handles and this reader does not know, nested entries, RDF (RSS 0.90/1.0) and CDF.
expat never expands an entity or loads anything here: without a DTD it knows only the five XML entities and
character references, and a DOCTYPE makes the reader decline before any declaration is read.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple
from xml.parsers import expat

from feedparser.api import StrictFeedParser
from feedparser.datetimes import _parse_date
from feedparser.encodings import RE_XML_DECLARATION
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.sanitizer import RE_DOCTYPE_PATTERN, RE_ENTITY_PATTERN
from feedparser.urls import _urljoin
from feedparser.util import FeedParserDict

__all__ = ["FastFeed", "read", "read_or_reason"]


class FastFeed(NamedTuple):
    version: str
    """feedparser's version string ('atom10', 'rss20', ...)."""
    entries: list[dict[str, Any]]
    """One dict per entry, in document order, with the values feedparser would store under the keys
    `parse._xml_entry` reads. A `*_parsed` date is left out when every date of the entry is plain RFC 3339
    (`_xml_entry` reads the text then, never the parsed value)."""


class _Decline(Exception):
    """The document holds something this reader does not reproduce exactly: feedparser reads it."""


# -- what feedparser does, as data -----------------------------------------------------------------------
_MATCH: dict[str, str] = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
"""Known namespace URIs (lowercase) -> feedparser's prefix for them ('' for the feed formats themselves)."""
_HANDLED: frozenset[str] = frozenset(
    name.split("_", 2)[2] for name in dir(StrictFeedParser) if name.startswith(("_start_", "_end_"))
)
"""Element keys ('title', 'dc_creator', ...) with a handler of their own in feedparser."""
_XML_DECLARATION = re.compile(RE_XML_DECLARATION.pattern.encode("ascii"))
_NEW_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>"
_FIRST_ELEMENT = re.compile(rb"<\w")
# Starts of '<?xm' in other encodings: feedparser would re-decode the (UTF-8) document by them.
_MARKERS = (b"\x4c\x6f\xa7\x94", b"\x00\x3c\x00\x3f", b"\x3c\x00\x3f\x00", b"\x00\x00\x00\x3c", b"\x3c\x00\x00\x00")
_XLINK = "http://www.w3.org/1999/xlink"
_LINK_REF = re.compile("&([A-Za-z0-9_]+);")

_looks_like_html: Callable[[str], bool] = _FeedParserMixin.looks_like_html
_map_content_type: Callable[[str], str] = _FeedParserMixin.map_content_type
_enforce_href: Callable[[dict[str, str]], dict[str, str]] = _FeedParserMixin._enforce_href
_HTML_TYPES = frozenset(_FeedParserMixin.html_types)

# Elements whose start handler calls feedparser's push_content: text constructs. An element inside one
# takes feedparser down paths whose start and end handlers do not pair up; such a document is declined.
TEXT_CONSTRUCTS = frozenset(
    {
        "title", "dc_title", "media_title",
        "subtitle", "tagline", "itunes_subtitle",
        "rights", "copyright", "dc_rights",
        "description", "dc_description", "media_description", "abstract",
        "summary", "itunes_summary",
        "info", "feedburner_browserfriendly",
        "content", "body", "xhtml_body", "content_encoded", "fullitem",
    }
)  # fmt: skip

# Children of an entry, by what feedparser does with them.
_ID = frozenset({"id", "guid"})
_TITLE = frozenset({"title", "dc_title", "media_title"})
_AUTHOR = frozenset({"author", "dc_author", "dc_creator", "itunes_author", "managingeditor"})
_UPDATED = frozenset({"updated", "modified", "lastbuilddate", "dc_date", "dcterms_modified"})
_PUBLISHED = frozenset({"published", "issued", "pubdate", "dcterms_issued"})
_NAME = frozenset({"name", "itunes_name"})
_EMAIL = frozenset({"email", "itunes_email"})
_URI = frozenset({"uri", "url", "homepage"})
ENTRY_INERT = frozenset(
    TEXT_CONSTRUCTS - _TITLE
    | {
        "category", "keywords", "dc_subject", "media_category", "itunes_category", "tags",
        "itunes_keywords", "media_keywords",
        "media_thumbnail", "media_content", "media_player", "media_rating", "media_credit",
        "media_restriction", "media_license", "media_group",
        "itunes_image", "itunes_link", "itunes_explicit", "itunes_block",
        "language", "dc_language", "dc_contributor",
    }
)  # fmt: skip
"""Handled by feedparser, but only into keys `_xml_entry` never reads; read here as leaves only (children of
some of them, such as media:group's, would be handled as the entry's own)."""
# Keys an element without a handler must not have: feedparser stores its text under its name (through
# FeedParserDict's aliases: `date` is `updated`), over a value `_xml_entry` or a handler reads.
_RESERVED = frozenset(
    {
        "id", "title", "link", "links", "author", "authors", "author_detail", "updated", "published",
        "guidislink", "content", "summary", "tags", "contributors", "source", "href", "category",
        "enclosures", "license",
    }
    | set(FeedParserDict.keymap)
)  # fmt: skip
_SUFFIXES = ("_parsed", "_detail")

# An RFC 3339 date that datetime reads and feedparser's date parser reads without fail (tests check both).
_RFC3339 = re.compile(r"[1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")

# Frame kinds.
_ROOT, _CHANNEL, _FEED, _LEAF, _ENTRY, _AUTHOR_BOX, _CONTRIBUTOR_BOX, _TEXT = range(8)
_CHILDLESS = (_LEAF, _TEXT)


def _finish(text: str) -> str:
    """feedparser's last steps for text it expects: undo UTF-8 read as ISO-8859-1, map windows-1252 C1 codes."""
    if text.isascii():
        return text
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_cp1252)


def _join(uri: str) -> str:
    """feedparser's resolve_uri with no base (there is none: no Content-Location, no xml:base allowed here).

    That only takes extra slashes after 'scheme://' out, so a URI without ':///' is returned as it is."""
    return uri if ":///" not in uri else str(_urljoin("", uri))


def _certain_date(value: str) -> bool:
    if _RFC3339.fullmatch(value) is None or value[:4] == "9999":
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _attributes(attrs: dict[str, str]) -> dict[str, str]:
    """An element's attributes as feedparser's strict parser names them (then lowercases rel and type)."""
    named: dict[str, str] = {}
    qualified: list[tuple[str, str]] = []
    for name, value in attrs.items():
        if " " not in name:  # no namespace: its local name is its qualified name
            named[name.lower()] = value
            continue
        parts = name.split(" ")
        local = parts[1]
        prefix = _MATCH.get(parts[0].lower(), "")
        named[(f"{prefix}:{local}" if prefix else local).lower()] = value
        qualified.append(((f"{parts[2]}:{local}" if len(parts) == 3 else local).lower(), value))
    named.update(qualified)
    for key in ("rel", "type"):
        if key in named:
            named[key] = named[key].lower()
    return named


class _AuthorContext:
    """Lends feedparser's own author bookkeeping (`_save_author`, `_sync_author_detail`) the entry read."""

    _save_author = _FeedParserMixin._save_author
    _sync_author_detail = _FeedParserMixin._sync_author_detail

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    def _get_context(self) -> dict[str, Any]:
        return self.entry


End = Callable[[str], None]
# One open element: its kind, its key (checked against its end tag's) and, for text this reader keeps, the
# list its text goes to and what to do with the text at its end.
Frame = tuple[int, str, list[str] | None, End | None]


class _Reader:
    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.version = ""
        self.in_use: dict[str, str] = {}  # feedparser's namespaces_in_use
        self.prefixes: dict[str | None, str] = {}  # feedparser's namespacemap
        self.start_keys: dict[str, str] = {}
        self.end_keys: dict[str, str] = {}
        self.stack: list[Frame] = []
        self.entries: list[dict[str, Any]] = []
        self.entry: dict[str, Any] = {}
        self.authors = _AuthorContext(self.entry)
        self.channels = 0
        self.titled = False  # feedparser's title_depth is set (a non-empty title was read in this entry)
        self.guidislink = False
        self.in_author = False
        self.deferred: dict[str, str] = {}  # RFC 3339 dates whose parsing waits for the end of the entry
        self.certain: dict[str, bool] = {}

    def push(self, kind: int, key: str, pieces: list[str] | None = None, end: End | None = None) -> None:
        self.stack.append((kind, key, pieces, end))
        # text goes where feedparser's goes: to the innermost element it pushed (a leaf this reader keeps)
        self.parser.CharacterDataHandler = pieces.append if pieces is not None else None

    # -- names --------------------------------------------------------------------------------------------
    def namespace(self, prefix: str | None, uri: str | None) -> None:
        """feedparser's startPrefixMapping and track_namespace."""
        if not uri:
            return
        if prefix and uri == _XLINK:
            raise _Decline("xlink namespace")  # feedparser tracks it twice, the second time lowercased
        prefix = prefix or None
        self.start_keys.clear()
        self.end_keys.clear()
        lower = uri.lower()
        if not self.version:
            if (prefix, lower) == (None, "http://my.netscape.com/rdf/simple/0.9/"):
                self.version = "rss090"
            elif lower == "http://purl.org/rss/1.0/":
                self.version = "rss10"
            elif lower == "http://www.w3.org/2005/atom":
                self.version = "atom10"
        if "backend.userland.com/rss" in lower:
            uri = lower = "http://backend.userland.com/rss"
        if lower in _MATCH:
            self.prefixes[prefix] = _MATCH[lower]
            self.in_use[_MATCH[lower]] = uri
        else:
            self.in_use[prefix or ""] = uri

    def _key(self, tag: str) -> str:
        """unknown_starttag's `prefix_suffix`: the handler name feedparser looks for."""
        prefix, _, suffix = tag.partition(":") if ":" in tag else ("", "", tag)
        prefix = self.prefixes.get(prefix, prefix)
        return f"{prefix}_{suffix}" if prefix else suffix

    def _in_use_prefix(self, namespace: str) -> str | None:
        return next((name for name, value in self.in_use.items() if name and value == namespace), None)

    def start_key(self, name: str) -> str:
        """feedparser's startElementNS naming (expat gives no qname through SAX)."""
        parts = name.split(" ")
        namespace = parts[0] if len(parts) > 1 else None
        local = (parts[1] if len(parts) > 1 else name).lower()
        lower = (namespace or "").lower()
        if "backend.userland.com/rss" in lower:
            namespace = lower = "http://backend.userland.com/rss"
        prefix = _MATCH.get(lower)
        if prefix:
            local = f"{prefix.lower()}:{local}"
        elif namespace and (given := self._in_use_prefix(namespace)) is not None:
            local = f"{given}:{local}"
        key = self.start_keys[name] = self._key(local.lower())
        return key

    def end_key(self, name: str) -> str:
        """feedparser's endElementNS naming, which differs in small ways; a mismatch makes the reader decline."""
        parts = name.split(" ")
        namespace = parts[0] if len(parts) > 1 else None
        local = parts[1] if len(parts) > 1 else name
        prefix = _MATCH.get((namespace or "").lower(), "")
        if prefix:
            local = f"{prefix}:{local}"
        elif namespace and (given := self._in_use_prefix(namespace)) is not None:
            local = f"{given}:{local}"
        key = self.end_keys[name] = self._key(local.lower())
        return key

    # -- elements -----------------------------------------------------------------------------------------
    def start(self, name: str, attrs: dict[str, str]) -> None:
        key = self.start_keys.get(name) or self.start_key(name)
        if attrs:
            for attr in attrs:
                if (attr.split(" ")[1] if " " in attr else attr).lower() == "base":
                    raise _Decline("xml:base")  # relative links, resolved against it
        stack = self.stack
        if not stack:
            self._root(key, attrs)
            return
        kind = stack[-1][0]
        if kind == _ENTRY:
            self._entry_child(key, attrs)
        elif kind in _CHILDLESS:
            raise _Decline(f"an element inside <{key}>")
        elif kind in (_AUTHOR_BOX, _CONTRIBUTOR_BOX):
            self._person_child(key, attrs, kind == _AUTHOR_BOX)
        elif key in ("entry", "item"):
            if kind == (_ROOT if self.version.startswith("atom") else _CHANNEL):
                self._start_entry(key, attrs)
            else:
                raise _Decline(f"<{key}> outside the feed's entry list")
        elif key in ("rss", "feed", "channel"):
            if key == "channel" and kind == _ROOT and self.version.startswith("rss") and not self.channels:
                self.channels += 1
                self.push(_CHANNEL, key)
            else:
                raise _Decline(f"<{key}> where it is not the feed")
        else:
            self.push(_LEAF if key in TEXT_CONSTRUCTS else _FEED, key)

    def end(self, name: str) -> None:
        stack = self.stack
        _kind, key, pieces, end = stack.pop()
        if (self.end_keys.get(name) or self.end_key(name)) != key:
            raise _Decline("feedparser names this element's end differently")
        if stack:
            parent = stack[-1][2]
            self.parser.CharacterDataHandler = parent.append if parent is not None else None
        if end is not None:
            end("".join(pieces) if pieces is not None else "")

    def _root(self, key: str, attrs: dict[str, str]) -> None:
        if key == "feed":  # feedparser's _start_feed
            if not self.version:
                version = _attributes(attrs).get("version")
                self.version = {"0.1": "atom01", "0.2": "atom02", "0.3": "atom03"}.get(version or "", "atom")
            if not self.version.startswith("atom"):
                raise _Decline(f"<feed> in a {self.version} document")
        elif key == "rss":  # feedparser's _start_rss
            if not self.version.startswith("rss"):
                version = _attributes(attrs).get("version", "")
                named = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}.get(version)
                self.version = named or ("rss20" if version.startswith("2.") else "rss")
        else:
            raise _Decline(f"root element <{key}>")
        self.push(_ROOT, key)

    # -- entries ------------------------------------------------------------------------------------------
    def _start_entry(self, key: str, attrs: dict[str, str]) -> None:
        if attrs and any(name != "xml:lang" for name in _attributes(attrs)):
            raise _Decline("attributes on an entry")  # rdf:about, lastmod and href set its id, date, link
        self.entry = {}
        self.authors = _AuthorContext(self.entry)
        self.entries.append(self.entry)
        self.titled = self.guidislink = False
        self.deferred = {}
        self.certain = {}
        self.push(_ENTRY, key, None, self._end_entry)

    def _end_entry(self, _text: str) -> None:
        if not all(self.certain.values()):  # a date _xml_entry may need parsed: parse those that waited
            for kind, value in self.deferred.items():
                self.entry[f"{kind}_parsed"] = _parse_date(value)

    def _entry_child(self, key: str, attrs: dict[str, str]) -> None:
        if key in _ID:
            self.guidislink = (_attributes(attrs).get("ispermalink", "true") if attrs else "true") == "true"
            self.push(_TEXT, key, [], self._end_id)
        elif key in _TITLE:
            named = _attributes(attrs) if attrs else {}
            if named.get("mode", "") == "base64" or _map_content_type(named.get("type", "text/plain")) != "text/plain":
                raise _Decline("a title that is not plain text")
            self.push(_TEXT, key, [], self._end_media_title if key == "media_title" else self._end_title)
        elif key == "link":
            self._start_link(key, attrs)
        elif key in _AUTHOR:
            self.in_author = True
            self.entry.setdefault("authors", []).append({})
            self.push(_AUTHOR_BOX, key, [], self._end_author)
        elif key in _UPDATED:
            self.push(_TEXT, key, [], self._end_updated)
        elif key in _PUBLISHED:
            self.push(_TEXT, key, [], self._end_published)
        elif key == "enclosure":  # feedparser's _start_enclosure
            named = _enforce_href(_attributes(attrs))
            named["rel"] = "enclosure"
            self.entry.setdefault("links", []).append(named)
            self.push(_LEAF, key)
        elif key == "source":  # feedparser's _start_source forgets the entry's title so far
            self.titled = False
            self.push(_LEAF, key)
        elif key == "contributor":
            self.push(_CONTRIBUTOR_BOX, key)
        elif key in ENTRY_INERT or (key not in _HANDLED and key not in _RESERVED and not key.endswith(_SUFFIXES)):
            self.push(_LEAF, key)
        else:
            raise _Decline(f"<{key}> in an entry")

    def _person_child(self, key: str, attrs: dict[str, str], author: bool) -> None:
        if key in _NAME:
            end: End | None = self._end_name if author else None
        elif key in _EMAIL:
            end = self._end_email if author else None
        elif key in _URI:
            end = self._end_uri if author else None
        elif not attrs and key not in _HANDLED and key not in _RESERVED and not key.endswith(_SUFFIXES):
            end = None  # stored under its own name
        else:
            raise _Decline(f"<{key}> in an author or contributor")
        self.push(_TEXT, key, [] if end else None, end)

    def _start_link(self, key: str, attrs: dict[str, str]) -> None:
        """feedparser's _start_link in an entry (never in an image there: the reader allows none)."""
        named = _attributes(attrs) if attrs else {}
        named.setdefault("rel", "alternate")
        named.setdefault("type", "application/atom+xml" if named["rel"] == "self" else "text/html")
        named = _enforce_href(named)
        if "href" in named:
            named["href"] = _join(named["href"])
        self.entry.setdefault("links", []).append(named)
        if "href" in named:
            if named.get("rel") == "alternate" and _map_content_type(named.get("type", "")) in _HTML_TYPES:
                self.entry["link"] = named["href"]
            self.push(_LEAF, key)
        else:
            self.push(_TEXT, key, [], self._end_link)

    # feedparser's pop() for text it expects (stripped; URLs joined; _finish), then each element's end handler.
    def _end_id(self, text: str) -> None:
        value = text.strip()
        if value and self.guidislink:
            value = _join(value)
        value = _finish(value)
        entry = self.entry
        entry["id"] = value
        entry.setdefault("guidislink", self.guidislink and "link" not in entry)
        if self.guidislink:
            entry.setdefault("link", value)

    def _end_title(self, text: str) -> None:
        value = text.strip()
        if not self.version.startswith("atom") and _looks_like_html(value):
            raise _Decline("an RSS title that looks like HTML")  # feedparser sanitizes it
        value = _finish(value)
        if not self.titled:
            self.entry["title"] = value
        if value:
            self.titled = True

    def _end_media_title(self, text: str) -> None:
        titled = self.titled
        self._end_title(text)
        self.titled = titled

    def _end_link(self, text: str) -> None:
        value = _finish(_join(text.strip()))
        value = _LINK_REF.sub(r"&\g<1>", value.replace("&amp;", "&"))
        self.entry["link"] = value
        if value:
            self.entry["links"][-1]["href"] = value

    def _end_author(self, text: str) -> None:
        self.entry["author"] = _finish(text.strip())
        self.in_author = False
        self.authors._sync_author_detail()

    def _end_name(self, text: str) -> None:
        if self.in_author:
            self.authors._save_author("name", text.strip())

    def _end_email(self, text: str) -> None:
        if self.in_author:
            self.authors._save_author("email", text.strip())

    def _end_uri(self, text: str) -> None:
        if self.in_author:
            self.authors._save_author("href", _finish(_join(text.strip())))

    def _end_updated(self, text: str) -> None:
        self._date("updated", _finish(text.strip()))

    def _end_published(self, text: str) -> None:
        self._date("published", _finish(text.strip()))

    def _date(self, kind: str, value: str) -> None:
        """feedparser parses every date it reads; a plain RFC 3339 one waits (usually it is never needed)."""
        self.entry[kind] = value
        certain = self.certain[kind] = _certain_date(value)
        if certain:
            self.deferred[kind] = value
            self.entry.pop(f"{kind}_parsed", None)
        else:
            self.deferred.pop(kind, None)
            self.entry[f"{kind}_parsed"] = _parse_date(value)


def read(data: bytes) -> FastFeed | None:
    """The entries of a well-formed Atom or RSS document as feedparser would read them, or None.

    `data` is UTF-8, as `parse_xml_feed` hands it to feedparser (after its checks). None: feedparser must
    read it (the document is not well-formed, or holds something this reader does not reproduce).
    """
    result = read_or_reason(data)
    return result if isinstance(result, FastFeed) else None


def read_or_reason(data: bytes) -> FastFeed | str:
    """`read`, with the reason it declines instead of None (for bench/feed_corpus.py)."""
    if data[:4] in _MARKERS:
        return "starts like another encoding's '<?xm'"
    # feedparser's convert_to_utf8 rewrites the XML declaration (or adds one); replace_doctype then strips a
    # DOCTYPE and entity declarations before the first element. Both are read from the same bytes here.
    if _XML_DECLARATION.search(data):
        data = _XML_DECLARATION.sub(_NEW_DECLARATION, data, count=1)
    else:
        data = _NEW_DECLARATION + b"\n" + data
    first = _FIRST_ELEMENT.search(data)
    head = data[: first.start() + 1] if first else data
    if RE_DOCTYPE_PATTERN.search(head) or RE_ENTITY_PATTERN.search(head):
        return "DOCTYPE"
    parser = expat.ParserCreate(None, " ")
    reader = _Reader(parser)
    parser.namespace_prefixes = True
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartNamespaceDeclHandler = reader.namespace
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    try:
        parser.Parse(data, True)
    except _Decline as exc:
        return str(exc)
    except expat.ExpatError:
        return "not well-formed (feedparser repairs it)"
    except Exception as exc:  # a date feedparser's own parser fails on: feedparser decides what that means
        return f"{type(exc).__name__} while reading"
    return FastFeed(reader.version, reader.entries)


def _refuse_doctype(*_args: Any) -> None:
    raise _Decline("DOCTYPE")
