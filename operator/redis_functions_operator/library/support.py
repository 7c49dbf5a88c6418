"""Which servers a vetted library can run on: refuse it, before any load, on a server that would fail it.

The vet (``vet.py``) runs a library's load once per server profile; this module applies that verdict to one real
server, as discovery found it (engine, version, whether it has a Lua engine at all). A library is *unsupported* on a
server when (each measured, ``docs/lua-sandbox.md`` "Per server"):

* the server has no Lua engine (Valkey 9.1 runs Lua as a module that can be absent or unloaded; it then answers
  ``Engine 'lua' not found``, and a Valkey built with Lua as a dynamic module is reported to crash on FUNCTION LOAD,
  valkey-io/valkey#3812): reason ``NoLuaEngine``, and nothing is sent;
* its load fails on that server and succeeds on another (the ``server`` global or a Valkey field used while
  loading, a version check in the top level): reason ``UnsupportedOnServer``;
* its functions read a global the server does not have, so they would load and then fail when called: ``server``
  exists on Valkey only, ``os`` (with ``os.clock``) on Redis 7.4+ and Valkey 8.0+. Reason ``UnsupportedOnServer``.

What the server would do is only known when the server is: when discovery could not read ``INFO`` (an ACL without
``+info``), a library whose verdict depends on the server is refused (fail closed), with a message that says so.
A library that fails to load on *every* server is not this module's business: the canary reports the server's own
compile error, as it always has.

A read of ``server`` or ``os`` on a line carrying ``-- lint-ignore: valkey-only`` (or ``os-clock``), or on the line
after such a comment, is the author's word that the line runs only where the global exists (a version check around
it): it is not counted.

``getfenv``, ``setfenv`` and ``newproxy`` are only *cautions*: Redis 8.2.2 and its security releases (7.2.11, 7.4.6,
8.0.4) remove them unless ``lua-enable-deprecated-api yes``, and patched builds remove them whatever their version
(Debian's Redis 7.0.15 and Valkey 9.1.2 lack them, measured), so a version cannot decide it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis_functions_operator.library.vet import (
    ENGINE_REDIS,
    ENGINE_VALKEY,
    PROFILES,
    VERSIONED_PROFILES,
    LoadOutcome,
    ServerProfile,
    Vetting,
    waived_rules,
)

NO_LUA_ENGINE = "NoLuaEngine"
UNSUPPORTED_ON_SERVER = "UnsupportedOnServer"


@dataclass(frozen=True)
class Server:
    """What discovery learned about one server from ``INFO server scriptingengines``."""

    engine: str = ""  # ENGINE_REDIS or ENGINE_VALKEY; "" when INFO could not be read
    version: str = ""  # the engine's own version: redis_version, or valkey_version on Valkey
    lua: bool | None = None  # False: the server lists its scripting engines and Lua is not among them

    @property
    def known(self) -> bool:
        return bool(self.engine) and _VERSION.match(self.version) is not None

    @property
    def label(self) -> str:
        if not self.engine:
            return "a server of unknown version"
        return f"{'Valkey' if self.engine == ENGINE_VALKEY else 'Redis'} {self.version or '(version unknown)'}"

    def at_least(self, version: str) -> bool:
        return _parse_version(self.version) >= _parse_version(version)

    @property
    def has_os(self) -> bool:
        """``os.clock`` exists in the function sandbox (Redis #12971, 7.4; Valkey 8.0)."""
        return self.at_least("7.4.0") if self.engine == ENGINE_REDIS else self.at_least("8.0.0")


#: Servers ``lint --server`` knows by name: each line's oldest release this project measured or documents.
SERVERS = {
    "redis-7.0": Server(ENGINE_REDIS, "7.0.15"),
    "redis-7.2": Server(ENGINE_REDIS, "7.2.6"),
    "redis-7.4": Server(ENGINE_REDIS, "7.4.1"),
    "redis-8.0": Server(ENGINE_REDIS, "8.0.0"),
    "redis-8.2": Server(ENGINE_REDIS, "8.2.2"),
    "valkey-7.2": Server(ENGINE_VALKEY, "7.2.7"),
    "valkey-8.0": Server(ENGINE_VALKEY, "8.0.1"),
    "valkey-8.1": Server(ENGINE_VALKEY, "8.1.0"),
    "valkey-9.0": Server(ENGINE_VALKEY, "9.0.0"),
    "valkey-9.1": Server(ENGINE_VALKEY, "9.1.2"),
}


@dataclass(frozen=True)
class Unsupported:
    """Why a library must not be loaded on one server."""

    reason: str  # NO_LUA_ENGINE or UNSUPPORTED_ON_SERVER
    message: str  # names the server (label) and what fails there
    line: int = 0


def unsupported(vetting: Vetting, server: Server) -> Unsupported | None:
    """The first reason ``vetting``'s library cannot run on ``server``, or None when it can (as far as the vet and the
    compiled code tell)."""
    if server.lua is False:
        return Unsupported(
            NO_LUA_ENGINE,
            f"{server.label} has no Lua engine (INFO scriptingengines lists none), so FUNCTION LOAD is never sent "
            "to it: load the server's lua module, or point the target at servers that have one",
        )
    if not any(o.loads for o in vetting.outcomes):
        return None  # no server loads it: the canary reports the server's own error, and nothing is ever called
    return _load_fails(vetting, server) or _call_fails(vetting, server)


def cautions(vetting: Vetting) -> list[tuple[int, str]]:
    """Lines whose function may fail on some servers whatever their version (``getfenv``, ``setfenv``,
    ``newproxy``), with why."""
    reads = vetting.global_reads or {}
    found = []
    for name in ("getfenv", "setfenv", "newproxy"):
        for line in reads.get(name, ()):
            found.append((line, _DEPRECATED.format(name=name)))
    return sorted(found)


_DEPRECATED = (
    "{name} is removed from the function sandbox by Redis 8.2.2 and its security releases 7.2.11, 7.4.6 and 8.0.4 "
    "(CVE-2025-46818) unless the server sets lua-enable-deprecated-api yes, and by patched builds of any version "
    "(Debian's Redis 7.0.15 and Valkey 9.1.2 lack it): there the function fails with 'Script attempted to access "
    "nonexistent global variable'"
)


def profile_for(server: Server) -> ServerProfile | None:
    """The vet profile that stands for ``server``: the newest measured release of its engine at or below its
    version (Redis 8.2 is run as 8.0-m01, Valkey 8.1 as 8.0.1), or the oldest one for an older server."""
    if not server.known:
        return None
    ours = sorted(
        (p for p in PROFILES + VERSIONED_PROFILES if p.engine == server.engine),
        key=lambda p: _parse_version(p.valkey_version or p.redis_version),
    )
    below = [p for p in ours if server.at_least(p.valkey_version or p.redis_version)]
    return below[-1] if below else ours[0]


# ------------------------------------------------------------------------------------------------------ the rules


def _load_fails(vetting: Vetting, server: Server) -> Unsupported | None:
    loading = [o for o in vetting.outcomes if o.loads]
    if len(loading) == len(vetting.outcomes):
        return None  # loads everywhere
    profile = profile_for(server)
    if profile is None:
        failing = next(o for o in vetting.outcomes if not o.loads)
        return _unknown(server, "its load succeeds on some servers and fails on others", failing.line)
    outcome = _outcome_on(vetting, profile)
    if outcome.loads or outcome.error is None:
        return None
    return Unsupported(
        UNSUPPORTED_ON_SERVER,
        f"FUNCTION LOAD would fail on {server.label}: {outcome.error} (it loads on {loading[0].server})",
        outcome.line,
    )


def _outcome_on(vetting: Vetting, profile: ServerProfile) -> LoadOutcome:
    """The vet's outcome for ``profile``; a library that did not read a version field was run on the first profile
    of each engine only, and every release of that engine loads it the same way."""
    by_label = {o.server: o for o in vetting.outcomes}
    return by_label.get(profile.label) or vetting.outcome(profile.engine)


def _call_fails(vetting: Vetting, server: Server) -> Unsupported | None:
    server_lines, os_lines = _counted_reads(vetting)
    if not (server_lines or os_lines):
        return None
    if not server.known:
        used = "the server global" if server_lines else "os.clock"
        return _unknown(server, f"it reads {used}, which exists on some servers only", (server_lines or os_lines)[0])
    if server_lines and server.engine != ENGINE_VALKEY:
        return Unsupported(
            UNSUPPORTED_ON_SERVER,
            f"the global 'server' exists on Valkey only: on {server.label} the function fails when called, with "
            "'Script attempted to access nonexistent global variable 'server'' (use redis.*, which works on both)",
            server_lines[0],
        )
    if os_lines and not server.has_os:
        return Unsupported(
            UNSUPPORTED_ON_SERVER,
            f"os.clock exists on Redis 7.4+ and Valkey 8.0+ only: on {server.label} the function fails when called, "
            "with 'Script attempted to access nonexistent global variable 'os'' (use redis.call('TIME'))",
            os_lines[0],
        )
    return None


def _unknown(server: Server, why: str, line: int = 0) -> Unsupported:
    return Unsupported(
        UNSUPPORTED_ON_SERVER,
        f"{why}, and {server.label} did not say what it is (INFO server was refused or incomplete; allow +info "
        "for the operator's user): refused rather than guessed",
        line,
    )


def _counted_reads(vetting: Vetting) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The lines reading ``server`` and ``os`` that no waiver covers (cached: a resync asks once per primary)."""
    reads = vetting.global_reads or {}
    if not (reads.get("server") or reads.get("os")):
        return (), ()
    key = vetting.library.sha256
    counted = _COUNTED.get(key)
    if counted is None:
        waived = _waived_lines(vetting.library.code)
        counted = (
            tuple(n for n in reads.get("server", ()) if "valkey-only" not in waived.get(n, set())),
            tuple(n for n in reads.get("os", ()) if not waived.get(n, set()) & {"os-clock", "valkey-only"}),
        )
        if len(_COUNTED) >= 4096:
            _COUNTED.clear()
        _COUNTED[key] = counted
    return counted


_COUNTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _waived_lines(code: bytes) -> dict[int, set[str]]:
    """Rules waived per line by ``-- lint-ignore:`` comments."""
    if b"lint-ignore" not in code:
        return {}
    from redis_functions_operator.library._lua.tokens import tokenize

    return waived_rules(tokenize(code).comments)


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def _parse_version(version: str) -> tuple[int, int, int]:
    found = _VERSION.match(version or "")
    if not found:
        return (0, 0, 0)
    return (int(found.group(1)), int(found.group(2)), int(found.group(3) or 0))


__all__ = [
    "NO_LUA_ENGINE",
    "SERVERS",
    "UNSUPPORTED_ON_SERVER",
    "Server",
    "Unsupported",
    "cautions",
    "profile_for",
    "unsupported",
]
