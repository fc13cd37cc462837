"""Small helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from patchmoi.core.config import Settings
from patchmoi.core.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, NotFoundError
from patchmoi.core.store import Store

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "emit_json", "emit_list", "open_store", "progress"]


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


def open_store(settings: Settings, *, must_exist: bool = True) -> Store:
    data_dir = Path(settings.data_dir)
    if must_exist and not data_dir.is_dir():
        raise NotFoundError(f"data directory {data_dir} does not exist (set DATA_DIR or pass --data-dir)")
    return Store(data_dir)
