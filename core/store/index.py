"""A derived, rebuildable SQLite index beside one JSONL file.

It maps line offsets to the few fields queries filter on, so `list`, `get` and "latest record per id"
cost O(limit) whatever the file's size. The JSONL file stays the truth: the index keeps a watermark (bytes
indexed), the file's inode and a hash of the bytes just before the watermark; if any of these no longer
matches the file, or the database is unreadable, the index is dropped and rebuilt from the file.

Kept small (about 15% of the log): a plain log's rows hold a 32-bit hash of the record id, not the id (a
lookup reads the candidate lines and compares their ids, so a hash collision costs a read, never a wrong
answer); a log queried by "latest per id" keeps one row per id, the newest, instead of every version.

Built fast and resumably: each line is decoded only for the fields the index holds (msgspec; the strict
decoder takes over for anything it would judge differently); a big backlog (a fresh index on a big log) is
loaded with the secondary indexes dropped and created once at the end, in batches of `_BATCH_BYTES` that each
commit with the watermark, so a process killed half-way resumes where it stopped. `building` says how far a
catch-up is, for progress lines and `/readyz`. Any process catches the index up with the bytes other processes
appended (each batch is one SQLite write transaction, so two processes never index the same bytes twice).
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec

from patchmoi.core.errors import StoreWriteError
from patchmoi.core.fsutil import FILE_MODE, ensure_dir
from patchmoi.core.store.jsonl import JsonlFile

SCHEMA_VERSION = "3"  # 2: lines that are not strict JSON are skipped; 3: hashed ids, one row per id for latest
_SIG_BYTES = 64
_BATCH_BYTES = 16 << 20
"""Bytes read per write transaction: a kill loses at most one batch (about 0.3 s of work)."""
_BULK_MIN_BYTES = 16 << 20
"""A backlog this big, and bigger than what is indexed already, is loaded without the secondary indexes."""
_SPANS_KEPT = 64
_PROGRESS_MIN_BYTES = 4 << 20
"""Backlogs smaller than this are caught up without a progress report."""


@dataclass(frozen=True)
class IndexSpec:
    """Which record fields a log is queried by. The id is `id_fields` joined by ':' (all must be strings);
    `latest` keeps only the newest record per id (lists, get and counts then see latest versions only)."""

    id_fields: tuple[str, ...]
    k1: str | None = None
    k2: str | None = None
    latest: bool = False

    def record_id(self, obj: Mapping[str, Any]) -> str | None:
        parts = [obj.get(name) for name in self.id_fields]
        return ":".join(parts) if all(isinstance(p, str) for p in parts) else None  # type: ignore[arg-type]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.id_fields, *(k for k in (self.k1, self.k2) if k))))


@dataclass(frozen=True)
class Building:
    """A catch-up in progress: bytes of the log indexed (`done`) of its size (`total`), and what it is doing."""

    file: str
    done: int
    total: int
    phase: str = "reading"  # reading | creating indexes | done (reported once, at the end)
    started: float = 0.0

    @property
    def percent(self) -> int:
        if self.phase == "done" or self.total <= 0:
            return 100
        return min(99, int(self.done * 100 / self.total))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "percent": self.percent, "bytes": self.done, "of": self.total, "phase": self.phase}


Progress = Callable[[Building], None]
_Row = tuple[int, int, Any, str | None, str | None]
_RETRY_DISK_SECONDS = 30.0
_MIN_FREE_BYTES = 16 << 20
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)  # one decoder, not one per line


def strict_loads(raw: bytes) -> Any:
    """`json.loads` that refuses what JSON.parse or a re-encode would choke on: NaN and Infinity, numbers
    that overflow to infinity, and lone surrogates (`\\ud800`, which the Bun era could write). A line that
    fails is skipped and counted by the index, so it is never served."""
    obj = _STRICT.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))  # as json.loads reads bytes
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a string") from None
    return obj


def id_hash(record_id: str) -> int:
    """The CRC-32 of an id: what a plain log's index keeps instead of the id (4 bytes where ids take 40-100).
    Lookups compare the candidate lines' ids, so the rare collision costs one more read, not a wrong answer."""
    return zlib.crc32(record_id.encode("utf-8", "surrogatepass"))


