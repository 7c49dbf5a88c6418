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
