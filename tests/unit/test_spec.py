"""``reconcile/spec.py``: a RedisFunctionLibrary's spec and annotations → typed engine inputs, or a readable
``SpecError`` (which becomes a Stalled condition, never a crash)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from redis_functions_operator.reconcile.spec import (
    DEFAULT_RESYNC_SECONDS,
    MANAGED_ANNOTATION,
    MAX_RESYNC_SECONDS,
    MIN_RESYNC_SECONDS,
    PAUSE_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION,
    AuthRef,
    Controls,
    DeletionPolicy,
    KeyRef,
    RefKind,
    SpecError,
    TlsSpec,
    parse_controls,
    parse_duration,
    parse_spec,
)
from redis_functions_operator.redis.connect import Endpoint, Mode

CODE = "#!lua name=mylib\nredis.register_function('f1', function() return 1 end)\n"

MINIMAL: dict[str, Any] = {"code": CODE, "target": {"endpoints": ["redis:6379"]}}

FULL: dict[str, Any] = {
    "codeFrom": {"configMapKeyRef": {"name": "lib-src", "key": "mylib.lua"}},
    "libraryName": "mylib",
    "version": "1.4.0",
    "target": {
        "endpoints": ["sentinel-0.sentinel:26379", "[fd00::1]:26379", "10.0.0.7:26379"],
        "mode": "sentinel",
        "sentinel": {"masterName": "mymaster"},
        "auth": {"secretRef": {"name": "redis-auth", "usernameKey": "user", "passwordKey": "pass"}},
        "tls": {
            "enabled": True,
            "caSecretRef": {"name": "redis-ca", "key": "bundle.pem"},
            "clientCertSecretRef": {"name": "redis-client"},
            "serverName": "redis.internal",
            "insecureSkipVerify": False,
        },
    },
    "deletionPolicy": "Retain",
    "resyncInterval": "1m30s",
}


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted paths set (value ``...`` deletes the key)."""
    spec = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


# --- parse_spec: valid input ----------------------------------------------------------------------------------------


def test_minimal_spec_gets_the_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.code == CODE
    assert spec.code_from is None
    assert spec.library_name is None
    assert spec.version is None
    assert spec.endpoints == (Endpoint("redis", 6379),)
    assert spec.mode is Mode.AUTO
    assert spec.sentinel_master is None
    assert spec.auth is None
    assert spec.tls is None
    assert spec.deletion_policy is DeletionPolicy.DELETE
    assert spec.resync_seconds == DEFAULT_RESYNC_SECONDS == 60.0
    assert spec.references() == frozenset()


def test_full_spec() -> None:
    spec = parse_spec(FULL)
    assert spec.code is None
    assert spec.code_from == KeyRef(RefKind.CONFIG_MAP, "lib-src", "mylib.lua")
    assert spec.library_name == "mylib"
    assert spec.version == "1.4.0"
    assert spec.endpoints == (
        Endpoint("sentinel-0.sentinel", 26379),
        Endpoint("fd00::1", 26379),
        Endpoint("10.0.0.7", 26379),
    )
    assert spec.mode is Mode.SENTINEL
    assert spec.sentinel_master == "mymaster"
    assert spec.auth == AuthRef("redis-auth", "user", "pass")
    assert spec.tls == TlsSpec(
        ca=KeyRef(RefKind.SECRET, "redis-ca", "bundle.pem"),
        client_cert_secret="redis-client",
        server_name="redis.internal",
        insecure_skip_verify=False,
    )
    assert spec.deletion_policy is DeletionPolicy.RETAIN
    assert spec.resync_seconds == 90.0


def test_full_spec_as_the_api_server_defaults_it() -> None:
    # CRD defaults: mode auto, deletionPolicy Delete, resyncInterval 60s, passwordKey password, tls.enabled false
    spec = parse_spec(
        {
            "code": CODE,
            "deletionPolicy": "Delete",
            "resyncInterval": "60s",
            "target": {
                "endpoints": ["redis:6379"],
                "mode": "auto",
                "auth": {"secretRef": {"name": "auth", "passwordKey": "password"}},
                "tls": {"enabled": False, "insecureSkipVerify": False},
            },
        }
    )
    assert spec.mode is Mode.AUTO
    assert spec.auth == AuthRef("auth", None, "password")
    assert spec.tls is None
    assert spec.resync_seconds == 60.0


def test_spec_from_a_secret() -> None:
    spec = parse_spec(with_changes(MINIMAL, code=..., codeFrom={"secretKeyRef": {"name": "s", "key": "k"}}))
    assert spec.code_from == KeyRef(RefKind.SECRET, "s", "k")
    assert spec.code_from.describe() == "Secret 's' key 'k'"


