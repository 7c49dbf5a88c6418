"""apply → Ready latency of the operator on a 3-primary/3-replica Redis cluster (a benchmark: prints figures).

A real kube-apiserver + etcd, a real cluster and the operator process, as in the e2e tests. Each sample creates one
RedisFunctionLibrary through the API and stops the clock when a watch event shows ``Ready=True`` for that
generation, so no polling interval is added to the figure. Objects are created one after another (not
concurrently): this is the latency a user waiting on ``kubectl wait`` sees.

    .venv/bin/python bench/apply_to_ready.py [--samples 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, config, watch  # noqa: E402

from tests.support import redis_servers as rs  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.operator_process import OperatorProcess, operator_env  # noqa: E402

GROUP, VERSION, PLURAL = "redisfunctions.dev", "v1alpha1", "redisfunctionlibraries"


def library(name: str) -> str:
    return f"#!lua name={name}\nredis.register_function('{name}_f', function(keys, args) return 1 end)\n"


def ready(obj: dict[str, Any]) -> bool:
    generation = obj["metadata"].get("generation")
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return bool(condition.get("observedGeneration") == generation)
    return False


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rfo-bench-apply-"))
    with ControlPlane() as cp:
        cluster = rs.start_cluster("redis", base_dir=work / "redis")
        operator = OperatorProcess(operator_env(cp.env()), work / "operator.log", args=("--namespace", "bench"))
        try:
            cp.install_crds()
            cp.kubectl("create", "namespace", "bench")
            operator.start()
            config.load_kube_config(str(cp.kubeconfig))
            api = client.CustomObjectsApi()
            seen: dict[str, float] = {}
            done = threading.Event()

            def follow() -> None:
                stream = watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, "bench", PLURAL)
                try:
                    for event in stream:
                        obj = event["object"]
                        name = obj["metadata"]["name"]
                        if name not in seen and ready(obj):
                            seen[name] = time.perf_counter()
                        if done.is_set():
                            return
                except Exception:
                    if not done.is_set():
                        raise

            threading.Thread(target=follow, daemon=True).start()
            time.sleep(1.0)  # let the watch start before the first sample
            latencies: list[float] = []
            endpoints = [n.address for n in cluster.nodes[:2]]
            for i in range(args.samples + 3):  # 3 warm-up samples, not counted
                name = f"lib{i:03d}"
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "RedisFunctionLibrary",
                    "metadata": {"name": name},
                    "spec": {"code": library(name), "target": {"endpoints": endpoints}},
                }
                started = time.perf_counter()
                api.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, body)
                deadline = started + 30
                while name not in seen and time.perf_counter() < deadline:
                    time.sleep(0.002)
                if name not in seen:
                    print(f"{name} not Ready after 30 s", file=sys.stderr)
                    return 1
                if i >= 3:
                    latencies.append(seen[name] - started)
            done.set()
            ms = [v * 1000 for v in latencies]
            print(f"apply -> Ready, 3 primaries, {len(ms)} sequential creates (redis 7.0 cluster, operator process):")
            print(
                f"  median {statistics.median(ms):.0f} ms   p95 {percentile(ms, 0.95):.0f} ms   "
                f"min {min(ms):.0f} ms   max {max(ms):.0f} ms"
            )
            print(
                f"  goals: median <= 300 ms, p95 <= 1000 ms -> "
                f"{'met' if statistics.median(ms) <= 300 and percentile(ms, 0.95) <= 1000 else 'MISSED'}"
            )
        finally:
            operator.stop()
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
