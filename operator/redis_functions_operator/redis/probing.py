"""Run smoke tests (``library/probes.py``) on one primary: the canary that just loaded a new code version.

Three answers, and why they differ:

* **passed**: every probe got what it expects;
* **failed** (permanent, ``SmokeTestFailed``): a probe got another reply — the code does not do what it must, so the
  engine puts the canary back to its previous code, exactly as after a compile error;
* **could not run** (transient): a probe met a server state that says nothing about the code — BUSY, LOADING, a
  timeout, a lost connection, a failover (READONLY), out of memory. The code is never rolled back for that (it may
  be good); nothing else is loaded either, and the next attempt runs the probes again before spreading it.

Each probe is bounded by the target's timeout (the client's socket timeout). A writing probe (``readOnly: false``)
has its keys deleted (UNLINK, one per key: in a cluster they may sit in different slots) before it runs, so an
earlier attempt's leftovers do not change its reply, and after, whatever it answered.

In a cluster a probe's keys must hash to a slot the canary serves, or the canary would answer MOVED: ``{canary}`` in
a key becomes a hash tag of one of its slots, and a key that still hashes elsewhere fails the probe with a message
saying so (before anything is sent).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ResponseError

from redis_functions_operator.library.probes import (
    CANARY_PLACEHOLDER,
    ErrorReply,
    Probe,
    ProbeOutcome,
    Reply,
    failure_message,
    matches,
    show,
)
from redis_functions_operator.redis.connect import Connector, Mode
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from redis_functions_operator.redis.topology import Node

#: Server states that say nothing about the code: the probe could not run, and is tried again later.
COULD_NOT_RUN = frozenset(
    {
        ErrorKind.CONNECTION_FAILED,
        ErrorKind.TIMEOUT,
        ErrorKind.LOADING,
        ErrorKind.BUSY,
        ErrorKind.TRY_AGAIN,
        ErrorKind.MASTER_DOWN,
        ErrorKind.CLUSTER_DOWN,
        ErrorKind.OUT_OF_MEMORY,
        ErrorKind.READ_ONLY,
    }
)

_TAG_SEARCH_LIMIT = 1_000_000  # a tag for any one slot is found within ~50k candidates; this only bounds the loop


@dataclass(frozen=True)
class ProbeRun:
    """The probes' outcomes in order (up to the first that did not pass), and the error that stopped them."""

    outcomes: tuple[ProbeOutcome, ...]
    error: NodeError | None = None


async def run_probes(conn: Connector, node: Node, probes: Sequence[Probe], mode: Mode) -> ProbeRun:
    """Run ``probes`` in order on ``node``; stop at the first that fails or cannot run."""
    tag = canary_tag(node.slots) if mode is Mode.CLUSTER else None
    outcomes: list[ProbeOutcome] = []
    for probe in probes:
        keys = tuple(k.replace(CANARY_PLACEHOLDER, "{" + tag + "}") for k in probe.keys) if tag else probe.keys
        misplaced = _misplaced_key(keys, node.slots) if mode is Mode.CLUSTER else None
        if misplaced is not None:
            message = (
                f"{probe.describe()}: key {misplaced!r} hashes to slot "
                f"{key_slot(misplaced.encode())}, which this primary does not serve (slots {node.slots or 'none'}); "
                f"put {CANARY_PLACEHOLDER} in every key of a smoke test on a cluster"
            )
            outcomes.append(ProbeOutcome(probe.name, node.address, False, "not sent"))
            return ProbeRun(tuple(outcomes), NodeError(ErrorKind.SMOKE_TEST_FAILED, message))
        reply, could_not_run = await _call(conn, node, probe, keys)
        if could_not_run is not None:
            message = (
                f"{probe.describe()} could not run ({could_not_run.kind.value}: "
                f"{could_not_run.message}); the code is not rolled back for that, and goes nowhere else until the "
                "smoke tests pass"
            )
            return ProbeRun(tuple(outcomes), NodeError(could_not_run.kind, message))
        passed = matches(probe.expect, reply)
        outcomes.append(ProbeOutcome(probe.name, node.address, passed, show(reply)))
        if not passed:
            error = NodeError(ErrorKind.SMOKE_TEST_FAILED, failure_message(probe, reply))
            return ProbeRun(tuple(outcomes), error)
    return ProbeRun(tuple(outcomes))


async def _call(conn: Connector, node: Node, probe: Probe, keys: tuple[str, ...]) -> tuple[Reply, NodeError | None]:
    """The probe's reply, or why it could not run. A writing probe's keys are deleted before and after."""
    command = (probe.command, probe.function, len(keys), *keys, *probe.args)
    if probe.read_only:
        return await _send(conn, node, command)
    cleared = await _delete_keys(conn, node, keys)
    if cleared is not None:
        return None, cleared
    try:
        return await _send(conn, node, command)
    finally:
        await _delete_keys(conn, node, keys)


async def _send(conn: Connector, node: Node, command: tuple[Any, ...]) -> tuple[Reply, NodeError | None]:
    try:
        raw = await conn.call(node.endpoint, *command)
    except Exception as exc:
        error = classify(exc)
        if error.kind in COULD_NOT_RUN:
            return None, error
        if isinstance(exc, ResponseError):
            return _error_reply(exc), None
        return None, error
    return as_reply(raw), None


async def _delete_keys(conn: Connector, node: Node, keys: tuple[str, ...]) -> NodeError | None:
    if not keys:
        return None
    try:
        replies = await conn.call_many(node.endpoint, *(("UNLINK", key) for key in keys))
    except Exception as exc:
        return classify(exc)
    failed = next((r for r in replies if isinstance(r, Exception)), None)
    return None if failed is None else classify(failed)


def as_reply(raw: Any) -> Reply:
    """A redis-py RESP2 reply (``decode_responses=False``) as a probe reply; errors inside arrays too."""
    if isinstance(raw, ResponseError):
        return _error_reply(raw)
    if isinstance(raw, list):
        return tuple(as_reply(item) for item in raw)
    if raw is None or isinstance(raw, (bytes, int)):
        return raw
    return str(raw).encode()


def _error_reply(exc: ResponseError) -> ErrorReply:
    """The error as the server sent it: redis-py strips a known code (``ERR``, ``NOSCRIPT``...) and keeps it apart."""
    code = getattr(exc, "status_code", None)
    message = str(exc)
    return ErrorReply(f"{code} {message}" if code else message)


def canary_tag(slots: str) -> str | None:
    """A short hash tag whose slot the node serves (``slots`` as ``"0-5460,10923"``), or None for a 0-slot node."""
    ranges = parse_slot_ranges(slots)
    if not ranges:
        return None
    for number in itertools.islice(itertools.count(), _TAG_SEARCH_LIMIT):
        slot = key_slot(str(number).encode())
        if any(low <= slot <= high for low, high in ranges):
            return str(number)
    return None


def parse_slot_ranges(slots: str) -> list[tuple[int, int]]:
    ranges = []
    for part in filter(None, (p.strip() for p in slots.split(","))):
        low, _, high = part.partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


def _misplaced_key(keys: tuple[str, ...], slots: str) -> str | None:
    ranges = parse_slot_ranges(slots)
    for key in keys:
        slot = key_slot(key.encode())
        if not any(low <= slot <= high for low, high in ranges):
            return key
    return None
