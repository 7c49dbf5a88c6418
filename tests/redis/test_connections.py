"""Few connections per server (issue 16 item 2): a burst may open up to MAX_CONNECTIONS_PER_NODE connections to a
node, and they are given back afterwards, down to CONNECTIONS_AT_REST, never while a command uses one; counted on
the server with CLIENT LIST."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from redis_functions_operator.redis.connect import (
    CONNECTIONS_AT_REST,
    MAX_CONNECTIONS_PER_NODE,
    Connector,
    Endpoint,
    Mode,
    Target,
)
from tests.support import redis_servers as rs

pytestmark = [pytest.mark.redis]


def ours(server: rs.RedisServer) -> int:
    """Connections on the server other than the harness' own admin connection."""
    own = int(server.admin.execute_command("CLIENT", "ID"))
    listing = server.admin.execute_command("CLIENT", "LIST").decode()
    return sum(1 for line in listing.splitlines() if not line.startswith(f"id={own} "))


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait on a condition with a 5 s deadline without blocking the event loop (the connector's commands run on
    it)."""
    for _ in range(250):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after 5 s waiting for {what}")


async def test_a_burst_is_bounded_and_given_back(server_factory: Callable[..., rs.RedisServer]) -> None:
    server = server_factory("redis")
    endpoint = Endpoint.parse(server.address)
    async with Connector(Target((endpoint,), Mode.STANDALONE)) as connector:
        # 3 * MAX commands that each hold a connection for a moment: the pool opens at most MAX
        await asyncio.gather(
            *(connector.call(endpoint, "BLPOP", "nothing", "0.05") for _ in range(3 * MAX_CONNECTIONS_PER_NODE))
        )
        assert ours(server) == MAX_CONNECTIONS_PER_NODE
        assert await connector.give_back_idle() == MAX_CONNECTIONS_PER_NODE - CONNECTIONS_AT_REST
        await until(lambda: ours(server) == CONNECTIONS_AT_REST, "the surplus to close on the server")
        assert await connector.call(endpoint, "PING")  # what is left still works
        assert await connector.give_back_idle() == 0


async def test_connections_in_use_are_never_taken(server_factory: Callable[..., rs.RedisServer]) -> None:
    server = server_factory("redis")
    endpoint = Endpoint.parse(server.address)
    # The four BLPOPs block until this test pushes, not for a fixed time: a stalled test process must not see them
    # end (and their connections go idle) before it asks for the idle ones. 20 s only bounds a failure.
    async with Connector(Target((endpoint,), Mode.STANDALONE, timeout=30.0)) as connector:
        busy = [asyncio.create_task(connector.call(endpoint, "BLPOP", "held", "20")) for _ in range(4)]
        await until(lambda: ours(server) == 4, "four commands in flight")
        await until(lambda: int(server.info("clients")["blocked_clients"]) == 4, "four BLPOPs blocked")
        assert await connector.give_back_idle(keep=0) == 0  # all four are in use
        await asyncio.to_thread(server.admin.rpush, "held", *"abcd")
        assert sorted(item for _, item in await asyncio.gather(*busy)) == [b"a", b"b", b"c", b"d"]
        assert await connector.give_back_idle(keep=0) == 4


async def test_closing_a_connector_closes_its_connections_on_the_server(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    """The operator closes the connector of a target nobody uses any more (idle, or a rotated password): its
    connections must go then, not whenever the garbage collector finds the pool."""
    server = server_factory("redis")
    endpoint = Endpoint.parse(server.address)
    connector = Connector(Target((endpoint,), Mode.STANDALONE))
    await asyncio.gather(*(connector.call(endpoint, "BLPOP", "nothing", "0.05") for _ in range(4)))
    assert ours(server) == 4
    await connector.aclose()
    await until(lambda: ours(server) == 0, "the connector's connections to close on the server")
