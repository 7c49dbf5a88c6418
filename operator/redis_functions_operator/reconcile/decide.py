"""The pure decisions of one reconcile: what the controller (``k8s/controller.py``) does with what it learned.

Nothing here does I/O or keeps state between calls (the library wing's vetting cache aside, keyed by the code's
sha256): the controller reads Kubernetes and Redis, calls these, and writes what they return. ``tests/unit/
test_decide.py`` pins them.

* :func:`next_visit` — how a visit ended (:class:`Ending`) → the delay until the next one, every delay taken from
  ``schedule.py``, and the new count of failures in a row;
* :func:`check_library` — the code, vetted before any server sees it, against the spec;
* the texts: :func:`lost_failure`, :func:`conflict_failure`, :func:`reference_api_failure`, and the events
  (:func:`failure_event`, :func:`sync_events`, :func:`drift_event`);
* the tokens: :func:`trigger_token` (what calls for a reconcile now), :func:`state_of` (the metrics' state),
  :func:`needs_cleanup` (whether the object carries the finalizer).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis_functions_operator.library import REFUSAL_PREFIX, Failure, Library, LibraryError, Vetting, vet, vetted
from redis_functions_operator.reconcile import drift, schedule
from redis_functions_operator.reconcile.conditions import READY, find
from redis_functions_operator.reconcile.spec import (
    RECONCILE_REQUEST_ANNOTATION,
    Controls,
    DeletionPolicy,
    LibrarySpec,
    ManagementPolicy,
    parse_controls,
)
from redis_functions_operator.reconcile.status import DRIFTED_REASON, Attempt, render_status
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult

#: Canary primaries lost during FUNCTION LOAD of one code version before that code is not sent again.
LOSSES_BEFORE_STOPPING = 2


# --- the next visit -------------------------------------------------------------------------------------------------


class Ending(enum.Enum):
    """How a visit ended, as far as the next visit is concerned."""

    VERIFIED = "verified"  # every primary holds the code
    DRIFT_LEFT = "drift left as found"  # driftPolicy Report / managementPolicy Observe: watched, not retried
    TRANSIENT = "transient Redis error"  # a node failing over, a timeout...
    PERMANENT = "permanent Redis error"  # a compile error on the canary, a failed smoke test, bad credentials...
    SPEC_ERROR = "spec error"
    MISSING_REFERENCE = "missing Secret/ConfigMap"
    API_ERROR = "Kubernetes API error reading a reference"
    LIBRARY_REFUSED = "library refused before loading"  # does not compile, unsafe, libraryName mismatch
    RESOURCE_CONFLICT = "resource conflict"  # an older object manages the library name on these servers
    LOST_DURING_LOAD = "lost during load"  # canaries stopped answering during FUNCTION LOAD: not sent again
    SMOKE_TEST_FAILED = "smoke tests failed before"  # same code and tests: not loaded again
    ELDER_LOOKUP = "an elder is still looking"  # an older claimant has not discovered its servers yet


_SUCCESS = frozenset({Ending.VERIFIED, Ending.DRIFT_LEFT})
_BACKOFF = frozenset({Ending.TRANSIENT, Ending.API_ERROR})


def next_visit(
    ending: Ending, failures_in_a_row: int, resync_seconds: float | None, rng: random.Random | None = None
) -> tuple[float, int]:
    """The delay until the next visit and the new count of failures in a row (0 after a success).

    ``resync_seconds`` is None when the spec could not be parsed: then no ``resyncInterval`` is known, and the
    default interval (``schedule.DEFAULT_RESYNC_SECONDS``) stands in — a permanent failure waits the 5-minute floor.
    A change to the spec wakes the object at once anyway."""
    resync = schedule.DEFAULT_RESYNC_SECONDS if resync_seconds is None else resync_seconds
    if ending is Ending.ELDER_LOOKUP:
        return schedule.ELDER_LOOKUP_WAIT, failures_in_a_row  # not a failure: a moment's wait
    if ending in _SUCCESS:
        return schedule.after_success(resync, rng), 0
    failures = failures_in_a_row + 1
    if ending in _BACKOFF:
        return schedule.after_transient(failures, resync), failures
    if ending is Ending.MISSING_REFERENCE:  # the reference may appear any moment (its creation wakes us too)
        return schedule.after_transient(failures, resync, schedule.MISSING_REFERENCE_CAP), failures
    return schedule.after_permanent(resync), failures


def ending_of(result: SyncResult) -> Ending:
    """How an engine sync or check ended."""
    if result.ok:
        return Ending.VERIFIED
    if result.error is None and result.drifted:
        return Ending.DRIFT_LEFT
    return Ending.PERMANENT if result.permanent else Ending.TRANSIENT


def base_attempt(generation: int, now: str, controls: Controls, spec: LibrarySpec | None = None) -> Attempt:
    """What every attempt of this visit shares: the generation, the time, the annotations, and what the spec says."""
    if spec is None:
        return Attempt(generation=generation, now=now, controls=controls)
    return Attempt(
        generation=generation, now=now, controls=controls, version=spec.version, drift_policy=spec.drift_policy,
        management_policy=spec.management_policy, test_names=tuple(t.name for t in spec.tests),
    )  # fmt: skip


def announces_rollout(previous: Mapping[str, Any], generation: int) -> bool:
    """Whether to write Reconciling before the new code goes out: an update of a live library. (A brand-new object
    already reads InProgress through observedGeneration -1; skipping the write halves the API calls at scale.)"""
    observed = previous.get("observedGeneration")
    return observed not in (None, -1) and observed != generation


def lost_too_often(lost: Sequence[str]) -> bool:
    return len(lost) >= LOSSES_BEFORE_STOPPING


def smoke_gate(library: Library, controls: Controls, spec: LibrarySpec) -> tuple[Any, ...]:
    """The inputs whose smoke tests, once failed on a canary, keep the code from being loaded again."""
    return (library.sha256, controls.reconcile_requested_at, spec.tests)


# --- vetting --------------------------------------------------------------------------------------------------------


def check_library(code: bytes, spec: LibrarySpec) -> Library | Failure:
    """Vet the code before any server sees it: run its load as FUNCTION LOAD would (the library wing's :func:`vet`,
    cached there by sha256, so a resync of a thousand unchanged libraries runs nothing)."""
    try:
        vetting = vet(code)
    except LibraryError as exc:
        return Failure(exc.reason, exc.failure.located)
    return _for_spec(vetting, spec)


def check_library_if_known(code: bytes, spec: LibrarySpec) -> Library | Failure | None:
    """:func:`check_library` when this code version was already vetted (no work, so no thread needed), else None."""
    vetting = vetted(code)
    return None if vetting is None else _for_spec(vetting, spec)


def _for_spec(vetting: Vetting, spec: LibrarySpec) -> Library | Failure:
    library = vetting.library
    if spec.library_name and spec.library_name != library.name:
        message = f"spec.libraryName is {spec.library_name!r} but the code's shebang names {library.name!r}"
        return Failure("LibraryNameMismatch", message, permanent=True)
    refusal = vetting.refusal
    if refusal is None:
        return library
    return Failure(refusal.reason, f"refused before loading ({REFUSAL_PREFIX[refusal.reason]}): {refusal.located}")


# --- failure texts --------------------------------------------------------------------------------------------------


def lost_failure(lost: Sequence[str]) -> Failure:
    message = (
        f"not sent again: {' and then '.join(lost)} stopped answering during FUNCTION LOAD of this code, so it may "
        f"crash the server; change the code, or set the annotation {RECONCILE_REQUEST_ANNOTATION} to try once more"
    )
    return Failure("NodeLostDuringLoad", message, permanent=True)


def conflict_failure(library_name: str, owner: tuple[str, str]) -> Failure:
    message = (
        f"library {library_name} on this Redis is managed by {owner[0]}/{owner[1]} (the oldest object "
        "claiming it, maybe through another address of the same servers); this object takes over if that "
        "one is deleted or points elsewhere"
    )
    return Failure("ResourceConflict", message)


def reference_api_failure(status: object, reason: object) -> Failure:
    return Failure("KubernetesApiError", f"reading a referenced object: {status} {reason}", permanent=False)


# --- events ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def failure_event(previous: Mapping[str, Any], failure: Failure) -> Event | None:
    """A Warning when a failure found before Redis changes the Ready reason (not again on every retry)."""
    old_ready = find(previous.get("conditions") or [], READY)
    if old_ready and old_ready.get("reason") == failure.reason:
        return None
    return Event("Warning", failure.reason, failure.message)


def sync_events(
    spec: LibrarySpec,
    library: Library,
    result: SyncResult,
    previous: Mapping[str, Any],
    attempt: Attempt,
    wake_reasons: Sequence[str],
) -> list[Event]:
    """The events of an engine sync or check, in order: Loaded or Updated, DriftRepaired, and a Warning when the
    Ready reason changes (not for Drifted: :func:`drift_event` says that, per newly drifted primary)."""
    events = []
    loaded = [n for n in result.nodes if n.outcome is Outcome.LOADED]
    repaired = [n for n in result.nodes if n.outcome is Outcome.REPAIRED]
    version = f"version {spec.version} " if spec.version else ""
    if loaded:
        updated = any(n.before_sha256 for n in loaded)
        message = (
            f"library {library.name} {version}(sha256 {library.sha256[:12]}) "
            f"{'updated' if updated else 'loaded'} on {len(loaded)}/{len(result.nodes)} primaries"
        )
        events.append(Event("Normal", "Updated" if updated else "Loaded", message))
    if repaired:
        details = ", ".join(
            f"{n.address} ({'missing' if not n.before_sha256 else 'held other code'})" for n in repaired
        )
        message = f"library {library.name} repaired on {details}{_after(wake_reasons)}"
        events.append(Event("Normal", "DriftRepaired", message))
    if not result.ok:
        old_ready = find(previous.get("conditions") or [], READY)
        new_ready = find(render_status(attempt, previous)["conditions"], READY)
        changed = new_ready and (not old_ready or old_ready.get("reason") != new_ready.get("reason"))
        if new_ready and changed and new_ready.get("reason") != DRIFTED_REASON:
            events.append(Event("Warning", str(new_ready["reason"]), str(new_ready["message"])))
    return events


def drift_event(
    newly: Sequence[NodeResult], result: SyncResult, attempt: Attempt, wake_reasons: Sequence[str]
) -> Event:
    """The Warning for primaries found drifted that the last status did not show so (``drift.newly_drifted``)."""
    only_new = replace(result, nodes=tuple(newly))
    message = f"{drift.describe(only_new)}{_after(wake_reasons)}; {drift.left_as_found(attempt.management_policy)}"
    return Event("Warning", DRIFTED_REASON, message)


def _after(wake_reasons: Sequence[str]) -> str:
    return f" after: {'; '.join(wake_reasons)}" if wake_reasons else ""


# --- tokens ---------------------------------------------------------------------------------------------------------


def state_of(attempt: Attempt) -> str:
    """ready | reconciling | stalled | paused | drifted (for metrics)."""
    if attempt.controls.paused or not attempt.controls.managed:
        return "paused"
    if attempt.in_progress:
        return "reconciling"
    if attempt.ok:
        return "ready"
    if attempt.left_drifted:
        return "drifted"
    return "stalled" if attempt.permanent else "reconciling"


_OUTCOME_OF_STATE = {
    "ready": "verified",
    "reconciling": "transient",
    "stalled": "permanent",
    "paused": "paused",
    "drifted": "drifted",
}


def outcome_of_state(state: str) -> str:
    """The reconcile metrics' outcome label for a state of :func:`state_of`."""
    return _OUTCOME_OF_STATE.get(state, "error")


def trigger_token(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, calls for a reconcile now: identity, generation, the user's annotations."""
    meta = body.get("metadata") or {}
    controls: Controls = parse_controls(meta.get("annotations"))
    return (
        meta.get("uid"),
        meta.get("generation"),
        controls.paused,
        controls.managed,
        controls.reconcile_requested_at,
        bool(meta.get("deletionTimestamp")),
    )


def needs_cleanup(body: Mapping[str, Any]) -> bool:
    """Whether deleting this object must remove the library from Redis (and so whether it carries the finalizer)."""
    spec = body.get("spec") or {}
    controls = parse_controls((body.get("metadata") or {}).get("annotations"))
    policy = spec.get("deletionPolicy") or DeletionPolicy.DELETE.value
    observing = spec.get("managementPolicy") == ManagementPolicy.OBSERVE.value  # never writes, so never deletes
    return policy == DeletionPolicy.DELETE.value and controls.managed and not controls.paused and not observing
