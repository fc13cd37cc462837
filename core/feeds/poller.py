"""Poll feed sources and turn new entries into durable records (ARCHITECTURE §2).

Each step of an entry is idempotent by id (signal, job, flow event, notification), and the cursor is saved
after every entry, so a crash at any point re-runs at most one entry's steps, creating nothing twice.
A bounded seen-id set (not only the Bun service's single `lastSeenId`) decides what is new, so a cursor
that scrolled out of the window does not re-emit the whole feed; a burst is capped and reported.

One entry that cannot be read (parse.py skips it) or recorded (`_accept` raises on its data) costs that entry
only: it is listed in the report (`skipped`, and a warning), in /readyz (`skippedEntries`) and in
feed-state.json (`skipped`), and the rest of the source goes on. A skipped entry that would have been emitted
is not marked seen but kept for retry, so a later, fixed version of it is emitted wherever it then stands in
the feed; one that a readable entry in its place would not have been emitted for (history: priming a
primeOnly source, below every seen entry) is marked seen like that readable entry would have been.
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
from core.feeds.parse import MAX_ID_CHARS, FeedEntry, FeedParseError, ParsedFeed, parse_feed, safe_text
from core.log import log_event
from core.notify.discord import Outbox
from core.records import iso_at, now_iso
from core.sources import FeedSource
from core.store import Store

SEEN_CAP = 500
MAX_BURST = 50
MAX_PRIME_EMIT = 100
MAX_SKIPPED_KEPT = 50


@dataclass
class PollReport:
    source_id: str
    status: str = "ok"  # ok | not_modified | primed | error
    emitted: int = 0
    events: list[str] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    # {sourceId, entryId (None if unknown), reason, retry (not marked seen: a fixed version will be emitted)}
    skipped: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float = 0.0

    def skip(self, entry_id: str | None, reason: str, *, retry: bool) -> None:
        """One entry left out: listed with its source, id and reason, and told as a warning."""
        self.skipped.append({"sourceId": self.source_id,
                             "entryId": safe_text(entry_id, MAX_ID_CHARS) if entry_id else None,
                             "reason": reason, "retry": retry})
        shown = f"entry {entry_id[:80]!r}" if entry_id else "an entry"
        self.warnings.append(f"skipped {shown}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sourceId": self.source_id, "status": self.status, "emitted": self.emitted,
                               "events": self.events, "durationMs": round(self.duration_ms, 1)}
        if self.error:
            out["error"] = self.error
        if self.warnings:
            out["warnings"] = self.warnings
        if self.skipped:
            out["skipped"] = self.skipped
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
        # entries skipped last time that would have been emitted are retried wherever they now are
        retry = {str(x.get("entryId")) for x in st.get("skipped") or []
                 if isinstance(x, dict) and x.get("retry") and x.get("entryId")}
        positions = [i for i, e in enumerate(unique) if e.id in seen]
        if positions:
            oldest_seen = max(positions)
            candidates = [e for i, e in enumerate(unique) if e.id not in seen and (i < oldest_seen or e.id in retry)]
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

    @staticmethod
    def skipped_were_new(source: FeedSource, parsed: ParsedFeed, st: dict[str, Any] | None,
                         priming: bool) -> list[bool]:
        """For each skipped entry: would it have been emitted had it been readable (as `select_new` decides)?"""
        if priming:
            return [not source.prime_only and s.position < MAX_PRIME_EMIT for s in parsed.skipped]
        seen = {str(x) for x in (st or {}).get("seen") or []}
        if (st or {}).get("lastSeenId"):
            seen.add(str((st or {})["lastSeenId"]))
        positions = [i for i, e in enumerate(parsed.entries) if e.id in seen]
        oldest_seen = max(positions) if positions else len(parsed.entries)
        return [s.position <= oldest_seen for s in parsed.skipped]

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
            # off the event loop: a big document takes seconds to parse, and other sources' fetches (with their
            # deadlines) must keep going meanwhile
            parsed = await asyncio.to_thread(parse_feed, result.body, provider=source.provider,
                                             content_type=result.content_type)
        except FeedParseError as exc:
            report.status, report.error = "error", f"Feed {source.id}: {exc}"
            return
        new, warnings, priming = self.select_new(source, parsed.entries, st)
        fresh = self.skipped_were_new(source, parsed, st, priming)
        for skipped, retry in zip(parsed.skipped[:MAX_SKIPPED_KEPT], fresh, strict=False):
            report.skip(skipped.id, skipped.reason, retry=retry)
        if len(parsed.skipped) > MAX_SKIPPED_KEPT:
            report.warnings.append(f"skipped {len(parsed.skipped) - MAX_SKIPPED_KEPT} more entries that could not "
                                   "be read (the first ones are listed)")
        report.warnings.extend(parsed.warnings)
        report.warnings.extend(f"entry {e.id[:80]!r}: {e.error}" for e in parsed.entries if e.error)
        report.warnings.extend(warnings)
        seen = [str(x) for x in prev.get("seen") or []]
        base = {**prev, "etag": result.etag, "lastModified": result.last_modified, "lastError": None,
                "notBefore": None}
        failed: set[str] = set()
        for entry in new:
            try:
                event_id = self._accept(source, entry)
            except (ValueError, TypeError, LookupError, OverflowError) as exc:
                # this entry's data, not the store (an OSError still fails the poll): skip it, keep going,
                # and leave it unseen so the next poll retries it (every step of _accept is idempotent)
                failed.add(entry.id)
                report.skip(entry.id, f"could not be recorded ({type(exc).__name__}: {safe_text(str(exc))})",
                            retry=True)
                continue
            report.emitted += 1
            if event_id:
                report.events.append(event_id)
            seen = [entry.id, *[s for s in seen if s != entry.id]][:SEEN_CAP]
            # progress saved per entry: a crash re-runs at most this entry's (idempotent) steps
            self.state.put(source.id, {**base, "lastSeenId": entry.id, "seen": seen, "primed": True,
                                       "lastCheckedAt": now}, flush=True)
        window = [e.id for e in parsed.entries[:SEEN_CAP] if e.id not in failed]
        # Marked seen on purpose: these skipped entries stand where a readable entry is taken as history (priming
        # a primeOnly source, or below every seen entry), so their later, fixed versions are history too.
        window += [s.id for s, retry in zip(parsed.skipped, fresh, strict=False)
                   if not retry and s.id and safe_text(s.id, MAX_ID_CHARS) == s.id]
        merged_seen = (window + [s for s in seen if s not in set(window)])[:SEEN_CAP]
        final = {**base, "seen": merged_seen, "primed": True, "lastCheckedAt": now}
        final.pop("skipped", None)
        if report.skipped:  # what was skipped now, and which of it a fixed version will be emitted for
            final["skipped"] = [{k: x[k] for k in ("entryId", "reason", "retry")}
                                for x in report.skipped[:MAX_SKIPPED_KEPT]]
        if window:
            final["lastSeenId"] = window[0]
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
        if report.status in ("ok", "primed"):  # the document was read: these are the entries it has skipped now
            h.pop("skippedEntries", None)
            if report.skipped:
                h["skippedEntries"] = report.skipped[:MAX_SKIPPED_KEPT]
                log_event("feed.entries_skipped", sourceId=source.id, skipped=report.skipped[:5])
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
