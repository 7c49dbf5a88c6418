"""Fixtures for the bad-input tests: a real control plane with the CRD, private Redis/Valkey deployments, servers that
are not a usable Redis, distinctive secrets, and ONE operator process for the module watching ``bad-*`` namespaces.

Every test here gets the ``badinput``, ``e2e``, ``redis`` and ``slow`` markers (``pytest -m badinput`` runs just
these; ``-m "not slow"`` or ``-m "not e2e"`` skips them). The control plane is this folder's own (pytest cannot share
tests/e2e's session fixture with a sibling folder); it is started once per session and stopped at the end.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.badinput.strategies import Targets, secret
from tests.e2e.conftest import make_namespace
from tests.support import fake_servers as fs
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane, session_control_plane
from tests.support.operator_process import OperatorProcess, operator_env

BADINPUT_DIR = Path(__file__).resolve().parent
REPO_ROOT = BADINPUT_DIR.parents[1]
NAMESPACE_PREFIX = "bad"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "badinput: property-based bad-input tests (hypothesis) against a real API server, the operator and real Redis",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BADINPUT_DIR in item.path.parents:
            for marker in (pytest.mark.badinput, pytest.mark.e2e, pytest.mark.redis, pytest.mark.slow):
                item.add_marker(marker)


# ----------------------------------------------------------------------------------------------------------------------
# control plane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A control plane of this suite's own: its ~240 objects stay behind (a namespace never finishes terminating
    without a controller-manager), and the e2e suite runs operators on all namespaces."""
    yield from session_control_plane()


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> None:
    control_plane.install_crds()


# ----------------------------------------------------------------------------------------------------------------------
# the environment of the module


@dataclass
class Secrets:
    """Distinctive values that must never appear in the operator's logs, events or status."""

    password: str = field(default_factory=lambda: f"Pw-{secrets.token_hex(8)}-SECRET")
    limited_password: str = field(default_factory=lambda: f"Pw-{secrets.token_hex(8)}-LIMITED")
    wrong_password: str = field(default_factory=lambda: f"Pw-{secrets.token_hex(8)}-WRONG")

    def values(self) -> dict[str, str]:
        return {"password": self.password, "limited": self.limited_password, "wrong": self.wrong_password}


@dataclass
class BadEnv:
    cp: ControlPlane
    namespace: str
    operator: OperatorProcess
    cluster: rs.Cluster
    standalone: rs.RedisServer
    pair: rs.Replicated
    auth: rs.RedisServer
    fakes: dict[str, fs.FakeServer]
    targets: Targets
    secrets: Secrets
    base_dir: Path
    foreign_code: bytes = b""

    def primaries(self) -> dict[str, rs.RedisServer]:
        """Every real primary the cases can load onto, by address."""
        nodes = [*self.cluster.primaries(), self.standalone, self.pair.primary, self.auth]
        return {n.address: n for n in nodes}

    def placement_nodes(self, placement: str) -> list[str]:
        if placement == "cluster":
            return [n.address for n in self.cluster.primaries()]
        if placement.startswith("node:"):
            return [placement.removeprefix("node:")]
        return [{"standalone": self.standalone, "pair": self.pair.primary, "auth": self.auth}[placement].address]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120.0) -> Any:
        return self.cp.kubectl(*args, check=check, input=input, timeout=timeout)

    def apply(self, objects: list[dict[str, Any]], check: bool = True) -> Any:
        """``kubectl apply`` of a List (kubectl applies each item and reports errors per item): server-side, except
        for objects holding characters a server-side apply cannot carry (see :func:`server_side_applicable`), which
        go through a client-side apply. Returns the last kubectl run with a failure, else the last one."""
        groups = [
            (["--server-side", "--force-conflicts"], [o for o in objects if server_side_applicable(o)]),
            ([], [o for o in objects if not server_side_applicable(o)]),
        ]
        result = None
        for flags, items in groups:
            if not items:
                continue
            # A lone object is sent bare: kubectl validates the items of a List on the client first (other words).
            body = json.dumps(items[0] if len(items) == 1 else {"apiVersion": "v1", "kind": "List", "items": items})
            done = self.kubectl("apply", *flags, "-f", "-", input=body, check=check)
            if result is None or result.returncode == 0:
                result = done
        return result


@pytest.fixture(scope="module")
def bad_secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="module")
def bad_servers(tmp_path_factory: pytest.TempPathFactory, bad_secrets: Secrets) -> Iterator[dict[str, Any]]:
    """A Redis 7 cluster (3 primaries, 3 replicas), a Valkey standalone, a Redis primary+replica and a Redis with a
    password and an ACL user that may not use FUNCTION. Private to the module, stopped at its end."""
    base = tmp_path_factory.mktemp("badinput-servers")
    made: list[rs.RedisServer] = []
    try:
        cluster = rs.start_cluster("redis", base_dir=base)
        made += cluster.nodes
        standalone = rs.start_server("valkey", base_dir=base)
        made.append(standalone)
        pair = rs.start_replicated("redis", base_dir=base)
        made += pair.servers
        auth = rs.start_server(
            "redis",
            base_dir=base,
            password=bad_secrets.password,
            acl_users=[f"limited on >{bad_secrets.limited_password} ~* +@all -function"],
        )
        made.append(auth)
        yield {"cluster": cluster, "standalone": standalone, "pair": pair, "auth": auth, "base": base}
    finally:
        rs.stop_all(made)


