"""Lint rules: each fires on a minimal example (with its line) and stays quiet on the correct form.

The claims the messages make about servers ("FUNCTION LOAD fails with ...", "fails when it runs", "the client
receives an empty array", "crashes") are checked against real servers at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_functions_operator.library.lint import RULES, Finding, Severity, lint
from redis_functions_operator.library.lint_rules import SHARED_PARTS, TABLE, Rule
from redis_functions_operator.library.support import SERVERS
from tests.support import redis_servers as rs

REPO = Path(__file__).resolve().parents[2]
LUA_DIR = REPO / "lua"
HEAD = "#!lua name=t\n"
OK = "redis.register_function('ok', function() return 1 end)\n"


def found(code: str | bytes) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in lint(code)]


def only(code: str | bytes, rule: str) -> list[Finding]:
    return [f for f in lint(code) if f.rule == rule]


# ----------------------------------------------------------------------------------------------------- shebang


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"\xef\xbb\xbf#!lua name=t\n" + OK.encode(), "Missing library metadata (the file starts with a UTF-8 BOM:"),
        (b"\n#!lua name=t\n" + OK.encode(), "Missing library metadata (remove the blank line(s) before the shebang"),
        (b" #!lua name=t\n" + OK.encode(), "Missing library metadata (remove the whitespace before the shebang"),
        (b"#!lua name=t", "Invalid library metadata (the shebang line must end with a newline"),
        (b"#!lua name=t version=1.0\n" + OK.encode(), "Invalid metadata value given: version=1.0 (only name="),
        (b"#!python name=t\n" + OK.encode(), "Engine 'python' not found (the only engine is lua"),
        (b"#!lua name=my-lib\n" + OK.encode(), "Library names can only contain letters"),
        (b"#!lua\n" + OK.encode(), "Library name was not given"),
    ],
)
def test_shebang(source: bytes, message: str) -> None:
    findings = only(source, "shebang")
    assert len(findings) == 1
    assert findings[0].line == 1
    assert findings[0].severity is Severity.ERROR
    assert findings[0].message.startswith(message)


def test_shebang_problems_do_not_hide_the_rest() -> None:
    source = b"\xef\xbb\xbf#!lua name=t\ncounter = 0\n" + OK.encode()
    assert found(source) == [(1, "shebang"), (2, "global-assignment")]


def test_shebang_quotes() -> None:
    assert found(b'#!lua name="t"\n' + OK.encode()) == [(1, "shebang-quotes")]
    assert found(b"#!lua name=t\n" + OK.encode()) == []


# ---------------------------------------------------------------------------------------------- registrations

CASES: list[tuple[str, str, list[tuple[int, str]]]] = [
    # (id, body after the shebang line, expected (line, rule) findings)
    ("no-functions", "local function f() return 1 end\n", [(1, "no-functions")]),
    (
        "nested-registration",
        "redis.register_function('outer', function()\n  redis.register_function('inner', function() end)\nend)\n",
        [(3, "nested-registration")],
    ),
    (
        "only-nested-registration",
        "local function f()\n  redis.register_function('inner', f)\nend\n",
        [(1, "no-functions"), (3, "nested-registration")],
    ),
    ("duplicate", OK + OK, [(3, "duplicate-function")]),
    (
        "duplicate-case-through-helper",
        "local function reg(name, cb)\n  redis.register_function(name, cb)\nend\n"
        "reg('cs_a', function() return 1 end)\nreg('CS_A', function() return 2 end)\n",
        [(6, "duplicate-function")],
    ),
    # names computed at load time are known exactly: the vet ran the loop
    (
        "case-clash-computed-in-a-loop",
        "local names = {'dup_fn', 'DUP_FN'}\nfor i = 1, 2 do redis.register_function(names[i], function() return i end) end\n",
        [(3, "duplicate-function")],
    ),
    (
        "case-clash-through-a-helper-called-in-a-loop",
        "local function reg(name)\n  redis.register_function(name, function() return 1 end)\nend\n"
        "local ns = {'a', 'A'}\nfor i = 1, 2 do reg(ns[i]) end\n",
        [(6, "duplicate-function")],
    ),
    (
        "case-clash-through-a-helper-that-escapes",
        "local function reg(name)\n  redis.register_function(name, function() return 1 end)\nend\n"
        "local t = {reg}\nreg('a')\nt[1]('A')\n",
        [(7, "duplicate-function")],
    ),
    (
        "case-clash-through-an-alias",
        "local r = redis\nr.register_function('fa', function() end)\nr.register_function('FA', function() end)\n",
        [(4, "duplicate-function")],
    ),
    (
        "duplicate-case",
        "redis.register_function('cart_add', function() end)\nredis.register_function('Cart_Add', function() end)\n",
        [(3, "duplicate-function")],
    ),
    ("function-name", "redis.register_function('my-func', function() end)\n", [(2, "function-name")]),
    ("function-name-empty", "redis.register_function('', function() end)\n", [(2, "function-name")]),
    ("positional-3-args", "redis.register_function('f', function() end, {'no-writes'})\n", [(2, "register-arguments")]),
    (
        "unknown-key",
        "redis.register_function{function_name='f', callback=function() end, version='1.0'}\n",
        [(2, "register-arguments")],
    ),
    ("missing-callback", "redis.register_function{function_name='f'}\n", [(2, "register-arguments")]),
    ("missing-name", "redis.register_function{callback=function() end}\n", [(2, "register-arguments")]),
    ("callback-string", "redis.register_function('f', 'f')\n", [(2, "register-arguments")]),
    (
        "flags-string",
        "redis.register_function{function_name='f', callback=function() end, flags='no-writes'}\n",
        [(2, "register-arguments")],
    ),
    (
        "unknown-flag",
        "redis.register_function{function_name='f', callback=function() end,\n  flags={'no-writes', 'fast'}}\n",
        [(2, "unknown-flag")],
    ),
    (
        "ignored-flag",
        "redis.register_function{function_name='f', callback=function() end, flags={['no-writes']=true}}\n",
        [(2, "ignored-flag")],
    ),
    (
        "no-cluster",
        "redis.register_function{function_name='f', callback=function() end, flags={'no-writes', 'no-cluster'}}\n",
        [(2, "no-cluster")],
    ),
    # load time
    ("top-level-log", "redis.log(redis.LOG_NOTICE, 'loading')\n" + OK, [(2, "top-level-log")]),
    ("top-level-log-server", "server.log(server.LOG_NOTICE, 'x')\n" + OK, [(2, "top-level-log")]),
    ("top-level-log-alias", "local r = redis\nr.log(r.LOG_WARNING, 'x')\n" + OK, [(3, "top-level-log")]),
    (
        "top-level-log-in-a-module-init",
        "local M = {}\nfunction M.init()\n  redis.log(redis.LOG_NOTICE, 'init')\nend\nM.init()\n" + OK,
        [(6, "top-level-log")],
    ),
    (
        "top-level-log-after-a-multi-line-string-call",
        'local function f(s) return function() return s end end\nlocal v = f"a\\\nb"()\n'
        "redis.log(redis.LOG_WARNING, 'loading chain')\n" + OK,
        [(5, "top-level-log")],
    ),
    ("load-error", "local x = nil + 1\n" + OK, [(2, "load-error")]),
    ("vet-inconclusive-loop", "while true do end\n" + OK, [(2, "vet-inconclusive")]),
    (
        "vet-inconclusive-pattern",
        "local s = ('a'):rep(40):find(('a*'):rep(20) .. 'b')\n" + OK,
        [(2, "vet-inconclusive")],
    ),
    (
        "version-dependent",
        "if redis.REDIS_VERSION_NUM >= 0x070400 then local x = nil + 1 end\n" + OK,
        [(2, "version-dependent")],
    ),
    ("top-level-call", "local pong = redis.call('PING')\n" + OK, [(2, "top-level-call")]),
    ("top-level-pcall", "local x = redis.pcall('GET', 'k')\n" + OK, [(2, "top-level-call")]),
    ("top-level-global", "local fmt = string.format\n" + OK, [(2, "top-level-call")]),
    ("top-level-tonumber", "local n = tonumber('1')\n" + OK, [(2, "top-level-call")]),
    ("top-level-cjson", "if cjson then end\n" + OK, [(2, "top-level-call")]),
    (
        "helper-called-at-load",
        "local function setup()\n  return redis.call('PING')\nend\nsetup()\n" + OK,
        [(3, "top-level-call")],
    ),
    ("global-assignment", "counter = 0\n" + OK, [(2, "global-assignment")]),
    ("global-function", "function helper() return 1 end\n" + OK, [(2, "global-assignment")]),
    ("redis-field-assignment", "redis.my_value = 1\n" + OK, [(2, "global-assignment")]),
    (
        "global-assignment-at-run-time",
        "redis.register_function('f', function()\n  seen = true\n  return 1\nend)\n",
        [(3, "global-assignment")],
    ),
    ("valkey-only-top-level", "server.register_function('f', function() return 1 end)\n", [(2, "valkey-only")]),
    (
        "deprecated-api",
        "redis.register_function('f', function()\n  return type(getfenv) .. type(newproxy)\nend)\n",
        [(3, "deprecated-api"), (3, "deprecated-api")],
    ),
    # run time
    ("unknown-global-print", "redis.register_function('f', function() print('x') end)\n", [(2, "unknown-global")]),
    (
        "unknown-global-KEYS",
        "redis.register_function('f', function()\n  return redis.call('GET', KEYS[1])\nend)\n",
        [(3, "unknown-global")],
    ),
    (
        "unknown-redis-field",
        "redis.register_function('f', function() redis.breakpoint() end)\n",
        [(2, "unknown-global")],
    ),
    ("unknown-os-field", "redis.register_function('f', function() return os.time() end)\n", [(2, "unknown-global")]),
    (
        "valkey-only-server",
        "redis.register_function('f', function() return server.call('PING') end)\n",
        [(2, "valkey-only")],
    ),
    ("os-clock", "redis.register_function('f', function() return os.clock() end)\n", [(2, "os-clock")]),
    (
        "valkey-only-field",
        "redis.register_function('f', function() return redis.VALKEY_VERSION end)\n",
        [(2, "valkey-only")],
    ),
    (
        "math-random",
        "local function id()\n  return math.random(1, 100)\nend\nlocal function seed() math.randomseed(1) end\n" + OK,
        [(3, "math-random"), (5, "math-random")],
    ),
    (
        "deprecated-hmset",
        "redis.register_function('f', function(keys, args)\n  return redis.call('HMSET', keys[1], 'a', 1)\nend)\n",
        [(3, "deprecated-command")],
    ),
    (
        "deprecated-zrangebyscore",
        "redis.register_function('f', function(keys)\n  return redis.pcall('zrangebyscore', keys[1], 0, 1)\nend)\n",
        [(3, "deprecated-command")],
    ),
    (
        "write-in-no-writes",
        "local function calc(keys, args)\n  redis.call('SET', keys[1], 'x')\n  return 1\nend\n"
        "redis.register_function{function_name='calc', callback=calc, flags={'no-writes'}}\n",
        [(3, "write-in-no-writes")],
    ),
    (
        "write-in-no-writes-registered-through-helper",
        "local function ro(name, cb)\n  redis.register_function{function_name=name, callback=cb, flags={'no-writes'}}\nend\n"
        "ro('f', function(keys)\n  return redis.call('DEL', keys[1])\nend)\n",
        [(6, "write-in-no-writes")],
    ),
    (
        "write-in-no-writes-through-helper",
        "local function touch(key)\n  redis.call('EXPIRE', key, 10)\nend\n"
        "local function get(keys)\n  touch(keys[1])\n  return redis.call('GET', keys[1])\nend\n"
        "redis.register_function{function_name='get', callback=get, flags={'no-writes'}}\n",
        [(3, "write-in-no-writes")],
    ),
]

QUIET: list[tuple[str, str]] = [
    ("positional", OK),
    ("table-form", "redis.register_function{function_name='f', callback=function() end, flags={'no-writes'}}\n"),
    ("flags-case-insensitive", "redis.register_function{function_name='f', callback=function() end, flags={'NO-WRITES'}}\n"),
    ("all-valid-flags", "redis.register_function{function_name='f', callback=function() end, flags={'no-writes', "
     "'allow-oom', 'allow-stale', 'allow-cross-slot-keys'}}\n"),
    ("description", "redis.register_function{function_name='f', callback=function() end, description='d'}\n"),
    ("load-time-api", "local v = redis.REDIS_VERSION .. redis.REDIS_VERSION_NUM\nlocal l = redis.LOG_WARNING\n" + OK),
    ("local-alias", "local register = redis.register_function\nregister('f', function() return 1 end)\n"),
    ("registration-through-helper", "local function reg(name, cb)\n  redis.register_function(name, cb)\nend\n"
     "reg('f', function() return 1 end)\nreg('g', function() return 1 end)\n"),
    ("computed-name-accepted-by-comment", "local names = {'a', 'b'}\nfor i = 1, 2 do\n"
     "  -- lint-ignore: computed-function-name\n  redis.register_function(names[i], function() return 1 end)\nend\n"),
    ("locals-and-tables", "local M = {}\nfunction M.f() return 1 end\nlocal n\nn = 1\nM.x = n\n" + OK),
    ("runtime-globals", "redis.register_function('f', function(keys, args)\n  local t = {cjson.encode({}), "
     "cmsgpack.pack(1), bit.band(1, 1), struct.pack('b', 1), string.len('x'), table.concat({}), math.floor(1.5), "
     "tonumber('1'), tostring(1), type(1), unpack({1}), select('#'), _G, _VERSION}\n  redis.setresp(3)\n"
     "  return redis.sha1hex(redis.status_reply('x').ok)\nend)\n"),
    ("call-in-uncalled-helper", "local function helper()\n  return redis.call('PING')\nend\n" + OK),
    ("declared-keys", "redis.register_function('f', function(keys, args)\n  local k = keys[1]\n"
     "  redis.call('SET', k, args[1])\n  return redis.call('GET', keys[2])\nend)\n"),
    ("keyless-commands", "redis.register_function('f', function(keys, args)\n  redis.call('PUBLISH', 'chan', args[1])\n"
     "  return redis.call('TIME')\nend)\n"),
    ("dynamic-command", "redis.register_function('f', function(keys, args)\n  return redis.call(args[1], 'k')\nend)\n"),
    ("key-from-reply", "redis.register_function('f', function(keys, args)\n  local n = 0\n"
     "  for _, id in ipairs(redis.call('SMEMBERS', keys[1])) do\n    n = n + redis.call('DEL', args[1] .. id)\n"
     "  end\n  return n\nend)\n"),
    ("reply-shapes", "redis.register_function('f', function(keys, args)\n  if args[1] == 'a' then return "
     "{map={a='1', b={map={c='2'}}}} end\n  if args[1] == 'b' then return {double=1.5} end\n"
     "  if args[1] == 'c' then return {ok='DONE'} end\n  if args[1] == 'd' then return {set={a=true}} end\n"
     "  if args[1] == 'e' then return {err='CODE details'} end\n  return {1, 2, {3}}\nend)\n"),
    ("record-from-helper", "local function parse(s)\n  return {raw=s, n=#s}\nend\n"
     "redis.register_function('f', function(keys, args)\n  return parse(args[1]).n\nend)\n"),
    ("no-writes-reads", "redis.register_function{function_name='f', flags={'no-writes'}, callback=function(keys)\n"
     "  return redis.call('GET', keys[1])\nend}\n"),
    ("writer-without-flag", "redis.register_function('f', function(keys)\n  return redis.call('INCR', keys[1])\nend)\n"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_fires(body: str, expected: list[tuple[int, str]]) -> None:
    assert found(HEAD + body) == expected


@pytest.mark.parametrize("body", [q[1] for q in QUIET], ids=[q[0] for q in QUIET])
def test_rule_stays_quiet(body: str) -> None:
    assert lint(HEAD + body) == []


def test_every_rule_is_exercised() -> None:
    exercised = {rule for _, _, expected in CASES for _, rule in expected}
    exercised |= {"shebang", "shebang-quotes", "syntax", "undeclared-key", "string-key-table", "err-table"}
    exercised |= {"unsupported-on-server"}  # test_server_verdicts
    assert exercised == set(RULES)


def test_server_verdicts() -> None:
    """``lint --server`` gives the verdict the engine gives a primary of that version, before any load."""
    body = "redis.register_function('f', function()\n  return os.clock()\nend)\n"
    verdicts = [(f.line, f.rule, f.message.split(":")[0]) for f in lint(HEAD + body, ["redis-7.2", "redis-7.4"])]
    assert verdicts == [
        (3, "unsupported-on-server", "redis-7.2"),
        (3, "os-clock", "os.clock exists on Redis 7.4+ and Valkey 8.0+ only"),
    ]


def test_messages_name_both_lines_of_a_duplicate() -> None:
    (finding,) = only(HEAD + OK + "\n" + OK, "duplicate-function")
    assert "lines 2 and 4" in finding.message
    assert "Function already exists in the library" in finding.message
    (finding,) = only(HEAD + OK + OK.replace("'ok'", "'OK'"), "duplicate-function")
    assert "'OK' (line 3) differs only in case from 'ok' (line 2)" in finding.message
    assert "aborts" in finding.message


def test_load_time_messages_quote_redis() -> None:
    (finding,) = only(HEAD + "local x = redis.call('PING')\n" + OK, "top-level-call")
    assert "Script attempted to access nonexistent global variable 'call'" in finding.message
    (finding,) = only(HEAD + "x = 1\n" + OK, "global-assignment")
    assert "Attempt to modify a readonly table" in finding.message
    (finding,) = only(HEAD + "local x = 1\n", "no-functions")
    assert "No functions registered" in finding.message
    (finding,) = only(HEAD + "redis.register_function{function_name='f', callback=function() end, flags={'x'}}\n",
                      "unknown-flag")  # fmt: skip
    assert "unknown flag given" in finding.message


# ------------------------------------------------------------------------------------------------ undeclared keys


UNDECLARED = [
    ("literal", "redis.call('GET', 'config')", "the key is the string literal 'config'"),
    ("concat-args", "redis.call('SADD', 'user_sessions:' .. args[1], 'x')", "the key comes from args"),
    ("args-directly", "redis.call('DEL', args[1])", "the key comes from args"),
    ("format", "redis.call('GET', string.format('k:%s', keys[1]))", "the key is built inside the function"),
    ("method-format", "redis.call('GET', ('k:%s'):format(keys[1]))", "the key is built inside the function"),
    ("suffix-on-declared-key", "redis.call('GET', keys[1] .. ':meta')", "the key is built inside the function"),
    ("constant-local", "redis.call('GET', CONFIG)", "the key is the string literal 'config'"),
]


@pytest.mark.parametrize(("call", "message"), [u[1:] for u in UNDECLARED], ids=[u[0] for u in UNDECLARED])
def test_undeclared_key(call: str, message: str) -> None:
    code = f"{HEAD}local CONFIG = 'config'\nredis.register_function('f', function(keys, args)\n  return {call}\nend)\n"
    findings = only(code, "undeclared-key")
    assert [(f.line, f.severity) for f in findings] == [(4, Severity.WARNING)]
    assert message in findings[0].message


def test_undeclared_key_follows_locals_and_renamed_parameters() -> None:
    code = f"""{HEAD}local function create(k, a)
  local user_id = a[1]
  local session_key = 'session:' .. user_id
  redis.call('HSET', session_key, 'user', user_id)
  redis.call('EXPIRE', k[1], 10)
