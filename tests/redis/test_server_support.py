"""Version-aware refusal on real servers: discovery learns what each primary is, and the engine refuses a library
on a server that would fail it before anything is sent (``library/support.py``; issue 15 item 3).

The rules are proven differentially on every server of the matrix: a seeded corpus of libraries whose functions
read ``server``, ``os`` or look-alikes of them (locals, fields, strings, comments) is judged by the rules for the
server discovery found, then loaded into that throwaway server and every function called; a library is refused
exactly when the server fails its load or one of its calls.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redis_functions_operator.library import parse_library, vet
from redis_functions_operator.library.support import unsupported
from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Connector, Credentials, Endpoint, Mode, Target
from redis_functions_operator.redis.errors import ErrorKind
from redis_functions_operator.redis.sync import Outcome
from redis_functions_operator.redis.topology import discover
from tests.redis.test_cli import cli
from tests.support import redis_servers as rs

pytestmark = [pytest.mark.redis]

#: What discovery must report for each server of the matrix (Redis 8.0-m01 says 7.9.224).
VERSION_OF = {
    "redis": "7.0.15",
    "valkey": "9.1.2",
    "redis-7.2.6": "7.2.6",
    "redis-7.4.1": "7.4.1",
    "redis-8.0-m01": "7.9.224",
    "valkey-7.2.7": "7.2.7",
    "valkey-8.0.1": "8.0.1",
}

#: Function bodies: reads of the server-dependent globals by several paths, and look-alikes that are no reads.
BODIES = (
    "return server.call('PING')",
    "return server['call']('PING')",
    "local s = server return s.call('PING')",
    "local function inner() return server.pcall('PING') end return inner()",
    "return os.clock() >= 0 and 1 or 0",
    "return os['clock']() >= 0 and 1 or 0",
    "local o = os return type(o)",
    "return redis.call('PING')",
    "local server = redis return server.call('PING')",
    "local os = {clock = function() return 1 end} return os.clock()",
    "local t = {server = 1, os = 2} return t.server + t.os",
    "return 'server.call os.clock' --[[ server os ]]",
    "return tostring(redis.REDIS_VERSION)",
)


def target_of(server: rs.RedisServer) -> Target:
    return Target((Endpoint.parse(server.address),), Mode.AUTO)


def corpus(seed: int, size: int) -> list[bytes]:
    rng = random.Random(seed)
    libraries = []
    for _ in range(size):
        api = "server" if rng.random() < 0.2 else "redis"
        lines = ["#!lua name=support"]
        for i in range(rng.randint(1, 3)):
            lines.append(f"{api}.register_function('f{i}', function(keys, args) {rng.choice(BODIES)} end)")
        libraries.append(("\n".join(lines) + "\n").encode())
    return libraries


def fails_on(client: redis.Redis, code: bytes) -> str | None:
    """Load the library and call every function it registers: the first error the server replies, or None."""
    try:
        client.execute_command("FUNCTION", "LOAD", "REPLACE", code)
    except redis.ResponseError as exc:
        return f"load: {exc}"
    try:
        for i in range(code.count(b"register_function")):
            try:
                client.execute_command("FCALL", f"f{i}", 0)
            except redis.ResponseError as exc:
                return f"call f{i}: {exc}"
        return None
    finally:
        client.execute_command("FUNCTION", "DELETE", "support")


@pytest.mark.parametrize("flavor", rs.MATRIX)
async def test_refused_exactly_where_the_server_fails_it(
    server_factory: Callable[..., rs.RedisServer], flavor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_factory(flavor)
    connector = Connector(target_of(server))
    try:
        topology = await discover(target_of(server), connector)
    finally:
        await connector.aclose()
    (primary,) = topology.primaries
    assert (primary.server.engine, primary.server.version, primary.server.lua) == (
        rs.engine_of(flavor),
        VERSION_OF[flavor],
        True,
    )
    client = server.client(protocol=2)
    tally: Counter[str] = Counter()
    mismatches = []
    for code in corpus(20261206, 120):
        problem = unsupported(vet(code), primary.server)
        failure = fails_on(client, code)
        tally[f"{'refused' if problem else 'accepted'}, server {'fails' if failure else 'runs'} it"] += 1
        if (problem is None) != (failure is None):
            mismatches.append(f"{primary.server.label}: vet {problem}, server {failure}\n{code.decode()}")
        elif failure is not None:
            assert "nonexistent global variable" in failure, failure  # the corpus fails only the way it means to
    with capsys.disabled():
        print(f"\n{primary.server.label}: {dict(sorted(tally.items()))}")
    assert not mismatches, f"{len(mismatches)} disagreements; the first:\n{mismatches[0]}"
    assert tally["accepted, server runs it"] > 0
    # every server but Valkey 8+ (which has both globals) fails some of the corpus: the proof covers refusals
    assert (tally["refused, server fails it"] > 0) == (flavor not in ("valkey", "valkey-8.0.1"))


async def test_no_lua_engine_gets_no_function_load(server_factory: Callable[..., rs.RedisServer]) -> None:
    """Valkey 9.1 with its Lua module unloaded: discovery sees no Lua engine, nothing is sent, and the result says
    why; the same server with Lua back loads the library."""
    server = server_factory("valkey", extra_config={"enable-module-command": "yes"})
    server.admin.execute_command("MODULE", "UNLOAD", "lua")
    library = parse_library("#!lua name=nolua\nredis.register_function('f', function() return 1 end)\n")
    result = await engine.sync(library, target_of(server))
    assert result.error is not None and result.error.kind is ErrorKind.NO_LUA_ENGINE and result.permanent
    assert "Valkey 9.1.2 has no Lua engine" in result.error.message and result.blocking_node == server.address
    assert _calls(server, "function|load") == 0
    server.restart()  # the module is static: a restart brings Lua back
    assert (await engine.sync(library, target_of(server))).ok


async def test_a_mixed_fleet_gets_the_library_nowhere_when_one_server_would_fail_it(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    """Two deployments behind one target, Redis 7.0.15 and Valkey 9.1.2: a library whose function calls
    ``server.call`` is refused for both (no mixed versions), naming the Redis node, its version and the line; the
    Valkey node is skipped, and neither server sees a FUNCTION LOAD."""
    on_redis, on_valkey = server_factory("redis"), server_factory("valkey")
    code = "#!lua name=mixed\nredis.register_function('f', function()\n  return server.call('PING')\nend)\n"
    target = Target((Endpoint.parse(on_redis.address), Endpoint.parse(on_valkey.address)), Mode.STANDALONE)
    result = await engine.sync(parse_library(code), target)
    assert result.error is not None and result.error.kind is ErrorKind.UNSUPPORTED_ON_SERVER
    assert result.blocking_node == on_redis.address
    assert "refused before loading (Redis 7.0.15): line 3: the global 'server' exists on Valkey only" in (
        result.error.message
    )
    assert {n.address: n.outcome for n in result.nodes} == {
        on_redis.address: Outcome.FAILED,
        on_valkey.address: Outcome.SKIPPED,
    }
    assert _calls(on_redis, "function|load") == _calls(on_valkey, "function|load") == 0


async def test_a_user_without_info_is_refused_only_what_depends_on_the_server(
    server_factory: Callable[..., rs.RedisServer],
) -> None:
    """An ACL user without +info: discovery cannot tell the server, so a library that reads os is refused (fail
    closed, saying how to fix it) while a portable one loads."""
    server = server_factory("redis", acl_users=["user deployer on >pw ~* +@all -info"])
    target = Target((Endpoint.parse(server.address),), Mode.STANDALONE, credentials=Credentials("deployer", "pw"))
    portable = parse_library("#!lua name=portable\nredis.register_function('f', function() return 1 end)\n")
    assert (await engine.sync(portable, target)).ok
    clock = parse_library("#!lua name=clock\nredis.register_function('f', function() return os.clock() end)\n")
    result = await engine.sync(clock, target)
    assert result.error is not None and result.error.kind is ErrorKind.UNSUPPORTED_ON_SERVER
    assert "did not say what it is" in result.error.message and "+info" in result.error.message
    assert "clock" not in server.function_libraries()


def _calls(server: rs.RedisServer, command: str) -> int:
    entry = server.info("commandstats").get(f"cmdstat_{command}") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def test_the_cli_refuses_with_exit_3_and_lint_gives_the_same_verdict_offline(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path
) -> None:
    """``sync`` against Redis 7.2.6 refuses a library that calls os.clock (exit 3, the node, its version and the
    line, no FUNCTION LOAD); ``lint --server redis-7.2`` says the same without a server, ``--server redis-7.4``
    does not."""
    server = server_factory("redis-7.2.6")
    path = tmp_path / "clock.lua"
    path.write_text("#!lua name=clock\nredis.register_function('f', function()\n  return os.clock()\nend)\n")
    out = cli("sync", "--redis", f"redis://{server.address}", str(path))
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"{server.address}: UnsupportedOnServer: refused before loading (Redis 7.2.6): line 3: os.clock" in (
        out.stdout
    )
    assert _calls(server, "function|load") == 0
    offline = cli("lint", "--server", "redis-7.2", str(path))
    assert offline.returncode == 1 and f"{path}:3: error: redis-7.2: os.clock exists on Redis 7.4+" in offline.stdout
    newer = cli("lint", "--server", "redis-7.4", str(path))
    assert newer.returncode == 0 and "unsupported-on-server" not in newer.stdout