def test_auth_defaults_to_password_key_and_no_username() -> None:
    spec = parse_spec(with_changes(MINIMAL, target__auth={"secretRef": {"name": "auth"}}))
    assert spec.auth == AuthRef("auth", None, "password")


def test_tls_defaults() -> None:
    spec = parse_spec(with_changes(MINIMAL, target__tls={"enabled": True, "caSecretRef": {"name": "ca"}}))
    assert spec.tls == TlsSpec(KeyRef(RefKind.SECRET, "ca", "ca.crt"), None, None, False)
    bare = parse_spec(with_changes(MINIMAL, target__tls={"enabled": True}))
    assert bare.tls == TlsSpec(None, None, None, False)
    skip = parse_spec(with_changes(MINIMAL, target__tls={"enabled": True, "insecureSkipVerify": True}))
    assert skip.tls is not None and skip.tls.insecure_skip_verify


def test_tls_settings_ignored_unless_enabled() -> None:
    spec = parse_spec(with_changes(MINIMAL, target__tls={"enabled": False, "caSecretRef": {"name": "ca"}}))
    assert spec.tls is None
    assert spec.references() == frozenset()


@pytest.mark.parametrize("mode", ["auto", "standalone", "cluster"])
def test_modes(mode: str) -> None:
    assert parse_spec(with_changes(MINIMAL, target__mode=mode)).mode is Mode(mode)


def test_version_is_text() -> None:
    assert parse_spec(with_changes(MINIMAL, version="")).version == ""
    assert parse_spec(with_changes(MINIMAL, version=2)).version == "2"


def test_parse_spec_does_not_mutate_its_input() -> None:
    spec = copy.deepcopy(FULL)
    parse_spec(spec)
    assert spec == FULL


def test_auto_mode_with_a_sentinel_master_discovers_through_sentinel() -> None:
    spec = parse_spec(with_changes(MINIMAL, target__sentinel={"masterName": "mymaster"}))
    assert spec.sentinel_master == "mymaster"
    assert spec.mode is Mode.SENTINEL


# --- parse_spec: SpecError cases ----------------------------------------------------------------------------------

SPEC_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("no code at all", with_changes(MINIMAL, code=...), "exactly one of spec.code and spec.codeFrom must be set"),
    (
        "code and codeFrom",
        with_changes(MINIMAL, codeFrom={"configMapKeyRef": {"name": "a", "key": "b"}}),
        "exactly one of spec.code and spec.codeFrom must be set",
    ),
    ("code not a string", with_changes(MINIMAL, code=123), "spec.code must be a string"),
    ("codeFrom not an object", with_changes(MINIMAL, code=..., codeFrom="cm/key"), "spec.codeFrom must be an object"),
    (
        "codeFrom with neither ref",
        with_changes(MINIMAL, code=..., codeFrom={"other": {}}),
        "spec.codeFrom needs exactly one of configMapKeyRef and secretKeyRef",
    ),
    (
        "codeFrom with both refs",
        with_changes(
            MINIMAL,
            code=...,
            codeFrom={"configMapKeyRef": {"name": "a", "key": "b"}, "secretKeyRef": {"name": "a", "key": "b"}},
        ),
        "spec.codeFrom needs exactly one of configMapKeyRef and secretKeyRef",
    ),
    (
        "configMapKeyRef without key",
        with_changes(MINIMAL, code=..., codeFrom={"configMapKeyRef": {"name": "a"}}),
        "spec.codeFrom ConfigMap reference needs name and key",
    ),
    (
        "secretKeyRef without name",
        with_changes(MINIMAL, code=..., codeFrom={"secretKeyRef": {"key": "k"}}),
        "spec.codeFrom Secret reference needs name and key",
    ),
    ("no target", with_changes(MINIMAL, target=...), "spec.target is required"),
    ("target not an object", with_changes(MINIMAL, target=["redis:6379"]), "spec.target is required"),
    (
        "no endpoints",
        with_changes(MINIMAL, target__endpoints=...),
        "spec.target.endpoints needs at least one host:port",
    ),
    (
        "empty endpoints",
        with_changes(MINIMAL, target__endpoints=[]),
        "spec.target.endpoints needs at least one host:port",
    ),
    (
        "endpoints not a list",
        with_changes(MINIMAL, target__endpoints="redis:6379"),
        "spec.target.endpoints needs at least one host:port",
    ),
    (
        "endpoint port not a number",
        with_changes(MINIMAL, target__endpoints=["redis:http"]),
        "spec.target.endpoints: endpoint 'redis:http': port 'http' is not a number",
    ),
    (
        "endpoint port out of range",
        with_changes(MINIMAL, target__endpoints=["redis:70000"]),
        "spec.target.endpoints: endpoint 'redis:70000': port 70000 is out of range",
    ),
    ("endpoint without host", with_changes(MINIMAL, target__endpoints=[":6379"]), "endpoint ':6379' has no host"),
    ("empty endpoint", with_changes(MINIMAL, target__endpoints=["  "]), "spec.target.endpoints: empty endpoint"),
    (
        "unknown mode",
        with_changes(MINIMAL, target__mode="Cluster"),
        "spec.target.mode 'Cluster' is not one of auto, standalone, cluster, sentinel",
    ),
    (
        "sentinel without masterName",
        with_changes(MINIMAL, target__mode="sentinel"),
        "spec.target.sentinel.masterName is required with mode sentinel",
    ),
    (
        "sentinel with empty masterName",
        with_changes(MINIMAL, target__mode="sentinel", target__sentinel={"masterName": ""}),
        "spec.target.sentinel.masterName is required with mode sentinel",
    ),
    (
        "auth without secret name",
        with_changes(MINIMAL, target__auth={"secretRef": {"passwordKey": "p"}}),
        "spec.target.auth.secretRef.name is required",
    ),
    (
        "auth without secretRef",
        with_changes(MINIMAL, target__auth={"other": 1}),
        "spec.target.auth.secretRef.name is required",
    ),
    (
        "unknown deletionPolicy",
        with_changes(MINIMAL, deletionPolicy="delete"),
        "spec.deletionPolicy 'delete' is not Delete or Retain",
    ),
    (
        "resync not a duration",
        with_changes(MINIMAL, resyncInterval="often"),
        "'often' is not a duration like 60s, 5m or 1h30m",
    ),
    ("resync a bare number", with_changes(MINIMAL, resyncInterval=60), "'60' is not a duration like 60s, 5m or 1h30m"),
    (
        "resync too short",
        with_changes(MINIMAL, resyncInterval="4s"),
        "spec.resyncInterval '4s' must be between 5s and 24h",
    ),
    (
        "resync too long",
        with_changes(MINIMAL, resyncInterval="24h1s"),
        "spec.resyncInterval '24h1s' must be between 5s and 24h",
    ),
]


