"""``reconcile/decide.py``: the controller's pure decisions — the next visit, the events, the tokens."""

from __future__ import annotations

import random
from typing import Any

import pytest

from redis_functions_operator.library import Failure, Library, vet
from redis_functions_operator.reconcile import decide, schedule
from redis_functions_operator.reconcile.decide import Ending, next_visit
from redis_functions_operator.reconcile.spec import (
    DEFAULT_RESYNC_SECONDS,
    RECONCILE_REQUEST_ANNOTATION,
    Controls,
    ManagementPolicy,
    parse_spec,
)
from redis_functions_operator.reconcile.status import Attempt, render_status
from redis_functions_operator.redis.connect import Endpoint, Mode
from redis_functions_operator.redis.errors import ErrorKind, NodeError
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult
from redis_functions_operator.redis.topology import Node, Role, Topology

CODE = "#!lua name=mylib\nredis.register_function('f1', function() return 1 end)\n"
LIB: Library = vet(CODE).library
SHA = LIB.sha256
OLD = "0" * 64
A = Node(Endpoint("10.0.0.1", 6379), Role.PRIMARY, shard="id-a")
B = Node(Endpoint("10.0.0.2", 6379), Role.PRIMARY, shard="id-b")
TOPOLOGY = Topology(Mode.CLUSTER, (A, B), ())
REFUSED = NodeError(ErrorKind.CONNECTION_FAILED, "Connection refused")
COMPILE = NodeError(ErrorKind.COMPILE_ERROR, "Error compiling function")
NOW = "2025-01-01T00:00:00Z"


def spec(**changes: Any) -> Any:
    return parse_spec({"code": CODE, "target": {"endpoints": ["redis:6379"]}, **changes})


def result(*nodes: NodeResult, error: NodeError | None = None) -> SyncResult:
    return SyncResult(LIB.name, SHA, TOPOLOGY, nodes, error=error)


def held(node: Node, outcome: Outcome = Outcome.UNCHANGED, before: str | None = SHA) -> NodeResult:
    return NodeResult(node, outcome, before_sha256=before, after_sha256=SHA)


def drifted(node: Node, before: str | None = None) -> NodeResult:
    return NodeResult(node, Outcome.DRIFTED, before_sha256=before, after_sha256=before)


def failed(node: Node, error: NodeError) -> NodeResult:
    return NodeResult(node, Outcome.FAILED, error=error)


# --- the next visit: the table --------------------------------------------------------------------------------------

HOUR = 3600.0
PERMANENT = [
    Ending.SPEC_ERROR,
    Ending.LIBRARY_REFUSED,
    Ending.RESOURCE_CONFLICT,
    Ending.LOST_DURING_LOAD,
    Ending.SMOKE_TEST_FAILED,
    Ending.PERMANENT,
]


def test_every_ending_is_in_the_table() -> None:
    pinned = {Ending.VERIFIED, Ending.DRIFT_LEFT, Ending.TRANSIENT, Ending.API_ERROR, Ending.MISSING_REFERENCE}
    assert pinned | set(PERMANENT) | {Ending.ELDER_LOOKUP} == set(Ending)


@pytest.mark.parametrize("ending", PERMANENT)
@pytest.mark.parametrize(("resync", "delay"), [(5.0, 300.0), (60.0, 300.0), (300.0, 300.0), (HOUR, HOUR)])
def test_a_permanent_failure_waits_the_resync_interval_at_least_five_minutes(
    ending: Ending, resync: float, delay: float
) -> None:
    # a compile error, an unsafe library, a resource conflict, a node lost during load: the same rule
    assert next_visit(ending, 0, resync) == (delay, 1)
    assert next_visit(ending, 7, resync) == (delay, 8)


@pytest.mark.parametrize("ending", PERMANENT)
def test_without_a_parsed_spec_the_default_interval_stands_in(ending: Ending) -> None:
    assert schedule.DEFAULT_RESYNC_SECONDS == DEFAULT_RESYNC_SECONDS == 60.0
    assert next_visit(ending, 0, None) == (schedule.PERMANENT_FLOOR, 1) == (300.0, 1)


@pytest.mark.parametrize("ending", [Ending.TRANSIENT, Ending.API_ERROR])
@pytest.mark.parametrize(
    ("resync", "delays"),
    [(HOUR, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]), (10.0, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0])],
)
def test_a_transient_failure_backs_off_to_the_cap(ending: Ending, resync: float, delays: list[float]) -> None:
    got, failures = [], 0
    for _ in delays:
        delay, failures = next_visit(ending, failures, resync)
        got.append(delay)
    assert got == delays and failures == len(delays)


@pytest.mark.parametrize(
    ("resync", "delays"),
    [(HOUR, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]), (5.0, [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0])],
)
def test_a_missing_reference_backs_off_to_thirty_seconds(resync: float, delays: list[float]) -> None:
    got, failures = [], 0
    for _ in delays:
        delay, failures = next_visit(Ending.MISSING_REFERENCE, failures, resync)
        got.append(delay)
    assert got == delays and failures == len(delays)


