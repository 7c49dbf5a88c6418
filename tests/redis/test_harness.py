"""The real-server harness itself works, on both flavors (run with -s to see timings)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.exceptions  # binds `redis` too; a bare `import redis` is sorted first-party (tests/redis/)
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import redis_servers as rs


def library(name: str) -> str:
    return f"#!lua name={name}\nredis.register_function('{name}_f', function() return '{name}' end)\n"


def no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


class Timer:
    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> Timer:
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.start
        print(f"\n[timing] {self.label}: {self.seconds:.2f}s")


# ------------------------------------------------------------------------------------------------------------------
# helpers


def test_wait_until_returns_the_value_and_times_out_with_the_message() -> None:
    calls = iter([0, None, "ready"])
    assert rs.wait_until(lambda: next(calls), timeout=2, interval=0.001) == "ready"

    def refused() -> bool:
        raise redis.ConnectionError("nope")

    with pytest.raises(rs.WaitTimeout, match=r"the moon; last error: ConnectionError: nope"):
        rs.wait_until(refused, timeout=0.1, interval=0.01, message="the moon")


def test_free_port_with_bus_leaves_both_ports_free() -> None:
    ports = {rs.free_port(with_bus=True) for _ in range(20)}
    assert len(ports) == 20
    for port in ports:
        assert port + 10000 < 32768
        assert rs._bindable(port)
        assert rs._bindable(port + 10000)


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_a_failed_start_raises_with_the_log_tail(flavor: str, tmp_path: Path) -> None:
    with pytest.raises(rs.ServerStartError, match=r"(?s)exited with code.*no-such-directive"):
        rs.start_server(flavor, extra_config=["no-such-directive yes"], base_dir=tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# standalone


def test_restart_comes_back_empty(server_factory: Callable[..., rs.RedisServer], flavor: str, unique_name: str) -> None:
    server = server_factory(flavor)
    client = server.client()
    client.function_load(library(unique_name))
    client.set("k", "v")
    assert server.function_libraries() == {unique_name: library(unique_name).encode()}
    port = server.port
    with Timer(f"{flavor} restart"):
        server.restart()
    assert server.port == port
    assert server.function_libraries() == {}
    assert server.client().dbsize() == 0
    server.kill()
    assert not server.is_running()
    server.stop()  # idempotent


def test_replicated_pair_syncs(replicated: rs.Replicated, unique_name: str) -> None:
    primary, replica = replicated.primary, replicated.replica
    assert (primary.role(), replica.role()) == ("master", "slave")
    primary.client().function_load(library(unique_name))
    replicated.wait_in_sync()
    assert replica.function_libraries()[unique_name] == library(unique_name).encode()
    with pytest.raises(redis.ReadOnlyError):
        replica.client().function_load(library(unique_name + "x"))
    primary.client().function_delete(unique_name)


def test_password_acl_and_authenticated_replication(
    replicated_factory: Callable[..., rs.Replicated], flavor: str, unique_name: str
) -> None:
    pair = replicated_factory(flavor, password="s3cret", acl_users=["user reader on >readpw ~* +@all -@scripting"])
    assert pair.primary.client().ping()
    with pytest.raises(redis.AuthenticationError):
        pair.primary.client(password=None, retry=no_retry()).ping()
    reader = pair.primary.client(username="reader", password="readpw")
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.function_load(library(unique_name))
    pair.primary.client().function_load(library(unique_name))
    pair.wait_in_sync()  # the replica authenticated with masterauth
    assert unique_name in pair.replica.function_libraries()


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_tls_answers_with_the_right_ca_and_refuses_the_other(
    server_factory: Callable[..., rs.RedisServer], tls_files: rs.TlsFiles, flavor: str
) -> None:
    if flavor not in rs.TLS_MATRIX:
        with pytest.raises(rs.ServerStartError, match="Failed finding TLS support"):
            server_factory(flavor, tls=tls_files)
        pytest.skip(f"the {flavor} binary has no TLS built in")
    server = server_factory(flavor, tls=tls_files)
    assert server.url.startswith("rediss://")
    assert server.client().ping()
    assert server.client(ssl_certfile=None, ssl_keyfile=None).ping()  # tls-auth-clients optional
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        server.client(ssl_ca_certs=str(tls_files.other_ca_cert), retry=no_retry()).ping()
    with pytest.raises(redis.ConnectionError):
        server.client(ssl=False, retry=no_retry(), socket_timeout=2).ping()


# ------------------------------------------------------------------------------------------------------------------
# cluster


def test_cluster_shape_and_a_function_reaches_only_its_replica(cluster: rs.Cluster, unique_name: str) -> None:
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert len(cluster.replicas()) == 3
    assert sum(hi - lo + 1 for p in primaries for lo, hi in cluster.slots_of(p)) == 16384
    for primary in primaries:
        assert cluster.slots_of(primary)
        assert cluster.replica_of(primary).info("replication")["master_link_status"] == "up"
    first, others = primaries[0], primaries[1:]
    first.client().function_load(library(unique_name))
    replica = cluster.replica_of(first)
    rs.wait_until(lambda: unique_name in replica.function_libraries(), 5, message="function on the replica")
    assert replica.function_libraries()[unique_name] == library(unique_name).encode()
    assert all(unique_name not in p.function_libraries() for p in others)
    first.client().function_delete(unique_name)


def test_add_primary_then_move_slots(cluster_factory: Callable[..., rs.Cluster], flavor: str) -> None:
    with Timer(f"{flavor} cluster start (3 primaries, no replicas)"):
        cl = cluster_factory(flavor, replicas_per_primary=0)
    with Timer(f"{flavor} add_primary"):
        new = cl.add_primary()
    assert new.role() == "master"
    assert cl.slots_of(new) == []
    assert all(new.node_id in {v.node_id for v in n.cluster_nodes() if v.is_master} for n in cl.nodes)
    assert new in cl.primaries()

    key = "{harness}key"
    slot = rs.key_slot(key.encode())
    cl.cluster_client().set(key, "v")
    old_owner = cl.node_for_key(key)
    moved = range(max(slot - 2, 0), slot + 3)
    with Timer(f"{flavor} move_slots ({len(moved)} slots, 1 key)"):
        cl.move_slots(moved, new)
    assert cl.slot_owner(slot) is new
    assert all(cl.slot_owner(s, via=n) is new for s in moved for n in cl.nodes)
    assert new.client().get(key) == b"v"
    with pytest.raises(redis.exceptions.MovedError, match=f"{slot} {new.address}"):
        old_owner.client().get(key)
    assert cl.cluster_client().get(key) == b"v"


def test_failover_and_kill_primary(cluster_factory: Callable[..., rs.Cluster], flavor: str, unique_name: str) -> None:
    with Timer(f"{flavor} cluster start (3+3)"):
        cl = cluster_factory(flavor)
    primary = cl.primaries()[0]
    replica = cl.replica_of(primary)
    primary.client().function_load(library(unique_name))
    rs.wait_until(lambda: unique_name in replica.function_libraries(), 5, message="function on the replica")

    with Timer(f"{flavor} CLUSTER FAILOVER"):
        cl.failover(replica)
    assert replica.role() == "master"
    assert primary.role() == "slave"
    assert cl.replica_of(replica) is primary

    with Timer(f"{flavor} kill -9 primary until replica promoted and cluster consistent"):
        promoted = cl.kill_primary_and_wait_promotion(replica)
    assert promoted is primary
    assert primary.role() == "master"
    assert not replica.is_running()
    assert unique_name in primary.function_libraries()  # a promoted replica keeps its functions
    assert len(cl.primaries()) == 3

    with Timer(f"{flavor} restart killed node until it is a synced replica"):
        replica.restart()
        cl.wait_healthy()
    assert replica.role() == "slave"
    assert replica.master_port() == primary.port
    assert unique_name in replica.function_libraries()  # full sync from its new primary


# ------------------------------------------------------------------------------------------------------------------
# sentinel


def test_sentinel_reports_the_master_and_follows_failover(
    sentinel_factory: Callable[..., rs.Sentinel], unique_name: str
) -> None:
    with Timer("sentinel setup (primary, replica, 1 sentinel)"):
        setup = sentinel_factory("redis")
    old_primary, old_replica = setup.primary, setup.replica
    assert setup.master_address() == (old_primary.host, old_primary.port)
    old_primary.client().function_load(library(unique_name))
    setup.wait_in_sync()

    with Timer("SENTINEL FAILOVER until reported"):
        setup.failover()
    assert setup.primary is old_replica
    assert setup.master_address() == (old_replica.host, old_replica.port)
    assert old_replica.role() == "master"
    assert unique_name in old_replica.function_libraries()
    master = setup.sentinel_client().master_for(setup.master_name)
    assert master.connection_pool.get_master_address() == (old_replica.host, old_replica.port)
    assert master.ping()
