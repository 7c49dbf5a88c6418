"""The operator itself misbehaves: SIGKILLed in the middle of a rollout, or started twice by mistake."""

from __future__ import annotations

import functools
import re
import time

import redis

from tests.chaos.conftest import OperatorFactory, Scenario, ScenarioFactory, StatusSampler, condition, soak_scale
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane
from tests.support.operator_process import OperatorProcess

#: A status rewrite that is not flapping: per-node states of the last action settling into Verified.
SETTLING = re.compile(r"rv \d+: (nodes\[[^\]]+\]\.state: (Loaded|Repaired) -> Verified(; )?)+")


def load_calls(server: rs.RedisServer) -> int:
    entry = server.info("commandstats").get("cmdstat_function|load") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def idle_now(operator: OperatorProcess) -> bool:
    """No reconcile in flight in ``operator`` at this moment."""
    return (operator.health() or {}).get("inFlight") == 0


def loaded_pairs(scenario: Scenario, version: int) -> int:
    """How many (primary, library) pairs hold ``version`` of the code now."""
    count = 0
    for primary in scenario.primaries():
        try:
            held = primary.function_libraries()
        except redis.RedisError:
            continue
        count += sum(1 for name in scenario.libraries if f"'v{version}'".encode() in (held.get(name) or b""))
    return count


def test_operator_sigkilled_mid_rollout_and_restarted(
    control_plane: ControlPlane,
    chaos_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    scenario = scenario_factory(control_plane, chaos_namespace, libraries=5)
    operator = operator_factory(control_plane, chaos_namespace)
    since = scenario.apply(1)
    scenario.wait_converged(since, label=f"{scenario.name} (initial deploy)", measured_from="apply v1")
    scenario.apply(2)
    operator.kill()  # SIGKILL, no cleanup handler runs
    killed = time.monotonic()
    done = loaded_pairs(scenario, 2)
    total = len(scenario.libraries) * len(scenario.primaries())
    objects = scenario.objects()
    observed = sum(1 for o in objects.values() if o["status"].get("observedGeneration") == o["metadata"]["generation"])
    print(f"\nat the SIGKILL: {done}/{total} (primary, library) pairs held v2; {observed}/5 objects had observed gen 2")
    operator_factory(control_plane, chaos_namespace, "operator-restarted")
    scenario.wait_converged(killed, measured_from="SIGKILL of the operator right after applying v2, then a restart")


def test_two_operators_no_double_work_no_flapping(
    control_plane: ControlPlane,
    chaos_namespace: str,
    scenario_factory: ScenarioFactory,
    operator_factory: OperatorFactory,
    chaos_round: int,
) -> None:
    """Two operator processes for the same namespace (kopf ``standalone``, no peering). A short resyncInterval (5 s)
    makes both resync several times inside the sampling window, so any disagreement between them would show."""
    scenario = scenario_factory(control_plane, chaos_namespace, resyncInterval="5s")
    operators = [operator_factory(control_plane, chaos_namespace, name) for name in ("operator-a", "operator-b")]
    libraries = len(scenario.libraries)

    def idle() -> None:
        """Each operator seen with no reconcile in flight once: the slower one may still be rolling out what the
        faster one already finished (and converged the statuses on), and its loads belong to this phase."""
        for operator in operators:
            rs.wait_until(functools.partial(idle_now, operator), 20, message="an idle operator")

    def loads() -> dict[str, int]:
        idle()
        return {p.address: load_calls(p) for p in scenario.primaries()}

    def extra_loads(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
        return {address: after[address] - before[address] for address in after}

    before = loads()
    since = scenario.apply(1)
    scenario.wait_converged(since, label=f"{scenario.name} (initial deploy)", measured_from="apply v1")
    first = extra_loads(before, loads())

    before = loads()
    since = scenario.apply(2)
    scenario.wait_converged(since, label=f"{scenario.name} (update)", measured_from="apply v2")
    update = extra_loads(before, loads())

    victim = scenario.primaries()[0]
    before = loads()
    victim.admin.function_flush()
    flushed = time.monotonic()
    scenario.wait_converged(flushed, label=f"{scenario.name} (flush repaired)", measured_from="FUNCTION FLUSH")
    repair = extra_loads(before, loads())
    print(f"\nFUNCTION LOAD calls per primary ({libraries} libraries): create {first}, update {update}, flush {repair}")

    window = soak_scale(12.0)
    with StatusSampler(scenario) as sampler:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            time.sleep(0.5)
    assert len(sampler.samples) > window, f"too few samples: {len(sampler.samples)} ({sampler.errors})"
    changes = {name: sampler.seen(name) for name in scenario.libraries}
    print(f"status over {window:.0f}s after convergence (distinct samples per library): "
          f"{ {n: len(s) for n, s in changes.items()} }")  # fmt: skip

    # Bounded work: every primary needs one load per library; two operators may at most double it.
    for phase, counts in (("create", first), ("update", update)):
        for address, count in counts.items():
            assert count <= 2 * libraries, f"{phase}: {count} FUNCTION LOADs on {address} for {libraries} libraries"
    assert repair[victim.address] <= 2 * libraries, f"flush repair: {repair[victim.address]} loads"
    assert all(count == 0 for address, count in repair.items() if address != victim.address), repair
    # No flapping: Ready stays True with one lastTransitionTime, and the status is not rewritten while nothing
    # changes — except once, when a node shown as just Loaded/Repaired is shown as Verified by the next resync.
    for name, seen in changes.items():
        assert {s.ready for s in seen} == {"True"}, f"{name}: {seen}"
        assert len({s.last_transition for s in seen}) == 1, f"{name}: Ready's lastTransitionTime moved: {seen}"
        rewrites = sampler.rewrites(name)
        settling = [r for r in rewrites if SETTLING.fullmatch(r)]
        assert len(settling) <= 1 and len(rewrites) == len(settling), f"{name}: status rewritten while idle: {rewrites}"
    final = scenario.objects()
    assert all(condition(final[n], "Ready").get("status") == "True" for n in scenario.libraries)
