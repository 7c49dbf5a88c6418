"""How long the vet takes, and how long the CLI takes to start (figures, not a test; see docs/performance.md).

    .venv/bin/python bench/vet_speed.py

* vet of a ~2 KiB library (a prefix of lua/mylib.lua made whole), and of ~1 MiB of realistic code (the five lua/
  libraries repeated, each copy's functions renamed): median of many runs, the sha256 cache bypassed;
* CLI start-up: ``redis-functions-operator --version`` and ``lint lua/`` as processes, median of 15.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

from redis_functions_operator.library.vet import _vet  # noqa: E402  (uncached, on purpose)

LUA = REPO / "lua"


def small_library() -> bytes:
    """The engine benchmark's library: ~2.2 KiB, 8 functions, comments and flags."""
    from engine_vs_redis_cli import library

    return library("vetted", 1).code


def _renamed(body: bytes, copy: int) -> bytes:
    prefix = b"c%d_" % copy
    return re.sub(rb"(function_name\s*=\s*['\"]|register_function\(\s*['\"])", lambda m: m.group(1) + prefix, body)


def big_library(size: int = 1 << 20) -> bytes:
    bodies = []
    for path in sorted(LUA.glob("*.lua")):
        text = path.read_bytes()
        bodies.append(text[text.index(b"\n") :])
    parts, copy = [b"#!lua name=big"], 0
    while sum(map(len, parts)) < size:
        for body in bodies:
            parts.append(b"\ndo" + _renamed(body, copy) + b"\nend\n")
            copy += 1
    return b"".join(parts)


def timed(code: bytes, runs: int) -> float:
    _vet(code)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        _vet(code)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def process(*args: str) -> float:
    """Median wall time of the CLI as a process (the engine benchmark's own timer)."""
    from engine_vs_redis_cli import process_floor

    return process_floor([str(REPO / ".venv" / "bin" / "redis-functions-operator"), *args], runs=15)


def main() -> int:
    small, big = small_library(), big_library()
    print(
        f"vet, {len(small):,} bytes ({len(_vet(small).library.functions)} functions): {timed(small, 500) * 1e3:.2f} ms"
    )
    print(f"vet, {len(big):,} bytes ({len(_vet(big).library.functions)} functions): {timed(big, 15) * 1e3:.1f} ms")
    print(f"CLI --version: {process('--version') * 1e3:.0f} ms")
    print(f"CLI lint lua/: {process('lint', str(LUA)) * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
