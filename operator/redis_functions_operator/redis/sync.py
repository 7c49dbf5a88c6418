"""The sync engine: make one library present, byte-exact, on every primary of a target, and say what happened on
each node.

The plan, and why each step exists. ``_sync`` runs the steps in this order over one ``_Rollout`` record (the
snapshots read, who already holds the code and who is to load it, the results so far, the decisive error and the
blocking node, the smoke tests' outcomes); each step is the function named with it, and writes only to that record:

1. **Discover** the primaries (``topology``; the entry points do, before ``_sync``), never trusting a cached view:
   failovers and new shards move them.
2. **Read** each primary's copy (``_read_primaries``) with ``FUNCTION LIST LIBRARYNAME <name> WITHCODE``. The
   pattern is a case-insensitive glob, so only the exact-name entry counts; code is compared as bytes (Redis returns
   it byte-exact) — never list order or DUMP bytes, which differ between equal nodes (``docs/redis-facts.md`` F7).
3. Nodes already right are **left alone** (``_Rollout.start``: the ``holders``): a re-sync of an unchanged library
   sends no FUNCTION LOAD.
4. The vet's verdict is **applied to each primary** as discovery found it (``_refusals``: ``_unsupported_nodes``;
   engine, version, Lua engine; ``library/support.py``): when one would fail the library — no Lua engine, a load or
   a function that fails on that server only — nothing is sent anywhere (``_refuse``: ``NoLuaEngine``,
   ``UnsupportedOnServer``), so servers of a mixed fleet never end up with different versions.
5. A **canary** primary is loaded first (``_canary_order``, ``_load_canary``). A permanent failure there (compile
   error, bad metadata, a function name owned by another library, FUNCTION unsupported...) stops the rollout before
   anything else is touched, and the result carries Redis' own message (with the Lua line number).
   With **smoke tests** (``library/probes.py``, run by ``redis/probing.py``), the canary runs them right after its
   load and read-back (``_test_on_canary``). A test that gets another reply puts the canary back to its previous
   code (step 7's path) and nothing else is touched (``SmokeTestFailed``); one that cannot run (BUSY, LOADING, a
   timeout) leaves the canary with the code, which may be good, and touches nothing else: a transient failure. When
   some primaries already hold the code (the next attempt after that, a repair the caller gates, tests added later),
   the tests run on a holder before anything is written (``_test_on_holder``); a failure there puts the holders back
   to the version the others hold, when they all hold one (never a delete). The caller passes tests only until they
   have passed for this code (the operator keeps that in ``status.tests``), so an idle resync or a drift repair of
   proven code runs none.
6. The **rest** are loaded concurrently with ``FUNCTION LOAD REPLACE`` (``_load_the_rest``).
7. If another primary fails *permanently* (typically a function name another library owns only there), the nodes
   that took the new code are **rolled back** to exactly what they had (``_roll_back_loaded``: their previous code,
   or no library), so a permanent failure never leaves mixed versions behind. Transient failures are reported as
   retryable and the nodes that did load keep the new code — retrying converges, rolling back would only delay it.
8. A library whose loaded function names differ only in case is **never replaced, deleted or spread**: Redis 7.0.15
   and Valkey 9.1.2 accept it, then abort on its next FUNCTION LOAD REPLACE or FUNCTION DELETE. The lint refuses
   such code before any load; this is the engine's own guard for what a static read cannot see (names computed at
   load time behind a ``lint-ignore``), judged from what the servers report: the first read, before step 4
   (``_refusals``: ``_clashes``), and the canary's read-back (``_load_canary``).
9. Every primary is **verified** again by reading the code back (``_verify``; for a drift repair, the repaired
   nodes: the others were read in step 2 of the same sync), and each node's result is judged by it (``_verdict``).

Every network call is bounded by the target's timeout, and every node's result is kept: one node's failure never
hides another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from redis_functions_operator.library import Library, LibraryError, code_sha256, vet, vetted
from redis_functions_operator.library.probes import Probe, ProbeOutcome
from redis_functions_operator.library.support import unsupported
from redis_functions_operator.redis.connect import Connector, Endpoint, Mode, Target
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from redis_functions_operator.redis.probing import run_probes
from redis_functions_operator.redis.replies import pairs, text
from redis_functions_operator.redis.topology import Node, Role, Topology, TopologyError, discover

T = TypeVar("T")


class Outcome(StrEnum):
    """What the engine did on one primary."""

    UNCHANGED = "Unchanged"  # already held the exact code; nothing sent
    LOADED = "Loaded"  # took the new code as part of a rollout
    REPAIRED = "Repaired"  # lacked the code (or held other code) that the other primaries already had: drift fixed
    ROLLED_BACK = "RolledBack"  # took the new code, then was put back because another primary refused it
    SKIPPED = "Skipped"  # not attempted: the canary failed permanently
    DELETED = "Deleted"  # the library was removed from this primary (delete only)
    DRIFTED = "Drifted"  # lacks the code or holds other code, and was left so: a read-only check (see ``check``)
    FAILED = "Failed"  # could not be read, loaded or verified; see the error


#: Outcomes after which a primary does not hold the library's code.
_NOT_HOLDING = (Outcome.FAILED, Outcome.SKIPPED, Outcome.ROLLED_BACK, Outcome.DRIFTED)


class NodeState(StrEnum):
    """What a primary holds, as read (used by ``inspect`` and in results)."""

    PRESENT = "Present"  # the exact code
    MISSING = "Missing"  # no library of that name
    DIFFERENT = "Different"  # a library of that name with other code
    UNKNOWN = "Unknown"  # could not be read


@dataclass(frozen=True)
class NodeResult:
    node: Node
    outcome: Outcome
    before_sha256: str | None = None  # code found before the sync (None = no library)
    after_sha256: str | None = None  # code found by the final verification
    error: NodeError | None = None

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def verified(self) -> bool:
        return self.error is None and self.outcome not in _NOT_HOLDING


@dataclass(frozen=True)
class SyncResult:
    library: str
    sha256: str
    topology: Topology | None
    nodes: tuple[NodeResult, ...]
    error: NodeError | None = None  # the decisive error: the permanent one if any, else the first transient one
    blocking_node: str | None = None  # the node whose permanent refusal stopped or rolled back the rollout
    probes: tuple[ProbeOutcome, ...] = ()  # the smoke tests run in this sync (none when nothing was written)

    @property
    def ok(self) -> bool:
        """Every primary verified holding exactly the library's code."""
        return self.error is None and bool(self.nodes) and all(n.verified for n in self.nodes)

    @property
    def permanent(self) -> bool:
        return self.error is not None and self.error.permanent

    @property
    def verified_count(self) -> int:
        return sum(1 for n in self.nodes if n.verified)

    @property
    def changed(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.outcome in (Outcome.LOADED, Outcome.REPAIRED))

    @property
    def drifted(self) -> tuple[NodeResult, ...]:
        """The primaries a read-only :func:`check` found without the code (missing, or other code)."""
        return tuple(n for n in self.nodes if n.outcome is Outcome.DRIFTED)


