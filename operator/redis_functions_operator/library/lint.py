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

The rules — id, severity, what each catches, every word of its findings — are one table, :mod:`.lint_rules`. This
module only *finds*: one small function per family of rules (the shebang, the load as the vet ran it, server
support, registrations, globals and the sandbox, ``redis.call`` usage, replies) yields hits (:class:`Hit`: a rule,
a line and the values its template needs), and :func:`_finding` alone turns a hit into the :class:`Finding` users
read. A new rule is a table entry and a ``yield``.

A finding can be silenced with a comment naming its rule on the same line or the line before:
``-- lint-ignore: undeclared-key`` (several rules separated by commas).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

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
from redis_functions_operator.library.lint_rules import TABLE, Part, Severity
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


@dataclass(frozen=True)
class Finding:
    """One thing lint says about a source: what ``lint`` prints, and what ``--strict`` and the exit code judge."""

    severity: Severity
    line: int
    rule: str
    message: str


#: Every rule id and what it catches (the table's, for callers that only list the rules).
RULES: dict[str, str] = {rule.id: rule.catches for rule in TABLE.values()}


@dataclass(frozen=True)
class Hit:
    """What a family of rules found: the rule, the line, and the values the rule's template needs. ``part`` picks
    another of the rule's wordings than its message; ``severity`` overrides the rule's, for the one finding whose
    severity depends on which server refuses (:func:`_load_hits`)."""

    rule: str
    line: int
    values: Mapping[str, object] = field(default_factory=dict)
    part: str = ""
    severity: Severity | None = None


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

#: ``redis.*`` fields a function can use, as the unknown-global finding lists them.
_AVAILABLE_FIELDS = ", ".join(sorted(RUNTIME_FIELDS))


# ----------------------------------------------------------------------------------------------------- entry point


def lint(source: bytes | str, servers: Sequence[str] = ()) -> list[Finding]:
    """All findings for one library source, sorted by line (errors first within a line). ``servers`` (names of
    :data:`~redis_functions_operator.library.support.SERVERS`) adds, for each, whether that server would fail the
    library: the verdict the engine gives a primary of that version before loading."""
    code = as_bytes(source)
    hits = list(_shebang_hits(code))
    vetting = _vet_body(code)
    if vetting is not None:
        hits.extend(_load_hits(vetting))
        hits.extend(_support_hits(vetting, servers))
    parsed = parse(code)
    if parsed.error is None and not parsed.problems:
        # the static reader's own view is only a hint: when it cannot read what Lua compiles, it stays quiet
        registrations = find_registrations(parsed, code)
        hits.extend(_nested_registration_hits(registrations))
        hits.extend(_Linter(parsed, registrations).run())
    return _finish([_finding(hit) for hit in hits], parsed)


def _finding(hit: Hit) -> Finding:
    """The one place a hit becomes what users read: the severity and the words are the table's."""
    rule = TABLE[hit.rule]
    return Finding(hit.severity or rule.severity, hit.line, hit.rule, rule.render(hit.values, hit.part))


def _vet_body(code: bytes) -> Vetting | None:
    """The vet's verdict; for a shebang the server refuses, the body behind a stand-in shebang (so one problem
    does not hide the rest), and None when there is no body at all."""
    try:
        return vet(code)
    except LibraryError:
        newline = code.find(b"\n")
        return None if newline < 0 else vet(b"#!lua name=lint" + code[newline:])


def _finish(findings: list[Finding], parsed: Parsed) -> list[Finding]:
    """Drop what a ``lint-ignore`` comment waives and what two paths found twice; a stable order for people and
    tests."""
    ignored = waived_rules(parsed.comments)
    unique = {f: None for f in findings if f.rule not in ignored.get(f.line, ())}
    return sorted(unique, key=lambda f: (f.line, f.severity is not Severity.ERROR, f.rule, f.message))


# --------------------------------------------------------------------------------------------------------- shebang


def _shebang_hits(code: bytes) -> Iterator[Hit]:
    """A shebang the server refuses, with what to change (the server's own message says only what is wrong); or
    one it accepts but Redis and Valkey read differently."""
    try:
        parse_shebang(code)
    except LibraryError as exc:
        hint = _shebang_hint(code, exc.message)
        if hint:
            yield Hit("shebang", 1, {"error": exc.message, "hint": Part(hint)})
        else:
            yield Hit("shebang", 1, {"error": exc.message}, part="unexplained")
        return
    first_line = code[: code.find(b"\n")]
    if any(c in first_line for c in b"\"'\\"):
        yield Hit("shebang-quotes", 1)


