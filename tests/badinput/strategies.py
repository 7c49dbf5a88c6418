"""Hypothesis strategies for bad (and good) RedisFunctionLibrary objects, each with the outcome it must reach.

A *scenario* is what hypothesis draws: a function of a unique id (``uid``) that builds one or more :class:`Case`
objects. The uid goes into every object, library and function name, so scenarios drawn independently never collide
unless a scenario collides on purpose (then its cases share a ``group``). Everything a scenario needs from the
running environment (addresses, Secret names) comes from :class:`Targets`, so the same draw is reproducible.

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

import hashlib
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

API_VERSION = "redisfunctions.dev/v1alpha1"
KIND = "RedisFunctionLibrary"
MAX_CODE_BYTES = 1048576

REJECTED, READY, STALLED, RETRYING, PAUSED = "rejected", "ready", "stalled", "retrying", "paused"
OUTCOMES = (REJECTED, READY, STALLED, RETRYING, PAUSED)

#: Every reason a Stalled object may carry (README: permanent failures), and the transient ones.
PERMANENT_REASONS = frozenset(
    [
        "InvalidSpec",
        "InvalidLibrary",
        "LibraryNameMismatch",
        "UnsafeLibrary",
        "VetInconclusive",
        "UnsupportedOnServer",
        "NoLuaEngine",
        "CompileError",
        "FunctionNameConflict",
        "FunctionsUnsupported",
        "AuthenticationFailed",
        "PermissionDenied",
        "NotRedis",
        "SecretNotFound",
        "ConfigMapNotFound",
        "KeyNotFound",
        "ResourceConflict",
        "PayloadTooLarge",
        "NotAPrimary",
        "TLSHandshakeFailed",
        "LibraryExists",
        "InvalidDumpPayload",
        "WrongMode",
        "NodeLostDuringLoad",  # after the second canary lost (the first loss is retried)
        "InvalidSecret",
    ]
)
TRANSIENT_REASONS = frozenset(
    [
        "ConnectionFailed",
        "Timeout",
        "NodeLoading",
        "NodeBusy",
        "TryAgain",
        "MasterDown",
        "OutOfMemory",
        "ClusterDown",
        "VerificationMismatch",
        "TopologyError",
        "RedisError",
        "KubernetesApiError",
        "NotAPrimary",
    ]
)
UNREACHABLE = frozenset({"ConnectionFailed", "Timeout"})


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
    import base64

    try:
        data: dict[str, Any] = {"data": {key: value.decode("utf-8")}}
    except UnicodeDecodeError:
        data = {"binaryData": {key: base64.b64encode(value).decode()}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, **data}


def secret(name: str, namespace: str, values: dict[str, bytes]) -> dict[str, Any]:
    import base64

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in values.items()},
    }


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


def block_comment(text: str) -> str:
    return "--" + long_string(text)


@st.composite
def function_body(draw: st.DrawFn) -> str:
    """A function body that compiles; some would misbehave when called (the operator never calls them)."""
    kind = draw(st.sampled_from(["return", "loop", "repeat", "args", "get", "error", "version", "status"]))
    if kind == "return":
        return f"return {long_string(draw(any_text))}"
    if kind == "loop":
        return "while true do end"  # an infinite loop at call time: loads fine, hangs only if called
    if kind == "repeat":
        return "local n = 0 repeat n = n + 1 until false"
    if kind == "args":
        return "local t = {} for i = 1, #args do t[i] = args[i] end return t"
    if kind == "get":
        return "return redis.call('GET', keys[1])"
    if kind == "error":
        return f"error({long_string(draw(any_text))})"
    if kind == "version":
        return "return redis.REDIS_VERSION"
    return f"return redis.status_reply({long_string(draw(line_text))})"


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

    def render(name: str, index: int) -> str:
        if form == "positional":
            return f"redis.register_function('{name}', function(keys, args) {body} end)"
        if form == "table":
            return (
                f"redis.register_function{{function_name='{name}', callback=function(keys, args) {body} end, "
                f"flags={flag_text}}}"
            )
        if form == "paren-table":
            return (
                f"redis.register_function({{function_name='{name}', callback=function(keys, args) {body} end, "
                f"description={description}}})"
            )
        return (
            f"local function helper_{index}(keys, args) {body} end\nredis.register_function('{name}', helper_{index})"
        )

    return render


@st.composite
def decoration(draw: st.DrawFn) -> str:
    """Top-level lines that change nothing: comments, blank lines, locals."""
    kind = draw(st.sampled_from(["comment", "block", "blank", "local", "spaces"]))
    if kind == "comment":
        return "-- " + draw(line_text)
    if kind == "block":
        return block_comment(draw(any_text))
    if kind == "blank":
        return ""
    if kind == "local":
        return f"local v_{draw(st.integers(0, 9999))} = {long_string(draw(any_text))}"
    return " \t "


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
        for index, (decorations, register) in enumerate(parts):
            lines += decorations
            lines.append(register(names[index], index))
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
# scenarios


def names(uid: str, tag: str) -> tuple[str, str, str]:
    """(object name, library name, function-name prefix) for a case."""
    return f"c{uid}-{tag}", f"L{uid}_{tag.replace('-', '_')}", f"f{uid}_"


@st.composite
def valid_library(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Correct libraries in every shape: CRLF, unicode, comments, table form, flags, infinite loops at call time,
    odd shebang spellings, a long libraryName, odd versions. All must end Ready and byte-exact. ``kind`` is the
    target."""
    suffix = draw(ident)
    choice = draw(good_target(t, kind))
    with_library_name = draw(st.booleans())
    long_name = draw(st.integers(0, 9)) == 0
    version = draw(st.one_of(st.none(), any_text, st.text(st.characters(codec="utf-8"), min_size=200, max_size=256)))
    policy = draw(st.sampled_from([None, "Delete", "Retain"]))
    resync = draw(st.sampled_from([None, "5s", "24h", "90s", "1h30m", "2.5m", "23h59m59.999s"]))
    template = draw(valid_code())

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, f"valid-{kind}")
        library = library + "_" + suffix
        if long_name:
            library = (library + "_" + "x" * 256)[:256]
        code, functions = template(library, prefix)
        spec: dict[str, Any] = {}
        if with_library_name:
            spec["libraryName"] = library
        if version is not None:
            spec["version"] = version
        if policy is not None:
            spec["deletionPolicy"] = policy
        if resync is not None:
            spec["resyncInterval"] = resync
        return [
            Case(
                name,
                f"valid/{kind}",
                manifest(name, ns, choice.spec, code=code, **spec),
                ready(),
                library,
                code.encode(),
                functions,
                choice.placement,
            )
        ]

    return build


