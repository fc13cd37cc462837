"""`serve`'s poll worker: polling, intake, automatic dispatch, recovery and notifications in a child process.

The API and the poller shared one event loop, and a pass over 1,000 sources kept it busy: `GET /flow-events`
took 96-124 ms at p99 while a pass ran (#14). A thread did not help (the GIL: the API's loop waited behind the
poll thread at every switch). A child process has its own interpreter and the machine's second core; the API
process keeps the loop to itself and serves the operator's actions (retry, replay, sync, adopt).

Parent and child talk over the child's stdin and stdout, one JSON object per line:

- parent -> child: the settings and the lease holder's name first (`{"settings": <pickle, base64>,
  "holder": ...}`), then `{"op": "health", "id": N}` whenever `/readyz` asks, and `{"op": "poll", "id": N,
  "sourceId": ...}` for `POST /feed-sources/{id}/poll` (the child owns the feed state and the schedule);
- child -> parent: `{"type": "beat", ...}` every second (polling or not, the last error, the queue depth) and,
  in answer to each health request, `{"type": "health", "head": {...}}` followed by a line with the rest of its
  `/readyz` object. The parent answers `/readyz` with its own head spliced onto that line's bytes, never
  decoding or encoding the per-source list (1,000 sources: 300 KB, ~9 ms of the API's loop with json). A poll
  request is answered, when its poll is done, by `{"type": "poll", "id": N, "result": {...}}` or `{"type":
  "poll", "id": N, "error": {"code", "message"}}` (the child goes on reading requests meanwhile).

The child leads polling under the parent's name (the `poller` lease names the API process, which an operator
knows, and records the child's pid). It stops when its stdin closes, so it never outlives the API process, even
one killed with SIGKILL; the parent starts it again (after 1 s, doubling to 30 s) when it dies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from patchmoi.core.config import Settings
from patchmoi.core.errors import PatchmoiError
from patchmoi.core.log import configure, flush, log_event
from patchmoi.core.pollnow import PollerUnavailable, poll_error
from patchmoi.core.records import now_iso

BEAT_SECONDS = 1.0
HEALTH_TIMEOUT = 2.0
"""How long `/readyz` waits for the child's answer before it reports the last one it had."""
POLL_TIMEOUT_MARGIN = 60.0
"""A poll-now waits for the child's answer up to the fetch deadline plus this (git sources, a busy pass)."""
STOP_GRACE = 20.0
"""The child's own stop waits up to 10 s for local runs; then it is killed."""
RESTART_MAX = 30.0
MAX_LINE = 64 * 1024 * 1024
HEAD = ("status", "lastError", "polling", "localRunsInFlight", "startedAt", "stateProblem")
"""The `/readyz` fields the parent merges with its own; the rest of the child's answer is passed on as bytes."""
WORKER_NICE = 10
"""The worker (and the git it runs) yields the CPU to the API process whenever both want it: on two cores,
at the same priority, a request often waited a whole scheduler slice behind a busy pass (p99 52 ms)."""


