"""The control plane fails under a running operator: kube-apiserver restarted or killed right after an update, etcd
briefly gone, an API server slow to answer. Each scenario has a control plane of its own (other tests keep the session
one). While it is down, Redis is broken too — primaries flushed, a new primary joined — and the operator must repair
Redis from what it already knows (inline code, no Secret: no API call is needed for that), then bring the status up
to date once the API answers again."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.conftest import (
    SOAK,
    OperatorFactory,
    Scenario,
    ScenarioFactory,
    condition,
    soak_scale,
    start_scenario,
)
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane
from tests.support.operator_process import OperatorProcess
from tests.support.tcp_proxy import DelayProxy

#: Repairing Redis needs no API call here: it must happen while the API is down, within this.
REPAIR_WITHOUT_API = 15.0


def holds_all(server: rs.RedisServer, scenario: Scenario) -> bool:
    try:
        held = server.function_libraries()
    except redis.RedisError:
        return False
    return all(held.get(name) == scenario.codes[name].encode() for name in scenario.libraries)


def flush_and_wait_repair(scenario: Scenario, victim: rs.RedisServer, what: str, within: float) -> float:
    victim.admin.function_flush()
    flushed = time.monotonic()
    rs.wait_until(lambda: holds_all(victim, scenario), within, 0.05, message=f"{victim.address} repaired while {what}")
    took = time.monotonic() - flushed
    print(f"{what}: FUNCTION FLUSH on {victim.address} repaired in {took:.2f}s")
    return took


def stay_down(operator: OperatorProcess, since: float, seconds: float, what: str) -> None:
    """The outage lasts ``seconds`` in all; the operator process must survive it."""
    while time.monotonic() < since + seconds:
        assert operator.running(), f"the operator exited while {what}:\n{operator.log_tail()}"
        time.sleep(0.2)


def ready_scenario(
    cp: ControlPlane, namespace: str, factory: ScenarioFactory, operators: OperatorFactory, **kw: object
) -> tuple[Scenario, OperatorProcess]:
    """v1 deployed and converged, then settled (no status write pending when the fault starts)."""
    scenario, operator = start_scenario(cp, namespace, factory, operators, operator_options=kw)
    scenario.settle()
    return scenario, operator


def unread_bytes(pid: int) -> int:
    """Bytes the kernel holds unread for ``pid``'s TCP sockets (``rx_queue`` in /proc/net/tcp and tcp6).

    A SIGSTOPped process reads nothing, so this only grows while it is frozen: growth after an apply is the watch
    event sitting in its socket, which is what "the event reached the operator" means.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    total = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] in inodes:
                total += int(fields[4].split(":")[1], 16)
    return total


def apply_while_frozen(scenario: Scenario, operator: OperatorProcess, version: int) -> None:
    """Apply ``version`` to a frozen operator and wait until its watch event is waiting in the operator's sockets."""
    assert operator.process is not None
    pid = operator.process.pid
    before = unread_bytes(pid)
    scenario.apply(version)
    rs.wait_until(
        lambda: unread_bytes(pid) > before, 15, message="the update's watch event to reach the frozen operator"
    )


@contextlib.contextmanager
def frozen(operator: OperatorProcess) -> Iterator[None]:
    """SIGSTOP the operator for the block, SIGCONT after: what happens meanwhile (an update accepted and its watch
    event sent, then the API dies) is what it finds when it resumes — a deterministic "right after an update"."""
    assert operator.process is not None
    operator.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        operator.process.send_signal(signal.SIGCONT)


