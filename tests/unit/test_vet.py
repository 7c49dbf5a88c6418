"""The vet: a library's load, run in a Lua 5.1 sandbox with the server's load-time environment.

What it finds (functions, flags, logs, the server's error) is checked here on hand-picked cases; that the sandbox
answers as a real server does is proven differentially in tests/redis/test_vet_differential.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_functions_operator.library import LibraryError, LoadOutcome, Vetting, vet
from redis_functions_operator.library.vet import BUDGET_INSTRUCTIONS, BY_LABEL, COST_LIMIT, run_loads

REPO = Path(__file__).resolve().parents[2]
LUA_DIR = REPO / "lua"
HEAD = "#!lua name=t\n"
OK = "redis.register_function('ok', function() return 1 end)\n"


def functions(code: str | bytes) -> list[tuple[str, tuple[str, ...], int]]:
    return [(f.name, f.flags, f.line) for f in vet(code).library.functions]


def names(code: str | bytes) -> list[str]:
    return [f.name for f in vet(code).library.functions]


def redis_error(code: str | bytes) -> str | None:
    return vet(code).outcome("redis").error


# ---------------------------------------------------------------------------------------------- registrations


def test_positional_and_table_forms() -> None:
    code = """#!lua name=x
local function cb(keys, args) return 1 end
redis.register_function('single', cb)
redis.register_function("double", function(keys, args)
  return 2
end)
redis.register_function{function_name='ro', callback=cb, flags={'no-writes', 'allow-oom'}, description='d'}
redis.register_function({
  function_name = "paren",
  callback = cb,
  flags = { "allow-stale" },
})
redis.register_function{FUNCTION_NAME='upper_keys', CALLBACK=cb, FLAGS={'NO-WRITES'}}
"""
    assert functions(code) == [
        ("single", (), 3),
        ("double", (), 4),
        ("ro", ("no-writes", "allow-oom"), 7),
        ("paren", ("allow-stale",), 8),
        ("upper_keys", ("no-writes",), 13),  # keys and flags are case-insensitive on the server
    ]
    assert vet(code).library.functions[2].description == "d"


def test_every_path_to_register_function_is_seen() -> None:
    code = """#!lua name=x
server.register_function('v', function() return 1 end)
local register = redis.register_function
register('aliased', function() return 1 end)
local lib = redis
lib.register_function{function_name='through_table', callback=function() return 1 end}
local M = {reg = redis.register_function}
function M.init() M.reg('from_module_init', function() return 1 end) end
M.init()
for _, n in ipairs_free_loop or {} do end
"""
    # 'server' is Valkey only, and ipairs does not exist at load time: the two engines' answers differ
    assert redis_error(code) == (
        "Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable "
        "'server'"
    )
    valkey = vet(code).outcome("valkey")
    assert valkey.error is not None and "ipairs_free_loop" in valkey.error
    assert [f.name for f in valkey.functions] == ["v", "aliased", "through_table", "from_module_init"]


def test_computed_names_are_known_exactly() -> None:
    code = """#!lua name=x
local PREFIX = 'shop_'
local names = {'a', 'b', 'c'}
for i = 1, #names do
  redis.register_function(PREFIX .. names[i], function() return i end)
end
redis.register_function(16, function() return 1 end)
redis.register_function(('up'):upper(), function() return 1 end)
"""
    assert names(code) == ["shop_a", "shop_b", "shop_c", "16", "UP"]  # a number is registered as its text
    assert vet(code).safe


def test_flags_are_read_from_the_list_part_only() -> None:
    code = """#!lua name=x
