"""One watcher per distinct target, shared by every library that points at it.

A watcher polls :func:`redis.watch.fingerprint` every ``interval`` seconds and, when something that matters changed
(a flush, a restart, a failover, a new primary, slots moved, a node lost or back), wakes the libraries of that target
through a callback. Its cost is one poll per node per interval whatever the number of libraries; it stops when the
last library of its target detaches (deleted, or moved to another target, e.g. after a password rotation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable

from redis_functions_operator.redis.connect import Connector, Target
from redis_functions_operator.redis.topology import Topology
from redis_functions_operator.redis.watch import Fingerprint, fingerprint

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0

OnChange = Callable[[Target, list[str]], None]


class TargetWatchers:
    def __init__(self, on_change: OnChange, connector_for: Callable[[Target], Connector], interval: float) -> None:
        self._on_change = on_change
        self._connector_for = connector_for
        self.interval = interval
        self._keys: dict[Target, set[Hashable]] = {}
        self._target_of: dict[Hashable, Target] = {}
        self._tasks: dict[Target, asyncio.Task[None]] = {}
        self._latest: dict[Target, tuple[Topology, float]] = {}

    def attach(self, target: Target, key: Hashable) -> None:
        """``key`` (a library) now lives on ``target``; start that target's watcher if it is the first."""
        previous = self._target_of.get(key)
        if previous == target:
            return
        if previous is not None:
            self.detach(key)
        self._target_of[key] = target
        self._keys.setdefault(target, set()).add(key)
        if target not in self._tasks:
            self._tasks[target] = asyncio.create_task(self._watch(target), name=f"watch {target.describe()}")

    def detach(self, key: Hashable) -> None:
        target = self._target_of.pop(key, None)
        if target is None:
            return
        keys = self._keys.get(target, set())
        keys.discard(key)
        if not keys:
            self._keys.pop(target, None)
            self._latest.pop(target, None)
            task = self._tasks.pop(target, None)
            if task is not None:
                task.cancel()

    def fresh_topology(self, target: Target, max_age: float) -> Topology | None:
        """The topology this target's watcher saw at most ``max_age`` seconds ago, so a thousand reconciles of one
        target do not each run CLUSTER SHARDS + ROLE. A stale view costs at most one transient retry (the engine
        still reads and verifies every node it loads), and the next poll wakes whatever it missed."""
        seen = self._latest.get(target)
        if seen is None or time.monotonic() - seen[1] > max_age:
            return None
        return seen[0]

    def key_count(self, target: Target) -> int:
        return len(self._keys.get(target, ()))

    def keys_of(self, target: Target) -> set[Hashable]:
        return set(self._keys.get(target, ()))

    def count(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, target: Target) -> None:
        previous: Fingerprint | None = None
        while True:
            try:
                connector = self._connector_for(target)
                await connector.give_back_idle()  # a burst's extra connections, once it is over
                current, topology = await fingerprint(target, connector)
                if topology is not None:
                    self._latest[target] = (topology, time.monotonic())
                changes = current.changes_since(previous)
                previous = current
                if changes:
                    log.info("target %s changed: %s", target.describe(), "; ".join(changes))
                    self._on_change(target, changes)
            except asyncio.CancelledError:
                raise
            except Exception:  # a watcher must never die: log and keep polling
                log.exception("watching %s failed; retrying", target.describe())
            await asyncio.sleep(self.interval)
