"""``diff`` and ``sync --dry-run``: what a sync would change, per library and per primary, read without a single
write (the servers' own command counters are the witness)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.redis.test_cli import cli, write_library
from tests.support import redis_servers as rs

#: Commands a read-only plan must never send.
WRITES = ("function|load", "function|delete", "function|flush", "function|restore", "fcall", "set", "del")


def writes(servers: Iterable[rs.RedisServer]) -> dict[str, int]:
    counts = {}
    for server in servers:
        stats = server.info("commandstats")
        for command in WRITES:
            entry = stats.get(f"cmdstat_{command}") or {}
            counts[f"{server.address} {command}"] = int(entry.get("calls", 0)) if isinstance(entry, dict) else 0
    return counts


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_diff_and_dry_run_say_what_would_change_and_write_nothing(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path, unique_name: str, flavor: str
) -> None:
    server = server_factory(flavor)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    loaded = write_library(tmp_path / "v1", unique_name)
    assert cli("sync", "--redis", server.url, str(loaded)).returncode == 0

    same = cli("diff", "--redis", server.url, str(loaded))
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"{unique_name} ({loaded}, sha256 " in same.stdout and ": no change" in same.stdout

    changed = tmp_path / "v2" / f"{unique_name}.lua"
    changed.write_text(
        f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function(keys, args) return 'v2' end)\n"
        f"redis.register_function{{function_name='{unique_name}_g', callback=function() return 1 end, "
        "flags={'no-writes'}}\n"
    )
    write_library(tmp_path / "v2", f"{unique_name}_new")
    before = writes([server])
    for command in (("diff",), ("sync", "--dry-run")):
        result = cli(*command, "--redis", server.url, str(tmp_path / "v2"))
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{server.address:<22} different: +{unique_name}_g" in result.stdout
        assert f"{server.address:<22} missing: +{unique_name}_new_f" in result.stdout
        assert f"-redis.register_function('{unique_name}_f', function(keys, args) return 'v1' end)" in result.stdout
        assert f"+redis.register_function('{unique_name}_f', function(keys, args) return 'v2' end)" in result.stdout
        assert f"--- {server.address} (loaded)" in result.stdout and f"+++ {changed}" in result.stdout
    assert writes([server]) == before
    assert server.function_libraries()[unique_name] == loaded.read_bytes()
    assert f"{unique_name}_new" not in server.function_libraries()

    as_json = json.loads(cli("diff", "--redis", server.url, str(changed), "--output", "json").stdout)
    (node,) = as_json["libraries"][0]["nodes"]
    assert (node["change"], node["functions"]["added"], node["functions"]["removed"]) == (
        "different",
        [f"{unique_name}_g"],
        [],
    )

    thief = tmp_path / "thief.lua"  # another library that registers a function the loaded one owns
    thief.write_text(
        f"#!lua name={unique_name}_thief\nredis.register_function('{unique_name.upper()}_F', function() end)\n"
    )
    conflict = cli("diff", "--redis", server.url, str(thief))
    assert conflict.returncode == 3, conflict.stdout + conflict.stderr
    assert (
        f"owned by another library: a sync would fail ({unique_name.upper()}_F belongs to library"
        not in conflict.stdout
    )
    assert f"a sync would fail ({unique_name}_f belongs to library {unique_name})" in conflict.stdout
    assert writes([server]) == before


def test_diff_reads_every_primary_of_a_cluster(
    cluster_factory: Callable[..., rs.Cluster], tmp_path: Path, unique_name: str
) -> None:
    cluster = cluster_factory("redis", primaries=3, replicas_per_primary=0)
    library = write_library(tmp_path, unique_name)
    assert cli("sync", "--redis", cluster.nodes[0].url, str(library)).returncode == 0
    victim = cluster.primaries()[1]
    victim.client().execute_command("FUNCTION", "FLUSH")
    before = writes(cluster.primaries())
    result = cli("diff", "--redis", cluster.nodes[0].url, str(library))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of 3 primaries would change" in result.stdout
    assert f"{victim.address:<22} missing: +{unique_name}_f" in result.stdout
    assert sum(f"{p.address:<22} same" in result.stdout for p in cluster.primaries()) == 2
    assert writes(cluster.primaries()) == before
