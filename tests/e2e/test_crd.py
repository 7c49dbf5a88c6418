"""The RedisFunctionLibrary CRD against a real kube-apiserver: names, defaults, every validation rule, sizes.

Everything goes through the real kubectl, so the asserted error texts are exactly what a user sees.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import make_namespace
from tests.support.control_plane import ControlPlane

pytestmark = pytest.mark.usefixtures("crd_installed")

CRD_NAME = "redisfunctionlibraries.redisfunctions.dev"
API_VERSION = "redisfunctions.dev/v1alpha1"
CODE = "#!lua name=mylib\nredis.register_function('hello', function() return 'hi' end)\n"
MAX_CODE = 1048576  # spec.code maxLength

Obj = dict[str, Any]


def rfl(name: str = "lib", **spec: Any) -> Obj:
    """A minimal valid object, with ``spec`` keys replaced (a value of ``None`` removes the key)."""
    body: Obj = {"code": CODE, "target": {"endpoints": ["redis-0.redis:6379"]}}
    for key, value in spec.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return {"apiVersion": API_VERSION, "kind": "RedisFunctionLibrary", "metadata": {"name": name}, "spec": body}


def apply(cp: ControlPlane, obj: Obj, namespace: str, *, server_side: bool = False, check: bool = False) -> Any:
    return cp.apply_yaml(json.dumps(obj), namespace=namespace, server_side=server_side, check=check)


def validation_errors(stderr: str) -> list[str]:
    """The field errors of a kubectl "is invalid" message, without the apiserver's "some validation rules were not
    checked" note (CEL rules are skipped when the OpenAPI schema already failed)."""
    _, sep, rest = stderr.partition(" is invalid: ")
    assert sep, f"not a validation error: {stderr}"
    lines = [line.removeprefix("* ").strip() for line in rest.strip().splitlines()]
    return [line for line in lines if line and "some validation rules were not checked" not in line]


def get(cp: ControlPlane, name: str, namespace: str) -> Obj:
    out: Obj = json.loads(cp.kubectl("get", "rfl", name, "-n", namespace, "-o", "json").stdout)
    return out


