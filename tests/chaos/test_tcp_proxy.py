"""The delaying TCP proxy the slow-node and slow-API-server scenarios rely on: latency added both ways, changed at run
time through its control port, connections dropped on demand, and the process gone when stopped."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import redis_servers as rs
from tests.support.tcp_proxy import DelayProxy, live_proxies

NO_RETRY = Retry(NoBackoff(), 0)


def timed_ping(client: redis.Redis) -> float:
    started = time.monotonic()
    assert client.ping()
    return time.monotonic() - started


def test_delay_is_added_both_ways_and_changes_at_run_time(server_factory: Callable[..., rs.RedisServer]) -> None:
    server = server_factory("redis")
    with DelayProxy(server.port, 200) as proxy:
        client = redis.Redis(port=proxy.port, socket_timeout=5, retry=NO_RETRY)
        client.ping()  # connect and handshake through the proxy first
        assert 0.38 <= timed_ping(client) < 1.5  # one round trip: 200 ms each way
        proxy.set_delay(0)
        assert timed_ping(client) < 0.3  # under the 0.4 s the old delay takes, with room for a loaded machine
        proxy.set_delay(1500)
        slow = redis.Redis(port=proxy.port, socket_timeout=1, retry=NO_RETRY)
        with pytest.raises(redis.exceptions.TimeoutError):
            slow.ping()
        stats = proxy.stats()
        assert stats["delay"] == 1500 and stats["accepted"] >= 2
        proxy.set_delay(0)
        # A raw socket sees the drop for certain: redis-py may notice a closed connection before it sends and
        # quietly open a new one, so whether its next command fails depends on timing (a flaky verdict once).
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with raw:
            raw.sendall(b"PING\r\n")
            assert raw.recv(64) == b"+PONG\r\n"
            assert proxy.drop_connections() >= 2  # the raw socket, and the clients' connections
            assert raw.recv(64) == b""  # end of stream: the proxy closed it (recv waits up to the 5 s timeout)
        assert timed_ping(redis.Redis(port=proxy.port, socket_timeout=5, retry=NO_RETRY)) < 1  # new ones still work
        pid = proxy.pid
    assert not proxy.running() and proxy not in live_proxies()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
