"""Seeds → the primaries that must hold a library (and the replicas, for reporting).

Redis never copies functions between primaries, so the engine must find *every* primary itself:

* cluster: every online master from CLUSTER SHARDS — **including masters with 0 slots**, which CLUSTER SLOTS and
  redis-py's cluster client omit (``docs/redis-facts.md`` F5, F6) — with CLUSTER NODES as a fallback; nodes flagged
  ``fail``, ``fail?``, ``handshake`` or ``noaddr`` are skipped; each remaining primary is confirmed with ROLE;
* standalone / replication: each seed's primary (a replica seed leads to its primary through ROLE); several seeds
  are several independent deployments, each primary gets the library;
* sentinel: the master the sentinels report for the configured name.

A primary the cluster lists but that cannot be reached is *not* dropped: it is returned in ``unreachable`` so the
caller reports it (a library is not "on every primary" while one is down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from redis_functions_operator.library.support import Server
from redis_functions_operator.library.vet import ENGINE_REDIS, ENGINE_VALKEY
from redis_functions_operator.redis.connect import Connector, Endpoint, Mode, Target
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from redis_functions_operator.redis.replies import pairs, text


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


@dataclass(frozen=True)
class Node:
    endpoint: Endpoint
    role: Role
    shard: str | None = None  # cluster: the primary's node id; else None
    slots: str = ""  # cluster: "0-5460,10923" style; "" for a 0-slot primary or non-cluster
    primary: Endpoint | None = None  # for a replica: the primary it follows
    run_id: str | None = field(default=None, compare=False)  # INFO server run_id, when the node answered it
    server: Server = field(default=Server(), compare=False)  # engine, version, Lua engine: from the same INFO
    cluster_enabled: bool | None = field(default=None, compare=False)  # from the same INFO (None: not read)

    @property
    def address(self) -> str:
        return str(self.endpoint)

    @property
    def identity(self) -> str:
        """Who this server is, however its address was spelled: the cluster node id, else the process' run_id
        (``localhost:6379`` and ``127.0.0.1:6379`` are one server), else the address as written."""
        return self.shard or self.run_id or self.address


@dataclass(frozen=True)
class Topology:
    mode: Mode  # resolved: never AUTO
    primaries: tuple[Node, ...]
    replicas: tuple[Node, ...] = ()
    unreachable: tuple[tuple[Node, NodeError], ...] = field(default=())
    #: per confirmed primary, the replies to the caller's ``extra`` commands, sent in its ROLE round trip
    probes: Mapping[Endpoint, tuple[Any, ...]] = field(default_factory=dict, compare=False)


class TopologyError(Exception):
    """No seed answered, or the answers do not describe a usable deployment."""

    def __init__(self, error: NodeError) -> None:
        super().__init__(error.message)
        self.error = error


Extra = tuple[tuple[Any, ...], ...]


async def discover(target: Target, connector: Connector, *, extra: Extra = ()) -> Topology:
    """Resolve the target's seeds into its current primaries and replicas.

    ``extra`` commands are sent to every confirmed primary in the round trip that confirms it (ROLE), and their
    replies come back in :attr:`Topology.probes`: the watcher polls a target in one round trip per primary this way.
    For ``mode: auto`` the mode found is remembered on the connector (``resolved_mode``), so a poll does not ask
    ``INFO cluster`` again; a primary reporting ``cluster_enabled`` that disagrees, or a failed discovery, forgets
    it."""
    mode = target.mode if target.mode is not Mode.AUTO else connector.resolved_mode
    if mode is not None:
        try:
            topo = await _discover_as(mode, target, connector, extra)
        except Exception:
            connector.resolved_mode = None
            raise
        if target.mode is Mode.AUTO and _mode_moved(topo):
            connector.resolved_mode = None
            return await discover(target, connector, extra=extra)
        return topo
    seed_errors: list[tuple[Endpoint, NodeError]] = []
    for seed in target.endpoints:
        try:
            info = await connector.call(seed, "INFO", "cluster")
        except Exception as exc:
            seed_errors.append((seed, classify(exc)))
            continue
        mode = Mode.CLUSTER if int(info.get("cluster_enabled", 0)) == 1 else Mode.STANDALONE
        topo = await _discover_as(mode, target, connector, extra)
        connector.resolved_mode = mode
        return topo
    raise TopologyError(_no_seed_answered(seed_errors))


async def _discover_as(mode: Mode, target: Target, connector: Connector, extra: Extra) -> Topology:
    if mode is Mode.SENTINEL:
        return await _discover_sentinel(target, connector, extra)
    if mode is Mode.CLUSTER:
        return await _discover_cluster(target, connector, extra)
    return await _discover_standalone(target, connector, extra)


def _mode_moved(topo: Topology) -> bool:
    """A remembered mode that a primary contradicts (its INFO says cluster_enabled is the other way)."""
    wants_cluster = topo.mode is Mode.CLUSTER
    return any(n.cluster_enabled is not None and n.cluster_enabled != wants_cluster for n in topo.primaries)


# --- cluster -----------------------------------------------------------------------------------------------------


async def _discover_cluster(target: Target, connector: Connector, extra: Extra = ()) -> Topology:
    seed_errors: list[tuple[Endpoint, NodeError]] = []
    for seed in target.endpoints:
        try:
            candidates, known = await _cluster_view(connector, seed)
        except Exception as exc:
            seed_errors.append((seed, classify(exc)))
            continue
        return await _confirm_roles(connector, Mode.CLUSTER, candidates, known, extra)
    raise TopologyError(_no_seed_answered(seed_errors))


async def _cluster_view(connector: Connector, seed: Endpoint) -> tuple[list[Node], set[str]]:
    """The seed's view: its live nodes, and the id of every node it knows at all (failed ones too, not nodes still
    in handshake, whose ids are temporary)."""
    try:
        shards = await connector.call(seed, "CLUSTER", "SHARDS")
    except Exception as exc:
        if classify(exc).kind is not ErrorKind.UNKNOWN:
            raise
        nodes_text = text(await connector.call(seed, "CLUSTER", "NODES"))
        return parse_cluster_nodes(nodes_text, seed), known_node_ids(nodes_text)
    known = {text(pairs(n).get("id")) for shard in shards or [] for n in pairs(shard).get("nodes", [])}
    return parse_cluster_shards(shards, seed), known


def known_node_ids(nodes_text: str) -> set[str]:
    """Every node id a CLUSTER NODES text lists, except nodes in handshake (their ids are temporary)."""
    rows = (line.split() for line in nodes_text.splitlines())
    return {row[0] for row in rows if len(row) >= 3 and "handshake" not in row[2].split(",")}


#: CLUSTER SHARDS health values of a node that is up. Redis 7.0 reports "loading" for any node whose replication
#: offset is still 0 (an idle, freshly made cluster), not only while it loads its dataset; a primary that really is
#: loading is kept too and then answers LOADING, which is a transient failure the caller retries.
_LIVE_HEALTH = frozenset({"online", "loading"})


def parse_cluster_shards(reply: Any, seed: Endpoint) -> list[Node]:
    """CLUSTER SHARDS (RESP2 shape: flat key/value lists) → nodes. Keeps 0-slot masters; drops unhealthy nodes."""
    nodes: list[Node] = []
    shards = [pairs(shard) for shard in reply or []]
    served = {_format_slots([int(x) for x in s.get("slots", [])]) for s in shards if _live_primary(s)}
    for shard_map in shards:
        slot_bounds = [int(x) for x in shard_map.get("slots", [])]
        slots = _format_slots(slot_bounds)
        members = [pairs(n) for n in shard_map.get("nodes", [])]
        live_primary = _live_primary(shard_map)
        if slots and not live_primary and slots in served:
            # Redis 7.4 and 8.0 list a just-attached replica for 0.05-0.12 s in a shard of its own, with its master's
            # slots and no master, while the master's own shard lists the same slots (measured: 3 in 30 fresh
            # clusters on 7.4.1). Another shard serves these slots: nothing has failed.
            continue
        if slots and not live_primary:
            # The shard's primary failed and no replica has been promoted yet: nobody can hold the library for
            # these slots right now. Report it (as a primary that cannot be reached) instead of silently
            # reporting "2/2" for a 3-shard cluster.
            failed = next((m for m in members if text(m.get("role")) == "master"), members[0] if members else {})
            host = text(failed.get("ip") or failed.get("endpoint") or "") or seed.host
            port = int(failed.get("port") or failed.get("tls-port") or 0)
            nodes.append(Node(Endpoint(host, port), Role.PRIMARY, shard=text(failed.get("id")), slots=slots))
            continue
        primary_id = next((text(m.get("id")) for m in members if text(m.get("role")) == "master"), None)
        primary_ep: Endpoint | None = None
        for m in members:
            if text(m.get("health")) not in _LIVE_HEALTH:
                continue
            host = text(m.get("ip") or m.get("endpoint") or "") or seed.host
            if host in ("?", ""):
                continue
            port = int(m.get("port") or m.get("tls-port") or 0)
            if not port:
                continue
            if text(m.get("role")) == "master":
                primary_ep = Endpoint(host, port)
                nodes.append(Node(primary_ep, Role.PRIMARY, shard=primary_id, slots=slots))
        for m in members:
            if text(m.get("health")) not in _LIVE_HEALTH or text(m.get("role")) == "master":
                continue
            host = text(m.get("ip") or m.get("endpoint") or "") or seed.host
            port = int(m.get("port") or m.get("tls-port") or 0)
            if port and host not in ("?", ""):
                nodes.append(Node(Endpoint(host, port), Role.REPLICA, shard=primary_id, primary=primary_ep))
    return nodes


_BAD_FLAGS = {"fail", "fail?", "handshake", "noaddr"}


def _live_primary(shard: dict[str, Any]) -> bool:
    members = [pairs(n) for n in shard.get("nodes", [])]
    return any(text(m.get("role")) == "master" and text(m.get("health")) in _LIVE_HEALTH for m in members)


def parse_cluster_nodes(text: str, seed: Endpoint) -> list[Node]:
    """CLUSTER NODES text → nodes (the fallback for servers without CLUSTER SHARDS)."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    by_id: dict[str, Endpoint] = {}
    parsed: list[tuple[str, Endpoint, set[str], str, str, list[str]]] = []
    for row in rows:
        if len(row) < 8:
            continue
        node_id, address, flags_text, master_id, link = row[0], row[1], row[2], row[3], row[7]
        flags = set(flags_text.split(","))
        hostport = address.split("@", 1)[0].split(",", 1)[0]
        host, _, port_text = hostport.rpartition(":")
        if not port_text.isdigit() or int(port_text) == 0:
            continue
        endpoint = Endpoint(host or seed.host, int(port_text))
        by_id[node_id] = endpoint
        parsed.append((node_id, endpoint, flags, master_id, link, row[8:]))
    nodes: list[Node] = []
    for node_id, endpoint, flags, master_id, link, slot_fields in parsed:
        if flags & _BAD_FLAGS or (link != "connected" and "myself" not in flags):
            continue
        if "master" in flags:
            slots = ",".join(s for s in slot_fields if not s.startswith("["))
            nodes.append(Node(endpoint, Role.PRIMARY, shard=node_id, slots=slots))
        elif "slave" in flags:
            nodes.append(Node(endpoint, Role.REPLICA, shard=master_id, primary=by_id.get(master_id)))
    return nodes


