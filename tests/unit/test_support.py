"""``library/support.py`` and ``library/_lua/bytecode.py``: which servers a vetted library can run on.

The verdicts here are the rules as written; ``tests/redis/test_server_support.py`` proves them against every server
of the matrix (a generated corpus, each library loaded and each function called on a throwaway server).
"""

from __future__ import annotations

import pytest

from redis_functions_operator.library import vet
from redis_functions_operator.library.support import (
    NO_LUA_ENGINE,
    SERVERS,
    UNSUPPORTED_ON_SERVER,
    Server,
    cautions,
    profile_for,
    unsupported,
)

SHEBANG = "#!lua name=lib\n"


def verdicts(body: str) -> dict[str, str | None]:
    vetting = vet(SHEBANG + body)
    return {name: (u.reason if (u := unsupported(vetting, server)) else None) for name, server in SERVERS.items()}


def refused_on(body: str) -> set[str]:
    return {name for name, reason in verdicts(body).items() if reason}


REDIS = {n for n in SERVERS if n.startswith("redis")}
VALKEY = {n for n in SERVERS if n.startswith("valkey")}
WITHOUT_OS = {"redis-7.0", "redis-7.2", "valkey-7.2"}


@pytest.mark.parametrize(
    "body",
    [
        "redis.register_function('f', function(keys) return server.call('GET', keys[1]) end)",
        "redis.register_function('f', function() return server['call']('PING') end)",
        "redis.register_function('f', function() local s = server return s.call('PING') end)",
        "local function inner() return function() return server.pcall('PING') end end\n"
        "redis.register_function('f', function() return inner()() end)",
    ],
)
def test_the_server_global_in_a_function_is_refused_on_every_redis(body: str) -> None:
    assert refused_on(body) == REDIS


def test_the_server_global_while_loading_is_refused_on_redis_as_a_load_failure() -> None:
    vetting = vet(SHEBANG + "server.register_function('f', function() return 1 end)")
    problem = unsupported(vetting, SERVERS["redis-7.4"])
    assert problem is not None and problem.reason == UNSUPPORTED_ON_SERVER
    assert problem.message.startswith("FUNCTION LOAD would fail on Redis 7.4.1:")
    assert "nonexistent global variable 'server'" in problem.message and problem.line == 2
    assert all(unsupported(vetting, SERVERS[n]) is None for n in VALKEY)


@pytest.mark.parametrize(
    "call", ["os.clock()", "os['clock']()", "(function() local o = os return o.clock() end)()", "type(os)"]
)
def test_os_is_refused_where_the_sandbox_lacks_it(call: str) -> None:
    body = f"redis.register_function('f', function() return {call} end)"
    assert refused_on(body) == WITHOUT_OS
    problem = unsupported(vet(SHEBANG + body), SERVERS["redis-7.2"])
    assert (
        problem is not None and problem.line == 2 and "os.clock exists on Redis 7.4+ and Valkey 8.0+" in problem.message
    )


@pytest.mark.parametrize(
    "body",
    [
        "local server = redis\nserver.register_function('f', function() return server.call('PING') end)",
        "local os = {clock = function() return 1 end}\nredis.register_function('f', function() return os.clock() end)",
        "redis.register_function('f', function() local t = {server = 1, os = 2} return t.server + t.os end)",
        "-- server.call and os.clock in a comment\nredis.register_function('f', function() return 'server os' end)",
    ],
)
def test_locals_fields_strings_and_comments_named_like_them_are_not_reads(body: str) -> None:
    assert refused_on(body) == set()
    assert unsupported(vet(SHEBANG + body), Server()) is None


def test_a_waiver_on_the_line_is_the_authors_word() -> None:
    body = (
        "redis.register_function('f', function()\n"
        "  if tonumber(redis.REDIS_VERSION_NUM) >= 0x070400 then\n"
        "    -- lint-ignore: os-clock\n"
        "    return os.clock()\n"
        "  end\n"
        "  return 0\n"
        "end)"
    )
    assert refused_on(body) == set()
    assert refused_on(body.replace("-- lint-ignore: os-clock", "-- checked above")) == WITHOUT_OS


