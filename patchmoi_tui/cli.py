"""The `patchmoi` command. Progress goes to stderr, results to stdout (`--json` for machines).

Exit codes: 0 ok, 1 failure or not found, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from patchmoi.core import __version__
from patchmoi.core.attempt_states import STATES
from patchmoi.core.config import Settings
from patchmoi.core.errors import NotFoundError, PatchmoiError, UsageError, exit_code
from patchmoi.core.records import ATTEMPT_STATUSES, DISPATCH_STATUSES
from patchmoi.tui import commands_read
from patchmoi.tui.cliutil import EVENT_FILTER_HELP, EXIT_FAIL, EXIT_OK, EXIT_USAGE, SHORT_HELP
from patchmoi.tui.commands_db import add_db_commands
from patchmoi.tui.commands_ops import add_ops_commands
from patchmoi.tui.commands_patch import add_patch_commands
from patchmoi.tui.commands_sources import add_sources_commands

Handler = Callable[[argparse.Namespace, Settings], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's default is exit 2 with usage; keep, but say more
        self.print_usage(sys.stderr)
        print(f"error: {message}\n(run '{self.prog} --help' for the options)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="state directory (env DATA_DIR, default ./data)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="patchmoi",
        description=(
            "Keep a fork's patch stack alive on top of upstream: watch upstream feeds, record each new release "
            "as a flow event, rebuild the patches, and track the outcome."
        ),
        epilog=(
            "examples:\n"
            "  patchmoi status                      what happened lately\n"
            "  patchmoi events --limit 10           newest flow events\n"
            "  patchmoi attempts --open             the open queue: what needs a person now\n"
            "  patchmoi adopt ATTEMPT_ID            move the fork to a rebuilt candidate\n"
            "  patchmoi show 'patch:upstream.release:acme/widget:v1.2.0'\n"
            "  patchmoi show 3fa9c1d2               a record by the short id the dashboard shows (or 3fa9)\n"
            "\nIds: wherever a command takes a record id, the 8-hex-digit short id the dashboard shows (the\n"
            "CRC-32 of the id), or a prefix of 4 or more of its digits, will do when it names one record.\n"
            "\nEnvironment: DATA_DIR, FEED_SOURCES_PATH, PATCH_WORKSPACE_BACKEND_URL/SECRET, PATCH_ADMIN_TOKEN,\n"
            "DISCORD_OUTPUT_ENABLED, DISCORD_WEBHOOK_URL, DISCORD_NOTIFY_EVENTS, HOST, PORT (see README)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"patchmoi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    p = add("status", "summary of the store: counts, latest attempt, store health", commands_read.cmd_status)
    p.add_argument("--limit", type=int, default=20, help="how many latest records to show (default 20)")

    p = add("events", "list flow events, newest first", commands_read.cmd_events)
    p.add_argument("--type", help="only this event type (e.g. upstream.release)")
    p.add_argument("--limit", default=None, help="how many (default 50, max 500)")

    p = add("dispatches", "list dispatch records, newest first", commands_read.cmd_dispatches)
    p.add_argument("--event-id", help=EVENT_FILTER_HELP.format("dispatches"))
    p.add_argument("--status", choices=DISPATCH_STATUSES, help="only this dispatch status")
    p.add_argument("--limit", default=None, help="how many (default 50, max 500)")

    p = add("attempts", "list maintenance attempts (latest state of each), newest first", commands_read.cmd_attempts)
    p.add_argument("--event-id", help=EVENT_FILTER_HELP.format("attempts"))
    p.add_argument("--status", choices=ATTEMPT_STATUSES, help="only this attempt status")
    p.add_argument(
        "--open", action="store_true", help="the open queue: attempts that need a person now (same as --state open)"
    )
    p.add_argument(
        "--state",
        choices=STATES,
        help="only this derived state: open, ready (to adopt), running, resolved, superseded, adopted, done",
    )
    p.add_argument("--states", action="store_true", help="show the derived STATE column for every attempt")
    p.add_argument("--limit", default=None, help="how many (default 50, max 500)")

    p = add(
        "show",
        "show the chain of any record: a flow event, attempt, run or feed signal (SOURCE:ENTRY id)",
        commands_read.cmd_show,
    )
    p.add_argument("id", help=f"a flow event, maintenance attempt, workspace run or feed signal id, {SHORT_HELP}")

    add_ops_commands(sub, _common)
    add_patch_commands(sub, _common)
    add_sources_commands(sub, _common)
    add_db_commands(sub)

    p = add("serve", "run the HTTP API (and the poller, unless --no-poll)", cmd_serve)
    p.add_argument("--host", help="bind address (env HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (env PORT, default 3000)")
    p.add_argument("--sources", metavar="FILE", help="feed-sources.json (env FEED_SOURCES_PATH)")
    p.add_argument("--no-poll", action="store_true", help="serve the API only; do not poll feeds")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback bind without PATCH_ADMIN_TOKEN (not recommended)",
    )

    p = add("tui", "the live dashboard (local DATA_DIR, or a running server with --url)", cmd_tui)
    p.add_argument("--url", help="a running patchmoi server (remote mode), e.g. http://127.0.0.1:3000")
    p.add_argument("--token", help="admin token for --url (env PATCH_ADMIN_TOKEN)")
    p.add_argument("--read-only", action="store_true", help="disable retry, replay and sync")
    p.add_argument("--sources", metavar="FILE", help="feed-sources.json, for per-source backends on retry")
    p.add_argument("--workspace", metavar="PATH", help="fork checkout for local retries of hand-run events")

    p = sub.add_parser(
        "demo",
        help="the self-contained live demo (no network, no configuration)",
        description="Builds a throwaway upstream repo, a fork with three patch branches and a "
        "loopback feed server, starts the service and cuts upstream releases every few seconds "
        "(one conflicts), so changed and needs_intervention arrive live. In the dashboard the conflict "
        "waits a minute in the Queue for you to read why and retry it (r); then the demo does. "
        "Keys: n next release (or: stop waiting).",
    )
    p.add_argument("--headless", action="store_true", help="no dashboard: print the timeline and check outcomes")
    p.add_argument("--cycles", type=int, help="stop after N releases (default: forever, or 4 with --headless)")
    p.add_argument("--interval", type=float, default=6.0, help="seconds between releases (default 6)")
    p.add_argument("--keep", action="store_true", help="keep the demo workspace for inspection")
    p.add_argument("--dir", help="build the demo here (implies --keep)")
    p.set_defaults(handler=cmd_demo)

    p = add("doctor", "check config, data dir, store, git, fork workspaces, backends, Discord and auth", cmd_doctor)
    p.add_argument("--sources", metavar="FILE", help="feed-sources.json (env FEED_SOURCES_PATH)")

    p = add("follow", "print records as they are appended by any process (Ctrl-C to stop)", commands_read.cmd_follow)
    p.add_argument("--from-start", action="store_true", help="print existing records first")
    return parser


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import importlib

    # The server package is loaded by name: the CLI and the server never import each other statically.
    serve = importlib.import_module("patchmoi.server.run").serve
    return int(serve(settings, poll=not args.no_poll, insecure_no_auth=args.insecure_no_auth))


def cmd_tui(args: argparse.Namespace, settings: Settings) -> int:
    from patchmoi.tui.app import PatchmoiApp
    from patchmoi.tui.client import Client, LocalClient, RemoteClient

    client: Client
    if args.url:
        client = RemoteClient(args.url, args.token or settings.admin_token, read_only=args.read_only)
    else:
        from pathlib import Path

        if not Path(settings.data_dir).is_dir():
            raise NotFoundError(
                f"data directory {settings.data_dir} does not exist (set DATA_DIR, pass --data-dir, "
                "or --url for a running server)"
            )
        workspace = Path(args.workspace).resolve() if args.workspace else None
        client = LocalClient(settings, read_only=args.read_only, workspace=workspace)
    PatchmoiApp(client).run()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    from pathlib import Path

    from patchmoi.core.demo import Demo

    root = Path(args.dir).resolve() if args.dir else None
    if root is not None and root.exists() and any(root.iterdir()):
        raise UsageError(f"--dir {root} is not empty")
    # In the dashboard the conflict waits a minute for you (triage, read why, retry); headless, it is resolved at once.
    demo = Demo(root, keep=args.keep, interval=args.interval, patience=0.0 if args.headless else 60.0)
    if not args.headless:
        from patchmoi.tui.demo_app import DemoApp

        DemoApp(demo, args.cycles).run()
        return EXIT_OK
    cycles = args.cycles or 4
    demo.listeners.append(lambda line: print(line, flush=True))

    async def run() -> bool:
        try:
            await demo.start()
            assert demo.driver is not None
            await demo.driver.run(cycles)
            return demo.driver.ok
        finally:
            await demo.stop()

    ok = asyncio.run(run())
    assert demo.driver is not None
    print("\noutcomes:")
    for tag, expected, actual in demo.driver.outcomes:
        mark = "ok  " if expected == actual else "FAIL"
        print(f"  {mark} {tag:<14} expected {expected:<20} got {actual}")
    if demo.keep:
        print(f"workspace kept at {demo.root}")
    return EXIT_OK if ok else EXIT_FAIL


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from patchmoi.core.doctor import run_checks, summary

    checks = run_checks(settings)
    if args.json:
        from patchmoi.tui.cliutil import emit_json

        emit_json(summary(checks))
    else:
        for check in checks:
            print(f"{check.status:<5} {check.name:<30} {check.detail}")
    return EXIT_FAIL if any(c.status == "FAIL" for c in checks) else EXIT_OK


def settings_for(args: argparse.Namespace) -> Settings:
    base = Settings.from_env()
    return base.with_overrides(
        data_dir=getattr(args, "data_dir", None),
        feed_sources_path=getattr(args, "sources", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    try:
        settings = settings_for(args)
        return handler(args, settings)
    except PatchmoiError as exc:  # the error table (core.errors) gives the exit code for the code
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
