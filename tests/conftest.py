"""Shared fixtures: real Redis/Valkey servers (see tests/support/redis_servers.py).

Session-scoped, started lazily on first use and stopped at session end:
    redis_standalone, valkey_standalone, redis_cluster, valkey_cluster, redis_replicated, valkey_replicated,
    tls_files
Parametrized over both flavors (ids ``redis`` / ``valkey``), handing out the session servers:
    standalone, cluster, replicated, flavor
Parametrized over the whole server matrix (``rs.MATRIX``: the two flavors above, then the releases ``make servers``
builds, ids ``redis-7.2.6`` ...), for the tests chosen to run on every server (README, "Tests"):
    matrix_standalone, matrix_cluster, matrix_replicated
    (the flavors get the session servers above; each built release gets its own standalone server, 3x3 cluster and
    replicated pair, each started on first use and stopped at session end, by ``matrix_servers``)
Function-scoped factories whose products are stopped at the end of the test (use them for anything destructive:
kill, restart, failover, add_primary, move_slots, CONFIG SET, FUNCTION FLUSH):
    server_factory(flavor, **kw), cluster_factory(flavor, **kw), replicated_factory(flavor, **kw),
    sentinel_factory(flavor="redis", **kw)
Names: ``unique_name`` (a fresh library name per test), ``clean_functions(target)`` (FUNCTION FLUSH now and at
teardown). Tests on the shared servers must use unique library names and must not change topology or config.

Every test under tests/redis/ and every test that uses one of the server fixtures gets the ``redis`` marker. Every
test that runs on a built release (a parameter naming one of ``rs.BUILT``, directly or inside a tuple) gets the
``matrix`` and ``slow`` markers: it needs ``make servers``, which ``make test-quick`` does without.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support import redis_servers as rs

TESTS_DIR = Path(__file__).resolve().parent
REDIS_TESTS_DIR = TESTS_DIR / "redis"

SERVER_FIXTURES = frozenset(
    {
        *(f"{flavor}_{kind}" for flavor in rs.FLAVORS for kind in ("standalone", "cluster", "replicated")),
        "standalone",
        "cluster",
        "replicated",
        "matrix_standalone",
        "matrix_cluster",
        "matrix_replicated",
        "server_factory",
        "cluster_factory",
        "replicated_factory",
        "sentinel_factory",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        in_redis_dir = Path(str(item.path)).resolve().is_relative_to(REDIS_TESTS_DIR)
        if in_redis_dir or SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)
        if _runs_on_a_built_release(item):
            item.add_marker(pytest.mark.matrix)
            item.add_marker(pytest.mark.slow)  # so `make test-quick` (-m "not e2e and not slow") needs no build


def _runs_on_a_built_release(item: pytest.Item) -> bool:
    """Whether one of the item's parameters names a built release, by itself or inside a tuple: marking by value
    rather than by hand means no parametrization over ``rs.MATRIX`` or ``rs.BUILT`` can forget it."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    for value in callspec.params.values():
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, str) and v in rs.BUILT for v in values):
            return True
    return False


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: stop servers a test started without stopping them (by their own handles) and say so."""
    leaked = rs.stop_all_servers()
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "harness: stopped servers a test left running: " + ", ".join(leaked)
        if reporter is not None:
            reporter.write_line(text, yellow=True)
        else:
            print(text)


# ------------------------------------------------------------------------------------------------------------------
# session servers


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parent of the session servers' temp dirs (pytest keeps the last few runs: logs survive for debugging)."""
    return tmp_path_factory.mktemp("servers")


def _session_server(flavor: str, base: Path) -> Iterator[rs.RedisServer]:
    server = rs.start_server(flavor, base_dir=base)
    try:
        yield server
    finally:
        server.stop()


def _session_cluster(flavor: str, base: Path) -> Iterator[rs.Cluster]:
    cluster = rs.start_cluster(flavor, base_dir=base)
    try:
        yield cluster
    finally:
        cluster.stop()


def _session_replicated(flavor: str, base: Path) -> Iterator[rs.Replicated]:
    pair = rs.start_replicated(flavor, base_dir=base)
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="session")
def redis_standalone(servers_dir: Path) -> Iterator[rs.RedisServer]:
    yield from _session_server("redis", servers_dir)


