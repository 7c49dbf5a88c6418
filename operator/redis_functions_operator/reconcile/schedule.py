"""When to look at an object again.

* verified: after ``resyncInterval``, with ±10 % jitter so a thousand objects created together do not resync in
  lock-step;
* transient failure: exponential backoff from 1 s, capped at the resync interval and at 60 s — a node that is
  failing over comes back in seconds, and the status says when the next try is;
* permanent failure: slowly (the resync interval, at least 5 minutes) — retrying a compile error cannot help, but a
  change to the spec, a referenced Secret/ConfigMap or the target wakes the object at once anyway;
* missing Secret/ConfigMap: like transient but capped at 30 s, because the reference may appear any moment (and
  its creation also wakes the object);
* a spec that does not parse has no ``resyncInterval``: the default one stands in (``DEFAULT_RESYNC_SECONDS``, so a
  permanent failure waits the 5-minute floor);
* an older object claiming the same library name has not found its servers yet: a moment (``ELDER_LOOKUP_WAIT``);
* the Kubernetes API is unavailable mid-reconcile: ``KUBERNETES_UNAVAILABLE_WAIT``; an unexpected error:
  ``UNEXPECTED_ERROR_WAIT``.

``reconcile/decide.py`` maps how a visit ended to these (``tests/unit/test_decide.py`` pins that table).
"""

from __future__ import annotations

import random

from redis_functions_operator.reconcile.spec import DEFAULT_RESYNC_SECONDS

TRANSIENT_FIRST = 1.0
TRANSIENT_CAP = 60.0
MISSING_REFERENCE_CAP = 30.0
PERMANENT_FLOOR = 300.0
JITTER = 0.10
ELDER_LOOKUP_WAIT = 0.2
KUBERNETES_UNAVAILABLE_WAIT = 5.0
UNEXPECTED_ERROR_WAIT = 30.0

__all__ = [
    "DEFAULT_RESYNC_SECONDS",
    "ELDER_LOOKUP_WAIT",
    "JITTER",
    "KUBERNETES_UNAVAILABLE_WAIT",
    "MISSING_REFERENCE_CAP",
    "PERMANENT_FLOOR",
    "TRANSIENT_CAP",
    "TRANSIENT_FIRST",
    "UNEXPECTED_ERROR_WAIT",
    "after_permanent",
    "after_success",
    "after_transient",
]


def after_success(resync_seconds: float, rng: random.Random | None = None) -> float:
    spread = resync_seconds * JITTER
    return max(1.0, resync_seconds + (rng or random).uniform(-spread, spread))


def after_transient(failures_in_a_row: int, resync_seconds: float, cap: float = TRANSIENT_CAP) -> float:
    delay = TRANSIENT_FIRST * (2 ** min(max(0, failures_in_a_row - 1), 32))  # capped: no float overflow
    return float(min(delay, cap, resync_seconds))


def after_permanent(resync_seconds: float) -> float:
    return max(PERMANENT_FLOOR, resync_seconds)