@dataclass(frozen=True)
class Snapshot:
    """One primary's copy of one library (or why it could not be read)."""

    node: Node
    code: bytes | None = None
    error: NodeError | None = None
    functions: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def sha256(self) -> str | None:
        return None if self.code is None else code_sha256(self.code)

    def state(self, expected: bytes | None = None) -> NodeState:
        if self.error is not None:
            return NodeState.UNKNOWN
        if self.code is None:
            return NodeState.MISSING
        if expected is None or self.code == expected:
            return NodeState.PRESENT
        return NodeState.DIFFERENT


#: What a sync may take instead of its first read: per primary, every library that primary listed a moment ago
#: (library name -> snapshot). See ``redis/listing.py`` for who provides it and why it is safe.
Known = Mapping[Endpoint, Mapping[str, Snapshot]]


# --- public entry points -------------------------------------------------------------------------------------------


async def sync(
    library: Library,
    target: Target,
    *,
    connector: Connector | None = None,
    topology: Topology | None = None,
    known: Known | None = None,
    probes: Sequence[Probe] = (),
) -> SyncResult:
    """Make ``library`` present and verified on every primary of ``target``.

    ``known`` replaces the first read of the primaries it covers (a listing shared by a burst of syncs); the
    others are read as usual, and every node loaded is read back whatever ``known`` said. ``probes`` (smoke tests)
    gate the code: they run on a primary holding it before any other primary is written (see :func:`_sync`)."""
    async with _connector_for(target, connector) as conn:
        topo = await _topology_or_failure(library, target, conn, topology)
        if isinstance(topo, SyncResult):
            return topo
        return await _sync(library, topo, conn, known or {}, tuple(probes))


async def check(
    library: Library,
    target: Target,
    *,
    connector: Connector | None = None,
    topology: Topology | None = None,
    known: Known | None = None,
) -> SyncResult:
    """Read, and only read, whether every primary holds exactly ``library``'s code: a result shaped like a sync's,
    in which a primary holding the code is ``Unchanged`` and one lacking it (or holding other code) is ``Drifted``.

    For an owner that must not write now (drift is reported, not repaired; an object that only observes): the
    status reads the same as after a sync, and the drifted primaries are named. One read per primary (none for a
    primary ``known`` covers)."""
    async with _connector_for(target, connector) as conn:
        topo = await _topology_or_failure(library, target, conn, topology)
        if isinstance(topo, SyncResult):
            return topo
        results = [NodeResult(n, Outcome.FAILED, error=e) for n, e in topo.unreachable]
        if not topo.primaries:
            error = topo.unreachable[0][1] if topo.unreachable else NodeError(ErrorKind.TOPOLOGY, "no primary found")
            return SyncResult(library.name, library.sha256, topo, tuple(results), error=error)
        snapshots = await asyncio.gather(*(_first_read(conn, n, library.name, known or {}) for n in topo.primaries))
        results += [_checked(snapshot, library.code) for snapshot in snapshots]
        results.sort(key=lambda r: r.node.endpoint)
        return SyncResult(library.name, library.sha256, topo, tuple(results), error=_first_error(results))


