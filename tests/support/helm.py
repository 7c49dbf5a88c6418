"""The official helm v4 (built once by ``scripts/build-control-plane.sh`` into ``.cache/k8s/bin/helm``), run against a
test control plane, plus what the chart tests need around it: rendering to objects, and a kubeconfig that
authenticates as a ServiceAccount (``kubectl create token``) so the operator runs with only the chart's RBAC.

Plain Python with no pytest imports. Helm's config, cache and data go to a private directory, never to ``~``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.control_plane import REPO_ROOT, ControlPlane, binaries_dir

HELM_VERSION = "v4.3.1"
CHART_DIR = REPO_ROOT / "charts" / "redis-functions-operator"


class HelmMissing(RuntimeError):
    """helm has not been built yet."""


class HelmError(subprocess.CalledProcessError):
    """A failed helm run; unlike CalledProcessError its text includes helm's stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd)
        return f"helm exited with {self.returncode}: {cmd}\n{(self.stderr or '').strip()}"


def helm_path() -> Path:
    """``.cache/k8s/bin/helm`` (``K8S_BIN_DIR`` overrides), or :class:`HelmMissing` telling what to run."""
    path = binaries_dir() / "helm"
    if not os.access(path, os.X_OK):
        raise HelmMissing(
            f"helm not found in {path.parent}. The chart tests run the official helm {HELM_VERSION} built from the Go "
            "module proxy; build it once with `make control-plane` (or scripts/build-control-plane.sh; ~3 min cold, "
            "cached afterwards)."
        )
    return path


class Helm:
    """``helm`` with a private home; against ``control_plane`` when given (``template``/``lint`` need none)."""

    def __init__(self, home: Path, control_plane: ControlPlane | None = None) -> None:
        self.binary = helm_path()
        self.home = home
        self.control_plane = control_plane
        home.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = self.control_plane.env() if self.control_plane is not None else dict(os.environ)
        for var, sub in (("HELM_CONFIG_HOME", "config"), ("HELM_CACHE_HOME", "cache"), ("HELM_DATA_HOME", "data")):
            env[var] = str(self.home / sub)
        if self.control_plane is None:
            env.pop("KUBECONFIG", None)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        proc = subprocess.run(
            cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT
        )
        if check and proc.returncode != 0:
            raise HelmError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def version(self) -> str:
        return self.run("version", "--template", "{{.Version}}").stdout.strip()

    def template(
        self,
        release: str = "rfo",
        namespace: str = "rfo-system",
        values: Mapping[str, Any] | None = None,
        chart: Path = CHART_DIR,
        extra: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """``helm template`` → the rendered objects (without the crds/ folder unless ``--include-crds``)."""
        out = self.run("template", release, str(chart), "--namespace", namespace, *self._values(values), *extra)
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    def install(
        self,
        release: str,
        namespace: str,
        values: Mapping[str, Any] | None = None,
        chart: Path = CHART_DIR,
        extra: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "install", release, str(chart), "--namespace", namespace, *self._values(values), *extra, check=check
        )

    def _values(self, values: Mapping[str, Any] | None) -> list[str]:
        if not values:
            return []
        path = self.home / f"values-{len(list(self.home.glob('values-*.json')))}.json"
        path.write_text(json.dumps(values))
        return ["--values", str(path)]


def find(objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The rendered objects of a kind (and name)."""
    return [
        dict(o)
        for o in objects
        if o.get("kind") == kind and (name is None or o.get("metadata", {}).get("name") == name)
    ]


def service_account_kubeconfig(cp: ControlPlane, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig for ``cp`` that authenticates as the ServiceAccount with a bound token from the TokenRequest API
    (``kubectl create token``) — what a pod of that ServiceAccount gets mounted."""
    token = cp.kubectl("create", "token", service_account, "-n", namespace, "--duration=2h").stdout.strip()
    assert token, "kubectl create token printed nothing"
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f'- name: test\n  cluster: {{server: "{cp.server}", certificate-authority: "{cp.ca_file}"}}\n'
        "users:\n"
        f'- name: sa\n  user: {{token: "{token}"}}\n'
        "contexts:\n"
        f"- name: sa\n  context: {{cluster: test, user: sa, namespace: {namespace}}}\n"
        "current-context: sa\n"
    )
    path.chmod(0o600)
    return path
