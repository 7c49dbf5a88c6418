"""Following a living Redis: the operator notices a deployment that moved under it and repairs it within seconds,
whatever resyncInterval says (60 s here). Each case asserts a deadline (never a sleep) and prints the measured time.

How a cluster moves (a flush, an empty restart, a failover, a new primary) is seen through what each server reports
(CLUSTER SHARDS, ROLE, run_id, INFO commandstats, FUNCTION STATS), so those four run on every server of the matrix
(``rs.MATRIX``, the releases ``make servers`` builds too); the rest are about Kubernetes and run on Redis 7.0."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest

from tests.e2e.helpers import Libraries, library_code
from tests.support import redis_servers as rs
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.usefixtures("operator"), pytest.mark.slow]

REPAIR_DEADLINE = 10.0


def holds(server: rs.RedisServer, name: str, code: str) -> bool:
    try:
        return server.function_libraries().get(name) == code.encode()
    except Exception:
        return False


def shared_listing_syncs(operator: OperatorProcess) -> float:
    return operator.metrics().get("redis_functions_operator_shared_listing_syncs_total", 0.0)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` holds; fails the test at ``timeout``."""
    started = time.monotonic()
    rs.wait_until(predicate, timeout=timeout, interval=0.1, message=what)
    return time.monotonic() - started


def deploy(rfl: Libraries, cluster: rs.Cluster, name: str, lib: str, **spec: object) -> str:
    code = library_code(lib)
    rfl.apply(name, [n.address for n in cluster.nodes[:2]], code=code, **spec)
    rfl.wait_ready(name)
    return code


