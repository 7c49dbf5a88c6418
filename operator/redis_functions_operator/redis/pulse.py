"""A watch connection per standalone node: the cheap signal a watcher reads between two full polls.

A full poll (:func:`redis.watch.fingerprint`) discovers the topology and reads every primary through the connector's
general-purpose clients: about 0.75 ms of the operator's CPU, which is 19 % of a core for 500 targets polled every
2 s. Between two full polls almost nothing changes, and what would change shows in a few bytes. So a standalone
target also gets one dedicated connection per node (a *pulse*) that keeps one pre-encoded request and, per poll,
sends it, lets hiredis (C) split the replies and compares three small values with the last reading:

=================================  ===================================================================================
what it reads                      what a change there means
=================================  ===================================================================================
the connection itself              closed: the server restarted (a TCP connection does not survive its process),
                                   was replaced behind its address, or dropped us; nothing else closes it
``ROLE``: role (and, on a          a failover, or a replica that now follows another primary (the offsets and the
replica, the primary's address)    replica lists, which move with every write, are left out)
``INFO commandstats``: calls of    FUNCTION FLUSH / DELETE / RESTORE ran, even if the libraries came back between
FUNCTION FLUSH, DELETE, RESTORE    two polls (the counters are monotonic)
``FUNCTION STATS`` as sent         libraries or functions added or removed, a script running
=================================  ===================================================================================

A pulse only ever says "the same as last time" or "look again": any difference, error reply, timeout or closed
connection sends the watcher back to a full poll, which decides what changed and why (fail closed). A reading is
taken *before* the full poll it is compared with, so a change between the two is seen by the next pulse.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis

from redis_functions_operator.redis.connect import Endpoint, Target, TlsSettings, tell_observers

#: What a pulse asks, encoded once. Every command here is read-only and allowed while a script runs.
_COMMANDS: tuple[tuple[str, ...], ...] = (("ROLE",), ("INFO", "commandstats"), ("FUNCTION", "STATS"))


def _encode(*commands: tuple[str, ...]) -> bytes:
    """Commands as RESP arrays of bulk strings, the way every client sends them."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for word in command:
            data = word.encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
    return bytes(out)


_REQUEST = _encode(*_COMMANDS)
#: Shown in CLIENT LIST, so a Redis administrator can tell the operator's watch connection from its loads.
CLIENT_NAME = "redis-functions-operator-watch"
_REMOVALS = re.compile(rb"cmdstat_function\|(flush|delete|restore):calls=(\d+)")


class PulseLost(Exception):
    """A watch connection could not be opened (refused, timed out, AUTH refused): poll in full.

    Its message never carries what the server said: a server may echo a password it was sent (``AUTH`` renamed)."""


@dataclass(frozen=True)
class Reading:
    """What one pulse saw on one node; two equal readings mean nothing the watcher cares about moved."""

    role: tuple[Any, ...]
    removals: tuple[tuple[bytes, bytes], ...]
    functions: Any  # FUNCTION STATS as hiredis gave it (nested lists: compared, never hashed)


