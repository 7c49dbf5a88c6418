"""Status writes in the background, latest wins per object.

Why: when a new primary joins a target with a thousand libraries, every library's ``status.nodes`` changes, and a
busy API server takes a thousand writes at its own pace. If each reconcile waited for its write, Redis would be
filled only as fast as the API server accepts statuses. Here a reconcile hands its new status over and moves on;
a few writer tasks send them, and a status still waiting when a newer one arrives for the same object is simply
replaced (only the latest matters). A write that fails for a moment (API server restarting) is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from redis_functions_operator.k8s.kube import Kube, ObjectRef
from redis_functions_operator.reconcile.status import OWNED_FIELDS

log = logging.getLogger(__name__)


class StatusWriter:
    def __init__(self, kube: Kube, workers: int = 8, retry_delay: float = 2.0) -> None:
        self._kube = kube
        self._workers = workers
        self._retry_delay = retry_delay
        self._pending: dict[Hashable, tuple[ObjectRef, Mapping[str, Any]]] = {}
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[Hashable] = set()  # at most one write per object at a time
        self._idle: dict[Hashable, asyncio.Event] = {}  # set when an object has nothing pending nor in flight

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def submit(self, key: Hashable, ref: ObjectRef, status: Mapping[str, Any]) -> None:
        """Queue ``status`` for the object; replaces a status of the same object still waiting."""
        if (
            key not in self._pending and key not in self._in_flight
        ):  # else it is queued when the write in flight ends: never two at once
            self._ready.put_nowait(key)
        self._pending[key] = (ref, status)
        self._idle.setdefault(key, asyncio.Event()).clear()

    async def submit_and_wait(self, key: Hashable, ref: ObjectRef, status: Mapping[str, Any], patience: float) -> None:
        """Submit, then wait until it (or a newer status) is written — at most ``patience`` seconds: a hung API
        server must not hold a rollout (the write goes on, in order, in the background)."""
        self.submit(key, ref, status)
        try:
            await asyncio.wait_for(self._idle[key].wait(), patience)
        except TimeoutError:
            log.warning("status of %s not written within %.0fs; going on, the write continues", ref, patience)

    def backlog(self) -> int:
        return len(self._pending)

    async def write_now(self, ref: ObjectRef, status: Mapping[str, Any]) -> None:
        """Write synchronously (e.g. Reconciling=True before a slow rollout, so it is visible while it runs)."""
        await self._kube.patch_status(ref, status, dict.fromkeys(OWNED_FIELDS))

    async def _run(self) -> None:
        while True:
            key = await self._ready.get()
            item = self._pending.pop(key, None)
            if item is None:
                continue
            ref, status = item
            self._in_flight.add(key)
            try:
                await self.write_now(ref, status)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # API server away or a conflict: try again, unless a newer status came in
                detail = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else type(exc).__name__
                log.warning("status of %s not written (%s); retrying in %.0fs", ref, detail, self._retry_delay)
                await asyncio.sleep(self._retry_delay)
                if key not in self._pending:
                    self._pending[key] = (ref, status)
            finally:
                self._in_flight.discard(key)
                if key in self._pending:
                    self._ready.put_nowait(key)
                elif key in self._idle:
                    self._idle.pop(key).set()  # popped: no entry kept for objects at rest
