"""Parsed files by path, reused while the file is unchanged (its mtime, ctime, size and inode).

A file modified within RACY_NS of being read is not kept: another write in the same timestamp tick would not
change its identity. Shared by the workspace's `.patchmoi.toml` and its codex-flows manifests and schemas,
which a burst of dispatches would otherwise parse once per event.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from patchmoi.core.errors import ConfigError

T = TypeVar("T")

RACY_NS = 2_000_000_000


class FileCache(Generic[T]):
    """Parsed files by path, reused while the file's identity is unchanged."""

    def __init__(self, parse: Callable[[Path, bytes], T]) -> None:
        self._parse = parse
        self._entries: dict[str, tuple[tuple[int, int, int, int], T]] = {}
        self._lock = threading.Lock()
        self.reads = 0

    def get(self, path: Path) -> T:
        """The parsed file; OSError if it cannot be read, ConfigError if it is invalid."""
        key_path = os.path.abspath(path)
        st = os.stat(key_path)
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        with self._lock:
            hit = self._entries.get(key_path)
        if hit is not None and hit[0] == key:
            return hit[1]
        started = time.time_ns()
        with open(key_path, "rb") as fh:
            data = fh.read()
        try:
            value = self._parse(Path(key_path), data)
        except ConfigError:
            raise
        except RecursionError:
            raise ConfigError(f"{key_path}: nested too deeply to read") from None
        except Exception as exc:  # a parser or library surprised by odd input: still this file's fault
            raise ConfigError(f"{key_path}: cannot be read: {type(exc).__name__}: {exc}") from None
        with self._lock:
            self.reads += 1
            # ctime too: a file copied with its old mtime kept (`cp -p`, `rsync -t`) is new all the same
            if max(st.st_mtime_ns, st.st_ctime_ns) < started - RACY_NS:
                self._entries[key_path] = (key, value)
            else:
                self._entries.pop(key_path, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.reads = 0
