"""Version schemes and ranges: which upstream releases a source selects (`versions` in feed-sources.json).

Three schemes, chosen per source (default by kind: `pep440` for PyPI, `semver` for npm, `loose` otherwise):

- `pep440`: Python's versions and specifiers, by `packaging` (PyPA's implementation of PEP 440).
- `semver`: semantic versions (an optional leading `v`, missing minor/patch read as 0) with npm-style ranges:
  comparators (`>=1.2 <2`, commas allowed), `^`, `~`, `1.x`/`1.*`, hyphen ranges (`1.2 - 1.4`) and `||`.
- `loose`: the first run of dot-separated numbers in the name (`v3.1`, `release-3.1.0`, `rust-v0.170.0`,
  `2024.05.1`), compared as numbers; the text after them says whether it is a pre-release (`-rc.1`, `beta2`,
  `-nightly`, ...). Ranges use the semver syntax.

A range decides on the release part; whether pre-releases pass is the separate `prereleases` switch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

Scheme = Literal["pep440", "semver", "loose"]
SCHEMES: tuple[Scheme, ...] = ("pep440", "semver", "loose")

_LOOSE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)*)")
_MAX_DIGITS = 30
"""A number longer than this is not a version part (and Python would refuse to read 4,300 digits)."""
_SEMVER = re.compile(r"^[vV=]?\s*(\d+)(?:\.(\d+)(?:\.(\d+))?)?(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")
_PRE_WORDS = re.compile(
    r"(?i)(?:alpha|beta|rc|pre|preview|dev|nightly|canary|snapshot|next|insiders|unstable|experimental|"
    r"(?<![a-z])[abc]\d|(?<![a-z])m\d)"
)
_PARTIAL = re.compile(r"^[vV=]?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_COMPARATOR = re.compile(r"^(<=|>=|<|>|=|\^|~>?|==|!=)?\s*(.+)$")


class RangeError(ValueError):
    """A `versions.range` that cannot be read in its scheme; the message says why."""


@dataclass(frozen=True, order=True)
class Key:
    """A comparable version: release numbers, then 0 for a pre-release or 1 for a final, then the tag."""

    release: tuple[int, ...]
    final: int
    pre: tuple[Any, ...] = ()


def _trim(release: tuple[int, ...]) -> tuple[int, ...]:
    out = list(release)
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return tuple(out)


def _pre_parts(text: str) -> tuple[Any, ...]:
    """A pre-release tag compared the semver way, numbers numerically and below words; runs of letters and
    digits are parts of their own, so `rc10` is newer than `rc9`."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.findall(r"\d+|[A-Za-z]+", text))


def _too_long(name: str) -> bool:
    return any(len(run) > _MAX_DIGITS for run in re.findall(r"\d+", name))


@dataclass(frozen=True)
class Parsed:
    key: Key
    prerelease: bool
    pep: Version | None = None


def parse_version(name: str, scheme: Scheme) -> Parsed | None:
    """`name` read in `scheme`, or None when it is not a version there."""
    if _too_long(name):
        return None
    if scheme == "pep440":
        try:
            pep = Version(name)
        except InvalidVersion:
            return None
        # ordered by PEP 440 itself (epochs, post- and dev-releases included)
        key = Key((), 0, (pep,))
        return Parsed(key, pep.is_prerelease, pep)
    if scheme == "semver":
        match = _SEMVER.match(name.strip())
        if not match:
            return None
        release = tuple(int(g or 0) for g in match.group(1, 2, 3))
        pre = match.group(4)
        return Parsed(Key(_trim(release), 0 if pre else 1, _pre_parts(pre or "")), bool(pre))
    match = _LOOSE.search(name)
    if not match:
        return None
    release = tuple(int(p) for p in match.group(1).split("."))
    rest = name[match.end() :]
    pre = bool(_PRE_WORDS.search(rest))
    return Parsed(Key(_trim(release), 0 if pre else 1, _pre_parts(rest.lstrip("-._+")) if pre else ()), pre)


def sort_key(scheme: Scheme) -> Callable[[str], Key | None]:
    """A key function for sorting names newest-last (None for names that are not versions)."""

    def key(name: str) -> Key | None:
        parsed = parse_version(name, scheme)
        return parsed.key if parsed else None

    return key


# -- ranges --------------------------------------------------------------------------------------------
Bound = tuple[str, tuple[int, ...]]


