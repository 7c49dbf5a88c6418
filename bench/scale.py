"""1000 RedisFunctionLibrary objects on one 3-primary/3-replica Redis cluster (a benchmark: prints figures).

(``--primaries 24 --libraries 100``: the wide-cluster shape of issue 16, where connections per primary count.)

1. The objects are created first (server-side apply, operator not running), then the operator starts: time from
   its start to every object Ready.
2. Idle: operator RSS, CPU (% of one core) and Redis commands per second over a window at the default
   resyncInterval (60 s) — the window should cover a whole resync period to count the resyncs.
3. Repair with all 1000 on the target: FUNCTION FLUSH on one primary → every library back there; a new primary
   joined with CLUSTER MEET (0 slots) → every library on it (timed from the MEET, so the cluster's gossip and the
   watcher's next poll, up to 2 s, are included). ``--repeats`` rounds, medians reported; each round adds a primary.
4. Connections: the operator's connections on every node at rest (CLIENT LIST), and one library's code patched →
   the new code on every primary (from the start of ``kubectl patch``).

    .venv/bin/python bench/scale.py [--libraries 1000] [--idle-window 70] [--repeats 5] [--listing-burst 0] [--auth]
        [--primaries 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

import yaml  # noqa: E402

from redis_functions_operator.redis.replies import pairs  # noqa: E402
from tests.support import redis_servers as rs  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.operator_process import OperatorProcess, operator_env  # noqa: E402

NAMESPACE = "scale"


def commands(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("redis_functions_operator_redis_commands_total{"))


def reconciles(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("redis_functions_operator_reconciles_total"))


def operator_connections(server: rs.RedisServer) -> int:
    """Connections on ``server`` other than the harness' own admin client (which has lib-name redis-py too, so it
    is told apart by its client id) and other than replicas' replication links (flag ``S``)."""
    own = int(server.admin.execute_command("CLIENT", "ID"))
    listing = server.admin.execute_command("CLIENT", "LIST").decode()
    clients = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in listing.splitlines()]
    return sum(1 for c in clients if int(c.get("id", own)) != own and "S" not in c.get("flags", ""))


def code_on(server: rs.RedisServer, name: str) -> bytes | None:
    return server.function_libraries().get(name)


def libraries_on(server: rs.RedisServer) -> int:
    stats = pairs(server.admin.execute_command("FUNCTION", "STATS"))
    return int(pairs(pairs(stats.get("engines")).get("LUA")).get("libraries_count") or 0)


def ready_count(cp: ControlPlane, namespace: str = NAMESPACE) -> int:
    """Objects Ready for their current generation."""
    out = cp.kubectl("get", "rfl", "-n", namespace, "-o", "json").stdout
    count = 0
    for obj in json.loads(out)["items"]:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if (
                c["type"] == "Ready"
                and c["status"] == "True"
                and c.get("observedGeneration") == obj["metadata"]["generation"]
            ):
                count += 1
    return count


def idle_figures(operator: OperatorProcess, window: float) -> dict[str, float]:
    """After 5 s of settling, the operator's CPU (% of one core, from its own counter), Redis commands per second
    and RSS over ``window`` seconds."""
    time.sleep(5)
    before, t0 = operator.metrics(), time.perf_counter()
    time.sleep(window)
    after, t1 = operator.metrics(), time.perf_counter()
    cpu = after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]
    return {
        "idle_cpu_percent_of_core": round(100 * cpu / (t1 - t0), 2),
        "idle_redis_commands_per_s": round((commands(after) - commands(before)) / (t1 - t0), 1),
        "rss_mb": round(after["process_resident_memory_bytes"] / 2**20, 1),
    }


