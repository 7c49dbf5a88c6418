"""kopf handlers: thin. They translate kopf's callbacks into calls on the :class:`Controller` and nothing more.

* ``on.event`` for RedisFunctionLibrary objects feeds the controller (the initial listing on start is how a restarted
  operator resumes: every object is verified once, and nothing already right is reloaded);
* ``on.event`` for Secrets and ConfigMaps wakes the libraries that read them (a Secret that appears later makes a
  Stalled object Ready without any edit to it);
* with ``--label-selector`` (one shard of several), kopf's watch of RedisFunctionLibrary objects is filtered by the
  API server, so kopf never sees, patches or finalizes another shard's objects (a client-side filter would not do:
  kopf removes its finalizer from any object its handlers stop matching). Ownership still needs those objects, so
  an unfiltered read-only watch (:class:`EveryLibraryWatch`) feeds :func:`library_elsewhere_event`, and the
  controller starts reconciling only once it has listed them all;
* ``on.delete`` — registered with a ``when`` filter, so kopf keeps its finalizer *only* on objects whose deletion
  must remove the library from Redis (``deletionPolicy: Delete``, managed, not paused). Patching
  ``deletionPolicy: Retain`` on an object stuck in deletion removes the finalizer and releases it.

Settings are chosen deliberately: kopf's own bookkeeping lives in annotations under ``kopf.redisfunctions.dev`` (a
prefix distinct from the user-facing ``redisfunctions.dev/`` annotations, which kopf would otherwise hide from change
detection), and it keeps no diff-base at all (:class:`NothingToDiff`), so a library of hundreds of KiB is never
copied into an annotation (all annotations of an object share a 256 KiB limit).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from redis_functions_operator.k8s.controller import Controller
from redis_functions_operator.k8s.kube import GROUP, PLURAL, VERSION, EveryLibraryWatch, LabelSelector, ObjectRef
from redis_functions_operator.reconcile.decide import needs_cleanup
from redis_functions_operator.reconcile.spec import RefKind
from redis_functions_operator.redis.sync import SyncResult

FINALIZER = "redisfunctions.dev/cleanup"
KOPF_PREFIX = "kopf.redisfunctions.dev"

registry = kopf.OperatorRegistry()


class NothingToDiff(kopf.DiffBaseStorage):
    """No diff-base at all. Our only change-detecting handler is ``on.delete`` (change detection is the
    controller's job), so kopf has nothing to compare: an empty essence, never stored. This saves one PATCH per
    object (kopf would otherwise write ``last-handled-configuration`` on every new object: 1000 writes at start
    for 1000 libraries) and a deep copy of the whole body, code included, on every watch event."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


log = logging.getLogger(__name__)


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Same credentials as the ``kubernetes`` client (in-cluster service account, else KUBECONFIG); a private
    registry does not get kopf's default login handlers."""
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.scanning.disabled = not memo.get("scanning", False)
    if settings.scanning.disabled and not await memo.controller.kube.resource_served():
        # With scanning off kopf would otherwise sit healthy and idle forever when the CRD is missing.
        raise kopf.PermanentError(f"the {PLURAL}.{GROUP}/{VERSION} resource is not served: install crds/, then restart")
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX, v1=False)
    settings.persistence.diffbase_storage = NothingToDiff()
    settings.posting.reporting_component = "redis-functions-operator"
    settings.posting.level = logging.WARNING  # our own events are richer; kopf's only for its warnings/errors
    settings.networking.request_timeout = 60
    # kopf's default backoff climbs to 21 s: after a long API outage the first change then waits that long.
    settings.networking.error_backoffs = [1, 1, 2, 3, 5, 5, 5]
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8
    controller: Controller = memo.controller
    selector: LabelSelector = memo.get("label_selector") or LabelSelector()
    every_library: EveryLibraryWatch | None = memo.get("every_library")
    if selector:
        settings.watching.label_selectors[GROUP, PLURAL] = str(selector)
    if every_library is not None:
        every_library.start()
    memo.controller_task = asyncio.create_task(_run_controller(controller, every_library), name="controller")


