"""The issue's benchmark: the sync engine (and the CLI) against ``redis-cli --cluster call ... FUNCTION LOAD REPLACE``.

One private 3-primary/3-replica cluster (started by the test harness in a temp dir, stopped at the end), three
scenarios measured in the same run:

1. one ~2 KB library (8 functions) onto every primary, a new version each run;
2. 100 such libraries, a new version of each per run;
3. a no-op re-sync of those 100 (all already correct).

Each scenario is measured with the methods below, interleaved round by round (the order rotates every round) so a
slow patch of the machine hits every method alike:

* ``redis-cli``: ``redis-cli --cluster-only-masters --cluster call 127.0.0.1:P FUNCTION LOAD REPLACE <code>`` as a
  subprocess (a loop of 100 of them for scenario 2). It does no verification and exits 0 even when a node refuses
  the code.
* ``engine, fresh connector``: ``await sync(...)`` / ``await sync_many(...)`` in-process with a new ``Connector`` per
  measured operation, so topology discovery and connection set-up are included, as they are for a redis-cli process.
  Every primary is read before and verified after. This is the like-for-like comparison, and the one the goals are
  judged on.
* ``engine, warm connector``: the same with one ``Connector`` kept across runs (topology is still re-discovered on
  every call); this is how the operator runs.
* ``CLI process``: ``redis-functions-operator sync --redis URL FILE|DIR``, Python start-up included.

After every measured operation (outside the timing), each primary is read back to check that the expected code is
there, whichever method loaded it; an engine result that is not ``ok`` aborts the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support (the real-server harness)
sys.path.append(str(REPO / "operator"))  # the package, if it is not installed (a PYTHONPATH copy wins)

import redis  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

import redis_functions_operator  # noqa: E402
from redis_functions_operator.library import Library, parse_library  # noqa: E402
from redis_functions_operator.redis.connect import Connector, Endpoint, Target  # noqa: E402
from redis_functions_operator.redis.sync import Outcome, SyncResult, parse_function_list, sync, sync_many  # noqa: E402
from tests.support.redis_servers import Cluster, server_binary, start_cluster  # noqa: E402

CLI = REPO / ".venv" / "bin" / "redis-functions-operator"
#: 1-minute load average above which the machine is reported as busy (the benchmark itself adds about 1).
BUSY_LOAD = 0.7
REDIS_CLI_NOTE = "redis-cli does no verification and exits 0 even when a node refuses the code"

# --- the library under test ----------------------------------------------------------------------------------------

_TEMPLATE = """\
#!lua name={lib}
-- Counters, quotas, a leaderboard. Release {version}.

local function fail(details)
  return redis.error_reply('BADARG ' .. details)
end

-- A whole number in decimal digits, or nil.
local function int_arg(value)
  if type(value) ~= 'string' or not value:match('^%-?%d+$') then
    return nil
  end
  return tonumber(value)
end

local function incr(keys, args)
  local by = int_arg(args[2] or '1')
  if by == nil then
    return fail('bad increment')
  end
  return redis.call('HINCRBY', keys[1], args[1], by)
end

local function get(keys, args)
  return tonumber(redis.call('HGET', keys[1], args[1]) or '0')
end

local function reset(keys, args)
  local old = redis.call('HGET', keys[1], args[1]) or '0'
  redis.call('HDEL', keys[1], args[1])
  return tonumber(old)
end

-- Fixed-window quota: limit, seconds.
local function take(keys, args)
  local limit, window = int_arg(args[1]), int_arg(args[2])
  if limit == nil or window == nil or window < 1 then
    return fail('bad limit or window')
  end
  local used = redis.call('INCR', keys[1])
  if used == 1 then
    redis.call('EXPIRE', keys[1], window)
  end
  return used <= limit and 1 or 0
end

local function score(keys, args)
  local points = int_arg(args[2])
  if points == nil then
    return fail('bad points')
  end
  return redis.call('ZINCRBY', keys[1], points, args[1])
end

local function top(keys, args)
  local n = int_arg(args[1] or '10') or 10
  return redis.call('ZRANGE', keys[1], 0, n - 1, 'REV', 'WITHSCORES')
end

local function rank(keys, args)
  local r = redis.call('ZREVRANK', keys[1], args[1])
  return r and r + 1 or nil
end

local function version()
  return '{version}'
end

