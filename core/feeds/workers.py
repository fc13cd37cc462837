"""Worker processes for the parsing that holds the GIL too long (#14): feedparser never runs in the server's process.

`patchmoi serve` answers the API from the process that polls. feedparser takes ~3 ms per 6 KB feed and holds
the GIL throughout, in a thread as much as in the event loop, so a poll pass pushed the API's p99 from ~1 ms to
70-80 ms. Documents the fast reader (`fastparse`) declines, and big ones, are parsed here instead, in another
interpreter, on the other core.

`run(fn, *args)` calls a module-level function in a worker and returns its result (pickled back).
Workers are started when first needed (new interpreters, never forks: the server has threads), one per spare core by
default (one on a 2-core machine), and kept for later documents. Each is driven by a thread of this module
that waits on its pipe without the GIL. A worker that dies while reading (killed, out of memory) fails that
document with `ParseWorkerError` and is replaced on the next call; one that takes longer than `timeout` is
killed, with the same result for its document. `shutdown()` stops them all (a worker whose server process
is gone ends by itself: it reads the end of its pipe); a later `run` starts new ones.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from patchmoi.core.errors import UpstreamError
from patchmoi.core.feeds.entries import FeedParseError, safe_text

__all__ = ["DEFAULT_TIMEOUT", "ParseWorkerError", "WorkerPool", "default_size", "run", "shutdown"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
"""Seconds one document may take in a worker. feedparser reads the biggest document the fetcher accepts
(5 MiB) in a few seconds; a parse still running after this is stuck, and its worker is killed."""
NICENESS = 5
"""Added to a worker's nice value: parsing is background work."""
PRELOAD = ("patchmoi.core.feeds.parse",)
"""Imported by each worker as it starts, so that its first document does not wait for feedparser's import."""


class ParseWorkerError(UpstreamError):
    """A worker process could not read a document: it died, it took too long, or it was shut down."""


def default_size() -> int:
    """One worker per core the server's own process does not use: 1 on a 2-core machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(1, cores - 1)


# -- in the worker process ---------------------------------------------------------------------------------
# A worker is a new interpreter (`python -c`), with the server's sys.path, that imports only this module and
# `preload`: multiprocessing's spawn would also re-import the server's __main__ in every worker.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from patchmoi.core.feeds.workers import _worker_main; _worker_main(int(sys.argv[2]), sys.argv[3])"
)


def _worker_main(fd: int, preload: str) -> None:
    _serve(Connection(fd), tuple(name for name in preload.split(",") if name))


def _serve(conn: Connection, preload: tuple[str, ...]) -> None:
    """A worker's life: say it is ready, then read (function, args, kwargs) and answer ("ok", result) or an
    error, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the server stops us
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # when the cores are busy, the server's own process (the API) goes first
    for name in preload:
        importlib.import_module(name)
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the server's process is gone
            return
        if request is None:
            return
        fn, args, kwargs = request
        try:
            reply: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        except FeedParseError as exc:
            reply = ("refused", str(exc))
        except Exception as exc:
            reply = ("failed", f"{type(exc).__name__}: {safe_text(str(exc))}")
        try:
            try:
                conn.send(reply)
            except OSError:
                raise
            except Exception as exc:  # a result that does not pickle
                conn.send(("failed", f"{type(exc).__name__}: {safe_text(str(exc))}"))
        except OSError:  # the server's process is gone (or stopped waiting and killed us)
            return


# -- in the server's process -------------------------------------------------------------------------------
class _Undelivered(Exception):
    """The request could not be sent: the worker had died before it (between documents)."""


class _Worker:
    """One worker process. Only the pool thread that took it uses its pipe; `terminate` is safe from any thread."""

    START_TIMEOUT = 60.0

    def __init__(self, preload: tuple[str, ...]) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            fd = theirs.fileno()
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(fd), ",".join(preload)],
                stdin=subprocess.DEVNULL,
                pass_fds=(fd,),
            )
            self.conn = Connection(ours.detach())
        self.shut_down = False
        try:
            ready = self.conn.poll(self.START_TIMEOUT) and self.conn.recv() == ("ready", None)
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise ParseWorkerError(f"the feed parser's worker process did not start ({self.how_it_ended()})")

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> Any:
        """The worker's answer; ParseWorkerError when it dies or times out (it is closed then)."""
        try:
            self.conn.send((fn, args, kwargs))
        except OSError:
            self.close()
            raise _Undelivered() from None
        try:
            if not self.conn.poll(timeout):
                self.close()
                raise ParseWorkerError(
                    f"the feed parser took longer than {timeout:g}s on this document; its worker process was stopped"
                )
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.close()
            if self.shut_down:
                raise ParseWorkerError("the feed parser's worker processes were shut down") from None
            raise ParseWorkerError(
                f"the feed parser's worker process died while reading this document ({self.how_it_ended()})"
            ) from None
        if status == "ok":
            return value
        if status == "refused":
            raise FeedParseError(value)
        raise ParseWorkerError(f"the feed parser failed on this document ({value})")

    def how_it_ended(self) -> str:
        code = self.process.poll()
        if code is None:
            return "still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}" + (", perhaps for lack of memory" if code == -signal.SIGKILL else "")
        return f"exit status {code}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Kill the process (from any thread): the thread using the worker reads EOF and closes it."""
        self.shut_down = True
        with contextlib.suppress(OSError):
            self.process.kill()

    def close(self) -> None:
        """Kill the process if it still runs, reap it, close the pipe (by the thread using the worker)."""
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not within a second."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(1)
        self.close()


