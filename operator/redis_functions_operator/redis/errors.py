"""Every way a Redis node can say no, sorted once into *permanent* (retrying the same thing cannot help) and
*transient* (retry later; the node may be loading, failing over, out of memory or briefly unreachable).

This module is the single place where a Redis reply or a client exception becomes a decision. Which server says
what, word for word, is in ``docs/errors.md``: Redis 7.0.15, 7.2.6, 7.4.1, 8.0-m01 and Valkey 7.2.7, 8.0.1, 9.1.2
agree on the meaning of every reply below and differ in wording on a few (Valkey 9.1.2 drops the "Error registering
functions" prefix on two load errors; ``server.`` for ``redis.`` on Valkey 8.0+; "Invalid log level" for "Invalid
debug level" on Redis 7.4+ and Valkey 8.0+; "Valkey is busy/loading" on Valkey 8.0+; Redis 7.0.15's NOPERM does not
name the user). ``tests/unit/test_errors.py`` pins one row per wording; ``tests/redis/test_errors_per_server.py``
provokes each reply on every one of those servers and fails if its kind, permanence or text moves.

Why the split matters: the canary rule of the sync engine stops a rollout at the first *permanent* failure (a
compile error will fail identically on every node, a function-name collision means another library owns the name),
while a *transient* one only marks that node for retry and lets the others proceed.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from enum import StrEnum

import redis.exceptions as rx


class ErrorKind(StrEnum):
    """What went wrong, as a PascalCase reason usable in a Kubernetes condition."""

    COMPILE_ERROR = "CompileError"
    INVALID_LIBRARY = "InvalidLibrary"
    FUNCTION_CONFLICT = "FunctionNameConflict"
    LIBRARY_EXISTS = "LibraryExists"
    INVALID_PAYLOAD = "InvalidDumpPayload"
    FUNCTIONS_UNSUPPORTED = "FunctionsUnsupported"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    TLS_FAILED = "TLSHandshakeFailed"
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    NOT_REDIS = "NotRedis"
    WRONG_MODE = "WrongMode"
    LOST_DURING_LOAD = "NodeLostDuringLoad"  # transient: a killed node looks the same (the controller counts them)
    UNSAFE_LIBRARY = "UnsafeLibrary"  # loaded function names differ only in case: REPLACE/DELETE would crash it
    UNSUPPORTED_ON_SERVER = "UnsupportedOnServer"  # the vet says this server would fail it: never sent there
    NO_LUA_ENGINE = "NoLuaEngine"  # the server has no Lua engine: FUNCTION LOAD is never sent to it
    SMOKE_TEST_FAILED = "SmokeTestFailed"  # a smoke test got another reply on the canary: its old code put back
    CONNECTION_FAILED = "ConnectionFailed"
    TIMEOUT = "Timeout"
    LOADING = "NodeLoading"
    BUSY = "NodeBusy"
    TRY_AGAIN = "TryAgain"
    MASTER_DOWN = "MasterDown"
    OUT_OF_MEMORY = "OutOfMemory"
    READ_ONLY = "NotAPrimary"
    CLUSTER_DOWN = "ClusterDown"
    VERIFY_MISMATCH = "VerificationMismatch"
    TOPOLOGY = "TopologyError"
    UNKNOWN = "RedisError"


PERMANENT_KINDS = frozenset(
    {
        ErrorKind.COMPILE_ERROR,
        ErrorKind.INVALID_LIBRARY,
        ErrorKind.FUNCTION_CONFLICT,
        ErrorKind.LIBRARY_EXISTS,
        ErrorKind.INVALID_PAYLOAD,
        ErrorKind.FUNCTIONS_UNSUPPORTED,
        ErrorKind.AUTHENTICATION_FAILED,
        ErrorKind.PERMISSION_DENIED,
        ErrorKind.TLS_FAILED,
        ErrorKind.PAYLOAD_TOO_LARGE,
        ErrorKind.NOT_REDIS,
        ErrorKind.WRONG_MODE,
        ErrorKind.UNSAFE_LIBRARY,
        ErrorKind.UNSUPPORTED_ON_SERVER,
        ErrorKind.NO_LUA_ENGINE,
        ErrorKind.SMOKE_TEST_FAILED,
    }
)


@dataclass(frozen=True)
class NodeError:
    """A classified failure: ``kind`` decides what happens next, ``message`` is Redis' own text (never secrets)."""

    kind: ErrorKind
    message: str
    function: str | None = None  # the contested function name, for FUNCTION_CONFLICT
    owner: str | None = None  # the library that owns that function on the node, when it could be found

    @property
    def permanent(self) -> bool:
        return self.kind in PERMANENT_KINDS

    @property
    def retryable(self) -> bool:
        return not self.permanent

    def __str__(self) -> str:
        return f"{self.kind}: {self.describe()}"

    def describe(self) -> str:
        """Redis' message, plus the owning library for a function-name conflict."""
        if self.kind is ErrorKind.FUNCTION_CONFLICT and self.owner:
            return f"{self.message} (owned by library '{self.owner}')"
        return self.message


