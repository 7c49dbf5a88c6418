"""A RedisFunctionLibrary object (plain dicts, as the API server returns it) → typed engine inputs.

The CRD's schema and CEL rules already refuse most bad input at ``kubectl apply`` time; this module still checks
everything it relies on, because objects can predate a schema change and because a clear ``Stalled`` condition is
better than a crash when they do. Secrets and ConfigMaps are only *named* here; reading them is I/O (k8s layer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from redis_functions_operator.library.failure import Refused
from redis_functions_operator.library.probes import Probe, ProbeError, parse_probes
from redis_functions_operator.redis.connect import Endpoint, Mode

ANNOTATION_PREFIX = "redisfunctions.dev/"
PAUSE_ANNOTATION = ANNOTATION_PREFIX + "pause-reconciliation"
MANAGED_ANNOTATION = ANNOTATION_PREFIX + "managed"
RECONCILE_REQUEST_ANNOTATION = ANNOTATION_PREFIX + "reconcile-requested-at"

DEFAULT_RESYNC_SECONDS = 60.0
MIN_RESYNC_SECONDS = 5.0
MAX_RESYNC_SECONDS = 24 * 3600.0


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


class DriftPolicy(StrEnum):
    """What a resync does about out-of-band drift (a FUNCTION FLUSH, a replaced or deleted library, a new empty
    primary): repair it (the default), or only report it until the spec changes or the user asks."""

    REPAIR = "Repair"
    REPORT = "Report"


class ManagementPolicy(StrEnum):
    """``Full``: the operator loads, repairs and (per deletionPolicy) deletes. ``Observe``: it only reads, to adopt
    a library loaded by hand: never a write to Redis, never a finalizer."""

    FULL = "Full"
    OBSERVE = "Observe"


class RefKind(StrEnum):
    CONFIG_MAP = "ConfigMap"
    SECRET = "Secret"


@dataclass(frozen=True)
class KeyRef:
    kind: RefKind
    name: str
    key: str

    def describe(self) -> str:
        return f"{self.kind.value} {self.name!r} key {self.key!r}"


@dataclass(frozen=True)
class AuthRef:
    secret: str
    username_key: str | None
    password_key: str


@dataclass(frozen=True)
class TlsSpec:
    ca: KeyRef | None
    client_cert_secret: str | None  # a kubernetes.io/tls Secret: tls.crt + tls.key
    server_name: str | None
    insecure_skip_verify: bool


@dataclass(frozen=True)
class LibrarySpec:
    code: str | None
    code_from: KeyRef | None
    library_name: str | None
    version: str | None
    endpoints: tuple[Endpoint, ...]
    mode: Mode
    sentinel_master: str | None
    auth: AuthRef | None
    tls: TlsSpec | None
    deletion_policy: DeletionPolicy
    resync_seconds: float
    drift_policy: DriftPolicy = DriftPolicy.REPAIR
    management_policy: ManagementPolicy = ManagementPolicy.FULL
    tests: tuple[Probe, ...] = ()  # smoke tests run on the canary after it loads a new code version
    test_key_prefix: str | None = None

    def references(self) -> frozenset[tuple[RefKind, str]]:
        """Every Secret/ConfigMap this spec reads: a change to one of them is a reason to reconcile."""
        refs: set[tuple[RefKind, str]] = set()
        if self.code_from:
            refs.add((self.code_from.kind, self.code_from.name))
        if self.auth:
            refs.add((RefKind.SECRET, self.auth.secret))
        if self.tls and self.tls.ca:
            refs.add((self.tls.ca.kind, self.tls.ca.name))
        if self.tls and self.tls.client_cert_secret:
            refs.add((RefKind.SECRET, self.tls.client_cert_secret))
        return frozenset(refs)


@dataclass(frozen=True)
class Controls:
    """What the user asks through annotations."""

    paused: bool = False
    managed: bool = True
    reconcile_requested_at: str | None = None


#: The reason of a SpecError that parse_spec raises.
INVALID_SPEC = "InvalidSpec"


class SpecError(Refused, ValueError):
    """A spec the operator cannot act on: its :class:`Failure` says why (a PascalCase condition reason, most often
    ``InvalidSpec``) and what."""


def parse_controls(annotations: Mapping[str, str] | None) -> Controls:
    annotations = annotations or {}
    return Controls(
        paused=str(annotations.get(PAUSE_ANNOTATION, "")).strip().lower() == "true",
        managed=str(annotations.get(MANAGED_ANNOTATION, "")).strip().lower() != "false",
        reconcile_requested_at=annotations.get(RECONCILE_REQUEST_ANNOTATION),
    )


def parse_spec(spec: Mapping[str, Any]) -> LibrarySpec:
    code = spec.get("code")
    code_from = _parse_code_from(spec.get("codeFrom"))
    if (code is None) == (code_from is None):
        raise SpecError(INVALID_SPEC, "exactly one of spec.code and spec.codeFrom must be set")
    if code is not None and not isinstance(code, str):
        raise SpecError(INVALID_SPEC, "spec.code must be a string")
    target = spec.get("target")
    if not isinstance(target, Mapping):
        raise SpecError(INVALID_SPEC, "spec.target is required")
    endpoints = _parse_endpoints(target.get("endpoints"))
    try:
        mode = Mode(target.get("mode") or Mode.AUTO.value)
    except ValueError:
        modes = ", ".join(m.value for m in Mode)
        raise SpecError(INVALID_SPEC, f"spec.target.mode {target.get('mode')!r} is not one of {modes}") from None
    sentinel = _object(target.get("sentinel"), "spec.target.sentinel")
    sentinel_master = sentinel.get("masterName") or None
    if mode is Mode.AUTO and sentinel_master:
        mode = Mode.SENTINEL  # auto + a master name: the endpoints are sentinels
    if mode is Mode.SENTINEL and not sentinel_master:
        raise SpecError(INVALID_SPEC, "spec.target.sentinel.masterName is required with mode sentinel")
    try:
        policy = DeletionPolicy(spec.get("deletionPolicy") or DeletionPolicy.DELETE.value)
    except ValueError:
        raise SpecError(
            INVALID_SPEC, f"spec.deletionPolicy {spec.get('deletionPolicy')!r} is not Delete or Retain"
        ) from None
    drift_policy = _enum(DriftPolicy, spec.get("driftPolicy"), "spec.driftPolicy")
    management_policy = _enum(ManagementPolicy, spec.get("managementPolicy"), "spec.managementPolicy")
    test_key_prefix = _optional_text(spec.get("testKeyPrefix"))
    try:
        tests = parse_probes(spec.get("tests"), test_key_prefix)
    except ProbeError as exc:
        raise SpecError(INVALID_SPEC, str(exc)) from None
    return LibrarySpec(
        code=code,
        code_from=code_from,
        library_name=spec.get("libraryName") or None,
        version=_optional_text(spec.get("version")),
        endpoints=endpoints,
        mode=mode,
        sentinel_master=sentinel_master,
        auth=_parse_auth(target.get("auth")),
        tls=_parse_tls(target.get("tls")),
        deletion_policy=policy,
        resync_seconds=_parse_resync(spec.get("resyncInterval")),
        drift_policy=drift_policy,
        management_policy=management_policy,
        tests=tests,
        test_key_prefix=test_key_prefix,
    )


_Policy = TypeVar("_Policy", DriftPolicy, ManagementPolicy)


def _enum(kind: type[_Policy], value: Any, where: str) -> _Policy:
    """``value`` as one of ``kind``'s values; absent or empty means the first (the default)."""
    if value in (None, ""):
        return next(iter(kind))
    try:
        return kind(value)
    except ValueError:
        choices = " or ".join(member.value for member in kind)
        raise SpecError(INVALID_SPEC, f"{where} {value!r} is not {choices}") from None


