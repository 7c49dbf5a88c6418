"""A seeded corpus of libraries for proving the vet against real servers (tests/redis/test_vet_differential.py).

Three families, mixed by one seeded ``random.Random``:

* **routes**: every way we could think of to reach ``redis.log`` at load time, or to register two names equal but
  for case, each written directly and through aliases, tables of functions, closures and upvalues, loops,
  string-built keys, recursion, gsub callbacks, module-style ``M.init()``, version checks; half of them arranged so
  the route is *not* taken (never called, a false branch, after an error), since the vet must not refuse those;
* **mutants** of the ``lua/`` libraries: a route spliced in, a registration duplicated or re-cased, a flag broken,
  a line dropped, ``redis`` swapped for ``server``;
* **programs** from a small grammar over what a top level can touch (locals, tables, string methods, arithmetic,
  ``if``/``for``/``while``, local functions, registrations with names drawn from a colliding alphabet, ``log``
  calls with odd arguments, reads of the version fields).

Every program stays far inside the vet's bounds (loops are short, strings small): the corpus is about what a server
does with a library, not about runaway loads, which tests/unit/test_vet.py covers without a server.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parents[2] / "lua"


@dataclass(frozen=True)
class Sample:
    family: str
    code: bytes


# ------------------------------------------------------------------------------------------------------- routes

#: Statements that call log at load time, each through another route. ``{L}`` is the log call's arguments.
LOG_ROUTES = [
    "redis.log({L})",
    "server.log({L})",
    "local r = redis\nr.log({L})",
    "local s = server\ns.log({L})",
    "local L = redis.log\nL({L})",
    "local t = {{redis.log}}\nt[1]({L})",
    "local t = {{log = redis.log}}\nt.log({L})",
    "local function mk() return function() redis.log({L}) end end\nmk()()",
    "local L = redis.log\nlocal function f() L({L}) end\nf()",
    "for i = 1, 3 do if i == 2 then redis.log({L}) end end",
    "local i = 0\nwhile i < 2 do i = i + 1 end\nredis.log({L})",
    "redis['l' .. 'og']({L})",
    "local k = ('LOG'):lower()\nredis[k]({L})",
    "local M = {{}}\nfunction M.init() redis.log({L}) end\nM.init()",
    "local function r(n) if n == 0 then redis.log({L}) else r(n - 1) end end\nr(3)",
    "if redis.REDIS_VERSION_NUM >= 0x070200 then redis.log({L}) end",
    "if redis.REDIS_VERSION_NUM < 0x070200 then redis.log({L}) end",
    "local api = redis\nlocal function go(f) f({L}) end\ngo(api.log)",
    "local t = setmetatable and {{}} or {{redis.log}}\nt[1]({L})",
]
#: The same routes, arranged so that log is never called while loading.
LOG_NOT_TAKEN = [
    "local function never() redis.log({L}) end",
    "if false then redis.log({L}) end",
    "for i = 1, 0 do redis.log({L}) end",
    "local L = redis.log",
    "local t = {{redis.log}}",
    "local M = {{}}\nfunction M.init() redis.log({L}) end",
    "local x = nil + 1\nredis.log({L})",
    "local x = string\nredis.log({L})",
]
LOG_ARGS = [
    "redis.LOG_WARNING, 'x'",
    "redis.LOG_NOTICE, 'loading', 'two', 3",
    "redis.LOG_DEBUG, 'x'",
    "3, 'x'",
    "'2', 'x'",
    "2.5, 'x'",
    "-0.5, 'x'",
    "9, 'x'",
    "'x', 'y'",
    "",
    "redis.LOG_WARNING",
    "redis.LOG_WARNING, {}",
]
#: Pairs of names for registrations; the first pairs differ only in case.
NAME_PAIRS = [("fa", "FA"), ("ab", "aB"), ("x_1", "X_1"), ("cart_add", "Cart_Add"), ("n", "n"), ("p", "q")]
#: Ways to register ``{A}`` then ``{B}`` (both already quoted Lua expressions).
REGISTER_ROUTES = [
    "redis.register_function({A}, function() return 1 end)\nredis.register_function({B}, function() return 2 end)",
    "local r = redis\nr.register_function({A}, function() end)\nr.register_function({B}, function() end)",
    "local reg = redis.register_function\nreg({A}, function() end)\nreg{{function_name = {B}, callback = function() end}}",
    "local names = {{{A}, {B}}}\nfor i = 1, #names do redis.register_function(names[i], function() return i end) end",
    "local function helper(n) redis.register_function(n, function() end) end\nhelper({A})\nhelper({B})",
    "local t = {{helper = redis.register_function}}\nt.helper({A}, function() end)\nt.helper({B}, function() end)",
    "local M = {{}}\nfunction M.init()\n  redis.register_function({A}, function() end)\n  redis.register_function({B}, function() end)\nend\nM.init()",
    "(({A}) .. ',' .. ({B})):gsub('[^,]+', function(n) redis.register_function(n, function() end) end)",
    "redis.register_function{{function_name = {A}, callback = function() end, flags = {{'no-writes'}}}}\n"
    "redis.register_function{{FUNCTION_NAME = {B}, CALLBACK = function() end}}",
    "local function r(n, names) if n > 0 then redis.register_function(names[n], function() end) r(n - 1, names) end end\n"
    "r(2, {{{A}, {B}}})",
]


def _quote(rng: random.Random, name: str) -> str:
    """A Lua expression whose value is ``name``: a literal, or built at load time."""
    choice = rng.randrange(5)
    if choice == 0 and len(name) > 1:
        return f"'{name[:1]}' .. '{name[1:]}'"
    if choice == 1 and name.lower() != name.upper():
        lower = name.lower()
        return f"('{lower}'):upper()" if name == name.upper() else f"'{name}'"
    if choice == 2:
        return f'"{name}"'
    return f"'{name}'"


def route_sample(rng: random.Random) -> Sample:
    if rng.random() < 0.55:
        taken = rng.random() < 0.6
        route = rng.choice(LOG_ROUTES if taken else LOG_NOT_TAKEN).format(L=rng.choice(LOG_ARGS))
        body = route + "\nredis.register_function('ok', function() return 1 end)\n"
        if rng.random() < 0.3:  # after a duplicate: Redis stops there, Valkey runs on to the log
            body = "redis.register_function('ok', function() end)\n" + body
        return Sample("log-route", _library(body))
    a, b = rng.choice(NAME_PAIRS)
    if rng.random() < 0.5:
        a, b = b, a
    body = rng.choice(REGISTER_ROUTES).format(A=_quote(rng, a), B=_quote(rng, b)) + "\n"
    tail = rng.random()
    if tail < 0.15:
        body += "local broken = nil + 1\n"  # the load fails after both registrations: no crash
    elif tail < 0.3:
        body += "redis.register_function('tail', function() end)\n"
    return Sample("case-route", _library(body))


# ------------------------------------------------------------------------------------------------------ mutants


def _lua_bodies() -> list[str]:
    bodies = []
    for path in sorted(LUA_DIR.glob("*.lua")):
        text = path.read_text(encoding="utf-8")
        bodies.append(text[text.index("\n") + 1 :])
    return bodies


_REGISTER_LINE = re.compile(r"^redis\.register_function.*$", re.M)
_NAME_IN_REGISTER = re.compile(r"(function_name\s*=\s*|register_function\(\s*)(['\"])(\w+)\2")


def _mutations() -> list[Callable[[random.Random, str], str]]:
    def splice_log(rng: random.Random, body: str) -> str:
        statement = rng.choice(LOG_ROUTES + LOG_NOT_TAKEN).format(L=rng.choice(LOG_ARGS))
        return _insert_top_level(rng, body, statement)

    def recase_a_name(rng: random.Random, body: str) -> str:
        names = [m.group(3) for m in _NAME_IN_REGISTER.finditer(body)]
        if len(names) < 2:
            return body
        target, source = rng.sample(names, 2)
        variant = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in source)
        if variant == source:
            variant = source.swapcase()
        return body.replace(f"'{target}'", f"'{variant}'", 1).replace(f'"{target}"', f'"{variant}"', 1)

    def duplicate_a_registration(rng: random.Random, body: str) -> str:
        lines = _REGISTER_LINE.findall(body)
        if not lines:
            return body
        line = rng.choice(lines)
        if rng.random() < 0.5:
            line = _NAME_IN_REGISTER.sub(lambda m: m.group(1) + m.group(2) + m.group(3).upper() + m.group(2), line, 1)
        return body + "\n" + line + "\n"

    def break_a_flag(rng: random.Random, body: str) -> str:
        replacement = rng.choice(["'no-writes', 'fast'", "['no-writes'] = true", "'NO-WRITES'", "'allow-oom', 7"])
        return body.replace("'no-writes'", replacement, 1)

    def drop_a_line(rng: random.Random, body: str) -> str:
        lines = body.split("\n")
        del lines[rng.randrange(len(lines))]
        return "\n".join(lines)

    def use_server(rng: random.Random, body: str) -> str:
        return body.replace("redis.register_function", "server.register_function", 1)

    def add_a_global(rng: random.Random, body: str) -> str:
        return _insert_top_level(rng, body, rng.choice(["counter = 0", "local s = string.format", "local t = {}"]))

    return [splice_log, recase_a_name, duplicate_a_registration, break_a_flag, drop_a_line, use_server, add_a_global]


def _insert_top_level(rng: random.Random, body: str, statement: str) -> str:
    """Put ``statement`` before a top-level registration line, or at the very start or end."""
    spots = [m.start() for m in _REGISTER_LINE.finditer(body)] + [0, len(body)]
    spot = rng.choice(spots)
    return body[:spot] + statement + "\n" + body[spot:]


def mutant_sample(
    rng: random.Random, bodies: list[str], mutations: list[Callable[[random.Random, str], str]]
) -> Sample:
    body = rng.choice(bodies)
    for mutation in rng.sample(mutations, rng.randint(1, 3)):
        body = mutation(rng, body)
    return Sample("mutant", _library(body))


# ----------------------------------------------------------------------------------------------------- programs

_NAMES = ["a", "A", "b", "B", "ab", "Ab", "aB", "x_1", "X_1", "1", "a-b", "", "f\\0g"]
_FLAGS = ["'no-writes'", "'NO-WRITES'", "'allow-oom'", "'allow-stale'", "'no-cluster'", "'allow-cross-slot-keys'",
          "'bogus'", "1", "{}", "true"]  # fmt: skip
_FIELDS = ["LOG_WARNING", "LOG_DEBUG", "REDIS_VERSION", "REDIS_VERSION_NUM", "VALKEY_VERSION", "SERVER_NAME", "call",
           "register_function"]  # fmt: skip


class _Program:
    """A random top level over the load-time environment, with a few locals in scope."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.locals: list[str] = []
        self.functions: list[str] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def expr(self, depth: int = 0) -> str:
        """Mostly well-typed numbers and strings (so most programs load), sometimes something odd."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return self.number(depth)
        if roll < 0.8:
            return self.string(depth)
        if roll < 0.9 and self.locals:
            return rng.choice(self.locals)
        odd = [
            "nil",
            "true",
            f"{rng.choice(['redis', 'redis', 'redis', 'server'])}.{rng.choice(_FIELDS)}",
            "{" + ", ".join(self.expr(depth + 1) for _ in range(rng.randint(0, 3))) + "}",
            f"({self.expr(depth + 1)} {rng.choice(['+', '..', '==', '<', 'and', 'or'])} {self.expr(depth + 1)})",
            f"({self.number(depth + 1)}):upper()",
            f"#{self.expr(depth + 1)}",
        ]
        return rng.choice(odd)

    def number(self, depth: int) -> str:
        rng = self.rng
        if depth < 2 and rng.random() < 0.3:
            return f"({self.number(depth + 1)} {rng.choice(['+', '-', '*', '%'])} {self.number(depth + 1)})"
        if rng.random() < 0.2:
            return f"#{self.string(depth + 1)}"
        return rng.choice(
            ["0", "1", "2", "3", "-1", "2.5", "1e3", "0x10", "redis.LOG_NOTICE", "redis.REDIS_VERSION_NUM"]
        )

    def string(self, depth: int) -> str:
        rng = self.rng
        if depth < 2 and rng.random() < 0.3:
            return f"({self.string(depth + 1)} .. {rng.choice([self.string(depth + 1), self.number(depth + 1)])})"
        if depth < 2 and rng.random() < 0.25:
            method = rng.choice(
                ["upper()", "lower()", "rep(2)", "sub(1, 1)", "reverse()", "format()", "gsub('a', 'b')"]
            )
            return f"({self.string(depth + 1)}):{method}"
        return rng.choice(["'x'", "'ab'", '"F"', "''", "'a,b'", "[[long]]", "redis.REDIS_VERSION"])

    def name_expr(self) -> str:
        rng = self.rng
        if self.locals and rng.random() < 0.1:
            return rng.choice(self.locals)
        if rng.random() < 0.35:
            return _quote(rng, rng.choice(_NAMES))
        return _quote(rng, self.fresh("fn_"))

    def registration(self) -> str:
        rng = self.rng
        api = rng.choice(["redis"] * 8 + ["server"])
        if rng.random() < 0.5:
            return f"{api}.register_function({self.name_expr()}, function() return 1 end)"
        fields = [f"function_name = {self.name_expr()}", "callback = function() return 1 end"]
        if rng.random() < 0.6:
            flags = _FLAGS[:6] if rng.random() < 0.8 else _FLAGS
            fields.append("flags = {" + ", ".join(rng.sample(flags, rng.randint(0, 2))) + "}")
        if rng.random() < 0.2:
            fields.append(
                rng.choice(["description = 'd'", "description = 5", "description = 'x' .. 1", "version = '1'"])
            )
        if rng.random() < 0.05:
            fields.pop(rng.randrange(len(fields)))
        rng.shuffle(fields)
        return f"{api}.register_function{{{', '.join(fields)}}}"

    def statement(self, depth: int = 0) -> str:
        rng = self.rng
        kinds = ["local", "local", "register", "register", "register"]
        if depth < 2:
            kinds += ["if", "for", "function", "do"]
        if self.functions:
            kinds.append("call")
        if rng.random() < 0.06:
            kinds.append("log")
        if rng.random() < 0.03:
            kinds.append("global")
        kind = rng.choice(kinds)
        if kind == "local":
            name = self.fresh("v")
            line = f"local {name} = {self.expr()}"
            self.locals.append(name)
            return line
        if kind == "register":
            return self.registration()
        if kind == "log":
            return rng.choice(LOG_ROUTES).format(L=rng.choice(LOG_ARGS))
        if kind == "global":
            return rng.choice(["g = 1", "redis.x = 1", "local y = tostring(1)"])
        if kind == "if":
            return f"if {self.expr()} then\n{self.block(depth + 1)}\nend"
        if kind == "for":
            return f"for i = 1, {rng.randint(0, 3)} do\n{self.block(depth + 1)}\nend"
        if kind == "do":
            return f"do\n{self.block(depth + 1)}\nend"
        if kind == "function":
            name = self.fresh("fn")
            text = f"local function {name}()\n{self.block(depth + 1)}\nend"
            self.functions.append(name)
            return text
        return f"{rng.choice(self.functions)}()"

    def block(self, depth: int) -> str:
        saved = list(self.locals)
        text = "\n".join(self.statement(depth) for _ in range(self.rng.randint(1, 3)))
        self.locals = saved
        return text

    def program(self) -> str:
        return "\n".join(self.statement() for _ in range(self.rng.randint(1, 7))) + "\n"


def program_sample(rng: random.Random) -> Sample:
    return Sample("program", _library(_Program(rng).program()))


# ----------------------------------------------------------------------------------------------------- the mix


def _library(body: str) -> bytes:
    return ("#!lua name=corpus\n" + body).encode("utf-8")


def generate(seed: int, size: int) -> list[Sample]:
    """``size`` samples, the same for the same seed: about a third of each family."""
    rng = random.Random(seed)
    bodies = _lua_bodies()
    mutations = _mutations()
    samples = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.36:
            samples.append(route_sample(rng))
        elif roll < 0.66:
            samples.append(mutant_sample(rng, bodies, mutations))
        else:
            samples.append(program_sample(rng))
    return samples