def wait(predicate, timeout: float, what: str, step: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"timed out after {timeout}s: {what}")
        time.sleep(step)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--libraries", type=int, default=1000)
    parser.add_argument("--idle-window", type=float, default=70.0, help="0: skip the idle measurements")
    parser.add_argument("--repeats", type=int, default=1, help="flush + new primary rounds (each adds a primary)")
    parser.add_argument("--auth", action="store_true", help="a password on every node, read from one Secret")
    parser.add_argument("--primaries", type=int, default=3, help="cluster primaries (each with one replica)")
    parser.add_argument(
        "--listing-burst", type=int, default=None, help="passed to the operator (0: no shared listings, the 'before')"
    )
    args = parser.parse_args()
    n = args.libraries
    work = Path(tempfile.mkdtemp(prefix="rfo-bench-scale-"))
    results: dict[str, object] = {"libraries": n}
    with ControlPlane() as cp:
        password = "bench-Scale-Pass-1" if args.auth else None
        cluster = rs.start_cluster("redis", args.primaries, base_dir=work / "redis", password=password)
        extra = () if args.listing_burst is None else ("--listing-burst", str(args.listing_burst))
        operator = OperatorProcess(
            operator_env(cp.env()), work / "operator.log", args=("--namespace", NAMESPACE, *extra)
        )
        try:
            cp.install_crds()
            cp.kubectl("create", "namespace", NAMESPACE)
            seeds = [node.address for node in cluster.nodes[:2]]
            docs = [
                {
                    "apiVersion": "redisfunctions.dev/v1alpha1",
                    "kind": "RedisFunctionLibrary",
                    "metadata": {"name": f"lib{i:04d}", "namespace": NAMESPACE},
                    "spec": {
                        "code": f"#!lua name=lib{i:04d}\nredis.register_function('lib{i:04d}_f', function() end)\n",
                        "target": {
                            "endpoints": seeds,
                            **({"auth": {"secretRef": {"name": "auth"}}} if password else {}),
                        },
                    },
                }
                for i in range(n)
            ]
            if password:
                cp.kubectl(
                    "create", "secret", "generic", "auth", "-n", NAMESPACE, f"--from-literal=password={password}"
                )
            for chunk in range(0, n, 250):
                cp.apply_yaml(yaml.safe_dump_all(docs[chunk : chunk + 250]), server_side=True)
            started = time.perf_counter()
            operator.start()
            took = wait(lambda: ready_count(cp) == n, 600, f"{n} objects Ready")
            results["start_to_all_ready_s"] = round(time.perf_counter() - started, 1)
            print(f"operator start -> {n} Ready: {results['start_to_all_ready_s']} s (last check {took:.1f} s)")

            if args.idle_window > 0:
                idle = idle_figures(operator, args.idle_window)
                results.update(idle)
                print(f"idle over {args.idle_window:.0f} s: {json.dumps(idle)}")
            at_rest = Counter(operator_connections(node) for node in cluster.primaries())
            results["connections_per_primary_at_rest"] = {str(k): v for k, v in sorted(at_rest.items())}
            new_code = "#!lua name=lib0000\nredis.register_function('lib0000_f', function() return 2 end)\n"
            patched = time.perf_counter()
            cp.kubectl(
                "patch",
                "rfl",
                "lib0000",
                "-n",
                NAMESPACE,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"code": new_code}}),
            )
            kubectl_s = time.perf_counter() - patched
            wait(
                lambda: all(code_on(node, "lib0000") == new_code.encode() for node in cluster.primaries()),
                60,
                "the patched code on every primary",
                step=0.01,
            )
            results["patch_to_every_primary_s"] = round(time.perf_counter() - patched, 3)
            results["patch_kubectl_s"] = round(kubectl_s, 3)
            print(
                f"connections per primary at rest: {results['connections_per_primary_at_rest']}; one library "
                f"patched -> on all {len(cluster.primaries())} primaries in {results['patch_to_every_primary_s']} s "
                f"({results['patch_kubectl_s']} s of it kubectl)"
            )

            flushes: list[float] = []
            joins: list[float] = []
            for _ in range(args.repeats):
                victim = cluster.primaries()[0]
                victim.admin.execute_command("FUNCTION", "FLUSH")
                flushes.append(round(wait(lambda: libraries_on(victim) == n, 120, "flush repaired"), 2))  # noqa: B023
                print(f"FUNCTION FLUSH with {n} libraries repaired in {flushes[-1]} s")
                reconciles_before = reconciles(operator.metrics())
                newcomer = cluster.add_primary(wait_healthy=False)
                joined = time.perf_counter()
                wait(lambda: libraries_on(newcomer) == n, 120, "new primary filled")  # noqa: B023
                joins.append(round(time.perf_counter() - joined, 2))
                done = reconciles(operator.metrics()) - reconciles_before
                print(f"new primary got {n} libraries in {joins[-1]} s ({done:.0f} reconciles)")
            if flushes:
                results["repair_after_flush_s"] = statistics.median(flushes)
                results["new_primary_filled_s"] = statistics.median(joins)
                results["repair_after_flush_all_s"] = flushes
                results["new_primary_filled_all_s"] = joins
            final = operator.metrics()
            for source in ("watch", "api"):
                key = f'redis_functions_operator_reference_reads_total{{kind="Secret",source="{source}"}}'
                results[f"secret_reads_{source}"] = final.get(key, 0.0)
            results["rss_mb_after_repairs"] = round(operator.metrics()["process_resident_memory_bytes"] / 2**20, 1)
            print(f"operator RSS after both repairs: {results['rss_mb_after_repairs']} MB")
        finally:
            operator.stop()
            for node in cluster.nodes:
                node.stop()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
