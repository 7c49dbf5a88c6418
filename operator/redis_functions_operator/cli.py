"""The command-line tool. Placeholder until the sync engine lands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("redis-functions-operator: not yet", file=sys.stderr)
    return 2
