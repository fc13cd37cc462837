"""The running product: poll loop, dispatch queue, reconciler, notification sender, health.

The poller never waits on dispatch: new flow events go on a bounded-concurrency queue. Passes of one
source never overlap, each source keeps its own interval (with jitter), and only one process polls a
store (the store's `poller` lease); others still serve reads and operator actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from patchmoi.core.config import Settings
from patchmoi.core.dispatch.contract import BackendQueries
from patchmoi.core.dispatch.transports import backend_for_url
from patchmoi.core.errors import ConfigError, NotFoundError, PatchmoiError, StoreWriteError
from patchmoi.core.events import branch_key
from patchmoi.core.feeds import workers as parse_workers
from patchmoi.core.feeds.fetch import Fetcher, FetchLimits
from patchmoi.core.feeds.poller import Poller, PollReport
from patchmoi.core.leadership import STEP_SECONDS, Moves, Shares, replica_name, shard_lease, shard_of, shards_of
from patchmoi.core.log import log_event
from patchmoi.core.notify.discord import DiscordSender, Outbox
from patchmoi.core.operations import POLLER_LEASE, build_dispatcher
from patchmoi.core.pollnow import PollerUnavailable, find_source, poll_source_now, summary
from patchmoi.core.records import iso_at, now_iso
from patchmoi.core.recovery import Recovery
from patchmoi.core.sources import FeedSource, load_sources
from patchmoi.core.store import parse_limit, store_for
from patchmoi.core.tls import tls_context
from patchmoi.core.views import event_view, run_view
from patchmoi.core.worker import PollWorker

T = TypeVar("T")

LEASE_TTL = 30.0  # the poll loop renews the poller lease every third of it
LEASE_RETRY_SECONDS = 2.0  # how often a process that wants to poll asks again for a lease another holds


@dataclass
class SourcesFile:
    """Re-read on change; an invalid edit keeps the last good list and reports the error."""

    path: Path | None
    sources: list[FeedSource] = field(default_factory=list)
    mtime: float | None = None
    error: str | None = None

    def load(self) -> list[FeedSource]:
        if self.path is None:
            return []
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            self.error = f"{self.path}: cannot read: {exc.strerror}"
            return self.sources
        if mtime != self.mtime:
            try:
                self.sources = load_sources(self.path)
                self.error = None
            except ConfigError as exc:
                self.error = str(exc)
                log_event("feed.sources_invalid", error=self.error)
            self.mtime = mtime
        return self.sources


POLL_NOW_REUSE_SECONDS = 1.0
"""A poll-now asked for within this long after the last one finished gets that one's answer (`reused`)."""
WARM_WAIT_SECONDS = 0.5
"""How long a server's start waits for the store's indexes before it answers with `indexing` instead."""


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        fetch_limits: FetchLimits | None = None,
        dispatch_concurrency: int = 4,
        poll_concurrency: int = 64,
        workspace: Path | None = None,
        poll_in_worker: bool = False,
    ) -> None:
        """`poll_in_worker` (what `serve` asks for): polling, intake, automatic dispatch, recovery and the
        notification sender run in a child process (`core.worker`); this process answers the API and the
        operator's actions. Without it, all of it runs here (the CLI, the demo, the tests)."""
        self.settings = settings
        self.poll_in_worker = poll_in_worker
        self.worker: PollWorker | None = None
        self.store = store_for(settings)
        self.store.ensure()
        self.sources_file = SourcesFile(settings.feed_sources_path)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), verify=tls_context())
        self.fetcher = Fetcher(
            fetch_limits or FetchLimits(deadline=settings.fetch_deadline, max_bytes=settings.max_feed_bytes)
        )
        self.outbox = Outbox(self.store, settings)
        self.sender = DiscordSender(self.outbox, self.http)
        self.dispatcher = build_dispatcher(
            settings,
            self.store,
            sources=self.sources_file.load,
            client=self.http,
            on_attempt=self._on_attempt,
            workspace=workspace,
        )
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._claimed: set[str] = set()  # event ids queued or being dispatched: each goes out once at a time
        self._claimed_sources: dict[str, str] = {}  # of those, the polled ones' source ids
        self._delivering: dict[str, str] = {}  # with replicas: event id -> source id of the dispatches under way
        self._newest_update: dict[str, str] = {}  # branch key -> newest queued upstream.branch_update event id
        self.dispatch_failures: list[dict[str, Any]] = []  # dispatches that failed for configuration (newest last)
        self.dispatcher.superseded = self.superseded_by
        self.recovery = Recovery(self.store, self.dispatcher, self.enqueue, notify=self.outbox.active)
        self.recovery.claimed = self._claimed.__contains__
        self.poller = Poller(
            self.store,
            self.fetcher,
            self.outbox,
            self.enqueue,
            concurrency=poll_concurrency,
            min_interval=settings.min_poll_seconds,
        )
        # Several replicas on one database (PATCHMOI_DATABASE_URL): each polls the sources of the shards it leads
        # (core.leadership) instead of one process holding the whole poller lease.
        self.shared = bool(settings.database_url)
        self.holder = replica_name() if self.shared else str(os.getpid())
        self.shares: Shares | None = None
        self._lease_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchmoi-leases")
        self.polling = False
        self.dispatch_concurrency = dispatch_concurrency
        self._running: dict[str, asyncio.Task[PollReport]] = {}  # the poll loop's polls under way, by source
        self._due: dict[str, float] = {}  # when the poll loop polls each source next (monotonic)
        self._asked: set[str] = set()  # sources whose poll under way an operator asked for (poll now)
        self._polled_now: dict[str, tuple[float, dict[str, Any]]] = {}  # the last poll-now answer, per source
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self.started_at = now_iso()
        self.last_error: str | None = None
        self.warming = False
        self._wants_poll = False

    def _on_attempt(self, attempt: Mapping[str, Any]) -> None:
        if self.outbox.enqueue_attempt(attempt):
            self._outbox_wake.set()

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self, *, poll: bool = True, warm_in_background: bool = False) -> None:
        """Start workers; with `poll`, take the poller lock and start the poll loop (if sources exist).

        The store's indexes are brought up to date first, on a thread (a fresh index on a big DATA_DIR takes
        seconds). With `warm_in_background` (the server) this returns at once: `health()` says `indexing` with
        its progress, and recovery, dispatch and polling start when the indexes are ready."""
        lead = False
        self._wants_poll = poll and self.settings.feed_sources_path is not None and not self.poll_in_worker
        if poll and self.settings.feed_sources_path is not None and self.poll_in_worker:
            self.worker = PollWorker(self.settings, self.holder)  # it takes the lease, under this process's name
        elif poll and self.settings.feed_sources_path is not None:
            if self.shared:
                self.polling = lead = True  # of the sources whose shards it leads: `_share_loop` decides which
            elif self.store.acquire_lease(POLLER_LEASE, self.holder, LEASE_TTL):
                self.polling = lead = True
            else:
                holder = self.store.lease_holder(POLLER_LEASE) or "?"
                self.last_error = f"another process (pid {holder}) is polling this DATA_DIR"
                log_event("feed.poller_locked", holder=holder)
        if warm_in_background:
            self.warming = True
            task = asyncio.create_task(self._warm_then_run(lead))
            self._tasks.append(task)
            # a small or indexed store is ready in milliseconds: then start as if it had been waited for
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), WARM_WAIT_SECONDS)
        else:
            await asyncio.to_thread(self.store.warm)
            self._run(lead)

    async def _warm_then_run(self, lead: bool) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.store.warm)
        except Exception as exc:  # the workers build what they read themselves: slower, not stopped
            self.last_error = f"building the store's indexes failed: {type(exc).__name__}: {exc}"
            log_event("store.warm_failed", exc=exc)
        else:
            log_event("store.warmed", seconds=round(time.monotonic() - started, 2))
        finally:
            self.warming = False
        if not self._stop.is_set():
            self._run(lead)

    def _run(self, lead: bool) -> None:
        if self.worker is not None:  # it closes interrupted runs, dispatches, recovers and notifies
            self.worker.start()
            return
        # before any new run starts: what is running now is ours (with replicas: of this machine, `owner_alive`)
        self.recovery.close_interrupted()
        for _ in range(self.dispatch_concurrency):
            self._tasks.append(asyncio.create_task(self._dispatch_worker()))
        self._tasks.append(asyncio.create_task(self._outbox_loop()))
        if lead:
            self._lead()
        elif self._wants_poll:
            self._tasks.append(asyncio.create_task(self._await_lease()))

    def _lead(self) -> None:
        if self.shared:
            self.shares = Shares(self.store, self.holder)
            self.recovery.owns = self.shares.polls  # its backlog: the events of the sources this replica polls
            self.poller.state.owns = self.shares.owns  # never save the state of a source another replica polls
            self.poller.state.holds = self.shares.holds
            self._tasks.append(asyncio.create_task(self._share_loop()))
        self._tasks.append(asyncio.create_task(self._recovery_loop()))
        self._tasks.append(asyncio.create_task(self._poll_loop()))

    async def _await_lease(self) -> None:
        """Another process polls this DATA_DIR: try for the lease every few seconds, and lead when it is free
        (that process stopped or died), so polling never waits for a restart of this one."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), LEASE_RETRY_SECONDS)
            if self._stop.is_set():
                return
            if self.store.acquire_lease(POLLER_LEASE, self.holder, LEASE_TTL):
                self.polling, self.last_error = True, None
                log_event("feed.poller_lease_taken", holder=self.holder)
                self._lead()
                return

    @property
    def coordinating(self) -> bool:
        """Whether this process runs the once-only duties: always, but for a replica that is not coordinator."""
        return not self.shared or (self.shares is not None and self.shares.coordinator)

    async def _share_loop(self) -> None:
        """Keep this replica's shards and coordinator role (core.leadership): take a dead replica's within
        seconds, hand a surplus to one that joined, and reload the feed state of the sources it takes."""
        shares = self.shares
        assert shares is not None
        last_ok = time.monotonic()
        while not self._stop.is_set():
            was_coordinator = shares.coordinator
            try:
                moves = await self._on_lease_thread(shares.step)
            except PatchmoiError as exc:  # the database is unreachable: stop leading once the leases lapsed
                self.last_error = f"leadership: {exc}"
                if time.monotonic() - last_ok > shares.ttl and (shares.held or shares.coordinator):
                    shares.held.clear()
                    shares.leaving.clear()
                    shares.arriving.clear()
                    shares.coordinator = False
                    log_event("service.leadership_lapsed", holder=self.holder, error=str(exc))
            else:
                last_ok = time.monotonic()
                if self.last_error and self.last_error.startswith("leadership: "):
                    self.last_error = None
                try:
                    await self._apply_moves(moves)
                    if shares.coordinator and not was_coordinator:
                        await asyncio.to_thread(self.recovery.close_interrupted)
                        self._outbox_wake.set()
                except PatchmoiError as exc:  # (a lost database: taken shards wait in `arriving`, tried again)
                    self.last_error = f"leadership: {exc}"
                    log_event("service.leadership_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STEP_SECONDS)

    async def _on_lease_thread(self, call: Callable[..., T], *args: Any) -> T:
        """Lease work on a thread of its own: queued behind the shared pool's reads and dispatches on a busy
        replica, a step came late, the leases looked stale (`Shares.fresh`) and the replica stopped polling."""
        return await asyncio.get_running_loop().run_in_executor(self._lease_thread, call, *args)

    async def _apply_moves(self, moves: Moves) -> None:
        shares = self.shares
        assert shares is not None
        sources = [s.id for s in self.sources_file.load()]
        arriving = set(shares.arriving)  # taken this step (or an earlier one whose state could not be read)
        if arriving:  # polled by another replica until now: its saved state is the truth, poll them soon
            gained = shards_of(sources, arriving, shares.shards)
            fresh = await asyncio.to_thread(self.store.read_state)
            self.poller.state.adopt(gained, fresh)
            for sid in gained:
                self._due[sid] = 0.0
            shares.arrived(arriving)
        if moves.surplus:  # from now on no poll or dispatch of theirs starts here
            shares.stop_polling(moves.surplus)
        if moves.lost:  # (a lapsed lease: another replica may poll them already; queued dispatches are dropped)
            log_event("feed.shards_lost", shards=sorted(moves.lost), holder=self.holder)
        if shares.leaving:
            busy = set(self._running) | set(self._delivering.values())  # (queued ones are left to the new owner)
            ready = {n for n in shares.leaving if not shards_of(busy, {n}, shares.shards)}
            if ready:  # nothing of theirs under way: save what this replica knows of them, then let go
                self.poller.state.flush()
                await self._on_lease_thread(shares.hand_over, ready)

    def indexing(self) -> dict[str, Any] | None:
        """While the store's indexes are being built: overall percent and each collection's progress."""
        return self.store.indexing(starting=self.warming)

    async def stop(self) -> None:
        self._stop.set()
        if self.worker is not None:
            await self.worker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        # Polling has stopped: save the cursors and hand the lease over now, so a process started meanwhile
        # polls at once, while local runs still get their grace (their records do not need the lease).
        self.poller.state.flush()
        if self.shares is not None:
            await self._on_lease_thread(self.shares.release_all)
            self._lease_thread.shutdown(wait=False)
        else:
            self.store.release_lease(POLLER_LEASE, self.holder)
        self.polling = False
        await self.dispatcher.shutdown(grace=10.0)
        await self.fetcher.aclose()
        await asyncio.to_thread(parse_workers.shutdown)  # the feed parser's worker process
        await self.http.aclose()
        self.store.close()

    # -- polling -----------------------------------------------------------------------------------------
    async def poll_once(self, *, drain_timeout: float = 600.0) -> list[PollReport]:
        """One pass over every source, then dispatch what it produced and deliver notifications."""
        if not self.store.acquire_lease(POLLER_LEASE, self.holder, LEASE_TTL):
            holder = self.store.lease_holder(POLLER_LEASE) or "?"
            raise PatchmoiError(
                f"another process (pid {holder}) is polling {self.store.data_dir}; stop it or use its API"
            )
        try:
            sources = self.sources_file.load()
            if self.sources_file.error:
                raise ConfigError(self.sources_file.error)
            self.recovery.attempts_for_dispatches()
            self.recovery.close_interrupted()
            self.recovery.notifications_for_outcomes()
            while self.recovery.queue_backlog():  # the whole backlog, a bounded batch at a time
                await self.drain_dispatches()
            reports = await self.poller.poll_all(sources)
            await self.drain_dispatches()
            await self.dispatcher.drain(timeout=drain_timeout)
            await self.sender.deliver_pending(deadline=time.monotonic() + 30)
            return reports
        finally:
            self.store.release_lease(POLLER_LEASE, self.holder)

    async def drain_dispatches(self) -> None:
        while not self.queue.empty():
            await self._dispatch_one(self.queue.get_nowait())

    async def _poll_loop(self) -> None:
        running = self._running
        try:
            await self._poll_turns(running)
        finally:  # stopping: no poll goes on writing after the final flush and the store's close
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)

    async def _poll_turns(self, running: dict[str, asyncio.Task[PollReport]]) -> None:
        due = self._due
        last_flush = last_renew = time.monotonic()
        while not self._stop.is_set():
            if self.shares is None and time.monotonic() - last_renew >= LEASE_TTL / 3:
                last_renew = time.monotonic()
                if not self.store.renew_lease(POLLER_LEASE, self.holder, LEASE_TTL):
                    self.polling = False  # another replica leads now: it polls, this process still serves
                    self.last_error = "the poller lease was lost; this process stopped polling"
                    log_event("feed.poller_lease_lost", holder=self.store.lease_holder(POLLER_LEASE))
                    return
            sources = self.sources_file.load()
            now = time.monotonic()
            # Tasks only for what can run now: a thousand created in one turn would hold the loop (and the API)
            # for tens of milliseconds; the rest start on the next turns, a few milliseconds apart.
            room, backlog = max(0, self.poller.concurrency - len(running)), False
            shares = self.shares
            for src in sources:
                if shares is not None and not shares.polls(src.id):
                    continue  # another replica polls it
                if src.id not in running and due.get(src.id, 0.0) <= now:
                    if not room:
                        backlog = True
                        break
                    running[src.id] = asyncio.create_task(self.poller.poll_source(src))
                    room -= 1
            primed = False
            for sid in [sid for sid, t in running.items() if t.done()]:
                report = running.pop(sid).result()
                primed = primed or report.status == "primed"
                source = next((s for s in sources if s.id == sid), None)
                if source is not None:
                    self._schedule(source, report)
            # Cursor moves are saved within FLUSH_EVERY (the poller flushes on its next move, this loop on its
            # next turn); lastCheckedAt/ETag bookkeeping is batched (a lost batch costs one unconditional fetch).
            if primed or self.poller.state.urgent or time.monotonic() - last_flush >= 5.0:
                try:
                    self.poller.state.flush()
                    last_flush = time.monotonic()
                except StoreWriteError as exc:  # a full disk: keep polling, the next flush tries again
                    self.last_error = str(exc)
                    log_event("feed.state_write_failed", error=str(exc))
            waiting = [
                t - time.monotonic()
                for sid, t in due.items()
                if sid not in running and (shares is None or shares.polls(sid))
            ]
            wake = min([0.25, *waiting]) if not running else (0.005 if backlog else 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.02, wake))

    def _schedule(self, source: FeedSource, report: PollReport) -> None:
        """After a poll of `source`: when the next one is due (its interval, or a back-off after errors). A
        poll-now that failed never puts the next scheduled poll later (pressing `p` to see whether a feed
        is back must not lengthen its back-off)."""
        delay = self.poller.next_due(source, report.status)
        planned = self._due.get(source.id, 0.0) - time.monotonic()
        if source.id in self._asked and report.status == "error" and planned > 0:
            delay = min(delay, planned)
        self._asked.discard(source.id)
        self._due[source.id] = time.monotonic() + delay
        self.poller.health.setdefault(source.id, {})["nextDueAt"] = iso_at(time.time() + delay)

    # -- poll one source now -----------------------------------------------------------------------------
    def source(self, source_id: str) -> FeedSource:
        """The configured source with this id (the last good feed-sources.json); NotFoundError if none, or
        ConfigError (`invalid_config`) when the file is invalid and its last good version does not have it."""
        sources = self.sources_file.load()
        try:
            return find_source(sources, source_id, self.settings)
        except NotFoundError:
            if self.sources_file.error:
                raise ConfigError(self.sources_file.error) from None
            raise

    async def poll_now(self, source_id: str) -> dict[str, Any]:
        """Poll one source now and answer its summary (core.pollnow.summary).

        With a poll worker, the worker does it (it owns the feed state and the schedule). In the process that
        leads polling, the poll joins the poll loop's own (one already under way for the source is waited for,
        not doubled) and sets the source's next poll as a scheduled one would. A process that does not poll
        takes the lease for this one poll, or refuses (PollerBusy) when another process holds it."""
        source = self.source(source_id)
        if self._stop.is_set():
            raise PollerUnavailable("the service is stopping")
        if self.worker is not None:
            return await self.worker.poll_now(source.id)
        if self.shared and not self.polling:
            raise PollerUnavailable("this replica does not poll (no feed sources configured, or it is stopping)")
        if self.shares is not None and not self.shares.polls(source.id):
            return await self._poll_for_another(source)
        if not self.polling:  # (PollerBusy when another process polls this DATA_DIR)
            return await poll_source_now(self.settings, self.store, source.id, dispatcher=self.dispatcher)
        recent = self._polled_now.get(source.id)
        if recent is not None and time.monotonic() - recent[0] < POLL_NOW_REUSE_SECONDS:
            return {**recent[1], "reused": True}  # asked again at once (a key held down): that poll's answer
        task = self._running.get(source.id)
        if task is None:
            task = self._running[source.id] = asyncio.create_task(self.poller.poll_source(source))
            self._asked.add(source.id)
        try:
            report = await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._stop.is_set():  # the service stops (its poll loop cancelled the poll): say so, not 500
                raise PollerUnavailable("the service is stopping; the poll did not finish") from None
            raise
        if self._running.get(source.id) is task:  # the loop has not reaped it yet: schedule it here
            del self._running[source.id]
            self._schedule(source, report)
        self.poller.state.maybe_flush()
        health = self.poller.health.get(source.id, {})
        log_event("feed.poll_now", sourceId=source.id, status=report.status, emitted=report.emitted)
        answer = summary(report, polled_at=health.get("lastPolledAt"), next_due_at=health.get("nextDueAt"))
        self._polled_now[source.id] = (time.monotonic(), answer)
        return answer

    async def _poll_for_another(self, source: FeedSource) -> dict[str, Any]:
        """Poll-now of a source another replica polls (behind a load balancer, any replica gets the request):
        poll it here from the state that replica saved. Intake is exactly-once whoever polls; the state is not
        saved here (FeedState.owns), and the new events are dispatched by the polling replica's recovery."""
        fresh = await asyncio.to_thread(self.store.read_state)
        self.poller.state.adopt({source.id}, fresh)
        report = await self.poller.poll_source(source)
        holder = await asyncio.to_thread(self.store.lease_holder, shard_lease(shard_of(source.id)))
        health = self.poller.health.get(source.id, {})
        log_event("feed.poll_now", sourceId=source.id, status=report.status, emitted=report.emitted, forReplica=holder)
        answer = summary(report, polled_at=health.get("lastPolledAt"), next_due_at=None)
        answer["polledBy"], answer["polledFor"] = self.holder, holder
        return answer

    # -- dispatch ----------------------------------------------------------------------------------------
    async def _recovery_loop(self) -> None:
        """Finish what a crash left behind, in the background (the API answers meanwhile): missing attempts,
        then the flow events that were never dispatched, a bounded batch whenever the queue has room; then
        a periodic check, so an event whose dispatch failed to be recorded (a full disk) is retried."""
        loop = asyncio.get_running_loop()

        def enqueue_from_thread(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self.enqueue, event)

        self.recovery.enqueue = enqueue_from_thread
        while not self._stop.is_set():  # (wait_for may swallow the cancel when _stop is set at that moment)
            try:
                if self.coordinating:
                    await asyncio.to_thread(self.recovery.attempts_for_dispatches)
                    self.recovery.notifications_for_outcomes()  # on the loop: the outbox hook wakes the sender
                if self.queue.qsize() < 100:
                    await asyncio.to_thread(self.recovery.queue_backlog)
            except PatchmoiError as exc:
                self.last_error = f"recovery: {exc}"
            busy = self.recovery.state.backlog
            with contextlib.suppress(TimeoutError):
                # (with replicas, every 5 s at least: another replica's poll-now left this one events to dispatch)
                await asyncio.wait_for(self._stop.wait(), 1.0 if busy else 5.0 if self.shared else 30.0)

    def enqueue(self, event: dict[str, Any]) -> None:
        """Queue an event for dispatch, unless it is queued or being dispatched already: recovery looks for
        events with no dispatch record every second, and one whose delivery to a slow backend is still in
        flight has none yet (it was sent four times before)."""
        event_id = str(event.get("id"))
        key = branch_key(event)
        if key is not None:
            self._newest_update[key] = event_id
        if event_id in self._claimed:
            return
        self._claimed.add(event_id)
        payload = event.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("sourceId"), str):
            self._claimed_sources[event_id] = payload["sourceId"]  # (a hand-over waits for its source's dispatches)
        self.queue.put_nowait(event)

    def superseded_by(self, event: dict[str, Any]) -> str | None:
        """The newer waiting update of the same branch, if this one is not the newest."""
        key = branch_key(event)
        newest = self._newest_update.get(key) if key is not None else None
        return newest if newest is not None and newest != event.get("id") else None

    async def _dispatch_worker(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self._dispatch_one(event)
            except Exception as exc:
                self.last_error = f"dispatch of {event.get('id')} failed: {exc}"
                log_event("dispatch.error", eventId=event.get("id"), error=str(exc))
            finally:
                self.queue.task_done()

    async def _dispatch_one(self, event: dict[str, Any]) -> None:
        try:
            await self._dispatch_claimed(event)
        finally:  # its dispatch record is written (or it failed): recovery may queue it again if it has none
            self._claimed.discard(str(event.get("id")))
            self._claimed_sources.pop(str(event.get("id")), None)
            self._delivering.pop(str(event.get("id")), None)

    async def _dispatch_claimed(self, event: dict[str, Any]) -> None:
        ids = [str(event["id"])]
        undispatched = await self.store.off_loop(self.store.undispatched, ids)
        if not undispatched:
            return  # already dispatched (by us before a restart, or by an operator)
        source_id = self._claimed_sources.get(ids[0])
        if self.shares is not None and source_id is not None:
            if not self.shares.polls(source_id):
                # its shard is being handed over, or went to another replica: that one's recovery dispatches it
                log_event("dispatch.left_to_owner", eventId=ids[0], sourceId=source_id)
                return
            self._delivering[ids[0]] = source_id  # (no await since the check: a hand-over waits for it now)
        newer = self.superseded_by(event)
        if newer is not None and self._runs_here(event):
            self.dispatcher.record_superseded(event, newer)  # the newest update of the branch is rebuilt instead
            log_event("dispatch.superseded", eventId=event.get("id"), by=newer)
            return
        outcome = await self.dispatcher.dispatch(event, wait=False, automatic=True)
        log_event(
            "dispatch.done",
            eventId=event.get("id"),
            status=outcome.record.get("status"),
            transport=outcome.record.get("transport"),
        )
        if outcome.record.get("status") == "failed" and outcome.record.get("errorKind") == "config":
            failure = {
                "eventId": event.get("id"),
                "error": outcome.record.get("error"),
                "at": outcome.record.get("createdAt"),
            }
            self.dispatch_failures = [*self.dispatch_failures[-49:], failure]
            self.last_error = f"dispatch of {event.get('id')} failed: {outcome.record.get('error')}"

    def _runs_here(self, event: dict[str, Any]) -> bool:
        try:
            return self.dispatcher.backend_for(event).runs_here
        except ConfigError:
            return False  # dispatch() records the configuration failure

    # -- notifications -----------------------------------------------------------------------------------
    async def _outbox_loop(self) -> None:
        while True:
            try:
                if self.coordinating:  # (with replicas, one sends: the coordinator)
                    await self.sender.deliver_pending(deadline=time.monotonic() + 60)
            except Exception as exc:
                self.last_error = f"notification sender: {exc}"
            self._outbox_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_wake.wait(), 2.0)

    # -- workspace runs and events (local store, or the configured backend) ---------------------------------
    def backend(self) -> BackendQueries | None:
        """The configured backend's read side (None: the local store answers)."""
        url = self.settings.backend_url
        if not url:
            return None
        try:
            backend = backend_for_url(url, self.settings.backend_secret)
        except ConfigError:
            return None
        return backend.handler.queries(backend, self.http)

    async def workspace_runs(self, event_id: str | None, status: str | None, limit: Any) -> dict[str, Any]:
        backend = self.backend()
        if backend is not None:  # `limit` is forwarded when the client gave one (the backend has its default)
            raw = await backend.list_runs(event_id, status, _forwarded_limit(limit))
            runs = [run_view(r) for r in raw.get("runs", []) if isinstance(r, dict)]
            out: dict[str, Any] = {"runs": runs, "raw": raw}
        else:
            runs = [run_view(r) for r in self.store.list_runs(event_id=event_id, status=status, limit=limit)]
            out = {"runs": runs, "raw": {"source": "local"}}
        if event_id:
            out["eventId"] = event_id
        return out

    async def workspace_run(self, run_id: str) -> dict[str, Any] | None:
        backend = self.backend()
        if backend is not None:
            return run_view(await backend.get_run(run_id))
        run = self.store.get_run(run_id)
        return run_view(run) if run is not None else None

    async def workspace_events(self, type: str | None, limit: Any) -> dict[str, Any]:
        backend = self.backend()
        if backend is not None:
            raw = await backend.list_events(type, _forwarded_limit(limit))
            return {"events": [event_view(e) for e in raw.get("events", []) if isinstance(e, dict)], "raw": raw}
        events = self.store.list_events(type=type, limit=limit)
        return {
            "events": [event_view(e, self.store.list_runs(event_id=str(e["id"]), limit=50)) for e in events],
            "raw": {"source": "local"},
        }

    async def workspace_event(self, event_id: str) -> dict[str, Any] | None:
        backend = self.backend()
        if backend is not None:
            body = await backend.get_event(event_id)
            event = body.get("event", body)
            runs = body.get("runs") if isinstance(body.get("runs"), list) else None  # `{event, runs}` answers
            return (
                event_view(event, [r for r in runs or [] if isinstance(r, dict)]) if isinstance(event, dict) else None
            )
        stored = self.store.get_event(event_id)
        if stored is None:
            return None
        return event_view(stored, self.store.list_runs(event_id=event_id, limit=50))

    # -- health ------------------------------------------------------------------------------------------
    async def readyz(self) -> tuple[int, bytes]:
        """`/readyz`: its HTTP status and JSON body. With a poll worker, the worker is asked first, and its
        answer (a per-source list that runs to hundreds of KB) is passed on as the bytes it sent, behind this
        process's own fields: this loop never decodes or encodes it."""
        w = self.worker
        if w is not None and self.indexing() is None:
            await w.refresh_health()
            if w.pid is not None and w.last_health is not None:
                last_head, rest = w.last_health
                head = json.dumps(self._merged_head(last_head), ensure_ascii=False, separators=(",", ":"))
                return 200, head.encode() if rest == b"{}" else head.encode()[:-1] + b"," + rest[1:]
        health = self.health()
        body = json.dumps(health, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        return 503 if health["status"] == "indexing" else 200, body

    def health(self) -> dict[str, Any]:
        """`/readyz` as a dict. While the indexes are built it answers at once with `status: indexing` and the
        progress (what else it reports reads the store, and would wait for the build). With a poll worker:
        the worker's last answer, with this process's start time and local runs added."""
        w = self.worker
        if w is None or self.indexing() is not None:
            return self._health()
        if w.pid is not None and w.last_health is not None:  # its answer: this process's own is not computed
            return {**self._merged_head(w.last_health[0]), **w.health_body()}
        own = self._health()
        health = self._merged_head(own)  # no answer yet (starting), or a dead worker waiting to restart
        health["status"] = "degraded" if w.restarts else own["status"]
        health["lastError"] = w.last_error or "the poll worker is starting"
        return health

    def _merged_head(self, head: Mapping[str, Any]) -> dict[str, Any]:
        assert self.worker is not None
        w = self.worker
        merged = dict(head)
        merged["startedAt"] = self.started_at
        merged["polling"] = w.polling
        merged["localRunsInFlight"] = int(merged.get("localRunsInFlight") or 0) + len(self.dispatcher.tasks)
        merged["worker"] = {"pid": w.pid, "startedAt": w.started_at, "restarts": w.restarts, "lastExit": w.last_exit}
        if self.last_error:
            merged["lastError"] = self.last_error
        # a torn feed-state.json is set aside by whichever process reads it first: the worker, or this one if its
        # own health was asked for while the worker was starting (only then is this process's word needed)
        problem = merged.get("stateProblem") or (
            self.store.health()["stateProblem"] if self.poller.state.loaded else None
        )
        if problem:
            merged["stateProblem"] = problem
            merged["status"] = "degraded" if merged.get("status") == "ok" else merged.get("status")
        return merged

    def _health(self) -> dict[str, Any]:
        indexing = self.indexing()
        if indexing is not None:
            return {
                "status": "indexing",
                "indexing": indexing,
                "startedAt": self.started_at,
                "polling": self.polling,
                "lastError": self.last_error,
            }
        sources = self.sources_file.load() if self.settings.feed_sources_path else []
        state = self.poller.state.data
        shares = self.shares
        if shares is not None:  # the sources other replicas poll: their state as those saved it
            state = {**self.store.read_state(), **{sid: v for sid, v in state.items() if shares.owns(sid)}}
        per_source = []
        for s in sources:
            h = dict(self.poller.health.get(s.id, {"sourceId": s.id}))
            st = state.get(s.id) if isinstance(state.get(s.id), dict) else {}
            assert isinstance(st, dict)
            h.setdefault("lastCheckedAt", st.get("lastCheckedAt"))
            if st.get("lastError") and "lastError" not in h:
                h["lastError"] = st.get("lastError")
            h["intervalSeconds"] = s.poll_interval_seconds
            if shares is not None:
                h["polledHere"] = shares.polls(s.id)
            per_source.append(h)
        store = self.store.health()
        return {
            "status": "ok"
            if not (self.sources_file.error or self.dispatch_failures or store["stateProblem"] or store["degraded"])
            else "degraded",
            "stateProblem": store["stateProblem"],
            "recovery": self.recovery.state.to_dict(),
            "dispatchFailures": self.dispatch_failures[-10:],
            "startedAt": self.started_at,
            "polling": self.polling,
            "pollerLockHolder": None if self.polling or self.shared else self.store.lease_holder(POLLER_LEASE),
            **({"replica": shares.describe()} if shares is not None else {}),
            "sourcesError": self.sources_file.error,
            "sources": per_source,
            "dispatchQueueDepth": self.queue.qsize(),
            "localRunsInFlight": len(self.dispatcher.tasks),
            "notificationsPending": len(self.outbox.pending()) if self.outbox.active else 0,
            "notificationsLastError": self.sender.last_error,
            "lastError": self.last_error,
            "config": self.settings.describe(),
            "store": store,
        }


def _forwarded_limit(limit: Any) -> int | None:
    return None if limit is None or (isinstance(limit, str) and not limit.strip()) else parse_limit(limit)
