"""``k8s/controller.py`` takes every delay from ``reconcile/decide.py`` (and so ``schedule.py``): a failure found
before Redis is seen waits what the table in ``test_decide.py`` says, with the object's own ``resyncInterval``."""

from __future__ import annotations

from typing import Any

import kubernetes.client as k8s
import pytest

from redis_functions_operator.k8s.controller import Controller
from redis_functions_operator.k8s.kube import Kube, ObjectRef
from redis_functions_operator.reconcile.conditions import READY, STALLED, find
from redis_functions_operator.reconcile.spec import PAUSE_ANNOTATION

CODE = "#!lua name=lib\nredis.register_function('f', function() return 1 end)\n"


def body(**spec: Any) -> dict[str, Any]:
    metadata = {"namespace": "apps", "name": "lib", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"}
    return {
        "metadata": {**metadata, "generation": 1},
        "spec": {"code": CODE, "target": {"endpoints": ["127.0.0.1:1"]}, **spec},
    }


class RecordingKube(Kube):
    """Events kept here, never posted."""

    def __init__(self) -> None:
        super().__init__(k8s.ApiClient())
        self.events: list[tuple[str, str]] = []

    def emit(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


async def visit(obj: dict[str, Any]) -> tuple[float | None, Controller]:
    control = Controller(RecordingKube())
    control.observe(obj)
    return await control.reconcile(("apps", "lib")), control


def ready_reason(control: Controller) -> str:
    status = control._objects[("apps", "lib")].status_view or {}
    stalled = find(status.get("conditions") or [], STALLED)
    assert stalled is not None and stalled["status"] == "True"
    ready = find(status.get("conditions") or [], READY)
    assert ready is not None
    return str(ready["reason"])


async def test_a_spec_that_does_not_parse_waits_the_permanent_floor() -> None:
    delay, control = await visit(body(resyncInterval="often"))
    assert delay == 300.0
    assert ready_reason(control) == "InvalidSpec"
    assert isinstance(control.kube, RecordingKube) and control.kube.events == [("Warning", "InvalidSpec")]
    assert control._objects[("apps", "lib")].failures_in_a_row == 1


@pytest.mark.parametrize(("resync", "delay"), [("60s", 300.0), ("10m", 600.0), ("1h", 3600.0)])
async def test_a_library_refused_before_loading_waits_the_resync_interval(resync: str, delay: float) -> None:
    # before, a literal 300.0: a refused library retried every 5 minutes whatever its resyncInterval
    got, control = await visit(body(resyncInterval=resync, libraryName="other"))
    assert got == delay
    assert ready_reason(control) == "LibraryNameMismatch"


async def test_a_paused_object_is_not_visited_again() -> None:
    obj = body()
    obj["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    delay, control = await visit(obj)
    assert delay is None
    assert control._objects[("apps", "lib")].state == "paused"