async def _run_controller(controller: Controller, every_library: EveryLibraryWatch | None) -> None:
    if every_library is not None:
        # An elder of another shard must be known before any object of this one acts (it would load its code).
        await every_library.wait_listed()
    await controller.run()


@kopf.on.cleanup(registry=registry)
async def stop(memo: kopf.Memo, **_: Any) -> None:
    every_library: EveryLibraryWatch | None = memo.get("every_library")
    if every_library is not None:
        every_library.stop()
    task: asyncio.Task[None] | None = memo.get("controller_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# The watch-event handlers are coroutines on purpose: kopf runs a plain function in its executor threads, and these
# mutate the controller's work queue and set an asyncio.Event, neither of which is thread-safe (a "deque mutated
# during iteration" was seen at 1000 objects when they were plain functions). WorkQueue refuses a call off the loop.
@kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
async def library_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    if type == "DELETED":
        controller.forget(body)
    else:
        controller.observe(body)


def library_elsewhere_event(
    controller: Controller, selector: LabelSelector, type_: str, body: Mapping[str, Any]
) -> None:
    """An event of the unfiltered watch (on the event loop). The objects this shard's selector matches are kopf's
    and the controller's; the others only lend their claims to ownership."""
    labels = (body.get("metadata") or {}).get("labels")
    if type_ == "DELETED" or selector.matches(labels):
        controller.forget_elsewhere(body)
    else:
        controller.observe_elsewhere(body)


@kopf.on.event("", "v1", "secrets", registry=registry)
async def secret_event(type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.controller.observe_reference(RefKind.SECRET, namespace, name, body, deleted=type == "DELETED")


@kopf.on.event("", "v1", "configmaps", registry=registry)
async def config_map_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace:
        memo.controller.observe_reference(RefKind.CONFIG_MAP, namespace, name, body, deleted=type == "DELETED")


def _needs_cleanup(body: kopf.Body, **_: Any) -> bool:
    return needs_cleanup(body)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", registry=registry, when=_needs_cleanup, backoff=5)
async def cleanup(body: kopf.Body, memo: kopf.Memo, started: dt.datetime, **_: Any) -> None:
    """Remove the library from every primary; bounded by ``--deletion-timeout``."""
    controller: Controller = memo.controller
    ref = ObjectRef.of(body)
    elapsed = (dt.datetime.now(dt.UTC) - started.replace(tzinfo=started.tzinfo or dt.UTC)).total_seconds()
    try:
        outcome: SyncResult | str = await controller.cleanup(body)
    except Exception as exc:  # unresolvable Secret, API error: same bounded retry as an unreachable node
        outcome = f"{type(exc).__name__}: {exc}"
        failed = True
    else:
        failed = isinstance(outcome, SyncResult) and not outcome.ok
    if not failed:
        message = outcome if isinstance(outcome, str) else f"library {outcome.library} deleted from every primary"
        await controller.kube.post_event(ref, "Normal", "Deleted", message)
        return
    detail = _delete_failure(outcome)
    timeout: float = memo.deletion_timeout
    if elapsed >= timeout:
        message = f"gave up after {elapsed:.0f}s: {detail}; the library may remain in Redis"
        await controller.kube.post_event(ref, "Warning", "DeleteTimedOut", message)
        return
    hint = "patch spec.deletionPolicy to Retain to release the object without touching Redis"
    await controller.kube.post_event(ref, "Warning", "DeleteFailed", f"{detail}; retrying ({hint})")
    raise kopf.TemporaryError(detail, delay=min(30.0, 2.0 + elapsed / 4))


def _delete_failure(outcome: SyncResult | str) -> str:
    if isinstance(outcome, str):
        return outcome
    failing = [n for n in outcome.nodes if n.error is not None]
    if failing:
        return "; ".join(f"{n.address}: {n.error.describe()}" for n in failing if n.error)
    return outcome.error.describe() if outcome.error else "not every primary confirmed the delete"
