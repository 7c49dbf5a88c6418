"""``k8s/handlers.py``: every kopf handler is a coroutine, so kopf runs it on the event loop.

kopf runs a plain function in its executor threads; the handlers touch the controller's work queue and an
``asyncio.Event``, which are not thread-safe. The queue refuses calls off its loop (``test_workqueue.py``); this test
catches a plain-function handler before any e2e test would, including one added later: it reads every handler kopf
registered, not a list of names.
"""

from __future__ import annotations

import inspect

from redis_functions_operator.k8s import handlers


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