local function pick() return 'no-writes' end
redis.register_function{function_name='a', callback=function() return 1 end, flags={'allow-oom', pick()}}
redis.register_function{function_name='b', callback=function() return 1 end, flags={['no-writes']=true}}
"""
    (a, b) = vet(code).library.functions
    assert (a.flags, b.flags, b.ignored_flags) == (("allow-oom", "no-writes"), (), ("no-writes",))


def test_lines_are_the_top_level_statement() -> None:
    code = b"#!lua name=x\r\n\r\nredis\r\n  .register_function(\r\n'f', function() return 1 end)\r\n"
    assert functions(code) == [("f", (), 4)]
    helper = HEAD + "local function reg(n)\n  redis.register_function(n, function() end)\nend\nreg('a')\nreg('b')\n"
    assert functions(helper) == [("a", (), 5), ("b", (), 6)]


@pytest.mark.skipif(not LUA_DIR.is_dir(), reason="lua/ not present")
def test_corrected_libraries() -> None:
    expected = {
        "cart.lua": ["cart_add", "cart_remove", "cart_get", "cart_clear"],
        "flags.lua": ["get_value", "important_write", "calculate"],
        "mylib.lua": ["increment_counter", "decrement_counter", "hello"],
        "ratelimiter.lua": ["check_rate_limit", "get_rate_limit_status"],
        "sessions.lua": ["session_create", "session_get", "session_peek", "session_destroy", "session_destroy_all"],
    }
    for path in sorted(LUA_DIR.glob("*.lua")):
        vetting = vet(path.read_bytes())
        assert vetting.safe, path.name
        assert all(o.loads for o in vetting.outcomes), path.name
        assert [f.name for f in vetting.library.functions] == expected[path.name]


# -------------------------------------------------------------------------------- what the server would reply


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("local x = string\n" + OK, "ERR user_function:2: Script attempted to access nonexistent global variable 'string'"),
        ("x = 1\n" + OK, "ERR user_function:2: Attempt to modify a readonly table"),
        ("redis.log = 1\n" + OK, "ERR user_function:2: Attempt to modify a readonly table"),
        ("local x = nil + 1\n" + OK, "ERR user_function:2: attempt to perform arithmetic on a nil value"),
        ("local x = ('x'):rep()\n" + OK, "ERR user_function:2: bad argument #1 to 'rep' (number expected, got no value)"),
        (OK + OK, "ERR Function already exists in the library"),
        ("redis.register_function('f-x', function() end)\n", "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"),
        ("redis.register_function{function_name='f', callback=function() end, flags={'nope'}}\n", "ERR unknown flag given"),
        ("redis.register_function{function_name='f', callback=function() end, flags=redis}\n", "ERR Script attempted to access nonexistent global variable '1'"),
        ("redis.register_function()\n", "ERR wrong number of arguments to redis.register_function"),
        ("redis.register_function{[true]=1}\n", "ERR named argument key given to redis.register_function is not a string"),
        ("redis.register_function(redis)\n", "ERR unknown argument given to redis.register_function"),
        ("redis.log()\n" + OK, "ERR redis.log() requires two arguments or more."),
        ("redis.log(9, 'x')\n" + OK, "ERR Invalid debug level."),
    ],
)  # fmt: skip
def test_load_errors_in_the_servers_words(body: str, error: str) -> None:
    assert redis_error(HEAD + body) == f"Error registering functions: {error}"


def test_compile_and_empty_library_errors() -> None:
    assert redis_error(HEAD + "local x = (\n" + OK) == (
        "Error compiling function: user_function:4: ')' expected (to close '(' at line 2) near '<eof>'"
    )
    assert redis_error(HEAD + "local x = 1\n") == "No functions registered"


def test_valkey_checks_names_after_the_top_level_ran() -> None:
    """Valkey 9.1.2 records registrations and validates them once the top level returns: a run goes on past a
    duplicate (and so reaches a log call after it), and the reply has no 'Error registering functions' prefix."""
    both = vet(HEAD + OK + OK + "local n = 1\n")
    assert both.outcome("redis").error == "Error registering functions: ERR Function already exists in the library"
    assert both.outcome("valkey").error == "Function already exists in the library"
    after = vet(HEAD + OK + OK + "redis.log(redis.LOG_NOTICE, 'x')\n")
    assert after.outcome("redis").crash is None and after.outcome("valkey").crash is not None
    assert after.refusal is not None and after.refusal.reason == "UnsafeLibrary"


def test_top_level_logs_are_recorded_on_redis() -> None:
    vetting = vet(HEAD + "local L = redis\nL.log(L.LOG_NOTICE, 'a')\nL.log(L.LOG_DEBUG, 'b', 'c')\n" + OK)
    assert vetting.outcome("redis").log_lines == (3, 4)


# ------------------------------------------------------------------------------------ what can crash a server


@pytest.mark.parametrize(
    "body",
    [
        "local r = redis\nr.log(r.LOG_WARNING, 'x')\n",
        "local s = server\ns.log(s.LOG_WARNING, 'x')\n",
        "local t = {redis.log}\nt[1](redis.LOG_NOTICE, 'x')\n",
        "local M = {}\nfunction M.init() redis.log(redis.LOG_NOTICE, 'init') end\nM.init()\n",
        "for i = 1, 3 do if i == 3 then redis.log(redis.LOG_NOTICE, 'x') end end\n",
        "local function f(s) return function() return s end end\nlocal v = f\"a\\\nb\"()\nredis.log(redis.LOG_WARNING, 'x')\n",
        "local k = 'l' .. 'og'\nredis[k](3, 'x')\n",
        "redis.log()\n",  # Valkey aborts before it counts the arguments
        "('x'):gsub('x', redis.log)\n",
    ],
)  # fmt: skip
def test_a_log_at_load_time_is_refused_by_any_path(body: str) -> None:
    refusal = vet(HEAD + body + OK).refusal
    assert refusal is not None and refusal.reason == "UnsafeLibrary"
    assert "Valkey 9.1.2 aborts during FUNCTION LOAD" in refusal.message


@pytest.mark.parametrize(
    "body",
    [
        "local L = redis.log\nredis.register_function('f', function() L(redis.LOG_WARNING, 'x') return 1 end)\n",
        "redis.register_function('f', function() redis.log(redis.LOG_WARNING, 'x') return 1 end)\n",
        "local function never() redis.log(3, 'x') end\n" + OK,
        "if false then redis.log(3, 'x') end\n" + OK,
    ],
)
def test_a_log_that_does_not_run_at_load_time_is_fine(body: str) -> None:
    assert vet(HEAD + body).safe


def test_a_waived_log_never_hides_another_servers_crash() -> None:
    code = (
        HEAD + "-- lint-ignore: top-level-log\nredis.log(3, 'x')\nlocal n = {'fa'}\n"
        "if redis.REDIS_VERSION_NUM >= 0x070400 then n[2] = 'FA' end\n"
        "for i = 1, #n do redis.register_function(n[i], function() end) end\n"
    )
    vetting = vet(code)
    assert vetting.outcome("redis").loads and vetting.outcome("valkey").crash is not None  # the waived one
    assert vetting.refusal is not None and "aborts Redis 7.4.1" in vetting.refusal.message
    assert vet(code.replace("n[2] = 'FA'", "n[2] = 'fb'")).safe  # the waiver alone lets it through


@pytest.mark.parametrize(
    "body",
    [
        "redis.register_function('fa', function() end)\nredis.register_function('FA', function() end)\n",
        "local r = redis\nr.register_function('fa', function() end)\nr.register_function('FA', function() end)\n",
        "local n = {'x', 'X'}\nfor i = 1, #n do redis.register_function(n[i], function() end) end\n",
    ],
)
def test_names_equal_but_for_case_are_refused(body: str) -> None:
    refusal = vet(HEAD + body).refusal
    assert refusal is not None and refusal.reason == "UnsafeLibrary"
    assert "differs only in case" in refusal.message


def test_a_case_clash_in_a_library_that_fails_to_load_is_not_a_crash() -> None:
    vetting = vet(
        HEAD
        + "redis.register_function('ab', function() end)\n" * 1
        + "redis.register_function('AB', function() end)\nlocal x = nil + 1\n"
    )
    assert vetting.safe and vetting.outcome("redis").error is not None  # fmt: skip


# ----------------------------------------------------------------------------------------- bounded, fail closed


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("while true do end\n", f"more than {BUDGET_INSTRUCTIONS:,} Lua instructions"),
        ("local t = {} for i = 1, 1e9 do t[i] = i end\n", "allocated more than"),
        ("local s = 'x' for i = 1, 40 do s = s .. s end\n", "allocated more than"),
        ("local s = ('x'):rep(1e9)\n", f"({COST_LIMIT:,} steps)"),
        ("local s = (''):rep(2^31 - 1)\n", f"({COST_LIMIT:,} steps)"),
        ("local s = ('a'):rep(40):find(('a*'):rep(20) .. 'b')\n", "pattern match"),
        ("local s = ('a'):rep(5000):gsub('(a*)(a*)(a*)b', '%1')\n", "pattern match"),
    ],
)
def test_runaway_loads_are_refused_as_undecidable(body: str, says: str) -> None:
    refusal = vet(HEAD + body + OK).refusal
    assert refusal is not None and refusal.reason == "VetInconclusive"
    assert says in refusal.message


@pytest.mark.parametrize(
    "body",
    [
        "local function f(n) return 1 + f(n + 1) end\nf(1)\n",
        "local function f(s) return (s:gsub('.', f)) end\nf('x')\n",  # through a C function: Lua's C stack limit
    ],
)
def test_recursion_without_end_is_refused_as_undecidable(body: str) -> None:
    """Lua stops it at its own limit, which the vet's hook shares: where exactly the server would stop is not
    knowable here, and the server fails that load anyway."""
    refusal = vet(HEAD + body + OK).refusal
    assert refusal is not None and refusal.reason == "VetInconclusive"
    assert "recurses deeper than Lua allows" in refusal.message


def test_nesting_too_deep_for_the_compiler_is_its_own_error() -> None:
    error = redis_error(HEAD + "local x = " + "(" * 300 + "1" + ")" * 300 + "\n")
    assert error is not None and "chunk has too many syntax levels" in error


def test_cheap_string_work_at_load_time_is_allowed() -> None:
    code = HEAD + "local names = {}\nfor n in ('a,b,c'):gmatch('[^,]+') do names[#names + 1] = n end\n"
    code += "for i = 1, #names do redis.register_function(('%s_fn'):format(names[i]), function() end) end\n"
    assert names(code) == ["a_fn", "b_fn", "c_fn"]


@pytest.mark.parametrize(
    "name",
    ["io", "os", "package", "debug", "require", "loadfile", "dofile", "loadstring", "load", "getfenv", "setfenv",
     "pcall", "error", "setmetatable", "getmetatable", "rawset", "string", "_G", "python", "collectgarbage"],
)  # fmt: skip
def test_nothing_but_the_load_environment_is_reachable(name: str) -> None:
    error = redis_error(HEAD + f"local x = {name}\n" + OK)
    assert error == (
        f"Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable "
        f"'{name}'"
    )


def test_the_string_metatable_leads_nowhere_else() -> None:
    # the one shared object: its methods work, but it holds no path to the sandbox or to Python
    assert names(
        HEAD + "local d = ('').dump\nlocal s = ('').sub\nredis.register_function(s('okay', 1, 2), function() end)\n"
    ) == ["ok"]
    assert "attempt to index" in str(redis_error(HEAD + "local x = ('').rep.x\n" + OK))  # fmt: skip


def test_the_string_library_at_load_time_is_the_servers() -> None:
    """Measured on Redis 7.0.15 and Valkey 9.1.2: these methods exist at load time (gfind is gmatch), no others."""
    measured = [
        "byte",
        "char",
        "dump",
        "find",
        "format",
        "gfind",
        "gmatch",
        "gsub",
        "len",
        "lower",
        "match",
        "rep",
        "reverse",
        "sub",
        "upper",
    ]
    probe = "\n".join(
        f"redis.register_function('{m}' .. (('').{m} and '' or '_missing'), function() end)" for m in measured
    )
    assert names(HEAD + probe + "\n") == measured
    assert names(HEAD + "redis.register_function(('').gfind == ('').gmatch and 'same' or 'no', function() end)\n") == [
        "same"
    ]
    assert redis_error(HEAD + "local x = ('').nope\n" + OK) is None  # a missing method is nil, not an error


def test_version_fields_make_the_vet_try_every_known_server() -> None:
    code = HEAD + "if redis.REDIS_VERSION_NUM >= 0x070400 then redis.log(redis.LOG_NOTICE, 'new') end\n" + OK
    vetting = vet(code)
    assert vetting.version_dependent
    assert {o.server for o in vetting.outcomes} >= {"Redis 7.0.15", "Redis 7.4.1", "Valkey 9.1.2", "Valkey 8.0.1"}
    assert vetting.safe  # Valkey's REDIS_VERSION_NUM is 7.2.4 on every release, so no Valkey logs
    valkey_only = HEAD + "if server.VALKEY_VERSION_NUM >= 0x080000 then server.log(3, 'x') end\n" + OK
    assert not vet(valkey_only).safe


def on(label: str, body: str) -> LoadOutcome:
    code = (HEAD + body).encode()
    return run_loads(code[code.index(b"\n") :], (BY_LABEL[label],))[0][0]


def test_each_server_of_the_matrix_has_its_own_profile() -> None:
    """What differs between servers while loading (proven on each real server by the matrix differential test)."""
    log = "redis.log()\n" + OK
    assert on("Valkey 9.1.2", log).crash is not None  # the only one that aborts
    assert (
        on("Valkey 8.0.1", log).error == "Error registering functions: ERR server.log() requires two arguments or more."
    )
    assert (
        on("Valkey 7.2.7", log).error == "Error registering functions: ERR redis.log() requires two arguments or more."
    )
    assert (
        on("Redis 7.4.1", log).error == "Error registering functions: ERR redis.log() requires two arguments or more."
    )
    twice = OK + OK + "local x = nil + 1\n"  # Valkey 9.1 runs on past the duplicate; the others stop at it
    assert (
        on("Valkey 9.1.2", twice).error
        == "Error registering functions: ERR user_function:4: attempt to perform arithmetic on a nil value"
    )
    assert on("Valkey 8.0.1", twice).error == "Error registering functions: ERR Function already exists in the library"
    uses_server = "server.register_function('s', function() end)\n"
    for label in ("Valkey 7.2.7", "Valkey 8.0.1", "Valkey 9.1.2"):
        assert on(label, uses_server).loads, label
    for label in ("Redis 7.0.15", "Redis 7.2.6", "Redis 7.4.1", "Redis 8.0-m01"):
        assert "nonexistent global variable 'server'" in str(on(label, uses_server).error), label
    version = "redis.register_function('v' .. redis.REDIS_VERSION_NUM, function() end)\n"
    assert [f.name for f in on("Redis 8.0-m01", version).functions] == [f"v{(7 << 16) | (9 << 8) | 224}"]


def test_a_refused_shebang_raises_like_the_model() -> None:
    with pytest.raises(LibraryError, match="Missing library metadata"):
        vet(b"\n#!lua name=x\n" + OK.encode())


def test_verdicts_are_cached_by_code() -> None:
    code = HEAD + "-- cached\n" + OK
    assert vet(code) is vet(code.encode())


ATOMS = ["redis", "server", ".", "register_function", "log", "(", ")", "{", "}", "'f'", '"F"', "[[", "]]", "--",
         "function", "end", "=", ",", "flags", "function_name", "callback", "local", "x", "\n", " ", "'", '"', "..",
         "...", "for", "in", "next", "do", "while", "true", "if", "then", "return", ":rep(", ":gsub(", "1e9", "#",
         "\xff", "\0"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ATOMS), max_size=60).map("".join))
def test_never_raises_and_always_decides(code: str) -> None:
    vetting: Vetting = vet(("#!lua name=fuzz\n" + code).encode("utf-8", "surrogatepass"))
    for outcome in vetting.outcomes:
        assert sum(x is not None for x in (outcome.error, outcome.crash, outcome.stopped)) <= 1
    assert vetting.safe == all(not (o.crash or o.stopped) for o in vetting.outcomes)