class PollWorker:
    """The parent's handle on the child: start, restart, ask for health, stop."""

    def __init__(self, settings: Settings, holder: str) -> None:
        self.settings = settings
        self.holder = holder
        self.proc: asyncio.subprocess.Process | None = None
        self.polling = False
        self.last_error: str | None = None
        self.beat: dict[str, Any] = {}
        # the current child's last /readyz answer: its head fields, and the rest as the bytes it sent (a complete
        # JSON object); None until it answers, and again after each restart
        self.last_health: tuple[dict[str, Any], bytes] | None = None
        self._head: tuple[int, dict[str, Any]] | None = None  # a head line whose body line comes next
        self.started_at: str | None = None
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self._requests = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._polls: dict[int, asyncio.Future[dict[str, Any]]] = {}  # poll-now requests waiting for their answer
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                code = await self._run_once()
            except OSError as exc:  # could not even start it (no such interpreter, no processes left)
                code, self.last_error = None, f"the poll worker could not start: {exc}"
                log_event("worker.start_failed", error=str(exc))
            if self._stopping.is_set():
                return
            self.polling = False
            if time.monotonic() - began > 60:
                delay = 1.0
            self.restarts += 1
            self.last_exit = {"code": code, "at": now_iso(), "restartInSeconds": delay}
            if code is not None:
                self.last_error = f"the poll worker exited with code {code}; restarting in {delay:.0f}s"
                log_event("worker.exited", code=code, restartInSeconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, RESTART_MAX)

    async def _run_once(self) -> int:
        self.last_health, self._head, self.beat = None, None, {}  # nothing a dead child said is served again
        self.proc = proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # not the working directory first on sys.path: a `patchmoi/` folder there would be imported
            "-m",
            "patchmoi.core.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_LINE,
        )
        self.started_at = now_iso()
        assert proc.stdin is not None and proc.stdout is not None
        hello = {"settings": base64.b64encode(pickle.dumps(self.settings)).decode("ascii"), "holder": self.holder}
        proc.stdin.write(json.dumps(hello).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        log_event("worker.started", pid=proc.pid)
        try:
            while line := await proc.stdout.readline():
                self._receive(line)
        except (ValueError, asyncio.LimitOverrunError) as exc:  # a line past MAX_LINE: a broken child
            log_event("worker.bad_output", error=str(exc))
            proc.kill()
        finally:
            for waiter in self._waiting.values():  # their /readyz answers with what is known
                if not waiter.done():
                    waiter.set_result(None)
            self._waiting.clear()
            for poll in self._polls.values():
                if not poll.done():
                    poll.set_exception(PollerUnavailable("the poll worker exited before it answered; try again"))
            self._polls.clear()
            self.last_health, self._head = None, None
        return await proc.wait()

    def _receive(self, line: bytes) -> None:
        if self._head is not None:
            (request, head), self._head = self._head, None
            body = line.strip()
            # whole lines only: a child killed mid-write leaves a partial one at the end of its output
            if line.endswith(b"\n") and body.startswith(b"{") and body.endswith(b"}"):
                self.last_health = (head, body)
                waiter = self._waiting.get(request)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            return
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "beat":
            self.beat = message
            self.polling = bool(message.get("polling"))
            self.last_error = message.get("lastError") if isinstance(message.get("lastError"), str) else None
        elif message.get("type") == "health" and isinstance(message.get("head"), dict):
            self._head = (int(message.get("id") or 0), message["head"])
        elif message.get("type") == "poll":
            self._answer_poll(message)

    def _answer_poll(self, message: dict[str, Any]) -> None:
        poll = self._polls.get(int(message.get("id") or 0))
        if poll is None or poll.done():
            return
        failure = message.get("error")
        if isinstance(failure, dict):
            poll.set_exception(poll_error(failure.get("code"), str(failure.get("message") or "poll failed")))
        elif isinstance(message.get("result"), dict):
            poll.set_result(message["result"])
        else:
            poll.set_exception(PatchmoiError("the poll worker answered a poll with nothing"))

    async def refresh_health(self) -> None:
        """Ask the child for its `/readyz` answer (`last_health`); keep the last one if it does not answer within
        HEALTH_TIMEOUT (a pass holds its loop for a moment; it is never waited on longer)."""
        proc = self.proc
        if proc is None or proc.returncode is not None or proc.stdin is None or proc.stdin.is_closing():
            return
        self._requests += 1
        request = self._requests
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[request] = waiter
        try:
            proc.stdin.write(json.dumps({"op": "health", "id": request}).encode() + b"\n")
            await asyncio.wait_for(asyncio.shield(waiter), HEALTH_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):  # RuntimeError: uvloop, on a pipe just closed
            pass
        finally:
            self._waiting.pop(request, None)

    async def poll_now(self, source_id: str) -> dict[str, Any]:
        """Ask the child to poll one source now (core.pollnow); its summary, or the error it raised. Raises
        PollerUnavailable while no child runs (it is restarting) or when it dies before answering."""
        proc = self.proc
        if proc is None or proc.returncode is not None or proc.stdin is None or proc.stdin.is_closing():
            raise PollerUnavailable("the poll worker is not running (it is starting or restarting); try again")
        self._requests += 1
        request = self._requests
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._polls[request] = waiter
        timeout = self.settings.fetch_deadline + POLL_TIMEOUT_MARGIN
        try:
            proc.stdin.write(json.dumps({"op": "poll", "id": request, "sourceId": source_id}).encode() + b"\n")
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise PollerUnavailable(f"the poll worker did not answer within {timeout:.0f}s") from None
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: uvloop, on a pipe just closed
            raise PollerUnavailable(f"the poll worker could not be asked: {exc}") from None
        finally:
            self._polls.pop(request, None)

    def health_body(self) -> dict[str, Any]:
        """The rest of the child's last answer, decoded (for callers that want a dict, not the API)."""
        body = json.loads(self.last_health[1]) if self.last_health is not None else {}
        return body if isinstance(body, dict) else {}

    async def stop(self) -> None:
        """Close the child's stdin (it stops polling, finishes its writes and exits); kill it after STOP_GRACE."""
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log_event("worker.killed", pid=proc.pid, reason=f"still running {STOP_GRACE:.0f}s after stop")
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- the child ---------------------------------------------------------------------------------------------
async def _child(reader: asyncio.StreamReader, out: int) -> int:
    from patchmoi.core.service import Service

    hello = json.loads(await reader.readline())
    settings = pickle.loads(base64.b64decode(hello["settings"]))  # from the parent: the same code, its own pipe
    assert isinstance(settings, Settings)
    service = Service(settings)
    service.holder = str(hello["holder"])
    stop = asyncio.Event()

    def send(message: dict[str, Any]) -> None:
        data = json.dumps(message, default=str).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(out, view) :]

    polls: set[asyncio.Task[None]] = set()

    async def poll(request: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"type": "poll", "id": request.get("id")}
        try:
            answer["result"] = await service.poll_now(str(request.get("sourceId")))
        except PatchmoiError as exc:
            answer["error"] = {"code": exc.code, "message": str(exc)}
        except Exception as exc:  # the parent answers 500 with this, the log here has the traceback
            log_event("worker.poll_failed", exc=exc)
            answer["error"] = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(BrokenPipeError):
            send(answer)

    async def answer_health() -> dict[str, Any]:
        """This worker's /readyz. A database store is read on a thread (a lost database must not hold the loop
        that polls), and a failure is an answer (`degraded`, why), never the end of this listener."""
        try:
            return await service.store.off_loop(service.health)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, PatchmoiError) else f"{type(exc).__name__}: {exc}"
            log_event("worker.health_failed", error=reason)
            return {"status": "degraded", "lastError": reason, "polling": service.polling, "sources": []}

    async def requests() -> None:
        while line := await reader.readline():
            with contextlib.suppress(ValueError, AttributeError):
                request = json.loads(line)
                if request.get("op") == "health":
                    health = await answer_health()
                    head = {k: health.pop(k, None) for k in HEAD}
                    send({"type": "health", "id": request.get("id"), "head": head})
                    send(health)
                elif request.get("op") == "poll":  # in a task of its own: health requests are answered meanwhile
                    task = asyncio.create_task(poll(request))
                    polls.add(task)
                    task.add_done_callback(polls.discard)
        stop.set()  # stdin closed: the parent stopped, or died

    try:
        await service.start(poll=True)
        listener = asyncio.create_task(requests())
        while not stop.is_set():
            send(
                {
                    "type": "beat",
                    "polling": service.polling,
                    "lastError": service.last_error,
                    "queue": service.queue.qsize(),
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BEAT_SECONDS)
        listener.cancel()
    except BrokenPipeError:
        pass  # the parent is gone: stop as if asked
    finally:
        await service.stop()
    return 0


def main() -> int:
    # Ctrl-C in a terminal, or a SIGTERM to the whole group (systemd's default KillMode, `kill -- -PGID`), reach
    # this process too: the parent stops it in its own order, by closing its stdin, and never restarts it then
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    out = os.dup(1)
    os.dup2(2, 1)  # stdout is the parent's channel: anything else printed goes to stderr
    configure()  # the same JSON log lines as the API process, on the stderr they share
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    with contextlib.suppress(ImportError):  # (uvloop is not built for every platform)
        import uvloop

        runner = uvloop.run

    async def run() -> int:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return await _child(reader, out)

    try:
        return int(runner(run()))
    finally:
        flush()


if __name__ == "__main__":
    sys.exit(main())