# (pattern over the server's error text, kind). First match wins; order matters where texts overlap: "Error
# registering functions: ERR Library names can only contain ..." is about a *function* name (Redis words it wrong),
# so the prefix row must come before the library-name row. Every wording of every server: docs/errors.md.
REPLY_TABLE: tuple[tuple[re.Pattern[str], ErrorKind], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"^Function (\S+) already exists$", ErrorKind.FUNCTION_CONFLICT),
        (r"^Library '?\S+?'? already exists", ErrorKind.LIBRARY_EXISTS),  # LOAD without REPLACE, RESTORE APPEND
        (r"^DUMP payload version or checksum are wrong", ErrorKind.INVALID_PAYLOAD),
        (r"^Wrong restore policy", ErrorKind.INVALID_PAYLOAD),
        (r"^Error compiling function", ErrorKind.COMPILE_ERROR),
        (r"^Error registering functions", ErrorKind.COMPILE_ERROR),
        (r"^Function already exists in the library", ErrorKind.COMPILE_ERROR),  # Valkey 9.1.2: no prefix
        (r"^Function names can only contain", ErrorKind.COMPILE_ERROR),  # Valkey 9.1.2: no prefix, says "Function"
        (r"^No functions registered", ErrorKind.COMPILE_ERROR),
        (r"^Missing library metadata", ErrorKind.INVALID_LIBRARY),
        (r"^Invalid library metadata", ErrorKind.INVALID_LIBRARY),
        (r"^Invalid metadata value", ErrorKind.INVALID_LIBRARY),
        (r"^Library name was not given", ErrorKind.INVALID_LIBRARY),
        (r"^Library names can only contain", ErrorKind.INVALID_LIBRARY),
        (r"^Engine '.*' not found", ErrorKind.INVALID_LIBRARY),
        (r"^unknown command [`'\"]?FUNCTION", ErrorKind.FUNCTIONS_UNSUPPORTED),
        (r"^This instance has cluster support disabled", ErrorKind.WRONG_MODE),  # mode cluster, not a cluster
        (r"^unknown command [`'\"]?SENTINEL", ErrorKind.WRONG_MODE),  # mode sentinel, not a sentinel
        (r"^unknown subcommand .*FUNCTION", ErrorKind.FUNCTIONS_UNSUPPORTED),
        (r"^unknown subcommand '(LOAD|LIST|DELETE|DUMP|RESTORE)'", ErrorKind.FUNCTIONS_UNSUPPORTED),
        (r"^Protocol error: invalid bulk length", ErrorKind.PAYLOAD_TOO_LARGE),
        (r"^(WRONGPASS|NOAUTH)\b", ErrorKind.AUTHENTICATION_FAILED),
        (r"^invalid (username-)?password", ErrorKind.AUTHENTICATION_FAILED),
        (r"^AUTH .*(no password is set|called without any password)", ErrorKind.AUTHENTICATION_FAILED),
        (r"^Authentication required", ErrorKind.AUTHENTICATION_FAILED),
        (r"^NOPERM\b", ErrorKind.PERMISSION_DENIED),
        (r"^LOADING\b", ErrorKind.LOADING),
        (r"^BUSY\b", ErrorKind.BUSY),
        (r"^TRYAGAIN\b", ErrorKind.TRY_AGAIN),
        (r"^MASTERDOWN\b", ErrorKind.MASTER_DOWN),
        (r"^OOM\b", ErrorKind.OUT_OF_MEMORY),
        (r"^(OOM )?command not allowed when used memory", ErrorKind.OUT_OF_MEMORY),
        (r"^READONLY\b", ErrorKind.READ_ONLY),
        (r"^You can't write against a read only replica", ErrorKind.READ_ONLY),
        (r"^CLUSTERDOWN\b", ErrorKind.CLUSTER_DOWN),
    )
)

