"""``make bench``: run the benchmarks and print their figures (see bench/README.md and docs/performance.md).

Not a test: nothing here fails on a slow figure. It exits non-zero only when a benchmark could not run (no
redis-cli, a sync that did not verify, a cluster that did not start).

    .venv/bin/python bench/run.py                 # Redis 7 cluster (the issue's benchmark), ~1 minute
    .venv/bin/python bench/run.py --valkey        # the same on a Valkey cluster
    .venv/bin/python bench/run.py --both --json out.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_vs_redis_cli

if __name__ == "__main__":
    sys.exit(engine_vs_redis_cli.main())
