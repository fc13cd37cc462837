"""Search the whole history of a collection, newest first, with the dashboard's filter language.

`repo:acme source:gh-1 status:failed state:open type:upstream.release since:2h until:2026-11-01 word`
(every term must match). A term the store indexes (core.store.contract.FILTERS: a signal's source and event,
an event's type, an attempt's, dispatch's or run's status) is handed to the index, so it costs O(matches); the
rest is checked record by record while reading newest-first pages. Each call reads at most `budget` records and
says where it stopped (`next`), so a rare match in a million records is found in steps that each answer in a
fraction of a second, with a count the caller can show ("37 matches, 120,000 of 1,000,000 searched").

Records are appended in time order (an attempt's latest version when it changes), so `since:` ends the search at
the first run of records older than it; `until:` skips the newer ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from patchmoi.core.records import ATTEMPT_STATUSES, DISPATCH_STATUSES, RUN_STATUSES
from patchmoi.core.store import Cursor, Kind, Store
from patchmoi.core.store.contract import FILTERS

FIELDS = ("repo", "source", "status", "state", "type")
TIME_FIELDS = ("since", "until")
# The time a record is listed by, per collection (the first present).
WHEN: Mapping[str, tuple[str, ...]] = {
    "signals": ("receivedAt", "publishedAt"),
    "events": ("receivedAt", "occurredAt"),
    "attempts": ("updatedAt", "createdAt"),
    "dispatches": ("createdAt",),
    "runs": ("completedAt", "startedAt", "createdAt"),
}
KINDS: Mapping[str, Kind] = {
    "signals": Kind.SIGNALS,
    "events": Kind.EVENTS,
    "attempts": Kind.ATTEMPTS,
    "dispatches": Kind.DISPATCHES,
    "runs": Kind.RUNS,
}
# Which query field an indexed record field answers, per collection: exact values only.
_INDEXED: Mapping[str, Mapping[str, str]] = {
    "signals": {"source": "sourceId", "status": "event"},
    "events": {"type": "type"},
    "attempts": {"status": "status"},
    "dispatches": {"status": "status"},
    "runs": {"status": "status"},
}
PAGE = 500
BUDGET = 20_000  # records read per call: ~0.1-0.3 s on this machine's store
OLDER_SLACK = 200  # records older than `since:` in a row before the search stops (appends are nearly in order)
_AGO = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class QueryError(ValueError):
    """A filter term that cannot be understood (a bad `since:`), with what is expected."""


def parse_time(value: str, now: datetime) -> datetime:
    """`90s`, `15m`, `2h`, `3d`, `1w` (ago), or an ISO date / date-time (UTC unless it says otherwise)."""
    text = value.strip()
    if m := _AGO.fullmatch(text):
        try:
            return now - timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
        except OverflowError:  # `99999999w`: before year 1
            raise QueryError(f"{value!r} is too far back") from None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{value!r} is not a time: use 15m, 2h, 3d, 1w or a date like 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def upstream_label(rec: Mapping[str, Any]) -> str:
    """`owner/repo@tag` of a flow event or attempt (or a package@version)."""
    if "upstreamRepo" in rec or "upstreamTag" in rec:
        repo = rec.get("upstreamRepo") or "-"
        ref = rec.get("upstreamTag") or rec.get("upstreamRef") or str(rec.get("upstreamSha") or "")[:12]
    else:
        raw = rec.get("payload")
        p = raw if isinstance(raw, dict) else {}
        repo = p.get("repo") or p.get("packageName") or "-"
        ref = p.get("tag") or p.get("version") or p.get("ref") or str(p.get("sha") or "")[:12]
    return f"{repo}@{ref}" if ref else str(repo)


def record_time(kind: str, rec: Mapping[str, Any]) -> datetime | None:
    for key in WHEN.get(kind, ()):
        if (when := parse_iso(rec.get(key))) is not None:
            return when
    return None


@dataclass(frozen=True)
class Query:
    """A parsed filter. `text` is what was typed (normalised), for display and for the HTTP API."""

    fields: dict[str, str] = field(default_factory=dict)
    words: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str = ""
    typed: dict[str, str] = field(default_factory=dict)  # the field values as typed (the index is case-sensitive)

    @classmethod
    def parse(cls, text: str, now: datetime | None = None) -> Query:
        now = now or datetime.now(UTC)
        fields: dict[str, str] = {}
        words: list[str] = []
        times: dict[str, datetime] = {}
        kept: list[str] = []
        typed: dict[str, str] = {}
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key in FIELDS and value:
                fields[key] = value.lower()
                typed[key] = value
                kept.append(f"{key}:{value}")
            elif sep and key in TIME_FIELDS and value:
                times[key] = parse_time(value, now)
                kept.append(f"{key}:{value}")
            else:
                words.append(token.lower())
                kept.append(token.lower())
        return cls(fields, tuple(words), times.get("since"), times.get("until"), " ".join(kept), typed)

    @property
    def active(self) -> bool:
        return bool(self.fields or self.words or self.since or self.until)

    def highlights(self) -> list[str]:
        """What to highlight in matching rows: the free words and the field values."""
        return [*self.words, *(v for k, v in self.fields.items() if k not in ("state", "status"))]

    def index_filters(self, kind: str) -> dict[str, str]:
        """The terms the store's index can answer for this collection (exact values)."""
        indexed = _INDEXED.get(kind, {})
        allowed = set(FILTERS.get(KINDS[kind], ())) if kind in KINDS else set()
        return {
            indexed[name]: self.typed.get(name, value)
            for name, value in self.fields.items()
            if name in indexed and indexed[name] in allowed and _exact(kind, name, value)
        }

    def matches(self, rec: Mapping[str, Any], kind: str | None = None) -> bool:
        """Whether a record passes every term (times only when `kind` says where its time is)."""
        raw_payload = rec.get("payload")
        payload = raw_payload if isinstance(raw_payload, dict) else {}
        for key, value in self.fields.items():
            if key == "repo":
                hay = upstream_label(rec) + " " + json.dumps(rec.get("repo", ""))
            elif key == "status":
                hay = str(rec.get("status") or rec.get("event") or "")
            elif key == "state":
                hay = str(rec.get("state") or "")  # derived attempt states; other records have none
            elif key == "type":
                hay = str(rec.get("type") or rec.get("eventType") or "")
            else:
                hay = str(rec.get("sourceId") or payload.get("sourceId") or "")
            if value not in hay.lower():
                return False
        if kind is not None and (self.since or self.until):
            when = record_time(kind, rec)
            if when is None or (self.since and when < self.since) or (self.until and when > self.until):
                return False
        if self.words:
            blob = json.dumps(rec, ensure_ascii=False).lower()
            return all(word in blob for word in self.words)
        return True


