"""PyPI's JSON API (`/pypi/<name>/json`): one entry per version with uploaded files, newest first.

A version is dated by its earliest upload (a wheel added later does not make it new). A version whose
files are all yanked is kept, marked `extra["yanked"]`, so selection can say why it was passed over.
"""

from __future__ import annotations

import bisect
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from patchmoi.core.feeds.entries import (
    MAX_ID_CHARS,
    EntrySkip,
    FeedEntry,
    FeedParseError,
    ParsedFeed,
    SkippedEntry,
    bad_char,
    date_undated,
    load_json,
    printable,
    safe_text,
)
from patchmoi.core.records import iso_from_datetime, now_iso

# PEP 508 project names; PEP 503 normalization
_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """PEP 503: lowercase, runs of `-`, `_` and `.` become one `-`."""
    return _SEPARATORS.sub("-", name).lower()


def _project_url(info: dict[str, Any], name: str) -> str:
    """Where the project's pages are: the index's own `project_url`/`package_url` when it is an http(s)
    `/project/<name>/` page (a private index serving the same API), else pypi.org."""
    for key in ("project_url", "package_url"):
        value = info.get(key)
        if not isinstance(value, str) or bad_char(value) or any(c.isspace() for c in value):
            continue
        try:
            parts = urlsplit(value)
        except ValueError:
            continue
        if (
            parts.scheme in ("http", "https")
            and parts.hostname
            and "/project/" in parts.path
            and not parts.query
            and not parts.username
        ):
            return value if value.endswith("/") else value + "/"
    return f"https://pypi.org/project/{quote(name, safe='')}/"


def parse_pypi(body: bytes) -> ParsedFeed:
    """A PyPI JSON API document: one entry per version with files, newest first by first upload."""
    if not body.strip():
        raise FeedParseError("empty response body (expected a PyPI JSON API document)")
    warnings: list[str] = []
    doc = load_json(body, warnings, "PyPI document")
    if not isinstance(doc, dict):
        raise FeedParseError(f"PyPI document is a JSON {type(doc).__name__}, not an object")
    info, releases = doc.get("info"), doc.get("releases")
    if not isinstance(info, dict):
        raise FeedParseError("PyPI document has no 'info' object (is this the /pypi/<name>/json API?)")
    if not isinstance(releases, dict):
        raise FeedParseError("PyPI document has no 'releases' object (is this the /pypi/<name>/json API?)")
    raw_name = info.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise FeedParseError("PyPI document has no project name (info.name)")
    if len(raw_name) > 200 or not _NAME.fullmatch(raw_name):
        raise FeedParseError(
            f"PyPI document's project name {safe_text(printable(raw_name), 80)!r} is not a valid Python project name"
        )
    name = normalize_name(raw_name)
    base = _project_url(info, raw_name)
    entries: list[tuple[float, FeedEntry]] = []
    skipped: list[tuple[float, SkippedEntry]] = []
    empty = 0
    for version, files in releases.items():
        entry_id = f"pypi:{name}:{version}"
        try:
            if isinstance(files, list) and not files:
                empty += 1
                continue
            entries.append(_pypi_entry(base, version, files, entry_id))
        except _Skip as skip:
            skipped.append((skip.order, SkippedEntry(skip.entry_id, skip.reason)))
        except Exception as exc:  # anything else odd about one version costs that version only
            skipped.append(
                (
                    float("inf"),
                    SkippedEntry(entry_id, f"could not be read ({type(exc).__name__}: {safe_text(str(exc))})"),
                )
            )
    if empty:
        warnings.append(f"{empty} version{' has' if empty == 1 else 's have'} no uploaded files; left out")
    entries.sort(key=lambda pair: pair[0], reverse=True)  # stable: same date keeps document order
    ascending = sorted(o for o, _ in entries)
    for order, left_out in skipped:  # how many entries are newer: where it would have been
        left_out.position = len(ascending) - bisect.bisect_right(ascending, order) if order != float("inf") else 0
    return ParsedFeed(
        entries=date_undated([e for _, e in entries], now_iso()),
        warnings=warnings,
        kind="pypi",
        skipped=[s for _, s in skipped],
        package=raw_name,
    )


class _Skip(EntrySkip):
    """Also carries the version's date order when known: `SkippedEntry.position` is where it would have been."""

    def __init__(self, entry_id: str, reason: str, order: float = float("inf")) -> None:
        super().__init__(entry_id, reason)
        self.order = order


def _upload_time(file: dict[str, Any]) -> tuple[str, datetime] | None:
    """A file's upload time, raw and parsed (`upload_time_iso_8601`, else the older UTC `upload_time`)."""
    for key in ("upload_time_iso_8601", "upload_time"):
        raw = file.get(key)
        if not isinstance(raw, str) or bad_char(raw):
            continue
        try:
            when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
            when = (when.replace(tzinfo=UTC) if when.tzinfo is None else when).astimezone(UTC)
            when.timestamp()  # out of range for a timestamp: OverflowError/ValueError here
        except (ValueError, OverflowError):
            continue
        return raw, when
    return None


def _pypi_entry(base: str, version: str, files: Any, entry_id: str) -> tuple[float, FeedEntry]:
    if not isinstance(files, list):
        raise _Skip(entry_id, f"its file list is a JSON {type(files).__name__}, not a list")
    uploads = [f for f in files if isinstance(f, dict)]
    if not uploads:
        raise _Skip(entry_id, "none of its files is a JSON object")
    times = [t for t in map(_upload_time, uploads) if t is not None]
    error = None
    if times:
        raw, when = min(times, key=lambda pair: pair[1])
        published, order = iso_from_datetime(when), when.timestamp()
    else:
        stamps = [f.get("upload_time_iso_8601", f.get("upload_time")) for f in uploads]
        raw = next((printable(s) for s in stamps if isinstance(s, str)), safe_text(str(stamps[0]), 100))
        published, order = now_iso(), float("inf")
        error = f"no readable upload time (first: {raw[:60]!r}); used the time it was seen"
    bad = bad_char(version)
    if bad:
        raise _Skip(entry_id, f"its version contains {bad}", order)
    if not version.strip():
        raise _Skip(entry_id, "its version is empty", order)
    if len(entry_id) > MAX_ID_CHARS:
        raise _Skip(entry_id, f"its id is longer than {MAX_ID_CHARS} characters", order)
    extra: dict[str, Any] = {}
    if all(f.get("yanked") is True for f in uploads):
        extra["yanked"] = True
        reason = next((r for r in (f.get("yanked_reason") for f in uploads) if isinstance(r, str) and r.strip()), None)
        if reason:
            extra["yankedReason"] = safe_text(printable(reason.strip()), 300)
    entry = FeedEntry(
        id=entry_id,
        title=version,
        url=f"{base}{quote(version, safe='')}/",
        author="pypi",
        published_raw=raw,
        published_at=published,
        error=error,
        extra=extra,
        version=version,
    )
    return order, entry
