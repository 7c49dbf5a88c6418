"""Smoke tests ("probes"): calls of a library's functions, each with the reply it must give, run on the canary
primary right after it loads a new code version and before any other primary is touched (``redis/probing.py`` runs
them; ``redis/sync.py`` decides when).

This module is pure: it parses a probe list (``spec.tests``, or the YAML file of ``sync --test``) and judges an
observed reply against an expectation. Replies are compared in the shapes of RESP2 as the engine's client reads
them (``decode_responses=False``), so the mapping from YAML is exact and small:

=====================  ==========================================================================================
YAML ``expect.reply``  matches
=====================  ==========================================================================================
a string               a bulk string or a status reply with exactly those bytes (UTF-8): ``"OK"`` matches ``+OK``
an integer             an integer reply (a Lua ``true`` is the integer 1; a Lua number is truncated to an integer)
a list                 an array of that length whose elements match, recursively
null                   a nil reply (a Lua ``false`` or ``nil``; also a nil inside an array)
=====================  ==========================================================================================

Booleans and floats are refused (RESP2 has neither: say ``1`` or ``null``, or the string). ``errorPrefix`` matches
an error reply whose text, as the server sent it (``ERR ...``, ``WRONGTYPE ...``, a Lua ``redis.error_reply``),
starts with it; ``type`` matches the reply's kind only (``string``, ``integer``, ``array``, ``nil``, ``error``).

Why a writing probe needs ``testKeyPrefix``: a probe must never harm user data, so a function called with FCALL
(``readOnly: false``) may only be given keys under a prefix the operator owns; it deletes those keys before and after
the probe. The CRD refuses anything else at admission; :func:`parse_probes` checks again, for objects older than
the rule and for the CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: In a key, replaced (in a cluster) by a hash tag of a slot the canary owns: ``rfo:{canary}:n`` -> ``rfo:{42}:n``.
CANARY_PLACEHOLDER = "{canary}"

MAX_PROBES = 32
MAX_ITEMS = 16  # keys, and args, per probe
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_SHOWN = 200  # characters of a reply shown in a message


class ReplyType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    ARRAY = "array"
    NIL = "nil"
    ERROR = "error"


@dataclass(frozen=True)
class ErrorReply:
    """An error reply, its text as the server sent it (``ERR ...``)."""

    text: str


#: A reply as read with RESP2 and ``decode_responses=False``: bytes (bulk or status), int, None (nil), an array,
#: or an error. Expected replies use tuples for arrays so a probe stays hashable.
Reply = bytes | int | None | ErrorReply | Sequence["Reply"]


class ExpectKind(StrEnum):
    REPLY = "reply"
    ERROR_PREFIX = "errorPrefix"
    TYPE = "type"


@dataclass(frozen=True)
class Expectation:
    kind: ExpectKind
    value: Reply | str | ReplyType  # the reply (arrays as tuples), the error prefix, or the type

    def describe(self) -> str:
        if self.kind is ExpectKind.REPLY:
            return f"reply {show(self.value)}"
        if self.kind is ExpectKind.ERROR_PREFIX:
            return f"an error starting with {json.dumps(self.value)}"
        return f"a reply of type {show(self.value)}"


@dataclass(frozen=True)
class Probe:
    name: str
    function: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    read_only: bool
    expect: Expectation

    @property
    def command(self) -> str:
        return "FCALL_RO" if self.read_only else "FCALL"

    def describe(self) -> str:
        return f"smoke test {self.name!r} ({self.command} {self.function})"


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe as run on one node: passed, or what it got instead."""

    name: str
    node: str
    passed: bool
    actual: str  # the reply, shown


class ProbeError(ValueError):
    """A probe list that cannot be used, said in one line naming the item."""


def parse_probes(items: Any, key_prefix: str | None = None, *, where: str = "spec.tests") -> tuple[Probe, ...]:
    """``spec.tests`` (a YAML list) -> probes, checked as the CRD checks them."""
    if items in (None, ""):
        return ()
    if not isinstance(items, list):
        raise ProbeError(f"{where} must be a list")
    if len(items) > MAX_PROBES:
        raise ProbeError(f"{where} has {len(items)} items; at most {MAX_PROBES}")
    if key_prefix is not None and (not key_prefix or CANARY_PLACEHOLDER in key_prefix):
        raise ProbeError(f"the test key prefix {key_prefix!r} must be non-empty and must not hold {CANARY_PLACEHOLDER}")
    probes = tuple(_parse_probe(item, key_prefix, f"{where}[{i}]") for i, item in enumerate(items))
    names = [p.name for p in probes]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ProbeError(f"{where}: the name {duplicate!r} is used twice")
    return probes


