"""The watch's copies of referenced Secrets and ConfigMaps (k8s/references.py): events win, GETs only fill gaps."""

from __future__ import annotations

import base64

from redis_functions_operator.k8s.references import References
from redis_functions_operator.reconcile.spec import RefKind

AUTH = (RefKind.SECRET, "apps", "auth")
CODE = (RefKind.CONFIG_MAP, "apps", "code")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def secret(password: bytes) -> dict[str, object]:
    return {"metadata": {"name": "auth"}, "data": {"password": base64.b64encode(password).decode()}}


def test_an_event_answers_without_asking_and_a_deletion_is_known_absent() -> None:
    refs = References(clock=Clock())
    assert refs.lookup(AUTH) == (False, None)
    refs.watched(AUTH, secret(b"s3cret"))
    assert refs.lookup(AUTH) == (True, {"password": b"s3cret"})
    refs.watched(AUTH, None)
    assert refs.lookup(AUTH) == (True, None)


def test_config_maps_decode_data_and_binary_data() -> None:
    refs = References(clock=Clock())
    body = {"data": {"lib.lua": "#!lua name=x\n"}, "binaryData": {"blob": base64.b64encode(b"\xff").decode()}}
    refs.watched(CODE, body)
    assert refs.lookup(CODE) == (True, {"lib.lua": b"#!lua name=x\n", "blob": b"\xff"})


def test_a_get_that_left_before_a_newer_event_never_overwrites_it() -> None:
    clock = Clock()
    refs = References(clock=clock)
    asked = refs.now()
    clock.now += 1
    refs.watched(AUTH, secret(b"rotated"))  # the rotation arrives while the GET is in flight
    clock.now += 1
    refs.fetched(AUTH, {"password": b"old"}, asked)
    assert refs.lookup(AUTH) == (True, {"password": b"rotated"})


def test_a_get_fills_a_gap_and_an_old_copy_is_asked_again() -> None:
    clock = Clock()
    refs = References(max_age=600, clock=clock)
    refs.fetched(AUTH, {"password": b"a"}, refs.now())
    assert refs.lookup(AUTH) == (True, {"password": b"a"})
    clock.now += 601  # e.g. a deletion missed while the watch was down
    assert refs.lookup(AUTH) == (False, None)
    refs.fetched(AUTH, None, refs.now())
    assert refs.lookup(AUTH) == (True, None)


def test_keep_only_lets_go_of_what_no_library_reads() -> None:
    refs = References(clock=Clock())
    refs.watched(AUTH, secret(b"x"))
    refs.watched(CODE, {"data": {}})
    refs.keep_only([CODE])
    assert not refs.knows(AUTH) and refs.knows(CODE) and len(refs) == 1
