"""TCP servers that are *not* a usable Redis, as targets for bad-input tests.

Each one listens on 127.0.0.1 on a free port, serves every connection in its own daemon thread, and is stopped by its
own handle (:meth:`FakeServer.stop` closes the listener and every open connection, then joins the threads):

* :class:`HttpServer` answers anything with ``HTTP/1.1 400 Bad Request`` and closes (redis-py: "Protocol Error");
* :class:`SilentServer` accepts and reads but never answers (a client times out);
* :class:`ClosingServer` accepts and closes at once (connection closed by server);
* :class:`GarbageServer` answers any bytes with fixed non-RESP bytes;
* :class:`EchoServer` sends back every byte it receives (a RESP client reads its own commands as replies);
* :class:`Resp6Server` speaks RESP2 like a Redis 6.2 without Functions: PING, ECHO, SELECT, AUTH, HELLO (RESP2
  only), CLIENT SETNAME/SETINFO, INFO, ROLE, COMMAND, QUIT, and CLUSTER (an error, or ``cluster=True`` for a
  one-node Redis 6 cluster: CLUSTER NODES/SLOTS/INFO/MYID, and the ``Unknown subcommand`` error Redis 6 gives for
  CLUSTER SHARDS). Anything else, FUNCTION and FCALL included, gets Redis' own unknown-command error, which echoes
  the first arguments: ``-ERR unknown command 'FUNCTION', with args beginning with: 'LIST' ...``.

Every server records the commands it received (:attr:`FakeServer.commands`, RESP servers only) and counts its
connections, so a test can assert what a client did. Plain Python (no pytest), threads only, no subprocess.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

__all__ = [
    "ClosingServer",
    "EchoServer",
    "FakeServer",
    "GarbageServer",
    "HttpServer",
    "Resp6Server",
    "SilentServer",
]

HOST = "127.0.0.1"


class FakeServer:
    """A threaded TCP server; subclasses implement :meth:`handle` for one connection."""

    kind = "fake"

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.connections = 0
        self.commands: list[list[bytes]] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()

    # -- identity ----------------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<{type(self).__name__} {self.address} {state}>"

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(128)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._stopping.clear()
        thread = threading.Thread(target=self._accept_loop, name=f"{self.kind}-accept-{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def running(self) -> bool:
        return self._listener is not None and not self._stopping.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection, then join the threads. Idempotent."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            clients = list(self._clients)
            self._clients.clear()
        for client in clients:
            _close(client)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            with self._lock:
                if self._stopping.is_set():
                    _close(conn)
                    return
                self.connections += 1
                self._clients.add(conn)
                thread = threading.Thread(
                    target=self._serve, args=(conn,), name=f"{self.kind}-{self.port}", daemon=True
                )
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass  # the client went away, or stop() closed the socket under us
        finally:
            with self._lock:
                self._clients.discard(conn)
            _close(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _record(self, command: list[bytes]) -> None:
        with self._lock:
            self.commands.append(command)

    def received(self, name: str) -> list[list[bytes]]:
        """The recorded commands whose first word is ``name`` (case-insensitive)."""
        wanted = name.upper().encode()
        with self._lock:
            return [c for c in self.commands if c and c[0].upper() == wanted]


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --------------------------------------------------------------------------------------------------------------------
# servers that do not speak RESP


class HttpServer(FakeServer):
    """An HTTP server: whatever arrives, it answers ``400 Bad Request`` and closes (like most web servers do)."""

    kind = "http"
    RESPONSE = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\n"
        b"Connection: close\r\n\r\nBad Request"
    )

    def handle(self, conn: socket.socket) -> None:
        if conn.recv(65536):
            conn.sendall(self.RESPONSE)


class SilentServer(FakeServer):
    """Accepts, reads and discards, never answers: a client waits until its own timeout."""

    kind = "silent"

    def handle(self, conn: socket.socket) -> None:
        while not self._stopping.is_set() and conn.recv(65536):
            pass


class ClosingServer(FakeServer):
    """Accepts and closes the connection at once."""

    kind = "closing"

    def handle(self, conn: socket.socket) -> None:
        return


class GarbageServer(FakeServer):
    """Answers every chunk it receives with ``reply`` (default: bytes no RESP parser accepts)."""

    kind = "garbage"

    def __init__(self, reply: bytes = b"\x00\xff\xfe garbage \x81\x82\r\n", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reply = reply

    def handle(self, conn: socket.socket) -> None:
        while not self._stopping.is_set() and conn.recv(65536):
            conn.sendall(self.reply)


class EchoServer(FakeServer):
    """Sends back every byte it receives: a RESP client gets its own command (an array) as the reply."""

    kind = "echo"

    def handle(self, conn: socket.socket) -> None:
        while not self._stopping.is_set():
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


# --------------------------------------------------------------------------------------------------------------------
# RESP without Functions


class ProtocolError(Exception):
    pass


def read_command(stream: BinaryIO) -> list[bytes] | None:
    """One RESP multibulk or inline command from ``stream``; None at end of stream."""
    line = stream.readline(65536)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolError("too big inline request")
    line = line.rstrip(b"\r\n")
    if not line.startswith(b"*"):
        return line.split()
    try:
        count = int(line[1:])
    except ValueError:
        raise ProtocolError("invalid multibulk length") from None
    args: list[bytes] = []
    for _ in range(max(count, 0)):
        header = stream.readline(65536)
        if not header.startswith(b"$"):
            raise ProtocolError(f"expected '$', got '{header[:1].decode('latin-1')}'")
        try:
            size = int(header[1:].rstrip(b"\r\n"))
        except ValueError:
            raise ProtocolError("invalid bulk length") from None
        if size < 0 or size > 512 * 1024 * 1024:
            raise ProtocolError("invalid bulk length")
        data = stream.read(size + 2)
        if len(data) < size + 2:
            return None
        args.append(data[:size])
    return args


def bulk(value: bytes | str | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(items: Sequence[bytes]) -> bytes:
    """An array of already-encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def error(message: str) -> bytes:
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + b"\r\n"


