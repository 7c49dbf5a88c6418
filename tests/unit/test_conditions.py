"""``reconcile/conditions.py``: API-shaped conditions whose ``lastTransitionTime`` only moves when ``status`` does."""

from __future__ import annotations

from typing import Any

import pytest

from redis_functions_operator.reconcile.conditions import (
    DRIFTED,
    ORDER,
    PAUSED,
    READY,
    RECONCILING,
    STALLED,
    Condition,
    find,
    render_conditions,
)

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:01:00Z"


def test_condition_types_are_the_kstatus_names() -> None:
    # kstatus reads exactly these (case-sensitive); kubectl wait matches Ready case-insensitively.
    assert (READY, RECONCILING, STALLED, PAUSED) == ("Ready", "Reconciling", "Stalled", "ReconciliationPaused")
    assert DRIFTED == "Drifted"  # ours, abnormal-true like Stalled (driftPolicy Report, managementPolicy Observe)
    assert ORDER == (READY, RECONCILING, STALLED, DRIFTED, PAUSED)


@pytest.mark.parametrize(("status", "text"), [(True, "True"), (False, "False"), (None, "Unknown")])
def test_status_text(status: bool | None, text: str) -> None:
    assert Condition(READY, status, "R").status_text == text


def test_render_has_every_api_field() -> None:
    [ready] = render_conditions([Condition(READY, True, "Verified", "3/3")], [], generation=7, now=T0)
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "Verified",
        "message": "3/3",
        "observedGeneration": 7,
        "lastTransitionTime": T0,
    }


def test_message_defaults_to_empty_string() -> None:
    [ready] = render_conditions([Condition(READY, None, "Unknown")], [], 1, T0)
    assert ready["message"] == ""
    assert ready["status"] == "Unknown"


def test_every_condition_carries_observed_generation() -> None:
    desired = [Condition(t, False, "X") for t in ORDER]
    rendered = render_conditions(desired, [], generation=42, now=T0)
    assert [c["observedGeneration"] for c in rendered] == [42] * len(ORDER)


def test_written_in_stable_order_whatever_the_input_order() -> None:
    desired = [
        Condition(PAUSED, True, "Paused"),
        Condition("Custom", True, "X"),
        Condition(STALLED, False, "X"),
        Condition(READY, True, "X"),
        Condition(RECONCILING, False, "X"),
    ]
    rendered = render_conditions(desired, [], 1, T0)
    assert [c["type"] for c in rendered] == [READY, RECONCILING, STALLED, PAUSED, "Custom"]


def test_transition_time_kept_when_status_unchanged() -> None:
    first = render_conditions([Condition(READY, True, "Verified", "a")], [], 1, T0)
    second = render_conditions([Condition(READY, True, "Verified", "a")], first, 1, T1)
    assert second == first


def test_transition_time_kept_when_only_reason_message_or_generation_change() -> None:
    first = render_conditions([Condition(STALLED, True, "CompileError", "line 3")], [], 1, T0)
    second = render_conditions([Condition(STALLED, True, "FunctionNameConflict", "f1")], first, 2, T1)
    assert second[0]["lastTransitionTime"] == T0
    assert second[0]["reason"] == "FunctionNameConflict"
    assert second[0]["message"] == "f1"
    assert second[0]["observedGeneration"] == 2


@pytest.mark.parametrize(("before", "after"), [(True, False), (False, True), (None, True), (True, None)])
def test_transition_time_moves_when_status_changes(before: bool | None, after: bool | None) -> None:
    first = render_conditions([Condition(READY, before, "A")], [], 1, T0)
    second = render_conditions([Condition(READY, after, "A")], first, 1, T1)
    assert second[0]["lastTransitionTime"] == T1


def test_new_condition_gets_now() -> None:
    first = render_conditions([Condition(READY, True, "A")], [], 1, T0)
    second = render_conditions([Condition(READY, True, "A"), Condition(PAUSED, True, "Paused")], first, 1, T1)
    assert find(second, READY)["lastTransitionTime"] == T0  # type: ignore[index]
    assert find(second, PAUSED)["lastTransitionTime"] == T1  # type: ignore[index]


def test_conditions_not_desired_are_dropped() -> None:
    first = render_conditions([Condition(READY, True, "A"), Condition(PAUSED, True, "P")], [], 1, T0)
    second = render_conditions([Condition(READY, True, "A")], first, 1, T1)
    assert [c["type"] for c in second] == [READY]


def test_condition_dropped_and_back_gets_a_fresh_time() -> None:
    first = render_conditions([Condition(READY, True, "A")], [], 1, T0)
    gone = render_conditions([Condition(PAUSED, True, "P")], first, 1, T1)
    back = render_conditions([Condition(READY, True, "A")], gone, 1, "2025-01-01T00:02:00Z")
    assert back[0]["lastTransitionTime"] == "2025-01-01T00:02:00Z"


def test_previous_without_transition_time_gets_now() -> None:
    previous: list[dict[str, Any]] = [{"type": READY, "status": "True"}]
    [ready] = render_conditions([Condition(READY, True, "A")], previous, 1, T1)
    assert ready["lastTransitionTime"] == T1


def test_previous_garbage_is_ignored() -> None:
    previous: list[Any] = [
        "junk",
        None,
        3,
        {"status": "True"},
        {"type": READY, "status": "True", "lastTransitionTime": T0},
    ]
    [ready] = render_conditions([Condition(READY, True, "A")], previous, 1, T1)
    assert ready["lastTransitionTime"] == T0


def test_previous_status_compared_as_api_text() -> None:
    # the API server hands back "True"/"False" strings: a previous "true" (wrong case) is a different status
    previous = [{"type": READY, "status": "true", "lastTransitionTime": T0}]
    [ready] = render_conditions([Condition(READY, True, "A")], previous, 1, T1)
    assert ready["lastTransitionTime"] == T1


def test_render_does_not_mutate_previous() -> None:
    previous = [{"type": READY, "status": "False", "reason": "Old", "lastTransitionTime": T0}]
    snapshot = [dict(c) for c in previous]
    render_conditions([Condition(READY, True, "New")], previous, 1, T1)
    assert previous == snapshot


def test_find() -> None:
    conditions: list[Any] = ["junk", {"type": READY, "status": "True"}, {"type": STALLED, "status": "False"}]
    assert find(conditions, STALLED) == {"type": STALLED, "status": "False"}
    assert find(conditions, PAUSED) is None
    assert find([], READY) is None