@pytest.fixture(scope="session")
def valkey_standalone(servers_dir: Path) -> Iterator[rs.RedisServer]:
    yield from _session_server("valkey", servers_dir)


@pytest.fixture(scope="session")
def redis_cluster(servers_dir: Path) -> Iterator[rs.Cluster]:
    yield from _session_cluster("redis", servers_dir)


@pytest.fixture(scope="session")
def valkey_cluster(servers_dir: Path) -> Iterator[rs.Cluster]:
    yield from _session_cluster("valkey", servers_dir)


@pytest.fixture(scope="session")
def redis_replicated(servers_dir: Path) -> Iterator[rs.Replicated]:
    yield from _session_replicated("redis", servers_dir)


@pytest.fixture(scope="session")
def valkey_replicated(servers_dir: Path) -> Iterator[rs.Replicated]:
    yield from _session_replicated("valkey", servers_dir)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> rs.TlsFiles:
    return rs.make_tls_files(tmp_path_factory.mktemp("tls"))


class BuiltServers:
    """The session servers of the built releases: per release one standalone server, one 3x3 cluster and one
    replicated pair, each started on first use (a cluster costs six processes and ~2 s to form, so what nobody asks
    for costs nothing) and all stopped by their own handles at session end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._standalone: dict[str, rs.RedisServer] = {}
        self._cluster: dict[str, rs.Cluster] = {}
        self._replicated: dict[str, rs.Replicated] = {}

    def standalone(self, release: str) -> rs.RedisServer:
        if release not in self._standalone:
            self._standalone[release] = rs.start_server(release, base_dir=self.base)
        return self._standalone[release]

    def cluster(self, release: str) -> rs.Cluster:
        if release not in self._cluster:
            self._cluster[release] = rs.start_cluster(release, base_dir=self.base)
        return self._cluster[release]

    def replicated(self, release: str) -> rs.Replicated:
        if release not in self._replicated:
            self._replicated[release] = rs.start_replicated(release, base_dir=self.base)
        return self._replicated[release]

    def stop(self) -> None:
        rs.stop_all(
            [
                *self._standalone.values(),
                *(node for cluster in self._cluster.values() for node in cluster.nodes),
                *(server for pair in self._replicated.values() for server in pair.servers),
            ]
        )


@pytest.fixture(scope="session")
def matrix_servers(servers_dir: Path) -> Iterator[BuiltServers]:
    """One pool for the session, so each release's shared servers form once whichever test file asks first."""
    built = BuiltServers(servers_dir)
    try:
        yield built
    finally:
        built.stop()


# ------------------------------------------------------------------------------------------------------------------
# parametrized conveniences (both flavors)


def _shared_broken(what: str, servers: list[rs.RedisServer]) -> None:
    down = [s.address for s in servers if not s.is_running()]
    if down:
        pytest.fail(
            f"shared {what} has stopped node(s) {down}: an earlier test killed/stopped a shared server; "
            "destructive tests must use server_factory / cluster_factory / replicated_factory",
            pytrace=False,
        )


@pytest.fixture(params=rs.FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=rs.FLAVORS)
def standalone(request: pytest.FixtureRequest) -> rs.RedisServer:
    server: rs.RedisServer = request.getfixturevalue(f"{request.param}_standalone")
    _shared_broken(f"{request.param} standalone server", [server])
    return server


@pytest.fixture(params=rs.FLAVORS)
def cluster(request: pytest.FixtureRequest) -> rs.Cluster:
    shared: rs.Cluster = request.getfixturevalue(f"{request.param}_cluster")
    _shared_broken(f"{request.param} cluster", shared.nodes)
    return shared


@pytest.fixture(params=rs.FLAVORS)
def replicated(request: pytest.FixtureRequest) -> rs.Replicated:
    pair: rs.Replicated = request.getfixturevalue(f"{request.param}_replicated")
    _shared_broken(f"{request.param} replicated pair", pair.servers)
    return pair