def _sql_id_hash(record_id: Any) -> int | None:
    """`id_hash` as the SQL function `crc32(id)` (registered on every connection): how a latest log, whose
    rows keep the id itself and no hash, is searched by short id (`LogIndex.ids_in_hash_range`)."""
    return id_hash(record_id) if isinstance(record_id, str) else None


def _padded(block: bytes) -> bool:
    """Whether a block of lines has one with a BOM, a CR or white space around it (inside JSON strings these are
    escaped, so found raw they are around a line)."""
    return (
        b"\r" in block
        or b"\t" in block
        or b" \n" in block
        or b"\n " in block
        or block[:1] == b" "
        or codecs.BOM_UTF8 in block
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class FieldReader:
    """The indexed fields of one line, decoding only those fields.

    msgspec validates the whole line as JSON but builds only the named fields. Lines it would judge
    differently from `strict_loads` go to `strict_loads` instead: any `\\u` escape (lone surrogates), bytes
    that are not UTF-8, and whatever msgspec refuses (so the strict decoder is the one that words the error).
    A number overflowing to infinity in a field that is not indexed passes here; reads skip such a record.
    """

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        names = spec.fields
        struct = msgspec.defstruct("IndexedFields", [(name, Any, None) for name in names])
        self._decoder = msgspec.json.Decoder(struct)
        self._many = msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
        self._get: Callable[[Any], tuple[Any, ...]] = (
            attrgetter(*names) if len(names) > 1 else (lambda obj: (getattr(obj, names[0]),))
        )
        self.names = names
        self.id_at = [names.index(n) for n in spec.id_fields]
        self.single_id = self.id_at[0] if len(self.id_at) == 1 else None
        self.k1_at = names.index(spec.k1) if spec.k1 else None
        self.k2_at = names.index(spec.k2) if spec.k2 else None

    def values(self, line: bytes) -> tuple[Any, ...]:
        """The raw values of the indexed fields of one line; ValueError if it is not a strict JSON object."""
        if b"\\u" not in line:
            try:
                if not line.isascii():
                    line.decode("utf-8")
                return tuple(self._get(self._decoder.decode(line)))
            except (msgspec.DecodeError, UnicodeDecodeError):
                pass
        obj = strict_loads(line)
        if not isinstance(obj, dict):
            raise ValueError("line is not a JSON object")
        return tuple(obj.get(name) for name in self.names)

    def read(self, line: bytes) -> tuple[str | None, str | None, str | None]:
        """(id, k1, k2) of one line; ValueError if the line is not a strict JSON object."""
        values = self.values(line)
        record_id = self.id_from(values)
        k1 = _text(values[self.k1_at]) if self.k1_at is not None else None
        k2 = _text(values[self.k2_at]) if self.k2_at is not None else None
        return record_id, k1, k2

    def id_from(self, values: Sequence[Any]) -> str | None:
        """The record id from `values` (the id fields joined by ':', if they are all strings)."""
        parts = [values[i] for i in self.id_at]
        return ":".join(parts) if all(isinstance(p, str) for p in parts) else None

    def decode_lines(self, block: bytes, lines: list[bytes]) -> list[tuple[Any, ...]] | None:
        """The raw field values (in `spec.fields` order) of every line of `block` in one decode, or None when
        one of them needs the line-at-a-time path (an escape, a blank or bad line, bytes that are not UTF-8)."""
        if b"\\u" in block:
            return None
        try:
            if not block.isascii():
                block.decode("utf-8")
            decoded = self._many.decode(b"[" + b",".join(lines) + b"]")
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        return list(map(self._get, decoded))

    def id_of(self, line: bytes) -> str | None:
        try:
            return self.read(line.strip())[0]
        except ValueError:
            return None


class LogIndex:
    def __init__(self, file: JsonlFile, index_dir: Path, spec: IndexSpec) -> None:
        self.file = file
        self.spec = spec
        self.fields = FieldReader(spec)
        self.index_dir = index_dir
        self.db_path = index_dir / (file.path.name + ".sqlite")
        self._lock = threading.RLock()
        self._known_size = -1
        self._conn: sqlite3.Connection | None = None
        # "disk" (beside the log), or "memory" when the disk cannot take it (read-only DATA_DIR, full disk):
        # the index is derived, so a reader still works; `degraded` says why, for health and doctor.
        self.mode = "disk"
        self.degraded: str | None = None
        self._retry_disk_at = 0.0
        self.building: Building | None = None
        """Set while a catch-up of `_PROGRESS_MIN_BYTES` or more runs (read by other threads without a lock)."""
        self.indexed = -1
        """The watermark this process last committed or read (-1: not looked yet)."""
        self._stopping = False
        # The answers of recent `spans` queries while the file stays at one size (a dashboard asks the same pages
        # again and again between appends): any append changes the size, and they are dropped.
        self._spans: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        self._spans_at = -1
        self.padded = True
        """Whether an indexed line may have a BOM, a CR or spaces around it (then reads cut them); known after
        the first refresh, assumed until then."""

    def stop(self) -> None:
        """Make a catch-up running in another thread return after its current batch (for `close`)."""
        self._stopping = True

    @property
    def _keys(self) -> list[tuple[str, str]]:
        return [(col, name) for col, name in (("k1", self.spec.k1), ("k2", self.spec.k2)) if name]

    # -- connection --------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self.mode == "memory":
            self._conn = self._open_db(":memory:")
            return self._conn
        try:
            ensure_dir(self.index_dir)
            if not self.db_path.exists():
                os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, FILE_MODE))
            try:
                conn = self._open_db(str(self.db_path))
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError:  # corrupt: it is only a cache, rebuild it from the log
                self._drop_db_files()
                os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, FILE_MODE))
                conn = self._open_db(str(self.db_path))
        except (OSError, StoreWriteError, sqlite3.OperationalError) as exc:
            self._fall_back(exc)
            return self._connect()
        self._conn = conn
        return conn

    def _fall_back(self, exc: BaseException) -> None:
        """Keep serving reads from an in-memory index; the on-disk one is left as it is (never dropped)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self.mode = "memory"
        self.degraded = f"index {self.db_path} kept in memory: {exc}"
        self._retry_disk_at = time.monotonic() + _RETRY_DISK_SECONDS
        self._known_size = -1

    def _maybe_back_to_disk(self) -> None:
        """After a full disk (not a read-only one), return to the on-disk index once there is room again."""
        if self.mode != "memory" or time.monotonic() < self._retry_disk_at:
            return
        self._retry_disk_at = time.monotonic() + _RETRY_DISK_SECONDS
        try:
            st = os.statvfs(self.index_dir if self.index_dir.exists() else self.index_dir.parent)
        except OSError:
            return
        if not os.access(self.index_dir if self.index_dir.exists() else self.index_dir.parent, os.W_OK):
            return
        if st.f_bavail * st.f_frsize < _MIN_FREE_BYTES:
            return
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self.mode, self.degraded, self._known_size = "disk", None, -1

    def _open_db(self, target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=30.0, isolation_level=None, check_same_thread=False)
        if target != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # derived data: a crash at worst means a rebuild
        conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: index creation sorts in memory
        conn.create_function("crc32", 1, _sql_id_hash, deterministic=True)  # short ids of a latest log's ids
        # A plain log keeps every line (`h`: the id's hash); a latest log one row per id, the newest (`id`).
        key = "id TEXT UNIQUE" if self.spec.latest else "h INTEGER"
        conn.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS rec(off INTEGER PRIMARY KEY, len INTEGER, {key}, k1 TEXT, k2 TEXT);
            CREATE TABLE IF NOT EXISTS bad(off INTEGER PRIMARY KEY, len INTEGER, error TEXT);
            """
        )
        conn.execute("SELECT count(*) FROM meta").fetchone()
        return conn

    def _secondary(self) -> list[tuple[str, str]]:
        """(name, column) of the indexes a bulk load creates at its end."""
        out = [] if self.spec.latest else [("rec_h", "h")]
        return out + [(f"rec_{col}", col) for col, _ in self._keys]

    def _create_secondary(self, conn: sqlite3.Connection) -> None:
        for name, column in self._secondary():
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON rec({column})")

    def _drop_secondary(self, conn: sqlite3.Connection) -> None:
        for name, _ in self._secondary():
            conn.execute(f"DROP INDEX IF EXISTS {name}")

    def _drop_db_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(self.db_path) + suffix)

    # -- catch-up ----------------------------------------------------------------------------------------
    def stored_watermark(self) -> int | None:
        """The watermark on disk, read without this index's connection or lock (None: no index, unreadable)."""
        if not self.db_path.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=0.5)
            try:
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return int(meta.get("watermark", "0")) if meta.get("version") == SCHEMA_VERSION else 0

    def backlog(self) -> int | None:
        """Bytes not indexed yet, by the file's size as last seen (every read looks; None: not looked at yet)."""
        if self.indexed < 0:
            return None
        size = self.file.last_size if self.file.last_size >= 0 else self.file.size()
        return max(0, size - self.indexed)

    def refresh(self, progress: Progress | None = None) -> None:
        """Index bytes appended since the last look (by any process). Cheap when nothing changed."""
        self._maybe_back_to_disk()
        size = self.file.size()
        if size == self._known_size:
            return
        with self._lock:
            try:
                self._refresh_locked(size, progress)
            except sqlite3.OperationalError as exc:
                # A full disk, a read-only file, an I/O error: not corruption, so nothing is dropped.
                if self.mode == "memory":
                    raise
                self._fall_back(exc)
                self._refresh_locked(self.file.size(), progress)
            except sqlite3.DatabaseError:
                # A damaged index is only a cache: rebuild it from the log.
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                try:
                    self._drop_db_files()
                except OSError as exc:
                    self._fall_back(exc)
                self._refresh_locked(self.file.size(), progress)
            finally:
                self.building = None

    def _meta(self, conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def _signature(self, upto: int) -> str:
        if upto <= 0:
            return ""
        start = max(0, upto - _SIG_BYTES)
        data = self.file.read_at([(start, upto - start)])[0]
        return hashlib.sha1(data).hexdigest()

    def _refresh_locked(self, size: int, progress: Progress | None) -> None:
        """Batches of `_BATCH_BYTES`, each one transaction that moves the watermark, until `size`."""
        conn = self._connect()
        started = time.monotonic()
        first = -1
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                meta = self._meta(conn)
                mark = int(meta.get("watermark", "0"))
                try:
                    inode = str(os.stat(self.file.path).st_ino)
                except FileNotFoundError:
                    inode = ""
                stale = (
                    meta.get("version") != SCHEMA_VERSION
                    or (mark > 0 and meta.get("inode") != inode)
                    or mark > size
                    or meta.get("sig", "") != self._signature(mark)
                )
                if stale:
                    for table in ("rec", "bad", "meta"):
                        conn.execute(f"DELETE FROM {table}")
                    meta, mark = {}, 0
                bulk = meta.get("bulk") == "1"
                if not bulk and size - mark >= _BULK_MIN_BYTES and size - mark > mark:
                    self._drop_secondary(conn)  # loaded without them, created once at the end
                    bulk = True
                elif not bulk:
                    self._create_secondary(conn)  # a no-op once they exist
                if first < 0:
                    first = mark
                    if size - first >= _PROGRESS_MIN_BYTES:  # say so before the first batch, not after it
                        self._report(progress, Building(self.file.path.name, mark, size, "reading", started))
                report = size - first >= _PROGRESS_MIN_BYTES
                collecting = gc.isenabled()
                gc.disable()  # a batch makes ~30,000 tuples that live until it commits: no cycles to look for
                try:
                    end, exhausted, rows, padded = self._index_range(conn, mark, size)
                finally:
                    if collecting:
                        gc.enable()
                if exhausted and bulk:
                    if report:
                        self._report(
                            progress,
                            Building(self.file.path.name, end, size, "creating indexes", started),
                        )
                    self._create_secondary(conn)
                    bulk = False
                conn.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("version", SCHEMA_VERSION),
                        ("watermark", str(end)),
                        ("inode", inode),
                        ("sig", self._signature(end)),
                        ("bulk", "1" if bulk else "0"),
                        ("rows", str(int(meta.get("rows", "0")) + rows)),
                        ("padded", "1" if padded or meta.get("padded") == "1" else "0"),
                    ],
                )
                conn.execute("COMMIT")
                self.padded = padded or meta.get("padded") == "1"
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.indexed = end
            if exhausted:
                if report:
                    if self.mode == "disk":  # the WAL grew as big as the index: give the disk back
                        with contextlib.suppress(sqlite3.OperationalError):
                            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    self._report(progress, Building(self.file.path.name, end, size, "done", started))
                break
            if self._stopping:
                return  # closing: what is committed stays, the next open resumes from it
            if report:
                self._report(progress, Building(self.file.path.name, end, size, "reading", started))
        self._known_size = size

    def _report(self, progress: Progress | None, building: Building) -> None:
        self.building = building
        if progress is not None:
            progress(building)

    def _index_range(self, conn: sqlite3.Connection, mark: int, size: int) -> tuple[int, bool, int, bool]:
        """Index complete lines from `mark`, stopping after `_BATCH_BYTES`: (end, reached `size`, rows, whether
        a line has a BOM, a CR or spaces around it)."""
        latest = self.spec.latest
        rows: list[tuple[Any, ...]] = []
        newest: dict[str, tuple[Any, ...]] = {}
        bad: list[tuple[int, int, str]] = []
        end, count, budget = mark, 0, mark + _BATCH_BYTES
        exhausted, padded = True, False
        crc = zlib.crc32
        single, id_from = self.fields.single_id, self.fields.id_from
        k1_at, k2_at = self.fields.k1_at, self.fields.k2_at
        for base, block in self.file.blocks(mark, size):
            lines = block.split(b"\n")
            lines.pop()  # a block ends with a newline
            padded = padded or _padded(block)
            values: list[tuple[Any, ...] | None] | None = self.fields.decode_lines(block, lines)  # type: ignore[assignment]
            off = base
            if values is None:  # line at a time: blank lines, bad lines, escapes
                values = []
                for line in lines:
                    values.append(self._read_one(off, line, bad))
                    off += len(line) + 1
                off = base
            for line, fields in zip(lines, values, strict=True):
                length = len(line)
                if fields is not None:
                    count += 1
                    if single is not None:
                        record_id = fields[single]
                        if record_id.__class__ is not str:
                            record_id = None
                    else:
                        record_id = id_from(fields)
                    k1 = fields[k1_at] if k1_at is not None else None
                    k2 = fields[k2_at] if k2_at is not None else None
                    k1 = k1 if k1.__class__ is str else None
                    k2 = k2 if k2.__class__ is str else None
                    if not latest:
                        h = None if record_id is None else crc(record_id.encode("utf-8", "surrogatepass"))
                        rows.append((off, length, h, k1, k2))
                    elif record_id is not None:
                        newest.pop(record_id, None)  # re-inserted last: the dict keeps offset order
                        newest[record_id] = (off, length, record_id, k1, k2)
                off += length + 1
            end = base + len(block)
            if end >= budget:
                exhausted = end >= size
                break
        if latest:
            conn.executemany("INSERT OR REPLACE INTO rec(off, len, id, k1, k2) VALUES (?, ?, ?, ?, ?)", newest.values())
        else:
            conn.executemany("INSERT OR REPLACE INTO rec(off, len, h, k1, k2) VALUES (?, ?, ?, ?, ?)", rows)
        if bad:
            conn.executemany("INSERT OR REPLACE INTO bad(off, len, error) VALUES (?, ?, ?)", bad)
        return end, exhausted, count, padded

    def _read_one(self, off: int, line: bytes, bad: list[tuple[int, int, str]]) -> tuple[Any, ...] | None:
        """One line the block decode could not take: its raw field values, or None (blank, or put in `bad`)."""
        stripped = line.strip()
        if not stripped:
            return None
        try:
            return self.fields.values(stripped)
        except ValueError as exc:
            bad.append((off, len(line), str(exc)[:200]))
            return None

    # -- queries -----------------------------------------------------------------------------------------
    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.refresh()
        with self._lock:
            return self._connect().execute(sql, args).fetchall()

    def spans(
        self,
        *,
        filters: dict[str, str] | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[tuple[int, int]]:
        """(offset, length) of matching lines (latest versions for a latest log), newest first."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (filters or {}).items():
            where.append(f"{column} = ?")
            args.append(value)
        if before is not None:
            where.append("off < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT off, len FROM rec {clause} ORDER BY off DESC LIMIT ?"
        key = (sql, *args, limit)
        self.refresh()
        with self._lock:  # the answer and the size it answers for, read together (appends refresh under it)
            found = self._spans.get(key) if self._spans_at == self._known_size else None
            if found is None:
                found = self._connect().execute(sql, [*args, limit]).fetchall()  # (off, len), newest first
                if self._spans_at != self._known_size:
                    self._spans, self._spans_at = {}, self._known_size
                if len(self._spans) < _SPANS_KEPT:
                    self._spans[key] = found
        return found

    def _verified(self, candidates: Sequence[tuple[Any, ...]], record_id: str) -> tuple[int, int] | None:
        """The first (newest) of these (off, len) rows whose line really has this id (hashes can collide)."""
        for off, length in candidates:
            line = self.file.read_at([(int(off), int(length))])[0]
            if self.fields.id_of(line) == record_id:
                return int(off), int(length)
        return None

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids have at least one record (one query per 500 ids)."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = list(dict.fromkeys(ids[i : i + 500]))
            marks = ",".join("?" * len(chunk))
            if self.spec.latest:
                found |= {str(r[0]) for r in self._query(f"SELECT id FROM rec WHERE id IN ({marks})", chunk)}
                continue
            by_hash: dict[int, list[tuple[int, int]]] = {}
            hashes = [id_hash(x) for x in chunk]
            rows = self._query(f"SELECT h, off, len FROM rec WHERE h IN ({marks}) ORDER BY off DESC", hashes)
            for h, off, length in rows:
                by_hash.setdefault(int(h), []).append((int(off), int(length)))
            for record_id, h in zip(chunk, hashes, strict=True):
                if h in by_hash and self._verified(by_hash[h], record_id) is not None:
                    found.add(record_id)
        return found

    def span_of(self, record_id: str) -> tuple[int, int] | None:
        if self.spec.latest:
            rows = self._query("SELECT off, len FROM rec WHERE id = ?", [record_id])
            return (int(rows[0][0]), int(rows[0][1])) if rows else None
        rows = self._query("SELECT off, len FROM rec WHERE h = ? ORDER BY off DESC", [id_hash(record_id)])
        return self._verified(rows, record_id)

    def ids_in_hash_range(self, low: int, high: int, limit: int) -> list[str]:
        """Distinct ids whose `id_hash` is in [low, high] (a short id's prefix: `core.shortid.hash_range`), newest
        first (by their latest line), at most `limit`. A plain log finds its candidate lines on the `h` column
        and reads their ids; a latest log keeps its ids in `id` and no hash, so `crc32(id)` is computed for
        each row (one pass over the table: about 0.15 s per 100,000 ids)."""
        if limit <= 0:
            return []
        if self.spec.latest:
            rows = self._query(
                "SELECT id FROM rec WHERE crc32(id) BETWEEN ? AND ? ORDER BY off DESC LIMIT ?", [low, high, limit]
            )
            return [str(r[0]) for r in rows]
        spans = self._query("SELECT off, len FROM rec WHERE h BETWEEN ? AND ? ORDER BY off DESC", [low, high])
        out: list[str] = []
        seen: set[str] = set()
        for i in range(0, len(spans), 256):  # a plain log may hold many versions of one id: read as needed
            chunk = [(int(off), int(length)) for off, length in spans[i : i + 256]]
            for line in self.file.read_at(chunk):
                record_id = self.fields.id_of(line)
                # the row's hash was this id's when indexed; a file replaced since is caught by the next refresh
                if record_id is None or record_id in seen or not low <= id_hash(record_id) <= high:
                    continue
                seen.add(record_id)
                out.append(record_id)
                if len(out) >= limit:
                    return out
        return out

    def count_by(self, column: str) -> dict[str, int]:
        rows = self._query(f"SELECT {column}, count(*) FROM rec GROUP BY {column}", [])
        return {str(k): int(v) for k, v in rows if k is not None}

    def total(self) -> int:
        """Records (one per id for a latest log)."""
        rows = self._query("SELECT count(*) FROM rec", [])
        return int(rows[0][0])

    def versions(self) -> int:
        """Every valid line indexed (all versions)."""
        rows = self._query("SELECT value FROM meta WHERE key = 'rows'", [])
        return int(rows[0][0]) if rows else 0

    def bad_lines(self) -> list[tuple[int, int, str]]:
        return [(int(a), int(b), str(c)) for a, b, c in self._query("SELECT off, len, error FROM bad ORDER BY off", [])]

    def close(self) -> None:
        self._stopping = True
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._known_size = -1
            self._stopping = False  # reopened later (a Store outlives close), it builds again
