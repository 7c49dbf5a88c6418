"""The error table, row by row, against the exact wire texts the servers reply: one row per wording, with the
releases that say it (docs/errors.md; measured by tests/redis/test_errors_per_server.py). "Every server" means Redis
7.0.15, 7.2.6, 7.4.1, 8.0-m01 and Valkey 7.2.7, 8.0.1, 9.1.2."""

from __future__ import annotations

import ssl

import pytest
import redis.exceptions as rx

from redis_functions_operator.redis.errors import ErrorKind, classify, classify_reply

PERMANENT_REPLIES = [
    (
        "ERR Error compiling function: user_function:3: ')' expected (to close '(' at line 2) near '<eof>'",
        "CompileError",
    ),
    ("ERR Error compiling function: user_function:3: <name> or '...' expected near '<eof>'", "CompileError"),
    # same function twice: every server but Valkey 9.1.2 / Valkey 9.1.2 (no prefix)
    ("ERR Error registering functions: ERR Function already exists in the library", "CompileError"),
    ("ERR Function already exists in the library", "CompileError"),
    # an invalid *function* name: every server but Valkey 9.1.2 (prefixed, says "Library") / Valkey 9.1.2
    (
        "ERR Error registering functions: ERR Library names can only contain letters, numbers, or underscores(_) "
        "and must be at least one character long",
        "CompileError",
    ),
    (
        "ERR Function names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        "CompileError",
    ),
    ("ERR No functions registered", "CompileError"),
    (
        "ERR Error registering functions: ERR user_function:2: "
        "Script attempted to access nonexistent global variable 'call'",
        "CompileError",
    ),
    ("ERR Error registering functions: ERR user_function:2: Attempt to modify a readonly table", "CompileError"),
    ("ERR Error registering functions: ERR unknown flag given", "CompileError"),
    ("ERR Error registering functions: ERR FUNCTION LOAD timeout", "CompileError"),
    # register_function misused: Redis and Valkey 7.2.7 / Valkey 8.0.1 and 9.1.2
    (
        "ERR Error registering functions: ERR flags argument to redis.register_function must be a table "
        "representing function flags",
        "CompileError",
    ),
    (
        "ERR Error registering functions: ERR flags argument to server.register_function must be a table "
        "representing function flags",
        "CompileError",
    ),
    ("ERR Error registering functions: ERR unknown argument given to redis.register_function", "CompileError"),
    ("ERR Error registering functions: ERR unknown argument given to server.register_function", "CompileError"),
    # a bad log level at load time: Redis 7.0.15, 7.2.6, Valkey 7.2.7 / Redis 7.4.1, 8.0-m01, Valkey 8.0.1
    ("ERR Error registering functions: ERR Invalid debug level.", "CompileError"),
    ("ERR Error registering functions: ERR Invalid log level.", "CompileError"),
    # a log call without a message: Redis and Valkey 7.2.7 / Valkey 8.0.1
    ("ERR Error registering functions: ERR redis.log() requires two arguments or more.", "CompileError"),
    ("ERR Error registering functions: ERR server.log() requires two arguments or more.", "CompileError"),
    ("ERR Missing library metadata", "InvalidLibrary"),
    ("ERR Invalid library metadata", "InvalidLibrary"),
    ("ERR Library name was not given", "InvalidLibrary"),
    ("ERR Engine 'python' not found", "InvalidLibrary"),
    ("ERR Invalid metadata value given: version=1.0", "InvalidLibrary"),
    ("ERR Invalid metadata value, name argument was given multiple times", "InvalidLibrary"),
    (
        "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        "InvalidLibrary",
    ),
    ("ERR Function f1 already exists", "FunctionNameConflict"),
    ("ERR Library 'dup' already exists", "LibraryExists"),  # LOAD without REPLACE
    ("ERR Library lib1 already exists", "LibraryExists"),  # RESTORE APPEND: no quotes
    ("ERR DUMP payload version or checksum are wrong", "InvalidDumpPayload"),
    ("ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.", "InvalidDumpPayload"),
    ("ERR Function SHARED_FN already exists", "FunctionNameConflict"),
    ("ERR unknown command 'FUNCTION', with args beginning with: 'LOAD' ", "FunctionsUnsupported"),
    ("ERR unknown command 'FUNCTION', with args beginning with: 'LIST' ", "FunctionsUnsupported"),
    ("ERR unknown subcommand 'UPGRADE'. Try FUNCTION HELP.", "FunctionsUnsupported"),
    ("ERR This instance has cluster support disabled", "WrongMode"),
    ("ERR unknown command 'SENTINEL', with args beginning with: 'GET-MASTER-ADDR-BY-NAME' 'mymaster' ", "WrongMode"),
    ("ERR Protocol error: invalid bulk length", "PayloadTooLarge"),
    ("WRONGPASS invalid username-password pair or user is disabled.", "AuthenticationFailed"),
    ("NOAUTH Authentication required.", "AuthenticationFailed"),
    (
        "ERR AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?",
        "AuthenticationFailed",
    ),
    # every server but Redis 7.0.15 / Redis 7.0.15 (names no user)
    ("NOPERM User alice has no permissions to run the 'function|load' command", "PermissionDenied"),
    ("NOPERM this user has no permissions to run the 'function|load' command", "PermissionDenied"),
]

