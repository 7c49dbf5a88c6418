"""Prometheus metrics, served at ``/metrics`` next to ``/healthz``. Every metric is documented in ``docs/metrics.md``.

Label values are bounded: outcomes and states are small enums, reasons are :class:`ErrorKind` values or the spec
layer's PascalCase reasons, commands are command names (never arguments), and ``target`` is the target's seed list
as written in specs (one value per distinct target).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from redis_functions_operator.redis.connect import add_command_observer

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

PREFIX = "redis_functions_operator"

RECONCILES = Counter(
    f"{PREFIX}_reconciles",
    "Reconciles by outcome: verified, transient, permanent, drifted, paused, error (an unexpected exception).",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Time of one reconcile, by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
LIBRARIES = Gauge(
    f"{PREFIX}_libraries",
    "RedisFunctionLibrary objects by state: ready, reconciling, stalled, drifted, paused.",
    ["state"],
    registry=REGISTRY,
)
DRIFT_REPAIRS = Counter(
    f"{PREFIX}_drift_repairs",
    "Primaries repaired because they lacked the library (missing) or held other code (different).",
    ["reason"],
    registry=REGISTRY,
)
DRIFT_DETECTED = Counter(
    f"{PREFIX}_drift_detected",
    "Primaries found without the library (missing) or with other code (different) and left as found, by "
    "driftPolicy Report or managementPolicy Observe; counted once per drift, not per resync.",
    ["reason"],
    registry=REGISTRY,
)
LOAD_FAILURES = Counter(
    f"{PREFIX}_load_failures",
    "Failed FUNCTION LOADs (or reads) per target and reason.",
    ["target", "reason"],
    registry=REGISTRY,
)
REDIS_COMMANDS = Counter(
    f"{PREFIX}_redis_commands",
    "Redis commands sent, by command and result (ok, error).",
    ["command", "result"],
    registry=REGISTRY,
)
REDIS_SECONDS = Histogram(
    f"{PREFIX}_redis_command_duration_seconds",
    "Redis round-trip latency by command.",
    ["command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)
TARGET_CHANGES = Counter(
    f"{PREFIX}_target_changes",
    "Times a target watcher saw the deployment move (flush, restart, failover, new primary, slots, reachability).",
    registry=REGISTRY,
)
SHARED_LISTING_SYNCS = Counter(
    f"{PREFIX}_shared_listing_syncs",
    "Reconciles woken by a target change that took their first read from a listing shared by the burst.",
    registry=REGISTRY,
)
REFERENCE_READS = Counter(
    f"{PREFIX}_reference_reads",
    "Secret/ConfigMap reads by where the answer came from: watch (the watch's copy) or api (a GET).",
    ["kind", "source"],
    registry=REGISTRY,
)
WATCHED_TARGETS = Gauge(f"{PREFIX}_watched_targets", "Distinct targets being watched.", registry=REGISTRY)
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_depth", "Objects scheduled in the work queue.", registry=REGISTRY)

STATES = ("ready", "reconciling", "stalled", "drifted", "paused")


_CommandSeries = tuple[Counter, Counter, Histogram]
#: Each command name's labelled series, looked up once: every watcher poll counts three commands, and ``labels()``
#: (a lock and a key built per call) was a third of a poll's CPU with hundreds of targets.
_COMMAND_SERIES: dict[str, _CommandSeries] = {}


def _observe_command(command: str, seconds: float, ok: bool) -> None:
    series = _COMMAND_SERIES.get(command)
    if series is None:
        series = _COMMAND_SERIES[command] = (
            REDIS_COMMANDS.labels(command, "ok"),
            REDIS_COMMANDS.labels(command, "error"),
            REDIS_SECONDS.labels(command),
        )
    (series[0] if ok else series[1]).inc()
    series[2].observe(seconds)


def install() -> None:
    """Start counting Redis commands (idempotent enough: called once at operator start)."""
    add_command_observer(_observe_command)
    for state in STATES:
        LIBRARIES.labels(state).set(0)


def set_library_states(counts: dict[str, int]) -> None:
    for state in STATES:
        LIBRARIES.labels(state).set(counts.get(state, 0))


def render(refresh: Callable[[], None] | None = None) -> bytes:
    if refresh is not None:
        refresh()
    return generate_latest(REGISTRY)
