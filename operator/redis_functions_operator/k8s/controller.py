"""The controller: keeps every RedisFunctionLibrary it has seen converging, one reconcile at a time per object.

kopf feeds it watch events (:meth:`Controller.observe`) and reference changes (:meth:`observe_reference`); the
controller decides whether they matter (a new generation, a user annotation, a referenced Secret/ConfigMap) and
schedules the object on its :class:`WorkQueue`. Workers run :meth:`reconcile`, which is a straight line:

    annotations → spec → Secrets/ConfigMaps → library → engine.sync → status + events → next visit

Each step's failure becomes a :class:`Failure` with a reason, so the status says exactly what is wrong. Nothing here
imports kopf: the handlers module is the only place that knows about it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from redis_functions_operator.k8s import metrics
from redis_functions_operator.k8s.kube import Kube, ObjectRef
from redis_functions_operator.k8s.ownership import Ownership
from redis_functions_operator.k8s.resolve import ResolveError, resolve, resolve_target
from redis_functions_operator.k8s.statuswriter import StatusWriter
from redis_functions_operator.k8s.watchers import DEFAULT_INTERVAL, TargetWatchers
from redis_functions_operator.k8s.workqueue import WorkQueue
from redis_functions_operator.library import (
    REFUSAL_PREFIX,
    Library,
    LibraryError,
    Vetting,
    parse_library,
    parse_shebang,
    vet,
    vetted,
)
from redis_functions_operator.reconcile import drift, schedule
from redis_functions_operator.reconcile.conditions import READY, find
from redis_functions_operator.reconcile.spec import (
    RECONCILE_REQUEST_ANNOTATION,
    Controls,
    DeletionPolicy,
    LibrarySpec,
    ManagementPolicy,
    RefKind,
    SpecError,
    parse_controls,
    parse_spec,
)
from redis_functions_operator.reconcile.status import (
    DRIFTED_REASON,
    Attempt,
    Failure,
    failure_reason,
    render_status,
    smoke_tests_passed,
    status_changed,
)
from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Connector, Target
from redis_functions_operator.redis.errors import ErrorKind
from redis_functions_operator.redis.listing import Listings
from redis_functions_operator.redis.sync import Outcome, SyncResult
from redis_functions_operator.redis.topology import Topology, TopologyError, discover

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)

#: How soon an object looks again while an elder wanting the same library name has not discovered its servers.
_ELDER_LOOKUP_WAIT = 0.2

#: Canary primaries lost during FUNCTION LOAD of one code version before that code is not sent again (see Tracked).
LOSSES_BEFORE_STOPPING = 2


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
        if trigger_token(body) != tracked.handled_token:
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
                outcome = _OUTCOME_OF_STATE.get(tracked.state, "error") if tracked else "verified"
            except asyncio.CancelledError:
                raise
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                # The API server is restarting, etcd is briefly away, a write conflicted: retry soon, quietly.
                log.warning(
                    "Kubernetes API unavailable while reconciling %s/%s (%s); retrying in 5s", *key, _brief(exc)
                )
                outcome, delay = "transient", 5.0
            except Exception:
                log.exception("reconcile of %s/%s failed unexpectedly; retrying in 30s", *key)
                delay = 30.0
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
        stuck = overdue > 300 and self.queue.in_flight() == 0
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
        """Bring one object to its desired state; return the delay until its next visit (None: only on change)."""
        tracked = self._objects.get(key)
        if tracked is None:
            return None
        body = tracked.body
        tracked.handled_token = trigger_token(body)
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None  # the delete handler owns the object now
        ref = ObjectRef.of(body)
        # Our latest rendered status (it may still be queued) is newer than the body's; the body's is the truth
        # after a restart or when someone else edited the status.
        previous: Mapping[str, Any] = tracked.status_view or body.get("status") or {}
        controls = parse_controls(meta.get("annotations"))
        now = _rfc3339(self._clock())
        base = Attempt(generation=ref.generation, now=now, controls=controls)

        if controls.paused or not controls.managed:
            self.watchers.detach(key)
            await self._write_status(ref, base, previous)
            return None
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            return await self._fail(tracked, ref, base, previous, Failure(exc.reason, exc.message, True), 300.0)
        base = Attempt(
            generation=ref.generation, now=now, controls=controls, version=spec.version,
            drift_policy=spec.drift_policy, management_policy=spec.management_policy,
            test_names=tuple(t.name for t in spec.tests),
        )  # fmt: skip
        try:
            resolved = await resolve(spec, ref.namespace, self.kube, self.settings.redis_timeout)
        except ResolveError as exc:
            failure = Failure(exc.reason, exc.message, permanent=True)
            delay = schedule.after_transient(
                tracked.failures_in_a_row + 1, spec.resync_seconds, schedule.MISSING_REFERENCE_CAP
            )
            return await self._fail(tracked, ref, base, previous, failure, delay)
        except ApiException as exc:
            failure = Failure("KubernetesApiError", f"reading a referenced object: {exc.status} {exc.reason}", False)
            delay = schedule.after_transient(tracked.failures_in_a_row + 1, spec.resync_seconds)
            return await self._fail(tracked, ref, base, previous, failure, delay)
        library_or_failure = check_library_if_known(resolved.code, spec)
        if library_or_failure is None:  # a new code version: parse and lint it off the event loop
            library_or_failure = await asyncio.to_thread(check_library, resolved.code, spec)
        if isinstance(library_or_failure, Failure):
            return await self._fail(tracked, ref, base, previous, library_or_failure, 300.0)
        library = library_or_failure
        self.ownership.claim_as_written(key, target_identity(spec), library.name)
        topology = await self._topology(resolved.target)
        primaries = topology.primaries if topology is not None else ()
        self.ownership.claim_servers(key, library.name, (n.identity for n in primaries))
        if self.ownership.undiscovered_elder(key) is not None:
            return _ELDER_LOOKUP_WAIT  # an elder wanting this library name may share our servers: let it look first
        owner = self.ownership.blocker(key)
        if owner is not None:
            self.watchers.detach(key)
            message = (
                f"library {library.name} on this Redis is managed by {owner[0]}/{owner[1]} (the oldest object "
                "claiming it, maybe through another address of the same servers); this object takes over if that "
                "one is deleted or points elsewhere"
            )
            return await self._fail(tracked, ref, base, previous, Failure("ResourceConflict", message, True), 300.0)
        self.watchers.attach(resolved.target, key)
        writes = drift.may_write(
            spec.drift_policy, spec.management_policy, previous, ref.generation, library.sha256,
            controls.reconcile_requested_at,
        )  # fmt: skip
        if not writes:
            return await self._check(tracked, ref, spec, library, resolved.target, topology, base, previous)

        observed = previous.get("observedGeneration")
        if observed not in (None, -1) and observed != ref.generation:
            # An update of a live library: say Reconciling while the new code goes out. (A brand-new object already
            # reads InProgress through observedGeneration -1; skipping the write halves the API calls at scale.)
            in_progress = replace(base, library=library, in_progress=True)
            previous = await self._write_status(ref, in_progress, previous, wait=True)

        lost = self._losses(tracked, library, controls)
        if len(lost) >= LOSSES_BEFORE_STOPPING:
            return await self._fail(tracked, ref, base, previous, _lost_failure(lost), 300.0)
        connector = self._connector(resolved.target)
        known = None
        if topology is not None and tracked.wake_reasons and self._burst(resolved.target):
            # every library of this target was woken at once: one full listing per primary serves them all
            known = await self.listings.known(resolved.target, topology, connector)
            metrics.SHARED_LISTING_SYNCS.inc()
        gate = (library.sha256, controls.reconcile_requested_at, spec.tests)
        if tracked.smoke_failed is not None and tracked.smoke_failed[0] == gate:
            later = schedule.after_permanent(spec.resync_seconds)
            return await self._fail(tracked, ref, base, previous, tracked.smoke_failed[1], later)
        probes = () if smoke_tests_passed(previous, library.sha256, base.test_names) else spec.tests
        result = await engine.sync(
            library, resolved.target, connector=connector, topology=topology, known=known, probes=probes
        )
        delay = self._next_delay(tracked, spec, result)
        if result.error is not None and result.error.kind is ErrorKind.LOST_DURING_LOAD:
            tracked.lost_nodes = [*lost, result.blocking_node or "a primary"]
            if len(tracked.lost_nodes) >= LOSSES_BEFORE_STOPPING:
                return await self._fail(tracked, ref, base, previous, _lost_failure(tracked.lost_nodes), 300.0)
        attempt = replace(base, library=library, result=result, retry_in=delay)
        if result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED:
            tracked.smoke_failed = (gate, Failure(*failure_reason(attempt), permanent=True))
        elif result.ok:
            tracked.smoke_failed = None
        await self._post_events(ref, spec, library, result, previous, attempt, tracked.wake_reasons)
        tracked.wake_reasons = []
        await self._write_status(ref, attempt, previous)
        return delay

    async def _check(
        self,
        tracked: Tracked,
        ref: ObjectRef,
        spec: LibrarySpec,
        library: Library,
        target: Target,
        topology: Topology | None,
        base: Attempt,
        previous: Mapping[str, Any],
    ) -> float:
        """Read every primary and report what differs, writing nothing to Redis (``driftPolicy: Report`` once the
        spec is loaded; ``managementPolicy: Observe`` always)."""
        connector = self._connector(target)
        known = None
        if topology is not None and tracked.wake_reasons and self._burst(target):
            known = await self.listings.known(target, topology, connector)
            metrics.SHARED_LISTING_SYNCS.inc()
        result = await engine.check(library, target, connector=connector, topology=topology, known=known)
        delay = self._next_delay(tracked, spec, result)
        attempt = replace(base, library=library, result=result, retry_in=delay)
        await self._report_drift(ref, attempt, previous, tracked.wake_reasons)
        await self._post_events(ref, spec, library, result, previous, attempt, tracked.wake_reasons)
        tracked.wake_reasons = []
        await self._write_status(ref, attempt, previous)
        return delay

    async def _report_drift(
        self, ref: ObjectRef, attempt: Attempt, previous: Mapping[str, Any], wake_reasons: list[str]
    ) -> None:
        """A Warning event and the metric for primaries found drifted that the last status did not show so."""
        result = attempt.result
        if result is None:
            return
        newly = drift.newly_drifted(result, previous.get("nodes") or [])
        for node in newly:
            metrics.DRIFT_DETECTED.labels("missing" if node.before_sha256 is None else "different").inc()
        if not newly:
            return
        only_new = replace(result, nodes=tuple(newly))
        because = f" after: {'; '.join(wake_reasons)}" if wake_reasons else ""
        message = f"{drift.describe(only_new)}{because}; {drift.left_as_found(attempt.management_policy)}"
        log.warning("%s: drift: %s", ref, message)
        self.kube.emit(ref, "Warning", DRIFTED_REASON, message)

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

    def _next_delay(self, tracked: Tracked, spec: LibrarySpec, result: SyncResult) -> float:
        if result.ok or (result.error is None and result.drifted):  # drift left as found: watched, not retried
            tracked.failures_in_a_row = 0
            return schedule.after_success(spec.resync_seconds)
        tracked.failures_in_a_row += 1
        if result.permanent:
            return schedule.after_permanent(spec.resync_seconds)
        return schedule.after_transient(tracked.failures_in_a_row, spec.resync_seconds)

    async def _fail(
        self,
        tracked: Tracked,
        ref: ObjectRef,
        base: Attempt,
        previous: Mapping[str, Any],
        failure: Failure,
        delay: float,
    ) -> float:
        tracked.failures_in_a_row += 1
        attempt = replace(base, failure=failure, retry_in=delay)
        old_ready = find(previous.get("conditions") or [], READY)
        if not old_ready or old_ready.get("reason") != failure.reason:
            log.warning("%s: %s: %s", ref, failure.reason, failure.message)
            self.kube.emit(ref, "Warning", failure.reason, failure.message)
        await self._write_status(ref, attempt, previous)
        return delay

    async def _write_status(
        self, ref: ObjectRef, attempt: Attempt, previous: Mapping[str, Any], wait: bool = False
    ) -> Mapping[str, Any]:
        key: Key = (ref.namespace, ref.name)
        tracked = self._objects.get(key)
        status = render_status(attempt, previous)
        if tracked is not None:
            tracked.state = state_of(attempt)
            tracked.status_view = status
        if status_changed(status, previous):
            if wait:
                await self.statuses.submit_and_wait(key, ref, status, patience=2.0)
            else:
                self.statuses.submit(key, ref, status)
        return status

    async def _post_events(
        self,
        ref: ObjectRef,
        spec: LibrarySpec,
        library: Library,
        result: SyncResult,
        previous: Mapping[str, Any],
        attempt: Attempt,
        wake_reasons: list[str],
    ) -> None:
        loaded = [n for n in result.nodes if n.outcome is Outcome.LOADED]
        repaired = [n for n in result.nodes if n.outcome is Outcome.REPAIRED]
        version = f"version {spec.version} " if spec.version else ""
        if loaded:
            updated = any(n.before_sha256 for n in loaded)
            message = (
                f"library {library.name} {version}(sha256 {library.sha256[:12]}) "
                f"{'updated' if updated else 'loaded'} on {len(loaded)}/{len(result.nodes)} primaries"
            )
            log.info("%s: %s", ref, message)
            self.kube.emit(ref, "Normal", "Updated" if updated else "Loaded", message)
        for node in repaired:
            metrics.DRIFT_REPAIRS.labels("different" if node.before_sha256 else "missing").inc()
        for node in result.nodes:
            if node.error is not None and node.outcome is Outcome.FAILED:
                metrics.LOAD_FAILURES.labels(",".join(str(e) for e in spec.endpoints), node.error.kind.value).inc()
        if repaired:
            details = ", ".join(
                f"{n.address} ({'missing' if not n.before_sha256 else 'held other code'})" for n in repaired
            )
            because = f" after: {'; '.join(wake_reasons)}" if wake_reasons else ""
            message = f"library {library.name} repaired on {details}{because}"
            log.info("%s: %s", ref, message)
            self.kube.emit(ref, "Normal", "DriftRepaired", message)
        if not result.ok:
            old_ready = find(previous.get("conditions") or [], READY)
            new_ready = find(render_status(attempt, previous)["conditions"], READY)
            if new_ready and new_ready.get("reason") == DRIFTED_REASON:
                return  # _report_drift posts its own event, per newly drifted primary
            if new_ready and (not old_ready or old_ready.get("reason") != new_ready.get("reason")):
                log.warning("%s: %s: %s", ref, new_ready["reason"], new_ready["message"])
                self.kube.emit(ref, "Warning", str(new_ready["reason"]), str(new_ready["message"]))

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


def _lost_failure(lost: list[str]) -> Failure:
    message = (
        f"not sent again: {' and then '.join(lost)} stopped answering during FUNCTION LOAD of this code, so it may "
        f"crash the server; change the code, or set the annotation {RECONCILE_REQUEST_ANNOTATION} to try once more"
    )
    return Failure("NodeLostDuringLoad", message, permanent=True)


def check_library(code: bytes, spec: LibrarySpec) -> Library | Failure:
    """Vet the code before any server sees it: run its load as FUNCTION LOAD would (the library wing's :func:`vet`,
    cached there by sha256, so a resync of a thousand unchanged libraries runs nothing)."""
    try:
        vetting = vet(code)
    except LibraryError as exc:
        return Failure("InvalidLibrary", f"line {exc.line}: {exc.message}", permanent=True)
    return _for_spec(vetting, spec)


def check_library_if_known(code: bytes, spec: LibrarySpec) -> Library | Failure | None:
    """:func:`check_library` when this code version was already vetted (no work, so no thread needed), else None."""
    vetting = vetted(code)
    return None if vetting is None else _for_spec(vetting, spec)


def _for_spec(vetting: Vetting, spec: LibrarySpec) -> Library | Failure:
    library = vetting.library
    if spec.library_name and spec.library_name != library.name:
        message = f"spec.libraryName is {spec.library_name!r} but the code's shebang names {library.name!r}"
        return Failure("LibraryNameMismatch", message, permanent=True)
    refusal = vetting.refusal
    if refusal is None:
        return library
    return Failure(
        refusal.reason, f"refused before loading ({REFUSAL_PREFIX[refusal.reason]}): {refusal.located}", True
    )


_OUTCOME_OF_STATE = {
    "ready": "verified",
    "reconciling": "transient",
    "stalled": "permanent",
    "paused": "paused",
    "drifted": "drifted",
}


def state_of(attempt: Attempt) -> str:
    if attempt.controls.paused or not attempt.controls.managed:
        return "paused"
    if attempt.in_progress:
        return "reconciling"
    if attempt.ok:
        return "ready"
    if attempt.left_drifted:
        return "drifted"
    return "stalled" if attempt.permanent else "reconciling"


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


def trigger_token(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, calls for a reconcile now: identity, generation, the user's annotations."""
    meta = body.get("metadata") or {}
    controls: Controls = parse_controls(meta.get("annotations"))
    return (
        meta.get("uid"),
        meta.get("generation"),
        controls.paused,
        controls.managed,
        controls.reconcile_requested_at,
        bool(meta.get("deletionTimestamp")),
    )


def needs_cleanup(body: Mapping[str, Any]) -> bool:
    """Whether deleting this object must remove the library from Redis (and so whether it carries the finalizer)."""
    spec = body.get("spec") or {}
    controls = parse_controls((body.get("metadata") or {}).get("annotations"))
    policy = spec.get("deletionPolicy") or DeletionPolicy.DELETE.value
    observing = spec.get("managementPolicy") == ManagementPolicy.OBSERVE.value  # never writes, so never deletes
    return policy == DeletionPolicy.DELETE.value and controls.managed and not controls.paused and not observing


def _brief(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
