"""Group commit: concurrent submissions share writes; per-item and whole-write failures reach their callers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from patchmoi.core.feeds.groupcommit import GroupCommit


async def test_items_handed_in_during_a_write_go_together_in_order() -> None:
    writes: list[list[int]] = []
    threads: set[int] = set()

    def write(items: Sequence[int]) -> list[int | BaseException]:
        threads.add(threading.get_ident())
        time.sleep(0.05)  # a slow fsync: everything submitted meanwhile waits for the next write
        writes.append(list(items))
        return [i * 10 if i != 13 else ValueError(f"item {i}") for i in items]

    gc: GroupCommit[int, int] = GroupCommit(write)
    tasks = [asyncio.create_task(gc.submit(i)) for i in range(100)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r for r in results if not isinstance(r, BaseException)] == [i * 10 for i in range(100) if i != 13]
    assert isinstance(results[13], ValueError) and str(results[13]) == "item 13"
    assert writes[0] == [0] and sorted(i for w in writes for i in w) == list(range(100))
    assert gc.batches == len(writes) <= 3
    assert threading.get_ident() not in threads


async def test_a_failed_write_fails_its_batch_and_the_next_batch_still_runs() -> None:
    calls = 0

    def write(items: Sequence[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "No space left on device")
        return [s.upper() for s in items]

    gc: GroupCommit[str, str] = GroupCommit(write)
    with pytest.raises(OSError, match="No space left"):
        await gc.submit("a")
    assert await gc.submit("b") == "B"


async def test_a_cancelled_caller_does_not_cancel_the_write() -> None:
    written: list[str] = []
    started = threading.Event()

    def write(items: Sequence[str]) -> list[str | BaseException]:
        started.set()
        time.sleep(0.1)
        written.extend(items)
        return list(items)

    gc: GroupCommit[str, str] = GroupCommit(write)
    task = asyncio.create_task(gc.submit("kept"))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gc.submit("next") == "next"
    assert written == ["kept", "next"]
