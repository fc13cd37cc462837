"""Poll one source now, on an operator's word (`POST /feed-sources/{id}/poll`, the dashboard).

Intake goes through `Poller.poll_source`, the poller's own path, so it stays exactly-once, and only the holder
of the `poller` lease writes a DATA_DIR's feed state: a process that polls (serve's worker, `patchmoi poll`)
polls the source itself, in its own schedule (`Service.poll_now`, which also moves the source's next poll, as
a scheduled poll would); a process that does not (the local dashboard, a server started without polling) takes
the lease for the one poll (`poll_source_now`) and refuses, with `PollerBusy`, when another process holds it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from patchmoi.core.config import Settings
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.errors import NotFoundError, PatchmoiError, from_code
from patchmoi.core.events import branch_key
from patchmoi.core.feeds.fetch import Fetcher, FetchLimits
from patchmoi.core.feeds.poller import Poller, PollReport
from patchmoi.core.log import log_event
from patchmoi.core.notify.discord import Outbox
from patchmoi.core.operations import POLLER_LEASE, configured_sources
from patchmoi.core.records import now_iso
from patchmoi.core.sources import FeedSource
from patchmoi.core.store import Store, store_for

LEASE_TTL = 30.0


class PollerBusy(PatchmoiError):
    """Another process holds the poller lease of this DATA_DIR: it alone may poll (HTTP 409 `poller_busy`).

    The code is set per instance, as `from_code` does for `*_not_found`: core/errors.py's table has no row for it
    (the server answers it by class), so the class keeps its parent's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = "poller_busy"


class PollerUnavailable(PatchmoiError):
    """The process that polls cannot take the request now: its poll worker is restarting, or did not answer
    (HTTP 503 `poller_unavailable`; the code is per instance, as for PollerBusy)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = "poller_unavailable"


def poll_error(code: object, message: str) -> PatchmoiError:
    """An error a poll worker reported (its code and message) as the class that has that code."""
    if code == "poller_busy":
        return PollerBusy(message)
    if code == "poller_unavailable":
        return PollerUnavailable(message)
    return from_code(code, message)


def find_source(sources: Sequence[FeedSource], source_id: str, settings: Settings) -> FeedSource:
    """The configured source with this id; NotFoundError (`not_found`, 404) when there is none."""
    for source in sources:
        if source.id == source_id:
            return source
    where = settings.feed_sources_path or "FEED_SOURCES_PATH (not set)"
    raise NotFoundError(f"no feed source {source_id[:200]!r} in {where}")


def summary(report: PollReport, *, polled_at: str | None = None, next_due_at: str | None = None) -> dict[str, Any]:
    """What a poll-now answers: `newEntries` counts the entries recorded as signals (`filtered` of them turned
    down by the source's `versions` policy), `events` the flow events they started."""
    return {
        "sourceId": report.source_id,
        "status": report.status,
        "newEntries": report.emitted + len(report.filtered),
        "filtered": len(report.filtered),
        "events": list(report.events),
        "error": report.error,
        "polledAt": polled_at or now_iso(),
        "nextDueAt": next_due_at,
        "durationMs": round(report.duration_ms, 1),
    }


def busy_message(holder: str | None, data_dir: object) -> str:
    return (
        f"another process (pid {holder or '?'}) polls {data_dir} (a `patchmoi serve` or `patchmoi poll`): ask it "
        "to poll, through its API (`patchmoi tui --url URL`, or POST /feed-sources/ID/poll), so that two "
        "processes never write the feed state at once"
    )


async def poll_source_now(
    settings: Settings, store: Store, source_id: str, *, dispatcher: Dispatcher | None = None
) -> dict[str, Any]:
    """Poll one configured source now from a process that does not poll (the local dashboard), under the poller
    lease for the length of the poll; PollerBusy when another process holds it, NotFoundError for an unknown id.

    `store` is the caller's (the dashboard's). The poll itself writes through a Store of its own, closed before
    the lease is released: the feed state it saved is then folded into `feed-state.json` under the lease, and the
    caller's long-lived store holds no feed-state writes it could fold later over another poller's.

    New flow events are dispatched through `dispatcher` (the dashboard's: its local runs go on after this
    returns, as its retries do), as the poller's queue would; without one they wait for the next poller's
    recovery (`serve`, `patchmoi poll`), which dispatches every flow event that has no dispatch.
    """
    source = find_source(configured_sources(settings), source_id, settings)
    own = store_for(settings, data_dir=store.data_dir)
    holder = str(os.getpid())
    # held for the whole poll, never renewed meanwhile: longer than the longest fetch can take (a git source, a
    # PATCHMOI_FETCH_DEADLINE above 30 s), so no `serve` takes it over mid-poll (two writers of the feed state)
    if not own.acquire_lease(POLLER_LEASE, holder, max(LEASE_TTL, settings.fetch_deadline + 60)):
        busy = own.lease_holder(POLLER_LEASE)
        own.close()
        raise PollerBusy(busy_message(busy, store.data_dir))
    events: list[dict[str, Any]] = []
    fetcher = Fetcher(FetchLimits(deadline=settings.fetch_deadline, max_bytes=settings.max_feed_bytes))
    try:
        own.ensure()
        poller = Poller(own, fetcher, Outbox(own, settings), events.append, min_interval=settings.min_poll_seconds)
        report = await poller.poll_source(source)
        polled_at = poller.health.get(source.id, {}).get("lastPolledAt")
        poller.state.flush()
    finally:
        await fetcher.aclose()
        await asyncio.to_thread(own.close)  # folds the feed state, then gives the lease up
    out = summary(report, polled_at=polled_at)
    log_event("feed.poll_now", sourceId=source.id, status=report.status, emitted=report.emitted, local=True)
    if dispatcher is not None and events:
        out["dispatched"] = await _dispatch(store, dispatcher, events)
    return out


async def _dispatch(store: Store, dispatcher: Dispatcher, events: list[dict[str, Any]]) -> int:
    """Dispatch what the poll recorded, as Service's queue does: each event once (none already dispatched), and
    of several updates of one branch only the newest is rebuilt here (the others are recorded as superseded)."""
    newest: dict[str, str] = {}
    for event in events:
        key = branch_key(event)
        if key is not None:
            newest[key] = str(event.get("id"))
    count = 0
    for event in events:
        event_id = str(event.get("id"))
        if not store.undispatched([event_id]):
            continue
        key = branch_key(event)
        newer = newest.get(key) if key is not None else None
        try:
            if newer is not None and newer != event_id and dispatcher.backend_for(event).runs_here:
                dispatcher.record_superseded(event, newer)
                continue
            await dispatcher.dispatch(event, wait=False, automatic=True)
            count += 1
        except PatchmoiError as exc:  # recorded by the dispatcher where it can be; recovery retries the rest
            log_event("dispatch.error", eventId=event_id, error=str(exc))
    return count
