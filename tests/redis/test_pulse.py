"""The watch's pulse (issue 16 item 1): between two full polls a standalone target is read over one dedicated
connection per node, and that must never change what the watcher concludes.

Proved differentially on real servers: a pulsed watch and the plain full fingerprint poll the same server after
every step of generated sequences of what can happen to a Redis (loads, replacements, deletes, flushes, restores,
a flush and a reload between two polls, the watch connection killed, counters reset, a restart, a demotion to
replica and back); their reasons must be equal at every step, and the quiet steps must be pulses (the cheap path is
really taken). Then what a user of the operator sees: connections at rest per server, AUTH, ACL and TLS.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redis_functions_operator.k8s.watchers import TargetWatchers
from redis_functions_operator.redis.connect import Connector, Credentials, Endpoint, Mode, Target, TlsSettings
from redis_functions_operator.redis.pulse import CLIENT_NAME
from redis_functions_operator.redis.watch import Fingerprint, TargetWatch, fingerprint
from tests.redis.test_connections import ours, until
from tests.support import redis_servers as rs

pytestmark = [pytest.mark.redis]

LIBRARY = "#!lua name={name}\nredis.register_function('{name}_f{n}', function() return {n} end)\n"


class Truth:
    """The reasons a watcher without pulses would give: a full fingerprint every time."""

    def __init__(self, target: Target, connector: Connector) -> None:
        self.target, self.connector = target, connector
        self.previous: Fingerprint | None = None

    async def poll(self) -> list[str]:
        current, _ = await fingerprint(self.target, self.connector)
        changes, self.previous = current.changes_since(self.previous), current
        return changes


async def pulsing(watch: TargetWatch) -> None:
    """Poll until the watch reads its target by pulse: the first full poll finds the topology, the second opens the
    pulses and takes their baseline, the third is a pulse."""
    for _ in range(3):
        await watch.poll()
    assert (await watch.poll()).full is False


def watch_clients(server: rs.RedisServer) -> list[str]:
    listing = server.admin.execute_command("CLIENT", "LIST").decode()
    return [line for line in listing.splitlines() if f"name={CLIENT_NAME} " in line]


def kill_watch_connection(server: rs.RedisServer) -> None:
    for line in watch_clients(server):
        client_id = line.split()[0].split("=", 1)[1]
        server.admin.execute_command("CLIENT", "KILL", "ID", client_id)


def steps(server: rs.RedisServer, other: rs.RedisServer) -> dict[str, Callable[[], None]]:
    """What can happen to a standalone Redis between two polls (each may fail harmlessly: a delete of a library
    that is not there)."""
    admin = server.admin

    def quietly(*args: object) -> object:
        try:
            return admin.execute_command(*args)
        except redis.ResponseError:  # READONLY on a replica, no such library...
            return None

    def flush_and_reload() -> None:
        quietly("FUNCTION", "FLUSH")
        quietly("FUNCTION", "LOAD", LIBRARY.format(name="a", n=1))

    def demote_and_promote() -> None:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(other.port))
        rs.wait_until(lambda: server.role() == "slave", timeout=10, message="the demotion")

    def promote() -> None:
        admin.execute_command("REPLICAOF", "NO", "ONE")
        rs.wait_until(lambda: server.role() == "master", timeout=10, message="the promotion")

    def dump_and_restore() -> None:
        quietly("FUNCTION", "RESTORE", admin.execute_command("FUNCTION", "DUMP"), "REPLACE")

    return {
        "nothing": lambda: None,
        "write keys": lambda: quietly("SET", "k", random.random()),
        "load a": lambda: quietly("FUNCTION", "LOAD", LIBRARY.format(name="a", n=1)),
        "load b": lambda: quietly("FUNCTION", "LOAD", LIBRARY.format(name="b", n=2)),
        "replace a": lambda: quietly("FUNCTION", "LOAD", "REPLACE", LIBRARY.format(name="a", n=3)),
        "delete a": lambda: quietly("FUNCTION", "DELETE", "a"),
        "flush": lambda: quietly("FUNCTION", "FLUSH"),
        "flush and reload": flush_and_reload,
        "restore": dump_and_restore,
        "fcall": lambda: quietly("FCALL", "a_f1", "0"),
        "kill the watch connection": lambda: kill_watch_connection(server),
        "reset counters": lambda: admin.execute_command("CONFIG", "RESETSTAT"),
        "demote": demote_and_promote,
        "promote": promote,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_pulsed_watch_concludes_what_full_polls_conclude(
    flavor: str, server_factory: Callable[..., rs.RedisServer], seed: int
) -> None:
    server, other = server_factory(flavor), server_factory(flavor)
    target = Target((Endpoint.parse(server.address),), Mode.AUTO)
    rng = random.Random(seed)
    actions = steps(server, other)
    names = sorted(actions)
    async with Connector(target) as pulsed_connector, Connector(target) as truth_connector:
        watch = TargetWatch(target, pulsed_connector, full_every=3600, pulse_retry=0)
        truth = Truth(target, truth_connector)
        try:
            for _ in range(3):
                assert (await watch.poll()).changes == await truth.poll() == []
            pulses = 0
            history: list[str] = []
            for _ in range(40):
                done = [rng.choice(names) for _ in range(rng.choice((1, 1, 2)))]
                for name in done:
                    await asyncio.to_thread(actions[name])
                history.append("+".join(done))
                seen, expected = await watch.poll(), await truth.poll()
                assert seen.changes == expected, f"after {history}"
                quiet = await watch.poll()
                assert quiet.changes == await truth.poll() == [], f"after {history}"
                pulses += not quiet.full
            assert pulses >= 30, f"only {pulses} of 40 quiet polls were pulses"
        finally:
            watch.close()
            await asyncio.to_thread(server.admin.execute_command, "REPLICAOF", "NO", "ONE")


async def test_a_restart_is_seen_through_the_dropped_watch_connection(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    server = server_factory("redis")
    target = Target((Endpoint.parse(server.address),), Mode.STANDALONE)
    async with Connector(target) as connector:
        watch = TargetWatch(target, connector, full_every=3600)
        try:
            await pulsing(watch)
            await asyncio.to_thread(server.restart)
            poll = await watch.poll()
            assert poll.full and poll.changes == [f"{server.address} restarted"]
        finally:
            watch.close()


async def test_connections_at_rest_are_two_one_of_them_the_named_watch(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    server = server_factory("redis")
    target = Target((Endpoint.parse(server.address),), Mode.AUTO)
    polls = 0

    def count_changes(_: Target, __: list[str]) -> None:
        nonlocal polls
        polls += 1

    connector = Connector(target)
    watchers = TargetWatchers(count_changes, lambda _: connector, interval=0.05)
    try:
        # a burst first: the pool grows to 8, then the watcher gives all but one back (the pulse is the other)
        endpoint = Endpoint.parse(server.address)
        await asyncio.gather(*(connector.call(endpoint, "BLPOP", "nothing", "0.05") for _ in range(16)))
        watchers.attach(target, "library")
        await until(lambda: ours(server) == 2 and len(watch_clients(server)) == 1, "2 connections, one the watch")
    finally:
        await watchers.aclose()
        await connector.aclose()
    await until(lambda: ours(server) == 0, "every connection closed")


async def test_the_watch_authenticates_and_does_without_a_name(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    server = server_factory("redis", acl_users=["user watcher on >s3cret ~* +@all -client"], password="other-secret")
    target = Target((Endpoint.parse(server.address),), Mode.AUTO, credentials=Credentials("watcher", "s3cret"))
    async with Connector(target) as connector:
        watch = TargetWatch(target, connector, full_every=3600)
        try:
            await pulsing(watch)  # AUTH worked; CLIENT SETNAME was refused and did not matter
            await asyncio.to_thread(server.admin.execute_command, "FUNCTION", "FLUSH")
            assert (await watch.poll()).changes == [f"{server.address} ran FUNCTION FLUSH x1"]
        finally:
            watch.close()


async def test_a_wrong_password_leaves_full_polls_that_report_it(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    server = server_factory("redis", password="right")
    target = Target((Endpoint.parse(server.address),), Mode.AUTO, credentials=Credentials(None, "wrong"))
    async with Connector(target) as connector:
        watch = TargetWatch(target, connector, full_every=3600)
        try:
            polls = [await watch.poll() for _ in range(3)]
            assert all(p.full and p.topology is None for p in polls)
            assert not watch.pulsing
            assert "wrong" not in repr(polls)
        finally:
            watch.close()


async def test_the_watch_speaks_tls_as_the_target_says(
    server_factory: Callable[..., rs.RedisServer], tls_files: rs.TlsFiles
) -> None:
    server = server_factory("redis", tls=tls_files)
    ca_pem = await asyncio.to_thread(Path(tls_files.ca_cert).read_text)
    endpoint = Endpoint.parse(server.address)
    good = Target((endpoint,), Mode.AUTO, tls=TlsSettings(ca_data=ca_pem))
    wrong_ca = Target((endpoint,), Mode.AUTO, tls=TlsSettings(ca_file=str(tls_files.other_ca_cert)))
    async with Connector(good) as connector:
        watch = TargetWatch(good, connector, full_every=3600)
        try:
            await pulsing(watch)
        finally:
            watch.close()
    async with Connector(wrong_ca) as connector:
        watch = TargetWatch(wrong_ca, connector, full_every=3600)
        try:
            assert all(poll.topology is None for poll in [await watch.poll() for _ in range(3)])
            assert not watch.pulsing
        finally:
            watch.close()