@st.composite
def huge_library(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Large but legal libraries (a big comment of multi-byte text): Ready. ``kind`` is the size in KiB."""
    size = int(kind) * 1024
    seed = draw(st.integers(0, 2**32 - 1))
    choice = draw(good_target(t))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "huge")
        head = f"#!lua name={library}\nredis.register_function('{prefix}big', function() return 1 end)\n--[==["
        tail = "]==]\n"
        code = head + filler(size - len(head.encode()) - len(tail.encode()), seed) + tail
        assert len(code.encode()) == size
        return [
            Case(
                name,
                f"huge/{size // 1024}KiB",
                manifest(name, ns, choice.spec, code=code),
                ready(),
                library,
                code.encode(),
                (f"{prefix}big",),
                choice.placement,
            )
        ]

    return build


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


@st.composite
def oversized_code(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Over 1 MiB: refused by the CRD, without echoing the code back."""
    fill_seed = draw(st.integers(0, 2**16))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "oversized")
        head = f"#!lua name={library}\nredis.register_function('{prefix}f', function() return 1 end)\n--[==["
        if kind == "bytes":  # under 1 Mi characters, one byte over 1 MiB of UTF-8
            body = filler(MAX_CODE_BYTES + 1 - len(head.encode()) - 5, fill_seed)
            code, says = head + body + "]==]\n", "code must be at most 1 MiB"
            assert len(code.encode()) == MAX_CODE_BYTES + 1
        else:
            code, says = head + "a" * (MAX_CODE_BYTES + 1 - len(head)), "Too long"
        return [
            Case(
                name,
                f"oversized/{kind}",
                manifest(name, ns, _target([t.standalone], None), code=code),
                rejected("spec.code", says),
            )
        ]

    return build


@st.composite
def refused_shebang(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """First lines the CRD refuses: no shebang, BOM, leading blank, bad or missing name, no newline, other engine,
    a shebang line over 1024 characters."""
    text = draw(any_text)
    bad = draw(
        st.text(st.characters(codec="utf-8", exclude_characters=IDENT_CHARS + "\n\r\t "), min_size=1, max_size=5)
    )

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "shebang")
        body = f"\nredis.register_function('{prefix}f', function() return 1 end)\n"
        first, says = {
            "text": ("x" + text.replace("\n", " "), "must start with a #!lua shebang"),
            "bom": (f"\ufeff#!lua name={library}", "must start with a #!lua shebang"),
            "leading": (f"\n#!lua name={library}", "must start with a #!lua shebang"),
            "bad-name": (f"#!lua name={library}{bad}x", "must name the library"),
            "no-name": ("#!lua", "must name the library"),
            "no-newline": (f"#!lua name={library}", "end with a newline"),
            "engine": (f"#!luajit name={library}", "must name the library"),
            "long-line": (f"#!lua name={library} " + "x" * 1100, "within the first 1024 characters"),
            "js": (f"#!js name={library}", "must start with a #!lua shebang"),
        }[kind]
        code = first if kind == "no-newline" else first + body
        says_all = ("spec.code", "e.g. '#!lua name=mylib'", says)
        return [
            Case(
                name,
                f"shebang-refused/{kind}",
                manifest(name, ns, _target([t.standalone], None), code=code),
                rejected(*says_all),
            )
        ]

    return build


@st.composite
def bad_metadata(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """First lines the CRD lets through and Redis refuses at the metadata stage: InvalidLibrary before any load."""
    junk = draw(junk_token)
    choice = draw(good_target(t))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "metadata")
        first = {
            "junk": f"#!lua name={library} {junk}",
            "twice": f"#!lua name={library} name={library}",
            "quote": f"#!lua name={library} 'unbalanced",
            "nul": f"#!lua name={library} x\x00y",
            "empty-arg": f'#!lua name={library} ""',
        }[kind]
        code = first + f"\nredis.register_function('{prefix}f', function() return 1 end)\n"
        return [
            Case(
                name,
                f"metadata/{kind}",
                manifest(name, ns, choice.spec, code=code),
                stalled("InvalidLibrary", says=("line 1",)),
                library,
            )
        ]

    return build


