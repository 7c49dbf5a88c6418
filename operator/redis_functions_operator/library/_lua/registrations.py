"""Where a library's source calls register_function, read statically (best effort, pure; private to lint).

Which functions a library registers is the vet's answer (it runs the load); this reader serves lint's run-time hints
only: which local functions are callbacks (so their first two parameters are KEYS and ARGV), which carry no-writes,
and which registrations sit inside a function body. Both registration forms are recognised:
``redis.register_function('f', cb)`` and ``redis.register_function{function_name='f', callback=cb, flags={...}}``
(also written ``redis.register_function({...})``), through Valkey's ``server`` alias or a local alias
(``local register = redis.register_function``).

The source is parsed (``_lua_syntax``), so comments and strings that merely contain ``register_function`` are not
registrations. Only registrations at the library's top level count: that is the code ``FUNCTION LOAD`` runs.
``redis.register_function`` inside a function body is not called at load time (and fails when that function
runs). If the source does not parse, a token scan stands in for the parser so the result is still useful.

What Redis does with the arguments (checked on Redis 7.0.15 and Valkey 9.1.2): a single argument must be a table
whose keys ``function_name``, ``callback``, ``flags``, ``description`` are matched case-insensitively; two
arguments are ``(name, callback)``; flags are read from the table's array part only (``{['no-writes']=true}`` is
silently no flags), each matched case-insensitively; a number is accepted where a string is expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from redis_functions_operator.library._lua.syntax import (
    Call,
    Const,
    Expr,
    Func,
    MethodCall,
    Name,
    Number,
    Parsed,
    String,
    Table,
    Vararg,
    Walker,
    constant_string,
    dotted,
    load_time_functions,
    resolve_value,
    unparen,
)
from redis_functions_operator.library._lua.tokens import Kind, Token, tokenize

#: Every flag Redis 7 and Valkey 9 accept (matched case-insensitively); anything else fails the load.
VALID_FLAGS = ("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")

#: The keys of the table form, matched case-insensitively; any other key fails the load.
REGISTER_FIELDS = ("function_name", "callback", "flags", "description")

REGISTER_APIS = ("redis.register_function", "server.register_function")


@dataclass(eq=False)
class Registration:
    """One ``register_function`` call as written, with what a static read can predict about it.

    ``line`` is the line of the ``register_function`` token (or of the alias name). ``name`` is ``None`` when the
    function name is not a constant. ``flags`` are the constant entries of the flags table's array part, known
    flags in Redis' lower-case spelling, others as written; ``flags_known`` is false when some entry or the table
    itself is not a constant. ``errors`` are the argument errors Redis would raise, in Redis' wording.
    """

    line: int
    api: str
    at_load: bool  # runs during FUNCTION LOAD (top level, or a function the top level calls)
    form: str  # "positional" | "table" | "unknown"
    name: str | None = None
    name_line: int = 0
    name_expr: Expr | None = None
    callback: Expr | None = None
    flags: tuple[str, ...] = ()
    flags_known: bool = True
    flags_line: int = 0
    ignored_flags: list[tuple[int, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def callback_func(self) -> Func | None:
        """The callback's function body when it is a function literal or a local bound once to one."""
        if self.callback is None:
            return None
        value = resolve_value(self.callback)
        return value if isinstance(value, Func) else None


def find_registrations(parsed: Parsed, code: bytes | str) -> list[Registration]:
    """Every ``register_function`` call: from the syntax tree when the source parsed, else from a token scan
    (``code`` is only used then)."""
    if parsed.error is None:
        finder = _Finder(load_time_functions(parsed.body))
        finder.walk(parsed.body)
        return [expanded for reg in finder.found for expanded in finder.through_helper(reg)]
    return _scan_tokens(tokenize(code).tokens)


def canonical_flag(flag: str) -> str:
    lowered = flag.lower()
    return lowered if lowered in VALID_FLAGS else flag


# ----------------------------------------------------------------------------------------------- from the tree


def register_api(func: Expr) -> str | None:
    """``redis.register_function`` / ``server.register_function`` when ``func`` names one of them, directly or
    through a local assigned once (``local register = redis.register_function``)."""
    func = unparen(func)
    path = dotted(func)
    if path in REGISTER_APIS:
        return path
    if isinstance(func, Name) and func.binding is not None:
        target = resolve_value(func)
        if target is not func:
            path = dotted(target)
            if path in REGISTER_APIS:
                return path
    return None


