"""Poll feed sources and turn new entries into durable records (ARCHITECTURE §2).

Each step of an entry is idempotent by id (signal, job, flow event, notification), and the cursor is saved
after every entry, so a crash at any point re-runs at most one entry's steps, creating nothing twice.
A bounded seen-id set (not only the Bun service's single `lastSeenId`) decides what is new, so a cursor
that scrolled out of the window does not re-emit the whole feed; a burst is capped and reported.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.events import build_flow_event, build_job, build_signal
from core.feeds.fetch import Fetcher
from core.feeds.parse import FeedEntry, FeedParseError, parse_feed
from core.log import log_event
from core.notify.discord import Outbox
from core.records import iso_at, now_iso
from core.sources import FeedSource
from core.store import Store

SEEN_CAP = 500
MAX_BURST = 50
MAX_PRIME_EMIT = 100


@dataclass
class PollReport:
    source_id: str
    status: str = "ok"  # ok | not_modified | primed | error
    emitted: int = 0
    events: list[str] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sourceId": self.source_id, "status": self.status, "emitted": self.emitted,
                               "events": self.events, "durationMs": round(self.duration_ms, 1)}
        if self.error:
            out["error"] = self.error
        if self.warnings:
            out["warnings"] = self.warnings
        return out


class FeedState:
    """`feed-state.json` held in memory by the single poller and written atomically."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.data = store.read_state()
        self.dirty = False

    def get(self, source_id: str) -> dict[str, Any] | None:
        value = self.data.get(source_id)
        return value if isinstance(value, dict) else None

    def put(self, source_id: str, value: dict[str, Any], *, flush: bool) -> None:
        self.data[source_id] = value
        self.dirty = True
        if flush:
            self.flush()

    def flush(self) -> None:
        if self.dirty:
            self.store.write_state(self.data)
            self.dirty = False