Job = tuple[concurrent.futures.Future[Any], Callable[[], Any]]


class WorkerPool:
    """Up to `size` worker processes, each driven by one daemon thread of this pool."""

    def __init__(
        self, size: int | None = None, *, timeout: float = DEFAULT_TIMEOUT, preload: tuple[str, ...] = PRELOAD
    ) -> None:
        self.size = size or default_size()
        self.timeout = timeout
        self.preload = preload
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job | None] | None = None
        self._threads: list[threading.Thread] = []
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._generation = 0

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a worker process. `fn` must be importable by name (a module-level function)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:  # so that shutdown() never leaves a job behind in a queue nobody reads
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                for n in range(self.size):
                    thread = threading.Thread(
                        target=self._drive, args=(self._jobs,), name=f"patchmoi-parse-{n}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
            self._jobs.put((future, lambda: self._call(fn, args, kwargs)))
        return await asyncio.wrap_future(future)

    def pids(self) -> list[int]:
        """The worker processes alive now (for tests and diagnostics)."""
        with self._lock:
            return [w.pid for w in [*self._idle, *self._busy] if w.alive()]

    def shutdown(self) -> None:
        """Stop every worker and thread now; documents being read, or waiting, fail with ParseWorkerError."""
        with self._lock:
            self._generation += 1
            jobs, self._jobs = self._jobs, None
            threads, self._threads = self._threads, []
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
            self._busy.clear()
        if jobs is not None:
            while True:  # documents still waiting for a worker
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None and job[0].set_running_or_notify_cancel():
                    job[0].set_exception(ParseWorkerError("the feed parser's worker processes were shut down"))
            for _ in threads:
                jobs.put(None)
        for worker in busy:  # its thread reads EOF, fails the document and closes the worker
            worker.terminate()
        for worker in idle:
            worker.stop()

    def _drive(self, jobs: queue.SimpleQueue[Job | None]) -> None:
        while (job := jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():  # its reader stopped waiting
                continue
            try:
                result = call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        for attempt in (1, 2):
            worker, generation = self._take()
            try:
                result = worker.call(fn, args, kwargs, self.timeout)
            except (ParseWorkerError, _Undelivered) as exc:
                with self._lock:
                    self._busy.discard(worker)  # closed by call(); the next call starts a new one
                if isinstance(exc, _Undelivered) and attempt == 1:
                    continue  # it died before this document reached it: a new worker reads it
                if isinstance(exc, _Undelivered):
                    raise ParseWorkerError("the feed parser's worker process could not be reached") from None
                raise
            except BaseException:
                self._give_back(worker, generation)
                raise
            self._give_back(worker, generation)
            return result
        raise AssertionError("not reached")

    def _take(self) -> tuple[_Worker, int]:
        with self._lock:
            generation = self._generation
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    self._busy.add(worker)
                    return worker, generation
                worker.close()  # died between documents (killed from outside): replaced
        worker = _Worker(self.preload)  # outside the lock: a start takes a moment
        with self._lock:
            if generation == self._generation:
                self._busy.add(worker)
                return worker, generation
        worker.stop()
        raise ParseWorkerError("the feed parser's worker processes were shut down")

    def _give_back(self, worker: _Worker, generation: int) -> None:
        with self._lock:
            self._busy.discard(worker)
            if generation == self._generation and worker.alive():
                self._idle.append(worker)
                return
        worker.stop()


POOL = WorkerPool()
"""The process's pool: the feed readers use it; the service shuts it down when it stops (and, failing that,
this process's exit: its workers would otherwise finish the document they are reading first)."""
atexit.register(POOL.shutdown)


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in one of the process's parse workers (see the module's docstring)."""
    return await POOL.run(fn, *args, **kwargs)


def shutdown() -> None:
    """Stop the process's parse workers (the service calls this when it stops; a later `run` starts new ones)."""
    POOL.shutdown()