@pytest.mark.parametrize(("spec", "message"), [(s, m) for _, s, m in SPEC_ERRORS], ids=[i for i, _, _ in SPEC_ERRORS])
def test_spec_errors_have_a_readable_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert message in info.value.message
    assert str(info.value) == info.value.message
    assert info.value.reason == "InvalidSpec"
    assert CODE not in info.value.message  # never echo the library back


def test_spec_error_is_a_value_error_with_a_custom_reason() -> None:
    error = SpecError("SomethingElse", "boom")
    assert isinstance(error, ValueError)
    assert (error.message, error.reason) == ("boom", "SomethingElse")


# Objects can predate a schema change (the module promises "a clear Stalled condition is better than a crash");
# these wrong shapes are refused by today's CRD schema, but parse_spec must still answer with a SpecError.
MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("codeFrom ref not an object", with_changes(MINIMAL, code=..., codeFrom={"configMapKeyRef": "cm"})),
    ("sentinel not an object", with_changes(MINIMAL, target__sentinel="mymaster")),
    ("auth not an object", with_changes(MINIMAL, target__auth="redis-auth")),
    ("auth secretRef not an object", with_changes(MINIMAL, target__auth={"secretRef": "redis-auth"})),
    ("tls not an object", with_changes(MINIMAL, target__tls=True)),
    ("tls CA ref without name", with_changes(MINIMAL, target__tls={"enabled": True, "caSecretRef": {"key": "ca.pem"}})),
    (
        "tls client cert ref without name",
        with_changes(MINIMAL, target__tls={"enabled": True, "clientCertSecretRef": {"x": 1}}),
    ),
]


@pytest.mark.parametrize("spec", [s for _, s in MALFORMED], ids=[i for i, _ in MALFORMED])
def test_wrongly_shaped_objects_are_spec_errors_not_crashes(spec: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        parse_spec(spec)


# --- durations ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1m500ms", 60.5),
        ("2h3m4s5ms", 7384.005),
        ("0s", 0.0),
        ("0.25s", 0.25),
        (" 60s ", 60.0),
        ("24h", 86400.0),
        ("1s1s", 2.0),  # Go accepts repeated units too
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "60",
        "s",
        "1x",
        "-5s",
        "+5s",
        "1h 30m",
        "1.5",
        ".5s",
        "5.s",
        "60S",
        "1d",
        "5us",
        "1m30",
        "abc5s",
        "5s!",
    ],
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(SpecError, match="is not a duration like 60s, 5m or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("5000ms", 5.0), ("4900ms100ms", 5.0), ("24h", 86400.0), ("1440m", 86400.0), ("86400s", 86400.0)],
)
def test_resync_bounds_are_inclusive(text: str, seconds: float) -> None:
    assert parse_spec(with_changes(MINIMAL, resyncInterval=text)).resync_seconds == seconds


