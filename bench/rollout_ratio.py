"""The same library rollout three ways, on one 3-primary/3-replica Redis cluster (a benchmark: prints figures).

* operator: patch ``spec.code`` of a Ready RedisFunctionLibrary → every primary holds the new code (polled with
  FUNCTION LIST every 2 ms), the operator process already running;
* redis-cli: ``redis-cli --cluster-only-masters --cluster call <node> FUNCTION LOAD REPLACE <code>`` as a process
  (no verification; exits 0 even on failure);
* CLI: ``redis-functions-operator sync --redis <node> FILE`` as a process (verified; Python start-up included).

Each run loads a new version; medians over ``--runs``, and the ratios to redis-cli.

    .venv/bin/python bench/rollout_ratio.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import redis_servers as rs  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.operator_process import OperatorProcess, operator_env  # noqa: E402

NAME = "rollout"


def code(version: int) -> str:
    body = "\n".join(
        f"redis.register_function('{NAME}_f{i}', function(keys, args) return 'v{version}' end)" for i in range(8)
    )
    return f"#!lua name={NAME}\n-- version {version}\n{body}\n"


def everywhere(cluster: rs.Cluster, text: str) -> bool:
    want = text.encode()
    return all(p.function_libraries().get(NAME) == want for p in cluster.primaries())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rfo-bench-rollout-"))
    times: dict[str, list[float]] = {"operator": [], "redis-cli": [], "cli": []}
    version = 0
    with ControlPlane() as cp:
        cluster = rs.start_cluster("redis", base_dir=work / "redis")
        operator = OperatorProcess(operator_env(cp.env()), work / "operator.log", args=("--namespace", "bench"))
        try:
            cp.install_crds()
            cp.kubectl("create", "namespace", "bench")
            operator.start()
            seed = cluster.nodes[0]
            obj = {
                "apiVersion": "redisfunctions.dev/v1alpha1",
                "kind": "RedisFunctionLibrary",
                "metadata": {"name": NAME, "namespace": "bench"},
                "spec": {"code": code(version), "target": {"endpoints": [seed.address]}},
            }
            cp.apply_yaml(json.dumps(obj))
            cp.kubectl("wait", "-n", "bench", "--for=condition=Ready", f"rfl/{NAME}")
            lib = work / f"{NAME}.lua"
            for _ in range(args.runs):
                version += 1
                new = code(version)
                started = time.perf_counter()
                patch = json.dumps({"spec": {"code": new}})
                cp.kubectl("patch", "rfl", NAME, "-n", "bench", "--type=merge", "-p", patch)
                while not everywhere(cluster, new):
                    time.sleep(0.002)
                times["operator"].append(time.perf_counter() - started)

                version += 1
                new = code(version)
                started = time.perf_counter()
                subprocess.run(
                    ["redis-cli", "--cluster-only-masters", "--cluster", "call", seed.address,
                     "FUNCTION", "LOAD", "REPLACE", new],
                    check=True, capture_output=True,
                )  # fmt: skip
                times["redis-cli"].append(time.perf_counter() - started)

                version += 1
                new = code(version)
                lib.write_text(new)
                started = time.perf_counter()
                subprocess.run(
                    [str(REPO / ".venv/bin/redis-functions-operator"), "sync", "--redis", seed.url, str(lib)],
                    check=True,
                    capture_output=True,
                )
                times["cli"].append(time.perf_counter() - started)
                # put the object's code back on every primary so the operator's next rollout starts from "its" code
                cp.kubectl(
                    "patch", "rfl", NAME, "-n", "bench", "--type=merge", "-p", json.dumps({"spec": {"code": new}})
                )
                while not everywhere(cluster, new):
                    time.sleep(0.002)
        finally:
            operator.stop()
            cluster.stop()
    base = statistics.median(times["redis-cli"])
    print(f"one 8-function library rolled out to 3 primaries, median of {args.runs}:")
    print("| method | median | ratio to redis-cli |")
    print("|---|---|---|")
    labels = {
        "redis-cli": "redis-cli --cluster call (process, no verification)",
        "operator": "operator (kubectl patch of the spec → every primary holds it; kubectl's own start-up included)",
        "cli": "redis-functions-operator sync (process, verified)",
    }
    for key in ("redis-cli", "operator", "cli"):
        median = statistics.median(times[key])
        print(f"| {labels[key]} | {median * 1000:.0f} ms | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
