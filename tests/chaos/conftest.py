"""Chaos scenarios: fixtures and the one convergence check every scenario ends with.

Each scenario gets a private 3-primary/3-replica cluster (``cluster_factory``), its own ``chaos-*`` namespace and its
own operator process(es) watching only that namespace (never the session ``e2e-*`` operator), applies 4 libraries,
breaks something — often right after applying a code update to every library ("mid-rollout") — and ends with
:meth:`Scenario.wait_converged`: for every library ``status.observedGeneration == metadata.generation``, Ready=True
for that generation, ``readyPrimaries`` n/n for the cluster's *current* primaries, every primary listed in status
with the code's sha256, and every current primary's (and replica's) ``FUNCTION LIST WITHCODE`` holding exactly the
spec's code, byte for byte. It prints ``CHAOS <scenario>: converged in X.XXs``; the terminal summary repeats every
figure in a table.

Every test here is marked ``chaos`` and ``slow`` (and ``e2e`` when it needs a control plane). ``RFO_CHAOS_SOAK=1`` (opt-in, never in CI) runs each
scenario ``RFO_CHAOS_ROUNDS`` times (default 5) with longer outages (:func:`soak_scale`).

No process may outlive its scenario: :func:`process_guard` (autouse) compares this process's descendants before and
after each test — after every fixture has been torn down — and fails the test, naming what was left (and ending it by
its pid), while the session hook also ends any TCP proxy still running.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.e2e.conftest import control_plane, crd_installed, make_namespace
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane
from tests.support.operator_process import OperatorProcess, operator_env
from tests.support.tcp_proxy import live_proxies

__all__ = ["control_plane", "crd_installed"]  # re-exported fixtures: the session control plane and the CRD

CHAOS_DIR = Path(__file__).resolve().parent
CONTROL_PLANE_FIXTURES = frozenset({"control_plane", "private_control_plane"})
GROUP, VERSION, PLURAL = "redisfunctions.dev", "v1alpha1", "redisfunctionlibraries"

SOAK = os.environ.get("RFO_CHAOS_SOAK", "") not in ("", "0")
ROUNDS = int(os.environ.get("RFO_CHAOS_ROUNDS", "5")) if SOAK else 1

#: RFO_CHAOS_OPERATOR_PATH=/tmp/scratch: run the operator from a copy of the package (its parent directory of
#: ``redis_functions_operator``) instead of ``operator/`` — to measure a proposed fix against the same scenarios.
OPERATOR_PATH = os.environ.get("RFO_CHAOS_OPERATOR_PATH", "")

#: RFO_CHAOS_FLAVOR=valkey runs every scenario on valkey-server instead of redis-server (default: redis).
FLAVOR = os.environ.get("RFO_CHAOS_FLAVOR", "redis")

#: A fault that heals by itself (a failover, a restart, a new primary) must be repaired within this.
CONVERGE_DEADLINE = 45.0


def soak_scale(seconds: float) -> float:
    """How long an outage lasts: ``seconds`` in CI, three times longer in soak mode."""
    return seconds * 3 if SOAK else seconds


# ------------------------------------------------------------------------------------------------------------------
# pytest plumbing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a chaos scenario (tests/chaos): faults while the operator runs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CHAOS_DIR in item.path.parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.slow)
            if CONTROL_PLANE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.e2e)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if SOAK and "chaos_round" in metafunc.fixturenames:
        metafunc.parametrize("chaos_round", range(ROUNDS), ids=[f"round{i + 1}" for i in range(ROUNDS)])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"chaos_rep_{report.when}", report)
    return report


@dataclass
class Measurement:
    scenario: str
    seconds: float
    measured_from: str


RESULTS: list[Measurement] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("chaos: time to converge")
    width = max(len(m.scenario) for m in RESULTS)
    for m in RESULTS:
        terminalreporter.write_line(f"{m.scenario:<{width}}  {m.seconds:7.2f}s  (from {m.measured_from})")
    report = os.environ.get("RFO_CHAOS_REPORT")
    if report:
        Path(report).write_text(json.dumps([m.__dict__ for m in RESULTS], indent=1) + "\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net for the one kind of process the harness does not track: TCP proxies."""
    leaked = live_proxies()
    for proxy in leaked:
        proxy.kill()
    if leaked:
        text = "chaos: stopped TCP proxies a test left running: " + ", ".join(str(p.pid) for p in leaked)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text, yellow=True)