end
redis.register_function('create', create)
"""
    assert found(code) == [(5, "undeclared-key")]


def test_seed_style_sessions_library() -> None:
    code = f"""{HEAD}local function generate_id()
  local id = ''
  for i = 1, 32 do
    id = id .. string.char(math.random(97, 122))
  end
  return id
end

local function session_create(keys, args)
  local session_key = 'session:' .. generate_id()
  redis.call('HMSET', session_key, 'user_id', args[1])
  redis.call('EXPIRE', session_key, 3600)
  redis.call('SADD', 'user_sessions:' .. args[1], session_key)
  return {{ok=true, session=session_key}}
end

redis.register_function('session_create', session_create)
"""
    assert found(code) == [
        (5, "math-random"),
        (12, "deprecated-command"),
        (12, "undeclared-key"),
        (13, "undeclared-key"),
        (14, "undeclared-key"),
        (15, "string-key-table"),
    ]


# ------------------------------------------------------------------------------------------------------- replies


REPLIES = [
    ("string-keys", "{tokens = 1, last_update = 2}", "string-key-table", "(last_update, tokens): the client receives"),
    ("ok-not-a-string", "{ok = true, quantity = 2}", "string-key-table", "empty array"),
    ("mixed", "{1, 2, foo = 'bar'}", "string-key-table", "only the list part"),
    ("local-table", "result", "string-key-table", "(a)"),
    ("nested-in-map", "{map = {items = {total = 1}}}", "string-key-table", "(total)"),
    ("nested-in-array", "{1, {a = 1}}", "string-key-table", "(a)"),
    ("map-with-extra", "{map = {a = '1'}, b = 2}", "string-key-table", "only map makes the reply, b is dropped"),
    ("err-with-extra", "{err = 'INSUFFICIENT_STOCK', available = 3}", "err-table", "available is lost"),
]


@pytest.mark.parametrize(("expr", "rule", "message"), [r[1:] for r in REPLIES], ids=[r[0] for r in REPLIES])
def test_reply_tables(expr: str, rule: str, message: str) -> None:
    code = (
        f"{HEAD}redis.register_function('f', function(keys, args)\n  local result = {{a = 1}}\n  return {expr}\nend)\n"
    )
    assert found(code) == [(4, rule)]
    assert message in lint(code)[0].message


# --------------------------------------------------------------------------------------------- syntax, robustness


def test_syntax_errors_are_the_compilers_own() -> None:
    code = HEAD + OK + "local s = [==[ never closed ]]\n"
    (finding,) = lint(code)
    assert (finding.line, finding.rule, finding.severity) == (4, "syntax", Severity.ERROR)
    assert "Error compiling function: user_function:4: unfinished long string near '<eof>'" in finding.message


def test_a_syntax_error_stops_the_load_as_it_does_on_a_server() -> None:
    code = HEAD + OK + "local x = = 1\n" + OK
    assert found(code) == [(3, "syntax")]


@pytest.mark.parametrize(
    "body",
    [
        'local function f(s) return s end\nlocal v = f"a\\\nb"\n',  # '(' or a string on the line where a string ends
        "local function f(x) return x end\nlocal g = 1\nlocal t = { f\n(g) }\n",  # a bare name, then '(' on the next line, in a table
    ],
)
def test_valid_lua_the_static_reader_misread_is_not_a_syntax_error(body: str) -> None:
    assert found(HEAD + body + OK) == []


def test_findings_are_sorted_errors_first() -> None:
    code = HEAD + "redis.register_function('f', function() return math.random() end)\ncounter = 1\n"
    assert found(code) == [(2, "math-random"), (3, "global-assignment")]


def test_lint_ignore_comments() -> None:
    code = f"""{HEAD}redis.register_function('f', function(keys, args)
  -- lint-ignore: undeclared-key
  redis.call('GET', 'config')
  return redis.call('GET', 'other') -- lint-ignore: undeclared-key, deprecated-command
end)
local x = math.random -- lint-ignore: undeclared-key
"""
    assert found(code) == [(7, "top-level-call")]


def test_text_and_bytes_agree() -> None:
    code = HEAD + "counter = 0\n" + OK
    assert lint(code) == lint(code.encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_never_raises(code: bytes) -> None:
    for finding in lint(b"#!lua name=fuzz\n" + code):
        assert finding.rule in RULES
        assert finding.line >= 1


@pytest.mark.skipif(not LUA_DIR.is_dir(), reason="lua/ not present")
def test_corrected_libraries_have_no_findings() -> None:
    paths = sorted(LUA_DIR.glob("*.lua"))
    assert paths
    for path in paths:
        assert lint(path.read_bytes()) == [], path.name


# ------------------------------------------------------------------------------------------------ the rule table

#: Sources for the wordings in ``lint_rules.py`` that the examples above do not reach, each with its findings
#: (line, rule, severity, start of the message).
MORE_WORDINGS: list[tuple[str, str, list[tuple[int, str, Severity, str]]]] = [
    (
        "no-shebang",
        "-- my library\n" + OK,
        [(1, "shebang", Severity.ERROR, "Missing library metadata (the first line must be '#!lua name=<library>')")],
    ),
    (
        "unbalanced-quotes",
        "#!lua name='t\n" + OK,
        [(1, "shebang", Severity.ERROR, "Invalid library metadata (unbalanced quotes in the shebang line)")],
    ),
    ("shebang-quotes", '#!lua name="t"\n' + OK, [(1, "shebang-quotes", Severity.WARNING, "quotes or backslashes in the")]),
    ("syntax", HEAD + "local x = = 1\n", [(2, "syntax", Severity.ERROR, "FUNCTION LOAD fails: Error compiling")]),
    (
        "duplicate-and-unknown-flag",
        HEAD + OK + OK + "redis.register_function{function_name='f', callback=function() end, flags={'fast'}}\n",
        [(3, "duplicate-function", Severity.ERROR, "FUNCTION LOAD fails: Error registering functions: ERR Function "
          "already exists in the library (Valkey 9.1.2: Error registering functions: ERR unknown flag given)")],
    ),
    (
        # Redis 7.0 loads it and Valkey refuses it: a warning, under the rule of Valkey's error
        "only-valkey-refuses",
        HEAD + "if redis.REDIS_VERSION_NUM > 0x070100 then local x = nil + 1 end\n" + OK,
        [
            (2, "load-error", Severity.WARNING, "Valkey 9.1.2 replies 'Error registering functions: ERR user_function"),
            (2, "version-dependent", Severity.WARNING, "the top level reads the server version, and the load depends"),
        ],
    ),
    (
        "run-time-global-function-and-redis-field",
        HEAD + "redis.register_function('f', function()\n  function helper() return 1 end\n  redis.x = 1\n  return 1\nend)\n",
        [
            (3, "global-assignment", Severity.ERROR, "function helper() defines the global 'helper': the function"),
            (4, "global-assignment", Severity.ERROR, "the redis table is read-only: the function fails when it runs"),
        ],
    ),
    (
        "reply-of-an-unnamed-function",
        HEAD + "for i = 1, 1 do\n  redis.register_function('f' .. i, function()\n    return {a = 1}\n  end)\nend\n",
        [(4, "string-key-table", Severity.WARNING, "this function returns a table with string keys (a): the client")],
    ),
    (
        "write-in-an-unnamed-no-writes-function",
        HEAD + "for i = 1, 1 do\n  redis.register_function{function_name='f' .. i, flags={'no-writes'},\n"
        "    callback=function(keys) return redis.call('SET', keys[1], 'x') end}\nend\n",
        [(4, "write-in-no-writes", Severity.ERROR, "SET in a function, which has the no-writes flag: it fails")],
    ),
    (
        "write-through-an-unnamed-helper",
        HEAD + "local h = function(k)\n  redis.call('DEL', k)\nend\nlocal function g(keys)\n  h(keys[1])\n  return 1\nend\n"
        "redis.register_function{function_name='g', flags={'no-writes'}, callback=g}\n",
        [(3, "write-in-no-writes", Severity.ERROR, "DEL in function 'g', which has the no-writes flag (through a helper())")],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("source", "expected"), [m[1:] for m in MORE_WORDINGS], ids=[m[0] for m in MORE_WORDINGS])
def test_more_wordings(source: str, expected: list[tuple[int, str, Severity, str]]) -> None:
    findings = lint(source)
    assert [(f.line, f.rule, f.severity) for f in findings] == [e[:3] for e in expected]
    for finding, (*_, start) in zip(findings, expected, strict=True):
        assert finding.message.startswith(start), finding.message


def test_every_wording_in_the_rule_table_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every word lint says is in one table (``lint_rules.py``): each rule's message and each part, its own or
    shared, is reached by an example in this file, so none is dead and none goes untested."""
    used: set[tuple[str, str]] = set()
    template = Rule.template

    def recording(rule: Rule, name: str = "") -> str:
        used.add((rule.id if not name or name in rule.parts else "shared", name))
        return template(rule, name)

    monkeypatch.setattr(Rule, "template", recording)
    shebangs = next(mark.args[1] for mark in test_shebang.pytestmark if mark.name == "parametrize")  # type: ignore[attr-defined]
    sources: list[str | bytes] = [source for source, _ in shebangs]
    sources += [source for _, source, _ in MORE_WORDINGS] + [HEAD + body for _, body, _ in CASES]
    sources += [
        f"{HEAD}local CONFIG = 'config'\nredis.register_function('f', function(keys, args)\n  return {call}\nend)\n"
        for _, call, _ in UNDECLARED
    ]
    sources += [
        f"{HEAD}redis.register_function('f', function(keys, args)\n  local result = {{a = 1}}\n  return {expr}\nend)\n"
        for _, expr, _, _ in REPLIES
    ]
    for source in sources:
        lint(source, list(SERVERS))
    wordings = {(rule.id, "") for rule in TABLE.values() if rule.message is not None}
    wordings |= {(rule.id, name) for rule in TABLE.values() for name in rule.parts}
    wordings |= {("shared", name) for name in SHARED_PARTS}
    assert wordings - used == set()


