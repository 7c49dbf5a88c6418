"""Dumps across servers (issue 15 item 3, last part): the CLI's dump file records the engine and version it came
from and each library's code; ``restore`` refuses, before touching any primary, a payload format the target cannot
read or a library the target would fail, and points to the source-based path.

Measured on the matrix before writing the rules (``docs/lua-sandbox.md``, "Dumps across servers"): Redis 7.4+
writes format 12, which Valkey 7.2/8.0 (11) and Valkey 9 (80) refuse with "DUMP payload version or checksum are
wrong"; Valkey 8.0's 11 restores into Redis 7.4 and Valkey 9, and then a Valkey-only function fails when called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from redis_functions_operator.redis.dump import DUMP_FILE_MAGIC
from tests.redis.test_cli import cli
from tests.support import redis_servers as rs

pytestmark = [pytest.mark.redis]

PORTABLE = "#!lua name=portable\nredis.register_function('portable_f', function() return 1 end)\n"
VALKEY_ONLY = "#!lua name=vk\nredis.register_function('vk_f', function()\n  return server.call('PING')\nend)\n"


def loaded(server: rs.RedisServer, *codes: str) -> rs.RedisServer:
    for code in codes:
        server.admin.execute_command("FUNCTION", "LOAD", code)
    return server


def restores(server: rs.RedisServer) -> int:
    entry = server.info("commandstats").get("cmdstat_function|restore") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def test_a_dump_records_where_it_came_from_and_restores_on_a_cluster(
    server_factory: Callable[..., rs.RedisServer], cluster_factory: Callable[..., rs.Cluster], tmp_path: Path
) -> None:
    source = loaded(server_factory("redis"), PORTABLE)
    path = tmp_path / "functions.dump"
    taken = cli("dump", "--redis", source.url, str(path))
    assert taken.returncode == 0, taken.stderr
    assert "dumped 1 libraries" in taken.stderr and "(Redis 7.0.15)" in taken.stderr and "format 10" in taken.stderr
    data = path.read_bytes()
    assert data.startswith(DUMP_FILE_MAGIC)
    record = json.loads(data[len(DUMP_FILE_MAGIC) : data.index(b"\n", len(DUMP_FILE_MAGIC))])
    assert (record["engine"], record["version"], record["format"]) == ("redis", "7.0.15", 10)
    assert [entry["name"] for entry in record["libraries"]] == ["portable"]
    cluster = cluster_factory("redis")
    restored = cli("restore", "--redis", cluster.nodes[0].url, str(path))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert {p.function_libraries().get("portable") for p in cluster.primaries()} == {PORTABLE.encode()}


def test_a_format_the_target_cannot_read_is_refused_on_every_primary(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path
) -> None:
    source = loaded(server_factory("redis-7.4.1"), PORTABLE)
    path = tmp_path / "from-redis-7.4.dump"
    assert cli("dump", "--redis", source.url, str(path)).returncode == 0
    older_valkey, newer_valkey = server_factory("valkey-8.0.1"), server_factory("valkey")
    for target in (older_valkey, newer_valkey):
        out = cli("restore", "--redis", target.url, str(path))
        assert out.returncode == 3, out.stdout + out.stderr
        assert "UnsupportedOnServer" in out.stdout and "the dump is in format 12 (written by Redis 7.4.1)" in out.stdout
        assert "export" in out.stdout
        assert restores(target) == 0 and target.function_libraries() == {}


def test_code_the_target_would_fail_is_refused_and_the_same_dump_restores_where_it_runs(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path
) -> None:
    source = loaded(server_factory("valkey-8.0.1"), PORTABLE, VALKEY_ONLY)
    path = tmp_path / "from-valkey-8.0.dump"
    assert cli("dump", "--redis", source.url, str(path)).returncode == 0
    redis_74 = server_factory("redis-7.4.1")  # reads format 11: only the code can tell
    out = cli("restore", "--redis", redis_74.url, str(path))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "library 'vk' (written by Valkey 8.0.1), line 3: the global 'server' exists on Valkey only" in out.stdout
    assert restores(redis_74) == 0 and redis_74.function_libraries() == {}
    valkey_9 = server_factory("valkey")
    assert cli("restore", "--redis", valkey_9.url, str(path)).returncode == 0
    assert set(valkey_9.function_libraries()) == {"portable", "vk"}


def test_a_bare_payload_is_still_restored_with_its_format_checked(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path
) -> None:
    """A file holding only FUNCTION DUMP's bytes (written before the records, or by redis-cli --no-raw): restored
    with a note that its code cannot be vetted; a format the target cannot read is still refused."""
    source = loaded(server_factory("redis-7.2.6"), PORTABLE)
    bare = tmp_path / "bare.dump"
    bare.write_bytes(source.admin.execute_command("FUNCTION", "DUMP"))
    target = server_factory("valkey")
    out = cli("restore", "--redis", target.url, str(bare))
    assert out.returncode == 0 and "bare FUNCTION DUMP payload" in out.stderr, out.stdout + out.stderr
    assert set(target.function_libraries()) == {"portable"}
    too_old = server_factory("redis")  # writes format 10; the payload is 11
    out = cli("restore", "--redis", too_old.url, str(bare))
    assert out.returncode == 3 and "format 11" in out.stdout and restores(too_old) == 0
