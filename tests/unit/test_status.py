"""``reconcile/status.py``: an attempt's outcome → ``status``. Pins the table in the module docstring, the
write-only-on-change property (an idle resync must render an identical status), the CRD schema (an undeclared field
is silently pruned by the API server), and what kstatus / kubectl wait conclude from each status."""

from __future__ import annotations

import functools
import json
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions as rx
import yaml

from redis_functions_operator.library import Failure, Library, vet
from redis_functions_operator.reconcile.conditions import PAUSED, READY, RECONCILING, STALLED, find
from redis_functions_operator.reconcile.spec import Controls
from redis_functions_operator.reconcile.status import (
    PROGRESSING,
    VERIFIED,
    WITH_RETRY,
    Attempt,
    desired_conditions,
    node_entries,
    node_state,
    render_status,
    status_changed,
    summary,
)
from redis_functions_operator.redis.connect import Credentials, Endpoint, Mode, Target
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult, sync
from redis_functions_operator.redis.topology import Node, Role, Topology

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "redisfunctionlibraries.redisfunctions.dev.yaml"

CODE = (
    "#!lua name=mylib\n"
    "redis.register_function{function_name='f1', callback=function() return 1 end, flags={'no-writes'}}\n"
    "redis.register_function('f2', function() return 2 end)\n"
)
LIB: Library = vet(CODE).library
SHA = LIB.sha256
OLD_SHA = "0" * 64

T0, T1, T2, T3 = (f"2025-01-01T00:0{i}:00Z" for i in range(4))

A = Node(Endpoint("10.0.0.1", 6379), Role.PRIMARY, shard="id-a", slots="0-5460")
B = Node(Endpoint("10.0.0.2", 6379), Role.PRIMARY, shard="id-b", slots="5461-10922")
C = Node(Endpoint("10.0.0.3", 6379), Role.PRIMARY, shard="id-c", slots="10923-16383")
REPLICAS = (
    Node(Endpoint("10.0.0.4", 6379), Role.REPLICA, shard="id-a", primary=A.endpoint),
    Node(Endpoint("10.0.0.5", 6379), Role.REPLICA, shard="id-b", primary=B.endpoint),
)
TOPOLOGY = Topology(Mode.CLUSTER, (A, B, C), REPLICAS)

REFUSED = NodeError(ErrorKind.CONNECTION_FAILED, "Error 111 connecting to 10.0.0.2:6379. Connection refused.")
COMPILE = classify(
    rx.ResponseError("Error compiling function: user_function:3: ')' expected (to close '(' at line 2) near '<eof>'")
)
CONFLICT = NodeError(ErrorKind.FUNCTION_CONFLICT, "Function f1 already exists", function="f1", owner="otherlib")


# --- builders -------------------------------------------------------------------------------------------------------


def ok(node: Node, outcome: Outcome = Outcome.UNCHANGED, before: str | None = SHA) -> NodeResult:
    return NodeResult(node, outcome, before_sha256=before, after_sha256=SHA)


def failed(node: Node, error: NodeError, outcome: Outcome = Outcome.FAILED, after: str | None = None) -> NodeResult:
    return NodeResult(node, outcome, before_sha256=after, after_sha256=after, error=error)


def result(
    *nodes: NodeResult,
    error: NodeError | None = None,
    blocking: str | None = None,
    topology: Topology | None = TOPOLOGY,
) -> SyncResult:
    return SyncResult(LIB.name, SHA, topology, tuple(nodes), error=error, blocking_node=blocking)


def loaded() -> SyncResult:
    """A rollout: every primary took the new code."""
    return result(*(ok(n, Outcome.LOADED, before=None) for n in (A, B, C)))


def idle() -> SyncResult:
    """A resync that found everything in place and sent nothing."""
    return result(ok(A), ok(B), ok(C))


def repaired() -> SyncResult:
    return result(ok(A), ok(B, Outcome.REPAIRED, before=None), ok(C))


def transient() -> SyncResult:
    """B is down; A and C hold the code."""
    return result(ok(A), failed(B, REFUSED), ok(C), error=REFUSED)


def compile_error() -> SyncResult:
    """The canary (A) refused the code; B and C were not touched."""
    return result(
        failed(A, COMPILE, after=OLD_SHA),
        NodeResult(B, Outcome.SKIPPED, OLD_SHA, OLD_SHA),
        NodeResult(C, Outcome.SKIPPED, OLD_SHA, OLD_SHA),
        error=COMPILE,
        blocking=A.address,
    )


