"""Structured logs: one JSON object per line on stderr (`{"type": "feed.accepted", ...}`), never secrets.

A log write never blocks its caller (#14): the handler `configure` installs queues each formatted line for a
writer thread, which wakes at most every `LINGER` seconds and writes what has queued up in one `write` and one
`flush` (waking per line would take the GIL from the event loop's thread at every request). A slow or blocked
stderr (a full pipe, a stalled journald) stalls that thread only: the event loop goes on, lines queue up to
`CAPACITY`, and past that they are dropped and counted; the writer reports the count (`{"type": "log.dropped",
"lines": N}`) once it can write again. Lines are written in the order they were logged (one queue, one thread
per stream), and whatever is queued is flushed at exit (`flush`, run by `atexit`; `serve` also calls it before
uvicorn re-raises the SIGTERM it caught, which would end the process without running `atexit`).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import sys
import threading
import time
import traceback
from typing import IO, Any

logger = logging.getLogger("patchmoi")

CAPACITY = 10_000  # lines queued for a blocked stream before new ones are dropped (about 2 MB of JSON)
BATCH = 1_000  # lines per write at most
LINGER = 0.05  # seconds the writer waits after a first line, for more to write with it
EXIT_FLUSH_SECONDS = 3.0  # how long exit waits for a blocked stream before giving up on what is queued


def log_event(type_: str, *, exc: BaseException | None = None, **fields: Any) -> None:
    """One JSON line; with `exc`, its type, message and traceback (for internal errors, never expected)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    record = {"ts": _timestamp(), "type": type_, **{k: v for k, v in fields.items() if v is not None}}
    if exc is not None:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
    line = _encode(record)
    handler = _configured
    if (
        handler is not None
        and logger.handlers == [handler]
        and not (logger.filters or handler.filters or handler.level)
    ):
        handler.writer.put(line)  # the handler `configure` installed, alone: what it would do, without building a
        # LogRecord (40% of a line's cost; with PATCHMOI_ACCESS_LOG=all the server writes one per request)
    else:
        logger.info(line)


_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode  # json.dumps(...) without a new encoder each time


def _timestamp() -> str:
    """`records.now_iso()`'s format (ISO 8601, milliseconds, Z) in a third of its time: a line per request adds up."""
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}Z"


def configure(level: int = logging.INFO) -> None:
    """Send patchmoi's JSON lines to stderr (the CLI and server call this once)."""
    if logger.handlers:
        logger.setLevel(level)
        return
    global _configured
    handler = _configured = BackgroundHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # The PostgreSQL driver's pool logs its reconnection attempts as multi-line text: one JSON line each instead.
    driver = logging.getLogger("psycopg")
    driver.addHandler(_DriverLines())
    driver.propagate = False


class _DriverLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log_event("store.driver", level=record.levelname.lower(), message=" ".join(record.getMessage().split()))


def flush(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Wait until every line queued so far is written (False if a stream stayed blocked for `timeout` s)."""
    with _writers_lock:
        writers = list(_writers.values())
    return all([writer.flush(timeout) for writer in writers])


class BackgroundHandler(logging.Handler):
    """A `StreamHandler` that never blocks: `emit` formats the line and queues it for the stream's writer.

    Takes the same arguments as `logging.StreamHandler` (uvicorn's logging config names it in its place)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = sys.stderr if stream is None else stream
        self.writer = _writer_for(self.stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.writer.put(line)

    def flush(self) -> None:
        self.writer.flush(EXIT_FLUSH_SECONDS)

    def close(self) -> None:
        # logging.config.dictConfig (uvicorn runs it for every Config) closes every existing handler: the
        # handler stays attached to its logger and usable, so closing only flushes; the writer thread lives on.
        self.flush()
        super().close()


class _Writer:
    """One stream's queue and the daemon thread that writes it (started by the first line)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque()
        self.wake = threading.Event()
        self.progress = threading.Condition()
        self.queued = 0  # lines accepted (put): a flush waits until `written` reaches what it saw here
        self.written = 0  # lines the thread is done with (written, or lost to a failed write)
        self.dropped = 0  # lines refused because the queue was full; reported, then reset, by the thread
        self.lock = threading.Lock()  # guards `queued` and `dropped` (put may run on several threads)
        self.thread: threading.Thread | None = None

    def put(self, line: str) -> None:
        with self.lock:
            if len(self.lines) >= CAPACITY:
                self.dropped += 1
                return
            self.lines.append(line)
            self.queued += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="patchmoi-log-writer", daemon=True)
                self.thread.start()
        if not self.wake.is_set():
            self.wake.set()

    def flush(self, timeout: float) -> bool:
        with self.lock:
            target = self.queued
        with self.progress:
            return self.progress.wait_for(lambda: self.written >= target, timeout)

    def _run(self) -> None:
        while True:
            self.wake.wait()
            # Let lines gather: one write per LINGER, not one per line (each wake-up takes the GIL from the
            # event loop's thread, which costs the loop more than the line itself).
            time.sleep(LINGER)
            self.wake.clear()
            while self.lines:
                batch: list[str] = []
                while self.lines and len(batch) < BATCH:
                    batch.append(self.lines.popleft())
                with self.lock:
                    dropped, self.dropped = self.dropped, 0
                if dropped:
                    record = {"ts": _timestamp(), "type": "log.dropped", "lines": dropped}
                    batch.append(json.dumps(record))
                    # a failed write below loses these lines too, and they were never counted as queued
                try:
                    self.stream.write("\n".join(batch) + "\n")
                    self.stream.flush()
                except Exception:  # a closed or broken stream: these lines are lost, the next ones may not be
                    pass
                with self.progress:
                    self.written += len(batch) - (1 if dropped else 0)
                    self.progress.notify_all()


_configured: BackgroundHandler | None = None  # the handler `configure` installed
_writers: dict[int, _Writer] = {}
_writers_lock = threading.Lock()


def _writer_for(stream: IO[str]) -> _Writer:
    """The writer of this stream (one per stream, so lines to one stream keep their order)."""
    with _writers_lock:
        writer = _writers.get(id(stream))
        if writer is None or writer.stream is not stream:
            writer = _writers[id(stream)] = _Writer(stream)
        return writer


atexit.register(flush)
