"""feedparser's own test corpus through `parse_xml_feed`: what is parsed, what is refused and why.

Get the corpus from the feedparser sdist (its tests/ directory; not kept in this repository):

    .venv/bin/pip download --no-binary :all: --no-deps feedparser==<installed version> -d /tmp/fpsdist
    tar xzf /tmp/fpsdist/feedparser-*.tar.gz -C /tmp/fpsdist
    .venv/bin/python bench/feed_corpus.py [/tmp/fpsdist/feedparser-<version>/tests]

Each file goes in as a fetched body, with the Content-Type its `Header:` comment gives (as feedparser's
runtests.py serves it). Prints: files, parsed, refused by reason, tracebacks (must be 0), and the files refused
although `feedparser.parse` on the same bytes reports a version and no bozo (target: none, except documents
that declare entities, listed apart: refusing those is the point).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from patchmoi.core.feeds.parse import FeedParseError, parse_xml_feed  # noqa: E402

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
    return 1 if tracebacks or regressions else 0


if __name__ == "__main__":
    sys.exit(main())