# Exact values the index holds, per collection and field: a substring (`status:fail`) is checked by reading.
_STATUSES: Mapping[str, frozenset[str]] = {
    "attempts": frozenset(str(s) for s in ATTEMPT_STATUSES),
    "dispatches": frozenset(str(s) for s in DISPATCH_STATUSES),
    "runs": frozenset(str(s) for s in RUN_STATUSES),
    "signals": frozenset({"release", "push"}),
}


def _exact(kind: str, name: str, value: str) -> bool:
    if name == "status":
        return value in _STATUSES.get(kind, frozenset())
    if name == "type":
        return "." in value  # a full event type (upstream.release); `type:release` is a substring
    return name == "source"  # source ids are typed whole (enter on a source row writes it)


@dataclass
class Found:
    """One step of a search: the matches (`hits`: cursor, record), newest first; where the next step starts (`next`,
    None when the history is exhausted or `since:` reached); how many records this step read."""

    hits: list[tuple[Cursor, dict[str, Any]]]
    next: Cursor | None
    scanned: int

    @property
    def done(self) -> bool:
        return self.next is None


def store_filters(store: Store, kind: str, query: Query) -> dict[str, str]:
    """The query's index terms, but a `source:` that is no stored source id exactly (`gh-rel`, or another case)
    is left to reading, where it matches as a substring whatever its case."""
    filters = query.index_filters(kind)
    source = filters.get("sourceId")
    if source is not None and not store.page(KINDS[kind], limit=1, filters={"sourceId": source}):
        del filters["sourceId"]
    return filters


def search(
    store: Store,
    kind: str,
    query: Query,
    *,
    limit: int = 200,
    before: Cursor | None = None,
    budget: int = BUDGET,
    states: Mapping[str, str] | None = None,
) -> Found:
    """Up to `limit` matches older than `before`, reading at most `budget` records (see the module doc).
    Attempts get their derived `state` from `states` (needed for `state:`)."""
    if kind not in KINDS:
        raise QueryError(f"cannot search {kind!r}: one of {', '.join(KINDS)}")
    filters = store_filters(store, kind, query)
    out: list[tuple[Cursor, dict[str, Any]]] = []
    cursor, scanned, older = before, 0, 0
    while scanned < budget:
        page = store.page(KINDS[kind], filters=filters, limit=PAGE, before=cursor)
        for position, rec in page:
            scanned += 1
            cursor = position
            if states is not None and kind == "attempts":
                rec = {**rec, "state": states.get(str(rec.get("id")), "done")}
            when = record_time(kind, rec) if (query.since or query.until) else None
            if query.since and when is not None and when < query.since:
                older += 1
                if older > OLDER_SLACK:
                    return Found(out, None, scanned)
                continue
            older = 0
            if query.matches(rec, kind):
                out.append((position, rec))
                if len(out) >= limit:
                    return Found(out, position, scanned)
        if len(page) < PAGE:
            return Found(out, None, scanned)
    return Found(out, cursor, scanned)


def total(store: Store, kind: str, query: Query) -> int | None:
    """The exact number of matches when the index alone can say (no filter, or one indexed term), else None."""
    if kind not in KINDS or query.words or query.since or query.until:
        return None
    filters = store_filters(store, kind, query)
    if len(filters) != len(query.fields) or len(filters) > 1:
        return None
    if not filters:
        return store.count(KINDS[kind])
    ((name, value),) = filters.items()
    return store.count_by(KINDS[kind], name).get(value, 0)
