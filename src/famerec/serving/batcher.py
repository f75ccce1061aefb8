"""A micro-batcher: work submitted from many threads is gathered for a short while and handed
to one call together, and each submitter gets its own result.

    batcher = MicroBatcher(process, capacity=64, wait_seconds=0.002)
    future = batcher.submit(item)  # concurrent.futures.Future, from any thread
    result = await batcher.submit_async(item)  # from an event loop's thread

`process(items)` returns one result per item, in order; a result that is an exception is
raised to that item's submitter only. If `process` itself raises, each item of that call is
processed again on its own, so an item that breaks a call fails alone.

One thread of its own runs `process`, one call at a time. A call is made once `capacity` units
of work are pending (each item has a size: the rows it adds to the call) or `wait_seconds`
after the oldest pending item arrived, whichever comes first: an item that waited while the
previous call ran is not held back again. An item larger than `capacity` is processed alone.

The call's results reach an event loop in one callback for all of its items submitted from
that loop (`submit_async`), not one each: each wake-up of the loop from another thread is a
system call and a switch between threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Pending:
    item: Any
    size: int
    arrived: float = field(default_factory=time.monotonic)
    future: Future | asyncio.Future = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None  # the loop of an asyncio future

    def start(self) -> bool:
        """Whether the item still wants its result (its future is not cancelled)."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


def _settle(future: Future | asyncio.Future, outcome: Any) -> None:
    if future.done():  # an asyncio future cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settle_all(settled: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in settled:
        _settle(future, outcome)


class MicroBatcher:
    def __init__(
        self,
        process: Callable[[list], list],
        capacity: int,
        wait_seconds: float,
        name: str = "micro-batcher",
    ):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if not wait_seconds >= 0:
            raise ValueError(f"wait_seconds must be 0 or more, got {wait_seconds!r}")
        self.process = process
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.name = name
        self._pending: deque[_Pending] = deque()
        self._pending_size = 0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """The size of the items waiting for a call."""
        with self._condition:
            return self._pending_size

    def submit(self, item: Any, size: int = 1) -> Future:
        """Queue `item` for the next call; its future gets the item's result or exception.
        A cancelled future's item is dropped unless its call has begun."""
        return self._queue(_Pending(item, size)).future

    def submit_async(self, item: Any, size: int = 1) -> asyncio.Future:
        """`submit` for the running event loop's thread: an asyncio future of that loop,
        settled in the loop's thread together with the other items of its call."""
        loop = asyncio.get_running_loop()
        return self._queue(_Pending(item, size, future=loop.create_future(), loop=loop)).future

    def _queue(self, pending: _Pending) -> _Pending:
        with self._condition:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._thread is None:  # started on first use, so an unused batcher costs nothing
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            idle = not self._pending  # the thread may wait for a first item
            self._pending.append(pending)
            self._pending_size += pending.size
            if idle or self._pending_size >= self.capacity:  # else it has nothing to do yet
                self._condition.notify()
        return pending

    def close(self, timeout: float | None = None) -> None:
        """Refuse new items, process those already pending, and stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while (batch := self._gather()) is not None:
            if batch:
                self._answer(batch)

    def _gather(self) -> list[_Pending] | None:
        """The next call's items (maybe none: all cancelled), or None once closed and empty."""
        with self._condition:
            while not self._pending:
                if self._closed:
                    return None
                self._condition.wait()
            deadline = self._pending[0].arrived + self.wait_seconds
            while self._pending_size < self.capacity and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            batch, size = [], 0
            while self._pending and (size == 0 or size + self._pending[0].size <= self.capacity):
                pending = self._pending.popleft()
                self._pending_size -= pending.size
                if pending.start():  # not cancelled meanwhile
                    batch.append(pending)
                    size += pending.size
            return batch

    def _answer(self, batch: list[_Pending]) -> None:
        try:
            results = self.process([pending.item for pending in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as error:
            if len(batch) > 1:
                for pending in batch:  # alone, so that the item that breaks the call fails alone
                    self._answer([pending])
            else:
                self._settle(batch, [error])
            return
        self._settle(batch, results)

    @staticmethod
    def _settle(batch: list[_Pending], outcomes: list) -> None:
        """Each item's result (or exception); one callback per event loop for its items."""
        loops: dict[asyncio.AbstractEventLoop, list] = {}
        for pending, outcome in zip(batch, outcomes):
            if pending.loop is None:
                _settle(pending.future, outcome)
            else:
                loops.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, settled in loops.items():
            with suppress(RuntimeError):  # the loop is closed: nobody waits for these any more
                loop.call_soon_threadsafe(_settle_all, settled)
