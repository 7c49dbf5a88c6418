"""The library model: shebang parsing with Redis' exact wording, exact bytes and sha256.

Every shebang case of ``docs/redis-facts.md`` F8 (plus the ``sdssplitargs`` corners that once disagreed with Redis) is
checked here without a server, and once more against a real redis-server 7.0 (``test_parser_agrees_with_redis``), so the
expected messages below are the server's, not ours.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import pytest
import redis

from redis_functions_operator.library import vet
from redis_functions_operator.library.model import (
    MSG_BAD_NAME,
    MSG_INVALID_METADATA,
    MSG_MISSING_METADATA,
    MSG_NAME_NOT_GIVEN,
    MSG_NAME_TWICE,
    LibraryError,
    RegisteredFunction,
    as_bytes,
    code_sha256,
    parse_library,
    parse_shebang,
    split_args,
)
from tests.support import redis_servers as rs


@dataclass(frozen=True)
class Case:
    id: str
    shebang: bytes  # the first line, without the body; "SFX" is replaced by a per-run suffix
    name: bytes | None = None  # expected library name when accepted ("SFX" replaced too)
    error: str | None = None  # expected Redis message when refused
    body: bool = True  # append "\n" + a function registration

    def source(self, sfx: bytes, function: bytes) -> bytes:
        head = self.shebang.replace(b"SFX", sfx)
        if not self.body:
            return head
        return head + b"\nredis.register_function('" + function + b"', function() return 1 end)\n"

    def expected_name(self, sfx: bytes) -> str | None:
        return None if self.name is None else self.name.replace(b"SFX", sfx).decode()


LONG = b"L" * 996  # + "_" + a 3-character suffix = a 1000-character name

CASES = [
    # refused (docs/redis-facts.md F8; wording in docs/errors.md)
    Case("no-shebang", b"local x = 1", error=MSG_MISSING_METADATA),
    Case("bom", b"\xef\xbb\xbf#!lua name=bom_SFX", error=MSG_MISSING_METADATA),
    Case("leading-blank-line", b"\n#!lua name=blank_SFX", error=MSG_MISSING_METADATA),
    Case("leading-crlf", b"\r\n#!lua name=blank_SFX", error=MSG_MISSING_METADATA),
    Case("leading-space", b" #!lua name=space_SFX", error=MSG_MISSING_METADATA),
    Case("no-name", b"#!lua", error=MSG_NAME_NOT_GIVEN),
    Case("no-newline", b"#!lua name=x_SFX", error=MSG_INVALID_METADATA, body=False),
    Case("python-engine", b"#!python name=p_SFX", error="Engine 'python' not found"),
    Case("bad-name-dash", b"#!lua name=my-lib", error=MSG_BAD_NAME),
    Case("bad-name-dot", b"#!lua name=my.lib", error=MSG_BAD_NAME),
    Case("bad-name-colon", b"#!lua name=my:lib", error=MSG_BAD_NAME),
    Case("bad-name-empty", b"#!lua name=", error=MSG_BAD_NAME),
    Case("bad-name-non-ascii", "#!lua name=bibliothèque".encode(), error=MSG_BAD_NAME),
    Case("version", b"#!lua name=v_SFX version=1.0", error="Invalid metadata value given: version=1.0"),
    Case("version-semver", b"#!lua name=v_SFX version=1.2.3", error="Invalid metadata value given: version=1.2.3"),
    Case("foo-bar", b"#!lua name=v_SFX foo=bar", error="Invalid metadata value given: foo=bar"),
    Case("name-twice", b"#!lua name=a_SFX name=b_SFX", error=MSG_NAME_TWICE),
    Case("name-twice-mixed-case", b"#!lua Name=a_SFX NAME=b_SFX", error=MSG_NAME_TWICE),
    # accepted (docs/redis-facts.md F8)
    Case("lua", b"#!lua name=plain_SFX", name=b"plain_SFX"),
    Case("LUA-engine", b"#!LUA name=upper_SFX", name=b"upper_SFX"),
    Case("crlf", b"#!lua name=crlf_SFX\r", name=b"crlf_SFX"),
    Case("trailing-space", b"#!lua name=trail_SFX ", name=b"trail_SFX"),
    Case("double-space", b"#!lua  name=dbl_SFX", name=b"dbl_SFX"),
    Case("tab", b"#!lua\tname=tab_SFX", name=b"tab_SFX"),
    Case("1000-char-name", b"#!lua name=" + LONG + b"_SFX", name=LONG + b"_SFX"),
    Case("mixed-case-name", b"#!lua name=MyLib_V2_SFX", name=b"MyLib_V2_SFX"),
    Case("NAME-key", b"#!lua NAME=key_SFX", name=b"key_SFX"),
    # sdssplitargs / functionsCreateWithLibraryCtx corners (each once disagreed with Redis 7.0.15)
    Case("name-checked-before-engine", b"#!python name=my-lib", error=MSG_BAD_NAME),
    Case("vertical-tab-is-not-a-separator", b"#!lua\vname=vt_SFX", error=MSG_NAME_NOT_GIVEN),
    Case("form-feed-is-not-a-separator", b"#!lua\fname=ff_SFX", error=MSG_NAME_NOT_GIVEN),
    Case("trailing-vertical-tab-is-part-of-name", b"#!lua name=vt_SFX\v", error=MSG_BAD_NAME),
    Case("nul-hides-the-newline", b"#!lua name=nul_SFX\x00 x", error=MSG_INVALID_METADATA),
    Case("hex-escape-in-double-quotes", b'#!lua "name=hex_\\x41SFX"', name=b"hex_ASFX"),
    Case("newline-escape-in-double-quotes", b'#!lua "name=a\\nb"', error=MSG_BAD_NAME),
    Case("quote-escape-in-single-quotes", b"#!lua 'name=a\\'b'", error=MSG_BAD_NAME),
    Case("quoted-name", b'#!lua name="q_SFX"', name=b"q_SFX"),
    Case("text-after-closing-quote", b"#!lua name='x'y", error=MSG_INVALID_METADATA),
    Case("unbalanced-quote", b'#!lua name="x', error=MSG_INVALID_METADATA),
    Case("space-after-bang", b"#! lua name=x", error="Invalid metadata value given: lua"),
    Case("non-ascii-engine", "#!luaé name=e_SFX".encode(), error="Engine 'luaé' not found"),
]
CASE_IDS = [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_shebang(case: Case) -> None:
    source = case.source(b"abc", b"f")
    if case.error is not None:
        with pytest.raises(LibraryError) as info:
            parse_shebang(source)
        assert info.value.message == case.error
        assert str(info.value) == case.error
        assert info.value.line == 1
    else:
        assert parse_shebang(source) == ("lua", case.expected_name(b"abc"))


def test_1000_char_name_is_kept_whole() -> None:
    engine, name = parse_shebang(b"#!lua name=" + b"n" * 1000 + b"\n")
    assert (engine, len(name)) == ("lua", 1000)


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        (b"#!lua name=x", [b"#!lua", b"name=x"]),
        (b"  a \t b  ", [b"a", b"b"]),
        (b'a"b c"d', None),  # closing quote followed by a letter
        (b'"a b" c', [b"a b", b"c"]),
        (b"'it\\'s' x", [b"it's", b"x"]),
        (b'"\\x41\\x4a\\n\\t\\q"', [b"AJ\n\tq"]),
        (b'"\\x4"', [b"x4"]),  # not two hex digits: \x is just x
        (b"a\vb", [b"a\vb"]),
        (b"", []),
    ],
)
def test_split_args_like_sdssplitargs(line: bytes, parts: list[bytes] | None) -> None:
    if parts is None:
        with pytest.raises(LibraryError, match=MSG_INVALID_METADATA):
            split_args(line)
    else:
        assert split_args(line) == parts


# ------------------------------------------------------------------------------------------------ library model


CRLF_SOURCE = b"#!lua name=crlf\r\nredis.register_function('crlf_f', function() return 1 end)  \r\n"


def test_sha256_is_over_the_exact_bytes() -> None:
    lib = parse_library(CRLF_SOURCE)
    assert lib.code == CRLF_SOURCE  # CRLF and the trailing spaces are kept
    assert lib.sha256 == hashlib.sha256(CRLF_SOURCE).hexdigest() == code_sha256(CRLF_SOURCE)
    assert lib.sha256 != code_sha256(CRLF_SOURCE.replace(b"\r\n", b"\n"))
    assert lib.size == len(CRLF_SOURCE)


def test_text_source_is_utf8_and_otherwise_untouched() -> None:
    text = "#!lua name=txt\r\n-- café\nredis.register_function('txt_f', function() return 'é' end)"
    assert as_bytes(text) == text.encode("utf-8")
    assert parse_library(text).code == text.encode("utf-8")
    assert as_bytes(b"\xff\xfe") == b"\xff\xfe"


def test_parse_library_reads_the_shebang_and_the_vet_the_functions() -> None:
    code = (
        b"#!LUA name=shop\n"
        b"redis.register_function('a', function() return 1 end)\n"
        b"redis.register_function{function_name='b', callback=function() return 2 end, flags={'no-writes'}}\n"
    )
    lib = parse_library(code)
    assert (lib.name, lib.engine, lib.functions) == ("shop", "lua", ())  # no Lua reader under the model
    vetted = vet(code).library
    assert (vetted.name, vetted.code, vetted.sha256) == (lib.name, lib.code, lib.sha256)
    assert vetted.functions == (RegisteredFunction("a", (), 2), RegisteredFunction("b", ("no-writes",), 3))
    assert vetted.function_names() == ("a", "b")


def test_parse_library_raises_with_redis_wording() -> None:
    with pytest.raises(LibraryError, match=r"^Missing library metadata$"):
        parse_library(b"\xef\xbb\xbf#!lua name=x\n")


# ---------------------------------------------------------------------------------------- against a real server


def _load(client: redis.Redis, code: bytes) -> tuple[str, str]:
    """('ok', name) or ('err', message) from FUNCTION LOAD REPLACE; a loaded library is deleted again."""
    try:
        name = client.execute_command("FUNCTION", "LOAD", "REPLACE", code)
    except redis.ResponseError as exc:
        return "err", str(exc)
    client.execute_command("FUNCTION", "DELETE", name)
    return "ok", name.decode("utf-8", "replace")


def _ours(code: bytes) -> tuple[str, str]:
    try:
        return "ok", parse_shebang(code)[1]
    except LibraryError as exc:
        return "err", exc.message


@pytest.mark.redis
def test_parser_agrees_with_redis(redis_standalone: rs.RedisServer) -> None:
    """Every case above, then 300 random shebang lines built from the tricky bytes, go to a real Redis 7.0: accept
    or reject must agree, and so must the library name and the metadata error text. (Valkey 9.1.2 reads quoted
    shebangs differently, e.g. loads ``name='x'y`` as ``xy``; lint's ``shebang-quotes`` warns about that.)"""
    sfx = redis_standalone.port.to_bytes(2, "big").hex()[:3].encode()  # short and unique per server
    client: redis.Redis = redis_standalone.client()
    try:
        for i, case in enumerate(CASES):
            code = case.source(sfx, b"shebang_fn_%s_%d" % (sfx, i))
            expected = ("ok", case.expected_name(sfx)) if case.error is None else ("err", case.error)
            assert _load(client, code) == expected, case.id
            assert _ours(code) == expected, case.id

        rng = random.Random(7)
        atoms = [b" ", b"\t", b"\v", b"\f", b"\r", b'"', b"'", b"\\", b"x4", b"1", b"name=", b"NAME=", b"lua",
                 b"_", b"-", b"\x00", "é".encode(), b"a", b"\\x41", b"\\'", b'\\"', b"foo=bar", b"="]  # fmt: skip
        for i in range(300):
            line = b"#!" + rng.choice([b"lua ", b"lua", b"", b"LuA\t"])
            line += b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 7)))
            code = line + b"\nredis.register_function('shebang_fuzz_%s_%d', function() return 1 end)\n" % (sfx, i)
            assert _ours(code) == _load(client, code), line
    finally:
        client.close()
