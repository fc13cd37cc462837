"""npm packuments (JSON): one entry per published version, newest first, with the dist-tags (spec §2)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from core.feeds.entries import (
    MAX_ID_CHARS,
    EntrySkip,
    FeedEntry,
    FeedParseError,
    ParsedFeed,
    SkippedEntry,
    bad_char,
    printable,
    safe_text,
)
from core.records import iso_from_datetime, now_iso


# -------------------------------------------------------------------------------------------------
def _int_or_text(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows: kept as the digits
        return digits


def _load_json(body: bytes, warnings: list[str]) -> Any:
    encoding = json.detect_encoding(body)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        warnings.append(f"npm document is not valid {encoding} ({exc.reason} at byte {exc.start}); "
                        "undecodable bytes were replaced")
        text = body.decode(encoding, "replace")
    text = text.removeprefix("\ufeff")
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:
            # a number longer than Python converts by default (4300 digits): the document may still be JSON
            doc = json.loads(text, parse_int=_int_or_text)
            limit = sys.get_int_max_str_digits()
            warnings.append(f"npm document has a number with more than {limit} digits; kept it as text")
            return doc
    except json.JSONDecodeError as exc:
        raise FeedParseError(f"npm packument is not valid JSON: {exc}") from None
    except RecursionError:
        raise FeedParseError("npm packument is nested too deeply to read") from None


def parse_npm(body: bytes) -> ParsedFeed:
    """An npm packument: one entry per version in `time` (newest first), dist-tags kept."""
    if not body.strip():
        raise FeedParseError("empty response body (expected an npm packument)")
    warnings: list[str] = []
    doc = _load_json(body, warnings)
    if not isinstance(doc, dict) or not isinstance(doc.get("time"), dict):
        raise FeedParseError("npm packument has no 'time' object")
    raw_name = doc.get("name")
    name = raw_name if isinstance(raw_name, str) and raw_name else "unknown-package"
    bad = bad_char(name)
    if bad:
        warnings.append(f"package name {name[:80]!r} contains {bad}; used 'unknown-package'")
        name = "unknown-package"
    tags: dict[str, list[str]] = {}
    dist_tags = doc.get("dist-tags")
    if isinstance(dist_tags, dict):
        for tag, version in dist_tags.items():
            if not isinstance(version, str):
                continue
            bad = bad_char(tag) or bad_char(version)
            if bad:
                warnings.append(f"ignored dist-tag {tag[:40]!r} -> {version[:80]!r}: it contains {bad}")
                continue
            tags.setdefault(version, []).append(tag)
    entries: list[tuple[float, FeedEntry]] = []
    skipped: list[SkippedEntry] = []
    for version, stamp in doc["time"].items():
        if version in ("created", "modified"):
            continue
        entry_id = f"npm:{name}:{version}"
        try:
            entries.append(_npm_entry(name, version, stamp, tags, entry_id))
        except EntrySkip as skip:
            skipped.append(SkippedEntry(skip.entry_id, skip.reason))
        except Exception as exc:  # anything else odd about one version costs that version only
            skipped.append(SkippedEntry(entry_id, f"could not be read ({type(exc).__name__}: {safe_text(str(exc))})"))
    entries.sort(key=lambda pair: pair[0], reverse=True)
    return ParsedFeed(entries=[e for _, e in entries], warnings=warnings, kind="npm", skipped=skipped)


def _npm_entry(name: str, version: str, stamp: Any, tags: dict[str, list[str]],
               entry_id: str) -> tuple[float, FeedEntry]:
    bad = bad_char(version)
    if bad:
        raise EntrySkip(entry_id, f"its version contains {bad}")
    if not version.strip():
        raise EntrySkip(entry_id, "its version is empty")
    if len(entry_id) > MAX_ID_CHARS:
        raise EntrySkip(entry_id, f"its id is longer than {MAX_ID_CHARS} characters")
    raw = printable(stamp) if isinstance(stamp, str) else safe_text(str(stamp), 100)
    error = None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        published = iso_from_datetime(when)
        order = when.timestamp()
    except (ValueError, OverflowError, TypeError):
        published, order = now_iso(), float("inf")
        error = f"unparsable date {raw[:60]!r}; used the time it was seen"
    entry = FeedEntry(
        id=entry_id,
        title=version,
        url=f"https://www.npmjs.com/package/{quote(name, safe='')}/v/{quote(version, safe='')}",
        author="npm",
        published_raw=raw,
        published_at=published,
        error=error,
        extra={"distTags": tags[version]} if version in tags else {},
    )
    return order, entry
