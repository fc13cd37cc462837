"""A JSONL log with its index: append, list newest first, get by id, latest per id, health."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

from patchmoi.core.errors import StoreWriteError
from patchmoi.core.log import log_event
from patchmoi.core.store.index import IndexSpec, LogIndex, Progress, id_hash, strict_loads
from patchmoi.core.store.jsonl import JsonlFile, encode_line

BOM = codecs.BOM_UTF8
TAIL_FROM_BYTES = 1 << 20
"""An index this far behind its log is not waited for by newest-first lists (they read the file's end)."""
TAIL_BUDGET_BYTES = 32 << 20
"""How far back such a list reads before it waits for the index after all."""


def _clean(lines: list[bytes]) -> bool:
    """Whether every line starts with `{` and ends with `}` (no BOM, CR or spaces to cut), checked in C."""
    return all(map(bytes.startswith, lines, repeat(b"{"))) and all(map(bytes.endswith, lines, repeat(b"}")))


def _loads(raw: bytes) -> Any:
    try:
        return strict_loads(raw)
    except ValueError:
        return None  # a number too big for a float, which the index lets by; or a file replaced under us


@dataclass(frozen=True)
class LogHealth:
    file: str
    records: int
    bytes: int
    skipped_lines: int
    quarantined_bytes: int
    first_skipped: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "records": self.records,
            "bytes": self.bytes,
            "skippedLines": self.skipped_lines,
            "quarantinedBytes": self.quarantined_bytes,
            "firstSkipped": self.first_skipped,
        }