async def _topology_or_failure(
    library: Library, target: Target, conn: Connector, topology: Topology | None
) -> Topology | SyncResult:
    """The given topology, else a fresh discovery; a discovery that fails is the whole result (no node was read)."""
    try:
        return topology or await discover(target, conn)
    except TopologyError as exc:
        return SyncResult(library.name, library.sha256, None, (), error=exc.error)


def _checked(snapshot: Snapshot, code: bytes) -> NodeResult:
    if snapshot.error is not None:
        return NodeResult(snapshot.node, Outcome.FAILED, error=snapshot.error)
    outcome = Outcome.UNCHANGED if snapshot.code == code else Outcome.DRIFTED
    return NodeResult(snapshot.node, outcome, snapshot.sha256, snapshot.sha256)


async def sync_many(
    libraries: Sequence[Library],
    target: Target,
    *,
    connector: Connector | None = None,
    concurrency: int = 8,
    on_done: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """Sync several libraries against one discovered topology, a few at a time; results in input order.

    Libraries are independent (a failure of one never stops another), so they share the topology and the warm
    connections but not their fate."""
    async with _connector_for(target, connector) as conn:
        try:
            topo = await discover(target, conn)
        except TopologyError as exc:
            failed = [SyncResult(lib.name, lib.sha256, None, (), error=exc.error) for lib in libraries]
            for result in failed:
                if on_done:
                    on_done(result)
            return failed
        known = await _shared_listing(conn, topo, libraries) if len(libraries) >= SHARED_LISTING_FROM else {}
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(library: Library) -> SyncResult:
            async with gate:
                result = await _sync(library, topo, conn, known)
            if on_done:
                on_done(result)
            return result

        return list(await asyncio.gather(*(one(lib) for lib in libraries)))


#: From this many libraries on, :func:`sync_many` reads each primary once (``FUNCTION LIST WITHCODE``) instead of
#: each library reading each primary: 3 reads instead of 300 for 100 libraries on 3 primaries (the operator's
#: ``--listing-burst`` default is the same number).
SHARED_LISTING_FROM = 16


async def _shared_listing(conn: Connector, topo: Topology, libraries: Sequence[Library]) -> Known:
    """Each primary's copy of ``libraries``, read in one round trip per primary, to stand in for the syncs' first
    reads (a node loaded is still read back in its load's own round trip). A primary that cannot be read is left
    out: each sync then reads it itself and reports its own error."""
    names = [library.name for library in libraries]
    listings = await _gather_nodes(topo, lambda node: read_all_libraries(conn, node, names))
    return {node.endpoint: found for node, (found, error) in listings.items() if error is None}


async def inspect(names: Sequence[str], target: Target, *, connector: Connector | None = None) -> InspectResult:
    """Read, without changing anything, which primaries hold which of ``names`` (all libraries when empty)."""
    async with _connector_for(target, connector) as conn:
        try:
            topo = await discover(target, conn)
        except TopologyError as exc:
            return InspectResult(None, {}, exc.error)
        per_node = await _gather_nodes(topo, lambda node: read_all_libraries(conn, node, names))
        return InspectResult(topo, per_node, None)


async def delete(name: str, target: Target, *, connector: Connector | None = None) -> SyncResult:
    """FUNCTION DELETE ``name`` on every primary. "Library not found" counts as done.

    Each primary is read first: one holding the library with function names that differ only in case is left
    alone (the DELETE would crash it) and reported."""
    async with _connector_for(target, connector) as conn:
        try:
            topo = await discover(target, conn)
        except TopologyError as exc:
            return SyncResult(name, "", None, (), error=exc.error)

        async def delete_on(node: Node) -> NodeResult:
            held = await read_library(conn, node, name)
            if held.error is not None:
                return NodeResult(node, Outcome.FAILED, error=held.error)
            if held.code is None:
                return NodeResult(node, Outcome.UNCHANGED)
            clash = case_clash(held.functions)
            if clash is not None:
                return NodeResult(node, Outcome.FAILED, held.sha256, held.sha256, _unsafe_error(node, name, clash))
            try:
                await conn.call(node.endpoint, "FUNCTION", "DELETE", name)
            except Exception as exc:
                error = classify(exc)
                if error.message.rstrip(".").endswith("Library not found"):
                    return NodeResult(node, Outcome.UNCHANGED)
                return NodeResult(node, Outcome.FAILED, error=error)
            return NodeResult(node, Outcome.DELETED)

        results = list(await asyncio.gather(*(delete_on(n) for n in topo.primaries)))
        results += [NodeResult(n, Outcome.FAILED, error=e) for n, e in topo.unreachable]
        results.sort(key=lambda r: r.node.endpoint)
        return SyncResult(name, "", topo, tuple(results), error=_first_error(results))


@dataclass(frozen=True)
class InspectResult:
    topology: Topology | None
    per_node: dict[Node, tuple[dict[str, Snapshot], NodeError | None]]
    error: NodeError | None


# --- the engine ----------------------------------------------------------------------------------------------------


@dataclass
class _Rollout:
    """One sync of one library on one discovered topology, filled in by the steps in turn. A step reads what it
    needs here and writes back only here: per-primary results, the decisive error, the smoke tests' outcomes."""

    library: Library
    topo: Topology
    first_read: list[Snapshot]  # step 2: every primary that could be read, as it was read
    not_read: list[NodeResult]  # step 2: the primaries that could not be reached or read, reported as failed
    to_load: list[Snapshot]  # the readable primaries without the exact code
    holders: list[Snapshot]  # step 3: the readable primaries that already hold it, left alone
    load_outcome: Outcome  # a load is a drift REPAIRED when some primary already held the code, else LOADED
    results: dict[Node, NodeResult]  # per readable primary, so far (the holders start Unchanged)
    loaded: list[Snapshot] = field(default_factory=list)  # took the new code: what step 7 puts back
    readbacks: dict[Node, Snapshot] = field(default_factory=dict)  # loaded nodes, read back in the load's round trip
    error: NodeError | None = None  # the decisive error, once a step stopped the rollout
    blocking_node: str | None = None  # the node whose permanent refusal (or failed smoke test) stopped it
    probes: tuple[ProbeOutcome, ...] = ()  # the smoke tests run

    @classmethod
    def start(
        cls, library: Library, topo: Topology, first_read: list[Snapshot], not_read: list[NodeResult]
    ) -> _Rollout:
        """Step 3: the primaries that already hold the code are left alone; the others are to load."""
        holders = [s for s in first_read if s.code == library.code]
        return cls(
            library,
            topo,
            first_read,
            not_read,
            to_load=[s for s in first_read if s.code != library.code],
            holders=holders,
            load_outcome=Outcome.REPAIRED if holders else Outcome.LOADED,
            results={s.node: NodeResult(s.node, Outcome.UNCHANGED, s.sha256) for s in holders},
        )

    def took_code(self, snap: Snapshot) -> None:
        self.results[snap.node] = NodeResult(snap.node, self.load_outcome, snap.sha256)
        self.loaded.append(snap)

    def skip(self, waiting: Iterable[Snapshot]) -> None:
        self.results.update({s.node: NodeResult(s.node, Outcome.SKIPPED, s.sha256) for s in waiting})

    def stop(self, node: Node, error: NodeError) -> None:
        self.blocking_node, self.error = node.address, error


async def _sync(
    library: Library, topo: Topology, conn: Connector, known: Known, probes: tuple[Probe, ...] = ()
) -> SyncResult:
    """The steps of the module's docstring, in order, on a discovered topology (step 1)."""
    unreachable = [NodeResult(n, Outcome.FAILED, error=e) for n, e in topo.unreachable]
    if not topo.primaries:
        error = topo.unreachable[0][1] if topo.unreachable else NodeError(ErrorKind.TOPOLOGY, "no primary found")
        return SyncResult(library.name, library.sha256, topo, tuple(unreachable), error=error)
    readable, unreadable = await _read_primaries(conn, topo, library.name, known)
    refused = await _refusals(library, topo, readable)
    if refused:
        return _refuse(library, topo, readable, unreadable + unreachable, refused)
    rollout = _Rollout.start(library, topo, readable, unreadable + unreachable)
    waiting = _canary_order(rollout.to_load, probes, topo.mode)
    if probes and rollout.holders:
        waiting = await _test_on_holder(conn, rollout, probes, waiting)
        probes = ()  # tested on the holder: the others are loaded as usual (or, after a failure, not at all)
    waiting = await _load_canary(conn, rollout, waiting, probes)
    if waiting:
        refusal = await _load_the_rest(conn, rollout, waiting)
        if refusal is not None:
            rollout.stop(*refusal)
            await _roll_back_loaded(conn, rollout)
    return _verdict(rollout, await _verify(conn, rollout))


async def _read_primaries(
    conn: Connector, topo: Topology, name: str, known: Known
) -> tuple[list[Snapshot], list[NodeResult]]:
    """Step 2: every primary's copy (``known``'s where it covers the primary): the snapshots read, and the
    primaries that could not be read, as failed results."""
    snapshots = await asyncio.gather(*(_first_read(conn, n, name, known) for n in topo.primaries))
    readable = [s for s in snapshots if s.error is None]
    unreadable = [NodeResult(s.node, Outcome.FAILED, error=s.error) for s in snapshots if s.error is not None]
    return readable, unreadable


async def _refusals(library: Library, topo: Topology, readable: list[Snapshot]) -> dict[Node, NodeError]:
    """Steps 8 and 4, before anything is sent: the primaries holding this library with case-clashing function
    names, else the primaries the vet says would fail it. Any refusal means nothing is sent anywhere."""
    return _clashes(library, readable) or await _unsupported_nodes(library, topo.primaries)


def _canary_order(to_load: list[Snapshot], probes: tuple[Probe, ...], mode: Mode) -> list[Snapshot]:
    """The primaries to load, canary candidates first: by address, except that with smoke tests on a cluster a
    primary serving slots goes first (a test's keys must hash to the canary's slots)."""
    order = list(to_load)
    if probes and mode is Mode.CLUSTER:
        order.sort(key=lambda s: not s.node.slots)
    return order


async def _load_canary(
    conn: Connector, rollout: _Rollout, waiting: list[Snapshot], probes: tuple[Probe, ...]
) -> list[Snapshot]:
    """Step 5: load the first waiting primary that answers (and run the smoke tests there). Returns the primaries
    still to load: none when the canary stopped the rollout (a permanent refusal, a possible crash, a failed test),
    in which case they are reported skipped."""
    library = rollout.library
    remaining = list(waiting)
    while remaining:
        canary = remaining.pop(0)
        error, readback = await _load(conn, canary.node, library.code, library.name)
        if readback is not None:
            rollout.readbacks[canary.node] = readback
        clash = case_clash(readback.functions) if readback is not None else None
        if error is None and clash is not None:
            # loaded, and now unsafe to replace or delete there (step 8): leave it, and send it nowhere else
            error = _unsafe_error(canary.node, library.name, clash)
        elif error is None:
            rollout.took_code(canary)
            return await _test_on_canary(conn, rollout, canary, probes, remaining) if probes else remaining
        error = _lost_during_load(canary.node, error)
        rollout.results[canary.node] = NodeResult(canary.node, Outcome.FAILED, canary.sha256, error=error)
        if error.permanent or error.kind is ErrorKind.LOST_DURING_LOAD:
            rollout.stop(canary.node, error)
            rollout.skip(remaining)
            return []
    return []  # every candidate failed transiently: nothing left to load


def _lost_during_load(node: Node, error: NodeError) -> NodeError:
    """The canary answered FUNCTION LIST a moment ago: losing its connection *during* FUNCTION LOAD means the code
    may have brought it down (Valkey 9.1.2 aborts on some load-time calls, Redis 7.0 on some function names). Never
    try the same code on the next primary. (A timeout is not that: a slow node is just slow.)"""
    if error.kind is not ErrorKind.CONNECTION_FAILED:
        return error
    return NodeError(
        ErrorKind.LOST_DURING_LOAD,
        f"{node.address} stopped answering during FUNCTION LOAD ({error.message}); "
        "the code may crash the server, so no other primary was tried in this attempt",
    )


async def _load_the_rest(conn: Connector, rollout: _Rollout, waiting: list[Snapshot]) -> tuple[Node, NodeError] | None:
    """Step 6: load the remaining primaries concurrently. Returns the first permanent refusal (which step 7
    answers), or ``None``; transient failures are only reported, and the nodes that loaded keep the code."""
    library = rollout.library
    answers = await asyncio.gather(*(_load(conn, s.node, library.code, library.name) for s in waiting))
    refusal: tuple[Node, NodeError] | None = None
    for snap, (error, readback) in zip(waiting, answers, strict=True):
        if readback is not None:
            rollout.readbacks[snap.node] = readback
        if error is None:
            rollout.took_code(snap)
            continue
        rollout.results[snap.node] = NodeResult(snap.node, Outcome.FAILED, snap.sha256, error=error)
        if error.permanent and refusal is None:
            refusal = snap.node, error
    return refusal


async def _roll_back_loaded(conn: Connector, rollout: _Rollout) -> None:
    """Step 7: every primary that took the new code goes back to exactly what it had; none holds it any more."""
    await _roll_back(conn, rollout.library.name, rollout.loaded, rollout.results)
    rollout.loaded = []
    rollout.readbacks.clear()


async def _verify(conn: Connector, rollout: _Rollout) -> list[Snapshot]:
    """Step 9: every readable primary's copy after the loads, in first-read order.

    Unchanged ones are read too: it catches a concurrent change. When nothing was sent, the read a moment ago *is*
    the verification: a no-op resync costs one read per primary. A repair (the others already held the code a moment
    ago) re-reads only the nodes it loaded: with a thousand libraries on a target that gained a primary, that is one
    read per library instead of one per primary. A node that took the code was read back in the load's own round
    trip: only the others are read again here."""
    if not rollout.to_load:
        return rollout.first_read
    repair = rollout.load_outcome is Outcome.REPAIRED and rollout.error is None
    wanted = {s.node for s in (rollout.to_load if repair else rollout.first_read)}
    again = [s for s in rollout.first_read if s.node in wanted and s.node not in rollout.readbacks]
    name = rollout.library.name
    fresh = {snap.node: snap for snap in await asyncio.gather(*(read_library(conn, s.node, name) for s in again))}
    fresh.update({node: snap for node, snap in rollout.readbacks.items() if node in wanted})
    return [fresh.get(s.node, s) for s in rollout.first_read]


def _verdict(rollout: _Rollout, verified: list[Snapshot]) -> SyncResult:
    """The sync's result: each primary's result checked against what step 9 read, plus the primaries not read; the
    decisive error is the step's that stopped the rollout, else the first node error (permanent first)."""
    library = rollout.library
    final = [_checked_after(rollout.results[snap.node], snap, library) for snap in verified]
    final += rollout.not_read
    final.sort(key=lambda r: r.node.endpoint)
    error = rollout.error if rollout.error is not None else _first_error(final)
    return SyncResult(
        library.name,
        library.sha256,
        rollout.topo,
        tuple(final),
        error=error,
        blocking_node=rollout.blocking_node,
        probes=rollout.probes,
    )


def _checked_after(result: NodeResult, snap: Snapshot, library: Library) -> NodeResult:
    """One primary's result with what the verification read: a node meant to hold the code fails when it does not."""
    after = snap.sha256
    result = replace(result, after_sha256=after)
    if result.outcome not in (Outcome.UNCHANGED, Outcome.LOADED, Outcome.REPAIRED) or result.error is not None:
        return result
    if snap.error is not None:
        return replace(result, outcome=Outcome.FAILED, error=snap.error)
    if snap.code != library.code:
        mismatch = NodeError(
            ErrorKind.VERIFY_MISMATCH,
            f"{snap.node.address} holds sha256 {after or 'no library'} after the load, expected {library.sha256}",
        )
        return replace(result, outcome=Outcome.FAILED, error=mismatch)
    return result


def _holder_order(snapshot: Snapshot) -> tuple[bool, Endpoint]:
    """Which holder runs the tests: one serving slots (a test's keys must hash there), then by address."""
    return not snapshot.node.slots, snapshot.node.endpoint


async def _test_on_holder(
    conn: Connector, rollout: _Rollout, probes: tuple[Probe, ...], waiting: list[Snapshot]
) -> list[Snapshot]:
    """Step 5, when some primaries already hold the code: smoke tests on one of them, before the code is written
    anywhere else (a rollout whose tests could not run last time, its canary keeping the code; a repair the caller
    gates; code loaded before its tests). Returns the primaries still to load: all of them after a pass, none after
    a failure. After a test that got another reply the ``waiting`` primaries are skipped, and when they all hold one
    same other version (the previous code of a rollout), the holders are put back to it: no mixed versions. When
    they lack the library (or disagree) the holders are left as they are: a test's word never deletes a library
    that serves while no other version exists to put back."""
    holders = rollout.holders
    holder = min(holders, key=_holder_order)
    run = await run_probes(conn, holder.node, probes, rollout.topo.mode)
    rollout.probes = run.outcomes
    if run.error is None:
        return waiting
    rollout.stop(holder.node, run.error)
    rollout.skip(waiting)
    previous = {s.code for s in waiting}
    if not run.error.permanent or len(previous) != 1 or None in previous:
        rollout.results[holder.node] = NodeResult(holder.node, Outcome.UNCHANGED, holder.sha256, error=run.error)
        return []
    (code,) = previous
    await _roll_back(conn, rollout.library.name, [replace(h, code=code) for h in holders], rollout.results)
    for h in holders:  # _roll_back reports the code it put back as "before": here it was this code
        rollout.results[h.node] = replace(rollout.results[h.node], before_sha256=h.sha256)
    return []


async def _test_on_canary(
    conn: Connector, rollout: _Rollout, canary: Snapshot, probes: tuple[Probe, ...], waiting: list[Snapshot]
) -> list[Snapshot]:
    """Step 5's smoke tests on the canary that just took the code. Returns the primaries still to load: all of them
    after a pass, none after a failure (they are skipped). A test that got another reply puts the canary back to its
    previous code (step 7, the only node loaded yet); one that could not run leaves the code there, since it may be
    good."""
    run = await run_probes(conn, canary.node, probes, rollout.topo.mode)
    rollout.probes = run.outcomes
    if run.error is None:
        return waiting
    rollout.stop(canary.node, run.error)
    rollout.skip(waiting)
    if run.error.permanent:
        await _roll_back_loaded(conn, rollout)
    else:
        rollout.results[canary.node] = NodeResult(canary.node, rollout.load_outcome, canary.sha256, error=run.error)
    return []


def case_clash(functions: Iterable[tuple[str, tuple[str, ...]]]) -> tuple[str, str] | None:
    """Two function names of one library that differ only in case, as a server listed them (or ``None``)."""
    seen: dict[str, str] = {}
    for name, _ in functions:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            return other, name
    return None


def _unsafe_error(node: Node, library: str, clash: tuple[str, str]) -> NodeError:
    return NodeError(
        ErrorKind.UNSAFE_LIBRARY,
        f"{node.address} holds library {library!r} with functions {clash[0]!r} and {clash[1]!r}, which differ only "
        "in case: FUNCTION LOAD REPLACE or FUNCTION DELETE of it would crash that server, so the operator does "
        "not touch it and loads it nowhere else (restart that node without its functions to clear it)",
    )


def _clashes(library: Library, readable: list[Snapshot]) -> dict[Node, NodeError]:
    """The primaries that already hold this library with case-clashing function names."""
    found = {}
    for snap in readable:
        clash = case_clash(snap.functions)
        if clash is not None:
            found[snap.node] = _unsafe_error(snap.node, library.name, clash)
    return found


async def _unsupported_nodes(library: Library, primaries: Iterable[Node]) -> dict[Node, NodeError]:
    """The primaries the vet says would fail this library (no Lua engine; a load or a function that fails on that
    server only), judged from what discovery learned about each server, before anything is sent anywhere. The vet's
    verdict is cached by sha256 (the operator and the CLI have vetted the code already); a caller that has not is
    vetted here, off the event loop."""
    vetting = vetted(library.code)
    if vetting is None:
        try:
            vetting = await asyncio.to_thread(vet, library.code)
        except LibraryError:
            return {}  # a shebang the servers refuse: the canary reports their own message
    found = {}
    for node in primaries:
        problem = unsupported(vetting, node.server)
        if problem is not None:
            where = f"line {problem.line}: " if problem.line else ""
            message = f"refused before loading ({node.server.label}): {where}{problem.message}"
            found[node] = NodeError(ErrorKind(problem.reason), message)
    return found


def _refuse(
    library: Library, topo: Topology, readable: list[Snapshot], failed: list[NodeResult], refused: dict[Node, NodeError]
) -> SyncResult:
    """Nothing sent anywhere: some primaries must not receive this library (``refused``); the others are reported
    as they are, unchanged when they already hold the code, skipped otherwise."""
    results = list(failed)
    decisive: NodeError | None = None
    blocking: str | None = None
    for snap in readable:
        error = refused.get(snap.node)
        if error is None:
            outcome = Outcome.UNCHANGED if snap.code == library.code else Outcome.SKIPPED
            results.append(NodeResult(snap.node, outcome, snap.sha256, snap.sha256))
            continue
        results.append(NodeResult(snap.node, Outcome.FAILED, snap.sha256, snap.sha256, error=error))
        if decisive is None:
            decisive, blocking = error, snap.node.address
    if decisive is None:  # every refused primary was also unreadable: the refusal still decides
        node, decisive = next(iter(refused.items()))
        blocking = node.address
    results.sort(key=lambda r: r.node.endpoint)
    return SyncResult(library.name, library.sha256, topo, tuple(results), error=decisive, blocking_node=blocking)


async def _roll_back(conn: Connector, name: str, loaded: list[Snapshot], results: dict[Node, NodeResult]) -> None:
    """Put every node that took the new code back to exactly its previous state."""

    async def restore(snap: Snapshot) -> None:
        try:
            if snap.code is None:
                await conn.call(snap.node.endpoint, "FUNCTION", "DELETE", name)
            else:
                await conn.call(snap.node.endpoint, "FUNCTION", "LOAD", "REPLACE", snap.code)
        except Exception as exc:
            results[snap.node] = NodeResult(snap.node, Outcome.FAILED, snap.sha256, error=classify(exc))
            return
        results[snap.node] = NodeResult(snap.node, Outcome.ROLLED_BACK, snap.sha256)

    await asyncio.gather(*(restore(s) for s in loaded))


async def _load(conn: Connector, node: Node, code: bytes, name: str) -> tuple[NodeError | None, Snapshot | None]:
    """FUNCTION LOAD REPLACE and, in the same round trip, the read-back that verifies it."""
    try:
        loaded, listed = await conn.call_many(
            node.endpoint,
            ("FUNCTION", "LOAD", "REPLACE", code),
            ("FUNCTION", "LIST", "LIBRARYNAME", glob_escape(name), "WITHCODE"),
        )
        if isinstance(loaded, Exception):
            raise loaded
    except Exception as exc:
        error = classify(exc)
        if error.kind is ErrorKind.FUNCTION_CONFLICT and error.function:
            return replace(error, owner=await _function_owner(conn, node, error.function)), None
        if error.kind is ErrorKind.CONNECTION_FAILED and "while writing" in str(exc):
            return await _closed_while_receiving(conn, node, len(code), error), None
        return error, None
    if isinstance(listed, Exception):
        return None, Snapshot(node, error=classify(listed))
    return None, _snapshot(node, name, listed)


async def _closed_while_receiving(conn: Connector, node: Node, size: int, error: NodeError) -> NodeError:
    """The node closed the connection while the library was still being sent. Its code had not run yet (a server
    runs nothing before the whole command has arrived), so if the same server process still answers, this is no
    crash: a server drops a client whose argument exceeds ``proto-max-bulk-len`` (for a payload well over the limit
    the reset arrives before its "invalid bulk length" reply, measured on every server of the matrix). Otherwise the
    connection failure stands, and the canary rule treats it as a possible crash."""
    try:
        info = await conn.call(node.endpoint, "INFO", "server")
    except Exception:
        return error
    run_id = text(info.get("run_id")) if isinstance(info, dict) else ""
    if node.run_id and run_id != node.run_id:
        return error  # another process answers now: the server restarted
    return NodeError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"{node.address} closed the connection while receiving the library ({size:,} bytes) and still answers: the "
        "library is larger than the server accepts in one argument (proto-max-bulk-len)",
    )


