"""FUNCTION DUMP from one primary and FUNCTION RESTORE to every primary — the backup/migration pair of the CLI.

RESTORE is atomic per node (facts §2.6): a conflicting function name fails the whole payload there and leaves the
node unchanged, so per-node results are enough; there is nothing to roll back.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from redis_functions_operator.redis.connect import Connector, Endpoint, Target
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult
from redis_functions_operator.redis.topology import TopologyError, discover


class RestorePolicy(StrEnum):
    APPEND = "append"  # fail on a node that already has a library of the same name
    REPLACE = "replace"  # overwrite same-name libraries, keep the others
    FLUSH = "flush"  # drop every library on the node first


async def dump(target: Target, node: Endpoint | None = None) -> tuple[Endpoint, bytes]:
    """The FUNCTION DUMP payload of ``node`` (default: the first primary by address)."""
    async with Connector(target) as conn:
        if node is None:
            try:
                topo = await discover(target, conn)
            except TopologyError as exc:
                raise DumpError(exc.error) from None
            if not topo.primaries:
                raise DumpError(NodeError(ErrorKind.TOPOLOGY, "no reachable primary"))
            node = topo.primaries[0].endpoint
        try:
            payload = await conn.call(node, "FUNCTION", "DUMP")
        except Exception as exc:
            raise DumpError(classify(exc)) from None
        return node, bytes(payload)


async def restore(target: Target, payload: bytes, policy: RestorePolicy) -> SyncResult:
    """FUNCTION RESTORE ``payload`` on every primary with ``policy``; one result per primary."""
    async with Connector(target) as conn:
        try:
            topo = await discover(target, conn)
        except TopologyError as exc:
            return SyncResult("(dump)", "", None, (), error=exc.error)

        async def restore_on(node_index: int) -> NodeResult:
            node = topo.primaries[node_index]
            try:
                await conn.call(node.endpoint, "FUNCTION", "RESTORE", payload, policy.value.upper())
            except Exception as exc:
                return NodeResult(node, Outcome.FAILED, error=classify(exc))
            return NodeResult(node, Outcome.LOADED)

        results = list(await asyncio.gather(*(restore_on(i) for i in range(len(topo.primaries)))))
        results += [NodeResult(n, Outcome.FAILED, error=e) for n, e in topo.unreachable]
        results.sort(key=lambda r: r.node.endpoint)
        errors = [r.error for r in results if r.error is not None]
        return SyncResult("(dump)", "", topo, tuple(results), error=errors[0] if errors else None)


class DumpError(Exception):
    def __init__(self, error: NodeError) -> None:
        super().__init__(error.message)
        self.error = error
