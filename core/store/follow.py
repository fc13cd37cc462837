"""Live tail of JSONL files appended by any process, reading only new bytes.

watchfiles (inotify on Linux) wakes us with a small debounce, not its 1.6 s default; a periodic timeout
re-checks sizes too, so a missed notification costs at most `poll_ms`. A partial last line waits for its
newline; a file that shrank (repaired or replaced) is re-read from its new end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

from patchmoi.core.fsutil import ensure_dir
from patchmoi.core.store.index import strict_loads


@dataclass(frozen=True)
class Appended:
    file: str
    offset: int
    record: dict[str, Any]


class _Cursor:
    def __init__(self, path: Path, offset: int | None) -> None:
        self.path = path
        self.offset = offset if offset is not None else _size(path)
        self.partial = b""

    def read_new(self) -> list[Appended]:
        size = _size(self.path)
        if size < self.offset:
            self.offset, self.partial = size, b""
        if size == self.offset:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        start = self.offset - len(self.partial)
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            at = start
            start += len(line) + 1
            try:
                obj = strict_loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(Appended(self.path.name, at, obj))
        return out


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


async def follow(
    paths: Sequence[Path],
    *,
    from_offsets: dict[Path, int] | None = None,
    stop: asyncio.Event | None = None,
    debounce_ms: int = 20,
    poll_ms: int = 500,
) -> AsyncIterator[list[Appended]]:
    """Yield batches of records appended to `paths` (all in one directory) after the given offsets.

    Without an offset a file is followed from its current end.
    """
    if not paths:
        return
    directory = paths[0].parent
    ensure_dir(directory)
    offsets = from_offsets or {}
    cursors = {p.resolve(): _Cursor(p, offsets.get(p)) for p in paths}
    stop_event = stop or asyncio.Event()
    first = [item for c in cursors.values() for item in c.read_new()]
    if first:
        yield first
    async for changes in watchfiles.awatch(
        directory,
        debounce=debounce_ms,
        step=10,
        stop_event=stop_event,
        rust_timeout=poll_ms,
        yield_on_timeout=True,
        recursive=False,
    ):
        touched = {Path(p).resolve() for _, p in changes} if changes else set(cursors)
        batch: list[Appended] = []
        for path, cursor in cursors.items():
            if path in touched:
                batch.extend(cursor.read_new())
        if batch:
            yield batch
