"""The error table, row by row, against the exact wire texts of shared/docs/redis-functions-facts.md §2.3, §3, §9."""

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
    ("ERR Error registering functions: ERR Function already exists in the library", "CompileError"),
    ("ERR Function already exists in the library", "CompileError"),  # Valkey
    ("ERR Function names can only contain letters, numbers, or underscores(_)", "CompileError"),  # Valkey
    ("ERR No functions registered", "CompileError"),
    (
        "ERR Error registering functions: ERR user_function:2: "
        "Script attempted to access nonexistent global variable 'call'",
        "CompileError",
    ),
    ("ERR Error registering functions: ERR unknown flag given", "CompileError"),
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
    ("ERR Library 'dup' already exists", "LibraryExists"),
    ("ERR Library lib1 already exists", "LibraryExists"),
    ("ERR DUMP payload version or checksum are wrong", "InvalidDumpPayload"),
    ("ERR Function SHARED_FN already exists", "FunctionNameConflict"),
    ("ERR unknown command 'FUNCTION', with args beginning with: 'LOAD' ", "FunctionsUnsupported"),
    ("ERR Protocol error: invalid bulk length", "PayloadTooLarge"),
    ("WRONGPASS invalid username-password pair or user is disabled.", "AuthenticationFailed"),
    ("NOAUTH Authentication required.", "AuthenticationFailed"),
    ("NOPERM User alice has no permissions to run the 'function|load' command", "PermissionDenied"),
]

TRANSIENT_REPLIES = [
    ("LOADING Redis is loading the dataset in memory", "NodeLoading"),
    ("BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.", "NodeBusy"),
    ("BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.", "NodeBusy"),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "TryAgain"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "MasterDown"),
    ("OOM command not allowed when used memory > 'maxmemory'.", "OutOfMemory"),
    ("READONLY You can't write against a read only replica.", "NotAPrimary"),
    ("CLUSTERDOWN The cluster is down", "ClusterDown"),
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
        (rx.ReadOnlyError("You can't write against a read only replica."), ErrorKind.READ_ONLY, False),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), ErrorKind.LOADING, False),
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
