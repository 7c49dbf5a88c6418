"""An attempt's outcome → the object's ``status``: conditions, per-node detail, and nothing secret.

The rules, in one place (``tests/unit/test_status.py`` pins each):

=====================================  =========  ===========  =======  ==================================
situation                              Ready      Reconciling  Stalled  ReconciliationPaused
=====================================  =========  ===========  =======  ==================================
working on a new generation            False      True         False    —
every primary verified                 True       False        False    —
transient failure (will retry)         False      True         False    —
permanent failure (needs a change)     False      False        True     —
drift left as found (Report, Observe)  False      False        True     —
paused or unmanaged                    —          False        False    True
=====================================  =========  ===========  =======  ==================================

Drift left as found is Stalled, reason ``Drifted``: the declared state does not hold (so Ready=False, and
``kubectl wait`` does not succeed), nothing is in progress (Reconciling=False), and only a person can change that
(a spec change, ``reconcile-requested-at``, or someone reloading the library), which is what Stalled means to
kstatus: Helm 4 ``--wait`` and Flux fail fast with the message naming the nodes instead of waiting out their
timeout, and Argo CD shows Degraded. With ``driftPolicy: Report`` or ``managementPolicy: Observe`` a ``Drifted``
condition (abnormal-true) also says, per primary, what differs: True while drifted, False once every primary
holds the code, Unknown when not every primary could be read. README "Drift policy" has the reasoning.

Reasons are PascalCase and stable: ``Verified``, ``Progressing``, ``ProgressingWithRetry``, the engine's
:class:`ErrorKind` values (``CompileError``, ``FunctionNameConflict``, ``AuthenticationFailed``...), and the spec
layer's (``InvalidSpec``, ``SecretNotFound``...). ``observedGeneration`` is always the generation acted on, also
while paused, so kstatus never waits on an object the operator has seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis_functions_operator.library import Failure, Library
from redis_functions_operator.library.probes import ProbeOutcome
from redis_functions_operator.reconcile import drift
from redis_functions_operator.reconcile.conditions import (
    DRIFTED,
    PAUSED,
    READY,
    RECONCILING,
    STALLED,
    Condition,
    render_conditions,
)
from redis_functions_operator.reconcile.spec import Controls, DriftPolicy, ManagementPolicy
from redis_functions_operator.redis.errors import NodeError
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult

VERIFIED = "Verified"
PROGRESSING = "Progressing"
WITH_RETRY = "ProgressingWithRetry"
DRIFTED_REASON = "Drifted"
IN_SYNC = "InSync"

#: status.tests: the smoke tests run against the code (``library/probes.py``), with their result.
TESTS_FIELD = "tests"
PASSED = "Passed"
FAILED = "Failed"

#: status.functions lists at most this many (an object, status included, must fit etcd's 1.5 MiB request limit).
MAX_FUNCTIONS = 256

_UNREACHABLE_KINDS = {"ConnectionFailed", "Timeout", "TLSHandshakeFailed"}


@dataclass(frozen=True)
class Attempt:
    """What one reconcile learned; everything ``render_status`` needs."""

    generation: int
    now: str
    controls: Controls = field(default_factory=Controls)
    library: Library | None = None
    version: str | None = None
    result: SyncResult | None = None
    failure: Failure | None = None
    retry_in: float | None = None
    in_progress: bool = False  # a rollout is starting: write Reconciling before touching Redis
    drift_policy: DriftPolicy = DriftPolicy.REPAIR
    management_policy: ManagementPolicy = ManagementPolicy.FULL
    test_names: tuple[str, ...] = ()  # the spec's smoke tests, by name

    @property
    def reports_drift(self) -> bool:
        """Whether drift may be left as found (and so a Drifted condition is kept)."""
        return self.drift_policy is DriftPolicy.REPORT or self.management_policy is ManagementPolicy.OBSERVE

    @property
    def left_drifted(self) -> bool:
        """Every primary was read, and some lack the code: a check found drift it does not repair."""
        result = self.result
        return self.failure is None and result is not None and result.error is None and bool(result.drifted)

    @property
    def permanent(self) -> bool:
        if self.failure is not None:
            return self.failure.permanent
        return self.result is not None and self.result.permanent

    @property
    def ok(self) -> bool:
        return self.failure is None and self.result is not None and self.result.ok


def desired_conditions(attempt: Attempt) -> list[Condition]:
    conditions = _kstatus_conditions(attempt)
    ready = next((c for c in conditions if c.type == READY), None)
    if attempt.reports_drift and ready is not None:  # not while paused: nothing is read then
        conditions.append(drifted_condition(attempt, ready))
    return conditions


def drifted_condition(attempt: Attempt, ready: Condition) -> Condition:
    """True naming the drifted primaries; False once every primary holds the code; Unknown otherwise (not every
    primary could be read, or a rollout is under way), with the Ready reason."""
    result = attempt.result
    if attempt.failure is None and result is not None and result.drifted:
        return Condition(DRIFTED, True, DRIFTED_REASON, drift.describe(result))
    if attempt.ok:
        return Condition(DRIFTED, False, IN_SYNC, "every primary holds the code")
    return Condition(DRIFTED, None, ready.reason, "not every primary has been read")


def _kstatus_conditions(attempt: Attempt) -> list[Condition]:
    controls = attempt.controls
    if not controls.managed or controls.paused:
        reason = "Unmanaged" if not controls.managed else "Paused"
        message = (
            "annotation redisfunctions.dev/managed=false: the operator does not touch this library"
            if not controls.managed
            else "annotation redisfunctions.dev/pause-reconciliation=true: reconciliation is paused"
        )
        return [
            Condition(RECONCILING, False, reason, message),
            Condition(STALLED, False, reason, message),
            Condition(PAUSED, True, reason, message),
        ]
    if attempt.in_progress:
        message = f"loading generation {attempt.generation} on every primary"
        return [
            Condition(READY, False, PROGRESSING, message),
            Condition(RECONCILING, True, PROGRESSING, message),
            Condition(STALLED, False, PROGRESSING, message),
        ]
    if attempt.ok:
        assert attempt.result is not None
        message = summary(attempt.result)
        return [
            Condition(READY, True, VERIFIED, message),
            Condition(RECONCILING, False, VERIFIED, message),
            Condition(STALLED, False, VERIFIED, message),
        ]
    if attempt.left_drifted:
        assert attempt.result is not None
        message = (
            f"{drift.describe(attempt.result)}; {summary(attempt.result)}; "
            f"{drift.left_as_found(attempt.management_policy)}"
        )
        return [
            Condition(READY, False, DRIFTED_REASON, message),
            Condition(RECONCILING, False, DRIFTED_REASON, message),
            Condition(STALLED, True, DRIFTED_REASON, message),
        ]
    reason, message = failure_reason(attempt)
    if attempt.permanent:
        return [
            Condition(READY, False, reason, message),
            Condition(RECONCILING, False, reason, message),
            Condition(STALLED, True, reason, message),
        ]
    retry = f"; retrying in {_seconds(attempt.retry_in)}" if attempt.retry_in is not None else "; retrying"
    return [
        Condition(READY, False, reason, message + retry),
        Condition(RECONCILING, True, WITH_RETRY, message + retry),
        Condition(STALLED, False, WITH_RETRY, message + retry),
    ]


def failure_reason(attempt: Attempt) -> tuple[str, str]:
    """The decisive reason and a message naming the node(s) involved, with Redis' own words."""
    if attempt.failure is not None:
        return attempt.failure.reason, attempt.failure.message
    result = attempt.result
    assert result is not None
    error = result.error
    if error is None:
        failing = [n for n in result.nodes if not n.verified]
        if not failing:
            return "NoPrimaries", "no primary found"
        return PROGRESSING, f"{len(failing)} primaries not verified"
    where = result.blocking_node or _first_failing_address(result.nodes, error)
    location = f" on {where}" if where else ""
    message = f"{error.describe()}{location}"
    rolled_back = [n.address for n in result.nodes if n.outcome is Outcome.ROLLED_BACK]
    if rolled_back:
        message += f"; {', '.join(rolled_back)} put back to their previous code"
    elif result.permanent and any(n.outcome is Outcome.SKIPPED for n in result.nodes):
        message += "; no other primary was changed"
    others = [n for n in result.nodes if n.error is not None and n.error is not error]
    if others and not result.permanent:
        message += f" (and {len(others)} more)"
    return error.kind.value, message


