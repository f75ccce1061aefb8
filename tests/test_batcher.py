"""The micro-batcher on its own: what it gathers into one call, and whose result goes where.

Calls are made deterministic with a gate: the first call blocks until the test has queued
what the next call should gather.
"""

import asyncio
import threading
import time

import pytest

from famerec.batcher import MicroBatcher


class Recorder:
    """A `process` that records its calls, answers item x with x * 10 (an exception for a
    negative item) and raises for a whole call that holds "boom"; the first call waits for
    `release` when `gated`."""

    def __init__(self, gated: bool = False):
        self.calls: list[list] = []
        self.started, self.release = threading.Event(), threading.Event()
        if not gated:
            self.release.set()

    def __call__(self, items: list) -> list:
        self.calls.append(list(items))
        self.started.set()
        assert self.release.wait(10)
        if "boom" in items:
            raise RuntimeError("the whole call failed")
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]


def wait_for_pending(batcher: MicroBatcher, size: int) -> None:
    """Until items of `size` in all wait for a call (10 s at most)."""
    deadline = time.monotonic() + 10
    while batcher.pending < size:
        assert time.monotonic() < deadline, f"{batcher.pending} of {size} pending"
        time.sleep(0.001)


@pytest.fixture
def gated():
    """A batcher (capacity 4, no wait) whose first call, for item 0, blocks until released."""
    process = Recorder(gated=True)
    batcher = MicroBatcher(process, capacity=4, wait_seconds=0)
    first = batcher.submit(0)
    assert process.started.wait(10)
    yield batcher, process, first
    process.release.set()
    batcher.close(10)


def test_items_that_wait_are_processed_together_each_with_its_own_result(gated):
    batcher, process, first = gated
    futures = [batcher.submit(item) for item in (1, 2, 3)]
    wait_for_pending(batcher, 3)
    process.release.set()
    assert first.result(10) == 0
    assert [future.result(10) for future in futures] == [10, 20, 30]
    assert process.calls == [[0], [1, 2, 3]]


def test_capacity_bounds_a_call_and_a_larger_item_goes_alone(gated):
    batcher, process, _ = gated
    futures = [
        batcher.submit(item, size) for item, size in [(1, 2), (2, 2), (3, 1), (4, 9), (5, 1)]
    ]
    wait_for_pending(batcher, 15)
    process.release.set()
    assert [future.result(10) for future in futures] == [10, 20, 30, 40, 50]
    assert process.calls == [[0], [1, 2], [3], [4], [5]]  # sizes 2+2, then 1 (+9 is too many)


def test_an_error_result_fails_only_its_own_item(gated):
    batcher, process, _ = gated
    futures = [batcher.submit(item) for item in (1, -2, 3)]
    wait_for_pending(batcher, 3)
    process.release.set()
    assert futures[0].result(10) == 10 and futures[2].result(10) == 30
    with pytest.raises(ValueError, match="bad -2"):
        futures[1].result(10)
    assert process.calls == [[0], [1, -2, 3]]


def test_a_call_that_raises_is_retried_item_by_item(gated):
    batcher, process, _ = gated
    futures = [batcher.submit(item) for item in (1, "boom", 3)]
    wait_for_pending(batcher, 3)
    process.release.set()
    assert futures[0].result(10) == 10 and futures[2].result(10) == 30
    with pytest.raises(RuntimeError, match="the whole call failed"):
        futures[1].result(10)
    assert process.calls == [[0], [1, "boom", 3], [1], ["boom"], [3]]


def test_cancelled_items_are_not_processed(gated):
    batcher, process, _ = gated
    futures = [batcher.submit(item) for item in (1, 2, 3)]
    assert futures[1].cancel()
    process.release.set()
    assert futures[0].result(10) == 10 and futures[2].result(10) == 30
    assert process.calls == [[0], [1, 3]]


def test_the_wait_holds_a_lone_item_and_a_full_batch_goes_at_once():
    process = Recorder()
    waiting = MicroBatcher(process, capacity=2, wait_seconds=0.2)
    started = time.monotonic()
    assert waiting.submit(1).result(10) == 10
    assert time.monotonic() - started >= 0.2  # alone: it waited the whole wait for company
    full = MicroBatcher(process, capacity=2, wait_seconds=60)
    started = time.monotonic()
    pair = [full.submit(2), full.submit(3)]
    assert [future.result(10) for future in pair] == [20, 30]
    assert time.monotonic() - started < 30  # capacity reached: no need to wait
    assert process.calls == [[1], [2, 3]]
    waiting.close(10)
    full.close(10)


def test_close_answers_what_is_pending_then_refuses_new_items():
    process = Recorder()
    batcher = MicroBatcher(process, capacity=8, wait_seconds=60)
    futures = [batcher.submit(item) for item in (1, 2)]
    batcher.close(10)  # does not wait out the 60 s
    assert [future.result(0) for future in futures] == [10, 20]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(3)


@pytest.mark.parametrize(
    "capacity, wait, message",
    [(0, 0, "capacity must be a positive integer"), (1, -1, "wait_seconds must be 0 or more")],
)
def test_bad_settings(capacity, wait, message):
    with pytest.raises(ValueError, match=message):
        MicroBatcher(lambda items: items, capacity, wait)


def test_the_wait_gathers_items_that_come_during_it():
    process = Recorder()
    batcher = MicroBatcher(process, capacity=3, wait_seconds=0.3)
    futures = [batcher.submit(1), batcher.submit(2)]  # the second does not wake the thread
    assert [future.result(10) for future in futures] == [10, 20]
    assert process.calls == [[1, 2]]
    batcher.close(10)


def test_async_items_of_one_call_reach_their_loop_in_one_callback(gated):
    batcher, process, first = gated
    loop = asyncio.new_event_loop()
    wake_ups = []
    call_soon_threadsafe = loop.call_soon_threadsafe
    loop.call_soon_threadsafe = lambda *args: wake_ups.append(args) or call_soon_threadsafe(*args)

    async def clients() -> list:
        futures = [batcher.submit_async(item) for item in (1, -2, 3, 4)]
        assert futures[3].cancel()  # its client went away: not processed
        await asyncio.to_thread(wait_for_pending, batcher, 4)
        process.release.set()
        return await asyncio.gather(*futures[:3], return_exceptions=True)

    try:
        answers = loop.run_until_complete(clients())
    finally:
        loop.close()
    assert answers[0] == 10 and answers[2] == 30
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "bad -2"
    assert first.result(10) == 0
    assert process.calls == [[0], [1, -2, 3]]
    settling = [args for args in wake_ups if args[0].__name__ == "_settle_all"]
    assert len(settling) == 1  # the three results in one callback


def test_async_items_of_a_call_that_raises_get_their_own_outcome(gated):
    batcher, process, _ = gated

    async def clients() -> list:
        futures = [batcher.submit_async(item) for item in (1, "boom")]
        await asyncio.to_thread(wait_for_pending, batcher, 2)
        process.release.set()
        return await asyncio.gather(*futures, return_exceptions=True)

    answers = asyncio.run(clients())
    assert answers[0] == 10
    assert isinstance(answers[1], RuntimeError) and "whole call failed" in str(answers[1])
