"""Poll upstream sources and turn new entries into durable records (ARCHITECTURE §2).

Each step of an entry is idempotent by id (signal, job, flow event, notification), and the cursor is saved
after every entry, so a crash at any point re-runs at most one entry's steps, creating nothing twice.

**New by identity.** An entry is new when its id was never seen, wherever it stands in the document (an entry
inserted below older ones, or a backport dated last week, is still new). The ids of the newest `SEEN_CAP`
entries are kept as they are (`seen`); a longer document's other ids are kept as 40-bit digests (`known`),
so a packument with thousands of versions costs ~10 bytes per version and never re-emits its history. New
entries are emitted oldest first: by date, then document order. The first poll primes; a burst is capped.

**Selected by policy.** Each new entry goes through the source's `versions` policy (core.feeds.selection):
one it turns down is still recorded as a signal, marked `filtered` with the reason, and starts nothing.

One entry that cannot be read (the kind's parser skips it) or recorded (`_accept_batch` fails on its data) costs
that entry only: it is listed in the report (`skipped`, and a warning), in /readyz (`skippedEntries`) and in
feed-state.json (`skipped`), and the rest of the source goes on. A skipped entry that was new is not marked
seen, so a later, fixed version of it is emitted; one that was history is marked seen like a readable one.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from patchmoi.core.events import build_flow_event, build_job, build_signal, entry_tag
from patchmoi.core.feeds.entries import MAX_ID_CHARS, FeedEntry, ParsedFeed, safe_text
from patchmoi.core.feeds.fetch import Fetcher
from patchmoi.core.feeds.groupcommit import GroupCommit
from patchmoi.core.feeds.kinds import ReadContext, read_source
from patchmoi.core.feeds.npm import dist_tag_moves
from patchmoi.core.feeds.selection import Decision, advance, decide
from patchmoi.core.feeds.versions import Key, parse_version
from patchmoi.core.log import log_event
from patchmoi.core.notify.discord import Outbox
from patchmoi.core.records import iso_at, now_iso
from patchmoi.core.sources import FeedSource
from patchmoi.core.store import Kind, Store

SEEN_CAP = 500
MAX_BURST = 50
MAX_PRIME_EMIT = 100
MAX_SKIPPED_KEPT = 50
DIGEST_CHARS = 10
MAX_KNOWN = 50_000
"""Digests kept per source (500 KB): a document's own ids always, then those of entries seen earlier."""
GIT_PROCESSES = 8

Accepting = tuple[FeedSource, FeedEntry, Decision]
Accepted = tuple[str | None, dict[str, Any] | None]
"""An entry to record, and what recording it gives back: its flow event's id and the event as stored."""
DATA_ERRORS = (ValueError, TypeError, LookupError, OverflowError)
"""An entry's own data could not be recorded (not the store: an OSError fails the poll)."""