def _format_slots(bounds: Sequence[int]) -> str:
    ranges = []
    for start, end in zip(bounds[::2], bounds[1::2], strict=False):
        ranges.append(str(start) if start == end else f"{start}-{end}")
    return ",".join(ranges)


# --- standalone / replication --------------------------------------------------------------------------------------


async def _discover_standalone(target: Target, connector: Connector, extra: Extra = ()) -> Topology:
    """Each seed's primary; a replica seed is followed to its primary."""
    primaries: dict[Endpoint, Node] = {}
    replicas: dict[Endpoint, Node] = {}
    unreachable: list[tuple[Node, NodeError]] = []
    probes: dict[Endpoint, tuple[Any, ...]] = {}

    async def resolve(seed: Endpoint) -> None:
        try:
            role, found, _, replies = await _role(connector, seed, extra=extra)
        except Exception as exc:
            unreachable.append((Node(seed, Role.PRIMARY), classify(exc)))
            return
        if role[0] == "master":
            primaries[seed] = Node(seed, Role.PRIMARY, **found)
            probes[seed] = replies
            for replica in role[2]:
                ep = Endpoint(replica[0], int(replica[1]))
                replicas[ep] = Node(ep, Role.REPLICA, primary=seed)
            return
        if role[0] == "slave":
            primary = Endpoint(role[1], int(role[2]))
            replicas[seed] = Node(seed, Role.REPLICA, primary=primary)
            try:
                primary_role, primary_found, _, primary_replies = await _role(connector, primary, extra=extra)
            except Exception as exc:
                unreachable.append((Node(primary, Role.PRIMARY), classify(exc)))
                return
            if primary_role[0] != "master":
                unreachable.append(
                    (Node(primary, Role.PRIMARY), NodeError(ErrorKind.TOPOLOGY, f"{primary} is not a primary"))
                )
                return
            primaries[primary] = Node(primary, Role.PRIMARY, **primary_found)
            probes[primary] = primary_replies
            for replica in primary_role[2]:
                ep = Endpoint(replica[0], int(replica[1]))
                replicas.setdefault(ep, Node(ep, Role.REPLICA, primary=primary))
            return
        unreachable.append((Node(seed, Role.PRIMARY), NodeError(ErrorKind.TOPOLOGY, f"{seed} has role {role[0]}")))

    await asyncio.gather(*(resolve(seed) for seed in dict.fromkeys(target.endpoints)))
    unreachable = [(n, e) for n, e in unreachable if n.endpoint not in primaries]
    if not primaries and not unreachable:
        raise TopologyError(NodeError(ErrorKind.TOPOLOGY, "no primary found"))
    return _topology(Mode.STANDALONE, list(primaries.values()), list(replicas.values()), unreachable, probes)


