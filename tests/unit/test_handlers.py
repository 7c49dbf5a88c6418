"""``k8s/handlers.py``: every kopf handler is a coroutine, so kopf runs it on the event loop.

kopf runs a plain function in its executor threads; the handlers touch the controller's work queue and an
``asyncio.Event``, which are not thread-safe. The queue refuses calls off its loop (``test_workqueue.py``); this test
catches a plain-function handler before any e2e test would, including one added later: it reads every handler kopf
registered, not a list of names.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from redis_functions_operator.k8s import handlers
from redis_functions_operator.reconcile.decide import needs_cleanup


def registered_handlers() -> list[object]:
    # kopf keeps its registries private; if their shape changes this fails loudly (no handlers), never passes quietly.
    found: list[object] = []
    for registry_name in ("_activities", "_watching", "_changing", "_spawning", "_indexing", "_webhooks"):
        for handler in getattr(handlers.registry, registry_name)._handlers:
            found.append(handler.fn)
    return found


def test_every_handler_runs_on_the_event_loop() -> None:
    fns = registered_handlers()
    names = {getattr(fn, "__name__", repr(fn)) for fn in fns}
    assert {"library_event", "secret_event", "config_map_event", "cleanup", "configure"} <= names
    plain = sorted(getattr(fn, "__name__", repr(fn)) for fn in fns if not inspect.iscoroutinefunction(fn))
    # login is kopf's own credentials helper wrapper: it runs once, before the controller exists, and touches nothing.
    assert plain == ["login"]


@pytest.mark.parametrize(
    ("spec", "annotations", "finalizer"),
    [
        ({}, {}, True),  # deletionPolicy Delete by default
        ({"deletionPolicy": "Retain"}, {}, False),
        ({}, {"redisfunctions.dev/managed": "false"}, False),
        ({}, {"redisfunctions.dev/pause-reconciliation": "true"}, False),
        ({"managementPolicy": "Observe"}, {}, False),  # an observer never writes, so deleting it deletes nothing
        ({"managementPolicy": "Full", "driftPolicy": "Report"}, {}, True),
    ],
)
def test_the_cleanup_finalizer_is_kept_only_when_deleting_must_delete(
    spec: dict[str, Any], annotations: dict[str, str], finalizer: bool
) -> None:
    assert needs_cleanup({"metadata": {"annotations": annotations}, "spec": spec}) is finalizer