# ----------------------------------------------------------------------------------- the claims, on real servers


def _load(client: redis.Redis, code: str) -> str | None:
    """None if FUNCTION LOAD accepted ``code``, else the error text."""
    try:
        client.execute_command("FUNCTION", "LOAD", "REPLACE", code)
    except redis.ResponseError as exc:
        return str(exc)
    return None


LOAD_FAILS = [
    # (body, text the server's error contains) -- each body lints with an error that says FUNCTION LOAD fails
    ("local pong = redis.call('PING')\n" + OK, "nonexistent global variable 'call'"),
    ("local fmt = string.format\n" + OK, "nonexistent global variable 'string'"),
    ("local function setup()\n  return redis.call('PING')\nend\nsetup()\n" + OK, "nonexistent global variable 'call'"),
    ("counter = 0\n" + OK, "Attempt to modify a readonly table"),
    ("function helper() return 1 end\n" + OK, "Attempt to modify a readonly table"),
    ("redis.my_value = 1\n" + OK, "Attempt to modify a readonly table"),
    ("local function f() return 1 end\n", "No functions registered"),
    (OK + OK, "Function already exists in the library"),
    ("redis.register_function('my-func', function() end)\n", "can only contain letters, numbers, or underscores"),
    ("redis.register_function('f', function() end, {'no-writes'})\n", "wrong number of arguments to"),
    ("redis.register_function{function_name='f', callback=function() end, version='1'}\n", "unknown argument given"),
    ("redis.register_function{function_name='f'}\n", "must get a callback argument"),
    ("redis.register_function{callback=function() end}\n", "must get a function name argument"),
    ("redis.register_function('f', 'f')\n", "second argument to redis.register_function must be a function"),
    ("redis.register_function{function_name='f', callback=function() end, flags='no-writes'}\n",
     "flags argument to redis.register_function must be a table representing function flags"),
    ("redis.register_function{function_name='f', callback=function() end, flags={'fast'}}\n", "unknown flag given"),
]  # fmt: skip