@st.composite
def unsafe_library(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Libraries that crash a server: refused before loading (UnsafeLibrary)."""
    suffix = draw(nonempty_ident)
    choice = draw(good_target(t))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "unsafe")
        fn = f"{prefix}{suffix}"
        other = fn.swapcase() if fn.swapcase() != fn else fn.upper()
        lines = {
            "duplicate": [f"redis.register_function('{fn}', function() return 1 end)"] * 2,
            "case-duplicate": [
                f"redis.register_function('{fn}', function() return 1 end)",
                f"redis.register_function('{fn.upper() if fn.upper() != fn else fn.lower()}', function() return 2 end)",
            ],
            "table-duplicate": [
                f"redis.register_function{{function_name='{fn}', callback=function() return 1 end}}",
                f"redis.register_function('{other}', function() return 2 end)",
            ],
            "top-level-log": [
                "redis.log(redis.LOG_WARNING, 'loading')",
                f"redis.register_function('{fn}', function() return 1 end)",
            ],
            "aliased-log": [
                "local r = redis",
                "r.log(r.LOG_WARNING, 'loading')",
                f"redis.register_function('{fn}', function() return 1 end)",
            ],
            "computed-case-duplicate": [
                f"local names = {{'{fn}', '{other}'}}",
                "for i = 1, #names do redis.register_function(names[i], function() return i end) end",
            ],
        }[kind]
        code = f"#!lua name={library}\n" + "\n".join(lines) + "\n"
        # an exact duplicate harms nothing: the server refuses it (the canary's own reply), no crash to prevent
        expect = (
            stalled("CompileError", says=("Function already exists in the library",))
            if kind == "duplicate"
            else stalled("UnsafeLibrary", says=("refused before loading",))
        )
        return [Case(name, f"unsafe/{kind}", manifest(name, ns, choice.spec, code=code), expect, library)]

    return build


@st.composite
def compile_error(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Libraries Redis refuses when loading: syntax errors, top-level calls, no function, bad function names, unknown
    flags, wrong arguments; and a top-level infinite loop, which the vet refuses before any load. Random garbage
    too."""
    garbage = draw(any_text)
    bad_fn = draw(st.sampled_from(["with-dash", "with space", "ünï", "", "a.b", "tab\there"]))
    flag = draw(
        st.text(st.characters(codec="utf-8", exclude_characters="'\\\n\r"), min_size=1, max_size=12).filter(
            lambda f: f.lower() not in VALID_FLAGS
        )
    )
    choice = draw(good_target(t))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "compile")
        fn = f"{prefix}f"
        ok = f"redis.register_function('{fn}', function() return 1 end)"
        body = {
            "garbage": garbage,
            "syntax": ok + "\nlocal = 1",
            "top-call": "redis.call('SET', 'k', 'v')\n" + ok,
            "top-error": "error('refusing to load')\n" + ok,
            "top-loop": "while true do end\n" + ok,
            "no-functions": "-- nothing registered\nlocal x = 1",
            "bad-fn-name": f"redis.register_function('{prefix + bad_fn if bad_fn else ''}', function() return 1 end)",
            "unknown-flag": f"redis.register_function{{function_name='{fn}', callback=function() return 1 end, "
            f"flags={{'{flag}'}}}}",
            "arguments": f"redis.register_function('{fn}', function() return 1 end, 'third')",
            "nested": f"local function later() redis.register_function('{fn}', function() return 1 end) end",
            "os": "os.exit(1)\n" + ok,
        }[kind]
        code = f"#!lua name={library}\n{body}\n"
        # random text may be anything the vet refuses; a top-level loop is refused before any load, as undecidable
        reasons = {
            "garbage": ("CompileError", "UnsafeLibrary", "VetInconclusive", "UnsupportedOnServer"),
            "top-loop": ("VetInconclusive",),
        }.get(kind, ("CompileError",))
        says = {"top-loop": ("Lua instructions",), "no-functions": ("No functions registered",)}.get(kind, ())
        return [
            Case(
                name,
                f"compile/{kind}",
                manifest(name, ns, choice.spec, code=code),
                stalled(*reasons, says=says),
                library,
            )
        ]

    return build


