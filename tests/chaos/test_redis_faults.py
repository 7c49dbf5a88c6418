"""Redis misbehaves while the operator rolls out code: primaries die, restart empty, fail over, join and take slots,
stay down, answer slower than the timeouts, run out of memory, change password. Every scenario ends with
:meth:`Scenario.wait_converged` (see conftest.py) and prints ``CHAOS <scenario>: converged in X.XXs``.

"Mid-rollout" means: a code update to every library is applied, and the fault follows at once (same second)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.chaos.conftest import (
    CONVERGE_DEADLINE,
    FLAVOR,
    OperatorFactory,
    Scenario,
    ScenarioFactory,
    StatusSampler,
    condition,
    deployed,
    soak_scale,
    start_scenario,
)
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane
from tests.support.tcp_proxy import DelayProxy

#: The operator's count of Secret and ConfigMap reads (by kind and source), as its /metrics names it.
SECRET_READS = "redis_functions_operator_reference_reads_total{"
#: Above the operator's default per-call timeout (5 s): every call to the slow node times out.
SLOW_DELAY_MS = 6000


def start(
    cp: ControlPlane, namespace: str, scenario_factory: ScenarioFactory, operator_factory: OperatorFactory, **kw: Any
) -> Scenario:
    return start_scenario(cp, namespace, scenario_factory, operator_factory, **kw)[0]


@pytest.fixture
def scenario(
    control_plane: ControlPlane,
    chaos_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> Scenario:
    """The usual world: a 3+3 cluster, an operator of its own and every library at v1, converged."""
    return start(control_plane, chaos_namespace, scenario_factory, operator_factory)


def retrying_on(address: str, reason: str | None = None) -> Callable[[dict[str, object]], bool]:
    """Ready=False naming ``address`` (with ``reason`` when given), Reconciling=True, Stalled=False."""

    def check(obj: dict[str, object]) -> bool:
        ready = condition(obj, "Ready")
        return (
            ready.get("status") == "False"
            and (reason is None or ready.get("reason") == reason)
            and address in str(ready.get("message"))
            and condition(obj, "Reconciling").get("status") == "True"
            and condition(obj, "Stalled").get("status") == "False"
        )

    return check


def holds(server: rs.RedisServer, scenario: Scenario, version: int) -> bool:
    try:
        held = server.function_libraries()
    except redis.RedisError:
        return False
    return all(held.get(name) == scenario.codes[name].encode() for name in scenario.libraries) and all(
        scenario.versions[name] == version for name in scenario.libraries
    )


def all_objects(predicate: Callable[[dict[str, object]], bool], scenario: Scenario) -> Callable[..., bool]:
    def check(objects: dict[str, dict[str, object]]) -> bool:
        return all(name in objects and predicate(objects[name]) for name in scenario.libraries)

    return check


def retrying_in(message: str) -> float:
    """The ``retrying in Ns`` the status promises (0 when it says nothing)."""
    if "retrying in " not in message:
        return 0.0
    text = message.rsplit("retrying in ", 1)[1].rstrip("s").strip()
    try:
        return float(text)
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------------------------------------


def test_primary_kill9_mid_rollout(scenario: Scenario) -> None:
    victim = scenario.primaries()[1]
    scenario.apply(2)
    fault = time.monotonic()
    promoted = scenario.redis_cluster.kill_primary_and_wait_promotion(victim)
    print(f"\nkilled {victim.address}; {promoted.address} promoted {time.monotonic() - fault:.2f}s later")
    scenario.wait_converged(fault, measured_from="kill -9 of a primary right after applying v2")
    assert victim.address not in {scenario.address(p) for p in scenario.primaries()}


def test_primary_restarted_empty_replica_resyncs_from_it(scenario: Scenario) -> None:
    cluster = scenario.redis_cluster
    victim = scenario.primaries()[2]
    replica = cluster.replica_of(victim)
    # A restart slower than cluster-node-timeout (2 s) on a stalled machine must not turn into a failover.
    replica.admin.config_set("cluster-replica-no-failover", "yes")
    scenario.apply(2)
    fault = time.monotonic()
    victim.kill()
    victim.restart()  # back before cluster-node-timeout: still the primary, empty; its replica resyncs from it
    scenario.wait_converged(fault, measured_from="kill -9 + restart (empty) of a primary right after applying v2")
    assert victim.role() == "master", "the cluster failed over instead: the scenario did not test a restart"
    assert replica.master_port() == victim.port
    assert holds(replica, scenario, 2), "the replica did not get the code back through replication"


def test_manual_failover_mid_rollout(scenario: Scenario) -> None:
    cluster = scenario.redis_cluster
    old = scenario.primaries()[0]
    replica = cluster.replica_of(old)
    scenario.apply(2)
    fault = time.monotonic()
    cluster.failover(replica)
    scenario.wait_converged(fault, measured_from="CLUSTER FAILOVER right after applying v2")
    assert replica.role() == "master" and old.role() == "slave"


def test_new_primary_meet_and_reshard_mid_rollout(scenario: Scenario) -> None:
    cluster = scenario.redis_cluster
    moved = range(0, 64)
    keys = [f"k{i}" for i in range(200_000) if key_slot(f"k{i}".encode()) in moved][:16]
    writer = cluster.cluster_client()
    for key in keys:
        writer.set(key, f"value-of-{key}")
    writer.close()
    scenario.apply(2)
    fault = time.monotonic()
    newcomer = cluster.add_primary()  # CLUSTER MEET: an empty primary with 0 slots
    cluster.move_slots(moved, newcomer)  # then a reshard moves keys to it
    scenario.wait_converged(fault, measured_from="CLUSTER MEET of a new primary + reshard right after applying v2")
    assert len(scenario.primaries()) == 4
    reader = cluster.cluster_client()
    try:
        for key in keys:
            assert cluster.node_for_key(key) is newcomer
            for name in scenario.libraries:
                assert reader.fcall(f"{name}_get", 1, key) == [b"v2", f"value-of-{key}".encode()]
    finally:
        reader.close()


def test_primary_down_for_a_while_then_back(scenario: Scenario) -> None:
    """No failover (its replica has cluster-replica-no-failover): the shard has no primary while it is down, an update
    is applied meanwhile, and the primary comes back empty (no persistence), its replica resyncing from it."""
    cluster = scenario.redis_cluster
    victim = scenario.primaries()[0]
    others = [p for p in scenario.primaries() if p is not victim]
    cluster.replica_of(victim).admin.config_set("cluster-replica-no-failover", "yes")
    victim.kill()
    down_at = time.monotonic()
    scenario.apply(2)

    failing_on_victim = retrying_on(victim.address)
    scenario.wait_objects(
        all_objects(failing_on_victim, scenario), timeout=20, what="Ready=False naming the down primary, retrying"
    )
    rs.wait_until(lambda: all(holds(p, scenario, 2) for p in others), 20, message="v2 on the primaries that are up")
    hold = soak_scale(8.0)
    while time.monotonic() < down_at + hold:  # it stays down a while: nobody may claim Ready meanwhile
        objects = scenario.objects()
        assert all(condition(objects[n], "Ready").get("status") == "False" for n in scenario.libraries)
        time.sleep(0.5)
    victim.restart()
    back = time.monotonic()
    print(f"\n{victim.address} was down {back - down_at:.1f}s")
    scenario.wait_converged(back, measured_from="the primary's restart after being down (no failover)")
    assert victim.role() == "master"


def test_slow_node_behind_a_delaying_proxy(
    control_plane: ControlPlane,
    chaos_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    cluster_factory: Callable[..., rs.Cluster],
    server_factory: Callable[..., rs.RedisServer],
    chaos_round: int,
) -> None:
    """One primary announces a proxy's port (cluster-announce-port), so everyone who follows the cluster's map reaches
    it through the proxy — the operator, and its own replica. The proxy then adds more than the per-call timeout."""
    cluster = cluster_factory(FLAVOR)
    victim = cluster.primaries()[0]
    proxy = DelayProxy(victim.port).start()
    try:
        victim.admin.config_set("cluster-announce-port", proxy.port)
        rs.wait_until(
            lambda: all(
                any(v.node_id == victim.node_id and v.port == proxy.port for v in n.cluster_nodes())
                for n in cluster.running()
            ),
            15,
            message="every node to see the victim at the proxy's port",
        )
        cluster.wait_healthy()
        seeds = [n.address for n in cluster.nodes if n is not victim]
        scenario = scenario_factory(control_plane, chaos_namespace, cluster=cluster, seeds=seeds)
        scenario.announced[victim.port] = proxy.address
        side = scenario_factory(control_plane, chaos_namespace, cluster=server_factory(FLAVOR), libraries=2)
        side.name = "slow_node: another target"
        operator = operator_factory(control_plane, chaos_namespace)
        deployed(scenario)
        deployed(side)

        proxy.set_delay(SLOW_DELAY_MS)
        slow_since = scenario.apply(2)

        def timing_out(obj: dict[str, object]) -> bool:
            ready, reconciling = condition(obj, "Ready"), condition(obj, "Reconciling")
            nodes = {n["address"]: n for n in (obj.get("status") or {}).get("nodes") or []}  # type: ignore[attr-defined]
            slow = nodes.get(proxy.address) or {}
            return (
                ready.get("status") == "False"
                and ready.get("reason") == "Timeout"
                and proxy.address in str(ready.get("message"))
                and reconciling.get("status") == "True"
                and slow.get("state") == "Unreachable"
                and str(slow.get("error", "")).startswith("Timeout")
            )

        scenario.wait_objects(
            all_objects(timing_out, scenario), timeout=45, what="Ready=False, Timeout on the slow node"
        )
        print(f"\nslow node reported as Timeout {time.monotonic() - slow_since:.2f}s after the update")
        fast = [p for p in scenario.primaries() if p is not victim]
        rs.wait_until(lambda: all(holds(p, scenario, 2) for p in fast), 30, message="v2 on the primaries that answer")
        # The work queue is not stuck behind the slow node: another target's update converges meanwhile.
        side.wait_converged(side.apply(2), timeout=15, measured_from="apply v2 while the other target has a slow node")
        health = operator.health()
        assert health is not None and health["healthy"], health

        proxy.set_delay(0)
        healed = time.monotonic()
        scenario.wait_converged(healed, measured_from="the delay removed (6 s one-way delay for the whole update)")
    finally:
        proxy.stop()


def test_oom_on_one_primary(scenario: Scenario) -> None:
    cluster = scenario.redis_cluster
    victim = scenario.primaries()[1]
    lo, hi = cluster.slots_of(victim)[0]
    tag = next(f"t{i}" for i in range(100_000) if lo <= key_slot(f"t{i}".encode()) <= hi)
    admin = victim.admin
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(victim.info("memory")["used_memory"]) + 2 * 1024 * 1024)
    filled = 0
    try:
        while filled < 10_000:
            admin.set(f"{{{tag}}}:{filled}", b"x" * 65536)
            filled += 1
    except redis.exceptions.OutOfMemoryError:
        pass
    assert filled < 10_000, "never reached maxmemory"
    # The refused write's query buffer is freed at once, leaving used_memory just under the limit: put the limit
    # 1 MiB under what the data uses, so the node stays full whatever the operator's reads allocate.
    admin.config_set("maxmemory", int(victim.info("memory")["used_memory"]) - 1024 * 1024)
    scenario.apply(2)

    out_of_memory = retrying_on(victim.address, "OutOfMemory")

    full_since = time.monotonic()
    scenario.wait_objects(all_objects(out_of_memory, scenario), timeout=20, what="Ready=False OutOfMemory")
    others = [p for p in scenario.primaries() if p is not victim]
    rs.wait_until(lambda: all(holds(p, scenario, 2) for p in others), 20, message="v2 on the primaries with memory")
    while time.monotonic() < full_since + soak_scale(6.0):  # full for a while: the retries back off meanwhile
        objects = scenario.objects()
        assert all(out_of_memory(objects[name]) for name in scenario.libraries), "the status changed while still OOM"
        time.sleep(0.5)
    promised = max(retrying_in(str(condition(o, "Ready").get("message"))) for o in objects.values())
    admin.config_set("maxmemory", 0)
    healed = time.monotonic()
    took = scenario.wait_converged(
        healed, timeout=max(CONVERGE_DEADLINE, promised + 15), measured_from="maxmemory raised"
    )
    print(f"(the status had promised a retry within {promised:.0f}s; took {took:.2f}s)")


def test_auth_secret_rotated(
    control_plane: ControlPlane,
    chaos_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    cluster_factory: Callable[..., rs.Cluster],
    chaos_round: int,
) -> None:
    """Phase 1, the right way: a second password on every node, then the Secret, then the old password removed (and
    its connections dropped) — Ready never goes False, and a flush is repaired with the new password. Phase 2, the
    abrupt way, mid-rollout: the password changes on every node right after a code update — Stalled
    (AuthenticationFailed, no secret in the message) until the Secret follows."""
    passwords = ["old-Pass-1", "new-Pass-2", "newer-Pass-3"]
    cluster = cluster_factory(FLAVOR, acl_users=[f"app on >{passwords[0]} ~* &* +@all"])
    control_plane.kubectl(
        "-n", chaos_namespace, "create", "secret", "generic", "redis-auth",
        "--from-literal=username=app", f"--from-literal=password={passwords[0]}",
    )  # fmt: skip
    auth = {"auth": {"secretRef": {"name": "redis-auth", "usernameKey": "username", "passwordKey": "password"}}}
    scenario, operator = start_scenario(
        control_plane, chaos_namespace, scenario_factory, operator_factory, cluster=cluster, target=auth
    )

    def secret_reads() -> float:
        """How many times the operator's reconciles have read a Secret (one read per library per reconcile)."""
        return sum(v for k, v in operator.metrics().items() if k.startswith(SECRET_READS) and 'kind="Secret"' in k)

    def set_secret(password: str) -> float:
        patch = {"data": {"password": base64.b64encode(password.encode()).decode()}}
        control_plane.kubectl("-n", chaos_namespace, "patch", "secret", "redis-auth", "-p", json.dumps(patch))
        return time.monotonic()

    def on_every_node(*command: str) -> None:
        for node in cluster.running():
            node.admin.execute_command(*command)

    with StatusSampler(scenario) as sampler:
        on_every_node("ACL", "SETUSER", "app", f">{passwords[1]}")
        reads = secret_reads()
        set_secret(passwords[1])
        # The old password goes only once every library has been reconciled with the new one (the Secret event
        # wakes each, and each reads the Secret from the watch's copy, already updated, before it connects).
        rs.wait_until(
            lambda: secret_reads() >= reads + len(scenario.libraries),
            timeout=20,
            message="every library to read the rotated Secret",
        )
        on_every_node("ACL", "SETUSER", "app", f"<{passwords[0]}")
        on_every_node("CLIENT", "KILL", "USER", "app")
        victim = scenario.primaries()[0]
        victim.admin.function_flush()
        flushed = time.monotonic()
        assert not set(victim.function_libraries()) & set(scenario.libraries), "FUNCTION FLUSH left libraries"
        scenario.wait_converged(flushed, label="auth_secret_rotated (2 passwords, then a flush)",
                                measured_from="FUNCTION FLUSH after the rotation")  # fmt: skip
    for name in scenario.libraries:
        assert all(s.ready == "True" for s in sampler.seen(name)), f"{name} went not Ready: {sampler.seen(name)}"

    scenario.apply(2)
    on_every_node("ACL", "SETUSER", "app", "resetpass", f">{passwords[2]}")
    on_every_node("CLIENT", "KILL", "USER", "app")

    def stalled_on_auth(obj: dict[str, object]) -> bool:
        stalled = condition(obj, "Stalled")
        return stalled.get("status") == "True" and stalled.get("reason") == "AuthenticationFailed"

    objects = scenario.wait_objects(all_objects(stalled_on_auth, scenario), timeout=20, what="Stalled on auth")
    assert not any(p in json.dumps(objects) for p in passwords)
    healed = set_secret(passwords[2])
    scenario.wait_converged(healed, measured_from="the Secret patched after an abrupt password change mid-rollout")