# --- sentinel ------------------------------------------------------------------------------------------------------


async def _discover_sentinel(target: Target, connector: Connector, extra: Extra = ()) -> Topology:
    """Ask each sentinel for the master's address; the first answer wins, then ROLE confirms it.

    Sentinels are contacted without the data nodes' credentials (sentinels usually have none, or their own)."""
    assert target.sentinel_master
    seed_errors: list[tuple[Endpoint, NodeError]] = []
    for sentinel in target.endpoints:
        try:
            reply = await connector.call(
                sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.sentinel_master, authenticate=False
            )
        except Exception as exc:
            seed_errors.append((sentinel, classify(exc)))
            continue
        if not reply:
            seed_errors.append(
                (sentinel, NodeError(ErrorKind.TOPOLOGY, f"sentinel knows no master named {target.sentinel_master!r}"))
            )
            continue
        master = Endpoint(text(reply[0]), int(reply[1]))
        candidates = [Node(master, Role.PRIMARY)]
        return await _confirm_roles(connector, Mode.SENTINEL, candidates, extra=extra)
    raise TopologyError(_no_seed_answered(seed_errors))


# --- shared --------------------------------------------------------------------------------------------------------


async def _confirm_roles(
    connector: Connector, mode: Mode, candidates: list[Node], known: set[str] | None = None, extra: Extra = ()
) -> Topology:
    """ROLE on every candidate primary, concurrently: the cluster's view can lag a failover by a moment.

    In a cluster (``known``: the node ids the seed's view holds), each primary's own CLUSTER NODES comes back in the
    same round trip, and a live primary that some primary lists but the seed does not know is a candidate too:
    a primary that has just joined with CLUSTER MEET is known first to the node it met, and reaches the others by
    gossip 0-1.5 s later (measured on every server line), so one seed's view alone can miss it, and a sync would
    report every primary verified while one lacks the library. Only nodes the seed does not know at all are added:
    where views disagree about a node's health, the seed's view stands, as before."""
    claimed = [n for n in candidates if n.role is Role.PRIMARY]
    replicas = [n for n in candidates if n.role is Role.REPLICA]
    with_views = known is not None

    probes: dict[Endpoint, tuple[Any, ...]] = {}

    async def confirm(node: Node) -> tuple[Node, NodeError | None, str | None]:
        try:
            role, found, view, replies = await _role(connector, node.endpoint, with_views, extra)
        except Exception as exc:
            return node, classify(exc), None
        if role[0] != "master":
            return (
                node,
                NodeError(ErrorKind.READ_ONLY, f"{node.address} is listed as a primary but ROLE says {role[0]}"),
                None,
            )
        probes[node.endpoint] = replies
        return replace(node, **found), None, view

    results: list[tuple[Node, NodeError | None, str | None]] = []
    seen = {n.endpoint for n in claimed} | {n.endpoint for n in replicas}
    ids = set(known or ())
    while claimed:
        found = await asyncio.gather(*(confirm(n) for n in claimed))
        results += found
        claimed = []
        views = [(node, view) for node, _, view in found if view and not known_node_ids(view) <= ids]
        for node, view in views:  # only the views that know a node the seed does not (rare): parsed in full
            for other in parse_cluster_nodes(view, node.endpoint):
                if other.shard in ids or other.endpoint in seen:
                    continue
                if other.role is Role.PRIMARY:
                    claimed.append(other)
                    ids.add(str(other.shard))
                    seen.add(other.endpoint)
        for node, view in views:  # the replicas of primaries found this way, for reporting
            for other in parse_cluster_nodes(view, node.endpoint):
                if (
                    other.role is Role.REPLICA
                    and other.endpoint not in seen
                    and other.shard in {c.shard for c in claimed}
                ):
                    replicas.append(other)
                    seen.add(other.endpoint)
    primaries = [n for n, err, _ in results if err is None]
    unreachable = [(n, err) for n, err, _ in results if err is not None]
    return _topology(mode, primaries, replicas, unreachable, probes)