def summary(result: SyncResult) -> str:
    total = len(result.nodes)
    sha = result.sha256[:12]
    return f"{result.verified_count}/{total} primaries hold library {result.library} (sha256 {sha}...)"


def render_status(attempt: Attempt, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full status to write. Fields from ``previous`` are carried over where this attempt learned nothing new
    (e.g. a paused object keeps its last per-node detail)."""
    previous = dict(previous or {})
    status: dict[str, Any] = {"observedGeneration": attempt.generation}
    status["conditions"] = render_conditions(
        desired_conditions(attempt), previous.get("conditions") or [], attempt.generation, attempt.now
    )
    library = attempt.library
    if library is not None:
        status["libraryName"] = library.name
        status["codeSha256"] = library.sha256
        status["functions"] = [{"name": f.name, "flags": list(f.flags)} for f in library.functions[:MAX_FUNCTIONS]]
    else:
        for key in ("libraryName", "codeSha256", "functions"):
            if key in previous:
                status[key] = previous[key]
    if library is not None and attempt.version is not None:
        status["version"] = attempt.version  # the version travels with the code it labels
    elif library is None and "version" in previous:
        status["version"] = previous["version"]
    result = attempt.result
    if result is not None and result.nodes:
        status["nodes"] = node_entries(result)
        status["readyPrimaries"] = f"{result.verified_count}/{len(result.nodes)}"
        # When this code version was first verified on every primary. Repairs of drift do not move it (they are
        # events and metrics), so a repair of 1000 libraries writes no status at all.
        new_version = result.ok and previous.get("codeSha256") != status.get("codeSha256")
        if new_version or ("lastSyncTime" not in previous and result.ok):
            status["lastSyncTime"] = attempt.now
        elif "lastSyncTime" in previous:
            status["lastSyncTime"] = previous["lastSyncTime"]
    elif result is not None and result.error is not None:
        # Discovery failed: say so per node instead of showing the last good "3/3" next to Ready=False.
        known = [n for n in previous.get("nodes") or [] if isinstance(n, dict) and n.get("role") == "primary"]
        note = f"{result.error.kind.value}: {result.error.describe()}"
        status["nodes"] = [
            {"address": n["address"], "role": "primary", "state": "Unknown", "error": note} for n in known
        ]
        status["readyPrimaries"] = f"0/{len(known)}"
        if "lastSyncTime" in previous:
            status["lastSyncTime"] = previous["lastSyncTime"]
    else:
        for key in ("nodes", "readyPrimaries", "lastSyncTime"):
            if key in previous:
                status[key] = previous[key]
    tests = _tests(attempt, previous)
    if tests:
        status[TESTS_FIELD] = tests
    applied = _applied(attempt, previous)
    if applied is not None:
        status[drift.APPLIED_FIELD] = applied
    if attempt.controls.reconcile_requested_at is not None:
        status["lastHandledReconcileAt"] = attempt.controls.reconcile_requested_at
    elif "lastHandledReconcileAt" in previous:
        status["lastHandledReconcileAt"] = previous["lastHandledReconcileAt"]
    return status


def _tests(attempt: Attempt, previous: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``status.tests``: the smoke tests of the last run, each with the code it ran against; kept while that code
    and those tests are the spec's (a resync runs none), dropped when the code changes or the tests go."""
    result, library = attempt.result, attempt.library
    if result is not None and result.probes and library is not None:
        return [_test_entry(outcome, library.sha256) for outcome in result.probes]
    kept = [t for t in previous.get(TESTS_FIELD) or [] if isinstance(t, Mapping)]
    if library is None:
        return [dict(t) for t in kept]
    if not attempt.test_names:
        return []
    return [dict(t) for t in kept if t.get("codeSha256") == library.sha256 and t.get("name") in attempt.test_names]


def _test_entry(outcome: ProbeOutcome, sha256: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": outcome.name,
        "result": PASSED if outcome.passed else FAILED,
        "node": outcome.node,
        "codeSha256": sha256,
    }
    if not outcome.passed:
        entry["reply"] = outcome.actual
    return entry


def smoke_tests_passed(previous: Mapping[str, Any], sha256: str, names: Sequence[str]) -> bool:
    """Whether every smoke test named in the spec has passed against this code (so a rollout need not run them
    again: a drift repair or a resync of proven code is not gated)."""
    passed = {
        t.get("name")
        for t in previous.get(TESTS_FIELD) or []
        if isinstance(t, Mapping) and t.get("result") == PASSED and t.get("codeSha256") == sha256
    }
    return set(names) <= passed


def _applied(attempt: Attempt, previous: Mapping[str, Any]) -> dict[str, Any] | None:
    """``status.lastApplied`` (``driftPolicy: Report`` only): these inputs once every primary is verified, else
    what it was."""
    if attempt.drift_policy is not DriftPolicy.REPORT or attempt.management_policy is ManagementPolicy.OBSERVE:
        return None
    if attempt.ok and attempt.library is not None:
        return drift.applied_marker(attempt.generation, attempt.library.sha256, attempt.controls.reconcile_requested_at)
    kept = previous.get(drift.APPLIED_FIELD)
    return dict(kept) if isinstance(kept, Mapping) else None


def node_entries(result: SyncResult) -> list[dict[str, Any]]:
    entries = [_node_entry(n) for n in result.nodes]
    if result.topology is not None:
        for replica in result.topology.replicas:
            entry: dict[str, Any] = {"address": replica.address, "role": "replica", "state": "Replica"}
            if replica.shard:
                entry["shard"] = replica.shard
            entries.append(entry)
    return entries


def _node_entry(node: NodeResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"address": node.address, "role": "primary", "state": node_state(node)}
    if node.node.shard:
        entry["shard"] = node.node.shard
    if node.node.slots:
        entry["slots"] = node.node.slots
    if node.after_sha256:
        entry["codeSha256"] = node.after_sha256
    if node.error is not None:
        entry["error"] = f"{node.error.kind.value}: {node.error.describe()}"
    return entry


def node_state(node: NodeResult) -> str:
    """The node's state now (what it did on the way is in events and metrics, so a rollout or a repair does not
    flip the status Loaded -> Verified one reconcile later)."""
    if node.verified:
        return VERIFIED
    if node.outcome is Outcome.DRIFTED:
        return drift.node_state(node)
    if node.error is not None and node.error.kind.value in _UNREACHABLE_KINDS:
        return "Unreachable"
    return {Outcome.SKIPPED: "Skipped", Outcome.ROLLED_BACK: "RolledBack"}.get(node.outcome, "Failed")


def status_changed(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether writing ``new`` would change anything (the status is written only when it does)."""
    return dict(new) != {k: v for k, v in dict(old or {}).items() if k in new or k in OWNED_FIELDS}


#: Every status field the operator owns: a field absent from a new status is removed when it is written.
OWNED_FIELDS = (
    "observedGeneration",
    "conditions",
    "libraryName",
    "version",
    "codeSha256",
    "functions",
    "readyPrimaries",
    "nodes",
    "lastSyncTime",
    "lastHandledReconcileAt",
    drift.APPLIED_FIELD,
    TESTS_FIELD,
)


def _first_failing_address(nodes: Sequence[NodeResult], error: NodeError) -> str | None:
    return next((n.address for n in nodes if n.error is error), None)


def _seconds(value: float | None) -> str:
    if value is None:
        return "a moment"
    return f"{value:.0f}s" if value >= 1 else f"{value:.1f}s"
