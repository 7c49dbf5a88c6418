"""The Helm chart (charts/redis-functions-operator) with the official helm v4, against the real test control plane.

* ``helm lint`` and ``helm template`` for the main value combinations, with assertions on the rendered objects;
* the pod template admitted by a namespace that enforces the ``restricted`` Pod Security Standard;
* ``helm install`` into the kube-apiserver, every object first validated server-side with strict field validation;
* ``kubectl auth can-i --as=system:serviceaccount:…``: each permission the operator needs, and what it must not have;
* the operator run as a process with **a token of the chart's ServiceAccount** (``kubectl create token``): the basics
  pass end to end with only the chart's RBAC, and its log holds no 403 — for a listed namespace here, and for every
  namespace in a private control plane (so that an all-namespaces operator never touches other tests' objects);
* the example chart examples/libraries installed with ``helm install --wait`` against that operator.

The Deployment itself never runs here (no kubelet, no controller-manager): it is only checked to be accepted.
Namespaces are prefixed ``chart-``: the session operator watches ``e2e-*`` only, so nothing but the operators
started here acts on these objects.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import Libraries, library_code
from tests.support import redis_servers as rs
from tests.support.control_plane import REPO_ROOT, ControlPlane
from tests.support.helm import CHART_DIR, Helm, HelmError, find, service_account_kubeconfig
from tests.support.operator_process import OperatorProcess, operator_env

CRD_NAME = "redisfunctionlibraries.redisfunctions.dev"
CRD_FILE = REPO_ROOT / "crds" / f"{CRD_NAME}.yaml"
EXAMPLE_CHART = REPO_ROOT / "examples" / "libraries"
SEED_LIBRARIES = ("mylib", "flags", "ratelimiter", "cart", "sessions")

# Exactly what the operator needs on namespaced resources (in a Role per watched namespace, or one ClusterRole).
OPERATOR_RULES = [
    {"apiGroups": ["redisfunctions.dev"], "resources": ["redisfunctionlibraries"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["redisfunctions.dev"], "resources": ["redisfunctionlibraries/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
RFL = "redisfunctionlibraries.redisfunctions.dev"
FORBIDDEN = re.compile(r"forbidden|status=403|\(403\)", re.IGNORECASE)

Obj = dict[str, Any]


def fullname(release: str) -> str:
    return f"{release}-redis-functions-operator"


# ------------------------------------------------------------------------------------------------------------------
# fixtures


@dataclass
class Install:
    """A release of the chart watching listed namespaces, and the operator run with its ServiceAccount's token."""

    release: str
    namespace: str
    watched: str
    other: str
    output: str
    operator: OperatorProcess | None = None
    namespaces: list[str] = field(default_factory=list)

    @property
    def service_account(self) -> str:
        return fullname(self.release)

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def new_namespace(cp: ControlPlane, kind: str, labels: dict[str, str] | None = None) -> str:
    name = f"chart-{kind}-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", name)
    if labels:
        cp.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return name


def wait_crd_established(cp: ControlPlane) -> None:
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")