class _Finder(Walker):
    """Collects registrations, and every call of a local function, so that a helper such as
    ``local function reg(name, cb) redis.register_function(name, cb) end`` can be read through its call sites."""

    def __init__(self, load_time: set[Func]) -> None:
        super().__init__(load_time)
        self.found: list[Registration] = []
        self.calls: dict[Func, list[Call]] = {}
        self.escaped: set[Func] = set()  # referenced other than by a direct call: its call sites are not all known

    def on_expr(self, e: Expr, parent: object) -> None:
        if isinstance(e, Call):
            api = register_api(e.func)
            if api is not None:
                self.found.append(_read_call(e, api, self.at_load))
            callee = resolve_value(e.func)
            if isinstance(callee, Func):
                self.calls.setdefault(callee, []).append(e)
        elif isinstance(e, Name) and e.binding is not None:
            value = resolve_value(e)
            called = isinstance(parent, Call) and unparen(parent.func) is e
            if isinstance(value, Func) and not called:
                self.escaped.add(value)

    def through_helper(self, reg: Registration) -> list[Registration]:
        """``reg`` itself, or one registration per call site when its name is a parameter of a helper that is
        only ever called directly, each time with a constant name (so names differing only in case are seen)."""
        if reg.name is not None or reg.name_expr is None:
            return [reg]
        param = unparen(reg.name_expr)
        if not isinstance(param, Name) or param.binding is None or param.binding.reassigned:
            return [reg]
        helper = next((f for f in self.calls if param.binding in f.param_bindings), None)
        if helper is None or helper in self.escaped:
            return [reg]
        position = helper.param_bindings.index(param.binding)
        callback = unparen(reg.callback) if reg.callback is not None else None
        callback_at = (
            helper.param_bindings.index(callback.binding)
            if isinstance(callback, Name) and callback.binding in helper.param_bindings
            else None
        )
        expanded = []
        for call in self.calls[helper]:
            name = constant_string(call.args[position]) if position < len(call.args) else None
            if name is None:
                return [reg]
            line = call.args[position].line
            passed = call.args[callback_at] if callback_at is not None and callback_at < len(call.args) else None
            expanded.append(replace(reg, name=name, name_line=line, line=line, callback=passed or reg.callback))
        return expanded


def _read_call(call: Call, api: str, at_load: bool) -> Registration:
    reg = Registration(line=unparen(call.func).line, api=api, at_load=at_load, form="unknown")
    args = call.args
    # a call or ... as the last argument expands to any number of values: the count is only known at run time
    open_ended = bool(args) and isinstance(args[-1], Vararg | Call | MethodCall)
    if open_ended and len(args) < 2:
        return reg
    if len(args) == 1:
        table = resolve_value(args[0])
        if isinstance(table, Table):
            reg.form = "table"
            _read_table(reg, table)
        elif _definitely_not(args[0], "table"):
            reg.errors.append(
                (
                    reg.line,
                    f"calling {api} with a single argument is only applicable to Lua table "
                    "(representing named arguments).",
                )
            )
        return reg
    if len(args) == 2 or open_ended:
        reg.form = "positional"
        _read_name(reg, args[0], f"first argument to {api} must be a string")
        reg.callback = args[1]
        if len(args) == 2 and _definitely_not(args[1], "function"):
            reg.errors.append((args[1].line, f"second argument to {api} must be a function"))
        return reg
    reg.errors.append((reg.line, f"wrong number of arguments to {api}"))
    return reg


def _read_name(reg: Registration, value: Expr, error: str) -> None:
    reg.name_expr = value
    reg.name = constant_string(value)
    reg.name_line = value.line
    if reg.name is None and _definitely_not(value, "string"):
        reg.errors.append((value.line, error))


def _read_table(reg: Registration, table: Table) -> None:
    api = reg.api
    seen: set[str] = set()
    for item in table.fields:
        if item.key is None:
            # a positional entry has a number key, which Redis reads as an (unknown) argument name
            reg.errors.append((item.value.line, f"unknown argument given to {api}"))
            continue
        key = constant_string(item.key)
        if key is None:
            continue
        lowered = key.lower()
        if lowered not in REGISTER_FIELDS:
            reg.errors.append((item.value.line, f"unknown argument given to {api}"))
            continue
        seen.add(lowered)
        if lowered == "function_name":
            _read_name(reg, item.value, f"function_name argument given to {api} must be a string")
        elif lowered == "callback":
            reg.callback = item.value
            if _definitely_not(item.value, "function"):
                reg.errors.append((item.value.line, f"callback argument given to {api} must be a function"))
        elif lowered == "description":
            if _definitely_not(item.value, "string"):
                reg.errors.append((item.value.line, f"description argument given to {api} must be a string"))
        else:
            _read_flags(reg, item.value)
    if "function_name" not in seen:
        reg.errors.append((reg.line, f"{api} must get a function name argument"))
    if "callback" not in seen:
        reg.errors.append((reg.line, f"{api} must get a callback argument"))