def id_digest(entry_id: str) -> str:
    """40 bits of an entry id: with 50,000 ids known, a new id is taken for seen once in ~20 million."""
    return hashlib.blake2b(entry_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_CHARS // 2).hexdigest()


class Newness:
    """What a source has seen: exact ids (`seen`, `lastSeenId`) and digests of the rest (`known`).

    A state without `known` was written before newness went by identity (or by the Bun service): for that
    one poll, entries standing below the oldest seen one are taken as history, as they were then.
    """

    def __init__(self, st: dict[str, Any] | None) -> None:
        st = st or {}
        self.seen_list = [str(x) for x in st.get("seen") or []]
        self.seen = set(self.seen_list)
        if st.get("lastSeenId"):
            self.seen.add(str(st["lastSeenId"]))
        known = st.get("known")
        self.legacy = not isinstance(known, str)
        text = known if isinstance(known, str) else ""
        self.known = {text[i : i + DIGEST_CHARS] for i in range(0, len(text), DIGEST_CHARS)}

    def has(self, entry_id: str) -> bool:
        return entry_id in self.seen or (bool(self.known) and id_digest(entry_id) in self.known)

    def legacy_history(self, entries: list[FeedEntry]) -> int:
        """Legacy state: the index below which entries may be new (the oldest seen entry's position)."""
        positions = [i for i, e in enumerate(entries) if e.id in self.seen]
        return max(positions) if positions else len(entries)


def emission_order(entries: list[FeedEntry]) -> list[FeedEntry]:
    """Oldest first: by date, then by document order (documents list newest first)."""
    return [e for _, e in sorted(enumerate(entries), key=lambda p: (p[1].published_at, -p[0]))]


class _Cursor:
    """What a poll marks seen: the document's ids (newest first), skipped history, and what was seen before.

    `state(unseen)` gives `seen` (the newest SEEN_CAP ids as they are) and `known` (digests of the rest, with
    the digests known before, up to MAX_KNOWN), leaving out `unseen`: entries not taken yet or failed.
    """

    def __init__(self, window: list[FeedEntry], history: list[str], prev: dict[str, Any]) -> None:
        ids = [e.id for e in window] + history
        listed = set(ids)
        self.ids = ids + [str(x) for x in prev.get("seen") or [] if str(x) not in listed]
        self.digests: dict[str, str] = {}
        known = prev.get("known") if isinstance(prev.get("known"), str) else ""
        assert isinstance(known, str)
        self.prev_known = [known[i : i + DIGEST_CHARS] for i in range(0, len(known), DIGEST_CHARS)]

    def _digest(self, entry_id: str) -> str:
        digest = self.digests.get(entry_id)
        if digest is None:
            digest = self.digests[entry_id] = id_digest(entry_id)
        return digest

    def state(self, unseen: set[str]) -> dict[str, Any]:
        ids = [i for i in self.ids if i not in unseen] if unseen else self.ids
        known = dict.fromkeys(self._digest(i) for i in ids[SEEN_CAP:])
        unseen_digests = {self._digest(i) for i in unseen}
        for digest in self.prev_known:
            if len(known) >= MAX_KNOWN:
                break
            if digest not in unseen_digests:
                known.setdefault(digest)
        return {"seen": ids[:SEEN_CAP], "known": "".join(sorted(known))}


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
    # new entries the source's `versions` policy turned down: {entryId, tag, version, reason}
    filtered: list[dict[str, Any]] = field(default_factory=list)
    # signals that are not releases (npm dist-tag moves), by title
    signals: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def skip(self, entry_id: str | None, reason: str, *, retry: bool) -> None:
        """One entry left out: listed with its source, id and reason, and told as a warning."""
        self.skipped.append(
            {
                "sourceId": self.source_id,
                "entryId": safe_text(entry_id, MAX_ID_CHARS) if entry_id else None,
                "reason": reason,
                "retry": retry,
            }
        )
        shown = f"entry {entry_id[:80]!r}" if entry_id else "an entry"
        self.warnings.append(f"skipped {shown}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sourceId": self.source_id,
            "status": self.status,
            "emitted": self.emitted,
            "events": self.events,
            "durationMs": round(self.duration_ms, 1),
        }
        if self.error:
            out["error"] = self.error
        if self.warnings:
            out["warnings"] = self.warnings
        if self.skipped:
            out["skipped"] = self.skipped
        if self.filtered:
            out["filtered"] = self.filtered
        if self.signals:
            out["signals"] = self.signals
        return out


FLUSH_EVERY = 0.05
"""Cursor moves (`put(flush=True)`) are saved together at most this often: one journal write and one fsync for
every source that moved meanwhile. Saving a cursor later is always safe (a crash retakes those entries, and
taking one is idempotent); saving it before the records it covers would not be, and never happens."""


class FeedState:
    """Every source's poll state, held in memory by the single poller (the lease holder); `flush` saves the
    sources that changed. Read on first use: a process that builds a Poller and never polls (`serve`'s API
    process, whose worker polls) neither reads the file nor repairs a torn one under the worker's feet."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._data: dict[str, Any] | None = None
        self.changed: set[str] = set()
        self.urgent = False  # a cursor moved since the last flush
        self.owns: Callable[[str], bool] | None = None  # several replicas: the sources whose state it may save now
        self.holds: Callable[[str], bool] | None = None  # ... and those it still holds (a late renewal: save later)
        self._flushed_at = 0.0

    @property
    def loaded(self) -> bool:
        return self._data is not None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self.store.read_state()
        return self._data

    def get(self, source_id: str) -> dict[str, Any] | None:
        value = self.data.get(source_id)
        return value if isinstance(value, dict) else None

    def put(self, source_id: str, value: dict[str, Any], *, flush: bool) -> None:
        self.data[source_id] = value
        self.changed.add(source_id)
        if flush:
            self.urgent = True
            self.maybe_flush()

    def adopt(self, source_ids: set[str], fresh: dict[str, Any]) -> None:
        """Sources this poller leads from now on (another replica polled them): their state as saved."""
        for sid in source_ids:
            self.changed.discard(sid)
            if isinstance(fresh.get(sid), dict):
                self.data[sid] = fresh[sid]
            else:
                self.data.pop(sid, None)

    def maybe_flush(self) -> None:
        """Flush if a cursor moved and the last flush is `FLUSH_EVERY` old (the poll loop calls this often)."""
        if self.urgent and time.monotonic() - self._flushed_at >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.changed:
            owns, holds = self.owns, self.holds
            mine = {sid: self.data[sid] for sid in self.changed if owns is None or owns(sid)}
            if mine:
                self.store.write_state(mine)
            # With replicas: a source whose shard was lost is another's (its state is theirs: dropped here); one
            # whose lease is only late in its renewal is saved at the next flush (dropping it lost cursors, and a
            # replica taking the shard later primed from nothing, swallowing a release).
            self.changed = {sid for sid in self.changed if sid not in mine and holds is not None and holds(sid)}
        self.urgent = False
        self._flushed_at = time.monotonic()


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
        self.concurrency = concurrency
        self.semaphore = asyncio.Semaphore(concurrency)
        self.git_slots = asyncio.Semaphore(GIT_PROCESSES)
        self.health: dict[str, dict[str, Any]] = {}
        self.in_flight: set[str] = set()
        self.recorder: GroupCommit[Accepting, Accepted] = GroupCommit(self._accept_batch)

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
            chosen = emission_order(unique)[-MAX_PRIME_EMIT:]
            if len(unique) > MAX_PRIME_EMIT:
                warnings.append(f"primeOnly=false: emitted the newest {MAX_PRIME_EMIT} of {len(unique)} entries")
            return chosen, warnings, True
        newness = Newness(st)
        if newness.legacy:
            retry = {
                str(x.get("entryId"))
                for x in st.get("skipped") or []
                if isinstance(x, dict) and x.get("retry") and x.get("entryId")
            }
            below = newness.legacy_history(unique)
            candidates = [e for i, e in enumerate(unique) if e.id not in newness.seen and (i < below or e.id in retry)]
        else:
            candidates = [e for e in unique if not newness.has(e.id)]
        if unique and len(candidates) == len(unique) and (newness.seen or newness.known):
            warnings.append(
                "none of the previously seen entries is in the feed any more (window scrolled, "
                "history rewritten or feed replaced); treating all entries as new"
            )
        chosen = emission_order(candidates)
        if len(chosen) > MAX_BURST:
            warnings.append(
                f"{len(chosen)} new entries at once; emitted the newest {MAX_BURST}, "
                f"skipped {len(chosen) - MAX_BURST} older ones"
            )
            chosen = chosen[-MAX_BURST:]
        return chosen, warnings, False

    @staticmethod
    def skipped_were_new(
        source: FeedSource, parsed: ParsedFeed, st: dict[str, Any] | None, priming: bool
    ) -> list[bool]:
        """For each skipped entry: would it have been emitted had it been readable (as `select_new` decides)?"""
        if priming:
            return [not source.prime_only and s.position < MAX_PRIME_EMIT for s in parsed.skipped]
        newness = Newness(st)
        if newness.legacy:
            below = newness.legacy_history(parsed.entries)
            return [s.position <= below for s in parsed.skipped]
        return [s.id is None or not newness.has(s.id) for s in parsed.skipped]

    # -- selection by policy -----------------------------------------------------------------------------
    @staticmethod
    def decide(source: FeedSource, entry: FeedEntry, newest: tuple[str, Key] | None) -> Decision:
        """The source's `versions` policy on one entry (push sources follow a branch: always selected)."""
        if source.event != "release":
            return Decision(None, None)
        yanked = entry.extra.get("yanked")
        return decide(
            source.versions,
            tag=None if entry.version else entry_tag(source, entry),
            version=entry.version,
            yanked=str(entry.extra.get("yankedReason") or "") if yanked else None,
            newest=newest,
        )

    @staticmethod
    def newest_version(source: FeedSource, st: dict[str, Any] | None) -> tuple[str, Key] | None:
        name = (st or {}).get("newestVersion")
        parsed = parse_version(name, source.versions.scheme) if isinstance(name, str) else None
        return (name, parsed.key) if isinstance(name, str) and parsed else None

    @staticmethod
    def starting_newest(
        source: FeedSource, st: dict[str, Any] | None, entries: list[FeedEntry], new: list[FeedEntry]
    ) -> tuple[str, Key] | None:
        """The newest version taken before this poll: saved, or (the first poll, or `newerOnly` added to a
        source polled before) the newest the policy selects among the entries that are not new."""
        newest = Poller.newest_version(source, st)
        if newest is None and source.versions.newer_only:
            waiting = {e.id for e in new}
            name = Poller.prime_newest(source, [e for e in entries if e.id not in waiting])
            newest = Poller.newest_version(source, {"newestVersion": name})
        return newest

    @staticmethod
    def prime_newest(source: FeedSource, entries: list[FeedEntry]) -> str | None:
        """The newest version among the entries the policy would select (what `newerOnly` starts from)."""
        best: tuple[str, Key] | None = None
        for entry in entries:
            best = advance(best, Poller.decide(source, entry, None))
        return best[0] if best else None

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
            report.error = (
                f"Feed {source.id} waiting until {iso_at(not_before)} (the host sent Retry-After); not fetched"
            )
            return
        read = await read_source(source, ReadContext(self.fetcher, self.git_slots, prev))
        now = now_iso()
        if read.error:
            report.status, report.error = "error", read.error
            if read.retry_after:
                self.state.put(source.id, {**prev, "notBefore": time.time() + read.retry_after}, flush=False)
            return
        if read.not_modified:
            report.status = "not_modified"
            self.state.put(source.id, {**prev, "lastCheckedAt": now, "lastError": None}, flush=False)
            return
        parsed = read.parsed
        assert parsed is not None
        new, warnings, priming = self.select_new(source, parsed.entries, st)
        fresh = self.skipped_were_new(source, parsed, st, priming)
        for skipped, retry in zip(parsed.skipped[:MAX_SKIPPED_KEPT], fresh, strict=False):
            report.skip(skipped.id, skipped.reason, retry=retry)
        if len(parsed.skipped) > MAX_SKIPPED_KEPT:
            report.warnings.append(
                f"skipped {len(parsed.skipped) - MAX_SKIPPED_KEPT} more entries that could not "
                "be read (the first ones are listed)"
            )
        report.warnings.extend(parsed.warnings)
        report.warnings.extend(f"entry {e.id[:80]!r}: {e.error}" for e in parsed.entries if e.error)
        report.warnings.extend(warnings)
        # Validators (ETag, Last-Modified, a git digest) are saved with the final state only: after a crash the
        # next read must see the document again, or the entries not taken yet would wait for the next change.
        base = {**prev, "lastError": None, "notBefore": None}
        if parsed.dist_tags is not None:
            base = self._dist_tags(source, parsed, base, report, signals=not priming and "distTags" in prev)
        pending = [e.id for e in new]
        newest = self.starting_newest(source, prev, parsed.entries, new)
        # Marked seen on purpose: these skipped entries stand where a readable entry is taken as history (priming
        # a primeOnly source, or seen before), so their later, fixed versions are history too.
        history = [
            s.id
            for s, retry in zip(parsed.skipped, fresh, strict=False)
            if not retry and s.id and safe_text(s.id, MAX_ID_CHARS) == s.id
        ]
        cursor = _Cursor(emission_order(parsed.entries)[::-1], history, prev)
        failed: set[str] = set()
        for index, entry in enumerate(new):
            try:
                decision = self.decide(source, entry, newest)
                # written (and fsynced) on a thread, together with what other polls hand in meanwhile
                event_id, stored = await self.recorder.submit((source, entry, decision))
            except DATA_ERRORS as exc:
                # this entry's data, not the store (an OSError still fails the poll): skip it, keep going,
                # and leave it unseen so the next poll retries it (every step of recording is idempotent)
                failed.add(entry.id)
                report.skip(
                    entry.id, f"could not be recorded ({type(exc).__name__}: {safe_text(str(exc))})", retry=True
                )
                continue
            if stored is not None:
                self.on_flow_event(stored)
            if decision.selected:
                report.emitted += 1
                if event_id:
                    report.events.append(event_id)
                newest = advance(newest, decision)
            else:
                report.filtered.append(
                    {"entryId": entry.id, "tag": decision.tag, "version": decision.version, "reason": decision.reason}
                )
            if newest is not None:
                base["newestVersion"] = newest[0]
            # progress saved per entry: the document is seen but for the entries not taken yet, so a crash
            # re-runs at most this entry's (idempotent) steps and takes the rest
            self.state.put(
                source.id,
                {
                    **base,
                    **cursor.state(failed | set(pending[index + 1 :])),
                    "lastSeenId": entry.id,
                    "primed": True,
                    "lastCheckedAt": now,
                },
                flush=True,
            )
        if newest is not None:
            base["newestVersion"] = newest[0]
        final = {
            **base,
            **cursor.state(failed),
            "etag": read.etag,
            "lastModified": read.last_modified,
            "primed": True,
            "lastCheckedAt": now,
        }
        final.pop("skipped", None)
        if report.skipped:  # what was skipped now, and which of it a fixed version will be emitted for
            final["skipped"] = [
                {k: x[k] for k in ("entryId", "reason", "retry")} for x in report.skipped[:MAX_SKIPPED_KEPT]
            ]
        first = next((e.id for e in parsed.entries if e.id not in failed), None)
        if first is not None:  # the document's first entry, as the Bun service kept it
            final["lastSeenId"] = first
        self.state.put(source.id, final, flush=bool(new))
        report.status = "primed" if priming and not new else "ok"

    def _accept_batch(self, items: Sequence[Accepting]) -> list[Accepted | BaseException]:
        """Record entries handed in together (`GroupCommit`): every signal, then every job, then every flow
        event, one write each; then the notifications. An entry whose data cannot be recorded sends the batch
        down the one-at-a-time path (a batch of one each), where only that entry fails. Runs on a worker thread."""
        try:
            return self._accept_together(items)
        except DATA_ERRORS:
            out: list[Accepted | BaseException] = []
            for item in items:
                try:
                    out += self._accept_together([item])
                except DATA_ERRORS as exc:
                    out.append(exc)
            return out

    def _accept_together(self, items: Sequence[Accepting]) -> list[Accepted | BaseException]:
        """Each entry's signal, job, flow event and notification. Every step is idempotent, so an entry that
        fails half-way is taken again whole by a later poll."""
        built = []
        for source, entry, decision in items:
            signal = build_signal(source, entry, tag=decision.tag, version=decision.version, filtered=decision.reason)
            taken = decision.reason is None
            job = build_job(source, signal) if taken else None
            event = build_flow_event(source, signal) if taken else None
            built.append((signal, signal.to_dict(), job, event.to_dict() if event is not None else None))
        self.store.append_many_if_absent(Kind.SIGNALS, [(sd, s.id) for s, sd, _, _ in built])
        self.store.append_many_if_absent(Kind.JOBS, [(j.to_dict(), j.id) for _, _, j, _ in built if j is not None])
        events = [ed for _, _, _, ed in built if ed is not None]
        added = self.store.append_many_if_absent(Kind.EVENTS, [(ed, str(ed["id"])) for ed in events])
        stored = {
            str(ed["id"]): ed if new else dict(self.store.get_event(str(ed["id"])) or ed)
            for ed, new in zip(events, added, strict=True)
        }
        out: list[Accepted | BaseException] = []
        for (source, entry, decision), (_, signal_dict, job, event_dict) in zip(items, built, strict=True):
            if decision.reason is not None:
                log_event("feed.filtered", sourceId=source.id, entryId=entry.id, reason=decision.reason)
                out.append((None, None))
                continue
            event_id = str(event_dict["id"]) if event_dict is not None else None
            self.outbox.enqueue_signal(signal_dict, job.kind if job else None)
            self._log_accepted(source, entry, job.id if job else None, event_id)
            out.append((event_id, stored[event_id] if event_id is not None else None))
        return out

    def _log_accepted(self, source: FeedSource, entry: FeedEntry, job_id: str | None, event_id: str | None) -> None:
        log_event(
            "feed.accepted",
            sourceId=source.id,
            provider=source.provider,
            event=source.event,
            entryId=entry.id,
            job=job_id,
            flowEvent=event_id,
        )

    def _dist_tags(
        self, source: FeedSource, parsed: ParsedFeed, base: dict[str, Any], report: PollReport, *, signals: bool
    ) -> dict[str, Any]:
        """npm: each dist-tag move since the last poll is a signal, not a release. Moves to versions the
        `versions` policy turns down are marked filtered; only rollbacks and removals are notified."""
        current = parsed.dist_tags or {}
        previous = base.get("distTags") if isinstance(base.get("distTags"), dict) else {}
        assert isinstance(previous, dict)
        if signals and current != previous:
            for entry in dist_tag_moves(parsed.package or source.repo.full_name, previous, current, parsed.modified):
                version = entry.extra.get("version")
                decision = decide(source.versions, tag=None, version=version) if isinstance(version, str) else None
                signal = build_signal(
                    source,
                    entry,
                    tag=decision.tag if decision else None,
                    version=decision.version if decision else None,
                    filtered=decision.reason if decision else None,
                )
                signal_dict = signal.to_dict()
                self.store.append_if_absent(Kind.SIGNALS, signal_dict, signal.id)
                # a tag moving forward comes with its release (notified as such); a rollback or a removal is news
                if (decision is None or decision.selected) and (entry.extra.get("rollback") or version is None):
                    self.outbox.enqueue_signal(signal_dict, None)
                report.signals.append(entry.title)
                log_event("feed.dist_tag", sourceId=source.id, entryId=entry.id, title=entry.title)
        base = {**base, "distTags": current}
        if current != previous:
            self.state.put(source.id, base, flush=True)
        return base

    def _record_health(self, source: FeedSource, report: PollReport) -> None:
        now = now_iso()
        h = self.health.setdefault(source.id, {"sourceId": source.id})
        h.update(
            {
                "kind": source.kind,
                "lastPolledAt": now,
                "lastStatus": report.status,
                "lastDurationMs": round(report.duration_ms, 1),
            }
        )
        if report.filtered:
            h["lastFiltered"] = len(report.filtered)
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
