"""argocd/health.lua, evaluated the way Argo CD evaluates it, on the cases of argocd/health_test.yaml (Argo CD's own
test layout; the testdata are objects captured from the running operator by tests/e2e/test_gitops_health.py) and on
edge cases. No cluster needed. Two Lua VMs:

* gopher-lua, the one Argo CD runs health checks in: the ``argo-health`` tool (tests/argo/, built by
  scripts/build-test-tools.sh into .cache/k8s/bin), which feeds the object and reads the result as Argo CD's
  util/lua does, with and without ``useOpenLibs``. It is the authority. ``make test`` always builds it first; where it
  was never built (``make test-quick`` on a fresh clone) its tests skip, saying how to build it.
* C Lua 5.1 (Debian's ``lua5.1``) with tests/support/argo_health_runner.lua: health.lua must give the same answers
  there too, although the two VMs differ in ways it meets (the ``*_differ_*`` tests show each one).

``argo_health(obj, tool)`` is what the e2e test uses: the health Argo CD shows, "Pending deletion" rule included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.control_plane import binaries_dir

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
LUA51_RUNNER = REPO / "tests" / "support" / "argo_health_runner.lua"
BUILD_TEST_TOOLS = REPO / "scripts" / "build-test-tools.sh"
ARGO_HEALTH = "argo-health"

Health = dict[str, str]


# ------------------------------------------------------------------------------------------------------------------
# the two VMs


def build_argo_health() -> Path:
    """Build (or confirm up to date: ~20 ms) the argo-health tool and return it; fail with the build's output.

    The output goes to a file, not a pipe: the build's progress heartbeat can outlive it by up to 30 s and would hold
    a pipe open that long."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(
            [str(BUILD_TEST_TOOLS), ARGO_HEALTH], stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False
        )
        log.seek(0)
        output = log.read()
    tool = binaries_dir() / ARGO_HEALTH
    if proc.returncode != 0 or not os.access(tool, os.X_OK):
        pytest.fail(f"scripts/build-test-tools.sh {ARGO_HEALTH} failed:\n{output}", pytrace=False)
    return tool


@pytest.fixture(scope="session")
def argo_health_tool() -> Path:
    """The argo-health tool, rebuilt first if its sources changed (a warm rebuild takes ~1 s). Never built here from
    nothing (a cold build takes ~1 min, which `make test-quick` promises not to spend): then the tests skip."""
    if not os.access(binaries_dir() / ARGO_HEALTH, os.X_OK):
        pytest.skip(
            f"{binaries_dir() / ARGO_HEALTH} is not built, so health.lua is not checked in gopher-lua, Argo CD's VM: "
            f"`scripts/build-test-tools.sh {ARGO_HEALTH}` builds it (~1 min once; `make test` always does)"
        )
    return build_argo_health()


@dataclass(frozen=True)
class LuaVM:
    """One way to run a health script on an object: argo-health (gopher-lua, as Argo CD), or C Lua 5.1."""

    name: str
    tool: Path | None  # argo-health; None: C Lua 5.1 through tests/support/argo_health_runner.lua
    open_libs: bool = False  # argo-health -open-libs: resource.customizations.useOpenLibs

    def run(self, obj: dict[str, Any], script: Path = HEALTH_LUA) -> subprocess.CompletedProcess[str]:
        if self.tool is not None:
            args = [str(self.tool), *(["-open-libs"] if self.open_libs else []), str(script)]
        else:
            lua = shutil.which("lua5.1")
            if lua is None:
                pytest.fail("lua5.1 not found: install Debian's lua5.1 (`make bootstrap` does)", pytrace=False)
            args = [lua, str(LUA51_RUNNER), str(script)]
        return subprocess.run(args, input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=False)

    def health(self, obj: dict[str, Any], script: Path = HEALTH_LUA) -> Health:
        """The health the script gives ``obj``; the script must not fail."""
        proc = self.run(obj, script)
        assert proc.returncode == 0, f"{self.name}: the script failed (exit {proc.returncode}): {proc.stderr.strip()}"
        result: Health = json.loads(proc.stdout)
        return result


LUA51 = LuaVM("lua5.1", None)


def gopher_lua(tool: Path) -> LuaVM:
    """Argo CD's VM as a script from argocd-cm gets it (no useOpenLibs)."""
    return LuaVM("gopher-lua", tool)


def argo_health(obj: dict[str, Any], tool: Path) -> Health:
    """What Argo CD shows for ``obj`` with health.lua configured in argocd-cm (no useOpenLibs): gitops-engine's
    ``GetResourceHealth``, whose "Pending deletion" rule comes before the script, then the script in gopher-lua."""
    return gopher_lua(tool).health(obj)


