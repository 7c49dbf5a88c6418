"""Shared listings (redis/listing.py) on a real cluster: one FUNCTION LIST WITHCODE per primary for a burst of syncs,
and a sync that trusts one still loads and verifies whatever a primary lacks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Connector, add_command_observer, remove_command_observer
from redis_functions_operator.redis.listing import Listings
from redis_functions_operator.redis.sync import Outcome
from redis_functions_operator.redis.topology import discover
from tests.redis.test_sync import codes_on, make_library, target_of
from tests.support import redis_servers as rs


@pytest.fixture
def sent() -> Iterator[list[str]]:
    names: list[str] = []

    def observe(command: str, _seconds: float, _ok: bool) -> None:
        names.append(command)

    add_command_observer(observe)
    yield names
    remove_command_observer(observe)


async def test_a_burst_shares_one_listing_per_primary_and_still_repairs(
    cluster: rs.Cluster, unique_name: str, sent: list[str]
) -> None:
    libraries = [make_library(f"{unique_name}_{i}") for i in range(20)]
    target = target_of(cluster.nodes[0])
    async with Connector(target) as connector:
        assert all(r.ok for r in await engine.sync_many(libraries, target, connector=connector))
        victim = cluster.primaries()[0]
        for library in libraries:
            victim.client().execute_command("FUNCTION", "DELETE", library.name)
        topology = await discover(target, connector)
        listings = Listings(max_age=60)
        sent.clear()

        async def one(library: engine.Library) -> engine.SyncResult:
            known = await listings.known(target, topology, connector)
            return await engine.sync(library, target, connector=connector, topology=topology, known=known)

        results = await asyncio.gather(*(one(lib) for lib in libraries))

    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    for result in results:
        repaired = {n.address for n in result.nodes if n.outcome is Outcome.REPAIRED}
        assert repaired == {victim.address}
    assert sent.count("FUNCTION LIST") == 3 + 20  # one listing per primary shared by the 20 syncs, then read-backs
    for library in libraries:
        assert set(codes_on(cluster.primaries(), library.name).values()) == {library.code}
        await engine.delete(library.name, target)


async def test_invalidate_makes_the_next_burst_read_again(
    cluster: rs.Cluster, unique_name: str, sent: list[str]
) -> None:
    target = target_of(cluster.nodes[0])
    async with Connector(target) as connector:
        topology = await discover(target, connector)
        listings = Listings(max_age=60)
        sent.clear()
        await listings.known(target, topology, connector)
        await listings.known(target, topology, connector)
        assert sent.count("FUNCTION LIST") == 3
        listings.invalidate(target)
        known = await listings.known(target, topology, connector)
        assert sent.count("FUNCTION LIST") == 6
        assert set(known) == {n.endpoint for n in topology.primaries}
        listings.drop_expired()  # not expired yet: kept
        await listings.known(target, topology, connector)
        assert sent.count("FUNCTION LIST") == 6
