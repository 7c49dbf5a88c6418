"""``k8s/workqueue.py``: a delaying work queue — one schedule per key, never two workers on one key, a key re-added
while in flight runs again after ``done``.

Time is a fake clock wherever the behaviour depends on it; waiting is always bounded by ``asyncio.wait_for`` with a
short deadline (a ``get`` that must *not* return is expected to time out, one that must return gets a generous
deadline it never needs)."""

from __future__ import annotations

import asyncio

import pytest

from redis_functions_operator.k8s.workqueue import OffTheEventLoop, WorkQueue

NOT_YET = 0.01  # how long a get() that must not return is given
PROMPT = 2.0  # how long a get() that must return may take (it returns at once; this only bounds a failure)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue[str]:
    return WorkQueue(clock=clock)


async def get_now(queue: WorkQueue[str]) -> str:
    return await asyncio.wait_for(queue.get(), PROMPT)


async def assert_nothing_due(queue: WorkQueue[str]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), NOT_YET)


async def test_add_then_get(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert len(queue) == 1
    assert await get_now(queue) == "a"
    assert len(queue) == 0
    assert queue.in_flight() == 1


async def test_empty_queue_blocks(queue: WorkQueue[str]) -> None:
    await assert_nothing_due(queue)
    assert queue.in_flight() == 0


async def test_due_keys_come_out_in_time_order(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("late", 30)
    queue.add("early", 10)
    queue.add("now")
    clock.advance(60)
    assert [await get_now(queue) for _ in range(3)] == ["now", "early", "late"]


async def test_equal_times_come_out_in_insertion_order(queue: WorkQueue[str]) -> None:
    for key in ("c", "a", "b"):
        queue.add(key)
    assert [await get_now(queue) for _ in range(3)] == ["c", "a", "b"]


async def test_delayed_key_is_not_handed_out_early(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a", 10)
    await assert_nothing_due(queue)
    clock.advance(9.9)
    await assert_nothing_due(queue)
    clock.advance(0.1)
    assert await get_now(queue) == "a"


async def test_negative_delay_means_now(queue: WorkQueue[str]) -> None:
    queue.add("a", -5)
    assert await get_now(queue) == "a"


async def test_a_key_is_scheduled_once(queue: WorkQueue[str]) -> None:
    for _ in range(5):
        queue.add("a")
    assert len(queue) == 1
    assert await get_now(queue) == "a"
    await assert_nothing_due(queue)


async def test_earlier_schedule_wins(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a", 60)
    queue.add("a", 5)  # sooner: replaces
    queue.add("a", 30)  # later: ignored
    assert len(queue) == 1
    clock.advance(5)
    assert await get_now(queue) == "a"
    clock.advance(60)
    await assert_nothing_due(queue)  # the stale 60 s entry is not handed out again


async def test_sooner_add_wakes_a_waiting_worker(queue: WorkQueue[str]) -> None:
    queue.add("a", 3600)  # real waiting would take an hour
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # let it start waiting
    queue.add("a")
    assert await asyncio.wait_for(waiter, PROMPT) == "a"


async def test_add_wakes_a_worker_waiting_on_an_empty_queue(queue: WorkQueue[str]) -> None:
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")
    assert await asyncio.wait_for(waiter, PROMPT) == "a"


async def test_real_clock_waits_for_a_short_delay() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a", 0.02)
    assert await asyncio.wait_for(queue.get(), PROMPT) == "a"


async def test_a_key_is_never_handed_to_two_workers(queue: WorkQueue[str]) -> None:
    queue.add("a")
    first = await get_now(queue)
    second = asyncio.create_task(queue.get())
    queue.add("a")  # re-added while in flight: must wait for done()
    queue.add("a")
    done, _ = await asyncio.wait({second}, timeout=NOT_YET)
    assert not done
    assert queue.in_flight() == 1
    assert len(queue) == 0  # parked, not due
    queue.done(first, None)
    assert await asyncio.wait_for(second, PROMPT) == "a"
    assert queue.in_flight() == 1


async def test_other_keys_flow_while_one_is_in_flight(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.add("a")
    queue.add("b")
    assert await get_now(queue) == "b"
    assert queue.in_flight() == 2


async def test_many_workers_never_share_a_key(queue: WorkQueue[str]) -> None:
    active: set[str] = set()
    overlaps: list[str] = []
    runs: dict[str, int] = {}
    finished = asyncio.Event()

    async def worker() -> None:
        while True:
            key = await queue.get()
            if key in active:
                overlaps.append(key)
            active.add(key)
            runs[key] = runs.get(key, 0) + 1
            queue.add(key)  # a watch event arriving mid-reconcile
            await asyncio.sleep(0)  # let the other workers try to take it
            active.discard(key)
            queue.done(key, None if runs[key] >= 3 else 0.0)
            if all(runs.get(k, 0) >= 3 for k in ("a", "b", "c")):
                finished.set()

    for key in ("a", "b", "c"):
        queue.add(key)
    workers = [asyncio.create_task(worker()) for _ in range(5)]
    try:
        await asyncio.wait_for(finished.wait(), PROMPT)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    assert overlaps == []


async def test_done_with_a_delay_reschedules(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a")
    key = await get_now(queue)
    queue.done(key, 30)
    assert queue.in_flight() == 0
    assert len(queue) == 1
    await assert_nothing_due(queue)
    clock.advance(30)
    assert await get_now(queue) == "a"


async def test_done_without_delay_forgets_the_key(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.done(await get_now(queue), None)
    assert len(queue) == 0
    assert queue.in_flight() == 0
    await assert_nothing_due(queue)


async def test_readded_in_flight_runs_again_right_after_done(queue: WorkQueue[str]) -> None:
    queue.add("a")
    key = await get_now(queue)
    queue.add("a")
    queue.done(key, 60)  # the re-add (now) is sooner than the resync: it wins
    assert await get_now(queue) == "a"


async def test_readded_in_flight_with_a_delay_keeps_that_delay(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a")
    key = await get_now(queue)
    queue.add("a", 20)
    queue.add("a", 10)  # earlier wins while parked, too
    queue.add("a", 15)
    clock.advance(4)
    queue.done(key, None)
    await assert_nothing_due(queue)
    clock.advance(6)  # 10 s after the add, not 10 s after done
    assert await get_now(queue) == "a"


async def test_done_delay_sooner_than_the_readd_wins(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a")
    key = await get_now(queue)
    queue.add("a", 100)
    queue.done(key, 1)
    clock.advance(1)
    assert await get_now(queue) == "a"
    clock.advance(200)
    await assert_nothing_due(queue)  # one schedule, not two


async def test_remove_a_scheduled_key(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a", 5)
    queue.add("b", 10)
    queue.remove("a")
    assert len(queue) == 1
    clock.advance(10)
    assert await get_now(queue) == "b"
    await assert_nothing_due(queue)


async def test_remove_unknown_key_is_harmless(queue: WorkQueue[str]) -> None:
    queue.remove("nobody")
    assert len(queue) == 0


async def test_removed_key_can_be_added_again(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.remove("a")
    queue.add("a")
    assert await get_now(queue) == "a"
    await assert_nothing_due(queue)


async def test_remove_drops_a_parked_readd(queue: WorkQueue[str]) -> None:
    queue.add("a")
    key = await get_now(queue)
    queue.add("a")
    queue.remove("a")
    queue.done(key, None)
    await assert_nothing_due(queue)


async def test_remove_while_in_flight_sticks(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a")
    key = await get_now(queue)
    queue.remove("a")  # the object was deleted meanwhile
    queue.done(key, 60)  # the worker, unaware, asks for the usual resync
    clock.advance(120)
    await assert_nothing_due(queue)


async def test_overdue_measures_the_latest_key(queue: WorkQueue[str], clock: FakeClock) -> None:
    assert queue.overdue() == 0.0
    queue.add("a")
    queue.add("b", 5)
    clock.advance(20)
    assert queue.overdue() == pytest.approx(20.0)
    assert await get_now(queue) == "a"
    assert queue.overdue() == pytest.approx(15.0)
    await get_now(queue)
    assert queue.overdue() == 0.0  # in flight is not overdue


async def test_overdue_is_zero_when_nothing_is_late(queue: WorkQueue[str]) -> None:
    queue.add("a", 60)
    assert queue.overdue() == 0.0


async def test_cancelled_get_leaves_the_queue_intact(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add("a", 10)
    await assert_nothing_due(queue)  # cancels a waiting get()
    assert len(queue) == 1
    assert queue.in_flight() == 0
    clock.advance(10)
    assert await get_now(queue) == "a"


async def test_tuple_keys(clock: FakeClock) -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue(clock=clock)
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    assert await asyncio.wait_for(queue.get(), PROMPT) == ("ns", "a")
    assert len(queue) == 0


async def test_a_call_from_another_thread_is_refused(queue: WorkQueue[str]) -> None:
    """kopf runs a plain-function handler in an executor thread; the queue is not thread-safe, so such a call must
    fail loudly instead of corrupting the heap now and then (issue 16: "deque mutated during iteration")."""
    queue.add("a")
    for call in (lambda: queue.add("b"), lambda: queue.remove("a"), lambda: queue.done("a", None)):
        with pytest.raises(OffTheEventLoop):
            await asyncio.to_thread(call)
    assert await get_now(queue) == "a"
    await assert_nothing_due(queue)


def test_a_call_without_a_running_loop_is_refused(queue: WorkQueue[str]) -> None:
    with pytest.raises(OffTheEventLoop):
        queue.add("a")


async def test_many_due_keys_reach_many_waiting_workers() -> None:
    """Workers are woken one per due key (not all at once): every key still gets out, now and after a delay, each
    to one worker, and the workers that found nothing are still waiting."""
    queue: WorkQueue[str] = WorkQueue()
    taken: list[str] = []
    all_taken = asyncio.Event()

    async def worker() -> None:
        while True:
            key = await queue.get()
            taken.append(key)
            if len(taken) == 80:
                all_taken.set()
            await asyncio.sleep(0)
            queue.done(key, None)

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    try:
        await asyncio.sleep(0)
        for i in range(40):
            queue.add(f"now-{i}")
        for i in range(40):
            queue.add(f"soon-{i}", 0.05)
        await asyncio.wait_for(all_taken.wait(), PROMPT)
        await asyncio.sleep(0.01)  # let the last workers call done()
        assert sorted(taken) == sorted([f"now-{i}" for i in range(40)] + [f"soon-{i}" for i in range(40)])
        assert queue.in_flight() == 0 and len(queue) == 0
        assert not any(w.done() for w in workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
