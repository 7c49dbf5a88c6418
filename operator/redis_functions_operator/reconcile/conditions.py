"""Kubernetes-style conditions with stable ``lastTransitionTime``.

kstatus (Flux, Helm 4) reads ``Reconciling`` and ``Stalled`` ("abnormal-true" polarity) and ``Ready``; kubectl wait
reads a condition's own ``observedGeneration``. A transition time that moved on every write would make every status
look new, so a condition keeps its previous time unless its ``status`` changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PAUSED = "ReconciliationPaused"
#: Only with ``driftPolicy: Report`` or ``managementPolicy: Observe``: True while some primary lacks the code and
#: the operator, by that policy, leaves it so (abnormal-true, like Stalled; kstatus ignores it, Ready carries it).
DRIFTED = "Drifted"

#: The order conditions are written in (stable output keeps diffs small).
ORDER = (READY, RECONCILING, STALLED, DRIFTED, PAUSED)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None = "Unknown"
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def render_conditions(
    desired: Iterable[Condition], previous: Iterable[Mapping[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    """Desired conditions as API dicts; ``lastTransitionTime`` kept from ``previous`` when the status is unchanged.
    Conditions not in ``desired`` are dropped."""
    before = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    rendered = []
    for condition in sorted(desired, key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER)):
        old = before.get(condition.type)
        unchanged = old is not None and old.get("status") == condition.status_text and old.get("lastTransitionTime")
        rendered.append(
            {
                "type": condition.type,
                "status": condition.status_text,
                "reason": condition.reason,
                "message": condition.message,
                "observedGeneration": generation,
                "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else now,
            }
        )
    return rendered


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == type_), None)
