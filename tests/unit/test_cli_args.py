"""The CLI spells a few engine values itself so that it starts without importing the engine; they must agree."""

from __future__ import annotations

import subprocess
import sys

from redis_functions_operator import cli
from redis_functions_operator.library.support import SERVERS
from redis_functions_operator.redis.connect import Mode
from redis_functions_operator.redis.dump import RestorePolicy
from redis_functions_operator.redis.sync import Outcome


def test_choices_are_the_engines_values() -> None:
    assert set(cli.MODES) == {m.value for m in Mode} and cli.MODES[0] == Mode.AUTO.value
    assert set(cli.RESTORE_POLICIES) == {p.value for p in RestorePolicy}
    assert cli.RESTORE_POLICIES[0] == RestorePolicy.APPEND.value
    assert Outcome.ROLLED_BACK.value == "RolledBack"  # print_sync_result compares the text
    assert tuple(SERVERS) == cli.SERVER_NAMES


def test_start_up_and_lint_import_neither_redis_nor_asyncio() -> None:
    probe = (
        "import sys\nfrom redis_functions_operator import cli\n"
        "cli.main(['lint', 'lua/'])\n"
        "print(sorted(m for m in ('redis', 'asyncio', 'kopf', 'kubernetes') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
