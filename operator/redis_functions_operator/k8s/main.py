"""``redis-functions-operator run``: configure logging and the Kubernetes client, then run kopf with our registry,
the controller and a small health server.

The health endpoint is our own (not kopf's ``--liveness``), because it must answer 503 when the controller's queue
is stuck — kopf's endpoint only reports probe handler results and cannot fail by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import socket
import sys
from typing import Any, cast

import kopf
from aiohttp import web
from kopf._cogs.structs.references import NamespaceName, match_namespace  # kopf's --namespace pattern rule, exactly
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from redis_functions_operator.k8s import handlers, metrics
from redis_functions_operator.k8s.controller import Controller, ControllerSettings
from redis_functions_operator.k8s.kube import EveryLibraryWatch, Kube, LabelSelector, SelectorError
from redis_functions_operator.redis.connect import Endpoint

log = logging.getLogger("redis_functions_operator")


def run_operator(args: argparse.Namespace) -> int:
    try:
        selector = LabelSelector.parse(getattr(args, "label_selector", None) or "")
    except SelectorError as exc:  # a usage error, said as the CLI says them (exit 2), before anything starts
        print(f"error: --label-selector {args.label_selector!r}: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.verbose)
    try:
        load_kubernetes_config()
    except k8s_config.ConfigException as exc:
        log.error("no Kubernetes configuration: %s (set KUBECONFIG or run in a cluster)", exc)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, selector))
    return 0


def load_kubernetes_config() -> None:
    """In-cluster service account first, then KUBECONFIG / ~/.kube/config (also what kopf piggybacks on)."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]


async def _serve(args: argparse.Namespace, selector: LabelSelector) -> None:
    metrics.install()
    settings = ControllerSettings(poll_interval=float(args.poll_interval), listing_burst=int(args.listing_burst))
    configuration = k8s.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32  # as many connections as Kube's threads, and some for events
    api = k8s.ApiClient(configuration)
    controller = Controller(Kube(api), settings)
    namespaces = list(args.namespace or [])
    clusterwide = bool(args.all_namespaces or not namespaces)
    # kopf scans namespaces and CRDs only when a namespace pattern (a glob or an exclusion) needs it: a fixed list
    # or all namespaces need no cluster-wide read of namespaces or CRDs, which the chart's RBAC does not grant.
    scanning = not clusterwide and any(set(ns) & set("*?[!") for ns in namespaces)
    memo = kopf.Memo(controller=controller, deletion_timeout=float(args.deletion_timeout), scanning=scanning)
    if selector:
        log.info("reconciling the libraries matching %s; the others are read for ownership, never written", selector)
        memo.label_selector = selector
        memo.every_library = every_library_watch(api, controller, selector, namespaces, clusterwide)
    health = await start_health_server(args.liveness, controller)
    try:
        await kopf.operator(
            registry=handlers.registry,
            memo=memo,
            standalone=True,
            clusterwide=clusterwide,
            identity=cast(Any, f"redis-functions-operator@{socket.gethostname()}"),  # not getpass: no passwd entry
            namespaces=namespaces,
        )
    finally:
        if health is not None:
            await health.cleanup()


def every_library_watch(
    api: k8s.ApiClient, controller: Controller, selector: LabelSelector, namespaces: list[str], clusterwide: bool
) -> EveryLibraryWatch:
    """The read-only watch of every library in the namespaces kopf follows: one per exact name; one cluster-wide,
    narrowed by kopf's own namespace matcher, for all namespaces or patterns (which need a cluster-wide list)."""
    deliver = functools.partial(handlers.library_elsewhere_event, controller, selector)
    patterns = [ns for ns in namespaces if set(ns) & set("*?[!,")]
    if clusterwide:
        return EveryLibraryWatch(api, None, deliver)
    if not patterns:
        return EveryLibraryWatch(api, namespaces, deliver)

    def in_scope(namespace: str) -> bool:
        return any(match_namespace(NamespaceName(namespace), pattern) for pattern in namespaces)

    return EveryLibraryWatch(api, None, deliver, in_scope)


async def start_health_server(address: str | None, controller: Controller) -> web.AppRunner | None:
    """``GET /healthz``: 200 with the controller's figures, 503 when its work queue is stuck (and no answer at all
    when the event loop is blocked: the server runs on the same loop). ``GET /metrics``: Prometheus text format."""
    if not address:
        return None
    endpoint = Endpoint.parse(address, default_port=8080)

    async def healthz(_: web.Request) -> web.Response:
        report = controller.health()
        return web.json_response(report, status=200 if report["healthy"] else 503)

    async def metrics_page(_: web.Request) -> web.Response:
        body = metrics.render(controller.refresh_metrics)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/metrics", metrics_page)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, endpoint.host, endpoint.port).start()
    log.info("health endpoint on http://%s/healthz", endpoint)
    return runner


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attr in ("k8s_ref", "object"):
            if hasattr(record, attr):
                entry[attr] = getattr(record, attr)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(fmt: str, verbose: bool) -> None:
    """Human or JSON logs on stderr, for our loggers and kopf's alike. Never debug by default: kopf's debug logs
    include object bodies."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.FULL)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)-28.28s [%(levelname)-7s] %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("kubernetes", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # kopf logs "Handler 'library_event' succeeded" for every watch event of every Secret, ConfigMap and
        # library: the operator's own log lines say what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
