"""``spec.tests`` end to end: the session operator, a real kube-apiserver, real 3-primary clusters (Redis 7.0 and
Valkey 9). Passing tests appear in ``status.tests`` and the code spreads; a writing test's keys are gone afterwards;
a failing test leaves every primary on the old code and the object Stalled ``SmokeTestFailed`` naming the test, the
expected and the actual reply; a brand-new library failing its test is on no primary; a look at proven code (a
reconcile request) runs no test. Every wait has a deadline."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import Libraries
from tests.support import redis_servers as rs

pytestmark = [pytest.mark.usefixtures("operator"), pytest.mark.slow]

DEADLINE = 20.0


def code(name: str, version: str) -> str:
    return (
        f"#!lua name={name}\n"
        f"redis.register_function{{function_name='{name}_version', callback=function() return '{version}' end, "
        "flags={'no-writes'}}\n"
        f"redis.register_function('{name}_count', function(keys) return redis.call('INCR', keys[1]) end)\n"
    )


def smoke_tests_for(name: str, version: str, prefix: str) -> list[dict[str, Any]]:
    return [
        {"name": "version", "function": f"{name}_version", "expect": {"reply": version}},
        {"name": "count", "function": f"{name}_count", "keys": [prefix + "{canary}:n"], "readOnly": False,
         "expect": {"reply": 1}},
    ]  # fmt: skip


def fcalls(cluster: rs.Cluster) -> dict[str, int]:
    counts = {}
    for server in cluster.primaries():
        stats = server.info("commandstats")
        counts[server.address] = sum(
            int((stats.get(f"cmdstat_{c}") or {}).get("calls", 0)) for c in ("fcall", "fcall_ro")
        )
    return counts


def codes(cluster: rs.Cluster, name: str) -> set[bytes | None]:
    return {p.function_libraries().get(name) for p in cluster.primaries()}


def test_passing_tests_in_status_then_a_failing_one_keeps_the_old_code_everywhere(
    rfl: Libraries, cluster: rs.Cluster, unique_name: str
) -> None:
    prefix = f"rfo-test:{unique_name}:"
    endpoints = [cluster.nodes[0].address]
    v1 = code(unique_name, "v1")
    rfl.apply("lib", endpoints, code=v1, tests=smoke_tests_for(unique_name, "v1", prefix), testKeyPrefix=prefix)
    status = rfl.wait_ready("lib")["status"]
    assert [(t["name"], t["result"], t["codeSha256"]) for t in status["tests"]] == [
        ("version", "Passed", status["codeSha256"]),
        ("count", "Passed", status["codeSha256"]),
    ]
    assert len({t["node"] for t in status["tests"]}) == 1  # both on the canary
    assert codes(cluster, unique_name) == {v1.encode()}
    assert all(not list(p.client().scan_iter(match=prefix + "*")) for p in cluster.primaries())

    # Proven code is not tested again: a reconcile request makes the operator look (it echoes the request), and
    # no primary received an FCALL.
    before = fcalls(cluster)
    rfl.annotate("lib", reconcile_requested_at="look-1")
    rfl.wait_for("lib", lambda o: o["status"].get("lastHandledReconcileAt") == "look-1", DEADLINE, "the request")
    rfl.wait_ready("lib")
    assert fcalls(cluster) == before

    # v2 whose tests still expect v1: the canary is put back, nothing else is touched.
    rfl.patch_spec("lib", {"code": code(unique_name, "v2")})
    stalled = rfl.wait_condition("lib", "Stalled", "True", "SmokeTestFailed", timeout=DEADLINE)
    assert "smoke test 'version'" in stalled["message"]
    assert 'expected reply "v1", got "v2"' in stalled["message"]
    assert "put back to their previous code" in stalled["message"]
    assert codes(cluster, unique_name) == {v1.encode()}
    failed = rfl.get("lib")["status"]["tests"]
    assert [(t["name"], t["result"], t.get("reply")) for t in failed] == [("version", "Failed", '"v2"')]
    assert rfl.condition("lib", "Ready")["reason"] == "SmokeTestFailed"  # type: ignore[index]
    rfl.wait_event("lib", "SmokeTestFailed")

    # Tests that match the new code: it spreads.
    rfl.patch_spec("lib", {"tests": smoke_tests_for(unique_name, "v2", prefix)})
    rfl.wait_condition("lib", "Ready", "True", "Verified", timeout=DEADLINE)
    assert codes(cluster, unique_name) == {code(unique_name, "v2").encode()}
    assert {t["result"] for t in rfl.get("lib")["status"]["tests"]} == {"Passed"}


def test_a_new_library_failing_its_test_is_on_no_primary(rfl: Libraries, cluster: rs.Cluster, unique_name: str) -> None:
    rfl.apply("new", [cluster.nodes[0].address], code=code(unique_name, "v1"),
              tests=[{"name": "version", "function": f"{unique_name}_version", "expect": {"reply": "v0"}}])  # fmt: skip
    stalled = rfl.wait_condition("new", "Stalled", "True", "SmokeTestFailed", timeout=DEADLINE)
    assert 'expected reply "v0", got "v1"' in stalled["message"]
    assert codes(cluster, unique_name) == {None}
