"""Parse Atom/RSS (feedparser) and npm packuments (JSON) into feed entries, newest first (spec §2).

The body is decoded here first (a byte order mark decides the encoding, then the HTTP charset, then the XML
declaration, as XML 1.0 Appendix F and RFC 7303 say) and handed to feedparser as UTF-8 with a header that
says so; feedparser re-declares the encoding itself. The body goes to feedparser as a stream, so feedparser
never treats it as a URL or file name. Well-formed Atom and RSS is read instead, from the same UTF-8 bytes and
after the same checks, by a fast structural reader (`core.feeds.fastparse`, #14) that gives feedparser's
results or declines; feedparser reads what it declines (`fast=False`: feedparser always).

Hostile documents are refused by structure, before feedparser sees them: expat reads the prolog of that
UTF-8 text (whatever the original encoding) up to the start tag of the root element, which is as far as
entity declarations can go, and never loads an external DTD. A document that declares an entity (billion
laughs, external entities), refers to a parameter entity or has a DOCTYPE expat cannot read is an error:
entities are never expanded or fetched. So is one with `<!ENTITY` anywhere before its first element (in a
comment, say), which feedparser would read as a declaration and expand. A DOCTYPE that only names a DTD
(XHTML on RSS, Netscape RSS 0.91) is fine. The root element tells an HTML page from a feed; text after it
(`<!ENTITY` or `<!DOCTYPE` quoted in release notes) is text. A 200 that is not a feed (HTML, empty, JSON
where XML was expected) is an error, not an empty feed.

The document is never edited to make it parse, but for one thing: a character reference to a character XML
does not allow (`&#xD800;`, which feedparser crashes on) is pointed at a noncharacter, so that the entry
carrying it is skipped rather than the whole document refused.

One odd entry never costs the rest of the document: an entry whose id, title, link or version cannot be
read (characters XML does not allow, a link that is not a URL, an id too long to keep) is left out and
listed in `ParsedFeed.skipped` with the reason; a date that cannot be read or is out of range keeps the
entry, dated when it was seen, with the reason in `FeedEntry.error`.
"""

from __future__ import annotations

import calendar
import codecs
import io
import re
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from xml.parsers import expat

import feedparser

from patchmoi.core.feeds import fastparse
from patchmoi.core.feeds.entries import (
    INVALID_REF,
    MAX_ID_CHARS,
    EntrySkip,
    FeedEntry,
    FeedParseError,
    ParsedFeed,
    SkippedEntry,
    bad_char,
    clean,
    date_undated,
    printable,
    safe_text,
)
from patchmoi.core.feeds.npm import parse_npm
from patchmoi.core.records import iso_from_datetime, now_iso

__all__ = [
    "MAX_ID_CHARS",
    "FeedEntry",
    "FeedParseError",
    "ParsedFeed",
    "SkippedEntry",
    "decode_xml",
    "parse_feed",
    "parse_npm",
    "parse_xml_feed",
    "parse_xml_feed_fast",
    "safe_text",
]

_PROLOG_LIMIT = 4096
_SCAN_CHUNK = 1 << 16
# names the first tag of a document expat cannot read, for the error message only; never used to edit text
_ROOT = re.compile(r"<\s*([A-Za-z][\w:.-]*)")
# where feedparser takes the first element to start (its `replace_doctype`): it reads declarations before it
_FIRST_ELEMENT = re.compile(rb"<\w")
_DECL_ENCODING = re.compile(rb"""^<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][\w.:-]{0,39})["']""")

# A byte order mark is authoritative (XML 1.0 §4.3.3); UTF-32 first, its LE mark starts like UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# '<?' without a byte order mark (XML 1.0 Appendix F).
_MARKS = {
    b"\x00\x00\x00\x3c": "utf-32-be",
    b"\x3c\x00\x00\x00": "utf-32-le",
    b"\x00\x3c\x00\x3f": "utf-16-be",
    b"\x3c\x00\x3f\x00": "utf-16-le",
    b"\x4c\x6f\xa7\x94": "cp037",
}
# Codecs a document may not ask for: they are not character encodings of XML, and some are very slow.
_REFUSED_CODECS = {"punycode", "idna", "unicode-escape", "raw-unicode-escape"}

_CHAR_REF = re.compile(r"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));?")