#: What redis-py's blocking pool raises (a ConnectionError) when no connection frees up within its timeout.
POOL_EXHAUSTED = "No connection available."

_CONFLICT = re.compile(r"Function (\S+) already exists", re.IGNORECASE)
_ERR_PREFIX = re.compile(r"^ERR ")


def classify_reply(text: str) -> NodeError:
    """Classify a server error text (with or without the leading ``ERR``)."""
    body = _ERR_PREFIX.sub("", text.strip())
    for pattern, kind in REPLY_TABLE:
        if pattern.search(body):
            function = None
            if kind is ErrorKind.FUNCTION_CONFLICT and (m := _CONFLICT.search(body)):
                function = m.group(1)
            return NodeError(kind, body, function)
    return NodeError(ErrorKind.UNKNOWN, body)


def classify(exc: BaseException) -> NodeError:
    """Turn anything raised while talking to one node into a :class:`NodeError`.

    redis-py maps some replies to dedicated exception classes and strips their prefix (``ReadOnlyError`` loses
    ``READONLY``, ``BusyLoadingError`` loses ``LOADING``), so those are matched by class before text.
    """
    message = _safe_message(exc)
    if isinstance(exc, ssl.SSLError) or _caused_by(exc, ssl.SSLError):
        return NodeError(ErrorKind.TLS_FAILED, message)
    by_class: tuple[tuple[type[BaseException], ErrorKind], ...] = (
        (rx.AuthenticationError, ErrorKind.AUTHENTICATION_FAILED),
        (rx.AuthenticationWrongNumberOfArgsError, ErrorKind.AUTHENTICATION_FAILED),
        (rx.NoPermissionError, ErrorKind.PERMISSION_DENIED),
        (rx.ReadOnlyError, ErrorKind.READ_ONLY),
        (rx.BusyLoadingError, ErrorKind.LOADING),
        (rx.TryAgainError, ErrorKind.TRY_AGAIN),
        (rx.MasterDownError, ErrorKind.MASTER_DOWN),  # a subclass of ClusterDownError: must come first
        (rx.ClusterDownError, ErrorKind.CLUSTER_DOWN),
        (rx.OutOfMemoryError, ErrorKind.OUT_OF_MEMORY),
        (rx.TimeoutError, ErrorKind.TIMEOUT),
        (TimeoutError, ErrorKind.TIMEOUT),
        (rx.InvalidResponse, ErrorKind.NOT_REDIS),
    )
    for cls, kind in by_class:
        if isinstance(exc, cls):
            return NodeError(kind, message)
    if isinstance(exc, rx.ResponseError):
        return classify_reply(message)
    if isinstance(exc, (rx.ConnectionError, ConnectionError, OSError)):
        if message == POOL_EXHAUSTED:
            # Our own pool had no free connection for the whole timeout (every one busy with other libraries'
            # commands): nothing reached the node, so it is a timeout here, never a node lost during a load.
            return NodeError(ErrorKind.TIMEOUT, f"{message} (all connections to the node busy for the timeout)")
        if "Protocol error" in message:
            return NodeError(ErrorKind.NOT_REDIS, message)
        return NodeError(ErrorKind.CONNECTION_FAILED, message)
    return NodeError(ErrorKind.UNKNOWN, message)


def _caused_by(exc: BaseException, cls: type[BaseException]) -> bool:
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 8:
        if isinstance(cause, cls):
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False


def _safe_message(exc: BaseException) -> str:
    """The exception text, single-line, bounded. Redis never echoes passwords in errors; we keep it that way by
    never formatting connection arguments into messages."""
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 2000 else text[:1997] + "..."