async def _function_owner(conn: Connector, node: Node, function: str) -> str | None:
    """Which library registers ``function`` on this node (function names are case-insensitive)."""
    try:
        reply = await conn.call(node.endpoint, "FUNCTION", "LIST")
    except Exception:
        return None
    wanted = function.lower()
    for entry in parse_function_list(reply):
        if any(name.lower() == wanted for name, _ in entry.functions):
            return entry.name
    return None


# --- reading -------------------------------------------------------------------------------------------------------


async def _first_read(conn: Connector, node: Node, name: str, known: Known) -> Snapshot:
    listing = known.get(node.endpoint)
    if listing is None:
        return await read_library(conn, node, name)
    held = listing.get(name)
    return Snapshot(node) if held is None else replace(held, node=node)


async def read_library(conn: Connector, node: Node, name: str) -> Snapshot:
    """This node's copy of library ``name`` (exact-name match), or why it could not be read."""
    try:
        reply = await conn.call(node.endpoint, "FUNCTION", "LIST", "LIBRARYNAME", glob_escape(name), "WITHCODE")
    except Exception as exc:
        return Snapshot(node, error=classify(exc))
    return _snapshot(node, name, reply)


def _snapshot(node: Node, name: str, reply: Any) -> Snapshot:
    for entry in parse_function_list(reply):
        if entry.name == name:
            return Snapshot(node, code=entry.code, functions=entry.functions)
    return Snapshot(node)


