"""``spec.driftPolicy`` and ``spec.managementPolicy`` end to end: the session operator process, a real kube-apiserver,
and private Redis/Valkey servers (started and stopped by each test through the factories, because these tests flush,
replace and count commands on them).

* ``driftPolicy: Report`` leaves a flushed, emptied, replaced or new primary as found and says so (the Drifted
  condition naming the node, Ready=False and Stalled=True reason Drifted, a Warning event, the drift metric); a spec
  change repairs it, and so does ``reconcile-requested-at``.
* ``managementPolicy: Observe`` never writes: every node's ``INFO commandstats`` calls of FUNCTION LOAD, DELETE,
  FLUSH and RESTORE are the same before and after (replicas included), through a matching spec, a mismatching one,
  a reconcile request and the object's deletion; switching to ``Full`` takes over without a FUNCTION DELETE.

Every wait has a deadline; "left as found" is shown by a later reconcile that did look (its status names a second
drift, or echoes the request), never by waiting and hoping nothing happens."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest

from tests.e2e.helpers import Libraries, library_code
from tests.support import redis_servers as rs
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.usefixtures("operator"), pytest.mark.slow]

DEADLINE = 15.0
WRITE_COMMANDS = ("function|load", "function|delete", "function|flush", "function|restore")
Writes = dict[str, dict[str, int]]


def write_calls(servers: Iterable[rs.RedisServer]) -> Writes:
    """Per node, how many FUNCTION LOAD / DELETE / FLUSH / RESTORE it has executed (replicated ones included)."""
    counts: Writes = {}
    for server in servers:
        stats = server.info("commandstats")
        counts[server.address] = {
            command: int((stats.get(f"cmdstat_{command}") or {}).get("calls", 0)) for command in WRITE_COMMANDS
        }
    return counts


def holds(server: rs.RedisServer, name: str, code: str) -> bool:
    return server.function_libraries().get(name) == code.encode()


def drift_metric(operator: OperatorProcess, reason: str) -> float:
    return operator.metrics().get(f'redis_functions_operator_drift_detected_total{{reason="{reason}"}}', 0.0)


def drifted_names(rfl: Libraries, name: str, *addresses: str) -> Callable[[dict[str, object]], bool]:
    """The object's current generation says Drifted=True, naming every one of ``addresses``."""

    def check(obj: dict[str, object]) -> bool:
        status = obj.get("status") or {}
        assert isinstance(status, dict)
        for c in status.get("conditions") or []:
            if c["type"] == "Drifted" and c["status"] == "True":
                return all(a in c["message"] for a in addresses)
        return False

    return check


def wait_drifted(rfl: Libraries, name: str, *addresses: str) -> dict[str, object]:
    return rfl.wait_for(name, drifted_names(rfl, name, *addresses), DEADLINE, f"Drifted naming {addresses}")


def conditions_of(obj: dict[str, object]) -> dict[str, tuple[str, str]]:
    status = obj["status"]
    assert isinstance(status, dict)
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def load_by_hand(servers: Iterable[rs.RedisServer], code: str) -> None:
    for server in servers:
        server.client().execute_command("FUNCTION", "LOAD", "REPLACE", code)


def wait_replicated(cluster: rs.Cluster, name: str, code: str | None) -> None:
    """Every node, replicas included, holds ``code`` under ``name`` (None: no such library)."""

    def done() -> bool:
        return all(n.function_libraries().get(name) == (code.encode() if code else None) for n in cluster.running())

    rs.wait_until(done, timeout=DEADLINE, interval=0.05, message=f"{name} replicated to every node")