@st.composite
def function_collision(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Two libraries registering the same function (maybe in another case) on the same target: exactly one wins,
    the other is Stalled with FunctionNameConflict. Or a function owned by a library nobody's object manages."""
    target_kind = draw(st.sampled_from(["cluster", "standalone"]))
    seeds_a = draw(st.lists(st.sampled_from(t.cluster_primaries), min_size=1, max_size=2, unique=True))
    seeds_b = draw(st.lists(st.sampled_from(t.cluster_nodes), min_size=1, max_size=2, unique=True))

    def spec_for(seeds: list[str]) -> dict[str, Any]:
        return _target(seeds if target_kind == "cluster" else [t.standalone], None)

    def build(uid: str, ns: str) -> list[Case]:
        if kind.startswith("foreign"):
            name, library, _ = names(uid, "foreign")
            fn = t.foreign_function if kind == "foreign" else t.foreign_function.upper()
            code = f"#!lua name={library}\nredis.register_function('{fn}', function() return 1 end)\n"
            says = (fn, f"owned by library '{t.foreign_library}'")
            return [
                Case(
                    name,
                    f"collision/{kind}",
                    manifest(name, ns, spec_for(seeds_a), code=code),
                    stalled("FunctionNameConflict", says=says),
                    library,
                )
            ]
        shared = f"f{uid}_shared"
        cases = []
        for tag, seeds, fn in (
            ("a", seeds_a, shared),
            ("b", seeds_b, shared.upper() if kind == "pair-case" else shared),
        ):
            name, library, prefix = names(uid, f"clash-{tag}")
            code = (
                f"#!lua name={library}\nredis.register_function('{prefix}own', function() return 1 end)\n"
                f"redis.register_function('{fn}', function() return '{tag}' end)\n"
            )
            expect = Expect(frozenset({READY, STALLED}), frozenset({"FunctionNameConflict"}))
            cases.append(
                Case(
                    name,
                    f"collision/{kind}",
                    manifest(name, ns, spec_for(seeds), code=code),
                    expect,
                    library,
                    code.encode(),
                    (f"{prefix}own", fn),
                    target_kind,
                    group=f"g{uid}",
                )
            )
        return cases

    return build


@st.composite
def library_name_clash(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Two or three objects wanting the same library on the same target (written the same way): the oldest owns
    it, the others are Stalled with ResourceConflict."""
    count = draw(st.integers(2, 3))
    target = kind
    seeds = draw(st.lists(st.sampled_from(t.cluster_primaries), min_size=1, max_size=2, unique=True))

    def build(uid: str, ns: str) -> list[Case]:
        library = f"L{uid}_shared"
        spec = _target(seeds if target == "cluster" else [t.standalone], None)
        cases = []
        for i in range(count):
            name = f"c{uid}-owner{i}"
            code = f"#!lua name={library}\nredis.register_function('f{uid}_{i}', function() return {i} end)\n"
            expect = Expect(frozenset({READY, STALLED}), frozenset({"ResourceConflict"}))
            cases.append(
                Case(
                    name,
                    "collision/library-name",
                    manifest(name, ns, spec, code=code),
                    expect,
                    library,
                    code.encode(),
                    (f"f{uid}_{i}",),
                    target,
                    group=f"g{uid}",
                )
            )
        return cases

    return build


@st.composite
def bad_target(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Targets that are not a usable Redis: unreachable, wrong port, not Redis at all, Redis without FUNCTION, the
    wrong mode, TLS to a plaintext server, and seeds mixing a dead and a live server."""
    template = draw(valid_code())

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "target")
        code, functions = template(library, prefix)
        (seeds, mode), expect = _bad_target_table(t, kind)
        spec = _target(seeds, mode)
        if kind == "sentinel-mode-on-redis":
            spec["sentinel"] = {"masterName": "mymaster"}
        if kind == "tls-on-plaintext":
            spec["tls"] = {"enabled": True, "insecureSkipVerify": True}
        if kind == "resp6-auth":
            spec["auth"] = {"secretRef": {"name": t.secret_good}}
        placement = {"dead-then-cluster": "cluster", "dead-then-standalone": "standalone"}.get(kind)
        return [
            Case(
                name,
                f"target/{kind}",
                manifest(name, ns, spec, code=code),
                expect,
                library,
                code.encode(),
                functions,
                placement,
            )
        ]

    return build


def _bad_target_table(t: Targets, kind: str) -> tuple[tuple[list[str], str | None], Expect]:
    port = t.standalone.rsplit(":", 1)[1]
    table: dict[str, tuple[tuple[list[str], str | None], Expect]] = {
        "closed": (([t.closed], None), retrying("ConnectionFailed")),
        "no-dns": ((["no-such-host.invalid:6379"], None), retrying("ConnectionFailed")),
        "closing": (([t.closing], None), retrying("ConnectionFailed")),
        "silent": (([t.silent], None), retrying("Timeout")),
        "bus-port": (([t.cluster_bus], None), retrying("ConnectionFailed")),
        "apiserver": (([t.apiserver], None), retrying("ConnectionFailed")),
        # the pure-Python reply parser quotes the first line, hiredis the first byte
        "http": (([t.http], None), stalled("NotRedis", says=(("HTTP/1.1 400", 'got "H" as reply type byte'),))),
        "garbage": (([t.garbage], None), stalled("NotRedis")),
        "echo": (([t.echo], None), Expect(frozenset({STALLED, RETRYING}), frozenset({"NotRedis", "TopologyError"}))),
        "resp6": (([t.resp6], None), stalled("FunctionsUnsupported", says=("unknown command 'FUNCTION'",))),
        "resp6-cluster": (([t.resp6_cluster], None), stalled("FunctionsUnsupported")),
        "resp6-auth": (([t.resp6], None), stalled("AuthenticationFailed")),
        "ipv6": (([f"[::1]:{port}"], None), retrying("ConnectionFailed")),
        "cluster-mode-on-standalone": (
            ([t.standalone], "cluster"),
            stalled("WrongMode", says=("cluster support disabled",)),
        ),
        "sentinel-mode-on-redis": (
            ([t.standalone], "sentinel"),
            stalled("WrongMode", says=("unknown command 'SENTINEL'",)),
        ),
        "tls-on-plaintext": (
            ([t.standalone], None),
            Expect(frozenset({STALLED, RETRYING}), frozenset({"TLSHandshakeFailed", "Timeout", "ConnectionFailed"})),
        ),
        "dead-then-cluster": (([t.closed, t.cluster_primaries[0]], None), ready()),
        "dead-then-standalone": (([t.closed, t.standalone], None), retrying("ConnectionFailed", loads=True)),
    }
    return table[kind]


@st.composite
def bad_reference(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Secret and ConfigMap references: missing objects and keys, wrong and limited credentials, code read from a
    ConfigMap or Secret (text or binary), shebangs only the operator can check (the CRD cannot see that code)."""
    template = draw(valid_code())
    blob = draw(st.binary(min_size=1, max_size=200))
    choice = draw(good_target(t))
    with_library_name = draw(st.booleans())

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "ref")
        category = f"reference/{kind}"
        code, functions = template(library, prefix)
        simple = f"#!lua name={library}\nredis.register_function('{prefix}f', function() return 1 end)\n"
        cm, sec = f"cm-{uid}", f"sec-{uid}"
        if kind.startswith("auth") or kind.endswith("protected") or kind == "auth-on-open-server":
            ref: dict[str, Any] = {"name": t.secret_good}
            expect, placement = stalled("AuthenticationFailed"), None
            server = t.auth_server
            if kind == "auth-good":
                expect, placement = ready(), "auth"
            elif kind == "auth-wrong":
                ref = {"name": t.secret_wrong}
            elif kind == "auth-missing-secret":
                ref = {"name": f"missing-{uid}"}
                expect = stalled("SecretNotFound", says=(f"missing-{uid}",))
            elif kind == "auth-missing-key":
                ref = {"name": t.secret_good, "passwordKey": "no-such-key"}
                expect = stalled("KeyNotFound", says=("no-such-key", t.secret_good))
            elif kind == "auth-missing-user-key":
                ref = {"name": t.secret_good, "usernameKey": "no-such-user-key"}
                expect = stalled("KeyNotFound", says=("no-such-user-key",))
            elif kind == "auth-limited":
                ref = {"name": t.secret_limited, "usernameKey": "username"}
                expect = stalled("PermissionDenied", says=("no permissions",))
            elif kind == "auth-on-open-server":
                server = t.standalone
            target = _target([server], None)
            if kind != "no-auth-on-protected":
                target["auth"] = {"secretRef": ref}
            return [
                Case(
                    name,
                    category,
                    manifest(name, ns, target, code=simple),
                    expect,
                    library,
                    simple.encode(),
                    (f"{prefix}f",),
                    placement,
                )
            ]
        spec: dict[str, Any] = {}
        extras: list[dict[str, Any]] = []
        payload: bytes = code.encode()
        expect, placement, fns = ready(), choice.placement, functions
        if kind == "cm-missing":
            spec["codeFrom"] = {"configMapKeyRef": {"name": cm, "key": "code"}}
            expect = stalled("ConfigMapNotFound", says=(cm,))
        elif kind == "cm-key-missing":
            extras.append(config_map(cm, ns, "other", payload))
            spec["codeFrom"] = {"configMapKeyRef": {"name": cm, "key": "code.lua"}}
            expect = stalled("KeyNotFound", says=("code.lua",))
        elif kind == "secret-missing":
            spec["codeFrom"] = {"secretKeyRef": {"name": sec, "key": "code"}}
            expect = stalled("SecretNotFound", says=(sec,))
        elif kind == "code-from-password":  # a wrong reference to a real password: refused, and never echoed
            spec["codeFrom"] = {"secretKeyRef": {"name": t.secret_good, "key": t.secret_password_key}}
            expect = stalled("InvalidLibrary", says=("Missing library metadata",))
        else:
            if kind == "binary-valid":  # bytes that are not UTF-8, in a comment and in a string: loaded byte-exact
                comment = blob.replace(b"\n", b" ").replace(b"\r", b" ")
                string_bytes = blob
                level = 1
                while (string_bytes + b"]" + b"=" * level + b"]").find(b"]" + b"=" * level + b"]") != len(blob):
                    level += 1
                eq = b"=" * level
                payload = (
                    f"#!lua name={library}\n-- ".encode()
                    + comment
                    + b"\n"
                    + f"redis.register_function('{prefix}f', function() return ".encode()
                    + b"["
                    + eq
                    + b"["
                    + string_bytes
                    + b"]"
                    + eq
                    + b"] end)\n"
                )
                fns = (f"{prefix}f",)
            elif kind == "binary-garbage":
                payload = f"#!lua name={library}\n".encode() + blob + b"\n"
                expect, fns = stalled("CompileError", "UnsafeLibrary", "VetInconclusive", "UnsupportedOnServer"), ()
            elif kind == "cm-bom":
                payload = b"\xef\xbb\xbf" + simple.encode()
                expect = stalled("InvalidLibrary", says=("Missing library metadata",))
            elif kind == "cm-no-name":
                payload = f"#!lua\nredis.register_function('{prefix}f', function() return 1 end)\n".encode()
                expect = stalled("InvalidLibrary", says=("Library name was not given",))
            elif kind == "cm-engine":
                payload = simple.replace("#!lua", "#!js").encode()
                expect = stalled("InvalidLibrary", says=("Engine 'js' not found",))
            elif kind == "cm-mismatch":
                spec["libraryName"] = library + "_other"
                expect = stalled("LibraryNameMismatch", says=(library + "_other",))
            elif kind == "cm-long-name":
                library = library + "_" + "n" * 2000  # too long for the CRD's 1024-character look, fine for Redis
                payload = (
                    f"#!lua name={library}\nredis.register_function('{prefix}f', function() return 1 end)\n".encode()
                )
                fns = (f"{prefix}f",)
            if with_library_name and kind in ("cm-valid", "secret-valid", "binary-valid"):
                spec["libraryName"] = library
            if kind in ("secret-valid",) or (kind == "binary-valid" and with_library_name):
                extras.append(secret(sec, ns, {"lib.lua": payload}))
                spec["codeFrom"] = {"secretKeyRef": {"name": sec, "key": "lib.lua"}}
            else:
                extras.append(config_map(cm, ns, "lib.lua", payload))
                spec["codeFrom"] = {"configMapKeyRef": {"name": cm, "key": "lib.lua"}}
        loaded = payload if expect.outcomes == {READY} else None
        return [
            Case(
                name,
                category,
                manifest(name, ns, choice.spec, **spec),
                expect,
                library,
                loaded,
                fns,
                placement if loaded is not None else None,
                extras=extras,
            )
        ]

    return build


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


@st.composite
def names_and_versions(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Object names, library names and versions: odd but legal ones are Ready, the rest refused by the CRD."""
    bad_name = draw(st.sampled_from(sorted(BAD_OBJECT_NAMES)))
    bad_library = draw(
        st.text(st.characters(codec="utf-8", exclude_characters=IDENT_CHARS + "\n"), min_size=1, max_size=8)
    )
    version_value = draw(st.sampled_from([1.5, 2, True, ["1", "2"], {"major": 1}]))
    odd_version = draw(st.text(st.characters(codec="utf-8"), min_size=0, max_size=256))
    choice = draw(good_target(t))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "names")
        code = f"#!lua name={library}\nredis.register_function('{prefix}f', function() return 1 end)\n"
        spec: dict[str, Any] = {}
        expect, placement = ready(), choice.placement
        category = f"names/{kind}"
        if kind == "bad-object-name":
            name = BAD_OBJECT_NAMES[bad_name](uid)
            category += f"/{bad_name}"
            expect = rejected("metadata.name", "RFC 1123 subdomain" if bad_name != "too-long" else "must be no more")
        elif kind == "dotted-name":
            name = f"c{uid}.dotted.name-1"
        elif kind == "longest-name":
            name = (f"c{uid}-" + "x" * 253)[:253]
        elif kind == "bad-library-name":
            spec["libraryName"] = library + bad_library
            expect = rejected("spec.libraryName", "should match '^[A-Za-z0-9_]+$'")
        elif kind == "long-library-name":
            spec["libraryName"] = library + "_" + "x" * 256
            expect = rejected("spec.libraryName", "Too long")
        elif kind == "library-name-mismatch":
            spec["libraryName"] = library + "_other"
            expect = rejected("spec.libraryName", "libraryName must equal the name in the first line of code")
        elif kind == "long-version":
            spec["version"] = "v" * 257
            expect = rejected("spec.version", "Too long")
        elif kind == "version-type":
            spec["version"] = version_value
            expect = rejected(".spec.version", "expected string")
        else:
            spec["version"] = odd_version
        loaded = code.encode() if expect.outcomes == {READY} else None
        return [
            Case(
                name,
                category,
                manifest(name, ns, choice.spec, code=code, **spec),
                expect,
                library,
                loaded,
                (f"{prefix}f",),
                placement if loaded is not None else None,
            )
        ]

    return build


@st.composite
def annotated(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """The user-facing annotations with odd values: paused/unmanaged objects touch nothing; reconcile-requested-at
    accepts any text and echoes it in status. ``kind`` says which annotation is surely set."""
    pause_values = ["true", "TRUE", " True ", "yes", "1", "false", ""]
    managed_values = ["false", "FALSE", " false", "no", "0", "true"]
    pause = draw(st.sampled_from(pause_values) if kind == "pause" else st.sampled_from([None, *pause_values]))
    managed = draw(st.sampled_from(managed_values) if kind == "managed" else st.sampled_from([None, *managed_values]))
    long_text = st.text(st.characters(codec="utf-8"), min_size=500, max_size=2000)
    requested = draw(
        st.one_of(any_text, long_text) if kind == "requested" else st.one_of(st.none(), any_text, long_text)
    )
    choice = draw(good_target(t))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "annotated")
        code = f"#!lua name={library}\nredis.register_function('{prefix}f', function() return 1 end)\n"
        values: dict[str, str] = {}
        if pause is not None:
            values["redisfunctions.dev/pause-reconciliation"] = pause
        if managed is not None:
            values["redisfunctions.dev/managed"] = managed
        if requested is not None:
            values["redisfunctions.dev/reconcile-requested-at"] = requested
        is_paused = (pause or "").strip().lower() == "true" or (managed or "").strip().lower() == "false"
        expect = paused() if is_paused else ready()
        loaded = None if is_paused else code.encode()
        return [
            Case(
                name,
                "annotations/" + ("paused" if is_paused else "active"),
                manifest(name, ns, choice.spec, code=code, annotations=values),
                expect,
                library,
                loaded,
                (f"{prefix}f",),
                None if is_paused else choice.placement,
            )
        ]

    return build


_DURATION = r"^([0-9]{1,5}(\.[0-9]{1,9})?(ms|s|m|h)){1,4}$"
#: RE2's \s is ASCII whitespace only (no \v): the CRD's endpoint rule, as the API server evaluates it.
_ENDPOINT = r"^([^:\t\n\f\r \[\]/]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"


@st.composite
def bad_spec(draw: st.DrawFn, t: Targets, kind: str) -> Scenario:
    """Specs the CRD refuses, each with the readable message kubectl must show."""
    import re

    resync = draw(
        st.one_of(
            st.sampled_from(["soon", "5", "1d", "-5s", "5 s", "PT5S", ""]),
            st.text(max_size=12).filter(lambda s: not re.match(_DURATION, s)),
        )
    )
    resync_range = draw(st.sampled_from(["1s", "4999ms", "0s", "25h", "24h0m0.001s", "99999h"]))
    word = draw(st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=20))
    endpoint = draw(
        st.text(st.characters(codec="utf-8"), min_size=0, max_size=40).filter(lambda s: not re.match(_ENDPOINT, s))
    )
    port = draw(st.sampled_from(["0", "65536", "99999", "123456", "-1", ""]))

    def build(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "spec")
        code = f"#!lua name={library}\nredis.register_function('{prefix}f', function() return 1 end)\n"
        target: dict[str, Any] | None = _target([t.standalone], None)
        spec: dict[str, Any] = {"code": code}
        says: tuple[Words, ...]
        if kind == "resync-format":
            spec["resyncInterval"], says = resync, ("spec.resyncInterval", "must be a duration such as 30s")
        elif kind == "resync-range":
            spec["resyncInterval"], says = resync_range, ("spec.resyncInterval", "between 5s and 24h")
        elif kind == "deletion-policy":
            value = word if word not in ("Delete", "Retain") else word + "x"
            spec["deletionPolicy"], says = value, ("spec.deletionPolicy", "Unsupported value", '"Delete", "Retain"')
        elif kind == "unknown-field":
            # server-side apply and create word it differently (an object holding characters YAML refuses is created)
            spec[f"field{uid}"] = word
            says = (f"field{uid}", ("field not declared in schema", "strict decoding error: unknown field"))
        elif kind == "mode":
            value = word if word not in ("auto", "standalone", "cluster", "sentinel") else word + "x"
            assert target is not None
            target["mode"], says = value, ("spec.target.mode", "Unsupported value")
        elif kind == "endpoint":
            target, says = {"endpoints": [endpoint]}, ("spec.target.endpoints[0]",)
        elif kind == "endpoint-port":
            target = {"endpoints": [f"redis-{uid}.example:{port}"]}
            says = ("spec.target.endpoints[0]", "each endpoint must be host:port with a port 1-65535")
        elif kind == "no-endpoints":
            target, says = {"endpoints": []}, ("spec.target.endpoints", "at least 1 items")
        elif kind == "duplicate-endpoints":
            target, says = {"endpoints": [t.standalone, t.standalone]}, ("spec.target.endpoints", "duplicate entries")
        elif kind == "too-many-endpoints":
            target = {"endpoints": [f"redis-{i}.example:6379" for i in range(65)]}
            says = ("spec.target.endpoints", "must have at most 64 items")
        elif kind == "code-and-code-from":
            spec["codeFrom"] = {"configMapKeyRef": {"name": f"cm-{uid}", "key": "code"}}
            says = ("exactly one of spec.code or spec.codeFrom must be set",)
        elif kind == "neither":
            del spec["code"]
            says = ("exactly one of spec.code or spec.codeFrom must be set",)
        elif kind == "code-from-both":
            del spec["code"]
            ref = {"name": f"cm-{uid}", "key": "code"}
            spec["codeFrom"] = {"configMapKeyRef": ref, "secretKeyRef": ref}
            says = ("spec.codeFrom", "codeFrom needs exactly one of configMapKeyRef or secretKeyRef")
        elif kind == "code-from-empty":
            del spec["code"]
            spec["codeFrom"] = {}
            says = ("spec.codeFrom", "codeFrom needs exactly one of configMapKeyRef or secretKeyRef")
        elif kind == "tls-not-enabled":
            assert target is not None
            target["tls"] = {"serverName": "redis.example", "insecureSkipVerify": True}
            says = ("spec.target.tls", "target.tls settings need target.tls.enabled set to true")
        elif kind == "sentinel-without-master":
            assert target is not None
            target["mode"], says = "sentinel", ("target.mode sentinel needs target.sentinel.masterName",)
        elif kind == "sentinel-with-cluster":
            assert target is not None
            target["mode"], target["sentinel"] = "cluster", {"masterName": "mymaster"}
            says = ("target.sentinel is only used with target.mode sentinel or auto",)
        elif kind == "code-type":
            spec["code"], says = 12345, (".spec.code", "expected string")
        elif kind == "no-target":
            target, says = None, ("spec.target", "Required value")
        elif kind == "auth-without-name":
            assert target is not None
            target["auth"], says = {"secretRef": {}}, ("spec.target.auth.secretRef.name", "Required value")
        else:
            assert target is not None
            target["auth"] = {"secretRef": {"name": t.secret_good, "passwordKey": "pass word/x"}}
            says = ("spec.target.auth.secretRef.passwordKey", "should match")
        body = manifest(name, ns, target, **spec)
        return [Case(name, f"spec/{kind}", body, rejected(*says))]

    return build


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
        return [
            Case(
                name,
                "control",
                manifest(name, ns, spec, code=code, version=f"1.0.{index}"),
                ready(),
                library,
                code.encode(),
                (f"{prefix}f",),
                placement,
            )
        ]

    return build


