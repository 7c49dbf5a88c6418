"""The few Kubernetes API calls the operator makes, off the event loop.

The official ``kubernetes`` client is synchronous; every call here runs in a worker thread (``asyncio.to_thread``)
so a slow API server never stalls Redis work. kopf watches and manages finalizers with its own client; this module
is only for what kopf does not do: reading Secrets/ConfigMaps (the watch's copies first: ``references.py``), writing
``status``, posting Events.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from redis_functions_operator.k8s import metrics
from redis_functions_operator.k8s.references import Data, References
from redis_functions_operator.reconcile.spec import RefKind

GROUP = "redisfunctions.dev"
VERSION = "v1alpha1"
PLURAL = "redisfunctionlibraries"
KIND = "RedisFunctionLibrary"
COMPONENT = "redis-functions-operator"

log = logging.getLogger(__name__)

#: A DNS-1123 subdomain: what a Secret or ConfigMap can be named.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str
    uid: str = ""
    generation: int = 0

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata") or {}
        return cls(
            str(meta.get("namespace")),
            str(meta.get("name")),
            str(meta.get("uid") or ""),
            int(meta.get("generation") or 0),
        )

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Kube:
    """Thin async facade over the sync client; one instance per operator process."""

    def __init__(self, api: k8s.ApiClient, timeout: float = 30.0, threads: int = 16) -> None:
        self._core = k8s.CoreV1Api(api)
        self._custom = k8s.CustomObjectsApi(api)
        self._timeout = timeout
        # Our own pool (not asyncio's default of cpu+4 threads): status writes of a thousand libraries go out in
        # parallel, and a slow API server cannot starve kopf's own sync work.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self._events: asyncio.Queue[tuple[ObjectRef, str, str, str]] | None = None
        self.references = References()  # the watch's copies of referenced Secrets/ConfigMaps
        self._posters: list[asyncio.Task[None]] = []

    # --- events, posted in the background ----------------------------------------------------------------------

    def start_posting(self, workers: int = 4) -> None:
        """Post events from a queue, so a reconcile never waits on them (a repair of a thousand libraries is a
        thousand events)."""
        if self._events is None:
            self._events = asyncio.Queue(maxsize=10_000)
            self._posters = [asyncio.create_task(self._post_from_queue()) for _ in range(workers)]

    async def stop_posting(self) -> None:
        for task in self._posters:
            task.cancel()
        await asyncio.gather(*self._posters, return_exceptions=True)
        self._posters, self._events = [], None

    def emit(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Queue an event (dropped with a log line if the queue is full: events are a courtesy)."""
        if self._events is None:
            asyncio.get_running_loop().create_task(self.post_event(ref, type_, reason, message))
            return
        try:
            self._events.put_nowait((ref, type_, reason, message))
        except asyncio.QueueFull:
            log.warning("event queue full; dropping %s for %s", reason, ref)

    async def _post_from_queue(self) -> None:
        assert self._events is not None
        while True:
            ref, type_, reason, message = await self._events.get()
            await self.post_event(ref, type_, reason, message)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def resource_served(self) -> bool:
        """Whether the API server serves RedisFunctionLibrary (API discovery: no RBAC needed)."""
        try:
            found = await self._call(self._custom.get_api_resources, GROUP, VERSION, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.name == PLURAL for r in (found.resources or []))

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's decoded data, or None when it does not exist (from the watch's copy when it has one)."""
        return await self._read_reference(RefKind.SECRET, namespace, name, self._get_secret)

    async def read_config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A ConfigMap's data and binaryData as bytes, or None when it does not exist."""
        return await self._read_reference(RefKind.CONFIG_MAP, namespace, name, self._get_config_map)

    async def _read_reference(
        self, kind: RefKind, namespace: str, name: str, get: Callable[[str, str], Awaitable[Data | None]]
    ) -> Data | None:
        if not _OBJECT_NAME.fullmatch(name):
            return None  # "." or ".." would address the namespace or the list, not an object
        key = (kind, namespace, name)
        known, data = self.references.lookup(key)
        metrics.REFERENCE_READS.labels(kind.value, "watch" if known else "api").inc()
        if known:
            return data
        asked = self.references.now()
        data = await get(namespace, name)
        self.references.fetched(key, data, asked)
        return data

    async def _get_secret(self, namespace: str, name: str) -> Data | None:
        try:
            secret = await self._call(
                self._core.read_namespaced_secret, name, namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    async def _get_config_map(self, namespace: str, name: str) -> Data | None:
        try:
            cm = await self._call(
                self._core.read_namespaced_config_map, name, namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: v.encode("utf-8") for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
        """Replace the object's status with ``status`` (a merge patch that also removes fields we no longer set).
        Returns False when the object is gone."""
        body: dict[str, Any] = {key: None for key in previous if key not in status}
        body.update(status)
        try:
            await self._call(
                self._custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                ref.namespace,
                PLURAL,
                ref.name,
                {"status": body},
                _content_type="application/merge-patch+json",
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Best effort: an Event that cannot be posted is logged, never raised."""
        now = dt.datetime.now(dt.UTC)
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name=f"{ref.name}.", namespace=ref.namespace),
            involved_object=k8s.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=KIND, name=ref.name, namespace=ref.namespace, uid=ref.uid or None
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            source=k8s.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await self._call(self._core.create_namespaced_event, ref.namespace, event, _request_timeout=self._timeout)
        except Exception as exc:  # events are a courtesy; never fail a reconcile over one
            log.warning("could not post event %s for %s: %s", reason, ref, exc)