def test_kube_apiserver_restarted(
    private_control_plane: ControlPlane,
    private_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    cp = private_control_plane
    scenario, operator = ready_scenario(cp, private_namespace, scenario_factory, operator_factory)
    cluster = scenario.redis_cluster
    first, second = scenario.primaries()[:2]

    stopping = time.monotonic()
    # SIGTERM, then SIGKILL after 5 s: kube-apiserver v1.36 does not finish a graceful shutdown while a client (the
    # operator) holds a watch open, so a restart is a SIGTERM plus a grace period, as a kubelet would do it.
    cp.stop_apiserver(timeout=5.0)
    down = time.monotonic()
    print(f"\nkube-apiserver stopped in {down - stopping:.1f}s")
    flush_and_wait_repair(scenario, first, "kube-apiserver down", REPAIR_WITHOUT_API)
    newcomer = cluster.add_primary()
    joined = time.monotonic()
    rs.wait_until(lambda: holds_all(newcomer, scenario), REPAIR_WITHOUT_API, 0.05, message="new primary loaded")
    print(f"kube-apiserver down: new primary {newcomer.address} got every library in {time.monotonic() - joined:.2f}s")
    flush_and_wait_repair(scenario, second, "kube-apiserver down", REPAIR_WITHOUT_API)
    stay_down(operator, down, soak_scale(5.0), "the API server was down")
    restart = time.monotonic()
    cp.start_apiserver()
    print(f"kube-apiserver was down {restart - down:.1f}s; ready {time.monotonic() - restart:.2f}s after its start")
    scenario.wait_converged(restart, measured_from="kube-apiserver started again (status must catch up to 4/4)")


@pytest.mark.skipif(not SOAK, reason="soak only (RFO_CHAOS_SOAK=1): a 2-minute outage")
def test_kube_apiserver_long_outage(
    private_control_plane: ControlPlane,
    private_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    """Longer than kopf's whole retry budget (error_backoffs 1+1+2+3+5+8+13+21 s): kopf escalates, restarts its
    watches and retries again; the operator must live through it, keep repairing Redis, and act on an update applied
    the moment the API server is back."""
    cp = private_control_plane
    scenario, operator = ready_scenario(cp, private_namespace, scenario_factory, operator_factory)
    cp.stop_apiserver(timeout=5.0)
    down = time.monotonic()
    stay_down(operator, down, 120.0, "the API server was down")
    print()
    flush_and_wait_repair(scenario, scenario.primaries()[0], "kube-apiserver down 2 min", REPAIR_WITHOUT_API)
    restart = time.monotonic()
    cp.start_apiserver()
    scenario.apply(2)
    scenario.wait_converged(restart, measured_from="kube-apiserver started after a 2-minute outage, then apply v2")


def test_kube_apiserver_killed_right_after_an_update(
    private_control_plane: ControlPlane,
    private_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    """The update is accepted, its watch event reaches the operator, and the API server dies before the operator
    could write anything: the rollout must go on without the API, and drift meanwhile must be repaired."""
    cp = private_control_plane
    scenario, operator = ready_scenario(cp, private_namespace, scenario_factory, operator_factory)
    with frozen(operator):
        apply_while_frozen(scenario, operator, 2)
        cp.kill_apiserver()
    down = time.monotonic()
    print()
    rs.wait_until(
        lambda: all(holds_all(p, scenario) for p in scenario.primaries()),
        REPAIR_WITHOUT_API,
        0.05,
        message="v2 rolled out while the API server is down",
    )
    print(f"kube-apiserver killed: v2 on every primary {time.monotonic() - down:.2f}s after the kill")
    flush_and_wait_repair(scenario, scenario.primaries()[0], "kube-apiserver killed", REPAIR_WITHOUT_API)
    stay_down(operator, down, soak_scale(5.0), "the API server was down")
    restart = time.monotonic()
    cp.start_apiserver()
    print(f"kube-apiserver ready {time.monotonic() - restart:.2f}s after its start")
    scenario.wait_converged(restart, measured_from="kube-apiserver started again (killed right after applying v2)")


def test_etcd_briefly_unavailable(
    private_control_plane: ControlPlane,
    private_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    """etcd gone: the API server accepts requests and holds them (a status PATCH hangs until the client's 30 s
    timeout). A new primary (every status must change to 4/4: writes that hang) and then a flush elsewhere: both
    repaired without waiting for those writes."""
    cp = private_control_plane
    scenario, operator = ready_scenario(cp, private_namespace, scenario_factory, operator_factory)
    cluster = scenario.redis_cluster
    cp.stop_etcd()
    down = time.monotonic()
    print()
    newcomer = cluster.add_primary()
    joined = time.monotonic()
    rs.wait_until(lambda: holds_all(newcomer, scenario), REPAIR_WITHOUT_API, 0.05, message="new primary loaded")
    print(f"etcd down: new primary {newcomer.address} got every library in {time.monotonic() - joined:.2f}s")
    flush_and_wait_repair(scenario, scenario.primaries()[0], "etcd down, status writes pending", REPAIR_WITHOUT_API)
    stay_down(operator, down, soak_scale(5.0), "etcd was down")
    restart = time.monotonic()
    cp.start_etcd()
    print(f"etcd was down {restart - down:.1f}s; healthy {time.monotonic() - restart:.2f}s after its start")
    scenario.wait_converged(restart, measured_from="etcd started again (status must catch up to 4/4)")


def test_etcd_down_right_after_an_update_rollout_and_repair_not_held(
    private_control_plane: ControlPlane,
    private_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    cp = private_control_plane
    scenario, operator = ready_scenario(cp, private_namespace, scenario_factory, operator_factory)
    try:
        with frozen(operator):
            apply_while_frozen(scenario, operator, 2)
            cp.stop_etcd()
        down = time.monotonic()
        print()
        flush_and_wait_repair(scenario, scenario.primaries()[0], "etcd down right after v2", REPAIR_WITHOUT_API)
        rs.wait_until(
            lambda: all(holds_all(p, scenario) for p in scenario.primaries()),
            REPAIR_WITHOUT_API,
            0.05,
            message="v2 rolled out while etcd is down",
        )
        print(f"etcd down right after v2: v2 on every primary {time.monotonic() - down:.2f}s after etcd stopped")
    finally:
        if cp.etcd_process is None:
            cp.start_etcd()  # so the hung calls return and the operator stops promptly


def test_slow_apiserver_does_not_leave_a_stale_status(
    private_control_plane: ControlPlane,
    private_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    tmp_path: Path,
    chaos_round: int,
) -> None:
    """The operator reaches kube-apiserver through the delaying proxy (TLS passes through untouched). A primary dies
    (no failover): the Ready=False status goes out while the API path is slow; the primary comes back and the
    Ready=True status goes out on a fast path. The newest status must be the one that stays."""
    cp = private_control_plane
    proxy = DelayProxy(cp.apiserver_port).start()
    try:
        kubeconfig = tmp_path / "kubeconfig-via-proxy"
        kubeconfig.write_text(cp.kubeconfig.read_text().replace(cp.server, f"https://{proxy.address}"))
        scenario, operator = ready_scenario(
            cp, private_namespace, scenario_factory, operator_factory, kubeconfig=kubeconfig
        )
        cluster = scenario.redis_cluster
        victim = scenario.primaries()[0]
        cluster.replica_of(victim).admin.config_set("cluster-replica-no-failover", "yes")
        log_before = len(operator.log_text())
        proxy.set_delay(4000)
        victim.kill()
        # The operator logs each Ready transition just before it hands the status to the writer.
        rs.wait_until(
            lambda: operator.log_text()[log_before:].count(victim.address) >= len(scenario.libraries),
            20,
            0.05,
            message="the operator to notice the dead primary",
        )
        proxy.set_delay(0)  # the Ready=False writes are on their way, 4 s late; everything after is fast
        victim.restart()
        back = time.monotonic()
        scenario.wait_converged(
            back, timeout=30, hold=8.0, measured_from="the primary back while an older status was still in flight"
        )
        final = scenario.objects()
        assert all(condition(final[n], "Ready").get("status") == "True" for n in scenario.libraries)
    finally:
        proxy.stop()