def _parse_probe(item: Any, key_prefix: str | None, where: str) -> Probe:
    if not isinstance(item, Mapping):
        raise ProbeError(f"{where} must be an object with name, function and expect")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProbeError(f"{where}.name must be 1-63 letters, digits, '-', '_' or '.'")
    function = item.get("function")
    if not isinstance(function, str) or not function:
        raise ProbeError(f"{where}.function must name a function of the library")
    keys = _strings(item.get("keys"), f"{where}.keys", numbers=False)
    args = _strings(item.get("args"), f"{where}.args", numbers=True)
    read_only = item.get("readOnly", True)
    if not isinstance(read_only, bool):
        raise ProbeError(f"{where}.readOnly must be true or false")
    if not read_only:
        _check_writing_keys(keys, key_prefix, where)
    return Probe(name, function, keys, args, read_only, _parse_expect(item.get("expect"), f"{where}.expect"))


def _check_writing_keys(keys: tuple[str, ...], key_prefix: str | None, where: str) -> None:
    """A probe sent with FCALL may write: only under the operator's own prefix, never a user's key."""
    if key_prefix is None:
        raise ProbeError(f"{where} has readOnly: false, which needs a test key prefix (spec.testKeyPrefix)")
    outside = [k for k in keys if not k.startswith(key_prefix)]
    if outside:
        raise ProbeError(f"{where} has readOnly: false, so every key must start with {key_prefix!r}: {outside[0]!r}")


def _strings(value: Any, where: str, *, numbers: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ProbeError(f"{where} must be a list of at most {MAX_ITEMS} strings")
    allowed: tuple[type, ...] = (str, int) if numbers else (str,)
    if any(isinstance(v, bool) or not isinstance(v, allowed) for v in value):
        kinds = "strings or integers" if numbers else "strings"
        raise ProbeError(f"{where} must hold {kinds} only")
    return tuple(str(v) for v in value)


def _parse_expect(value: Any, where: str) -> Expectation:
    if not isinstance(value, Mapping):
        raise ProbeError(f"{where} must be an object with exactly one of reply, errorPrefix or type")
    given = [kind for kind in ExpectKind if kind.value in value]
    if len(given) != 1:
        raise ProbeError(f"{where} needs exactly one of reply, errorPrefix or type")
    kind = given[0]
    raw = value[kind.value]
    if kind is ExpectKind.REPLY:
        return Expectation(kind, expected_reply(raw, f"{where}.reply"))
    if kind is ExpectKind.ERROR_PREFIX:
        if not isinstance(raw, str) or not raw:
            raise ProbeError(f"{where}.errorPrefix must be a non-empty string")
        return Expectation(kind, raw)
    try:
        return Expectation(kind, ReplyType(raw))
    except ValueError:
        raise ProbeError(f"{where}.type must be one of {', '.join(t.value for t in ReplyType)}") from None


def expected_reply(value: Any, where: str) -> Reply:
    """A YAML value as the reply it stands for (see the module's table)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return tuple(expected_reply(v, where) for v in value)
    raise ProbeError(f"{where} must be a string, an integer, a list or null (not {type(value).__name__})")


def reply_type(reply: Reply) -> ReplyType:
    if isinstance(reply, ErrorReply):
        return ReplyType.ERROR
    if reply is None:
        return ReplyType.NIL
    if isinstance(reply, int):
        return ReplyType.INTEGER
    if isinstance(reply, bytes):
        return ReplyType.STRING
    return ReplyType.ARRAY


def matches(expect: Expectation, reply: Reply) -> bool:
    """Whether ``reply`` is what ``expect`` asks for."""
    if expect.kind is ExpectKind.TYPE:
        return reply_type(reply) == expect.value
    if expect.kind is ExpectKind.ERROR_PREFIX:
        return isinstance(reply, ErrorReply) and isinstance(expect.value, str) and reply.text.startswith(expect.value)
    return _same(expect.value, reply)


def _same(expected: Any, reply: Reply) -> bool:
    if isinstance(expected, tuple):
        if isinstance(reply, (bytes, ErrorReply)) or not isinstance(reply, Sequence) or len(reply) != len(expected):
            return False
        return all(_same(e, r) for e, r in zip(expected, reply, strict=True))
    if isinstance(reply, bool):
        return False
    return type(expected) is type(reply) and expected == reply


def show(reply: Any) -> str:
    """A reply (or expected reply) in a message: YAML-like, bounded."""
    text = _show(reply)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _show(reply: Any) -> str:
    if isinstance(reply, ErrorReply):
        return f"error {json.dumps(reply.text)}"
    if reply is None:
        return "null"
    if isinstance(reply, bytes):
        return json.dumps(reply.decode("utf-8", "replace"))
    if isinstance(reply, (int, str)):
        return json.dumps(reply)
    return "[" + ", ".join(_show(r) for r in reply) + "]"


def failure_message(probe: Probe, reply: Reply) -> str:
    """Why the canary was put back: the probe, what it expected, what it got."""
    return f"{probe.describe()}: expected {probe.expect.describe()}, got {show(reply)}"


__all__ = [
    "CANARY_PLACEHOLDER",
    "ErrorReply",
    "ExpectKind",
    "Expectation",
    "Probe",
    "ProbeError",
    "ProbeOutcome",
    "Reply",
    "ReplyType",
    "expected_reply",
    "failure_message",
    "matches",
    "parse_probes",
    "reply_type",
    "show",
]