def _parse_code_from(value: Any) -> KeyRef | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise SpecError(INVALID_SPEC, "spec.codeFrom must be an object")
    refs = [(RefKind.CONFIG_MAP, value.get("configMapKeyRef")), (RefKind.SECRET, value.get("secretKeyRef"))]
    given = [(kind, ref) for kind, ref in refs if ref]
    if len(given) != 1:
        raise SpecError(INVALID_SPEC, "spec.codeFrom needs exactly one of configMapKeyRef and secretKeyRef")
    kind, raw = given[0]
    ref = _object(raw, f"spec.codeFrom {kind.value} reference")
    if not ref.get("name") or not ref.get("key"):
        raise SpecError(INVALID_SPEC, f"spec.codeFrom {kind.value} reference needs name and key")
    return KeyRef(kind, str(ref["name"]), str(ref["key"]))


def _parse_endpoints(value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(INVALID_SPEC, "spec.target.endpoints needs at least one host:port")
    endpoints = []
    for item in value:
        try:
            endpoints.append(Endpoint.parse(str(item)))
        except ValueError as exc:
            raise SpecError(INVALID_SPEC, f"spec.target.endpoints: {exc}") from None
    return tuple(endpoints)


def _parse_auth(value: Any) -> AuthRef | None:
    if not value:
        return None
    ref = _object(_object(value, "spec.target.auth").get("secretRef"), "spec.target.auth.secretRef")
    if not ref.get("name"):
        raise SpecError(INVALID_SPEC, "spec.target.auth.secretRef.name is required")
    return AuthRef(str(ref["name"]), ref.get("usernameKey") or None, str(ref.get("passwordKey") or "password"))


def _parse_tls(value: Any) -> TlsSpec | None:
    tls = _object(value, "spec.target.tls")
    if not tls.get("enabled"):
        return None
    ca = None
    if tls.get("caSecretRef"):
        ca_ref = _named(tls["caSecretRef"], "spec.target.tls.caSecretRef")
        ca = KeyRef(RefKind.SECRET, str(ca_ref["name"]), str(ca_ref.get("key") or "ca.crt"))
    cert_ref = (
        _named(tls["clientCertSecretRef"], "spec.target.tls.clientCertSecretRef")
        if tls.get("clientCertSecretRef")
        else None
    )
    return TlsSpec(
        ca=ca,
        client_cert_secret=str(cert_ref["name"]) if cert_ref else None,
        server_name=tls.get("serverName") or None,
        insecure_skip_verify=bool(tls.get("insecureSkipVerify", False)),
    )


def _object(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` as an object ({} when absent); a wrongly shaped value is a SpecError, never a crash."""
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(INVALID_SPEC, f"{where} must be an object")
    return value


def _named(value: Any, where: str) -> Mapping[str, Any]:
    ref = _object(value, where)
    if not ref.get("name"):
        raise SpecError(INVALID_SPEC, f"{where}.name is required")
    return ref


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go-style duration (``90s``, ``1m30s``, ``1.5h``, ``500ms``) in seconds."""
    value = text.strip()
    if not value or _DURATION_PART.sub("", value):
        raise SpecError(INVALID_SPEC, f"{text!r} is not a duration like 60s, 5m or 1h30m")
    total = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    return round(total, 6)  # "23.989h0.66m" is exactly 24h to the CRD's CEL rule; float sums drift past it


def _parse_resync(value: Any) -> float:
    if value in (None, ""):
        return DEFAULT_RESYNC_SECONDS
    seconds = parse_duration(str(value))
    if not MIN_RESYNC_SECONDS <= seconds <= MAX_RESYNC_SECONDS:
        raise SpecError(INVALID_SPEC, f"spec.resyncInterval {value!r} must be between 5s and 24h")
    return seconds


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)
