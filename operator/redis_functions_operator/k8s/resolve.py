"""Turn a parsed spec into the engine's inputs by reading the Secrets and ConfigMaps it names.

A missing object or key is a *reference* failure: the object is Stalled with a message that says exactly which
Secret/ConfigMap and key, and it is retried soon and whenever that Secret/ConfigMap changes. Secret *values* never
leave this module except inside the :class:`Target` handed to the engine.

Client certificates must be files for Python's ssl module, so they are written once per content to a private
temporary directory (0700, files 0600) — under ``$TMPDIR``, which the chart mounts as an emptyDir so the root
filesystem can stay read-only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from redis_functions_operator.k8s.kube import Kube
from redis_functions_operator.library import Refused
from redis_functions_operator.reconcile.spec import KeyRef, LibrarySpec, RefKind
from redis_functions_operator.redis.connect import Credentials, Target, TlsSettings


class ResolveError(Refused):
    """A Secret, ConfigMap or key the spec names that is missing or unusable; permanent until someone creates or
    fixes it (a watch on it brings the object back)."""


@dataclass(frozen=True)
class Resolved:
    code: bytes
    target: Target


async def resolve(spec: LibrarySpec, namespace: str, kube: Kube, redis_timeout: float = 5.0) -> Resolved:
    code = spec.code.encode("utf-8") if spec.code is not None else await read_key(kube, namespace, spec.code_from)
    return Resolved(code, await resolve_target(spec, namespace, kube, redis_timeout))


async def resolve_target(spec: LibrarySpec, namespace: str, kube: Kube, redis_timeout: float = 5.0) -> Target:
    """Only what connecting needs (credentials, TLS): deleting a library must not depend on its codeFrom
    ConfigMap, which helm uninstall or a GitOps prune removes together with the object."""
    credentials = None
    if spec.auth is not None:
        data = await _secret(kube, namespace, spec.auth.secret)
        password = _key(data, spec.auth.password_key, f"Secret {spec.auth.secret!r}")
        username = None
        if spec.auth.username_key:
            username = _text(
                _key(data, spec.auth.username_key, f"Secret {spec.auth.secret!r}"),
                f"Secret {spec.auth.secret!r} key {spec.auth.username_key!r}",
            )
        credentials = Credentials(
            username, _text(password, f"Secret {spec.auth.secret!r} key {spec.auth.password_key!r}")
        )
    tls = None
    if spec.tls is not None:
        ca_data = None
        if spec.tls.ca is not None:
            ca_data = _text(await read_key(kube, namespace, spec.tls.ca), spec.tls.ca.describe())
        cert_file = key_file = None
        if spec.tls.client_cert_secret:
            data = await _secret(kube, namespace, spec.tls.client_cert_secret)
            where = f"Secret {spec.tls.client_cert_secret!r}"
            cert_file, key_file = client_cert_files(_key(data, "tls.crt", where), _key(data, "tls.key", where))
        tls = TlsSettings(
            ca_data=ca_data,
            cert_file=cert_file,
            key_file=key_file,
            server_name=spec.tls.server_name,
            insecure_skip_verify=spec.tls.insecure_skip_verify,
        )
    return Target(spec.endpoints, spec.mode, spec.sentinel_master, credentials, tls, timeout=redis_timeout)


async def read_key(kube: Kube, namespace: str, ref: KeyRef | None) -> bytes:
    assert ref is not None
    if ref.kind is RefKind.SECRET:
        data = await _secret(kube, namespace, ref.name)
    else:
        found = await kube.read_config_map(namespace, ref.name)
        if found is None:
            raise ResolveError("ConfigMapNotFound", f"ConfigMap {ref.name!r} not found in namespace {namespace!r}")
        data = found
    return _key(data, ref.key, f"{ref.kind.value} {ref.name!r}")


async def _secret(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    found = await kube.read_secret(namespace, name)
    if found is None:
        raise ResolveError("SecretNotFound", f"Secret {name!r} not found in namespace {namespace!r}")
    return found


def _text(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ResolveError("InvalidSecret", f"{where} is not valid UTF-8") from None


def _key(data: dict[str, bytes], key: str, where: str) -> bytes:
    if key not in data:
        raise ResolveError("KeyNotFound", f"{where} has no key {key!r}")
    return data[key]


_CERT_DIR: Path | None = None


def client_cert_files(cert: bytes, key: bytes) -> tuple[str, str]:
    """Write a client certificate pair to private files named by their content hash; reuse them if present."""
    global _CERT_DIR
    if _CERT_DIR is None:
        _CERT_DIR = Path(tempfile.mkdtemp(prefix="rfo-tls-"))
        os.chmod(_CERT_DIR, 0o700)
    digest = hashlib.sha256(cert + b"\0" + key).hexdigest()[:16]
    cert_path, key_path = _CERT_DIR / f"{digest}.crt", _CERT_DIR / f"{digest}.key"
    for path, content in ((cert_path, cert), (key_path, key)):
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
    return str(cert_path), str(key_path)