def boundaries(t: Targets) -> list[Scenario]:
    """Fixed cases at the edges, present in every run whatever hypothesis draws: exactly 1 MiB (Ready) and one byte
    more (refused)."""

    def at_limit(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "limit")
        head = f"#!lua name={library}\nredis.register_function('{prefix}big', function() return 1 end)\n--[==["
        code = head + filler(MAX_CODE_BYTES - len(head.encode()) - 5, 11) + "]==]\n"
        assert len(code.encode()) == MAX_CODE_BYTES
        return [
            Case(
                name,
                "huge/exactly-1MiB",
                manifest(name, ns, _target([t.cluster_primaries[0]], None), code=code),
                ready(),
                library,
                code.encode(),
                (f"{prefix}big",),
                "cluster",
            )
        ]

    def over_limit(uid: str, ns: str) -> list[Case]:
        name, library, prefix = names(uid, "limit")
        head = f"#!lua name={library}\nredis.register_function('{prefix}big', function() return 1 end)\n--[==["
        code = head + filler(MAX_CODE_BYTES + 1 - len(head.encode()) - 5, 12) + "]==]\n"
        assert len(code.encode()) == MAX_CODE_BYTES + 1
        return [
            Case(
                name,
                "oversized/1MiB+1",
                manifest(name, ns, _target([t.standalone], None), code=code),
                rejected("spec.code", "code must be at most 1 MiB"),
            )
        ]

    return [at_limit, over_limit]


