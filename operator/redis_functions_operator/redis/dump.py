"""FUNCTION DUMP from one primary and FUNCTION RESTORE to every primary — the backup/migration pair of the CLI.

RESTORE is atomic per node (``docs/redis-facts.md`` F11): a conflicting function name fails the whole payload there
and leaves the node unchanged, so per-node results are enough; there is nothing to roll back.

A dump is taken with a record of where it came from (:class:`Dump`: the server's engine and version, and each
library's code, read in the same round trip as the payload), because a payload can cross engines badly
(``docs/lua-sandbox.md``, "Dumps across servers", measured on the seven servers of the matrix):

* the payload's format: each server writes its own RDB version (Redis 7.0: 10; Redis 7.2, Valkey 7.2 and 8.0: 11;
  Redis 7.4 and 8.0: 12; Valkey 9: 80) and reads versions up to its own — except Valkey 9, which refuses 12 to 79
  (the range it leaves to Redis' formats). The target is asked for its own version (a FUNCTION DUMP of its own,
  read-only) rather than looked up in a table;
* the code: a Valkey library that calls ``server.*`` restores into Redis and then fails when called. Each library
  is vetted for each primary as a sync would (``library/support.py``).

Either refusal stops the restore before any primary is touched, and points to the source-based path (``export``,
then ``sync``). A dump file written before these records existed holds only the payload: its format is still
checked, its code cannot be.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from redis_functions_operator.library import LibraryError, Vetting, vet
from redis_functions_operator.library.support import Server, unsupported
from redis_functions_operator.redis.connect import Connector, Endpoint, Target
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult, parse_function_list
from redis_functions_operator.redis.topology import Node, Topology, TopologyError, discover


class RestorePolicy(StrEnum):
    APPEND = "append"  # fail on a node that already has a library of the same name
    REPLACE = "replace"  # overwrite same-name libraries, keep the others
    FLUSH = "flush"  # drop every library on the node first


@dataclass(frozen=True)
class Dump:
    """A FUNCTION DUMP payload and what it came from."""

    payload: bytes
    source: str = ""  # host:port of the primary it was taken from; "" for a bare payload file
    server: Server = field(default_factory=Server)  # its engine and version; unknown for a bare payload file
    libraries: tuple[tuple[str, bytes], ...] = field(default=())  # (name, code) of every library in it
    recorded: bool = False  # False: a bare payload (a file written before the records, or by redis-cli)

    @property
    def format(self) -> int:
        """The RDB version the payload was written in (the two bytes before its 8-byte CRC), or -1."""
        return int.from_bytes(self.payload[-10:-8], "little") if len(self.payload) >= 10 else -1


#: The first line of a dump file with a record; a file without it is a bare FUNCTION DUMP payload.
DUMP_FILE_MAGIC = b"#!redis-functions-operator dump v1\n"


def encode_dump_file(dump: Dump) -> bytes:
    """The magic line, one line of JSON (source, engine, version, libraries with base64 code), then the payload."""
    record = {
        "source": dump.source,
        "engine": dump.server.engine,
        "version": dump.server.version,
        "format": dump.format,
        "libraries": [{"name": n, "code": base64.b64encode(c).decode()} for n, c in dump.libraries],
    }
    return DUMP_FILE_MAGIC + json.dumps(record, separators=(",", ":")).encode() + b"\n" + dump.payload


def decode_dump_file(data: bytes) -> Dump:
    """A dump file back into a :class:`Dump`; a bare payload (no magic line) is taken as it is, unrecorded."""
    if not data.startswith(DUMP_FILE_MAGIC):
        return Dump(data)
    end = data.index(b"\n", len(DUMP_FILE_MAGIC))
    record = json.loads(data[len(DUMP_FILE_MAGIC) : end])
    libraries = tuple((str(e["name"]), base64.b64decode(e["code"])) for e in record.get("libraries", []))
    server = Server(str(record.get("engine", "")), str(record.get("version", "")))
    return Dump(data[end + 1 :], str(record.get("source", "")), server, libraries, recorded=True)


async def dump(target: Target, node: Endpoint | None = None) -> Dump:
    """The FUNCTION DUMP payload of ``node`` (default: the first primary by address), with its record: the
    server's engine and version (from discovery) and every library's code, read in the payload's round trip."""
    async with Connector(target) as conn:
        try:
            topo = await discover(target, conn)
        except TopologyError as exc:
            raise DumpError(exc.error) from None
        chosen = next((n for n in topo.primaries if node is None or n.endpoint == node), None)
        if node is None and chosen is None:
            raise DumpError(NodeError(ErrorKind.TOPOLOGY, "no reachable primary"))
        endpoint = node if node is not None else chosen.endpoint  # type: ignore[union-attr]
        server = chosen.server if chosen is not None else Server()
        try:
            payload, listing = await conn.call_many(endpoint, ("FUNCTION", "DUMP"), ("FUNCTION", "LIST", "WITHCODE"))
        except Exception as exc:
            raise DumpError(classify(exc)) from None
        if isinstance(payload, BaseException):
            raise DumpError(classify(payload))
        libraries = () if isinstance(listing, BaseException) else _codes(listing)
        return Dump(bytes(payload), str(endpoint), server, libraries, recorded=not isinstance(listing, BaseException))


