"""``redis/dump.py``: the dump file's record and which payload formats a server reads (measured on the matrix:
``tests/redis/test_dump_across_servers.py`` checks each rule on the real servers)."""

from __future__ import annotations

import pytest

from redis_functions_operator.library.support import Server
from redis_functions_operator.redis.dump import DUMP_FILE_MAGIC, Dump, decode_dump_file, encode_dump_file, reads_format


def payload(version: int) -> bytes:
    return b"\xf5\xc3" + b"body" + version.to_bytes(2, "little") + b"\x00" * 8


def test_a_record_round_trips_byte_exact_code_and_payload() -> None:
    code = b"#!lua name=a\r\nredis.register_function('f', function() return '\xff\x00' end)\n"
    taken = Dump(payload(11), "10.0.0.1:6379", Server("valkey", "8.0.1"), (("a", code),), recorded=True)
    data = encode_dump_file(taken)
    assert data.startswith(DUMP_FILE_MAGIC) and data.endswith(taken.payload)
    assert decode_dump_file(data) == taken
    assert decode_dump_file(data).format == 11


def test_a_bare_payload_is_read_as_it_is_and_says_so() -> None:
    bare = decode_dump_file(payload(12))
    assert bare == Dump(payload(12)) and not bare.recorded and bare.format == 12


@pytest.mark.parametrize(
    ("own", "written", "reads"),
    [
        (10, 10, True),  # Redis 7.0 reads its own
        (10, 11, False),  # ... and nothing newer
        (12, 11, True),  # Redis 7.4 reads Redis 7.2 and Valkey 7.2/8.0
        (11, 12, False),  # Valkey 8.0 does not read Redis 7.4
        (80, 11, True),  # Valkey 9 reads the shared formats
        (80, 10, True),
        (80, 12, False),  # ... but not Redis 7.4+'s
        (80, 80, True),
        (12, 80, False),  # and nobody else reads Valkey 9's
    ],
)
def test_which_formats_a_server_reads(own: int, written: int, reads: bool) -> None:
    assert reads_format(own, written) is reads