async def read_all_libraries(
    conn: Connector, node: Node, names: Sequence[str] = ()
) -> tuple[dict[str, Snapshot], NodeError | None]:
    """Every library on a node (or just ``names``), with code."""
    try:
        reply = await conn.call(node.endpoint, "FUNCTION", "LIST", "WITHCODE")
    except Exception as exc:
        return {}, classify(exc)
    wanted = set(names)
    found = {
        e.name: Snapshot(node, code=e.code, functions=e.functions)
        for e in parse_function_list(reply)
        if not wanted or e.name in wanted
    }
    return found, None


@dataclass(frozen=True)
class ListedLibrary:
    name: str
    engine: str
    code: bytes | None
    functions: tuple[tuple[str, tuple[str, ...]], ...]


def parse_function_list(reply: Any) -> list[ListedLibrary]:
    """FUNCTION LIST reply (RESP2 flat pairs or RESP3 maps) → libraries. Function order is not meaningful."""
    libraries = []
    for raw in reply or []:
        entry = pairs(raw)
        functions = []
        for fn in entry.get("functions") or []:
            fn_map = pairs(fn)
            flags = tuple(sorted(text(f) for f in (fn_map.get("flags") or [])))
            functions.append((text(fn_map.get("name")), flags))
        code = entry.get("library_code")
        libraries.append(
            ListedLibrary(
                name=text(entry.get("library_name")),
                engine=text(entry.get("engine")),
                code=code if isinstance(code, bytes) else (code.encode() if isinstance(code, str) else None),
                functions=tuple(sorted(functions)),
            )
        )
    return libraries