@pytest.fixture(scope="module")
def bad_fakes() -> Iterator[dict[str, fs.FakeServer]]:
    fakes: dict[str, fs.FakeServer] = {
        "http": fs.HttpServer(),
        "silent": fs.SilentServer(),
        "closing": fs.ClosingServer(),
        "garbage": fs.GarbageServer(),
        "echo": fs.EchoServer(),
        "resp6": fs.Resp6Server(),
        "resp6_cluster": fs.Resp6Server(cluster=True),
    }
    try:
        for server in fakes.values():
            server.start()
        yield fakes
    finally:
        for server in fakes.values():
            server.stop()


@pytest.fixture(scope="module")
def bad_namespace(control_plane: ControlPlane, crd_installed: None, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from make_namespace(control_plane, request, NAMESPACE_PREFIX)


@pytest.fixture(scope="module")
def bad_operator(
    control_plane: ControlPlane, bad_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator process for the module, watching ``bad-*`` only, logging JSON. ``BADINPUT_OPERATOR_PATH`` puts
    a patched copy of ``operator/`` first on its path (to try a fix against these tests)."""
    log = tmp_path_factory.mktemp("badinput-operator") / "operator.log"
    args = ("--namespace", f"{NAMESPACE_PREFIX}-*", "--log-format", "json", "--deletion-timeout", "15")
    env = operator_env(control_plane.env())
    scratch = os.environ.get("BADINPUT_OPERATOR_PATH")  # a patched copy of operator/, to try a fix against these tests
    if scratch:
        env["PYTHONPATH"] = os.pathsep.join([scratch, env["PYTHONPATH"]])
    process = OperatorProcess(env, log, args=args)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\n--- bad-input operator log ({log}) tail ---\n{process.log_tail(30)}")


@pytest.fixture(scope="module")
def bad_env(
    control_plane: ControlPlane,
    bad_namespace: str,
    bad_operator: OperatorProcess,
    bad_servers: dict[str, Any],
    bad_fakes: dict[str, fs.FakeServer],
    bad_secrets: Secrets,
) -> BadEnv:
    cluster: rs.Cluster = bad_servers["cluster"]
    standalone: rs.RedisServer = bad_servers["standalone"]
    pair: rs.Replicated = bad_servers["pair"]
    auth: rs.RedisServer = bad_servers["auth"]
    primaries = cluster.primaries()
    replicas = cluster.replicas()
    token = secrets.token_hex(4)
    foreign_library, foreign_function = f"foreign_{token}", f"taken_{token}"
    targets = Targets(
        cluster_primaries=tuple(sorted(n.address for n in primaries)),
        cluster_replicas=tuple(sorted(n.address for n in replicas)),
        cluster_bus=f"{primaries[0].host}:{primaries[0].port + rs.CLUSTER_BUS_OFFSET}",
        standalone=standalone.address,
        standalone_alias=f"localhost:{standalone.port}",
        pair_primary=pair.primary.address,
        pair_replica=pair.replica.address,
        auth_server=auth.address,
        fakes={name: server.address for name, server in bad_fakes.items()},
        closed=f"{rs.HOST}:{rs.free_port()}",
        apiserver=f"127.0.0.1:{control_plane.apiserver_port}",
        foreign_library=foreign_library,
        foreign_function=foreign_function,
    )
    env = BadEnv(
        control_plane,
        bad_namespace,
        bad_operator,
        cluster,
        standalone,
        pair,
        auth,
        bad_fakes,
        targets,
        bad_secrets,
        bad_servers["base"],
    )
    for target in (cluster, standalone, pair, auth):
        rs.flush_functions(target)
    # A library nobody's object manages, on the cluster and the standalone: its function name is taken there.
    env.foreign_code = (
        f"#!lua name={foreign_library}\nredis.register_function('{foreign_function}', function() return 1 end)\n"
    ).encode()
    for node in [*primaries, standalone]:
        node.admin.function_load(env.foreign_code.decode())
    s = bad_secrets
    env.apply(
        [
            secret(targets.secret_good, bad_namespace, {"password": s.password, "username": "default"}),
            secret(targets.secret_wrong, bad_namespace, {"password": s.wrong_password}),
            secret(targets.secret_limited, bad_namespace, {"username": "limited", "password": s.limited_password}),
        ]
    )
    return env


#: Characters the API server's YAML decoder refuses ("control characters are not allowed"): DEL, the C1 controls
#: but NEL, and U+FFFE/U+FFFF. A server-side apply is sent as YAML (application/apply-patch+yaml) and kubectl's JSON
#: leaves these unescaped, so an object holding one cannot be server-side applied (kubectl, Flux); a client-side
#: apply or a create (JSON) carries it.
YAML_REFUSED = frozenset(chr(c) for c in [0x7F, *range(0x80, 0xA0)] if c != 0x85) | {"\ufffe", "\uffff"}


def server_side_applicable(obj: dict[str, Any]) -> bool:
    return not YAML_REFUSED.intersection(json.dumps(obj, ensure_ascii=False))
