"""Hypothesis strategies for bad (and good) RedisFunctionLibrary objects, each with the outcome it must reach.

A *scenario* is what hypothesis draws: a function of a unique id (``uid``) that builds one or more :class:`Case`
objects. The uid goes into every object, library and function name, so scenarios drawn independently never collide
unless a scenario collides on purpose (then its cases share a ``group``). Everything a scenario needs from the
running environment (addresses, Secret names) comes from :class:`Targets`, so the same draw is reproducible.

The generator is table-driven. A family is a builder registered in :data:`FAMILIES` by :func:`family` (what
hypothesis draws for it, how many scenarios per kind); its kinds are the keys of its table (kind -> how that kind
differs: its code, target or spec, and its :class:`Expect`); :func:`scenario` is the one strategy over all of them,
and :meth:`Ctx.case` the one place a case is made.

Each case carries its :class:`Expect`: the outcome classes it may end in, the condition reasons allowed, words the
rejection text or the condition message must contain, and, for libraries that get loaded, the exact bytes and where
(``placement``). The outcome classes:

=========  ======================================================================================================
rejected   the API server refuses the object (OpenAPI schema or CEL rule); kubectl's message says why
ready      Ready=True, every primary of the placement holds the exact code
stalled    Stalled=True: a permanent failure with a documented reason (InvalidLibrary, CompileError, SecretNotFound...)
retrying   Reconciling=True, reason ProgressingWithRetry: a transient failure (ConnectionFailed, Timeout...)
paused     ReconciliationPaused=True (pause-reconciliation / managed=false annotations): nothing is touched
=========  ======================================================================================================
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

API_VERSION = "redisfunctions.dev/v1alpha1"
KIND = "RedisFunctionLibrary"
MAX_CODE_BYTES = 1048576

REJECTED, READY, STALLED, RETRYING, PAUSED = "rejected", "ready", "stalled", "retrying", "paused"

#: Every reason a Stalled object may carry (README: permanent failures), and the transient ones. NodeLostDuringLoad
#: comes after the second canary lost (the first loss is retried).
# fmt: off
PERMANENT_REASONS = frozenset([
    "InvalidSpec", "InvalidLibrary", "LibraryNameMismatch", "UnsafeLibrary", "VetInconclusive", "UnsupportedOnServer",
    "NoLuaEngine", "CompileError", "FunctionNameConflict", "FunctionsUnsupported", "AuthenticationFailed",
    "PermissionDenied", "NotRedis", "SecretNotFound", "ConfigMapNotFound", "KeyNotFound", "ResourceConflict",
    "PayloadTooLarge", "NotAPrimary", "TLSHandshakeFailed", "LibraryExists", "InvalidDumpPayload", "WrongMode",
    "NodeLostDuringLoad", "InvalidSecret",
])
TRANSIENT_REASONS = frozenset([
    "ConnectionFailed", "Timeout", "NodeLoading", "NodeBusy", "TryAgain", "MasterDown", "OutOfMemory", "ClusterDown",
    "VerificationMismatch", "TopologyError", "RedisError", "KubernetesApiError", "NotAPrimary",
])
# fmt: on
#: Whatever the vet or the server may make of random bytes after a valid shebang.
ANY_REFUSAL = ("CompileError", "UnsafeLibrary", "VetInconclusive", "UnsupportedOnServer")


# ----------------------------------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Targets:
    """Addresses and Secret names of the environment the cases are applied to."""

    cluster_primaries: tuple[str, ...]
    cluster_replicas: tuple[str, ...]
    cluster_bus: str  # a cluster node's bus port: a real server, but not RESP
    standalone: str  # valkey-server, no auth
    standalone_alias: str  # the same server as localhost:<port>
    pair_primary: str
    pair_replica: str
    auth_server: str  # requirepass + an ACL user without FUNCTION
    resp6: str
    resp6_cluster: str
    http: str
    silent: str
    closing: str
    garbage: str
    echo: str
    closed: str  # a port nobody listens on
    apiserver: str  # the kube-apiserver's TLS port: a real server, but not RESP
    foreign_library: str  # loaded on the cluster and the standalone before the run, by nobody's object
    foreign_function: str  # ... and registering this function
    secret_good: str = "auth-good"  # password + username "default"
    secret_wrong: str = "auth-wrong"
    secret_limited: str = "auth-limited"  # username "limited" (no FUNCTION permission) + its password
    secret_password_key: str = "password"
    valkey_placements: tuple[str, ...] = ("standalone",)  # Valkey 9.1.2 truncates a library's source at a NUL byte

    @property
    def cluster_nodes(self) -> tuple[str, ...]:
        return self.cluster_primaries + self.cluster_replicas


#: A substring a message must contain, or a tuple of alternatives (any one will do).
Words = str | tuple[str, ...]


def missing_words(says: tuple[Words, ...], text: str) -> list[Words]:
    """The entries of ``says`` that ``text`` does not satisfy."""
    return [w for w in says if not any(a in text for a in ((w,) if isinstance(w, str) else w))]


@dataclass(frozen=True)
class Expect:
    outcomes: frozenset[str]
    reasons: frozenset[str] = frozenset()  # for stalled/retrying: the Ready condition reasons allowed
    says: tuple[Words, ...] = ()  # what the rejection text (rejected) or the Ready condition message must hold
    loads: bool = False  # the library is loaded on its placement even though the object cannot be Ready

    def describe(self) -> str:
        reasons = f" {'|'.join(sorted(self.reasons))}" if self.reasons else ""
        return f"{'|'.join(sorted(self.outcomes))}{reasons}"


def ready() -> Expect:
    return Expect(frozenset({READY}))


def rejected(*says: Words) -> Expect:
    return Expect(frozenset({REJECTED}), says=says)


def stalled(*reasons: str, says: tuple[Words, ...] = ()) -> Expect:
    return Expect(frozenset({STALLED}), frozenset(reasons), says)


def retrying(*reasons: str, says: tuple[Words, ...] = (), loads: bool = False) -> Expect:
    return Expect(frozenset({RETRYING}), frozenset(reasons), says, loads)


def paused() -> Expect:
    return Expect(frozenset({PAUSED}))


def either(*reasons: str, outcomes: tuple[str, ...] = (STALLED, RETRYING)) -> Expect:
    """Several outcomes are right (which one depends on timing or on the winner of a race)."""
    return Expect(frozenset(outcomes), frozenset(reasons))


@dataclass
class Case:
    name: str  # metadata.name (invalid on purpose in some rejected cases)
    category: str
    manifest: dict[str, Any]
    expect: Expect
    library: str | None = None  # the library name, when the object may load it
    code: bytes | None = None  # the exact bytes the placement's primaries must hold when it is loaded
    functions: tuple[str, ...] = ()  # the function names it registers (status.functions)
    placement: str | None = None  # cluster | standalone | pair | auth | node:<address>
    group: str | None = None  # cases that compete: exactly one of the group ends Ready
    extras: list[dict[str, Any]] = field(default_factory=list)  # Secrets/ConfigMaps to create first

    @property
    def namespace(self) -> str:
        return str(self.manifest["metadata"].get("namespace", ""))

    def summary(self) -> str:
        return f"{self.name} [{self.category}] expects {self.expect.describe()}"


Scenario = Callable[[str, str], list[Case]]  # (uid, namespace) -> cases


def manifest(
    name: str,
    namespace: str,
    target: dict[str, Any] | None,
    *,
    code: str | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = dict(spec)
    if code is not None:
        body["code"] = code
    if target is not None:
        body["target"] = target
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": body}


def config_map(name: str, namespace: str, key: str, value: bytes) -> dict[str, Any]:
    """A ConfigMap holding ``value`` under ``key``: as ``data`` when it is UTF-8, else as ``binaryData``."""
    try:
        data: dict[str, Any] = {"data": {key: value.decode("utf-8")}}
    except UnicodeDecodeError:
        data = {"binaryData": {key: base64.b64encode(value).decode()}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, **data}


def secret(name: str, namespace: str, values: dict[str, bytes]) -> dict[str, Any]:
    data = {k: base64.b64encode(v).decode() for k, v in values.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "type": "Opaque",
            "data": data}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# text and Lua building blocks

IDENT_CHARS = string.ascii_letters + string.digits + "_"
ident = st.text(IDENT_CHARS, min_size=0, max_size=24)
nonempty_ident = st.text(IDENT_CHARS, min_size=1, max_size=24)
#: Any text that UTF-8 can carry (no surrogates): NUL, CR, LF, BOM, RTL marks, emoji, combining characters...
any_text = st.text(st.characters(codec="utf-8"), max_size=60)
#: ... without line breaks (Lua ends a short comment at CR or LF).
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60)
#: Text that is not whitespace only (C isspace) and holds no newline: junk after the shebang name.
junk_token = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\t\v\f \x00"), min_size=1, max_size=20)

VALID_FLAGS = ("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")


def long_string(text: str) -> str:
    """A Lua long string literal holding ``text`` (level >= 1: Lua 5.1 refuses ``[[`` nested in a level-0 one)."""
    level = 1
    while True:
        close = "]" + "=" * level + "]"
        if (text + close).find(close) == len(text):
            return "[" + "=" * level + "[" + text + close
        level += 1


def long_bytes(data: bytes) -> bytes:
    """:func:`long_string` of bytes that need not be UTF-8 (latin-1 maps each byte to one character and back)."""
    return long_string(data.decode("latin-1")).encode("latin-1")


def block_comment(text: str) -> str:
    return "--" + long_string(text)


def register(fn: str, result: str = "1") -> str:
    """The plainest registration of a function ``fn`` returning ``result``."""
    return f"redis.register_function('{fn}', function() return {result} end)"


def simple_code(library: str, fn: str) -> str:
    """A library with one function: what most cases load when the code itself is not what they are about."""
    return f"#!lua name={library}\n{register(fn)}\n"


def big_code(library: str, fn: str, size: int, seed: int) -> str:
    """A library of exactly ``size`` bytes of UTF-8: one function and a long comment of :func:`filler`."""
    head = f"#!lua name={library}\n{register(fn)}\n--[==["
    code = head + filler(size - len(head.encode()) - 5, seed) + "]==]\n"
    assert len(code.encode()) == size
    return code


def filler(size: int, seed: int) -> str:
    """Exactly ``size`` bytes of UTF-8 text mixing 1-, 2-, 3- and 4-byte characters (never ``]==]``)."""
    rng = random.Random(seed)
    alphabet = ["a", "Z", " ", "\n", "\r\n", "é", "ß", "Ж", "€", "中", "😀", "\u200f", "\x00", "\t"]
    parts: list[str] = []
    left = size
    while left > 4:
        piece = rng.choice(alphabet)
        parts.append(piece)
        left -= len(piece.encode())
    parts.append("a" * left)
    return "".join(parts)


#: kind -> a function body that compiles (given the draw); some would misbehave when called (the operator never
#: calls them): an infinite loop at call time loads fine and hangs only if called.
BODIES: dict[str, Callable[[st.DrawFn], str]] = {
    "return": lambda draw: f"return {long_string(draw(any_text))}",
    "loop": lambda draw: "while true do end",
    "repeat": lambda draw: "local n = 0 repeat n = n + 1 until false",
    "args": lambda draw: "local t = {} for i = 1, #args do t[i] = args[i] end return t",
    "get": lambda draw: "return redis.call('GET', keys[1])",
    "error": lambda draw: f"error({long_string(draw(any_text))})",
    "version": lambda draw: "return redis.REDIS_VERSION",
    "status": lambda draw: f"return redis.status_reply({long_string(draw(line_text))})",
}
#: kind -> top-level lines that change nothing: comments, blank lines, locals.
DECORATIONS: dict[str, Callable[[st.DrawFn], str]] = {
    "comment": lambda draw: "-- " + draw(line_text),
    "block": lambda draw: block_comment(draw(any_text)),
    "blank": lambda draw: "",
    "local": lambda draw: f"local v_{draw(st.integers(0, 9999))} = {long_string(draw(any_text))}",
    "spaces": lambda draw: " \t ",
}


@st.composite
def function_body(draw: st.DrawFn) -> str:
    return BODIES[draw(st.sampled_from(list(BODIES)))](draw)


@st.composite
def decoration(draw: st.DrawFn) -> str:
    return DECORATIONS[draw(st.sampled_from(list(DECORATIONS)))](draw)


@st.composite
def shebang_template(draw: st.DrawFn) -> Callable[[str], str]:
    """A first line the CRD and Redis both accept (without its line ending), as a template of the library name."""
    engine = draw(st.sampled_from(["lua", "LUA", "Lua", "lUa"]))
    key = draw(st.sampled_from(["name", "NAME", "Name"]))
    before = draw(st.sampled_from([" ", "\t", "  ", " \t "]))
    after = draw(st.sampled_from(["", " ", "\t", "   "]))
    return lambda library: f"#!{engine}{before}{key}={library}{after}"


@st.composite
def registration(draw: st.DrawFn) -> Callable[[str, int], str]:
    """One ``register_function`` call, in one of its forms; a template of the function name and an index."""
    body = draw(function_body())
    form = draw(st.sampled_from(["positional", "table", "paren-table", "local"]))
    flags = draw(st.lists(st.sampled_from(VALID_FLAGS), unique=True, max_size=3))
    flag_text = "{" + ", ".join(f"'{f}'" for f in flags) + "}"
    description = long_string(draw(any_text))
    callback = f"callback=function(keys, args) {body} end"
    forms: dict[str, Callable[[str, int], str]] = {
        "positional": lambda name, i: f"redis.register_function('{name}', function(keys, args) {body} end)",
        "table": lambda name, i: f"redis.register_function{{function_name='{name}', {callback}, flags={flag_text}}}",
        "paren-table": lambda name, i: (
            f"redis.register_function({{function_name='{name}', {callback}, description={description}}})"
        ),
        "local": lambda name, i: (
            f"local function helper_{i}(keys, args) {body} end\nredis.register_function('{name}', helper_{i})"
        ),
    }
    return forms[form]


CodeTemplate = Callable[[str, str], tuple[str, tuple[str, ...]]]


@st.composite
def valid_code(draw: st.DrawFn) -> CodeTemplate:
    """A library Redis loads, as a template of (library name, function-name prefix) -> (code, function names).
    Everything random is drawn here; the names (unique per case) are filled in later."""
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    first = draw(shebang_template())
    count = draw(st.integers(1, 4))
    suffixes = draw(st.lists(ident, min_size=count, max_size=count))
    parts = [(draw(st.lists(decoration(), max_size=2)), draw(registration())) for _ in range(count)]
    trailer = draw(st.lists(decoration(), max_size=2))
    end = draw(st.sampled_from(["", newline]))

    def render(library: str, prefix: str) -> tuple[str, tuple[str, ...]]:
        names = tuple(f"{prefix}{i}_{s}" for i, s in enumerate(suffixes))
        lines = [first(library)]
        for index, (decorations, register_one) in enumerate(parts):
            lines += decorations
            lines.append(register_one(names[index], index))
        lines += trailer
        return newline.join(lines) + end, names

    return render


# ----------------------------------------------------------------------------------------------------------------------
# targets


TARGET_KINDS = ("cluster", "standalone", "pair", "auth", "node")


@dataclass(frozen=True)
class TargetChoice:
    spec: dict[str, Any]
    placement: str


@st.composite
def good_target(draw: st.DrawFn, t: Targets, kind: str | None = None) -> TargetChoice:
    """A reachable Redis the library can be loaded on, written in one of the ways a user might."""
    if kind is None:
        kind = draw(st.sampled_from(TARGET_KINDS))
    if kind == "cluster":
        seeds = draw(st.lists(st.sampled_from(t.cluster_nodes), min_size=1, max_size=3, unique=True))
        mode = draw(st.sampled_from([None, "auto", "cluster"]))
        return TargetChoice(_target(seeds, mode), "cluster")
    if kind == "standalone":
        seed = draw(st.sampled_from([t.standalone, t.standalone_alias]))
        return TargetChoice(_target([seed], draw(st.sampled_from([None, "auto", "standalone"]))), "standalone")
    if kind == "pair":
        seeds = draw(st.sampled_from([[t.pair_primary], [t.pair_replica], [t.pair_replica, t.pair_primary]]))
        return TargetChoice(_target(seeds, draw(st.sampled_from([None, "auto", "standalone"]))), "pair")
    if kind == "auth":
        ref: dict[str, Any] = {"name": t.secret_good}
        if draw(st.booleans()):
            ref["passwordKey"] = t.secret_password_key
        if draw(st.booleans()):
            ref["usernameKey"] = "username"
        return TargetChoice(_target([t.auth_server], None, auth=ref), "auth")
    primary = draw(st.sampled_from(t.cluster_primaries))  # standalone mode on one cluster primary: only there
    return TargetChoice(_target([primary], "standalone"), f"node:{primary}")


def _target(seeds: list[str], mode: str | None, **extra: Any) -> dict[str, Any]:
    target: dict[str, Any] = {"endpoints": list(seeds)}
    if mode is not None:
        target["mode"] = mode
    if "auth" in extra:
        target["auth"] = {"secretRef": extra.pop("auth")}
    target.update(extra)
    return target


# ----------------------------------------------------------------------------------------------------------------------
# the one generator


def names(uid: str, tag: str) -> tuple[str, str, str]:
    """(object name, library name, function-name prefix) for a case."""
    return f"c{uid}-{tag}", f"L{uid}_{tag.replace('-', '_')}", f"f{uid}_"


@dataclass
class Ctx:
    """What a family's builder gets for one scenario: the environment, the kind and its table entry (``c.entry``),
    hypothesis' draws as attributes (``c.choice``, ``c.junk``...), and the case's uid, namespace and names."""

    family: Family
    t: Targets
    kind: str
    drawn: dict[str, Any]
    uid: str
    ns: str
    name: str = field(init=False)
    library: str = field(init=False)
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.library, self.prefix = names(self.uid, self.family.tag.format(kind=self.kind))

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["drawn"][key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def entry(self) -> Any:
        return self.family.kinds[self.kind]

    @property
    def fn(self) -> str:
        return f"{self.prefix}f"

    @property
    def simple(self) -> str:
        return simple_code(self.library, self.fn)

    @property
    def standalone(self) -> dict[str, Any]:
        return _target([self.t.standalone], None)

    def case(self, target: TargetChoice | dict[str, Any] | None, expect: Expect, code: str | None = None, *,
             loads: bytes | None = None, placement: str | None = None, functions: tuple[str, ...] | None = None,
             spec: Mapping[str, Any] | None = None, name: str | None = None, category: str | None = None,
             **more: Any) -> Case:  # fmt: skip
        """One :class:`Case`: its manifest and what it expects. The case holds its code (``loads``, else ``code``) and
        placement (else the chosen target's) only when it may end Ready or loads anyway: only then do the tests read
        them (and the library name and functions). ``more``: annotations (of the manifest), library, group, extras."""
        if isinstance(target, TargetChoice):
            placement, target = placement or target.placement, target.spec
        name, spec = name or self.name, dict(spec or {})
        if code is not None:
            spec["code"] = code
        body = manifest(name, self.ns, target, annotations=more.pop("annotations", None), **spec)
        held = READY in expect.outcomes or expect.loads
        data = loads if loads is not None else code.encode() if code is not None else None
        library, category = more.pop("library", self.library), category or f"{self.family.name}/{self.kind}"
        functions = (self.fn,) if functions is None else functions
        return Case(name, category, body, expect, library, data if held else None, functions,
                    placement if held else None, **more)  # fmt: skip


DrawFor = Callable[[Targets, str], st.SearchStrategy[Any]]  # (targets, kind) -> what hypothesis draws
Builder = Callable[[Ctx], list[Case]]


@dataclass(frozen=True)
class Family:
    """One family of cases: ``kinds`` is its table (kind -> entry); ``draws`` are drawn, in this order, for each."""

    name: str  # the category's first part: ``<name>/<kind>``
    tag: str  # the names' tag (``{kind}`` filled in)
    per_kind: int  # scenarios per kind and run
    draws: Mapping[str, st.SearchStrategy[Any] | DrawFor]
    build: Builder
    kinds: Mapping[str, Any]


#: Every family, in the order they are drawn (which fixes the derandomized draw): each kind gets its own hypothesis
#: run of ``per_kind`` scenarios, which draws the rest.
FAMILIES: list[Family] = []


def family(
    name: str, per_kind: int, kinds: Mapping[str, Any] | tuple[str, ...], tag: str = "", **draws: Any
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as a family (see :class:`Family`); ``tag`` defaults to ``name``."""

    def add(build: Builder) -> Builder:
        table = kinds if isinstance(kinds, Mapping) else dict.fromkeys(kinds)
        FAMILIES.append(Family(name, tag or name, per_kind, draws, build, table))
        return build

    return add


@st.composite
def scenario(draw: st.DrawFn, family: Family, t: Targets, kind: str) -> Scenario:
    """The one strategy: draw what ``family`` needs for ``kind``; the scenario builds its cases from that."""
    drawn = {k: draw(s if isinstance(s, st.SearchStrategy) else s(t, kind)) for k, s in family.draws.items()}
    return lambda uid, ns: family.build(Ctx(family, t, kind, drawn, uid, ns))


def _any_target(t: Targets, kind: str) -> st.SearchStrategy[TargetChoice]:
    return good_target(t)


_utf8 = st.characters(codec="utf-8")
_not_ident = st.characters(codec="utf-8", exclude_characters=IDENT_CHARS + "\n\r\t ")


# ----------------------------------------------------------------------------------------------------------------------
# the families, each a builder and (most) a table


@family("valid", 8, TARGET_KINDS, "valid-{kind}", suffix=ident, choice=good_target, with_library_name=st.booleans(),
        one_in_ten=st.integers(0, 9),
        version=st.one_of(st.none(), any_text, st.text(_utf8, min_size=200, max_size=256)),
        policy=st.sampled_from([None, "Delete", "Retain"]),
        resync=st.sampled_from([None, "5s", "24h", "90s", "1h30m", "2.5m", "23h59m59.999s"]),
        template=valid_code())  # fmt: skip
def _valid(c: Ctx) -> list[Case]:
    """Correct libraries in every shape (CRLF, unicode, comments, table form, flags, infinite loops at call time, odd
    shebang spellings, a 256-character libraryName, odd versions) on every kind of target: Ready, byte-exact."""
    library = c.library + "_" + c.suffix
    library = (library + "_" + "x" * 256)[:256] if c.one_in_ten == 0 else library
    code, functions = c.template(library, c.prefix)
    optional = {"libraryName": library if c.with_library_name else None, "version": c.version,
                "deletionPolicy": c.policy, "resyncInterval": c.resync}  # fmt: skip
    spec = {k: v for k, v in optional.items() if v is not None}
    return [c.case(c.choice, ready(), code, spec=spec, library=library, functions=functions)]


@family("huge", 1, ("64", "200", "512"), seed=st.integers(0, 2**32 - 1), choice=_any_target)
def _huge(c: Ctx) -> list[Case]:
    """Large but legal libraries (a big comment of multi-byte text): Ready. The kind is the size in KiB."""
    code = big_code(c.library, f"{c.prefix}big", int(c.kind) * 1024, c.seed)
    return [c.case(c.choice, ready(), code, functions=(f"{c.prefix}big",), category=f"huge/{c.kind}KiB")]


@family("oversized", 1, ("bytes", "chars"), fill_seed=st.integers(0, 2**16))
def _oversized(c: Ctx) -> list[Case]:
    """Over 1 MiB: refused by the CRD, without echoing the code back. ``bytes``: under 1 Mi characters but one byte
    over 1 MiB of UTF-8; ``chars``: 1 Mi + 1 characters."""
    if c.kind == "bytes":
        code, says = big_code(c.library, c.fn, MAX_CODE_BYTES + 1, c.fill_seed), "code must be at most 1 MiB"
    else:
        head = f"#!lua name={c.library}\n{register(c.fn)}\n--[==["
        code, says = head + "a" * (MAX_CODE_BYTES + 1 - len(head)), "Too long"
    return [c.case(c.standalone, rejected("spec.code", says), code)]


_NO_SHEBANG = "must start with a #!lua shebang"
#: First lines the CRD refuses: kind -> (the first line, what the CRD's message says).
SHEBANG_REFUSED: dict[str, tuple[Callable[[Ctx], str], str]] = {
    "text": (lambda c: "x" + c.text.replace("\n", " "), _NO_SHEBANG),
    "bom": (lambda c: f"\ufeff#!lua name={c.library}", _NO_SHEBANG),
    "leading": (lambda c: f"\n#!lua name={c.library}", _NO_SHEBANG),
    "bad-name": (lambda c: f"#!lua name={c.library}{c.bad}x", "must name the library"),
    "no-name": (lambda c: "#!lua", "must name the library"),
    "no-newline": (lambda c: f"#!lua name={c.library}", "end with a newline"),
    "engine": (lambda c: f"#!luajit name={c.library}", "must name the library"),
    "long-line": (lambda c: f"#!lua name={c.library} " + "x" * 1100, "within the first 1024 characters"),
    "js": (lambda c: f"#!js name={c.library}", _NO_SHEBANG),
}


@family("shebang-refused", 1, SHEBANG_REFUSED, "shebang", text=any_text,
        bad=st.text(_not_ident, min_size=1, max_size=5))  # fmt: skip
def _shebang(c: Ctx) -> list[Case]:
    first, says = c.entry
    code = first(c) if c.kind == "no-newline" else f"{first(c)}\n{register(c.fn)}\n"
    return [c.case(c.standalone, rejected("spec.code", "e.g. '#!lua name=mylib'", says), code)]


def _first_line(first: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda c: f"{first(c)}\n{register(c.fn)}\n"


_LINE_1 = stalled("InvalidLibrary", says=("line 1",))
#: First lines the CRD lets through and Redis refuses at the metadata stage: InvalidLibrary before any load.
BAD_METADATA: dict[str, tuple[Callable[[Ctx], str], Expect]] = {
    "junk": (_first_line(lambda c: f"#!lua name={c.library} {c.junk}"), _LINE_1),
    "twice": (_first_line(lambda c: f"#!lua name={c.library} name={c.library}"), _LINE_1),
    "quote": (_first_line(lambda c: f"#!lua name={c.library} 'unbalanced"), _LINE_1),
    "nul": (_first_line(lambda c: f"#!lua name={c.library} x\x00y"), _LINE_1),
    "empty-arg": (_first_line(lambda c: f'#!lua name={c.library} ""'), _LINE_1),
}


def _lines(lines: Callable[[str, str, str], list[str]]) -> Callable[[Ctx], str]:
    """Code of ``lines(fn, other, upper)``: ``other`` and ``upper`` are ``fn`` in another case, two ways."""

    def code(c: Ctx) -> str:
        fn = f"{c.prefix}{c.suffix}"
        other = fn.swapcase() if fn.swapcase() != fn else fn.upper()
        upper = fn.upper() if fn.upper() != fn else fn.lower()
        return f"#!lua name={c.library}\n" + "\n".join(lines(fn, other, upper)) + "\n"

    return code


_UNSAFE = stalled("UnsafeLibrary", says=("refused before loading",))
_TABLE_FORM = "redis.register_function{{function_name='{}', callback=function() return 1 end}}"
_LOG = "redis.log(redis.LOG_WARNING, 'loading')"
_LOOP = "for i = 1, #names do redis.register_function(names[i], function() return i end) end"
#: Libraries that crash a server: refused before loading. An exact duplicate harms nothing: the server refuses it
#: (the canary's own reply), no crash to prevent.
# fmt: off
UNSAFE_LIBRARY: dict[str, tuple[Callable[[Ctx], str], Expect]] = {
    "duplicate": (_lines(lambda fn, o, u: [register(fn)] * 2),
                  stalled("CompileError", says=("Function already exists in the library",))),
    "case-duplicate": (_lines(lambda fn, o, u: [register(fn), register(u, "2")]), _UNSAFE),
    "table-duplicate": (_lines(lambda fn, o, u: [_TABLE_FORM.format(fn), register(o, "2")]), _UNSAFE),
    "top-level-log": (_lines(lambda fn, o, u: [_LOG, register(fn)]), _UNSAFE),
    "aliased-log": (_lines(lambda fn, o, u: ["local r = redis", "r.log(r.LOG_WARNING, 'loading')", register(fn)]),
                    _UNSAFE),
    "computed-case-duplicate": (_lines(lambda fn, o, u: [f"local names = {{'{fn}', '{o}'}}", _LOOP]), _UNSAFE),
}
# fmt: on


def _body(body: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda c: f"#!lua name={c.library}\n{body(c)}\n"


_COMPILE = stalled("CompileError")
_FLAGGED = "redis.register_function{{function_name='{}', callback=function() return 1 end, flags={{'{}'}}}}"
#: Libraries Redis refuses when loading: syntax errors, top-level calls, no function, bad function names, unknown
#: flags, wrong arguments; random text may be anything the vet refuses; a top-level infinite loop is refused before
#: any load, as undecidable.
# fmt: off
COMPILE_ERROR: dict[str, tuple[Callable[[Ctx], str], Expect]] = {
    "garbage": (_body(lambda c: c.garbage), stalled(*ANY_REFUSAL)),
    "syntax": (_body(lambda c: register(c.fn) + "\nlocal = 1"), _COMPILE),
    "top-call": (_body(lambda c: "redis.call('SET', 'k', 'v')\n" + register(c.fn)), _COMPILE),
    "top-error": (_body(lambda c: "error('refusing to load')\n" + register(c.fn)), _COMPILE),
    "top-loop": (_body(lambda c: "while true do end\n" + register(c.fn)),
                 stalled("VetInconclusive", says=("Lua instructions",))),
    "no-functions": (_body(lambda c: "-- nothing registered\nlocal x = 1"),
                     stalled("CompileError", says=("No functions registered",))),
    "bad-fn-name": (_body(lambda c: register(c.prefix + c.bad_fn if c.bad_fn else "")), _COMPILE),
    "unknown-flag": (_body(lambda c: _FLAGGED.format(c.fn, c.flag)), _COMPILE),
    "arguments": (_body(lambda c: f"redis.register_function('{c.fn}', function() return 1 end, 'third')"), _COMPILE),
    "nested": (_body(lambda c: f"local function later() {register(c.fn)} end"), _COMPILE),
    "os": (_body(lambda c: "os.exit(1)\n" + register(c.fn)), _COMPILE),
}
# fmt: on


BAD_FUNCTION_NAMES = ["with-dash", "with space", "ünï", "", "a.b", "tab\there"]
_flag_chars = st.characters(codec="utf-8", exclude_characters="'\\\n\r")
_bad_flag = st.text(_flag_chars, min_size=1, max_size=12).filter(lambda f: f.lower() not in VALID_FLAGS)


# Three families of code the CRD accepts and the operator or Redis refuses, each kind (code, expectation); the
# decorators apply bottom-up, so they are drawn in this order: metadata, unsafe, compile.
@family("compile", 2, COMPILE_ERROR, garbage=any_text, bad_fn=st.sampled_from(BAD_FUNCTION_NAMES), flag=_bad_flag,
        choice=_any_target)  # fmt: skip
@family("unsafe", 2, UNSAFE_LIBRARY, suffix=nonempty_ident, choice=_any_target)
@family("metadata", 2, BAD_METADATA, junk=junk_token, choice=_any_target)
def _stalled_code(c: Ctx) -> list[Case]:
    code, expect = c.entry
    return [c.case(c.choice, expect, code(c))]


def _seeds(attr: str) -> DrawFor:
    """One or two distinct seeds among the cluster's ``attr`` (``cluster_primaries`` or ``cluster_nodes``)."""
    return lambda t, k: st.lists(st.sampled_from(getattr(t, attr)), min_size=1, max_size=2, unique=True)


@family("collision", 2, ("pair", "pair-case", "foreign", "foreign-case"), "{kind}",
        target_kind=st.sampled_from(["cluster", "standalone"]), seeds_a=_seeds("cluster_primaries"),
        seeds_b=_seeds("cluster_nodes"))  # fmt: skip
def _collision(c: Ctx) -> list[Case]:
    """Two libraries registering the same function (maybe in another case) on the same target: exactly one wins,
    the other is Stalled with FunctionNameConflict. Or a function owned by a library nobody's object manages."""
    t, kind = c.t, c.kind

    def spec_for(seeds: list[str]) -> dict[str, Any]:
        return _target(seeds if c.target_kind == "cluster" else [t.standalone], None)

    if kind.startswith("foreign"):
        name, library, _ = names(c.uid, "foreign")
        fn = t.foreign_function if kind == "foreign" else t.foreign_function.upper()
        expect = stalled("FunctionNameConflict", says=(fn, f"owned by library '{t.foreign_library}'"))
        return [c.case(spec_for(c.seeds_a), expect, simple_code(library, fn), name=name, library=library)]
    shared, cases = f"f{c.uid}_shared", []
    for tag, seeds, fn in (
        ("a", c.seeds_a, shared),
        ("b", c.seeds_b, shared.upper() if kind == "pair-case" else shared),
    ):
        name, library, prefix = names(c.uid, f"clash-{tag}")
        code = f"#!lua name={library}\n{register(prefix + 'own')}\n{register(fn, repr(tag))}\n"
        expect = either("FunctionNameConflict", outcomes=(READY, STALLED))
        cases.append(c.case(spec_for(seeds), expect, code, placement=c.target_kind, functions=(f"{prefix}own", fn),
                            name=name, library=library, group=f"g{c.uid}"))  # fmt: skip
    return cases


@family("collision", 2, ("cluster", "standalone"), count=st.integers(2, 3), seeds=_seeds("cluster_primaries"))
def _library_name_clash(c: Ctx) -> list[Case]:
    """Two or three objects wanting the same library on the same target (written the same way): the oldest owns
    it, the others are Stalled with ResourceConflict. The kind is the target."""
    library, target = f"L{c.uid}_shared", _target(c.seeds if c.kind == "cluster" else [c.t.standalone], None)
    return [c.case(target, either("ResourceConflict", outcomes=(READY, STALLED)),
                   f"#!lua name={library}\n{register(f'f{c.uid}_{i}', str(i))}\n", placement=c.kind,
                   functions=(f"f{c.uid}_{i}",), name=f"c{c.uid}-owner{i}", library=library,
                   category="collision/library-name", group=f"g{c.uid}") for i in range(c.count)]  # fmt: skip


def _at(*seeds: str, mode: str | None = None, **extra: Any) -> Callable[[Targets], dict[str, Any]]:
    """A target of the given :class:`Targets` attributes (or literal addresses, holding a ``:``)."""
    return lambda t: _target([s if ":" in s else getattr(t, s) for s in seeds], mode, **extra)


#: Unreachable, wrong port, not Redis at all, Redis without FUNCTION, the wrong mode, TLS to a plaintext server, and
#: seeds mixing a dead and a live server: kind -> (target, expectation). The pure-Python reply parser quotes an
#: HTTP reply's first line, hiredis its first byte.
# fmt: off
BAD_TARGET: dict[str, tuple[Callable[[Targets], dict[str, Any]], Expect]] = {
    "closed": (_at("closed"), retrying("ConnectionFailed")),
    "no-dns": (_at("no-such-host.invalid:6379"), retrying("ConnectionFailed")),
    "closing": (_at("closing"), retrying("ConnectionFailed")),
    "silent": (_at("silent"), retrying("Timeout")),
    "bus-port": (_at("cluster_bus"), retrying("ConnectionFailed")),
    "apiserver": (_at("apiserver"), retrying("ConnectionFailed")),
    "http": (_at("http"), stalled("NotRedis", says=(("HTTP/1.1 400", 'got "H" as reply type byte'),))),
    "garbage": (_at("garbage"), stalled("NotRedis")),
    "echo": (_at("echo"), either("NotRedis", "TopologyError")),
    "resp6": (_at("resp6"), stalled("FunctionsUnsupported", says=("unknown command 'FUNCTION'",))),
    "resp6-cluster": (_at("resp6_cluster"), stalled("FunctionsUnsupported")),
    "resp6-auth": (lambda t: _target([t.resp6], None, auth={"name": t.secret_good}), stalled("AuthenticationFailed")),
    "ipv6": (lambda t: _target([f"[::1]:{t.standalone.rsplit(':', 1)[1]}"], None), retrying("ConnectionFailed")),
    "cluster-mode-on-standalone": (_at("standalone", mode="cluster"),
                                   stalled("WrongMode", says=("cluster support disabled",))),
    "sentinel-mode-on-redis": (_at("standalone", mode="sentinel", sentinel={"masterName": "mymaster"}),
                               stalled("WrongMode", says=("unknown command 'SENTINEL'",))),
    "tls-on-plaintext": (_at("standalone", tls={"enabled": True, "insecureSkipVerify": True}),
                         either("TLSHandshakeFailed", "Timeout", "ConnectionFailed")),
    "dead-then-cluster": (lambda t: _target([t.closed, t.cluster_primaries[0]], None), ready()),
    "dead-then-standalone": (_at("closed", "standalone"), retrying("ConnectionFailed", loads=True)),
}
# fmt: on


@family("target", 1, BAD_TARGET, template=valid_code())
def _bad_target(c: Ctx) -> list[Case]:
    code, functions = c.template(c.library, c.prefix)
    target, expect = c.entry
    placement = {"dead-then-cluster": "cluster", "dead-then-standalone": "standalone"}.get(c.kind)
    return [c.case(target(c.t), expect, code, placement=placement, functions=functions)]


_DENIED = stalled("AuthenticationFailed")
#: A password Secret (or none) sent to a server: kind -> (ctx) -> (server, secretRef or None, expectation).
# fmt: off
AUTH_REFERENCE: dict[str, Callable[[Ctx], tuple[str, dict[str, Any] | None, Expect]]] = {
    "auth-good": lambda c: (c.t.auth_server, {"name": c.t.secret_good}, ready()),
    "auth-wrong": lambda c: (c.t.auth_server, {"name": c.t.secret_wrong}, _DENIED),
    "auth-missing-secret": lambda c: (c.t.auth_server, {"name": f"missing-{c.uid}"},
                                      stalled("SecretNotFound", says=(f"missing-{c.uid}",))),
    "auth-missing-key": lambda c: (c.t.auth_server, {"name": c.t.secret_good, "passwordKey": "no-such-key"},
                                   stalled("KeyNotFound", says=("no-such-key", c.t.secret_good))),
    "auth-missing-user-key": lambda c: (c.t.auth_server, {"name": c.t.secret_good, "usernameKey": "no-such-user-key"},
                                        stalled("KeyNotFound", says=("no-such-user-key",))),
    "auth-limited": lambda c: (c.t.auth_server, {"name": c.t.secret_limited, "usernameKey": "username"},
                               stalled("PermissionDenied", says=("no permissions",))),
    "auth-on-open-server": lambda c: (c.t.standalone, {"name": c.t.secret_good}, _DENIED),
    "no-auth-on-protected": lambda c: (c.t.auth_server, None, _DENIED),
}
# fmt: on


def _ref(kind: str, name: str, key: str) -> dict[str, Any]:
    return {"codeFrom": {kind: {"name": name, "key": key}}}


def _long_library(c: Ctx, code: str) -> tuple[bytes | None, Expect, dict[str, Any], tuple[str, ...] | None]:
    """A library name too long for the CRD's 1024-character look at the first line, fine for Redis."""
    c.library = c.library + "_" + "n" * 2000
    return c.simple.encode(), ready(), {}, (c.fn,)


def _binary(c: Ctx) -> bytes:
    """Bytes that are not UTF-8, in a comment and in a string: loaded byte-exact."""
    blob: bytes = c.blob
    comment = blob.replace(b"\n", b" ").replace(b"\r", b" ")
    call = f"redis.register_function('{c.fn}', function() return ".encode() + long_bytes(blob) + b" end)\n"
    return f"#!lua name={c.library}\n-- ".encode() + comment + b"\n" + call


_NO_METADATA = stalled("InvalidLibrary", says=("Missing library metadata",))
#: Code read from a ConfigMap or Secret: kind -> (ctx, drawn code) -> (payload to store under ``lib.lua`` or None
#: for a source that is not there, expectation, spec, functions or None for the drawn code's). ``code-from-password``
#: is a wrong reference to a real password: refused, and never echoed.
# fmt: off
CODE_FROM: dict[str, Callable[[Ctx, str], tuple[bytes | None, Expect, dict[str, Any], tuple[str, ...] | None]]] = {
    "cm-missing": lambda c, code: (None, stalled("ConfigMapNotFound", says=(f"cm-{c.uid}",)),
                                   _ref("configMapKeyRef", f"cm-{c.uid}", "code"), None),
    "cm-key-missing": lambda c, code: (None, stalled("KeyNotFound", says=("code.lua",)),
                                       _ref("configMapKeyRef", f"cm-{c.uid}", "code.lua"), None),
    "secret-missing": lambda c, code: (None, stalled("SecretNotFound", says=(f"sec-{c.uid}",)),
                                       _ref("secretKeyRef", f"sec-{c.uid}", "code"), None),
    "cm-valid": lambda c, code: (code.encode(), ready(), {}, None),
    "secret-valid": lambda c, code: (code.encode(), ready(), {}, None),
    "binary-valid": lambda c, code: (_binary(c), ready(), {}, (c.fn,)),
    "binary-garbage": lambda c, code: (f"#!lua name={c.library}\n".encode() + c.blob + b"\n", stalled(*ANY_REFUSAL),
                                       {}, ()),
    "cm-bom": lambda c, code: (b"\xef\xbb\xbf" + c.simple.encode(), _NO_METADATA, {}, None),
    "cm-no-name": lambda c, code: (f"#!lua\n{register(c.fn)}\n".encode(),
                                   stalled("InvalidLibrary", says=("Library name was not given",)), {}, None),
    "cm-engine": lambda c, code: (c.simple.replace("#!lua", "#!js").encode(),
                                  stalled("InvalidLibrary", says=("Engine 'js' not found",)), {}, None),
    "cm-mismatch": lambda c, code: (code.encode(), stalled("LibraryNameMismatch", says=(c.library + "_other",)),
                                    {"libraryName": c.library + "_other"}, None),
    "code-from-password": lambda c, code: (None, _NO_METADATA,
                                           _ref("secretKeyRef", c.t.secret_good, c.t.secret_password_key), None),
    "cm-long-name": _long_library,
}
# fmt: on


@family("reference", 1, {**AUTH_REFERENCE, **CODE_FROM}, "ref", template=valid_code(),
        blob=st.binary(min_size=1, max_size=200), choice=_any_target, with_library_name=st.booleans())  # fmt: skip
def _reference(c: Ctx) -> list[Case]:
    """Secret and ConfigMap references: missing objects and keys, wrong and limited credentials, code read from a
    ConfigMap or Secret (text or binary; in a Secret for ``secret-valid``, and ``binary-valid`` with a
    libraryName), shebangs only the operator can check (the CRD cannot see that code)."""
    if c.kind in AUTH_REFERENCE:
        server, ref, expect = c.entry(c)
        target = _target([server], None, **({"auth": ref} if ref is not None else {}))
        return [c.case(target, expect, c.simple, placement="auth")]
    code, functions = c.template(c.library, c.prefix)
    payload, expect, spec, fns = c.entry(c, code)
    extras: list[dict[str, Any]] = []
    if payload is None and c.kind == "cm-key-missing":  # the ConfigMap is there, without the key
        extras.append(config_map(f"cm-{c.uid}", c.ns, "other", code.encode()))
    elif payload is not None:
        if c.with_library_name and c.kind in ("cm-valid", "secret-valid", "binary-valid"):
            spec = {**spec, "libraryName": c.library}
        if c.kind == "secret-valid" or (c.kind == "binary-valid" and c.with_library_name):
            extras.append(secret(f"sec-{c.uid}", c.ns, {"lib.lua": payload}))
            spec = {**spec, **_ref("secretKeyRef", f"sec-{c.uid}", "lib.lua")}
        else:
            extras.append(config_map(f"cm-{c.uid}", c.ns, "lib.lua", payload))
            spec = {**spec, **_ref("configMapKeyRef", f"cm-{c.uid}", "lib.lua")}
    return [c.case(c.choice, expect, loads=payload, spec=spec, functions=functions if fns is None else fns,
                   extras=extras)]  # fmt: skip


#: metadata.name values the API server refuses (the object name is the case's identity, so each embeds the uid)
BAD_OBJECT_NAMES: dict[str, Callable[[str], str]] = {
    "upper": lambda uid: f"C{uid}-Upper",
    "underscore": lambda uid: f"c{uid}_under",
    "leading-dash": lambda uid: f"-c{uid}",
    "trailing-dot": lambda uid: f"c{uid}.",
    "double-dot": lambda uid: f"c{uid}..x",
    "unicode": lambda uid: f"c{uid}-ünï",
    "too-long": lambda uid: f"c{uid}-" + "x" * 260,
    "space": lambda uid: f"c{uid} x",
}
#: Object names, library names and versions: kind -> (ctx) -> (object name or None, spec, expectation).
# fmt: off
NAMES_AND_VERSIONS: dict[str, Callable[[Ctx], tuple[str | None, dict[str, Any], Expect]]] = {
    "bad-object-name": lambda c: (BAD_OBJECT_NAMES[c.bad_name](c.uid), {}, rejected("metadata.name", (
        "RFC 1123 subdomain" if c.bad_name != "too-long" else "must be no more"))),
    "dotted-name": lambda c: (f"c{c.uid}.dotted.name-1", {}, ready()),
    "longest-name": lambda c: ((f"c{c.uid}-" + "x" * 253)[:253], {}, ready()),
    "bad-library-name": lambda c: (None, {"libraryName": c.library + c.bad_library},
                                   rejected("spec.libraryName", "should match '^[A-Za-z0-9_]+$'")),
    "long-library-name": lambda c: (None, {"libraryName": c.library + "_" + "x" * 256},
                                    rejected("spec.libraryName", "Too long")),
    "library-name-mismatch": lambda c: (None, {"libraryName": c.library + "_other"}, rejected(
        "spec.libraryName", "libraryName must equal the name in the first line of code")),
    "long-version": lambda c: (None, {"version": "v" * 257}, rejected("spec.version", "Too long")),
    "version-type": lambda c: (None, {"version": c.version_value}, rejected(".spec.version", "expected string")),
    "odd-version": lambda c: (None, {"version": c.odd_version}, ready()),
}
# fmt: on


@family("names", 2, NAMES_AND_VERSIONS, bad_name=st.sampled_from(sorted(BAD_OBJECT_NAMES)),
        bad_library=st.text(st.characters(codec="utf-8", exclude_characters=IDENT_CHARS + "\n"), min_size=1,
                            max_size=8),
        version_value=st.sampled_from([1.5, 2, True, ["1", "2"], {"major": 1}]),
        odd_version=st.text(_utf8, min_size=0, max_size=256), choice=_any_target)  # fmt: skip
def _names(c: Ctx) -> list[Case]:
    """Odd but legal names and versions are Ready, the rest refused by the CRD."""
    name, spec, expect = c.entry(c)
    category = f"names/{c.kind}" + (f"/{c.bad_name}" if c.kind == "bad-object-name" else "")
    return [c.case(c.choice, expect, c.simple, spec=spec, name=name, category=category)]


PAUSE_VALUES = ["true", "TRUE", " True ", "yes", "1", "false", ""]
MANAGED_VALUES = ["false", "FALSE", " false", "no", "0", "true"]
_long_text = st.text(_utf8, min_size=500, max_size=2000)


def _surely(kind: str, surely: st.SearchStrategy[Any], maybe: st.SearchStrategy[Any]) -> DrawFor:
    """``surely`` for the kind that surely sets this annotation, ``maybe`` (which may be None) for the others."""
    return lambda t, k: surely if k == kind else maybe


@family("annotations", 2, ("pause", "managed", "requested"), "annotated",
        pause=_surely("pause", st.sampled_from(PAUSE_VALUES), st.sampled_from([None, *PAUSE_VALUES])),
        managed=_surely("managed", st.sampled_from(MANAGED_VALUES), st.sampled_from([None, *MANAGED_VALUES])),
        requested=_surely("requested", st.one_of(any_text, _long_text), st.one_of(st.none(), any_text, _long_text)),
        choice=_any_target)  # fmt: skip
def _annotated(c: Ctx) -> list[Case]:
    """The user-facing annotations with odd values: paused/unmanaged objects touch nothing; reconcile-requested-at
    accepts any text and echoes it in status. The kind says which annotation is surely set."""
    drawn = zip(
        ("pause-reconciliation", "managed", "reconcile-requested-at"), (c.pause, c.managed, c.requested), strict=True
    )
    values = {f"redisfunctions.dev/{k}": v for k, v in drawn if v is not None}
    is_paused = (c.pause or "").strip().lower() == "true" or (c.managed or "").strip().lower() == "false"
    category = "annotations/" + ("paused" if is_paused else "active")
    return [c.case(c.choice, paused() if is_paused else ready(), c.simple, category=category, annotations=values)]


_ONE_CODE = ("exactly one of spec.code or spec.codeFrom must be set",)
_ONE_REF = ("spec.codeFrom", "codeFrom needs exactly one of configMapKeyRef or secretKeyRef")
#: Specs the CRD refuses: kind -> (ctx -> patch of a plain library's spec on the standalone, the words kubectl's
#: message must hold, ``{uid}`` standing for the case's uid). In a patch ``target`` replaces the target,
#: ``target.<key>`` sets one key of it, None removes a key. Server-side apply and create word an unknown field
#: differently (an object holding characters YAML refuses is created, not applied).
# fmt: off
BAD_SPEC: dict[str, tuple[Callable[[Ctx], dict[str, Any]], tuple[Words, ...]]] = {
    "resync-format": (lambda c: {"resyncInterval": c.resync},
                      ("spec.resyncInterval", "must be a duration such as 30s")),
    "resync-range": (lambda c: {"resyncInterval": c.resync_range}, ("spec.resyncInterval", "between 5s and 24h")),
    "deletion-policy": (lambda c: {"deletionPolicy": _other_than(c.word, ("Delete", "Retain"))},
                        ("spec.deletionPolicy", "Unsupported value", '"Delete", "Retain"')),
    "unknown-field": (lambda c: {f"field{c.uid}": c.word},
                      ("field{uid}", ("field not declared in schema", "strict decoding error: unknown field"))),
    "mode": (lambda c: {"target.mode": _other_than(c.word, ("auto", "standalone", "cluster", "sentinel"))},
             ("spec.target.mode", "Unsupported value")),
    "endpoint": (lambda c: {"target": {"endpoints": [c.endpoint]}}, ("spec.target.endpoints[0]",)),
    "endpoint-port": (lambda c: {"target": {"endpoints": [f"redis-{c.uid}.example:{c.port}"]}},
                      ("spec.target.endpoints[0]", "each endpoint must be host:port with a port 1-65535")),
    "no-endpoints": (lambda c: {"target": {"endpoints": []}}, ("spec.target.endpoints", "at least 1 items")),
    "duplicate-endpoints": (lambda c: {"target": {"endpoints": [c.t.standalone] * 2}},
                            ("spec.target.endpoints", "duplicate entries")),
    "too-many-endpoints": (lambda c: {"target": {"endpoints": [f"redis-{i}.example:6379" for i in range(65)]}},
                           ("spec.target.endpoints", "must have at most 64 items")),
    "code-and-code-from": (lambda c: _ref("configMapKeyRef", f"cm-{c.uid}", "code"), _ONE_CODE),
    "neither": (lambda c: {"code": None}, _ONE_CODE),
    "code-from-both": (lambda c: {"code": None, "codeFrom": {ref: {"name": f"cm-{c.uid}", "key": "code"}
                                                             for ref in ("configMapKeyRef", "secretKeyRef")}},
                       _ONE_REF),
    "code-from-empty": (lambda c: {"code": None, "codeFrom": {}}, _ONE_REF),
    "tls-not-enabled": (lambda c: {"target.tls": {"serverName": "redis.example", "insecureSkipVerify": True}},
                        ("spec.target.tls", "target.tls settings need target.tls.enabled set to true")),
    "sentinel-without-master": (lambda c: {"target.mode": "sentinel"},
                                ("target.mode sentinel needs target.sentinel.masterName",)),
    "sentinel-with-cluster": (lambda c: {"target.mode": "cluster", "target.sentinel": {"masterName": "mymaster"}},
                              ("target.sentinel is only used with target.mode sentinel or auto",)),
    "code-type": (lambda c: {"code": 12345}, (".spec.code", "expected string")),
    "no-target": (lambda c: {"target": None}, ("spec.target", "Required value")),
    "auth-without-name": (lambda c: {"target.auth": {"secretRef": {}}},
                          ("spec.target.auth.secretRef.name", "Required value")),
    "bad-key": (lambda c: {"target.auth": {"secretRef": {"name": c.t.secret_good, "passwordKey": "pass word/x"}}},
                ("spec.target.auth.secretRef.passwordKey", "should match")),
}
# fmt: on


def _other_than(word: str, allowed: tuple[str, ...]) -> str:
    return word if word not in allowed else word + "x"


_DURATION = r"^([0-9]{1,5}(\.[0-9]{1,9})?(ms|s|m|h)){1,4}$"
#: RE2's \s is ASCII whitespace only (no \v): the CRD's endpoint rule, as the API server evaluates it.
_ENDPOINT = r"^([^:\t\n\f\r \[\]/]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"
_bad_resync = st.text(max_size=12).filter(lambda s: not re.match(_DURATION, s))


@family("spec", 1, BAD_SPEC,
        resync=st.one_of(st.sampled_from(["soon", "5", "1d", "-5s", "5 s", "PT5S", ""]), _bad_resync),
        resync_range=st.sampled_from(["1s", "4999ms", "0s", "25h", "24h0m0.001s", "99999h"]),
        word=st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=20),
        endpoint=st.text(_utf8, min_size=0, max_size=40).filter(lambda s: not re.match(_ENDPOINT, s)),
        port=st.sampled_from(["0", "65536", "99999", "123456", "-1", ""]))  # fmt: skip
def _bad_spec(c: Ctx) -> list[Case]:
    patch, says = c.entry
    spec: dict[str, Any] = {"code": c.simple}
    target: dict[str, Any] | None = c.standalone
    for key, value in patch(c).items():
        if key == "target":
            target = value
        elif key.startswith("target."):
            target = {**(target or {}), key.removeprefix("target."): value}
        elif value is None:
            del spec[key]
        else:
            spec[key] = value
    return [c.case(target, rejected(*(w.format(uid=c.uid) if isinstance(w, str) else w for w in says)), spec=spec)]


# ----------------------------------------------------------------------------------------------------------------------
# a run


def control(t: Targets, index: int) -> Scenario:
    """A plain correct library, interleaved with the generated ones; targets rotate over every real deployment."""
    placements = [
        ("cluster", _target([t.cluster_primaries[index % len(t.cluster_primaries)]], None)),
        ("standalone", _target([t.standalone], None)),
        ("pair", _target([t.pair_replica], None)),
        ("auth", _target([t.auth_server], None, auth={"name": t.secret_good})),
        ("cluster", _target(list(t.cluster_replicas[:2]), "cluster")),
    ]
    placement, spec = placements[index % len(placements)]

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "control")
        code = f"#!lua name={library}\nredis.register_function('{prefix}f', function(keys, args) return '{uid}' end)\n"
        body = manifest(name, ns, spec, code=code, version=f"1.0.{index}")
        return [Case(name, "control", body, ready(), library, code.encode(), (f"{prefix}f",), placement)]

    return build


def boundaries(t: Targets) -> list[Scenario]:
    """Fixed cases at the edges, present in every run whatever hypothesis draws: exactly 1 MiB (Ready) and one byte
    more (refused)."""

    def at_limit(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "limit")
        code = big_code(library, f"{prefix}big", MAX_CODE_BYTES, 11)
        body = manifest(name, ns, _target([t.cluster_primaries[0]], None), code=code)
        return [Case(name, "huge/exactly-1MiB", body, ready(), library, code.encode(), (f"{prefix}big",), "cluster")]

    def over_limit(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "limit")
        code = big_code(library, f"{prefix}big", MAX_CODE_BYTES + 1, 12)
        body = manifest(name, ns, _target([t.standalone], None), code=code)
        return [Case(name, "oversized/1MiB+1", body, rejected("spec.code", "code must be at most 1 MiB"))]

    return [at_limit, over_limit]


def draw_scenarios(t: Targets, scale: float = 1.0, seed: int | None = None) -> list[Scenario]:
    """Scenarios drawn by hypothesis: for every kind of every family, ``scale`` times its count (at least one).
    Kinds get their own runs, so every kind appears in every run; hypothesis draws everything else (text, names,
    targets, sizes, forms), the same on every run (derandomized) or from ``seed``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    def runner(strategy: st.SearchStrategy[Scenario], wanted: int) -> list[Scenario]:
        made: list[Scenario] = []

        @settings(
            max_examples=wanted,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            derandomize=seed is None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def gather(scenario: Scenario) -> None:
            made.append(scenario)

        (with_seed(seed)(gather) if seed is not None else gather)()
        return made[:wanted]

    drawn: list[Scenario] = []
    for fam in FAMILIES:
        for kind in fam.kinds:
            drawn += runner(scenario(fam, t, kind), max(1, round(fam.per_kind * scale)))
    # Interleave the families (a stable shuffle), so the apply order mixes good and bad objects.
    random.Random(seed or 0).shuffle(drawn)
    return drawn


def build_cases(
    t: Targets, namespace: str, *, scale: float = 1.0, controls_every: int = 5, seed: int | None = None
) -> list[Case]:
    """Every case of a run, in apply order: drawn scenarios with a correct library every ``controls_every``
    positions, and the fixed boundary cases. Each scenario gets a distinct uid."""
    drawn = draw_scenarios(t, scale, seed)
    ordered: list[Scenario] = []
    for i, scenario_ in enumerate(drawn):
        if i % controls_every == 0:
            ordered.append(control(t, i // controls_every))
        ordered.append(scenario_)
    ordered += boundaries(t)
    cases: list[Case] = []
    for index, build in enumerate(ordered):
        cases += build(f"{index:03d}", namespace)
    return [valkey_reads_up_to_nul(case, t) for case in cases]


def valkey_reads_up_to_nul(case: Case, t: Targets) -> Case:
    """Valkey 9.1.2 compiles a library's source only up to its first NUL byte (Redis 7.0 takes all of it), so a
    library that holds one and loads on Redis is a compile error on Valkey ("unfinished long comment near '<eof>'",
    "No functions registered"...). Adjust the expectation of such cases placed on Valkey."""
    if case.code is None or b"\x00" not in case.code or case.placement not in t.valkey_placements:
        return case
    if not case.expect.outcomes & {READY} and not case.expect.loads:
        return case
    case.expect = stalled("CompileError")
    case.category += "+nul-on-valkey"
    case.code, case.placement = None, None
    return case


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
