"""A small Lua 5.1 parser and scope resolver for static reads of a library (private; pure).

The tree keeps only what the library model and the linter look at: statements, expressions, function bodies with
their parameters, table constructors, and every name resolved to its local binding (or to a global). The grammar is
Lua 5.1's (``lparser.c``), including its "ambiguous syntax" rule, so a source this parser accepts is one Redis'
Lua compiles, and vice versa as far as the test corpus goes (it is checked against ``luac -p``).

:func:`parse` never raises: a syntax error stops the parse and is returned as :attr:`Parsed.error`; the
statements read up to that point stay available.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis_functions_operator.library._lua.tokens import Kind, Problem, Token, tokenize

# --------------------------------------------------------------------------------------------------------- tree


@dataclass(eq=False)
class Binding:
    """One local variable (or parameter, loop variable, local function). ``func`` is the function whose body
    declares it (``None``: the main chunk); ``value`` is its initial value when declared as ``local x = <expr>``;
    ``reassigned`` counts later assignments (``x = ...``)."""

    name: str
    line: int
    func: Func | None
    value: Expr | None = None
    reassigned: int = 0


@dataclass(eq=False)
class Expr:
    line: int


@dataclass(eq=False)
class Const(Expr):
    value: str  # "nil", "true", "false"


@dataclass(eq=False)
class Vararg(Expr):
    pass


@dataclass(eq=False)
class Number(Expr):
    text: str


@dataclass(eq=False)
class String(Expr):
    value: str


@dataclass(eq=False)
class Name(Expr):
    name: str
    binding: Binding | None = None  # None: a global (set by the resolver)


@dataclass(eq=False)
class Index(Expr):
    obj: Expr
    key: Expr
    dot: bool  # written ``obj.key`` (key is a String) rather than ``obj[key]``


@dataclass(eq=False)
class Call(Expr):
    func: Expr
    args: list[Expr]


@dataclass(eq=False)
class MethodCall(Expr):
    obj: Expr
    method: str
    args: list[Expr]


@dataclass(eq=False)
class Field:
    key: Expr | None  # None: positional
    value: Expr
    named: bool  # ``name = value`` (key is a String)


@dataclass(eq=False)
class Table(Expr):
    fields: list[Field]


@dataclass(eq=False)
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(eq=False)
class UnOp(Expr):
    op: str
    operand: Expr


@dataclass(eq=False)
class Paren(Expr):
    expr: Expr


@dataclass(eq=False)
class Func(Expr):
    params: list[str]
    vararg: bool
    body: list[Stat]
    end_line: int
    name: str | None = None  # for messages: ``local function f`` / ``function a.b``
    param_bindings: list[Binding] = field(default_factory=list)


@dataclass(eq=False)
class Stat:
    line: int


@dataclass(eq=False)
class Local(Stat):
    names: list[str]
    values: list[Expr]
    bindings: list[Binding] = field(default_factory=list)


@dataclass(eq=False)
class LocalFunction(Stat):
    name: str
    func: Func
    binding: Binding | None = None


@dataclass(eq=False)
class FunctionDecl(Stat):
    target: Expr  # Name, or Index chain for ``function a.b.c`` / ``a.b:c``
    method: bool
    func: Func


@dataclass(eq=False)
class Assign(Stat):
    targets: list[Expr]
    values: list[Expr]


@dataclass(eq=False)
class CallStat(Stat):
    call: Expr  # Call or MethodCall


@dataclass(eq=False)
class Do(Stat):
    body: list[Stat]


@dataclass(eq=False)
class While(Stat):
    cond: Expr
    body: list[Stat]


@dataclass(eq=False)
class Repeat(Stat):
    body: list[Stat]
    cond: Expr


@dataclass(eq=False)
class If(Stat):
    tests: list[tuple[Expr, list[Stat]]]
    orelse: list[Stat] | None


@dataclass(eq=False)
class NumFor(Stat):
    var: str
    start: Expr
    stop: Expr
    step: Expr | None
    body: list[Stat]
    binding: Binding | None = None


@dataclass(eq=False)
class GenFor(Stat):
    names: list[str]
    exprs: list[Expr]
    body: list[Stat]
    bindings: list[Binding] = field(default_factory=list)


@dataclass(eq=False)
class Return(Stat):
    values: list[Expr]


@dataclass(eq=False)
class Break(Stat):
    pass


@dataclass
class Parsed:
    """A parsed chunk. ``error`` is the first syntax error (Lua's wording where it matters), ``problems`` are the
    tokenizer's; ``body`` holds every statement read before an error."""

    body: list[Stat]
    error: Problem | None = None
    problems: list[Problem] = field(default_factory=list)
    comments: list[Problem] = field(default_factory=list)  # (line, text) of every comment

    @property
    def complete(self) -> bool:
        return self.error is None and not self.problems


# ------------------------------------------------------------------------------------------------------- parser


class ParseError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_BINARY_PRIORITY = {
    "+": (6, 6),
    "-": (6, 6),
    "*": (7, 7),
    "/": (7, 7),
    "%": (7, 7),
    "^": (10, 9),
    "..": (5, 4),
    "==": (3, 3),
    "~=": (3, 3),
    "<": (3, 3),
    "<=": (3, 3),
    ">": (3, 3),
    ">=": (3, 3),
    "and": (2, 2),
    "or": (1, 1),
}
_UNARY_PRIORITY = 8
_BLOCK_END = frozenset(("else", "elseif", "end", "until"))
#: Nesting levels (blocks and sub-expressions) Redis' Lua accepts before "chunk has too many syntax levels"
#: (LUAI_MAXCCALLS = 200; measured on Redis 7.0.15: 198 nested parentheses load, 199 do not).
_MAX_DEPTH = 199
#: Python frames needed for that depth; the limit is raised to this while parsing and walking if lower.
_RECURSION_LIMIT = 8000


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.vararg = [True]  # per function being parsed: may it use '...'? (the main chunk may)
        self.loops = [0]  # per function being parsed: enclosing while/for/repeat loops
        self.looked_ahead = -1  # index of the token a table item's look-ahead read (see call_args)

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        t = self.tokens[self.pos]
        if t.kind is not Kind.EOF:
            self.pos += 1
        return t

    def error(self, message: str) -> ParseError:
        # Lua reports the line its lexer is on: the end of the current token
        return ParseError(self.tok.last_line or self.tok.line, f"{message} near '{self.tok.describe()}'")

    def check_op(self, value: str) -> bool:
        return self.tok.is_op(value)

    def check_kw(self, value: str) -> bool:
        return self.tok.is_keyword(value)

    def expect_op(self, value: str) -> Token:
        if not self.tok.is_op(value):
            raise self.error(f"'{value}' expected")
        return self.advance()

    def expect_kw(self, value: str) -> Token:
        if not self.tok.is_keyword(value):
            raise self.error(f"'{value}' expected")
        return self.advance()

    def expect_match(self, what: str, opener: str, line: int, is_kw: bool) -> None:
        ok = self.tok.is_keyword(what) if is_kw else self.tok.is_op(what)
        if ok:
            self.advance()
            return
        if line == self.tok.line:
            raise self.error(f"'{what}' expected")
        raise self.error(f"'{what}' expected (to close '{opener}' at line {line})")

    def name(self) -> Token:
        if self.tok.kind is not Kind.NAME:
            raise self.error("<name> expected")
        return self.advance()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ParseError(self.tok.line, "chunk has too many syntax levels")

    # blocks and statements
    def chunk(self, out: list[Stat]) -> None:
        """The main chunk; statements are appended to ``out`` as they are read, so they survive a later error."""
        while not self.block_follow():
            if self.check_kw("return") or self.check_kw("break"):
                out.append(self.last_statement())
                break
            out.append(self.statement())
            if self.check_op(";"):
                self.advance()
        if self.tok.kind is not Kind.EOF:
            raise self.error("'<eof>' expected")

    def block(self) -> list[Stat]:
        self.enter()
        stats: list[Stat] = []
        while not self.block_follow():
            if self.check_kw("return") or self.check_kw("break"):
                stats.append(self.last_statement())
                break
            stats.append(self.statement())
            if self.check_op(";"):
                self.advance()
        self.depth -= 1
        return stats

    def loop_block(self) -> list[Stat]:
        self.loops[-1] += 1
        body = self.block()
        self.loops[-1] -= 1
        return body

    def block_follow(self) -> bool:
        t = self.tok
        return t.kind is Kind.EOF or (t.kind is Kind.KEYWORD and t.value in _BLOCK_END)

    def last_statement(self) -> Stat:
        if self.check_kw("break") and not self.loops[-1]:
            self.advance()
            raise self.error("no loop to break")
        t = self.advance()
        if t.value == "break":
            stat: Stat = Break(t.line)
        else:
            values = [] if self.block_follow() or self.check_op(";") else self.exprlist()
            stat = Return(t.line, values)
        if self.check_op(";"):
            self.advance()
        return stat

    def statement(self) -> Stat:
        t = self.tok
        line = t.line
        if t.kind is Kind.KEYWORD:
            kw = t.value
            if kw == "if":
                return self.if_stat()
            if kw == "while":
                self.advance()
                cond = self.expr()
                self.expect_kw("do")
                body = self.loop_block()
                self.expect_match("end", "while", line, True)
                return While(line, cond, body)
            if kw == "do":
                self.advance()
                body = self.block()
                self.expect_match("end", "do", line, True)
                return Do(line, body)
            if kw == "for":
                return self.for_stat()
            if kw == "repeat":
                self.advance()
                body = self.loop_block()
                self.expect_match("until", "repeat", line, True)
                return Repeat(line, body, self.expr())
            if kw == "function":
                self.advance()
                target: Expr = Name(self.tok.line, self.name().value)
                label = target.name if isinstance(target, Name) else ""
                method = False
                while self.check_op(".") or self.check_op(":"):
                    method = self.advance().value == ":"
                    key = self.name()
                    target = Index(key.line, target, String(key.line, key.value), True)
                    label += ("." if not method else ":") + key.value
                    if method:
                        break
                func = self.funcbody(line, method, label)
                return FunctionDecl(line, target, method, func)
            if kw == "local":
                self.advance()
                if self.check_kw("function"):
                    self.advance()
                    fname = self.name().value
                    return LocalFunction(line, fname, self.funcbody(line, False, fname))
                names = [self.name().value]
                while self.check_op(","):
                    self.advance()
                    names.append(self.name().value)
                values = []
                if self.check_op("="):
                    self.advance()
                    values = self.exprlist()
                return Local(line, names, values)
        # expression statement: a call or an assignment
        first = self.suffixed_expr()
        if self.check_op("=") or self.check_op(","):
            targets = [first]
            while True:
                if not isinstance(targets[-1], Name | Index):
                    raise self.error("syntax error")
                if not self.check_op(","):
                    break
                self.advance()
                targets.append(self.suffixed_expr())
            self.expect_op("=")
            return Assign(line, targets, self.exprlist())
        if not isinstance(first, Call | MethodCall):
            raise self.error("syntax error")
        return CallStat(line, first)

    def if_stat(self) -> Stat:
        line = self.advance().line
        tests: list[tuple[Expr, list[Stat]]] = []
        cond = self.expr()
        self.expect_kw("then")
        tests.append((cond, self.block()))
        orelse: list[Stat] | None = None
        while self.check_kw("elseif"):
            self.advance()
            cond = self.expr()
            self.expect_kw("then")
            tests.append((cond, self.block()))
        if self.check_kw("else"):
            self.advance()
            orelse = self.block()
        self.expect_match("end", "if", line, True)
        return If(line, tests, orelse)

    def for_stat(self) -> Stat:
        line = self.advance().line
        first = self.name().value
        if self.check_op("="):
            self.advance()
            start = self.expr()
            self.expect_op(",")
            stop = self.expr()
            step = None
            if self.check_op(","):
                self.advance()
                step = self.expr()
            self.expect_kw("do")
            body = self.loop_block()
            self.expect_match("end", "for", line, True)
            return NumFor(line, first, start, stop, step, body)
        if self.check_op(",") or self.check_kw("in"):
            names = [first]
            while self.check_op(","):
                self.advance()
                names.append(self.name().value)
            self.expect_kw("in")
            exprs = self.exprlist()
            self.expect_kw("do")
            body = self.loop_block()
            self.expect_match("end", "for", line, True)
            return GenFor(line, names, exprs, body)
        raise self.error("'=' or 'in' expected")

    def funcbody(self, line: int, method: bool, name: str | None) -> Func:
        self.expect_op("(")
        params = ["self"] if method else []
        vararg = False
        if not self.check_op(")"):
            while True:
                if self.check_op("..."):
                    self.advance()
                    vararg = True
                    break
                params.append(self.name().value)
                if not self.check_op(","):
                    break
                self.advance()
        self.expect_op(")")
        self.vararg.append(vararg)
        self.loops.append(0)
        body = self.block()
        self.loops.pop()
        self.vararg.pop()
        end_line = self.tok.line
        self.expect_match("end", "function", line, True)
        return Func(line, params, vararg, body, end_line, name)

    # expressions
    def exprlist(self) -> list[Expr]:
        exprs = [self.expr()]
        while self.check_op(","):
            self.advance()
            exprs.append(self.expr())
        return exprs

    def expr(self, limit: int = 0) -> Expr:
        self.enter()
        t = self.tok
        left: Expr
        if (t.kind is Kind.KEYWORD and t.value == "not") or (t.kind is Kind.OP and t.value in ("-", "#")):
            self.advance()
            left = UnOp(t.line, t.value, self.expr(_UNARY_PRIORITY))
        else:
            left = self.simple_expr()
        while True:
            op = self.tok
            if op.kind is Kind.OP or (op.kind is Kind.KEYWORD and op.value in ("and", "or")):
                prio = _BINARY_PRIORITY.get(op.value)
                if prio is not None and prio[0] > limit:
                    self.advance()
                    right = self.expr(prio[1])
                    left = BinOp(op.line, op.value, left, right)
                    continue
            break
        self.depth -= 1
        return left

    def simple_expr(self) -> Expr:
        t = self.tok
        if t.kind is Kind.NUMBER:
            self.advance()
            return Number(t.line, t.value)
        if t.kind is Kind.STRING:
            self.advance()
            return String(t.line, t.value)
        if t.kind is Kind.KEYWORD:
            if t.value in ("nil", "true", "false"):
                self.advance()
                return Const(t.line, t.value)
            if t.value == "function":
                self.advance()
                return self.funcbody(t.line, False, None)
        if t.is_op("..."):
            if not self.vararg[-1]:
                raise self.error("cannot use '...' outside a vararg function")
            self.advance()
            return Vararg(t.line)
        if t.is_op("{"):
            return self.table()
        return self.suffixed_expr()

    def primary_expr(self) -> Expr:
        t = self.tok
        if t.kind is Kind.NAME:
            self.advance()
            return Name(t.line, t.value)
        if t.is_op("("):
            self.advance()
            inner = self.expr()
            self.expect_match(")", "(", t.line, False)
            return Paren(t.line, inner)
        raise self.error("unexpected symbol")

    def suffixed_expr(self) -> Expr:
        expr = self.primary_expr()
        while True:
            t = self.tok
            if t.is_op("."):
                self.advance()
                key = self.name()
                expr = Index(key.line, expr, String(key.line, key.value), True)
            elif t.is_op("["):
                self.advance()
                key_expr = self.expr()
                self.expect_op("]")
                expr = Index(t.line, expr, key_expr, False)
            elif t.is_op(":"):
                self.advance()
                method = self.name()
                expr = MethodCall(method.line, expr, method.value, self.call_args())
            elif t.is_op("(") or t.is_op("{") or t.kind is Kind.STRING:
                line = t.line
                expr = Call(line, expr, self.call_args())
            else:
                return expr

    def call_args(self) -> list[Expr]:
        t = self.tok
        if t.kind is Kind.STRING:
            self.advance()
            return [String(t.line, t.value)]
        if t.is_op("{"):
            return [self.table()]
        if t.is_op("("):
            # lparser.c compares the '(' with ``lastline``: the line where the previous token *ends* (a multi-line
            # string), except right after a look-ahead (a table item's name, checked for '='), when it is the '('
            # token's own line, so the check cannot fire
            previous = self.tokens[self.pos - 1]
            if self.pos != self.looked_ahead and t.line != (previous.last_line or previous.line):
                raise self.error("ambiguous syntax (function call x new statement)")
            self.advance()
            args = [] if self.check_op(")") else self.exprlist()
            self.expect_match(")", "(", t.line, False)
            return args
        raise self.error("function arguments expected")

    def table(self) -> Table:
        open_tok = self.expect_op("{")
        fields: list[Field] = []
        while not self.check_op("}"):
            t = self.tok
            self.looked_ahead = self.pos + 1 if t.kind is Kind.NAME else -1
            if t.kind is Kind.NAME and self.peek().is_op("="):
                self.advance()
                self.advance()
                fields.append(Field(String(t.line, t.value), self.expr(), True))
            elif t.is_op("["):
                self.advance()
                key = self.expr()
                self.expect_op("]")
                self.expect_op("=")
                fields.append(Field(key, self.expr(), False))
            else:
                fields.append(Field(None, self.expr(), False))
            if self.check_op(",") or self.check_op(";"):
                self.advance()
            else:
                break
        self.expect_match("}", "{", open_tok.line, False)
        return Table(open_tok.line, fields)


def parse(code: bytes | str) -> Parsed:
    """Tokenize and parse a library source (the shebang line is skipped), then resolve names. Never raises.

    The trees of the last few sources up to 64 KiB are kept and shared: a library is read for its functions and
    then for the crash check, and parsing is the expensive part of both. (Bigger trees are not kept: a 1 MiB
    source makes a tree of many megabytes.) Treat the result as read-only."""
    if len(code) <= _SHARED_TREE_LIMIT:
        return _parse_shared(code)
    return _parse(code)


_SHARED_TREE_LIMIT = 64 * 1024


@functools.lru_cache(maxsize=4)
def _parse_shared(code: bytes | str) -> Parsed:
    return _parse(code)


def _parse(code: bytes | str) -> Parsed:
    tokens = tokenize(code)
    parser = _Parser(tokens.tokens)
    body: list[Stat] = []
    error: Problem | None = None
    with deep_recursion():
        try:
            parser.chunk(body)
        except ParseError as exc:
            error = Problem(exc.line, exc.message)
        except RecursionError:  # pragma: no cover - only with a recursion limit far below _RECURSION_LIMIT
            error = Problem(parser.tok.line, "chunk has too many syntax levels")
        _Resolver().block(body, None)
    return Parsed(body, error, list(tokens.problems), list(tokens.comments))


@contextmanager
def deep_recursion() -> Iterator[None]:
    """Let the recursive parser and walkers go as deep as Lua's own nesting limit allows."""
    old = sys.getrecursionlimit()
    if old < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    try:
        yield
    finally:
        if old < _RECURSION_LIMIT:
            sys.setrecursionlimit(old)


class _Resolver:
    """Annotates every :class:`Name` with its :class:`Binding` (``None`` for globals), following Lua's scoping."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Binding]] = [{}]

    def lookup(self, name: str) -> Binding | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def declare(self, name: str, line: int, func: Func | None, value: Expr | None = None) -> Binding:
        binding = Binding(name, line, func, value)
        self.scopes[-1][name] = binding
        return binding

    def block(self, stats: list[Stat], func: Func | None, predeclared: list[Binding] | None = None) -> None:
        self.scopes.append({b.name: b for b in predeclared or ()})
        for stat in stats:
            self.stat(stat, func)
        self.scopes.pop()

    def stat(self, s: Stat, func: Func | None) -> None:
        if isinstance(s, Local):
            for value in s.values:
                self.expr(value, func)
            # an initial value is only recorded when it is unambiguous (as many values as names)
            values: list[Expr | None] = list(s.values) if len(s.values) == len(s.names) else [None] * len(s.names)
            s.bindings = [self.declare(name, s.line, func, value) for name, value in zip(s.names, values, strict=True)]
        elif isinstance(s, LocalFunction):
            s.binding = self.declare(s.name, s.line, func, s.func)
            self.expr(s.func, func)
        elif isinstance(s, FunctionDecl):
            self.target(s.target, func)
            self.expr(s.func, func)
        elif isinstance(s, Assign):
            for value in s.values:
                self.expr(value, func)
            for target in s.targets:
                self.target(target, func)
        elif isinstance(s, CallStat):
            self.expr(s.call, func)
        elif isinstance(s, Do):
            self.block(s.body, func)
        elif isinstance(s, While):
            self.expr(s.cond, func)
            self.block(s.body, func)
        elif isinstance(s, Repeat):
            # the condition sees the body's locals
            self.scopes.append({})
            for inner in s.body:
                self.stat(inner, func)
            self.expr(s.cond, func)
            self.scopes.pop()
        elif isinstance(s, If):
            for cond, body in s.tests:
                self.expr(cond, func)
                self.block(body, func)
            if s.orelse is not None:
                self.block(s.orelse, func)
        elif isinstance(s, NumFor):
            for e in (s.start, s.stop, s.step):
                if e is not None:
                    self.expr(e, func)
            s.binding = Binding(s.var, s.line, func)
            self.block(s.body, func, [s.binding])
        elif isinstance(s, GenFor):
            for e in s.exprs:
                self.expr(e, func)
            s.bindings = [Binding(name, s.line, func) for name in s.names]
            self.block(s.body, func, s.bindings)
        elif isinstance(s, Return):
            for e in s.values:
                self.expr(e, func)

    def target(self, target: Expr, func: Func | None) -> None:
        if isinstance(target, Name):
            target.binding = self.lookup(target.name)
            if target.binding is not None:
                target.binding.reassigned += 1
        else:
            self.expr(target, func)

    def expr(self, e: Expr | None, func: Func | None) -> None:
        while e is not None:
            if isinstance(e, Name):
                e.binding = self.lookup(e.name)
                return
            if isinstance(e, Func):
                e.param_bindings = [Binding(p, e.line, e) for p in e.params]
                self.block(e.body, e, e.param_bindings)
                return
            spine = spine_child(e)
            for child in children(e):
                if child is not spine:
                    self.expr(child, func)
            e = spine


# ------------------------------------------------------------------------------------------------------ helpers


def children(e: Expr) -> Iterator[Expr]:
    """Direct sub-expressions of an expression (not into function bodies)."""
    if isinstance(e, Index):
        yield e.obj
        yield e.key
    elif isinstance(e, Call):
        yield e.func
        yield from e.args
    elif isinstance(e, MethodCall):
        yield e.obj
        yield from e.args
    elif isinstance(e, Table):
        for f in e.fields:
            if f.key is not None:
                yield f.key
            yield f.value
    elif isinstance(e, BinOp):
        yield e.left
        yield e.right
    elif isinstance(e, UnOp):
        yield e.operand
    elif isinstance(e, Paren):
        yield e.expr


def spine_child(e: Expr) -> Expr | None:
    """The child along which Lua lets expressions grow without a nesting level (``a + b + c``, ``a.b.c``,
    ``f()()``, ``o:m():m()``): walked in a loop rather than by recursion."""
    if isinstance(e, BinOp):
        return e.left
    if isinstance(e, Index):
        return e.obj
    if isinstance(e, Call):
        return e.func
    if isinstance(e, MethodCall):
        return e.obj
    return None


def dotted(e: Expr) -> str | None:
    """``redis.call`` for ``Index(Name('redis'), 'call')`` (the root must be a global); ``None`` otherwise."""
    parts: list[str] = []
    while isinstance(e, Index):
        if not (e.dot and isinstance(e.key, String)):
            return None
        parts.append(e.key.value)
        e = e.obj
    if isinstance(e, Name) and e.binding is None:
        parts.append(e.name)
        return ".".join(reversed(parts))
    return None


def unparen(e: Expr) -> Expr:
    while isinstance(e, Paren):
        e = e.expr
    return e


def constant_string(e: Expr, _depth: int = 0) -> str | None:
    """The string value of a constant expression: a string or number literal, a ``..`` of constants, or a local
    that is assigned a constant once and never reassigned. ``None`` when not a constant."""
    if _depth > 20:
        return None
    e = unparen(e)
    if isinstance(e, String):
        return e.value
    if isinstance(e, Number):
        return number_text(e.text)
    if isinstance(e, BinOp) and e.op == "..":
        left = constant_string(e.left, _depth + 1)
        right = constant_string(e.right, _depth + 1) if left is not None else None
        return None if right is None or left is None else left + right
    if isinstance(e, Name) and e.binding is not None and e.binding.reassigned == 0 and e.binding.value is not None:
        return constant_string(e.binding.value, _depth + 1)
    return None


def number_text(text: str) -> str | None:
    """How Lua 5.1 turns a numeric literal into a string (``%.14g``); ``None`` if it is not a valid numeral."""
    try:
        value = float(int(text, 16)) if text[:2].lower() == "0x" else float(text)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.14g}"


def resolve_value(e: Expr, _depth: int = 0) -> Expr:
    """Follow a local that is assigned once and never reassigned to its value (e.g. a table constructor)."""
    e = unparen(e)
    while isinstance(e, Name) and e.binding is not None and e.binding.reassigned == 0 and _depth < 20:
        if e.binding.value is None:
            break
        e = unparen(e.binding.value)
        _depth += 1
    return e


def call_graph(body: list[Stat]) -> dict[Func | None, set[Func]]:
    """Which function bodies each function calls (``None``: the top level). Only calls that name a function
    statically count: a function literal, or a local bound once to one (``local function f``)."""
    edges: dict[Func | None, set[Func]] = {}

    class _Calls(Walker):
        def on_expr(self, e: Expr, parent: Expr | Stat | None) -> None:
            if isinstance(e, Call):
                callee = resolve_value(e.func)
                if isinstance(callee, Func):
                    edges.setdefault(self.funcs[-1] if self.funcs else None, set()).add(callee)

    _Calls().walk(body)
    return edges


def reachable(graph: dict[Func | None, set[Func]], roots: Iterable[Func | None]) -> dict[Func, Func | None]:
    """Functions reachable from ``roots`` (roots included unless ``None``), each mapped to the root it was first
    reached from."""
    origin: dict[Func, Func | None] = {}
    for root in roots:
        if root is not None and root not in origin:
            origin[root] = root
        todo = list(graph.get(root, ()))
        while todo:
            func = todo.pop()
            if func not in origin:
                origin[func] = root
                todo.extend(graph.get(func, ()))
    return origin


def load_time_functions(body: list[Stat]) -> set[Func]:
    """Function bodies that run during ``FUNCTION LOAD``: those the top level calls (directly, through a local
    bound once to them, or as ``(function() ... end)()``), and those they call in turn."""
    return set(reachable(call_graph(body), [None]))


class Walker:
    """Visits every statement and expression in source order, tracking the stack of enclosing functions.

    Subclasses override :meth:`on_stat` / :meth:`on_expr`; ``self.funcs`` is the stack of enclosing :class:`Func`
    nodes (empty at the library's top level). Set ``load_time`` (see :func:`load_time_functions`) to make
    :attr:`at_load` also true inside function bodies that the top level calls.
    """

    def __init__(self, load_time: set[Func] | None = None) -> None:
        self.funcs: list[Func] = []
        self.load_time: set[Func] = load_time or set()

    @property
    def top_level(self) -> bool:
        """Outside every function body: code that runs during ``FUNCTION LOAD``."""
        return not self.funcs

    @property
    def at_load(self) -> bool:
        """Runs during ``FUNCTION LOAD``: top level, or a function body the top level calls."""
        return not self.funcs or self.funcs[-1] in self.load_time

    def on_stat(self, s: Stat) -> None:
        """Called before a statement's children are visited."""

    def on_expr(self, e: Expr, parent: Expr | Stat | None) -> None:
        """Called before an expression's children are visited."""

    def walk(self, stats: list[Stat]) -> None:
        with deep_recursion():
            for s in stats:
                self.stat(s)

    def stat(self, s: Stat) -> None:
        self.on_stat(s)
        if isinstance(s, Local):
            self.exprs(s.values, s)
        elif isinstance(s, LocalFunction):
            self.expr(s.func, s)
        elif isinstance(s, FunctionDecl):
            self.expr(s.target, s)
            self.expr(s.func, s)
        elif isinstance(s, Assign):
            self.exprs(s.targets, s)
            self.exprs(s.values, s)
        elif isinstance(s, CallStat):
            self.expr(s.call, s)
        elif isinstance(s, Do):
            self.walk(s.body)
        elif isinstance(s, While):
            self.expr(s.cond, s)
            self.walk(s.body)
        elif isinstance(s, Repeat):
            self.walk(s.body)
            self.expr(s.cond, s)
        elif isinstance(s, If):
            for cond, body in s.tests:
                self.expr(cond, s)
                self.walk(body)
            if s.orelse is not None:
                self.walk(s.orelse)
        elif isinstance(s, NumFor):
            self.exprs([e for e in (s.start, s.stop, s.step) if e is not None], s)
            self.walk(s.body)
        elif isinstance(s, GenFor):
            self.exprs(s.exprs, s)
            self.walk(s.body)
        elif isinstance(s, Return):
            self.exprs(s.values, s)

    def exprs(self, es: list[Expr], parent: Expr | Stat) -> None:
        for e in es:
            self.expr(e, parent)

    def expr(self, e: Expr, parent: Expr | Stat | None) -> None:
        node: Expr | None = e
        while node is not None:
            self.on_expr(node, parent)
            if isinstance(node, Func):
                self.funcs.append(node)
                self.walk(node.body)
                self.funcs.pop()
                return
            spine = spine_child(node)
            for child in children(node):
                if child is not spine:
                    self.expr(child, node)
            parent, node = node, spine
