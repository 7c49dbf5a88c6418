"""The lint rules as one table: each rule's id, severity, what it catches, and every word its findings say (pure).

Why a table: the wording is what users read and what the tests quote; kept apart from the code that finds things
(``lint.py``), a rule is added or reworded in one place, and that code says only *where* and *what* (a line, a
command, a function's name, the server's own error), never *how to say it*.

A template is a :meth:`str.format` string. Each placeholder names either a value the finding supplies or, when it
supplies none, a *part*: a named fragment of the same rule (:attr:`Rule.parts`) or one several rules share
(:data:`SHARED_PARTS`). A value can also be a :class:`Part`, to pick one of a rule's fragments (which of three
reasons a key is undeclared, which hint follows an unknown global). Parts are filled with the same values, so a
part may use them too. ``{name!r}`` quotes as Python does, which is how every message has always quoted names.

Severities are the rule's. One exception is decided by the finder, not here: a load error that only Valkey replies
is reported under the rule of that error but as a warning, since Redis loads the library (``lint.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """Errors: a server refuses it, crashes on it or fails at run time every time. Warnings: behaviours that
    surprise."""

    ERROR = "error"
    WARNING = "warning"


ERROR, WARNING = Severity.ERROR, Severity.WARNING


@dataclass(frozen=True)
class Part:
    """A template value that picks the rule's fragment of this name (or a shared one) instead of giving text."""

    name: str


@dataclass(frozen=True)
class Rule:
    """One lint rule. ``message`` is the usual wording of its findings; ``parts`` are the other wordings a finding
    can pick by name, and fragments the templates use. ``message`` is None for a rule whose findings are always
    worded by a part (the vet's own words)."""

    id: str
    severity: Severity
    catches: str
    message: str | None = None
    parts: Mapping[str, str] = field(default_factory=dict)

    def template(self, name: str = "") -> str:
        """The wording called ``name`` (the rule's own part, else a shared one), or the message for ``""``."""
        if not name:
            if self.message is None:
                raise KeyError(f"{self.id} has no message of its own: its findings name a part")
            return self.message
        return self.parts[name] if name in self.parts else SHARED_PARTS[name]

    def render(self, values: Mapping[str, object], part: str = "") -> str:
        """The finding's text: the template ``part`` (the message by default) filled with ``values``."""
        return self.template(part).format_map(_Filled(self, values))


class _Filled:
    """What :meth:`str.format_map` reads a template's placeholders from: the finding's values, with parts (named
    directly, or picked by a :class:`Part` value) filled in turn. Looked up lazily, so a template pays only for the
    parts it uses, and a placeholder nothing fills raises KeyError instead of printing something wrong."""

    def __init__(self, rule: Rule, values: Mapping[str, object]) -> None:
        self.rule = rule
        self.values = values

    def __getitem__(self, key: str) -> object:
        value = self.values[key] if key in self.values else Part(key)
        if isinstance(value, Part):
            return self.rule.template(value.name).format_map(self)
        return value


#: Wording several rules share: how a load's outcome is told (the load rules are the ones the vet's errors map to),
#: and how a function is named.
SHARED_PARTS: Mapping[str, str] = {
    # the load fails on every server: the server's error, then Valkey's when it says something else
    "load_fails": "FUNCTION LOAD fails: {error}{elsewhere}",
    "elsewhere": " ({other_server}: {other_error})",
    # the load fails on one engine only
    "replies": "{server} replies '{error}'",
    # the vet's own message for a load that takes a server down
    "crash": "{crash}",
    "function": "function {name!r}",
    "this_function": "this function",
}

_SHEBANG_PARTS = {
    "unexplained": "{error}",
    "bom": "the file starts with a UTF-8 BOM: remove the BOM, '#!' must be the very first bytes",
    "blank_lines": "remove the blank line(s) before the shebang, '#!' must be the very first bytes",
    "whitespace": "remove the whitespace before the shebang, '#!' must be the very first bytes",
    "not_a_shebang": "the first line must be '#!lua name=<library>'",
    "no_newline": "the shebang line must end with a newline and be followed by the library code",
    "unbalanced_quotes": "unbalanced quotes in the shebang line",
    "metadata_value": "only name=<library> is accepted; keep a version in a comment instead",
    "engine": "the only engine is lua: '#!lua name=<library>'",
    "library_name": "for example name=my_lib",
}

