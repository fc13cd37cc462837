"""Small helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from patchmoi.core.config import Settings
from patchmoi.core.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, NotFoundError
from patchmoi.core.shortid import resolve
from patchmoi.core.store import Kind, Store, Warming, store_for

__all__ = [
    "EVENT_FILTER_HELP",
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_USAGE",
    "SHORT_HELP",
    "emit_json",
    "emit_list",
    "event_filter",
    "open_store",
    "progress",
    "resolve",
]

SHORT_HELP = "or its short id: 4 to 8 hex digits, as the dashboard shows"
"""How every id argument's help says that a short id will do (core.shortid)."""
EVENT_FILTER_HELP = "only {} of this flow event (its id or short id)"


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def emit_list(
    as_json: bool,
    key: str,
    records: Sequence[Mapping[str, Any]],
    *,
    empty: str,
    headers: tuple[str, ...],
    widths: tuple[int, ...],
    row: Callable[[Any], tuple[Any, ...]],
) -> int:
    """The shape every list command shares: `{key: [...]}` with --json, else an aligned table."""
    from patchmoi.tui.textfmt import table

    if as_json:
        emit_json({key: records})
    elif not records:
        print(empty)
    else:
        print(table(headers, [row(r) for r in records], widths))
    return EXIT_OK


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class IndexProgress:
    """Progress of an index build on stderr: one line redrawn on a terminal, a line every 2 s otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0

    def __call__(self, warming: Warming) -> None:
        mb = 1 << 20
        text = f"indexing {warming.kind.value}: {warming.percent}% ({warming.done // mb} of {warming.total // mb} MB)"
        if warming.phase not in ("reading", "done"):
            text += f", {warming.phase}"
        now = time.monotonic()
        if self.tty:
            end = "\n" if warming.phase == "done" else ""
            print(f"\r{text}\x1b[K", end=end, file=self.stream, flush=True)
        elif warming.phase == "done" or now - self.last >= 2.0:
            print(text, file=self.stream, flush=True)
            self.last = now


def open_store(settings: Settings, *, must_exist: bool = True) -> Store:
    data_dir = Path(settings.data_dir)
    if must_exist and not settings.database_url and not data_dir.is_dir():
        raise NotFoundError(f"data directory {data_dir} does not exist (set DATA_DIR or pass --data-dir)")
    store = store_for(settings)
    store.report_progress(IndexProgress())  # a first read of a big DATA_DIR builds its index: say how far
    return store


def event_filter(store: Store, text: str | None) -> str | None:
    """An `--event-id` filter: a full flow event id, or a short id that names exactly one flow event (an
    ambiguous one is a usage error). Anything else is kept as it is: the list is then empty, as before."""
    if not text:
        return text
    try:
        return resolve(store, text, (Kind.EVENTS,), what="flow event")
    except NotFoundError:
        return text
