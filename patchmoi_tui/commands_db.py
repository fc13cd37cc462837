"""`patchmoi db`: the PostgreSQL store's schema (migrate) and moving records in and out (import, export)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from patchmoi.core.config import Settings
from patchmoi.core.errors import PatchmoiError, UsageError
from patchmoi.core.store.contract import RecordStore
from patchmoi.core.store.factory import postgres_records
from patchmoi.core.store.transfer import (
    BATCH,
    MAX_BATCH,
    TransferProgress,
    TransferReport,
    export_to_dir,
    import_data_dir,
)
from patchmoi.tui.cliutil import EXIT_OK, emit_json

Handler = Callable[[argparse.Namespace, Settings], int]

URL_HELP = (
    "PostgreSQL connection string (default: env PATCHMOI_DATABASE_URL, which is better: a command line is "
    "visible to other users)"
)


def add_db_commands(sub: Any) -> None:
    db = sub.add_parser(
        "db",
        help="the PostgreSQL store: migrate its schema, import a DATA_DIR, export back to JSONL",
        description="The PostgreSQL store (PATCHMOI_DATABASE_URL): apply its schema migrations, copy a DATA_DIR's\n"
        "JSONL records into it, or write its records back as the JSONL files of a DATA_DIR.",
        epilog="examples:\n"
        "  export PATCHMOI_DATABASE_URL=postgresql://patchmoi@db.internal/patchmoi\n"
        "  patchmoi db migrate                  create or upgrade the schema\n"
        "  patchmoi db import ./data            copy a DATA_DIR in (run again to resume)\n"
        "  patchmoi db export ./data-backup     and back out, as Bun-compatible JSONL files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    db.set_defaults(handler=_need_action)
    dsub = db.add_subparsers(dest="db_action", metavar="ACTION")

    def add(name: str, help_text: str, handler: Handler, description: str, epilog: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = dsub.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--database-url", metavar="URL", help=URL_HELP)
        p.add_argument("--json", action="store_true", help="print JSON on stdout instead of text")
        p.set_defaults(handler=handler)
        return p

    add(
        "migrate",
        "apply the schema migrations the database lacks",
        cmd_migrate,
        "Create the schema in an empty database, or apply the migrations it lacks (every process also does this\n"
        "when it opens the store; this command lets you do it first, with the right role). Concurrent runs are\n"
        "safe: each migration is applied once.",
        "examples:\n"
        "  patchmoi db migrate                                  schema version 1 (applied: 1)\n"
        "  patchmoi db migrate --json                           {before, applied, version, location}",
    )
    for name, help_text, handler, what, description, epilog in (
        (
            "import",
            "copy a DATA_DIR's records and feed state into PostgreSQL (idempotent, resumable)",
            cmd_import,
            "DATA_DIR",
            "Copy every record of every kind (every version, in write order) and the feed states of a DATA_DIR\n"
            "into the database. Running it again adds nothing; an import that was stopped (Ctrl-C, a crash, a\n"
            "lost connection) goes on where it stopped when run again, without duplicates; a DATA_DIR that grew\n"
            "since copies only its new records. Progress on stderr, a summary at the end. Stop the service\n"
            "first: nothing else may write to the database during an import.",
            "examples:\n"
            "  patchmoi db import /var/lib/patchmoi/data\n"
            "  patchmoi db import ./data --json > import-report.json",
        ),
        (
            "export",
            "write the database's records back as the JSONL files of a DATA_DIR",
            cmd_export,
            "DIR",
            "Write every record (every version, in write order) and the feed states as the JSONL files of a\n"
            "DATA_DIR (the Bun service's file names; files 0600, directories 0700). DIR must be new or empty, or\n"
            "an earlier export of the same database: that one is resumed (or brought up to date).",
            "examples:\n"
            "  patchmoi db export ./data-backup\n"
            "  DATA_DIR=./data-backup patchmoi status      read the export with the JSONL store",
        ),
    ):
        p = add(name, help_text, handler, description, epilog)
        p.add_argument("directory", metavar=what, help="the data directory")
        p.add_argument(
            "--batch-size",
            type=int,
            default=BATCH,
            metavar="N",
            help=f"records per write (default {BATCH:,}, at most {MAX_BATCH:,})",
        )


def _need_action(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError("db needs an ACTION: migrate, import or export (see 'patchmoi db --help')")


def _one_line(exc: PatchmoiError) -> PatchmoiError:
    """The driver's messages span lines (a hint on the second): the CLI prints one."""
    exc.args = (" ".join(str(exc).split()),)
    return exc


