"""Sharding like Flux: several operator processes, each reconciling the objects its ``--label-selector`` matches
(``sharding.fluxcd.io/key=<shard>`` for a shard, ``!sharding.fluxcd.io/key`` for the main instance), on a real
control plane and a real Redis.

What is proven, and how it is observed:

* **no object reconciled by both, none by neither** — each process's ``/healthz`` counts exactly the objects of its
  shard (kopf's watch is filtered by the API server, so the process never holds another shard's object); every
  library load is logged by the process that made it (``<ns>/<name>: library ... loaded``), and each object's load
  is in its own shard's log and nowhere else; every object ends Ready (or Stalled for the conflict it is in), with
  the finalizer;
* **ownership across shards** — two objects in different shards wanting one library on the same Redis: the elder is
  Ready and its code is on the server, the younger is Stalled ``ResourceConflict`` naming the elder, with one
  Warning event, and its code never reached the server (no load of it in either log), even though every object is
  queued at once when the operators start. In both directions (elder in the main instance, younger in the shard,
  and the other way round). When the elder is deleted, its process leaves the library in Redis (the other shard's
  object still wants it) and the younger's process takes over;
* **relabelling moves an object** — the old shard's process lets go (its ``/healthz`` count drops), the new one takes
  it and rolls out its next version.

Namespaces are prefixed ``shard-``: the session operator (``e2e-*``) never acts on these objects.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import make_namespace
from tests.e2e.helpers import Libraries, library_code, manifest
from tests.support import redis_servers as rs
from tests.support.control_plane import ControlPlane
from tests.support.operator_process import OperatorProcess, operator_env

SHARD_KEY = "sharding.fluxcd.io/key"
SHARD = "shard1"
SHARD_SELECTOR = f"{SHARD_KEY}={SHARD}"
MAIN_SELECTOR = f"!{SHARD_KEY}"
OBJECTS = 1000
#: Two pairs of objects wanting one library each, elder and younger in different shards: "up" has the elder in the
#: main instance, "down" in the shard.
PAIRS = {"up": ("main", SHARD), "down": (SHARD, "main")}


@pytest.fixture
def shard_namespace(control_plane: ControlPlane, crd_installed: None, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from make_namespace(control_plane, request, "shard")


def labelled(body: dict[str, Any], shard: str) -> dict[str, Any]:
    if shard != "main":
        body["metadata"]["labels"] = {SHARD_KEY: shard}
    return body


def apply_all(cp: ControlPlane, bodies: list[dict[str, Any]]) -> None:
    for chunk in range(0, len(bodies), 250):
        cp.apply_yaml(yaml.safe_dump_all(bodies[chunk : chunk + 250]), server_side=True)


def objects(cp: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    out = cp.kubectl("get", "rfl", "-n", namespace, "-o", "json").stdout
    return {o["metadata"]["name"]: o for o in json.loads(out)["items"]}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found["type"] == type_ and found.get("observedGeneration") == obj["metadata"]["generation"]:
            return dict(found)
    return {}


def loaded_by(operator: OperatorProcess, namespace: str) -> list[str]:
    """The objects whose library this process loaded, one entry per load (the controller logs each)."""
    pattern = re.compile(rf" {re.escape(namespace)}/([a-z0-9.-]+): library \S+ .*\b(?:loaded|updated) on \d+/\d+")
    return [m.group(1) for m in pattern.finditer(operator.log_text())]


def conflict_logged(operator: OperatorProcess, namespace: str) -> set[str]:
    pattern = re.compile(rf" {re.escape(namespace)}/([a-z0-9.-]+): ResourceConflict: ")
    return {m.group(1) for m in pattern.finditer(operator.log_text())}


@pytest.mark.slow
def test_two_shards_split_1000_objects_and_agree_on_every_owner(
    control_plane: ControlPlane,
    shard_namespace: str,
    server_factory: Callable[..., rs.RedisServer],
    tmp_path: Path,
) -> None:
    namespace, cp = shard_namespace, control_plane
    server = server_factory("redis")
    endpoints = [server.address]
    elder_code = {pair: library_code(f"shared_{pair}", "return 'elder'") for pair in PAIRS}
    younger_code = {pair: library_code(f"shared_{pair}", "return 'young'") for pair in PAIRS}

    # The elders first; the younger ones at least one second later (creationTimestamp has whole seconds).
    apply_all(
        cp,
        [
            labelled(manifest(f"{pair}-elder", namespace, endpoints, code=elder_code[pair]), elder_shard)
            for pair, (elder_shard, _) in PAIRS.items()
        ],
    )
    created = max(o["metadata"]["creationTimestamp"] for o in objects(cp, namespace).values())
    rs.wait_until(lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > created, timeout=3, message="a second")
    plain = OBJECTS - 2 * len(PAIRS)
    shard_of: dict[str, str] = {f"{pair}-elder": elder for pair, (elder, _) in PAIRS.items()}
    shard_of |= {f"{pair}-younger": younger for pair, (_, younger) in PAIRS.items()}
    shard_of |= {f"lib{i:04d}": SHARD if i % 2 else "main" for i in range(plain)}
    bodies = [
        labelled(manifest(f"{pair}-younger", namespace, endpoints, code=younger_code[pair]), younger)
        for pair, (_, younger) in PAIRS.items()
    ]
    bodies += [
        labelled(
            manifest(f"lib{i:04d}", namespace, endpoints, code=library_code(f"lib{i:04d}")), shard_of[f"lib{i:04d}"]
        )
        for i in range(plain)
    ]
    apply_all(cp, bodies)
    assert len(objects(cp, namespace)) == OBJECTS

    env = operator_env(cp.env())
    common = ("--namespace", namespace, "--deletion-timeout", "15")
    shard_operator = OperatorProcess(env, tmp_path / "shard.log", args=(*common, "--label-selector", SHARD_SELECTOR))
    main_operator = OperatorProcess(env, tmp_path / "main.log", args=(*common, "--label-selector", MAIN_SELECTOR))
    operators = {SHARD: shard_operator, "main": main_operator}
    younger = {f"{pair}-younger" for pair in PAIRS}
    try:
        started = time.monotonic()
        for operator in operators.values():
            operator.launch()
        for operator in operators.values():
            operator.wait_healthy()

        def states(state: str) -> int:
            return sum(
                int(o.metrics()[f'redis_functions_operator_libraries{{state="{state}"}}']) for o in operators.values()
            )

        def settled() -> bool:
            found = objects(cp, namespace)
            ready = [n for n, o in found.items() if condition(o, "Ready").get("status") == "True"]
            stalled = [n for n in younger if condition(found[n], "Stalled").get("reason") == "ResourceConflict"]
            return len(ready) == OBJECTS - len(younger) and len(stalled) == len(younger)

        # First the operators' own counts (cheap to ask), then the statuses they wrote: a look at the API reads all
        # 1000 objects, which would take the CPU the operators need.
        ready, stalled = OBJECTS - len(younger), len(younger)
        rs.wait_until(
            lambda: states("ready") == ready and states("stalled") == stalled,
            timeout=90,
            interval=0.5,
            message=lambda: f"{ready} ready and {stalled} stalled: {states('ready')} and {states('stalled')}",
        )
        took = time.monotonic() - started
        rs.wait_until(settled, timeout=30, interval=1.0, message="every status written")
        print(
            f"\ntwo shards: operators started -> {OBJECTS} objects settled in {took:.1f}s, "
            f"every status written at {time.monotonic() - started:.1f}s"
        )

        # No object reconciled by both, none by neither.
        for shard, operator in operators.items():
            health = operator.health()
            assert health is not None
            assert health["libraries"] == sum(1 for s in shard_of.values() if s == shard), (shard, health)
        loads = {shard: loaded_by(operator, namespace) for shard, operator in operators.items()}
        for shard, names in loads.items():
            assert len(names) == len(set(names)), f"{shard}: an object was loaded twice"
            assert {shard_of[n] for n in names} == {shard}, f"{shard} loaded another shard's objects"
        assert sorted(loads[SHARD] + loads["main"]) == sorted(set(shard_of) - younger)
        final = objects(cp, namespace)
        for name, obj in final.items():
            assert obj["metadata"].get("finalizers") == ["redisfunctions.dev/cleanup"], name
        assert len(server.function_libraries()) == plain + len(PAIRS)

        # Ownership across shards: the elder's code, the younger Stalled naming it, once.
        held = server.function_libraries()
        for pair, (_, younger_shard) in PAIRS.items():
            assert held[f"shared_{pair}"] == elder_code[pair].encode(), pair
            stalled = condition(final[f"{pair}-younger"], "Stalled")
            assert f"managed by {namespace}/{pair}-elder" in stalled["message"], stalled
            assert condition(final[f"{pair}-younger"], "Ready")["status"] == "False"
            logged = {shard: conflict_logged(operator, namespace) for shard, operator in operators.items()}
            assert {shard for shard, names in logged.items() if f"{pair}-younger" in names} == {younger_shard}
            libs = Libraries(cp, namespace)
            conflicts = [e for e in libs.events(f"{pair}-younger") if e["reason"] == "ResourceConflict"]
            assert len(conflicts) == 1 and conflicts[0]["type"] == "Warning", conflicts

        # The elder goes: its process leaves the library (still wanted in the other shard), the younger takes over.
        libs = Libraries(cp, namespace)
        assert libs.delete("up-elder").returncode == 0
        deleted = libs.wait_event("up-elder", "Deleted")
        assert f"still wanted by {namespace}/up-younger" in deleted["message"], deleted
        libs.wait_ready("up-younger", timeout=20)
        assert server.function_libraries()["shared_up"] == younger_code["up"].encode()
        assert loaded_by(shard_operator, namespace).count("up-younger") == 1  # the shard's process, the up pair's
        assert "up-younger" not in loaded_by(main_operator, namespace)

        # Relabelled, an object changes hands: the API server tells the main process it left, the shard's takes it
        # (finalizer and all) and rolls out its next version; the main process never touches it again.
        assert shard_of["lib0000"] == "main"
        libs.kubectl("label", "rfl", "lib0000", f"{SHARD_KEY}={SHARD}")

        def counts() -> list[int]:
            return [int((o.health() or {}).get("libraries", -1)) for o in (shard_operator, main_operator)]

        rs.wait_until(lambda: counts() == [501, 498], timeout=20, message=lambda: f"the move: {counts()}")
        v2 = library_code("lib0000", "return 'v2'")
        libs.patch_spec("lib0000", {"code": v2})
        libs.wait_condition("lib0000", "Ready", timeout=20)
        assert server.function_libraries()["lib0000"] == v2.encode()
        assert loaded_by(shard_operator, namespace).count("lib0000") == 1
        assert loaded_by(main_operator, namespace).count("lib0000") == 1  # its first load, before the move
        assert libs.get("lib0000")["metadata"]["finalizers"] == ["redisfunctions.dev/cleanup"]
    finally:
        for operator in operators.values():
            operator.stop()
        for shard, operator in operators.items():
            print(f"\n--- {shard} operator log tail ---\n{operator.log_tail(15)}")


@pytest.mark.parametrize("selector", ["tier in prod", "a b", "Bad_Prefix/key", "x in ()", "a=b,", "=b"])
def test_a_bad_selector_is_a_usage_error(control_plane: ControlPlane, selector: str) -> None:
    """Refused before anything starts, the CLI's way: exit 2 and one line saying what is wrong."""
    command = [sys.executable, "-m", "redis_functions_operator", "run", "--label-selector", selector]
    done = subprocess.run(command, env=operator_env(control_plane.env()), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --label-selector {selector!r}: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