def _iso_from_struct(value: time.struct_time) -> str:
    return iso_from_datetime(datetime.fromtimestamp(calendar.timegm(value), UTC))


def parse_feed(body: bytes, *, provider: str, content_type: str | None = None) -> ParsedFeed:
    if provider == "npm":
        return parse_npm(body)
    return parse_xml_feed(body, content_type=content_type)


# -- Atom / RSS --------------------------------------------------------------------------------------------
def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    return None if info.name in _REFUSED_CODECS else info.name


def _content_type(value: str | None) -> tuple[str, str | None]:
    media, _, params = (value or "").partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return media.strip().lower(), charset


def decode_xml(body: bytes, content_type: str | None = None) -> tuple[str, list[str]]:
    """The document as text, and warnings about its encoding.

    A byte order mark wins, then the `<?xml` pattern of Appendix F for UTF-16/32 and EBCDIC without one,
    then the HTTP charset, then the encoding declared in the document, then UTF-8 (RFC 7303 §3). If the
    chosen encoding does not fit the bytes, UTF-8 and then windows-1252 are tried, as feedparser does.
    """
    warnings: list[str] = []
    for bom, name in _BOMS:
        if body.startswith(bom):
            return _decode(body[len(bom) :], name, warnings), warnings
    charset = _content_type(content_type)[1]
    family = _MARKS.get(body[:4])
    if family is not None:
        head = body[:512].decode(family, "replace").encode("ascii", "replace")
        match = _DECL_ENCODING.match(head)
        declared = _codec(match.group(1).decode("ascii")) if match else None
        # the declaration can only pick an EBCDIC variant (cp037 -> cp500); a UTF-16/32 family is what it is
        if family == "cp037" and declared and declared.startswith("cp"):
            family = declared
        return _decode(body, family, warnings), warnings
    match = _DECL_ENCODING.match(body[:512])
    declared_name = match.group(1).decode("ascii") if match else None
    wanted = charset or declared_name or "utf-8"
    for candidate in dict.fromkeys((charset, declared_name, "utf-8", "windows-1252")):
        codec = _codec(candidate)
        if codec is None:
            continue
        try:
            text = body.decode(codec)
        except UnicodeDecodeError:
            continue
        if candidate != wanted:
            warnings.append(
                f"document is declared as {wanted[:40]!r} but is not valid {wanted[:40]!r}; read it as {codec}"
            )
        return text, warnings
    return _decode(body, "utf-8", warnings), warnings


def _decode(body: bytes, codec: str, warnings: list[str]) -> str:
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        warnings.append(
            f"document is not valid {codec} ({exc.reason} at byte {exc.start}); undecodable bytes were replaced"
        )
        return body.decode(codec, "replace")


def _fix_char_refs(text: str) -> str:
    """Character references to characters XML does not allow, replaced by a reference to INVALID_REF.

    CDATA sections are left alone (their text is literal); one linear pass, however the sections nest.
    """
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("<![CDATA[", pos)
        if start < 0:
            out.append(_CHAR_REF.sub(_fix_char_ref, text[pos:]))
            return "".join(out)
        out.append(_CHAR_REF.sub(_fix_char_ref, text[pos:start]))
        end = text.find("]]>", start)
        pos = len(text) if end < 0 else end + 3
        out.append(text[start:pos])


def _fix_char_ref(match: re.Match[str]) -> str:
    digits = match.group(1) or match.group(2)
    if len(digits) <= 8:
        code = int(digits, 16 if match.group(1) else 10)
        if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF:
            return match.group(0)
    return f"&#x{ord(INVALID_REF):X};"


MAX_PROLOG_LINES = 1000
"""Lines allowed before the root element (feedparser's prolog scan is quadratic in them)."""