@pytest.mark.parametrize("flavor", rs.MATRIX)
def test_function_flush_on_one_primary_is_repaired_within_seconds(
    rfl: Libraries, cluster_factory: Callable[..., rs.Cluster], flavor: str, unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    code = deploy(rfl, cluster, "lib", unique_name)
    victim = cluster.primaries()[2]
    victim.client().execute_command("FUNCTION", "FLUSH")
    took = wait_until(lambda: holds(victim, unique_name, code), REPAIR_DEADLINE, "library back after FUNCTION FLUSH")
    print(f"\n[{flavor}] FUNCTION FLUSH on {victim.address} repaired in {took:.2f}s")
    event = rfl.wait_event("lib", "DriftRepaired")
    assert victim.address in event["message"]
    assert "ran FUNCTION FLUSH" in event["message"] or "libraries removed" in event["message"]


@pytest.mark.parametrize("flavor", rs.MATRIX)
def test_primary_restarted_empty_is_repaired_within_seconds(
    rfl: Libraries, cluster_factory: Callable[..., rs.Cluster], flavor: str, unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    code = deploy(rfl, cluster, "lib", unique_name)
    victim = cluster.primaries()[1]
    # No failover even if the restart is slower than cluster-node-timeout (2 s) on a stalled machine: this test is
    # about the empty primary, not about who wins that race.
    cluster.replica_of(victim).admin.config_set("cluster-replica-no-failover", "yes")
    victim.kill()
    victim.restart()  # back before the failover timeout: an empty primary, and its replica follows it (redis-facts F3)
    took = wait_until(lambda: holds(victim, unique_name, code), REPAIR_DEADLINE, "library back after a restart")
    print(f"\n[{flavor}] primary {victim.address} restarted empty, repaired in {took:.2f}s")
    assert "restarted" in rfl.wait_event("lib", "DriftRepaired")["message"]
    replica = cluster.replica_of(victim)
    wait_until(lambda: holds(replica, unique_name, code), REPAIR_DEADLINE, "its replica got it back too")


@pytest.mark.parametrize("flavor", rs.MATRIX)
def test_manual_failover_and_killed_primary_are_followed_by_status(
    rfl: Libraries, cluster_factory: Callable[..., rs.Cluster], flavor: str, unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    deploy(rfl, cluster, "lib", unique_name)

    def primaries_in_status() -> set[str]:
        status = rfl.get("lib").get("status", {})
        return {n["address"] for n in status.get("nodes", []) if n["role"] == "primary" and n["state"] != "Unknown"}

    replica = cluster.replicas()[0]
    cluster.failover(replica)
    took = wait_until(lambda: replica.address in primaries_in_status(), REPAIR_DEADLINE, "promoted replica in status")
    print(f"\n[{flavor}] CLUSTER FAILOVER followed by status in {took:.2f}s")
    assert rfl.get("lib")["status"]["readyPrimaries"] == "3/3"

    victim = cluster.primaries()[0]
    started = time.monotonic()
    victim.kill()
    rfl.wait_for(
        "lib",
        lambda o: any(c["type"] == "Ready" and c["status"] == "False" for c in o["status"]["conditions"]),
        timeout=REPAIR_DEADLINE,
        what="Ready=False while a primary is down",
    )
    ready = rfl.condition("lib", "Ready")
    reconciling = rfl.condition("lib", "Reconciling")
    assert ready is not None and victim.address in ready["message"]
    assert reconciling is not None and reconciling["status"] == "True"
    promoted = cluster.kill_primary_and_wait_promotion(victim) if victim.is_running() else None
    del promoted
    rfl.wait_condition("lib", "Ready", "True", timeout=30)
    took = time.monotonic() - started
    status = rfl.get("lib")["status"]
    assert victim.address not in primaries_in_status()
    assert status["readyPrimaries"] == "3/3"
    print(f"[{flavor}] primary killed: Ready again on the promoted replica {took:.2f}s after the kill")


@pytest.mark.parametrize("flavor", rs.MATRIX)
def test_new_primary_gets_every_library_and_serves_after_reshard(
    rfl: Libraries,
    operator: OperatorProcess,
    cluster_factory: Callable[..., rs.Cluster],
    flavor: str,
    unique_name: str,
) -> None:
    """Also the path of a thousand libraries: the session operator runs with ``--listing-burst 2``, so the three
    woken libraries share one FUNCTION LIST WITHCODE per primary (redis/listing.py) and still fill the newcomer."""
    cluster = cluster_factory(flavor)
    codes = {f"{unique_name}_{i}": deploy(rfl, cluster, f"lib{i}", f"{unique_name}_{i}") for i in range(3)}
    shared_before = shared_listing_syncs(operator)
    newcomer = cluster.add_primary()
    took = wait_until(
        lambda: all(holds(newcomer, lib, code) for lib, code in codes.items()),
        REPAIR_DEADLINE,
        "every library on the new 0-slot primary",
    )
    print(f"\n[{flavor}] new primary {newcomer.address} (0 slots) got 3 libraries in {took:.2f}s")
    assert shared_listing_syncs(operator) >= shared_before + 3
    rfl.wait_for("lib0", lambda o: o["status"]["readyPrimaries"] == "4/4", timeout=REPAIR_DEADLINE, what="4/4")
    cluster.move_slots(range(0, 50), newcomer)
    key = next(
        f"k{i}"
        for i in range(100_000)
        if int(cluster.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", f"k{i}")) < 50
    )
    assert cluster.cluster_client().fcall(f"{unique_name}_0_f", 1, key) == b"v1"
    rfl.wait_for(
        "lib0",
        lambda o: any(n["address"] == newcomer.address and n.get("slots") for n in o["status"]["nodes"]),
        timeout=REPAIR_DEADLINE,
        what="the new primary's slots in status",
    )


def test_code_from_config_map_edit_delete_recreate(rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str) -> None:
    v1, v2 = library_code(unique_name, "return 'cm1'"), library_code(unique_name, "return 'cm2'")
    rfl.kubectl("create", "configmap", "code", f"--from-literal=lib.lua={v1}")
    code_from = {"configMapKeyRef": {"name": "code", "key": "lib.lua"}}
    rfl.apply("lib", [redis_cluster.nodes[0].address], codeFrom=code_from, libraryName=unique_name)
    rfl.wait_ready("lib")
    assert {p.function_libraries().get(unique_name) for p in redis_cluster.primaries()} == {v1.encode()}

    rfl.kubectl("create", "configmap", "code", f"--from-literal=lib.lua={v2}", "--dry-run=client", "-o", "yaml")
    patch = {"data": {"lib.lua": v2}}
    started = time.monotonic()
    rfl.kubectl("patch", "configmap", "code", "--type=merge", "-p", json.dumps(patch))
    took = wait_until(
        lambda: all(holds(p, unique_name, v2) for p in redis_cluster.primaries()), REPAIR_DEADLINE, "edited code live"
    )
    print(f"\nConfigMap edit rolled out in {took:.2f}s")
    del started

    rfl.kubectl("delete", "configmap", "code")
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="ConfigMapNotFound", timeout=REPAIR_DEADLINE)
    assert "ConfigMap 'code' not found" in stalled["message"]
    rfl.kubectl("create", "configmap", "code", f"--from-literal=lib.lua={v2}")
    rfl.wait_condition("lib", "Ready", "True", timeout=REPAIR_DEADLINE)


def test_rotated_password_is_picked_up_without_restart(
    rfl: Libraries, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    server = server_factory("redis", acl_users=["app on >old-Secret-1 ~* +@all"])
    rfl.kubectl(
        "create",
        "secret",
        "generic",
        "redis-auth",
        "--from-literal=username=app",
        "--from-literal=password=old-Secret-1",
    )
    auth = {"auth": {"secretRef": {"name": "redis-auth", "usernameKey": "username", "passwordKey": "password"}}}
    rfl.apply("lib", [server.address], code=library_code(unique_name), target=auth)
    rfl.wait_ready("lib")

    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "resetpass", ">new-Secret-2")  # 1. Redis first
    # Connections opened with the old password stay authenticated (Redis does not drop them on a password change);
    # drop them so the operator must authenticate again, as it would after any reconnect.
    admin.execute_command("CLIENT", "KILL", "USER", "app")
    admin.execute_command("FUNCTION", "DELETE", unique_name)  # and give the next poll something to repair
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="AuthenticationFailed", timeout=REPAIR_DEADLINE)
    assert "old-Secret-1" not in stalled["message"]
    started = time.monotonic()
    patch = {"data": {"password": base64.b64encode(b"new-Secret-2").decode()}}
    rfl.kubectl("patch", "secret", "redis-auth", "-p", json.dumps(patch))  # 2. then the Secret
    rfl.wait_condition("lib", "Ready", "True", timeout=REPAIR_DEADLINE)
    print(f"\nrotated password picked up {time.monotonic() - started:.2f}s after the Secret changed")
    assert unique_name in server.function_libraries()
    everything = json.dumps(rfl.get("lib")) + json.dumps(rfl.events("lib"))
    assert "new-Secret-2" not in everything and "old-Secret-1" not in everything


def test_two_objects_one_library_oldest_owns_and_the_other_takes_over(
    rfl: Libraries, redis_standalone: rs.RedisServer, unique_name: str
) -> None:
    endpoints = [redis_standalone.address]
    first = library_code(unique_name, "return 'first'")
    rfl.apply("first", endpoints, code=first)
    rfl.wait_ready("first")
    second = library_code(unique_name, "return 'second'")
    loads_before = _load_calls(redis_standalone)
    rfl.apply("second", endpoints, code=second)
    conflict = rfl.wait_condition("second", "Stalled", "True", reason="ResourceConflict")
    assert f"{rfl.namespace}/first" in conflict["message"]
    assert redis_standalone.function_libraries()[unique_name] == first.encode()
    assert _load_calls(redis_standalone) == loads_before  # the second object never touched Redis

    assert rfl.delete("first").returncode == 0  # deletionPolicy Delete, but "second" still wants the library
    rfl.wait_condition("second", "Ready", "True", timeout=REPAIR_DEADLINE)
    assert redis_standalone.function_libraries()[unique_name] == second.encode()
    assert rfl.delete("second").returncode == 0
    assert unique_name not in redis_standalone.function_libraries()


def test_function_owned_by_another_library_then_gone(
    rfl: Libraries, redis_standalone: rs.RedisServer, unique_name: str
) -> None:
    squatter = f"{unique_name}_sq"
    redis_standalone.client().execute_command(
        "FUNCTION", "LOAD", f"#!lua name={squatter}\nredis.register_function('{unique_name}_f', function() end)"
    )
    rfl.apply("lib", [redis_standalone.address], code=library_code(unique_name))
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="FunctionNameConflict")
    assert f"{unique_name}_f" in stalled["message"] and squatter in stalled["message"]
    assert redis_standalone.address in stalled["message"]
    redis_standalone.client().execute_command("FUNCTION", "DELETE", squatter)
    took = wait_until(
        lambda: rfl.condition("lib", "Ready") and rfl.condition("lib", "Ready")["status"] == "True",  # type: ignore[index]
        REPAIR_DEADLINE,
        "Ready once the other library is gone",
    )
    print(f"\nReady {took:.2f}s after the conflicting library was deleted")


def test_big_libraries_inline_and_from_a_config_map(
    rfl: Libraries, redis_standalone: rs.RedisServer, unique_name: str
) -> None:
    def big(name: str, size: int) -> str:
        head = library_code(name)
        filler = "-- " + "x" * 120 + "\n"
        return head + filler * ((size - len(head)) // len(filler))

    inline = big(f"{unique_name}_in", 500 * 1024)
    rfl.apply("inline", [redis_standalone.address], code=inline, server_side=True)
    obj = rfl.wait_ready("inline", timeout=60)
    annotations = obj["metadata"].get("annotations", {})
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 4096, "code copied into an annotation"
    assert redis_standalone.function_libraries()[f"{unique_name}_in"] == inline.encode()

    from_cm = big(f"{unique_name}_cm", 900 * 1024)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": rfl.namespace},
        "data": {"lib.lua": from_cm},
    }
    rfl.cp.apply_yaml(json.dumps(cm), server_side=True)
    code_from = {"configMapKeyRef": {"name": "big", "key": "lib.lua"}}
    rfl.apply("from-cm", [redis_standalone.address], codeFrom=code_from)
    rfl.wait_ready("from-cm", timeout=60)
    assert redis_standalone.function_libraries()[f"{unique_name}_cm"] == from_cm.encode()


def _load_calls(server: rs.RedisServer) -> int:
    entry = server.info("commandstats").get("cmdstat_function|load") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0
