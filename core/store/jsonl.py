"""One append-only JSONL file: locked, fsynced appends and torn-tail repair.

Every process (server, TUI, CLI) appends under an exclusive `flock` on a sidecar `<file>.lock`, so a record
is one complete line written by one `write()`. A file left without a final newline (a writer killed
mid-write) is repaired under the same lock: the partial bytes move to `<file>.quarantine` and the file is
truncated back to its last newline.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

from patchmoi.core.errors import StoreWriteError
from patchmoi.core.fsutil import FILE_MODE, ensure_dir, fsync_dir, write_all
from patchmoi.core.records import now_iso

_CHUNK = 1 << 20
_GAP = 4096  # spans read together may leave this much unread between them ...
_RUN = 1 << 20  # ... in one read of at most this size
_DENSE = 64 << 10  # spans within this range are read together whatever is between them


def encode_line(record: dict[str, Any]) -> bytes:
    """One record → one line. `\\n` inside strings is escaped by JSON, so a line is a record."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class JsonlFile:
    """Appends and raw reads of one JSONL file. Thread-safe within a process, lock-safe across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.quarantine_path = path.with_name(path.name + ".quarantine")
        self._thread_lock = threading.Lock()
        self._write_fd: int | None = None
        self._lock_fd: int | None = None
        self._read_lock = threading.Lock()
        self._read_fd: int | None = None
        self._read_inode = -1
        self._seen_inode = -1
        self._retired: list[int] = []
        self.last_size = -1  # as the last `size()` saw it (-1: not yet)

    # -- locking -----------------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across threads and processes; held for a whole append (or repair)."""
        with self._thread_lock:
            if self._lock_fd is None:
                try:
                    ensure_dir(self.path.parent)
                    self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
                except OSError as exc:
                    raise StoreWriteError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from exc
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _fd(self) -> int:
        if self._write_fd is None:
            ensure_dir(self.path.parent)
            existed = self.path.exists()
            self._write_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            if not existed:
                fsync_dir(self.path.parent)
        return self._write_fd

    # -- writing -----------------------------------------------------------------------------------------
    def append_lines(self, lines: Sequence[bytes]) -> tuple[int, int]:
        """Append complete lines; returns (offset of the first, end offset). Caller holds `locked()`."""
        try:
            fd = self._fd()
            self._repair_locked(fd)
            start = os.fstat(fd).st_size
        except OSError as exc:
            raise StoreWriteError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        data = b"".join(lines)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            # A full disk or a file size limit: cut the partial bytes back off, so the file still ends with a
            # complete record (nothing to quarantine later), and say what failed.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                os.fsync(fd)
            raise StoreWriteError(
                f"cannot append to {self.path}: {exc.strerror or exc}; earlier records are intact"
            ) from exc
        return start, start + len(data)

    def repair(self) -> int:
        """Quarantine a torn tail, if any. Returns the number of bytes moved. A reader that cannot write (a
        read-only DATA_DIR) leaves it: readers never see a line without its newline anyway."""
        if not self.path.exists() or not os.access(self.path, os.W_OK):
            return 0
        with self.locked():
            return self._repair_locked(self._fd())

    def _repair_locked(self, fd: int) -> int:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        rfd = os.open(self.path, os.O_RDONLY)
        try:
            if os.pread(rfd, 1, size - 1) == b"\n":
                return 0
            cut = self._last_newline_end(rfd, size)
            tail = os.pread(rfd, size - cut, cut)
        finally:
            os.close(rfd)
        entry = {
            "file": self.path.name,
            "offset": cut,
            "length": len(tail),
            "quarantinedAt": now_iso(),
            "reason": "torn tail (no final newline): a writer stopped mid-record",
            "bytesBase64": base64.b64encode(tail).decode("ascii"),
        }
        qfd = os.open(self.quarantine_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.write(qfd, encode_line(entry))
            os.fsync(qfd)
        finally:
            os.close(qfd)
        os.truncate(self.path, cut)
        os.fsync(fd)
        return len(tail)

    @staticmethod
    def _last_newline_end(rfd: int, size: int) -> int:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            block = os.pread(rfd, pos - start, start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
        return 0

    def quarantined_bytes(self) -> int:
        total = 0
        try:
            with self.quarantine_path.open("rb") as fh:
                for line in fh:
                    try:
                        total += int(json.loads(line).get("length", 0))
                    except (ValueError, AttributeError):
                        continue
        except FileNotFoundError:
            return 0
        return total

    # -- reading -----------------------------------------------------------------------------------------
    def size(self) -> int:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.last_size = 0
            return 0
        self._seen_inode = st.st_ino
        self.last_size = st.st_size
        return st.st_size

    def read_spans(self, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        """`read_at` for spans newest first (as the index gives them), in one pread when they lie close together
        (a newest-first page is one run of lines at the end of the file: one read instead of 50)."""
        if not spans:
            return []
        lo, hi = spans[-1][0], spans[0][0] + spans[0][1]
        if hi - lo > _DENSE and (hi - lo > _RUN or hi - lo > 2 * sum(length for _, length in spans) + _GAP):
            return self.read_at(spans)  # too sparse: one read each
        data = self.read_at([(lo, hi - lo)])[0]
        if hi - lo == sum(map(itemgetter(1), spans)) + len(spans) - 1:
            lines = data.split(b"\n")  # one run of whole lines: split in C and reversed, no slices
            lines.reverse()
            if len(lines) == len(spans):
                return lines
        return [data[offset - lo : offset - lo + length] for offset, length in spans]

    def read_at(self, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read lines at (offset, length) spans with positional reads (no whole-file load), on a descriptor
        kept open: reopened when the last `size()` saw another file at the path (replaced or restored)."""
        if not spans:
            return []
        fd = self._read_fd
        if fd is None or self._read_inode != self._seen_inode:
            fd = self._reopen()
        return [os.pread(fd, length, offset) for offset, length in spans]

    def _reopen(self) -> int:
        with self._read_lock:
            fd = os.open(self.path, os.O_RDONLY)
            if self._read_fd is not None:
                self._retired.append(self._read_fd)  # another thread may be reading it: closed in close()
            self._read_fd, self._read_inode = fd, os.fstat(fd).st_ino
            self._seen_inode = self._read_inode
            return fd

    def scan(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, line without newline) for complete lines in [start, stop) (the file's end if None)."""
        for base, block in self.blocks(start, self.size() if stop is None else stop):
            lines = block.split(b"\n")
            lines.pop()  # a block ends with a newline
            for line in lines:
                yield base, line
                base += len(line) + 1

    def lines_before(self, end: int, chunk: int = 1 << 18) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, line without newline) of the complete lines that end before `end`, newest first,
        reading backwards `chunk` bytes at a time (a partial line at `end`, a writer mid-append, is left out)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            pos, buf, whole = end, b"", False  # buf: bytes from pos; whole: it ends just after a newline
            while True:
                if pos > 0:
                    start = max(0, pos - chunk)
                    buf = os.pread(fd, pos - start, start) + buf
                    pos = start
                if not whole:
                    cut = buf.rfind(b"\n")
                    if cut < 0:
                        if pos == 0:
                            return
                        continue
                    buf, whole = buf[: cut + 1], True
                parts = buf[:-1].split(b"\n")
                head = parts.pop(0) if pos > 0 else None  # may begin before pos: completed next round
                at = pos + len(buf)
                for line in reversed(parts):
                    at -= len(line) + 1
                    yield at, line
                if head is None:
                    return
                buf = head + b"\n"
        finally:
            os.close(fd)

    def blocks(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, bytes) of about `_CHUNK` each, every one whole lines ending in a newline, covering the
        complete lines of [start, stop); a line longer than a chunk comes whole in a bigger block."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            pos, carry = start, b""
            while pos < stop:
                block = os.pread(fd, min(_CHUNK, stop - pos), pos)
                if not block:
                    return
                pos += len(block)
                cut = block.rfind(b"\n")
                if cut < 0:
                    carry += block
                    continue
                data = carry + block[: cut + 1] if carry else block[: cut + 1]
                yield pos - len(block) - len(carry), data
                carry = block[cut + 1 :]
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._thread_lock, self._read_lock:
            for fd in (self._write_fd, self._lock_fd, self._read_fd, *self._retired):
                if fd is not None:
                    os.close(fd)
            self._write_fd = None
            self._lock_fd = None
            self._read_fd, self._read_inode, self._retired = None, -1, []
