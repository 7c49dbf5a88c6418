"""The watch of every distinct target, shared by every library that points at it.

Every ``interval`` seconds the watchers run one *round*: the pulses of all targets that have them
(:mod:`redis.pulse`: one dedicated connection per standalone node, one pre-encoded request) are sent at once and
read in one wait, and each target whose pulse saw something move, whose pulse failed, or that has none (a cluster,
a sentinel target, a node down) gets a full poll (:class:`redis.watch.TargetWatch`) in a task of its own. When a
full poll finds a change that matters (a flush, a restart, a failover, a new primary, slots moved, a node lost or
back), the libraries of that target are woken through a callback.

Why rounds and not a task per target: with hundreds of targets the per-target sleeps, timeouts and wake-ups cost
more than reading the replies; a round costs one wake-up for all of them (docs/performance.md, "Many small
targets"). A slow target cannot hold a round up: pulses not answered within the interval count as a change, and
full polls never run inside the round. A target's watch stops when the last library of its target detaches
(deleted, or moved to another target, e.g. after a password rotation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from redis_functions_operator.redis.connect import CONNECTIONS_AT_REST, Connector, Target
from redis_functions_operator.redis.pulse import read_all
from redis_functions_operator.redis.topology import Topology
from redis_functions_operator.redis.watch import Poll, TargetWatch

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0

OnChange = Callable[[Target, list[str]], None]


@dataclass
class _Watched:
    watch: TargetWatch
    full_poll: asyncio.Task[None] | None = None
    keys: set[Hashable] = field(default_factory=set)

    def busy(self) -> bool:
        return self.full_poll is not None and not self.full_poll.done()


class TargetWatchers:
    def __init__(self, on_change: OnChange, connector_for: Callable[[Target], Connector], interval: float) -> None:
        self._on_change = on_change
        self._connector_for = connector_for
        self.interval = interval
        self._watched: dict[Target, _Watched] = {}
        self._target_of: dict[Hashable, Target] = {}
        self._latest: dict[Target, tuple[Topology, float]] = {}
        self._rounds: asyncio.Task[None] | None = None

    def attach(self, target: Target, key: Hashable) -> None:
        """``key`` (a library) now lives on ``target``; watch the target from the next round if it is the first."""
        previous = self._target_of.get(key)
        if previous == target:
            return
        if previous is not None:
            self.detach(key)
        self._target_of[key] = target
        watched = self._watched.get(target)
        if watched is None:
            watched = self._watched[target] = _Watched(TargetWatch(target, self._connector_for(target)))
            self._start_full_poll(target, watched)  # the first look does not wait for a round
        watched.keys.add(key)
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.create_task(self._run_rounds(), name="target watch rounds")

    def detach(self, key: Hashable) -> None:
        target = self._target_of.pop(key, None)
        if target is None:
            return
        watched = self._watched.get(target)
        if watched is None:
            return
        watched.keys.discard(key)
        if not watched.keys:
            del self._watched[target]
            self._latest.pop(target, None)
            if watched.full_poll is not None:
                watched.full_poll.cancel()
            watched.watch.close()

    def fresh_topology(self, target: Target, max_age: float) -> Topology | None:
        """The topology this target's watcher saw at most ``max_age`` seconds ago, so a thousand reconciles of one
        target do not each run CLUSTER SHARDS + ROLE. A stale view costs at most one transient retry (the engine
        still reads and verifies every node it loads), and the next poll wakes whatever it missed."""
        seen = self._latest.get(target)
        if seen is None or time.monotonic() - seen[1] > max_age:
            return None
        return seen[0]

    def key_count(self, target: Target) -> int:
        watched = self._watched.get(target)
        return len(watched.keys) if watched else 0

    def keys_of(self, target: Target) -> set[Hashable]:
        watched = self._watched.get(target)
        return set(watched.keys) if watched else set()

    def count(self) -> int:
        return len(self._watched)

    async def aclose(self) -> None:
        tasks = [w.full_poll for w in self._watched.values() if w.full_poll is not None]
        if self._rounds is not None:
            tasks.append(self._rounds)
        for watched in self._watched.values():
            watched.watch.close()
        self._watched.clear()
        self._rounds = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watched:
            started = loop.time()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch must never die: log and go on with the next round
                log.exception("a round of target watches failed; going on")
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    async def _round(self) -> None:
        """Pulse every target that can be pulsed, all at once; a full poll for every other one not already busy."""
        pulsed: list[tuple[Target, _Watched]] = []
        for target, watched in list(self._watched.items()):
            if watched.busy():
                continue
            connector = self._connector_for(target)
            if watched.watch.connector is not connector:  # the connector was closed for idleness and made again
                watched.watch.close()
                watched.watch = TargetWatch(target, connector)
            if watched.watch.wants_pulse():
                pulsed.append((target, watched))
                if connector.holds_more_than(CONNECTIONS_AT_REST - 1):
                    # a burst's extra connections go back once it is over; the pulse is a connection of its own
                    await connector.give_back_idle(CONNECTIONS_AT_REST - 1)
            else:
                self._start_full_poll(target, watched)
        if not pulsed:
            return
        # Each target's pulses, fixed before the wait: a target detached meanwhile closes its watch (and empties its
        # list), which must not shift the readings of the targets after it.
        groups = [(target, watched, watched.watch.pulses) for target, watched in pulsed]
        readings = iter(await read_all([p for _, _, pulses in groups for p in pulses], deadline=self.interval))
        now = time.monotonic()
        for target, watched, pulses in groups:
            mine = [next(readings) for _ in pulses]
            if self._watched.get(target) is not watched:
                continue  # detached while the round read
            if watched.watch.unchanged(mine):
                topology = watched.watch.topology
                if topology is not None:
                    self._latest[target] = (topology, now)
            else:
                self._start_full_poll(target, watched)

    def _start_full_poll(self, target: Target, watched: _Watched) -> None:
        if not watched.busy():
            watched.full_poll = asyncio.create_task(self._full_poll(target, watched), name=f"watch {target.describe()}")

    async def _full_poll(self, target: Target, watched: _Watched) -> None:
        try:
            connector = watched.watch.connector
            keep = CONNECTIONS_AT_REST - 1 if watched.watch.pulsing else CONNECTIONS_AT_REST
            if connector.holds_more_than(keep):
                await connector.give_back_idle(keep)
            self._report(target, await watched.watch.full_poll())
        except asyncio.CancelledError:
            raise
        except Exception:  # a watch must never die: log, and the next round polls again
            log.exception("watching %s failed; retrying", target.describe())

    def _report(self, target: Target, poll: Poll) -> None:
        if self._watched.get(target) is None:
            return
        if poll.topology is not None:
            self._latest[target] = (poll.topology, time.monotonic())
        if poll.changes:
            log.info("target %s changed: %s", target.describe(), "; ".join(poll.changes))
            self._on_change(target, poll.changes)
