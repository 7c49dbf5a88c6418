"""The operator end to end: a real kube-apiserver, real Redis/Valkey, the operator as a process, driven with kubectl and
checked the way a user checks (kubectl wait / get / events, FUNCTION LIST on every node, FCALL)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import make_namespace
from tests.e2e.helpers import Libraries, library_code
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane
from tests.support.operator_process import OperatorProcess, operator_env

pytestmark = pytest.mark.usefixtures("operator")

LUA = Path(__file__).resolve().parents[2] / "lua"


def codes(servers: list[rs.RedisServer], name: str) -> set[bytes | None]:
    return {s.function_libraries().get(name) for s in servers}


def test_create_becomes_ready_and_every_primary_holds_the_exact_code(
    rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str
) -> None:
    code = library_code(unique_name)
    started = time.monotonic()
    rfl.apply("lib", [redis_cluster.replicas()[0].address], code=code, version="1.0.0")
    obj = rfl.wait_ready("lib")
    print(f"\napply -> Ready: {time.monotonic() - started:.2f}s")
    assert codes(redis_cluster.primaries(), unique_name) == {code.encode()}
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["readyPrimaries"] == "3/3"
    assert status["libraryName"] == unique_name
    assert status["version"] == "1.0.0"
    assert [f["name"] for f in status["functions"]] == [f"{unique_name}_f"]
    primaries = [n for n in status["nodes"] if n["role"] == "primary"]
    assert {n["address"] for n in primaries} == {p.address for p in redis_cluster.primaries()}
    assert all(n["state"] == "Verified" and n["codeSha256"] == status["codeSha256"] for n in primaries)
    assert len([n for n in status["nodes"] if n["role"] == "replica"]) == 3
    table = rfl.kubectl("get", "rfl", "lib").stdout.split("\n")
    assert table[0].split() == ["NAME", "LIBRARY", "VERSION", "READY", "PRIMARIES", "REASON", "AGE"]
    assert table[1].split()[:6] == ["lib", unique_name, "1.0.0", "True", "3/3", "Verified"]
    loaded = rfl.wait_event("lib", "Loaded")
    assert "1.0.0" in loaded["message"] and loaded["type"] == "Normal"
    ready = rfl.condition("lib", "Ready")
    assert ready is not None and ready["observedGeneration"] == obj["metadata"]["generation"]
    assert "finalizers" in obj["metadata"] and "redisfunctions.dev/cleanup" in obj["metadata"]["finalizers"]


def test_update_rolls_out_new_code_and_observes_the_generation(
    rfl: Libraries, valkey_cluster: rs.Cluster, unique_name: str
) -> None:
    endpoints = [valkey_cluster.nodes[0].address]
    rfl.apply("lib", endpoints, code=library_code(unique_name, "return 'v1'"), version="1")
    rfl.wait_ready("lib")
    v2 = library_code(unique_name, "return 'v2'")
    rfl.apply("lib", endpoints, code=v2, version="2")
    obj = rfl.wait_for("lib", lambda o: o["status"].get("version") == "2" and o["status"]["observedGeneration"] == 2)
    rfl.wait_ready("lib")
    assert obj["metadata"]["generation"] == 2
    assert codes(valkey_cluster.primaries(), unique_name) == {v2.encode()}
    assert valkey_cluster.cluster_client().fcall(f"{unique_name}_f", 0) == b"v2"
    assert "updated" in rfl.wait_event("lib", "Updated")["message"]


@pytest.mark.parametrize("library", ["mylib", "flags", "ratelimiter", "cart", "sessions"])
def test_each_seed_library_is_deployed_and_callable(
    rfl: Libraries, control_plane: ControlPlane, cluster_factory: Callable[..., rs.Cluster], library: str
) -> None:
    # The seed libraries have fixed function names (global per server), so each gets a private standalone server.
    server = rs.start_server("redis")
    try:
        rfl.apply(library, [server.address], code=(LUA / f"{library}.lua").read_text(), version="1.0.0")
        rfl.wait_ready(library)
        assert server.function_libraries()[library] == (LUA / f"{library}.lua").read_bytes()
        client = server.client(protocol=2)
        calls = {
            "mylib": lambda: client.fcall_ro("hello", 0, "Kube") == b"Hello, Kube!",
            "flags": lambda: client.fcall_ro("calculate", 0, "1.5", "2.25") == b"3.75",
            "ratelimiter": lambda: client.fcall("check_rate_limit", 1, "rl:{t}", "5", "1") == [1, 4],
            "cart": lambda: client.fcall("cart_clear", 1, "cart:{s}:u") == 0,
            "sessions": lambda: client.fcall_ro("session_peek", 1, "session:{u}:x") is None,
        }
        assert calls[library]()
    finally:
        server.stop()


def test_compile_error_stalls_with_the_lua_line_and_previous_version_keeps_serving(
    rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str
) -> None:
    endpoints = [redis_cluster.nodes[0].address]
    good = library_code(unique_name)
    rfl.apply("lib", endpoints, code=good)
    rfl.wait_ready("lib")
    broken = f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function()\n"
    rfl.apply("lib", endpoints, code=broken)
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="CompileError")
    assert "user_function:3:" in stalled["message"]
    ready = rfl.condition("lib", "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "CompileError"
    reconciling = rfl.condition("lib", "Reconciling")
    assert reconciling is not None and reconciling["status"] == "False"
    assert codes(redis_cluster.primaries(), unique_name) == {good.encode()}
    assert redis_cluster.cluster_client().fcall(f"{unique_name}_f", 0) == b"v1"
    assert rfl.wait_event("lib", "CompileError")["type"] == "Warning"


def test_function_collision_on_one_node_stalls_without_mixed_code(
    rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str
) -> None:
    endpoints = [redis_cluster.nodes[0].address]
    old = library_code(unique_name, functions=("a",))
    rfl.apply("lib", endpoints, code=old)
    rfl.wait_ready("lib")
    victim = sorted(redis_cluster.primaries(), key=lambda s: s.port)[-1]
    squatter = f"{unique_name}_sq"
    victim.client().execute_command(
        "FUNCTION", "LOAD", f"#!lua name={squatter}\nredis.register_function('{unique_name}_b', function() end)"
    )
    try:
        rfl.apply("lib", endpoints, code=library_code(unique_name, "return 2", functions=("a", "b")))
        stalled = rfl.wait_condition("lib", "Stalled", "True", reason="FunctionNameConflict")
        assert f"Function {unique_name}_b already exists" in stalled["message"]
        assert squatter in stalled["message"] and victim.address in stalled["message"]
        assert codes(redis_cluster.primaries(), unique_name) == {old.encode()}
    finally:
        victim.client().execute_command("FUNCTION", "DELETE", squatter)
    # The other library is gone: a nudge makes it converge (the resync would too, later).
    rfl.annotate("lib", reconcile_requested_at="after-squatter-left")
    rfl.wait_ready("lib")


def test_missing_secret_stalls_then_ready_when_it_appears_and_wrong_password_stalls(
    rfl: Libraries, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    server = server_factory("redis", password="e2e-Pass-Word-7")
    auth = {"auth": {"secretRef": {"name": "redis-auth", "passwordKey": "password"}}}
    rfl.apply("lib", [server.address], code=library_code(unique_name), target=auth)
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="SecretNotFound")
    assert "Secret 'redis-auth' not found" in stalled["message"]

    rfl.kubectl("create", "secret", "generic", "redis-auth", "--from-literal=password=not-the-password")
    wrong = rfl.wait_condition("lib", "Stalled", "True", reason="AuthenticationFailed")
    assert "not-the-password" not in json.dumps(rfl.get("lib"))

    patch = {"data": {"password": base64.b64encode(b"e2e-Pass-Word-7").decode()}}
    rfl.kubectl("patch", "secret", "redis-auth", "-p", json.dumps(patch))
    rfl.wait_ready("lib")  # no edit to the library object: the Secret change woke it
    assert server.function_libraries()[unique_name]
    dumped = json.dumps(rfl.get("lib")) + json.dumps(rfl.events("lib"))
    assert "e2e-Pass-Word-7" not in dumped
    assert wrong["reason"] == "AuthenticationFailed"


def test_pause_unmanaged_and_reconcile_requested_at(
    rfl: Libraries, redis_standalone: rs.RedisServer, unique_name: str
) -> None:
    endpoints = [redis_standalone.address]
    v1 = library_code(unique_name, "return 'v1'")
    rfl.apply("lib", endpoints, code=v1)
    rfl.wait_ready("lib")

    rfl.annotate("lib", pause_reconciliation="true")
    paused = rfl.wait_condition("lib", "ReconciliationPaused", "True", reason="Paused")
    assert paused
    rfl.apply("lib", endpoints, code=library_code(unique_name, "return 'v2'"), annotations={
        "redisfunctions.dev/pause-reconciliation": "true"})  # fmt: skip
    obj = rfl.wait_for("lib", lambda o: o["status"]["observedGeneration"] == o["metadata"]["generation"] == 2)
    assert redis_standalone.function_libraries()[unique_name] == v1.encode()  # nothing touched while paused
    assert "Ready" not in {c["type"] for c in obj["status"]["conditions"]}
    assert "redisfunctions.dev/cleanup" not in obj["metadata"].get("finalizers", [])

    rfl.kubectl("annotate", "rfl", "lib", "redisfunctions.dev/pause-reconciliation-")
    rfl.wait_condition("lib", "Ready", "True")
    assert redis_standalone.function_libraries()[unique_name] == library_code(unique_name, "return 'v2'").encode()

    redis_standalone.client().execute_command("FUNCTION", "DELETE", unique_name)
    rfl.annotate("lib", reconcile_requested_at="2026-11-29T12:00:00Z")
    rfl.wait_for("lib", lambda o: o["status"].get("lastHandledReconcileAt") == "2026-11-29T12:00:00Z")
    assert unique_name in redis_standalone.function_libraries()  # reconciled now, not at the next resync

    rfl.annotate("lib", managed="false")
    rfl.wait_condition("lib", "ReconciliationPaused", "True", reason="Unmanaged")
    rfl.wait_for("lib", lambda o: "redisfunctions.dev/cleanup" not in o["metadata"].get("finalizers", []))
    assert rfl.delete("lib").returncode == 0
    assert unique_name in redis_standalone.function_libraries()  # detached: deleting left it in Redis
    redis_standalone.client().execute_command("FUNCTION", "DELETE", unique_name)


def test_delete_policies(rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str) -> None:
    endpoints = [redis_cluster.nodes[0].address]
    rfl.apply("gone", endpoints, code=library_code(f"{unique_name}_d"))
    rfl.apply("kept", endpoints, code=library_code(f"{unique_name}_r"), deletionPolicy="Retain")
    rfl.wait_ready("gone")
    kept = rfl.wait_ready("kept")
    assert "redisfunctions.dev/cleanup" not in kept["metadata"].get("finalizers", [])
    assert rfl.delete("gone").returncode == 0
    assert codes(redis_cluster.primaries(), f"{unique_name}_d") == {None}
    assert rfl.wait_event("gone", "Deleted")
    assert rfl.delete("kept").returncode == 0
    assert None not in codes(redis_cluster.primaries(), f"{unique_name}_r")
    for primary in redis_cluster.primaries():
        primary.client().execute_command("FUNCTION", "DELETE", f"{unique_name}_r")


def test_delete_with_target_down_is_bounded_and_can_be_released_by_retain(
    rfl: Libraries, server_factory: Callable[..., rs.RedisServer], unique_name: str
) -> None:
    first, second = server_factory("redis"), server_factory("redis")
    rfl.apply("bounded", [first.address], code=library_code(f"{unique_name}_a"))
    rfl.apply("released", [second.address], code=library_code(f"{unique_name}_b"))
    rfl.wait_ready("bounded")
    rfl.wait_ready("released")
    first.stop()
    second.stop()

    started = time.monotonic()
    rfl.delete("bounded", wait=False)
    rfl.delete("released", wait=False)
    rfl.wait_event("released", "DeleteFailed")
    rfl.patch_spec("released", {"deletionPolicy": "Retain"})
    _wait_gone(rfl, "released", timeout=20)
    _wait_gone(rfl, "bounded", timeout=60)  # the operator runs with --deletion-timeout 15
    elapsed = time.monotonic() - started
    print(f"\ndelete with the target down released after {elapsed:.1f}s")
    assert elapsed >= 10
    reasons = {e["reason"] for e in rfl.events("bounded")}
    assert {"DeleteFailed", "DeleteTimedOut"} <= reasons


def test_flush_on_one_primary_is_repaired_by_the_resync_timer(
    rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str
) -> None:
    code = library_code(unique_name)
    rfl.apply("lib", [redis_cluster.nodes[0].address], code=code, resyncInterval="5s")
    rfl.wait_ready("lib")
    victim = redis_cluster.primaries()[1]
    victim.client().execute_command("FUNCTION", "DELETE", unique_name)
    started = time.monotonic()
    event = rfl.wait_event("lib", "DriftRepaired", timeout=20)
    print(f"\ndrift repaired by the resync timer after {time.monotonic() - started:.1f}s")
    assert victim.address in event["message"]
    assert victim.function_libraries()[unique_name] == code.encode()


def test_operator_restart_resumes_without_reloading_what_is_right(
    control_plane: ControlPlane,
    crd_installed: None,
    namespace: str,
    cluster_factory: Callable[..., rs.Cluster],
    tmp_path: Path,
    unique_name: str,
) -> None:
    # A private cluster; the restarted operator is a second, namespace-scoped process (the session operator also
    # watches this namespace, which is harmless: nothing it does reloads correct code either).
    cluster = cluster_factory("redis")
    libs = Libraries(control_plane, namespace)
    env = operator_env(control_plane.env())
    log = tmp_path / "operator.log"
    for i in range(3):
        libs.apply(f"lib{i}", [cluster.nodes[0].address], code=library_code(f"{unique_name}_{i}"))
    for i in range(3):
        libs.wait_ready(f"lib{i}")
    loads_before = {p.address: _load_calls(p) for p in cluster.primaries()}
    victim = cluster.primaries()[0]
    victim.client().execute_command("FUNCTION", "DELETE", f"{unique_name}_1")
    with OperatorProcess(env, log, args=("--namespace", namespace)):
        libs.wait_for("lib1", lambda o: victim.function_libraries().get(f"{unique_name}_1") is not None, timeout=20)
    loads_after = {p.address: _load_calls(p) for p in cluster.primaries()}
    assert loads_after[victim.address] >= loads_before[victim.address] + 1
    for primary in cluster.primaries():
        if primary.address != victim.address:
            assert loads_after[primary.address] == loads_before[primary.address], "reloaded something already right"


def _wait_gone(rfl: Libraries, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rfl.exists(name):
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} still exists after {timeout}s: {json.dumps(rfl.get(name)['metadata'])}")


def _load_calls(server: rs.RedisServer) -> int:
    entry = server.info("commandstats").get("cmdstat_function|load") or {}
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def test_library_that_can_crash_a_server_is_refused_before_loading(
    rfl: Libraries, valkey_standalone: rs.RedisServer, unique_name: str
) -> None:
    code = (
        f"#!lua name={unique_name}\nredis.log(redis.LOG_NOTICE, 'hello from load time')\n"
        f"redis.register_function('{unique_name}_f', function() return 1 end)\n"
    )
    rfl.apply("lib", [valkey_standalone.address], code=code)
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="UnsafeLibrary")
    assert "line 2" in stalled["message"]
    assert unique_name not in valkey_standalone.function_libraries()
    assert valkey_standalone.is_running()


def test_a_library_a_server_would_fail_is_refused_on_that_server_before_loading(
    rfl: Libraries, redis_cluster: rs.Cluster, unique_name: str
) -> None:
    """A function that calls server.call (Valkey only) on a Redis 7.0.15 cluster: Stalled UnsupportedOnServer, naming
    a node, its version and the line, and no primary gets it; the portable spelling then becomes Ready."""
    endpoints = [redis_cluster.nodes[0].address]
    valkey_only = (
        f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function()\n"
        "  return server.call('PING')\nend)\n"
    )
    rfl.apply("lib", endpoints, code=valkey_only)
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="UnsupportedOnServer")
    assert "(Redis 7.0.15): line 3: the global 'server' exists on Valkey only" in stalled["message"]
    assert any(stalled["message"].endswith(f" on {p.address}") for p in redis_cluster.primaries())
    assert codes(redis_cluster.primaries(), unique_name) == {None}
    assert rfl.wait_event("lib", "UnsupportedOnServer")["type"] == "Warning"
    rfl.apply("lib", endpoints, code=valkey_only.replace("server.call", "redis.call"))
    rfl.wait_ready("lib")


def test_code_that_crashes_primaries_is_stopped_after_the_second_one(
    rfl: Libraries, cluster_factory: Callable[..., rs.Cluster], unique_name: str
) -> None:
    """A canary lost during FUNCTION LOAD is retried once (a node killed at that moment looks the same), and a second
    loss stops the code for good. Here the code really crashes Valkey 9.1.2 (a top-level redis.log the lint was told
    to let through): two of three primaries go down, never the third."""
    cluster = cluster_factory("valkey", primaries=3, replicas_per_primary=0)
    code = (
        f"#!lua name={unique_name}\n-- lint-ignore: top-level-log\nredis.log(redis.LOG_NOTICE, 'loading')\n"
        f"redis.register_function('{unique_name}_f', function() return 1 end)\n"
    )
    rfl.apply("lib", [n.address for n in cluster.nodes], code=code, deletionPolicy="Retain")
    stalled = rfl.wait_condition("lib", "Stalled", "True", reason="NodeLostDuringLoad", timeout=30)
    dead = [n.address for n in cluster.nodes if not n.is_running()]
    alive = [n for n in cluster.nodes if n.is_running()]
    assert len(dead) == 2 and len(alive) == 1, (dead, stalled["message"])
    assert all(address in stalled["message"] for address in dead) and "and then" in stalled["message"]
    assert unique_name not in alive[0].function_libraries()


@dataclass
class Private:
    """A namespace nobody else watches, and operators started on it alone: their counters are the test's own."""

    libs: Libraries
    namespace: str
    env: dict[str, str]
    logs: Path

    def operator(self, log: str = "operator.log") -> OperatorProcess:
        return OperatorProcess(self.env, self.logs / log, args=("--namespace", self.namespace))