@pytest.mark.redis
def test_load_time_claims_on_redis(redis_standalone: rs.RedisServer, unique_name: str) -> None:
    client = redis_standalone.client()
    try:
        for body, text in LOAD_FAILS:
            code = f"#!lua name={unique_name}\n" + body.replace("'f'", f"'{unique_name}_f'").replace(
                "'ok'", f"'{unique_name}_ok'"
            )
            assert any(f.severity is Severity.ERROR for f in lint(code)), body
            error = _load(client, code)
            assert error is not None and text in error, (body, error)
        # valkey-only is a warning (a Valkey-only deployment is fine), but Redis does refuse it
        code = f"#!lua name={unique_name}\nserver.register_function('{unique_name}_f', function() return 1 end)\n"
        assert [(f.rule, f.severity) for f in lint(code)] == [("valkey-only", Severity.WARNING)]
        assert "nonexistent global variable 'server'" in str(_load(client, code))
        for _, body in QUIET:  # everything lint is quiet about loads (function names made unique)
            code = f"#!lua name={unique_name}\n" + body.replace("'f'", f"'{unique_name}_f'").replace(
                "'ok'", f"'{unique_name}_ok'"
            )
            assert _load(client, code) is None, body
        client.execute_command("FUNCTION", "DELETE", unique_name)
    finally:
        client.close()