TRANSIENT_REPLIES = [
    # Redis and Valkey 7.2.7 / Valkey 8.0.1 and 9.1.2
    ("LOADING Redis is loading the dataset in memory", "NodeLoading"),
    ("LOADING Valkey is loading the dataset in memory", "NodeLoading"),
    ("BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.", "NodeBusy"),
    ("BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.", "NodeBusy"),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "TryAgain"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "MasterDown"),
    ("OOM command not allowed when used memory > 'maxmemory'.", "OutOfMemory"),
    ("READONLY You can't write against a read only replica.", "NotAPrimary"),
    ("CLUSTERDOWN The cluster is down", "ClusterDown"),
    ("CLUSTERDOWN Hash slot not served", "ClusterDown"),
    ("ERR something nobody has seen before", "RedisError"),
]


@pytest.mark.parametrize(("text", "kind"), PERMANENT_REPLIES)
def test_permanent_replies(text: str, kind: str) -> None:
    error = classify_reply(text)
    assert error.kind == kind
    assert error.permanent
    assert not error.message.startswith("ERR ")


@pytest.mark.parametrize(("text", "kind"), TRANSIENT_REPLIES)
def test_transient_replies(text: str, kind: str) -> None:
    error = classify_reply(text)
    assert error.kind == kind
    assert error.retryable


def test_conflict_names_the_function() -> None:
    error = classify(rx.ResponseError("Function shared_fn already exists"))
    assert error.kind is ErrorKind.FUNCTION_CONFLICT
    assert error.function == "shared_fn"


@pytest.mark.parametrize(
    ("exc", "kind", "permanent"),
    [
        (rx.AuthenticationError("invalid username-password pair"), ErrorKind.AUTHENTICATION_FAILED, True),
        (rx.NoPermissionError("User x has no permissions"), ErrorKind.PERMISSION_DENIED, True),
        (
            rx.NoPermissionError("this user has no permissions to run the 'function|load' command"),  # Redis 7.0.15
            ErrorKind.PERMISSION_DENIED,
            True,
        ),
        (
            rx.AuthenticationError(
                "AUTH <password> called without any password configured for the default user. "
                "Are you sure your configuration is correct?"
            ),
            ErrorKind.AUTHENTICATION_FAILED,
            True,
        ),
        (rx.ReadOnlyError("You can't write against a read only replica."), ErrorKind.READ_ONLY, False),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), ErrorKind.LOADING, False),
        (rx.BusyLoadingError("Valkey is loading the dataset in memory"), ErrorKind.LOADING, False),
        (rx.ClusterDownError("Hash slot not served"), ErrorKind.CLUSTER_DOWN, False),
        (rx.MasterDownError("Link with MASTER is down"), ErrorKind.MASTER_DOWN, False),
        (rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), ErrorKind.OUT_OF_MEMORY, False),
        (rx.TimeoutError("Timeout reading from socket"), ErrorKind.TIMEOUT, False),
        (TimeoutError(), ErrorKind.TIMEOUT, False),
        (
            rx.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
            ErrorKind.CONNECTION_FAILED,
            False,
        ),
        (ConnectionResetError("reset by peer"), ErrorKind.CONNECTION_FAILED, False),
        # maxclients reached / a library far over proto-max-bulk-len, as the engine's client sees them
        (
            rx.ConnectionError("Error UNKNOWN while writing to socket. Connection lost."),
            ErrorKind.CONNECTION_FAILED,
            False,
        ),
        (
            rx.ConnectionError("Error 104 while writing to socket. Connection reset by peer."),
            ErrorKind.CONNECTION_FAILED,
            False,
        ),
        (rx.InvalidResponse("Protocol Error: H, b'TTP/1.1'"), ErrorKind.NOT_REDIS, True),
        (ssl.SSLCertVerificationError("certificate verify failed"), ErrorKind.TLS_FAILED, True),
    ],
)
def test_exceptions_by_class(exc: BaseException, kind: ErrorKind, permanent: bool) -> None:
    error = classify(exc)
    assert error.kind is kind
    assert error.permanent is permanent


def test_tls_failure_wrapped_in_connection_error() -> None:
    outer = rx.ConnectionError("Error 1 connecting to 127.0.0.1:6380.")
    outer.__cause__ = ssl.SSLCertVerificationError("certificate verify failed: unable to get local issuer certificate")
    assert classify(outer).kind is ErrorKind.TLS_FAILED


def test_long_messages_are_bounded() -> None:
    assert len(classify(rx.ResponseError("x" * 10_000)).message) <= 2000


def test_an_exhausted_pool_is_a_timeout_not_a_lost_node() -> None:
    """redis-py's BlockingConnectionPool raises ConnectionError("No connection available.") when every connection
    stays busy for its timeout: nothing was sent, so the canary rule must not read it as a node lost during a load
    (seen at 1000 objects under CPU starvation)."""
    import redis.exceptions as rx

    from redis_functions_operator.redis.errors import ErrorKind, classify

    error = classify(rx.ConnectionError("No connection available."))
    assert error.kind is ErrorKind.TIMEOUT and not error.permanent
    assert classify(rx.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")).kind is (
        ErrorKind.CONNECTION_FAILED
    )
