"""A *target* (seed endpoints, mode, credentials, TLS) and the per-node asyncio clients used to talk to it.

Why per-node clients and not ``RedisCluster``: redis-py's cluster client sends FUNCTION commands only to the
primaries it learned from CLUSTER SLOTS (a 0-slot primary is missed), raises the first error of a multi-node call
and hides the others (``docs/redis-facts.md`` F5, F6). The engine needs one answer per node, so it opens one plain
connection per node and does its own topology discovery. Discovery, loading and verification all go through
:class:`Connector`, so auth and TLS are applied the same way everywhere (the watch's pulses, which keep their own
connections, build TLS from the same settings: ``redis/pulse.py``).

Secrets: :class:`Credentials` never prints its password (``repr=False``), and no message built here contains
connection arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo

from redis_functions_operator.redis.replies import read_info

DEFAULT_TIMEOUT = 5.0
#: Built once: redis-py otherwise looks its own version up with importlib.metadata for every connection.
_DRIVER_INFO = DriverInfo()
#: Per target and node, during a burst (a thousand libraries reconciling at once): more commands wait for one (the
#: pool blocks up to the target's timeout). Measured: a cap of 2 made the 1000-library benchmark's start and repairs
#: 25-50 % slower, so bursts keep 8 and give the extra connections back afterwards (:meth:`Connector.give_back_idle`).
MAX_CONNECTIONS_PER_NODE = 8
#: Connections per target and node that stay open at rest: the watcher's poll and a load can run side by side.
#: Connections are a billed or capped resource on managed Redis; a pool of redis-py never shrinks by itself.
CONNECTIONS_AT_REST = 2


class Mode(StrEnum):
    AUTO = "auto"
    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True, order=True)
class Endpoint:
    """A ``host:port`` address. Ordering is by host then port, which is how results are listed."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int = 6379) -> Endpoint:
        """Parse ``host:port``, ``[v6]:port`` or a bare ``host``; raises ValueError with a readable message."""
        value = text.strip()
        if not value:
            raise ValueError("empty endpoint")
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif value.count(":") == 1:
            host, _, port_text = value.partition(":")
        else:
            host, port_text = value, ""
        if not host:
            raise ValueError(f"endpoint {text!r} has no host")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ValueError(f"endpoint {text!r}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise ValueError(f"endpoint {text!r}: port {port} is out of range")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """ACL username (optional: absent means the password-only ``AUTH``) and password."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TlsSettings:
    """TLS for every connection to the target. Verification is on unless ``insecure_skip_verify``.

    ``ca_data`` is a PEM bundle (as read from a Secret); ``cert_file``/``key_file`` are paths because Python's ssl
    loads client certificates only from files. ``server_name`` overrides the name checked in the server's
    certificate (and sent as SNI) — useful when nodes are addressed by IP but the certificate names a DNS name.
    """

    ca_data: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class Target:
    """Where a library must live: seed endpoints and how to interpret them."""

    endpoints: tuple[Endpoint, ...]
    mode: Mode = Mode.AUTO
    sentinel_master: str | None = None
    credentials: Credentials | None = None
    tls: TlsSettings | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("a target needs at least one endpoint")
        if self.mode is Mode.SENTINEL and not self.sentinel_master:
            raise ValueError("sentinel mode needs the master name")

    def describe(self) -> str:
        """A one-line, secret-free description for logs and messages."""
        seeds = ",".join(str(e) for e in self.endpoints)
        return f"{self.mode.value} {seeds}" + (" (tls)" if self.tls else "")


class _TrimmablePool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, able to close idle connections beyond a number (it never shrinks by itself). Reads
    the pool's own lists under its own condition, as its get_connection and release do (redis-py is pinned;
    tests/redis/test_connections.py fails if that changes)."""

    def size(self) -> int:
        """Connections open now, idle or in use."""
        return len(self._available_connections) + len(self._in_use_connections)

    async def trim(self, keep: int) -> int:
        surplus = []
        async with self._condition:
            total = len(self._available_connections) + len(self._in_use_connections)
            while self._available_connections and total > keep:
                surplus.append(self._available_connections.pop(0))
                total -= 1
        for connection in surplus:
            await connection.disconnect()
        return len(surplus)


class _NamedSSLConnection(SSLConnection):
    """redis-py's SSL connection with a configurable server name (SNI + certificate name check)."""

    def __init__(self, *, server_hostname: str | None = None, **kwargs: Any) -> None:
        self._server_hostname = server_hostname
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Mapping[str, Any]:
        arguments = dict(super()._connection_arguments())
        if self._server_hostname:
            arguments["server_hostname"] = self._server_hostname
        return arguments


CommandObserver = Callable[[str, float, bool], None]
_OBSERVERS: list[CommandObserver] = []


def add_command_observer(observer: CommandObserver) -> None:
    """Call ``observer(command, seconds, ok)`` after every command any connector sends (metrics hook; the redis
    layer itself knows nothing about Prometheus)."""
    _OBSERVERS.append(observer)


def remove_command_observer(observer: CommandObserver) -> None:
    if observer in _OBSERVERS:
        _OBSERVERS.remove(observer)


def tell_observers(commands: Sequence[tuple[Any, ...]], seconds: float, ok: bool) -> None:
    """One round trip of ``commands`` took ``seconds``: each command gets its share."""
    if _OBSERVERS and commands:
        share = seconds / len(commands)
        for args in commands:
            name = command_name(args)
            for observer in _OBSERVERS:
                observer(name, share, ok)


