"""The few Kubernetes API calls the operator makes, off the event loop.

The official ``kubernetes`` client is synchronous; every call here runs in a worker thread (``asyncio.to_thread``)
so a slow API server never stalls Redis work. kopf watches and manages finalizers with its own client; this module
is only for what kopf does not do: reading Secrets/ConfigMaps (the watch's copies first: ``references.py``), writing
``status``, posting Events, and — when the operator runs as one shard of several (``--label-selector``) — reading
every library whatever its labels (:class:`EveryLibraryWatch`), so ownership is decided across shards.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import functools
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
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


# --- shards: which objects are this instance's, and every other one read without writing -------------------------

#: A label name, and the optional prefix before its ``/`` (a DNS-1123 subdomain): as the API server validates them.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SELECTOR_SYMBOLS = "!=,()<>"


class SelectorError(ValueError):
    """A label selector the API server would refuse; the message says where."""


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: ``key``, ``!key``, ``key=v``, ``key!=v``, ``key in (..)``, ``key notin (..)``,
    ``key>n``, ``key<n``."""

    key: str
    operator: str  # "exists" | "!" | "=" | "!=" | "in" | "notin" | ">" | "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes' own rule (apimachinery ``Requirement.Matches``): the negative operators match objects without
        the label, the positive ones need it."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        try:  # > and <: the label must hold an integer
            number = int(value) if present else None
        except ValueError:
            return False
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == ">" else number < bound

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        return f"{self.key}{self.operator}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (the ``labelSelector`` syntax of ``kubectl get -l`` and of Flux's
    ``--watch-label-selector``), parsed here so that a typo stops the operator at start with a clear message instead
    of a watch the API server refuses forever, and matched here exactly as the API server filters: this instance's
    shard is what kopf's server-side filtered watch delivers, and the unfiltered index must agree on every object
    it calls someone else's. Empty: every object."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        tokens = list(_selector_tokens(text))
        requirements: list[Requirement] = []
        position = 0

        def peek() -> str | None:
            return tokens[position] if position < len(tokens) else None

        def take(what: str) -> str:
            nonlocal position
            token = peek()
            if token is None:
                raise SelectorError(f"expected {what} at the end")
            position += 1
            return token

        def value(token: str) -> str:
            if token in _SELECTOR_SYMBOLS or token in ("!=", "=="):
                raise SelectorError(f"expected a label value, found {token!r}")
            return _checked_value(token)

        while peek() is not None:
            token = take("a label key")
            if token == "!":
                requirements.append(Requirement(_checked_key(take("a label key after '!'")), "!"))
            else:
                key = _checked_key(token)
                operator = peek()
                if operator in (None, ","):
                    requirements.append(Requirement(key, "exists"))
                elif operator in ("=", "==", "!="):
                    position += 1
                    following = peek()
                    text_value = "" if following in (None, ",") else value(take("a label value"))
                    requirements.append(Requirement(key, "!=" if operator == "!=" else "=", (text_value,)))
                elif operator in ("in", "notin"):
                    position += 1
                    if take("'('") != "(":
                        raise SelectorError(f"expected '(' after {key} {operator}")
                    values: list[str] = []
                    while True:
                        following = take("a label value or ')'")
                        if following == ")":
                            break
                        if following == ",":
                            values.append("")
                            continue
                        values.append(value(following))
                        closing = take("',' or ')'")
                        if closing == ")":
                            break
                        if closing != ",":
                            raise SelectorError(f"expected ',' or ')' after {values[-1]!r}, found {closing!r}")
                    if not values:
                        raise SelectorError(f"{key} {operator} (): the set of values cannot be empty")
                    requirements.append(Requirement(key, str(operator), tuple(dict.fromkeys(values))))
                elif operator in (">", "<"):
                    position += 1
                    bound = take("an integer")
                    if not re.fullmatch(r"-?[0-9]+", bound):
                        raise SelectorError(f"{key}{operator}{bound}: the value must be an integer")
                    requirements.append(Requirement(key, str(operator), (bound,)))
                else:
                    raise SelectorError(f"expected an operator or ',' after {key!r}, found {operator!r}")
            separator = peek()
            if separator is None:
                break
            position += 1
            if separator != ",":
                raise SelectorError(f"expected ',' between requirements, found {separator!r}")
            if peek() is None:
                raise SelectorError("a ',' must be followed by a requirement")
        return cls(tuple(requirements))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(requirement.matches(found) for requirement in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        """The canonical text: what kopf sends to the API server as ``labelSelector``."""
        return ",".join(str(r) for r in self.requirements)


def _selector_tokens(text: str) -> Iterator[str]:
    """apimachinery's lexer: the symbols ``! != = == , ( ) < >``, and identifiers (anything else up to a space or a
    symbol; ``in`` and ``notin`` are identifiers that the parser reads as operators where an operator goes)."""
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace():
            position += 1
        elif text.startswith(("!=", "=="), position):
            yield text[position : position + 2]
            position += 2
        elif char in _SELECTOR_SYMBOLS:
            yield char
            position += 1
        else:
            end = position
            while end < len(text) and not text[end].isspace() and text[end] not in _SELECTOR_SYMBOLS:
                end += 1
            yield text[position:end]
            position = end


def _checked_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if key in _SELECTOR_SYMBOLS or key in ("!=", "=="):
        raise SelectorError(f"expected a label key, found {key!r}")
    if slash and (not prefix or len(prefix) > 253 or not _OBJECT_NAME.fullmatch(prefix)):
        raise SelectorError(f"{key!r}: the prefix before '/' must be a DNS subdomain (lowercase, at most 253)")
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise SelectorError(
            f"{key!r}: a label name is at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
        )
    return key


def _checked_value(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise SelectorError(
            f"{value!r}: a label value is empty or at most 63 characters of [A-Za-z0-9-_.], starting and ending "
            "alphanumeric"
        )
    return value


#: ("ADDED" | "MODIFIED" | "DELETED", the object) — an initial listing arrives as ADDED, objects gone since the last
#: listing as DELETED.
IndexEvent = Callable[[str, Mapping[str, Any]], None]


class EveryLibraryWatch:
    """Every RedisFunctionLibrary in the operator's namespaces, whatever its labels, read and never written.

    A shard's kopf watch is filtered server-side by its label selector, so it never sees — and so never patches —
    another shard's objects. Ownership still needs them: an object of another shard wanting the same library on the
    same Redis may be the elder. This is a plain list + watch (resuming from the last resourceVersion, listing again
    when the API server says it expired or after an error) on its own daemon thread per scope (the ``kubernetes``
    client is synchronous, and a daemon thread blocked on a long read never holds up the process' exit); every event
    is handed to the event loop. Its only verbs are ``list`` and ``watch``.
    """

    WATCH_SECONDS = 60  # server-side timeout of one watch request; the next one resumes where it ended

    def __init__(
        self,
        api: k8s.ApiClient,
        namespaces: list[str] | None,
        deliver: IndexEvent,
        in_scope: Callable[[str], bool] = lambda _: True,
        timeout: float = 30.0,
    ) -> None:
        """``namespaces``: exact names, one watch each; ``None``: one cluster-wide watch, narrowed by ``in_scope``
        (the namespace patterns kopf follows)."""
        self._custom = k8s.CustomObjectsApi(api)
        self._scopes: list[str | None] = list(namespaces) if namespaces is not None else [None]
        self._deliver = deliver
        self._in_scope = in_scope
        self._timeout = timeout
        self._stopping = threading.Event()
        self._listed: list[asyncio.Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for scope in self._scopes:
            listed = asyncio.Event()
            self._listed.append(listed)
            thread = threading.Thread(
                target=self._follow, args=(scope, listed), name=f"every-library {scope or '*'}", daemon=True
            )
            thread.start()

    async def wait_listed(self) -> None:
        """Until every scope was listed once: before that, an elder of another shard could still be unknown."""
        await asyncio.gather(*(listed.wait() for listed in self._listed))

    def stop(self) -> None:
        self._stopping.set()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _list_call(self, scope: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if scope is None:
            return self._custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        return self._custom.list_namespaced_custom_object, (GROUP, VERSION, scope, PLURAL)

    def _follow(self, scope: str | None, listed: asyncio.Event) -> None:
        call, args = self._list_call(scope)
        known: set[tuple[str, str]] = set()
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                listing = call(*args, _request_timeout=self._timeout)
                current = {_key_of(item): item for item in listing.get("items") or [] if self._wanted(item)}
                for namespace, name in known - current.keys():
                    self._post(self._deliver, "DELETED", {"metadata": {"namespace": namespace, "name": name}})
                for item in current.values():
                    self._post(self._deliver, "ADDED", item)
                known = set(current)
                self._post(listed.set)
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                backoff = 1.0
                while not self._stopping.is_set():
                    version = self._watch_once(call, args, version, known)
            except ApiException as exc:
                if exc.status != 410:  # 410: the resourceVersion expired; listing again is the documented answer
                    log.warning("listing every library (%s) failed: %s %s; again in %.0fs", scope, exc.status,
                                exc.reason, backoff)  # fmt: skip
                    self._stopping.wait(backoff)
                    backoff = min(30.0, backoff * 2)
            except Exception as exc:  # the API server away: list again after a pause, never die
                log.warning("watching every library (%s) failed: %s; again in %.0fs", scope, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(30.0, backoff * 2)

    def _watch_once(
        self, call: Callable[..., Any], args: tuple[Any, ...], version: str, known: set[tuple[str, str]]
    ) -> str:
        stream = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            call,
            *args,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.WATCH_SECONDS,
            _request_timeout=self.WATCH_SECONDS + self._timeout,
        ):
            body = event["object"]
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if event["type"] in ("ADDED", "MODIFIED", "DELETED") and self._wanted(body):
                key = _key_of(body)
                if event["type"] == "DELETED":
                    known.discard(key)
                else:
                    known.add(key)
                self._post(self._deliver, event["type"], body)
            if self._stopping.is_set():
                stream.stop()  # type: ignore[no-untyped-call]
        return version

    def _wanted(self, body: Mapping[str, Any]) -> bool:
        return self._in_scope(str((body.get("metadata") or {}).get("namespace")))


def _key_of(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))
