"""Read-only commands: status, events, dispatches, attempts, show, follow. They need no secrets."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from patchmoi.core.config import Settings
from patchmoi.core.errors import NotFoundError
from patchmoi.core.operations import chain, status_summary
from patchmoi.core.store import Kind, parse_limit
from patchmoi.tui.cliutil import EXIT_OK, emit_json, emit_list, event_filter, open_store, resolve
from patchmoi.tui.rows import GLYPHS, upstream_label
from patchmoi.tui.textfmt import relative_time, shorten

SHOW_KINDS = (Kind.EVENTS, Kind.ATTEMPTS, Kind.RUNS, Kind.SIGNALS)
"""What `show` takes an id of (and looks a short id up in), in the order `chain` tries them."""


def glyph(status: Any) -> str:
    return f"{GLYPHS.get(str(status), '?')} {status}"


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    events = open_store(settings).list_events(type=args.type, limit=args.limit)
    return emit_list(
        args.json,
        "events",
        events,
        empty="no flow events",
        headers=("RECEIVED", "TYPE", "REPO@REF", "ID"),
        widths=(10, 24, 40, 0),
        row=lambda e: (relative_time(e.get("receivedAt")), e.get("type"), upstream_label(e), e.get("id")),
    )


def cmd_dispatches(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    records = store.list_dispatches(event_id=event_filter(store, args.event_id), status=args.status, limit=args.limit)
    return emit_list(
        args.json,
        "dispatches",
        records,
        empty="no dispatch records",
        headers=("CREATED", "STATUS", "OP", "TRANSPORT", "RUNS/ERROR", "EVENT"),
        widths=(10, 14, 9, 15, 30, 0),
        row=lambda r: (
            relative_time(r.get("createdAt")),
            glyph(r.get("status")),
            r.get("operation", "dispatch"),
            r.get("transport", "-"),
            r.get("error") or (",".join(r.get("runIds") or []) or "-"),
            r.get("eventId"),
        ),
    )


def cmd_attempts(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    state = "open" if args.open else args.state
    event_id = event_filter(store, args.event_id)
    if state or args.states:
        attempts = store.list_attempts_in_state(state, event_id=event_id, status=args.status, limit=args.limit)
    else:
        attempts = store.list_attempts(event_id=event_id, status=args.status, limit=args.limit)
    empty = "the open queue is empty: nothing needs a person" if state == "open" else "no maintenance attempts"
    if state or args.states:
        return emit_list(
            args.json,
            "attempts",
            attempts,
            empty=empty,
            headers=("UPDATED", "STATE", "STATUS", "UPSTREAM", "OUTCOME", "ID"),
            widths=(10, 11, 22, 28, 40, 0),
            row=lambda a: (
                relative_time(a.get("updatedAt")),
                a.get("state"),
                glyph(a.get("status")),
                upstream_label(a),
                shorten(a.get("error") or a.get("message") or "", 40),
                a.get("id"),
            ),
        )
    return emit_list(
        args.json,
        "attempts",
        attempts,
        empty=empty,
        headers=("UPDATED", "STATUS", "OP", "UPSTREAM", "OUTCOME", "ID"),
        widths=(10, 22, 9, 32, 40, 0),
        row=lambda a: (
            relative_time(a.get("updatedAt")),
            glyph(a.get("status")),
            a.get("operation", "dispatch"),
            upstream_label(a),
            shorten(a.get("error") or a.get("message") or "", 40),
            a.get("id"),
        ),
    )


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    summary = status_summary(store, parse_limit(args.limit, 20))
    if args.json:
        emit_json(summary)
        return EXIT_OK
    totals = summary["totals"]
    health = summary["store"]
    database = health.get("backend") == "postgresql"
    if database:  # (DATA_DIR then holds only worktrees)
        print(f"database     {health.get('location')} (PostgreSQL {health.get('serverVersion') or '?'})")
    else:
        print(f"data dir     {summary['dataDir']}")
    print(
        f"records      {totals['signals']} signals, {totals['events']} flow events, "
        f"{totals['dispatches']} dispatches, {totals['attempts']} attempts, {totals['runs']} runs"
    )
    counts = summary["attemptStatusCounts"]
    if counts:
        print("attempts     " + ", ".join(f"{glyph(k)} {v}" for k, v in sorted(counts.items())))
    dcounts = summary["dispatchStatusCounts"]
    if dcounts:
        print("dispatches   " + ", ".join(f"{glyph(k)} {v}" for k, v in sorted(dcounts.items())))
    queue = summary["openQueue"]
    states = summary["attemptStateCounts"]
    print(
        f"open queue   {states.get('open', 0)} need a person"
        + (f", {states['ready']} ready to adopt" if states.get("ready") else "")
    )
    for a in queue[:5]:
        print(f"  {glyph(a.get('status'))} {upstream_label(a)} {relative_time(a.get('updatedAt'))}  {a.get('id')}")
    if len(queue) > 5:
        print(f"  … {states.get('open', 0) - 5} more: patchmoi attempts --open")
    latest = summary["latest"]["attempts"]
    if latest:
        a = latest[0]
        print(f"latest       {glyph(a.get('status'))} {upstream_label(a)} {relative_time(a.get('updatedAt'))}")
    if database:
        trouble = "; ".join(map(str, health["degraded"]))
        print(f"store        {trouble or 'ok'}, schema {health.get('schemaVersion')}")
        return EXIT_OK
    state = "ok" if not (health["skippedLines"] or health["quarantinedBytes"]) else "DAMAGED"
    print(
        f"store        {state}: {health['skippedLines']} malformed lines skipped, "
        f"{health['quarantinedBytes']} torn-tail bytes quarantined"
    )
    for name, info in health["files"].items():
        if info["skippedLines"]:
            first = info["firstSkipped"][0]
            print(f"  {name}: malformed line at byte {first['offset']} ({first['error']})")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    what = "flow event, maintenance attempt, run or feed signal"
    record_id = resolve(store, args.id, SHOW_KINDS, what=what)
    found = chain(store, record_id)
    if found is None:
        raise NotFoundError(f"no {what} has id {args.id!r}")
    if args.json:
        emit_json(found)
        return EXIT_OK
    print(render_detail(found))
    return EXIT_OK


def render_detail(found: dict[str, Any]) -> str:
    lines: list[str] = []
    kind = found["kind"]
    if kind == "signal":
        sig = found["signal"]
        lines += [
            f"feed signal  {found['id']}",
            f"title        {sig.get('title')}",
            f"received     {sig.get('receivedAt')} ({relative_time(sig.get('receivedAt'))})",
        ]
        if sig.get("filtered"):
            lines.append(f"filtered     {sig['filtered']}")
        if found["event"] is None:
            lines.append("flow event   none")
            return "\n".join(lines)
        kind = "event"
    if kind == "event":
        e = found["event"]
        lines += [
            f"flow event   {e.get('id')}",
            f"type         {e.get('type')}",
            f"received     {e.get('receivedAt')} ({relative_time(e.get('receivedAt'))})",
            "payload      " + json.dumps(e.get("payload"), ensure_ascii=False)[:400],
        ]
        lines.append(f"dispatches   {len(found['dispatches'])}")
        for d in found["dispatches"]:
            error = f"  {d['error']}" if d.get("error") else ""
            lines.append(
                f"  {relative_time(d.get('createdAt')):>8}  {glyph(d.get('status'))}  "
                f"{d.get('operation')} via {d.get('transport')}{error}"
            )
        lines.append(f"attempts     {len(found['attempts'])}")
        for a in found["attempts"]:
            lines.append(f"  {relative_time(a.get('updatedAt')):>8}  {glyph(a.get('status'))}  {a.get('id')}")
    elif kind == "attempt":
        a = found["attempt"]
        lines += [
            f"attempt      {a.get('id')}",
            f"status       {glyph(a.get('status'))}  (state: {a.get('state')})",
            f"event        {a.get('eventId')}",
            f"upstream     {upstream_label(a)}",
            f"updated      {a.get('updatedAt')} ({relative_time(a.get('updatedAt'))})",
        ]
        if a.get("message"):
            lines.append(f"message      {a['message']}")
        if a.get("error"):
            lines.append(f"error        {a['error']}")
        for ref in a.get("candidateRefs") or []:
            lines.append(f"candidate    {ref.get('kind')} {ref.get('ref')} {str(ref.get('sha') or '')[:12]}")
        if a.get("adoptionError"):
            lines.append(f"adoption     {a['adoptionError']}")
        adoption = a.get("adoption")
        if isinstance(adoption, dict):
            lines.append(
                f"adopted      {adoption.get('adoptedAt')} by {adoption.get('by')}: "
                f"{adoption.get('targetBranch')} {str(adoption.get('from') or '-')[:12]} → "
                f"{str(adoption.get('to'))[:12]}"
                + (f" (pushed to {adoption['pushRemote']})" if adoption.get("pushed") else "")
            )
            if adoption.get("pushError"):
                lines.append(f"push failed  {adoption['pushError']}")
            for p in adoption.get("patches") or []:
                lines.append(f"  moved      {p['name']} {str(p['from'])[:12]} → {str(p['to'])[:12]}")
            for r in adoption.get("retired") or []:
                lines.append(f"  retired    {r['name']} ({r['why']}) kept at {r['ref']}")
        for run in found.get("runs") or []:
            lines.append(f"run          {glyph(run.get('status'))} {run.get('id')}")
            lines += series_lines(((run.get("resultPayload") or {}).get("artifacts")) or {})
        if a.get("state") == "ready":
            lines.append(f"next         patchmoi adopt '{a.get('id')}'")
    else:
        r = found["run"]
        lines += [
            f"run          {r.get('id')}",
            f"status       {glyph(r.get('status'))}",
            f"event        {r.get('eventId')}",
            f"step         {r.get('flowName')}/{r.get('stepName')}",
        ]
        result = r.get("resultPayload") or {}
        if result.get("message"):
            lines.append(f"message      {result['message']}")
        for entry in r.get("log") or []:
            lines.append(f"  $ {entry.get('command')}  → exit {entry.get('exitCode')}")
            out = str(entry.get("output") or "").strip()
            for line in out.splitlines()[-8:]:
                lines.append(f"      {line}")
    return "\n".join(lines)


def series_lines(artifacts: dict[str, Any]) -> list[str]:
    """The rebuild report: every source commit of every patch and what became of it."""
    lines = []
    for patch in artifacts.get("series") or []:
        lines.append(f"  patch      {patch.get('patch')}")
        for c in patch.get("commits") or []:
            rebuilt = f" → {str(c['rebuilt'])[:12]}" if c.get("rebuilt") else ""
            lines.append(f"    {c.get('fate')!s:<9} {str(c.get('sha'))[:12]}{rebuilt}  {c.get('subject')}")
    for r in artifacts.get("resolved") or []:
        lines.append(f"  resolved   {r.get('patch')} ({', '.join(r.get('files') or [])}) by {r.get('by')}")
    for r in artifacts.get("reused") or []:
        lines.append(f"  reused     recorded resolution for {r.get('patch')}: {', '.join(r.get('files') or [])}")
    for name in artifacts.get("reapplied") or []:
        lines.append(f"  flagged    {name} applies again after being dropped as merged upstream")
    return lines


def cmd_follow(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings, must_exist=False)
    store.ensure()

    async def run() -> None:
        async for batch in store.follow(from_start=args.from_start):
            for item in batch:
                if args.json:
                    sys.stdout.write(
                        json.dumps({"kind": item.kind.value, "record": item.record}, ensure_ascii=False) + "\n"
                    )
                else:
                    rec = item.record
                    label = rec.get("id") or rec.get("eventId") or rec.get("entryId")
                    kind = rec.get("status") or rec.get("type") or rec.get("event") or ""
                    print(f"{item.kind.value:<14} {kind:<20} {label}")
            sys.stdout.flush()

    asyncio.run(run())
    return EXIT_OK
