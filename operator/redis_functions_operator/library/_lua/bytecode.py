"""Which globals a compiled Lua 5.1 chunk reads, and on which line — read from the byte code the compiler made.

Why byte code and not the source: Lua 5.1 compiles every read of a free name (one that no ``local`` binds) to a
``GETGLOBAL`` instruction naming it by a string constant, and keeps the source line of every instruction. So the
byte code answers "does this library ever read the global ``server``?" exactly as the server's own compiler would,
whatever the spelling (``server.call``, ``server ['call']``, a ``server`` inside a nested closure) and without being
fooled by a ``local server = redis``, by strings or by comments. It is also fast: a 1.2 MiB library is read in
about 30 ms, where the static source reader needs over a second.

The answer over-approximates what runs: a read in a branch that never executes still counts. For the vet that is
the safe side (it refuses what *could* fail on a server; see ``library/support.py``).

Format: ``lundump.c``/``ldump.c`` of Lua 5.1.5 (the header ``\\x1bLua\\x51``, then the main function prototype, each
with its code, constants, nested prototypes and debug information). Only the layout this machine's ``lupa.lua51``
writes is accepted (little-endian, 4-byte ``int``/instructions, 8-byte ``size_t`` and ``double``); anything else
raises :class:`BytecodeError`, and the caller fails closed.
"""

from __future__ import annotations

import struct
from array import array

HEADER = b"\x1bLua\x51\x00\x01\x04\x08\x04\x08\x00"
OP_GETGLOBAL = 5
_OP_MASK = 0x3F
_BX_SHIFT = 14
_INT = struct.Struct("<i")
_SIZE = struct.Struct("<Q")


class BytecodeError(Exception):
    """The dump is not the Lua 5.1 layout this reader knows."""


def global_reads(dump: bytes, names: frozenset[str]) -> dict[str, tuple[int, ...]]:
    """For each of ``names`` the chunk reads as a global anywhere (any nesting depth), every line that does."""
    if not dump.startswith(HEADER):
        raise BytecodeError("not a Lua 5.1 little-endian 64-bit byte code dump")
    reader = _Reader(dump, len(HEADER))
    found: dict[str, set[int]] = {}
    reader.function(names, found)
    if reader.pos != len(dump):
        raise BytecodeError("trailing bytes after the main function")
    return {name: tuple(sorted(lines)) for name, lines in found.items()}


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def count(self) -> int:
        (value,) = _INT.unpack_from(self.data, self.pos)
        self.pos += 4
        if value < 0:
            raise BytecodeError("negative count")
        return int(value)

    def string(self) -> bytes | None:
        (size,) = _SIZE.unpack_from(self.data, self.pos)
        self.pos += 8
        if size == 0:
            return None
        value = self.data[self.pos : self.pos + size - 1]  # the dump keeps the terminating NUL
        self.pos += size
        return value

    def words(self, count: int) -> array[int]:
        end = self.pos + 4 * count
        if end > len(self.data):
            raise BytecodeError("truncated")
        values = array("i")
        values.frombytes(self.data[self.pos : end])
        self.pos = end
        return values

    def function(self, names: frozenset[str], found: dict[str, set[int]]) -> None:
        self.string()  # source name
        self.pos += 4 + 4 + 4  # linedefined, lastlinedefined, nups/numparams/is_vararg/maxstacksize
        code = self.words(self.count())
        wanted: dict[int, str] = {}
        for index in range(self.count()):
            kind = self.data[self.pos]
            self.pos += 1
            if kind == 1:  # boolean
                self.pos += 1
            elif kind == 3:  # number
                self.pos += 8
            elif kind == 4:  # string
                value = self.string()
                if value is not None:
                    text = value.decode("latin-1")
                    if text in names:
                        wanted[index] = text
            elif kind != 0:  # nil
                raise BytecodeError(f"unknown constant type {kind}")
        for _ in range(self.count()):
            self.function(names, found)
        lines = self.words(self.count())
        if wanted:
            for pc, word in enumerate(code):
                if word & _OP_MASK == OP_GETGLOBAL:
                    name = wanted.get((word & 0xFFFFFFFF) >> _BX_SHIFT)
                    if name is not None:
                        found.setdefault(name, set()).add(lines[pc] if pc < len(lines) else 0)
        for _ in range(self.count()):  # local variables: name, startpc, endpc
            self.string()
            self.pos += 8
        for _ in range(self.count()):  # upvalue names
            self.string()
