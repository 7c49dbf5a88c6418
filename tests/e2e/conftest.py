"""Fixtures for the e2e tests: one real control plane per session, the CRD, a fresh namespace per test.

Every test under ``tests/e2e/`` gets the ``e2e`` marker, so ``pytest -m "not e2e"`` skips them all (and never starts
the control plane). When the binaries are missing the tests fail, not skip, with the command to run.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.e2e.helpers import Libraries
from tests.support.control_plane import ControlPlane, session_control_plane
from tests.support.helm import Helm, HelmMissing
from tests.support.operator_process import OperatorProcess, operator_env

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]

Kubectl = Callable[..., CompletedProcess[str]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees every collected item, not only this folder's: filter by path.
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver for the whole session (ready in ~4 s; stopped at the end)."""
    yield from session_control_plane()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """``kubectl(*args, input=None, check=True)`` against the session's control plane."""
    return control_plane.kubectl


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> None:
    control_plane.install_crds()


def make_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest, prefix: str) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "test"
    name = f"{prefix}-{base}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    release_libraries(control_plane, name)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def release_libraries(control_plane: ControlPlane, namespace: str) -> None:
    """Remove the namespace's RedisFunctionLibrary objects for good, without their cleanup reaching Redis.

    With no controller-manager a deleted namespace never empties, so its objects used to live on, and the session
    operator kept retrying them, for the rest of the session, against the addresses of the test's stopped servers.
    This process never hands a port out twice, but another test run on the same machine may: its server on such a
    port then received a stranger's library at the next retry (a drift test found a library on a primary it had
    flushed while a second suite ran beside it). Deleting stops every load (a reconcile ends at the deletion
    timestamp); dropping the finalizers then ends the cleanup's retries.
    """
    kind = "redisfunctionlibraries"
    control_plane.kubectl("delete", kind, "--all", "-n", namespace, "--wait=false", check=False)
    left = control_plane.kubectl("get", kind, "-n", namespace, "-o", "name", check=False).stdout.split()
    for name in left:
        patch = '{"metadata":{"finalizers":null}}'
        control_plane.kubectl("patch", name, "-n", namespace, "--type=merge", "-p", patch, check=False)


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh ``e2e-`` namespace named after the test (watched by the session operator). Deleted without waiting at
    the end: with no controller-manager a namespace never finishes terminating, which is harmless here."""
    yield from make_namespace(control_plane, request, "e2e")


# ------------------------------------------------------------------------------------------------------------------
# the operator, as a process


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, crd_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator process for the session, watching every ``e2e-*`` namespace (each test uses its own namespace;
    tests that need objects nobody acts on use another prefix: ``crd-`` in test_crd.py).
    ``--deletion-timeout 15`` keeps the "target down during delete" test short; ``--listing-burst 2`` sends every
    repair of a multi-library target through the shared listings (redis/listing.py), the path 1000 libraries take."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # a glob: namespaces come and go during the run
    args = ("--namespace", "e2e-*", "--deletion-timeout", "15", "--listing-burst", "2")
    process = OperatorProcess(operator_env(control_plane.env()), log, args=args)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\n--- operator log ({log}) tail ---\n{process.log_tail(40)}")


@pytest.fixture
def rfl(control_plane: ControlPlane, namespace: str) -> Libraries:
    """Helpers to apply and inspect RedisFunctionLibrary objects in the test's namespace."""
    return Libraries(control_plane, namespace)


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned helm against this session's control plane (the chart and image tests install with it)."""
    missing = ""
    try:
        return Helm(tmp_path_factory.mktemp("helm"), control_plane)
    except HelmMissing as e:
        missing = str(e)
    pytest.fail(missing, pytrace=False)