class Log:
    def __init__(self, path: Path, index_dir: Path, spec: IndexSpec) -> None:
        self.file = JsonlFile(path)
        self.index = LogIndex(self.file, index_dir, spec)
        self.spec = spec
        self._repaired = False
        self.progress: Progress | None = None
        """Where a catch-up that a read starts reports (the CLI prints it); `open(progress)` overrides it."""

    @property
    def path(self) -> Path:
        return self.file.path

    def open(self, progress: Progress | None = None) -> None:
        """Repair a torn tail (under the lock) and catch the index up. Called lazily by readers."""
        if not self._repaired:
            try:
                self.file.repair()
            except StoreWriteError as exc:  # a full disk: readers go on (they never see a torn line)
                log_event("store.repair_failed", file=self.path.name, error=str(exc))
            self._repaired = True
        self.index.refresh(progress or self.progress)

    # -- writes ------------------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> int:
        """Append one record durably (locked, fsynced). Returns its byte offset."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[dict[str, Any]]) -> list[int]:
        """Append a batch with one lock and one fsync. Returns each record's offset."""
        if not records:
            return []
        lines = [encode_line(r) for r in records]
        with self.file.locked():
            start, _ = self.file.append_lines(lines)
        offsets = []
        pos = start
        for line in lines:
            offsets.append(pos)
            pos += len(line)
        return offsets

    def append_if_absent(self, record: dict[str, Any], record_id: str) -> bool:
        """Append unless a record with this id exists; check and write under one lock."""
        line = encode_line(record)
        with self.file.locked():
            self.index.refresh()
            if self.index.span_of(record_id) is not None:
                return False
            self.file.append_lines([line])
        return True

    def append_many_if_absent(self, items: Sequence[tuple[dict[str, Any], str]]) -> list[bool]:
        """`append_if_absent` for a batch: one lock, one fsync; an id repeated in the batch is taken once."""
        lines = [encode_line(record) for record, _ in items]
        taken: list[bool] = []
        with self.file.locked():
            self.index.refresh()
            seen: set[str] = set()
            for _, record_id in items:
                taken.append(record_id not in seen and self.index.span_of(record_id) is None)
                seen.add(record_id)
            fresh = [line for line, take in zip(lines, taken, strict=True) if take]
            if fresh:
                self.file.append_lines(fresh)
        return taken

    def append_with_unique_id(self, record: dict[str, Any], base_id: str) -> str:
        """Append under `base_id`, or `base_id#2`, `#3`... if taken: chosen and written under one lock, so two
        writers in the same millisecond (threads or processes) never share an id. Sets and returns the id."""
        with self.file.locked():
            self.index.refresh()
            record_id, n = base_id, 1
            while self.index.span_of(record_id) is not None:
                n += 1
                record_id = f"{base_id}#{n}"
            record["id"] = record_id
            self.file.append_lines([encode_line(record)])
        return record_id

    # -- reads -------------------------------------------------------------------------------------------
    def _read(self, spans: Sequence[tuple[int, int]]) -> list[tuple[int, dict[str, Any]]]:
        """(offset, record) for each span, offsets kept aligned with the records that decode."""
        pairs = zip(spans, self.file.read_spans(spans), strict=True)
        return [(offset, obj) for (offset, _), raw in pairs if isinstance(obj := _loads(raw), dict)]

    def select(
        self,
        *,
        limit: int = 50,
        filters: dict[str, str] | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. `filters` keys are the spec's field names (mapped to indexed columns)."""
        return [rec for _, rec in self.list_with_offsets(limit=limit, filters=filters, before=before)]

    def select_raw(
        self,
        *,
        limit: int = 50,
        filters: dict[str, str] | None = None,
    ) -> list[bytes]:
        """Like `select`, but the stored JSON lines themselves (each one a valid object: the index only
        points at lines that parsed; a byte order mark a Bun-era first line may carry is cut), for responses
        that would only re-encode them."""
        tail = self._tail(filters or {}, limit, None) if self.behind() else None
        if tail is not None:
            return [raw.removeprefix(BOM) for _, raw in tail]
        self.open()
        lines = self.file.read_spans(self.index.spans(filters=self._columns(filters), limit=limit))
        if not self.index.padded or _clean(lines):  # the index knows no line needs cutting: no check at all
            return lines
        return [raw.strip().removeprefix(BOM) for raw in lines]

    def list_with_offsets(
        self,
        *,
        limit: int = 50,
        filters: dict[str, str] | None = None,
        before: int | None = None,
    ) -> list[tuple[int, dict[str, Any]]]:
        tail = self._tail(filters or {}, limit, before) if self.behind() else None
        if tail is not None:
            return [(off, obj) for off, raw in tail if isinstance(obj := _loads(raw), dict)]
        self.open()
        return self._read(self.index.spans(filters=self._columns(filters), limit=limit, before=before))

    # -- reads while the index is built --------------------------------------------------------------------
    def behind(self) -> bool:
        """Whether the index is being built, or far behind the file (a fresh one on a big log): then a
        newest-first list is read from the end of the file instead of waiting for it."""
        index = self.index
        if index.building is not None:
            return True
        backlog = index.backlog()
        if backlog is None:  # not looked at by this process: what the index on disk has (none: nothing)
            size = self.file.size()
            if size <= TAIL_FROM_BYTES:
                return False
            mark = index.stored_watermark()
            return mark is None or size - mark > TAIL_FROM_BYTES
        return backlog > TAIL_FROM_BYTES

    def _tail(self, filters: dict[str, str], limit: int, before: int | None) -> list[tuple[int, bytes]] | None:
        """(offset, line) of the newest `limit` matches, read backwards from the end (or `before`), as the
        index would answer; None if that takes more than `TAIL_BUDGET_BYTES` (a rare filter value), or for a
        later page of a latest-per-id log (which versions are newest depends on what comes after)."""
        latest = self.spec.latest
        if latest and before is not None:
            return None
        names = self.index.fields.names
        try:
            wanted = [(names.index(field), value) for field, value in filters.items() if value is not None]
        except ValueError:
            raise ValueError(f"{self.path.name} is not indexed by {sorted(filters)}") from None
        read = self.index.fields.values
        seen: set[str] = set()
        out: list[tuple[int, bytes]] = []
        end = self.file.size() if before is None else before
        budget = TAIL_BUDGET_BYTES
        for off, line in self.file.lines_before(end):
            budget -= len(line) + 1
            if budget < 0:
                return None
            stripped = line.strip()
            if not stripped:
                continue
            try:
                values = read(stripped)
            except ValueError:
                continue
            if latest:
                record_id = self.index.fields.id_from(values)
                if record_id is None or record_id in seen:
                    continue
                seen.add(record_id)
            if all(values[i] == value for i, value in wanted):
                out.append((off, stripped))
                if len(out) >= limit:
                    break
        return out

    def get(self, record_id: str) -> dict[str, Any] | None:
        """The last record with this id (the latest wins)."""
        self.open()
        span = self.index.span_of(record_id)
        if span is None:
            return None
        found = self._read([span])
        return found[0][1] if found else None

    def ids_by_hash(self, low: int, high: int, limit: int) -> list[str]:
        """Distinct ids whose `id_hash` lies in [low, high] (a short id's prefix), newest first, at most `limit`:
        from the index, or, while it is being built (`behind`), from one pass over the file that does not wait
        for the build (slower: about a second per 150,000 lines, 1.5 to 2 s per 100 MB)."""
        if limit <= 0 or not self.path.exists():
            return []
        if self.behind():
            return self._scan_ids(low, high, limit)
        self.open()
        return self.index.ids_in_hash_range(low, high, limit)

    def _scan_ids(self, low: int, high: int, limit: int) -> list[str]:
        """`ids_by_hash` read from the file itself, decoding only the id fields of each line (as a build does)."""
        fields = self.index.fields
        newest: dict[str, None] = {}  # the matches, in the order of their last lines
        for _, block in self.file.blocks(0, self.file.size()):
            lines = block.split(b"\n")
            lines.pop()  # a block ends with a newline
            values: Sequence[tuple[Any, ...] | None] | None = fields.decode_lines(block, lines)
            if values is None:  # blank or bad lines, escapes: one line at a time
                values = [self._values_or_none(line) for line in lines]
            for found in values:
                record_id = None if found is None else fields.id_from(found)
                if record_id is not None and low <= id_hash(record_id) <= high:
                    newest.pop(record_id, None)
                    newest[record_id] = None  # re-inserted last: the dict keeps the order of last lines
        return list(reversed(newest))[:limit]

    def _values_or_none(self, line: bytes) -> tuple[Any, ...] | None:
        stripped = line.strip()
        if not stripped:
            return None
        try:
            return self.index.fields.values(stripped)
        except ValueError:
            return None

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids or not self.path.exists():
            return set()
        self.open()
        return self.index.existing_ids(ids)

    def scan_records(self, start: int = 0) -> Iterable[tuple[int, int, dict[str, Any]]]:
        """(offset, end offset, record) for every valid record from `start`, in file order, one line at a time
        (bounded memory, for recovery and exports, not request paths)."""
        for offset, line in self.file.scan(start):
            end = offset + len(line) + 1
            try:
                obj = strict_loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield offset, end, obj

    def count_by(self, field: str) -> dict[str, int]:
        self.open()
        return self.index.count_by(self._column_of(field))

    def total(self) -> int:
        """Records: one per id for a log that keeps latest versions, every line otherwise."""
        self.open()
        return self.index.total()

    def health(self) -> LogHealth:
        self.open()
        bad = self.index.bad_lines()
        return LogHealth(
            file=self.path.name,
            records=self.index.versions(),
            bytes=self.file.size(),
            skipped_lines=len(bad),
            quarantined_bytes=self.file.quarantined_bytes(),
            first_skipped=[{"offset": o, "length": n, "error": e} for o, n, e in bad[:5]],
        )

    def _column_of(self, field: str) -> str:
        if field == self.spec.k1:
            return "k1"
        if field == self.spec.k2:
            return "k2"
        raise ValueError(f"{self.path.name} is not indexed by {field!r}")

    def _columns(self, filters: dict[str, str] | None) -> dict[str, str]:
        return {self._column_of(k): v for k, v in (filters or {}).items() if v is not None}

    def close(self) -> None:
        self.index.close()
        self.file.close()
