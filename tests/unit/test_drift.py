"""``driftPolicy`` and ``managementPolicy`` in the reconcile layer (``reconcile/drift.py``, ``reconcile/status.py``):
when a reconcile may write, what the status says while drift is left as found, and what kstatus, ``kubectl wait``
and Argo CD's health check conclude from it (README "Drift policy")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from redis_functions_operator.library import Failure
from redis_functions_operator.reconcile import drift
from redis_functions_operator.reconcile.conditions import DRIFTED, READY, RECONCILING, STALLED, find
from redis_functions_operator.reconcile.spec import (
    Controls,
    DriftPolicy,
    ManagementPolicy,
    SpecError,
    parse_spec,
)
from redis_functions_operator.reconcile.status import (
    DRIFTED_REASON,
    IN_SYNC,
    VERIFIED,
    WITH_RETRY,
    Attempt,
    desired_conditions,
    render_status,
    status_changed,
)
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult
from tests.unit.test_status import (
    OLD_SHA,
    REFUSED,
    SHA,
    T0,
    T1,
    T2,
    A,
    B,
    C,
    attempt,
    crd_status_schema,
    failed,
    idle,
    kstatus,
    kubectl_wait_ready,
    obj,
    ok,
    result,
    schema_violations,
    summary_of,
)


def reporting(sync_result: SyncResult | None = None, **kw: Any) -> Attempt:
    """An attempt of a ``driftPolicy: Report`` object."""
    return attempt(sync_result, drift_policy=DriftPolicy.REPORT, **kw)


def observing(sync_result: SyncResult | None = None, **kw: Any) -> Attempt:
    """An attempt of a ``managementPolicy: Observe`` object."""
    return attempt(sync_result, management_policy=ManagementPolicy.OBSERVE, **kw)


def drifted_node(node: Any, held: str | None) -> NodeResult:
    return NodeResult(node, Outcome.DRIFTED, before_sha256=held, after_sha256=held)


def flushed() -> SyncResult:
    """A check after FUNCTION FLUSH on B: A and C hold the code, B has no library, nothing was written."""
    return result(ok(A), drifted_node(B, None), ok(C))


def replaced() -> SyncResult:
    """B lost the library, C holds other code."""
    return result(ok(A), drifted_node(B, None), drifted_node(C, OLD_SHA))


# --- the spec --------------------------------------------------------------------------------------------------------


def _spec(**fields: Any) -> dict[str, Any]:
    return {"code": "#!lua name=x\n", "target": {"endpoints": ["redis:6379"]}, **fields}


def test_policies_default_to_repair_and_full() -> None:
    spec = parse_spec(_spec())
    assert (spec.drift_policy, spec.management_policy) == (DriftPolicy.REPAIR, ManagementPolicy.FULL)


def test_policies_parse() -> None:
    spec = parse_spec(_spec(driftPolicy="Report", managementPolicy="Observe"))
    assert (spec.drift_policy, spec.management_policy) == (DriftPolicy.REPORT, ManagementPolicy.OBSERVE)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("driftPolicy", "report", "spec.driftPolicy 'report' is not Repair or Report"),
        ("managementPolicy", "ObserveOnly", "spec.managementPolicy 'ObserveOnly' is not Full or Observe"),
    ],
)
def test_a_bad_policy_is_a_spec_error(field: str, value: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(**{field: value}))


# --- when a reconcile may write ---------------------------------------------------------------------------------------


def _may_write(
    previous: dict[str, Any],
    drift_policy: DriftPolicy = DriftPolicy.REPORT,
    management: ManagementPolicy = ManagementPolicy.FULL,
    generation: int = 2,
    sha: str = SHA,
    request: str | None = None,
) -> bool:
    return drift.may_write(drift_policy, management, previous, generation, sha, request)


APPLIED = {"lastApplied": drift.applied_marker(2, SHA, None)}


def test_repair_always_writes() -> None:
    assert _may_write(APPLIED, DriftPolicy.REPAIR)


def test_observe_never_writes() -> None:
    assert not _may_write({}, DriftPolicy.REPAIR, ManagementPolicy.OBSERVE)
    assert not _may_write({}, DriftPolicy.REPORT, ManagementPolicy.OBSERVE)


def test_report_writes_until_this_spec_was_verified_everywhere() -> None:
    assert _may_write({})  # never loaded (a new object, or one switched to Report: its spec changed)
    assert not _may_write(APPLIED)  # loaded: drift is reported from now on


@pytest.mark.parametrize(
    "change",
    [
        {"generation": 3},  # the spec changed
        {"sha": OLD_SHA},  # the code changed without a new generation (a ConfigMap edit)
        {"request": "2026-01-01T00:00:00Z"},  # reconcile-requested-at asks
    ],
    ids=["new-generation", "new-code", "reconcile-requested-at"],
)
def test_report_writes_again_when_an_input_changes(change: dict[str, Any]) -> None:
    assert _may_write(APPLIED, **change)


def test_a_handled_request_is_not_handled_twice() -> None:
    previous = {"lastApplied": drift.applied_marker(2, SHA, "r1")}
    assert not _may_write(previous, request="r1")
    assert _may_write(previous, request="r2")


# --- the status while drifted -----------------------------------------------------------------------------------------


def test_drift_left_as_found_is_not_ready_and_stalled() -> None:
    status = render_status(reporting(flushed()), None)
    assert summary_of(status) == {
        READY: ("False", DRIFTED_REASON),
        RECONCILING: ("False", DRIFTED_REASON),
        STALLED: ("True", DRIFTED_REASON),
        DRIFTED: ("True", DRIFTED_REASON),
    }
    drifted = find(status["conditions"], DRIFTED)
    assert drifted is not None
    assert drifted["message"] == "10.0.0.2:6379 lacks library mylib"
    ready = find(status["conditions"], READY)
    assert ready is not None
    assert ready["message"].startswith("10.0.0.2:6379 lacks library mylib; 2/3 primaries hold library mylib")
    assert "reconcile-requested-at" in ready["message"] and "driftPolicy Report" in ready["message"]
    assert status["readyPrimaries"] == "2/3"
    states = {n["address"]: n["state"] for n in status["nodes"] if n["role"] == "primary"}
    assert states == {A.address: "Verified", B.address: "Missing", C.address: "Verified"}


def test_the_drifted_condition_names_each_node_and_what_differs() -> None:
    status = render_status(reporting(replaced()), None)
    drifted = find(status["conditions"], DRIFTED)
    assert drifted is not None
    assert drifted["message"] == (
        f"10.0.0.2:6379 lacks library mylib; 10.0.0.3:6379 holds other code (sha256 {OLD_SHA[:12]}..., "
        f"expected {SHA[:12]}...)"
    )
    entries = {n["address"]: n for n in status["nodes"]}
    assert entries[C.address]["state"] == "Drifted"
    assert entries[C.address]["codeSha256"] == OLD_SHA  # what the node holds, as read
    assert "codeSha256" not in entries[B.address]


def test_observe_says_it_never_writes() -> None:
    status = render_status(observing(flushed()), None)
    assert summary_of(status)[STALLED] == ("True", DRIFTED_REASON)
    ready = find(status["conditions"], READY)
    assert ready is not None and "managementPolicy Observe never writes to Redis" in ready["message"]
    assert "lastApplied" not in status  # nothing is ever applied by an observer


def test_in_sync_reports_no_drift() -> None:
    status = render_status(reporting(idle()), None)
    assert summary_of(status) == {
        READY: ("True", VERIFIED),
        RECONCILING: ("False", VERIFIED),
        STALLED: ("False", VERIFIED),
        DRIFTED: ("False", IN_SYNC),
    }


def test_unreadable_primary_makes_drift_unknown_and_retries() -> None:
    status = render_status(reporting(result(ok(A), failed(B, REFUSED), ok(C), error=REFUSED), retry_in=2), None)
    assert summary_of(status)[DRIFTED] == ("Unknown", "ConnectionFailed")
    assert summary_of(status)[RECONCILING] == ("True", WITH_RETRY)


def test_drift_next_to_an_unreadable_primary_is_still_named() -> None:
    mixed = result(ok(A), failed(B, REFUSED), drifted_node(C, None), error=REFUSED)
    status = render_status(reporting(mixed, retry_in=2), None)
    assert summary_of(status)[DRIFTED] == ("True", DRIFTED_REASON)
    assert summary_of(status)[RECONCILING] == ("True", WITH_RETRY)  # the read is retried; the drift is not repaired


def test_repair_mode_writes_no_drifted_condition() -> None:
    status = render_status(attempt(idle()), None)
    assert find(status["conditions"], DRIFTED) is None
    assert "lastApplied" not in status


def test_a_failure_before_redis_leaves_drift_unknown() -> None:
    failure = Failure("SecretNotFound", "Secret 'x' not found", permanent=True)
    conditions = {c.type: c for c in desired_conditions(reporting(failure=failure, library=None))}
    assert conditions[DRIFTED].status is None


def test_never_reconciling_and_stalled_together() -> None:
    for case in (flushed(), replaced()):
        true = {c.type for c in desired_conditions(reporting(case)) if c.status}
        assert not {RECONCILING, STALLED} <= true


# --- lastApplied ------------------------------------------------------------------------------------------------------


def test_last_applied_records_the_inputs_verified_everywhere() -> None:
    controls = Controls(reconcile_requested_at="r1")
    status = render_status(reporting(idle(), generation=4, controls=controls), None)
    assert status["lastApplied"] == {"generation": 4, "codeSha256": SHA, "reconcileRequestedAt": "r1"}
    assert not drift.may_write(DriftPolicy.REPORT, ManagementPolicy.FULL, status, 4, SHA, "r1")


def test_last_applied_is_kept_while_drifted_and_not_moved_by_a_failed_rollout() -> None:
    applied = render_status(reporting(idle(), generation=4, now=T0), None)
    drifted = render_status(reporting(flushed(), generation=4, now=T1), applied)
    assert drifted["lastApplied"] == applied["lastApplied"]
    retrying = render_status(reporting(result(ok(A), failed(B, REFUSED), error=REFUSED), generation=5), drifted)
    assert retrying["lastApplied"] == applied["lastApplied"]  # generation 5 is not loaded everywhere yet


def test_switching_to_repair_drops_last_applied() -> None:
    applied = render_status(reporting(idle()), None)
    repair = render_status(attempt(idle(), generation=2), applied)
    assert "lastApplied" not in repair
    assert status_changed(repair, applied)


def test_a_lasting_drift_is_not_rewritten_on_every_resync() -> None:
    first = render_status(reporting(flushed(), now=T0, retry_in=60), None)
    second = render_status(reporting(flushed(), now=T1, retry_in=57), first)
    assert second == first
    assert not status_changed(second, first)


# --- events and the metric count a drift once ----------------------------------------------------------------------


def test_newly_drifted_counts_each_drift_once() -> None:
    before = render_status(reporting(idle(), now=T0), None)
    assert [n.address for n in drift.newly_drifted(flushed(), before["nodes"])] == [B.address]
    during = render_status(reporting(flushed(), now=T1), before)
    assert drift.newly_drifted(flushed(), during["nodes"]) == []  # the same drift, resync after resync
    assert [n.address for n in drift.newly_drifted(replaced(), during["nodes"])] == [C.address]  # a new one
    later = render_status(reporting(idle(), now=T2), during)
    assert [n.address for n in drift.newly_drifted(flushed(), later["nodes"])] == [B.address]  # fixed, then again


# --- the CRD and what the consumers conclude ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: reporting(flushed(), controls=Controls(reconcile_requested_at="r")),
        lambda: observing(replaced()),
        lambda: reporting(idle(), controls=Controls(reconcile_requested_at="r")),
    ],
    ids=["report-drifted", "observe-drifted", "report-in-sync"],
)
def test_every_field_is_declared_in_the_crd(make: Any) -> None:
    status = json.loads(json.dumps(render_status(make(), None)))
    assert schema_violations(status, crd_status_schema()) == []


def test_crd_declares_the_policies_with_their_defaults() -> None:
    import yaml

    from tests.unit.test_status import CRD_PATH

    crd = yaml.safe_load(CRD_PATH.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["storage"]]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert (spec["driftPolicy"]["enum"], spec["driftPolicy"]["default"]) == (["Repair", "Report"], "Repair")
    assert (spec["managementPolicy"]["enum"], spec["managementPolicy"]["default"]) == (["Full", "Observe"], "Full")


@pytest.mark.parametrize("make", [lambda: reporting(flushed()), lambda: reporting(replaced())])
def test_kstatus_says_failed_and_kubectl_wait_does_not_succeed(make: Any) -> None:
    """Drift left as found is terminal until a person acts: Helm 4 --wait and Flux stop at once (Failed), with the
    message naming the nodes; kubectl wait --for=condition=Ready does not succeed."""
    status = json.loads(json.dumps(render_status(make(), None)))
    assert kstatus(obj(1, status)) == "Failed"
    assert not kubectl_wait_ready(obj(1, status))
