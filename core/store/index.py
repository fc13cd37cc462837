"""A derived, rebuildable SQLite index beside one JSONL file.

It maps line offsets to the few fields queries filter on, so `list`, `get` and "latest record per id"
cost O(limit) whatever the file's size. The JSONL file stays the truth: the index keeps a watermark (bytes
indexed), the file's inode and a hash of the bytes just before the watermark; if any of these no longer
matches the file, or the database is unreadable, the index is dropped and rebuilt from the file.
Any process catches the index up with the bytes other processes appended (one SQLite write transaction, so
two processes never index the same bytes twice).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchmoi.core.errors import StoreWriteError
from patchmoi.core.fsutil import FILE_MODE, ensure_dir
from patchmoi.core.store.jsonl import JsonlFile

SCHEMA_VERSION = "2"  # 2: lines that are not strict JSON are skipped
_SIG_BYTES = 64
_BATCH = 5000


@dataclass(frozen=True)
class IndexSpec:
    """Which record fields a log is queried by. `latest` keeps a latest-record-per-id table."""

    id_of: Callable[[dict[str, Any]], str | None]
    k1: str | None = None
    k2: str | None = None
    latest: bool = False


_Row = tuple[int, int, str | None, str | None, str | None]
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


def strict_loads(raw: bytes) -> Any:
    """`json.loads` that refuses what JSON.parse or a re-encode would choke on: NaN and Infinity, numbers
    that overflow to infinity, and lone surrogates (`\\ud800`, which the Bun era could write). A line that
    fails is skipped and counted by the index, so it is never served."""
    obj = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a string") from None
    return obj


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class LogIndex:
    def __init__(self, file: JsonlFile, index_dir: Path, spec: IndexSpec) -> None:
        self.file = file
        self.spec = spec
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
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS rec(off INTEGER PRIMARY KEY, len INTEGER, id TEXT, k1 TEXT, k2 TEXT);
            CREATE INDEX IF NOT EXISTS rec_id ON rec(id, off);
            CREATE INDEX IF NOT EXISTS rec_k1 ON rec(k1, off);
            CREATE INDEX IF NOT EXISTS rec_k2 ON rec(k2, off);
            CREATE TABLE IF NOT EXISTS latest(id TEXT PRIMARY KEY, off INTEGER, k1 TEXT, k2 TEXT);
            CREATE INDEX IF NOT EXISTS latest_off ON latest(off);
            CREATE INDEX IF NOT EXISTS latest_k1 ON latest(k1, off);
            CREATE INDEX IF NOT EXISTS latest_k2 ON latest(k2, off);
            CREATE TABLE IF NOT EXISTS bad(off INTEGER PRIMARY KEY, len INTEGER, error TEXT);
            """
        )
        conn.execute("SELECT count(*) FROM meta").fetchone()
        return conn

    def _drop_db_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(self.db_path) + suffix)

    # -- catch-up ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Index bytes appended since the last look (by any process). Cheap when nothing changed."""
        self._maybe_back_to_disk()
        size = self.file.size()
        if size == self._known_size:
            return
        with self._lock:
            try:
                self._refresh_locked(size)
            except sqlite3.OperationalError as exc:
                # A full disk, a read-only file, an I/O error: not corruption, so nothing is dropped.
                if self.mode == "memory":
                    raise
                self._fall_back(exc)
                self._refresh_locked(self.file.size())
            except sqlite3.DatabaseError:
                # A damaged index is only a cache: rebuild it from the log.
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                try:
                    self._drop_db_files()
                except OSError as exc:
                    self._fall_back(exc)
                self._refresh_locked(self.file.size())

    def _meta(self, conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def _signature(self, upto: int) -> str:
        if upto <= 0:
            return ""
        start = max(0, upto - _SIG_BYTES)
        data = self.file.read_at([(start, upto - start)])[0]
        return hashlib.sha1(data).hexdigest()

    def _refresh_locked(self, size: int) -> None:
        conn = self._connect()
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
                for table in ("rec", "latest", "bad", "meta"):
                    conn.execute(f"DELETE FROM {table}")
                mark = 0
            mark = self._index_from(conn, mark, size)
            conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [
                    ("version", SCHEMA_VERSION),
                    ("watermark", str(mark)),
                    ("inode", inode),
                    ("sig", self._signature(mark)),
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._known_size = size

    def _index_from(self, conn: sqlite3.Connection, mark: int, size: int) -> int:
        spec = self.spec
        rows: list[_Row] = []
        bad: list[tuple[int, int, str]] = []
        end = mark
        for off, line in self.file.scan(mark, size):
            end = off + len(line) + 1
            stripped = line.strip()
            if not stripped:
                continue
            try:
                obj = strict_loads(stripped)
                if not isinstance(obj, dict):
                    raise ValueError("line is not a JSON object")
            except ValueError as exc:
                bad.append((off, len(line), str(exc)[:200]))
                continue
            rows.append(
                (
                    off,
                    len(line),
                    spec.id_of(obj),
                    _text(obj.get(spec.k1)) if spec.k1 else None,
                    _text(obj.get(spec.k2)) if spec.k2 else None,
                )
            )
            if len(rows) >= _BATCH:
                self._insert(conn, rows)
                rows = []
        self._insert(conn, rows)
        if bad:
            conn.executemany("INSERT OR REPLACE INTO bad(off, len, error) VALUES (?, ?, ?)", bad)
        return end

    def _insert(self, conn: sqlite3.Connection, rows: list[_Row]) -> None:
        if not rows:
            return
        conn.executemany("INSERT OR REPLACE INTO rec(off, len, id, k1, k2) VALUES (?, ?, ?, ?, ?)", rows)
        if self.spec.latest:
            conn.executemany(
                "INSERT OR REPLACE INTO latest(id, off, k1, k2) VALUES (?, ?, ?, ?)",
                [(r[2], r[0], r[3], r[4]) for r in rows if r[2] is not None],
            )

    # -- queries -----------------------------------------------------------------------------------------
    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.refresh()
        with self._lock:
            return self._connect().execute(sql, args).fetchall()

    def spans(
        self,
        *,
        latest: bool = False,
        filters: dict[str, str] | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[tuple[int, int]]:
        """(offset, length) of matching lines, newest first."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (filters or {}).items():
            where.append(f"{'l.' if latest else ''}{column} = ?")
            args.append(value)
        if before is not None:
            where.append(f"{'l.' if latest else ''}off < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        if latest:
            sql = f"SELECT l.off, r.len FROM latest l JOIN rec r ON r.off = l.off {clause} ORDER BY l.off DESC LIMIT ?"
        else:
            sql = f"SELECT off, len FROM rec {clause} ORDER BY off DESC LIMIT ?"
        return [(int(a), int(b)) for a, b in self._query(sql, [*args, limit])]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids have at least one record (one query per 500 ids)."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            found |= {str(r[0]) for r in self._query(f"SELECT DISTINCT id FROM rec WHERE id IN ({marks})", chunk)}
        return found

    def span_of(self, record_id: str) -> tuple[int, int] | None:
        rows = self._query("SELECT off, len FROM rec WHERE id = ? ORDER BY off DESC LIMIT 1", [record_id])
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def count_by(self, column: str, *, latest: bool = False) -> dict[str, int]:
        table = "latest" if latest else "rec"
        rows = self._query(f"SELECT {column}, count(*) FROM {table} GROUP BY {column}", [])
        return {str(k): int(v) for k, v in rows if k is not None}

    def total(self, *, latest: bool = False) -> int:
        rows = self._query(f"SELECT count(*) FROM {'latest' if latest else 'rec'}", [])
        return int(rows[0][0])

    def bad_lines(self) -> list[tuple[int, int, str]]:
        return [(int(a), int(b), str(c)) for a, b, c in self._query("SELECT off, len, error FROM bad ORDER BY off", [])]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._known_size = -1
