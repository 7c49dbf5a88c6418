"""Many small Redis targets on one operator (issue 16's shape: one small Redis per team, a few libraries each).

N standalone servers (``--hz 1``, as idle platform servers are) and ``--per-target`` libraries on each:

1. the objects are created first, then the operator starts: time from its start to every object Ready;
2. idle: the operator's CPU (% of one core, from its own process_cpu_seconds_total), RSS and Redis commands per
   second over ``--idle-window`` seconds; connections per server from each server's CLIENT LIST (the operator's
   connections carry redis-py's lib-name);
3. repair: FUNCTION FLUSH on one target, then on ``--burst`` targets at once → every library back (median and max).

    .venv/bin/python bench/many_targets.py [--targets 500] [--per-target 2] [--idle-window 60] [--burst 20]
        [--resync 24h]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

import yaml  # noqa: E402
from scale import idle_figures, libraries_on, operator_connections, ready_count, wait  # noqa: E402  (the 1000-library benchmark's helpers)

from tests.support import redis_servers as rs  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.operator_process import OperatorProcess, operator_env  # noqa: E402

NAMESPACE = "fleet"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--per-target", type=int, default=2)
    parser.add_argument("--idle-window", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=20, help="targets flushed at once")
    parser.add_argument("--rounds", type=int, default=5, help="single-target flush rounds")
    parser.add_argument("--resync", default=None, help="spec.resyncInterval of every object (default: the CRD's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rfo-bench-fleet-"))
    n, per = args.targets, args.per_target
    results: dict[str, object] = {"targets": n, "libraries": n * per}
    servers: list[rs.RedisServer] = []
    with ControlPlane() as cp:
        operator = OperatorProcess(operator_env(cp.env()), work / "operator.log", args=("--namespace", NAMESPACE))
        try:
            print(f"starting {n} standalone servers (--hz 1)…", flush=True)
            with ThreadPoolExecutor(8) as pool:
                servers = list(
                    pool.map(
                        lambda i: rs.start_server("redis", extra_config={"hz": 1}, base_dir=work / "redis"), range(n)
                    )
                )
            cp.install_crds()
            cp.kubectl("create", "namespace", NAMESPACE)
            docs = [
                {
                    "apiVersion": "redisfunctions.dev/v1alpha1",
                    "kind": "RedisFunctionLibrary",
                    "metadata": {"name": f"t{t:04d}-lib{j}", "namespace": NAMESPACE},
                    "spec": {
                        "code": f"#!lua name=lib{j}\nredis.register_function('lib{j}_f', function() return {t} end)\n",
                        "target": {"endpoints": [server.address]},
                        **({"resyncInterval": args.resync} if args.resync else {}),
                    },
                }
                for t, server in enumerate(servers)
                for j in range(per)
            ]
            for chunk in range(0, len(docs), 250):
                cp.apply_yaml(yaml.safe_dump_all(docs[chunk : chunk + 250]), server_side=True)
            started = time.perf_counter()
            operator.start()
            wait(lambda: ready_count(cp, NAMESPACE) == len(docs), 600, f"{len(docs)} objects Ready", step=0.5)
            results["start_to_all_ready_s"] = round(time.perf_counter() - started, 1)
            print(f"operator start -> {len(docs)} Ready: {results['start_to_all_ready_s']} s", flush=True)

            results.update(idle_figures(operator, args.idle_window))
            per_server = Counter(operator_connections(s) for s in servers)
            results["connections_per_server"] = {str(k): v for k, v in sorted(per_server.items())}
            idle = ("idle_cpu_percent_of_core", "idle_redis_commands_per_s", "rss_mb", "connections_per_server")
            print(f"idle over {args.idle_window:.0f} s: {json.dumps({k: results[k] for k in idle})}", flush=True)

            singles = []
            for victim in servers[: args.rounds]:
                victim.admin.execute_command("FUNCTION", "FLUSH")
                singles.append(round(wait(lambda: libraries_on(victim) == per, 60, "flush repaired"), 2))  # noqa: B023
            results["repair_after_flush_s"] = {"median": statistics.median(singles), "max": max(singles)}
            burst = servers[args.rounds : args.rounds + args.burst]
            for victim in burst:
                victim.admin.execute_command("FUNCTION", "FLUSH")
            flushed = time.perf_counter()
            repaired: list[float] = []
            pending = list(burst)
            while pending:
                if time.perf_counter() - flushed > 60:
                    raise RuntimeError(f"{len(pending)} flushed targets not repaired in 60 s")
                for victim in list(pending):
                    if libraries_on(victim) == per:
                        repaired.append(round(time.perf_counter() - flushed, 2))
                        pending.remove(victim)
                time.sleep(0.05)
            results[f"repair_after_flush_of_{len(burst)}_s"] = {
                "median": statistics.median(repaired),
                "max": max(repaired),
            }
            print(f"repair: {json.dumps({k: v for k, v in results.items() if k.startswith('repair')})}", flush=True)
            results["connections_after_repairs"] = {
                str(k): v for k, v in sorted(Counter(operator_connections(s) for s in servers).items())
            }
        finally:
            operator.stop()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda s: s.stop(), servers))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
