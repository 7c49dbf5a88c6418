"""What a sync *would* do, read without writing anything: the engine's side of ``diff`` and ``sync --dry-run``.

Each primary is read once (``FUNCTION LIST WITHCODE``: every library, because a function name another library owns
there would make the load fail), and each library is compared with what that primary holds: the same code, no such
library, other code, or a function name owned by another library (names are global and case-insensitive on a
server). Nothing but reads are sent; a test counts the server's commands to prove it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis_functions_operator.library import Library
from redis_functions_operator.redis.connect import Connector, Target
from redis_functions_operator.redis.errors import NodeError
from redis_functions_operator.redis.sync import Snapshot, inspect
from redis_functions_operator.redis.topology import Node, Topology


class Change(StrEnum):
    SAME = "same"  # the primary holds exactly this code: a sync leaves it alone
    MISSING = "missing"  # no library of that name: a sync loads it
    DIFFERENT = "different"  # other code under that name: a sync replaces it
    CONFLICT = "owned by another library"  # a function name belongs to another library there: a sync would fail
    UNKNOWN = "unknown"  # the primary could not be read


@dataclass(frozen=True)
class NodePlan:
    node: Node
    change: Change
    held: Snapshot | None = None  # what the primary holds under the library's name
    owners: tuple[tuple[str, str], ...] = ()  # (function, the library owning it there), for CONFLICT
    error: NodeError | None = None


@dataclass(frozen=True)
class LibraryPlan:
    library: Library
    nodes: tuple[NodePlan, ...]

    @property
    def changes(self) -> bool:
        return any(n.change is not Change.SAME for n in self.nodes)


@dataclass(frozen=True)
class Plan:
    libraries: tuple[LibraryPlan, ...]
    topology: Topology | None = None
    error: NodeError | None = None  # discovery failed: nothing could be compared

    @property
    def changes(self) -> bool:
        return any(p.changes for p in self.libraries)

    @property
    def conflicts(self) -> bool:
        return any(n.change is Change.CONFLICT for p in self.libraries for n in p.nodes)

    @property
    def unread(self) -> list[NodeError]:
        return [n.error for p in self.libraries for n in p.nodes if n.error is not None]


async def plan(libraries: Sequence[Library], target: Target, *, connector: Connector | None = None) -> Plan:
    """Compare each library with every primary, reading each primary once (``inspect`` of every library, since a
    function another library owns there would make the load fail) and writing nothing."""
    found = await inspect((), target, connector=connector)
    if found.topology is None:
        return Plan(tuple(LibraryPlan(lib, ()) for lib in libraries), None, found.error)
    down = [NodePlan(node, Change.UNKNOWN, error=error) for node, error in found.topology.unreachable]
    plans = []
    for library in libraries:
        nodes = [_compare(library, node, held, error) for node, (held, error) in found.per_node.items()]
        plans.append(LibraryPlan(library, tuple(nodes + down)))
    return Plan(tuple(plans), found.topology)


def _compare(library: Library, node: Node, listing: dict[str, Snapshot], error: NodeError | None) -> NodePlan:
    if error is not None:
        return NodePlan(node, Change.UNKNOWN, error=error)
    held = listing.get(library.name)
    if held is not None and held.code == library.code:
        return NodePlan(node, Change.SAME, held)
    wanted = {f.name.lower() for f in library.functions}
    owners = tuple(
        sorted(
            (function, other)
            for other, snapshot in listing.items()
            if other != library.name
            for function, _ in snapshot.functions
            if function.lower() in wanted
        )
    )
    if owners:
        return NodePlan(node, Change.CONFLICT, held, owners)
    return NodePlan(node, Change.MISSING if held is None else Change.DIFFERENT, held)


__all__ = ["Change", "LibraryPlan", "NodePlan", "Plan", "plan"]
