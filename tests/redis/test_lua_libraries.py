"""The five shipped libraries in lua/ (issue #5), called for real.

Every function is called with FCALL (and FCALL_RO where it is allowed) on Redis 7.0 and Valkey 9, standalone and on a
3-primary cluster through a cluster client, in RESP2 and RESP3: the ``target`` fixture runs each test 8 times there.
On each release ``make servers`` builds it runs each test twice more: standalone, in RESP2 and RESP3. Both protocols,
because the server turns a Lua reply into RESP (a ``{double = x}`` becomes a bulk string in RESP2, a double in RESP3;
a ``{map = t}`` a flat array or a map) and that code differs between releases; not the cluster client, because on a
cluster the server runs the same function the same way and only the client's routing differs. What a cluster or a
replica does differently on the server side (CROSSSLOT, MOVED, READONLY, FCALL_RO on every node, allow-oom, the
flags FUNCTION LIST reports) runs on every server of the matrix: this module's ``flavor`` is ``rs.MATRIX``.

The module runs its own servers (see ``Deployments``) and loads the libraries with FUNCTION LOAD REPLACE on every
primary itself, not through the sync engine. Replies and errors are asserted exactly; maps are compared as dicts after checking their wire
shape (a map in RESP3, a flat field/value array in RESP2).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_functions_operator.library import vet
from redis_functions_operator.library.lint import lint
from tests.redis.lua_helpers import (
    LIBRARIES,
    LUA_DIR,
    README,
    WRITE_FLAG_ERROR,
    Deployments,
    Target,
    as_map,
    error_codes,
    library_code,
)
from tests.support.redis_servers import FLAVORS, MATRIX, wait_until


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployments]:
    made = Deployments(tmp_path_factory.mktemp("lua-libraries"))
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(params=MATRIX)
def flavor(request: pytest.FixtureRequest) -> str:
    """Every server of the matrix (the conftest's ``flavor`` is the two flavors only)."""
    return str(request.param)


@pytest.fixture(
    params=[
        pytest.param((flavor, topology, protocol), id=f"{flavor}-{topology}-resp{protocol}")
        for flavor in MATRIX
        for topology in ("standalone", "cluster")
        for protocol in (2, 3)
        if flavor in FLAVORS or topology == "standalone"  # why: the module's docstring
    ]
)
def target(request: pytest.FixtureRequest, deployments: Deployments) -> Target:
    flavor, topology, protocol = request.param
    return Target(flavor, topology, protocol, deployments.client(flavor, topology, protocol))


# Positive-integer arguments must reject all of these (the seed silently took 'abc' as 1, '1e3' as 1000, ...).
NOT_POSITIVE_INTEGERS = ("1.5", "abc", "1e3", "0x10", "0", "-3", "", " 1", "+1")


# ---------------------------------------------------------------------------------------------------------- mylib


def test_increment_counter(target: Target) -> None:
    counter = target.key("counter")
    assert target.fcall("increment_counter", [counter]) == 1
    assert target.fcall("increment_counter", [counter], ["5"]) == 6
    assert target.fcall("increment_counter", [counter], ["007"]) == 13  # leading zeros are still a decimal integer
    for bad in (*NOT_POSITIVE_INTEGERS, "9007199254740992", "1" + "0" * 400):
        assert target.error("increment_counter", [counter], [bad]) == (
            f"INVALID_AMOUNT amount must be a positive integer up to 9007199254740991, got '{bad[:61]}"
            + ("...'" if len(bad) > 64 else "'")
        )
    usage = "INVALID_ARGS usage: FCALL increment_counter 1 <counter> [amount]"
    assert target.error("increment_counter", [counter], ["1", "2"]) == usage
    assert target.error("increment_counter", [counter, target.key("other")]) == usage
    assert target.client.get(counter) == "13"


def test_counter_stays_within_exact_integers(target: Target) -> None:
    """An integer reply passes through a Lua number (a double): past 2^53 it would silently be wrong (INCRBY to
    2^63-1 came back as -2^63), so counters stop at 2^53-1 with OVERFLOW."""
    counter = target.key("counter")
    target.client.set(counter, "9007199254740990")
    assert target.fcall("increment_counter", [counter]) == 9007199254740991
    assert target.error("increment_counter", [counter]) == (
        "OVERFLOW counter would exceed 9007199254740991: current=9007199254740991 requested=1"
    )
    assert target.client.get(counter) == "9007199254740991"
    assert target.fcall("decrement_counter", [counter], ["9007199254740991"]) == 0
    for stored in ("9007199254740992", "-9007199254740992", "9223372036854775807", "99999999999999999999"):
        target.client.set(counter, stored)
        for function in ("increment_counter", "decrement_counter"):
            assert target.error(function, [counter]) == (
                f"OVERFLOW stored value is outside +-9007199254740991: '{stored}'"
            )
        assert target.client.get(counter) == stored


def test_decrement_counter(target: Target) -> None:
    counter = target.key("counter")
    assert target.error("decrement_counter", [counter]) == "INSUFFICIENT_BALANCE current=0 requested=1"
    assert target.client.exists(counter) == 0  # a refused decrement creates nothing
    target.fcall("increment_counter", [counter], ["6"])
    assert target.error("decrement_counter", [counter], ["100"]) == "INSUFFICIENT_BALANCE current=6 requested=100"
    assert target.fcall("decrement_counter", [counter]) == 5
    assert target.fcall("decrement_counter", [counter], ["5"]) == 0
    assert target.error("decrement_counter", [counter]) == "INSUFFICIENT_BALANCE current=0 requested=1"
    for bad in NOT_POSITIVE_INTEGERS:  # the seed *increased* the counter on '-5'
        assert target.error("decrement_counter", [counter], [bad]).startswith("INVALID_AMOUNT amount must be ")
    assert target.client.get(counter) == "0"
    target.client.set(counter, "-4")  # written by someone else: any decrement would go (further) below zero
    assert target.error("decrement_counter", [counter]) == "INSUFFICIENT_BALANCE current=-4 requested=1"
    assert target.fcall("increment_counter", [counter], ["5"]) == 1


def test_counter_holding_something_else(target: Target) -> None:
    counter = target.key("counter")
    for stored in ("abc", "1.5", "007", "", "+1", " 1"):
        target.client.set(counter, stored)
        for function in ("increment_counter", "decrement_counter"):
            assert target.error(function, [counter]) == f"WRONGTYPE_VALUE stored value is not an integer: '{stored}'"
        assert target.client.get(counter) == stored
    target.client.delete(counter)
    target.client.hset(counter, "a", "1")
    for function in ("increment_counter", "decrement_counter"):
        assert target.error(function, [counter]) == "WRONGTYPE_VALUE counter key does not hold a string value"


def test_hello(target: Target) -> None:
    assert target.fcall("hello") == "Hello, World!"
    assert target.fcall_ro("hello") == "Hello, World!"
    assert target.fcall_ro("hello", args=["Ann"]) == "Hello, Ann!"
    assert target.fcall("hello", args=["Zoë"]) == "Hello, Zoë!"
    assert target.error("hello", args=[""], ro=True) == "INVALID_ARGS name must not be empty"
    assert target.error("hello", args=["a", "b"], ro=True) == "INVALID_ARGS usage: FCALL_RO hello 0 [name]"
    assert target.error("hello", [target.key("k")], ro=True) == "INVALID_ARGS usage: FCALL_RO hello 0 [name]"


# ---------------------------------------------------------------------------------------------------------- flags


def test_get_value_and_important_write(target: Target) -> None:
    key = target.key("value")
    assert target.fcall_ro("get_value", [key]) is None
    assert target.fcall("important_write", [key], ["v1"]) == "OK"
    assert target.fcall_ro("get_value", [key]) == "v1"
    assert target.fcall("get_value", [key]) == "v1"
    assert target.error("important_write", [key], ["v2"], ro=True) == WRITE_FLAG_ERROR
    assert target.error("important_write", [key]) == "INVALID_ARGS usage: FCALL important_write 1 <key> <value>"
    assert target.error("get_value", [key], ["x"], ro=True) == "INVALID_ARGS usage: FCALL_RO get_value 1 <key>"
    other = target.key("hash")
    target.client.hset(other, "a", "1")
    assert target.error("get_value", [other], ro=True) == "WRONGTYPE_VALUE key does not hold a string value"
    assert target.fcall("important_write", [other], ["v3"]) == "OK"  # SET replaces any type, as SET does
    assert target.fcall_ro("get_value", [other]) == "v3"


@pytest.mark.parametrize(
    ("a", "b", "total"),
    [
        ("1.5", "2.25", "3.75"),
        ("-0.5", "0", "-0.5"),
        ("1e3", "1", "1001"),
        ("2.", ".5", "2.5"),
        ("1e20", "1", "1e+20"),
        ("0.1", "0.2", "0.30000000000000004"),
    ],
)
def test_calculate(target: Target, a: str, b: str, total: str) -> None:
    assert target.fcall_ro("calculate", args=[a, b]) == target.double(total)
    assert target.fcall("calculate", args=[a, b]) == target.double(total)


def test_calculate_rejects(target: Target) -> None:
    for bad in ("abc", "0x10", "inf", "nan", "", " 1", "1,5", "1e", "--1"):
        assert target.error("calculate", args=[bad, "1"], ro=True) == (
            f"INVALID_ARGS a must be a finite decimal number, got '{bad}'"
        )
        assert target.error("calculate", args=["1", bad], ro=True) == (
            f"INVALID_ARGS b must be a finite decimal number, got '{bad}'"
        )
    assert target.error("calculate", args=["1e999", "1"], ro=True) == (
        "INVALID_ARGS a must be a finite decimal number, got '1e999'"
    )
    assert target.error("calculate", args=["1e308", "1e308"], ro=True) == "INVALID_ARGS a+b is outside the double range"
    assert target.error("calculate", args=["1"], ro=True) == "INVALID_ARGS usage: FCALL_RO calculate 0 <a> <b>"


# ---------------------------------------------------------------------------------------------------- ratelimiter


def test_check_rate_limit_drains(target: Target) -> None:
    bucket = target.key("bucket")
    before = target.server_time()
    # A refill of 1 token per 11.5 days is invisible at 6 decimals within this test.
    replies = [target.fcall("check_rate_limit", [bucket], ["3", "0.000001"]) for _ in range(5)]
    assert replies == [[1, 2], [1, 1], [1, 0], [0, 0], [0, 0]]
    status = target.map(target.fcall_ro("get_rate_limit_status", [bucket]))
    assert set(status) == {"tokens", "last_update", "max_tokens", "refill_per_second", "tokens_now"}
    assert status["tokens"] == "0.000000"
    assert status["tokens_now"] == "0.000000"
    assert status["max_tokens"] == 3
    assert status["refill_per_second"] == "0.000001"
    assert re.fullmatch(r"\d{10}\.\d{6}", status["last_update"])
    assert before - 1 <= float(status["last_update"]) <= target.server_time() + 1
    # The bucket expires once it would be full again (3 tokens / 0.000001 per second), not before.
    assert 2_999_000 <= target.client.ttl(bucket) <= 3_000_001

    other = target.key("bucket2")
    assert target.fcall("check_rate_limit", [other], ["3", "0.000001", "2"]) == [1, 1]
    assert target.fcall("check_rate_limit", [other], ["3", "0.000001", "2"]) == [0, 1]
    assert target.fcall("check_rate_limit", [other], ["3", "0.000001", "1"]) == [1, 0]


def test_bucket_refills_over_time_and_never_exceeds_max(target: Target) -> None:
    bucket = target.key("bucket")
    limit = ["2", "20"]  # 2 tokens, refilled at 20 per second: one token every 50 ms
    # Drained in one call: two calls would be 50 ms apart on a stalled machine, and the second would find a token
    # refilled (one at a time, with a refill too slow to see: test_check_rate_limit_drains).
    assert target.fcall("check_rate_limit", [bucket], [*limit, "2"]) == [1, 0]
    drained = target.map(target.fcall_ro("get_rate_limit_status", [bucket]))
    assert float(drained["tokens"]) < 1

    def allowed_again() -> bool:
        return bool(target.fcall("check_rate_limit", [bucket], limit)[0])

    wait_until(allowed_again, timeout=5, interval=0.01, message="a drained bucket to refill")

    seen: list[float] = []

    def full() -> bool:
        status = target.map(target.fcall_ro("get_rate_limit_status", [bucket]))
        seen.append(float(status["tokens_now"]))
        return bool(status["tokens_now"] == "2.000000")

    wait_until(full, timeout=5, interval=0.02, message="the bucket to refill to max_tokens")
    time.sleep(0.2)  # four more tokens' worth of time: still capped at 2
    assert full()
    assert max(seen) == 2.0, seen  # never above max_tokens at any observation
    assert target.fcall("check_rate_limit", [bucket], [*limit, "2"]) == [1, 0]
    status = target.map(target.fcall_ro("get_rate_limit_status", [bucket]))
    assert float(status["tokens"]) < 1

    # Lowering max_tokens caps a fuller bucket at the new maximum.
    smaller = target.key("bucket3")
    assert target.fcall("check_rate_limit", [smaller], ["10", "1000"]) == [1, 9]
    assert target.fcall("check_rate_limit", [smaller], ["3", "1000"]) == [1, 2]


def test_rate_limit_status_of_unknown_or_foreign_bucket(target: Target) -> None:
    bucket = target.key("bucket")
    assert target.fcall_ro("get_rate_limit_status", [bucket]) is None
    assert target.fcall("get_rate_limit_status", [bucket]) is None
    assert target.error("check_rate_limit", [bucket], ["3", "1"], ro=True) == WRITE_FLAG_ERROR
    target.client.set(bucket, "x")
    assert target.error("get_rate_limit_status", [bucket], ro=True) == "WRONGTYPE_VALUE bucket key does not hold a hash"
    assert target.error("check_rate_limit", [bucket], ["3", "1"]) == "WRONGTYPE_VALUE bucket key does not hold a hash"
    target.client.delete(bucket)
    target.client.hset(bucket, mapping={"tokens": "lots", "last_update": "1"})
    assert target.error("check_rate_limit", [bucket], ["3", "1"]) == (
        "WRONGTYPE_VALUE bucket fields tokens/last_update are not numbers"
    )
    assert target.error("get_rate_limit_status", [bucket], ro=True) == "WRONGTYPE_VALUE bucket fields are not numbers"


def test_check_rate_limit_rejects(target: Target) -> None:
    bucket = target.key("bucket")
    for bad in NOT_POSITIVE_INTEGERS:
        assert target.error("check_rate_limit", [bucket], [bad, "1"]) == (
            f"INVALID_ARGS max_tokens must be a positive integer below 10^15, got '{bad}'"
        )
        assert target.error("check_rate_limit", [bucket], ["3", "1", bad]) == (
            f"INVALID_ARGS requested must be a positive integer below 10^15, got '{bad}'"
        )
    for bad in ("0", "0.0", "-1", "abc", "1e3", "0x10", "inf", ""):
        assert target.error("check_rate_limit", [bucket], ["3", bad]) == (
            f"INVALID_ARGS refill_per_second must be a positive decimal number, got '{bad}'"
        )
    assert target.error("check_rate_limit", [bucket], ["3", "1", "4"]) == (
        "INVALID_ARGS requested=4 can never be granted with max_tokens=3"
    )
    usage = "INVALID_ARGS usage: FCALL check_rate_limit 1 <bucket> <max_tokens> <refill_per_second> [requested]"
    assert target.error("check_rate_limit", [bucket], ["3"]) == usage
    assert target.error("check_rate_limit", [bucket], ["3", "1", "1", "1"]) == usage
    assert target.error("get_rate_limit_status", [bucket], ["x"], ro=True) == (
        "INVALID_ARGS usage: FCALL_RO get_rate_limit_status 1 <bucket>"
    )
    assert target.client.exists(bucket) == 0


# ----------------------------------------------------------------------------------------------------------- cart


@pytest.fixture
def shop(target: Target) -> dict[str, str]:
    """Keys of one shop, sharing the target's hash tag: an inventory, a price list and a user's cart."""
    keys = {"cart": target.key("cart", "u1"), "inventory": target.key("inventory"), "prices": target.key("prices")}
    target.client.hset(keys["inventory"], mapping={"p1": "5", "p2": "100", "p3": "10", "p4": "0"})
    target.client.hset(keys["prices"], mapping={"p1": "9.99", "p2": "10", "p3": "0.07", "p4": "1.5"})
    return keys


def cart_contents(target: Target, shop: dict[str, str]) -> dict[str, Any]:
    reply = target.map(target.fcall_ro("cart_get", [shop["cart"], shop["prices"]]))
    assert set(reply) == {"items", "total"}
    return {"items": [target.map(item) for item in reply["items"]], "total": reply["total"]}


def test_cart_add_and_get(target: Target, shop: dict[str, str]) -> None:
    add = [shop["cart"], shop["inventory"]]
    assert cart_contents(target, shop) == {"items": [], "total": "0.00"}
    assert target.fcall("cart_add", add, ["p2", "10"]) == 10
    assert target.fcall("cart_add", add, ["p1", "1"]) == 1
    assert target.fcall("cart_add", add, ["p1", "1"]) == 2
    assert target.fcall("cart_add", add, ["p3", "3"]) == 3
    expected = {
        "items": [
            {"product_id": "p1", "quantity": 2, "price": "9.99", "subtotal": "19.98"},
            {"product_id": "p2", "quantity": 10, "price": "10.00", "subtotal": "100.00"},
            {"product_id": "p3", "quantity": 3, "price": "0.07", "subtotal": "0.21"},  # 0.07*3 in floats: 0.21000...02
        ],
        "total": "120.19",
    }
    assert cart_contents(target, shop) == expected
    assert target.map(target.fcall("cart_get", [shop["cart"], shop["prices"]]))["total"] == "120.19"
    assert target.client.hgetall(shop["inventory"])["p1"] == "5"  # adding to a cart does not reserve stock


def test_cart_insufficient_stock_leaves_cart_unchanged(target: Target, shop: dict[str, str]) -> None:
    add = [shop["cart"], shop["inventory"]]
    assert target.fcall("cart_add", add, ["p1", "2"]) == 2
    assert target.error("cart_add", add, ["p1", "10"]) == "INSUFFICIENT_STOCK available=5 in_cart=2 requested=10"
    assert target.error("cart_add", add, ["p1", "4"]) == "INSUFFICIENT_STOCK available=5 in_cart=2 requested=4"
    assert target.error("cart_add", add, ["p4", "1"]) == "INSUFFICIENT_STOCK available=0 in_cart=0 requested=1"
    assert target.error("cart_add", add, ["p9", "1"]) == "UNKNOWN_PRODUCT product_id='p9' is not in the inventory"
    assert target.client.hgetall(shop["cart"]) == {"p1": "2"}
    assert target.fcall("cart_add", add, ["p1", "3"]) == 5
    assert target.client.hgetall(shop["cart"]) == {"p1": "5"}


def test_cart_remove_and_clear(target: Target, shop: dict[str, str]) -> None:
    cart = shop["cart"]
    target.fcall("cart_add", [cart, shop["inventory"]], ["p2", "5"])
    target.fcall("cart_add", [cart, shop["inventory"]], ["p1", "1"])
    assert target.fcall("cart_remove", [cart], ["p2", "2"]) == 3
    assert target.fcall("cart_remove", [cart], ["p2", "3"]) == 0
    assert target.client.hexists(cart, "p2") is False
    target.fcall("cart_add", [cart, shop["inventory"]], ["p2", "5"])
    assert target.fcall("cart_remove", [cart], ["p2", "50"]) == 0  # more than is in the cart removes it
    assert target.fcall("cart_remove", [cart], ["p1"]) == 0  # no quantity removes the product
    assert target.fcall("cart_remove", [cart], ["p1"]) == 0  # not in the cart: nothing to do
    assert target.client.exists(cart) == 0
    target.fcall("cart_add", [cart, shop["inventory"]], ["p1", "1"])
    assert target.fcall("cart_clear", [cart]) == 1
    assert target.fcall("cart_clear", [cart]) == 0
    assert cart_contents(target, shop) == {"items": [], "total": "0.00"}


def test_cart_rejects(target: Target, shop: dict[str, str]) -> None:
    cart, inventory, prices = shop["cart"], shop["inventory"], shop["prices"]
    for bad in NOT_POSITIVE_INTEGERS:
        message = f"INVALID_AMOUNT quantity must be a positive integer below 10^15, got '{bad}'"
        assert target.error("cart_add", [cart, inventory], ["p1", bad]) == message
        assert target.error("cart_remove", [cart], ["p1", bad]) == message
    assert target.error("cart_add", [cart, inventory], ["", "1"]) == "INVALID_ARGS product_id must not be empty"
    assert target.error("cart_add", [cart, inventory], ["p1"]) == (
        "INVALID_ARGS usage: FCALL cart_add 2 <cart> <inventory> <product_id> <quantity>"
    )
    assert target.error("cart_add", [cart], ["p1", "1"]).startswith("INVALID_ARGS usage: FCALL cart_add 2")
    assert (
        target.error("cart_remove", [cart]) == "INVALID_ARGS usage: FCALL cart_remove 1 <cart> <product_id> [quantity]"
    )
    assert target.error("cart_get", [cart], ro=True) == "INVALID_ARGS usage: FCALL_RO cart_get 2 <cart> <prices>"
    assert target.error("cart_clear", [cart], ["x"]) == "INVALID_ARGS usage: FCALL cart_clear 1 <cart>"
    for function, keys in (("cart_add", [cart, inventory]), ("cart_remove", [cart]), ("cart_clear", [cart])):
        assert target.error(function, keys, ["p1", "1"][: 2 if function == "cart_add" else 1], ro=True) == (
            WRITE_FLAG_ERROR
        )
    assert target.client.exists(cart) == 0

    # Bad data already stored: stable codes, never a Lua trace.
    target.client.hset(inventory, "p5", "lots")
    assert target.error("cart_add", [cart, inventory], ["p5", "1"]) == (
        "WRONGTYPE_VALUE stock of product_id='p5' is not a non-negative integer: 'lots'"
    )
    target.fcall("cart_add", [cart, inventory], ["p3", "1"])
    target.client.hset(prices, "p3", "0.999")
    assert target.error("cart_get", [cart, prices], ro=True) == (
        "WRONGTYPE_VALUE price of product_id='p3' is not a non-negative amount with at most 2 decimals: '0.999'"
    )
    target.client.hdel(prices, "p3")
    assert target.error("cart_get", [cart, prices], ro=True) == "MISSING_PRICE product_id='p3' has no price"
    target.client.hset(cart, "p3", "two")
    assert target.error("cart_add", [cart, inventory], ["p3", "1"]) == (
        "WRONGTYPE_VALUE cart quantity of product_id='p3' is not a non-negative integer: 'two'"
    )
    target.client.delete(cart, inventory)
    target.client.set(cart, "x")
    target.client.set(inventory, "x")
    assert target.error("cart_get", [cart, prices], ro=True) == "WRONGTYPE_VALUE cart key does not hold a hash"
    assert target.error("cart_remove", [cart], ["p1"]) == "WRONGTYPE_VALUE cart quantity key does not hold a hash"
    assert target.error("cart_add", [cart, inventory], ["p1", "1"]) == "WRONGTYPE_VALUE stock key does not hold a hash"


def test_cart_keys_need_a_shared_hash_tag_on_a_cluster(flavor: str, deployments: Deployments) -> None:
    """The seed's `cart:u1` + `inventory` cannot be called on a cluster at all; the documented keys can."""
    client = deployments.client(flavor, "cluster", 2)
    with pytest.raises(redis.RedisClusterException, match="all keys must map to the same key slot"):
        client.fcall("cart_add", 2, "cart:u1", "inventory", "p1", "1")
    node = deployments.get(flavor, "cluster").primaries()[0]
    with node.client(decode_responses=True) as direct, pytest.raises(redis.exceptions.ClusterCrossSlotError) as info:
        direct.fcall("cart_add", 2, "cart:u1", "inventory", "p1", "1")
    assert str(info.value) == "Keys in request don't hash to the same slot"  # -CROSSSLOT, code stripped by redis-py
    client.hset("inventory:{shop1}", "p1", "5")
    assert client.fcall("cart_add", 2, "cart:{shop1}:u1", "inventory:{shop1}", "p1", "1") == 1
    client.delete("cart:{shop1}:u1", "inventory:{shop1}")


# ------------------------------------------------------------------------------------------------------- sessions


def session_keys(target: Target, user: str, session_id: str) -> tuple[str, str]:
    return target.key("session", user, session_id), target.key("user_sessions", user)


def test_session_lifecycle(target: Target) -> None:
    session, index = session_keys(target, "u42", "Zx8_-.a1")
    before = int(target.server_time())
    assert target.fcall("session_create", [session, index], ["Zx8_-.a1", "u42", '{"cart":[1,2]}', "600"]) == "Zx8_-.a1"
    raw = target.fcall_ro("session_peek", [session])
    peeked = json.loads(raw)
    created = peeked["created_at"]
    # Byte-exact and in a fixed field order on both servers (cjson alone follows Lua table order, which differs).
    assert raw == (
        '{"session_id":"Zx8_-.a1","user_id":"u42","data":"{\\"cart\\":[1,2]}",'
        f'"created_at":{created},"last_activity":{created},"ttl":600}}'
    )
    assert peeked["session_id"] == "Zx8_-.a1"
    assert peeked["user_id"] == "u42"
    assert peeked["data"] == '{"cart":[1,2]}'  # opaque: stored and returned byte for byte
    assert peeked["ttl"] == 600
    assert before <= peeked["created_at"] == peeked["last_activity"] <= int(target.server_time())
    assert 590 <= target.client.ttl(session) <= 600
    assert target.client.smembers(index) == {"Zx8_-.a1"}

    target.client.expire(session, 100)
    assert json.loads(target.fcall_ro("session_peek", [session])) == peeked  # peek changes nothing
    assert target.client.ttl(session) <= 100
    got = json.loads(target.fcall("session_get", [session]))
    assert 590 <= target.client.ttl(session) <= 600  # get slides the TTL back to the session's ttl
    assert got == {**peeked, "last_activity": got["last_activity"]}
    assert got["last_activity"] >= peeked["last_activity"]
    assert json.loads(target.fcall("session_get", [session], ["7200"]))["ttl"] == 600  # this call only
    assert 7190 <= target.client.ttl(session) <= 7200
    assert target.error("session_get", [session], ro=True) == WRITE_FLAG_ERROR

    assert target.fcall("session_destroy", [session, index]) == 1
    assert target.client.exists(session) == 0
    assert target.client.smembers(index) == set()
    assert target.fcall("session_destroy", [session, index]) == 0
    assert target.fcall("session_get", [session]) is None
    assert target.fcall_ro("session_peek", [session]) is None


def test_session_default_ttl_and_collision(target: Target) -> None:
    session, index = session_keys(target, "u7", "abc")
    assert target.fcall("session_create", [session, index], ["abc", "u7", ""]) == "abc"
    assert 3590 <= target.client.ttl(session) <= 3600
    assert target.error("session_create", [session, index], ["abc", "intruder", "x"]) == (
        "SESSION_EXISTS session_id='abc' is already in use"
    )
    assert json.loads(target.fcall_ro("session_peek", [session]))["user_id"] == "u7"
    assert json.loads(target.fcall_ro("session_peek", [session]))["data"] == ""


def test_two_sessions_of_one_user(target: Target) -> None:
    first, index = session_keys(target, "u42", "s1")
    second, _ = session_keys(target, "u42", "s2")
    other_user, other_index = session_keys(target, "u43", "s3")
    assert target.fcall("session_create", [first, index], ["s1", "u42", "a"]) == "s1"
    assert target.fcall("session_create", [second, index], ["s2", "u42", "b"]) == "s2"
    assert target.fcall("session_create", [other_user, other_index], ["s3", "u43", "c"]) == "s3"
    assert target.client.smembers(index) == {"s1", "s2"}
    if target.topology == "cluster":
        assert target.client.keyslot(first) == target.client.keyslot(second) == target.client.keyslot(index)
    prefix = first[: -len("s1")]
    assert target.fcall("session_destroy_all", [index], [prefix]) == 2
    assert target.client.exists(first, second, index) == 0
    assert json.loads(target.fcall_ro("session_peek", [other_user]))["user_id"] == "u43"
    assert target.fcall("session_destroy_all", [index], [prefix]) == 0


def test_session_destroy_all_touches_only_sessions_of_the_index(target: Target) -> None:
    live, index = session_keys(target, "u1", "live")
    expired, _ = session_keys(target, "u1", "gone")
    foreign, _ = session_keys(target, "u1", "notasession")
    prefix = live[: -len("live")]
    target.fcall("session_create", [live, index], ["live", "u1", "x"])
    target.fcall("session_create", [expired, index], ["gone", "u1", "x"])
    target.client.delete(expired)  # as if it had expired: its id stays in the index
    target.client.sadd(index, "notasession")
    target.client.set(foreign, "keep me")
    assert target.fcall("session_destroy_all", [index], [prefix]) == 1
    assert target.client.get(foreign) == "keep me"
    assert target.client.exists(live, index) == 0

    tag = "{" + target.tag + "}"
    assert target.error("session_destroy_all", [index], ["session:u1:"]) == (
        f"INVALID_ARGS session key prefix must contain the index key hash tag {tag}, got 'session:u1:'"
    )
    assert target.error("session_destroy_all", [index], ["session:{other}:"]) == (
        f"INVALID_ARGS session key prefix must contain the index key hash tag {tag}, got 'session:{{other}}:'"
    )
    untagged = target.key("plain")
    no_tag_key = untagged.replace(tag, "x")
    assert target.error("session_destroy_all", [no_tag_key], ["session:"]) == (
        f"INVALID_ARGS index key must contain a hash tag such as {{u42}}, got '{no_tag_key}'"
    )
    assert target.error("session_destroy_all", [index]) == (
        "INVALID_ARGS usage: FCALL session_destroy_all 1 <index_key> <session_key_prefix>"
    )


def test_session_rejects(target: Target) -> None:
    session, index = session_keys(target, "u1", "ok")
    for bad_id in ("", "a b", "a{b}", "x" * 129, "é"):
        bad_session = target.key("session", "u1") + ":" + bad_id
        assert target.error("session_create", [bad_session, index], [bad_id, "u1", "d"]) == (
            f"INVALID_ARGS session_id must be 1-128 characters from A-Z a-z 0-9 _ . -, got '{bad_id[:61]}"
            + ("...'" if len(bad_id) > 64 else "'")
        )
    assert target.error("session_create", [session, index], ["other", "u1", "d"]) == (
        f"INVALID_ARGS session key must be a prefix followed by the session_id, got '{session}'"
    )
    assert target.error("session_create", [session, index], ["ok", "", "d"]) == "INVALID_ARGS user_id must not be empty"
    for bad in (*NOT_POSITIVE_INTEGERS, "10000000000"):
        assert target.error("session_create", [session, index], ["ok", "u1", "d", bad]) == (
            f"INVALID_ARGS ttl must be a positive integer number of seconds below 10^10, got '{bad}'"
        )
        assert target.error("session_get", [session], [bad]) == (
            f"INVALID_ARGS extend_ttl must be a positive integer number of seconds below 10^10, got '{bad}'"
        )
    assert target.error("session_create", [session, index], ["ok", "u1"]) == (
        "INVALID_ARGS usage: FCALL session_create 2 <session_key> <index_key> <session_id> <user_id> <data> [ttl]"
    )
    assert target.error("session_get", [session], ["1", "2"]) == (
        "INVALID_ARGS usage: FCALL session_get 1 <session_key> [extend_ttl]"
    )
    assert target.error("session_peek", [session], ["1"], ro=True) == (
        "INVALID_ARGS usage: FCALL_RO session_peek 1 <session_key>"
    )
    assert target.error("session_destroy", [session]) == (
        "INVALID_ARGS usage: FCALL session_destroy 2 <session_key> <index_key>"
    )
    # A wrong-type index is found before anything is written: no half-created session.
    target.client.set(index, "x")
    assert target.error("session_create", [session, index], ["ok", "u1", "d"]) == (
        "WRONGTYPE_VALUE session index key does not hold a set"
    )
    assert target.client.exists(session) == 0
    assert target.error("session_destroy_all", [index], [session[: -len("ok")]]) == (
        "WRONGTYPE_VALUE session index key does not hold a set"
    )
    target.client.set(session, "x")
    assert target.error("session_peek", [session], ro=True) == "WRONGTYPE_VALUE session key does not hold a hash"
    assert target.error("session_get", [session]) == "WRONGTYPE_VALUE session key does not hold a hash"
    assert target.error("session_destroy", [session, index]) == "WRONGTYPE_VALUE session key does not hold a hash"


# -------------------------------------------------------------------------------------------- replicas, cluster nodes


def test_read_only_functions_on_a_replica(flavor: str, deployments: Deployments) -> None:
    pair = deployments.get(flavor, "replicated")
    tag = "{ro-replica}"
    session, index, bucket = f"session:{tag}:s1", f"user_sessions:{tag}", f"bucket:{tag}"
    with pair.primary.client(decode_responses=True) as primary:
        primary.delete(f"value:{tag}", session, index, bucket)
        primary.set(f"value:{tag}", "v")
        primary.fcall("session_create", 2, session, index, "s1", "u1", "d")
        primary.fcall("check_rate_limit", 1, bucket, "3", "1")
    pair.wait_in_sync()
    for protocol in (2, 3):
        with pair.replica.client(protocol=protocol, decode_responses=True) as replica:
            assert replica.fcall_ro("hello", 0, "Ann") == "Hello, Ann!"
            assert replica.fcall("hello", 0) == "Hello, World!"  # no-writes: plain FCALL works on a replica too
            assert replica.fcall_ro("calculate", 0, "1.5", "2.25") == ("3.75" if protocol == 2 else 3.75)
            assert replica.fcall_ro("get_value", 1, f"value:{tag}") == "v"
            assert json.loads(replica.fcall_ro("session_peek", 1, session))["session_id"] == "s1"
            assert as_map(replica.fcall_ro("get_rate_limit_status", 1, bucket), protocol)["max_tokens"] == 3
            assert as_map(replica.fcall_ro("cart_get", 2, f"cart:{tag}", f"prices:{tag}"), protocol) == {
                "items": [],
                "total": "0.00",
            }
            # A write function on a replica: READONLY, with FCALL_RO too (the replica check comes first).
            for function, keys in (("increment_counter", [f"counter:{tag}"]), ("session_get", [session])):
                for call in (replica.fcall, replica.fcall_ro):
                    with pytest.raises(redis.ReadOnlyError) as info:
                        call(function, len(keys), *keys)
                    assert str(info.value) == "You can't write against a read only replica."


def test_keyless_read_only_functions_on_every_cluster_node(flavor: str, deployments: Deployments) -> None:
    cluster = deployments.get(flavor, "cluster")
    assert len(cluster.primaries()) == 3
    assert len(cluster.replicas()) == 3
    for node in cluster.nodes:
        for protocol in (2, 3):
            with node.client(protocol=protocol, decode_responses=True) as client:
                assert client.fcall_ro("calculate", 0, "1.5", "2.25") == ("3.75" if protocol == 2 else 3.75)
                assert client.fcall("calculate", 0, "1.5", "2.25") == ("3.75" if protocol == 2 else 3.75)
                assert client.fcall_ro("hello", 0, "Ann") == "Hello, Ann!"


def test_keyed_read_only_function_on_a_cluster_replica(flavor: str, deployments: Deployments) -> None:
    """A replica serves FCALL_RO of a no-writes function for its primary's slots once the connection says READONLY;
    without it the replica answers MOVED."""
    cluster = deployments.get(flavor, "cluster")
    key = "value:{replica-read}"
    deployments.client(flavor, "cluster", 2).set(key, "v")
    replica = cluster.replica_of(cluster.node_for_key(key))
    with replica.client(decode_responses=True, single_connection_client=True) as client:
        with pytest.raises(redis.exceptions.MovedError):
            client.fcall_ro("get_value", 1, key)
        client.execute_command("READONLY")
        wait_until(lambda: client.fcall_ro("get_value", 1, key) == "v", 5, message=f"{key} on {replica.address}")
        assert client.fcall_ro("session_peek", 1, "session:{replica-read}:none") is None
        with pytest.raises(redis.exceptions.MovedError):  # writes still go to the primary
            client.fcall("increment_counter", 1, "counter:{replica-read}")


def test_important_write_under_maxmemory(flavor: str, deployments: Deployments) -> None:
    """allow-oom lets important_write through when plain writes and unflagged functions get OOM; no-writes
    functions keep working."""
    key = "value:{oom}"
    with deployments.get(flavor, "standalone").client(protocol=2, decode_responses=True) as client:
        old = client.config_get("maxmemory")["maxmemory"]
        try:
            client.config_set("maxmemory", "1")
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                client.set(key, "plain")
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                client.fcall("increment_counter", 1, "counter:{oom}")
            assert client.fcall("important_write", 1, key, "v") == "OK"
            assert client.fcall_ro("get_value", 1, key) == "v"
            assert client.fcall_ro("calculate", 0, "1", "2") == "3"
        finally:
            client.config_set("maxmemory", old)
            client.delete(key)


# ----------------------------------------------------------------------------------------- the files themselves


def test_function_list_reports_the_documented_flags(flavor: str, deployments: Deployments) -> None:
    with deployments.get(flavor, "standalone").client(decode_responses=True) as client:
        for library, functions in LIBRARIES.items():
            (entry,) = client.function_list(library=library)
            listed = dict(zip(entry[::2], entry[1::2], strict=True))
            assert listed["library_name"] == library
            reported = {}
            for function in listed["functions"]:
                fields = dict(zip(function[::2], function[1::2], strict=True))
                assert fields["description"], fields
                reported[fields["name"]] = set(fields["flags"])
            assert reported == functions
            assert all("no-cluster" not in flags for flags in reported.values())


def test_lua_directory_ships_exactly_the_five_libraries() -> None:
    assert sorted(p.name for p in LUA_DIR.iterdir()) == sorted([*(f"{n}.lua" for n in LIBRARIES), "README.md"])
    for name in LIBRARIES:
        source = library_code(name)
        assert source.startswith(f"#!lua name={name}\n")
        assert "math.random" not in source
        assert "no-cluster" not in source
        assert "HMSET" not in source


def test_the_vet_sees_every_registration() -> None:
    for name, functions in LIBRARIES.items():
        found = vet(library_code(name)).library.functions
        assert {f.name: set(f.flags) for f in found} == functions, name


def test_lua_files_lint_clean() -> None:
    for name in LIBRARIES:
        assert list(lint(library_code(name))) == [], name


def test_readme_documents_every_function_and_error_code() -> None:
    readme = README.read_text(encoding="utf-8")
    for library, functions in LIBRARIES.items():
        assert f"## {library}" in readme
        for function in functions:
            assert f"### `{function}`" in readme, function
    for name in LIBRARIES:
        for code in error_codes(library_code(name)):
            assert f"`{code}`" in readme, (name, code)
    assert "RESP2" in readme
    assert "RESP3" in readme
