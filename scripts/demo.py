"""``make demo``: the whole product on one machine, in the foreground, until Ctrl-C.

A real kube-apiserver + etcd, a real 3-primary/3-replica Redis 7.0 cluster, the CRD, the operator as a local process,
and the five libraries of ``lua/`` applied as RedisFunctionLibrary objects. It waits until ``kubectl get rfl`` shows
them Ready, calls a function with FCALL, prints how to poke at it, and on Ctrl-C stops everything it started.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

import yaml  # noqa: E402

from tests.support import redis_servers as rs  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.operator_process import OperatorProcess, operator_env  # noqa: E402

STATE = REPO / ".cache" / "demo"
NAMESPACE = "demo"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def manifests(endpoints: list[str]) -> str:
    documents = []
    for path in sorted((REPO / "lua").glob("*.lua")):
        documents.append(
            {
                "apiVersion": "redisfunctions.dev/v1alpha1",
                "kind": "RedisFunctionLibrary",
                "metadata": {"name": path.stem, "namespace": NAMESPACE},
                "spec": {
                    "libraryName": path.stem,
                    "version": "1.0.0",
                    "code": path.read_text(),
                    "target": {"endpoints": endpoints, "mode": "cluster"},
                    "resyncInterval": "30s",
                },
            }
        )
    return yaml.safe_dump_all(documents, sort_keys=False)


def main() -> int:
    stop_requested = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    STATE.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        say("starting a real control plane (etcd + kube-apiserver v1.36.3)")
        cp = stack.enter_context(ControlPlane())
        say("starting a 3-primary/3-replica Redis 7.0 cluster on free ports")
        cluster = rs.start_cluster("redis", base_dir=STATE / "redis")
        stack.callback(cluster.stop)
        say("installing the RedisFunctionLibrary CRD")
        cp.install_crds()
        cp.kubectl("create", "namespace", NAMESPACE)
        say("starting the operator (redis-functions-operator run --all-namespaces)")
        operator = OperatorProcess(operator_env(cp.env()), STATE / "operator.log")
        operator.start()
        stack.callback(operator.stop)
        seeds = [node.address for node in cluster.nodes[:2]]
        say(f"applying the five libraries of lua/ as RedisFunctionLibrary objects (seeds {', '.join(seeds)})")
        started = time.monotonic()
        cp.apply_yaml(manifests(seeds), server_side=True)
        waited = cp.kubectl(
            "wait", "-n", NAMESPACE, "--for=condition=Ready", "rfl", "--all", "--timeout=60s", check=False
        )
        print(cp.kubectl("get", "rfl", "-n", NAMESPACE).stdout)
        if waited.returncode != 0:
            print(waited.stderr, file=sys.stderr)
            print(operator.log_tail(), file=sys.stderr)
            return 1
        say(f"all Ready in {time.monotonic() - started:.1f}s; calling functions with FCALL through the cluster")
        client = cluster.cluster_client(protocol=2, decode_responses=True)
        print("  FCALL_RO hello 0 demo            ->", client.fcall_ro("hello", 0, "demo"))
        print("  FCALL increment_counter 1 {d}:n 5 ->", client.fcall("increment_counter", 1, "counter:{demo}", "5"))
        print("  FCALL_RO calculate 0 1.5 2.25    ->", client.fcall_ro("calculate", 0, "1.5", "2.25"))
        port = cluster.primaries()[0].port
        print(
            f"""
The stack is up. In another terminal:

  export KUBECONFIG={cp.kubeconfig}
  {REPO}/.venv/bin/kubectl get rfl -n {NAMESPACE}
  {REPO}/.venv/bin/kubectl describe rfl mylib -n {NAMESPACE}
  redis-cli -c -p {port} FCALL_RO hello 0 you
  redis-cli -p {port} FUNCTION FLUSH     # the operator's watch (a poll every 2 s) puts it back within about 2 s
  {REPO}/.venv/bin/redis-functions-operator status --redis redis://127.0.0.1:{port}

Operator log: {operator.log_path}
Press Ctrl-C to stop everything.""",
            flush=True,
        )
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop_requested:
            if not operator.running():
                print("the operator exited:\n" + operator.log_tail(), file=sys.stderr)
                return 1
            time.sleep(0.5)
        say("stopping the operator, the Redis cluster and the control plane")
    say("stopped; nothing left running")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except subprocess.CalledProcessError as exc:
        print(exc, exc.stderr, file=sys.stderr)
        raise SystemExit(1) from None
