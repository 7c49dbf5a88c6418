"""Topology replies → nodes, and fingerprint changes → reasons (pure parts of the redis layer)."""

from __future__ import annotations

from redis_functions_operator.redis.connect import Endpoint
from redis_functions_operator.redis.topology import Role, parse_cluster_nodes, parse_cluster_shards
from redis_functions_operator.redis.watch import Fingerprint, NodePrint

SEED = Endpoint("127.0.0.1", 7000)


def node(id_: str, port: int, role: str, health: str = "online") -> list[object]:
    return [b"id", id_.encode(), b"port", port, b"ip", b"127.0.0.1", b"role", role.encode(), b"health", health.encode()]


def test_shards_keep_zero_slot_primaries_and_loading_replicas() -> None:
    reply = [
        [b"slots", [0, 16383], b"nodes", [node("a", 7000, "master"), node("b", 7001, "replica", "loading")]],
        [b"slots", [], b"nodes", [node("c", 7002, "master")]],
    ]
    nodes = parse_cluster_shards(reply, SEED)
    primaries = {n.address: n.slots for n in nodes if n.role is Role.PRIMARY}
    assert primaries == {"127.0.0.1:7000": "0-16383", "127.0.0.1:7002": ""}
    assert [n.address for n in nodes if n.role is Role.REPLICA] == ["127.0.0.1:7001"]


def test_a_shard_whose_primary_failed_is_still_reported() -> None:
    reply = [[b"slots", [0, 100, 200, 200], b"nodes", [node("a", 7000, "master", "fail"), node("b", 7001, "replica")]]]
    nodes = parse_cluster_shards(reply, SEED)
    assert [(n.address, n.role, n.slots) for n in nodes] == [("127.0.0.1:7000", Role.PRIMARY, "0-100,200")]


def test_a_masterless_shard_whose_slots_another_shard_serves_is_not_a_failed_primary() -> None:
    """Redis 7.4.1 and 8.0-m01, for 0.05-0.12 s after a replica attaches: the replica alone in a shard with its
    master's slots, and the master's own shard listing the same slots (seen in 3 of 30 fresh clusters)."""
    reply = [
        [b"slots", [0, 8191], b"nodes", [node("a", 7000, "master")]],
        [b"slots", [0, 8191], b"nodes", [node("b", 7001, "replica")]],
        [b"slots", [8192, 16383], b"nodes", [node("c", 7002, "master")]],
    ]
    nodes = parse_cluster_shards(reply, SEED)
    assert {n.address for n in nodes if n.role is Role.PRIMARY} == {"127.0.0.1:7000", "127.0.0.1:7002"}


def test_cluster_nodes_fallback_skips_failed_and_handshake() -> None:
    text = (
        "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191\n"
        "b 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n"
        "c 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected\n"
        "d 127.0.0.1:7003@17003 handshake - 0 0 0 connected\n"
        "e 127.0.0.1:7004@17004 slave a 0 0 1 connected\n"
        "f :0@0 master,noaddr - 0 0 0 disconnected\n"
    )
    nodes = parse_cluster_nodes(text, SEED)
    assert [(n.address, n.role.value) for n in nodes] == [
        ("127.0.0.1:7000", "primary"),
        ("127.0.0.1:7001", "primary"),
        ("127.0.0.1:7004", "replica"),
    ]


def test_fingerprint_reasons() -> None:
    before = Fingerprint({"a:1": NodePrint("0-100", "r1", 3, 9), "b:1": NodePrint("101-200", "r2", 3, 9)}, {})
    assert before.changes_since(before) == []
    assert before.changes_since(None) == []
    flushed = Fingerprint({"a:1": NodePrint("0-100", "r1", 0, 0), "b:1": NodePrint("101-200", "r2", 3, 9)}, {})
    assert flushed.changes_since(before) == ["a:1 libraries removed (3 -> 0 libraries, 9 -> 0 functions)"]
    assert before.changes_since(flushed) == []  # libraries added (the operator's own loads, say) wake nobody
    fewer_functions = Fingerprint({**before.primaries, "a:1": NodePrint("0-100", "r1", 3, 8)}, {})
    assert fewer_functions.changes_since(before) == ["a:1 libraries removed (3 -> 3 libraries, 9 -> 8 functions)"]
    flushed_and_put_back = Fingerprint(
        {"a:1": NodePrint("0-100", "r1", 3, 9, (1, 0, 0)), "b:1": NodePrint("101-200", "r2", 3, 9)}, {}
    )
    assert flushed_and_put_back.changes_since(before) == ["a:1 ran FUNCTION FLUSH x1"]
    restarted = Fingerprint({"a:1": NodePrint("0-100", "r9", 0, 0), "b:1": NodePrint("101-200", "r2", 3, 9)}, {})
    assert restarted.changes_since(before) == ["a:1 restarted"]
    grown = Fingerprint({**before.primaries, "c:1": NodePrint("", "r3", 0, 0)}, {})
    assert grown.changes_since(before) == ["c:1 is a new primary"]
    down = Fingerprint({"b:1": before.primaries["b:1"]}, {"a:1": "ConnectionFailed"})
    assert down.changes_since(before) == ["a:1 became unreachable (ConnectionFailed)"]
    assert before.changes_since(down) == ["a:1 is reachable again"]
    resharded = Fingerprint({"a:1": NodePrint("0-50", "r1", 3, 9), "b:1": NodePrint("51-200", "r2", 3, 9)}, {})
    assert resharded.changes_since(before) == [
        "a:1 slots changed (0-100 -> 0-50)",
        "b:1 slots changed (101-200 -> 51-200)",
    ]