@pytest.fixture
def private(
    control_plane: ControlPlane, crd_installed: None, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Private]:
    for namespace in make_namespace(control_plane, request, "private"):
        yield Private(Libraries(control_plane, namespace), namespace, operator_env(control_plane.env()), tmp_path)


def test_metrics_move_with_library_states(private: Private, redis_standalone: rs.RedisServer, unique_name: str) -> None:
    libs = private.libs
    stalled_key = 'redis_functions_operator_libraries{state="stalled"}'
    ready_key = 'redis_functions_operator_libraries{state="ready"}'
    with private.operator() as operator:
        before = operator.metrics()
        assert before[stalled_key] == before[ready_key] == 0
        broken = f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function()\n"
        libs.apply("lib", [redis_standalone.address], code=broken)
        libs.wait_condition("lib", "Stalled", "True", reason="CompileError")
        stalled = operator.metrics()
        assert stalled[stalled_key] == 1
        assert stalled[ready_key] == 0
        assert stalled['redis_functions_operator_reconciles_total{outcome="permanent"}'] >= 1
        libs.apply("lib", [redis_standalone.address], code=library_code(unique_name))
        libs.wait_ready("lib")
        fixed = operator.metrics()
        assert fixed[stalled_key] == 0
        assert fixed[ready_key] == 1
        assert fixed['redis_functions_operator_redis_commands_total{command="FUNCTION LOAD",result="ok"}'] >= 1
        assert any(k.startswith("redis_functions_operator_redis_command_duration_seconds_bucket") for k in fixed)
        assert fixed["redis_functions_operator_watched_targets"] == 1
        assert "process_resident_memory_bytes" in fixed
        assert libs.delete("lib").returncode == 0
    assert unique_name not in redis_standalone.function_libraries()