def _matrix_shared(request: pytest.FixtureRequest, kind: str) -> Any:
    """The shared ``kind`` ("standalone", "cluster", "replicated") of the parametrized server: the flavors' session
    fixtures (``redis_cluster``...), the built releases' from ``matrix_servers``; checked alive before use."""
    release = request.param
    if release in rs.FLAVORS:
        shared = request.getfixturevalue(f"{release}_{kind}")
    else:
        shared = getattr(request.getfixturevalue("matrix_servers"), kind)(release)
    servers = [shared] if kind == "standalone" else shared.nodes if kind == "cluster" else shared.servers
    _shared_broken(f"{release} {'replicated pair' if kind == 'replicated' else kind}", servers)
    return shared


@pytest.fixture(params=rs.MATRIX)
def matrix_standalone(request: pytest.FixtureRequest) -> rs.RedisServer:
    """``standalone`` on every server of the matrix (the flavors share ``redis_standalone`` / ``valkey_standalone``)."""
    server: rs.RedisServer = _matrix_shared(request, "standalone")
    return server


@pytest.fixture(params=rs.MATRIX)
def matrix_cluster(request: pytest.FixtureRequest) -> rs.Cluster:
    """``cluster`` on every server of the matrix (the flavors share ``redis_cluster`` / ``valkey_cluster``)."""
    shared: rs.Cluster = _matrix_shared(request, "cluster")
    return shared


@pytest.fixture(params=rs.MATRIX)
def matrix_replicated(request: pytest.FixtureRequest) -> rs.Replicated:
    """``replicated`` on every server of the matrix (the flavors share ``redis_replicated`` / ``valkey_replicated``)."""
    pair: rs.Replicated = _matrix_shared(request, "replicated")
    return pair


# ------------------------------------------------------------------------------------------------------------------
# factories for destructive tests


T = TypeVar("T")


def _factory(
    tmp_path: Path, start: Callable[..., T], processes: Callable[[T], Iterable[rs.RedisServer]]
) -> Iterator[Callable[..., T]]:
    """``make(flavor="redis", **kw)`` starting private servers under the test's tmp dir; every server it started
    is stopped at the end of the test, by its own handle."""
    made: list[T] = []

    def make(flavor: str = "redis", **kw: Any) -> T:
        kw.setdefault("base_dir", tmp_path / "servers")
        made.append(start(flavor, **kw))
        return made[-1]

    yield make
    rs.stop_all(server for thing in made for server in processes(thing))


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., rs.RedisServer]]:
    yield from _factory(tmp_path, rs.start_server, lambda server: [server])


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., rs.Cluster]]:
    yield from _factory(tmp_path, rs.start_cluster, lambda cluster: cluster.nodes)


@pytest.fixture
def replicated_factory(tmp_path: Path) -> Iterator[Callable[..., rs.Replicated]]:
    yield from _factory(tmp_path, rs.start_replicated, lambda pair: pair.servers)


@pytest.fixture
def sentinel_factory(tmp_path: Path) -> Iterator[Callable[..., rs.Sentinel]]:
    yield from _factory(tmp_path, rs.start_sentinel_setup, lambda setup: [*setup.servers, *setup.pair.servers])


# ------------------------------------------------------------------------------------------------------------------
# names and cleanup


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A fresh valid library name: ``t_<test-name-slug>_<8 hex>`` (only [A-Za-z0-9_])."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name).strip("_")
    slug = slug.removeprefix("test_")[:40].strip("_") or "test"
    return f"t_{slug}_{secrets.token_hex(4)}"


@pytest.fixture
def clean_functions() -> Iterator[Callable[[Any], None]]:
    """``clean_functions(target)``: FUNCTION FLUSH on every primary of a server/pair/cluster now and again at teardown.
    Do not use it on the shared session servers while other tests rely on their libraries."""
    targets: list[Any] = []

    def clean(target: Any) -> None:
        targets.append(target)
        rs.flush_functions(target)

    yield clean
    for target in targets:
        running = target.nodes if isinstance(target, rs.Cluster) else getattr(target, "servers", [target])
        if all(s.is_running() for s in running):
            rs.flush_functions(target)
