"""Helpers for tests/redis/test_lua_libraries.py: the shipped libraries in lua/, and a call target that hides the
difference between a standalone client and a cluster client, and between RESP2 and RESP3 replies."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import redis_servers as rs

LUA_DIR = Path(__file__).resolve().parents[2] / "lua"
README = LUA_DIR / "README.md"

#: library name (= file stem) -> {function name: flags}, exactly as FUNCTION LIST must report them.
LIBRARIES: dict[str, dict[str, set[str]]] = {
    "mylib": {"increment_counter": set(), "decrement_counter": set(), "hello": {"no-writes"}},
    "flags": {"get_value": {"no-writes"}, "important_write": {"allow-oom"}, "calculate": {"no-writes"}},
    "ratelimiter": {"check_rate_limit": set(), "get_rate_limit_status": {"no-writes"}},
    "cart": {"cart_add": set(), "cart_remove": set(), "cart_get": {"no-writes"}, "cart_clear": set()},
    "sessions": {
        "session_create": set(),
        "session_get": set(),
        "session_peek": {"no-writes"},
        "session_destroy": set(),
        "session_destroy_all": set(),
    },
}

WRITE_FLAG_ERROR = "Can not execute a script with write flag using *_ro command."


def library_code(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


def error_codes(source: str) -> set[str]:
    """The error codes a library can return: the first argument of every ``fail('CODE', ...)``."""
    return set(re.findall(r"fail\('([A-Z_]+)'", source))


def load_libraries(client: redis.Redis) -> None:
    """FUNCTION LOAD REPLACE every shipped library on one primary (``decode_responses=True`` client)."""
    for name in LIBRARIES:
        assert client.function_load(library_code(name), replace=True) == name


def has_libraries(client: redis.Redis) -> bool:
    """True once a node (typically a replica) lists all five libraries (``decode_responses=True`` client)."""
    listed = {dict(zip(entry[::2], entry[1::2], strict=True))["library_name"] for entry in client.function_list()}
    return set(LIBRARIES) <= listed


def expected_double(text: str, protocol: int) -> str | float:
    """How ``{double = x}`` reaches a redis-py client: a bulk string in RESP2, a float in RESP3."""
    return text if protocol == 2 else float(text)


def as_map(reply: Any, protocol: int) -> dict[str, Any]:
    """A ``{map = ...}`` reply as a dict, after checking its wire shape: a real map in RESP3, a flat array of
    field/value pairs with unique fields in RESP2."""
    if protocol == 3:
        assert isinstance(reply, dict), reply
        return reply
    assert isinstance(reply, list), reply
    assert len(reply) % 2 == 0, reply
    fields = reply[0::2]
    assert len(set(fields)) == len(fields), reply
    return dict(zip(fields, reply[1::2], strict=True))


@dataclass
class Target:
    """One place to call the libraries: a standalone server or a cluster (through a cluster client), one protocol.

    Keys made with :meth:`key` share this target's unique hash tag, so a test's keys are in one slot and never
    meet another test's keys."""

    flavor: str
    topology: str
    protocol: int
    client: Any  # redis.Redis or redis.cluster.RedisCluster, decode_responses=True
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def key(self, name: str, *rest: str) -> str:
        """``name:{tag}[:rest...]``, e.g. ``key('cart', 'u1')`` -> ``cart:{3f2a...}:u1``."""
        return ":".join((name, "{" + self.tag + "}", *rest))

    def fcall(self, function: str, keys: Sequence[str] = (), args: Sequence[str | int] = ()) -> Any:
        return self.client.fcall(function, len(keys), *keys, *args)

    def fcall_ro(self, function: str, keys: Sequence[str] = (), args: Sequence[str | int] = ()) -> Any:
        return self.client.fcall_ro(function, len(keys), *keys, *args)

    def error(
        self, function: str, keys: Sequence[str] = (), args: Sequence[str | int] = (), *, ro: bool = False
    ) -> str:
        """The text of the error reply (redis-py keeps our codes; it strips only a leading ``ERR ``)."""
        call = self.fcall_ro if ro else self.fcall
        with pytest.raises(redis.ResponseError) as info:
            call(function, keys, args)
        return str(info.value)

    def map(self, reply: Any) -> dict[str, Any]:
        return as_map(reply, self.protocol)

    def double(self, text: str) -> str | float:
        return expected_double(text, self.protocol)

    def server_time(self) -> float:
        seconds, micros = self.client.time()
        return seconds + micros / 1_000_000


class Deployments:
    """This test module's own servers, started on first use, libraries loaded once, stopped at module end.

    Private rather than the shared session servers because the five libraries have fixed names and register
    global, generic function names (``hello``, ``get_value``), and because the allow-oom test changes
    ``maxmemory``: the shared servers allow neither."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._made: dict[tuple[str, str], Any] = {}
        self._clients: dict[tuple[str, str, int], Any] = {}

    def get(self, flavor: str, topology: str) -> Any:
        """``topology``: ``standalone`` (RedisServer), ``cluster`` (Cluster) or ``replicated`` (Replicated)."""
        made = self._made.get((flavor, topology))
        if made is None:
            if topology == "standalone":
                made = rs.start_server(flavor, base_dir=self.base_dir)
                primaries, nodes = [made], [made]
            elif topology == "cluster":
                made = rs.start_cluster(flavor, base_dir=self.base_dir)
                primaries, nodes = made.primaries(), made.nodes
            else:
                made = rs.start_replicated(flavor, base_dir=self.base_dir)
                primaries, nodes = [made.primary], made.servers
            self._made[(flavor, topology)] = made
            for primary in primaries:
                with primary.client(decode_responses=True) as client:
                    load_libraries(client)
            for node in nodes:  # replicas get the libraries by replication
                with node.client(decode_responses=True) as client:
                    rs.wait_until(lambda c=client: has_libraries(c), 15, message=f"the libraries on {node.address}")
        return made

    def client(self, flavor: str, topology: str, protocol: int) -> Any:
        """A cached ``decode_responses=True`` client: plain for standalone, RedisCluster for a cluster."""
        key = (flavor, topology, protocol)
        if key not in self._clients:
            made = self.get(flavor, topology)
            factory = made.cluster_client if topology == "cluster" else made.client
            self._clients[key] = factory(protocol=protocol, decode_responses=True)
        return self._clients[key]

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for made in self._made.values():
            made.stop()