def test_a_waiver_must_cover_every_read() -> None:
    body = (
        "redis.register_function('f', function() return server.call('PING') end) -- lint-ignore: valkey-only\n"
        "\n"
        "redis.register_function('g', function() return server.call('PING') end)"
    )
    problem = unsupported(vet(SHEBANG + body), SERVERS["redis-7.0"])
    assert problem is not None and problem.line == 4


def test_a_version_check_in_the_top_level_is_judged_per_release() -> None:
    body = (
        "if redis.REDIS_VERSION_NUM < 0x070400 then redis.register_function('old', function() return 1 end) end\n"
        "redis.register_function('f', function() return 1 end)\n"
        "if redis.REDIS_VERSION_NUM < 0x070400 then redis.register_function('f', function() return 2 end) end"
    )
    # below 7.4 (every Valkey says 7.2.4) the second registration of 'f' fails the load
    assert refused_on(body) == {"redis-7.0", "redis-7.2"} | VALKEY


def test_no_lua_engine_refuses_any_library_before_anything_else() -> None:
    vetting = vet(SHEBANG + "redis.register_function('f', function() return 1 end)")
    problem = unsupported(vetting, Server("valkey", "9.1.2", lua=False))
    assert (
        problem is not None and problem.reason == NO_LUA_ENGINE and "Valkey 9.1.2 has no Lua engine" in problem.message
    )
    assert unsupported(vetting, Server("valkey", "9.1.2", lua=True)) is None


def test_an_unknown_server_refuses_only_what_depends_on_the_server() -> None:
    plain = vet(SHEBANG + "redis.register_function('f', function() return redis.call('PING') end)")
    assert unsupported(plain, Server()) is None
    for body in (
        "redis.register_function('f', function() return os.clock() end)",
        "server.register_function('f', function() return 1 end)",
    ):
        problem = unsupported(vet(SHEBANG + body), Server())
        assert problem is not None and "did not say what it is" in problem.message and "+info" in problem.message


@pytest.mark.parametrize(
    "body",
    [
        "redis.register_function('f', function() return 1 end",  # does not compile
        "os.exit(1)\nredis.register_function('f', function() return 1 end)",  # os at load time: no server has it
        "server.call('PING')\nredis.register_function('f', function() return os.clock() end)",
    ],
)
def test_a_library_that_fails_everywhere_is_left_to_the_canary(body: str) -> None:
    """No server loads it, so nothing is ever called: the canary reports the server's own error (CompileError),
    whatever globals it reads (the bad-input suite's compile/os case)."""
    vetting = vet(SHEBANG + body)
    assert all(unsupported(vetting, s) is None for s in [*SERVERS.values(), Server()])


def test_deprecated_globals_are_cautions_not_refusals() -> None:
    vetting = vet(SHEBANG + "redis.register_function('f', function() return type(getfenv) .. type(newproxy) end)")
    assert refused_on("redis.register_function('f', function() return type(getfenv) end)") == set()
    found = cautions(vetting)
    assert [line for line, _ in found] == [2, 2]
    assert all("lua-enable-deprecated-api yes" in text for _, text in found)


@pytest.mark.parametrize(
    ("server", "label"),
    [
        (Server("redis", "7.0.15"), "Redis 7.0.15"),
        (Server("redis", "7.2.11"), "Redis 7.2.6"),
        (Server("redis", "7.9.224"), "Redis 8.0-m01"),
        (Server("redis", "8.2.2"), "Redis 8.0-m01"),
        (Server("redis", "6.2.14"), "Redis 7.0.15"),
        (Server("valkey", "8.1.3"), "Valkey 8.0.1"),
        (Server("valkey", "9.1.2"), "Valkey 9.1.2"),
    ],
)
def test_each_server_is_run_as_the_nearest_measured_release(server: Server, label: str) -> None:
    profile = profile_for(server)
    assert profile is not None and profile.label == label


def test_an_unknown_server_has_no_profile() -> None:
    assert profile_for(Server()) is None and profile_for(Server("redis", "")) is None