@pytest.fixture(scope="module")
def scoped(control_plane: ControlPlane, helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    """``helm install`` with ``watchNamespaces: [<watched>]``, then the operator as a process authenticated with a
    token of the chart's ServiceAccount, watching that namespace — the way the Deployment would run it."""
    system, watched, other = (new_namespace(control_plane, kind) for kind in ("system", "apps", "other"))
    release = f"scoped-{secrets.token_hex(3)}"
    out = helm.install(release, system, {"watchNamespaces": [watched]}).stdout
    install = Install(release, system, watched, other, out, namespaces=[system, watched, other])
    try:
        wait_crd_established(control_plane)
        tmp = tmp_path_factory.mktemp("scoped-operator")
        env = operator_env(control_plane.env())
        env["KUBECONFIG"] = str(
            service_account_kubeconfig(control_plane, system, install.service_account, tmp / "kubeconfig")
        )
        install.operator = OperatorProcess(
            env, tmp / "operator.log", args=("--namespace", watched, "--deletion-timeout", "15")
        )
        install.operator.start()
        yield install
    finally:
        if install.operator is not None:
            install.operator.stop()
            print(f"\n--- scoped operator log tail ---\n{install.operator.log_tail(30)}")
        helm.run("uninstall", release, "--namespace", system, check=False)
        for name in install.namespaces:
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


# ------------------------------------------------------------------------------------------------------------------
# helpers


def can_i(cp: ControlPlane, user: str, verb: str, resource: str, namespace: str | None, subresource: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
    if subresource:
        args.append(f"--subresource={subresource}")
    proc = cp.kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return answer == "yes"


def deployment(objects: list[Obj]) -> Obj:
    (found,) = find(objects, "Deployment")
    return found


def container(objects: list[Obj]) -> Obj:
    (operator,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return dict(operator)


def env_of(c: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def assert_no_forbidden(operator: OperatorProcess) -> None:
    hits = [line for line in operator.log_text().splitlines() if FORBIDDEN.search(line)]
    assert not hits, "the operator hit RBAC denials:\n" + "\n".join(hits[:10])


# ------------------------------------------------------------------------------------------------------------------
# lint and render


VALUE_COMBINATIONS: dict[str, Obj] = {
    "defaults (all namespaces, metrics Service)": {},
    "listed namespaces": {"watchNamespaces": ["apps", "payments"]},
    "metrics off": {"metrics": {"service": {"enabled": False}}},
    "everything on": {
        "watchNamespaces": ["apps"],
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {"enabled": True, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
    },
}


def test_helm_is_the_pinned_build(helm: Helm) -> None:
    assert helm.version() == "v4.3.1"


@pytest.mark.parametrize("values", VALUE_COMBINATIONS.values(), ids=VALUE_COMBINATIONS.keys())
def test_lint_is_clean(helm: Helm, values: Obj, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    out = helm.run("lint", "--strict", str(CHART_DIR), "--values", str(path)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def test_example_chart_lints(helm: Helm) -> None:
    out = helm.run("lint", "--strict", str(EXAMPLE_CHART)).stdout
    assert "0 chart(s) failed" in out and "[WARNING]" not in out


def test_render_all_namespaces(helm: Helm) -> None:
    objects = helm.template("rfo", "rfo-system")
    assert sorted(o["kind"] for o in objects) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"]
    )
    (role,) = find(objects, "ClusterRole", "rfo-redis-functions-operator")
    assert role["rules"] == OPERATOR_RULES
    (binding,) = find(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rfo-redis-functions-operator", "namespace": "rfo-system"}
    ]
    assert not find(objects, "Role") and not find(objects, "RoleBinding")

    deploy = deployment(objects)
    assert deploy["metadata"]["namespace"] == "rfo-system"
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rfo-redis-functions-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objects)
    assert c["image"] == "ghcr.io/redis-functions-operator/redis-functions-operator:0.1.0"
    assert c["args"] == [
        "--all-namespaces",
        "--liveness=0.0.0.0:8080",
        "--log-format=json",
        "--deletion-timeout=300",
        "--poll-interval=2",
    ]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert env_of(c) == {"TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]

    (service,) = find(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    for kind in ("ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget"):
        assert not find(objects, kind)


def test_render_listed_namespaces_has_no_cluster_wide_access(helm: Helm) -> None:
    objects = helm.template("rfo", "rfo-system", {"watchNamespaces": ["apps", "payments"]})
    roles, bindings = find(objects, "Role"), find(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["apps", "payments"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["apps", "payments"]
    for role in roles:
        assert role["rules"] == OPERATOR_RULES
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rfo-redis-functions-operator", "namespace": "rfo-system"}
        ]
    assert not find(objects, "ClusterRoleBinding")
    cluster_roles = find(objects, "ClusterRole")
    assert sorted(r["metadata"]["name"] for r in cluster_roles) == [
        "rfo-redis-functions-operator-edit",
        "rfo-redis-functions-operator-view",
    ]
    for role in cluster_roles:  # the aggregated roles only ever name our resource
        assert {res for rule in role["rules"] for res in rule["resources"]} == {"redisfunctionlibraries"}
    assert container(objects)["args"][:2] == ["--namespace=apps", "--namespace=payments"]


def test_render_aggregated_cluster_roles(helm: Helm) -> None:
    objects = helm.template()
    (view,) = find(objects, "ClusterRole", "rfo-redis-functions-operator-view")
    (edit,) = find(objects, "ClusterRole", "rfo-redis-functions-operator-edit")
    for role, targets in ((view, ("view", "edit", "admin")), (edit, ("edit", "admin"))):
        labels = role["metadata"]["labels"]
        assert {k for k, v in labels.items() if k.startswith("rbac.authorization.k8s.io/") and v == "true"} == {
            f"rbac.authorization.k8s.io/aggregate-to-{t}" for t in targets
        }
    assert view["rules"] == [
        {
            "apiGroups": ["redisfunctions.dev"],
            "resources": ["redisfunctionlibraries"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert edit["rules"] == [
        {
            "apiGroups": ["redisfunctions.dev"],
            "resources": ["redisfunctionlibraries"],
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        }
    ]
    assert not find(
        helm.template(values={"rbac": {"aggregateClusterRoles": False}}),
        "ClusterRole",
        "rfo-redis-functions-operator-view",
    )


def test_render_metrics_service_monitor_and_network_policy(helm: Helm) -> None:
    assert not find(helm.template(values={"metrics": {"service": {"enabled": False}}}), "Service")

    values: Obj = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s", "scrapeTimeout": "5s"}
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
    }
    objects = helm.template("rfo", "ops", values)
    (service,) = find(objects, "Service")
    (monitor,) = find(objects, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "ops"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "http-metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    ]

    (policy,) = find(objects, "NetworkPolicy")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= deployment(objects)["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open unless rules are given
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    ]
    egress = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]
    (restricted,) = find(helm.template(values={"networkPolicy": {"enabled": True, "egress": egress}}), "NetworkPolicy")
    assert restricted["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert restricted["spec"]["egress"][0]["ports"] == [
        {"port": 53, "protocol": "UDP"},
        {"port": 53, "protocol": "TCP"},
    ]
    assert restricted["spec"]["egress"][1:] == egress

    with pytest.raises(HelmError, match=re.escape("needs metrics.service.enabled")):
        helm.template(values={"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


def test_render_image_and_pod_settings(helm: Helm) -> None:
    digest = "sha256:" + "ab" * 32
    values: Obj = {
        "image": {
            "registry": "registry.example.com:5000",
            "repository": "team/rfo",
            "tag": "1.2.3",
            "digest": digest,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {"logFormat": "human", "verbose": True, "deletionTimeout": 42, "pollInterval": 5},
        "extraArgs": ["--some-flag=x y"],
        "extraEnv": [{"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "resources": {"requests": {"cpu": "1"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "data"},
    }
    objects = helm.template(values=values)
    c = container(objects)
    assert c["image"] == f"registry.example.com:5000/team/rfo@{digest}"  # a digest wins over the tag
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == [
        "--all-namespaces", "--liveness=0.0.0.0:8080", "--log-format=human", "--deletion-timeout=42", "--poll-interval=5",
        "--verbose", "--some-flag=x y",
    ]  # fmt: skip
    assert env_of(c)["REDISCLI_AUTH"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert c["resources"]["requests"] == {"cpu": "1", "memory": "128Mi"}  # Helm merges maps with the defaults
    template = deployment(objects)["spec"]["template"]
    pod = template["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod[key] == values[key]
    assert template["metadata"]["annotations"] == {"a": "b"}
    assert template["metadata"]["labels"]["team"] == "data"

    tagged = container(helm.template(values={"image": {"registry": "", "tag": "0.2.0"}}))
    assert tagged["image"] == "redis-functions-operator/redis-functions-operator:0.2.0"

    no_rbac = helm.template(values={"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert not {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {
        o["kind"] for o in no_rbac
    }
    assert deployment(no_rbac)["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    with pytest.raises(HelmError, match=re.escape("serviceAccount.name is required")):
        helm.template(values={"serviceAccount": {"create": False}})


SHARD_KEY = "sharding.fluxcd.io/key"
SHARDS = {"rfo": f"!{SHARD_KEY}", "rfo-shard1": f"{SHARD_KEY}=shard1", "rfo-shard2": f"{SHARD_KEY} in (shard2)"}


def test_render_one_release_per_shard_without_a_name_in_common(helm: Helm) -> None:
    """Sharding is one ``helm install`` per shard in one namespace: each release passes its selector to the operator,
    and no two releases render an object of the same kind and name (the CRD comes from crds/, installed once)."""
    seen: dict[tuple[str, str | None, str], str] = {}
    for release, selector in SHARDS.items():
        objects = helm.template(release, "rfo-system", {"labelSelector": selector})
        assert f"--label-selector={selector}" in container(objects)["args"]
        pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/instance"] == release
        (service,) = find(objects, "Service")
        assert service["spec"]["selector"]["app.kubernetes.io/instance"] == release  # its own pod's metrics
        for obj in objects:
            key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
            assert key not in seen, f"{key} rendered by both {seen.get(key)} and {release}"
            seen[key] = release
    assert not any(arg.startswith("--label-selector") for arg in container(helm.template())["args"])


@pytest.mark.parametrize(
    "values",
    [
        {"labelSelector": ["tier=web"]},  # one selector string, as Kubernetes writes it
        {"watchNamespace": ["apps"]},  # a typo is refused, not ignored
        {"watchNamespaces": ["team-*"]},  # RBAC cannot follow a glob: names only
        {"operator": {"logFormat": "xml"}},
        {"image": {"digest": "latest"}},
        {"metrics": {"serviceMonitor": {"enable": True}}},
    ],
    ids=["selector-list", "typo", "glob", "log-format", "digest", "nested-typo"],
)
def test_values_schema_refuses_mistakes(helm: Helm, values: Obj) -> None:
    with pytest.raises(HelmError, match="values don't meet the specifications of the schema"):
        helm.template(values=values)


def test_chart_ships_the_top_level_crd_byte_for_byte(helm: Helm) -> None:
    shown = helm.run("show", "crds", str(CHART_DIR)).stdout
    assert shown.removeprefix("---\n").strip() == CRD_FILE.read_text().strip()
    rendered = helm.template(extra=["--include-crds"])
    assert find(rendered, "CustomResourceDefinition", CRD_NAME)[0] == yaml.safe_load(CRD_FILE.read_text())


# ------------------------------------------------------------------------------------------------------------------
# against the API server


def test_pod_template_passes_the_restricted_pod_security_standard(helm: Helm, control_plane: ControlPlane) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    namespace = new_namespace(control_plane, "restricted", labels)
    try:
        template = deployment(helm.template("rfo", namespace))["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "operator", "namespace": namespace, **template["metadata"]},
            "spec": template["spec"],
        }
        created = control_plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert created.returncode == 0, created.stderr
        # The namespace really enforces: the same pod allowed to escalate is refused.
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        refused = control_plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# A stand-in for prometheus-operator's ServiceMonitor CRD: only the fields the chart uses are declared, so strict
# field validation refuses anything else (the real CRD declares these under the same names).
SERVICE_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector, endpoints]
              properties:
                jobLabel: {type: string}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                selector: {type: object, x-kubernetes-preserve-unknown-fields: true}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string}
                      scrapeTimeout: {type: string}
                      relabelings: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
                      metricRelabelings: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def test_install_with_every_optional_object_is_valid_server_side(helm: Helm, control_plane: ControlPlane) -> None:
    control_plane.apply_yaml(SERVICE_MONITOR_CRD, server_side=True)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/servicemonitors.monitoring.coreos.com"
    )
    system, apps, payments = (new_namespace(control_plane, kind) for kind in ("system", "apps", "payments"))
    release = f"full-{secrets.token_hex(3)}"
    values: Obj = {
        "watchNamespaces": [apps, payments],
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "scrapeTimeout": "10s",
                                       "relabelings": [{"action": "labeldrop", "regex": "pod"}]}},
        "networkPolicy": {"enabled": True, "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
                          "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
        "extraEnv": [{"name": "X", "value": "y"}],
        "extraVolumes": [{"name": "ca", "secret": {"secretName": "ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}],
        "podLabels": {"team": "data"},
        "commonLabels": {"cost-center": "42"},
    }  # fmt: skip
    try:
        objects = helm.template(release, system, values)
        assert {o["kind"] for o in objects} == {
            "ServiceAccount", "ClusterRole", "Role", "RoleBinding", "Service", "ServiceMonitor", "NetworkPolicy", "Deployment",
        }  # fmt: skip
        # Every object, unknown fields refused (helm install itself does server-side apply, which only warns).
        stream = "\n---\n".join(json.dumps(o) for o in objects)
        strict = control_plane.kubectl(
            "create", "--dry-run=server", "--validate=strict", "-f", "-", input=stream, check=False
        )
        assert strict.returncode == 0, strict.stderr
        out = helm.install(release, system, values)
        assert "STATUS: deployed" in out.stdout
        assert "Warning" not in out.stderr, out.stderr
        for obj in objects:
            ns = obj["metadata"].get("namespace")
            args = ["get", obj["kind"], obj["metadata"]["name"], "-o", "json", *(["-n", ns] if ns else [])]
            live = json.loads(control_plane.kubectl(*args).stdout)
            assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == release
            assert live["metadata"]["labels"]["cost-center"] == "42"

        helm.run("uninstall", release, "--namespace", system, "--wait")
        assert control_plane.kubectl("get", "clusterrole", f"{fullname(release)}-view", check=False).returncode != 0
        assert control_plane.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0  # crds/ are never deleted
    finally:
        helm.run("uninstall", release, "--namespace", system, check=False)
        control_plane.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=false", check=False)
        for namespace in (system, apps, payments):
            control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_one_release_per_shard_installs_side_by_side_in_one_namespace(helm: Helm, control_plane: ControlPlane) -> None:
    """Three releases of the chart in one namespace, one per shard: every install succeeds (the second and third find
    the CRD there and leave it), each release owns its own objects, and the notes say what each one reconciles."""
    system, apps = new_namespace(control_plane, "shards"), new_namespace(control_plane, "apps")
    suffix = secrets.token_hex(3)
    releases = {f"{release}-{suffix}": selector for release, selector in SHARDS.items()}
    try:
        for release, selector in releases.items():
            out = helm.install(release, system, {"watchNamespaces": [apps], "labelSelector": selector})
            assert "STATUS: deployed" in out.stdout
            assert f"It reconciles only those matching the label selector {selector} (one shard)" in out.stdout
        for release in releases:
            live = json.loads(
                control_plane.kubectl("get", "deployment", fullname(release), "-n", system, "-o", "json").stdout
            )
            (operator,) = live["spec"]["template"]["spec"]["containers"]
            assert f"--label-selector={releases[release]}" in operator["args"]
            assert can_i(control_plane, f"system:serviceaccount:{system}:{fullname(release)}", "list", RFL, apps)
    finally:
        for release in releases:
            helm.run("uninstall", release, "--namespace", system, check=False)
        for namespace in (system, apps):
            control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_install_notes_tell_the_next_commands(scoped: Install) -> None:
    assert f"kubectl -n {scoped.namespace} rollout status deployment/{fullname(scoped.release)}" in scoped.output
    assert "kubectl wait --for=condition=Ready rfl/hello" in scoped.output
    assert f"It watches RedisFunctionLibrary objects in: {scoped.watched}." in scoped.output
    assert "kubectl apply --server-side" in scoped.output  # the CRD upgrade step


def test_service_account_has_exactly_what_the_operator_needs(control_plane: ControlPlane, scoped: Install) -> None:
    user, watched, other = scoped.user, scoped.watched, scoped.other
    allowed = [
        ("list", RFL, watched, ""),
        ("watch", RFL, watched, ""),
        ("patch", RFL, watched, ""),  # kopf's finalizer and annotations
        ("patch", RFL, watched, "status"),
        ("get", "secrets", watched, ""),
        ("list", "secrets", watched, ""),
        ("watch", "secrets", watched, ""),
        ("get", "configmaps", watched, ""),
        ("watch", "configmaps", watched, ""),
        ("create", "events", watched, ""),
    ]
    denied = [
        # nothing outside the watched namespace, and no cluster-wide Secrets
        ("get", "secrets", other, ""),
        ("list", "secrets", other, ""),
        ("list", "secrets", None, ""),
        ("list", "configmaps", None, ""),
        ("get", "secrets", scoped.namespace, ""),  # not even in its own namespace
        ("list", RFL, other, ""),
        ("list", RFL, None, ""),
        ("create", "events", other, ""),
        # in the watched namespace, only what it uses
        ("create", RFL, watched, ""),
        ("update", RFL, watched, ""),
        ("delete", RFL, watched, ""),
        ("update", RFL, watched, "status"),
        ("create", "secrets", watched, ""),
        ("update", "secrets", watched, ""),
        ("delete", "configmaps", watched, ""),
        ("patch", "events", watched, ""),
        ("list", "pods", watched, ""),
        # nothing cluster-scoped
        ("delete", "customresourcedefinitions", None, ""),
        ("list", "customresourcedefinitions", None, ""),
        ("list", "namespaces", None, ""),
        ("create", "clusterrolebindings", None, ""),
        ("impersonate", "serviceaccounts", None, ""),
    ]
    assert [a for a in allowed if not can_i(control_plane, user, *a)] == []
    assert [d for d in denied if can_i(control_plane, user, *d)] == []


def test_aggregated_roles_let_namespace_users_manage_and_see_libraries(
    control_plane: ControlPlane, scoped: Install
) -> None:
    # No controller-manager here, so the built-in admin/edit/view are not filled by aggregation. Do what it would do:
    # bind each user to every ClusterRole of the release that carries the aggregate-to-<role> label.
    ns = scoped.watched
    for user, role in (("jane", "edit"), ("vic", "view")):
        selector = f"rbac.authorization.k8s.io/aggregate-to-{role}=true,app.kubernetes.io/instance={scoped.release}"
        names = control_plane.kubectl("get", "clusterroles", "-l", selector, "-o", "name").stdout.split()
        assert names, f"no ClusterRole aggregates into {role}"
        for i, name in enumerate(names):
            cluster_role = name.removeprefix("clusterrole.rbac.authorization.k8s.io/")
            control_plane.kubectl(
                "create",
                "rolebinding",
                f"{user}-{role}-{i}",
                f"--clusterrole={cluster_role}",
                f"--user={user}",
                "-n",
                ns,
            )
    for verb in ("create", "update", "patch", "delete", "deletecollection", "get", "list", "watch"):
        assert can_i(control_plane, "jane", verb, RFL, ns), verb
    assert not can_i(control_plane, "jane", "patch", RFL, ns, "status")  # status is the operator's
    assert not can_i(control_plane, "jane", "get", "secrets", ns)
    for verb in ("get", "list", "watch"):
        assert can_i(control_plane, "vic", verb, RFL, ns), verb
    for verb in ("create", "patch", "delete"):
        assert not can_i(control_plane, "vic", verb, RFL, ns), verb


def test_operator_with_only_the_chart_rbac(
    control_plane: ControlPlane, scoped: Install, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    """Auth from a Secret, code from a ConfigMap, status, events, the finalizer, a ConfigMap edit, deletion — with
    the ServiceAccount's token — and an object in a namespace outside the scope is never touched."""
    assert scoped.operator is not None
    password = "chart-Pass-7"
    server = server_factory("redis", password=password)
    libs, outside = Libraries(control_plane, scoped.watched), Libraries(control_plane, scoped.other)
    auth = {"auth": {"secretRef": {"name": "redis-auth", "passwordKey": "password"}}}
    outside.apply("lib", [server.address], code=library_code(f"{unique_name}_out"))
    libs.kubectl("create", "secret", "generic", "redis-auth", f"--from-literal=password={password}")
    libs.kubectl("create", "configmap", "code", f"--from-literal=lib.lua={library_code(unique_name)}")
    libs.apply(
        "lib",
        [server.address],
        codeFrom={"configMapKeyRef": {"name": "code", "key": "lib.lua"}},
        target=auth,
        version="1",
    )

    obj = libs.wait_ready("lib")
    assert server.function_libraries()[unique_name] == library_code(unique_name).encode()
    assert obj["status"]["readyPrimaries"] == "1/1"
    assert "redisfunctions.dev/cleanup" in obj["metadata"]["finalizers"]
    assert libs.wait_event("lib", "Loaded")["type"] == "Normal"

    v2 = library_code(unique_name, "return 'v2'")
    edited = libs.kubectl(
        "create", "configmap", "code", f"--from-literal=lib.lua={v2}", "--dry-run=client", "-o", "yaml"
    )
    libs.kubectl("apply", "-f", "-", input=edited.stdout)
    deadline = time.monotonic() + 20
    while server.function_libraries().get(unique_name) != v2.encode() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.function_libraries()[unique_name] == v2.encode(), "a ConfigMap edit did not reach Redis"

    assert libs.delete("lib").returncode == 0
    assert unique_name not in server.function_libraries()
    assert libs.wait_event("lib", "Deleted")

    untouched = outside.get("lib")
    assert untouched.get("status", {}).get("observedGeneration") == -1
    assert "finalizers" not in untouched["metadata"]
    assert f"{unique_name}_out" not in server.function_libraries()
    outside.kubectl("delete", "rfl", "lib")
    assert_no_forbidden(scoped.operator)


def test_example_libraries_chart_with_helm_wait(
    control_plane: ControlPlane, helm: Helm, scoped: Install, server_factory: Callable[..., rs.RedisServer]
) -> None:
    """The lua/ libraries delivered by Helm as objects; Helm 4's --wait reads their kstatus conditions, so the
    install returns once every library is verified on Redis, and uninstall --wait removes them from Redis."""
    server = server_factory("redis")  # private: the seed libraries' function names are global per server
    release = f"libs-{secrets.token_hex(3)}"
    values = {"target": {"endpoints": [server.address]}, "libraries": {"cart": {"version": "2.0.0"}}}
    started = time.monotonic()
    out = helm.install(release, scoped.watched, values, chart=EXAMPLE_CHART, extra=["--wait", "--timeout=90s"])
    print(f"\nhelm install --wait of the five libraries: {time.monotonic() - started:.1f}s")
    assert "STATUS: deployed" in out.stdout
    libs = Libraries(control_plane, scoped.watched)
    loaded = server.function_libraries()
    for name in SEED_LIBRARIES:
        assert loaded[name] == (REPO_ROOT / "lua" / f"{name}.lua").read_bytes()
        ready = libs.condition(name, "Ready")
        assert ready is not None and ready["status"] == "True"
    assert libs.get("cart")["status"]["version"] == "2.0.0"
    assert server.client(protocol=2).fcall_ro("calculate", 0, "1.5", "2.25") == b"3.75"

    helm.run("uninstall", release, "--namespace", scoped.watched, "--wait", "--timeout=60s")
    assert not set(SEED_LIBRARIES) & set(server.function_libraries())  # deletionPolicy Delete, via the finalizer
    assert scoped.operator is not None
    assert_no_forbidden(scoped.operator)


def test_example_chart_with_code_in_a_config_map_installs_and_uninstalls(
    control_plane: ControlPlane, helm: Helm, scoped: Install, server_factory: Callable[..., rs.RedisServer]
) -> None:
    server = server_factory("redis")
    release = f"cm-{secrets.token_hex(3)}"
    only_cart = {name: {"enabled": name == "cart"} for name in SEED_LIBRARIES}
    only_cart["cart"]["delivery"] = "configMap"
    values = {"target": {"endpoints": [server.address]}, "libraries": only_cart}
    helm.install(release, scoped.watched, values, chart=EXAMPLE_CHART, extra=["--wait", "--timeout=60s"])
    libs = Libraries(control_plane, scoped.watched)
    assert libs.get("cart")["spec"]["codeFrom"] == {"configMapKeyRef": {"name": "cart-lua", "key": "cart.lua"}}
    assert server.function_libraries()["cart"] == (REPO_ROOT / "lua" / "cart.lua").read_bytes()
    helm.run("uninstall", release, "--namespace", scoped.watched, "--wait", "--timeout=60s")
    assert "cart" not in server.function_libraries()


def test_cluster_wide_install_end_to_end_in_a_private_control_plane(
    redis_standalone: rs.RedisServer, tmp_path: Path, unique_name: str
) -> None:
    """``watchNamespaces: []`` on a fresh cluster: helm installs the CRD from crds/ and a ClusterRole; the operator
    with its ServiceAccount's token watches every namespace and reads a Secret there. A private control plane, so an
    all-namespaces operator never meets other tests' objects."""
    with ControlPlane() as cp:
        helm = Helm(tmp_path / "helm", cp)
        assert cp.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0
        cp.kubectl("create", "namespace", "rfo-system")
        cp.kubectl("create", "namespace", "team-a")
        helm.install("rfo", "rfo-system")
        wait_crd_established(cp)
        live_crd = json.loads(cp.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
        assert (
            live_crd["spec"]["versions"][0]["schema"]
            == yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]
        )

        user = "system:serviceaccount:rfo-system:rfo-redis-functions-operator"
        for args in (
            ("list", "secrets", None),
            ("watch", "configmaps", None),
            ("list", RFL, None),
            ("patch", RFL, "team-a"),
        ):
            assert can_i(cp, user, *args), args
        assert can_i(cp, user, "patch", RFL, "team-a", "status")
        for args in (("delete", "customresourcedefinitions", None), ("list", "namespaces", None), ("create", RFL, "team-a"),
                     ("update", "secrets", "team-a"), ("list", "pods", None)):  # fmt: skip
            assert not can_i(cp, user, *args), args

        env = operator_env(cp.env())
        env["KUBECONFIG"] = str(
            service_account_kubeconfig(cp, "rfo-system", "rfo-redis-functions-operator", tmp_path / "kc")
        )
        libs = Libraries(cp, "team-a")
        libs.kubectl("create", "secret", "generic", "code", f"--from-literal=lib.lua={library_code(unique_name)}")
        with OperatorProcess(env, tmp_path / "operator.log", args=("--all-namespaces",)) as operator:
            libs.apply("lib", [redis_standalone.address], codeFrom={"secretKeyRef": {"name": "code", "key": "lib.lua"}})
            libs.wait_ready("lib")
            assert unique_name in redis_standalone.function_libraries()
            assert libs.delete("lib").returncode == 0
            assert unique_name not in redis_standalone.function_libraries()
            assert_no_forbidden(operator)
