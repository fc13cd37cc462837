"""Parse Atom/RSS (feedparser) and npm packuments (JSON) into feed entries, newest first (spec §2).

Hostile documents are refused before parsing: a DTD that declares entities (billion laughs, external
entities) is an error, never expanded or fetched. The body is decoded here first (a byte order mark decides
the encoding, then the HTTP charset, then the XML declaration, as XML 1.0 Appendix F and RFC 7303 say), so
those checks look at the text the parser will actually read, whatever its encoding (UTF-16, UTF-32,
EBCDIC, ...), and feedparser is handed UTF-8. The body goes to feedparser as a stream, so feedparser never
treats it as a URL or file name. A 200 that is not a feed (HTML, empty, JSON where XML was expected) is an
error, not an empty feed.

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
from typing import Any
from urllib.parse import urlsplit

import feedparser

from core.feeds.entries import (
    INVALID_REF,
    MAX_ID_CHARS,
    EntrySkip,
    FeedEntry,
    FeedParseError,
    ParsedFeed,
    SkippedEntry,
    bad_char,
    clean,
    printable,
    safe_text,
)
from core.feeds.npm import parse_npm
from core.records import iso_from_datetime, now_iso

__all__ = ["MAX_ID_CHARS", "FeedEntry", "FeedParseError", "ParsedFeed", "SkippedEntry", "decode_xml", "parse_feed",
           "parse_npm", "parse_xml_feed", "safe_text"]

_PROLOG_LIMIT = 4096
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)
_DOCTYPE = re.compile(r"<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", re.IGNORECASE | re.DOTALL)
_HTML_DOCTYPE = re.compile(r"\s*(<\?xml[^>]*>\s*)?<!DOCTYPE\s+html", re.IGNORECASE)
_ROOT = re.compile(r"<\s*([A-Za-z][\w:.-]*)")
_XML_DECL = re.compile(r"<\?xml[^>]*?\?>")
_DECL_ENCODING = re.compile(rb"""^<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][\w.:-]{0,39})["']""")

# A byte order mark is authoritative (XML 1.0 §4.3.3); UTF-32 first, its LE mark starts like UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# '<?' without a byte order mark (XML 1.0 Appendix F).
_MARKS = {
    b"\x00\x00\x00\x3c": "utf-32-be", b"\x3c\x00\x00\x00": "utf-32-le",
    b"\x00\x3c\x00\x3f": "utf-16-be", b"\x3c\x00\x3f\x00": "utf-16-le", b"\x4c\x6f\xa7\x94": "cp037",
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
            return _decode(body[len(bom):], name, warnings), warnings
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
            warnings.append(f"document is declared as {wanted[:40]!r} but is not valid {wanted[:40]!r}; "
                            f"read it as {codec}")
        return text, warnings
    return _decode(body, "utf-8", warnings), warnings


def _decode(body: bytes, codec: str, warnings: list[str]) -> str:
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        warnings.append(f"document is not valid {codec} ({exc.reason} at byte {exc.start}); "
                        "undecodable bytes were replaced")
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


def parse_xml_feed(body: bytes, *, content_type: str | None = None) -> ParsedFeed:
    text, warnings = decode_xml(body, content_type)
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        raise FeedParseError("empty response body (expected an Atom or RSS document)")
    if text[:1] in ("{", "["):
        raise FeedParseError("got JSON where an Atom or RSS document was expected (is provider 'npm' intended?)")
    head = text[:_PROLOG_LIMIT]
    if _ENTITY_DECL.search(text[: 1 << 16]):
        raise FeedParseError("document declares XML entities in a DTD; refused (entities are never expanded)")
    if "<!DOCTYPE" in head.upper():
        if _HTML_DOCTYPE.match(text):
            raise FeedParseError("got an HTML page, not an Atom or RSS feed")
        text = _DOCTYPE.sub("", text, count=1)
    if "&#" in text:
        text = _fix_char_refs(text)
    # the text is handed on as UTF-8 and says so, whatever the document or the server claimed
    decl = _XML_DECL.match(text)
    if decl:
        text = '<?xml version="1.0" encoding="utf-8"?>' + text[decl.end():]
    media, _ = _content_type(content_type)
    headers = {"content-type": f"{media or 'application/xml'}; charset=utf-8"}
    try:
        parsed = feedparser.parse(io.BytesIO(text.encode("utf-8")), response_headers=headers)
    except Exception as exc:  # feedparser's own failure on a strange document: one clear error, no traceback
        raise FeedParseError(f"the feed parser failed on this document ({type(exc).__name__}: "
                             f"{safe_text(str(exc))})") from None
    version = parsed.get("version") or ""
    if not version:
        root = _ROOT.search(text[:_PROLOG_LIMIT])
        what = safe_text(root.group(1)).lower() if root else "unknown content"
        if what == "html":
            raise FeedParseError("got an HTML page, not an Atom or RSS feed")
        reason = parsed.get("bozo_exception")
        detail = f": {safe_text(str(reason))}" if reason else ""
        raise FeedParseError(f"not an Atom or RSS document (root element <{what}>){detail}")
    if parsed.get("bozo"):
        warnings.append(f"feed needed repair by the parser: {safe_text(str(parsed.get('bozo_exception')))}")
    atom = version.startswith("atom")
    entries: list[FeedEntry] = []
    skipped: list[SkippedEntry] = []
    for item in parsed.get("entries", []):
        try:
            entries.append(_xml_entry(item, atom))
        except EntrySkip as skip:
            skipped.append(SkippedEntry(skip.entry_id, skip.reason, len(entries)))
        except Exception as exc:  # anything else odd about one entry costs that entry only
            entry_id = clean(item.get("id")) if hasattr(item, "get") else ""
            skipped.append(SkippedEntry(entry_id or None,
                                        f"could not be read ({type(exc).__name__}: {safe_text(str(exc))})",
                                        len(entries)))
    return ParsedFeed(entries=entries, warnings=warnings, kind=version, skipped=skipped)


def _xml_entry(item: Any, atom: bool) -> FeedEntry:
    link = clean(item.get("link"))
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
    if atom:
        raw_date = clean(item.get("updated")) or clean(item.get("published"))
        parsed_date = item.get("updated_parsed") or item.get("published_parsed")
    else:
        raw_date = clean(item.get("published")) or clean(item.get("updated"))
        parsed_date = item.get("published_parsed") or item.get("updated_parsed")
    raw_date = printable(raw_date)
    error = None
    published = None
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
