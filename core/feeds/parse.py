"""Parse Atom/RSS (feedparser) and npm packuments (JSON) into feed entries, newest first (spec §2).

Hostile documents are refused before parsing: a DTD that declares entities (billion laughs, external
entities) is an error, never expanded or fetched. The body is handed to feedparser as a stream, so
feedparser never treats it as a URL or file name. A 200 that is not a feed (HTML, empty, JSON where XML
was expected) is an error, not an empty feed.
"""

from __future__ import annotations

import calendar
import io
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import feedparser

from core.records import iso_from_datetime, now_iso

_PROLOG_LIMIT = 4096
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_DOCTYPE = re.compile(rb"<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", re.IGNORECASE | re.DOTALL)


class FeedParseError(Exception):
    """The document is not a usable feed. The message says why in operator terms."""


@dataclass
class FeedEntry:
    id: str
    title: str
    url: str | None
    author: str | None
    published_raw: str | None
    published_at: str
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedFeed:
    entries: list[FeedEntry]
    warnings: list[str]
    kind: str


def _iso_from_struct(value: time.struct_time) -> str:
    return iso_from_datetime(datetime.fromtimestamp(calendar.timegm(value), UTC))


def _clean(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_feed(body: bytes, *, provider: str, content_type: str | None = None) -> ParsedFeed:
    if provider == "npm":
        return parse_npm(body)
    return parse_xml_feed(body, content_type=content_type)


def parse_xml_feed(body: bytes, *, content_type: str | None = None) -> ParsedFeed:
    stripped = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        raise FeedParseError("empty response body (expected an Atom or RSS document)")
    if stripped[:1] in (b"{", b"["):
        raise FeedParseError("got JSON where an Atom or RSS document was expected (is provider 'npm' intended?)")
    head = stripped[:_PROLOG_LIMIT]
    if _ENTITY_DECL.search(body[: 1 << 16]):
        raise FeedParseError("document declares XML entities in a DTD; refused (entities are never expanded)")
    if b"<!DOCTYPE" in head.upper():
        if re.match(rb"\s*(<\?xml[^>]*>\s*)?<!DOCTYPE\s+html", stripped, re.IGNORECASE):
            raise FeedParseError("got an HTML page, not an Atom or RSS feed")
        stripped = _DOCTYPE.sub(b"", stripped, count=1)
    headers = {"content-type": content_type or "application/xml"}
    parsed = feedparser.parse(io.BytesIO(stripped), response_headers=headers)
    version = parsed.get("version") or ""
    if not version:
        root = re.search(rb"<\s*([A-Za-z][\w:.-]*)", stripped[:_PROLOG_LIMIT])
        what = root.group(1).decode("ascii", "replace").lower() if root else "unknown content"
        if what == "html":
            raise FeedParseError("got an HTML page, not an Atom or RSS feed")
        reason = parsed.get("bozo_exception")
        detail = f": {reason}" if reason else ""
        raise FeedParseError(f"not an Atom or RSS document (root element <{what}>){detail}")
    warnings = []
    if parsed.get("bozo"):
        warnings.append(f"feed needed repair by the parser: {parsed.get('bozo_exception')}")
    atom = version.startswith("atom")
    entries: list[FeedEntry] = []
    for item in parsed.get("entries", []):
        link = _clean(item.get("link"))
        title = _clean(item.get("title"))
        entry_id = _clean(item.get("id")) or link or title
        if not entry_id:
            warnings.append("an entry without id, link or title was skipped")
            continue
        if atom:
            raw_date = _clean(item.get("updated")) or _clean(item.get("published"))
            parsed_date = item.get("updated_parsed") or item.get("published_parsed")
        else:
            raw_date = _clean(item.get("published")) or _clean(item.get("updated"))
            parsed_date = item.get("published_parsed") or item.get("updated_parsed")
        error = None
        if parsed_date is not None:
            published = _iso_from_struct(parsed_date)
        else:
            published = now_iso()
            if raw_date:
                error = f"unparsable date {raw_date[:60]!r}; used the time it was seen"
        entries.append(FeedEntry(
            id=entry_id,
            title=title or ("Untitled feed entry" if atom else "Untitled feed item"),
            url=link or None,
            author=_clean(item.get("author")) or None,
            published_raw=raw_date or None,
            published_at=published,
            error=error,
        ))
    return ParsedFeed(entries=entries, warnings=warnings, kind=version)


def parse_npm(body: bytes) -> ParsedFeed:
    """An npm packument: one entry per version in `time` (newest first), dist-tags kept."""
    if not body.strip():
        raise FeedParseError("empty response body (expected an npm packument)")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise FeedParseError(f"npm packument is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("time"), dict):
        raise FeedParseError("npm packument has no 'time' object")
    raw_name = doc.get("name")
    name = raw_name if isinstance(raw_name, str) and raw_name else "unknown-package"
    tags: dict[str, list[str]] = {}
    dist_tags = doc.get("dist-tags")
    if isinstance(dist_tags, dict):
        for tag, version in dist_tags.items():
            if isinstance(version, str):
                tags.setdefault(version, []).append(str(tag))
    entries: list[tuple[float, FeedEntry]] = []
    warnings: list[str] = []
    for version, stamp in doc["time"].items():
        if version in ("created", "modified") or not isinstance(version, str):
            continue
        error = None
        try:
            when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            published = iso_from_datetime(when)
            order = when.timestamp()
        except ValueError:
            published, order = now_iso(), float("inf")
            error = f"unparsable date {str(stamp)[:60]!r}; used the time it was seen"
        entry = FeedEntry(
            id=f"npm:{name}:{version}",
            title=version,
            url=f"https://www.npmjs.com/package/{quote(name, safe='')}/v/{quote(version, safe='')}",
            author="npm",
            published_raw=str(stamp),
            published_at=published,
            error=error,
            extra={"distTags": tags[version]} if version in tags else {},
        )
        entries.append((order, entry))
    entries.sort(key=lambda pair: pair[0], reverse=True)
    return ParsedFeed(entries=[e for _, e in entries], warnings=warnings, kind="npm")