@pytest.mark.parametrize("ending", [Ending.VERIFIED, Ending.DRIFT_LEFT])
@pytest.mark.parametrize("resync", [5.0, 60.0, HOUR])
def test_success_and_drift_left_as_found_resync_with_jitter_and_reset_the_count(ending: Ending, resync: float) -> None:
    rng = random.Random(3)
    for failures in (0, 1, 12):
        delay, after = next_visit(ending, failures, resync, rng)
        assert resync * 0.9 <= delay <= resync * 1.1
        assert after == 0


def test_an_elder_still_looking_is_a_moment_and_not_a_failure() -> None:
    assert next_visit(Ending.ELDER_LOOKUP, 3, HOUR) == (schedule.ELDER_LOOKUP_WAIT, 3) == (0.2, 3)


def test_the_workers_own_waits_come_from_the_schedule() -> None:
    assert schedule.KUBERNETES_UNAVAILABLE_WAIT == 5.0
    assert schedule.UNEXPECTED_ERROR_WAIT == 30.0


def test_how_a_sync_ended() -> None:
    assert decide.ending_of(result(held(A), held(B))) is Ending.VERIFIED
    assert decide.ending_of(result(held(A), drifted(B))) is Ending.DRIFT_LEFT
    assert decide.ending_of(result(held(A), failed(B, REFUSED), error=REFUSED)) is Ending.TRANSIENT
    assert decide.ending_of(result(failed(A, COMPILE), error=COMPILE)) is Ending.PERMANENT
    # drifted and unreadable: not "left as found", the read failed
    assert decide.ending_of(result(drifted(A), failed(B, REFUSED), error=REFUSED)) is Ending.TRANSIENT
    lost = NodeError(ErrorKind.LOST_DURING_LOAD, "gone")
    assert decide.ending_of(result(failed(A, lost), error=lost)) is Ending.TRANSIENT  # the controller counts those


# --- the visit's small decisions ------------------------------------------------------------------------------------


def test_base_attempt_carries_what_the_spec_says() -> None:
    s = spec(version="1.2.0", driftPolicy="Report", tests=[{"name": "one", "function": "f1", "expect": {"reply": 1}}])
    base = decide.base_attempt(4, NOW, Controls(), s)
    assert (base.generation, base.now, base.version, base.test_names) == (4, NOW, "1.2.0", ("one",))
    assert base.drift_policy is s.drift_policy and base.reports_drift
    assert decide.base_attempt(4, NOW, Controls()) == Attempt(generation=4, now=NOW, controls=Controls())


@pytest.mark.parametrize(
    ("observed", "announce"), [(None, False), (-1, False), (3, False), (2, True)]
)  # fmt: skip
def test_a_rollout_is_announced_only_for_a_live_library(observed: int | None, announce: bool) -> None:
    previous = {} if observed is None else {"observedGeneration": observed}
    assert decide.announces_rollout(previous, 3) is announce


def test_two_losses_stop_sending_and_the_message_says_how_to_retry() -> None:
    assert not decide.lost_too_often(["10.0.0.1:6379"])
    assert decide.lost_too_often(["10.0.0.1:6379", "10.0.0.2:6379"])
    failure = decide.lost_failure(["10.0.0.1:6379", "10.0.0.2:6379"])
    assert failure.reason == "NodeLostDuringLoad" and failure.permanent
    assert failure.message.startswith("not sent again: 10.0.0.1:6379 and then 10.0.0.2:6379 stopped answering")
    assert RECONCILE_REQUEST_ANNOTATION in failure.message


def test_conflict_and_api_failures() -> None:
    conflict = decide.conflict_failure("mylib", ("ns", "elder"))
    assert conflict.reason == "ResourceConflict" and conflict.permanent
    assert conflict.message.startswith("library mylib on this Redis is managed by ns/elder (the oldest object")
    api = decide.reference_api_failure(503, "Service Unavailable")
    assert api == Failure("KubernetesApiError", "reading a referenced object: 503 Service Unavailable", permanent=False)


def test_check_library_against_the_spec() -> None:
    assert decide.check_library(CODE.encode(), spec()) == LIB
    assert decide.check_library_if_known(CODE.encode(), spec()) == LIB  # vetted just above
    mismatch = decide.check_library(CODE.encode(), spec(libraryName="other"))
    assert isinstance(mismatch, Failure) and mismatch.reason == "LibraryNameMismatch"
    broken = decide.check_library(b"no shebang", spec())
    assert broken == Failure("InvalidLibrary", "line 1: Missing library metadata", permanent=True)


# --- events ---------------------------------------------------------------------------------------------------------


def previous_with(failure: Failure) -> dict[str, Any]:
    return dict(render_status(Attempt(generation=1, now=NOW, failure=failure), {}))


def test_a_failure_event_only_when_the_ready_reason_changes() -> None:
    failure = Failure("SecretNotFound", "secret s not found", permanent=True)
    assert decide.failure_event({}, failure) == decide.Event("Warning", "SecretNotFound", "secret s not found")
    assert decide.failure_event(previous_with(failure), failure) is None
    other = Failure("InvalidSpec", "bad", permanent=True)
    assert decide.failure_event(previous_with(failure), other) == decide.Event("Warning", "InvalidSpec", "bad")


