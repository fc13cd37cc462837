"""Plain-text output a person can scan: aligned columns, relative times, short ids."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def relative_time(value: Any, now: datetime | None = None) -> str:
    when = parse_iso(value)
    if when is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)}{unit}"
            break
    else:
        text = f"{int(seconds)}s"
    return f"in {text}" if future else f"{text} ago"


def plural(n: int, word: str) -> str:
    """`1 error`, `2 errors`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def shorten(text: Any, width: int) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= width else s[: max(0, width - 1)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_widths: Sequence[int] | None = None) -> str:
    """Left-aligned columns sized to content (each capped by `max_widths`); the last column is free."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if max_widths:
        widths = [min(w, m) if m else w for w, m in zip(widths, max_widths, strict=False)]
    lines = []
    for row in [list(headers), *cells]:
        parts = []
        for i, cell in enumerate(row):
            if i == len(row) - 1:
                parts.append(cell)
            else:
                parts.append(shorten(cell, widths[i]).ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
