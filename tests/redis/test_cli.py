"""The command-line tool as a user runs it: a real process, real servers, exit codes and what it prints.

A sync with status, drift and repair, dump and restore, and TLS run on every server of the matrix (``rs.MATRIX``,
``rs.TLS_MATRIX``): they are what a user does first against a new server release. Exit codes and wording for errors
the engine classifies run on one or two servers: the engine's own tests cover the errors on every release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support import redis_servers as rs

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "redis_functions_operator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )


def write_library(tmp_path: Path, name: str, body: str = "return 'v1'", fn: str = "f") -> Path:
    path = tmp_path / f"{name}.lua"
    path.write_text(f"#!lua name={name}\nredis.register_function('{name}_{fn}', function(keys, args) {body} end)\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("flavor", rs.MATRIX)
def test_sync_status_flush_repair_on_a_cluster_with_a_zero_slot_primary(
    flavor: str, cluster_factory: Callable[..., rs.Cluster], tmp_path: Path, unique_name: str
) -> None:
    cluster = cluster_factory(flavor)
    newcomer = cluster.add_primary()
    seed = cluster.replicas()[0]
    lib = write_library(tmp_path, unique_name)

    synced = cli("sync", "--redis", seed.url, str(lib))
    assert synced.returncode == 0, synced.stderr + synced.stdout
    assert "4/4 primaries verified" in synced.stdout
    assert newcomer.function_libraries()[unique_name] == lib.read_bytes()

    healthy = cli("status", "--redis", seed.url, unique_name)
    assert healthy.returncode == 0, healthy.stderr

    victim = cluster.primaries()[1]
    victim.client().execute_command("FUNCTION", "FLUSH")
    drift = cli("status", "--redis", seed.url, unique_name)
    assert drift.returncode == 1
    assert f"{victim.address}: library {unique_name} is missing" in drift.stderr

    against_file = cli("status", "--redis", seed.url, str(lib), "--output", "json")
    assert against_file.returncode == 1
    rows = json.loads(against_file.stdout)["nodes"]
    assert {r["node"]: r["state"] for r in rows}[victim.address] == "missing"

    repaired = cli("sync", "--redis", seed.url, str(lib), "--output", "json")
    assert repaired.returncode == 0
    outcomes = {n["address"]: n["outcome"] for n in json.loads(repaired.stdout)[0]["nodes"]}
    assert outcomes[victim.address] == "Repaired"
    assert cli("status", "--redis", seed.url, unique_name).returncode == 0


def test_compile_error_exits_3_with_redis_message_and_changes_nothing(
    redis_cluster: rs.Cluster, tmp_path: Path, unique_name: str
) -> None:
    good = write_library(tmp_path, unique_name)
    assert cli("sync", "--redis", redis_cluster.nodes[0].url, str(good)).returncode == 0
    bad = tmp_path / "bad.lua"
    bad.write_text(f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function()\n")
    result = cli("sync", "--redis", redis_cluster.nodes[0].url, str(bad))
    assert result.returncode == 3
    assert "Error compiling function: user_function:3:" in result.stdout
    assert {p.function_libraries()[unique_name] for p in redis_cluster.primaries()} == {good.read_bytes()}


def test_collision_on_one_primary_exits_3_naming_function_and_leaves_no_mixed_code(
    valkey_cluster: rs.Cluster, tmp_path: Path, unique_name: str
) -> None:
    url = valkey_cluster.nodes[0].url
    old = write_library(tmp_path, unique_name, "return 'old'")
    assert cli("sync", "--redis", url, str(old)).returncode == 0
    victim = sorted(valkey_cluster.primaries(), key=lambda s: s.port)[-1]
    victim.client().execute_command(
        "FUNCTION", "LOAD", f"#!lua name={unique_name}_sq\nredis.register_function('{unique_name}_g', function() end)"
    )
    try:
        new = tmp_path / "new.lua"
        new.write_text(
            f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function() return 'new' end)\n"
            f"redis.register_function('{unique_name}_g', function() return 'new' end)\n"
        )
        result = cli("sync", "--redis", url, str(new))
        assert result.returncode == 3
        assert f"Function {unique_name}_g already exists" in result.stdout
        assert f"owned by library '{unique_name}_sq'" in result.stdout
        assert victim.address in result.stdout
        assert {p.function_libraries()[unique_name] for p in valkey_cluster.primaries()} == {old.read_bytes()}
    finally:
        victim.client().execute_command("FUNCTION", "DELETE", f"{unique_name}_sq")


def test_unreachable_exits_4(tmp_path: Path, unique_name: str) -> None:
    lib = write_library(tmp_path, unique_name)
    result = cli("sync", "--redis", f"redis://127.0.0.1:{rs.free_port()}", "--timeout", "1", str(lib))
    assert result.returncode == 4
    assert "ConnectionFailed" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli("sync", "--redis", "redis://127.0.0.1:1", str(tmp_path / "missing.lua")).returncode == 2
    bad = tmp_path / "bad.lua"
    bad.write_text("#!lua name=my-lib\n")
    result = cli("sync", "--redis", "redis://127.0.0.1:1", str(bad))
    assert result.returncode == 2
    assert "Library names can only contain" in result.stderr
    assert cli("sync", "--redis", "http://x:1", str(bad)).returncode == 2
    assert cli().returncode == 2


def test_password_from_env_or_file_never_needed_on_argv(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path, unique_name: str
) -> None:
    server = server_factory("redis", password="s3cret-Horse")
    lib = write_library(tmp_path, unique_name)
    url = f"redis://127.0.0.1:{server.port}"
    assert cli("sync", "--redis", url, str(lib)).returncode == 3  # NOAUTH: permanent
    via_env = cli("sync", "--redis", url, str(lib), env={"REDISCLI_AUTH": "s3cret-Horse"})
    assert via_env.returncode == 0, via_env.stdout
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret-Horse\n")
    assert cli("status", "--redis", url, "--password-file", str(secret_file), unique_name).returncode == 0
    on_argv = cli("status", "--redis", f"redis://:s3cret-Horse@127.0.0.1:{server.port}", unique_name)
    assert on_argv.returncode == 0
    assert "visible to other users" in on_argv.stderr
    wrong = cli("sync", "--redis", url, str(lib), env={"REDISCLI_AUTH": "nope-wrong"})
    assert wrong.returncode == 3
    assert "nope-wrong" not in wrong.stdout + wrong.stderr
    assert "s3cret" not in wrong.stdout + wrong.stderr


def test_delete_and_export_round_trip(redis_cluster: rs.Cluster, tmp_path: Path, unique_name: str) -> None:
    url = redis_cluster.nodes[0].url
    lib = write_library(tmp_path, unique_name, "return 'exported'  ")
    assert cli("sync", "--redis", url, str(lib)).returncode == 0
    exported = cli("export", "--redis", url, "--namespace", "apps", unique_name)
    assert exported.returncode == 0, exported.stderr
    docs = list(yaml.safe_load_all(exported.stdout))
    assert len(docs) == 1
    doc = docs[0]
    assert doc["kind"] == "RedisFunctionLibrary"
    assert doc["metadata"] == {"name": unique_name.replace("_", "-"), "namespace": "apps"}
    assert doc["spec"]["code"].encode() == lib.read_bytes()
    assert doc["spec"]["libraryName"] == unique_name
    removed = cli("delete", "--redis", url, unique_name)
    assert removed.returncode == 0
    assert all(unique_name not in p.function_libraries() for p in redis_cluster.primaries())
    assert cli("delete", "--redis", url, unique_name).returncode == 0  # "Library not found" counts as done


def test_export_observe_writes_objects_that_only_watch(
    redis_standalone: rs.RedisServer, tmp_path: Path, unique_name: str
) -> None:
    lib = write_library(tmp_path, unique_name, "return 'adopted'")
    assert cli("sync", "--redis", redis_standalone.url, str(lib)).returncode == 0
    try:
        plain = yaml.safe_load(cli("export", "--redis", redis_standalone.url, unique_name).stdout)
        assert "managementPolicy" not in plain["spec"]  # the operator's default: Full
        exported = cli("export", "--redis", redis_standalone.url, "--observe", unique_name)
        assert exported.returncode == 0, exported.stderr
        [doc] = list(yaml.safe_load_all(exported.stdout))
        assert doc["spec"]["managementPolicy"] == "Observe"
        assert doc["spec"]["deletionPolicy"] == "Retain"
        assert doc["spec"]["code"].encode() == lib.read_bytes()
    finally:
        assert cli("delete", "--redis", redis_standalone.url, unique_name).returncode == 0


@pytest.mark.parametrize(
    ("source", "destination"),
    [pytest.param(s, d, id=f"{s}-to-{d}") for s, d in [("redis", "valkey"), *((r, r) for r in rs.BUILT)]],
)
def test_dump_and_restore_to_every_primary(
    source: str,
    destination: str,
    server_factory: Callable[..., rs.RedisServer],
    cluster_factory: Callable[..., rs.Cluster],
    tmp_path: Path,
    unique_name: str,
) -> None:
    """From Redis 7.0 to Valkey 9 (a migration across engines), and within each built release (FUNCTION DUMP's
    payload carries the release's RDB version, so each one writes and reads its own)."""
    server = server_factory(source)
    lib = write_library(tmp_path, unique_name)
    assert cli("sync", "--redis", server.url, str(lib)).returncode == 0
    dump_file = tmp_path / "functions.rdb"
    dumped = cli("dump", "--redis", server.url, str(dump_file))
    assert dumped.returncode == 0, dumped.stderr
    cluster = cluster_factory(destination)
    restored = cli("restore", "--redis", cluster.nodes[0].url, str(dump_file), "--policy", "replace")
    assert restored.returncode == 0, restored.stdout
    assert {p.function_libraries().get(unique_name) for p in cluster.primaries()} == {lib.read_bytes()}
    again = cli("restore", "--redis", cluster.nodes[0].url, str(dump_file))  # append: the library already exists
    assert again.returncode == 3
    assert "already exists" in again.stdout


@pytest.mark.parametrize("flavor", rs.TLS_MATRIX)
def test_tls_verified_with_the_given_ca_and_a_wrong_ca_refused(
    flavor: str,
    cluster_factory: Callable[..., rs.Cluster],
    tls_files: rs.TlsFiles,
    tmp_path: Path,
    unique_name: str,
) -> None:
    """``rediss://`` with ``--cacert`` on a TLS-only cluster (``tls-cluster yes``, ``port 0``): discovery must find
    every primary by the TLS port CLUSTER SHARDS reports, and a server certificate from another CA is refused (exit
    3, nothing loaded). Three primaries, no replicas: what differs over TLS is finding and reaching the primaries."""
    cluster = cluster_factory(flavor, replicas_per_primary=0, tls=tls_files)
    seed = cluster.nodes[0].url
    assert seed.startswith("rediss://")
    lib = write_library(tmp_path, unique_name)
    refused = cli("sync", "--redis", seed, "--cacert", str(tls_files.other_ca_cert), str(lib))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "TLSHandshakeFailed" in refused.stdout
    assert {p.function_libraries().get(unique_name) for p in cluster.primaries()} == {None}
    synced = cli("sync", "--redis", seed, "--cacert", str(tls_files.ca_cert), str(lib))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "3/3 primaries verified" in synced.stdout
    assert {p.function_libraries().get(unique_name) for p in cluster.primaries()} == {lib.read_bytes()}
    client_cert = ("--cert", str(tls_files.client_cert), "--key", str(tls_files.client_key))
    status = cli("status", "--redis", seed, "--cacert", str(tls_files.ca_cert), *client_cert, unique_name)
    assert status.returncode == 0, status.stdout + status.stderr


def test_sync_a_directory(redis_standalone: rs.RedisServer, tmp_path: Path, unique_name: str) -> None:
    for i in range(3):
        write_library(tmp_path, f"{unique_name}_{i}")
    result = cli("sync", "--redis", redis_standalone.url, str(tmp_path), "--output", "json")
    assert result.returncode == 0
    assert sorted(r["library"] for r in json.loads(result.stdout)) == [f"{unique_name}_{i}" for i in range(3)]


def test_libraries_that_crash_servers_are_refused_before_any_load(
    redis_standalone: rs.RedisServer, tmp_path: Path, unique_name: str
) -> None:
    case_twins = tmp_path / "twins.lua"
    case_twins.write_text(
        f"#!lua name={unique_name}\nredis.register_function('{unique_name}_a', function() return 1 end)\n"
        f"redis.register_function('{unique_name.upper()}_A', function() return 2 end)\n"
    )
    top_level_log = tmp_path / "log.lua"
    top_level_log.write_text(
        f"#!lua name={unique_name}\nredis.log(redis.LOG_NOTICE, 'loading')\n"
        f"redis.register_function('{unique_name}_b', function() return 1 end)\n"
    )
    for path in (case_twins, top_level_log):
        result = cli("sync", "--redis", redis_standalone.url, str(path))
        assert result.returncode == 2
        assert "refused, loading it can crash the server" in result.stderr
        assert "Valkey 9.1.2 aborts" in result.stderr or "differs only in case" in result.stderr
    assert unique_name not in redis_standalone.function_libraries()
    assert redis_standalone.is_running()


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ("while true do end", "runaway.lua:2: ", "more than 10,000,000 Lua instructions"),
        ("local t = {} for i = 1, 1e9 do t[i] = i end", "runaway.lua: ", "allocated more than"),  # no line: Lua's
        ("local function f(n) return 1 + f(n) end f(1)", "runaway.lua: ", "recurses deeper than Lua allows"),  # own
        ("local s = ('a'):rep(60):match(('a*'):rep(30) .. 'b')", "runaway.lua:2: ", "pattern match"),
    ],
)
def test_runaway_loads_are_refused_without_touching_the_server(
    redis_standalone: rs.RedisServer, tmp_path: Path, unique_name: str, body: str, where: str, says: str
) -> None:
    path = tmp_path / "runaway.lua"
    path.write_text(f"#!lua name={unique_name}\n{body}\nredis.register_function('{unique_name}_f', function() end)\n")
    loads = _load_calls(redis_standalone)
    result = cli("sync", "--redis", redis_standalone.url, str(path))
    assert result.returncode == 2
    assert f"{where}refused, the vet could not tell what loading it does" in result.stderr
    assert says in result.stderr
    assert _load_calls(redis_standalone) == loads


def _load_calls(server: rs.RedisServer) -> int:
    entry = server.info("commandstats").get("cmdstat_function|load") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def test_sync_the_shipped_lua_directory_on_a_cluster(cluster_factory: Callable[..., rs.Cluster]) -> None:
    cluster = cluster_factory("valkey")
    result = cli("sync", "--redis", cluster.replicas()[0].url, str(REPO / "lua"))
    assert result.returncode == 0, result.stdout
    for primary in cluster.primaries():
        assert {
            name: primary.function_libraries()[name] for name in ("mylib", "flags", "ratelimiter", "cart", "sessions")
        } == {p.stem: p.read_bytes() for p in (REPO / "lua").glob("*.lua")}
