"""Whether a reconcile may write to Redis, and how drift it leaves alone is told. Pure; the controller acts on it.

``driftPolicy: Repair`` (the default) loads and repairs on every reconcile. ``driftPolicy: Report`` loads a spec
once — a new generation, new code (a ConfigMap edit), or a new ``reconcile-requested-at`` value — and after that
only *reads*: a primary that lost the library (FUNCTION FLUSH, a restart without persistence, a new empty primary)
or holds other code is reported (the ``Drifted`` condition, a Warning event, a metric) and left as found, until the
spec or the request changes. ``managementPolicy: Observe`` never writes at all.

What counts as "loaded" must survive an operator restart (or a restart would repair what the user asked to keep),
so it is kept in the status: ``status.lastApplied`` is the (generation, code sha256, request) whose sync last
verified every primary. A reconcile whose inputs equal it only checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis_functions_operator.reconcile.spec import (
    RECONCILE_REQUEST_ANNOTATION,
    DriftPolicy,
    ManagementPolicy,
)
from redis_functions_operator.redis.sync import NodeResult, SyncResult

#: The status field holding the inputs of the last sync that verified every primary (``driftPolicy: Report``).
APPLIED_FIELD = "lastApplied"

#: Node states (status.nodes[].state) of a primary a check found without the code.
MISSING = "Missing"
DIFFERENT = "Drifted"


def applied_marker(generation: int, sha256: str, request: str | None) -> dict[str, Any]:
    """The inputs of a sync, as ``status.lastApplied`` keeps them."""
    marker: dict[str, Any] = {"generation": generation, "codeSha256": sha256}
    if request is not None:
        marker["reconcileRequestedAt"] = request
    return marker


def may_write(
    drift: DriftPolicy,
    management: ManagementPolicy,
    previous: Mapping[str, Any],
    generation: int,
    sha256: str,
    request: str | None,
) -> bool:
    """Whether this reconcile may load (and so repair): always with ``Repair``, never with ``Observe``, and with
    ``Report`` only while these inputs have not yet been verified on every primary."""
    if management is ManagementPolicy.OBSERVE:
        return False
    if drift is DriftPolicy.REPAIR:
        return True
    return previous.get(APPLIED_FIELD) != applied_marker(generation, sha256, request)


def node_state(node: NodeResult) -> str:
    """``Missing`` (no library of that name) or ``Drifted`` (other code under it)."""
    return MISSING if node.before_sha256 is None else DIFFERENT


def describe(result: SyncResult) -> str:
    """The drifted primaries and what differs on each, e.g. ``10.0.0.2:6379 lacks library mylib; 10.0.0.3:6379
    holds other code (sha256 0123456789ab..., expected abcdef012345...)``."""
    parts = []
    for node in result.drifted:
        if node.before_sha256 is None:
            parts.append(f"{node.address} lacks library {result.library}")
        else:
            parts.append(
                f"{node.address} holds other code (sha256 {node.before_sha256[:12]}..., "
                f"expected {result.sha256[:12]}...)"
            )
    return "; ".join(parts)


def left_as_found(management: ManagementPolicy) -> str:
    """Why the operator did not repair, and what makes it (part of the Ready and Stalled messages)."""
    if management is ManagementPolicy.OBSERVE:
        return "left as found: managementPolicy Observe never writes to Redis (set it to Full to take over)"
    return (
        "left as found (driftPolicy Report): change the spec or set the annotation "
        f"{RECONCILE_REQUEST_ANNOTATION} to repair"
    )


def newly_drifted(result: SyncResult, previous_nodes: Sequence[Mapping[str, Any]]) -> list[NodeResult]:
    """The drifted primaries the previous status did not already show drifted in the same way: what the event and
    the metric count, so a drift that stays (resync after resync) is counted once."""
    before = {str(n.get("address")): n.get("state") for n in previous_nodes if isinstance(n, Mapping)}
    return [n for n in result.drifted if before.get(n.address) != node_state(n)]
