"""spec.tests and spec.testKeyPrefix in the CRD, against a real kube-apiserver through the real kubectl: what is
accepted (every reply shape, null included), and what CEL refuses at admission — a writing test whose keys lack the
prefix (or with no prefix at all), an ``expect`` with zero or two of reply / errorPrefix / type."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_crd import apply, get, namespace, rfl, validation_errors
from tests.support.control_plane import ControlPlane

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["namespace"]  # the crd- namespace fixture, shared with test_crd.py

MSG_WRITING = (
    "spec.tests: Invalid value: a test with readOnly false may write, so spec.testKeyPrefix must be "
    "set and every key of that test must start with it"
)
#: "exactly one" is an OpenAPI oneOf (a CEL rule cannot name reply, a field of no type): the apiserver's own words.
MSG_EXPECT = '"spec.tests[0].expect" must validate one and only one schema (oneOf)'


def probe(name: str = "t", **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "function": "f", "expect": {"reply": "hi"}}
    item.update(fields)
    return item


def test_every_reply_shape_is_kept_as_written_null_included(control_plane: ControlPlane, namespace: str) -> None:
    tests = [
        probe("string", expect={"reply": "OK"}),
        probe("integer", expect={"reply": 42}),
        probe("list", expect={"reply": ["a", 1, None, ["b"]]}),
        probe("null", expect={"reply": None}),
        probe("error", expect={"errorPrefix": "ERR "}),
        probe("type", expect={"type": "array"}, keys=["user:1"], args=["x", 7]),
        probe("writes", readOnly=False, keys=["rfo-test:{canary}:n"]),
    ]
    # Server-side apply (and create) keep a null; client-side apply drops null values (README: write type: nil).
    obj = rfl("shapes", tests=tests, testKeyPrefix="rfo-test:")
    apply(control_plane, obj, namespace, server_side=True, check=True)
    stored = get(control_plane, "shapes", namespace)["spec"]["tests"]
    assert [t["expect"] for t in stored] == [t["expect"] for t in tests]
    assert stored[5]["args"] == ["x", 7] and stored[5]["readOnly"] is True  # defaulted: FCALL_RO
    assert stored[6]["readOnly"] is False


@pytest.mark.parametrize(
    ("case", "spec"),
    [
        ("no-prefix", {"tests": [probe(readOnly=False, keys=["rfo-test:a"])]}),
        (
            "key-outside",
            {"tests": [probe(readOnly=False, keys=["rfo-test:a", "user:1"])], "testKeyPrefix": "rfo-test:"},
        ),
    ],
)
def test_a_writing_test_outside_the_prefix_is_refused(
    control_plane: ControlPlane, namespace: str, case: str, spec: dict[str, Any]
) -> None:
    proc = apply(control_plane, rfl(case, **spec), namespace)
    assert proc.returncode != 0
    assert validation_errors(proc.stderr) == [MSG_WRITING]


def test_read_only_tests_may_read_any_key(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, rfl("reader", tests=[probe(keys=["user:1"])]), namespace, check=True)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("none", {}),
        ("reply-and-prefix", {"reply": 1, "errorPrefix": "ERR"}),
        ("prefix-and-type", {"errorPrefix": "ERR", "type": "error"}),
        ("null-and-type", {"reply": None, "type": "nil"}),
    ],
)
def test_expect_needs_exactly_one_of_reply_error_prefix_or_type(
    control_plane: ControlPlane, namespace: str, case: str, expect: dict[str, Any]
) -> None:
    proc = apply(control_plane, rfl(case, tests=[probe(expect=expect)]), namespace, server_side=True)
    assert proc.returncode != 0
    assert MSG_EXPECT in proc.stderr, proc.stderr


def test_test_names_are_unique_and_the_prefix_holds_no_placeholder(control_plane: ControlPlane, namespace: str) -> None:
    twice = apply(control_plane, rfl("twice", tests=[probe("a"), probe("a")]), namespace)
    assert twice.returncode != 0 and "Duplicate value" in twice.stderr
    placeholder = apply(control_plane, rfl("placeholder", testKeyPrefix="x:{canary}:"), namespace)
    assert placeholder.returncode != 0
    assert "testKeyPrefix must not contain {canary}" in placeholder.stderr