def _read_flags(reg: Registration, value: Expr) -> None:
    reg.flags_line = value.line
    table = resolve_value(value)
    if not isinstance(table, Table):
        reg.flags_known = False
        if _definitely_not(value, "table"):
            reg.errors.append((value.line, f"flags argument to {reg.api} must be a table representing function flags"))
        return
    flags: list[str] = []
    for item in table.fields:
        if item.key is not None:
            # Redis reads flags[1], flags[2], ... until nil: keyed entries are silently ignored
            text = constant_string(item.key)
            if text is not None and not text.isdigit():
                reg.ignored_flags.append((item.value.line, text))
            else:
                reg.flags_known = False
            continue
        flag = constant_string(item.value)
        if flag is None:
            reg.flags_known = False
            if _definitely_not(item.value, "string"):
                flags.append(_describe(item.value))
            continue
        flags.append(canonical_flag(flag))
    reg.flags = tuple(flags)


def _definitely_not(e: Expr, kind: str) -> bool:
    """True when ``e`` is a literal (or a once-assigned local) of another type than ``kind``
    ("string": string or number; "function"; "table")."""
    value = resolve_value(e)
    if isinstance(value, String | Number):
        return kind != "string"
    if isinstance(value, Func):
        return kind != "function"
    if isinstance(value, Table):
        return kind != "table"
    return isinstance(value, Const)  # nil, true, false


def _describe(e: Expr) -> str:
    value = resolve_value(e)
    if isinstance(value, Const):
        return value.value
    if isinstance(value, Func):
        return "<function>"
    return "<table>"


# ------------------------------------------------------------------------------------------ from a token scan


def _scan_tokens(tokens: list[Token]) -> list[Registration]:
    """Fallback for sources that do not parse: ``<redis|server> . register_function`` followed by ``( 'name'`` or
    a table with ``function_name = 'name'`` and ``flags = { ... }``. Nesting cannot be told, so every match counts
    as top level."""
    found: list[Registration] = []
    n = len(tokens)
    for i in range(n - 3):
        t = tokens[i]
        if not (
            t.kind is Kind.NAME
            and t.value in ("redis", "server")
            and tokens[i + 1].is_op(".")
            and tokens[i + 2].kind is Kind.NAME
            and tokens[i + 2].value == "register_function"
        ):
            continue
        line = tokens[i + 2].line
        api = f"{t.value}.register_function"
        j = i + 3
        if tokens[j].is_op("(") and j + 1 < n and tokens[j + 1].kind is Kind.STRING:
            found.append(Registration(line, api, True, "positional", tokens[j + 1].value, tokens[j + 1].line))
            continue
        if tokens[j].is_op("(") and j + 1 < n:
            j += 1
        if tokens[j].is_op("{"):
            found.append(_scan_table(tokens, j, line, api))
    return found


def _scan_table(tokens: list[Token], start: int, line: int, api: str) -> Registration:
    reg = Registration(line, api, True, "table", flags_known=False)
    depth = 0
    j = start
    n = len(tokens)
    while j < n and tokens[j].kind is not Kind.EOF:
        t = tokens[j]
        if t.is_op("{") or t.is_op("(") or t.is_op("["):
            depth += 1
        elif t.is_op("}") or t.is_op(")") or t.is_op("]"):
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and t.kind is Kind.NAME and j + 2 < n and tokens[j + 1].is_op("="):
            key = t.value.lower()
            value = tokens[j + 2]
            if key == "function_name" and value.kind is Kind.STRING:
                reg.name, reg.name_line = value.value, value.line
            elif key == "flags" and value.is_op("{"):
                flags: list[str] = []
                k = j + 3
                while k < n and tokens[k].kind is Kind.STRING:
                    flags.append(canonical_flag(tokens[k].value))
                    k += 1
                    if tokens[k].is_op(",") or tokens[k].is_op(";"):
                        k += 1
                reg.flags, reg.flags_line, reg.flags_known = tuple(flags), value.line, tokens[k].is_op("}")
        j += 1
    return reg


__all__ = [
    "REGISTER_FIELDS",
    "VALID_FLAGS",
    "Registration",
    "find_registrations",
]
