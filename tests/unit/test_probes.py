"""Smoke tests, the pure part: parsing ``spec.tests`` as the CRD checks it, and judging replies in the shapes
redis-py reads with RESP2 and ``decode_responses=False`` (bytes). What a real server replies: tests/redis/."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis.exceptions as rx
from redis.crc import key_slot

from redis_functions_operator.library import parse_library
from redis_functions_operator.library.probes import (
    ErrorReply,
    ExpectKind,
    ProbeError,
    ProbeOutcome,
    ReplyType,
    failure_message,
    matches,
    parse_probes,
    show,
)
from redis_functions_operator.reconcile.spec import SpecError, parse_spec
from redis_functions_operator.reconcile.status import Attempt, render_status, smoke_tests_passed
from redis_functions_operator.redis.connect import Endpoint
from redis_functions_operator.redis.probing import as_reply, canary_tag, parse_slot_ranges
from redis_functions_operator.redis.sync import NodeResult, Outcome, SyncResult
from redis_functions_operator.redis.topology import Node, Role


def one(expect: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "t", "function": "f", "expect": expect, **fields}


def test_a_probe_is_parsed_with_its_defaults() -> None:
    (probe,) = parse_probes([one({"reply": "hi"}, keys=["k"], args=["a", 7])])
    assert (probe.name, probe.function, probe.keys, probe.args) == ("t", "f", ("k",), ("a", "7"))
    assert probe.read_only and probe.command == "FCALL_RO"
    assert probe.expect.kind is ExpectKind.REPLY and probe.expect.value == b"hi"


@pytest.mark.parametrize(
    ("yaml_value", "reply", "same"),
    [
        ("OK", b"OK", True),  # a status reply reads as bytes too
        ("héllo", "héllo".encode(), True),
        ("1", 1, False),  # a string never matches an integer
        (1, 1, True),
        (1, b"1", False),
        (0, None, False),
        (None, None, True),
        (None, (), False),
        ([], (), True),
        (["a", 1, None, ["b"]], [b"a", 1, None, [b"b"]], True),
        (["a", 1], [b"a", 1, None], False),
        (["a"], b"a", False),
        ("x", ErrorReply("x"), False),
    ],
)
def test_replies_compare_by_resp2_shape(yaml_value: Any, reply: Any, same: bool) -> None:
    (probe,) = parse_probes([one({"reply": yaml_value})])
    assert matches(probe.expect, reply) is same


def test_error_prefix_and_type() -> None:
    (prefix, kind) = parse_probes([one({"errorPrefix": "ERR limit"}), {**one({"type": "array"}), "name": "u"}])
    assert matches(prefix.expect, ErrorReply("ERR limit reached"))
    assert not matches(prefix.expect, ErrorReply("WRONGTYPE limit"))
    assert not matches(prefix.expect, b"ERR limit reached")  # a string is not an error
    assert kind.expect.value is ReplyType.ARRAY
    assert matches(kind.expect, [b"a"]) and matches(kind.expect, [])
    assert not matches(kind.expect, b"a")


@pytest.mark.parametrize(
    ("items", "prefix", "words"),
    [
        ("x", None, "must be a list"),
        ([one({})], None, "exactly one of reply, errorPrefix or type"),
        ([one({"reply": 1, "type": "integer"})], None, "exactly one of reply, errorPrefix or type"),
        ([one({"reply": True})], None, "not bool"),
        ([one({"reply": 1.5})], None, "not float"),
        ([one({"type": "double"})], None, "type must be one of"),
        ([one({"errorPrefix": ""})], None, "non-empty string"),
        ([one({"reply": 1}, readOnly=False, keys=["rfo:a"])], None, "needs a test key prefix"),
        ([one({"reply": 1}, readOnly=False, keys=["rfo:a", "user:1"])], "rfo:", "every key must start with 'rfo:'"),
        ([one({"reply": 1}, readOnly="no")], None, "readOnly must be true or false"),
        ([one({"reply": 1}, keys=[1])], None, "strings only"),
        ([one({"reply": 1}), one({"reply": 2})], None, "'t' is used twice"),
        ([one({"reply": 1}, name="bad name")], None, "name must be"),
        ([one({"reply": 1})], "x:{canary}", "must not hold {canary}"),
    ],
)
def test_what_parsing_refuses(items: Any, prefix: str | None, words: str) -> None:
    with pytest.raises(ProbeError, match=None) as caught:
        parse_probes(items, prefix)
    assert words in str(caught.value)


def test_a_writing_probe_under_the_prefix_is_accepted() -> None:
    (probe,) = parse_probes([one({"reply": 1}, readOnly=False, keys=["rfo:{canary}:n"])], "rfo:")
    assert probe.command == "FCALL" and not probe.read_only


def test_the_spec_carries_tests_and_refuses_bad_ones_as_invalid_spec() -> None:
    base = {"code": "#!lua name=x\n", "target": {"endpoints": ["r:6379"]}}
    spec = parse_spec({**base, "tests": [one({"reply": "hi"})], "testKeyPrefix": "rfo:"})
    assert [t.name for t in spec.tests] == ["t"] and spec.test_key_prefix == "rfo:"
    with pytest.raises(SpecError) as caught:
        parse_spec({**base, "tests": [one({"reply": 1}, readOnly=False, keys=["user:1"])]})
    assert caught.value.reason == "InvalidSpec" and "spec.tests[0]" in caught.value.message


def test_messages_show_replies_as_yaml_would() -> None:
    (probe,) = parse_probes([one({"reply": ["a", 1, None]})])
    assert show((b"a", 1, None)) == '["a", 1, null]'
    assert show(ErrorReply("ERR boom")) == 'error "ERR boom"'
    assert failure_message(probe, 2) == "smoke test 't' (FCALL_RO f): expected reply [\"a\", 1, null], got 2"
    assert len(show(b"x" * 1000)) == 200


def test_tests_passed_only_for_this_code_and_every_named_test() -> None:
    status = {"tests": [{"name": "a", "result": "Passed", "codeSha256": "s1"}]}
    assert smoke_tests_passed(status, "s1", ["a"])
    assert not smoke_tests_passed(status, "s2", ["a"])  # new code: run them again
    assert not smoke_tests_passed(status, "s1", ["a", "b"])  # a new test: run them again
    failed = {"tests": [{"name": "a", "result": "Failed", "codeSha256": "s1"}]}
    assert not smoke_tests_passed(failed, "s1", ["a"])


def test_status_tests_hold_the_last_run_and_follow_the_code() -> None:
    library = parse_library("#!lua name=x\nredis.register_function('f', function() return 1 end)\n")
    node = Node(Endpoint("10.0.0.1", 6379), Role.PRIMARY)
    ran = (ProbeOutcome("a", "10.0.0.1:6379", True, "1"), ProbeOutcome("b", "10.0.0.1:6379", False, '"no"'))
    result = SyncResult(library.name, library.sha256, None, (NodeResult(node, Outcome.ROLLED_BACK),), probes=ran)
    attempt = Attempt(generation=1, now="2026-01-01T00:00:00Z", library=library, result=result, test_names=("a", "b"))
    status = render_status(attempt, {})
    assert status["tests"] == [
        {"name": "a", "result": "Passed", "node": "10.0.0.1:6379", "codeSha256": library.sha256},
        {"name": "b", "result": "Failed", "node": "10.0.0.1:6379", "codeSha256": library.sha256, "reply": '"no"'},
    ]
    quiet = SyncResult(library.name, library.sha256, None, (NodeResult(node, Outcome.UNCHANGED),))
    kept = render_status(replace(attempt, result=quiet), status)  # a resync runs none: the last run stays
    assert kept["tests"] == status["tests"]
    assert "tests" not in render_status(replace(attempt, result=quiet, test_names=()), status)  # tests removed
    other = parse_library("#!lua name=x\nredis.register_function('f', function() return 2 end)\n")
    assert "tests" not in render_status(replace(attempt, library=other, result=quiet), status)  # other code


@pytest.mark.parametrize("slots", ["0-5460", "5461-10922", "10923-16383", "7", "0-1,16383"])
def test_the_canary_tag_hashes_to_a_slot_the_node_serves(slots: str) -> None:
    tag = canary_tag(slots)
    assert tag is not None
    slot = key_slot(("rfo:{" + tag + "}:n").encode())
    assert any(low <= slot <= high for low, high in parse_slot_ranges(slots))


def test_a_node_without_slots_has_no_canary_tag() -> None:
    assert canary_tag("") is None


def test_replies_as_redis_py_reads_them_keep_the_error_code() -> None:
    assert as_reply([b"a", 1, None, [rx.ResponseError("boom", status_code="ERR")]]) == (
        b"a", 1, None, (ErrorReply("ERR boom"),)
    )  # fmt: skip
    assert as_reply(rx.ResponseError("INSUFFICIENT_BALANCE current=0")) == ErrorReply("INSUFFICIENT_BALANCE current=0")
