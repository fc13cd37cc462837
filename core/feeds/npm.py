"""npm packuments (JSON): one entry per published version, newest first, with the dist-tags (spec §2)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

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
from patchmoi.core.feeds.versions import parse_version
from patchmoi.core.records import iso_from_datetime, now_iso

PLATFORM_SUFFIX = re.compile(
    r"-(?:aix|android|darwin|freebsd|linux|netbsd|openbsd|sunos|win32|cygwin|openharmony|macos|windows|win)"
    r"-(?:arm|arm64|armv7|ia32|loong64|mips|mipsel|ppc|ppc64|ppc64le|riscv64|s390|s390x|x64|x86|x86_64|aarch64|"
    r"universal)(?:-(?:gnu|musl|msvc|gnueabihf|musleabihf|eabi))?$"
)
"""A platform build of a version (`0.170.0-linux-x64`, `1.2.0-rc.1-darwin-arm64`): Node's `process.platform`
and `process.arch` names, and a libc. Such builds are one release with their base version, not releases."""


def platform_base(version: str) -> str | None:
    """The version a platform build belongs to, or None when `version` is not a platform build."""
    match = PLATFORM_SUFFIX.search(version)
    return version[: match.start()] if match and match.start() > 0 else None


def parse_npm(body: bytes) -> ParsedFeed:
    """An npm packument: one entry per published release (newest first), with the dist-tags.

    Platform builds (`0.170.0-linux-x64`, ...) are folded into their release (listed in `platformBuilds`;
    when only the builds are out yet, the release is dated by its first build). Versions npm keeps in `time`
    after they were unpublished are left out; a whole unpublished package has no entries, and says so.
    """
    if not body.strip():
        raise FeedParseError("empty response body (expected an npm packument)")
    warnings: list[str] = []
    doc = load_json(body, warnings, "npm document")
    if not isinstance(doc, dict) or not isinstance(doc.get("time"), dict):
        raise FeedParseError("npm packument has no 'time' object")
    raw_name = doc.get("name")
    name = raw_name if isinstance(raw_name, str) and raw_name else "unknown-package"
    bad = bad_char(name)
    if bad:
        warnings.append(f"package name {name[:80]!r} contains {bad}; used 'unknown-package'")
        name = "unknown-package"
    times: dict[str, Any] = doc["time"]
    modified = times.get("modified") if isinstance(times.get("modified"), str) else None
    published = doc.get("versions") if isinstance(doc.get("versions"), dict) else None
    unpublished = times.get("unpublished")
    if isinstance(unpublished, dict) and not published:
        when = unpublished.get("time")
        warnings.append(
            f"npm package {name[:80]!r} was unpublished"
            + (f" at {safe_text(when, 40)}" if isinstance(when, str) else "")
            + "; it has no versions, nothing is emitted"
        )
        return ParsedFeed(entries=[], warnings=warnings, kind="npm", package=name, modified=modified)
    versions = [
        v for v in times if v not in ("created", "modified", "unpublished") and (published is None or v in published)
    ]
    bases = {v: platform_base(v) for v in versions}
    builds: dict[str, list[str]] = {}
    for version, base in bases.items():
        if base is not None:
            builds.setdefault(base, []).append(version)
    tags: dict[str, list[str]] = {}
    dist_tags: dict[str, str] = {}
    raw_tags = doc.get("dist-tags")
    if isinstance(raw_tags, dict):
        for tag, version in raw_tags.items():
            if not isinstance(version, str):
                continue
            bad = bad_char(tag) or bad_char(version)
            if bad:
                warnings.append(f"ignored dist-tag {tag[:40]!r} -> {version[:80]!r}: it contains {bad}")
                continue
            if platform_base(version) is not None:
                continue  # a tag per platform build moves with every release; the release itself is the signal
            tags.setdefault(version, []).append(tag)
            dist_tags[tag] = version
    entries: list[tuple[float, FeedEntry]] = []
    skipped: list[SkippedEntry] = []
    releases = [v for v in versions if bases[v] is None]
    # a release whose platform builds are out before the release itself: one entry, dated by its first build
    releases += [base for base in builds if base not in bases]
    for version in releases:
        entry_id = f"npm:{name}:{version}"
        own = version in bases
        first = version if own else min(builds[version], key=lambda v: str(times.get(v)))
        try:
            order, entry = _npm_entry(name, version, times.get(first), tags, entry_id)
        except EntrySkip as skip:
            skipped.append(SkippedEntry(skip.entry_id, skip.reason))
            continue
        except Exception as exc:  # anything else odd about one version costs that version only
            skipped.append(SkippedEntry(entry_id, f"could not be read ({type(exc).__name__}: {safe_text(str(exc))})"))
            continue
        if version in builds:
            entry.extra["platformBuilds"] = sorted(b[len(version) + 1 :] for b in builds[version])
        entries.append((order, entry))
    entries.sort(key=lambda pair: pair[0], reverse=True)
    return ParsedFeed(
        entries=date_undated([e for _, e in entries], now_iso()),
        warnings=warnings,
        kind="npm",
        skipped=skipped,
        dist_tags=dist_tags if isinstance(raw_tags, dict) else None,
        modified=modified,
        package=name,
    )


def _npm_entry(
    name: str, version: str, stamp: Any, tags: dict[str, list[str]], entry_id: str
) -> tuple[float, FeedEntry]:
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
        version=version,
    )
    return order, entry


def dist_tag_moves(
    package: str, previous: dict[str, str], current: dict[str, str], modified: str | None
) -> list[FeedEntry]:
    """One signal entry per dist-tag that moved, appeared or went away since `previous` (never a release).

    The id names the tag, the move and the packument's `time.modified`, so the same move read again after a
    crash is the same signal, and a tag that moves back later (1.1 -> 1.2 -> 1.1) is a new one.
    A move to a lower version is marked as a rollback.
    """
    moves: list[FeedEntry] = []
    try:
        when = iso_from_datetime(datetime.fromisoformat((modified or "").replace("Z", "+00:00")))
    except ValueError:
        when = now_iso()
    for tag in sorted(set(previous) | set(current)):
        old, new = previous.get(tag), current.get(tag)
        if old == new:
            continue
        old_key = parse_version(old, "semver") if old else None
        new_key = parse_version(new, "semver") if new else None
        rollback = bool(old_key and new_key and new_key.key < old_key.key)
        if new is None:
            title = f"dist-tag {tag} removed (was {old})"
        elif old is None:
            title = f"dist-tag {tag} -> {new} (new tag)"
        else:
            title = f"dist-tag {tag} -> {new} (was {old}{', a rollback' if rollback else ''})"
        extra: dict[str, Any] = {"signal": "dist-tag", "distTag": tag, "version": new, "previous": old}
        if rollback:
            extra["rollback"] = True
        moves.append(
            FeedEntry(
                id=f"npm:{package}:dist-tag:{tag}:{old or '-'}->{new or '-'}" + (f":{modified}" if modified else ""),
                title=title,
                url=(
                    f"https://www.npmjs.com/package/{quote(package, safe='')}/v/{quote(new, safe='')}"
                    if new
                    else f"https://www.npmjs.com/package/{quote(package, safe='')}"
                ),
                author="npm",
                published_raw=modified,
                published_at=when,
                extra={k: v for k, v in extra.items() if v is not None},
            )
        )
    return moves
