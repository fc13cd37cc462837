"""Group commit: what concurrent polls hand in while a write runs is written together by the next one.

One thread write at a time: the first item goes at once (a lone entry waits for nobody), and whatever arrives
meanwhile waits for that write to end and then goes in one batch, with one lock, one index refresh and one
fsync per file. A burst of a thousand new entries becomes a few dozen writes instead of a thousand, and the
loop hands work to a thread a few dozen times instead of a thousand (#14).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WriteBatch = Callable[[Sequence[Item]], Sequence[Result | BaseException]]
"""Writes a batch on a thread; returns one result (or the exception for that item) per item, in order."""


class GroupCommit(Generic[Item, Result]):
    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Result | BaseException]]) -> None:
        self._write = write
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running = False
        self.batches = 0  # writes done (a bench and the tests read it)

    async def submit(self, item: Item) -> Result:
        """The item's result once it is written; its exception if the item (or the whole write) failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._running:
            self._start()
        # a cancelled poll stops waiting; its item is still written (every write is idempotent)
        return await asyncio.shield(future)

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        self._running = True
        self.batches += 1
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(None, self._write, [item for item, _ in batch])
        done.add_done_callback(lambda f: self._finish(batch, f))

    def _finish(
        self, batch: list[tuple[Item, asyncio.Future[Result]]], done: asyncio.Future[Sequence[Result | BaseException]]
    ) -> None:
        self._running = False
        failure = None if done.cancelled() else done.exception()
        if done.cancelled() or failure is not None:
            results: Sequence[Result | BaseException] = [failure or asyncio.CancelledError()] * len(batch)
        else:
            results = done.result()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._pending:
            self._start()