def name_conflict() -> SyncResult:
    """A and B took the code, C refused it (otherlib owns f1 there): A and B were put back."""
    return result(
        NodeResult(A, Outcome.ROLLED_BACK, OLD_SHA, OLD_SHA),
        NodeResult(B, Outcome.ROLLED_BACK, None, None),
        failed(C, CONFLICT, after=OLD_SHA),
        error=CONFLICT,
        blocking=C.address,
    )


def attempt(sync_result: SyncResult | None = None, *, generation: int = 1, now: str = T0, **kw: Any) -> Attempt:
    kw.setdefault("library", LIB)
    kw.setdefault("version", "1.4.0")
    return Attempt(generation=generation, now=now, result=sync_result, **kw)


def paused_attempt(generation: int = 1, now: str = T1, *, paused: bool = False, managed: bool = True) -> Attempt:
    """What the controller builds for a paused/unmanaged object: no spec read, no library, no result."""
    return Attempt(generation=generation, now=now, controls=Controls(paused=paused, managed=managed))


def cond(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    found = find(status["conditions"], type_)
    assert found is not None, f"no {type_} condition in {status['conditions']}"
    return found


def summary_of(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


# --- the table ------------------------------------------------------------------------------------------------------


def test_verified() -> None:
    status = render_status(attempt(loaded()), None)
    assert summary_of(status) == {
        READY: ("True", VERIFIED),
        RECONCILING: ("False", VERIFIED),
        STALLED: ("False", VERIFIED),
    }
    assert [c["type"] for c in status["conditions"]] == [READY, RECONCILING, STALLED]
    assert cond(status, READY)["message"] == f"3/3 primaries hold library mylib (sha256 {SHA[:12]}...)"
    assert status["observedGeneration"] == 1
    assert status["readyPrimaries"] == "3/3"
    assert status["libraryName"] == "mylib"
    assert status["codeSha256"] == SHA
    assert status["version"] == "1.4.0"
    assert status["functions"] == [{"name": "f1", "flags": ["no-writes"]}, {"name": "f2", "flags": []}]
    assert status["lastSyncTime"] == T0


def test_transient_failure_retries() -> None:
    status = render_status(attempt(transient(), retry_in=4.0), None)
    assert summary_of(status) == {
        READY: ("False", "ConnectionFailed"),
        RECONCILING: ("True", WITH_RETRY),
        STALLED: ("False", WITH_RETRY),
    }
    message = cond(status, READY)["message"]
    assert "10.0.0.2:6379" in message
    assert message.endswith("; retrying in 4s")
    assert cond(status, RECONCILING)["message"] == message
    assert status["readyPrimaries"] == "2/3"


@pytest.mark.parametrize(
    ("retry_in", "text"), [(None, "; retrying"), (0.5, "; retrying in 0.5s"), (60.0, "; retrying in 60s")]
)
def test_transient_message_says_when_it_retries(retry_in: float | None, text: str) -> None:
    status = render_status(attempt(transient(), retry_in=retry_in), None)
    assert cond(status, READY)["message"].endswith(text)


def test_transient_on_two_nodes_counts_the_others() -> None:
    loading = NodeError(ErrorKind.LOADING, "Redis is loading the dataset in memory")
    status = render_status(
        attempt(result(ok(A), failed(B, REFUSED), failed(C, loading), error=REFUSED), retry_in=2), None
    )
    message = cond(status, READY)["message"]
    assert "on 10.0.0.2:6379" in message
    assert "(and 1 more)" in message
    assert status["readyPrimaries"] == "1/3"


def test_permanent_compile_error_on_the_canary() -> None:
    status = render_status(attempt(compile_error(), retry_in=300), None)
    assert summary_of(status) == {
        READY: ("False", "CompileError"),
        RECONCILING: ("False", "CompileError"),
        STALLED: ("True", "CompileError"),
    }
    message = cond(status, STALLED)["message"]
    assert "user_function:3: ')' expected (to close '(' at line 2) near '<eof>'" in message  # Redis' own words
    assert "on 10.0.0.1:6379" in message
    assert "no other primary was changed" in message
    assert "retrying" not in message
    assert cond(status, READY)["message"] == message
    assert status["readyPrimaries"] == "0/3"


def test_permanent_function_name_conflict_names_function_owner_node_and_rollback() -> None:
    status = render_status(attempt(name_conflict(), retry_in=300), None)
    assert summary_of(status) == {
        READY: ("False", "FunctionNameConflict"),
        RECONCILING: ("False", "FunctionNameConflict"),
        STALLED: ("True", "FunctionNameConflict"),
    }
    message = cond(status, STALLED)["message"]
    assert "f1" in message
    assert "otherlib" in message
    assert "on 10.0.0.3:6379" in message
    assert "10.0.0.1:6379, 10.0.0.2:6379 put back to their previous code" in message
    assert status["readyPrimaries"] == "0/3"


def test_permanent_failure_before_redis() -> None:
    failure = Failure("SecretNotFound", "Secret 'redis-auth' not found in namespace 'apps'", permanent=True)
    status = render_status(attempt(failure=failure, library=None, retry_in=30), None)
    assert summary_of(status) == {
        READY: ("False", "SecretNotFound"),
        RECONCILING: ("False", "SecretNotFound"),
        STALLED: ("True", "SecretNotFound"),
    }
    assert cond(status, STALLED)["message"] == "Secret 'redis-auth' not found in namespace 'apps'"


def test_transient_failure_before_redis() -> None:
    failure = Failure("KubernetesApiError", "reading a referenced object: 503 Service Unavailable", permanent=False)
    status = render_status(attempt(failure=failure, library=None, retry_in=2), None)
    assert summary_of(status) == {
        READY: ("False", "KubernetesApiError"),
        RECONCILING: ("True", WITH_RETRY),
        STALLED: ("False", WITH_RETRY),
    }
    assert cond(status, READY)["message"].endswith("503 Service Unavailable; retrying in 2s")


def test_a_failure_wins_over_a_good_result() -> None:
    failure = Failure("InvalidSpec", "bad", permanent=True)
    assert render_status(attempt(loaded(), failure=failure), None)["conditions"][0]["status"] == "False"


def test_no_primaries_is_not_ready() -> None:
    status = render_status(attempt(result(topology=None), retry_in=1), None)
    assert summary_of(status)[READY] == ("False", "NoPrimaries")
    assert summary_of(status)[RECONCILING] == ("True", WITH_RETRY)


def test_discovery_failure_is_transient_and_says_why() -> None:
    error = NodeError(ErrorKind.CONNECTION_FAILED, "no seed answered (redis:6379: Connection refused)")
    status = render_status(attempt(result(topology=None, error=error), retry_in=8), None)
    assert summary_of(status)[READY] == ("False", "ConnectionFailed")
    assert summary_of(status)[RECONCILING] == ("True", WITH_RETRY)
    assert cond(status, READY)["message"] == "no seed answered (redis:6379: Connection refused); retrying in 8s"


def test_in_progress() -> None:
    previous = render_status(attempt(idle(), generation=4), None)
    status = render_status(attempt(generation=5, now=T1, in_progress=True), previous)
    assert summary_of(status) == {
        READY: ("False", PROGRESSING),
        RECONCILING: ("True", PROGRESSING),
        STALLED: ("False", PROGRESSING),
    }
    assert cond(status, RECONCILING)["message"] == "loading generation 5 on every primary"
    assert status["observedGeneration"] == 5
    # what the primaries hold is still what the last attempt found
    assert status["nodes"] == previous["nodes"]
    assert status["readyPrimaries"] == previous["readyPrimaries"]
    assert status["lastSyncTime"] == previous["lastSyncTime"]


@pytest.mark.parametrize(
    ("paused", "managed", "reason", "annotation"),
    [
        (True, True, "Paused", "redisfunctions.dev/pause-reconciliation=true"),
        (False, False, "Unmanaged", "redisfunctions.dev/managed=false"),
        (True, False, "Unmanaged", "redisfunctions.dev/managed=false"),
    ],
)
def test_paused_and_unmanaged(paused: bool, managed: bool, reason: str, annotation: str) -> None:
    previous = render_status(attempt(loaded(), generation=1), None)
    status = render_status(paused_attempt(generation=2, paused=paused, managed=managed), previous)
    assert summary_of(status) == {
        RECONCILING: ("False", reason),
        STALLED: ("False", reason),
        PAUSED: ("True", reason),
    }
    assert find(status["conditions"], READY) is None
    assert annotation in cond(status, PAUSED)["message"]
    assert status["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    # the last known detail is kept
    for key in ("libraryName", "codeSha256", "functions", "nodes", "readyPrimaries", "lastSyncTime"):
        assert status[key] == previous[key], key


def test_paused_even_when_the_attempt_has_results() -> None:
    status = render_status(attempt(compile_error(), controls=Controls(paused=True)), None)
    assert find(status["conditions"], STALLED)["status"] == "False"  # type: ignore[index]
    assert find(status["conditions"], PAUSED)["status"] == "True"  # type: ignore[index]


def test_paused_keeps_the_version() -> None:
    previous = render_status(attempt(loaded(), generation=1), None)
    status = render_status(paused_attempt(generation=2, paused=True), previous)
    assert find(status["conditions"], PAUSED) is not None
    assert status.get("version") == "1.4.0"


def test_resume_after_pause() -> None:
    before = render_status(attempt(idle(), now=T0), None)
    paused = render_status(paused_attempt(now=T1, paused=True), before)
    resumed = render_status(attempt(idle(), now=T2), paused)
    assert summary_of(resumed) == {
        READY: ("True", VERIFIED),
        RECONCILING: ("False", VERIFIED),
        STALLED: ("False", VERIFIED),
    }
    assert cond(resumed, READY)["lastTransitionTime"] == T2  # Ready was absent while paused
    assert cond(resumed, RECONCILING)["lastTransitionTime"] == T0  # False all along


def test_desired_conditions_never_has_both_reconciling_and_stalled_true() -> None:
    cases = [
        attempt(loaded()),
        attempt(transient(), retry_in=1),
        attempt(compile_error()),
        attempt(name_conflict()),
        attempt(in_progress=True),
        paused_attempt(paused=True),
        attempt(failure=Failure("X", "y", permanent=True)),
        attempt(failure=Failure("X", "y", permanent=False)),
    ]
    for case in cases:
        true = {c.type for c in desired_conditions(case) if c.status}
        assert not {RECONCILING, STALLED} <= true, case


# --- lastTransitionTime and observedGeneration ----------------------------------------------------------------------


def test_transition_times_follow_status_changes() -> None:
    verified = render_status(attempt(idle(), now=T0), None)
    retrying = render_status(attempt(transient(), now=T1, retry_in=1), verified)
    assert cond(retrying, READY)["lastTransitionTime"] == T1  # True -> False
    assert cond(retrying, RECONCILING)["lastTransitionTime"] == T1  # False -> True
    assert cond(retrying, STALLED)["lastTransitionTime"] == T0  # False -> False

    retrying_again = render_status(attempt(transient(), now=T2, retry_in=2), retrying)
    assert {c["type"]: c["lastTransitionTime"] for c in retrying_again["conditions"]} == {
        READY: T1,
        RECONCILING: T1,
        STALLED: T0,
    }

    stalled = render_status(attempt(compile_error(), now=T3), retrying_again)
    assert {c["type"]: c["lastTransitionTime"] for c in stalled["conditions"]} == {
        READY: T1,  # False -> False (reason changed, status did not)
        RECONCILING: T3,
        STALLED: T3,
    }


def test_every_condition_carries_the_generation_acted_on() -> None:
    for case in (
        attempt(loaded(), generation=9),
        attempt(transient(), generation=9),
        attempt(compile_error(), generation=9),
        attempt(generation=9, in_progress=True),
        paused_attempt(generation=9, paused=True),
    ):
        status = render_status(case, {"observedGeneration": 3})
        assert status["observedGeneration"] == 9
        assert [c["observedGeneration"] for c in status["conditions"]] == [9] * len(status["conditions"])


# --- nodes[] and readyPrimaries --------------------------------------------------------------------------------------


def test_node_entries_in_a_cluster() -> None:
    entries = node_entries(transient())
    assert entries == [
        {"address": "10.0.0.1:6379", "role": "primary", "state": "Verified", "shard": "id-a", "slots": "0-5460",
         "codeSha256": SHA},
        {"address": "10.0.0.2:6379", "role": "primary", "state": "Unreachable", "shard": "id-b",
         "slots": "5461-10922", "error": f"ConnectionFailed: {REFUSED.message}"},
        {"address": "10.0.0.3:6379", "role": "primary", "state": "Verified", "shard": "id-c",
         "slots": "10923-16383", "codeSha256": SHA},
        {"address": "10.0.0.4:6379", "role": "replica", "state": "Replica", "shard": "id-a"},
        {"address": "10.0.0.5:6379", "role": "replica", "state": "Replica", "shard": "id-b"},
    ]  # fmt: skip


def test_node_entries_standalone_have_no_shard_or_slots() -> None:
    primary = Node(Endpoint("redis", 6379), Role.PRIMARY)
    replica = Node(Endpoint("redis-replica", 6379), Role.REPLICA, primary=primary.endpoint)
    topo = Topology(Mode.STANDALONE, (primary,), (replica,))
    entries = node_entries(result(ok(primary), topology=topo))
    assert entries == [
        {"address": "redis:6379", "role": "primary", "state": "Verified", "codeSha256": SHA},
        {"address": "redis-replica:6379", "role": "replica", "state": "Replica"},
    ]


def test_node_entries_without_topology_list_only_primaries() -> None:
    entries = node_entries(result(ok(A), topology=None))
    assert [e["role"] for e in entries] == ["primary"]


def test_ipv6_address_is_bracketed() -> None:
    node = Node(Endpoint("fd00::1", 6379), Role.PRIMARY)
    assert node_entries(result(ok(node), topology=None))[0]["address"] == "[fd00::1]:6379"


def test_conflict_error_text_names_the_owner() -> None:
    entries = {e["address"]: e for e in node_entries(name_conflict())}
    assert (
        entries["10.0.0.3:6379"]["error"]
        == "FunctionNameConflict: Function f1 already exists (owned by library 'otherlib')"
    )
    assert entries["10.0.0.3:6379"]["state"] == "Failed"
    assert entries["10.0.0.3:6379"]["codeSha256"] == OLD_SHA
    assert entries["10.0.0.1:6379"]["state"] == "RolledBack"
    assert entries["10.0.0.2:6379"]["state"] == "RolledBack"
    assert "codeSha256" not in entries["10.0.0.2:6379"]  # it had no library before, and has none now


def test_compile_error_entries() -> None:
    entries = {e["address"]: e for e in node_entries(compile_error())}
    assert entries["10.0.0.1:6379"]["state"] == "Failed"
    assert entries["10.0.0.1:6379"]["error"].startswith("CompileError: Error compiling function: user_function:3:")
    assert entries["10.0.0.2:6379"]["state"] == entries["10.0.0.3:6379"]["state"] == "Skipped"
    assert "error" not in entries["10.0.0.2:6379"]


@pytest.mark.parametrize(
    ("node_result", "state"),
    [
        (ok(A, Outcome.UNCHANGED), "Verified"),
        (ok(A, Outcome.LOADED), "Verified"),  # what a node did is in events and metrics; status says what it is
        (ok(A, Outcome.REPAIRED), "Verified"),
        (NodeResult(A, Outcome.ROLLED_BACK), "RolledBack"),
        (NodeResult(A, Outcome.SKIPPED), "Skipped"),
        (failed(A, REFUSED), "Unreachable"),
        (failed(A, NodeError(ErrorKind.TIMEOUT, "Timeout reading from socket")), "Unreachable"),
        (failed(A, NodeError(ErrorKind.TLS_FAILED, "certificate verify failed")), "Unreachable"),
        (failed(A, NodeError(ErrorKind.LOADING, "Redis is loading")), "Failed"),
        (failed(A, NodeError(ErrorKind.VERIFY_MISMATCH, "holds sha256 x")), "Failed"),
        (failed(A, COMPILE), "Failed"),
        # a loaded node whose verification failed keeps its error
        (NodeResult(A, Outcome.LOADED, error=NodeError(ErrorKind.VERIFY_MISMATCH, "x")), "Failed"),
    ],
)
def test_node_state(node_result: NodeResult, state: str) -> None:
    assert node_state(node_result) == state


def test_ready_primaries_counts_unreachable_primaries_too() -> None:
    down = failed(C, NodeError(ErrorKind.CONNECTION_FAILED, "refused"))
    status = render_status(attempt(result(ok(A), ok(B), down, error=down.error), retry_in=1), None)
    assert status["readyPrimaries"] == "2/3"


def test_summary() -> None:
    assert summary(idle()) == f"3/3 primaries hold library mylib (sha256 {SHA[:12]}...)"


# --- lastSyncTime and write-only-on-change ---------------------------------------------------------------------------


def test_last_sync_time_is_when_this_code_was_first_verified_everywhere() -> None:
    first = render_status(attempt(loaded(), now=T0), None)
    assert first["lastSyncTime"] == T0
    resync = render_status(attempt(idle(), now=T1), first)
    assert resync["lastSyncTime"] == T0
    fixed = render_status(attempt(repaired(), now=T2), resync)
    assert fixed["lastSyncTime"] == T0  # a repair is an event, not a status change
    assert not status_changed(fixed, resync)  # so repairing a thousand libraries writes no status
    failing = render_status(attempt(transient(), now=T3, retry_in=1), fixed)
    assert failing["lastSyncTime"] == T0


def test_a_library_that_never_loaded_has_no_sync_time() -> None:
    assert "lastSyncTime" not in render_status(attempt(compile_error(), now=T1), None)


def test_first_status_gets_a_sync_time_even_if_nothing_was_loaded() -> None:
    assert render_status(attempt(idle(), now=T1), None)["lastSyncTime"] == T1


def test_new_code_counts_as_a_change() -> None:
    previous = render_status(attempt(idle(), now=T0), None) | {"codeSha256": OLD_SHA}
    assert render_status(attempt(idle(), now=T1), previous)["lastSyncTime"] == T1


def test_idle_resync_renders_an_identical_status() -> None:
    rollout = render_status(attempt(loaded(), now=T0, retry_in=58.3), {"observedGeneration": -1})
    settled = render_status(attempt(idle(), now=T1, retry_in=63.9), rollout)
    assert not status_changed(settled, rollout)  # the resync after a rollout writes nothing
    again = render_status(attempt(idle(), now=T2, retry_in=55.1), settled)
    assert again == settled
    assert not status_changed(again, settled)


def test_idle_resync_of_a_stored_status_is_not_a_write() -> None:
    # the status as the API server returns it: a JSON round trip, plus fields other writers own
    stored = json.loads(json.dumps(render_status(attempt(idle(), now=T0), None)))
    stored["kopf"] = {"progress": {}}
    stored["message"] = "legacy field"
    assert not status_changed(render_status(attempt(idle(), now=T1), stored), stored)


@pytest.mark.parametrize(
    "make",
    [
        lambda now: attempt(transient(), now=now, retry_in=60.0),  # backoff at its cap
        lambda now: attempt(compile_error(), now=now, retry_in=300.0),
        lambda now: attempt(name_conflict(), now=now, retry_in=300.0),
        lambda now: attempt(
            failure=Failure("SecretNotFound", "Secret 'x' not found", permanent=True), library=None, now=now
        ),
        lambda now: paused_attempt(now=now, paused=True),
        lambda now: paused_attempt(now=now, managed=False),
        lambda now: attempt(now=now, in_progress=True),
    ],
    ids=["transient-at-cap", "compile-error", "name-conflict", "secret-missing", "paused", "unmanaged", "in-progress"],
)
def test_steady_states_are_not_rewritten(make: Any) -> None:
    base = render_status(attempt(idle(), now=T0), None)
    first = render_status(make(T1), base)
    second = render_status(make(T2), first)
    assert second == first
    assert not status_changed(second, first)


def test_changes_are_writes() -> None:
    base = render_status(attempt(idle(), now=T0), None)
    assert status_changed(base, None)
    assert status_changed(base, {})
    assert status_changed(render_status(attempt(transient(), now=T1), base), base)
    assert status_changed(render_status(attempt(idle(), generation=2, now=T1), base), base)
    requested = render_status(attempt(idle(), now=T1, controls=Controls(reconcile_requested_at="r1")), base)
    assert status_changed(requested, base)


def test_a_field_we_no_longer_write_is_a_change() -> None:
    base = render_status(attempt(idle(), now=T0), None)
    unversioned = render_status(attempt(idle(), now=T1, version=None), base)
    assert "version" not in unversioned
    assert status_changed(unversioned, base)


def test_last_handled_reconcile_at() -> None:
    base = render_status(attempt(idle(), now=T0), None)
    assert "lastHandledReconcileAt" not in base
    handled = render_status(attempt(idle(), now=T1, controls=Controls(reconcile_requested_at="2025-06-01")), base)
    assert handled["lastHandledReconcileAt"] == "2025-06-01"
    later = render_status(attempt(idle(), now=T2), handled)  # annotation removed: keep the last handled value
    assert later["lastHandledReconcileAt"] == "2025-06-01"


def test_render_does_not_mutate_previous() -> None:
    previous = render_status(attempt(idle(), now=T0), None)
    snapshot = json.loads(json.dumps(previous))
    render_status(attempt(compile_error(), now=T1), previous)
    render_status(paused_attempt(now=T2, paused=True), previous)
    assert previous == snapshot


# --- the CRD declares everything we write ---------------------------------------------------------------------------


@functools.cache
def crd_status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
    "number": (int, float),
}


def schema_violations(value: Any, schema: Mapping[str, Any], path: str = "status") -> list[str]:
    """What the API server would prune or refuse (types, undeclared fields, required, enum, pattern, lengths)."""
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) and not isinstance(value, bool) else [f"{path}: not int-or-string"]
    kind = schema.get("type")
    if kind is None:
        return [f"{path}: schema without a type"]
    if not isinstance(value, JSON_TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{path}: {type(value).__name__} where the schema says {kind}"]
    return _nested_violations(value, schema, kind, path)


def _nested_violations(value: Any, schema: Mapping[str, Any], kind: str, path: str) -> list[str]:
    problems: list[str] = []
    if kind == "object":
        declared = schema.get("properties", {})
        for key, item in value.items():
            if key in declared:
                problems += schema_violations(item, declared[key], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{key}: not declared in the CRD (the API server prunes it)")
        problems += [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
    elif kind == "array":
        for i, item in enumerate(value):
            problems += schema_violations(item, schema["items"], f"{path}[{i}]")
        if schema.get("x-kubernetes-list-type") == "map":
            keys = [tuple(item.get(k) for k in schema["x-kubernetes-list-map-keys"]) for item in value]
            if len(keys) != len(set(keys)):
                problems.append(f"{path}: duplicate list-map keys {keys}")
    elif kind == "string":
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{path}: {value!r} not in {schema['enum']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: longer than {schema['maxLength']}")
        if schema.get("format") == "date-time" and not RFC3339.match(value):
            problems.append(f"{path}: {value!r} is not RFC 3339")
    return problems


def all_kinds_of_status() -> list[tuple[str, dict[str, Any]]]:
    base = render_status(attempt(loaded(), now=T0, controls=Controls(reconcile_requested_at="2025-06-01")), None)
    standalone = Node(Endpoint("redis", 6379), Role.PRIMARY)
    return [
        ("verified", base),
        ("idle", render_status(attempt(idle(), now=T1), base)),
        ("repaired", render_status(attempt(repaired(), now=T1), base)),
        ("transient", render_status(attempt(transient(), now=T1, retry_in=4), base)),
        ("compile-error", render_status(attempt(compile_error(), now=T1), base)),
        ("name-conflict", render_status(attempt(name_conflict(), now=T1), base)),
        ("spec-error", render_status(attempt(failure=Failure("InvalidSpec", "x", permanent=True), library=None), base)),
        ("in-progress", render_status(attempt(generation=2, in_progress=True), base)),
        ("paused", render_status(paused_attempt(paused=True), base)),
        ("unmanaged", render_status(paused_attempt(managed=False), base)),
        ("standalone", render_status(attempt(result(ok(standalone), topology=None)), None)),
        ("first-failure", render_status(attempt(transient(), retry_in=1), {"observedGeneration": -1})),
    ]


@pytest.mark.parametrize(("name", "status"), all_kinds_of_status(), ids=[n for n, _ in all_kinds_of_status()])
def test_every_written_field_is_declared_in_the_crd(name: str, status: dict[str, Any]) -> None:
    assert schema_violations(status, crd_status_schema()) == []


def test_the_schema_checker_catches_an_undeclared_field() -> None:
    status = render_status(attempt(idle()), None)
    status["nodes"][0]["surprise"] = 1
    status["phase"] = "Ready"
    assert schema_violations(status, crd_status_schema()) == [
        "status.nodes[0].surprise: not declared in the CRD (the API server prunes it)",
        "status.phase: not declared in the CRD (the API server prunes it)",
    ]


def test_every_owned_field_is_declared() -> None:
    from redis_functions_operator.reconcile import status as status_module

    declared = set(crd_status_schema()["properties"])
    assert set(status_module.OWNED_FIELDS) <= declared


def test_crd_defaults_observed_generation_to_minus_one() -> None:
    schema = crd_status_schema()
    assert schema["properties"]["observedGeneration"]["default"] == -1
    assert schema.get("default") == {}


REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


@pytest.mark.parametrize(
    "reason",
    [
        *(k.value for k in ErrorKind),
        VERIFIED, PROGRESSING, WITH_RETRY, "Paused", "Unmanaged", "NoPrimaries",
        "InvalidSpec", "SecretNotFound", "ConfigMapNotFound", "KeyNotFound", "KubernetesApiError",
        "InvalidLibrary", "LibraryNameMismatch", "UnsafeLibrary", "VetInconclusive",
    ],
)  # fmt: skip
def test_reasons_match_the_crd_pattern(reason: str) -> None:
    pattern = crd_status_schema()["properties"]["conditions"]["items"]["properties"]["reason"]["pattern"]
    assert pattern == REASON_PATTERN
    assert re.match(pattern, reason)


def test_node_states_are_the_documented_ones() -> None:
    description = crd_status_schema()["properties"]["nodes"]["items"]["properties"]["state"]["description"]
    documented = set(re.findall(r"[A-Z][A-Za-z]+", description))
    produced = {e["state"] for _, status in all_kinds_of_status() for e in status.get("nodes", [])}
    assert produced <= documented
    assert {"Verified", "Unreachable", "Failed", "Skipped", "RolledBack", "Replica"} <= produced


# --- no secret in a status ------------------------------------------------------------------------------------------

PASSWORD = "s3cr3t-Pa55w0rd-do-not-leak"


def test_auth_failure_status_has_no_password() -> None:
    target = Target((A.endpoint,), Mode.CLUSTER, credentials=Credentials("admin", PASSWORD))
    assert PASSWORD not in repr(target)
    wrongpass = classify(rx.AuthenticationError("WRONGPASS invalid username-password pair or user is disabled."))
    assert wrongpass.kind is ErrorKind.AUTHENTICATION_FAILED
    status = render_status(attempt(result(failed(A, wrongpass), error=wrongpass, blocking=A.address)), None)
    assert summary_of(status)[STALLED] == ("True", "AuthenticationFailed")
    assert PASSWORD not in json.dumps(status)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_real_connection_failure_with_credentials_leaks_nothing() -> None:
    # the real engine and redis-py's own error texts, against a port nobody listens on
    target = Target(
        (Endpoint("127.0.0.1", _closed_port()),),
        Mode.STANDALONE,
        credentials=Credentials("admin", PASSWORD),
        timeout=1.0,
    )
    sync_result = await sync(LIB, target)
    assert sync_result.error is not None and sync_result.error.kind is ErrorKind.CONNECTION_FAILED
    status = render_status(attempt(sync_result, retry_in=1), None)
    assert status["nodes"][0]["state"] == "Unreachable"
    assert summary_of(status)[RECONCILING] == ("True", WITH_RETRY)
    assert PASSWORD not in json.dumps(status)
    assert "admin" not in json.dumps(status)


# --- what the consumers conclude (ecosystem-contract §b) --------------------------------------------------------------


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus Compute() for a custom resource (cli-utils pkg/kstatus/status: generic rules, in order)."""
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    if "generation" in meta and "observedGeneration" in status and status["observedGeneration"] != meta["generation"]:
        return "InProgress"
    conditions = status.get("conditions") or []
    if any(c["type"] == "Reconciling" and c["status"] == "True" for c in conditions):
        return "InProgress"
    if any(c["type"] == "Stalled" and c["status"] == "True" for c in conditions):
        return "Failed"
    ready = find(conditions, "Ready")
    if ready is not None:
        return "Current" if ready["status"] == "True" else "InProgress"
    return "Current"


def kubectl_wait_ready(obj: Mapping[str, Any]) -> bool:
    """``kubectl wait --for=condition=Ready`` (checkCondition: case-insensitive, per-condition observedGeneration)."""
    generation = obj["metadata"].get("generation")
    status = obj.get("status") or {}
    for c in status.get("conditions") or []:
        if c["type"].lower() != "ready":
            continue
        observed = c.get("observedGeneration", status.get("observedGeneration"))
        if generation is not None and observed is not None and observed < generation:
            return False
        return bool(c["status"].lower() == "true")
    return False


def obj(generation: int, status: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("make", "expected", "ready"),
    [
        (lambda: attempt(loaded(), generation=3), "Current", True),
        (lambda: attempt(idle(), generation=3), "Current", True),
        (lambda: attempt(transient(), generation=3, retry_in=1), "InProgress", False),
        (lambda: attempt(compile_error(), generation=3), "Failed", False),
        (lambda: attempt(name_conflict(), generation=3), "Failed", False),
        (lambda: attempt(failure=Failure("SecretNotFound", "x", permanent=True), library=None, generation=3), "Failed", False),
        (lambda: attempt(failure=Failure("KubernetesApiError", "x", permanent=False), library=None, generation=3), "InProgress", False),
        (lambda: attempt(generation=3, in_progress=True), "InProgress", False),
        (lambda: paused_attempt(generation=3, paused=True), "Current", False),
    ],
    ids=["verified", "idle", "transient", "compile-error", "name-conflict", "secret-missing", "api-error",
         "in-progress", "paused"],
)  # fmt: skip
def test_what_kstatus_and_kubectl_wait_conclude(make: Any, expected: str, ready: bool) -> None:
    status = json.loads(json.dumps(render_status(make(), None)))
    assert kstatus(obj(3, status)) == expected
    assert kubectl_wait_ready(obj(3, status)) is ready


def test_a_new_generation_is_in_progress_until_observed() -> None:
    status = render_status(attempt(idle(), generation=3), None)
    assert kstatus(obj(4, status)) == "InProgress"  # the user just applied generation 4
    assert not kubectl_wait_ready(obj(4, status))


def test_a_brand_new_object_is_in_progress() -> None:
    crd_default = {"observedGeneration": -1}
    assert kstatus(obj(1, crd_default)) == "InProgress"
    assert kstatus(obj(1, None)) == "Current"  # why the CRD defaults status (kstatus rule 6)


def test_discovery_failure_does_not_keep_showing_the_last_good_primaries() -> None:
    from redis_functions_operator.redis.errors import ErrorKind, NodeError
    from redis_functions_operator.redis.sync import SyncResult

    previous = render_status(attempt(loaded(), generation=1), None)
    assert previous["readyPrimaries"] == "3/3"
    down = SyncResult("mylib", "0" * 64, None, (), error=NodeError(ErrorKind.CONNECTION_FAILED, "no seed answered"))
    status = render_status(attempt(down, generation=1), previous)
    assert status["readyPrimaries"] == "0/3"
    assert {n["state"] for n in status["nodes"]} == {"Unknown"}
    assert all("no seed answered" in n["error"] for n in status["nodes"])