@pytest.fixture(params=["gopher-lua", "gopher-lua+useOpenLibs", "lua5.1"])
def vm(request: pytest.FixtureRequest) -> LuaVM:
    """Each VM health.lua must be right in: Argo CD's as argocd-cm scripts get it; Argo CD's with useOpenLibs (as its
    built-in scripts and its health_test.go get it: what health.lua would meet upstream); and C Lua 5.1."""
    if request.param == "lua5.1":
        return LUA51
    tool: Path = request.getfixturevalue("argo_health_tool")
    return LuaVM(request.param, tool, open_libs=request.param.endswith("useOpenLibs"))


# ------------------------------------------------------------------------------------------------------------------
# argocd/health_test.yaml


def health_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    return tests


@pytest.mark.parametrize("case", health_tests(), ids=lambda case: Path(case["inputPath"]).stem)
def test_health_test_yaml_case(case: dict[str, Any], vm: LuaVM) -> None:
    # Argo CD's util/lua/health_test.go compares the whole HealthStatus (status and message) for equality.
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    expected = {k: v for k, v in case["healthStatus"].items() if v}
    assert vm.health(obj) == expected


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


# ------------------------------------------------------------------------------------------------------------------
# edge cases

PAUSE = "redisfunctions.dev/pause-reconciliation"
MANAGED = "redisfunctions.dev/managed"


def _obj(generation: Any, observed: Any, *conditions: tuple[str, str, str], **annotations: str) -> dict[str, Any]:
    """A cut-down object: what health.lua reads. Annotation keywords: ``pause`` and ``managed``."""
    status: dict[str, Any] = {"observedGeneration": observed}
    status["conditions"] = [{"type": t, "status": s, "reason": r, "message": f"{t} says {r}"} for t, s, r in conditions]
    metadata: dict[str, Any] = {"name": "x", "generation": generation}
    names = {"pause": PAUSE, "managed": MANAGED}
    if annotations:
        metadata["annotations"] = {names[k]: v for k, v in annotations.items()}
    return {"metadata": metadata, "status": status}


# The conditions the operator writes for a paused or a detached object (reconcile/status.py).
OPERATOR_PAUSED = (
    ("Reconciling", "False", "Paused"),
    ("Stalled", "False", "Paused"),
    ("ReconciliationPaused", "True", "Paused"),
)
OPERATOR_UNMANAGED = (
    ("Reconciling", "False", "Unmanaged"),
    ("Stalled", "False", "Unmanaged"),
    ("ReconciliationPaused", "True", "Unmanaged"),
)
READY = ("Ready", "True", "Verified")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param({"metadata": {"generation": 1}}, "Progressing", id="no-status-at-all(old-CRD-without-default)"),
        pytest.param(_obj(1, -1), "Progressing", id="new"),
        pytest.param(_obj(3, 2, READY), "Progressing", id="generation-not-observed"),
        pytest.param(_obj("3", 3, READY), "Healthy", id="generation-as-string"),
        pytest.param(_obj(1, 1, ("Ready", "Unknown", "X")), "Progressing", id="ready-unknown"),
        pytest.param(_obj(1, 1, ("Ready", "False", "X")), "Progressing", id="ready-false-alone"),
        pytest.param(_obj(1, 1), "Progressing", id="observed-but-no-conditions"),
        pytest.param(
            _obj(1, 1, ("ReconciliationPaused", "True", "Paused"), ("Stalled", "True", "X"), pause="true"),
            "Suspended",
            id="paused-wins",
        ),
        pytest.param(_obj(1, 1, READY, ("Stalled", "True", "X")), "Degraded", id="stalled-beats-ready"),
        # The annotations, read before the operator writes anything (new, or a generation it has not seen yet):
        pytest.param(_obj(1, -1, pause="true"), "Suspended", id="new-and-paused"),
        pytest.param(_obj(2, 1, READY, managed="false"), "Suspended", id="unmanaged-before-the-operator-sees-a-change"),
        pytest.param(_obj(1, 1, READY, pause="TRUE"), "Suspended", id="pause-in-capitals(the-operator-lowercases)"),
        pytest.param(_obj(1, 1, READY, managed="False"), "Suspended", id="managed-False"),
        pytest.param(_obj(1, 1, READY, pause="false"), "Healthy", id="pause-false"),
        pytest.param(_obj(1, 1, READY, managed="true"), "Healthy", id="managed-true"),
        pytest.param(_obj(1, 1, READY, pause=""), "Healthy", id="pause-empty"),
        # A value only the operator can read (it trims whitespace; Argo CD's Lua has no string library): its word.
        pytest.param(_obj(1, 1, READY, pause=" true"), "Healthy", id="pause-with-a-space-before-the-operator-acts"),
        pytest.param(_obj(1, 1, *OPERATOR_PAUSED, pause=" true"), "Suspended", id="pause-with-a-space-once-it-did"),
        pytest.param(_obj(1, 1, *OPERATOR_PAUSED, pause="yes"), "Suspended", id="pause-yes-trusts-the-operator"),
        # Paused by the operator, but no annotation asks for it any more: the operator has yet to resume.
        pytest.param(_obj(1, 1, *OPERATOR_PAUSED), "Progressing", id="resuming-after-the-pause-was-removed"),
        pytest.param(_obj(1, 1, *OPERATOR_PAUSED, pause="false"), "Progressing", id="resuming-after-pause-false"),
        pytest.param(_obj(1, 1, *OPERATOR_UNMANAGED), "Progressing", id="resuming-after-managed-was-removed"),
        pytest.param(_obj(1, 1, *OPERATOR_UNMANAGED, pause="true"), "Suspended", id="managed-removed-but-still-paused"),
        pytest.param(_obj(1, 1, *OPERATOR_PAUSED, pause="true", managed="false"), "Suspended", id="both-annotations"),
    ],
)
def test_edge_cases(obj: dict[str, Any], expected: str, vm: LuaVM) -> None:
    assert vm.health(obj)["status"] == expected