def test_zz_logs_events_and_status_never_hold_secrets_or_code(
    operator: OperatorProcess, control_plane: ControlPlane
) -> None:
    """Runs last in this module: everything the session operator did so far is in its log."""
    log = operator.log_text()
    assert "Verified" in log or "loaded on" in log  # the log is not empty: the earlier tests ran through it
    for secret in ("e2e-Pass-Word-7", "not-the-password", control_plane.token):
        assert secret not in log
    assert "redis.register_function(" not in log  # no Lua code bodies
    events = control_plane.kubectl("get", "events", "-A", "-o", "json").stdout
    statuses = control_plane.kubectl("get", "rfl", "-A", "-o", "json").stdout
    for secret in ("e2e-Pass-Word-7", "not-the-password", control_plane.token):
        assert secret not in events
        assert secret not in json.dumps([o.get("status") for o in json.loads(statuses)["items"]])


def test_references_are_read_from_the_watch_not_fetched_on_every_reconcile(
    private: Private, redis_standalone: rs.RedisServer, unique_name: str
) -> None:
    """A ConfigMap edit and forced reconciles are served from the watch's copy: no GET after the first reads, and
    the edited code still goes out. (A private operator, so the counters are this test's alone.)"""
    libs = private.libs
    api = 'redis_functions_operator_reference_reads_total{kind="ConfigMap",source="api"}'
    watch = 'redis_functions_operator_reference_reads_total{kind="ConfigMap",source="watch"}'
    v1, v2 = library_code(unique_name, "return 'cm1'"), library_code(unique_name, "return 'cm2'")
    libs.kubectl("create", "configmap", "code", f"--from-literal=lib.lua={v1}")
    with private.operator() as operator:
        code_from = {"configMapKeyRef": {"name": "code", "key": "lib.lua"}}
        libs.apply("lib", [redis_standalone.address], codeFrom=code_from, libraryName=unique_name)
        libs.wait_ready("lib")
        first = operator.metrics()
        libs.kubectl("patch", "configmap", "code", "--type=merge", "-p", json.dumps({"data": {"lib.lua": v2}}))
        rs.wait_until(
            lambda: redis_standalone.function_libraries().get(unique_name) == v2.encode(),
            timeout=10,
            message="the edited code on the server",
        )
        for attempt in range(3):
            stamp = f"2026-11-29T00:00:0{attempt}Z"
            libs.kubectl("annotate", "rfl", "lib", f"redisfunctions.dev/reconcile-requested-at={stamp}", "--overwrite")
            # Handled before the next one: requests arriving while a reconcile runs are served by one more run, so
            # three quick ones could be two reconciles, and two reads.
            libs.wait_for(
                "lib", lambda o, s=stamp: o["status"].get("lastHandledReconcileAt") == s, 10, f"{stamp} handled"
            )
        rs.wait_until(
            lambda: operator.metrics()[watch] >= first.get(watch, 0) + 4,
            timeout=10,
            message="the edit and three forced reconciles to read the ConfigMap",
        )
        after = operator.metrics()
    assert first[api] <= 1  # at most the very first read, before the watch delivered the ConfigMap
    assert after[api] == first[api], "a reconcile fetched the ConfigMap instead of using the watch's copy"