#: The kinds of each family: every kind is drawn in turn, hypothesis varies the rest.
OVERSIZED_CODE_KINDS = ("bytes", "chars")
REFUSED_SHEBANG_KINDS = ("text", "bom", "leading", "bad-name", "no-name", "no-newline", "engine", "long-line", "js")
BAD_METADATA_KINDS = ("junk", "twice", "quote", "nul", "empty-arg")
UNSAFE_LIBRARY_KINDS = (
    "duplicate",
    "case-duplicate",
    "table-duplicate",
    "top-level-log",
    "aliased-log",
    "computed-case-duplicate",
)
COMPILE_ERROR_KINDS = (
    "garbage",
    "syntax",
    "top-call",
    "top-error",
    "top-loop",
    "no-functions",
    "bad-fn-name",
    "unknown-flag",
    "arguments",
    "nested",
    "os",
)
FUNCTION_COLLISION_KINDS = ("pair", "pair-case", "foreign", "foreign-case")
BAD_TARGET_KINDS = (
    "closed",
    "no-dns",
    "closing",
    "silent",
    "bus-port",
    "apiserver",
    "http",
    "garbage",
    "echo",
    "resp6",
    "resp6-cluster",
    "resp6-auth",
    "ipv6",
    "cluster-mode-on-standalone",
    "sentinel-mode-on-redis",
    "tls-on-plaintext",
    "dead-then-cluster",
    "dead-then-standalone",
)
BAD_REFERENCE_KINDS = (
    "auth-good",
    "auth-wrong",
    "auth-missing-secret",
    "auth-missing-key",
    "auth-missing-user-key",
    "auth-limited",
    "auth-on-open-server",
    "no-auth-on-protected",
    "cm-missing",
    "cm-key-missing",
    "secret-missing",
    "cm-valid",
    "secret-valid",
    "binary-valid",
    "binary-garbage",
    "cm-bom",
    "cm-no-name",
    "cm-engine",
    "cm-mismatch",
    "code-from-password",
    "cm-long-name",
)
NAMES_AND_VERSIONS_KINDS = (
    "bad-object-name",
    "dotted-name",
    "longest-name",
    "bad-library-name",
    "long-library-name",
    "library-name-mismatch",
    "long-version",
    "version-type",
    "odd-version",
)
BAD_SPEC_KINDS = (
    "resync-format",
    "resync-range",
    "deletion-policy",
    "unknown-field",
    "mode",
    "endpoint",
    "endpoint-port",
    "no-endpoints",
    "duplicate-endpoints",
    "too-many-endpoints",
    "code-and-code-from",
    "neither",
    "code-from-both",
    "code-from-empty",
    "tls-not-enabled",
    "sentinel-without-master",
    "sentinel-with-cluster",
    "code-type",
    "no-target",
    "auth-without-name",
    "bad-key",
)

