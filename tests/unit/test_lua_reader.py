"""The static Lua reader behind lint's hints: the tokenizer, the parser and where register_function is called.

Which functions a library registers is not read here: the vet runs the load (tests/unit/test_vet.py)."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_functions_operator.library._lua.registrations import find_registrations
from redis_functions_operator.library._lua.syntax import parse
from redis_functions_operator.library._lua.tokens import Kind, count_lines, tokenize

REPO = Path(__file__).resolve().parents[2]
LUA_DIR = REPO / "lua"


# --------------------------------------------------------------------------------------------------- tokenizer


def values(code: str) -> list[tuple[str, str, int]]:
    return [(t.kind.value, t.value, t.line) for t in tokenize(code, skip_shebang=False).tokens[:-1]]


def test_tokens_and_lines() -> None:
    assert values("local x = 1\nx = x .. 'a'") == [
        ("keyword", "local", 1),
        ("name", "x", 1),
        ("op", "=", 1),
        ("number", "1", 1),
        ("name", "x", 2),
        ("op", "=", 2),
        ("name", "x", 2),
        ("op", "..", 2),
        ("string", "a", 2),
    ]


@pytest.mark.parametrize(
    ("text", "breaks"),
    [("a\nb", 1), ("a\r\nb", 1), ("a\n\rb", 1), ("a\rb", 1), ("\n\n\r\n\r", 3), ("", 0), ("\r\r", 2)],
)
def test_line_breaks_counted_like_lua(text: str, breaks: int) -> None:
    assert count_lines(text) == breaks


def test_crlf_file_lines_match_lua() -> None:
    # Redis 7.0.15 reports this compile error at user_function:5
    parsed = parse(b"#!lua name=n3\r\n\r\nlocal x = \r\n\r\n)\r\n")
    assert parsed.error is not None
    assert parsed.error.line == 5


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (r"'a\nb'", "a\nb"),
        (r'"tab\there"', "tab\there"),
        (r"'\65\066\0677'", "ABC7"),
        (r"'\x41'", "x41"),  # Lua 5.1 has no \x escape: Redis returns 'x41'
        ("'a\\\nb'", "a\nb"),
        (r"'it\'s'", "it's"),
        ("[[\nfirst newline dropped]]", "first newline dropped"),
        ("[==[ a ]] b ]=] c ]==]", " a ]] b ]=] c "),
        ("[[ a [[ b ]]", " a [[ b "),  # Redis' Lua does not do 5.1's nesting check: the first ]] closes
    ],
)
def test_string_values(code: str, value: str) -> None:
    tokens = tokenize(code, skip_shebang=False)
    assert tokens.problems == []
    assert tokens.tokens[0].kind is Kind.STRING
    assert tokens.tokens[0].value == value


def test_comments_are_skipped_and_recorded() -> None:
    code = "a -- line\n--[[ long\ncomment ]] b --[==[ x ]] ]==] c\n-- [[ not long\nd"
    assert [t.value for t in tokenize(code, skip_shebang=False).tokens[:-1]] == ["a", "b", "c", "d"]
    assert [(c.line, c.message) for c in tokenize(code, skip_shebang=False).comments] == [
        (1, " line"),
        (2, " long\ncomment "),
        (3, " x ]] "),
        (4, " [[ not long"),
    ]


@pytest.mark.parametrize("number", ["3", "3.0", "3.1416", "314.16e-2", "0.31416E1", "0xff", "0x56", ".5", "2."])
def test_numbers(number: str) -> None:
    tokens = tokenize(f"x = {number}", skip_shebang=False)
    assert tokens.problems == []
    assert tokens.tokens[2].value == number


@pytest.mark.parametrize(
    ("code", "line", "message"),
    [
        ("x = 'abc\ny = 1", 1, "unfinished string near ''abc'"),
        ("x = 1\ny = [[abc\n\n", 2, "unfinished long string (starting at line 2) near '<eof>'"),
        ("x = 1\n--[==[ abc ]]\n", 2, "unfinished long comment (starting at line 2) near '<eof>'"),
        ("x = '\\300'", 1, "escape sequence too large near ''\\300'"),
        ("x = 2args", 1, "malformed number near '2args'"),
        ("x = [= 1", 1, "invalid long string delimiter near '[='"),
    ],
)
def test_tokenizer_problems_do_not_raise(code: str, line: int, message: str) -> None:
    problems = tokenize(code, skip_shebang=False).problems
    assert [(p.line, p.message) for p in problems] == [(line, message)]


def test_shebang_line_is_skipped_even_when_redis_would_refuse_it() -> None:
    for prefix in (b"", b"\xef\xbb\xbf", b"\n", b" "):
        tokens = tokenize(prefix + b"#!lua name=x\nreturn 1").tokens
        assert [t.value for t in tokens[:-1]] == ["return", "1"]
        assert tokens[0].line == (3 if prefix == b"\n" else 2)


# ------------------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(
    ("code", "line", "message"),
    [
        ("x = ", 1, "unexpected symbol near '<eof>'"),
        ("local function f()\n  return 1\n", 3, "'end' expected (to close 'function' at line 1) near '<eof>'"),
        ("f(\n1", 2, "')' expected (to close '(' at line 1) near '<eof>'"),
        ("local f = g\n(f)()", 2, "ambiguous syntax (function call x new statement) near '('"),
        ("x", 1, "syntax error near '<eof>'"),
        ("f() = 1", 1, "syntax error near '='"),
        ("break", 1, "no loop to break near '<eof>'"),
        ("local function f() return ... end", 1, "cannot use '...' outside a vararg function near '...'"),
        ("return 1\nx = 2", 2, "'<eof>' expected near 'x'"),
        ("local x = " + "(" * 199 + "1" + ")" * 199, 1, "chunk has too many syntax levels"),
    ],
)
def test_parse_errors_like_lua(code: str, line: int, message: str) -> None:
    parsed = parse(code.encode())
    assert parsed.error is not None
    assert (parsed.error.line, parsed.error.message) == (line, message)


@pytest.mark.parametrize(
    "code",
    [
        'local function f(s) return function() return s end end\nlocal v = f"a\\\nb"()\n',  # '(' where the string ends
        "local f, g\nlocal t = { f\n(g) }\n",  # lparser.c's look-ahead for '=' moves lastline to the '('
        "local n = 1\0\n",  # strchr("Ee", c) matches the NUL: the numeral swallows it
        "local n = 2\0\0 + 1\n",
    ],
)
def test_valid_lua_the_reader_once_refused(code: str) -> None:
    parsed = parse(b"#!lua name=x\n" + code.encode())
    assert (parsed.error, parsed.problems) == (None, [])


def test_nesting_limit_matches_redis() -> None:
    # Redis 7.0.15 loads 198 nested parentheses and refuses 199 (luac 5.1.5 refuses 198)
    assert parse(("local x = " + "(" * 198 + "1" + ")" * 198).encode()).error is None


def test_long_left_associative_chains_do_not_recurse() -> None:
    # Lua accepts these at any length; the tree walks must not hit Python's recursion limit
    for body in ("local x = 1" + " + 1" * 30000, "local t = {} local x = t" + ".a" * 30000):
        code = f"#!lua name=c\n{body}\nredis.register_function('c', function() return x end)\n"
        assert [r.name for r in find_registrations(parse(code.encode()), code)] == ["c"]


def test_statements_before_a_syntax_error_are_kept() -> None:
    parsed = parse(b"#!lua name=x\nlocal a = 1\nlocal b = 2\nlocal c = = 3\n")
    assert parsed.error is not None
    assert parsed.error.line == 4
    assert len(parsed.body) == 2


LUAC = shutil.which("luac5.1") or shutil.which("luac")


def _luac_error(tmp: Path, code: str) -> tuple[int, str] | None:
    path = tmp / "x.lua"
    path.write_text(code)
    result = subprocess.run([LUAC or "luac", "-p", str(path)], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    m = re.search(r":(\d+): (.*)", result.stderr)
    assert m is not None, result.stderr
    return int(m.group(1)), m.group(2).strip()


MUTATIONS = [" end ", " ( ", " ) ", " = ", " , ", " local ", " function ", " [[x]] ", " [==[ ", " ]] ", " ' ",
             ' " ', " -- ", " --[[ ", " { ", " } ", " . ", " .. ", " : ", " return ", " break ", " if ", " then ",
             " do ", " 1e5 ", " 0x1F ", " ... ", " nil ", " not ", " # ", " ; ", "\n(", " [ ", " ] ", " until ",
             " repeat ", " elseif ", " else ", " for ", " in ", " while ", " x.y:z ", " @ ", " ~= ", " ^ ", " 2x "]  # fmt: skip


@pytest.mark.skipif(LUAC is None or not LUA_DIR.is_dir(), reason="needs luac (Lua 5.1) and lua/*.lua")
def test_parser_accepts_exactly_what_luac_accepts(tmp_path: Path) -> None:
    """Mutate the corrected libraries at random; our parser must accept exactly the mutants Lua 5.1 compiles, and
    report the first error on Lua's line (except unfinished long brackets, which we report where they start)."""
    sources = [p.read_text() for p in sorted(LUA_DIR.glob("*.lua"))]
    assert sources
    rng = random.Random(11)
    for _ in range(250):
        lines = rng.choice(sources).split("\n")
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(1, len(lines))
            pos = rng.randint(0, len(lines[k]))
            if rng.random() < 0.6:
                lines[k] = lines[k][:pos] + rng.choice(MUTATIONS) + lines[k][pos:]
            else:
                lines[k] = lines[k][:pos] + lines[k][pos + rng.randint(1, 8) :]
        code = "\n".join(lines)
        theirs = _luac_error(tmp_path, "\n" + code.split("\n", 1)[1])  # Lua sees the code after the shebang
        if theirs is not None and "nesting of [[" in theirs[1]:
            continue  # Debian's luac has 5.1's nesting check; Redis' Lua does not
        parsed = parse(code.encode())
        errors = [(p.line, p.message) for p in parsed.problems]
        if parsed.error is not None:
            errors.append((parsed.error.line, parsed.error.message))
        assert bool(errors) == (theirs is not None), (theirs, errors, code)
        if theirs is not None and "unfinished long" not in min(errors)[1]:
            assert min(errors)[0] == theirs[0], (theirs, errors, code)