# ------------------------------------------------------------------------------------------------------------------
# driftPolicy: Report


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_report_on_a_cluster_leaves_drift_until_the_spec_changes_or_a_request_asks(
    rfl: Libraries,
    operator: OperatorProcess,
    cluster_factory: Callable[..., rs.Cluster],
    flavor: str,
    unique_name: str,
) -> None:
    cluster = cluster_factory(flavor)
    code = library_code(unique_name)
    rfl.apply("lib", [n.address for n in cluster.nodes[:2]], code=code, driftPolicy="Report")
    rfl.wait_ready("lib")
    first, second, _ = cluster.primaries()
    missing_before = drift_metric(operator, "missing")

    # 1. FUNCTION FLUSH on one primary: reported, naming it; not repaired.
    first.client().execute_command("FUNCTION", "FLUSH")
    obj = wait_drifted(rfl, "lib", first.address)
    assert conditions_of(obj) == {
        "Ready": ("False", "Drifted"),
        "Reconciling": ("False", "Drifted"),
        "Stalled": ("True", "Drifted"),
        "Drifted": ("True", "Drifted"),
    }
    event = rfl.wait_event("lib", "Drifted")
    assert event["type"] == "Warning" and first.address in event["message"]
    rs.wait_until(
        lambda: drift_metric(operator, "missing") >= missing_before + 1, timeout=DEADLINE, message="drift metric"
    )

    # 2. A second drift: the reconcile that names it has looked at the first primary again and left it empty.
    loads_before = write_calls(cluster.running())
    second.client().execute_command("FUNCTION", "DELETE", unique_name)
    obj = wait_drifted(rfl, "lib", first.address, second.address)
    assert not first.function_libraries(), f"{first.address} was repaired: {first.function_libraries()}"
    assert unique_name not in second.function_libraries(), f"{second.address} was repaired"
    after = write_calls(cluster.running())
    assert all(after[a]["function|load"] == loads_before[a]["function|load"] for a in after), "something loaded"
    status = obj["status"]
    assert isinstance(status, dict) and status["readyPrimaries"] == "1/3"
    states = {n["address"]: n["state"] for n in status["nodes"] if n["role"] == "primary"}
    assert states[first.address] == states[second.address] == "Missing"

    # 3. A spec change loads the spec again: both repaired, Ready, Drifted=False.
    rfl.patch_spec("lib", {"version": "2"})
    rfl.wait_condition("lib", "Ready", "True", timeout=DEADLINE)
    assert rfl.condition("lib", "Drifted") is not None
    assert rfl.condition("lib", "Drifted")["status"] == "False"  # type: ignore[index]
    assert all(holds(p, unique_name, code) for p in cluster.primaries())
    assert rfl.wait_event("lib", "DriftRepaired")

    # 4. Reported again after the new spec; a reconcile request repairs it.
    first.client().execute_command("FUNCTION", "FLUSH")
    wait_drifted(rfl, "lib", first.address)
    rfl.annotate("lib", reconcile_requested_at="repair-please")
    obj = rfl.wait_for(
        "lib",
        lambda o: (
            o["status"].get("lastHandledReconcileAt") == "repair-please"
            and conditions_of(o).get("Ready") == ("True", "Verified")
        ),
        DEADLINE,
        "Ready after reconcile-requested-at",
    )
    assert holds(first, unique_name, code)
    assert obj["status"]["lastApplied"]["reconcileRequestedAt"] == "repair-please"

    # 5. A new empty primary is drift too: named, and left empty.
    newcomer = cluster.add_primary()
    wait_drifted(rfl, "lib", newcomer.address)
    assert unique_name not in newcomer.function_libraries()


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_report_on_standalone_names_a_replaced_library_and_a_request_repairs_it(
    rfl: Libraries,
    operator: OperatorProcess,
    server_factory: Callable[..., rs.RedisServer],
    flavor: str,
    unique_name: str,
) -> None:
    server = server_factory(flavor)
    code = library_code(unique_name)
    # A FUNCTION LOAD REPLACE keeping the function names moves none of the counters the target watcher polls: it is
    # found by the resync, hence 5 s here.
    rfl.apply("lib", [server.address], code=code, driftPolicy="Report", resyncInterval="5s")
    rfl.wait_ready("lib")
    different_before = drift_metric(operator, "different")

    other = library_code(unique_name, "return 'by hand'")
    server.client().execute_command("FUNCTION", "LOAD", "REPLACE", other)
    obj = wait_drifted(rfl, "lib", server.address)
    drifted = next(c for c in obj["status"]["conditions"] if c["type"] == "Drifted")  # type: ignore[index]
    assert "holds other code" in drifted["message"]
    assert rfl.condition("lib", "Stalled")["status"] == "True"  # type: ignore[index]
    assert "holds other code" in rfl.wait_event("lib", "Drifted")["message"]
    rs.wait_until(
        lambda: drift_metric(operator, "different") >= different_before + 1, timeout=DEADLINE, message="metric"
    )
    assert holds(server, unique_name, other)

    rfl.annotate("lib", reconcile_requested_at="1")
    rfl.wait_for(
        "lib",
        lambda o: o["status"].get("lastHandledReconcileAt") == "1" and conditions_of(o)["Ready"][0] == "True",
        DEADLINE,
        "repaired on request",
    )
    assert holds(server, unique_name, code)