def _codes(listing: object) -> tuple[tuple[str, bytes], ...]:
    return tuple(sorted((e.name, e.code) for e in parse_function_list(listing) if e.code is not None))


async def restore(target: Target, dump: Dump | bytes, policy: RestorePolicy) -> SyncResult:
    """FUNCTION RESTORE the dump on every primary with ``policy``; one result per primary. Refused on every primary,
    before any is touched, when one cannot read the payload's format or would fail one of its libraries."""
    if isinstance(dump, bytes):
        dump = Dump(dump)
    async with Connector(target) as conn:
        try:
            topo = await discover(target, conn)
        except TopologyError as exc:
            return SyncResult("(dump)", "", None, (), error=exc.error)
        refused = await _refusals(conn, topo.primaries, dump)
        if refused:
            return _refused(topo, refused)

        async def restore_on(node_index: int) -> NodeResult:
            node = topo.primaries[node_index]
            try:
                await conn.call(node.endpoint, "FUNCTION", "RESTORE", dump.payload, policy.value.upper())
            except Exception as exc:
                return NodeResult(node, Outcome.FAILED, error=classify(exc))
            return NodeResult(node, Outcome.LOADED)

        results = list(await asyncio.gather(*(restore_on(i) for i in range(len(topo.primaries)))))
        results += [NodeResult(n, Outcome.FAILED, error=e) for n, e in topo.unreachable]
        results.sort(key=lambda r: r.node.endpoint)
        errors = [r.error for r in results if r.error is not None]
        return SyncResult("(dump)", "", topo, tuple(results), error=errors[0] if errors else None)


_INSTEAD = (
    "restore from the sources instead: `redis-functions-operator export --redis <source>` (or your .lua files), "
    "then `sync` to this target"
)


async def _refusals(conn: Connector, primaries: Sequence[Node], dump: Dump) -> dict[Node, NodeError]:
    """Per primary, why it must not get this dump: a payload format it cannot read, or a library it would fail."""
    reads = await asyncio.gather(*(_own_format(conn, n) for n in primaries))
    vettings = await asyncio.to_thread(_vet_all, dump.libraries)
    written = f" (written by {dump.server.label})" if dump.server.engine else ""
    refused: dict[Node, NodeError] = {}
    for node, own in zip(primaries, reads, strict=True):
        if own is not None and not reads_format(own, dump.format):
            refused[node] = NodeError(
                ErrorKind.UNSUPPORTED_ON_SERVER,
                f"refused before restoring ({node.server.label}): the dump is in format {dump.format}{written}, "
                f"which a server writing format {own} cannot read; {_INSTEAD}",
            )
            continue
        for name, vetting in vettings:
            problem = unsupported(vetting, node.server)
            if problem is not None:
                where = f"line {problem.line}: " if problem.line else ""
                refused[node] = NodeError(
                    ErrorKind(problem.reason),
                    f"refused before restoring ({node.server.label}): library {name!r}{written}, {where}"
                    f"{problem.message}; {_INSTEAD}",
                )
                break
    return refused


def reads_format(own: int, payload: int) -> bool:
    """Whether a server that writes RDB version ``own`` reads a payload of version ``payload`` (measured on the
    matrix): up to its own version, except that Valkey 9 (80) refuses 12-79, the versions Redis 7.4+ writes."""
    if payload < 0:
        return True  # not a payload this reader understands: the server's own answer decides
    if own >= 80 and 12 <= payload < 80:
        return False
    return payload <= own


async def _own_format(conn: Connector, node: Node) -> int | None:
    """The RDB version ``node`` writes, from a FUNCTION DUMP of its own (read-only); None when it will not say."""
    try:
        payload = await conn.call(node.endpoint, "FUNCTION", "DUMP")
    except Exception:
        return None
    return Dump(bytes(payload)).format


def _vet_all(libraries: Sequence[tuple[str, bytes]]) -> list[tuple[str, Vetting]]:
    vettings = []
    for name, code in libraries:
        try:
            vettings.append((name, vet(code)))
        except LibraryError:
            continue  # a shebang the server itself wrote: nothing the vet adds
    return vettings


def _refused(topo: Topology, refused: dict[Node, NodeError]) -> SyncResult:
    results = [
        NodeResult(n, Outcome.FAILED, error=refused[n]) if n in refused else NodeResult(n, Outcome.SKIPPED)
        for n in topo.primaries
    ]
    results += [NodeResult(n, Outcome.FAILED, error=e) for n, e in topo.unreachable]
    results.sort(key=lambda r: r.node.endpoint)
    blocking, decisive = next(iter(sorted(refused.items(), key=lambda item: item[0].endpoint)))
    return SyncResult("(dump)", "", topo, tuple(results), error=decisive, blocking_node=blocking.address)


class DumpError(Exception):
    def __init__(self, error: NodeError) -> None:
        super().__init__(error.message)
        self.error = error
