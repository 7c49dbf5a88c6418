"""Smoke tests on the canary, on real Redis 7.0 and Valkey 9 (standalone and 3-primary clusters): a failing test puts
the canary back and leaves every primary on the old code (a brand-new library: removed from the canary, nowhere
else); passing tests are reported and then the code spreads; a writing test's keys are gone afterwards; ``{canary}``
keys land on the canary; a test that meets BUSY or a timeout is transient, keeps the canary's new code, touches
nothing else, and the next attempt tests before spreading; no test runs when nothing is written."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from redis_functions_operator.library import Library, parse_library
from redis_functions_operator.library.probes import Probe, parse_probes
from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Connector, Endpoint, Target
from redis_functions_operator.redis.errors import ErrorKind
from redis_functions_operator.redis.sync import Outcome
from tests.redis.test_sync import codes_on, target_of
from tests.support import redis_servers as rs

PREFIX = "rfo-test:"
REPO = Path(__file__).resolve().parents[2]


def library(name: str, version: str) -> Library:
    """``<name>_version`` returns ``version``; ``<name>_put`` writes KEYS[1] and reads it back; ``<name>_spin`` never
    returns (until FUNCTION KILL)."""
    return parse_library(
        f"#!lua name={name}\n"
        f"redis.register_function{{function_name='{name}_version', callback=function() return '{version}' end, "
        "flags={'no-writes'}}\n"
        f"redis.register_function('{name}_put', function(keys, args) redis.call('SET', keys[1], args[1]) "
        "return {redis.call('GET', keys[1]), redis.call('EXISTS', keys[1])} end)\n"
        f"redis.register_function{{function_name='{name}_spin', callback=function() while true do end end, "
        "flags={'no-writes'}}\n"
        f"redis.register_function{{function_name='{name}_shapes', callback=function() "
        "return {true, false, 'x', 3.7, {redis.status_reply('OK')}} end, flags={'no-writes'}}\n"
    )


def expects_version(name: str, version: str) -> tuple[Probe, ...]:
    return parse_probes([{"name": "version", "function": f"{name}_version", "expect": {"reply": version}}])


def fcalls(server: rs.RedisServer) -> int:
    stats = server.info("commandstats")
    return sum(int((stats.get(f"cmdstat_{c}") or {}).get("calls", 0)) for c in ("fcall", "fcall_ro"))


def keys_under(server: rs.RedisServer, prefix: str) -> list[bytes]:
    return list(server.client().scan_iter(match=prefix + "*"))


async def test_a_failing_test_puts_the_standalone_canary_back(standalone: rs.RedisServer, unique_name: str) -> None:
    v1, v2 = library(unique_name, "v1"), library(unique_name, "v2")
    assert (await engine.sync(v1, target_of(standalone))).ok
    result = await engine.sync(v2, target_of(standalone), probes=expects_version(unique_name, "v3"))
    assert result.permanent and result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED
    assert result.error.message == (
        f'smoke test \'version\' (FCALL_RO {unique_name}_version): expected reply "v3", got "v2"'
    )
    assert [n.outcome for n in result.nodes] == [Outcome.ROLLED_BACK]
    assert result.blocking_node == standalone.address
    assert [(p.name, p.passed, p.actual) for p in result.probes] == [("version", False, '"v2"')]
    assert codes_on([standalone], unique_name) == {standalone.address: v1.code}


async def test_a_failing_test_leaves_every_cluster_primary_on_the_old_code(
    cluster: rs.Cluster, unique_name: str
) -> None:
    v1, v2 = library(unique_name, "v1"), library(unique_name, "v2")
    assert (await engine.sync(v1, target_of(cluster.nodes[0]))).ok
    loads = {p.address: _calls(p, "function|load") for p in cluster.primaries()}
    result = await engine.sync(v2, target_of(cluster.nodes[0]), probes=expects_version(unique_name, "v3"))
    assert result.permanent and result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED
    outcomes = {n.address: n.outcome for n in result.nodes}
    assert outcomes[result.blocking_node or ""] is Outcome.ROLLED_BACK
    assert sorted(outcomes.values()) == sorted([Outcome.ROLLED_BACK, Outcome.SKIPPED, Outcome.SKIPPED])
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {v1.code}
    # Only the canary received a FUNCTION LOAD (the new code, then its old code back).
    after = {p.address: _calls(p, "function|load") - loads[p.address] for p in cluster.primaries()}
    assert after == {a: (2 if a == result.blocking_node else 0) for a in after}


async def test_a_new_library_failing_its_test_is_removed_from_the_canary(cluster: rs.Cluster, unique_name: str) -> None:
    result = await engine.sync(
        library(unique_name, "v1"), target_of(cluster.nodes[0]), probes=expects_version(unique_name, "v0")
    )
    assert result.permanent and result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {None}


async def test_passing_tests_are_reported_then_the_code_spreads_and_a_resync_tests_nothing(
    cluster: rs.Cluster, unique_name: str
) -> None:
    v1 = library(unique_name, "v1")
    probes = expects_version(unique_name, "v1")
    result = await engine.sync(v1, target_of(cluster.nodes[0]), probes=probes)
    assert result.ok, result
    assert [(p.name, p.passed, p.actual) for p in result.probes] == [("version", True, '"v1"')]
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {v1.code}
    calls = {p.address: fcalls(p) for p in cluster.primaries()}
    again = await engine.sync(v1, target_of(cluster.nodes[0]), probes=())
    assert again.ok and again.probes == ()
    assert {p.address: fcalls(p) for p in cluster.primaries()} == calls


async def test_a_writing_test_lands_on_the_canary_and_its_keys_are_deleted(
    cluster: rs.Cluster, unique_name: str
) -> None:
    prefix = f"{PREFIX}{unique_name}:"
    probes = parse_probes(
        [
            {
                "name": "put",
                "function": f"{unique_name}_put",
                "keys": [prefix + "{canary}:n"],
                "args": ["hello"],
                "readOnly": False,
                "expect": {"reply": ["hello", 1]},
            }
        ],
        prefix,
    )
    calls = {p.address: fcalls(p) for p in cluster.primaries()}
    result = await engine.sync(library(unique_name, "v1"), target_of(cluster.nodes[0]), probes=probes)
    assert result.ok, result
    (outcome,) = result.probes
    assert outcome.passed and outcome.actual == '["hello", 1]'
    # The FCALL went to the canary, and only there (a key of another slot would have been answered MOVED).
    ran = {p.address for p in cluster.primaries() if fcalls(p) > calls[p.address]}
    assert ran == {outcome.node}
    assert all(keys_under(p, prefix) == [] for p in cluster.primaries())


async def test_a_key_outside_the_canary_slots_fails_before_anything_is_sent(
    cluster: rs.Cluster, unique_name: str
) -> None:
    prefix = f"{PREFIX}{unique_name}:"
    keys = [f"{prefix}{n}" for n in range(12)]  # 12 keys over 3 primaries: some hash elsewhere than the canary
    probes = parse_probes(
        [{"name": "p", "function": f"{unique_name}_put", "keys": keys, "args": ["x"], "readOnly": False,
          "expect": {"type": "array"}}],
        prefix,
    )  # fmt: skip
    result = await engine.sync(library(unique_name, "v1"), target_of(cluster.nodes[0]), probes=probes)
    assert result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED
    assert "which this primary does not serve" in result.error.message and "{canary}" in result.error.message
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {None}


async def test_errors_are_compared_with_their_code(standalone: rs.RedisServer, unique_name: str) -> None:
    probes = parse_probes(
        [
            {"name": "missing", "function": f"{unique_name}_nope", "expect": {"errorPrefix": "ERR Function not found"}},
            {"name": "writes-ro", "function": f"{unique_name}_put", "keys": ["k"], "expect": {"type": "error"}},
            {"name": "string", "function": f"{unique_name}_version", "expect": {"type": "string"}},
            # Lua true is 1, false is nil, a number is truncated, a status reply is a string (README's table)
            {"name": "shapes", "function": f"{unique_name}_shapes", "expect": {"reply": [1, None, "x", 3, ["OK"]]}},
        ]
    )
    result = await engine.sync(library(unique_name, "v1"), target_of(standalone), probes=probes)
    assert result.ok, result
    assert [p.passed for p in result.probes] == [True, True, True, True]


class _BusyBeforeFirstProbe(Connector):
    """Makes the node really BUSY (a script spinning on another connection, past ``busy-reply-threshold``) just
    before the first smoke test is sent to it: a real server's BUSY reply, at the one moment that matters."""

    def __init__(self, target: Target, servers: dict[Endpoint, rs.RedisServer]) -> None:
        super().__init__(target)
        self.servers = servers
        self.spinning: rs.RedisServer | None = None
        self.thread: threading.Thread | None = None

    async def call(self, endpoint: Endpoint, *args: Any, authenticate: bool = True) -> Any:
        if args and args[0] in ("FCALL", "FCALL_RO") and self.spinning is None:
            self.spinning = self.servers[endpoint]
            await asyncio.to_thread(self._spin, self.spinning)
        return await super().call(endpoint, *args, authenticate=authenticate)

    def _spin(self, server: rs.RedisServer) -> None:
        def run() -> None:
            with pytest.raises(redis.exceptions.ResponseError):  # "Script killed by user with SCRIPT KILL..."
                server.client(socket_timeout=None).eval("while true do end", 0)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        rs.wait_until(lambda: _busy(server), message="the spinning script did not make the node BUSY")

    def stop_spinning(self) -> None:
        if self.spinning is not None:
            self.spinning.client().execute_command("SCRIPT", "KILL")
            assert self.thread is not None
            self.thread.join(timeout=10)
            rs.wait_until(lambda: not _busy(self.spinning), message="the node stayed BUSY")  # type: ignore[arg-type]


