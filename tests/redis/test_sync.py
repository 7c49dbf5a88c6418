"""The sync engine on real Redis 7.0 and Valkey 9: standalone, replication, sentinel, clusters — including the
moments a real deployment moves under it (a 0-slot primary, a failover, a primary restarted empty).

What discovery, the canary, the rollback and the read-back depend on in the server (CLUSTER SHARDS, FUNCTION LOAD /
LIST / DELETE replies and errors, commandstats, TLS) runs on every server of the matrix (``matrix_cluster``,
``matrix_standalone``, ``rs.MATRIX``: the five releases ``make servers`` builds too); the engine's own logic (auth,
sentinel, several deployments) on the two flavors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from redis_functions_operator.library import Library, parse_library
from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Credentials, Endpoint, Mode, Target, TlsSettings
from redis_functions_operator.redis.errors import ErrorKind
from redis_functions_operator.redis.sync import Outcome
from tests.support import redis_servers as rs


def make_library(name: str, body: str = "return 'v1'", functions: Iterable[str] = ("f",)) -> Library:
    lines = [f"#!lua name={name}"]
    lines += [f"redis.register_function('{name}_{fn}', function(keys, args) {body} end)" for fn in functions]
    return parse_library("\n".join(lines) + "\n")


def target_of(*servers: rs.RedisServer, mode: Mode = Mode.AUTO, **kw: object) -> Target:
    return Target(tuple(Endpoint.parse(s.address) for s in servers), mode, **kw)  # type: ignore[arg-type]


def codes_on(servers: Iterable[rs.RedisServer], name: str) -> dict[str, bytes | None]:
    return {s.address: s.function_libraries().get(name) for s in servers}


async def test_cluster_loads_every_primary_and_replicas_follow(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    library = make_library(unique_name)
    result = await engine.sync(library, target_of(matrix_cluster.nodes[0]))
    assert result.ok, result
    assert {n.address for n in result.nodes} == {p.address for p in matrix_cluster.primaries()}
    assert {n.outcome for n in result.nodes} == {Outcome.LOADED}
    assert all(n.after_sha256 == library.sha256 for n in result.nodes)
    assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {library.code}
    rs.wait_until(
        lambda: set(codes_on(matrix_cluster.replicas(), unique_name).values()) == {library.code},
        message="replicas did not receive the library",
    )
    assert {r.address for r in result.topology.replicas} == {r.address for r in matrix_cluster.replicas()}  # type: ignore[union-attr]


async def test_resync_of_unchanged_library_sends_no_load(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    library = make_library(unique_name)
    assert (await engine.sync(library, target_of(matrix_cluster.nodes[0]))).ok
    before = {p.address: _load_calls(p) for p in matrix_cluster.primaries()}
    again = await engine.sync(library, target_of(matrix_cluster.nodes[0]))
    assert again.ok
    assert {n.outcome for n in again.nodes} == {Outcome.UNCHANGED}
    assert {p.address: _load_calls(p) for p in matrix_cluster.primaries()} == before


async def test_seed_that_is_a_replica_leads_to_every_primary(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    library = make_library(unique_name)
    result = await engine.sync(library, target_of(matrix_cluster.replicas()[0]))
    assert result.ok
    assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {library.code}


async def test_update_replaces_code_everywhere(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    v1, v2 = make_library(unique_name, "return 'v1'"), make_library(unique_name, "return 'v2'")
    assert (await engine.sync(v1, target_of(matrix_cluster.nodes[0]))).ok
    result = await engine.sync(v2, target_of(matrix_cluster.nodes[0]))
    assert result.ok
    assert all(n.before_sha256 == v1.sha256 and n.after_sha256 == v2.sha256 for n in result.nodes)
    assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {v2.code}


async def test_compile_error_changes_nothing_anywhere(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    good = make_library(unique_name)
    assert (await engine.sync(good, target_of(matrix_cluster.nodes[0]))).ok
    broken = parse_library(f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function()\n")
    result = await engine.sync(broken, target_of(matrix_cluster.nodes[0]))
    assert not result.ok and result.permanent
    assert result.error is not None and result.error.kind is ErrorKind.COMPILE_ERROR
    assert "Error compiling function" in result.error.message and "user_function:" in result.error.message
    assert sorted(n.outcome for n in result.nodes) == [Outcome.FAILED, Outcome.SKIPPED, Outcome.SKIPPED]
    assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {good.code}


async def test_function_collision_on_one_primary_leaves_no_mixed_code(
    matrix_cluster: rs.Cluster, unique_name: str
) -> None:
    old = make_library(unique_name, "return 'old'", functions=("a",))
    assert (await engine.sync(old, target_of(matrix_cluster.nodes[0]))).ok
    # Another library owns `<name>_b` on one primary only (the last by address, so the canary succeeds first).
    victim = sorted(matrix_cluster.primaries(), key=lambda s: s.port)[-1]
    squatter = f"{unique_name}_sq"
    victim.client().execute_command(
        "FUNCTION", "LOAD", f"#!lua name={squatter}\nredis.register_function('{unique_name}_b', function() end)"
    )
    try:
        new = make_library(unique_name, "return 'new'", functions=("a", "b"))
        result = await engine.sync(new, target_of(matrix_cluster.nodes[0]))
        assert not result.ok and result.permanent
        assert result.error is not None and result.error.kind is ErrorKind.FUNCTION_CONFLICT
        assert result.error.function == f"{unique_name}_b" and result.error.owner == squatter
        assert result.blocking_node == victim.address
        assert {n.outcome for n in result.nodes if n.address != victim.address} == {Outcome.ROLLED_BACK}
        assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {old.code}
        assert victim.function_libraries()[squatter]  # the other library is untouched
    finally:
        victim.client().execute_command("FUNCTION", "DELETE", squatter)


async def test_rollback_of_a_new_library_deletes_it(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    victim = sorted(matrix_cluster.primaries(), key=lambda s: s.port)[-1]
    squatter = f"{unique_name}_sq"
    victim.client().execute_command(
        "FUNCTION", "LOAD", f"#!lua name={squatter}\nredis.register_function('{unique_name}_f', function() end)"
    )
    try:
        result = await engine.sync(make_library(unique_name), target_of(matrix_cluster.nodes[0]))
        assert result.permanent
        assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {None}
    finally:
        victim.client().execute_command("FUNCTION", "DELETE", squatter)


async def test_delete_everywhere_and_not_found_counts_as_done(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    library = make_library(unique_name)
    assert (await engine.sync(library, target_of(matrix_cluster.nodes[0]))).ok
    matrix_cluster.primaries()[0].client().execute_command("FUNCTION", "DELETE", unique_name)
    result = await engine.delete(unique_name, target_of(matrix_cluster.nodes[0]))
    assert result.ok
    assert sorted(n.outcome for n in result.nodes) == [Outcome.DELETED, Outcome.DELETED, Outcome.UNCHANGED]
    assert set(codes_on(matrix_cluster.primaries(), unique_name).values()) == {None}


async def test_case_clashing_function_names_are_never_replaced_deleted_or_spread(
    cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    """The engine's own guard behind the lint: names computed at load time (the lint refuses them unless told to
    ignore it) that turn out to differ only in case. Redis accepts that library, then aborts on its next LOAD
    REPLACE or DELETE; so the canary that took it keeps it, no other primary gets it, and nothing touches it again.
    (A private cluster: if the guard failed, the servers would die.)"""
    cluster = cluster_factory("redis")
    target = target_of(cluster.nodes[0])

    def clashing(value: int) -> Library:
        return parse_library(
            f"#!lua name={unique_name}\nlocal names = {{'cs_fn', 'CS_FN'}}\n"
            f"for i = 1, 2 do redis.register_function(names[i], function() return {value} end) end\n"
        )

    first = await engine.sync(clashing(1), target)
    assert first.error is not None and first.error.kind is ErrorKind.UNSAFE_LIBRARY, first
    assert "'CS_FN' and 'cs_fn', which differ only in case" in first.error.message  # as listed, sorted
    assert sorted(n.outcome for n in first.nodes) == [Outcome.FAILED, Outcome.SKIPPED, Outcome.SKIPPED]
    holders = {a: c for a, c in codes_on(cluster.primaries(), unique_name).items() if c is not None}
    assert holders == {first.blocking_node: clashing(1).code}

    update = await engine.sync(clashing(2), target)
    assert update.error is not None and update.error.kind is ErrorKind.UNSAFE_LIBRARY
    assert {n.outcome for n in update.nodes} == {Outcome.FAILED, Outcome.SKIPPED}
    removal = await engine.delete(unique_name, target)
    assert removal.error is not None and removal.error.kind is ErrorKind.UNSAFE_LIBRARY
    assert all(server.is_running() for server in cluster.nodes)
    assert {a: c for a, c in codes_on(cluster.primaries(), unique_name).items() if c is not None} == holders


async def test_other_libraries_are_never_touched(cluster: rs.Cluster, unique_name: str) -> None:
    bystander = make_library(f"{unique_name}_by")
    assert (await engine.sync(bystander, target_of(cluster.nodes[0]))).ok
    assert (await engine.sync(make_library(unique_name), target_of(cluster.nodes[0]))).ok
    assert (await engine.delete(unique_name, target_of(cluster.nodes[0]))).ok
    assert set(codes_on(cluster.primaries(), bystander.name).values()) == {bystander.code}


async def test_library_name_match_is_exact(matrix_standalone: rs.RedisServer, unique_name: str) -> None:
    """LIBRARYNAME is a case-insensitive glob: a library `<NAME>` must not count as `<name>`."""
    upper = make_library(unique_name.upper(), functions=("u",))
    assert (await engine.sync(upper, target_of(matrix_standalone))).ok
    lower = make_library(unique_name, functions=("l",))
    result = await engine.sync(lower, target_of(matrix_standalone))
    assert result.ok and result.nodes[0].outcome is Outcome.LOADED
    await engine.delete(upper.name, target_of(matrix_standalone))


async def test_byte_exact_code_with_crlf_and_binary(matrix_standalone: rs.RedisServer, unique_name: str) -> None:
    code = f"#!lua name={unique_name}\r\n-- caf\xe9 \xff\r\nredis.register_function('{unique_name}_f', function() return 1 end)  \r\n"
    library = parse_library(code.encode("latin-1"))
    result = await engine.sync(library, target_of(matrix_standalone))
    assert result.ok
    assert matrix_standalone.function_libraries()[unique_name] == library.code
    assert (await engine.sync(library, target_of(matrix_standalone))).nodes[0].outcome is Outcome.UNCHANGED


# --- topology changes (private clusters: these tests break things) --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("flavor", rs.MATRIX)
async def test_zero_slot_primary_gets_the_library_and_serves_after_reshard(
    flavor: str, cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    newcomer = cluster.add_primary()
    library = make_library(unique_name, "return redis.call('GET', keys[1])")
    result = await engine.sync(library, target_of(cluster.nodes[0]))
    assert result.ok
    assert newcomer.address in {n.address for n in result.nodes}
    assert next(n for n in result.nodes if n.address == newcomer.address).node.slots == ""
    cluster.move_slots(range(0, 100), newcomer)
    key = next(f"k{i}" for i in range(10_000) if _slot(cluster, f"k{i}") < 100)
    client = cluster.cluster_client()
    client.set(key, "moved")
    assert client.fcall(f"{unique_name}_f", 1, key) == b"moved"


@pytest.mark.slow
@pytest.mark.parametrize("flavor", rs.FLAVORS)  # on every release through the operator: tests/e2e/test_living_redis.py
async def test_failover_then_sync_has_nothing_to_do(
    flavor: str, cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    library = make_library(unique_name)
    assert (await engine.sync(library, target_of(cluster.nodes[0]))).ok
    old_primary = cluster.primaries()[0]
    rs.wait_until(lambda: cluster.replica_of(old_primary).function_libraries().get(unique_name) == library.code)
    promoted = cluster.kill_primary_and_wait_promotion(old_primary)
    seed = next(n for n in cluster.nodes if n.is_running())
    result = await engine.sync(library, target_of(seed))
    assert result.ok
    assert promoted.address in {n.address for n in result.nodes}
    assert {n.outcome for n in result.nodes} == {Outcome.UNCHANGED}


@pytest.mark.slow
@pytest.mark.parametrize("flavor", rs.MATRIX)
async def test_primary_restarted_empty_is_repaired(
    flavor: str, cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    library = make_library(unique_name)
    assert (await engine.sync(library, target_of(cluster.nodes[0]))).ok
    victim = cluster.primaries()[1]
    # Its replica may not take over: a restart slower than cluster-node-timeout (2 s, a stalled machine) would
    # otherwise end in a failover instead of the empty primary this test is about.
    cluster.replica_of(victim).admin.config_set("cluster-replica-no-failover", "yes")
    victim.kill()
    victim.restart()  # before node-timeout: comes back as an empty primary (docs/redis-facts.md F3)
    cluster.wait_healthy()
    assert victim.role() == "master" and unique_name not in victim.function_libraries()
    result = await engine.sync(library, target_of(cluster.nodes[0]))
    assert result.ok
    outcomes = {n.address: n.outcome for n in result.nodes}
    assert outcomes[victim.address] is Outcome.REPAIRED
    assert list(outcomes.values()).count(Outcome.UNCHANGED) == 2


# --- standalone, replication, sentinel ------------------------------------------------------------------------------


async def test_replicated_pair_replica_seed_loads_the_primary(
    matrix_replicated: rs.Replicated, unique_name: str
) -> None:
    library = make_library(unique_name)
    result = await engine.sync(library, target_of(matrix_replicated.replica))
    assert result.ok
    assert [n.address for n in result.nodes] == [matrix_replicated.primary.address]
    assert result.topology is not None and result.topology.mode is Mode.STANDALONE
    rs.wait_until(lambda: matrix_replicated.replica.function_libraries().get(unique_name) == library.code)


async def test_several_standalone_seeds_are_several_deployments(
    redis_standalone: rs.RedisServer, valkey_standalone: rs.RedisServer, unique_name: str
) -> None:
    library = make_library(unique_name)
    result = await engine.sync(library, target_of(redis_standalone, valkey_standalone))
    assert result.ok and len(result.nodes) == 2
    assert codes_on([redis_standalone, valkey_standalone], unique_name) == {
        redis_standalone.address: library.code,
        valkey_standalone.address: library.code,
    }


@pytest.mark.slow
async def test_sentinel_finds_the_master_and_follows_failover(
    sentinel_factory: Callable[..., rs.Sentinel], unique_name: str
) -> None:
    setup = sentinel_factory("redis")
    sentinels = tuple(Endpoint(h, p) for h, p in setup.sentinel_addresses)
    target = Target(sentinels, Mode.SENTINEL, sentinel_master=setup.master_name)
    library = make_library(unique_name)
    first = await engine.sync(library, target)
    assert first.ok and [n.address for n in first.nodes] == [setup.primary.address]
    old = setup.primary.address
    setup.failover()
    v2 = make_library(unique_name, "return 'v2'")
    second = await engine.sync(v2, target)
    assert second.ok
    assert [n.address for n in second.nodes] == [setup.primary.address] != [old]


async def test_unreachable_target_is_transient(unique_name: str) -> None:
    result = await engine.sync(make_library(unique_name), Target((Endpoint("127.0.0.1", rs.free_port()),), timeout=1))
    assert not result.ok and not result.permanent
    assert result.error is not None and result.error.kind is ErrorKind.CONNECTION_FAILED


# --- auth and TLS ----------------------------------------------------------------------------------------------------


async def test_wrong_password_is_a_clear_permanent_error(
    server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    server = server_factory("redis", password="right-horse-battery")
    target = target_of(server, credentials=Credentials(None, "wrong-password"))
    result = await engine.sync(make_library(unique_name), target)
    assert result.permanent
    assert result.error is not None and result.error.kind is ErrorKind.AUTHENTICATION_FAILED
    assert "wrong-password" not in str(result) and "right-horse" not in str(result)
    ok = await engine.sync(
        make_library(unique_name), target_of(server, credentials=Credentials(None, "right-horse-battery"))
    )
    assert ok.ok


async def test_a_server_that_echoes_the_password_never_gets_it_into_a_result(
    server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    """With AUTH renamed away, Redis answers "unknown command 'AUTH', with args beginning with: '<password>'": the
    connector scrubs the password from every error, for a single call and for a pipelined load alike."""
    server = server_factory("redis", extra_config=['rename-command AUTH ""'])
    password = "Echoed-Horse-Battery-77"
    result = await engine.sync(make_library(unique_name), target_of(server, credentials=Credentials(None, password)))
    assert result.error is not None and "AUTH" in result.error.message
    assert password not in str(result) and "***" in result.error.message


async def test_acl_user_without_function_permission(
    server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    server = server_factory("redis", acl_users=["alice on >alice-pw ~* +@all -function"])
    target = target_of(server, credentials=Credentials("alice", "alice-pw"))
    result = await engine.sync(make_library(unique_name), target)
    assert result.permanent
    assert result.error is not None and result.error.kind is ErrorKind.PERMISSION_DENIED
    assert "function" in result.error.message


@pytest.mark.parametrize("flavor", rs.TLS_MATRIX)
async def test_tls_verified_with_the_test_ca_and_wrong_ca_refused(
    flavor: str, server_factory: Callable[..., rs.RedisServer], tls_files: rs.TlsFiles, unique_name: str
) -> None:
    server = server_factory(flavor, tls=tls_files)
    good = target_of(server, tls=TlsSettings(ca_file=str(tls_files.ca_cert)))
    assert (await engine.sync(make_library(unique_name), good)).ok
    bad = target_of(server, tls=TlsSettings(ca_file=str(tls_files.other_ca_cert)))
    result = await engine.sync(make_library(unique_name), bad)
    assert result.permanent
    assert result.error is not None and result.error.kind is ErrorKind.TLS_FAILED
    named = target_of(server, tls=TlsSettings(ca_data=tls_files.ca_cert.read_text(), server_name="localhost"))
    assert (await engine.sync(make_library(unique_name), named)).ok
    with_client_cert = target_of(
        server,
        tls=TlsSettings(
            ca_file=str(tls_files.ca_cert), cert_file=str(tls_files.client_cert), key_file=str(tls_files.client_key)
        ),
    )
    assert (await engine.sync(make_library(unique_name), with_client_cert)).ok


async def test_many_libraries_read_each_primary_once(matrix_cluster: rs.Cluster, unique_name: str) -> None:
    """From SHARED_LISTING_FROM libraries on, the first read is one FUNCTION LIST per primary, not one per library;
    a library the listing shows missing or different is still loaded, and read back in its load's round trip."""
    libraries = [make_library(f"{unique_name}_{i}") for i in range(engine.SHARED_LISTING_FROM)]
    target = target_of(matrix_cluster.nodes[0])
    before = {p.address: _calls(p, "function|list") for p in matrix_cluster.primaries()}
    first = await engine.sync_many(libraries, target)
    assert all(r.ok and {n.outcome for n in r.nodes} == {Outcome.LOADED} for r in first), first
    loads = {p.address: _calls(p, "function|list") - before[p.address] for p in matrix_cluster.primaries()}
    assert set(loads.values()) == {1 + len(libraries)}  # one listing, then each load's own read-back
    before = {p.address: _calls(p, "function|list") for p in matrix_cluster.primaries()}
    again = await engine.sync_many(libraries, target)
    assert all(r.ok and {n.outcome for n in r.nodes} == {Outcome.UNCHANGED} for r in again)
    assert {
        p.address: _calls(p, "function|list") - before[p.address] for p in matrix_cluster.primaries()
    } == dict.fromkeys(before, 1)


def _load_calls(server: rs.RedisServer) -> int:
    return _calls(server, "function|load")


def _calls(server: rs.RedisServer, command: str) -> int:
    entry = server.info("commandstats").get(f"cmdstat_{command}") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def _slot(cluster: rs.Cluster, key: str) -> int:
    return int(cluster.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key))
