"""A cheap fingerprint of a deployment, polled every few seconds, so the operator notices a Redis that moved under it.

Redis never tells anyone that a primary lost its functions. The cases that matter (``docs/redis-facts.md`` F2-F5,
F12) and what reveals them, at a cost that does not grow with the number of libraries:

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

A full poll = topology discovery with the probe riding along: ROLE, INFO (server, cluster, scripting engines),
``INFO commandstats`` and ``FUNCTION STATS`` in one round trip per primary (a cluster adds CLUSTER SHARDS on the
seed first, and each primary's CLUSTER NODES in its round trip). A standalone target costs one round trip per poll,
a 3-primary cluster four, whatever the number of libraries (``mode: auto`` is resolved once and remembered).

Between two full polls a standalone target is read by its *pulse* (:mod:`redis.pulse`): one dedicated connection per
node, three small values compared with the last reading, a full poll only when one moved (:class:`TargetWatch`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis_functions_operator.redis.connect import Connector, Endpoint, Mode, Target
from redis_functions_operator.redis.errors import NodeError, classify
from redis_functions_operator.redis.pulse import Pulse, PulseLost, Reading, read_all
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


#: A target read by pulses still gets a full poll this often (seconds): a backstop, not a signal anyone waits for
#: (tests/redis/test_pulse.py finds no change a pulse misses); at 500 targets every 30 s cost 1.3 % of a core.
FULL_POLL_EVERY = 120.0
#: After a pulse failed (a restart, a refused AUTH or INFO), full polls only for this long before trying again.
PULSE_RETRY = 30.0


@dataclass(frozen=True)
class Poll:
    """What one poll found: reasons (empty: nothing that matters changed), and the topology it knows to be current
    (None when discovery failed); ``full`` says whether it was a full poll or a pulse."""

    changes: list[str]
    topology: Topology | None
    full: bool


class TargetWatch:
    """Polls one target: a pulse (:mod:`redis.pulse`) when the target allows one and the last full poll is recent,
    else a full :func:`fingerprint`. Reasons always come from comparing two full fingerprints, so the pulse can only
    make a poll cheaper, never change what it concludes.

    Pulses are used for standalone targets (``mode`` standalone, or auto resolved to standalone) whose every node
    answered the last full poll; a cluster, a sentinel target or a node that is down is polled in full each time.
    """

    def __init__(
        self,
        target: Target,
        connector: Connector,
        *,
        full_every: float = FULL_POLL_EVERY,
        pulse_retry: float = PULSE_RETRY,
    ) -> None:
        self.target = target
        self.connector = connector
        self._full_every = full_every
        self._pulse_retry = pulse_retry
        self._pulses: list[Pulse] = []
        self._baseline: tuple[Reading, ...] | None = None
        self._fingerprint: Fingerprint | None = None
        self._topology: Topology | None = None
        self._last_full = 0.0
        self._refused_until = 0.0

    @property
    def pulsing(self) -> bool:
        """Whether the watch holds its own connections (one per node) besides the connector's."""
        return bool(self._pulses)

    @property
    def pulses(self) -> list[Pulse]:
        return list(self._pulses)

    def wants_pulse(self) -> bool:
        """Whether the next poll may be a pulse: pulses are open with a baseline, and no full poll is due."""
        return self._baseline is not None and time.monotonic() - self._last_full < self._full_every

    def unchanged(self, readings: Sequence[Reading | None]) -> bool:
        """Judge a pulse's readings (one per pulse, in order): True when nothing moved. A node that could not tell
        closes the pulses (see :meth:`_give_up_pulsing`) and is a change: the caller polls in full."""
        if any(r is None for r in readings) or len(readings) != len(self._pulses):
            self._give_up_pulsing()
            return False
        return tuple(readings) == self._baseline

    async def poll(self) -> Poll:
        """One poll of this target alone (a watcher reads the pulses of all its targets at once, then calls
        :meth:`full_poll` for those that moved). Never raises for a Redis failure: it is in the fingerprint."""
        if self.wants_pulse() and self.unchanged(await read_all(self._pulses, self.target.timeout)):
            return self.confirmed()
        return await self.full_poll()

    def confirmed(self) -> Poll:
        """The poll a watcher reports for a pulse that saw nothing move."""
        return Poll([], self.topology, full=False)

    @property
    def topology(self) -> Topology | None:
        """The topology of the last full poll (still current while the pulses see nothing move)."""
        return self._topology

    async def full_poll(self) -> Poll:
        """Pulses first (opened if the last full poll allows them), then the fingerprint: a change that lands
        between the two is in the fingerprint *and* makes the next pulse differ, so it is never lost."""
        if not self._pulses and self._may_pulse():
            await self._open_pulses()
        if self._pulses:
            readings = await read_all(self._pulses, self.target.timeout)
            if any(r is None for r in readings):
                self._give_up_pulsing()
            else:
                self._baseline = tuple(r for r in readings if r is not None)
        current, topology = await fingerprint(self.target, self.connector)
        self._last_full = time.monotonic()
        changes = current.changes_since(self._fingerprint)
        self._fingerprint, self._topology = current, topology
        if not self._may_pulse():
            self.close()
        return Poll(changes, topology, full=True)

    def _may_pulse(self) -> bool:
        seen, topology = self._fingerprint, self._topology
        return (
            seen is not None
            and topology is not None
            and seen.error is None
            and not seen.unreachable
            and topology.mode is Mode.STANDALONE
            and self.target.mode in (Mode.AUTO, Mode.STANDALONE)
        )

    def _endpoints(self) -> list[Endpoint]:
        """Every node a full poll asks: the seeds, and the primaries replica seeds lead to."""
        primaries = [n.endpoint for n in self._topology.primaries] if self._topology else []
        return list(dict.fromkeys([*self.target.endpoints, *primaries]))

    async def _open_pulses(self) -> None:
        """One pulse per node, or none at all."""
        if time.monotonic() < self._refused_until:
            return
        opened = await asyncio.gather(
            *(Pulse.open(endpoint, self.target) for endpoint in self._endpoints()), return_exceptions=True
        )
        self._pulses = [p for p in opened if isinstance(p, Pulse)]
        failures = [p for p in opened if not isinstance(p, Pulse)]
        if failures:
            self._give_up_pulsing()
            for failure in failures:
                if not isinstance(failure, PulseLost):
                    raise failure

    def _give_up_pulsing(self) -> None:
        """After a failed pulse, full polls only for ``pulse_retry`` seconds: whatever the cause (a restart, an ACL
        without INFO, a proxy that drops idle connections), the watch never reconnects more often than that."""
        self.close()
        self._refused_until = time.monotonic() + self._pulse_retry

    def close(self) -> None:
        """Close the pulses (the connector's clients are the caller's)."""
        pulses, self._pulses, self._baseline = self._pulses, [], None
        for pulse in pulses:
            pulse.close()
