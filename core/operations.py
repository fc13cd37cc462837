"""Operations shared by every front end: the chain of a record, status, the dispatcher, the hand-run rule.

The CLI, the dashboard's local client and the HTTP server call these (and the dispatcher's retry, replay and
sync, and core.adopt), so an operation is written once and answers the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from patchmoi.core.attempt_states import derive_states
from patchmoi.core.config import Settings
from patchmoi.core.dispatch.actions import actions_mode
from patchmoi.core.dispatch.contract import Backend
from patchmoi.core.dispatch.dispatcher import Dispatcher
from patchmoi.core.dispatch.selection import select_backend
from patchmoi.core.dispatch.transports import actions_backend, local_backend
from patchmoi.core.errors import UsageError
from patchmoi.core.events import flow_event_id
from patchmoi.core.records import FlowEventJson
from patchmoi.core.sources import FeedSource, load_sources
from patchmoi.core.store import Kind, Store

CHAIN_LIMIT = 50  # dispatches, attempts and runs per chain, newest first
POLLER_LEASE = "poller"  # the store lease held by the one process that polls


# -- the chain of a record ------------------------------------------------------------------------------------
def chain(
    store: Store, record_id: str, *, states: Mapping[str, str] | None = None, limit: int = CHAIN_LIMIT
) -> dict[str, Any] | None:
    """Everything around one record, from any id: a flow event, a maintenance attempt, a workspace run or a feed
    signal (`sourceId:entryId`). `kind` and `id` say which record was asked for (its record is under that kind's
    key); `event`, `dispatches`, `attempts` (each with its derived `state`) and `runs` are its event's chain
    (`runs` of an attempt are the attempt's own). None when no record has this id."""
    focus: dict[str, Any] = {}
    event = store.get_event(record_id)
    if event is not None:
        focus = {"kind": "event"}
    elif (attempt := store.get_attempt(record_id)) is not None:
        focus = {"kind": "attempt", "attempt": attempt}
        event = store.get_event(str(attempt.get("eventId")))
    elif (run := store.get_run(record_id)) is not None:
        focus = {"kind": "run", "run": run}
        event = store.get_event(str(run.get("eventId")))
    elif (signal := store.get(Kind.SIGNALS, record_id)) is not None:
        focus = {"kind": "signal", "signal": signal}
        event = _event_of_signal(store, signal)
    else:
        return None
    event_id = (
        str(event["id"])
        if event is not None
        else str((focus.get("attempt") or focus.get("run") or {}).get("eventId") or "")
    )
    out: dict[str, Any] = {"id": record_id, **focus, "event": event, "dispatches": [], "attempts": [], "runs": []}
    if event_id:
        out["dispatches"] = store.list_dispatches(event_id=event_id, limit=limit)
        out["attempts"] = store.list_attempts(event_id=event_id, limit=limit)
        out["runs"] = store.list_runs(event_id=event_id, limit=limit)
    if "attempt" in focus:
        run_ids = [r for r in focus["attempt"].get("workspaceRunIds") or [] if isinstance(r, str)]
        out["runs"] = [run for rid in run_ids if (run := store.get_run(rid)) is not None]
    if out["attempts"] or "attempt" in focus:
        known = states if states is not None else derive_states(store.all_attempts())
        out["attempts"] = with_states(out["attempts"], known)
        if "attempt" in focus:
            out["attempt"] = with_states([focus["attempt"]], known)[0]
    return out


def signal_id(signal: Mapping[str, Any]) -> str:
    """A feed signal's id in the store: `sourceId:entryId`."""
    return f"{signal.get('sourceId')}:{signal.get('entryId')}"


def _event_of_signal(store: Store, signal: Mapping[str, Any]) -> FlowEventJson | None:
    """The flow event a signal started, if any: its id is `patch:<source>:<entry>:<event type>`, tried for every
    event type the store holds (a handful, from the index)."""
    source, entry = signal.get("sourceId"), signal.get("entryId")
    if not isinstance(source, str) or not isinstance(entry, str):
        return None
    for event_type in store.count_by(Kind.EVENTS, "type"):
        if (event := store.get_event(flow_event_id(source, entry, event_type))) is not None:
            return event
    return None


def with_states(attempts: Iterable[Mapping[str, Any]], states: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """Each attempt with its `state` (`done` when in no other state); unchanged when states are unknown."""
    if states is None:
        return [dict(a) for a in attempts]
    return [{**a, "state": states.get(str(a.get("id")), "done")} for a in attempts]


# -- status ---------------------------------------------------------------------------------------------------
def status_summary(store: Store, limit: int) -> dict[str, Any]:
    """Counts, the newest records, the open queue, feed state and store health (`patchmoi status`)."""
    everything = store.all_attempts()
    states = derive_states(everything)
    state_counts: dict[str, int] = {}
    for state in states.values():
        state_counts[state] = state_counts.get(state, 0) + 1
    return {
        "dataDir": str(store.data_dir),
        "latest": {
            "events": store.list_events(limit=limit),
            "dispatches": store.list_dispatches(limit=limit),
            "attempts": store.list_attempts(limit=limit),
        },
        "totals": {
            "events": store.count(Kind.EVENTS),
            "dispatches": store.count(Kind.DISPATCHES) + store.count(Kind.LEGACY_DISPATCHES),
            "attempts": store.count(Kind.ATTEMPTS),
            "runs": store.count(Kind.RUNS),
            "signals": store.count(Kind.SIGNALS),
        },
        "attemptStatusCounts": store.count_by(Kind.ATTEMPTS, "status"),
        "attemptStateCounts": state_counts,
        "openQueue": [{**a, "state": "open"} for a in everything if states.get(str(a.get("id"))) == "open"][:limit],
        "dispatchStatusCounts": _merge_counts(
            store.count_by(Kind.DISPATCHES, "status"), store.count_by(Kind.LEGACY_DISPATCHES, "status")
        ),
        "feedState": store.read_state_safely(),
        "store": store.health(),
    }


def feed_health(store: Store) -> list[dict[str, Any]]:
    """Each source's last poll, from the saved feed state (what a process that does not poll can say)."""
    return [
        {"sourceId": sid, "lastCheckedAt": st.get("lastCheckedAt"), "lastError": st.get("lastError")}
        for sid, st in store.read_state_safely().items()
        if isinstance(st, dict)
    ]


def _merge_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


# -- the dispatcher and the hand-run rule ---------------------------------------------------------------------
def configured_sources(settings: Settings) -> list[FeedSource]:
    return load_sources(settings.feed_sources_path) if settings.feed_sources_path else []


def build_dispatcher(
    settings: Settings,
    store: Store,
    *,
    workspace: Path | None = None,
    sources: Callable[[], list[FeedSource]] | None = None,
    client: httpx.AsyncClient | None = None,
    on_attempt: Callable[[Mapping[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Dispatcher:
    """The one way a front end gets a dispatcher: the settings' environment and feed sources (re-read each
    time unless `sources` is given), an optional fixed workspace."""
    return Dispatcher(
        store,
        settings.env,
        sources=sources or (lambda: configured_sources(settings)),
        workspace=workspace,
        client=client,
        on_attempt=on_attempt,
        progress=progress,
    )


def hand_run_backend(env: Mapping[str, str], workspace: Path | None, *, guarded: str | None) -> Backend:
    """Where a hand-run event (`patchmoi run`) goes: the given workspace, else the configured backend. A guarded
    run (`guarded` names it: a maintenance event really dispatched) refuses to fall back to a local run nobody
    asked for."""
    if workspace is not None:
        return actions_backend(workspace) if actions_mode(env) else local_backend(workspace)
    backend = select_backend(None, env)
    if guarded and backend.runs_here and not actions_mode(env):
        raise UsageError(
            f"{guarded} dispatch requires PATCH_WORKSPACE_BACKEND_URL, CODEX_WORKSPACE_MODE=actions, "
            "--workspace PATH or --allow-local; use --dry-run to preview"
        )
    return backend
