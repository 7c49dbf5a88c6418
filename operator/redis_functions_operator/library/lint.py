"""Findings about a library source, with line numbers, before any server sees it (pure).

Two sources, on purpose. What happens while the library *loads* — its registrations, their errors, a ``log`` at
load time, names that differ only in case, a syntax error — comes from the vet (:mod:`.vet`), which runs the top
level as FUNCTION LOAD does: those findings are exact, with the server's own message. What happens when a function
*runs* (unknown globals, undeclared keys, writes under no-writes, reply shapes) is read from the source by the static
reader in ``_lua``: those are hints, tuned for near-zero false positives (when the source does not say enough, a
rule stays quiet), and they never decide whether a library is loaded.

Every rule is backed by a behaviour measured on Redis 7.0.15 and Valkey 9.1.2 (``docs/lua-sandbox.md`` and the
tests). Errors are things a server refuses, crashes on or fails at run time every time; warnings are behaviours that
surprise (lost reply fields, a deterministic PRNG, keys a cluster cannot route).

A finding can be silenced with a comment naming its rule on the same line or the line before:
``-- lint-ignore: undeclared-key`` (several rules separated by commas).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis_functions_operator.library._lua.registrations import Registration, find_registrations
from redis_functions_operator.library._lua.syntax import (
    Assign,
    Binding,
    BinOp,
    Call,
    Const,
    Expr,
    Func,
    FunctionDecl,
    GenFor,
    Index,
    Local,
    MethodCall,
    Name,
    Number,
    Parsed,
    Return,
    Stat,
    String,
    Table,
    UnOp,
    Walker,
    call_graph,
    constant_string,
    dotted,
    parse,
    reachable,
    resolve_value,
    unparen,
)
from redis_functions_operator.library.model import (
    MSG_BAD_NAME,
    MSG_INVALID_METADATA,
    MSG_MISSING_METADATA,
    LibraryError,
    as_bytes,
    parse_shebang,
)
from redis_functions_operator.library.support import SERVERS, cautions, unsupported
from redis_functions_operator.library.vet import LoadOutcome, Vetting, vet, waived_rules


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    line: int
    rule: str
    message: str


#: Every rule id and what it catches.
RULES: dict[str, str] = {
    "shebang": "the first line is not a shebang Redis accepts (#!lua name=<library>)",
    "shebang-quotes": "quotes or backslashes in the shebang line, which Redis and Valkey read differently",
    "syntax": "the source does not compile as Lua 5.1 (the compiler's own message, as FUNCTION LOAD reports it)",
    "no-functions": "no redis.register_function call runs at load time",
    "duplicate-function": "two functions with the same name, or names differing only in case",
    "function-name": "a function name other than letters, digits and underscores",
    "register-arguments": "redis.register_function arguments Redis refuses (unknown key, missing name, ...)",
    "unknown-flag": "a flag that is not no-writes, allow-oom, allow-stale, no-cluster or allow-cross-slot-keys",
    "ignored-flag": "a keyed entry in a flags table, which Redis silently ignores",
    "no-cluster": "the no-cluster flag: the function is refused on every cluster node",
    "nested-registration": "redis.register_function inside a function body (not run at load, fails when called)",
    "top-level-log": "redis.log/server.log called at load time, by any path (crashes Valkey 9.1.2)",
    "top-level-call": "a global other than redis.register_function/log/LOG_*/REDIS_VERSION used at load time",
    "load-error": "any other error the top level raises while FUNCTION LOAD runs it",
    "vet-inconclusive": "the vet could not finish running the load within its bounds (refused: fail closed)",
    "version-dependent": "the top level reads the server version and loads differently on some servers",
    "global-assignment": "an assignment to a global (globals are read-only in Redis Functions)",
    "unknown-global": "a global or redis.* field that does not exist when a function runs",
    "valkey-only": "the server global or server.* / redis.* fields that exist only on Valkey",
    "os-clock": "os.clock, which exists on Redis 7.4+ and Valkey 8.0+ only",
    "deprecated-api": "getfenv, setfenv or newproxy: gone from Redis 8.2.2 (7.2.11, 7.4.6, 8.0.4) and patched builds",
    "unsupported-on-server": "with --server: the named server would fail the load or a function (or has no Lua)",
    "math-random": "math.random/math.randomseed: one deterministic PRNG for all scripts",
    "undeclared-key": "a key argument that is a literal or built inside the function instead of passed in KEYS",
    "deprecated-command": "a command Redis 7.0 marks deprecated (HMSET, GETSET, ZRANGEBYSCORE, ...)",
    "string-key-table": "a returned table with string keys, which the client receives as an empty array",
    "err-table": "a returned {err=..., other=...} table: only the error text reaches the client",
    "write-in-no-writes": "a write command in a function flagged no-writes (or a helper it calls)",
}

# --------------------------------------------------------------------------------- measured environment tables


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Globals a function sees at run time on Redis 7.0.15 (``pairs(_G)`` inside FCALL).
RUNTIME_GLOBALS = _words(
    "_G _VERSION assert bit cjson cmsgpack collectgarbage coroutine error gcinfo getmetatable ipairs load loadstring "
    "math next pairs pcall rawequal rawget rawset redis select setmetatable string struct table tonumber tostring "
    "type unpack xpcall"
)
#: ``redis.*`` fields at run time on Redis 7.0.15.
RUNTIME_FIELDS = _words(
    "LOG_DEBUG LOG_NOTICE LOG_VERBOSE LOG_WARNING REDIS_VERSION REDIS_VERSION_NUM REPL_ALL REPL_AOF REPL_NONE "
    "REPL_REPLICA REPL_SLAVE acl_check_cmd call error_reply log pcall set_repl setresp sha1hex status_reply"
)
#: ``redis.*``/``server.*`` fields only Valkey 9.1.2 has.
VALKEY_ONLY_FIELDS = frozenset(("SERVER_NAME", "VALKEY_VERSION", "VALKEY_VERSION_NUM"))
REDIS_TABLES = ("redis", "server")
CALL_APIS = frozenset(("redis.call", "redis.pcall", "server.call", "server.pcall"))

#: Commands whose first argument is a key (COMMAND first_key == 1 on Redis 7.0.15 or Valkey 9.1.2, excluding
#: noscript commands, SPUBLISH's shard channel and CLUSTERSCAN's cursor).
KEY_COMMANDS = _words(
    "APPEND BITCOUNT BITFIELD BITFIELD_RO BITPOS BLMOVE BLPOP BRPOP BRPOPLPUSH BZPOPMAX BZPOPMIN COPY DECR DECRBY "
    "DEL DELIFEQ DUMP EXISTS EXPIRE EXPIREAT EXPIRETIME GEOADD GEODIST GEOHASH GEOPOS GEORADIUS GEORADIUSBYMEMBER "
    "GEORADIUSBYMEMBER_RO GEORADIUS_RO GEOSEARCH GEOSEARCHSTORE GET GETBIT GETDEL GETEX GETRANGE GETSET HDEL "
    "HEXISTS HEXPIRE HEXPIREAT HEXPIRETIME HGET HGETALL HGETDEL HGETEX HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET HMSET "
    "HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL HRANDFIELD HSCAN HSET HSETEX HSETNX HSTRLEN HTTL HVALS INCR "
    "INCRBY INCRBYFLOAT LCS LINDEX LINSERT LLEN LMOVE LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM MGET MOVE MSET "
    "MSETNX PERSIST PEXPIRE PEXPIREAT PEXPIRETIME PFADD PFCOUNT PFMERGE PSETEX PTTL RENAME RENAMENX RESTORE "
    "RESTORE-ASKING RPOP RPOPLPUSH RPUSH RPUSHX SADD SCARD SDIFF SDIFFSTORE SET SETBIT SETEX SETNX SETRANGE SINTER "
    "SINTERSTORE SISMEMBER SMEMBERS SMISMEMBER SMOVE SORT SORT_RO SPOP SRANDMEMBER SREM SSCAN STRLEN SUBSTR SUNION "
    "SUNIONSTORE TOUCH TTL TYPE UNLINK XACK XADD XAUTOCLAIM XCLAIM XDEL XLEN XPENDING XRANGE XREVRANGE XSETID XTRIM "
    "ZADD ZCARD ZCOUNT ZDIFFSTORE ZINCRBY ZINTERSTORE ZLEXCOUNT ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE "
    "ZRANGEBYLEX ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE "
    "ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE ZUNIONSTORE"
)
#: Commands with the ``write`` flag (COMMAND on Redis 7.0.15 or Valkey 9.1.2, excluding noscript commands): a
#: no-writes function running one gets "Write commands are not allowed from read-only scripts".
WRITE_COMMANDS = _words(
    "APPEND BITFIELD BITOP BLMOVE BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN COPY DECR DECRBY DEL "
    "DELIFEQ EXPIRE EXPIREAT FLUSHALL FLUSHDB GEOADD GEORADIUS GEORADIUSBYMEMBER GEOSEARCHSTORE GETDEL GETEX GETSET "
    "HDEL HEXPIRE HEXPIREAT HGETDEL HGETEX HINCRBY HINCRBYFLOAT HMSET HPERSIST HPEXPIRE HPEXPIREAT HSET HSETEX "
    "HSETNX INCR INCRBY INCRBYFLOAT LINSERT LMOVE LMPOP LPOP LPUSH LPUSHX LREM LSET LTRIM MIGRATE MOVE MSET MSETEX "
    "MSETNX PERSIST PEXPIRE PEXPIREAT PFADD PFDEBUG PFMERGE PSETEX RENAME RENAMENX RESTORE RESTORE-ASKING RPOP "
    "RPOPLPUSH RPUSH RPUSHX SADD SDIFFSTORE SET SETBIT SETEX SETNX SETRANGE SINTERSTORE SMOVE SORT SPOP SREM "
    "SUNIONSTORE SWAPDB UNLINK XACK XADD XAUTOCLAIM XCLAIM XDEL XREADGROUP XSETID XTRIM ZADD ZDIFFSTORE ZINCRBY "
    "ZINTERSTORE ZMPOP ZPOPMAX ZPOPMIN ZRANGESTORE ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE "
    "ZUNIONSTORE"
)
#: ``COMMAND DOCS`` on Redis 7.0.15: deprecated_since and replaced_by (Valkey 9.1.2 lists none of these).
DEPRECATED_COMMANDS = {
    "BRPOPLPUSH": ("6.2.0", "BLMOVE with the RIGHT and LEFT arguments"),
    "GEORADIUS": ("6.2.0", "GEOSEARCH and GEOSEARCHSTORE with the BYRADIUS argument"),
    "GEORADIUS_RO": ("6.2.0", "GEOSEARCH with the BYRADIUS argument"),
    "GEORADIUSBYMEMBER": ("6.2.0", "GEOSEARCH and GEOSEARCHSTORE with the BYRADIUS and FROMMEMBER arguments"),
    "GEORADIUSBYMEMBER_RO": ("6.2.0", "GEOSEARCH with the BYRADIUS and FROMMEMBER arguments"),
    "GETSET": ("6.2.0", "SET with the GET argument"),
    "HMSET": ("4.0.0", "HSET with multiple field-value pairs"),
    "RPOPLPUSH": ("6.2.0", "LMOVE with the RIGHT and LEFT arguments"),
    "SUBSTR": ("2.0.0", "GETRANGE"),
    "ZRANGEBYLEX": ("6.2.0", "ZRANGE with the BYLEX argument"),
    "ZRANGEBYSCORE": ("6.2.0", "ZRANGE with the BYSCORE argument"),
    "ZREVRANGE": ("6.2.0", "ZRANGE with the REV argument"),
    "ZREVRANGEBYLEX": ("6.2.0", "ZRANGE with the REV and BYLEX arguments"),
    "ZREVRANGEBYSCORE": ("6.2.0", "ZRANGE with the REV and BYSCORE arguments"),
}
#: Table keys ``luaReplyToRedisReply`` turns into special replies, in the order Redis checks them, with the Lua
#: type the value must have.
REPLY_KEYS = (
    ("err", "string"),
    ("ok", "string"),
    ("double", "number"),
    ("big_number", "string"),
    ("map", "table"),
    ("set", "table"),
    ("verbatim_string", "table"),
)

_LOAD_TIME_HINT = "only redis.register_function, redis.log and redis.LOG_*/REDIS_VERSION(_NUM) exist at load time"


# ----------------------------------------------------------------------------------------------------- entry point


def lint(source: bytes | str, servers: Sequence[str] = ()) -> list[Finding]:
    """All findings for one library source, sorted by line (errors first within a line). ``servers`` (names of
    :data:`~redis_functions_operator.library.support.SERVERS`) adds, for each, whether that server would fail the
    library: the verdict the engine gives a primary of that version before loading."""
    code = as_bytes(source)
    findings = list(_shebang(code))
    vetting = _vet_body(code)
    if vetting is not None:
        findings.extend(_load_findings(vetting))
        findings.extend(Finding(Severity.WARNING, line, "deprecated-api", text) for line, text in cautions(vetting))
        findings.extend(_server_findings(vetting, servers))
    parsed = parse(code)
    if parsed.error is None and not parsed.problems:
        # the static reader's own view is only a hint: when it cannot read what Lua compiles, it stays quiet
        registrations = find_registrations(parsed, code)
        findings.extend(_nested_registrations(registrations))
        findings.extend(_Linter(parsed, registrations).run())
    return _finish(findings, parsed)


def _server_findings(vetting: Vetting, servers: Sequence[str]) -> Iterable[Finding]:
    for name in servers:
        problem = unsupported(vetting, SERVERS[name])
        if problem is not None:
            yield Finding(Severity.ERROR, problem.line, "unsupported-on-server", f"{name}: {problem.message}")


def _vet_body(code: bytes) -> Vetting | None:
    """The vet's verdict; for a shebang the server refuses, the body behind a stand-in shebang (so one problem
    does not hide the rest), and None when there is no body at all."""
    try:
        return vet(code)
    except LibraryError:
        newline = code.find(b"\n")
        return None if newline < 0 else vet(b"#!lua name=lint" + code[newline:])


def _finish(findings: list[Finding], parsed: Parsed) -> list[Finding]:
    ignored = waived_rules(parsed.comments)
    unique = {f: None for f in findings if f.rule not in ignored.get(f.line, ())}
    return sorted(unique, key=lambda f: (f.line, f.severity is not Severity.ERROR, f.rule, f.message))


# --------------------------------------------------------------------------------------------------------- shebang


def _shebang(code: bytes) -> Iterable[Finding]:
    try:
        parse_shebang(code)
    except LibraryError as exc:
        hint = _shebang_hint(code, exc.message)
        yield Finding(Severity.ERROR, 1, "shebang", f"{exc.message}{f' ({hint})' if hint else ''}")
        return
    first_line = code[: code.find(b"\n")]
    if any(c in first_line for c in b"\"'\\"):
        yield Finding(
            Severity.WARNING,
            1,
            "shebang-quotes",
            "quotes or backslashes in the shebang line: Redis 7.0 and Valkey 9.1 read them differently (#!lua "
            "name='x'y is 'Invalid library metadata' on Redis and loads as xy on Valkey); write #!lua name=<library>",
        )


def _shebang_hint(code: bytes, message: str) -> str:
    if message == MSG_MISSING_METADATA:
        if code.startswith(b"\xef\xbb\xbf"):
            return "the file starts with a UTF-8 BOM: remove the BOM, '#!' must be the very first bytes"
        if code[:1] in (b"\n", b"\r"):
            return "remove the blank line(s) before the shebang, '#!' must be the very first bytes"
        if code[:1] in (b" ", b"\t"):
            return "remove the whitespace before the shebang, '#!' must be the very first bytes"
        return "the first line must be '#!lua name=<library>'"
    if message == MSG_INVALID_METADATA:
        if b"\n" not in code:
            return "the shebang line must end with a newline and be followed by the library code"
        return "unbalanced quotes in the shebang line"
    if message.startswith("Invalid metadata value given:"):
        return "only name=<library> is accepted; keep a version in a comment instead"
    if message.startswith("Engine '"):
        return "the only engine is lua: '#!lua name=<library>'"
    if message == MSG_BAD_NAME:
        return "for example name=my_lib"
    return ""


# ------------------------------------------------------------------------------------------------- from the vet

#: Which rule a load error belongs to, by a fragment of the server's message (first match wins).
_LOAD_ERROR_RULES = (
    ("Error compiling function", "syntax"),
    ("No functions registered", "no-functions"),
    ("unknown flag given", "unknown-flag"),
    ("names can only contain", "function-name"),
    ("Function already exists in the library", "duplicate-function"),
    ("nonexistent global variable", "top-level-call"),
    ("Attempt to modify a readonly table", "global-assignment"),
    ("register_function", "register-arguments"),
)

_LOAD_HINTS = {
    "top-level-call": f" ({_LOAD_TIME_HINT}; move this into a function)",
    "global-assignment": " (globals are read-only: declare it local, keep values in a local table)",
    "no-functions": " (the top level must call redis.register_function)",
}


def _load_findings(vetting: Vetting) -> Iterable[Finding]:
    """Findings from running the load: crashes and refusals first, then what each server replies."""
    refusal = vetting.refusal
    crashes = {(o.crash_rule, o.line): o for o in vetting.outcomes if o.crash}
    for crashed in crashes.values():  # reported even when waived: the comment then silences it like any finding
        yield Finding(Severity.ERROR, crashed.line or 1, crashed.crash_rule, str(crashed.crash))
    if crashes:
        return
    if refusal is not None:
        yield Finding(Severity.ERROR, refusal.line or 1, "vet-inconclusive", f"refused: {refusal.message}")
        return
    on_redis, on_valkey = vetting.outcome("redis"), vetting.outcome("valkey")
    if on_redis.error and on_valkey.error:
        yield _load_error(on_redis, on_valkey)
    elif on_redis.error:
        yield Finding(
            Severity.WARNING,
            on_redis.line or 1,
            "valkey-only",
            f"loads on Valkey only: {on_redis.server} replies '{on_redis.error}' (use redis.*, which both have)",
        )
    elif on_valkey.error:
        rule = _rule_for(on_valkey.error)
        yield Finding(Severity.WARNING, on_valkey.line or 1, rule, f"{on_valkey.server} replies '{on_valkey.error}'")
    yield from _version_findings(vetting)
    loaded = next((o for o in vetting.outcomes if o.loads), None)
    if loaded is not None:
        yield from _flag_findings(loaded)


def _rule_for(error: str) -> str:
    return next((rule for fragment, rule in _LOAD_ERROR_RULES if fragment in error), "load-error")


def _load_error(on_redis: LoadOutcome, on_valkey: LoadOutcome) -> Finding:
    error = str(on_redis.error)
    rule = _rule_for(error)
    line = on_redis.line or on_valkey.line or 1
    message = f"FUNCTION LOAD fails: {error}"
    if on_valkey.error != error:
        message += f" ({on_valkey.server}: {on_valkey.error})"
    if rule == "duplicate-function":
        # Valkey runs the whole top level before it checks names, so its run holds both registrations
        duplicate = next((f.name for f in on_valkey.functions if f.line == on_valkey.line), None)
        twice = [f.line for f in on_valkey.functions if f.name == duplicate]
        if len(twice) >= 2:
            message = f"a function is registered twice (lines {twice[0]} and {twice[1]}): {message}"
    return Finding(Severity.ERROR, line, rule, message + _LOAD_HINTS.get(rule, ""))


def _version_findings(vetting: Vetting) -> Iterable[Finding]:
    if not vetting.version_dependent:
        return
    loads = {o.server: o.loads for o in vetting.outcomes}
    if len(set(loads.values())) > 1:
        failing = next(o for o in vetting.outcomes if not o.loads)
        yield Finding(
            Severity.WARNING,
            failing.line or 1,
            "version-dependent",
            "the top level reads the server version, and the load depends on it: it loads on "
            f"{', '.join(s for s, ok in loads.items() if ok)} but fails on "
            f"{', '.join(s for s, ok in loads.items() if not ok)} ({failing.server}: {failing.error})",
        )


def _flag_findings(outcome: LoadOutcome) -> Iterable[Finding]:
    for function in outcome.functions:
        label = f"function {function.name!r}"
        if "no-cluster" in function.flags:
            yield Finding(
                Severity.WARNING,
                function.line or 1,
                "no-cluster",
                f"{label} has the no-cluster flag: it is refused on every cluster node: "
                "ERR Can not run script on cluster, 'no-cluster' flag is set",
            )
        for key in function.ignored_flags:
            yield Finding(
                Severity.WARNING,
                function.line or 1,
                "ignored-flag",
                f"flags entry {key!r} on {label} is ignored: the server reads only the list part of the flags "
                f"table; write flags = {{'{key}'}}",
            )


def _nested_registrations(registrations: list[Registration]) -> Iterable[Finding]:
    for reg in registrations:
        if not reg.at_load:
            yield Finding(
                Severity.ERROR,
                reg.line,
                "nested-registration",
                f"{reg.api} inside a function body does not register anything at FUNCTION LOAD, and fails when "
                "that function runs: attempt to call field 'register_function' (a nil value); call it at the top "
                "level",
            )


# ------------------------------------------------------------------------------------------------------ tree rules


class _Linter(Walker):
    def __init__(self, parsed: Parsed, registrations: list[Registration]) -> None:
        graph = call_graph(parsed.body)
        super().__init__(set(reachable(graph, [None])))
        self.body = parsed.body
        self.findings: list[Finding] = []
        self.callbacks: dict[Func, Registration] = {}
        self.keys: set[Binding] = set()
        self.args: set[Binding] = set()
        no_writes: list[Func | None] = []
        for reg in registrations:
            func = reg.callback_func
            if func is None or not reg.at_load:
                continue
            self.callbacks.setdefault(func, reg)
            if func.param_bindings:
                self.keys.add(func.param_bindings[0])
            if len(func.param_bindings) > 1:
                self.args.add(func.param_bindings[1])
            if "no-writes" in reg.flags:
                no_writes.append(func)
        #: every function that runs under no-writes, mapped to the no-writes callback that reaches it
        self.no_writes: dict[Func, Func | None] = reachable(graph, no_writes)
        self.sources: dict[Binding, list[Expr]] = {}

    def run(self) -> list[Finding]:
        _Sources(self.sources).walk(self.body)
        self.walk(self.body)
        return self.findings

    def add(self, severity: Severity, line: int, rule: str, message: str) -> None:
        self.findings.append(Finding(severity, line, rule, message))

    # statements
    def on_stat(self, s: Stat) -> None:
        if isinstance(s, Assign):
            for target in s.targets:
                self.check_assignment(target, s.line, None)
        elif isinstance(s, FunctionDecl):
            self.check_assignment(s.target, s.line, s.func)
        elif isinstance(s, Return) and s.values and self.funcs and self.funcs[-1] in self.callbacks:
            value = s.values[0]
            # a table returned through a local is reported on the return line, a constructor where it starts
            self.check_reply(value, self.callbacks[self.funcs[-1]], s.line if isinstance(value, Name) else 0)

    def check_assignment(self, target: Expr, line: int, func: Func | None) -> None:
        if self.at_load:
            return  # the vet runs the load and reports it with the server's message
        root = target
        while isinstance(root, Index):
            root = root.obj
        if not isinstance(root, Name) or root.binding is not None:
            return
        if root is target:
            what = f"function {root.name}() defines the global {root.name!r}" if func else f"{root.name!r} is a global"
            fix = f"use local function {root.name}()" if func else f"declare it with local {root.name}"
        elif root.name in REDIS_TABLES:
            what, fix = f"the {root.name} table is read-only", "keep your own values in a local table"
        else:
            return  # reading another global is reported where it is read
        self.add(
            Severity.ERROR,
            line,
            "global-assignment",
            f"{what}: the function fails when it runs with 'Attempt to modify a readonly table' ({fix})",
        )

    # expressions
    def on_expr(self, e: Expr, parent: Expr | Stat | None) -> None:
        if self.at_load:
            return  # load-time code is the vet's: it ran it
        if isinstance(e, Name):
            if e.binding is None and not self.is_target(e, parent):
                self.check_global(e)
        elif isinstance(e, Index) and not self.is_target(e, parent):
            root = e.obj
            if isinstance(root, Name) and root.binding is None and isinstance(e.key, String):
                self.check_field(e, root.name, e.key.value)  # redis.log and redis['log'] alike
        elif isinstance(e, Call):
            path = dotted(unparen(e.func))
            if path in CALL_APIS:
                self.check_command(e, path)

    @staticmethod
    def is_target(e: Expr, parent: Expr | Stat | None) -> bool:
        if isinstance(parent, Assign):
            return any(t is e for t in parent.targets)
        return isinstance(parent, FunctionDecl) and parent.target is e

    def check_global(self, e: Name) -> None:
        name = e.name
        if name in RUNTIME_GLOBALS or name in ("os", "getfenv", "setfenv", "newproxy"):
            return  # os: see check_field; the other three are the vet's cautions (deprecated-api)
        if name == "server":
            self.add(
                Severity.WARNING,
                e.line,
                "valkey-only",
                "the server global exists only on Valkey: on Redis this fails with 'Script attempted to access "
                "nonexistent global variable 'server'' (redis.* works on both)",
            )
            return
        hint = ""
        if name in ("KEYS", "ARGV"):
            hint = " (KEYS and ARGV exist only in EVAL scripts: a function gets them as its parameters (keys, args))"
        elif name == "print":
            hint = " (use redis.log(redis.LOG_NOTICE, ...))"
        self.add(
            Severity.ERROR,
            e.line,
            "unknown-global",
            f"{name!r} does not exist when the function runs: it fails with 'Script attempted to access "
            f"nonexistent global variable '{name}''{hint}",
        )

    def check_field(self, e: Index, root: str, name: str) -> None:
        if root == "math" and name in ("random", "randomseed"):
            self.add(
                Severity.WARNING,
                e.line,
                "math-random",
                f"math.{name}: every script on the server shares one deterministic PRNG that restarts the same "
                "sequence after every restart (identical on Redis and Valkey); pass random values (ids, tokens) "
                "in from the client",
            )
            return
        if root == "os":
            if name == "clock":
                self.add(
                    Severity.WARNING,
                    e.line,
                    "os-clock",
                    "os.clock exists on Redis 7.4+ and Valkey 8.0+ only: on Redis 7.0/7.2 and Valkey 7.2 the function "
                    "fails with 'Script attempted to access nonexistent global variable 'os'' (redis.call('TIME') "
                    "works everywhere; the operator refuses it for a server that lacks it)",
                )
            else:
                self.add(
                    Severity.ERROR,
                    e.line,
                    "unknown-global",
                    f"os.{name} does not exist when the function runs (Redis has no os global, Valkey only "
                    "os.clock); use redis.call('TIME') for the time",
                )
            return
        if root not in REDIS_TABLES:
            return
        qualified = f"{root}.{name}"
        if name in VALKEY_ONLY_FIELDS:
            self.add(
                Severity.WARNING,
                e.line,
                "valkey-only",
                f"{qualified} exists only on Valkey (nil on Redis)",
            )
        elif name not in RUNTIME_FIELDS and name != "register_function":
            self.add(
                Severity.ERROR,
                e.line,
                "unknown-global",
                f"{qualified} does not exist in Redis Functions (available: {', '.join(sorted(RUNTIME_FIELDS))})",
            )

    # redis.call / redis.pcall
    def check_command(self, call: Call, api: str) -> None:
        if not call.args:
            return
        command = constant_string(call.args[0])
        if command is None:
            return
        command = command.upper()
        line = call.line
        deprecated = DEPRECATED_COMMANDS.get(command)
        if deprecated is not None:
            self.add(
                Severity.WARNING,
                line,
                "deprecated-command",
                f"{command} is deprecated since Redis {deprecated[0]}: use {deprecated[1]}",
            )
        if command in WRITE_COMMANDS:
            self.check_no_writes(command, line)
        if command in KEY_COMMANDS and len(call.args) > 1:
            problem = self.key_problem(call.args[1])
            if problem is not None:
                self.add(
                    Severity.WARNING,
                    call.args[1].line,
                    "undeclared-key",
                    f"{api}('{command}', ...): {problem}; pass keys in KEYS (in a cluster, an undeclared key on "
                    "another node fails with 'Script attempted to access a non local key in a cluster node')",
                )

    def check_no_writes(self, command: str, line: int) -> None:
        for func in reversed(self.funcs):
            if func in self.no_writes:
                root = self.no_writes[func]
                reg = self.callbacks.get(root) if root is not None else None
                owner = f"function {reg.name!r}" if reg is not None and reg.name else "a function"
                via = "" if func is root else f" (through {func.name or 'a helper'}())"
                self.add(
                    Severity.ERROR,
                    line,
                    "write-in-no-writes",
                    f"{command} in {owner}, which has the no-writes flag{via}: it fails with 'Write commands are "
                    "not allowed from read-only scripts' (drop the flag or the write)",
                )
                return

    def key_problem(self, key: Expr) -> str | None:
        origins = self.origins(key, set(), 0)
        if "reply" in origins:
            return None  # derived from data read inside the function: cannot be declared in advance
        literal = constant_string(key)
        if literal is not None:
            return f"the key is the string literal {literal!r}"
        if "args" in origins:
            return "the key comes from args"
        if origins & {"concat", "format"}:
            return "the key is built inside the function"
        return None

    def origins(self, e: Expr, seen: set[Binding], depth: int) -> set[str]:
        """Where a value comes from: literal, concat, format, args, keys, reply (a Redis reply)."""
        if depth > 30:
            return set()
        e = unparen(e)
        if isinstance(e, String | Number):
            return {"literal"}
        if isinstance(e, BinOp):
            if e.op != "..":
                return set()
            return {"concat"} | self.origins(e.left, seen, depth + 1) | self.origins(e.right, seen, depth + 1)
        if isinstance(e, Index):
            return self.origins(e.obj, seen, depth + 1)
        if isinstance(e, Call):
            path = dotted(unparen(e.func))
            if path in CALL_APIS:
                return {"reply"}
            if path == "string.format":
                return {"format"}.union(*(self.origins(a, seen, depth + 1) for a in e.args))
            if path in ("tostring", "string.lower", "string.upper", "ipairs", "pairs", "unpack") and e.args:
                return self.origins(e.args[0], seen, depth + 1)
            return set()
        if isinstance(e, MethodCall):
            if e.method == "format":
                return {"format"}.union(*(self.origins(a, seen, depth + 1) for a in e.args))
            if e.method in ("lower", "upper", "sub"):
                return self.origins(e.obj, seen, depth + 1)
            return set()
        if isinstance(e, Name):
            b = e.binding
            if b is None:
                return {"args"} if e.name == "ARGV" else {"keys"} if e.name == "KEYS" else set()
            if b in self.args:
                return {"args"}
            if b in self.keys or b in seen:
                return {"keys"} if b in self.keys else set()
            seen.add(b)
            return set().union(*(self.origins(v, seen, depth + 1) for v in self.sources.get(b, ())))
        return set()

    # replies
    def check_reply(self, value: Expr, reg: Registration, line: int = 0, depth: int = 0) -> None:
        table = resolve_value(value)
        if not isinstance(table, Table) or depth > 10:
            return
        line = line or table.line
        keyed = [f for f in table.fields if f.key is not None]
        if not keyed:
            for item in table.fields:
                self.check_reply(item.value, reg, 0, depth + 1)
            return
        names = {constant_string(f.key): f for f in keyed if f.key is not None}
        label = f"function {reg.name!r}" if reg.name else "this function"
        for key, kind in REPLY_KEYS:
            special = names.get(key)
            if special is None or not _may_be(special.value, kind):
                continue
            others = sorted(str(k) for k in names if k != key)
            if key == "err":
                if others:
                    self.add(
                        Severity.WARNING,
                        line,
                        "err-table",
                        f"{label} returns {{err=..., {', '.join(others)}}}: the client gets only the error text, "
                        f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} lost; put the details in the "
                        "message: redis.error_reply('CODE details')",
                    )
                return
            if others:
                self.add(
                    Severity.WARNING,
                    line,
                    "string-key-table",
                    f"{label} returns {{{key}=..., {', '.join(others)}}}: only {key} makes the reply, "
                    f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} dropped",
                )
            if key == "map":
                inner = resolve_value(special.value)
                if isinstance(inner, Table):
                    for field in inner.fields:
                        self.check_reply(field.value, reg, 0, depth + 1)
            return
        shown = ", ".join(sorted(str(k) if k is not None else "[...]" for k in names))
        positional = len(table.fields) - len(keyed)
        self.add(
            Severity.WARNING,
            line,
            "string-key-table",
            f"{label} returns a table with string keys ({shown}): "
            + (
                "the client receives an empty array; use {map={...}} for a map reply or "
                "redis.error_reply('CODE details') for an error"
                if not positional
                else "the client receives only the list part, the string keys are dropped"
            ),
        )
        for item in table.fields:
            if item.key is None:
                self.check_reply(item.value, reg, 0, depth + 1)


def _may_be(e: Expr, kind: str) -> bool:
    """False only when ``e`` is certainly not a Lua value of ``kind`` (string, number or table)."""
    value = resolve_value(e)
    if isinstance(value, Const | Func):
        return False
    if isinstance(value, String):
        return kind == "string"
    if isinstance(value, Number):
        return kind in ("number", "string")  # Redis reads a number where it wants a string
    if isinstance(value, Table):
        return kind == "table"
    if isinstance(value, BinOp):
        if value.op == "..":
            return kind == "string"
        if value.op in ("+", "-", "*", "/", "%", "^"):
            return kind in ("number", "string")
        if value.op in ("==", "~=", "<", "<=", ">", ">="):
            return False
    if isinstance(value, UnOp):
        return kind != "table" if value.op in ("-", "#") else False
    return True


class _Sources(Walker):
    """Every expression assigned to each local (declaration, later assignments, generic-for iterators)."""

    def __init__(self, sources: dict[Binding, list[Expr]]) -> None:
        super().__init__()
        self.sources = sources

    def on_stat(self, s: Stat) -> None:
        if isinstance(s, Local):
            if len(s.values) == len(s.names):
                for b, v in zip(s.bindings, s.values, strict=True):
                    self.sources.setdefault(b, []).append(v)
            else:
                for b in s.bindings:
                    self.sources.setdefault(b, []).extend(s.values)
        elif isinstance(s, GenFor):
            for b in s.bindings:
                self.sources.setdefault(b, []).extend(s.exprs)
        elif isinstance(s, Assign):
            same = len(s.targets) == len(s.values)
            for i, target in enumerate(s.targets):
                if isinstance(target, Name) and target.binding is not None:
                    self.sources.setdefault(target.binding, []).extend([s.values[i]] if same else s.values)


__all__ = ["RULES", "Finding", "Severity", "lint"]
