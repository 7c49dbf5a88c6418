"""One ``FUNCTION LIST WITHCODE`` per primary, shared by a burst of syncs of one target.

A sync reads each primary's copy of its own library (``FUNCTION LIST LIBRARYNAME <name> WITHCODE``): cheap for one
library, but when a new primary joins a target with a thousand libraries, every one of them wakes and reads every
primary: four thousand reads to learn what four reads can tell. A :class:`Listings` keeps, per target, the last full
listing of each primary for a short while and hands it to the syncs of the burst as ``known`` snapshots.

Why a stale listing cannot leave a library missing: a listing only stands in for the *first* read of a sync; every
node the sync loads is still read back in the load's own round trip. A listing is dropped when the target's watcher
sees the target change (flush, restart, new primary, another library loaded), and the same change wakes every
library of the target again, so a reconcile that trusted a listing taken just before the change is followed by one
that reads after it. The operator's own loads make a listing stale only for the library just loaded, which at worst
loads it once more.

Concurrent callers share one read per primary (single flight). A primary whose listing fails is left out: the sync
then reads that node itself and reports its own error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from redis_functions_operator.redis.connect import Connector, Endpoint, Target
from redis_functions_operator.redis.sync import Known, Snapshot, read_all_libraries
from redis_functions_operator.redis.topology import Node, Topology


@dataclass
class _Listing:
    taken: float
    libraries: dict[str, Snapshot]


@dataclass
class _TargetListings:
    by_node: dict[Endpoint, _Listing] = field(default_factory=dict)
    in_flight: dict[Endpoint, asyncio.Task[dict[str, Snapshot] | None]] = field(default_factory=dict)
    generation: int = 0  # bumped by invalidate(): a read started before it is not cached after it


class Listings:
    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._targets: dict[Target, _TargetListings] = {}

    async def known(self, target: Target, topology: Topology, connector: Connector) -> Known:
        """Every primary's listing, fresh enough to stand in for a sync's first read."""
        state = self._targets.setdefault(target, _TargetListings())
        listings = await asyncio.gather(*(self._listing(state, node, connector) for node in topology.primaries))
        return {
            node.endpoint: found for node, found in zip(topology.primaries, listings, strict=True) if found is not None
        }

    def invalidate(self, target: Target) -> None:
        """The target changed under us: no listing taken before now is used again."""
        state = self._targets.get(target)
        if state is not None:
            state.by_node.clear()
            state.in_flight.clear()
            state.generation += 1

    def drop_expired(self) -> None:
        """Let go of listings nobody can use any more (they hold every library's code of a primary)."""
        limit = time.monotonic() - self.max_age
        for target, state in list(self._targets.items()):
            for endpoint in [e for e, listing in state.by_node.items() if listing.taken < limit]:
                del state.by_node[endpoint]
            if not state.by_node and not state.in_flight:
                del self._targets[target]

    async def _listing(self, state: _TargetListings, node: Node, connector: Connector) -> dict[str, Snapshot] | None:
        cached = state.by_node.get(node.endpoint)
        if cached is not None and time.monotonic() - cached.taken <= self.max_age:
            return cached.libraries
        task = state.in_flight.get(node.endpoint)
        if task is None:
            task = asyncio.ensure_future(self._read(state, node, connector))
            state.in_flight[node.endpoint] = task
        return await asyncio.shield(task)

    async def _read(self, state: _TargetListings, node: Node, connector: Connector) -> dict[str, Snapshot] | None:
        generation, started = state.generation, time.monotonic()
        try:
            libraries, error = await read_all_libraries(connector, node)
        finally:
            if state.generation == generation:
                state.in_flight.pop(node.endpoint, None)
        if error is not None:
            return None
        if state.generation == generation:
            state.by_node[node.endpoint] = _Listing(started, libraries)
        return libraries


__all__ = ["Known", "Listings"]