def _topology(
    mode: Mode,
    primaries: list[Node],
    replicas: list[Node],
    unreachable: list[tuple[Node, NodeError]],
    probes: Mapping[Endpoint, tuple[Any, ...]] | None = None,
) -> Topology:
    return Topology(
        mode=mode,
        primaries=tuple(sorted(primaries, key=lambda n: n.endpoint)),
        replicas=tuple(sorted(replicas, key=lambda n: n.endpoint)),
        unreachable=tuple(sorted(unreachable, key=lambda item: item[0].endpoint)),
        probes=dict(probes or {}),
    )


async def _role(
    connector: Connector, endpoint: Endpoint, with_view: bool = False, extra: Extra = ()
) -> tuple[list[Any], dict[str, Any], str | None, tuple[Any, ...]]:
    """ROLE, decoded (``['master', offset, [[host, port, offset], ...]]`` or ``['slave', host, port, ...]``), and
    from INFO in the same round trip what the node is (``found``: its run_id, its server — engine, version, Lua
    engine — and whether cluster mode is on; an unknown server when INFO is not allowed: the ACL of a CLI user may
    lack it; ownership between objects and the per-server vet need it, and the vet then refuses what depends on the
    server). ``with_view`` adds the node's CLUSTER NODES text; ``extra`` commands' replies come last."""
    commands: list[tuple[Any, ...]] = [("ROLE",), ("INFO", "server", "cluster", "scriptingengines")]
    if with_view:
        commands.append(("CLUSTER", "NODES"))
    commands.extend(extra)
    reply, info, *rest = await connector.call_many(endpoint, *commands)
    if isinstance(reply, BaseException):
        raise reply
    view_reply = rest[0] if with_view else None
    replies = tuple(rest[1:] if with_view else rest)
    view = text(view_reply) if with_view and not isinstance(view_reply, BaseException) else None
    found: dict[str, Any] = {"run_id": None, "server": Server(), "cluster_enabled": None}
    if isinstance(info, dict):
        found["run_id"] = text(info.get("run_id")) or None
        found["server"] = server_from_info(info)
        if "cluster_enabled" in info:
            found["cluster_enabled"] = int(info["cluster_enabled"]) == 1
    kind = text(reply[0])
    if kind == "master":
        return [kind, reply[1], [[text(r[0]), int(r[1])] for r in reply[2]]], found, view, replies
    if kind == "slave":
        return [kind, text(reply[1]), int(reply[2])], found, view, replies
    return [kind], found, view, replies