def test_loaded_then_updated_events() -> None:
    s = spec(version="1.4.0")
    first = result(held(A, Outcome.LOADED, before=None), held(B, Outcome.LOADED, before=None))
    attempt = Attempt(generation=1, now=NOW, library=LIB, result=first)
    [event] = decide.sync_events(s, LIB, first, {}, attempt, [])
    assert event == decide.Event(
        "Normal", "Loaded", f"library mylib version 1.4.0 (sha256 {SHA[:12]}) loaded on 2/2 primaries"
    )
    update = result(held(A, Outcome.LOADED, before=OLD), held(B))
    [event] = decide.sync_events(spec(), LIB, update, {}, attempt, [])
    assert event == decide.Event("Normal", "Updated", f"library mylib (sha256 {SHA[:12]}) updated on 1/2 primaries")


def test_drift_repaired_event_names_the_nodes_and_the_wake_reason() -> None:
    fixed = result(held(A, Outcome.REPAIRED, before=None), held(B, Outcome.REPAIRED, before=OLD))
    attempt = Attempt(generation=1, now=NOW, library=LIB, result=fixed)
    [event] = decide.sync_events(spec(), LIB, fixed, {}, attempt, ["10.0.0.1:6379 restarted"])
    assert event == decide.Event(
        "Normal",
        "DriftRepaired",
        "library mylib repaired on 10.0.0.1:6379 (missing), 10.0.0.2:6379 (held other code) "
        "after: 10.0.0.1:6379 restarted",
    )


def test_a_warning_when_the_ready_reason_changes_but_not_for_drift() -> None:
    down = result(held(A), failed(B, REFUSED), error=REFUSED)
    attempt = Attempt(generation=1, now=NOW, library=LIB, result=down, retry_in=1.0)
    [event] = decide.sync_events(spec(), LIB, down, {}, attempt, [])
    assert (event.type, event.reason) == ("Warning", "ConnectionFailed")
    previous = dict(render_status(attempt, {}))
    assert decide.sync_events(spec(), LIB, down, previous, attempt, []) == []  # same reason: said already
    left = result(held(A), drifted(B))
    report = Attempt(
        generation=1, now=NOW, library=LIB, result=left, drift_policy=spec(driftPolicy="Report").drift_policy
    )
    assert decide.sync_events(spec(), LIB, left, {}, report, []) == []  # drift_event says it, per primary


def test_the_drift_event_names_only_the_newly_drifted() -> None:
    left = result(drifted(A), drifted(B, before=OLD))
    observe = Attempt(generation=1, now=NOW, library=LIB, result=left, management_policy=ManagementPolicy.OBSERVE)
    event = decide.drift_event([left.nodes[1]], left, observe, ["poll"])
    assert event.type == "Warning" and event.reason == "Drifted"
    assert "10.0.0.2:6379" in event.message and "10.0.0.1:6379" not in event.message
    assert " after: poll; left as found: managementPolicy Observe" in event.message


# --- tokens ---------------------------------------------------------------------------------------------------------


def test_state_of_and_its_metric_outcome() -> None:
    ok = result(held(A), held(B))
    cases = {
        "paused": Attempt(generation=1, now=NOW, controls=Controls(paused=True)),
        "reconciling": Attempt(generation=1, now=NOW, in_progress=True),
        "ready": Attempt(generation=1, now=NOW, result=ok),
        "drifted": Attempt(generation=1, now=NOW, result=result(held(A), drifted(B))),
        "stalled": Attempt(generation=1, now=NOW, failure=Failure("InvalidSpec", "bad", permanent=True)),
    }
    for state, attempt in cases.items():
        assert decide.state_of(attempt) == state
    assert decide.state_of(Attempt(generation=1, now=NOW, failure=Failure("X", "y", permanent=False))) == "reconciling"
    outcomes = {s: decide.outcome_of_state(s) for s in ("ready", "reconciling", "stalled", "paused", "drifted", "?")}
    assert outcomes == {
        "ready": "verified",
        "reconciling": "transient",
        "stalled": "permanent",
        "paused": "paused",
        "drifted": "drifted",
        "?": "error",
    }


def test_trigger_token_changes_with_generation_and_annotations_only() -> None:
    body: dict[str, Any] = {"metadata": {"uid": "u", "generation": 1, "annotations": {}}, "status": {"x": 1}}
    token = decide.trigger_token(body)
    assert decide.trigger_token({**body, "status": {"x": 2}}) == token
    assert decide.trigger_token({"metadata": {**body["metadata"], "generation": 2}}) != token
    requested = {**body["metadata"], "annotations": {RECONCILE_REQUEST_ANNOTATION: "now"}}
    assert decide.trigger_token({"metadata": requested}) != token
    assert decide.trigger_token({"metadata": {**body["metadata"], "deletionTimestamp": NOW}}) != token
