"""How each tab shows a record: columns fitted to the terminal, a stable row key, status glyph and colour."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text

from patchmoi.core.history import upstream_label
from patchmoi.core.shortid import short_id
from patchmoi.tui.textfmt import relative_time, shorten

__all__ = ["upstream_label"]  # (re-exported: the CLI's lists use it)

GLYPHS = {
    "started": "…",
    "dispatched": "→",
    "completed": "✓",
    "changed": "✚",
    "skipped": "·",
    "needs_intervention": "!",
    "blocked": "⊘",
    "failed": "✗",
    "queued": "…",
    "running": "▶",
    "push": "↑",
    "release": "◆",
    "filtered": "·",
    "dist-tag": "⇄",
}
# ANSI names, so the 16-colour palette and both dark and light themes keep them readable.
COLOURS = {
    "changed": "green",
    "completed": "green",
    "dispatched": "blue",
    "started": "cyan",
    "queued": "cyan",
    "running": "cyan",
    "skipped": "bright_black",
    "needs_intervention": "bold yellow",
    "blocked": "magenta",
    "failed": "bold red",
    "push": "cyan",
    "release": "green",
    "filtered": "bright_black",
    "dist-tag": "blue",
}


# Derived attempt states (core.attempt_states). `open` (needs a person now) stands out like needs_intervention;
# what nobody has to look at any more is dimmed.
STATE_GLYPHS = {
    "open": "!",
    "ready": "✚",
    "running": "▶",
    "resolved": "✓",
    "superseded": "·",
    "adopted": "◆",
    "done": "·",
}
STATE_COLOURS = {
    "open": "bold yellow",
    "ready": "bold green",
    "running": "cyan",
    "resolved": "bright_black",
    "superseded": "bright_black",
    "adopted": "green",
    "done": "bright_black",
}


def status_text(status: Any) -> Text:
    value = str(status or "?")
    return Text(f"{GLYPHS.get(value, '?')} {value}", style=COLOURS.get(value, ""))


def state_text(state: Any) -> Text:
    if not state:
        return Text("-", style="bright_black")  # a server that does not derive states
    value = str(state)
    return Text(f"{STATE_GLYPHS.get(value, '?')} {value}", style=STATE_COLOURS.get(value, ""))


def age(rec: dict[str, Any], now: datetime | None, *keys: str) -> str:
    for key in keys:
        if rec.get(key):
            return relative_time(rec[key], now)
    return "-"


@dataclass(frozen=True)
class Column:
    """A table column: its natural width (what `wide` shows), and in the fitted layout the order in which it
    is dropped when the terminal is too narrow (`drop`: higher goes first, 0 never) and whether it takes the
    width that is left (`flex`, at least `width` columns)."""

    label: str
    width: int
    drop: int = 0
    flex: bool = False


@dataclass(frozen=True)
class TabSpec:
    kind: str
    title: str
    columns: tuple[Column, ...]
    cells: Callable[[dict[str, Any], datetime | None], dict[str, Any]]
    key: Callable[[dict[str, Any]], str]


CELL_PAD = 2  # DataTable's cell padding: one column either side of every cell
FRAME = 3  # the vertical scrollbar and a margin
WIDE_FLEX = 72  # the flex column's width in the wide layout at least (the rest: their full ids)
WIDE_MAX = 240  # no column wider than this in the wide layout (a 4 KB error message stays a line)


def layout(
    spec: TabSpec, width: int, *, wide: bool = False, longest: Mapping[str, int] | None = None
) -> list[tuple[Column, int]]:
    """The columns shown and their widths. Fitted (the default): columns are dropped, most expendable first,
    until the rest fit `width`, and the flex column (OUTCOME, TITLE, MESSAGE) takes what is left, so the text
    that explains a row gets the width. Wide: every column as wide as its longest value among the loaded rows
    (`longest`, up to WIDE_MAX; the flex one at least WIDE_FLEX) and ids in full: wider than the terminal, scroll
    right."""
    if wide:
        seen = longest or {}

        def full(c: Column) -> int:
            if c.label == "ID":
                return ID_WIDE
            return min(WIDE_MAX, max(WIDE_FLEX if c.flex else c.width, seen.get(c.label, 0)))

        return [(c, full(c)) for c in spec.columns]
    shown = list(spec.columns)

    def need(cols: list[Column]) -> int:
        return sum(c.width + CELL_PAD for c in cols) + FRAME

    for victim in sorted((c for c in spec.columns if c.drop), key=lambda c: -c.drop):
        if need(shown) <= width:
            break
        shown.remove(victim)
    spare = max(0, width - need(shown))
    return [(c, c.width + spare if c.flex else c.width) for c in shown]


ID_WIDE = 110  # full ids (attempt ids run to about 100 characters)


def fit(value: Any, width: int) -> Any:
    """A cell cut to its column's width with an ellipsis (Text keeps its style)."""
    if isinstance(value, Text):
        if value.cell_len <= width:
            return value
        cut = value.copy()
        cut.truncate(width, overflow="ellipsis")
        return cut
    return shorten(value if value is not None else "", width)