def test_messages_name_the_reason_and_the_generations(vm: LuaVM) -> None:
    assert vm.health(_obj(3, 2)) == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 3 (last observed: 2)",
    }
    assert vm.health(_obj(1, 1, ("Stalled", "True", "CompileError")))["message"] == (
        "CompileError: Stalled says CompileError"
    )


def test_annotation_messages_say_whether_the_operator_acknowledged_them(vm: LuaVM) -> None:
    # Before the operator writes: health.lua's own words. After: the operator's condition, which names the reason.
    assert vm.health(_obj(1, 1, READY, pause="true")) == {
        "status": "Suspended",
        "message": f"Paused: annotation {PAUSE}=true; not yet acknowledged by the operator",
    }
    assert vm.health(_obj(1, 1, READY, pause="true", managed="false")) == {
        "status": "Suspended",
        "message": f"Unmanaged: annotation {MANAGED}=false; not yet acknowledged by the operator",
    }
    assert vm.health(_obj(1, 1, *OPERATOR_PAUSED, pause="true")) == {
        "status": "Suspended",
        "message": "Paused: ReconciliationPaused says Paused",
    }
    # managed=false added while paused: the operator's "Paused" no longer tells the whole story.
    assert vm.health(_obj(1, 1, *OPERATOR_PAUSED, pause="true", managed="false"))["message"] == (
        f"Unmanaged: annotation {MANAGED}=false; not yet acknowledged by the operator"
    )
    assert vm.health(_obj(1, 1, *OPERATOR_PAUSED)) == {
        "status": "Progressing",
        "message": "Resuming: no annotation pauses or detaches the library any more; waiting for the operator "
        "(last: Paused: ReconciliationPaused says Paused)",
    }


# ------------------------------------------------------------------------------------------------------------------
# where gopher-lua and C Lua 5.1 differ, and health.lua gives the same answer in both


def probe(tmp_path: Path, expression: str) -> Path:
    """A script whose message is ``expression`` (a Lua string expression) as the VM evaluates it."""
    script = tmp_path / "probe.lua"
    script.write_text(f"return {{status = 'Healthy', message = {expression}}}\n")
    return script


def in_both(tool: Path, obj: dict[str, Any], script: Path = HEALTH_LUA) -> tuple[Health, Health]:
    """The health ``script`` gives ``obj`` in gopher-lua (as Argo CD) and in C Lua 5.1."""
    return gopher_lua(tool).health(obj, script), LUA51.health(obj, script)


def test_the_vms_differ_on_tostring_of_large_whole_numbers(argo_health_tool: Path, tmp_path: Path) -> None:
    # C Lua 5.1 prints numbers with "%.14g": 15-digit generations collapse, so comparing them as strings was wrong.
    script = probe(tmp_path, "tostring(obj.a) .. ' ' .. tostring(obj.b)")
    gopher, lua51 = in_both(argo_health_tool, {"a": 123456789012345, "b": 123456789012344}, script)
    assert gopher["message"] == "123456789012345 123456789012344"
    assert lua51["message"] == "1.2345678901234e+14 1.2345678901234e+14"