def test_two_spellings_of_one_redis_keep_the_elder_code_through_an_operator_restart(
    private: Private, redis_standalone: rs.RedisServer, unique_name: str
) -> None:
    """Right after a start every object is queued at once, and which spelling's lookup finishes first is luck; the
    younger object must still never put its code on the server, not even for a moment. (The younger one is named to
    be listed, so queued, first, and spells the address the quicker way: localhost tries ::1 first.)"""
    libs = private.libs
    elder_code, younger_code = library_code(unique_name, "return 'elder'"), library_code(unique_name, "return 'young'")
    port = redis_standalone.port
    with private.operator("first.log"):
        libs.apply("zz-elder", [f"localhost:{port}"], code=elder_code)
        created = libs.get("zz-elder")["metadata"]["creationTimestamp"]
        # creationTimestamp has whole seconds, and a tie goes to the name: let the younger be younger for sure
        rs.wait_until(
            lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > created, timeout=3, message="the next second"
        )
        libs.wait_ready("zz-elder")
        libs.apply("aa-younger", [f"127.0.0.1:{port}"], code=younger_code)
        libs.wait_condition("aa-younger", "Stalled", "True", reason="ResourceConflict")

    seen: set[bytes | None] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.add(redis_standalone.function_libraries().get(unique_name))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with private.operator("second.log") as operator:

            def both_handled() -> bool:
                values = operator.metrics()
                verified = values.get('redis_functions_operator_reconciles_total{outcome="verified"}', 0)
                permanent = values.get('redis_functions_operator_reconciles_total{outcome="permanent"}', 0)
                return verified >= 1 and permanent >= 1

            rs.wait_until(both_handled, timeout=15, message="the restarted operator to handle both objects")
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert seen == {elder_code.encode()}, "the younger object's code reached the server during the restart"
    assert libs.get("aa-younger")["status"]["conditions"]