def _shebang_hint(code: bytes, message: str) -> str:
    """Which hint (a part of the shebang rule) says how to fix what the server's ``message`` refuses; "" for
    none."""
    if message == MSG_MISSING_METADATA:
        if code.startswith(b"\xef\xbb\xbf"):
            return "bom"
        if code[:1] in (b"\n", b"\r"):
            return "blank_lines"
        if code[:1] in (b" ", b"\t"):
            return "whitespace"
        return "not_a_shebang"
    if message == MSG_INVALID_METADATA:
        return "unbalanced_quotes" if b"\n" in code else "no_newline"
    if message.startswith("Invalid metadata value given:"):
        return "metadata_value"
    if message.startswith("Engine '"):
        return "engine"
    if message == MSG_BAD_NAME:
        return "library_name"
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


def _load_hits(vetting: Vetting) -> Iterator[Hit]:
    """Findings from running the load: crashes and refusals first, then what each server replies."""
    refusal = vetting.refusal
    crashes = {(o.crash_rule, o.line): o for o in vetting.outcomes if o.crash}
    for crashed in crashes.values():  # reported even when waived: the comment then silences it like any finding
        yield Hit(crashed.crash_rule, crashed.line or 1, {"crash": crashed.crash}, part="crash")
    if crashes:
        return
    if refusal is not None:
        yield Hit("vet-inconclusive", refusal.line or 1, {"refusal": refusal.message})
        return
    on_redis, on_valkey = vetting.outcome("redis"), vetting.outcome("valkey")
    if on_redis.error and on_valkey.error:
        yield _load_error_hit(on_redis, on_valkey)
    elif on_redis.error:
        yield Hit("valkey-only", on_redis.line or 1, {"server": on_redis.server, "error": on_redis.error}, part="load")
    elif on_valkey.error:
        # Redis loads it, so whatever the error it is a warning: the library is fine where only Redis runs it
        values = {"server": on_valkey.server, "error": on_valkey.error}
        yield Hit(_rule_for(on_valkey.error), on_valkey.line or 1, values, part="replies", severity=Severity.WARNING)
    yield from _version_hits(vetting)
    loaded = next((o for o in vetting.outcomes if o.loads), None)
    if loaded is not None:
        yield from _flag_hits(loaded)


def _rule_for(error: str) -> str:
    return next((rule for fragment, rule in _LOAD_ERROR_RULES if fragment in error), "load-error")


def _load_error_hit(on_redis: LoadOutcome, on_valkey: LoadOutcome) -> Hit:
    """A load both engines refuse: under the rule Redis's error belongs to, with Valkey's error when it differs."""
    error = str(on_redis.error)
    rule = _rule_for(error)
    line = on_redis.line or on_valkey.line or 1
    values: dict[str, object] = {"error": error, "elsewhere": ""}
    if on_valkey.error != error:
        values.update(elsewhere=Part("elsewhere"), other_server=on_valkey.server, other_error=on_valkey.error)
    if rule == "duplicate-function":
        # Valkey runs the whole top level before it checks names, so its run holds both registrations
        duplicate = next((f.name for f in on_valkey.functions if f.line == on_valkey.line), None)
        twice = [f.line for f in on_valkey.functions if f.name == duplicate]
        if len(twice) >= 2:
            return Hit(rule, line, {**values, "first": twice[0], "second": twice[1]}, part="twice")
    return Hit(rule, line, values)


def _version_hits(vetting: Vetting) -> Iterator[Hit]:
    """A top level that reads the server version and loads on some servers only: the vet ran it on each."""
    if not vetting.version_dependent:
        return
    loads = {o.server: o.loads for o in vetting.outcomes}
    if len(set(loads.values())) > 1:
        failing = next(o for o in vetting.outcomes if not o.loads)
        values = {
            "loading": ", ".join(s for s, ok in loads.items() if ok),
            "failing": ", ".join(s for s, ok in loads.items() if not ok),
            "server": failing.server,
            "error": failing.error,
        }
        yield Hit("version-dependent", failing.line or 1, values)


# ------------------------------------------------------------------------------------ registrations and flags


def _flag_hits(outcome: LoadOutcome) -> Iterator[Hit]:
    """Flags the server takes without a word that do not do what the author meant: ``no-cluster`` (refused on every
    cluster node) and keyed entries (ignored)."""
    for function in outcome.functions:
        if "no-cluster" in function.flags:
            yield Hit("no-cluster", function.line or 1, {"name": function.name})
        for key in function.ignored_flags:
            yield Hit("ignored-flag", function.line or 1, {"name": function.name, "key": key})


def _nested_registration_hits(registrations: list[Registration]) -> Iterator[Hit]:
    """A registration in a function body: the vet never sees it (it does not run at load), the static reader
    does."""
    for reg in registrations:
        if not reg.at_load:
            yield Hit("nested-registration", reg.line, {"api": reg.api})


# ------------------------------------------------------------------------------------------------ server support


