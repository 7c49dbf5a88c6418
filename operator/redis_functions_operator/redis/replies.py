"""Small helpers to read redis-py replies the same way whether they arrive as RESP2 flat lists or RESP3 maps."""

from __future__ import annotations

from typing import Any


def pairs(value: Any) -> dict[str, Any]:
    """A RESP2 flat key/value list (or a RESP3 dict) → a dict with str keys."""
    if isinstance(value, dict):
        return {text(k): v for k, v in value.items()}
    items = list(value or [])
    return {text(k): v for k, v in zip(items[::2], items[1::2], strict=False)}


def text(value: Any) -> str:
    """bytes → str (UTF-8, replacing invalid bytes); None → ""."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def read_info(response: Any, **_: Any) -> dict[str, Any]:
    """An INFO reply → ``{field: text}``, and ``{field: {key: text}}`` for the ``a=1,b=2`` lines (``cmdstat_*``,
    ``engine_*``, ``db*``). The connector's clients use this instead of redis-py's parser, which tries ``int()`` and
    ``float()`` on every value and catches the failures: a watcher reads INFO on every poll of every primary, and
    that parser was the largest single cost of a poll. Values stay text; callers convert what they read."""
    info: dict[str, Any] = {}
    for line in text(response).splitlines():
        if not line or line[0] == "#":
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if "=" in value and key != "executable" and key != "config_file":
            info[key] = dict(item.partition("=")[::2] for item in value.split(",") if item)
        else:
            info[key] = value
    return info
