"""A cheap fingerprint of a deployment, polled every few seconds, so the operator notices a Redis that moved under it.

Redis never tells anyone that a primary lost its functions. The cases that matter (facts §3–§6) and what reveals
them, at a cost that does not grow with the number of libraries:

============================================  =====================================================================
what happened                                 what changes in the fingerprint
============================================  =====================================================================
FUNCTION FLUSH / DELETE / RESTORE             that node's call counters (INFO commandstats): monotonic, so a flush
                                              is seen even if the libraries came back between two polls
a primary restarted empty                     its ``run_id`` (INFO server) and its counts
failover (a replica promoted)                 the set of primaries (and ROLE)
a new primary (CLUSTER MEET, 0 slots)         the set of primaries
slots moved to a primary (reshard)            that primary's slot ranges
a primary unreachable / back                  that node's probe error
another library removed                       the counts going down (so a function-name conflict is retried when
                                              the other library goes; a load is not reported: it cannot make a
                                              Ready library wrong, and the operator's own loads would wake all)
============================================  =====================================================================

One poll = topology discovery with the probe riding along: ROLE, INFO (server, cluster, scripting engines),
``INFO commandstats`` and ``FUNCTION STATS`` in one round trip per primary (a cluster adds CLUSTER SHARDS on the
seed first, and each primary's CLUSTER NODES in its round trip). A standalone target costs one round trip per poll,
a 3-primary cluster four, whatever the number of libraries (``mode: auto`` is resolved once and remembered).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis_functions_operator.redis.connect import Connector, Endpoint, Target
from redis_functions_operator.redis.errors import NodeError, classify
from redis_functions_operator.redis.replies import pairs
from redis_functions_operator.redis.topology import Topology, TopologyError, discover


@dataclass(frozen=True)
class NodePrint:
    slots: str
    run_id: str
    libraries: int
    functions: int
    removals: tuple[int, int, int] = (0, 0, 0)  # calls of FUNCTION FLUSH, DELETE, RESTORE since start (monotonic)


@dataclass(frozen=True)
class Fingerprint:
    primaries: dict[str, NodePrint]  # address -> what it holds
    unreachable: dict[str, str]  # address -> error kind
    error: str | None = None  # discovery itself failed

    def changes_since(self, old: Fingerprint | None) -> list[str]:
        """Human reasons why ``self`` differs from ``old`` (empty: nothing that matters changed)."""
        if old is None:
            return []
        reasons: list[str] = []
        if self.error != old.error:
            reasons.append(f"topology discovery {'failed: ' + self.error if self.error else 'recovered'}")
        for address in sorted(self.primaries.keys() - old.primaries.keys() - old.unreachable.keys()):
            reasons.append(f"{address} is a new primary")
        for address in sorted(old.primaries.keys() - self.primaries.keys()):
            if address not in self.unreachable:
                reasons.append(f"{address} is no longer a primary")
        for address in sorted(self.unreachable.keys() - old.unreachable.keys()):
            reasons.append(f"{address} became unreachable ({self.unreachable[address]})")
        for address in sorted(old.unreachable.keys() - self.unreachable.keys()):
            if address in self.primaries:
                reasons.append(f"{address} is reachable again")
        for address in sorted(self.primaries.keys() & old.primaries.keys()):
            new, before = self.primaries[address], old.primaries[address]
            if new.run_id != before.run_id:
                reasons.append(f"{address} restarted")
            elif new.removals != before.removals:
                # Counters, not counts: a flush is seen even when the libraries were put back between two polls.
                what = [
                    f"FUNCTION {cmd} x{after - was}"
                    for cmd, was, after in zip(
                        ("FLUSH", "DELETE", "RESTORE"), before.removals, new.removals, strict=True
                    )
                    if after != was
                ]
                reasons.append(f"{address} ran {', '.join(what)}")
            elif new.libraries < before.libraries or new.functions < before.functions:
                # Only a removal can hurt a library or free a function name another one waits for. More libraries
                # cannot make a Ready one wrong (replacing one leaves the counts alone), and the operator's own
                # loads add them: waking every library for that doubled the work of filling a new primary.
                reasons.append(
                    f"{address} libraries removed ({before.libraries} -> {new.libraries} libraries, "
                    f"{before.functions} -> {new.functions} functions)"
                )
            if new.slots != before.slots:
                reasons.append(f"{address} slots changed ({before.slots or 'none'} -> {new.slots or 'none'})")
        return reasons


#: What a poll asks each primary, in the round trip that confirms it is one.
PROBE = (("INFO", "commandstats"), ("FUNCTION", "STATS"))


async def fingerprint(target: Target, connector: Connector) -> tuple[Fingerprint, Topology | None]:
    """Probe the target once. Never raises: failures are part of the fingerprint."""
    try:
        topo = await discover(target, connector, extra=PROBE)
    except TopologyError as exc:
        return Fingerprint({}, {}, error=exc.error.kind.value), None
    except Exception as exc:
        return Fingerprint({}, {}, error=classify(exc).kind.value), None
    unreachable = {n.address: e.kind.value for n, e in topo.unreachable}
    results = await asyncio.gather(*(_probe_of(topo, connector, n.endpoint) for n in topo.primaries))
    primaries: dict[str, NodePrint] = {}
    for node, outcome in zip(topo.primaries, results, strict=True):
        if isinstance(outcome, NodeError):
            unreachable[node.address] = outcome.kind.value
        else:
            libraries, functions, removals = outcome
            primaries[node.address] = NodePrint(node.slots, node.run_id or "", libraries, functions, removals)
    return Fingerprint(primaries, unreachable), topo


_Probe = tuple[int, int, tuple[int, int, int]]


async def _probe_of(topo: Topology, connector: Connector, endpoint: Endpoint) -> _Probe | NodeError:
    """The probe's replies from discovery's round trip (asked again only if discovery did not carry them)."""
    replies = topo.probes.get(endpoint)
    if replies is None or len(replies) != len(PROBE):
        try:
            replies = tuple(await connector.call_many(endpoint, *PROBE))
        except Exception as exc:
            return classify(exc)
    return _read_probe(*replies)


def _read_probe(info: object, stats_reply: object) -> _Probe | NodeError:
    """Function counts and the FUNCTION FLUSH/DELETE/RESTORE counters (the run_id came with discovery's ROLE)."""
    for reply in (info, stats_reply):
        if isinstance(reply, BaseException):
            return classify(reply)
    engines = pairs(pairs(stats_reply).get("engines"))
    lua = pairs(engines.get("LUA") or next(iter(engines.values()), None))
    info = info if isinstance(info, dict) else {}
    removals = tuple(_calls(info, f"cmdstat_function|{cmd}") for cmd in ("flush", "delete", "restore"))
    return int(lua.get("libraries_count") or 0), int(lua.get("functions_count") or 0), removals  # type: ignore[return-value]


def _calls(info: dict[str, object], key: str) -> int:
    entry = info.get(key)
    if isinstance(entry, dict):
        return int(entry.get("calls") or 0)
    return 0