class _RootReached(Exception):
    """Ends the prolog scan at the root element's start tag: no entity can be declared after it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _scan_prolog(data: bytes) -> str | None:
    """The root element's name as expat reads it, or None if expat fails before it outside a DOCTYPE.

    Raises FeedParseError if the DTD declares an entity or refers to a parameter entity, or if expat cannot
    read the DOCTYPE (then nobody can tell what it declares). `data` is UTF-8 whatever it declares.
    """
    parser = expat.ParserCreate(encoding="utf-8")  # overrides the document's declaration
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)  # never read an external DTD
    in_dtd = False
    mark = 0  # where the prolog item expat is reading begins: the end of the last one it reported

    def entity_decl(
        name: str,
        is_parameter: int,
        value: str | None,
        base: str | None,
        system_id: str | None,
        public_id: str | None,
        notation: str | None,
    ) -> None:
        kind = "parameter entity" if is_parameter else "entity"
        where = "external " if system_id or public_id else ""
        raise FeedParseError(
            f"document declares XML entities in its DTD ({where}{kind} "
            f"{safe_text(name, 60)!r}); refused (entities are never expanded or fetched)"
        )

    def external_ref(context: str | None, base: str | None, system_id: str | None, public_id: str | None) -> int:
        target = safe_text(system_id or public_id or "", 80)
        raise FeedParseError(
            f"document refers to an external entity ({target!r}); refused (external entities are never fetched)"
        )

    def start_doctype(name: str, system_id: str | None, public_id: str | None, has_internal_subset: int) -> None:
        nonlocal in_dtd
        in_dtd = True

    def end_doctype() -> None:
        nonlocal in_dtd, mark
        in_dtd = False
        mark = parser.CurrentByteIndex + 1  # expat reports the end at the closing '>'

    def other(text: str) -> None:  # the XML declaration, comments, white space, markup inside the DTD
        nonlocal mark
        if in_dtd and text.startswith("%"):
            raise FeedParseError(
                f"document's DTD refers to the parameter entity {safe_text(text, 60)!r}; refused "
                "(external DTDs and entities are never loaded)"
            )
        mark = parser.CurrentByteIndex + len(text.encode("utf-8"))

    def start_element(name: str, attributes: dict[str, str]) -> None:
        raise _RootReached(name)

    parser.EntityDeclHandler = entity_decl
    parser.ExternalEntityRefHandler = external_ref
    parser.StartDoctypeDeclHandler = start_doctype
    parser.EndDoctypeDeclHandler = end_doctype
    parser.DefaultHandler = other
    parser.StartElementHandler = start_element
    try:
        for pos in range(0, len(data), _SCAN_CHUNK):
            parser.Parse(data[pos : pos + _SCAN_CHUNK], False)
        parser.Parse(b"", True)
    except _RootReached as root:
        return root.name
    except expat.ExpatError as exc:
        rest = data[mark : mark + 200].lstrip()
        if not in_dtd and rest[:9].upper() != b"<!DOCTYPE":
            return None  # a malformed prolog without a DTD: feedparser may still read it
        name = rest[9:].split(b">")[0].split(b"[")[0].split()[:1] if not in_dtd else []
        if name and name[0].lower() == b"html":
            raise FeedParseError("got an HTML page, not an Atom or RSS feed") from None
        raise FeedParseError(
            f"document's DOCTYPE could not be read ({expat.ErrorString(exc.code)} at line "
            f"{exc.lineno}, column {exc.offset}); refused (entities are never expanded)"
        ) from None
    return None  # not reached: expat reports a document without an element as an error


class _Document(NamedTuple):
    """A document past the checks, as feedparser (or the fast reader) gets it."""

    data: bytes
    """UTF-8, whatever the original encoding."""
    text: str
    warnings: list[str]
    media: str
    """The media type feedparser is told (with `charset=utf-8`)."""
    root: str | None


def _prepare(body: bytes, content_type: str | None) -> _Document:
    """Decode the body and run every check that refuses a document before any parser reads it."""
    text, warnings = decode_xml(body, content_type)
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        raise FeedParseError("empty response body (expected an Atom or RSS document)")
    if text[:1] in ("{", "["):
        raise FeedParseError("got JSON where an Atom or RSS document was expected (is provider 'npm' intended?)")
    if "&#" in text:
        text = _fix_char_refs(text)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # unpaired surrogates (only UTF-7 decodes to them): not text, like &#xD800;
        data = text.translate(_SURROGATES).encode("utf-8")
    root = _scan_prolog(data)
    if root is not None and root.rpartition(":")[2].lower() == "html":
        raise FeedParseError("got an HTML page, not an Atom or RSS feed")
    # feedparser looks for entity declarations by its own reading of the text before its first element (inside a
    # comment, or in a prolog expat could not read, too) and expands what it finds, outside expat's limits if the
    # document is not well-formed: 19 KB can become a 30 MB title. Real declarations were refused above.
    first = _FIRST_ELEMENT.search(data)
    if first is not None and b"<!ENTITY" in data[: first.start()]:
        raise FeedParseError(
            "document declares XML entities before its root element ('<!ENTITY' outside a DTD, "
            "which the feed parser would read as a declaration); refused (entities are never "
            "expanded)"
        )
    if first is not None and data.count(b"\n", 0, first.start()) > MAX_PROLOG_LINES:
        # feedparser's DOCTYPE scan takes time quadratic in the lines before the root: 16,000 blank lines cost
        # 2.4 s of CPU, 5 MiB of them days. Real prologs are a few lines.
        raise FeedParseError(
            f"document has more than {MAX_PROLOG_LINES} lines before its root element; refused "
            "(reading such a prolog costs the feed parser time quadratic in its length)"
        )
    media, _ = _content_type(content_type)
    if not _charset_honoured(media):  # feedparser would believe the document's encoding declaration instead
        if media:
            warnings.append(f"served as {safe_text(media, 80)!r}, which is not an XML media type; read as XML")
        media = "application/xml"
    return _Document(data, text, warnings, media, root)


def parse_xml_feed(body: bytes, *, content_type: str | None = None, fast: bool = True) -> ParsedFeed:
    """An Atom/RSS document's entries: by the fast structural reader when it can, else by feedparser.

    `fast=False` always uses feedparser (the reference the fast reader is compared with; the worker process
    that runs feedparser for a document the fast reader declined).
    """
    document = _prepare(body, content_type)
    if fast:
        parsed = _read_fast(document)
        if parsed is not None:
            return parsed
    return _read_feedparser(document)


def parse_xml_feed_fast(body: bytes, *, content_type: str | None = None) -> ParsedFeed | None:
    """`parse_xml_feed` by the fast reader only: None when the document needs feedparser.

    Refusals (FeedParseError) are the same as `parse_xml_feed`'s: the checks run first either way.
    """
    return _read_fast(_prepare(body, content_type))


def _read_fast(document: _Document) -> ParsedFeed | None:
    fast = fastparse.read(document.data)
    if fast is None:
        return None
    warnings = list(document.warnings)
    if not _xml_media(document.media):  # the one thing feedparser flags in a document its strict parser reads
        flagged = f"{document.media}; charset=utf-8 is not an XML media type"  # its NonXMLContentType
        warnings.append(f"feed needed repair by the parser: {safe_text(flagged)}")
    return _entries(fast.entries, fast.version, warnings)


def _read_feedparser(document: _Document) -> ParsedFeed:
    warnings, root = document.warnings, document.root
    headers = {"content-type": f"{document.media}; charset=utf-8"}
    try:
        parsed = feedparser.parse(io.BytesIO(document.data), response_headers=headers)
    except Exception as exc:  # feedparser's own failure on a strange document: one clear error, no traceback
        raise FeedParseError(
            f"the feed parser failed on this document ({type(exc).__name__}: {safe_text(str(exc))})"
        ) from None
    version = parsed.get("version") or ""
    if not version:
        if root is None:
            match = _ROOT.search(document.text[:_PROLOG_LIMIT])
            root = match.group(1) if match else None
        what = safe_text(root).lower() if root else "unknown content"
        if what == "html":
            raise FeedParseError("got an HTML page, not an Atom or RSS feed")
        reason = parsed.get("bozo_exception")
        detail = f": {safe_text(str(reason))}" if reason else ""
        raise FeedParseError(f"not an Atom or RSS document (root element <{what}>){detail}")
    if parsed.get("bozo"):
        warnings.append(f"feed needed repair by the parser: {safe_text(str(parsed.get('bozo_exception')))}")
    return _entries(parsed.get("entries", []), version, warnings)


def _entries(items: list[Any], version: str, warnings: list[str]) -> ParsedFeed:
    atom = version.startswith("atom")
    entries: list[FeedEntry] = []
    skipped: list[SkippedEntry] = []
    for item in items:
        try:
            entries.append(_xml_entry(item, atom))
        except EntrySkip as skip:
            skipped.append(SkippedEntry(skip.entry_id, skip.reason, len(entries)))
        except Exception as exc:  # anything else odd about one entry costs that entry only
            entry_id = clean(item.get("id")) if hasattr(item, "get") else ""
            skipped.append(
                SkippedEntry(
                    entry_id or None, f"could not be read ({type(exc).__name__}: {safe_text(str(exc))})", len(entries)
                )
            )
    return ParsedFeed(entries=date_undated(entries, now_iso()), warnings=warnings, kind=version, skipped=skipped)


_XML_MEDIA = ("application/xml", "application/xml-dtd", "application/xml-external-parsed-entity")
_SURROGATES = {code: INVALID_REF for code in range(0xD800, 0xE000)}


def _xml_media(media: str) -> bool:
    """Whether feedparser takes this media type for XML; with any other (text/plain, text/html) it reads the
    document all the same but flags it (bozo, NonXMLContentType)."""
    return (
        media in _XML_MEDIA
        or (media.startswith("application/") and media.endswith("+xml"))
        or media in ("text/xml", "text/xml-external-parsed-entity")
        or (media.startswith("text/") and media.endswith("+xml"))
    )


def _charset_honoured(media: str) -> bool:
    """Whether feedparser takes the charset parameter with this media type over the document's declaration.

    It does for XML and text types; with any other (application/octet-stream, application/json) it would
    decode by the declaration, and the text it gets is UTF-8 whatever the declaration says.
    """
    return (
        media in _XML_MEDIA
        or media.startswith("text/")
        or (media.startswith("application/") and media.endswith("+xml"))
    )


def _entry_link(item: Any) -> str:
    """The href of the entry's own link element; never its id.

    feedparser copies an Atom id or an RSS guid into `link` when the entry has no link element
    (`guidislink`), so `link` counts only if it is one of the entry's `links`; else the first alternate.
    """
    links = [link for link in item.get("links") or [] if hasattr(link, "get") and clean(link.get("href"))]
    hrefs = [clean(link.get("href")) for link in links]
    chosen = clean(item.get("link"))
    if chosen and chosen in hrefs:
        return chosen
    return next((clean(link.get("href")) for link in links if link.get("rel", "alternate") == "alternate"), "")


def _iso_from_raw(raw: str) -> str | None:
    """An ISO 8601 / RFC 3339 date with its milliseconds (feedparser's struct_time drops them), else None.

    A value without a zone is UTC. RFC 822 dates and other shapes are left to feedparser.
    """
    if not raw[:1].isdigit():
        return None
    try:
        return iso_from_datetime(datetime.fromisoformat(raw))
    except (ValueError, OverflowError):
        return None


def _date_field(item: Any, key: str) -> Any:
    """`item[key]`, or None. A FeedParserDict's `get("updated")` falls back to `published` with a
    DeprecationWarning; the callers spell that fallback out themselves."""
    return dict.get(item, key) if isinstance(item, dict) else item.get(key)


def _xml_entry(item: Any, atom: bool) -> FeedEntry:
    link = _entry_link(item)
    title = clean(item.get("title"))
    entry_id = clean(item.get("id")) or link or title
    if not entry_id:
        raise EntrySkip(None, "without id, link or title")
    for name, value in (("id", entry_id), ("title", title), ("link", link)):
        bad = bad_char(value)
        if bad:
            raise EntrySkip(entry_id, f"its {name} contains {bad}")
    if len(entry_id) > MAX_ID_CHARS:
        raise EntrySkip(entry_id, f"its id is longer than {MAX_ID_CHARS} characters")
    if link:
        try:
            urlsplit(link)
        except ValueError as exc:
            raise EntrySkip(entry_id, f"its link is not a usable URL ({exc})") from None
    first, second = ("updated", "published") if atom else ("published", "updated")
    raw_date = printable(clean(_date_field(item, first)) or clean(_date_field(item, second)))
    error = None
    published = _iso_from_raw(raw_date)
    if published is None:  # only then the parsed date counts (the fast reader leaves it out otherwise)
        parsed_date = _date_field(item, f"{first}_parsed") or _date_field(item, f"{second}_parsed")
        if parsed_date is not None:
            try:
                published = _iso_from_struct(parsed_date)
            except (ValueError, OverflowError, OSError, TypeError):
                error = f"date {raw_date[:60]!r} is out of range; used the time it was seen"
        elif raw_date:
            error = f"unparsable date {raw_date[:60]!r}; used the time it was seen"
    return FeedEntry(
        id=entry_id,
        title=title or ("Untitled feed entry" if atom else "Untitled feed item"),
        url=link or None,
        author=printable(clean(item.get("author"))) or None,
        published_raw=raw_date or None,
        published_at=published or now_iso(),
        error=error,
    )