def test_switching_report_to_repair_repairs(
    rfl: Libraries, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    server = server_factory("redis")
    code = library_code(unique_name)
    rfl.apply("lib", [server.address], code=code, driftPolicy="Report")
    rfl.wait_ready("lib")
    server.client().execute_command("FUNCTION", "FLUSH")
    wait_drifted(rfl, "lib", server.address)
    rfl.patch_spec("lib", {"driftPolicy": "Repair"})
    rfl.wait_condition("lib", "Ready", "True", timeout=DEADLINE)
    assert holds(server, unique_name, code)
    status = rfl.get("lib")["status"]
    assert "lastApplied" not in status
    assert all(c["type"] != "Drifted" for c in status["conditions"])


# ------------------------------------------------------------------------------------------------------------------
# managementPolicy: Observe


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_observe_never_writes_on_any_node(
    rfl: Libraries, cluster_factory: Callable[..., rs.Cluster], flavor: str, unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    code = library_code(unique_name)
    load_by_hand(cluster.primaries(), code)
    wait_replicated(cluster, unique_name, code)
    before = write_calls(cluster.nodes)

    rfl.apply("lib", [cluster.nodes[0].address], code=code, managementPolicy="Observe")
    obj = rfl.wait_ready("lib")
    assert conditions_of(obj)["Drifted"] == ("False", "InSync")
    assert obj["status"]["readyPrimaries"] == "3/3"
    assert "redisfunctions.dev/cleanup" not in (obj["metadata"].get("finalizers") or [])

    # A spec the servers do not hold: reported on every primary, nothing loaded.
    v2 = library_code(unique_name, "return 'v2'")
    rfl.patch_spec("lib", {"code": v2})
    obj = wait_drifted(rfl, "lib", *(p.address for p in cluster.primaries()))
    assert conditions_of(obj)["Ready"] == ("False", "Drifted")
    assert "managementPolicy Observe never writes" in rfl.condition("lib", "Ready")["message"]  # type: ignore[index]
    # A reconcile request (which repairs under driftPolicy Report) only looks again.
    rfl.annotate("lib", reconcile_requested_at="look-again")
    rfl.wait_for("lib", lambda o: o["status"].get("lastHandledReconcileAt") == "look-again", DEADLINE, "request")
    # Deleting the object deletes nothing, at once (no finalizer).
    assert rfl.delete("lib", timeout=DEADLINE).returncode == 0
    assert not rfl.exists("lib")

    assert write_calls(cluster.nodes) == before, "the observer wrote to Redis"
    assert all(holds(n, unique_name, code) for n in cluster.nodes)


def test_observe_reports_out_of_band_drift_naming_the_node(
    rfl: Libraries, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    server = server_factory("valkey")
    code = library_code(unique_name)
    load_by_hand([server], code)
    rfl.apply("lib", [server.address], code=code, managementPolicy="Observe")
    rfl.wait_ready("lib")
    before = write_calls([server])
    server.client().execute_command("FUNCTION", "FLUSH")
    obj = wait_drifted(rfl, "lib", server.address)
    assert conditions_of(obj)["Stalled"] == ("True", "Drifted")
    assert server.address in rfl.wait_event("lib", "Drifted")["message"]
    expected = json.loads(json.dumps(before))
    expected[server.address]["function|flush"] += 1  # ours, and only ours
    assert write_calls([server]) == expected
    assert not server.function_libraries()


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_switching_observe_to_full_takes_over_without_a_function_delete(
    rfl: Libraries, server_factory: Callable[..., rs.RedisServer], flavor: str, unique_name: str
) -> None:
    server = server_factory(flavor)
    code = library_code(unique_name)
    load_by_hand([server], code)
    rfl.apply("lib", [server.address], code=code, managementPolicy="Observe")
    rfl.wait_ready("lib")
    before = write_calls([server])

    rfl.patch_spec("lib", {"managementPolicy": "Full"})
    obj = rfl.wait_ready("lib")
    assert obj["metadata"]["generation"] == 2
    assert write_calls([server]) == before  # taken over: it already held the code, so nothing was sent
    rfl.wait_for(
        "lib",
        lambda o: "redisfunctions.dev/cleanup" in (o["metadata"].get("finalizers") or []),
        DEADLINE,
        "the cleanup finalizer, now that deleting the object deletes the library",
    )

    v2 = library_code(unique_name, "return 'v2'")
    rfl.patch_spec("lib", {"code": v2})
    rfl.wait_condition("lib", "Ready", "True", timeout=DEADLINE)
    after = write_calls([server])[server.address]
    assert after["function|delete"] == before[server.address]["function|delete"]
    assert after["function|load"] == before[server.address]["function|load"] + 1
    assert holds(server, unique_name, v2)


def test_adopt_with_export_observe_then_enforce(
    rfl: Libraries, cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    """The adoption path: libraries loaded by hand, ``export --observe`` → kubectl apply → watched, Ready, nothing
    written; then ``managementPolicy: Full`` enforces them without a FUNCTION DELETE."""
    cluster = cluster_factory("redis")
    names = [f"{unique_name}_{i}" for i in range(2)]
    for name in names:
        load_by_hand(cluster.primaries(), library_code(name))
        wait_replicated(cluster, name, library_code(name))
    before = write_calls(cluster.nodes)

    exported = subprocess.run(
        [sys.executable, "-m", "redis_functions_operator", "export", "--redis", cluster.nodes[0].url,
         "--observe", "--namespace", rfl.namespace, *names],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    rfl.cp.apply_yaml(exported.stdout)
    objects = [name.replace("_", "-") for name in names]
    for obj in objects:
        status = rfl.wait_ready(obj)["status"]
        assert status["readyPrimaries"] == "3/3"
    assert write_calls(cluster.nodes) == before

    for obj in objects:
        rfl.patch_spec(obj, {"managementPolicy": "Full"})
    for obj in objects:
        rfl.wait_condition(obj, "Ready", "True", timeout=DEADLINE)
    assert write_calls(cluster.nodes) == before  # taken over as found: no DELETE, and nothing to load
    cluster.primaries()[0].client().execute_command("FUNCTION", "FLUSH")  # now enforced: repaired
    rs.wait_until(
        lambda: all(holds(cluster.primaries()[0], n, library_code(n)) for n in names),
        timeout=DEADLINE,
        message="repair",
    )