_RULES = (
    # ------------------------------------------------------------------------------------------- the shebang line
    Rule(
        "shebang",
        ERROR,
        "the first line is not a shebang Redis accepts (#!lua name=<library>)",
        message="{error} ({hint})",
        parts=_SHEBANG_PARTS,
    ),
    Rule(
        "shebang-quotes",
        WARNING,
        "quotes or backslashes in the shebang line, which Redis and Valkey read differently",
        message="quotes or backslashes in the shebang line: Redis 7.0 and Valkey 9.1 read them differently (#!lua "
        "name='x'y is 'Invalid library metadata' on Redis and loads as xy on Valkey); write #!lua name=<library>",
    ),
    # --------------------------------------------------------------------------- the load, as the vet ran it
    Rule(
        "syntax",
        ERROR,
        "the source does not compile as Lua 5.1 (the compiler's own message, as FUNCTION LOAD reports it)",
        message="{load_fails}",
    ),
    Rule(
        "no-functions",
        ERROR,
        "no redis.register_function call runs at load time",
        message="{load_fails} (the top level must call redis.register_function)",
    ),
    Rule(
        "duplicate-function",
        ERROR,
        "two functions with the same name, or names differing only in case",
        message="{load_fails}",
        parts={"twice": "a function is registered twice (lines {first} and {second}): {load_fails}"},
    ),
    Rule(
        "function-name",
        ERROR,
        "a function name other than letters, digits and underscores",
        message="{load_fails}",
    ),
    Rule(
        "register-arguments",
        ERROR,
        "redis.register_function arguments Redis refuses (unknown key, missing name, ...)",
        message="{load_fails}",
    ),
    Rule(
        "unknown-flag",
        ERROR,
        "a flag that is not no-writes, allow-oom, allow-stale, no-cluster or allow-cross-slot-keys",
        message="{load_fails}",
    ),
    Rule(
        "ignored-flag",
        WARNING,
        "a keyed entry in a flags table, which Redis silently ignores",
        message="flags entry {key!r} on {function} is ignored: the server reads only the list part of the flags "
        "table; write flags = {{'{key}'}}",
    ),
    Rule(
        "no-cluster",
        WARNING,
        "the no-cluster flag: the function is refused on every cluster node",
        message="{function} has the no-cluster flag: it is refused on every cluster node: ERR Can not run script on "
        "cluster, 'no-cluster' flag is set",
    ),
    Rule(
        "nested-registration",
        ERROR,
        "redis.register_function inside a function body (not run at load, fails when called)",
        message="{api} inside a function body does not register anything at FUNCTION LOAD, and fails when that "
        "function runs: attempt to call field 'register_function' (a nil value); call it at the top level",
    ),
    Rule(
        "top-level-log",
        ERROR,
        "redis.log/server.log called at load time, by any path (crashes Valkey 9.1.2)",
    ),
    Rule(
        "top-level-call",
        ERROR,
        "a global other than redis.register_function/log/LOG_*/REDIS_VERSION used at load time",
        message="{load_fails} (only redis.register_function, redis.log and redis.LOG_*/REDIS_VERSION(_NUM) exist at "
        "load time; move this into a function)",
    ),
    Rule(
        "load-error",
        ERROR,
        "any other error the top level raises while FUNCTION LOAD runs it",
        message="{load_fails}",
    ),
    Rule(
        "vet-inconclusive",
        ERROR,
        "the vet could not finish running the load within its bounds (refused: fail closed)",
        message="refused: {refusal}",
    ),
    Rule(
        "version-dependent",
        WARNING,
        "the top level reads the server version and loads differently on some servers",
        message="the top level reads the server version, and the load depends on it: it loads on {loading} but "
        "fails on {failing} ({server}: {error})",
    ),
    # ------------------------------------------------------------------------- globals and the function sandbox
    Rule(
        "global-assignment",
        ERROR,
        "an assignment to a global (globals are read-only in Redis Functions)",
        message="{load_fails} (globals are read-only: declare it local, keep values in a local table)",
        parts={
            "global_function": "function {name}() defines the global {name!r}: {fails} (use local function {name}())",
            "global": "{name!r} is a global: {fails} (declare it with local {name})",
            "redis_table": "the {name} table is read-only: {fails} (keep your own values in a local table)",
            "fails": "the function fails when it runs with 'Attempt to modify a readonly table'",
        },
    ),
    Rule(
        "unknown-global",
        ERROR,
        "a global or redis.* field that does not exist when a function runs",
        message="{name!r} does not exist when the function runs: it fails with 'Script attempted to access "
        "nonexistent global variable '{name}''{hint}",
        parts={
            "keys_args": " (KEYS and ARGV exist only in EVAL scripts: a function gets them as its parameters (keys, "
            "args))",
            "print": " (use redis.log(redis.LOG_NOTICE, ...))",
            "os_field": "os.{name} does not exist when the function runs (Redis has no os global, Valkey only "
            "os.clock); use redis.call('TIME') for the time",
            "redis_field": "{table}.{name} does not exist in Redis Functions (available: {available})",
        },
    ),
    Rule(
        "valkey-only",
        WARNING,
        "the server global or server.* / redis.* fields that exist only on Valkey",
        message="the server global exists only on Valkey: on Redis this fails with 'Script attempted to access "
        "nonexistent global variable 'server'' (redis.* works on both)",
        parts={
            "field": "{table}.{name} exists only on Valkey (nil on Redis)",
            "load": "loads on Valkey only: {replies} (use redis.*, which both have)",
        },
    ),
    Rule(
        "os-clock",
        WARNING,
        "os.clock, which exists on Redis 7.4+ and Valkey 8.0+ only",
        message="os.clock exists on Redis 7.4+ and Valkey 8.0+ only: on Redis 7.0/7.2 and Valkey 7.2 the function "
        "fails with 'Script attempted to access nonexistent global variable 'os'' (redis.call('TIME') works "
        "everywhere; the operator refuses it for a server that lacks it)",
    ),
    # ------------------------------------------------------------------------------------------ server support
    Rule(
        "deprecated-api",
        WARNING,
        "getfenv, setfenv or newproxy: gone from Redis 8.2.2 (7.2.11, 7.4.6, 8.0.4) and patched builds",
        message="{caution}",  # support.py's own words: it knows why these globals may be missing
    ),
    Rule(
        "unsupported-on-server",
        ERROR,
        "with --server: the named server would fail the load or a function (or has no Lua)",
        message="{server}: {problem}",  # the problem in support.py's words, the same the operator refuses with
    ),
    # ------------------------------------------------------------------------------------ redis.call and replies
    Rule(
        "math-random",
        WARNING,
        "math.random/math.randomseed: one deterministic PRNG for all scripts",
        message="math.{name}: every script on the server shares one deterministic PRNG that restarts the same "
        "sequence after every restart (identical on Redis and Valkey); pass random values (ids, tokens) in from the "
        "client",
    ),
    Rule(
        "undeclared-key",
        WARNING,
        "a key argument that is a literal or built inside the function instead of passed in KEYS",
        message="{api}('{command}', ...): {problem}; pass keys in KEYS (in a cluster, an undeclared key on another "
        "node fails with 'Script attempted to access a non local key in a cluster node')",
        parts={
            "literal": "the key is the string literal {literal!r}",
            "args": "the key comes from args",
            "built": "the key is built inside the function",
        },
    ),
    Rule(
        "deprecated-command",
        WARNING,
        "a command Redis 7.0 marks deprecated (HMSET, GETSET, ZRANGEBYSCORE, ...)",
        message="{command} is deprecated since Redis {since}: use {instead}",
    ),
    Rule(
        "string-key-table",
        WARNING,
        "a returned table with string keys, which the client receives as an empty array",
        message="{label} returns a table with string keys ({shown}): {receives}",
        parts={
            "empty_array": "the client receives an empty array; use {{map={{...}}}} for a map reply or "
            "redis.error_reply('CODE details') for an error",
            "list_part": "the client receives only the list part, the string keys are dropped",
            "special": "{label} returns {{{key}=..., {others}}}: only {key} makes the reply, {others} {be} dropped",
        },
    ),
    Rule(
        "err-table",
        WARNING,
        "a returned {err=..., other=...} table: only the error text reaches the client",
        message="{label} returns {{err=..., {others}}}: the client gets only the error text, {others} {be} lost; put "
        "the details in the message: redis.error_reply('CODE details')",
    ),
    Rule(
        "write-in-no-writes",
        ERROR,
        "a write command in a function flagged no-writes (or a helper it calls)",
        message="{command} in {owner}, which has the no-writes flag{via}: it fails with 'Write commands are not "
        "allowed from read-only scripts' (drop the flag or the write)",
        parts={"a_function": "a function", "through": " (through {helper}())", "a_helper": "a helper"},
    ),
)

#: Every rule, by id, in the order above.
TABLE: Mapping[str, Rule] = {rule.id: rule for rule in _RULES}

__all__ = ["SHARED_PARTS", "TABLE", "Part", "Rule", "Severity"]
