"""The Lua library model: what a Redis Functions library *is*, before any server sees it.

Pure: no I/O, no Redis, no Kubernetes, and no Lua reader under it: the engine needs a library's name, exact bytes and
sha256, which the shebang and the bytes give. The functions a library registers come from running its load
(:mod:`.vet`), which fills :attr:`Library.functions`.

Why parse the shebang ourselves when Redis will do it anyway? Because the operator must know the library's name
before it talks to Redis (to look it up with ``FUNCTION LIST LIBRARYNAME``, to detect two objects claiming the same
name, to report it in status), and because a user deserves the same error Redis would give without a round trip.
The rules mirror Redis 7.0 ``functionExtractLibMetaData`` (``functions.c``) and are pinned by unit tests against the
exact wire messages listed in ``docs/errors.md`` (``docs/redis-facts.md`` F8).

The code is kept as the exact bytes that will be sent: Redis stores and returns ``library_code`` byte-exact (CRLF,
trailing spaces and non-UTF-8 bytes included), so verification compares bytes, and the sha256 is over those bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from redis_functions_operator.library.failure import Refused

#: Engines Redis 7 and Valkey 9 ship. The engine name is matched case-insensitively (``#!LUA`` is accepted).
KNOWN_ENGINES = ("lua",)

_LIBRARY_NAME = re.compile(rb"[A-Za-z0-9_]+")

MSG_MISSING_METADATA = "Missing library metadata"
MSG_INVALID_METADATA = "Invalid library metadata"
MSG_NAME_NOT_GIVEN = "Library name was not given"
MSG_NAME_TWICE = "Invalid metadata value, name argument was given multiple times"
MSG_BAD_NAME = (
    "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"
)


@dataclass(frozen=True)
class RegisteredFunction:
    """A function the library registers while it loads: its name, flags (lower case), description and line."""

    name: str
    flags: tuple[str, ...] = ()
    line: int = 0
    description: str | None = None
    ignored_flags: tuple[str, ...] = ()  # keys of the flags table other than 1..n, which the server ignores


#: The reason of every :class:`LibraryError`.
INVALID_LIBRARY = "InvalidLibrary"


class LibraryError(Refused, ValueError):
    """A library source Redis would refuse: reason ``InvalidLibrary``, a ``message`` in Redis' own wording and a
    1-based ``line``."""


@dataclass(frozen=True)
class Library:
    """A library: its name, engine, exact code bytes and their sha256, and (once vetted) the functions it
    registers."""

    name: str
    engine: str
    code: bytes
    functions: tuple[RegisteredFunction, ...] = field(default=())

    @property
    def sha256(self) -> str:
        return code_sha256(self.code)

    @property
    def size(self) -> int:
        return len(self.code)

    def function_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.functions)


def code_sha256(code: bytes) -> str:
    """Hex sha256 of the exact code bytes: the identity of a library version on a node."""
    return hashlib.sha256(code).hexdigest()


def as_bytes(source: bytes | str) -> bytes:
    """Library code as the bytes to send. Text is encoded as UTF-8 with nothing else changed (no newline fixing)."""
    return source if isinstance(source, bytes) else source.encode("utf-8")


def parse_library(source: bytes | str) -> Library:
    """Read a library's shebang, raising :class:`LibraryError` with Redis' wording for anything Redis would refuse
    at the metadata stage. The functions are left empty: :func:`~.vet.vet` finds them by running the load."""
    code = as_bytes(source)
    engine, name = parse_shebang(code)
    return Library(name=name, engine=engine, code=code)


def parse_shebang(code: bytes) -> tuple[str, str]:
    """Return ``(engine, name)`` from the first line, as Redis 7.0 reads it.

    Redis requires ``#!`` as the very first bytes (so a BOM, a blank line or a leading space is "Missing library
    metadata") and finds the end of the line with ``strchr`` (so a NUL byte before the first newline hides it:
    "Invalid library metadata"). It splits the line like ``sdssplitargs`` (see :func:`split_args`), takes the
    engine from the first word and accepts only ``name=`` metadata (key matched case-insensitively). The library
    name is checked before the engine (``functionsCreateWithLibraryCtx``), and the engine is matched
    case-insensitively. Every rule here is pinned against a real Redis 7.0.15 in ``tests/unit/test_library.py``.
    """
    if not code.startswith(b"#!"):
        raise LibraryError(INVALID_LIBRARY, MSG_MISSING_METADATA, line=1)
    end = code.find(b"\n")
    if end < 0 or b"\0" in code[:end]:
        raise LibraryError(INVALID_LIBRARY, MSG_INVALID_METADATA, line=1)
    parts = split_args(code[:end])
    if not parts:
        raise LibraryError(INVALID_LIBRARY, MSG_INVALID_METADATA, line=1)
    engine = parts[0][2:]
    name: bytes | None = None
    for part in parts[1:]:
        if part[:5].lower() == b"name=":
            if name is not None:
                raise LibraryError(INVALID_LIBRARY, MSG_NAME_TWICE, line=1)
            name = part[5:]
            continue
        raise LibraryError(INVALID_LIBRARY, f"Invalid metadata value given: {part.decode('utf-8', 'replace')}", line=1)
    if name is None:
        raise LibraryError(INVALID_LIBRARY, MSG_NAME_NOT_GIVEN, line=1)
    if not _LIBRARY_NAME.fullmatch(name):
        raise LibraryError(INVALID_LIBRARY, MSG_BAD_NAME, line=1)
    engine_text = engine.decode("utf-8", "replace")
    if engine_text.lower() not in KNOWN_ENGINES:
        raise LibraryError(INVALID_LIBRARY, f"Engine '{engine_text}' not found", line=1)
    return engine_text.lower(), name.decode("ascii")


#: C ``isspace``: skipped between arguments and accepted after a closing quote.
_ISSPACE = b" \t\n\v\f\r"
#: What ends an unquoted argument in ``sdssplitargs`` (not ``\v``/``\f``: those stay part of the argument).
_UNQUOTED_END = b" \n\r\t\0"
_HEX = b"0123456789abcdefABCDEF"
_ESCAPES = {ord("n"): ord("\n"), ord("r"): ord("\r"), ord("t"): ord("\t"), ord("b"): ord("\b"), ord("a"): 7}


def split_args(line: bytes) -> list[bytes]:
    """A port of Redis' ``sdssplitargs`` for the shebang line (which holds no NUL: see :func:`parse_shebang`).

    Arguments are separated by whitespace; ``"..."`` groups and decodes ``\\xHH``, ``\\n``, ``\\r``, ``\\t``,
    ``\\b``, ``\\a`` and ``\\<char>``; ``'...'`` groups and decodes only ``\\'``. A quote may start in the middle of
    an argument. Raises :class:`LibraryError` ("Invalid library metadata") where ``sdssplitargs`` returns NULL: an
    unbalanced quote, or a closing quote not followed by whitespace or the end of the line.
    """
    parts: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _ISSPACE:
            i += 1
        if i >= n:
            return parts
        current = bytearray()
        quote: int | None = None
        while True:
            if i >= n:
                if quote is not None:
                    raise LibraryError(INVALID_LIBRARY, MSG_INVALID_METADATA, line=1)
                break
            c = line[i]
            if quote is None:
                if c in _UNQUOTED_END:
                    break
                if c in (ord('"'), ord("'")):
                    quote = c
                else:
                    current.append(c)
            elif quote == ord('"') and c == ord("\\") and line[i + 1 : i + 2] == b"x" and _is_hex(line[i + 2 : i + 4]):
                current.append(int(line[i + 2 : i + 4], 16))
                i += 3
            elif quote == ord('"') and c == ord("\\") and i + 1 < n:
                i += 1
                current.append(_ESCAPES.get(line[i], line[i]))
            elif quote == ord("'") and c == ord("\\") and line[i + 1 : i + 2] == b"'":
                i += 1
                current.append(line[i])
            elif c == quote:
                if i + 1 < n and line[i + 1] not in _ISSPACE:
                    raise LibraryError(INVALID_LIBRARY, MSG_INVALID_METADATA, line=1)
                quote = None
                i += 1
                break
            else:
                current.append(c)
            i += 1
        parts.append(bytes(current))


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(b in _HEX for b in pair)
