"""Repair time after FUNCTION FLUSH, and the Redis command rate of an idle operator, against the number of libraries.

For each size (default 1, 10, 100 libraries on one 3-primary/3-replica Redis cluster, operator process, default
resyncInterval 60 s):

* idle rate: Redis commands per second the operator sends while nothing changes, read from its own
  ``redis_functions_operator_redis_commands_total`` over a window (default 30 s) after everything is Ready;
* repair: FUNCTION FLUSH on one primary, then the time until that primary holds every library again (polled with
  FUNCTION STATS every 20 ms); median over 10 flushes.

    .venv/bin/python bench/repair_and_idle.py [--sizes 1,10,100] [--flushes 10] [--idle-window 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

import yaml  # noqa: E402

from redis_functions_operator.redis.replies import pairs  # noqa: E402
from tests.support import redis_servers as rs  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.operator_process import OperatorProcess, operator_env  # noqa: E402


def commands_sent(operator: OperatorProcess) -> float:
    values = operator.metrics()
    return sum(v for k, v in values.items() if k.startswith("redis_functions_operator_redis_commands_total{"))


def libraries_on(server: rs.RedisServer) -> int:
    stats = pairs(server.admin.execute_command("FUNCTION", "STATS"))
    lua = pairs(pairs(stats.get("engines")).get("LUA"))
    return int(lua.get("libraries_count") or 0)


def run_size(cp: ControlPlane, size: int, flushes: int, window: float, work: Path) -> dict[str, float]:
    namespace = f"bench-{size}"
    cp.kubectl("create", "namespace", namespace)
    cluster = rs.start_cluster("redis", base_dir=work / f"redis-{size}")
    operator = OperatorProcess(operator_env(cp.env()), work / f"operator-{size}.log", args=("--namespace", namespace))
    try:
        operator.start()
        seeds = [n.address for n in cluster.nodes[:2]]
        docs = [
            {
                "apiVersion": "redisfunctions.dev/v1alpha1",
                "kind": "RedisFunctionLibrary",
                "metadata": {"name": f"lib{i:04d}", "namespace": namespace},
                "spec": {
                    "code": f"#!lua name=lib{i:04d}\nredis.register_function('lib{i:04d}_f', function() end)\n",
                    "target": {"endpoints": seeds},
                },
            }
            for i in range(size)
        ]
        cp.apply_yaml(yaml.safe_dump_all(docs), server_side=True)
        cp.kubectl("wait", "-n", namespace, "--for=condition=Ready", "rfl", "--all", "--timeout=300s")
        time.sleep(3)  # let the creation burst's last status writes settle before measuring "idle"
        first = commands_sent(operator)
        time.sleep(window)
        idle_rate = (commands_sent(operator) - first) / window
        victim = cluster.primaries()[0]
        repairs = []
        for _ in range(flushes):
            assert libraries_on(victim) == size
            victim.admin.execute_command("FUNCTION", "FLUSH")
            started = time.perf_counter()
            while libraries_on(victim) < size:
                if time.perf_counter() - started > 60:
                    raise RuntimeError(f"not repaired after 60 s ({libraries_on(victim)}/{size})")
                time.sleep(0.02)
            repairs.append(time.perf_counter() - started)
            time.sleep(1.0)
        return {
            "libraries": size,
            "idle_commands_per_s": round(idle_rate, 2),
            "repair_median_s": round(statistics.median(repairs), 2),
            "repair_max_s": round(max(repairs), 2),
        }
    finally:
        operator.stop()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--flushes", type=int, default=10)
    parser.add_argument("--idle-window", type=float, default=30.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rfo-bench-repair-"))
    rows = []
    with ControlPlane() as cp:
        cp.install_crds()
        for size in (int(s) for s in args.sizes.split(",")):
            row = run_size(cp, size, args.flushes, args.idle_window, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| libraries | idle Redis commands/s | repair after FUNCTION FLUSH, median | max |")
    print("|---|---|---|---|")
    for row in rows:
        cells = [
            row["libraries"],
            row["idle_commands_per_s"],
            f"{row['repair_median_s']} s",
            f"{row['repair_max_s']} s",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
