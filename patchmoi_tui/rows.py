"""How each tab shows a record: columns, a stable row key, status glyph and colour, and filter matching."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text

from patchmoi.tui.textfmt import relative_time, shorten

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


def _payload(rec: dict[str, Any]) -> dict[str, Any]:
    payload = rec.get("payload")
    return payload if isinstance(payload, dict) else {}


def upstream_label(rec: dict[str, Any]) -> str:
    if "upstreamRepo" in rec or "upstreamTag" in rec:
        repo = rec.get("upstreamRepo") or "-"
        ref = rec.get("upstreamTag") or rec.get("upstreamRef") or str(rec.get("upstreamSha") or "")[:12]
    else:
        p = _payload(rec)
        repo = p.get("repo") or p.get("packageName") or "-"
        ref = p.get("tag") or p.get("version") or p.get("ref") or str(p.get("sha") or "")[:12]
    return f"{repo}@{ref}" if ref else str(repo)


def age(rec: dict[str, Any], now: datetime | None, *keys: str) -> str:
    for key in keys:
        if rec.get(key):
            return relative_time(rec[key], now)
    return "-"


@dataclass(frozen=True)
class TabSpec:
    kind: str
    title: str
    columns: tuple[tuple[str, int], ...]
    cells: Callable[[dict[str, Any], datetime | None], tuple[Any, ...]]
    key: Callable[[dict[str, Any]], str]


def _signal_cells(r: dict[str, Any], now: datetime | None) -> tuple[Any, ...]:
    repo = r.get("repo") if isinstance(r.get("repo"), dict) else {}
    assert isinstance(repo, dict)
    ref = r.get("ref") or str(r.get("sha") or "")[:12] or "-"
    raw = r.get("raw") if isinstance(r.get("raw"), dict) else {}
    assert isinstance(raw, dict)
    # a release the source's `versions` policy turned down, or an npm dist-tag move: not work, and says so
    kind = "filtered" if r.get("filtered") else "dist-tag" if raw.get("signal") == "dist-tag" else r.get("event")
    title = f"{r.get('title')} ({r['filtered']})" if r.get("filtered") else r.get("title")
    return (
        age(r, now, "receivedAt", "publishedAt"),
        status_text(kind),
        repo.get("fullName", "-"),
        shorten(ref, 28),
        shorten(title, 40),
        r.get("sourceId"),
    )


def _event_cells(r: dict[str, Any], now: datetime | None) -> tuple[Any, ...]:
    return (age(r, now, "receivedAt", "occurredAt"), r.get("type"), shorten(upstream_label(r), 40), r.get("id"))


def _attempt_cells(r: dict[str, Any], now: datetime | None) -> tuple[Any, ...]:
    outcome = r.get("error") or r.get("message") or ""
    return (
        age(r, now, "updatedAt", "createdAt"),
        state_text(r.get("state")),
        status_text(r.get("status")),
        r.get("operation", "dispatch"),
        shorten(upstream_label(r), 32),
        shorten(outcome, 48),
        r.get("id"),
    )


def _dispatch_cells(r: dict[str, Any], now: datetime | None) -> tuple[Any, ...]:
    detail = r.get("error") or ",".join(r.get("runIds") or []) or "-"
    return (
        age(r, now, "createdAt"),
        status_text(r.get("status")),
        r.get("operation", "dispatch"),
        r.get("transport", "-"),
        shorten(detail, 40),
        r.get("eventId"),
    )


def _run_cells(r: dict[str, Any], now: datetime | None) -> tuple[Any, ...]:
    payload = r.get("resultPayload") if isinstance(r.get("resultPayload"), dict) else {}
    assert isinstance(payload, dict)
    message = r.get("error") or payload.get("message") or ""
    return (
        age(r, now, "completedAt", "startedAt", "createdAt"),
        status_text(r.get("status")),
        f"{r.get('flowName')}/{r.get('stepName')}",
        shorten(message, 48),
        r.get("id"),
    )


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


def _source_cells(r: dict[str, Any], now: datetime | None) -> tuple[Any, ...]:
    polled = r.get("lastPolledAt") or r.get("lastCheckedAt")
    due = relative_time(r.get("nextDueAt"), now) if r.get("nextDueAt") else "-"
    if r.get("estimated") and due != "-":
        due = "≈" + due  # from the last poll and the interval: only the polling process knows the schedule
    result = r.get("lastError") or {
        "not_modified": "not modified (304 / same refs)",
        "primed": "primed",
        "ok": "new entries",
    }.get(str(r.get("lastStatus")), str(r.get("lastStatus") or ""))
    errors = r.get("consecutiveErrors")
    return (
        source_state(r, now),
        shorten(r.get("sourceId"), 24),
        relative_time(polled, now) if polled else "never",
        due,
        str(errors) if isinstance(errors, int) and errors else "",
        result,
    )


TABS: tuple[TabSpec, ...] = (
    TabSpec(
        "signals",
        "Upstream",
        (("AGE", 9), ("EVENT", 10), ("REPO", 24), ("REF", 20), ("TITLE", 30), ("SOURCE", 0)),
        _signal_cells,
        lambda r: f"{r.get('sourceId')}:{r.get('entryId')}",
    ),
    TabSpec(
        "events",
        "Events",
        (("AGE", 9), ("TYPE", 22), ("UPSTREAM", 30), ("ID", 0)),
        _event_cells,
        lambda r: str(r.get("id")),
    ),
    TabSpec(
        "attempts",
        "Attempts",
        (("AGE", 9), ("STATE", 12), ("STATUS", 20), ("OP", 8), ("UPSTREAM", 26), ("OUTCOME", 36), ("ID", 0)),
        _attempt_cells,
        lambda r: str(r.get("id")),
    ),
    TabSpec(
        "dispatches",
        "Dispatches",
        (("AGE", 9), ("STATUS", 12), ("OP", 8), ("TRANSPORT", 14), ("RUNS/ERROR", 30), ("EVENT", 0)),
        _dispatch_cells,
        lambda r: f"{r.get('eventId')}@{r.get('createdAt')}@{r.get('_cursor', '')}",
    ),
    TabSpec(
        "runs",
        "Runs",
        (("AGE", 9), ("STATUS", 20), ("STEP", 22), ("MESSAGE", 36), ("ID", 0)),
        _run_cells,
        lambda r: str(r.get("id")),
    ),
    TabSpec(
        "sources",
        "Sources",
        (("STATE", 10), ("SOURCE", 24), ("POLLED", 9), ("NEXT", 10), ("ERR", 3), ("LAST RESULT / ERROR", 0)),
        _source_cells,
        lambda r: str(r.get("sourceId")),
    ),
)
TAB_BY_KIND = {t.kind: t for t in TABS}


@dataclass(frozen=True)
class RowFilter:
    """`/` filter: `repo:acme status:failed state:open type:upstream.release` plus free text (all must match)."""

    fields: dict[str, str]
    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        fields: dict[str, str] = {}
        words = []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key in ("repo", "status", "state", "type", "source") and value:
                fields[key] = value.lower()
            else:
                words.append(token.lower())
        return cls(fields, tuple(words))

    @property
    def active(self) -> bool:
        return bool(self.fields or self.words)

    def matches(self, rec: dict[str, Any]) -> bool:
        haystacks = {
            "repo": upstream_label(rec) + " " + json.dumps(rec.get("repo", "")),
            "status": str(rec.get("status") or rec.get("event") or ""),
            "state": str(rec.get("state") or ""),  # derived attempt states; other records match no state
            "type": str(rec.get("type") or rec.get("eventType") or ""),
            "source": str(rec.get("sourceId") or _payload(rec).get("sourceId") or ""),
        }
        for key, value in self.fields.items():
            if value not in haystacks[key].lower():
                return False
        if self.words:
            blob = json.dumps(rec, ensure_ascii=False).lower()
            return all(word in blob for word in self.words)
        return True

    def describe(self) -> str:
        return " ".join([*(f"{k}:{v}" for k, v in self.fields.items()), *self.words])