def lua(body: str = "return 1", name: str = "mylib") -> str:
    return f"#!lua name={name}\nredis.register_function('f', function() {body} end)\n"


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``crd-`` namespace: no operator watches it, so objects here stay exactly as the API server stored them."""
    yield from make_namespace(control_plane, request, "crd")


# ---- the CRD itself --------------------------------------------------------------------------------------------------
def test_crd_is_established_with_its_names(control_plane: ControlPlane) -> None:
    crd = json.loads(control_plane.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    names = crd["status"]["acceptedNames"]
    assert names["kind"] == "RedisFunctionLibrary"
    assert names["shortNames"] == ["rfl"]
    assert names["categories"] == ["redis"]
    assert crd["spec"]["scope"] == "Namespaced"


def test_minimal_object_gets_defaults_and_reads_in_progress(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, rfl("minimal"), namespace, check=True)
    obj = get(control_plane, "minimal", namespace)
    # kstatus reads observedGeneration -1 != generation 1 as InProgress until the operator acts.
    assert obj["status"] == {"observedGeneration": -1}
    assert obj["metadata"]["generation"] == 1
    spec = obj["spec"]
    assert spec["target"]["mode"] == "auto"
    assert spec["deletionPolicy"] == "Delete"
    assert spec["resyncInterval"] == "60s"
    assert spec["driftPolicy"] == "Repair"
    assert spec["managementPolicy"] == "Full"
    assert "libraryName" not in spec  # not derived by the apiserver; the operator reports status.libraryName


def test_nested_defaults(control_plane: ControlPlane, namespace: str) -> None:
    target = {
        "endpoints": ["[::1]:6379", "10.0.0.1:6380"],
        "auth": {"secretRef": {"name": "redis-auth"}},
        "tls": {"enabled": True, "caSecretRef": {"name": "redis-ca"}, "clientCertSecretRef": {"name": "client"}},
    }
    apply(control_plane, rfl("nested", target=target), namespace, check=True)
    spec = get(control_plane, "nested", namespace)["spec"]
    assert spec["target"]["auth"]["secretRef"] == {"name": "redis-auth", "passwordKey": "password"}
    assert spec["target"]["tls"]["caSecretRef"] == {"name": "redis-ca", "key": "ca.crt"}
    assert spec["target"]["tls"]["insecureSkipVerify"] is False


# ---- accepted variants ---------------------------------------------------------------------------------------------
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("uppercase-shebang", {"code": "#!LUA NAME=mylib\nreturn 1\n", "libraryName": "mylib"}),
    ("mixed-case-crlf", {"code": "#!Lua name=mylib\r\nreturn 1\r\n", "libraryName": "mylib"}),
    ("tab-separated", {"code": "#!lua\tname=mylib\t\nreturn 1\n", "libraryName": "mylib"}),
    ("empty-body", {"code": "#!lua name=mylib\n"}),
    ("code-from-configmap", {"code": None, "codeFrom": {"configMapKeyRef": {"name": "libs", "key": "mylib.lua"}}}),
    # With codeFrom the apiserver cannot see the code: the operator checks libraryName against it.
    ("code-from-secret", {"code": None, "codeFrom": {"secretKeyRef": {"name": "s", "key": "k"}}, "libraryName": "x"}),
    ("sentinel", {"target": {"endpoints": ["s-0:26379", "s-1:26379"], "mode": "sentinel",
                             "sentinel": {"masterName": "mymaster"}}}),
    ("auto-with-sentinel", {"target": {"endpoints": ["s-0:26379"], "sentinel": {"masterName": "mymaster"}}}),
    ("cluster", {"target": {"endpoints": ["c-0:6379"], "mode": "cluster"}}),
    ("tls-full", {"target": {"endpoints": ["r:6380"], "tls": {
        "enabled": True, "caSecretRef": {"name": "ca", "key": "bundle.pem"}, "serverName": "redis.example",
        "insecureSkipVerify": True}}}),
    ("tls-disabled-plain", {"target": {"endpoints": ["r:6379"], "tls": {"enabled": False}}}),
    ("auth-user-and-password", {"target": {"endpoints": ["r:6379"], "auth": {"secretRef": {
        "name": "a", "usernameKey": "username", "passwordKey": "pw"}}}}),
    ("resync-5s", {"resyncInterval": "5s"}),
    ("resync-24h", {"resyncInterval": "24h"}),
    ("resync-compound", {"resyncInterval": "1h30m"}),
    ("resync-fraction", {"resyncInterval": "1.5m"}),
    ("retain", {"deletionPolicy": "Retain", "version": "1.2.3-rc.1+build"}),
    ("drift-report", {"driftPolicy": "Report"}),
    ("drift-repair", {"driftPolicy": "Repair"}),
    ("observe", {"managementPolicy": "Observe", "driftPolicy": "Report"}),
    ("full", {"managementPolicy": "Full"}),
    ("max-endpoints", {"target": {"endpoints": [f"r-{i}:6379" for i in range(64)]}}),
    ("port-65535", {"target": {"endpoints": ["r:65535", "r:1"]}}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spec"), ACCEPTED, ids=[c for c, _ in ACCEPTED])
def test_valid_variants_are_accepted(control_plane: ControlPlane, namespace: str, case: str, spec: Obj) -> None:
    proc = apply(control_plane, rfl(case.lower(), **spec), namespace)
    assert proc.returncode == 0, proc.stderr


# ---- every rule rejects, with its readable message -------------------------------------------------------------------
def _mutate(fn: Callable[[Obj], object]) -> Callable[[Obj], Obj]:
    def run(obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        fn(obj["spec"])
        return obj

    return run


def _set(path: str, value: Any) -> Callable[[Obj], Obj]:
    keys = path.split(".")

    def fn(spec: Obj) -> None:
        node = spec
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value

    return _mutate(fn)


MSG_ONE_OF = "exactly one of spec.code or spec.codeFrom must be set"
MSG_SHEBANG = "code must start with a #!lua shebang, e.g. '#!lua name=mylib' on its first line"
MSG_NAMED = "the first line of code must name the library, e.g. '#!lua name=mylib'"
MSG_LIBNAME = "libraryName must equal the name in the first line of code ('#!lua name=<libraryName>')"
MSG_ENDPOINT = "each endpoint must be host:port with a port 1-65535 (IPv6 as [addr]:port)"
MSG_DURATION = "resyncInterval must be a duration such as 30s, 5m or 1h30m (units ms, s, m, h)"
MSG_DURATION_RANGE = "resyncInterval must be between 5s and 24h"

# (case, mutation of a valid object with libraryName mylib, the message — or all the messages — kubectl must show)
REJECTED: list[tuple[str, Callable[[Obj], Obj], str | tuple[str, ...]]] = [
    # exactly one of code / codeFrom
    ("code-and-codeFrom", _set("codeFrom", {"configMapKeyRef": {"name": "c", "key": "k"}}), MSG_ONE_OF),
    ("neither-code-nor-codeFrom", _set("code", None), MSG_ONE_OF),
    ("codeFrom-both-refs", _mutate(lambda s: (s.pop("code"), s.update(codeFrom={
        "configMapKeyRef": {"name": "c", "key": "k"}, "secretKeyRef": {"name": "s", "key": "k"}}))),
     "codeFrom needs exactly one of configMapKeyRef or secretKeyRef"),
    ("codeFrom-no-ref", _mutate(lambda s: (s.pop("code"), s.update(codeFrom={}))),
     "codeFrom needs exactly one of configMapKeyRef or secretKeyRef"),
    ("codeFrom-ref-without-key", _mutate(lambda s: (s.pop("code"), s.update(codeFrom={
        "configMapKeyRef": {"name": "c"}}))), 'spec.codeFrom.configMapKeyRef.key: Required value'),
    # the shebang
    ("code-empty", _set("code", ""), MSG_SHEBANG),
    ("code-without-shebang", _set("code", "redis.register_function('f', function() return 1 end)\n"), MSG_SHEBANG),
    ("code-leading-space", _set("code", " #!lua name=mylib\n"), MSG_SHEBANG),
    ("code-other-engine", _set("code", "#!js name=mylib\n"), MSG_SHEBANG),
    ("code-engine-prefix-only", _set("code", "#!luajit name=mylib\n"), MSG_NAMED),
    ("code-no-name", _set("code", "#!lua\nreturn 1\n"), MSG_NAMED),
    ("code-no-newline", _set("code", "#!lua name=mylib"), MSG_NAMED),
    ("code-bad-name", _set("code", "#!lua name=my-lib\nreturn 1\n"), MSG_NAMED),
    ("code-name-glued", _set("code", "#!lua xname=mylib\nreturn 1\n"), MSG_NAMED),
    ("code-name-on-second-line", _set("code", "#!lua\n-- name=mylib\nreturn 1\n"), MSG_NAMED),
    # libraryName
    ("libraryName-mismatch", _set("libraryName", "otherlib"), MSG_LIBNAME),
    ("libraryName-suffix-only", _set("libraryName", "lib"), MSG_LIBNAME),
    # (no shebang can carry that name, so the match rule fires too — both messages are true)
    ("libraryName-bad-chars", _set("libraryName", "my-lib"),
     ("spec.libraryName in body should match '^[A-Za-z0-9_]+$'", MSG_LIBNAME)),
    ("libraryName-too-long", _set("libraryName", "x" * 257), "spec.libraryName: Too long"),
    ("version-too-long", _set("version", "v" * 257), "spec.version: Too long"),
    # target
    ("target-missing", _set("target", None), "spec.target: Required value"),
    ("endpoints-missing", _set("target.endpoints", None), "spec.target.endpoints: Required value"),
    ("endpoints-empty", _set("target.endpoints", []), "spec.target.endpoints in body should have at least 1 items"),
    ("endpoints-too-many", _set("target.endpoints", [f"r-{i}:6379" for i in range(65)]), "must have at most 64 items"),
    ("endpoint-duplicate", _set("target.endpoints", ["r:6379", "r:6379"]), "spec.target.endpoints[1]: Duplicate value"),
    ("endpoint-no-port", _set("target.endpoints", ["redis"]), MSG_ENDPOINT),
    ("endpoint-url", _set("target.endpoints", ["redis://r:6379"]), MSG_ENDPOINT),
    ("endpoint-port-0", _set("target.endpoints", ["r:0"]), MSG_ENDPOINT),
    ("endpoint-port-too-big", _set("target.endpoints", ["r:65536"]), MSG_ENDPOINT),
    ("endpoint-bare-ipv6", _set("target.endpoints", ["::1:6379"]), MSG_ENDPOINT),
    ("endpoint-space", _set("target.endpoints", ["r 1:6379"]), MSG_ENDPOINT),
    ("mode-unknown", _set("target.mode", "replica"), 'spec.target.mode: Unsupported value: "replica"'),
    ("sentinel-without-masterName", _set("target.mode", "sentinel"),
     "target.mode sentinel needs target.sentinel.masterName"),
    ("sentinel-empty", _mutate(lambda s: s["target"].update(mode="sentinel", sentinel={})),
     "spec.target.sentinel.masterName: Required value"),
    ("sentinel-with-cluster-mode", _mutate(lambda s: s["target"].update(mode="cluster", sentinel={"masterName": "m"})),
     "target.sentinel is only used with target.mode sentinel or auto"),
    ("auth-without-secretRef", _set("target.auth", {}), "spec.target.auth.secretRef: Required value"),
    ("auth-secretRef-without-name", _set("target.auth", {"secretRef": {"passwordKey": "p"}}),
     "spec.target.auth.secretRef.name: Required value"),
    ("tls-settings-without-enabled", _set("target.tls", {"caSecretRef": {"name": "ca"}}),
     "target.tls settings need target.tls.enabled set to true"),
    ("tls-skip-verify-without-enabled", _set("target.tls", {"insecureSkipVerify": True}),
     "target.tls settings need target.tls.enabled set to true"),
    # deletionPolicy, resyncInterval
    ("deletionPolicy-unknown", _set("deletionPolicy", "Orphan"), 'spec.deletionPolicy: Unsupported value: "Orphan"'),
    # driftPolicy, managementPolicy: enums, matched case-sensitively as the operator reads them
    ("driftPolicy-unknown", _set("driftPolicy", "Ignore"), 'spec.driftPolicy: Unsupported value: "Ignore"'),
    ("driftPolicy-lowercase", _set("driftPolicy", "report"), 'spec.driftPolicy: Unsupported value: "report"'),
    ("managementPolicy-unknown", _set("managementPolicy", "ObserveOnly"),
     'spec.managementPolicy: Unsupported value: "ObserveOnly"'),
    ("managementPolicy-list", _set("managementPolicy", ["Observe"]),  # Crossplane's spelling: one value here
     ('spec.managementPolicy in body must be of type string: "array"', 'supported values: "Full", "Observe"')),
    ("resync-words", _set("resyncInterval", "1 minute"), MSG_DURATION),
    ("resync-no-unit", _set("resyncInterval", "60"), MSG_DURATION),
    ("resync-negative", _set("resyncInterval", "-5s"), MSG_DURATION),
    ("resync-days", _set("resyncInterval", "1d"), MSG_DURATION),
    ("resync-overflow", _set("resyncInterval", "999999999999h"), MSG_DURATION),
    ("resync-too-short", _set("resyncInterval", "4s"), MSG_DURATION_RANGE),
    ("resync-too-short-ms", _set("resyncInterval", "4999ms"), MSG_DURATION_RANGE),
    ("resync-too-long", _set("resyncInterval", "24h1s"), MSG_DURATION_RANGE),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "message"), REJECTED, ids=[c for c, _, _ in REJECTED])
def test_each_rule_rejects_with_its_message(
    control_plane: ControlPlane,
    namespace: str,
    case: str,
    mutate: Callable[[Obj], Obj],
    message: str | tuple[str, ...],
) -> None:
    proc = apply(control_plane, mutate(rfl(case.lower(), libraryName="mylib")), namespace)
    assert proc.returncode != 0, f"accepted: {case}"
    errors = validation_errors(proc.stderr)
    expected = (message,) if isinstance(message, str) else message
    # Exactly the rule(s) under test fire, each with its message: no collateral errors.
    assert len(errors) == len(expected), errors
    for msg in expected:
        assert any(msg in error for error in errors), (msg, errors)


# ---- libraryName: may be added (if it matches), never changed or removed --------------------------------------------
MSG_IMMUTABLE = "libraryName cannot be changed or removed once set; create a new object for another library"


def test_library_name_is_immutable_once_set(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    apply(cp, rfl("immutable", libraryName="mylib"), namespace, check=True)

    renamed = rfl("immutable", libraryName="other", code=lua(name="other"))
    proc = apply(cp, renamed, namespace)
    assert proc.returncode != 0
    assert MSG_IMMUTABLE in proc.stderr, proc.stderr

    patch = '[{"op": "remove", "path": "/spec/libraryName"}]'
    proc = cp.kubectl("patch", "rfl", "immutable", "-n", namespace, "--type=json", "-p", patch, check=False)
    assert proc.returncode != 0
    assert MSG_IMMUTABLE in proc.stderr, proc.stderr

    # A new version of the same library is an ordinary update.
    apply(cp, rfl("immutable", libraryName="mylib", code=lua("return 2"), version="2"), namespace, check=True)
    obj = get(cp, "immutable", namespace)
    assert obj["spec"]["libraryName"] == "mylib"
    assert obj["metadata"]["generation"] == 2


def test_library_name_can_be_added_later_only_if_it_matches(control_plane: ControlPlane, namespace: str) -> None:
    """Decision: adding libraryName to an object that had none is allowed — it only pins the name the shebang
    already gives (a mismatch is refused by the match rule). After that it is immutable."""
    cp = control_plane
    apply(cp, rfl("late"), namespace, check=True)

    proc = cp.kubectl(
        "patch", "rfl", "late", "-n", namespace, "--type=merge", "-p", '{"spec": {"libraryName": "wrong"}}', check=False
    )
    assert proc.returncode != 0
    assert MSG_LIBNAME in proc.stderr, proc.stderr

    cp.kubectl("patch", "rfl", "late", "-n", namespace, "--type=merge", "-p", '{"spec": {"libraryName": "mylib"}}')
    assert get(cp, "late", namespace)["spec"]["libraryName"] == "mylib"

    proc = cp.kubectl(
        "patch", "rfl", "late", "-n", namespace, "--type=merge", "-p", '{"spec": {"libraryName": null}}', check=False
    )
    assert proc.returncode != 0
    assert MSG_IMMUTABLE in proc.stderr, proc.stderr


def test_shebang_name_may_change_without_library_name(control_plane: ControlPlane, namespace: str) -> None:
    """Without libraryName the name comes from the code and may change (the operator handles the rename)."""
    apply(control_plane, rfl("rename"), namespace, check=True)
    apply(control_plane, rfl("rename", code=lua(name="renamed")), namespace, check=True)


# ---- status: declared fields survive, undeclared are pruned; printer columns ----------------------------------------
FULL_STATUS: Obj = {
    "observedGeneration": 1,
    "conditions": [
        {"type": "Ready", "status": "True", "observedGeneration": 1, "reason": "Synced",
         "message": "mylib loaded on 3/3 primaries", "lastTransitionTime": "2026-01-02T03:04:05Z"},
        {"type": "Reconciling", "status": "False", "observedGeneration": 1, "reason": "Synced", "message": "",
         "lastTransitionTime": "2026-01-02T03:04:05Z"},
        {"type": "Stalled", "status": "False", "observedGeneration": 1, "reason": "Synced", "message": "",
         "lastTransitionTime": "2026-01-02T03:04:05Z"},
        {"type": "ReconciliationPaused", "status": "False", "observedGeneration": 1, "reason": "NotPaused",
         "message": "", "lastTransitionTime": "2026-01-02T03:04:05Z"},
    ],
    "libraryName": "mylib",
    "version": "1.0.0",
    "codeSha256": "a" * 64,
    "functions": [{"name": "hello", "flags": ["no-writes"]}, {"name": "bye", "flags": []}],
    "readyPrimaries": "3/3",
    "nodes": [
        {"address": "10.0.0.1:6379", "role": "primary", "shard": "0", "slots": "0-5460", "codeSha256": "a" * 64,
         "state": "Verified", "error": ""},
        {"address": "10.0.0.2:6379", "role": "primary", "shard": 1, "slots": "5461-10922", "codeSha256": "",
         "state": "Unreachable", "error": "connection refused"},
    ],
    "lastSyncTime": "2026-01-02T03:04:05Z",
    "lastHandledReconcileAt": "2026-01-02T03:00:00Z",
    "message": "mylib 1.0.0 on 3/3 primaries",
}  # fmt: skip


def test_status_keeps_every_operator_field_and_prunes_others(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    apply(cp, rfl("status", version="1.0.0"), namespace, check=True)
    patch = json.dumps({"status": {**FULL_STATUS, "kopf": {"progress": {}}, "undeclared": 1}})
    cp.kubectl("patch", "rfl", "status", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    assert get(cp, "status", namespace)["status"] == FULL_STATUS

    headers = cp.kubectl("get", "rfl", "status", "-n", namespace).stdout.splitlines()
    assert headers[0].split() == ["NAME", "LIBRARY", "VERSION", "READY", "PRIMARIES", "REASON", "AGE"]
    assert headers[1].split()[:6] == ["status", "mylib", "1.0.0", "True", "3/3", "Synced"]
    wide = cp.kubectl("get", "rfl", "status", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["MODE", "ENDPOINTS", "MESSAGE"]
    assert "auto" in wide[1].split()
    assert "mylib loaded on 3/3 primaries" in wide[1]


def test_condition_needs_type_and_status(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    apply(cp, rfl("cond"), namespace, check=True)
    patch = json.dumps({"status": {"conditions": [{"type": "Ready"}]}})
    proc = cp.kubectl(
        "patch", "rfl", "cond", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch, check=False
    )
    assert proc.returncode != 0
    assert "status.conditions[0].status: Required value" in proc.stderr, proc.stderr


def test_short_name_and_category_list_with_columns(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    apply(cp, rfl("listed", version="7"), namespace, check=True)
    by_short = cp.kubectl("get", "rfl", "-n", namespace).stdout.splitlines()
    assert by_short[0].split() == ["NAME", "LIBRARY", "VERSION", "READY", "PRIMARIES", "REASON", "AGE"]
    assert by_short[1].split()[:2] == ["listed", "7"]  # no status yet: empty LIBRARY/READY/... columns

    by_category = cp.kubectl("get", "redis", "-n", namespace).stdout.splitlines()
    assert by_category[0].split() == ["NAME", "LIBRARY", "VERSION", "READY", "PRIMARIES", "REASON", "AGE"]
    assert by_category[1].split()[0] == "listed"  # kubectl prefixes kind/ only when several kinds are listed


# ---- sizes -----------------------------------------------------------------------------------------------------------
def big_code(size: int) -> str:
    """A syntactically valid library of exactly ``size`` characters (ASCII)."""
    head = "#!lua name=biglib\nredis.register_function('big', function() return 1 end)\n"
    filler = size - len(head)
    lines, rest = divmod(filler, 64)
    body = ("--" + "x" * 61 + "\n") * lines + "-" * rest
    code = head + body
    assert len(code) == size
    return code


@pytest.mark.slow
def test_500k_library_needs_server_side_apply(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    obj = rfl("big", code=big_code(500 * 1024), libraryName="biglib")

    # Client-side apply copies the whole object into the last-applied-configuration annotation, and annotations
    # are limited to 256 KiB in total.
    proc = apply(cp, obj, namespace)
    assert proc.returncode != 0
    assert "metadata.annotations: Too long" in proc.stderr, proc.stderr

    proc = apply(cp, obj, namespace, server_side=True)
    assert proc.returncode == 0, proc.stderr
    stored = get(cp, "big", namespace)
    assert len(stored["spec"]["code"]) == 500 * 1024
    # Updating it server-side works too (CEL rules re-run on the new 500 KiB value, within the cost budget).
    obj["spec"]["version"] = "2"
    apply(cp, obj, namespace, server_side=True, check=True)


@pytest.mark.slow
def test_code_limit_is_one_mebibyte(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    # Exactly 1 MiB is accepted: the CEL rules on code stay within the runtime cost budget at the maximum size.
    apply(cp, rfl("max", code=big_code(MAX_CODE), libraryName="biglib"), namespace, server_side=True, check=True)

    proc = apply(cp, rfl("over", code=big_code(MAX_CODE + 1)), namespace, server_side=True)
    assert proc.returncode != 0
    assert validation_errors(proc.stderr) == ["spec.code: Too long: may not be more than 1048576 bytes"]


@pytest.mark.slow
def test_code_limit_counts_utf8_bytes(control_plane: ControlPlane, namespace: str) -> None:
    """OpenAPI maxLength counts characters; a CEL rule bounds the UTF-8 bytes too. Without it, 1 Mi two-byte
    characters would pass validation and then fail at the etcd client ("rpc error: code = ResourceExhausted")."""
    cp = control_plane
    head = "#!lua name=mylib\n"
    at_limit = head + "é" * ((MAX_CODE - len(head)) // 2)  # 1048575 bytes
    apply(cp, rfl("utf8-max", code=at_limit), namespace, server_side=True, check=True)

    over = head + "é" * 600_000  # 600017 characters, 1200017 bytes
    proc = apply(cp, rfl("utf8-over", code=over), namespace, server_side=True)
    assert proc.returncode != 0
    assert validation_errors(proc.stderr) == [
        "spec.code: Invalid value: code must be at most 1 MiB (1048576 bytes of UTF-8)"
    ]


@pytest.mark.slow
def test_errors_about_a_large_code_do_not_echo_it(control_plane: ControlPlane, namespace: str) -> None:
    """The rules about code are attached at spec level (fieldPath .code): a rule on the string itself would print
    the whole value — here 300 KiB — in the error."""
    proc = apply(control_plane, rfl("noecho", code="x" + big_code(300 * 1024)), namespace, server_side=True)
    assert proc.returncode != 0
    assert len(proc.stderr) < 1000, proc.stderr[:2000]
    assert validation_errors(proc.stderr) == [f"spec.code: Invalid value: {MSG_SHEBANG}"]