local ro = {{'no-writes'}}
redis.register_function('{fn}_incr', incr)
redis.register_function{{function_name='{fn}_get', callback=get, flags=ro}}
redis.register_function('{fn}_reset', reset)
redis.register_function('{fn}_take', take)
redis.register_function('{fn}_score', score)
redis.register_function{{function_name='{fn}_top', callback=top, flags=ro}}
redis.register_function{{function_name='{fn}_rank', callback=rank, flags=ro}}
redis.register_function{{function_name='{fn}_version', callback=version, flags=ro}}
"""


def library(name: str, version: int) -> Library:
    """A valid ~2 KB library with 8 functions whose names are derived from the library's (so they never clash)."""
    prefix = name.removeprefix("bench_")
    return parse_library(_TEMPLATE.format(lib=name, fn=prefix, version=f"v{version}"))


def _kib(name: str) -> str:
    return f"{library(name, 1).size / 1024:.1f} KiB"


class Versions:
    """Hands out a new version number per load so every measured load really changes the code."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> int:
        self._next += 1
        return self._next


# --- statistics ----------------------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def p10_p90(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        cuts = statistics.quantiles(self.samples, n=10, method="inclusive")
        return cuts[0], cuts[-1]


def _ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


# --- the methods ---------------------------------------------------------------------------------------------------


def redis_cli_load(seed: Endpoint, code: bytes) -> float:
    """One ``redis-cli --cluster call`` process; returns its wall time. Its exit code says nothing (always 0)."""
    command = [
        "redis-cli",
        "--cluster-only-masters",
        "--cluster",
        "call",
        str(seed),
        "FUNCTION",
        "LOAD",
        "REPLACE",
        os.fsdecode(code),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or b"ERR" in done.stdout:
        raise RuntimeError(f"redis-cli failed: {done.stdout[-300:]!r} {done.stderr[-300:]!r}")
    return elapsed


def cli_sync(seed: Endpoint, paths: Sequence[Path]) -> float:
    """One ``redis-functions-operator sync`` process; returns its wall time. Exit 0 means every primary verified."""
    command = [str(CLI), "sync", "--redis", f"redis://{seed}", *map(str, paths)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"CLI sync exited {done.returncode}: {done.stdout[-500:]!r} {done.stderr[-500:]!r}")
    return elapsed


def process_floor(command: Sequence[str], runs: int = 5) -> float:
    """Median wall time of a process that does nothing useful (start-up cost alone), after one warm-up."""
    subprocess.run(command, capture_output=True, check=True)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def _timed(operation: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await operation()
    return time.perf_counter() - start, result


def _check_engine(results: Sequence[SyncResult], expected: Outcome) -> None:
    for result in results:
        if not result.ok:
            raise RuntimeError(f"engine sync of {result.library} failed: {result.error}")
        outcomes = {n.outcome for n in result.nodes}
        if outcomes != {expected} or len(result.nodes) != 3:
            raise RuntimeError(f"{result.library}: expected {expected} on 3 primaries, got {outcomes}")


# --- the benchmark -------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    title: str
    runs: int
    series: dict[str, Series]
    baseline: str
    goal: float | None = None
    note: str = ""


METHODS = {
    "redis-cli": "redis-cli --cluster call (no verification)",
    "engine-fresh": "engine, fresh Connector (verified)",
    "engine-warm": "engine, warm Connector (verified)",
    "cli": "CLI process (verified, Python start-up incl.)",
}


class Bench:
    def __init__(self, cluster: Cluster, workdir: Path, runner: asyncio.Runner, *, libraries: int) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.runner = runner
        self.primaries = [redis.Redis(host=p.host, port=p.port, protocol=2) for p in cluster.primaries()]
        self.seed = Endpoint(cluster.primaries()[0].host, cluster.primaries()[0].port)
        self.target = Target((self.seed,))
        self.warm = Connector(self.target)
        self.run_id = secrets.token_hex(3)
        self.version = Versions()
        self.count = libraries
        self.many_names = [f"bench_{self.run_id}_{i:03d}" for i in range(libraries)]

    def close(self) -> None:
        self.runner.run(self.warm.aclose())
        for client in self.primaries:
            client.close()

    # -- checks (never timed) --

    def check_loaded(self, libraries: Sequence[Library]) -> None:
        """Every primary holds exactly these codes (whoever loaded them)."""
        wanted = {lib.name: lib.code for lib in libraries}
        for client in self.primaries:
            command = ["FUNCTION", "LIST", "WITHCODE"]
            if len(wanted) == 1:
                command[2:2] = ["LIBRARYNAME", next(iter(wanted))]
            reply = client.execute_command(*command)  # type: ignore[no-untyped-call]
            held = {e.name: e.code for e in parse_function_list(reply) if e.name in wanted}
            if held != wanted:
                missing = sorted(n for n in wanted if held.get(n) != wanted[n])[:3]
                port = client.get_connection_kwargs()["port"]
                raise RuntimeError(f"primary :{port} does not hold the expected code of {missing}")

    # -- one measured operation per method --

    def engine(self, libraries: Sequence[Library], *, warm: bool, expected: Outcome) -> float:
        connector = self.warm if warm else None
        if len(libraries) == 1:

            async def operation() -> list[SyncResult]:
                return [await sync(libraries[0], self.target, connector=connector)]
        else:

            async def operation() -> list[SyncResult]:
                return await sync_many(libraries, self.target, connector=connector)

        elapsed, results = self.runner.run(_timed(operation))
        _check_engine(results, expected)
        return float(elapsed)

    def write_files(self, libraries: Sequence[Library]) -> list[Path]:
        folder = Path(tempfile.mkdtemp(prefix="libs-", dir=self.workdir))
        paths = []
        for lib in libraries:
            path = folder / f"{lib.name}.lua"
            path.write_bytes(lib.code)
            paths.append(path)
        return paths

    def measure(self, method: str, libraries: Sequence[Library], *, expected: Outcome) -> float:
        if method == "redis-cli":
            return sum(redis_cli_load(self.seed, lib.code) for lib in libraries)
        if method == "engine-fresh":
            return self.engine(libraries, warm=False, expected=expected)
        if method == "engine-warm":
            return self.engine(libraries, warm=True, expected=expected)
        if method == "cli":
            paths = self.write_files(libraries)
            target = [paths[0].parent] if len(paths) > 1 else paths
            return cli_sync(self.seed, target)
        raise ValueError(method)

    def rounds(self, scenario: Scenario, make: Callable[[], list[Library]], expected: Outcome) -> None:
        methods = list(scenario.series)
        for index in range(scenario.runs + 1):  # round 0 is a warm-up, not recorded
            order = methods[index % len(methods) :] + methods[: index % len(methods)]
            for method in order:
                libraries = make()
                elapsed = self.measure(method, libraries, expected=expected)
                self.check_loaded(libraries)
                if index > 0:
                    scenario.series[method].samples.append(elapsed)
            if sys.stdout.isatty():
                print(f"  round {index}/{scenario.runs}" if index else "  warm-up done", end="\r", flush=True)
        if sys.stdout.isatty():
            print(" " * 40, end="\r")

    # -- the three scenarios --

    def single(self, runs: int) -> Scenario:
        name = f"bench_{self.run_id}_one"
        scenario = Scenario(
            "single",
            f"(1) one {_kib(name)} library (8 functions) -> 3 primaries, a new version each run",
            runs,
            {m: Series(METHODS[m]) for m in METHODS},
            baseline="redis-cli",
            goal=1.0,
        )
        self.rounds(scenario, lambda: [library(name, self.version())], Outcome.LOADED)
        return scenario

    def many(self, runs: int) -> Scenario:
        scenario = Scenario(
            "many",
            f"(2) {self.count} libraries of {_kib(self.many_names[0])} -> 3 primaries, a new version of each per run",
            runs,
            {m: Series(METHODS[m] if m != "redis-cli" else f"loop of {self.count} redis-cli calls") for m in METHODS},
            baseline="redis-cli",
            goal=0.3,
        )

        def make() -> list[Library]:
            version = self.version()
            return [library(n, version) for n in self.many_names]

        self.rounds(scenario, make, Outcome.LOADED)
        self.last_many = make()
        return scenario

    def noop(self, runs: int, baseline: Series) -> Scenario:
        current = self.last_many
        self.runner.run(sync_many(current, self.target))  # make sure this exact version is everywhere
        self.check_loaded(current)
        methods = [m for m in METHODS if m != "redis-cli"]
        scenario = Scenario(
            "noop",
            f"(3) no-op re-sync of the {self.count} (all already correct: read + verify, nothing loaded)",
            runs,
            {m: Series(METHODS[m]) for m in methods},
            baseline="redis-cli",
            note=f"baseline: the loop of {self.count} redis-cli calls from (2) (redis-cli cannot tell it is a no-op)",
        )
        self.rounds(scenario, lambda: current, Outcome.UNCHANGED)
        scenario.series = {"redis-cli": baseline, **scenario.series}
        return scenario


# --- reporting -----------------------------------------------------------------------------------------------------


def print_scenario(scenario: Scenario, out: Any = sys.stdout) -> None:
    base = scenario.series[scenario.baseline].median
    print(f"\n{scenario.title}; {scenario.runs} runs", file=out)
    if scenario.note:
        print(f"  {scenario.note}", file=out)
    header = f"  {'method':<48} {'median ms':>10} {'p10-p90 ms':>18} {'ours/redis-cli':>15}"
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for key, series in scenario.series.items():
        lo, hi = series.p10_p90()
        if key == scenario.baseline:
            ratio = "(baseline)"
        else:
            value = series.median / base
            ratio = f"{value:.2f}x"
            if scenario.goal is not None and key in ("engine-fresh", "cli"):
                ratio += "  met" if value <= scenario.goal else "  MISSED"
        spread = f"{_ms(lo)}-{_ms(hi)}"
        print(f"  {series.label:<48} {_ms(series.median):>10} {spread:>18} {ratio:>15}", file=out)
    if scenario.goal is not None:
        print(f"  goal: engine (fresh Connector) <= {scenario.goal:.1f}x redis-cli", file=out)


def _version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    words = done.stdout.split()
    found = next((w for w in words if w.startswith("v=")), None)
    return found[2:] if found else (words[1] if len(words) > 1 else "?")


def environment(flavor: str) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} vCPU ({cpu}), {platform.system()} {platform.release()}",
        "server": f"{flavor} {_version(server_binary(flavor))}",
        "redis-cli": _version(shutil.which("redis-cli") or "redis-cli"),
        "python": platform.python_version(),
        "redis-py": f"{redis.__version__}, {'hiredis' if HIREDIS_AVAILABLE else 'pure-Python'} parser",
        "package": str(Path(redis_functions_operator.__file__).parent),
    }


# --- entry point ---------------------------------------------------------------------------------------------------


def run(flavor: str, *, single_runs: int, many_runs: int, noop_runs: int, libraries: int) -> dict[str, Any]:
    env = environment(flavor)
    load_before = os.getloadavg()[0]
    print(f"== {env['server']} cluster, 3 primaries + 3 replicas on 127.0.0.1 ==")
    print(f"   {env['machine']}; redis-cli {env['redis-cli']}; Python {env['python']}; {env['date']}")
    print(f"   redis-py {env['redis-py']}; package {env['package']}")
    print(f"   note: {REDIS_CLI_NOTE}.")
    print("   engine rows: in-process sync()/sync_many(), every primary read before and verified after;")
    print("   'fresh' = new Connector per operation (discovery + connections included), 'warm' = one kept Connector.")
    print(f"   load average before the run: {load_before:.2f}")
    if load_before > BUSY_LOAD:
        print("   WARNING: the machine is busy with other work; every figure below is noisier and slower than usual.")
    with tempfile.TemporaryDirectory(prefix="rfo-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        cluster = start_cluster(flavor, base_dir=workdir / "servers")
        print(f"   cluster up in {time.perf_counter() - started:.1f} s")
        try:
            with asyncio.Runner() as runner:
                bench = Bench(cluster, workdir, runner, libraries=libraries)
                try:
                    floors = {
                        "redis-cli --version": process_floor(["redis-cli", "--version"]),
                        "redis-functions-operator --version": process_floor([str(CLI), "--version"]),
                    }
                    one = bench.single(single_runs)
                    print_scenario(one)
                    many = bench.many(many_runs)
                    print_scenario(many)
                    noop = bench.noop(noop_runs, many.series["redis-cli"])
                    print_scenario(noop)
                finally:
                    bench.close()
        finally:
            cluster.stop()
    print("\n  process start-up alone (median of 5): " + ", ".join(f"{k} {_ms(v)} ms" for k, v in floors.items()))
    load_after = os.getloadavg()[0]
    print(f"  load average after the run: {load_after:.2f}")
    return {
        "environment": {**env, "load_before": round(load_before, 2), "load_after": round(load_after, 2)},
        "process_floor_ms": {k: round(v * 1000, 2) for k, v in floors.items()},
        "scenarios": {s.key: _scenario_json(s) for s in (one, many, noop)},
    }


def _scenario_json(scenario: Scenario) -> dict[str, Any]:
    base = scenario.series[scenario.baseline].median
    rows = {}
    for key, series in scenario.series.items():
        lo, hi = series.p10_p90()
        rows[key] = {
            "label": series.label,
            "median_ms": round(series.median * 1000, 2),
            "p10_ms": round(lo * 1000, 2),
            "p90_ms": round(hi * 1000, 2),
            "ratio": round(series.median / base, 3),
            "runs": len(series.samples),
        }
    return {"title": scenario.title, "goal": scenario.goal, "rows": rows}


def markdown(report: dict[str, Any], command: str) -> str:
    """The figures as Markdown tables (what docs/performance.md shows), one table per flavor."""
    lines: list[str] = []
    for figures in report.values():
        env = figures["environment"]
        package = env.get("package", "")
        copy = f"package imported from `{package}`; " if package and not package.startswith(str(REPO)) else ""
        lines += [
            f"### {env['server']}",
            "",
            f"`{command}` — {env['date']}; {env['machine']}; redis-cli {env['redis-cli']}; Python {env['python']}; "
            f"redis-py {env.get('redis-py', '?')}; {copy}"
            f"load average {env['load_before']} before, {env['load_after']} after.",
            "",
            "| scenario | method | runs | median ms | p10–p90 ms | ours / redis-cli | goal |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for scenario in figures["scenarios"].values():
            title = scenario["title"].split(" -> ")[0].split(" (all")[0]
            for key, row in scenario["rows"].items():
                goal = ""
                if scenario["goal"] is not None and key in ("engine-fresh", "cli"):
                    verdict = "met" if row["ratio"] <= scenario["goal"] else "**missed**"
                    goal = f"≤ {scenario['goal']:.1f}×: {verdict}"
                ratio = "baseline" if key == "redis-cli" else f"{row['ratio']:.2f}×"
                lines.append(
                    f"| {title} | {row['label']} | {row['runs']} | {row['median_ms']:.1f} "
                    f"| {row['p10_ms']:.1f}–{row['p90_ms']:.1f} | {ratio} | {goal} |"
                )
        floors = ", ".join(f"`{k}` {v:.0f} ms" for k, v in figures["process_floor_ms"].items())
        lines += ["", f"Process start-up alone (median of 5): {floors}.", ""]
    return "\n".join(lines)


def _measuring_args(argv: Sequence[str] | None) -> list[str]:
    """The command-line arguments that change what is measured (not where the figures are written)."""
    given = list(argv if argv is not None else sys.argv[1:])
    kept: list[str] = []
    skip = False
    for arg in given:
        if skip:
            skip = False
        elif arg in ("--json", "--markdown"):
            skip = True
        elif not arg.startswith(("--json=", "--markdown=")):
            kept.append(arg)
    return kept


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--valkey", action="store_true", help="run on a Valkey cluster instead of Redis")
    which.add_argument("--both", action="store_true", help="run on Redis, then on Valkey")
    parser.add_argument("--single-runs", type=int, default=15, help="runs of scenario (1) (default 15)")
    parser.add_argument("--many-runs", type=int, default=5, help="runs of scenarios (2) and (3) (default 5)")
    parser.add_argument("--libraries", type=int, default=100, help="libraries in scenarios (2)/(3) (default 100)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write them as Markdown tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not shutil.which("redis-cli"):
        print("error: redis-cli not found (run ./scripts/bootstrap.sh)", file=sys.stderr)
        return 2
    if not CLI.exists():
        print(f"error: {CLI} not found (run ./scripts/bootstrap.sh)", file=sys.stderr)
        return 2
    flavors = ["redis", "valkey"] if args.both else (["valkey"] if args.valkey else ["redis"])
    report = {}
    for flavor in flavors:
        report[flavor] = run(
            flavor,
            single_runs=args.single_runs,
            many_runs=args.many_runs,
            noop_runs=args.many_runs,
            libraries=args.libraries,
        )
        print()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.markdown:
        command = " ".join([".venv/bin/python bench/run.py", *_measuring_args(argv)])
        args.markdown.write_text(markdown(report, command) + "\n")
        print(f"tables written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