def cells_for(
    spec: TabSpec,
    rec: dict[str, Any],
    now: datetime | None,
    columns: list[tuple[Column, int]],
    *,
    marked: bool = False,
    highlight: list[str] | None = None,
) -> list[Any]:
    """The row's cells for a layout: each cut to its width, words of the filter highlighted, a mark shown."""
    values = spec.cells(rec, now)
    out: list[Any] = []
    for i, (column, width) in enumerate(columns):
        value = values.get(column.label, "")
        if column.label == "ID" and width < ID_WIDE:
            value = short_id(str(value)) if value else ""
        if i == 0 and marked:
            value = Text("● ", style="bold magenta") + (value if isinstance(value, Text) else Text(str(value)))
        value = fit(value, width)
        if highlight:
            text = value if isinstance(value, Text) else Text(str(value))
            if text.highlight_words(highlight, style="reverse", case_sensitive=False):
                value = text
        out.append(value)
    return out


def _signal_cells(r: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    repo = r.get("repo") if isinstance(r.get("repo"), dict) else {}
    assert isinstance(repo, dict)
    ref = r.get("ref") or str(r.get("sha") or "")[:12] or "-"
    raw = r.get("raw") if isinstance(r.get("raw"), dict) else {}
    assert isinstance(raw, dict)
    # a release the source's `versions` policy turned down, or an npm dist-tag move: not work, and says so
    kind = "filtered" if r.get("filtered") else "dist-tag" if raw.get("signal") == "dist-tag" else r.get("event")
    title = f"{r.get('title')} ({r['filtered']})" if r.get("filtered") else r.get("title")
    return {
        "AGE": age(r, now, "receivedAt", "publishedAt"),
        "EVENT": status_text(kind),
        "REPO": repo.get("fullName", "-"),
        "REF": ref,
        "TITLE": title or "",
        "SOURCE": r.get("sourceId") or "",
        "ID": f"{r.get('sourceId')}:{r.get('entryId')}",
    }


def _event_cells(r: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    return {
        "AGE": age(r, now, "receivedAt", "occurredAt"),
        "TYPE": r.get("type") or "",
        "UPSTREAM": upstream_label(r),
        "ID": r.get("id") or "",
    }


def _attempt_cells(r: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    return {
        "AGE": age(r, now, "updatedAt", "createdAt"),
        "STATE": state_text(r.get("state")),
        "STATUS": status_text(r.get("status")),
        "OP": r.get("operation", "dispatch"),
        "UPSTREAM": upstream_label(r),
        "OUTCOME": r.get("error") or r.get("message") or "",
        "ID": r.get("id") or "",
    }


def _dispatch_cells(r: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    return {
        "AGE": age(r, now, "createdAt"),
        "STATUS": status_text(r.get("status")),
        "OP": r.get("operation", "dispatch"),
        "TRANSPORT": r.get("transport", "-"),
        "RUNS/ERROR": r.get("error") or ",".join(r.get("runIds") or []) or "-",
        "ID": r.get("eventId") or "",
    }


def _run_cells(r: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    payload = r.get("resultPayload") if isinstance(r.get("resultPayload"), dict) else {}
    assert isinstance(payload, dict)
    return {
        "AGE": age(r, now, "completedAt", "startedAt", "createdAt"),
        "STATUS": status_text(r.get("status")),
        "STEP": f"{r.get('flowName')}/{r.get('stepName')}",
        "MESSAGE": r.get("error") or payload.get("message") or "",
        "ID": r.get("id") or "",
    }


def source_state(r: dict[str, Any], now: datetime | None) -> Text:
    """✖ failing (consecutive errors), ⏸ held back (the host's Retry-After), ◌ not polled yet, ● ok."""
    if r.get("lastError"):
        held = relative_time(r.get("notBefore"), now) if r.get("notBefore") else ""
        return Text("⏸ waiting" if held.startswith("in ") else "✖ failing", style="bold red")
    if not (r.get("lastPolledAt") or r.get("lastCheckedAt")):
        return Text("◌ new", style="bright_black")
    return Text("● ok", style="green")


def source_order(r: dict[str, Any]) -> tuple[int, str]:
    """Failing first, then the ones not polled yet, then the rest; by id within each."""
    rank = 0 if r.get("lastError") else 1 if not (r.get("lastPolledAt") or r.get("lastCheckedAt")) else 2
    return rank, str(r.get("sourceId"))


def _source_cells(r: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    polled = r.get("lastPolledAt") or r.get("lastCheckedAt")
    due = relative_time(r.get("nextDueAt"), now) if r.get("nextDueAt") else "-"
    if due.endswith(" ago"):
        due = "due now"  # (the poller picks it up on its next tick)
    elif r.get("estimated") and due != "-":
        due = "≈" + due  # from the last poll and the interval: only the polling process knows the schedule
    result = r.get("lastError") or {
        "not_modified": "not modified (304 / same refs)",
        "primed": "primed",
        "ok": "new entries",
    }.get(str(r.get("lastStatus")), str(r.get("lastStatus") or ""))
    errors = r.get("consecutiveErrors")
    return {
        "STATE": source_state(r, now),
        "SOURCE": r.get("sourceId") or "",
        "POLLED": relative_time(polled, now) if polled else "never",
        "NEXT": due,
        "ERR": str(errors) if isinstance(errors, int) and errors else "",
        "LAST RESULT / ERROR": result,
    }


AGE = Column("AGE", 7)
TABS: tuple[TabSpec, ...] = (
    TabSpec(
        "signals",
        "Upstream",
        (
            AGE,
            Column("EVENT", 11, drop=3),
            Column("REPO", 20, drop=2),
            Column("REF", 14),
            Column("TITLE", 16, flex=True),
            Column("SOURCE", 16, drop=4),
            Column("ID", 8, drop=1),
        ),
        _signal_cells,
        lambda r: f"{r.get('sourceId')}:{r.get('entryId')}",
    ),
    TabSpec(
        "events",
        "Events",
        (AGE, Column("TYPE", 18, drop=2), Column("UPSTREAM", 24, flex=True), Column("ID", 8, drop=1)),
        _event_cells,
        lambda r: str(r.get("id")),
    ),
    TabSpec(
        "attempts",
        "Attempts",
        (
            AGE,
            Column("STATE", 11),
            Column("STATUS", 20, drop=3),
            Column("OP", 8, drop=4),
            Column("UPSTREAM", 20, drop=1),
            Column("OUTCOME", 30, flex=True),
            Column("ID", 8, drop=2),
        ),
        _attempt_cells,
        lambda r: str(r.get("id")),
    ),
    TabSpec(
        "dispatches",
        "Dispatches",
        (
            AGE,
            Column("STATUS", 12),
            Column("OP", 8, drop=3),
            Column("TRANSPORT", 12, drop=2),
            Column("RUNS/ERROR", 20, flex=True),
            Column("ID", 8, drop=1),
        ),
        _dispatch_cells,
        lambda r: f"{r.get('eventId')}@{r.get('createdAt')}@{r.get('_cursor', '')}",
    ),
    TabSpec(
        "runs",
        "Runs",
        (
            AGE,
            Column("STATUS", 20, drop=2),
            Column("STEP", 18, drop=3),
            Column("MESSAGE", 20, flex=True),
            Column("ID", 8, drop=1),
        ),
        _run_cells,
        lambda r: str(r.get("id")),
    ),
    TabSpec(
        "sources",
        "Sources",
        (
            Column("STATE", 10),
            Column("SOURCE", 22),
            Column("POLLED", 8, drop=2),
            Column("NEXT", 8),
            Column("ERR", 3, drop=1),
            Column("LAST RESULT / ERROR", 20, flex=True),
        ),
        _source_cells,
        lambda r: str(r.get("sourceId")),
    ),
)
TAB_BY_KIND = {t.kind: t for t in TABS}
