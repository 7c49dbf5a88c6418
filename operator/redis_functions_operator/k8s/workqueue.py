"""A delaying work queue keyed by object, in the spirit of client-go's: each key is scheduled at most once, is never
processed by two workers at the same time, and a key re-added while in flight runs again right after.

Why not kopf timers or daemons: both are one asyncio task per object and force a finalizer on every object (kopf
adds its finalizer whenever a timer or daemon matches), while the API promises the finalizer only for
``deletionPolicy: Delete``. A queue also lets the delay vary per attempt (resync, backoff, slow retry of a
permanent error) and lets a change wake an object at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._in_flight: set[K] = set()
        self._again: dict[K, float] = {}  # re-added while in flight: run again at this time
        self._removed: set[K] = set()  # removed while in flight: done() must not schedule it again
        self._waiters: deque[asyncio.Future[None]] = deque()  # idle workers, first come first woken
        self._timer: asyncio.TimerHandle | None = None  # wakes one idle worker when the earliest key falls due
        self._timer_for: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first call; every later one must match

    def add(self, key: K, delay: float = 0.0) -> None:
        """Schedule ``key`` in ``delay`` seconds, unless it is already due sooner."""
        self._require_own_loop()
        when = self._clock() + max(0.0, delay)
        self._removed.discard(key)
        if key in self._in_flight:
            self._again[key] = min(when, self._again.get(key, when))
            return
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if when <= self._clock():
            self._wake_one()
        else:
            self._arm_timer()

    def remove(self, key: K) -> None:
        self._require_own_loop()
        self._due.pop(key, None)
        self._again.pop(key, None)
        if key in self._in_flight:
            self._removed.add(key)

    def done(self, key: K, next_delay: float | None) -> None:
        """Finish processing ``key``; schedule it again after ``next_delay`` (None: only when something changes),
        or sooner if it was re-added meanwhile."""
        self._require_own_loop()
        self._in_flight.discard(key)
        again = self._again.pop(key, None)
        if key in self._removed:
            self._removed.discard(key)
            if again is None:
                return
        if next_delay is not None:
            self.add(key, next_delay)
        if again is not None:
            self.add(key, max(0.0, again - self._clock()))

    def _require_own_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise OffTheEventLoop("WorkQueue is used from a thread without a running event loop") from None
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise OffTheEventLoop("WorkQueue is used from an event loop other than its own")

    def __len__(self) -> int:
        return len(self._due)

    def in_flight(self) -> int:
        return len(self._in_flight)

    def overdue(self) -> float:
        """How late the most overdue key is, in seconds (0 when nothing is late): a stuck queue shows here."""
        now = self._clock()
        return max(0.0, max((now - when for when in self._due.values()), default=0.0))

    async def get(self) -> K:
        """Wait for the next due key and mark it in flight.

        Idle workers wait on futures of their own and one timer serves them all: an ``add`` wakes one worker, not
        every one (with 16 workers and a thousand objects resyncing, waking them all to find one key was a third of
        the operator's idle CPU)."""
        self._require_own_loop()
        while True:
            key = self._take_due()
            if key is not None:
                if self._earliest() is not None and self._heap[0][0] <= self._clock():
                    self._wake_one()  # more keys are due: the next idle worker takes the next one
                return key
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._arm_timer()
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken and cancelled at once: the wake must not be lost
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _take_due(self) -> K | None:
        if self._earliest() is None or self._heap[0][0] > self._clock():
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._due[key]
        self._in_flight.add(key)
        return key

    def _earliest(self) -> float | None:
        """When the earliest scheduled key falls due (stale heap entries, rescheduled or removed, are dropped)."""
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) == when:
                return when
            heapq.heappop(self._heap)
        return None

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _arm_timer(self) -> None:
        """One timer, for the earliest key, and only while a worker waits for it."""
        earliest = self._earliest() if self._waiters else None
        if earliest == self._timer_for:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_for = None, earliest
        if earliest is not None and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, earliest - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_for = None
        self._wake_one()


class OffTheEventLoop(RuntimeError):
    """The queue was touched from a thread without a running event loop (a plain-function kopf handler runs in an
    executor thread). Its heap and ``asyncio.Event`` are not thread-safe, so such a call is refused instead of
    corrupting the queue now and then."""