VALID_LIBRARY_KINDS = TARGET_KINDS
HUGE_LIBRARY_KINDS = ("64", "200", "512")
LIBRARY_NAME_CLASH_KINDS = ("cluster", "standalone")
ANNOTATED_KINDS = ("pause", "managed", "requested")

#: (family, its kinds, scenarios per kind and run): each kind gets its own hypothesis run, which draws the rest.
FAMILIES: tuple[tuple[Callable[..., st.SearchStrategy[Scenario]], tuple[str, ...], int], ...] = (
    (valid_library, VALID_LIBRARY_KINDS, 8),
    (huge_library, HUGE_LIBRARY_KINDS, 1),
    (oversized_code, OVERSIZED_CODE_KINDS, 1),
    (refused_shebang, REFUSED_SHEBANG_KINDS, 1),
    (bad_metadata, BAD_METADATA_KINDS, 2),
    (unsafe_library, UNSAFE_LIBRARY_KINDS, 2),
    (compile_error, COMPILE_ERROR_KINDS, 2),
    (function_collision, FUNCTION_COLLISION_KINDS, 2),
    (library_name_clash, LIBRARY_NAME_CLASH_KINDS, 2),
    (bad_target, BAD_TARGET_KINDS, 1),
    (bad_reference, BAD_REFERENCE_KINDS, 1),
    (names_and_versions, NAMES_AND_VERSIONS_KINDS, 2),
    (annotated, ANNOTATED_KINDS, 2),
    (bad_spec, BAD_SPEC_KINDS, 1),
)


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
    for family, kinds, per_kind in FAMILIES:
        for kind in kinds:
            drawn += runner(family(t, kind), max(1, round(per_kind * scale)))
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
    for i, scenario in enumerate(drawn):
        if i % controls_every == 0:
            ordered.append(control(t, i // controls_every))
        ordered.append(scenario)
    ordered += boundaries(t)
    cases: list[Case] = []
    for index, scenario in enumerate(ordered):
        cases += scenario(f"{index:03d}", namespace)
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
