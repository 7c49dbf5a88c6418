"""Shared fixtures: real Redis/Valkey servers (see tests/support/redis_servers.py), generated from two tables.

Session servers, each started on first use (by ``shared_servers``) and stopped at session end: redis_standalone,
valkey_standalone, redis_cluster, valkey_cluster, redis_replicated, valkey_replicated; and tls_files.
Parametrized over both flavors (ids ``redis`` / ``valkey``): standalone, cluster, replicated, flavor. Over the whole
server matrix (``rs.MATRIX``: the two flavors, then the releases ``make servers`` builds, ids ``redis-7.2.6`` ...),
for the tests chosen to run on every server (README, "Tests"): matrix_standalone, matrix_cluster, matrix_replicated.
These hand out the session servers (each built release gets its own standalone server, 3x3 cluster and replicated
pair), checked alive first.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import redis_servers as rs

TESTS_DIR = Path(__file__).resolve().parent
REDIS_TESTS_DIR = TESTS_DIR / "redis"

SHARED: dict[str, Callable[..., Any]] = {
    "standalone": rs.start_server,
    "cluster": rs.start_cluster,
    "replicated": rs.start_replicated,
}
FACTORIES: dict[str, Callable[..., Any]] = {
    "server_factory": rs.start_server,
    "cluster_factory": rs.start_cluster,
    "replicated_factory": rs.start_replicated,
    "sentinel_factory": rs.start_sentinel_setup,
}


SERVER_FIXTURES = frozenset(
    {
        *(f"{prefix}{kind}" for prefix in ("", "matrix_", *(f"{f}_" for f in rs.FLAVORS)) for kind in SHARED),
        *FACTORIES,
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
# the shared servers and the factories, from two tables


class SharedServers:
    """The session's shared servers: per kind and release one standalone server, 3x3 cluster or replicated pair, each
    started on first use (a cluster costs six processes and ~2 s to form, so what nobody asks for costs nothing)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, release: str) -> Any:
        if (kind, release) not in self.started:
            self.started[kind, release] = SHARED[kind](release, base_dir=self.base)
        return self.started[kind, release]


@pytest.fixture(scope="session")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServers]:
    """One pool for the session (under pytest's tmp dir: the last few runs' logs survive), stopped at its end by the
    servers' own handles."""
    shared = SharedServers(tmp_path_factory.mktemp("servers"))
    yield shared
    rs.stop_all(server for group in shared.started.values() for server in group.members())


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> rs.TlsFiles:
    return rs.make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=rs.FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _session_fixture(kind: str, flavor: str) -> Any:
    @pytest.fixture(scope="session", name=f"{flavor}_{kind}")
    def shared(shared_servers: SharedServers) -> Any:
        return shared_servers.get(kind, flavor)

    return shared


def _parametrized_fixture(name: str, kind: str, releases: tuple[str, ...]) -> Any:
    @pytest.fixture(name=name, params=releases)
    def shared(request: pytest.FixtureRequest, shared_servers: SharedServers) -> Any:
        group = shared_servers.get(kind, request.param)
        down = [server.address for server in group.members() if not server.is_running()]
        if down:
            pytest.fail(
                f"shared {request.param} {kind} has stopped node(s) {down}: an earlier test killed/stopped a shared "
                "server; destructive tests must use server_factory / cluster_factory / replicated_factory",
                pytrace=False,
            )
        return group

    return shared


def _factory(name: str, start: Callable[..., Any]) -> Any:
    @pytest.fixture(name=name)
    def factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
        made: list[Any] = []

        def make(flavor: str = "redis", **kw: Any) -> Any:
            kw.setdefault("base_dir", tmp_path / "servers")
            made.append(start(flavor, **kw))
            return made[-1]

        yield make
        rs.stop_all(server for group in made for server in group.members())

    return factory


for _kind in SHARED:
    for _flavor in rs.FLAVORS:
        globals()[f"{_flavor}_{_kind}"] = _session_fixture(_kind, _flavor)
    globals()[_kind] = _parametrized_fixture(_kind, _kind, rs.FLAVORS)
    globals()[f"matrix_{_kind}"] = _parametrized_fixture(f"matrix_{_kind}", _kind, rs.MATRIX)
for _name, _start in FACTORIES.items():
    globals()[_name] = _factory(_name, _start)


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
        if all(server.is_running() for server in target.members()):
            rs.flush_functions(target)