def server_from_info(info: dict[str, Any]) -> Server:
    """INFO server + scriptingengines → engine, version, Lua. Valkey says ``server_name:valkey`` and its own
    ``valkey_version`` (its ``redis_version`` stays 7.2.4); Redis has neither. Only Valkey 9.x reports a *Scripting
    Engines* section; a server without it has Lua built in (``docs/lua-sandbox.md``, "Per server")."""
    if text(info.get("server_name", "")).lower() == "valkey" or "valkey_version" in info:
        engine, version = ENGINE_VALKEY, text(info.get("valkey_version", ""))
    elif "redis_version" in info:
        engine, version = ENGINE_REDIS, text(info.get("redis_version", ""))
    else:
        return Server()
    return Server(engine, version, _has_lua(info))


def _has_lua(info: dict[str, Any]) -> bool | None:
    if "engines_count" not in info:
        return True  # no Scripting Engines section: Lua is built in
    engines = [v for k, v in info.items() if k.startswith("engine_") and k[7:].isdigit()]
    if any(isinstance(e, dict) and text(e.get("name", "")).upper() == "LUA" for e in engines):
        return True
    if str(info.get("engines_count")) == "0" or (engines and all(isinstance(e, dict) for e in engines)):
        return False
    return None  # a shape this reader does not know: say nothing rather than refuse


def _no_seed_answered(errors: list[tuple[Endpoint, NodeError]]) -> NodeError:
    if not errors:
        return NodeError(ErrorKind.TOPOLOGY, "no seed endpoint given")
    # A permanent problem (bad password, wrong CA) explains more than "connection refused" elsewhere.
    errors = sorted(errors, key=lambda item: not item[1].permanent)
    kind = errors[0][1].kind
    details = "; ".join(f"{ep}: {err.message}" for ep, err in errors)
    return NodeError(kind if kind is not ErrorKind.UNKNOWN else ErrorKind.TOPOLOGY, f"no seed answered ({details})")
