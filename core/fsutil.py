"""File helpers with the store's durability rules: 0600 files, 0700 dirs, atomic rewrites."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

from patchmoi.core.errors import StoreWriteError

FILE_MODE = 0o600
DIR_MODE = 0o700
# Errors that mean "this location cannot be written", not "the data is damaged".
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def ensure_dir(path: Path) -> None:
    """Create `path` and any missing parents, each 0700 (mkdir's `parents` would make them 0755)."""
    if path.is_dir():
        return
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
            os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """`os.write` may write less than asked (a signal, a nearly full disk): loop until all of it is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "short write: no progress")
        view = view[written:]


def atomic_write(path: Path, data: bytes) -> None:
    """Replace a whole file atomically: write a temp file completely, fsync it, rename, fsync the directory.

    A failed write (full disk, file size limit, read-only) leaves the old file untouched and raises
    StoreWriteError naming the file; the partial temp file is removed.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        ensure_dir(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.stat(tmp).st_size != len(data):  # never publish a cut file
            raise OSError(errno.EIO, f"wrote {os.stat(tmp).st_size} of {len(data)} bytes")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
