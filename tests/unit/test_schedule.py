"""``reconcile/schedule.py``: when an object is looked at again."""

from __future__ import annotations

import random

import pytest

from redis_functions_operator.reconcile import schedule
from redis_functions_operator.reconcile.spec import MAX_RESYNC_SECONDS, MIN_RESYNC_SECONDS


@pytest.mark.parametrize("resync", [MIN_RESYNC_SECONDS, 60.0, 300.0, MAX_RESYNC_SECONDS])
def test_success_jitter_stays_within_ten_percent(resync: float) -> None:
    rng = random.Random(1234)
    delays = [schedule.after_success(resync, rng) for _ in range(2000)]
    assert all(resync * 0.9 <= d <= resync * 1.1 for d in delays)
    # it really spreads: both halves of the window are used, and values are not all equal
    assert min(delays) < resync * 0.95
    assert max(delays) > resync * 1.05
    assert len(set(delays)) > 1000


def test_success_is_reproducible_with_a_seed() -> None:
    a = [schedule.after_success(60.0, random.Random(7)) for _ in range(3)]
    b = [schedule.after_success(60.0, random.Random(7)) for _ in range(3)]
    assert a == b


def test_success_without_rng_uses_module_random() -> None:
    delay = schedule.after_success(60.0)
    assert 54.0 <= delay <= 66.0


def test_success_never_below_one_second() -> None:
    rng = random.Random(0)
    assert all(schedule.after_success(0.5, rng) >= 1.0 for _ in range(100))
    assert schedule.after_success(0.0, rng) == 1.0


def test_transient_backoff_sequence_doubles_from_one_second_to_the_cap() -> None:
    delays = [schedule.after_transient(n, resync_seconds=3600.0) for n in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert all(isinstance(d, float) for d in delays)


@pytest.mark.parametrize("failures", [0, -3])
def test_transient_with_no_failures_counted_starts_at_one_second(failures: int) -> None:
    assert schedule.after_transient(failures, 3600.0) == schedule.TRANSIENT_FIRST == 1.0


def test_transient_capped_by_the_resync_interval() -> None:
    delays = [schedule.after_transient(n, resync_seconds=10.0) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_transient_capped_by_a_custom_cap() -> None:
    delays = [schedule.after_transient(n, 3600.0, cap=schedule.MISSING_REFERENCE_CAP) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_transient_stays_at_the_cap_for_long_outages() -> None:
    # 100 failures in a row (~1.5 h of a down node at 60 s): still the cap, no huge numbers
    assert schedule.after_transient(100, 3600.0) == 60.0


def test_transient_after_very_many_failures_is_still_the_cap() -> None:
    assert schedule.after_transient(1025, 3600.0) == 60.0
    assert schedule.after_transient(10_000, 3600.0, cap=schedule.MISSING_REFERENCE_CAP) == 30.0


@pytest.mark.parametrize(("resync", "expected"), [(5.0, 300.0), (60.0, 300.0), (300.0, 300.0), (3600.0, 3600.0)])
def test_permanent_waits_at_least_five_minutes(resync: float, expected: float) -> None:
    assert schedule.after_permanent(resync) == expected


def test_constants_match_the_documented_policy() -> None:
    assert schedule.TRANSIENT_FIRST == 1.0
    assert schedule.TRANSIENT_CAP == 60.0
    assert schedule.MISSING_REFERENCE_CAP == 30.0
    assert schedule.PERMANENT_FLOOR == 300.0
    assert schedule.JITTER == 0.10
    assert schedule.ELDER_LOOKUP_WAIT == 0.2
    assert schedule.KUBERNETES_UNAVAILABLE_WAIT == 5.0
    assert schedule.UNEXPECTED_ERROR_WAIT == 30.0
