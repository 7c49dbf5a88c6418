"""``redis/sync.py`` ``check``: the read-only half of the engine that ``driftPolicy: Report`` and
``managementPolicy: Observe`` use. Against a real server: it names what each primary holds and writes nothing (the
server's own command statistics say so)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redis_functions_operator.library import vet
from redis_functions_operator.redis.connect import Endpoint, Mode, Target
from redis_functions_operator.redis.sync import Outcome, check
from tests.support import redis_servers as rs

WRITES = ("function|load", "function|delete", "function|flush", "function|restore")


def writes(server: rs.RedisServer) -> dict[str, int]:
    stats = server.info("commandstats")
    return {c: int((stats.get(f"cmdstat_{c}") or {}).get("calls", 0)) for c in WRITES}


@pytest.mark.parametrize("flavor", rs.FLAVORS)
async def test_check_names_what_differs_and_writes_nothing(
    server_factory: Callable[..., rs.RedisServer], flavor: str, unique_name: str
) -> None:
    server = server_factory(flavor)
    code = f"#!lua name={unique_name}\nredis.register_function('{unique_name}_f', function() return 1 end)\n"
    other = code.replace("return 1", "return 2")
    library = vet(code).library
    target = Target((Endpoint.parse(server.address),), Mode.STANDALONE)
    admin = server.client()

    admin.execute_command("FUNCTION", "LOAD", code)
    before = writes(server)
    held = await check(library, target)
    assert held.ok and [n.outcome for n in held.nodes] == [Outcome.UNCHANGED]

    admin.execute_command("FUNCTION", "LOAD", "REPLACE", other)
    replaced = await check(library, target)
    [node] = replaced.nodes
    assert (node.outcome, node.before_sha256) == (Outcome.DRIFTED, vet(other).library.sha256)
    assert not replaced.ok and not replaced.permanent and replaced.error is None and replaced.drifted == (node,)

    admin.execute_command("FUNCTION", "DELETE", unique_name)
    [gone] = (await check(library, target)).nodes
    assert (gone.outcome, gone.before_sha256) == (Outcome.DRIFTED, None)

    expected = dict(
        before, **{"function|load": before["function|load"] + 1, "function|delete": before["function|delete"] + 1}
    )
    assert writes(server) == expected  # only our own LOAD REPLACE and DELETE
    assert unique_name not in server.function_libraries()