ATOMS = ["redis", ".", "register_function", "(", ")", "{", "}", "'f'", '"g"', "[[", "]]", "[=[", "]=]", "--", "--[[",
         "function", "end", "=", ",", "flags", "function_name", "callback", "local", "x", "\n", " ", "\\", "'", '"',
         "..", "...", "0x", "1e", "if", "then", "do", "return", "\r", "#!lua name=z\n", "\xff", "é"]  # fmt: skip
LUA_ALPHABET = st.sampled_from(ATOMS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LUA_ALPHABET, max_size=60).map("".join))
def test_never_raises_on_token_soup(code: str) -> None:
    source = ("#!lua name=fuzz\n" + code).encode("utf-8", "surrogatepass")
    find_registrations(parse(source), source)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises_on_random_bytes(code: bytes) -> None:
    find_registrations(parse(code), code)


def test_registration_inside_a_function_body_is_not_at_load() -> None:
    code = """#!lua name=x
redis.register_function('outer', function()
  redis.register_function('inner', function() return 1 end)
  return 1
end)
"""
    regs = find_registrations(parse(code.encode()), code)
    assert [(r.name, r.at_load) for r in regs] == [("outer", True), ("inner", False)]


def test_a_helpers_registrations_are_read_through_its_call_sites() -> None:
    code = """#!lua name=x
local function register(name, cb)
  redis.register_function{function_name = name, callback = cb, flags = {'no-writes'}}
end
register('through_helper', function() return 1 end)
"""
    regs = find_registrations(parse(code.encode()), code)
    assert [(r.at_load, r.name, r.flags, r.line) for r in regs] == [(True, "through_helper", ("no-writes",), 5)]