# ------------------------------------------------------------------------------------------------------------------
# no process left behind


def descendants(root: int | None = None) -> dict[int, str]:
    """Running (non-zombie) descendants of ``root`` (default: this process): pid -> command line."""
    root = os.getpid() if root is None else root
    parent: dict[int, int] = {}
    state: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state[int(entry)], parent[int(entry)] = fields[0], int(fields[1])
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for pid, ppid in parent.items():
            if ppid == current and pid not in found:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmdline = "?"
                found[pid] = cmdline.strip()
                frontier.append(pid)
    return {pid: cmd for pid, cmd in found.items() if state.get(pid) != "Z"}


@pytest.fixture(autouse=True)
def process_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the scenario if a process it started (Redis node, operator, proxy, private control plane) outlives it.

    Set up before (so torn down after) every other function-scoped fixture; a test on the session control plane gets
    it (and the CRD) first, so its processes are part of the baseline."""
    if "control_plane" in request.fixturenames:
        request.getfixturevalue("crd_installed")
    before = set(descendants())
    yield
    deadline = time.monotonic() + 5  # processes stopped by SIGTERM a moment ago may still be exiting
    left = {pid: cmd for pid, cmd in descendants().items() if pid not in before}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid: cmd for pid, cmd in descendants().items() if pid not in before}
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"processes left running by {request.node.name}: {left}", pytrace=False)


@pytest.fixture
def chaos_round(request: pytest.FixtureRequest) -> int:
    """The soak round (0 outside soak mode)."""
    return int(getattr(request, "param", 0))


# ------------------------------------------------------------------------------------------------------------------
# namespaces, operators, private control planes


@pytest.fixture
def chaos_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh ``chaos-`` namespace on the session control plane (the session operator only watches ``e2e-*``)."""
    yield from make_namespace(control_plane, request, "chaos")


@pytest.fixture
def private_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of the scenario's own, to stop/kill its kube-apiserver or etcd without hurting other tests."""
    with ControlPlane() as cp:
        cp.install_crds()
        yield cp