def _records(args: argparse.Namespace, settings: Settings) -> RecordStore:
    url = args.database_url or settings.database_url
    if not url:
        raise UsageError("no database: set PATCHMOI_DATABASE_URL or pass --database-url")
    return postgres_records(url)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    records = _records(args, settings)
    migrate = getattr(records, "migrate", None)
    assert callable(migrate), "postgres_records gives a PostgresStore"
    try:
        before, applied = migrate()
    except PatchmoiError as exc:
        raise _one_line(exc) from None
    finally:
        records.close()
    version = max([before, *applied])
    where = getattr(records, "location", "the database")
    if args.json:
        emit_json({"location": where, "before": before, "applied": applied, "version": version})
    elif applied:
        print(f"schema version {version} (applied: {', '.join(str(v) for v in applied)}) at {where}")
    else:
        print(f"up to date at {version} ({where})")
    return EXIT_OK


class ProgressLine:
    """A transfer's progress on stderr: one line redrawn on a terminal, a line every 2 s otherwise."""

    def __init__(self, verb: str, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0
        self.kind = ""

    def __call__(self, p: TransferProgress) -> None:
        if p.phase == "comparing":
            text = f"{self.verb} {p.kind.value}: reading what the destination holds"
        else:
            percent = f"{p.percent}%" if p.percent is not None else "?%"
            total = f" of ~{p.total:,}" if p.total else ""
            text = f"{self.verb} {p.kind.value}: {percent} ({p.done:,}{total} records, {p.rate:,.0f} records/s)"
        now = time.monotonic()
        if self.tty:
            print(f"\r{text}\x1b[K", end="", file=self.stream, flush=True)
        elif p.phase != "copying" or now - self.last >= 2.0:
            if p.phase != "done" or p.done_this_run:
                print(text, file=self.stream, flush=True)
            self.last = now

    def end(self) -> None:
        if self.tty:
            print("\r\x1b[K", end="", file=self.stream, flush=True)


def _summary(report: TransferReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    verb = "imported" if report.direction == "import" else "exported"
    print(f"{verb} {report.source} -> {report.destination} in {report.seconds:.1f} s ({report.rate:,.0f} records/s)")
    print(f"{'KIND':<18} {'READ':>11} {'ADDED':>11} {'ALREADY THERE':>14}")
    for kind, k in report.kinds.items():
        if k.read or k.added or k.present:
            print(f"{kind.value:<18} {k.read:>11,} {k.added:>11,} {k.present:>14,}")
    print(f"{'total':<18} {report.read:>11,} {report.added:>11,} {report.read - report.added:>14,}")
    print(f"feed states: {report.feed_states} source(s)")


def _transfer(args: argparse.Namespace, settings: Settings, verb: str) -> int:
    records = _records(args, settings)
    line = ProgressLine(verb)
    directory = Path(args.directory).expanduser()
    try:
        if args.db_action == "import":
            report = import_data_dir(directory, records, batch_size=args.batch_size, progress=line)
        else:
            report = export_to_dir(records, directory, batch_size=args.batch_size, progress=line)
    except PatchmoiError as exc:
        line.end()
        raise _one_line(exc) from None
    except KeyboardInterrupt:
        line.end()
        print(f"interrupted: run the same command again to resume the {args.db_action}", file=sys.stderr)
        raise
    finally:
        records.close()
    line.end()
    _summary(report, args.json)
    return EXIT_OK


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    return _transfer(args, settings, "importing")


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    return _transfer(args, settings, "exporting")