@pytest.mark.parametrize("text", ["4999ms", "0s", "1ms", "24h1ms", "1441m", "25h"])
def test_resync_out_of_bounds(text: str) -> None:
    with pytest.raises(SpecError, match=r"must be between 5s and 24h"):
        parse_spec(with_changes(MINIMAL, resyncInterval=text))


@pytest.mark.parametrize("value", [None, ""])
def test_resync_missing_is_the_default(value: str | None) -> None:
    assert parse_spec(with_changes(MINIMAL, resyncInterval=value)).resync_seconds == DEFAULT_RESYNC_SECONDS


def test_resync_bounds_constants() -> None:
    assert (MIN_RESYNC_SECONDS, MAX_RESYNC_SECONDS) == (5.0, 86400.0)


# --- references -----------------------------------------------------------------------------------------------------


def test_references_of_the_full_spec() -> None:
    assert parse_spec(FULL).references() == frozenset(
        {
            (RefKind.CONFIG_MAP, "lib-src"),
            (RefKind.SECRET, "redis-auth"),
            (RefKind.SECRET, "redis-ca"),
            (RefKind.SECRET, "redis-client"),
        }
    )


def test_references_deduplicate_one_secret_used_twice() -> None:
    spec = parse_spec(
        with_changes(
            MINIMAL,
            code=...,
            codeFrom={"secretKeyRef": {"name": "everything", "key": "lib.lua"}},
            target__auth={"secretRef": {"name": "everything"}},
            target__tls={
                "enabled": True,
                "caSecretRef": {"name": "everything"},
                "clientCertSecretRef": {"name": "everything"},
            },
        )
    )
    assert spec.references() == frozenset({(RefKind.SECRET, "everything")})


def test_a_configmap_and_a_secret_of_the_same_name_are_different_references() -> None:
    spec = parse_spec(
        with_changes(
            MINIMAL,
            code=...,
            codeFrom={"configMapKeyRef": {"name": "same", "key": "lib.lua"}},
            target__auth={"secretRef": {"name": "same"}},
        )
    )
    assert spec.references() == frozenset({(RefKind.CONFIG_MAP, "same"), (RefKind.SECRET, "same")})


def test_inline_code_references_nothing() -> None:
    assert parse_spec(MINIMAL).references() == frozenset()


# --- controls (annotations) -----------------------------------------------------------------------------------------


def test_annotation_names() -> None:
    assert PAUSE_ANNOTATION == "redisfunctions.dev/pause-reconciliation"
    assert MANAGED_ANNOTATION == "redisfunctions.dev/managed"
    assert RECONCILE_REQUEST_ANNOTATION == "redisfunctions.dev/reconcile-requested-at"


@pytest.mark.parametrize("annotations", [None, {}, {"unrelated/annotation": "true"}])
def test_no_annotations_is_the_default(annotations: dict[str, str] | None) -> None:
    assert parse_controls(annotations) == Controls(paused=False, managed=True, reconcile_requested_at=None)


@pytest.mark.parametrize(("value", "paused"), [("true", True), ("True", True), (" TRUE ", True), ("false", False),
                                               ("yes", False), ("1", False), ("", False)])  # fmt: skip
def test_pause_annotation(value: str, paused: bool) -> None:
    controls = parse_controls({PAUSE_ANNOTATION: value})
    assert controls.paused is paused
    assert controls.managed is True


@pytest.mark.parametrize(("value", "managed"), [("false", False), ("False", False), (" FALSE ", False), ("true", True),
                                                ("no", True), ("0", True), ("", True)])  # fmt: skip
def test_managed_annotation_only_false_opts_out(value: str, managed: bool) -> None:
    assert parse_controls({MANAGED_ANNOTATION: value}).managed is managed


def test_reconcile_request_annotation_is_echoed_verbatim() -> None:
    controls = parse_controls({RECONCILE_REQUEST_ANNOTATION: "2025-01-01T00:00:00.123Z"})
    assert controls.reconcile_requested_at == "2025-01-01T00:00:00.123Z"


def test_all_three_annotations_together() -> None:
    controls = parse_controls(
        {PAUSE_ANNOTATION: "true", MANAGED_ANNOTATION: "false", RECONCILE_REQUEST_ANNOTATION: "x"}
    )
    assert controls == Controls(paused=True, managed=False, reconcile_requested_at="x")