class _Batch:
    """Round trips in flight together (every pulsed node of every target, in one watcher round): one future for
    all of them, resolved when the last one has answered, so a round costs one wake-up however many nodes it reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pending = 0
        self.done: asyncio.Future[None] = loop.create_future()

    def finished_one(self) -> None:
        self.pending -= 1
        if self.pending <= 0 and not self.done.done():
            self.done.set_result(None)


class _Protocol(asyncio.Protocol):
    """Feeds what arrives to hiredis and hands the replies over once the expected number is there."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.replies: list[Any] = []
        self.expected = 0
        self.batch: _Batch | None = None  # the round trip in flight, if any
        self.answer: list[Any] | None = None  # its replies, once all are there
        self.answered_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                self.replies.append(reply)
        except hiredis.ProtocolError:
            self._fail()  # not RESP: nothing it says can be trusted
            return
        if self.batch is not None and len(self.replies) >= self.expected:
            self.answer, self.replies = self.replies, []
            self.answered_at = time.perf_counter()
            batch, self.batch = self.batch, None
            batch.finished_one()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()

    def _fail(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        if self.batch is not None:
            batch, self.batch = self.batch, None
            batch.finished_one()


class Pulse:
    """One open watch connection to one node. Read with :func:`read_all`; a node that cannot tell any more (closed,
    late, an error reply) reads as None, and its pulse is closed."""

    def __init__(self, endpoint: Endpoint, protocol: _Protocol) -> None:
        self.endpoint = endpoint
        self._protocol = protocol
        self._sent_at = 0.0

    @classmethod
    async def open(cls, endpoint: Endpoint, target: Target) -> Pulse:
        """Connect (TLS and AUTH as the target says) and name the connection; raises :class:`PulseLost`."""
        loop = asyncio.get_running_loop()
        tls = target.tls
        try:
            async with asyncio.timeout(target.timeout):
                _, protocol = await loop.create_connection(
                    _Protocol,
                    endpoint.host,
                    endpoint.port,
                    ssl=tls_context(tls) if tls else None,
                    server_hostname=(tls.server_name or endpoint.host) if tls else None,
                )
        except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
            raise PulseLost(f"cannot open a watch connection to {endpoint} ({type(exc).__name__})") from None
        pulse = cls(endpoint, protocol)
        try:
            await pulse._greet(target)
        except BaseException:
            pulse.close()
            raise
        return pulse

    async def _greet(self, target: Target) -> None:
        handshake: list[tuple[str, ...]] = []
        creds = target.credentials
        if creds is not None and creds.password is not None:
            handshake.append(("AUTH", creds.username, creds.password) if creds.username else ("AUTH", creds.password))
        handshake.append(("CLIENT", "SETNAME", CLIENT_NAME))
        (replies,) = await _exchange([self], _encode(*handshake), len(handshake), target.timeout)
        if replies is None:
            raise PulseLost(f"{self.endpoint} did not answer the watch connection's handshake")
        if creds is not None and creds.password is not None and isinstance(replies[0], hiredis.ReplyError):
            raise PulseLost(f"{self.endpoint} refused the watch connection's AUTH")
        # CLIENT SETNAME may be denied by an ACL or renamed away: the name is a courtesy, not a need.

    def _send(self, request: bytes, replies: int, batch: _Batch) -> None:
        protocol = self._protocol
        if protocol.closed or protocol.transport is None:
            return
        protocol.answer, protocol.expected, protocol.batch = None, replies, batch
        batch.pending += 1
        self._sent_at = time.perf_counter()
        protocol.transport.write(request)

    def _answer(self) -> list[Any] | None:
        """The replies of the last round trip, or None: closed, or not answered in time (then closed too, as its
        late replies would be taken for the next request's)."""
        protocol = self._protocol
        answer, protocol.answer = protocol.answer, None
        if answer is None:
            protocol.batch = None
            self.close()
        return answer

    @property
    def seconds(self) -> float:
        """How long the last round trip took (until the last reply arrived)."""
        return max(0.0, self._protocol.answered_at - self._sent_at)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol.closed = True


async def _exchange(pulses: Sequence[Pulse], request: bytes, replies: int, deadline: float) -> list[list[Any] | None]:
    """Send ``request`` on every pulse at once, then wait (at most ``deadline`` seconds) for all the answers."""
    batch = _Batch(asyncio.get_running_loop())
    for pulse in pulses:
        pulse._send(request, replies, batch)
    if batch.pending:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await batch.done
    return [pulse._answer() for pulse in pulses]


async def read_all(pulses: Sequence[Pulse], deadline: float) -> list[Reading | None]:
    """Every pulse's reading, all in one round trip's time: None for a node that cannot tell (closed, later than
    ``deadline``, an error reply, an unknown shape)."""
    answers = await _exchange(pulses, _REQUEST, len(_COMMANDS), deadline)
    readings = []
    for pulse, answer in zip(pulses, answers, strict=True):
        # counted like every command the operator sends (the metrics' redis_commands_total)
        tell_observers(_COMMANDS, pulse.seconds, answer is not None)
        readings.append(_reading(answer))
    return readings


def _reading(answer: list[Any] | None) -> Reading | None:
    if answer is None:
        return None
    role, info, stats = answer
    if any(isinstance(r, hiredis.ReplyError) for r in answer) or not isinstance(info, bytes):
        return None
    if not isinstance(role, list) or not role:
        return None
    who = (role[0],) if role[0] == b"master" else tuple(role[:3])
    return Reading(who, tuple(_REMOVALS.findall(info)), stats)


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """The same verification the connector's clients apply (redis-py builds its context from the same settings)."""
    context = ssl.create_default_context()
    context.check_hostname = not tls.insecure_skip_verify
    context.verify_mode = ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file or tls.ca_data:
        context.load_verify_locations(cafile=tls.ca_file, cadata=tls.ca_data)
    return context