def glob_escape(name: str) -> str:
    """Escape glob metacharacters so LIBRARYNAME matches the literal name (case-insensitively, as Redis does)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in name)


# --- helpers -------------------------------------------------------------------------------------------------------


async def _gather_nodes(topo: Topology, fn: Callable[[Node], Awaitable[T]]) -> dict[Node, T]:
    values = await asyncio.gather(*(fn(n) for n in topo.primaries))
    return dict(zip(topo.primaries, values, strict=True))


def _first_error(results: Iterable[NodeResult]) -> NodeError | None:
    errors = [r.error for r in results if r.error is not None]
    permanent = [e for e in errors if e.permanent]
    chosen = permanent or errors
    return chosen[0] if chosen else None


class _ConnectorScope:
    """Use the caller's connector as-is, or open a private one and close it at the end."""

    def __init__(self, target: Target, connector: Connector | None) -> None:
        self._owned = connector is None
        self._connector = connector or Connector(target)

    async def __aenter__(self) -> Connector:
        return self._connector

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owned:
            await self._connector.aclose()


def _connector_for(target: Target, connector: Connector | None) -> _ConnectorScope:
    """``async with _connector_for(target, given) as conn``: the given connector, or one made for this call and
    closed after it."""
    return _ConnectorScope(target, connector)


__all__ = [
    "Endpoint",
    "InspectResult",
    "Known",
    "NodeResult",
    "NodeState",
    "Outcome",
    "Role",
    "Snapshot",
    "SyncResult",
    "check",
    "delete",
    "inspect",
    "parse_function_list",
    "read_library",
    "sync",
    "sync_many",
]
