"""A library far larger than the server's ``proto-max-bulk-len``: the server drops the connection while the library
is still being sent (for a payload well over the limit the reset arrives before its "invalid bulk length" reply;
measured 20 of 20 on every server of the matrix by tests/redis/test_errors_per_server.py). That is no crash — no
library code ran — so it must read PayloadTooLarge, permanent, not NodeLostDuringLoad ("may crash the server")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redis_functions_operator.library import parse_library
from redis_functions_operator.redis import sync as engine
from redis_functions_operator.redis.connect import Endpoint, Mode, Target
from redis_functions_operator.redis.errors import ErrorKind
from tests.support import redis_servers as rs

pytestmark = [pytest.mark.redis]


@pytest.mark.parametrize("flavor", rs.FLAVORS)
async def test_a_library_over_the_servers_bulk_limit_is_payload_too_large(
    server_factory: Callable[..., rs.RedisServer], flavor: str
) -> None:
    server = server_factory(flavor, extra_config={"proto-max-bulk-len": "1mb"})
    filler = "x" * (9 << 20)
    library = parse_library(f"#!lua name=big\nredis.register_function('big_f', function() return '{filler}' end)\n")
    result = await engine.sync(library, Target((Endpoint.parse(server.address),), Mode.STANDALONE))
    assert result.error is not None and result.error.kind is ErrorKind.PAYLOAD_TOO_LARGE and result.permanent
    assert "proto-max-bulk-len" in result.error.message and f"{len(library.code):,} bytes" in result.error.message
    assert server.is_running() and server.function_libraries() == {}
