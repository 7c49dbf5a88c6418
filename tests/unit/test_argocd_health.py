"""argocd/health.lua, run by a real Lua 5.1 interpreter the way Argo CD runs it, on the cases of
argocd/health_test.yaml (Argo CD's own test layout; the testdata are statuses captured from the running operator by
tests/e2e/test_gitops_health.py). No cluster needed.

``argo_health(obj)`` is also what the e2e test uses: Argo CD's ``GetResourceHealth`` (gitops-engine) answers
Progressing "Pending deletion" for an object with a deletionTimestamp before any script runs, then runs the script.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
RUNNER = REPO / "tests" / "support" / "argo_health_runner.lua"
LUA = "lua5.1"


def lua_binary() -> str:
    path = shutil.which(LUA)
    if path is None:
        pytest.fail(f"{LUA} not found: install Debian's lua5.1 (`make bootstrap` does)", pytrace=False)
    return path


def run_health_script(obj: dict[str, Any], script: Path = HEALTH_LUA) -> dict[str, str]:
    """The script's result as Argo CD would record it: ``{"status": ..., "message": ...}`` (message omitted if empty)."""
    proc = subprocess.run(
        [lua_binary(), str(RUNNER), str(script)], input=json.dumps(obj), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, f"{script.name} failed (exit {proc.returncode}): {proc.stderr.strip()}"
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def argo_health(obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD shows for ``obj`` with health.lua configured (gitops-engine ``GetResourceHealth``)."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return {"status": "Progressing", "message": "Pending deletion"}
    return run_health_script(obj)


def health_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    return tests


@pytest.mark.parametrize("case", health_tests(), ids=lambda case: Path(case["inputPath"]).stem)
def test_health_test_yaml_case(case: dict[str, Any]) -> None:
    # Argo CD's util/lua/health_test.go compares the whole HealthStatus (status and message) for equality.
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    expected = {k: v for k, v in case["healthStatus"].items() if v}
    assert run_health_script(obj) == expected


def test_every_testdata_file_is_a_case_and_a_redis_function_library() -> None:
    listed = {case["inputPath"] for case in health_tests()}
    present = {f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert listed == present
    for path in present:
        obj = yaml.safe_load((ARGOCD / path).read_text())
        assert (obj["apiVersion"], obj["kind"]) == ("redisfunctions.dev/v1alpha1", "RedisFunctionLibrary"), path


def test_every_health_status_argo_cd_knows_is_covered_except_missing() -> None:
    covered = {case["healthStatus"]["status"] for case in health_tests()}
    assert covered == {"Healthy", "Progressing", "Degraded", "Suspended"}


def _obj(generation: Any, observed: Any, *conditions: tuple[str, str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed}
    status["conditions"] = [{"type": t, "status": s, "reason": r, "message": f"{t} says {r}"} for t, s, r in conditions]
    return {"metadata": {"name": "x", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param({"metadata": {"generation": 1}}, "Progressing", id="no-status-at-all(old-CRD-without-default)"),
        pytest.param(_obj(1, -1), "Progressing", id="new"),
        pytest.param(_obj(3, 2, ("Ready", "True", "Verified")), "Progressing", id="generation-not-observed"),
        pytest.param(_obj("3", 3, ("Ready", "True", "Verified")), "Healthy", id="generation-as-string"),
        pytest.param(_obj(1, 1, ("Ready", "Unknown", "X")), "Progressing", id="ready-unknown"),
        pytest.param(_obj(1, 1, ("Ready", "False", "X")), "Progressing", id="ready-false-alone"),
        pytest.param(_obj(1, 1), "Progressing", id="observed-but-no-conditions"),
        pytest.param(
            _obj(1, 1, ("Stalled", "True", "X"), ("ReconciliationPaused", "True", "P")), "Suspended", id="paused-wins"
        ),
        pytest.param(
            _obj(1, 1, ("Ready", "True", "V"), ("Stalled", "True", "X")), "Degraded", id="stalled-beats-ready"
        ),
    ],
)
def test_edge_cases(obj: dict[str, Any], expected: str) -> None:
    assert run_health_script(obj)["status"] == expected


def test_messages_name_the_reason_and_the_generations() -> None:
    assert run_health_script(_obj(3, 2)) == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 3 (last observed: 2)",
    }
    assert run_health_script(_obj(1, 1, ("Stalled", "True", "CompileError")))["message"] == (
        "CompileError: Stalled says CompileError"
    )


def test_deletion_is_argo_cds_own_answer() -> None:
    deleting = _obj(1, 1, ("Ready", "True", "Verified"))
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert argo_health(deleting) == {"status": "Progressing", "message": "Pending deletion"}


def test_the_runner_hides_what_argo_cd_hides(tmp_path: Path) -> None:
    # Without resource.customizations.useOpenLibs Argo CD opens only base, table, package and a two-function os.
    for body in ('string.format("%d", 1)', '("x"):upper()', "math.floor(1.5)", 'io.write("x")', "os.exit(3)"):
        script = tmp_path / "probe.lua"
        script.write_text(f"local v = {body}\nreturn {{status = 'Healthy'}}\n")
        proc = subprocess.run([lua_binary(), str(RUNNER), str(script)], input="{}", capture_output=True, text=True)
        assert proc.returncode == 1 and "health script failed" in proc.stderr, (body, proc.stdout, proc.stderr)
    script = tmp_path / "ok.lua"
    script.write_text(
        "local t = {} table.insert(t, tostring(os.time() > 0)) return {status = 'Healthy', message = t[1]}\n"
    )
    assert run_health_script({}, script) == {"status": "Healthy", "message": "true"}
    script.write_text("return {status = 'Fine'}\n")
    assert run_health_script({}, script) == {"status": "Unknown", "message": "Lua returned an invalid health status"}