RUN_TIME = [
    # (callback body, flags, expected FCALL outcome: ("error", text) or ("reply", value))
    ("print('x') return 1", "", ("error", "nonexistent global variable 'print'")),
    ("return KEYS[1]", "", ("error", "nonexistent global variable 'KEYS'")),
    ("seen = true return 1", "", ("error", "Attempt to modify a readonly table")),
    ("redis.register_function('late', function() end) return 1", "", ("error", "attempt to call field")),
    ("return redis.call('SET', keys[1], 'x')", "'no-writes'", ("error", "Write commands are not allowed")),
    ("return {tokens = 1, last_update = 2}", "", ("reply", [])),
    ("return {ok = true, quantity = 2}", "", ("reply", [])),
    ("return {1, 2, foo = 'bar'}", "", ("reply", [1, 2])),
    ("return {err = 'INSUFFICIENT_STOCK', available = 3}", "", ("error", "INSUFFICIENT_STOCK")),
    ("return {map = {a = '1'}, b = 2}", "", ("reply", [b"a", b"1"])),
]


@pytest.mark.redis
def test_run_time_claims_on_redis(redis_standalone: rs.RedisServer, unique_name: str) -> None:
    client = redis_standalone.client(protocol=2)
    try:
        for i, (body, flags, (kind, expected)) in enumerate(RUN_TIME):
            name = f"{unique_name}_{i}"
            code = (
                f"#!lua name={unique_name}\nredis.register_function{{function_name='{name}', "
                f"callback=function(keys, args) {body} end, flags={{{flags}}}}}\n"
            )
            assert lint(code) != [], body
            assert _load(client, code) is None, body
            if kind == "error":
                with pytest.raises(redis.ResponseError) as info:
                    client.fcall(name, 1, f"{unique_name}:k")
                assert str(expected) in str(info.value), body
                assert "available" not in str(info.value)
            else:
                assert client.fcall(name, 1, f"{unique_name}:k") == expected, body
        client.execute_command("FUNCTION", "DELETE", unique_name)
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_case_only_duplicates_crash_the_server(
    server_factory: Callable[..., rs.RedisServer], unique_name: str, flavor: str
) -> None:
    """Why duplicate-function also compares case-insensitively: such a library loads, but replacing or deleting it
    fails an assertion in functions.c and kills Redis 7.0.15 and Valkey 9.1.2."""
    server = server_factory(flavor)
    code = (
        f"#!lua name={unique_name}\nredis.register_function('cs_a', function() return 'lower' end)\n"
        "redis.register_function('CS_A', function() return 'upper' end)\n"
    )
    assert [f.rule for f in lint(code)] == ["duplicate-function"]
    client = server.admin  # no retries
    assert client.execute_command("FUNCTION", "LOAD", code) == unique_name.encode()
    assert client.fcall("CS_A", 0) == client.fcall("cs_a", 0)  # only one of the two is reachable
    with pytest.raises(redis.ConnectionError):
        client.execute_command("FUNCTION", "DELETE", unique_name)
    rs.wait_until(lambda: not server.is_running(), timeout=15, message="the server to die")
    assert "'ret == DICT_OK' is not true" in server.log_file.read_text(errors="replace")
