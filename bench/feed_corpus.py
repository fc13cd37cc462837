"""feedparser's own test corpus through `parse_xml_feed`: what is parsed, what is refused and why.

Get the corpus from the feedparser sdist (its tests/ directory; not kept in this repository):

    .venv/bin/pip download --no-binary :all: --no-deps feedparser==<installed version> -d /tmp/fpsdist
    tar xzf /tmp/fpsdist/feedparser-*.tar.gz -C /tmp/fpsdist
    .venv/bin/python bench/feed_corpus.py [/tmp/fpsdist/feedparser-<version>/tests]

Each file goes in as a fetched body, with the Content-Type its `Header:` comment gives (as feedparser's
runtests.py serves it). Prints: files, parsed, refused by reason, tracebacks (must be 0), and the files refused
although `feedparser.parse` on the same bytes reports a version and no bozo (target: none, except documents
that declare entities, listed apart: refusing those is the point).

Then the fast structural reader (`core.feeds.fastparse`, #14) against feedparser on every file the checks let
through: how many it took, and of those how many give a ParsedFeed equal to `parse_xml_feed(..., fast=False)`
and how many differ (must be 0; each is listed). A stricter count compares the values the reader stores (id,
title, link, links, author, dates) with feedparser's own entries. Per-feed timings: bench/parse_bench.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from patchmoi.core.feeds import fastparse  # noqa: E402
from patchmoi.core.feeds.entries import ParsedFeed  # noqa: E402
from patchmoi.core.feeds.parse import FeedParseError, _prepare, parse_xml_feed, parse_xml_feed_fast  # noqa: E402

_HEADER = re.compile(rb"^Header:\s+Content-type:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
_REASONS = (
    ("declares XML entities", "declares entities"),
    ("external entity", "external entity"),
    ("parameter entity", "parameter entity"),
    ("DOCTYPE could not be read", "unreadable DOCTYPE"),
    ("HTML page", "HTML page"),
    ("not an Atom or RSS document", "not a feed"),
    ("empty response body", "empty"),
    ("got JSON", "JSON"),
    ("the feed parser failed", "feedparser failed"),
)
_HOSTILE = {"declares entities", "external entity", "parameter entity"}


def reason_class(message: str) -> str:
    return next((name for needle, name in _REASONS if needle in message), "other")


def normalized(parsed: ParsedFeed) -> dict[str, Any]:
    """The ParsedFeed as data, with the time an undated entry was seen (the clock's) left out."""
    data = dataclasses.asdict(parsed)
    for entry in data["entries"]:
        if entry["published_raw"] is None or entry["error"] is not None:
            entry["published_at"] = "(seen)"
    return data


_READ_KEYS = ("id", "title", "link", "author", "updated", "published", "updated_parsed", "published_parsed")


def _read_values(entry: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    values = {key: dict.get(entry, key) for key in keys}
    values["links"] = [(link.get("rel"), link.get("href")) for link in dict.get(entry, "links") or []]
    return values


def values_differ(body: bytes, content_type: str | None) -> str | None:
    """Where the fast reader's stored values differ from feedparser's entries for the same bytes, or None."""
    document = _prepare(body, content_type)
    fast = fastparse.read(document.data)
    if fast is None:
        return "declined on a second read"
    headers = {"content-type": f"{document.media}; charset=utf-8"}
    reference = feedparser.parse(io.BytesIO(document.data), response_headers=headers)
    if reference.get("version") != fast.version or len(reference.entries) != len(fast.entries):
        theirs = f"{reference.get('version')}, {len(reference.entries)} entries"
        return f"read as {fast.version}, {len(fast.entries)} entries; feedparser: {theirs}"
    for n, (ours, theirs) in enumerate(zip(fast.entries, reference.entries, strict=True)):
        keys = tuple(k for k in _READ_KEYS if not k.endswith("_parsed") or k in ours)
        if _read_values(ours, keys) != _read_values(theirs, keys):
            return f"entry {n}: {_read_values(ours, keys)} / {_read_values(theirs, keys)}"
    return None


def compare_fast(files: list[Path], root: Path) -> bool:
    """The fast reader against feedparser on every file the checks let through. True when nothing differs."""
    checked = fast_taken = equal = values_equal = 0
    differ: list[tuple[str, str]] = []
    declined: Counter[str] = Counter()
    for path in files:
        name = str(path.relative_to(root))
        body = path.read_bytes()
        header = _HEADER.search(body[:2048])
        content_type = header.group(1).decode("latin-1") if header else None
        try:
            fast = parse_xml_feed_fast(body, content_type=content_type)
        except FeedParseError:
            continue  # refused before any parser reads it, either way
        except Exception as exc:
            differ.append((name, f"fast path raised {type(exc).__name__}: {exc}"))
            continue
        checked += 1
        if fast is None:
            reason = fastparse.read_or_reason(_prepare(body, content_type).data)
            declined[re.sub(r"<[^>]*>", "<…>", reason) if isinstance(reason, str) else "?"] += 1
            continue
        fast_taken += 1
        try:
            reference = parse_xml_feed(body, content_type=content_type, fast=False)
        except Exception as exc:
            differ.append((name, f"feedparser path raised {type(exc).__name__}: {exc} (the fast path did not)"))
            continue
        if normalized(fast) == normalized(reference):
            equal += 1
        else:
            differ.append((name, "ParsedFeed differs"))
        problem = values_differ(body, content_type)
        if problem is None:
            values_equal += 1
        else:
            differ.append((name, f"read values differ: {problem}"))
    print(f"fast reader vs feedparser, files the checks let through: {checked}")
    print(f"  fast path taken: {fast_taken}  (declined, left to feedparser: {checked - fast_taken})")
    for reason, count in declined.most_common():
        print(f"    declined: {reason:60} {count}")
    print(f"  equal ParsedFeed: {equal}")
    print(f"  equal read values (id, title, link(s), author, dates vs feedparser's entries): {values_equal}")
    print(f"  differ: {len(differ)}")
    for name, why in differ:
        print(f"    {name}: {why}")
    return not differ


def default_dir() -> Path | None:
    found = sorted(Path("/tmp/fpsdist").glob("feedparser-*/tests"))
    return found[-1] if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=default_dir(), help="feedparser's tests/ directory")
    args = parser.parse_args()
    if args.dir is None or not args.dir.is_dir():
        print("no corpus: download the feedparser sdist (see this script's docstring)", file=sys.stderr)
        return 2
    files = sorted(p for p in args.dir.rglob("*") if p.is_file() and p.suffix != ".py")
    refused: Counter[str] = Counter()
    parsed = 0
    tracebacks: list[tuple[str, str]] = []
    regressions: list[tuple[str, str]] = []
    hostile: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for path in files:
        name = str(path.relative_to(args.dir))
        body = path.read_bytes()
        header = _HEADER.search(body[:2048])
        content_type = header.group(1).decode("latin-1") if header else None
        try:
            parse_xml_feed(body, content_type=content_type)
            parsed += 1
            continue
        except FeedParseError as exc:
            message = str(exc)
        except Exception:  # the point of the count: any of these is a bug
            tracebacks.append((name, traceback.format_exc(limit=3)))
            continue
        kind = reason_class(message)
        refused[kind] += 1
        headers = {"content-type": content_type} if content_type else {}
        reference = feedparser.parse(io.BytesIO(body), response_headers=headers)
        if reference.get("version") and not reference.get("bozo"):
            (hostile if kind in _HOSTILE else regressions).append((name, message))
    elapsed = time.perf_counter() - t0
    print(f"corpus:     {args.dir}")
    print(f"files:      {len(files)}  ({elapsed:.1f}s)")
    print(f"parsed:     {parsed}")
    print(f"refused:    {sum(refused.values())}")
    for kind, count in refused.most_common():
        print(f"  {kind:20} {count}")
    print(f"tracebacks: {len(tracebacks)}")
    for name, text in tracebacks:
        print(f"  {name}\n    " + text.strip().replace("\n", "\n    "))
    print(f"refused, but clean for feedparser (version, bozo=0): {len(regressions)}")
    for name, message in regressions:
        print(f"  {name}: {message}")
    print(f"refused as hostile (entities), clean for feedparser: {len(hostile)}")
    for name, message in hostile:
        print(f"  {name}: {message}")
    print()
    same = compare_fast(files, args.dir)
    return 1 if tracebacks or regressions or not same else 0


if __name__ == "__main__":
    sys.exit(main())
