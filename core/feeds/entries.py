"""What every kind of source reads a document into: entries, skipped entries, and the text checks they share.

A kind of source (Atom/RSS, npm, PyPI, git remote) turns one fetched document into a `ParsedFeed`, newest
first. The poller decides newness (by id) and selection (`versions`) on these alone, whatever the kind.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from patchmoi.core.errors import UpstreamError

MAX_ID_CHARS = 2048
"""An entry id longer than this is not kept (seen-id sets hold hundreds of them per source)."""

INVALID_REF = "\ufdd0"
"""Stands in for a character reference to a character XML does not allow (`&#xD800;`, `&#0;`): feedparser
would crash on some of them and pass the others on; this noncharacter survives parsing so the entry that
carried it can be skipped rather than the whole document."""
# Characters XML 1.0 does not allow (C0 controls, unpaired surrogates, U+FFFE/U+FFFF), and INVALID_REF.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufdd0\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class FeedParseError(UpstreamError):
    """The document is not a usable feed. The message says why in operator terms."""


@dataclass
class FeedEntry:
    """One upstream entry. `tag`, `version`, `ref` and `sha` are set by kinds that know them for sure
    (a git remote knows the tag and commit, a registry the version); for feeds they are derived from the
    entry's link and id (`core.feeds.shapes`)."""

    id: str
    title: str
    url: str | None
    author: str | None
    published_raw: str | None
    published_at: str
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tag: str | None = None
    version: str | None = None
    ref: str | None = None
    sha: str | None = None


@dataclass
class SkippedEntry:
    """An entry left out of `ParsedFeed.entries`: its id when known (as the document has it) and why.

    `position` is how many of `entries` come before it (newest first): priming a `primeOnly: false` source
    emits the newest entries only, and this says whether the skipped one was among them.
    """

    id: str | None
    reason: str
    position: int = 0


@dataclass
class ParsedFeed:
    entries: list[FeedEntry]
    warnings: list[str]
    kind: str
    skipped: list[SkippedEntry] = field(default_factory=list)
    dist_tags: dict[str, str] | None = None
    """npm only: dist-tag -> version, as the registry has them now (moves are signals)."""
    modified: str | None = None
    """npm only: the packument's `time.modified`, which changes with every publish and dist-tag move."""
    package: str | None = None
    """Registries: the package name as the registry spells it."""


class EntrySkip(Exception):
    """Raised while reading one entry: that entry is left out (listed in `ParsedFeed.skipped`)."""

    def __init__(self, entry_id: str | None, reason: str) -> None:
        super().__init__(reason)
        self.entry_id, self.reason = entry_id, reason


def safe_text(value: str, limit: int = 200) -> str:
    """`value` cut to `limit` characters, with unpaired surrogates escaped, so it can be stored and printed."""
    cut = value[:limit]
    return cut.encode("utf-8", "backslashreplace").decode("utf-8") if _has_surrogate(cut) else cut


def _has_surrogate(value: str) -> bool:
    return not value.isascii() and _SURROGATE.search(value) is not None


def bad_char(value: str) -> str | None:
    """The first character of `value` that XML does not allow, described, or None."""
    match = _BAD_CHARS.search(value)
    if match is None:
        return None
    char = match.group(0)
    if char == INVALID_REF:
        return "a reference to a character XML does not allow (such as &#xD800; or &#0;)"
    if "\ud800" <= char <= "\udfff":
        return f"an unpaired surrogate (U+{ord(char):04X}), which is not text"
    return f"the control character or noncharacter U+{ord(char):04X}"


def printable(value: str) -> str:
    return _BAD_CHARS.sub("\ufffd", value)


def clean(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def date_undated(entries: list[FeedEntry], seen_at: str) -> list[FeedEntry]:
    """Entries without a readable date, dated `seen_at`: one time for the whole document, so they keep their
    document order among themselves (each stamped by its own clock read, they would not)."""
    for entry in entries:
        if entry.error is not None or not entry.published_raw:
            entry.published_at = seen_at
    return entries


def _int_or_text(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows: kept as the digits
        return digits


def load_json(body: bytes, warnings: list[str], what: str) -> Any:
    """A registry's JSON document (`what` names it in messages), read as leniently as JSON allows: any
    Unicode encoding JSON may use, a byte order mark, undecodable bytes replaced, numbers longer than Python
    converts kept as their digits. Not JSON, or nested too deeply: FeedParseError."""
    encoding = json.detect_encoding(body)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        warnings.append(
            f"{what} is not valid {encoding} ({exc.reason} at byte {exc.start}); undecodable bytes were replaced"
        )
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
            warnings.append(
                f"{what} has a number with more than {sys.get_int_max_str_digits()} digits; kept it as text"
            )
            return doc
    except json.JSONDecodeError as exc:
        raise FeedParseError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise FeedParseError(f"{what} is nested too deeply to read") from None