def _busy(server: rs.RedisServer) -> bool:
    try:
        server.client().ping()
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


@pytest.mark.parametrize("flavor", rs.FLAVORS)
async def test_a_test_meeting_busy_is_transient_and_the_next_attempt_tests_before_spreading(
    flavor: str, cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    cluster = cluster_factory(flavor, replicas_per_primary=0, extra_config={"busy-reply-threshold": 100})
    v1, v2 = library(unique_name, "v1"), library(unique_name, "v2")
    target = target_of(cluster.nodes[0])
    assert (await engine.sync(v1, target)).ok
    probes = expects_version(unique_name, "v2")
    servers = {Endpoint.parse(s.address): s for s in cluster.primaries()}
    async with _BusyBeforeFirstProbe(target, servers) as busy:
        try:
            result = await engine.sync(v2, target, connector=busy, probes=probes)
        finally:
            busy.stop_spinning()
    assert result.error is not None and result.error.kind is ErrorKind.BUSY and not result.permanent
    assert "could not run" in result.error.message and "not rolled back" in result.error.message
    canary = result.blocking_node
    codes = codes_on(cluster.primaries(), unique_name)
    assert codes == {a: (v2.code if a == canary else v1.code) for a in codes}  # kept on the canary, nowhere else
    assert sorted(n.outcome for n in result.nodes if n.address != canary) == [Outcome.SKIPPED, Outcome.SKIPPED]

    calls = {p.address: fcalls(p) for p in cluster.primaries()}
    resumed = await engine.sync(v2, target, probes=probes)
    assert resumed.ok, resumed
    assert [(p.name, p.node, p.passed) for p in resumed.probes] == [("version", canary, True)]
    assert {p.address for p in cluster.primaries() if fcalls(p) > calls[p.address]} == {canary}
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {v2.code}


@pytest.mark.parametrize("flavor", rs.FLAVORS)
async def test_a_test_that_times_out_is_transient_and_keeps_the_new_code(
    flavor: str, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    # The server answers nobody while the function spins, until busy-reply-threshold: past the client's deadline
    # (1 s, and its one retry's), so the probe meets a timeout, not BUSY. The deadline is not shorter because it
    # also bounds the connect, FUNCTION LIST and LOAD before the probe, which a loaded machine may stall for 0.3 s.
    server = server_factory(flavor, extra_config={"busy-reply-threshold": 5000})
    v1, v2 = library(unique_name, "v1"), library(unique_name, "v2")
    assert (await engine.sync(v1, target_of(server))).ok
    spin = parse_probes([{"name": "spin", "function": f"{unique_name}_spin", "expect": {"type": "nil"}}])
    try:
        result = await engine.sync(v2, target_of(server, timeout=1.0), probes=spin)
    finally:
        rs.wait_until(lambda: _kill_function(server), message="FUNCTION KILL did not stop the spinning function")
    assert result.error is not None and result.error.kind is ErrorKind.TIMEOUT and not result.permanent
    assert codes_on([server], unique_name) == {server.address: v2.code}  # never a rollback for a timeout


def _kill_function(server: rs.RedisServer) -> bool:
    try:
        server.client().execute_command("FUNCTION", "KILL")
    except redis.exceptions.ResponseError as exc:
        if not str(exc).startswith("NOTBUSY"):
            raise
    return not _busy(server)


def _calls(server: rs.RedisServer, command: str) -> int:
    entry = server.info("commandstats").get(f"cmdstat_{command}") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def _example_chart_mylib() -> tuple[str, dict[str, Any]]:
    return "mylib", yaml.safe_load((REPO / "examples" / "libraries" / "values.yaml").read_text())["libraries"]["mylib"]


def _readme_ratelimiter() -> tuple[str, dict[str, Any]]:
    """The spec of the README's first object (``## The operator``)."""
    after = (REPO / "README.md").read_text().split("## The operator", 1)[1]
    block = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    return "ratelimiter", yaml.safe_load(block)["spec"]


@pytest.mark.parametrize("flavor", rs.FLAVORS)
@pytest.mark.parametrize("example", [_example_chart_mylib, _readme_ratelimiter], ids=["chart-mylib", "readme"])
async def test_the_documented_smoke_tests_pass_on_the_shipped_libraries(
    flavor: str, example: Callable[[], tuple[str, dict[str, Any]]], cluster_factory: Callable[..., rs.Cluster]
) -> None:
    """The smoke tests the docs give a ``lua/`` library (the example chart's values, the README's object), on a
    cluster: they pass, their ``{canary}`` keys land on the canary, and the keys are gone afterwards."""
    name, spec = example()
    cluster = cluster_factory(flavor, replicas_per_primary=0)
    probes = parse_probes(spec["tests"], spec["testKeyPrefix"])
    shipped = parse_library((REPO / "lua" / f"{name}.lua").read_bytes())
    result = await engine.sync(shipped, target_of(cluster.nodes[0]), probes=probes)
    assert result.ok, result
    assert [(p.name, p.passed) for p in result.probes] == [(t["name"], True) for t in spec["tests"]]
    assert all(not keys_under(p, spec["testKeyPrefix"]) for p in cluster.primaries())


async def test_code_left_on_one_primary_is_tested_there_and_put_back_to_the_others_version(
    cluster: rs.Cluster, unique_name: str
) -> None:
    """The state a test that could not run leaves (the canary kept v2, the others hold v1): the next attempt tests
    on that primary before writing anything, and a test that fails there puts it back to v1 — no mixed versions."""
    v1, v2 = library(unique_name, "v1"), library(unique_name, "v2")
    assert (await engine.sync(v1, target_of(cluster.nodes[0]))).ok
    kept = cluster.primaries()[0]
    kept.client().execute_command("FUNCTION", "LOAD", "REPLACE", v2.code)
    result = await engine.sync(v2, target_of(cluster.nodes[0]), probes=expects_version(unique_name, "v3"))
    assert result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED
    assert result.blocking_node == kept.address
    outcomes = {n.address: n.outcome for n in result.nodes}
    assert outcomes == {p.address: Outcome.ROLLED_BACK if p is kept else Outcome.SKIPPED for p in cluster.primaries()}
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {v1.code}


async def test_tests_failing_on_code_every_primary_holds_write_nothing(cluster: rs.Cluster, unique_name: str) -> None:
    """Tests added to code already everywhere: they run on one primary, and a failure is reported, with nothing
    written (there is no other version to put back)."""
    v1 = library(unique_name, "v1")
    assert (await engine.sync(v1, target_of(cluster.nodes[0]))).ok
    loads = {p.address: _calls(p, "function|load") for p in cluster.primaries()}
    result = await engine.sync(v1, target_of(cluster.nodes[0]), probes=expects_version(unique_name, "v0"))
    assert result.permanent and result.error is not None and result.error.kind is ErrorKind.SMOKE_TEST_FAILED
    assert {p.address: _calls(p, "function|load") for p in cluster.primaries()} == loads
    assert set(codes_on(cluster.primaries(), unique_name).values()) == {v1.code}
