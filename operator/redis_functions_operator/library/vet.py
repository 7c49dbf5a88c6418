"""Vet a library by running its load the way FUNCTION LOAD does, before any server sees it (pure: no I/O).

Why run it rather than read it: what FUNCTION LOAD executes is the library's top level, and the environment it runs
in is tiny and fixed (``function_lua.c`` ``luaEngineInitEngine``/``luaEngineCreate``; measured in
``docs/lua-sandbox.md``): read-only globals holding only ``redis`` (Valkey adds ``server``, the same table) with
``register_function``, ``log``, the ``LOG_*`` levels and the version fields. So running that top level in a real Lua
5.1 (``lupa.lua51``, Lua 5.1.5, the version both servers embed) with the same environment gives the server's answer:
every registration with its flags, every ``log`` call, the error the server would reply, by any path — aliases,
tables of functions, closures, loops — where a static reader can only guess.

What can take a server down, and is refused (:attr:`Vetting.refusal`, reason ``UnsafeLibrary``):

* a ``log`` call while the library loads: Valkey 9.1.2 aborts (``ASSERTION FAILED script_lua.c:1425 'rctx'``)
  whatever the arguments; Redis logs the line;
* a load that succeeds with two function names that differ only in case: the next ``FUNCTION LOAD REPLACE`` or
  ``FUNCTION DELETE`` of that library aborts Redis 7.0.15 and Valkey 9.1.2.

Fail closed: when the run cannot finish within its bounds — ``BUDGET_INSTRUCTIONS`` VM instructions (the servers
stop a load after 500 ms), ``MEMORY_BASE`` plus ``MEMORY_PER_CODE_BYTE`` per byte of code, a C string function
priced above ``COST_LIMIT`` steps before it runs (pattern matching backtracks, and no hook fires inside C), Lua's
recursion limits — or when the sandbox itself fails, the library is refused (reason ``VetInconclusive``) with a
message that says the vet could not decide, never passed.

A library whose top level reads a version field (``REDIS_VERSION``, ``VALKEY_VERSION_NUM``, ``SERVER_NAME``, ...)
can behave differently on each server, so it is run once per known server version (:data:`VERSIONED_PROFILES`).

The vet is deterministic (instructions, not time), so one code version gets one verdict everywhere; it is cached by
sha256 (:func:`vet`), and each vet gets a fresh Lua state (creating one costs about 0.03 ms), in which the body is
compiled once and run once per profile.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from redis_functions_operator.library._lua.bytecode import BytecodeError, global_reads
from redis_functions_operator.library.failure import Failure
from redis_functions_operator.library.model import Library, RegisteredFunction, as_bytes, parse_shebang

#: VM instructions a top level may run here. Generous for registering functions (a 10,000-function library runs
#: about 200,000), and well below what a server runs in its 500 ms load timeout.
BUDGET_INSTRUCTIONS = 10_000_000
#: Priced steps a single C string call may take (``rep``'s loop count; a bound on the pattern matcher's work).
COST_LIMIT = 5_000_000
#: Memory for one run: room to compile the code (about 6 bytes of Lua state per byte of source) plus a margin.
MEMORY_BASE = 64 * 1024 * 1024
MEMORY_PER_CODE_BYTE = 12

_VALID_NAME = re.compile(rb"[A-Za-z0-9_]+")
_POSITION = re.compile(r"user_function:(\d+):")
_SANDBOX = (Path(__file__).with_name("sandbox.lua")).read_text(encoding="utf-8")

ENGINE_REDIS = "redis"
ENGINE_VALKEY = "valkey"


@dataclass(frozen=True)
class ServerProfile:
    """One server's load-time behaviour: its version fields and the few ways servers differ while loading (each
    measured on the real server by tests/redis/test_vet_differential.py)."""

    engine: str
    version: str
    redis_version: str
    valkey_version: str = ""  # Valkey: the `server` global and the VALKEY_VERSION(_NUM)/SERVER_NAME fields
    api: str = "redis"  # the API's name in its error messages (redis.register_function, server.log()...)
    deferred_names: bool = False  # names checked once the top level returned, not in the call (Valkey 9.1)
    log_aborts: bool = False  # any log call while loading fails an assertion and kills the server (Valkey 9.1)
    level_word: str = "log"  # "Invalid log level." (Redis 7.4+, Valkey 8) or "Invalid debug level." (before)

    @property
    def label(self) -> str:
        return f"{'Valkey' if self.engine == ENGINE_VALKEY else 'Redis'} {self.version}"

    def lua(self) -> dict[bytes, Any]:
        return {
            b"api": self.api.encode(),
            b"valkey": bool(self.valkey_version),
            b"deferred_names": self.deferred_names,
            b"log_aborts": self.log_aborts,
            b"level_word": self.level_word.encode(),
            b"redis": self.redis_version.encode(),
            b"redis_num": _version_num(self.redis_version),
            b"valkey_version": self.valkey_version.encode(),
            b"valkey_num": _version_num(self.valkey_version) if self.valkey_version else 0,
        }


def _version_num(version: str) -> int:
    major, minor, patch = (int(x) for x in version.split("."))
    return (major << 16) | (minor << 8) | patch


#: The servers every library is run against: the two the suite has always tested on.
PROFILES = (
    ServerProfile(ENGINE_REDIS, "7.0.15", "7.0.15", level_word="debug"),
    ServerProfile(ENGINE_VALKEY, "9.1.2", "7.2.4", "9.1.2", api="server", deferred_names=True, log_aborts=True),
)
#: The rest of the matrix (built from ../shared/servers), run too when the top level reads a version field. 8.0-m01
#: reports 7.9.224; every Valkey keeps REDIS_VERSION at 7.2.4; Valkey 7.2 still words its errors "redis.".
VERSIONED_PROFILES = (
    ServerProfile(ENGINE_REDIS, "7.2.6", "7.2.6", level_word="debug"),
    ServerProfile(ENGINE_REDIS, "7.4.1", "7.4.1"),
    ServerProfile(ENGINE_REDIS, "8.0-m01", "7.9.224"),
    ServerProfile(ENGINE_VALKEY, "7.2.7", "7.2.4", "7.2.7", level_word="debug"),
    ServerProfile(ENGINE_VALKEY, "8.0.1", "7.2.4", "8.0.1", api="server"),
)
#: Every profile by its label ("Redis 7.4.1").
BY_LABEL = {p.label: p for p in PROFILES + VERSIONED_PROFILES}


@dataclass(frozen=True)
class LoadOutcome:
    """What ``FUNCTION LOAD`` does with the library on one server.

    ``error`` is the server's reply text (as a client shows it, without the leading ``ERR``) when the load fails;
    ``crash`` says why the server aborts (during this load, or at the next ``LOAD REPLACE``/``DELETE`` of the
    library); ``stopped`` says why the vet could not finish the run. ``line`` locates whichever of them applies.
    """

    server: str
    functions: tuple[RegisteredFunction, ...] = ()
    log_lines: tuple[int, ...] = ()
    error: str | None = None
    crash: str | None = None
    crash_rule: str = ""  # "top-level-log" or "duplicate-function": the lint rule that names this crash
    stopped: str | None = None
    line: int = 0

    @property
    def loads(self) -> bool:
        return self.error is None and self.crash is None and self.stopped is None


#: How a refusal reads after "refused before loading, ", by reason.
REFUSAL_PREFIX = {
    "UnsafeLibrary": "loading it can crash the server",
    "VetInconclusive": "the vet could not tell what loading it does, so it fails closed",
}


@dataclass(frozen=True)
class Vetting:
    """The vet's verdict on one code version: the library (with the functions it registers), what each server
    does with it, and a refusal when it must not be loaded anywhere: a :class:`Failure` whose reason is
    ``UnsafeLibrary`` (it can take a server down) or ``VetInconclusive`` (the vet could not decide, so it fails
    closed), with the line when known."""

    library: Library
    outcomes: tuple[LoadOutcome, ...]
    refusal: Failure | None = None
    version_dependent: bool = False
    #: the lines reading each server-dependent global (:data:`WATCHED_GLOBALS`) anywhere in the code, from the byte
    #: code the server's compiler makes; ``None`` when the code does not compile (no server runs it either)
    global_reads: Mapping[str, tuple[int, ...]] | None = None

    @property
    def safe(self) -> bool:
        return self.refusal is None

    def outcome(self, engine: str) -> LoadOutcome:
        """The outcome on the first profile of ``engine`` (Redis 7.0.15 or Valkey 9.1.2)."""
        label = "Valkey" if engine == ENGINE_VALKEY else "Redis"
        return next(o for o in self.outcomes if o.server.startswith(label))


# ------------------------------------------------------------------------------------------------------ entry point


def vet(source: bytes | str) -> Vetting:
    """Vet one library source (cached by sha256). Raises :class:`LibraryError` for a shebang the server refuses
    at the metadata stage, as :func:`parse_shebang` does."""
    code = as_bytes(source)
    key = hashlib.sha256(code).digest()
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    vetting = _vet(code)
    with _CACHE_LOCK:
        _CACHE[key] = vetting
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return vetting


def vetted(source: bytes | str) -> Vetting | None:
    """The cached verdict on this code version, or None when it has not been vetted in this process (no work)."""
    with _CACHE_LOCK:
        return _CACHE.get(hashlib.sha256(as_bytes(source)).digest())


_CACHE: OrderedDict[bytes, Vetting] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4096


def _vet(code: bytes) -> Vetting:
    engine, name = parse_shebang(code)
    body = code[code.index(b"\n") :]  # the server hands Lua everything from the shebang's newline on
    outcomes, version_dependent, reads = _runs(body, PROFILES)
    primary = next((o for o in outcomes if o.loads), outcomes[0])
    library = Library(name=name, engine=engine, code=code, functions=primary.functions)
    refusal = _refusal(outcomes, code)
    if refusal is None and isinstance(reads, str):
        refusal = Failure("VetInconclusive", reads)
    return Vetting(library, tuple(outcomes), refusal, version_dependent, None if isinstance(reads, str) else reads)


def _refusal(outcomes: list[LoadOutcome], code: bytes) -> Failure | None:
    """The first crash that is not waived (every profile's, so a waived log on one server never hides another
    server's crash), else the first run the vet could not finish."""
    crash = next((o for o in outcomes if o.crash and not _waived(code, o)), None)
    if crash is not None:
        return Failure("UnsafeLibrary", str(crash.crash), line=crash.line or None)
    stopped = next((o for o in outcomes if o.stopped), None)
    if stopped is not None:
        return Failure("VetInconclusive", str(stopped.stopped), line=stopped.line or None)
    return None


def _waived(code: bytes, crash: LoadOutcome) -> bool:
    """A ``-- lint-ignore: top-level-log`` comment on the line the log runs from (or the line before) lets it
    through: only Valkey 9.x aborts on it, so a team whose servers are all Redis may say so. Names equal but for
    case crash every server, and cannot be waived."""
    if crash.crash_rule != "top-level-log":
        return False
    from redis_functions_operator.library._lua.tokens import tokenize

    return "top-level-log" in waived_rules(tokenize(code).comments).get(crash.line, set())


class _Comment(Protocol):
    @property
    def line(self) -> int: ...

    @property
    def message(self) -> str: ...


def waived_rules(comments: Iterable[_Comment]) -> dict[int, set[str]]:
    """The rules each line waives: a ``-- lint-ignore: rule, rule`` comment covers its own line and the next. One
    reading for the vet's crash waiver, the per-server refusal and lint's findings."""
    waived: dict[int, set[str]] = {}
    for comment in comments:
        found = IGNORE_COMMENT.search(comment.message)
        if found:
            rules = {r.strip() for r in found.group(1).split(",") if r.strip()}
            for line in (comment.line, comment.line + 1):
                waived.setdefault(line, set()).update(rules)
    return waived


#: ``-- lint-ignore: rule, rule``: the comment that silences lint findings (and waives a top-level log here).
IGNORE_COMMENT = re.compile(r"lint-ignore\s*:\s*([a-z0-9, -]+)")

# ------------------------------------------------------------------------------------------------------ one run


#: Globals that exist on some servers only, or may be switched off: which ones a library reads decides where it can
#: run (``library/support.py``). ``server``: Valkey only; ``os``: Redis 7.4+ and Valkey 8.0+; the other three are
#: removed by Redis 8.2.2 and by patched builds.
WATCHED_GLOBALS = frozenset({"server", "os", "getfenv", "setfenv", "newproxy"})
_WATCHED_WORDS = re.compile(rb"\b(?:" + "|".join(sorted(WATCHED_GLOBALS)).encode() + rb")\b")

#: The global reads of code that compiled (line lists by name), ``None`` for code that did not, or why the byte code
#: could not be read (a string: the vet fails closed).
_Reads = Mapping[str, tuple[int, ...]] | None | str


def run_loads(body: bytes, profiles: tuple[ServerProfile, ...] = PROFILES) -> tuple[list[LoadOutcome], bool]:
    """Run the library body's top level as each profile's FUNCTION LOAD would, in one fresh Lua state (compiled
    once). When the top level reads a version field, :data:`VERSIONED_PROFILES` are run too. Returns the outcomes
    and whether the top level read a version field."""
    outcomes, read_version, _ = _runs(body, profiles)
    return outcomes, read_version


def _runs(body: bytes, profiles: tuple[ServerProfile, ...]) -> tuple[list[LoadOutcome], bool, _Reads]:
    from lupa import lua51  # imported here: only commands that vet pay for it

    memory = MEMORY_BASE + MEMORY_PER_CODE_BYTE * len(body)
    runtime = lua51.LuaRuntime(
        encoding=None, register_eval=False, register_builtins=False, unpack_returned_tuples=True, max_memory=memory
    )
    try:
        compile_body, run = runtime.execute(_sandbox_bytecode())
        chunk, compile_error = compile_body(body)
    except lua51.LuaMemoryError:
        return [LoadOutcome(p.label, stopped=_MEMORY_STOP.format(memory >> 20)) for p in profiles], False, None
    if chunk is False:  # the same compiler on every server (Lua 5.1.5)
        message = _text(compile_error)
        error = f"Error compiling function: {message}"
        return [LoadOutcome(p.label, error=error, line=_position(message)) for p in profiles], False, None
    reads = _global_reads(runtime, chunk, body)  # before any run: the library cannot touch the dumper
    outcomes: list[LoadOutcome] = []
    read_version = False
    unpacked: dict[bytes, tuple[RegisteredFunction, ...]] = {}
    queue = list(profiles)
    while queue:
        profile = queue.pop(0)
        if outcomes and _clean_on_redis(outcomes[0], read_version):
            outcomes.append(replace(outcomes[0], server=profile.label))
            continue
        try:
            result = run(chunk, runtime.table_from(profile.lua()), BUDGET_INSTRUCTIONS, COST_LIMIT)
        except lua51.LuaMemoryError:
            outcomes.append(LoadOutcome(profile.label, stopped=_MEMORY_STOP.format(memory >> 20)))
            continue
        except lua51.LuaError as exc:  # the sandbox's own failure (it catches the library's): fail closed
            outcomes.append(LoadOutcome(profile.label, stopped=f"the vet itself failed ({exc}); it cannot decide"))
            continue
        outcomes.append(_outcome(result, profile, unpacked, memory))
        if result[-1] and not read_version:
            read_version = True
            queue.extend(VERSIONED_PROFILES)
    return outcomes, read_version, reads


def _global_reads(runtime: Any, chunk: Any, body: bytes) -> _Reads:
    """Which :data:`WATCHED_GLOBALS` the compiled chunk reads, on which lines. Most libraries name none of them
    anywhere, and then neither the dump nor its reading is needed."""
    if not _WATCHED_WORDS.search(body):
        return {}
    try:
        return global_reads(bytes(runtime.eval("string.dump")(chunk)), WATCHED_GLOBALS)
    except (BytecodeError, ValueError, IndexError) as exc:  # struct.error is a ValueError
        return f"the vet could not read the compiled code to see which globals it uses ({exc}); it cannot decide"


def _clean_on_redis(outcome: LoadOutcome, read_version: bool) -> bool:
    """Whether every other server can only repeat this Redis run. The profiles differ in the ``server`` global and
    the Valkey-only fields (an error on Redis, so not clean), the version values (read: every profile runs), ``log``
    (no call: nothing differs), when names are checked (all valid and distinct: nothing differs) and in error wording
    (no error). So for a library that loads on Redis without a log call or a version read, the other answers are
    the same, and the other runs (half of a big library's vet) are skipped. The differential tests check these
    derived answers against the real servers like the others."""
    return outcome.server.startswith("Redis") and outcome.loads and not outcome.log_lines and not read_version


def _sandbox_bytecode() -> bytes:
    """The sandbox chunk compiled once per process: loading Lua byte code into each fresh state is three times
    faster than parsing the source again (0.09 ms against 0.23 ms). Only this trusted chunk is ever loaded as byte
    code; a library's body reaches Lua as source, through ``loadstring`` with the server's chunk name."""
    global _BYTECODE
    if _BYTECODE is None:
        from lupa import lua51

        compiler = lua51.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
        _BYTECODE = bytes(compiler.eval("string.dump")(compiler.eval("loadstring")(_SANDBOX.encode(), b"=sandbox")))
    return _BYTECODE


_BYTECODE: bytes | None = None

_MEMORY_STOP = (
    "the top level allocated more than {} MiB while loading; the vet stops there (FUNCTION LOAD itself has no memory "
    "limit, so a server could run out of memory); build big values inside functions, not at load time"
)
_BUDGET_STOP = (
    f"the top level ran more than {BUDGET_INSTRUCTIONS:,} Lua instructions while loading; the vet stops there and "
    "cannot tell what the rest would do (a server stops a load after 500 ms); keep the top level to registering "
    "functions"
)
_RECURSION_STOP = (
    "the top level recurses deeper than Lua allows (a stack overflow); the vet's own frames count against the same "
    "limit, so it cannot tell exactly where a server would stop (a server fails such a load too)"
)
_COST_STOP = (
    "a string function called while loading (a pattern match or rep) could run for longer than the vet allows "
    f"({COST_LIMIT:,} steps), and no hook can stop it inside C; the vet cannot tell what it would do, and neither "
    "could the server's 500 ms load timeout stop it"
)


def _outcome(
    result: tuple[Any, ...],
    profile: ServerProfile,
    unpacked: dict[bytes, tuple[RegisteredFunction, ...]],
    memory: int,
) -> LoadOutcome:
    status, line, message, packed_registrations, packed_logs, _ = result
    status, message, label = status.decode(), _text(message), profile.label
    functions = unpacked.get(packed_registrations)
    if functions is None:  # the runs of one library usually register the same functions: unpack them once
        functions = unpacked[packed_registrations] = _unpack_registrations(packed_registrations)
    base = LoadOutcome(label, functions=functions, log_lines=_unpack_logs(packed_logs))
    if status == "crash":
        return replace(base, crash=_LOG_CRASH.format(server=label), crash_rule="top-level-log", line=int(line))
    if status == "budget":
        return replace(base, stopped=_BUDGET_STOP, line=int(line))
    if status == "cost":
        return replace(base, stopped=_COST_STOP, line=int(line))
    if status == "memory":
        return replace(base, stopped=_MEMORY_STOP.format(memory >> 20))
    if status == "recursion":
        return replace(base, stopped=_RECURSION_STOP, line=_position(message))
    if status == "error":
        return replace(base, error=f"Error registering functions: {message}", line=int(line) or _position(message))
    return _after_run(base, profile)


_LOG_CRASH = (
    "redis.log (or server.log, or an alias of either) is called while the library loads: {server} aborts during "
    "FUNCTION LOAD (ASSERTION FAILED script_lua.c:1425 'rctx'); call it inside functions only"
)


def _after_run(outcome: LoadOutcome, profile: ServerProfile) -> LoadOutcome:
    """What the server checks once the top level returned: Valkey validates names only now; both refuse a library
    that registered nothing; and a load that succeeds with names equal but for case leaves a library whose next
    LOAD REPLACE or DELETE aborts the server."""
    functions = outcome.functions
    if profile.deferred_names:
        seen: set[str] = set()
        for function in functions:
            if not _VALID_NAME.fullmatch(function.name.encode("latin-1")):
                return replace(outcome, error=_VALKEY_BAD_NAME, line=function.line)
            if function.name in seen:
                return replace(outcome, error="Function already exists in the library", line=function.line)
            seen.add(function.name)
    if not functions:
        return replace(outcome, error="No functions registered", line=0)
    first_by_folded: dict[str, RegisteredFunction] = {}
    for function in functions:
        first = first_by_folded.setdefault(function.name.lower(), function)
        if first.name != function.name:
            crash = (
                f"function {function.name!r} (line {function.line}) differs only in case from {first.name!r} (line "
                f"{first.line}): the library loads, but FCALL names are case-insensitive, and the next FUNCTION LOAD "
                f"REPLACE or FUNCTION DELETE of this library aborts {profile.label}"
            )
            return replace(outcome, crash=crash, crash_rule="duplicate-function", line=function.line)
    return outcome


_VALKEY_BAD_NAME = (
    "Function names can only contain letters, numbers, or underscores(_) and must be at least one character long"
)


def _netstrings(packed: bytes) -> list[bytes]:
    fields, i = [], 0
    while i < len(packed):
        colon = packed.index(b":", i)
        end = colon + 1 + int(packed[i:colon])
        fields.append(packed[colon + 1 : end])
        i = end
    return fields


def _unpack_registrations(packed: bytes) -> tuple[RegisteredFunction, ...]:
    fields = iter(_netstrings(packed))
    found = []
    for name in fields:
        description = next(fields)
        line = int(next(fields))
        flags = tuple(_text(next(fields)) for _ in range(int(next(fields))))
        ignored = tuple(_text(next(fields)) for _ in range(int(next(fields))))
        found.append(
            RegisteredFunction(
                name=_text(name),
                flags=flags,
                line=line,
                description=_text(description[1:]) if description.startswith(b"+") else None,
                ignored_flags=ignored,
            )
        )
    return tuple(found)


def _unpack_logs(packed: bytes) -> tuple[int, ...]:
    return tuple(int(line) for line in _netstrings(packed))


def _text(value: bytes) -> str:
    # latin-1 keeps every byte: names and messages round-trip to the exact bytes the server would see
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _position(message: str) -> int:
    found = _POSITION.search(message)
    return int(found.group(1)) if found else 0


__all__ = [
    "BY_LABEL",
    "PROFILES",
    "REFUSAL_PREFIX",
    "VERSIONED_PROFILES",
    "WATCHED_GLOBALS",
    "LoadOutcome",
    "RegisteredFunction",
    "ServerProfile",
    "Vetting",
    "run_loads",
    "vet",
    "vetted",
]
