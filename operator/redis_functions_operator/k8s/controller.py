"""The controller: keeps every RedisFunctionLibrary it has seen converging, one reconcile at a time per object.

kopf feeds it watch events (:meth:`Controller.observe`) and reference changes (:meth:`observe_reference`); the
controller decides whether they matter (a new generation, a user annotation, a referenced Secret/ConfigMap) and
schedules the object on its :class:`WorkQueue`. Workers run :meth:`reconcile`, which is a straight line of named
steps:

    gate (annotations) → spec → resolve (Secrets/ConfigMaps) → vet → claim → sync or check → report → next visit

Each step's failure becomes a :class:`Failure` with a reason, so the status says exactly what is wrong. What a result
means — the delay until the next visit, the events' texts, the state — is ``reconcile/decide.py``'s to say; this
module keeps the I/O and the order. Nothing here imports kopf: the handlers module is the only place that knows
about it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from redis_functions_operator.k8s import metrics
from redis_functions_operator.k8s.kube import Kube, ObjectRef
from redis_functions_operator.k8s.ownership import Ownership
from redis_functions_operator.k8s.resolve import Resolved, ResolveError, resolve, resolve_target
from redis_functions_operator.k8s.statuswriter import StatusWriter
from redis_functions_operator.k8s.watchers import DEFAULT_INTERVAL, TargetWatchers
from redis_functions_operator.k8s.workqueue import WorkQueue
from redis_functions_operator.library import Failure, Library, LibraryError, parse_library, parse_shebang
from redis_functions_operator.reconcile import decide, drift, schedule
from redis_functions_operator.reconcile.spec import (
    Controls,
    LibrarySpec,
    ManagementPolicy,
    RefKind,
    SpecError,
    parse_controls,
    parse_spec,
)
from redis_functions_operator.reconcile.status import (
    Attempt,
    failure_reason,
    render_status,
    smoke_tests_passed,
    status_changed,
)
from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Connector, Target
from redis_functions_operator.redis.errors import ErrorKind
from redis_functions_operator.redis.listing import Known, Listings
from redis_functions_operator.redis.sync import Outcome, SyncResult
from redis_functions_operator.redis.topology import Topology, TopologyError, discover

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)

#: A queue with work overdue by this long while nothing runs is stuck (the liveness probe).
_STUCK_AFTER_SECONDS = 300


@dataclass(frozen=True)
class ControllerSettings:
    workers: int = 16
    redis_timeout: float = 5.0
    connector_idle_seconds: float = 600.0
    poll_interval: float = DEFAULT_INTERVAL  # how often each target's watcher looks for a moved Redis
    # A target change wakes every library of the target; from this many on, they share one FUNCTION LIST WITHCODE
    # per primary (redis/listing.py) instead of each reading every primary. Below it, per-library reads are cheaper
    # (a full listing carries every library's code). 0: never.
    listing_burst: int = 16


@dataclass
class Tracked:
    body: Mapping[str, Any]
    handled_token: tuple[Any, ...] | None = None
    refs: frozenset[tuple[RefKind, str]] = frozenset()
    failures_in_a_row: int = 0
    wake_reasons: list[str] = field(default_factory=list)  # why a target watcher woke it (for the event)
    state: str = "reconciling"  # ready | reconciling | stalled | paused (for metrics)
    status_view: Mapping[str, Any] | None = None  # the latest status we rendered (written or still queued)
    # Code during whose FUNCTION LOAD a canary primary stopped answering, and on how many canaries in a row. A node
    # killed or restarted at that moment looks the same as one the code crashed, so one loss is retried (on whatever
    # primary is first then); a second loss stops: the code is not sent again until it changes or the user asks
    # (reconcile-requested-at). At most two primaries for a library that really crashes servers.
    lost_sha: str | None = None
    lost_request: str | None = None
    lost_nodes: list[str] = field(default_factory=list)
    # The inputs (code sha256, reconcile-requested-at, smoke tests) whose smoke tests failed on a canary, and that
    # failure: the code is not loaded again (not even on the canary, for a moment) until one of them changes.
    smoke_failed: tuple[tuple[Any, ...], Failure] | None = None


@dataclass(frozen=True)
class PublishedClaim:
    """What an object of another shard wants, as far as this instance can tell without acting on it: read from the
    unfiltered watch, never written."""

    created: str
    target: tuple[tuple[str, ...], str, str | None] | None  # as written (None: a spec that does not parse)
    library: str | None  # from the spec, else the name its own instance published in status.libraryName
    identities: tuple[str, ...]  # cluster node ids of the primaries in its status.nodes


def published_claim(body: Mapping[str, Any]) -> PublishedClaim:
    status: Mapping[str, Any] = body.get("status") or {}
    try:
        spec: LibrarySpec | None = parse_spec(body.get("spec") or {})
    except SpecError:
        spec = None
    library = (library_name_from_spec(spec) if spec else None) or status.get("libraryName") or None
    nodes = [n for n in status.get("nodes") or [] if isinstance(n, Mapping)]
    identities = tuple(sorted(str(n["shard"]) for n in nodes if n.get("role") == "primary" and n.get("shard")))
    return PublishedClaim(
        _created(body), target_identity(spec) if spec else None, str(library) if library else None, identities
    )


@dataclass
class _CachedConnector:
    connector: Connector
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class _Visit:
    """One reconcile of one object, as its steps fill it in."""

    key: Key
    tracked: Tracked
    ref: ObjectRef
    previous: Mapping[str, Any]  # the status this visit started from (then the one it last wrote and waited for)
    controls: Controls
    base: Attempt  # what every attempt of this visit shares
    resync_seconds: float | None = None  # known once the spec parses


class _Finished(Exception):
    """A step ended the visit; ``delay`` is the time until the next one (None: only on change)."""

    def __init__(self, delay: float | None) -> None:
        super().__init__(delay)
        self.delay = delay


class Controller:
    def __init__(
        self,
        kube: Kube,
        settings: ControllerSettings | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kube = kube
        self.settings = settings or ControllerSettings()
        self.queue: WorkQueue[Key] = WorkQueue()
        self._objects: dict[Key, Tracked] = {}
        # Objects of other shards (--label-selector), from the unfiltered watch: their claims count, they are never
        # reconciled, and nothing here writes to them.
        self._elsewhere: dict[Key, PublishedClaim] = {}
        self._connectors: dict[Target, _CachedConnector] = {}
        self._clock = clock
        self._heartbeat = time.monotonic()
        self.ownership = Ownership(self._created_of, self._wake)
        self.watchers = TargetWatchers(self._on_target_change, self._connector, self.settings.poll_interval)
        # Listings live no longer than one poll interval: the watcher's next poll is what would notice a change.
        self.listings = Listings(max_age=self.settings.poll_interval)
        self.statuses = StatusWriter(kube)

    # --- inputs from the watch ------------------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> None:
        """A watch event (or the initial listing) for a RedisFunctionLibrary."""
        meta = body.get("metadata") or {}
        key: Key = (str(meta.get("namespace")), str(meta.get("name")))
        tracked = self._objects.get(key)
        if tracked is None:
            tracked = self._objects[key] = Tracked(body)
        else:
            tracked.body = body
        try:  # parsed once per event: it gives both the references to watch and the claim
            spec: LibrarySpec | None = parse_spec(body.get("spec") or {})
        except SpecError:
            spec = None
        tracked.refs = spec.references() if spec else frozenset()
        name = library_name_from_spec(spec) if spec else None
        if spec is not None and name is not None:
            self.ownership.claim_as_written(key, target_identity(spec), name)
        if decide.trigger_token(body) != tracked.handled_token:
            self.queue.add(key)

    def forget(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key: Key = (str(meta.get("namespace")), str(meta.get("name")))
        tracked = self._objects.pop(key, None)
        self.queue.remove(key)
        self.watchers.detach(key)
        if tracked is not None:
            self.ownership.release(key)
        elsewhere = self._elsewhere.get(key)
        if elsewhere is not None:  # it left this shard (relabelled), not the cluster: another instance has it now
            self._claim_elsewhere(key, elsewhere)

    def observe_elsewhere(self, body: Mapping[str, Any]) -> None:
        """An object outside this instance's shard, as the unfiltered watch sees it: its claims, nothing else. Our
        own filtered watch stays the authority on what is ours: until it says an object left (a relabel), the
        published claim only waits here."""
        key = _key(body)
        claim = self._elsewhere[key] = published_claim(body)
        if key not in self._objects:
            self._claim_elsewhere(key, claim)

    def forget_elsewhere(self, body: Mapping[str, Any]) -> None:
        """Gone, or now in this instance's shard (then :meth:`observe` has it, or will)."""
        key = _key(body)
        if self._elsewhere.pop(key, None) is not None and key not in self._objects:
            self.ownership.release(key)

    def _claim_elsewhere(self, key: Key, claim: PublishedClaim) -> None:
        self.ownership.claim_published(key, claim.target, claim.library, claim.identities)

    def _wake(self, key: Key) -> None:
        if key in self._objects:  # another shard's object is woken by its own instance
            self.queue.add(key)

    def _created_of(self, key: Key) -> str | None:
        tracked = self._objects.get(key)
        if tracked is not None:
            return _created(tracked.body)
        elsewhere = self._elsewhere.get(key)
        return None if elsewhere is None else elsewhere.created

    def _on_target_change(self, target: Target, reasons: list[str]) -> None:
        metrics.TARGET_CHANGES.inc()
        self.listings.invalidate(target)
        for key in self.watchers.keys_of(target):
            tracked = self._objects.get(key)  # type: ignore[call-overload]
            if tracked is not None:
                tracked.wake_reasons = list(reasons)
                self.queue.add(key)  # type: ignore[arg-type]

    def observe_reference(
        self, kind: RefKind, namespace: str, name: str, body: Mapping[str, Any] | None = None, deleted: bool = False
    ) -> int:
        """A Secret or ConfigMap changed: keep the watch's copy if a library reads it (before waking anyone), then
        wake every library that reads it. Returns how many were woken."""
        readers = [
            key for key, tracked in self._objects.items() if key[0] == namespace and (kind, name) in tracked.refs
        ]
        ref_key = (kind, namespace, name)
        if (readers or self.kube.references.knows(ref_key)) and (body is not None or deleted):
            self.kube.references.watched(ref_key, None if deleted else body)
        for key in readers:
            self.queue.add(key)
        return len(readers)

    def _forget_unread_references(self) -> None:
        wanted = [(kind, key[0], name) for key, tracked in self._objects.items() for kind, name in tracked.refs]
        self.kube.references.keep_only(wanted)

    # --- the loop -------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers until cancelled."""
        self.kube.start_posting()
        self.statuses.start()
        workers = [asyncio.create_task(self._worker(i)) for i in range(self.settings.workers)]
        try:
            while True:
                await asyncio.sleep(30)
                await self._close_idle_connectors()
                self.listings.drop_expired()
                self._forget_unread_references()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self.watchers.aclose()
            await self.kube.stop_posting()
            await self.statuses.stop()
            for cached in self._connectors.values():
                await cached.connector.aclose()
            self._connectors.clear()

    async def _worker(self, number: int) -> None:
        while True:
            self._heartbeat = time.monotonic()
            key = await self.queue.get()
            self._heartbeat = time.monotonic()
            delay: float | None = None
            started = time.perf_counter()
            outcome = "error"
            try:
                delay = await self.reconcile(key)
                tracked = self._objects.get(key)
                outcome = decide.outcome_of_state(tracked.state) if tracked else "verified"
            except asyncio.CancelledError:
                raise
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                # The API server is restarting, etcd is briefly away, a write conflicted: retry soon, quietly.
                delay = schedule.KUBERNETES_UNAVAILABLE_WAIT
                log.warning(
                    "Kubernetes API unavailable while reconciling %s/%s (%s); retrying in %gs", *key, _brief(exc), delay
                )
                outcome = "transient"
            except Exception:
                delay = schedule.UNEXPECTED_ERROR_WAIT
                log.exception("reconcile of %s/%s failed unexpectedly; retrying in %gs", *key, delay)
            finally:
                self.queue.done(key, delay)
                metrics.RECONCILES.labels(outcome).inc()
                metrics.RECONCILE_SECONDS.labels(outcome).observe(time.perf_counter() - started)

    def refresh_metrics(self) -> None:
        counts: dict[str, int] = {}
        for tracked in self._objects.values():
            counts[tracked.state] = counts.get(tracked.state, 0) + 1
        metrics.set_library_states(counts)
        metrics.QUEUE_DEPTH.set(len(self.queue))
        metrics.WATCHED_TARGETS.set(self.watchers.count())

    def health(self) -> dict[str, Any]:
        """For the liveness probe: a queue that has work overdue by minutes while nothing runs is stuck."""
        overdue = self.queue.overdue()
        stuck = overdue > _STUCK_AFTER_SECONDS and self.queue.in_flight() == 0
        return {
            "libraries": len(self._objects),
            "queued": len(self.queue),
            "inFlight": self.queue.in_flight(),
            "overdueSeconds": round(overdue, 1),
            "targetsWatched": self.watchers.count(),
            "statusBacklog": self.statuses.backlog(),
            "healthy": not stuck,
        }

    # --- one reconcile --------------------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """Bring one object to its desired state; return the delay until its next visit (None: only on change).

        Named steps, each of which may end the visit (:class:`_Finished`): gate → resolve → vet → claim → sync (or
        check, when nothing may be written) → report. The decisions are ``reconcile/decide.py``'s; this keeps the
        I/O and the order."""
        tracked = self._objects.get(key)
        if tracked is None:
            return None
        try:
            visit = await self._gate(key, tracked)
            spec = self._parse(visit)
            resolved = await self._resolve(visit, spec)
            library = await self._vet(visit, spec, resolved.code)
            topology = await self._claim(visit, spec, library, resolved.target)
            writes = drift.may_write(
                spec.drift_policy, spec.management_policy, visit.previous, visit.ref.generation, library.sha256,
                visit.controls.reconcile_requested_at,
            )  # fmt: skip
            if not writes:
                result = await self._check(visit, library, resolved.target, topology)
            else:
                result = await self._sync(visit, spec, library, resolved.target, topology)
            return await self._report(visit, spec, library, result, checked=not writes)
        except _Finished as finished:
            return finished.delay

    async def _gate(self, key: Key, tracked: Tracked) -> _Visit:
        """Note the trigger as handled; stop here while the object is being deleted, paused or unmanaged."""
        body = tracked.body
        tracked.handled_token = decide.trigger_token(body)
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            raise _Finished(None)  # the delete handler owns the object now
        ref = ObjectRef.of(body)
        # Our latest rendered status (it may still be queued) is newer than the body's; the body's is the truth
        # after a restart or when someone else edited the status.
        previous: Mapping[str, Any] = tracked.status_view or body.get("status") or {}
        controls = parse_controls(meta.get("annotations"))
        base = decide.base_attempt(ref.generation, _rfc3339(self._clock()), controls)
        visit = _Visit(key, tracked, ref, previous, controls, base)
        if controls.paused or not controls.managed:
            self.watchers.detach(key)
            self._write_status(ref, base, previous)
            raise _Finished(None)
        return visit

    def _parse(self, visit: _Visit) -> LibrarySpec:
        try:
            spec = parse_spec(visit.tracked.body.get("spec") or {})
        except SpecError as exc:
            self._fail(visit, exc.failure, decide.Ending.SPEC_ERROR)
        visit.base = decide.base_attempt(visit.ref.generation, visit.base.now, visit.controls, spec)
        visit.resync_seconds = spec.resync_seconds
        return spec

    async def _resolve(self, visit: _Visit, spec: LibrarySpec) -> Resolved:
        """The code and the target, with the Secrets and ConfigMaps they name."""
        try:
            return await resolve(spec, visit.ref.namespace, self.kube, self.settings.redis_timeout)
        except ResolveError as exc:
            self._fail(visit, exc.failure, decide.Ending.MISSING_REFERENCE)
        except ApiException as exc:
            self._fail(visit, decide.reference_api_failure(exc.status, exc.reason), decide.Ending.API_ERROR)

    async def _vet(self, visit: _Visit, spec: LibrarySpec, code: bytes) -> Library:
        library_or_failure = decide.check_library_if_known(code, spec)
        if library_or_failure is None:  # a new code version: parse and lint it off the event loop
            library_or_failure = await asyncio.to_thread(decide.check_library, code, spec)
        if isinstance(library_or_failure, Failure):
            self._fail(visit, library_or_failure, decide.Ending.LIBRARY_REFUSED)
        return library_or_failure

    async def _claim(self, visit: _Visit, spec: LibrarySpec, library: Library, target: Target) -> Topology | None:
        """Claim the library name on the target's primaries; stop if an older object has it (or may have it)."""
        key = visit.key
        self.ownership.claim_as_written(key, target_identity(spec), library.name)
        topology = await self._topology(target)
        primaries = topology.primaries if topology is not None else ()
        self.ownership.claim_servers(key, library.name, (n.identity for n in primaries))
        if self.ownership.undiscovered_elder(key) is not None:
            # an elder wanting this library name may share our servers: let it look first
            raise _Finished(decide.next_visit(decide.Ending.ELDER_LOOKUP, 0, visit.resync_seconds)[0])
        owner = self.ownership.blocker(key)
        if owner is not None:
            self.watchers.detach(key)
            self._fail(visit, decide.conflict_failure(library.name, owner), decide.Ending.RESOURCE_CONFLICT)
        self.watchers.attach(target, key)
        return topology

    async def _sync(
        self, visit: _Visit, spec: LibrarySpec, library: Library, target: Target, topology: Topology | None
    ) -> SyncResult:
        """Load the code where it is missing or differs (the canary first, with the smoke tests)."""
        tracked, controls = visit.tracked, visit.controls
        if decide.announces_rollout(visit.previous, visit.ref.generation):
            in_progress = replace(visit.base, library=library, in_progress=True)
            visit.previous = await self._write_status_and_wait(visit.ref, in_progress, visit.previous)
        lost = self._losses(tracked, library, controls)
        if decide.lost_too_often(lost):
            self._fail(visit, decide.lost_failure(lost), decide.Ending.LOST_DURING_LOAD)
        connector = self._connector(target)
        known = await self._shared_listing(tracked, target, topology, connector)
        gate = decide.smoke_gate(library, controls, spec)
        if tracked.smoke_failed is not None and tracked.smoke_failed[0] == gate:
            self._fail(visit, tracked.smoke_failed[1], decide.Ending.SMOKE_TEST_FAILED)
        probes = () if smoke_tests_passed(visit.previous, library.sha256, visit.base.test_names) else spec.tests
        result = await engine.sync(library, target, connector=connector, topology=topology, known=known, probes=probes)
        self._remember(visit, library, result, lost, gate)
        return result

    def _remember(
        self, visit: _Visit, library: Library, result: SyncResult, lost: list[str], gate: tuple[Any, ...]
    ) -> None:
        """Keep what the next sync must know: a canary lost during load (stop at the second), failed smoke tests."""
        tracked = visit.tracked
        if result.error is not None and result.error.kind is ErrorKind.LOST_DURING_LOAD:
            tracked.lost_nodes = [*lost, result.blocking_node or "a primary"]
            if decide.lost_too_often(tracked.lost_nodes):
                self._fail(visit, decide.lost_failure(tracked.lost_nodes), decide.Ending.LOST_DURING_LOAD)
        if result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED:
            attempt = replace(visit.base, library=library, result=result)
            tracked.smoke_failed = (gate, Failure(*failure_reason(attempt), permanent=True))
        elif result.ok:
            tracked.smoke_failed = None

    async def _check(self, visit: _Visit, library: Library, target: Target, topology: Topology | None) -> SyncResult:
        """Read every primary and report what differs, writing nothing to Redis (``driftPolicy: Report`` once the
        spec is loaded; ``managementPolicy: Observe`` always)."""
        connector = self._connector(target)
        known = await self._shared_listing(visit.tracked, target, topology, connector)
        return await engine.check(library, target, connector=connector, topology=topology, known=known)

    async def _shared_listing(
        self, tracked: Tracked, target: Target, topology: Topology | None, connector: Connector
    ) -> Known | None:
        """When every library of the target was woken at once: one full listing per primary serves them all."""
        if topology is None or not tracked.wake_reasons or not self._burst(target):
            return None
        known = await self.listings.known(target, topology, connector)
        metrics.SHARED_LISTING_SYNCS.inc()
        return known

    async def _report(
        self, visit: _Visit, spec: LibrarySpec, library: Library, result: SyncResult, checked: bool
    ) -> float:
        """Events, metrics and the status for the engine's result; the delay until the next visit."""
        tracked = visit.tracked
        delay, tracked.failures_in_a_row = decide.next_visit(
            decide.ending_of(result), tracked.failures_in_a_row, spec.resync_seconds
        )
        attempt = replace(visit.base, library=library, result=result, retry_in=delay)
        if checked:
            self._report_drift(visit.ref, attempt, visit.previous, tracked.wake_reasons)
        self._count(spec, result)
        for event in decide.sync_events(spec, library, result, visit.previous, attempt, tracked.wake_reasons):
            self._emit(visit.ref, event)
        tracked.wake_reasons = []
        self._write_status(visit.ref, attempt, visit.previous)
        return delay

    def _report_drift(
        self, ref: ObjectRef, attempt: Attempt, previous: Mapping[str, Any], wake_reasons: list[str]
    ) -> None:
        """A Warning event and the metric for primaries found drifted that the last status did not show so."""
        result = attempt.result
        if result is None:
            return
        newly = drift.newly_drifted(result, previous.get("nodes") or [])
        for node in newly:
            metrics.DRIFT_DETECTED.labels("missing" if node.before_sha256 is None else "different").inc()
        if newly:
            self._emit(ref, decide.drift_event(newly, result, attempt, wake_reasons))

    @staticmethod
    def _count(spec: LibrarySpec, result: SyncResult) -> None:
        for node in result.nodes:
            if node.outcome is Outcome.REPAIRED:
                metrics.DRIFT_REPAIRS.labels("different" if node.before_sha256 else "missing").inc()
        for node in result.nodes:
            if node.error is not None and node.outcome is Outcome.FAILED:
                metrics.LOAD_FAILURES.labels(",".join(str(e) for e in spec.endpoints), node.error.kind.value).inc()

    @staticmethod
    def _losses(tracked: Tracked, library: Library, controls: Controls) -> list[str]:
        """The canaries lost during FUNCTION LOAD of this code since it (or the user's request) last changed."""
        if tracked.lost_sha != library.sha256 or tracked.lost_request != controls.reconcile_requested_at:
            tracked.lost_sha, tracked.lost_request = library.sha256, controls.reconcile_requested_at
            tracked.lost_nodes = []
        return tracked.lost_nodes

    def _burst(self, target: Target) -> bool:
        burst = self.settings.listing_burst
        return burst > 0 and self.watchers.key_count(target) >= burst

    def _fail(self, visit: _Visit, failure: Failure, ending: decide.Ending) -> NoReturn:
        """End the visit on a failure found before (or instead of) an engine result: its event if the Ready reason
        changes, its status, and the delay :func:`decide.next_visit` gives it."""
        tracked = visit.tracked
        delay, tracked.failures_in_a_row = decide.next_visit(ending, tracked.failures_in_a_row, visit.resync_seconds)
        event = decide.failure_event(visit.previous, failure)
        if event is not None:
            self._emit(visit.ref, event)
        attempt = replace(visit.base, failure=failure, retry_in=delay)
        self._write_status(visit.ref, attempt, visit.previous)
        raise _Finished(delay)

    def _emit(self, ref: ObjectRef, event: decide.Event) -> None:
        if event.type == "Warning":
            log.warning("%s: %s: %s", ref, event.reason, event.message)
        else:
            log.info("%s: %s", ref, event.message)
        self.kube.emit(ref, event.type, event.reason, event.message)

    def _write_status(self, ref: ObjectRef, attempt: Attempt, previous: Mapping[str, Any]) -> None:
        """Queue the status (the writer sends the latest one per object)."""
        status = self._rendered(ref, attempt, previous)
        if status_changed(status, previous):
            self.statuses.submit((ref.namespace, ref.name), ref, status)

    async def _write_status_and_wait(
        self, ref: ObjectRef, attempt: Attempt, previous: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """Write the status before going on (for a moment at most); return it."""
        status = self._rendered(ref, attempt, previous)
        if status_changed(status, previous):
            await self.statuses.submit_and_wait((ref.namespace, ref.name), ref, status, patience=2.0)
        return status

    def _rendered(self, ref: ObjectRef, attempt: Attempt, previous: Mapping[str, Any]) -> Mapping[str, Any]:
        status = render_status(attempt, previous)
        tracked = self._objects.get((ref.namespace, ref.name))
        if tracked is not None:
            tracked.state = decide.state_of(attempt)
            tracked.status_view = status
        return status

    # --- deletion -------------------------------------------------------------------------------------------------

    async def cleanup(self, body: Mapping[str, Any]) -> SyncResult | str:
        """FUNCTION DELETE the object's library on every primary. Returns the engine result, or a string saying
        why nothing needs to (or can) be done."""
        meta = body.get("metadata") or {}
        status: Mapping[str, Any] = body.get("status") or {}
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            return f"nothing deleted: {exc.message}"
        if spec.management_policy is ManagementPolicy.OBSERVE:  # no finalizer then; this is for a racing switch
            return "nothing deleted: managementPolicy Observe never writes to Redis"
        name = status.get("libraryName") or spec.library_name
        if not name and spec.code is not None:
            try:
                name = parse_library(spec.code).name
            except LibraryError:
                name = None
        if not name:
            return "nothing to delete: the library was never identified"
        key: Key = (str(meta.get("namespace")), str(meta.get("name")))
        others = self.ownership.rivals(key)
        if others:
            return f"library {name} left in Redis: still wanted by {', '.join(f'{ns}/{n}' for ns, n in others)}"
        target = await resolve_target(spec, str(meta.get("namespace")), self.kube, self.settings.redis_timeout)
        return await engine.delete(str(name), target, connector=self._connector(target))

    # --- connections ----------------------------------------------------------------------------------------------

    async def _topology(self, target: Target) -> Topology | None:
        """The target's primaries: from its watcher's last poll when recent (a thousand reconciles of one target
        share it), else discovered now. ``None`` when discovery fails: the engine then reports why."""
        seen = self.watchers.fresh_topology(target, max_age=self.settings.poll_interval * 1.5)
        if seen is not None:
            return seen
        try:
            return await discover(target, self._connector(target))
        except TopologyError:
            return None

    def _connector(self, target: Target) -> Connector:
        cached = self._connectors.get(target)
        if cached is None:
            cached = self._connectors[target] = _CachedConnector(Connector(target))
        cached.last_used = time.monotonic()
        return cached.connector

    async def _close_idle_connectors(self) -> None:
        limit = time.monotonic() - self.settings.connector_idle_seconds
        for target in [t for t, c in self._connectors.items() if c.last_used < limit]:
            await self._connectors.pop(target).connector.aclose()


def target_identity(spec: LibrarySpec) -> tuple[tuple[str, ...], str, str | None]:
    """The target as written (sorted endpoints, mode, sentinel master), credentials excluded: two objects naming the
    same seeds with different users still put the library on the same primaries."""
    return (tuple(sorted(str(e) for e in spec.endpoints)), spec.mode.value, spec.sentinel_master)


def library_name_from_spec(spec: LibrarySpec) -> str | None:
    """The library name readable without any I/O (libraryName, or the shebang of inline code), so conflicts are known
    before either object touches Redis. ``codeFrom`` without ``libraryName`` is known after its first reconcile."""
    name = spec.library_name
    if name is None and spec.code is not None:
        try:
            name = parse_shebang(spec.code.encode("utf-8"))[1]
        except LibraryError:
            return None
    return name or None


def _key(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def _created(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("creationTimestamp") or "")


def _brief(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