def command_name(args: tuple[Any, ...]) -> str:
    """``FUNCTION LOAD``, ``CLUSTER SHARDS``, ``ROLE``... (never arguments: they can hold code or secrets)."""
    first = str(args[0]).upper() if args else "?"
    if first in ("FUNCTION", "CLUSTER", "SENTINEL") and len(args) > 1:
        return f"{first} {str(args[1]).upper()}"
    return first


def scrub(exc: BaseException, secret: str) -> None:
    """Replace ``secret`` in the exception's arguments (and its causes'): a server may echo what it was sent, e.g.
    ``unknown command 'AUTH', with args beginning with: '<password>'`` when AUTH is renamed away."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        current.args = tuple(a.replace(secret, "***") if isinstance(a, str) else a for a in current.args)
        current = current.__cause__ or current.__context__
        seen += 1


class Connector:
    """Opens and caches one client per node for a target; close it with :meth:`aclose`.

    Clients are created lazily inside the running event loop (redis-py clients are loop-bound). One connector
    serves one target; the operator keeps one per distinct target so connections stay warm between reconciles.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self._clients: dict[tuple[Endpoint, bool], aioredis.Redis] = {}
        #: what ``mode: auto`` turned out to be (set and cleared by topology discovery), so polls skip asking again
        self.resolved_mode: Mode | None = None

    def client(self, endpoint: Endpoint, *, authenticate: bool = True) -> aioredis.Redis:
        key = (endpoint, authenticate)
        existing = self._clients.get(key)
        if existing is None:
            existing = self._clients[key] = self._make_client(endpoint, authenticate)
        return existing

    async def call(self, endpoint: Endpoint, *args: Any, authenticate: bool = True) -> Any:
        """Send one command to one node, bounded by a deadline on top of the socket timeout (which does not cover a
        slow multi-part reply). Errors propagate for :func:`errors.classify`."""
        client = self.client(endpoint, authenticate=authenticate)
        with self._sending((args,)):
            async with asyncio.timeout(self.target.timeout * 2):  # unlike wait_for, no Task per call
                return await client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def call_many(self, endpoint: Endpoint, *commands: tuple[Any, ...]) -> list[Any]:
        """Several commands to one node in one round trip (a plain pipeline, no MULTI): each reply, or the error
        the node answered for that command, in order. A connection failure raises."""
        pipe = self.client(endpoint).pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        with self._sending(commands):
            async with asyncio.timeout(self.target.timeout * 2):
                replies = list(await pipe.execute(raise_on_error=False))
        for reply in replies:
            if isinstance(reply, BaseException):
                self._scrub(reply)
        return replies

    @contextlib.contextmanager
    def _sending(self, commands: Sequence[tuple[Any, ...]]) -> Iterator[None]:
        """Around one round trip: scrub the password from any error, and tell the observers (each command gets its
        share of the round trip's time)."""
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        except Exception as exc:
            self._scrub(exc)
            raise
        finally:
            tell_observers(commands, time.perf_counter() - started, ok)

    def _scrub(self, exc: BaseException) -> None:
        creds = self.target.credentials
        if creds is not None and creds.password:
            scrub(exc, creds.password)

    def holds_more_than(self, keep: int) -> bool:
        """Whether some node's pool holds more than ``keep`` connections (read without waiting: every poll asks)."""
        return any(
            isinstance(pool := client.connection_pool, _TrimmablePool) and pool.size() > keep
            for client in self._clients.values()
        )

    async def give_back_idle(self, keep: int = CONNECTIONS_AT_REST) -> int:
        """Close idle connections beyond ``keep`` per node (the oldest first); returns how many were closed. The
        target's watcher calls this before each poll, so a burst's extra connections are given back within one
        poll interval of the burst's end, and never while a command uses them."""
        closed = 0
        for client in self._clients.values():
            pool = client.connection_pool
            if isinstance(pool, _TrimmablePool):
                closed += await pool.trim(keep)
        return closed

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            # The pool is ours (passed in), so redis-py would leave its connections open until garbage collection.
            await client.aclose(close_connection_pool=True)

    async def __aenter__(self) -> Connector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _make_client(self, endpoint: Endpoint, authenticate: bool) -> aioredis.Redis:
        """A client whose pool *waits* for a free connection (up to the timeout) instead of failing with "Too many
        connections" when many libraries of one target reconcile at once."""
        target = self.target
        creds = target.credentials if authenticate else None
        options: dict[str, Any] = {
            "host": endpoint.host,
            "port": endpoint.port,
            "username": creds.username if creds else None,
            "password": creds.password if creds else None,
            "socket_timeout": target.timeout,
            "socket_connect_timeout": target.timeout,
            # One quick retry for a dropped idle connection; long-term retrying is the caller's job.
            "retry": Retry(NoBackoff(), 1),
            "protocol": 2,  # RESP2 reply shapes are stable across redis-py versions and servers
            "decode_responses": False,
            "driver_info": _DRIVER_INFO,
        }
        tls = target.tls
        if tls is not None:
            options.update(
                connection_class=_NamedSSLConnection,
                server_hostname=tls.server_name,
                ssl_ca_data=tls.ca_data,
                ssl_ca_certs=tls.ca_file,
                ssl_certfile=tls.cert_file,
                ssl_keyfile=tls.key_file,
                ssl_cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
                ssl_check_hostname=not tls.insecure_skip_verify,
            )
        pool = _TrimmablePool(max_connections=MAX_CONNECTIONS_PER_NODE, timeout=target.timeout, **options)
        client = aioredis.Redis(connection_pool=pool)
        client.set_response_callback("INFO", read_info)
        return client