class Poller:
    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        outbox: Outbox,
        on_flow_event: Callable[[dict[str, Any]], None],
        *,
        concurrency: int = 32,
        min_interval: float = 30.0,
    ) -> None:
        self.min_interval = min_interval
        self.store = store
        self.fetcher = fetcher
        self.outbox = outbox
        self.on_flow_event = on_flow_event
        self.state = FeedState(store)
        self.semaphore = asyncio.Semaphore(concurrency)
        self.health: dict[str, dict[str, Any]] = {}
        self.in_flight: set[str] = set()

    # -- selection ---------------------------------------------------------------------------------------
    @staticmethod
    def select_new(
        source: FeedSource, entries: list[FeedEntry], st: dict[str, Any] | None
    ) -> tuple[list[FeedEntry], list[str], bool]:
        """Entries to emit (oldest first), warnings, and whether this poll primes the source."""
        warnings: list[str] = []
        unique: list[FeedEntry] = []
        ids: set[str] = set()
        for entry in entries:
            if entry.id in ids:
                warnings.append(f"duplicate entry id {entry.id[:80]!r} in feed; kept the first")
                continue
            ids.add(entry.id)
            unique.append(entry)
        if st is None or (not st.get("primed") and not st.get("lastSeenId")):
            if source.prime_only:
                return [], warnings, True
            chosen = unique[:MAX_PRIME_EMIT]
            if len(unique) > MAX_PRIME_EMIT:
                warnings.append(f"primeOnly=false: emitted the newest {MAX_PRIME_EMIT} of {len(unique)} entries")
            return chosen[::-1], warnings, True
        seen = {str(x) for x in st.get("seen") or []}
        if st.get("lastSeenId"):
            seen.add(str(st["lastSeenId"]))
        positions = [i for i, e in enumerate(unique) if e.id in seen]
        if positions:
            candidates = [e for e in unique[: max(positions)] if e.id not in seen]
        else:
            candidates = unique
            if unique:
                warnings.append("none of the previously seen entries is in the feed any more (window scrolled, "
                                "history rewritten or feed replaced); treating all entries as new")
        if len(candidates) > MAX_BURST:
            warnings.append(f"{len(candidates)} new entries at once; emitted the newest {MAX_BURST}, "
                            f"skipped {len(candidates) - MAX_BURST} older ones")
            candidates = candidates[:MAX_BURST]
        return candidates[::-1], warnings, False

    # -- one source --------------------------------------------------------------------------------------
    async def poll_source(self, source: FeedSource) -> PollReport:
        report = PollReport(source.id)
        if source.id in self.in_flight:
            report.status, report.error = "error", "previous poll of this source is still running; skipped"
            return report
        self.in_flight.add(source.id)
        started = time.perf_counter()
        try:
            async with self.semaphore:
                await self._poll(source, report)
        except Exception as exc:
            report.status, report.error = "error", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self.in_flight.discard(source.id)
            report.duration_ms = (time.perf_counter() - started) * 1000
            self._record_health(source, report)
        return report

    async def _poll(self, source: FeedSource, report: PollReport) -> None:
        st = self.state.get(source.id)
        prev = dict(st or {})
        not_before = float(prev.get("notBefore") or 0)
        if not_before > time.time():
            report.status = "error"
            report.error = (f"Feed {source.id} waiting until {iso_at(not_before)} (the host sent Retry-After); "
                            "not fetched")
            return
        result = await self.fetcher.fetch(
            source.url,
            etag=prev.get("etag") if not prev.get("lastError") else None,
            last_modified=prev.get("lastModified") if not prev.get("lastError") else None,
        )
        now = now_iso()
        if result.error:
            report.status, report.error = "error", f"Feed {source.id} {result.error}"
            if result.retry_after:
                self.state.put(source.id, {**prev, "notBefore": time.time() + result.retry_after}, flush=False)
            return
        if result.not_modified:
            report.status = "not_modified"
            self.state.put(source.id, {**prev, "lastCheckedAt": now, "lastError": None}, flush=False)
            return
        try:
            parsed = parse_feed(result.body, provider=source.provider, content_type=result.content_type)
        except FeedParseError as exc:
            report.status, report.error = "error", f"Feed {source.id}: {exc}"
            return
        report.warnings.extend(parsed.warnings)
        report.warnings.extend(f"entry {e.id[:80]!r}: {e.error}" for e in parsed.entries if e.error)
        new, warnings, priming = self.select_new(source, parsed.entries, st)
        report.warnings.extend(warnings)
        seen = [str(x) for x in prev.get("seen") or []]
        base = {**prev, "etag": result.etag, "lastModified": result.last_modified, "lastError": None,
                "notBefore": None}
        for entry in new:
            event_id = self._accept(source, entry)
            report.emitted += 1
            if event_id:
                report.events.append(event_id)
            seen = [entry.id, *[s for s in seen if s != entry.id]][:SEEN_CAP]
            # progress saved per entry: a crash re-runs at most this entry's (idempotent) steps
            self.state.put(source.id, {**base, "lastSeenId": entry.id, "seen": seen, "primed": True,
                                       "lastCheckedAt": now}, flush=True)
        window = [e.id for e in parsed.entries[:SEEN_CAP]]
        merged_seen = (window + [s for s in seen if s not in set(window)])[:SEEN_CAP]
        final = {**base, "seen": merged_seen, "primed": True, "lastCheckedAt": now}
        if parsed.entries:
            final["lastSeenId"] = parsed.entries[0].id
        self.state.put(source.id, final, flush=bool(new))
        report.status = "primed" if priming and not new else "ok"

    def _accept(self, source: FeedSource, entry: FeedEntry) -> str | None:
        signal = build_signal(source, entry)
        signal_dict = signal.to_dict()
        self.store.feed_events.append_if_absent(signal_dict, signal.id)
        job = build_job(source, signal)
        if job is not None:
            self.store.feed_jobs.append_if_absent(job.to_dict(), job.id)
        event = build_flow_event(source, signal)
        event_id = None
        if event is not None:
            event_dict = event.to_dict()
            self.store.record_event(event_dict)
            stored = self.store.get_event(event.id) or event_dict
            self.on_flow_event(stored)
            event_id = event.id
        self.outbox.enqueue_signal(signal_dict, job.kind if job else None)
        log_event("feed.accepted", sourceId=source.id, provider=source.provider, event=source.event,
                  entryId=entry.id, job=job.id if job else None, flowEvent=event_id)
        return event_id

    def _record_health(self, source: FeedSource, report: PollReport) -> None:
        now = now_iso()
        h = self.health.setdefault(source.id, {"sourceId": source.id})
        h.update({"lastPolledAt": now, "lastStatus": report.status, "lastDurationMs": round(report.duration_ms, 1)})
        if report.error:
            h["lastError"], h["lastErrorAt"] = report.error, now
            h["consecutiveErrors"] = int(h.get("consecutiveErrors", 0)) + 1
            st = self.state.get(source.id) or {}
            self.state.put(source.id, {**st, "lastError": report.error, "lastErrorAt": now}, flush=False)
            log_event("feed.poll_failed", sourceId=source.id, error=report.error)
        else:
            h["consecutiveErrors"] = 0
            h["lastOkAt"] = now
        if report.warnings:
            h["lastWarning"] = report.warnings[-1]
            log_event("feed.warning", sourceId=source.id, warnings=report.warnings[:5])

    # -- passes ------------------------------------------------------------------------------------------
    async def poll_all(self, sources: list[FeedSource]) -> list[PollReport]:
        reports = list(await asyncio.gather(*(self.poll_source(s) for s in sources)))
        self.state.flush()
        return reports

    def next_due(self, source: FeedSource, last_status: str | None) -> float:
        """Seconds until the next poll: the interval with ±10% jitter, longer after errors or Retry-After."""
        interval = max(self.min_interval, source.poll_interval_seconds)
        h = self.health.get(source.id, {})
        errors = int(h.get("consecutiveErrors", 0))
        if errors:
            interval = min(interval * (2 ** min(errors - 1, 4)), 6 * 3600)
        wait = self.fetcher.host_wait(source.url)
        return max(wait, interval * random.uniform(0.9, 1.1))
