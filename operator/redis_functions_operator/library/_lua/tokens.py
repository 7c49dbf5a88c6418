"""A Lua 5.1 tokenizer, as Redis' embedded Lua reads a library (private; pure).

Only as much of ``llex.c`` as static analysis needs: names and keywords, numbers, short and long strings (with
their decoded values), punctuation, and comments and whitespace skipped. Line numbers follow Lua's own count
(``\\r\\n`` and ``\\n\\r`` are one line break), so they are the numbers Redis prints in ``user_function:N``
errors. Redis hands Lua the code from the ``\\n`` that ends the shebang line, so line 1 is the shebang and the
tokenizer starts there.

It never raises: what Lua would refuse to lex (an unfinished string, an unfinished long string or comment, a
too-large decimal escape) is recorded in :attr:`Tokens.problems` and tokenizing continues or stops as sensibly as
it can. Redis' Lua is built without the 5.1 "nesting of [[...]]" check: the first matching ``]]`` closes a long
bracket (checked on Redis 7.0.15).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    NAME = "name"
    KEYWORD = "keyword"
    NUMBER = "number"
    STRING = "string"
    OP = "op"
    EOF = "eof"


KEYWORDS = frozenset(
    (
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
        "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    value: str
    line: int
    last_line: int = 0  # for a string spanning lines: the line it ends on (0: same as line)

    def is_op(self, value: str) -> bool:
        return self.kind is Kind.OP and self.value == value

    def is_keyword(self, value: str) -> bool:
        return self.kind is Kind.KEYWORD and self.value == value

    def describe(self) -> str:
        """The token as Lua would name it in an error ``near '...'``."""
        if self.kind is Kind.EOF:
            return "<eof>"
        return self.value


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    message: str


@dataclass
class Tokens:
    tokens: list[Token] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    comments: list[Problem] = field(default_factory=list)  # (line, text without the leading --)


_NEWLINE = re.compile(r"\r\n|\n\r|\r|\n")
_SPACE = re.compile(r"[ \t\f\v\r\n]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Lua 5.1's ``read_numeral``: digits and dots, an exponent mark, its sign, then letters, digits and ``_``. The mark
#: and the sign are tested with ``strchr("Ee", c)`` and ``strchr("+-", c)``, which also match the NUL byte: a NUL
#: right after a numeral is swallowed by it (``1\0`` is the number 1), and the value is read up to that NUL.
_NUMBER = re.compile(r"(?:[0-9]|\.(?=[0-9]))[0-9.]*(?:[eE\0][+\-\0]?)?[A-Za-z0-9_]*")
#: What Lua's ``luaO_str2d`` (``strtod``, then ``strtoul`` base 16) accepts from a numeral token.
_VALID_NUMBER = re.compile(
    r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
)
_LONG_OPEN = re.compile(r"\[(=*)\[")
_SHORT_STRING = {
    '"': re.compile(r'"((?:[^"\\\r\n]|\\(?:\r\n|\n\r|[\s\S]))*)("?)'),
    "'": re.compile(r"'((?:[^'\\\r\n]|\\(?:\r\n|\n\r|[\s\S]))*)('?)"),
}
_LINE_COMMENT = re.compile(r"[^\r\n]*")
_OPS3 = ("...",)
_OPS2 = ("..", "==", "~=", "<=", ">=")
_OPS1 = frozenset("+-*/%^#<>=(){}[];:,.")
_ESCAPE = re.compile(r"\\(\r\n|\n\r|[0-9]{1,3}|[\s\S])")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def count_lines(text: str) -> int:
    """Line breaks in ``text`` as Lua counts them."""
    if "\n" not in text and "\r" not in text:
        return 0
    return len(_NEWLINE.findall(text))


def code_start(code: str) -> tuple[int, int]:
    """Offset and line where Lua's view of the library starts: the ``\\n`` ending the shebang line.

    A source with a BOM, a leading space or blank lines before its shebang (which Redis refuses anyway) is analysed
    from the end of that shebang line too, so the rest still gets findings with the file's line numbers. A source
    without a shebang at the top is analysed from the beginning.
    """
    stripped = code.lstrip("\ufeff \t\r\n")
    if not stripped.startswith("#!"):
        return 0, 1
    prefix = len(code) - len(stripped)
    end = code.find("\n", prefix)
    return (len(code) if end < 0 else end), 1 + count_lines(code[:prefix])


def tokenize(code: bytes | str, *, skip_shebang: bool = True) -> Tokens:
    """Tokenize a library source. ``code`` may be bytes (decoded as UTF-8 with replacement: Lua names are ASCII,
    so only string contents can be affected) or text. Never raises."""
    text = code.decode("utf-8", "replace") if isinstance(code, bytes) else code
    result = Tokens()
    tokens, problems, comments = result.tokens, result.problems, result.comments
    pos, line = code_start(text) if skip_shebang else (0, 1)
    value: list[str]
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in " \t\f\v\r\n":
            m = _SPACE.match(text, pos)
            assert m is not None
            line += count_lines(m.group())
            pos = m.end()
            continue
        if ("a" <= c <= "z") or ("A" <= c <= "Z") or c == "_":
            m = _NAME.match(text, pos)
            assert m is not None
            word = m.group()
            tokens.append(Token(Kind.KEYWORD if word in KEYWORDS else Kind.NAME, word, line))
            pos = m.end()
            continue
        if ("0" <= c <= "9") or (c == "." and pos + 1 < n and "0" <= text[pos + 1] <= "9"):
            m = _NUMBER.match(text, pos)
            assert m is not None
            if not _VALID_NUMBER.fullmatch(m.group().split("\0", 1)[0]):
                problems.append(Problem(line, f"malformed number near '{m.group()}'"))
            tokens.append(Token(Kind.NUMBER, m.group(), line))
            pos = m.end()
            continue
        if c == "-" and text.startswith("--", pos):
            pos += 2
            lm = _LONG_OPEN.match(text, pos)
            if lm is not None:
                start_line = line
                value = []
                pos, line = _long_bracket(text, lm, line, problems, "comment", value)
                comments.append(Problem(start_line, value[0] if value else ""))
            else:
                m = _LINE_COMMENT.match(text, pos)
                assert m is not None
                comments.append(Problem(line, m.group()))
                pos = m.end()
            continue
        if c == "[":
            lm = _LONG_OPEN.match(text, pos)
            if lm is not None:
                start_line = line
                value = []
                pos, line = _long_bracket(text, lm, line, problems, "string", value)
                if value:
                    tokens.append(Token(Kind.STRING, value[0], start_line, line))
                continue
            if text.startswith("[=", pos):
                problems.append(Problem(line, "invalid long string delimiter near '[='"))
        if c in _SHORT_STRING:
            m = _SHORT_STRING[c].match(text, pos)
            assert m is not None
            raw = m.group(1)
            if not m.group(2):
                problems.append(Problem(line, f"unfinished string near '{c}{_clip(raw)}'"))
            else:
                decoded, too_large = _decode_escapes(raw)
                if too_large:
                    problems.append(Problem(line, f"escape sequence too large near '{c}{_clip(raw)}'"))
                tokens.append(Token(Kind.STRING, decoded, line, line + count_lines(raw)))
            line += count_lines(raw)
            pos = m.end()
            continue
        for op in _OPS3 + _OPS2:
            if text.startswith(op, pos):
                tokens.append(Token(Kind.OP, op, line))
                pos += len(op)
                break
        else:
            # Anything else (including characters Lua refuses, like '!' or '@') becomes a one-character operator
            # token; the parser reports it as "unexpected symbol", as Lua does.
            tokens.append(Token(Kind.OP, c, line))
            pos += 1
    tokens.append(Token(Kind.EOF, "", line))
    return result


def _clip(text: str, limit: int = 20) -> str:
    first = _NEWLINE.split(text, maxsplit=1)[0]
    return first if len(first) <= limit else first[:limit] + "..."


def _long_bracket(
    text: str, opening: re.Match[str], line: int, problems: list[Problem], what: str, value: list[str] | None
) -> tuple[int, int]:
    """Consume a long bracket whose opening ``[==[`` matched at ``opening``; return the new position and line."""
    closing = "]" + opening.group(1) + "]"
    start = opening.end()
    end = text.find(closing, start)
    if end < 0:
        problems.append(Problem(line, f"unfinished long {what} (starting at line {line}) near '<eof>'"))
        return len(text), line + count_lines(text[start:])
    body = text[start:end]
    if value is not None:
        # Lua drops a line break that immediately follows the opening bracket.
        first = _NEWLINE.match(body)
        value.append(body[first.end() :] if first else body)
    return end + len(closing), line + count_lines(body)


def _decode_escapes(raw: str) -> tuple[str, bool]:
    """Decode Lua 5.1 short-string escapes. Returns the value and whether a decimal escape exceeded 255."""
    if "\\" not in raw:
        return raw, False
    too_large = False

    def one(m: re.Match[str]) -> str:
        nonlocal too_large
        esc = m.group(1)
        if esc[0].isdigit():
            code = int(esc)
            if code > 255:
                too_large = True
                return ""
            return chr(code)
        if esc[0] in "\r\n":
            return "\n"
        return _SIMPLE_ESCAPES.get(esc, esc)

    return _ESCAPE.sub(one, raw), too_large