@dataclass(frozen=True)
class Range:
    """A parsed `versions.range`: PEP 440 specifiers, or sets of (operator, release) bounds (any set passes)."""

    text: str
    scheme: Scheme
    specifiers: SpecifierSet | None = None
    alternatives: tuple[tuple[Bound, ...], ...] = ()

    def contains(self, parsed: Parsed) -> bool:
        if self.specifiers is not None:
            assert parsed.pep is not None
            return self.specifiers.contains(parsed.pep, prereleases=True)
        release = parsed.key.release
        return any(all(_holds(release, op, bound) for op, bound in alt) for alt in self.alternatives)


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    pa, pb = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (pa > pb) - (pa < pb)


def _holds(release: tuple[int, ...], op: str, bound: tuple[int, ...]) -> bool:
    c = _cmp(release, bound)
    return {">=": c >= 0, ">": c > 0, "<=": c <= 0, "<": c < 0, "=": c == 0, "!=": c != 0}[op]


def parse_range(text: str, scheme: Scheme) -> Range:
    """Read `text` in `scheme`; RangeError says what is wrong."""
    if not text.strip():
        raise RangeError("is empty")
    if scheme == "pep440":
        try:
            return Range(text, scheme, specifiers=SpecifierSet(text))
        except InvalidSpecifier as exc:
            raise RangeError(f"is not a PEP 440 specifier set ({exc}); write e.g. '>=3,<4' or '==3.*'") from None
    alternatives = []
    for alternative in text.split("||"):
        alternatives.append(tuple(_alternative(alternative.strip())))
    return Range(text, scheme, alternatives=tuple(alternatives))


def _partial(text: str) -> tuple[list[int], int]:
    """Numbers of a partial version and how many were given (`1.x` -> [1], 1)."""
    match = _PARTIAL.match(text.strip())
    if not match:
        raise RangeError(f"has {text.strip()!r}, which is not a version (write e.g. '>=3.1 <4', '^3', '3.x')")
    parts: list[int] = []
    for group in match.group(1, 2, 3):
        if group is None or group in ("x", "X", "*"):
            break
        parts.append(int(group))
    return parts, len(parts)


def _bump(parts: list[int], index: int) -> tuple[int, ...]:
    out = list(parts[: index + 1])
    out[index] += 1
    return tuple(out)


def _alternative(text: str) -> list[Bound]:
    if not text or text in ("*", "x", "X"):
        return [(">=", (0,))]
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        low, _ = _partial(hyphen.group(1))
        high, given = _partial(hyphen.group(2))
        if given == 0:  # `1.2 - x`: no upper bound
            return [(">=", tuple(low or [0]))]
        upper: Bound = ("<=", tuple(high)) if given == 3 else ("<", _bump(high, given - 1))
        return [(">=", tuple(low or [0])), upper]
    bounds: list[Bound] = []
    tokens = [t for t in re.split(r"[\s,]+", re.sub(r"(<=|>=|<|>|=|\^|~>?|==|!=)\s+", r"\1", text)) if t]
    for token in tokens:
        match = _COMPARATOR.match(token)
        assert match is not None
        op, rest = match.group(1) or "", match.group(2)
        parts, given = _partial(rest)
        bounds.extend(_expand(op, parts, given, token))
    return bounds


def _expand(op: str, parts: list[int], given: int, token: str) -> list[Bound]:
    if op == "^":
        if given == 0:
            return [(">=", (0,))]
        first = next((i for i, p in enumerate(parts) if p != 0), given - 1)
        return [(">=", tuple(parts)), ("<", _bump(parts, min(first, given - 1)))]
    if op in ("~", "~>"):
        if given == 0:
            return [(">=", (0,))]
        return [(">=", tuple(parts)), ("<", _bump(parts, 0 if given == 1 else 1))]
    if op in ("", "=", "=="):
        if given == 0:
            return [(">=", (0,))]
        if given == 3:
            return [("=", tuple(parts))]
        return [(">=", tuple(parts)), ("<", _bump(parts, given - 1))]
    if op == "!=":
        if given != 3 and given != len(parts):
            raise RangeError(f"has {token!r}: '!=' needs a whole version")
        return [("!=", tuple(parts))]
    if given == 0:
        raise RangeError(f"has {token!r}, which compares with nothing")
    if op in (">", "<=") and given < 3:  # >1.2 is above every 1.2.x (>=1.3); <=1.2 takes every 1.2.x (<1.3)
        return [(">=" if op == ">" else "<", _bump(parts, given - 1))]
    return [(op, tuple(parts))]
