"""Commands that act: poll, run, retry, replay, sync, runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from patchmoi.core.adopt import adopt, default_actor
from patchmoi.core.attempt_states import NEEDS_PERSON
from patchmoi.core.config import Settings
from patchmoi.core.dispatch.dispatcher import Dispatcher, DispatchOutcome
from patchmoi.core.dispatch.http import BackendError
from patchmoi.core.errors import PatchmoiError, UsageError
from patchmoi.core.events import downstream_release_event, upstream_branch_event, upstream_release_event
from patchmoi.core.gc import collect
from patchmoi.core.log import configure
from patchmoi.core.operations import build_dispatcher, hand_run_backend
from patchmoi.core.service import Service
from patchmoi.core.sources import load_sources
from patchmoi.core.store import Kind, Store
from patchmoi.core.workspace.adopt import AdoptRefused
from patchmoi.core.workspace.steps import matching_steps
from patchmoi.tui.cliutil import (
    EVENT_FILTER_HELP,
    EXIT_FAIL,
    EXIT_OK,
    SHORT_HELP,
    emit_json,
    emit_list,
    event_filter,
    open_store,
    progress,
    resolve,
)
from patchmoi.tui.commands_read import glyph
from patchmoi.tui.textfmt import relative_time, shorten, table


def add_ops_commands(sub: Any, common: Any) -> None:
    def add(name: str, help_text: str, handler: Any, description: str | None = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common(p)
        p.set_defaults(handler=handler)
        return p

    p = add(
        "poll",
        "poll the feed sources (forever, or one pass with --once)",
        cmd_poll,
        "Poll every source in FEED_SOURCES_PATH (or --sources). New entries become feed signals and, for\n"
        "maintained targets, flow events that are dispatched. --once runs one pass, waits for the\n"
        "dispatches and notifications it caused, prints a report and exits (1 if a source failed).",
    )
    p.add_argument("--sources", metavar="FILE", help="feed-sources.json (env FEED_SOURCES_PATH)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")

    run = add(
        "run",
        "build a flow event by hand and dispatch it",
        _run_usage,
        "Build a deterministic flow event and dispatch it (to the backend in PATCH_WORKSPACE_BACKEND_URL,\n"
        "or locally in --workspace). --dry-run shows what would run and writes nothing.",
    )
    run_sub = run.add_subparsers(dest="run_kind", metavar="KIND")

    def add_run(name: str, help_text: str) -> argparse.ArgumentParser:
        rp: argparse.ArgumentParser = run_sub.add_parser(name, help=help_text, description=help_text)
        common(rp)
        rp.add_argument("--workspace", metavar="PATH", help="run locally in this fork checkout")
        rp.add_argument("--allow-local", action="store_true", help="run locally in the current directory")
        rp.add_argument("--dry-run", action="store_true", help="show matching steps; write nothing")
        rp.add_argument("--record-only", action="store_true", help="record the event without dispatching it")
        rp.add_argument("--sources", metavar="FILE", help=argparse.SUPPRESS)
        rp.set_defaults(handler=cmd_run)
        return rp

    rp = add_run("upstream-release", "an upstream release: --repo OWNER/NAME --tag TAG")
    rp.add_argument("--repo")
    rp.add_argument("--tag")
    rp = add_run("upstream-branch", "an upstream branch update: --repo OWNER/NAME [--ref] [--sha]")
    rp.add_argument("--repo")
    rp.add_argument("--ref", default="refs/heads/main")
    rp.add_argument("--sha")
    rp = add_run("downstream-release", "a release of our own package: --package NAME --version V [--repo]")
    rp.add_argument("--package", "--package-name", dest="package")
    rp.add_argument("--version", "--tag", dest="version")
    rp.add_argument("--repo")
    rp = add_run("event", "an event from a JSON file with string 'id' and 'type': --file FILE")
    rp.add_argument("--file", required=True)

    for name, verb in (
        ("retry", "re-dispatch a flow event to the same backend (idempotent by id)"),
        ("replay", "ask the backend for new runs of a stored flow event"),
    ):
        p = add(name, verb, cmd_retry_replay)
        p.add_argument("id", help=f"flow event id, {SHORT_HELP}")
        p.add_argument("--reason", help="why (recorded with the dispatch and the attempt)")
        p.add_argument("--sources", metavar="FILE", help="feed-sources.json, to reach the source's own backend")
        p.add_argument("--workspace", metavar="PATH", help="run locally in this fork checkout")
        p.set_defaults(operation=name)

    p = add("sync", "refresh a maintenance attempt from its runs (backend or local)", cmd_sync)
    p.add_argument("id", help=f"maintenance attempt id, {SHORT_HELP}")

    p = add(
        "adopt",
        "move the fork to a rebuilt candidate (main and the patch branches)",
        cmd_adopt,
        "Adopt the candidate of a successful attempt (or of a flow event's newest successful attempt):\n"
        "the fork's target branch moves to the candidate and every patch branch to its rebuilt commits\n"
        "(authors and messages kept; the branches then form a stack in application order). Patches that\n"
        "upstream merged are retired (kept under refs/patchmoi/retired/). Refused, with the reason, when a\n"
        "branch moved since the rebuild or the checked-out branch has local changes. With [adopt] pushRemote\n"
        "in .patchmoi.toml the refs are pushed with --force-with-lease. The attempt records who, what, when.\n"
        "\nexamples:\n  patchmoi attempts --state ready      candidates waiting to be adopted\n"
        "  patchmoi adopt ATTEMPT_ID --reason 'reviewed the range-diff'",
    )
    p.add_argument(
        "id",
        help="maintenance attempt id, or a flow event id (its newest successful attempt); either may be a short id: "
        "4 to 8 hex digits, as the dashboard shows",
    )
    p.add_argument("--by", help="who adopts (default cli:$USER)")
    p.add_argument("--reason", help="why (recorded with the adoption)")
    p.add_argument(
        "--reviewed",
        action="store_true",
        help="confirm you reviewed a candidate the rebuild flagged (a conflict command's resolution, a "
        "reused resolution, a patch applying again after upstream dropped it)",
    )

    p = add(
        "gc",
        "prune rebuild worktrees and old candidate refs that nothing needs any more",
        cmd_gc,
        "Remove the rebuild worktrees of adopted, resolved and superseded attempts (never one that is open\n"
        "or running) and candidate refs beyond the newest [candidate] keep (default 5) of each fork, except\n"
        "candidates waiting to be adopted. It also runs after every local attempt and adoption.",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")

    p = add("runs", "list workspace runs (local runner), newest first", cmd_runs)
    p.add_argument("--event-id", help=EVENT_FILTER_HELP.format("runs"))
    p.add_argument("--status")
    p.add_argument("--limit", default=None)


def _run_usage(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError(
        "run needs a KIND: upstream-release, upstream-branch, downstream-release or event (see 'patchmoi run --help')"
    )


def _dispatcher(settings: Settings, store: Store, workspace: Path | None) -> Dispatcher:
    return build_dispatcher(settings, store, workspace=workspace, progress=progress)


def _print_outcome(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(out)
        return
    record, attempt = out.get("record") or {}, out.get("attempt") or {}
    print(f"event     {out['event'].get('id')}")
    if "recorded" in out:
        print(f"recorded  {'yes' if out['recorded'] else 'no (already stored)'}")
    if record:
        extra = f" ({record.get('error')})" if record.get("error") else ""
        print(f"dispatch  {glyph(record.get('status'))} via {record.get('transport')}{extra}")
    if attempt:
        print(f"attempt   {glyph(attempt.get('status'))} {attempt.get('id')}")
        if attempt.get("message"):
            print(f"message   {attempt['message']}")
        for ref in attempt.get("candidateRefs") or []:
            print(f"candidate {ref.get('ref')} {str(ref.get('sha') or '')[:12]}")


def _exit_for(outcome: DispatchOutcome) -> int:
    if outcome.record.get("status") == "failed" or outcome.attempt.get("status") in NEEDS_PERSON:
        return EXIT_FAIL
    return EXIT_OK


# -- poll ------------------------------------------------------------------------------------------------
def cmd_poll(args: argparse.Namespace, settings: Settings) -> int:
    if settings.feed_sources_path is None:
        raise UsageError("no feed sources: pass --sources FILE or set FEED_SOURCES_PATH")
    load_sources(settings.feed_sources_path)  # validate first: a bad file is a usage error, exit 2
    configure()
    if args.once:
        return asyncio.run(_poll_once(args, settings))
    return asyncio.run(_poll_forever(settings))


async def _poll_once(args: argparse.Namespace, settings: Settings) -> int:
    service = Service(settings)
    try:
        reports = await service.poll_once()
    finally:
        await service.stop()
    data = [r.to_dict() for r in reports]
    if args.json:
        emit_json({"sources": data})
    else:
        rows = [
            (
                r["sourceId"],
                r["status"],
                r["emitted"],
                len(r.get("filtered", [])),
                shorten(r.get("error") or "; ".join(r.get("warnings", [])), 70),
            )
            for r in data
        ]
        print(table(("SOURCE", "STATUS", "NEW", "FILTERED", "ERROR/WARNING"), rows, (32, 12, 4, 8, 0)))
        for r in data:
            for f in r.get("filtered", []):
                print(f"filtered: {r['sourceId']} {f.get('tag') or f.get('entryId')}: {f['reason']}")
    failures = service.dispatch_failures
    for failure in failures:
        print(f"dispatch failed: {failure['eventId']}: {failure['error']}", file=sys.stderr)
    return EXIT_FAIL if any(r.status == "error" for r in reports) or failures else EXIT_OK


async def _poll_forever(settings: Settings) -> int:
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start(poll=True)
    if not service.polling:
        await service.stop()
        raise PatchmoiError(service.last_error or "poller did not start")
    progress(f"polling {len(service.sources_file.load())} source(s) from {settings.feed_sources_path}; Ctrl-C stops")
    await stop.wait()
    await service.stop()
    return EXIT_OK


# -- run -------------------------------------------------------------------------------------------------
def _build_event(args: argparse.Namespace) -> dict[str, Any]:
    kind = args.run_kind
    if kind == "upstream-release":
        if not args.repo:
            raise UsageError("run upstream-release requires --repo")
        if not args.tag:
            raise UsageError("run upstream-release requires --tag")
        return upstream_release_event(args.repo, args.tag).to_dict()
    if kind == "upstream-branch":
        if not args.repo:
            raise UsageError("run upstream-branch requires --repo")
        return upstream_branch_event(args.repo, args.ref, args.sha).to_dict()
    if kind == "downstream-release":
        if not args.package or not args.version:
            raise UsageError("run downstream-release requires --package and --version")
        return downstream_release_event(args.package, args.version, args.repo).to_dict()
    try:
        event = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"event file {args.file} not found") from None
    except ValueError as exc:
        raise UsageError(f"event file {args.file} is not valid JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise UsageError(f"event file {args.file} must be a JSON object with string 'id' and 'type'")
    event.setdefault("source", "patch")
    event.setdefault("payload", {})
    return event


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    event = _build_event(args)
    workspace = Path(args.workspace).resolve() if args.workspace else (Path.cwd() if args.allow_local else None)
    guarded = args.run_kind != "event" and not args.dry_run and not args.record_only
    backend = hand_run_backend(settings.env, workspace, guarded=f"run {args.run_kind}" if guarded else None)
    if args.dry_run:
        matches: list[dict[str, Any]] = []
        if backend.runs_here and backend.workspace is not None:
            matches = [
                {"flow": s.flow, "step": s.name, "runner": s.runner} for s in matching_steps(backend.workspace, event)
            ]
        out = {"event": event, "backend": backend.transport, "matches": matches}
        if args.json:
            emit_json(out)
        else:
            print(f"event    {event['id']}\nbackend  {backend.transport}")
            for m in matches:
                print(f"step     {m['flow']}/{m['step']} ({m['runner']})")
            if not backend.runs_here:
                print("steps    decided by the backend")
        return EXIT_OK
    store = open_store(settings, must_exist=False)
    store.ensure()
    recorded = store.record_event(event)
    stored = store.get_event(str(event["id"])) or event
    if args.record_only:
        emit_json({"event": stored, "recorded": recorded}) if args.json else print(
            f"recorded {stored['id']}" if recorded else f"already stored {stored['id']}"
        )
        return EXIT_OK
    configure()
    dispatcher = _dispatcher(settings, store, workspace)

    async def go() -> DispatchOutcome:
        try:
            return await dispatcher.dispatch(dict(stored), backend=backend, wait=True)
        finally:
            await dispatcher.aclose()

    outcome = asyncio.run(go())
    _print_outcome({**outcome.to_dict(), "recorded": recorded}, args.json)
    return _exit_for(outcome)


# -- retry / replay / sync / runs ------------------------------------------------------------------------
def cmd_retry_replay(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    event_id = resolve(store, args.id, (Kind.EVENTS,), what="flow event")
    workspace = Path(args.workspace).resolve() if args.workspace else None
    dispatcher = _dispatcher(settings, store, workspace)

    async def go() -> DispatchOutcome:
        try:
            if args.operation == "replay":
                return await dispatcher.replay(event_id, reason=args.reason)
            return await dispatcher.retry(event_id, reason=args.reason)
        finally:
            await dispatcher.aclose()

    configure()
    outcome = asyncio.run(go())
    _print_outcome(outcome.to_dict(), args.json)
    return _exit_for(outcome)


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    attempt_id = resolve(store, args.id, (Kind.ATTEMPTS,), what="maintenance attempt")
    dispatcher = _dispatcher(settings, store, None)

    async def go() -> dict[str, Any]:
        try:
            return await dispatcher.sync(attempt_id)
        finally:
            await dispatcher.aclose()

    try:
        attempt = asyncio.run(go())
    except BackendError as exc:
        raise PatchmoiError(f"sync failed: {exc}") from None
    if args.json:
        emit_json({"attempt": attempt})
    else:
        print(f"attempt   {glyph(attempt.get('status'))} {attempt.get('id')}")
        for rid, status in (attempt.get("workspaceRunStatuses") or {}).items():
            print(f"run       {glyph(status)} {rid}")
        if attempt.get("message"):
            print(f"message   {attempt['message']}")
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    ident = resolve(store, args.id, (Kind.ATTEMPTS, Kind.EVENTS), what="maintenance attempt or flow event")
    try:
        attempt = adopt(store, ident, by=args.by or default_actor("cli"), reason=args.reason, reviewed=args.reviewed)
    except AdoptRefused as exc:
        raise PatchmoiError(f"not adopted: {exc}") from None
    record = attempt["adoption"]
    if args.json:
        emit_json({"attempt": attempt})
    else:
        print(f"adopted   {attempt.get('id')}")
        print(
            f"{record['targetBranch']:<9} {str(record.get('from') or '-')[:12]} -> {record['to'][:12]} "
            f"({record['candidate']})"
        )
        for p in record["patches"]:
            print(f"moved     {p['name']} {p['from'][:12]} -> {p['to'][:12]} ({p['commits']} commit(s))")
        for r in record["retired"]:
            print(f"retired   {r['name']} ({r['why']}); old tip kept at {r['ref']}")
        for path in record.get("worktreesUpdated") or []:
            print(f"checkout  {path} updated")
        if "pushed" in record:
            print(
                f"push      {'ok' if record['pushed'] else 'FAILED'} to {record['pushRemote']}"
                + (f": {record['pushError']}" if record.get("pushError") else "")
            )
    return EXIT_OK if record.get("pushed", True) else EXIT_FAIL


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    report = collect(open_store(settings), dry_run=args.dry_run)
    if args.json:
        emit_json(report)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for w in report["worktrees"]:
        print(f"{verb} worktree {w['path']} ({w['eventId']})")
    for r in report["candidateRefs"]:
        print(f"{verb} {r['ref']} {r['sha'][:12]} in {r['workspace']}")
    for e in report["errors"]:
        print(f"skipped  {e}", file=sys.stderr)
    if not report["worktrees"] and not report["candidateRefs"]:
        print("nothing to prune")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    runs = store.list_runs(event_id=event_filter(store, args.event_id), status=args.status, limit=args.limit)
    return emit_list(
        args.json,
        "runs",
        runs,
        empty="no workspace runs",
        headers=("WHEN", "STATUS", "STEP", "MESSAGE", "ID"),
        widths=(10, 22, 24, 40, 0),
        row=lambda r: (
            relative_time(r.get("completedAt") or r.get("createdAt")),
            glyph(r.get("status")),
            f"{r.get('flowName')}/{r.get('stepName')}",
            shorten(r.get("error") or (r.get("resultPayload") or {}).get("message") or "", 40),
            r.get("id"),
        ),
    )