def test_health_lua_compares_and_prints_generations_alike_in_both(argo_health_tool: Path) -> None:
    waiting = {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 123456789012345 (last observed: 123456789012344)",
    }
    assert in_both(argo_health_tool, _obj(123456789012345, 123456789012344, READY)) == (waiting, waiting)
    ready = {"status": "Healthy", "message": "Verified: Ready says Verified"}
    assert in_both(argo_health_tool, _obj(10**15, 10**15, READY)) == (ready, ready)


def test_the_vms_differ_on_null_in_an_array(argo_health_tool: Path, tmp_path: Path) -> None:
    # Argo CD's conversion appends each element with LTable.Append, which skips nil; C Lua keeps a hole there.
    script = probe(
        tmp_path, "(function() local n = 0 for _ in ipairs(obj.a) do n = n + 1 end return n .. '/' .. #obj.a end)()"
    )
    gopher, lua51 = in_both(argo_health_tool, {"a": [1, None, 3]}, script)
    assert (gopher["message"], lua51["message"]) == ("2/2", "1/1")


def test_health_lua_finds_conditions_after_a_null_in_both(argo_health_tool: Path) -> None:
    obj = _obj(1, 1, READY)
    obj["status"]["conditions"].insert(0, None)
    ready = {"status": "Healthy", "message": "Verified: Ready says Verified"}
    assert in_both(argo_health_tool, obj) == (ready, ready)


# ------------------------------------------------------------------------------------------------------------------
# Argo CD's environment and how it reads the result (argo-health is the model; the lua5.1 runner follows it)


def test_deletion_is_argo_cds_own_answer(argo_health_tool: Path) -> None:
    deleting = _obj(1, 1, READY)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert argo_health(deleting, argo_health_tool) == {"status": "Progressing", "message": "Pending deletion"}
    deleting["metadata"]["finalizers"] = ["argocd.argoproj.io/hook-finalizer"]  # an Argo CD hook: still assessed
    assert argo_health(deleting, argo_health_tool)["status"] == "Healthy"


def test_only_base_table_and_package_are_open_without_use_open_libs(tmp_path: Path, vm: LuaVM) -> None:
    # Argo CD opens package, base and table for argocd-cm scripts: no string library (so no string methods either),
    # no math, io or debug, and no global os (require("os") gives two functions: next test).
    libraries = "type(string) .. type(math) .. type(io) .. type(debug) .. type(os)"
    methods = "tostring((pcall(function() return ('x'):upper() end)))"
    seen = vm.health({}, probe(tmp_path, f"{libraries} .. ' ' .. {methods}"))["message"]
    assert seen == ("table" * 5 + " true" if vm.open_libs else "nil" * 5 + " false")


def test_require_os_gives_time_and_date_only(tmp_path: Path, vm: LuaVM) -> None:
    names = "(function() local k = {} for n in pairs(require('os')) do table.insert(k, n) end table.sort(k) return table.concat(k, ',') end)()"
    seen = vm.health({}, probe(tmp_path, names))["message"].split(",")
    assert ("exit" in seen) if vm.open_libs else (seen == ["date", "time"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return {status = 'Fine'}", {"status": "Unknown", "message": "Lua returned an invalid health status"}),
        ("return {status = 'Healthy', message = 3}", {}),  # any field of another type: an empty health
        ("return {}", {}),  # encoded as [], which is not an object
        ("return {'Healthy'}", {}),
        ("return nil", {}),
        ("return {status = 'Degraded'}", {"status": "Degraded"}),
    ],
)
def test_the_result_is_read_as_argo_cd_reads_it(body: str, expected: Health, tmp_path: Path, vm: LuaVM) -> None:
    script = tmp_path / "result.lua"
    script.write_text(body + "\n")
    assert vm.health({}, script) == expected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("error('boom')", "boom"),
        ("return 'Healthy'", "expect table output from Lua script, not string"),
        ("while true do end", "context deadline exceeded"),  # Argo CD's 1 s deadline
    ],
)
def test_a_failing_script_shows_unknown_with_the_error(
    body: str, error: str, argo_health_tool: Path, tmp_path: Path
) -> None:
    script = tmp_path / "failing.lua"
    script.write_text(body + "\n")
    proc = gopher_lua(argo_health_tool).run({}, script)
    shown = json.loads(proc.stdout)
    assert proc.returncode == 1 and shown["status"] == "Unknown" and error in shown["message"], (body, shown)
    assert error in proc.stderr