def unknown_command_error(command: list[bytes]) -> bytes:
    """Redis' wording (``processCommand``): the command name, then its first arguments, about 128 bytes of them."""
    name = command[0].decode("utf-8", "replace") if command else ""
    args = ""
    for arg in command[1:]:
        if len(args) >= 128:
            break
        args += "'" + arg.decode("utf-8", "replace")[: 128 - len(args)] + "' "
    return error(f"ERR unknown command '{name}', with args beginning with: {args}")


class Resp6Server(FakeServer):
    """A Redis 6.2 look-alike without FUNCTION (see the module docstring). ``password`` makes it require AUTH
    (``requirepass``); ``cluster`` makes it a one-node cluster that owns every slot and knows no CLUSTER SHARDS."""

    kind = "resp6"
    VERSION = "6.2.14"

    def __init__(self, *, password: str | None = None, cluster: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.password = password
        self.cluster = cluster
        self.node_id = secrets.token_hex(20)

    def handle(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb")
        authenticated = self.password is None
        try:
            while not self._stopping.is_set():
                try:
                    command = read_command(stream)
                except ProtocolError as exc:
                    conn.sendall(error(f"ERR Protocol error: {exc}"))
                    return
                if command is None:
                    return
                if not command:
                    continue
                self._record(command)
                name = command[0].upper()
                if name == b"QUIT":
                    conn.sendall(b"+OK\r\n")
                    return
                if name == b"AUTH":
                    reply, authenticated = self._auth(command, authenticated)
                    conn.sendall(reply)
                    continue
                if not authenticated and name not in (b"HELLO",):
                    conn.sendall(error("NOAUTH Authentication required."))
                    continue
                conn.sendall(self.reply(command))
        finally:
            stream.close()

    def _auth(self, command: list[bytes], authenticated: bool) -> tuple[bytes, bool]:
        if len(command) not in (2, 3):
            return error("ERR wrong number of arguments for 'auth' command"), authenticated
        if self.password is None:
            if len(command) == 2:
                return (
                    error(
                        "ERR AUTH <password> called without any password configured for the default user. "
                        "Are you sure your configuration is correct?"
                    ),
                    authenticated,
                )
            return error("WRONGPASS invalid username-password pair or user is disabled."), authenticated
        user = command[1] if len(command) == 3 else b"default"
        if user == b"default" and command[-1] == self.password.encode():
            return b"+OK\r\n", True
        return error("WRONGPASS invalid username-password pair or user is disabled."), authenticated

    def reply(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        sub = command[1].upper() if len(command) > 1 else b""
        if name == b"PING":
            return bulk(command[1]) if len(command) > 1 else b"+PONG\r\n"
        if name == b"ECHO" and len(command) == 2:
            return bulk(command[1])
        if name == b"SELECT":
            return b"+OK\r\n"
        if name == b"HELLO":
            if len(command) > 1 and command[1] not in (b"2",):
                return error("NOPROTO unsupported protocol version")
            return array(
                [
                    bulk("server"),
                    bulk("redis"),
                    bulk("version"),
                    bulk(self.VERSION),
                    bulk("proto"),
                    integer(2),
                    bulk("mode"),
                    bulk("cluster" if self.cluster else "standalone"),
                    bulk("role"),
                    bulk("master"),
                    bulk("modules"),
                    array([]),
                ]
            )
        if name == b"CLIENT":
            if sub == b"SETNAME":
                return b"+OK\r\n"
            return error(
                f"ERR Unknown subcommand or wrong number of arguments for '{sub.decode('utf-8', 'replace')}'. "
                "Try CLIENT HELP."
            )
        if name == b"INFO":
            return bulk(self.info(sub.decode("utf-8", "replace").lower() if sub else ""))
        if name == b"ROLE":
            return array([bulk("master"), integer(0), array([])])
        if name == b"COMMAND":
            return array([])
        if name == b"CLUSTER":
            return self.cluster_reply(command)
        return unknown_command_error(command)

    def info(self, section: str) -> str:
        sections = {
            "server": [
                f"redis_version:{self.VERSION}",
                "redis_git_sha1:00000000",
                "redis_mode:" + ("cluster" if self.cluster else "standalone"),
                "os:Linux",
                f"tcp_port:{self.port}",
            ],
            "replication": ["role:master", "connected_slaves:0", "master_repl_offset:0"],
            "cluster": [f"cluster_enabled:{1 if self.cluster else 0}"],
        }
        chosen = (
            sections
            if section in ("", "all", "default", "everything")
            else {k: v for k, v in sections.items() if k == section}
        )
        return "".join(
            f"# {k.capitalize()}\r\n" + "".join(f"{line}\r\n" for line in v) + "\r\n" for k, v in chosen.items()
        )

    def cluster_reply(self, command: list[bytes]) -> bytes:
        sub = command[1].upper() if len(command) > 1 else b""
        if not self.cluster:
            return error("ERR This instance has cluster support disabled")
        if sub == b"NODES":
            line = (
                f"{self.node_id} {self.host}:{self.port}@{self.port + 10000} myself,master - 0 0 1 connected 0-16383\n"
            )
            return bulk(line)
        if sub == b"MYID":
            return bulk(self.node_id)
        if sub == b"INFO":
            return bulk(
                "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:1\r\n"
            )
        if sub == b"SLOTS":
            node = array([bulk(self.host), integer(self.port), bulk(self.node_id)])
            return array([array([integer(0), integer(16383), node])])
        return error(
            f"ERR Unknown subcommand or wrong number of arguments for '{sub.decode('utf-8', 'replace')}'. "
            "Try CLUSTER HELP."
        )
