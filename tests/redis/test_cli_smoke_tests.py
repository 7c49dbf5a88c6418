"""``sync --test FILE`` as a user runs it: a real process against real servers. Passing tests are printed and the
library spreads (exit 0); a failing test names the test, the expected and the actual reply, puts the canary back and
exits 3 (permanent, README's exit-code table); a bad test file is a usage error (exit 2) before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import redis
import yaml

from tests.redis.test_cli import cli
from tests.support import redis_servers as rs


def write_library(tmp_path: Path, name: str, version: str) -> Path:
    path = tmp_path / f"{name}.lua"
    path.write_text(
        f"#!lua name={name}\n"
        f"redis.register_function{{function_name='{name}_version', callback=function() return '{version}' end, "
        "flags={'no-writes'}}\n"
        f"redis.register_function('{name}_count', function(keys) return redis.call('INCR', keys[1]) end)\n"
    )
    return path


def write_tests(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_passing_tests_are_printed_and_the_library_spreads(
    cluster: rs.Cluster, tmp_path: Path, unique_name: str
) -> None:
    lib = write_library(tmp_path, unique_name, "v1")
    prefix = f"rfo-test:{unique_name}:"
    tests = write_tests(
        tmp_path,
        {
            "testKeyPrefix": prefix,
            "tests": [
                {"name": "version", "function": f"{unique_name}_version", "expect": {"reply": "v1"}},
                {"name": "count", "function": f"{unique_name}_count", "keys": [prefix + "{canary}"],
                 "readOnly": False, "expect": {"reply": 1}},
            ],
        },
    )  # fmt: skip
    synced = cli("sync", "--redis", cluster.nodes[0].url, str(lib), "--test", str(tests))
    assert synced.returncode == 0, synced.stderr + synced.stdout
    assert "smoke test version on " in synced.stdout and ": passed" in synced.stdout
    assert synced.stdout.count(": passed") == 2
    assert {p.function_libraries().get(unique_name) for p in cluster.primaries()} == {lib.read_bytes()}
    assert all(not list(p.client().scan_iter(match=prefix + "*")) for p in cluster.primaries())  # keys deleted


def test_a_failing_test_exits_3_names_it_and_changes_nothing(
    standalone: rs.RedisServer, tmp_path: Path, unique_name: str
) -> None:
    v1 = write_library(tmp_path, unique_name, "v1")
    assert cli("sync", "--redis", standalone.url, str(v1)).returncode == 0
    (tmp_path / "v2").mkdir()
    v2 = write_library(tmp_path / "v2", unique_name, "v2")
    tests = write_tests(
        tmp_path, [{"name": "version", "function": f"{unique_name}_version", "expect": {"reply": "v1"}}]
    )
    failed = cli("sync", "--redis", standalone.url, str(v2), "--test", str(tests), "--output", "json")
    assert failed.returncode == 3, failed.stderr + failed.stdout
    (result,) = json.loads(failed.stdout)
    assert result["error"]["reason"] == "SmokeTestFailed"
    assert result["error"]["message"] == (
        f'smoke test \'version\' (FCALL_RO {unique_name}_version): expected reply "v1", got "v2"'
    )
    assert result["tests"] == [{"name": "version", "node": standalone.address, "passed": False, "reply": '"v2"'}]
    assert [n["outcome"] for n in result["nodes"]] == ["RolledBack"]
    assert standalone.function_libraries()[unique_name] == v1.read_bytes()

    table = cli("sync", "--redis", standalone.url, str(v2), "--test", str(tests))
    assert table.returncode == 3
    assert f"error on {standalone.address}: SmokeTestFailed: smoke test 'version'" in table.stdout


def test_bad_test_files_are_usage_errors_before_anything_is_sent(
    standalone: rs.RedisServer, tmp_path: Path, unique_name: str
) -> None:
    lib = write_library(tmp_path, unique_name, "v1")
    writing = [{"name": "w", "function": "f", "keys": ["user:1"], "readOnly": False, "expect": {"reply": 1}}]
    cases = {
        "writing-without-prefix": (writing, "needs a test key prefix"),
        "two-expectations": (
            [{"name": "x", "function": "f", "expect": {"reply": 1, "type": "integer"}}],
            "exactly one",
        ),
        "not-a-list": ({"tests": "nope"}, "must be a list"),
    }
    for case, (content, words) in cases.items():
        tests = write_tests(tmp_path, content)
        proc = cli("sync", "--redis", standalone.url, str(lib), "--test", str(tests))
        assert proc.returncode == 2, (case, proc.stderr)
        assert words in proc.stderr, (case, proc.stderr)
    outside = cli("sync", "--redis", standalone.url, str(lib), "--test", str(write_tests(tmp_path, writing)),
                  "--test-key-prefix", "rfo:")  # fmt: skip
    assert outside.returncode == 2 and "every key must start with 'rfo:'" in outside.stderr
    assert unique_name not in standalone.function_libraries()


def test_a_test_that_cannot_run_exits_4_and_keeps_the_code_on_the_canary(
    server_factory: Callable[..., rs.RedisServer], tmp_path: Path, unique_name: str
) -> None:
    """A test whose function outlasts the client's deadline (the server answers nobody meanwhile, until
    busy-reply-threshold): a timeout, transient (exit 4), never a rollback. The deadline (1 s, and its one retry's)
    also bounds the connect, FUNCTION LIST and LOAD before the test, which a loaded machine may stall for 0.3 s or
    more; busy-reply-threshold stays well past both attempts, so the test meets a timeout, not BUSY."""
    server = server_factory("redis", extra_config={"busy-reply-threshold": 5000})
    lib = tmp_path / f"{unique_name}.lua"
    lib.write_text(
        f"#!lua name={unique_name}\n"
        f"redis.register_function{{function_name='{unique_name}_spin', callback=function() while true do end end, "
        "flags={'no-writes'}}\n"
    )
    tests = write_tests(tmp_path, [{"name": "spin", "function": f"{unique_name}_spin", "expect": {"type": "nil"}}])
    try:
        proc = cli("sync", "--redis", server.url, "--timeout", "1", str(lib), "--test", str(tests))
    finally:
        rs.wait_until(lambda: _killed(server), message="FUNCTION KILL did not stop the spinning function")
    assert proc.returncode == 4, proc.stderr + proc.stdout
    assert "Timeout: smoke test 'spin'" in proc.stdout and "could not run" in proc.stdout
    assert server.function_libraries()[unique_name] == lib.read_bytes()


def _killed(server: rs.RedisServer) -> bool:
    try:
        server.client().execute_command("FUNCTION", "KILL")
    except redis.exceptions.ResponseError as exc:
        if not str(exc).startswith(("NOTBUSY", "BUSY")):
            raise
        return str(exc).startswith("NOTBUSY")
    return False