@pytest.fixture
def private_namespace(private_control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A ``chaos-`` namespace on the scenario's private control plane."""
    base = request.node.name.removeprefix("test_").split("[")[0].replace("_", "-")[:40].strip("-")
    name = f"chaos-{base}"
    private_control_plane.kubectl("create", "namespace", name)
    return name


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def operator_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OperatorFactory]:
    """``operator_factory(cp, namespace, name="operator", *args, kubeconfig=None)`` starts
    ``redis-functions-operator run --namespace NS`` as a process; every one is stopped at the end (and its log tail
    printed if the scenario failed)."""
    made: list[OperatorProcess] = []

    def start(
        cp: ControlPlane, namespace: str, name: str = "operator", *extra: str, kubeconfig: Path | None = None
    ) -> OperatorProcess:
        log = tmp_path / f"{name}-{len(made)}.log"
        env = operator_env(cp.env())
        if kubeconfig is not None:  # e.g. one that reaches the API server through a TCP proxy
            env["KUBECONFIG"] = str(kubeconfig)
        if OPERATOR_PATH:  # a scratch copy of the package, to measure a proposed fix with the same scenarios
            env["PYTHONPATH"] = os.pathsep.join([OPERATOR_PATH, env["PYTHONPATH"]])
        process = OperatorProcess(env, log, args=("--namespace", namespace, *extra))
        made.append(process)
        return process.start()

    yield start
    for process in made:
        process.stop()
    failed = any(getattr(getattr(request.node, f"chaos_rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        for process in made:
            print(f"\n--- {process.log_path.name} (tail) ---\n{process.log_tail(80)}")


# ------------------------------------------------------------------------------------------------------------------
# libraries and the convergence check


def library_code(name: str, version: int) -> str:
    """A library whose functions say which version they are; ``<name>_get`` also reads its key (for FCALL checks)."""
    return (
        f"#!lua name={name}\n"
        f"local VERSION = 'v{version}'\n"
        f"redis.register_function('{name}_version', function(keys, args) return VERSION end)\n"
        f"redis.register_function('{name}_get', function(keys, args) return {{VERSION, redis.call('GET', keys[1])}} "
        "end)\n"
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


@dataclass
class Scenario:
    """One scenario's world: a control plane, a namespace, a cluster and the libraries applied to it."""

    name: str
    cp: ControlPlane
    namespace: str
    cluster: rs.Cluster | rs.RedisServer  # a standalone server for a side target
    seeds: list[str]
    libraries: list[str]
    codes: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # extra spec fields for every library (auth, resyncInterval)
    announced: dict[int, str] = field(default_factory=dict)  # real port -> the address the cluster announces
    check_replicas: bool = True
    _api: Any = None

    # -- Kubernetes side ---------------------------------------------------------------------------------------------

    @property
    def api(self) -> k8s_client.CustomObjectsApi:
        if self._api is None:
            self._api = k8s_client.CustomObjectsApi(
                k8s_config.new_client_from_config(config_file=str(self.cp.kubeconfig))
            )
        return self._api

    def manifest(self, name: str, code: str, version: int) -> dict[str, Any]:
        spec = json.loads(json.dumps(self.spec))
        target = {"endpoints": list(self.seeds), **spec.pop("target", {})}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RedisFunctionLibrary",
            "metadata": {"name": name.replace("_", "-"), "namespace": self.namespace},
            "spec": {"version": str(version), "code": code, "target": target, **spec},
        }

    def apply(self, version: int, names: list[str] | None = None) -> float:
        """Apply version ``version`` of the code of every library (or ``names``) in one ``kubectl apply``; returns the
        moment it was accepted (time.monotonic())."""
        docs = []
        for name in names or self.libraries:
            code = library_code(name, version)
            self.codes[name], self.versions[name] = code, version
            docs.append(self.manifest(name, code, version))
        self.cp.apply_yaml(yaml.safe_dump_all(docs))
        return time.monotonic()

    def objects(self) -> dict[str, dict[str, Any]]:
        """Every library object of the namespace, by library name (objects are named after their library)."""
        listed: dict[str, Any] = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, _request_timeout=5
        )
        return {o["metadata"]["name"].replace("-", "_"): o for o in listed["items"]}

    def object(self, name: str) -> dict[str, Any]:
        return self.objects()[name]

    def settle(self, timeout: float = 20.0) -> None:
        """Make the operator quiescent: request a reconcile of every library (annotation) and wait until each has
        handled it and shows every primary as Verified — so no status write is pending when a fault starts."""
        token = f"settle-{secrets.token_hex(3)}"
        self.cp.kubectl(
            "-n", self.namespace, "annotate", "rfl", "--all", "--overwrite",
            f"redisfunctions.dev/reconcile-requested-at={token}",
        )  # fmt: skip

        def settled(objects: dict[str, dict[str, Any]]) -> bool:
            for name in self.libraries:
                status = objects[name].get("status") or {}
                nodes = [n for n in status.get("nodes") or [] if n.get("role") == "primary"]
                if status.get("lastHandledReconcileAt") != token or any(n.get("state") != "Verified" for n in nodes):
                    return False
            return True

        self.wait_objects(settled, timeout=timeout, what="every library reconciled again, every primary Verified")

    # -- Redis side --------------------------------------------------------------------------------------------------

    @property
    def redis_cluster(self) -> rs.Cluster:
        """The scenario's cluster (every scenario but a side target has one)."""
        assert isinstance(self.cluster, rs.Cluster), f"{self.name}: the target is a standalone server"
        return self.cluster

    def address(self, node: rs.RedisServer) -> str:
        """The address the cluster announces for ``node`` (a proxy's, for a node behind one)."""
        return self.announced.get(node.port, node.address)

    def primaries(self) -> list[rs.RedisServer]:
        return self.cluster.primaries() if isinstance(self.cluster, rs.Cluster) else [self.cluster]

    def replicas(self) -> list[rs.RedisServer]:
        return self.cluster.replicas() if isinstance(self.cluster, rs.Cluster) else []

    def key_in_slots(self, slots: range, prefix: str = "k") -> str:
        return next(f"{prefix}{i}" for i in range(1_000_000) if rs.key_slot(f"{prefix}{i}".encode()) in slots)

    # -- the check every scenario ends with --------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the scenario has not converged yet (empty: converged)."""
        try:
            objects = self.objects()
        except Exception as exc:
            return [f"cannot list the objects: {type(exc).__name__}: {str(exc)[:200]}"]
        try:
            primaries = self.primaries()
            replicas = self.replicas() if self.check_replicas else []
        except Exception as exc:
            return [f"cannot read the cluster: {type(exc).__name__}: {exc}"]
        wanted = {self.address(p) for p in primaries}
        found: list[str] = []
        for name in self.libraries:
            obj = objects.get(name)
            if obj is None:
                found.append(f"{name}: no object")
                continue
            generation = obj["metadata"]["generation"]
            status = obj.get("status") or {}
            code = obj["spec"].get("code")
            if code != self.codes[name]:
                found.append(f"{name}: spec.code is not the latest applied version (v{self.versions[name]})")
            if status.get("observedGeneration") != generation:
                found.append(f"{name}: observedGeneration {status.get('observedGeneration')} != {generation}")
            ready = condition(obj, "Ready")
            if ready.get("status") != "True" or ready.get("observedGeneration") != generation:
                found.append(f"{name}: Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})")
            expected_ready = f"{len(wanted)}/{len(wanted)}"
            if status.get("readyPrimaries") != expected_ready:
                found.append(f"{name}: readyPrimaries {status.get('readyPrimaries')} != {expected_ready}")
            if status.get("codeSha256") != sha256(code or ""):
                found.append(f"{name}: status.codeSha256 is not the spec's")
            listed = {n["address"]: n for n in status.get("nodes") or [] if n.get("role") == "primary"}
            if set(listed) != wanted:
                found.append(f"{name}: status lists primaries {sorted(listed)}, the cluster has {sorted(wanted)}")
            for address, node in listed.items():
                if node.get("state") not in ("Verified", "Loaded", "Repaired") or node.get("codeSha256") != sha256(
                    code or ""
                ):
                    found.append(f"{name}: status says {address} is {node.get('state')} {node.get('error', '')}")
        for server in [*primaries, *replicas]:
            try:
                held = server.function_libraries()
            except Exception as exc:
                found.append(f"{server.address}: FUNCTION LIST failed: {exc}")
                continue
            role = "primary" if server in primaries else "replica"
            for name in self.libraries:
                if held.get(name) != self.codes[name].encode():
                    got = held.get(name)
                    what = "missing" if got is None else f"other code ({got.decode(errors='replace').splitlines()[1]})"
                    found.append(f"{role} {self.address(server)}: {name} {what}")
        return found

    def wait_converged(
        self,
        since: float,
        *,
        timeout: float = CONVERGE_DEADLINE,
        label: str | None = None,
        measured_from: str = "",
        hold: float = 0.0,
    ) -> float:
        """Wait until :meth:`problems` is empty; print and record the seconds since ``since``; fail at ``timeout``.
        With ``hold``, it must then stay converged that many seconds (a late stale write would undo it)."""
        deadline = since + timeout
        last: list[str] = []
        while True:
            last = self.problems()
            if not last:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{label or self.name}: not converged {timeout:.0f}s after {measured_from or 'the fault'}:\n  "
                    + "\n  ".join(last[:30])
                )
            time.sleep(0.1)
        took = time.monotonic() - since
        scenario = label or self.name
        stable_until = time.monotonic() + hold
        while time.monotonic() < stable_until:
            time.sleep(0.2)
            again = self.problems()
            if again:
                raise AssertionError(
                    f"{scenario}: converged {took:.2f}s after {measured_from or 'the fault'}, then diverged again:\n  "
                    + "\n  ".join(again[:30])
                )
        print(f"\nCHAOS {scenario}: converged in {took:.2f}s")
        RESULTS.append(Measurement(scenario, took, measured_from or "the fault"))
        return took

    def wait_objects(
        self, predicate: Callable[[dict[str, dict[str, Any]]], Any], *, timeout: float, what: str
    ) -> dict[str, dict[str, Any]]:
        """Poll the objects until ``predicate(objects)`` holds (exceptions count as "not yet")."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                objects = self.objects()
                if predicate(objects):
                    return objects
                last = {n: (o.get("status") or {}).get("conditions") for n, o in objects.items()}
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout:.0f}s waiting for {what}; last: {last}")
            time.sleep(0.1)


class StatusSampler:
    """Samples every library's Ready condition and resourceVersion in a thread, for "never went False" and
    "does not flap" checks: ``with StatusSampler(scenario) as sampler: ...`` then read ``sampler.samples``."""

    def __init__(self, scenario: Scenario, interval: float = 0.2) -> None:
        self.scenario = scenario
        self.interval = interval
        self.samples: list[tuple[float, dict[str, Sample]]] = []
        self.errors: list[str] = []
        self.statuses: dict[str, list[tuple[str, dict[str, Any]]]] = {}  # name -> (resourceVersion, status) changes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)

    def _run(self) -> None:
        api = k8s_client.CustomObjectsApi(
            k8s_config.new_client_from_config(config_file=str(self.scenario.cp.kubeconfig))
        )
        while not self._stop.is_set():
            try:
                listed: dict[str, Any] = api.list_namespaced_custom_object(
                    GROUP, VERSION, self.scenario.namespace, PLURAL, _request_timeout=5
                )
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            else:
                now: dict[str, Sample] = {}
                for obj in listed["items"]:
                    ready = condition(obj, "Ready")
                    name = obj["metadata"]["name"].replace("-", "_")
                    history = self.statuses.setdefault(name, [])
                    if not history or history[-1][0] != obj["metadata"]["resourceVersion"]:
                        history.append((obj["metadata"]["resourceVersion"], obj.get("status") or {}))
                    now[name] = Sample(
                        str(ready.get("status")),
                        str(ready.get("reason")),
                        str(ready.get("lastTransitionTime")),
                        str(obj["metadata"]["resourceVersion"]),
                    )
                self.samples.append((time.monotonic(), now))
            self._stop.wait(self.interval)

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def rewrites(self, name: str) -> list[str]:
        """What changed between consecutive versions of one library's status (a readable diff per write)."""
        history = self.statuses.get(name, [])
        out = []
        for (_, old), (rv, new) in itertools.pairwise(history):
            changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
            details = []
            for key in changed:
                if key == "nodes":
                    before = {n.get("address"): n for n in old.get(key) or []}
                    after = {n.get("address"): n for n in new.get(key) or []}
                    for address in sorted({*before, *after}):
                        a, b = before.get(address) or {}, after.get(address) or {}
                        fields = sorted(f for f in {*a, *b} if a.get(f) != b.get(f))
                        details += [f"nodes[{address}].{f}: {a.get(f)} -> {b.get(f)}" for f in fields]
                else:
                    details.append(f"{key}: {json.dumps(old.get(key))[:300]} -> {json.dumps(new.get(key))[:300]}")
            out.append(f"rv {rv}: " + "; ".join(details))
        return out

    def seen(self, name: str) -> list[Sample]:
        """The distinct consecutive samples of one library (a change of anything starts a new entry)."""
        out: list[Sample] = []
        for _, now in self.samples:
            sample = now.get(name)
            if sample is not None and (not out or out[-1] != sample):
                out.append(sample)
        return out


@dataclass(frozen=True)
class Sample:
    ready: str
    reason: str
    last_transition: str
    resource_version: str


ScenarioFactory = Callable[..., Scenario]


@pytest.fixture
def scenario_factory(
    request: pytest.FixtureRequest, cluster_factory: Callable[..., rs.Cluster]
) -> Callable[..., Scenario]:
    """``scenario_factory(cp, namespace, libraries=4, cluster=None, seeds=None, **spec)``: a fresh cluster (unless
    given) and library names unique to the scenario; nothing applied yet."""

    def make(
        cp: ControlPlane,
        namespace: str,
        *,
        libraries: int = 4,
        cluster: rs.Cluster | rs.RedisServer | None = None,
        seeds: list[str] | None = None,
        flavor: str = "",
        **spec: Any,
    ) -> Scenario:
        cluster = cluster or cluster_factory(flavor or FLAVOR)
        tag = secrets.token_hex(2)
        names = [f"c{tag}_{i}" for i in range(libraries)]
        scenario = request.node.name.removeprefix("test_").split("[")[0]
        return Scenario(
            name=scenario,
            cp=cp,
            namespace=namespace,
            cluster=cluster,
            seeds=seeds or [n.address for n in (cluster.nodes if isinstance(cluster, rs.Cluster) else [cluster])],
            libraries=names,
            spec=spec,
        )

    return make


def deployed(scenario: Scenario) -> Scenario:
    """Version 1 of every library, converged (also measured: the baseline)."""
    since = scenario.apply(1)
    scenario.wait_converged(since, label=f"{scenario.name} (initial deploy)", measured_from="apply v1")
    return scenario


def start_scenario(
    cp: ControlPlane,
    namespace: str,
    scenarios: ScenarioFactory,
    operators: OperatorFactory,
    *,
    operator_options: Mapping[str, Any] | None = None,
    **scenario_options: Any,
) -> tuple[Scenario, OperatorProcess]:
    """A scenario with an operator of its own, and v1 deployed and converged."""
    scenario = scenarios(cp, namespace, **scenario_options)
    operator = operators(cp, namespace, **(operator_options or {}))
    return deployed(scenario), operator