def _support_hits(vetting: Vetting, servers: Sequence[str]) -> Iterator[Hit]:
    """What :mod:`.support` says about servers: globals that servers of any version may lack, and for each named
    server whether it would fail the library (the verdict the operator acts on)."""
    for line, text in cautions(vetting):
        yield Hit("deprecated-api", line, {"caution": text})
    for name in servers:
        problem = unsupported(vetting, SERVERS[name])
        if problem is not None:
            yield Hit("unsupported-on-server", problem.line, {"server": name, "problem": problem.message})


# ------------------------------------------------------------------------------------------------------ tree rules

#: Hints (parts of unknown-global) for globals people carry over from elsewhere.
_GLOBAL_HINTS = {"KEYS": "keys_args", "ARGV": "keys_args", "print": "print"}


class _Linter(Walker):
    """The rules read from the source: one walk, which hands each statement and expression to the families of
    rules that concern it (globals and the sandbox, ``redis.call`` usage, replies). Only code that runs when a
    function is called is read: load-time code is the vet's, which ran it."""

    def __init__(self, parsed: Parsed, registrations: list[Registration]) -> None:
        graph = call_graph(parsed.body)
        super().__init__(set(reachable(graph, [None])))
        self.body = parsed.body
        self.hits: list[Hit] = []
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

    def run(self) -> list[Hit]:
        _Sources(self.sources).walk(self.body)
        self.walk(self.body)
        return self.hits

    def on_stat(self, s: Stat) -> None:
        self.hits.extend(self.statement_hits(s))

    def on_expr(self, e: Expr, parent: Expr | Stat | None) -> None:
        self.hits.extend(self.expression_hits(e, parent))

    def statement_hits(self, s: Stat) -> Iterator[Hit]:
        """Assignments (a global is read-only) and what a registered callback returns (the shape the client gets)."""
        if isinstance(s, Assign):
            for target in s.targets:
                yield from self.assignment_hits(target, s.line, None)
        elif isinstance(s, FunctionDecl):
            yield from self.assignment_hits(s.target, s.line, s.func)
        elif isinstance(s, Return) and s.values and self.funcs and self.funcs[-1] in self.callbacks:
            value = s.values[0]
            # a table returned through a local is reported on the return line, a constructor where it starts
            yield from self.reply_hits(value, self.callbacks[self.funcs[-1]], s.line if isinstance(value, Name) else 0)

    def expression_hits(self, e: Expr, parent: Expr | Stat | None) -> Iterator[Hit]:
        """Reads of globals and of their fields, and ``redis.call``/``pcall`` (under either table name)."""
        if self.at_load:
            return  # load-time code is the vet's: it ran it
        if isinstance(e, Name):
            if e.binding is None and not self.is_target(e, parent):
                yield from self.global_hits(e)
        elif isinstance(e, Index) and not self.is_target(e, parent):
            root = e.obj
            if isinstance(root, Name) and root.binding is None and isinstance(e.key, String):
                yield from self.field_hits(e, root.name, e.key.value)  # redis.log and redis['log'] alike
        elif isinstance(e, Call):
            path = dotted(unparen(e.func))
            if path in CALL_APIS:
                yield from self.command_hits(e, path)

    @staticmethod
    def is_target(e: Expr, parent: Expr | Stat | None) -> bool:
        if isinstance(parent, Assign):
            return any(t is e for t in parent.targets)
        return isinstance(parent, FunctionDecl) and parent.target is e

    # globals and the sandbox
    def assignment_hits(self, target: Expr, line: int, func: Func | None) -> Iterator[Hit]:
        """An assignment to a global or into the redis table: both are read-only when a function runs."""
        if self.at_load:
            return  # the vet runs the load and reports it with the server's message
        root = target
        while isinstance(root, Index):
            root = root.obj
        if not isinstance(root, Name) or root.binding is not None:
            return
        if root is target:
            part = "global_function" if func is not None else "global"
        elif root.name in REDIS_TABLES:
            part = "redis_table"
        else:
            return  # reading another global is reported where it is read
        yield Hit("global-assignment", line, {"name": root.name}, part=part)

    def global_hits(self, e: Name) -> Iterator[Hit]:
        """A global the function sandbox does not have: the call fails, or works on Valkey only (``server``)."""
        name = e.name
        if name in RUNTIME_GLOBALS or name in ("os", "getfenv", "setfenv", "newproxy"):
            return  # os: see field_hits; the other three are the vet's cautions (deprecated-api)
        if name == "server":
            yield Hit("valkey-only", e.line)
            return
        hint = _GLOBAL_HINTS.get(name)
        yield Hit("unknown-global", e.line, {"name": name, "hint": Part(hint) if hint else ""})

    def field_hits(self, e: Index, root: str, name: str) -> Iterator[Hit]:
        """A field of a global that surprises: the shared PRNG, ``os`` (missing or version-bound), a ``redis.*``
        field that is Valkey's only or nobody's."""
        if root == "math" and name in ("random", "randomseed"):
            yield Hit("math-random", e.line, {"name": name})
        elif root == "os":
            if name == "clock":
                yield Hit("os-clock", e.line)
            else:
                yield Hit("unknown-global", e.line, {"name": name}, part="os_field")
        elif root in REDIS_TABLES:
            values = {"table": root, "name": name, "available": _AVAILABLE_FIELDS}
            if name in VALKEY_ONLY_FIELDS:
                yield Hit("valkey-only", e.line, values, part="field")
            elif name not in RUNTIME_FIELDS and name != "register_function":
                yield Hit("unknown-global", e.line, values, part="redis_field")

    # redis.call / redis.pcall
    def command_hits(self, call: Call, api: str) -> Iterator[Hit]:
        """A command named by a constant: deprecated, a write under no-writes, or a key not passed in KEYS."""
        if not call.args:
            return
        command = constant_string(call.args[0])
        if command is None:
            return
        command = command.upper()
        deprecated = DEPRECATED_COMMANDS.get(command)
        if deprecated is not None:
            since, instead = deprecated
            yield Hit("deprecated-command", call.line, {"command": command, "since": since, "instead": instead})
        if command in WRITE_COMMANDS:
            yield from self.no_writes_hits(command, call.line)
        if command in KEY_COMMANDS and len(call.args) > 1:
            problem = self.key_problem(call.args[1])
            if problem is not None:
                yield Hit("undeclared-key", call.args[1].line, {"api": api, "command": command, **problem})

    def no_writes_hits(self, command: str, line: int) -> Iterator[Hit]:
        """A write in a function that runs under no-writes, itself or through helpers: named by the innermost."""
        for func in reversed(self.funcs):
            if func in self.no_writes:
                root = self.no_writes[func]
                reg = self.callbacks.get(root) if root is not None else None
                values = {
                    "command": command,
                    "owner": Part("function") if reg is not None and reg.name else Part("a_function"),
                    "name": reg.name if reg is not None else None,
                    "via": "" if func is root else Part("through"),
                    "helper": func.name or Part("a_helper"),
                }
                yield Hit("write-in-no-writes", line, values)
                return

    def key_problem(self, key: Expr) -> dict[str, object] | None:
        """Why a key argument is not one the caller declared, as undeclared-key's values; None when it is, or may
        be."""
        origins = self.origins(key, set(), 0)
        if "reply" in origins:
            return None  # derived from data read inside the function: cannot be declared in advance
        literal = constant_string(key)
        if literal is not None:
            return {"problem": Part("literal"), "literal": literal}
        if "args" in origins:
            return {"problem": Part("args")}
        if origins & {"concat", "format"}:
            return {"problem": Part("built")}
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
    def reply_hits(self, value: Expr, reg: Registration, line: int = 0, depth: int = 0) -> Iterator[Hit]:
        """A returned table whose string keys the client never sees: Redis converts only the list part, or one
        special key (``err``, ``ok``, ``map``, ...) and drops the rest."""
        table = resolve_value(value)
        if not isinstance(table, Table) or depth > 10:
            return
        line = line or table.line
        keyed = [f for f in table.fields if f.key is not None]
        if not keyed:
            for item in table.fields:
                yield from self.reply_hits(item.value, reg, 0, depth + 1)
            return
        names = {constant_string(f.key): f for f in keyed if f.key is not None}
        label = Part("function") if reg.name else Part("this_function")
        for key, kind in REPLY_KEYS:
            special = names.get(key)
            if special is None or not _may_be(special.value, kind):
                continue
            others = sorted(str(k) for k in names if k != key)
            values = {
                "label": label,
                "name": reg.name,
                "key": key,
                "others": ", ".join(others),
                "be": "is" if len(others) == 1 else "are",
            }
            if key == "err":
                if others:
                    yield Hit("err-table", line, values)
                return
            if others:
                yield Hit("string-key-table", line, values, part="special")
            if key == "map":
                inner = resolve_value(special.value)
                if isinstance(inner, Table):
                    for item in inner.fields:
                        yield from self.reply_hits(item.value, reg, 0, depth + 1)
            return
        positional = len(table.fields) - len(keyed)
        values = {
            "label": label,
            "name": reg.name,
            "shown": ", ".join(sorted(str(k) if k is not None else "[...]" for k in names)),
            "receives": Part("list_part" if positional else "empty_array"),
        }
        yield Hit("string-key-table", line, values)
        for item in table.fields:
            if item.key is None:
                yield from self.reply_hits(item.value, reg, 0, depth + 1)


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
