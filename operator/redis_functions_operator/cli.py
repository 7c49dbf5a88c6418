"""``redis-functions-operator``: the command-line tool over the same sync engine the operator uses.

Useful without Kubernetes — in CI pipelines, for debugging, and to migrate an existing deployment (``export``
prints the manifests for what is already loaded). ``run`` starts the Kubernetes operator.

Exit codes (documented in the README and kept stable):

====  ============================================================================================
0     every primary verified (``sync``, ``status``, ``delete``, ``restore``); ``lint`` found no errors
1     ``status``: some primary lacks a named library or holds different code; ``lint``: errors found
2     usage error (bad arguments, unreadable file, invalid library source)
3     permanent failure: retrying the same thing cannot help (compile error, function-name conflict,
      authentication, TLS, FUNCTION unsupported, a smoke test that got another reply)
4     transient failure: a node was unreachable, loading, busy, out of memory...; retry later (also a smoke
      test that met such a node or timed out: the canary keeps the new code, and the next sync tests first)
====  ============================================================================================

Passwords are never taken from argv alone: use ``REDISCLI_AUTH`` (as redis-cli does) or ``--password-file``. A
password embedded in a ``--redis`` URL still works but prints a warning, because argv is visible to every user of
the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import unquote, urlsplit

from redis_functions_operator import __version__
from redis_functions_operator.library import REFUSAL_PREFIX, Library, LibraryError, Vetting, code_sha256, vet
from redis_functions_operator.library.probes import Probe, ProbeError, parse_probes

if TYPE_CHECKING:  # the engine (redis-py, asyncio) is imported by the commands that talk to Redis, not at start-up
    from redis_functions_operator.redis.connect import Target
    from redis_functions_operator.redis.errors import NodeError
    from redis_functions_operator.redis.sync import InspectResult, NodeResult, SyncResult

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_USAGE = 2
EXIT_PERMANENT = 3
EXIT_TRANSIENT = 4


#: The engine's ``Mode`` and ``RestorePolicy`` values, spelled here so that ``--help`` and ``lint`` start without
#: importing the engine (tests/unit/test_cli_args.py keeps them equal).
MODES = ("auto", "standalone", "cluster", "sentinel")
RESTORE_POLICIES = ("append", "replace", "flush")
#: ``lint --server`` names: the keys of library.support.SERVERS.
SERVER_NAMES = (
    "redis-7.0",
    "redis-7.2",
    "redis-7.4",
    "redis-8.0",
    "redis-8.2",
    "valkey-7.2",
    "valkey-8.0",
    "valkey-8.1",
    "valkey-9.0",
    "valkey-9.1",
)


class UsageError(Exception):
    """Bad arguments or input files: exit code 2 with a one-line message."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
        return code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# --- argument parsing ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis-functions-operator",
        description="Keep Redis Functions libraries loaded and verified on every primary.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    lint = commands.add_parser("lint", help="check library files before a deploy")
    lint.add_argument("files", nargs="+", metavar="FILE|DIR")
    lint.add_argument("--strict", action="store_true", help="warnings also fail (exit 1)")
    lint.add_argument(
        "--server",
        action="append",
        default=[],
        choices=SERVER_NAMES,
        metavar="SERVER",
        help="also say whether this server would fail the library, as the operator decides before loading "
        f"(repeatable; one of {', '.join(SERVER_NAMES)})",
    )
    _add_output(lint)
    lint.set_defaults(handler=cmd_lint)

    sync = commands.add_parser("sync", help="load libraries on every primary and verify them")
    _add_target(sync)
    sync.add_argument("files", nargs="+", metavar="FILE|DIR")
    sync.add_argument("--dry-run", action="store_true", help="print what would change (as `diff`) and touch nothing")
    sync.add_argument(
        "--test",
        metavar="FILE",
        help="smoke tests (a YAML list, as spec.tests) run on the canary after it loads the code, before any other "
        "primary: a failure puts the canary back (exit 3). One library only",
    )
    sync.add_argument(
        "--test-key-prefix",
        metavar="PREFIX",
        help="the key prefix writing tests (readOnly: false) may use; their keys are deleted before and after",
    )
    sync.set_defaults(handler=cmd_sync)

    diff = commands.add_parser(
        "diff", help="what a sync would change, per library and primary; 0: nothing, 1: changes, 3: would fail"
    )
    _add_target(diff)
    diff.add_argument("files", nargs="+", metavar="FILE|DIR")
    diff.set_defaults(handler=cmd_diff)

    status = commands.add_parser("status", help="show which primaries hold which libraries; non-zero on drift")
    _add_target(status)
    status.add_argument("names", nargs="*", metavar="NAME|FILE", help="library names, or files to compare against")
    status.set_defaults(handler=cmd_status)

    remove = commands.add_parser("delete", help="delete libraries from every primary")
    _add_target(remove)
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(handler=cmd_delete)

    export = commands.add_parser("export", help="print RedisFunctionLibrary manifests for loaded libraries")
    _add_target(export)
    export.add_argument("--namespace", help="metadata.namespace of the manifests")
    export.add_argument(
        "--observe",
        action="store_true",
        help="managementPolicy: Observe: the operator only watches (never writes); adopt first, enforce later",
    )
    export.add_argument("names", nargs="*", metavar="NAME")
    export.set_defaults(handler=cmd_export)

    dump_cmd = commands.add_parser("dump", help="FUNCTION DUMP of a primary into a file")
    _add_target(dump_cmd)
    dump_cmd.add_argument("file", metavar="FILE")
    dump_cmd.add_argument("--node", help="host:port of the primary to dump (default: the first primary)")
    dump_cmd.set_defaults(handler=cmd_dump)

    restore_cmd = commands.add_parser("restore", help="FUNCTION RESTORE a dump file on every primary")
    _add_target(restore_cmd)
    restore_cmd.add_argument("file", metavar="FILE")
    restore_cmd.add_argument("--policy", choices=RESTORE_POLICIES, default=RESTORE_POLICIES[0])
    restore_cmd.set_defaults(handler=cmd_restore)

    run = commands.add_parser("run", help="run the Kubernetes operator")
    run.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    run.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--liveness", default="0.0.0.0:8080", metavar="HOST:PORT", help="address of /healthz and /metrics")
    run.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between each target's topology polls (default 2)"
    )
    run.add_argument(
        "--listing-burst",
        type=int,
        default=16,
        help="when a target change wakes at least this many libraries of one target, they share one "
        "FUNCTION LIST WITHCODE per primary instead of each reading every primary (default 16; 0: never)",
    )
    run.add_argument(
        "--label-selector",
        default="",
        metavar="SELECTOR",
        help="reconcile only the RedisFunctionLibrary objects matching this Kubernetes label selector, to run "
        "several operators as shards (as Flux: 'sharding.fluxcd.io/key=shard1' for a shard, "
        "'!sharding.fluxcd.io/key' for the main one); the others are read to decide ownership, never written",
    )
    run.add_argument("--log-format", choices=["human", "json"], default="human")
    run.add_argument("--verbose", "-v", action="store_true")
    run.add_argument(
        "--deletion-timeout", type=float, default=300.0, help="seconds to keep retrying a delete (default 300)"
    )
    run.set_defaults(handler=cmd_run)
    return parser


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table")


def _add_target(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target")
    group.add_argument(
        "--redis",
        action="append",
        required=True,
        metavar="URL",
        help="redis://[user@]host:port or rediss:// for TLS (repeatable: several seeds / several deployments)",
    )
    group.add_argument("--mode", choices=MODES, default=MODES[0])
    group.add_argument("--sentinel-master", metavar="NAME", help="the master name, with --mode sentinel")
    group.add_argument("--user", help="ACL username (default: the URL's, or none)")
    group.add_argument("--password-file", type=Path, help="read the password from this file (else $REDISCLI_AUTH)")
    group.add_argument("--tls", action="store_true", help="use TLS even with redis:// URLs")
    group.add_argument("--cacert", type=Path, help="CA bundle to verify the servers")
    group.add_argument("--cert", type=Path, help="client certificate (PEM)")
    group.add_argument("--key", type=Path, help="client private key (PEM)")
    group.add_argument("--sni", metavar="NAME", help="server name to verify (and send as SNI)")
    group.add_argument("--insecure", action="store_true", help="do not verify server certificates")
    group.add_argument("--timeout", type=float, default=5.0, help="per-call timeout in seconds (default 5)")
    _add_output(parser)


def target_from_args(args: argparse.Namespace) -> Target:
    """Build a :class:`Target` from the CLI's options, refusing contradictions with a readable message."""
    from redis_functions_operator.redis.connect import Credentials, Endpoint, Mode, Target, TlsSettings

    endpoints: list[Endpoint] = []
    tls = bool(args.tls)
    url_user: str | None = None
    url_password: str | None = None
    for raw in args.redis:
        parts = urlsplit(raw if "://" in raw else f"redis://{raw}")
        if parts.scheme not in ("redis", "rediss"):
            raise UsageError(f"--redis {raw!r}: scheme must be redis:// or rediss://")
        tls = tls or parts.scheme == "rediss"
        if parts.username:
            url_user = unquote(parts.username)
        if parts.password:
            url_password = unquote(parts.password)
        try:
            endpoints.append(Endpoint.parse(parts.netloc.rpartition("@")[2]))
        except ValueError as exc:
            raise UsageError(f"--redis {raw!r}: {exc}") from None
    password = os.environ.get("REDISCLI_AUTH") or None
    if args.password_file:
        try:
            password = args.password_file.read_text().strip("\r\n")
        except OSError as exc:
            raise UsageError(f"--password-file: {exc.strerror}") from None
    elif url_password and not password:
        print(
            "warning: a password on the command line is visible to other users; use REDISCLI_AUTH or --password-file",
            file=sys.stderr,
        )
        password = url_password
    user = args.user or url_user
    credentials = Credentials(user, password) if (user or password) else None
    tls_settings = None
    if tls or args.cacert or args.cert:
        if bool(args.cert) != bool(args.key):
            raise UsageError("--cert and --key go together")
        tls_settings = TlsSettings(
            ca_file=str(args.cacert) if args.cacert else None,
            cert_file=str(args.cert) if args.cert else None,
            key_file=str(args.key) if args.key else None,
            server_name=args.sni,
            insecure_skip_verify=bool(args.insecure),
        )
    mode = Mode(args.mode)
    if mode is Mode.SENTINEL and not args.sentinel_master:
        raise UsageError("--mode sentinel needs --sentinel-master NAME")
    return Target(tuple(endpoints), mode, args.sentinel_master, credentials, tls_settings, timeout=args.timeout)


# --- library files -------------------------------------------------------------------------------------------------


def library_files(paths: Sequence[str]) -> list[Path]:
    """Expand directories to their ``*.lua`` files (sorted); keep files as given."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("*.lua"))
            if not found:
                raise UsageError(f"{path}: no *.lua files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return files


def load_libraries(paths: Sequence[str]) -> list[Library]:
    """Read and vet every library file; the first file refused (or a library defined twice) is a usage error."""
    with ThreadPoolExecutor(max_workers=VET_THREADS) as pool:
        return VettedFiles(paths, pool).libraries()


#: Vets run on this many threads: lupa releases the GIL while Lua runs, so they use the machine's cores, and a
#: ``sync`` imports the engine (redis-py, asyncio: most of its start-up) while its files are being vetted.
VET_THREADS = max(1, min(4, os.cpu_count() or 1))


class VettedFiles:
    """Library files whose vets were started on a pool; :meth:`libraries` waits for them, in the files' order."""

    def __init__(self, paths: Sequence[str], pool: Executor) -> None:
        self._started: list[tuple[Path, Future[Vetting]]] = [
            (path, pool.submit(vet, _read(path))) for path in library_files(paths)
        ]
        self.paths: dict[str, Path] = {}  # library name -> its file, once :meth:`libraries` returned

    def libraries(self) -> list[Library]:
        libraries: list[Library] = []
        seen: dict[str, Path] = {}
        for path, started in self._started:
            try:
                vetting = started.result()
            except LibraryError as exc:
                raise UsageError(f"{path}:{exc.line}: {exc.message}") from None
            refusal = vetting.refusal
            if refusal is not None:
                where = f"{path}:{refusal.line}" if refusal.line else str(path)
                raise UsageError(f"{where}: refused, {REFUSAL_PREFIX[refusal.reason]}: {refusal.message}")
            library = vetting.library
            if library.name in seen:
                raise UsageError(f"{path}: library {library.name!r} is also defined in {seen[library.name]}")
            seen[library.name] = path
            libraries.append(library)
        self.paths = seen
        return libraries


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


# --- commands ------------------------------------------------------------------------------------------------------


def cmd_lint(args: argparse.Namespace) -> int:
    from redis_functions_operator.library.lint import Severity, lint

    report: list[dict[str, Any]] = []
    failed = False
    for path in library_files(args.files):
        for finding in lint(path.read_bytes(), args.server):
            failed = failed or finding.severity is Severity.ERROR or args.strict
            report.append(
                {
                    "file": str(path),
                    "line": finding.line,
                    "severity": str(finding.severity),
                    "rule": finding.rule,
                    "message": finding.message,
                }
            )
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        for item in report:
            print(f"{item['file']}:{item['line']}: {item['severity']}: {item['message']} [{item['rule']}]")
        if not report:
            print("no findings", file=sys.stderr)
    return EXIT_DRIFT if failed else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    with ThreadPoolExecutor(max_workers=VET_THREADS) as pool:
        files = VettedFiles(args.files, pool)
        import asyncio  # the engine's imports overlap the vets

        from redis_functions_operator import diff_report
        from redis_functions_operator.redis.plan import plan

        target = target_from_args(args)
        libraries = files.libraries()
    found = asyncio.run(plan(libraries, target))
    if args.output == "json":
        print(json.dumps(diff_report.to_json(found, files.paths), indent=2))
    else:
        diff_report.print_plan(found, files.paths, sys.stdout)
    return diff_report.exit_code(found)


def cmd_sync(args: argparse.Namespace) -> int:
    if args.dry_run:
        return cmd_diff(args)
    probes = load_probes(args.test, args.test_key_prefix) if args.test else None
    with ThreadPoolExecutor(max_workers=VET_THREADS) as pool:
        vetting = VettedFiles(args.files, pool)
        import asyncio  # the engine's imports overlap the vets

        from redis_functions_operator.redis.sync import sync, sync_many

        target = target_from_args(args)
        libraries = vetting.libraries()
    if probes is not None:
        if len(libraries) != 1:
            raise UsageError(f"--test needs exactly one library, got {len(libraries)}")
        return report([asyncio.run(sync(libraries[0], target, probes=probes))], args.output)
    progress = _Progress(len(libraries), sys.stderr)
    results = asyncio.run(sync_many(libraries, target, on_done=progress.step))
    progress.finish()
    return report(results, args.output)


def load_probes(path: str, key_prefix: str | None) -> tuple[Probe, ...]:
    """A smoke-test file: the YAML list of ``spec.tests``, or a mapping with ``tests`` (and ``testKeyPrefix``, which
    ``--test-key-prefix`` overrides), so a fragment of a manifest's spec works as it is."""
    import yaml

    try:
        loaded = yaml.safe_load(_read(Path(path)))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    items = loaded
    if isinstance(loaded, dict):
        items = loaded.get("tests")
        key_prefix = key_prefix if key_prefix is not None else loaded.get("testKeyPrefix")
    try:
        probes = parse_probes(items, key_prefix, where=path)
    except ProbeError as exc:
        raise UsageError(str(exc)) from None
    if not probes:
        raise UsageError(f"{path}: no smoke tests")
    return probes


def cmd_delete(args: argparse.Namespace) -> int:
    import asyncio

    from redis_functions_operator.redis.sync import delete

    target = target_from_args(args)

    async def run() -> list[SyncResult]:
        return [await delete(name, target) for name in args.names]

    return report(asyncio.run(run()), args.output)


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from redis_functions_operator.redis.sync import inspect

    target = target_from_args(args)
    expected: dict[str, str | None] = {}  # library name -> expected sha256 (None: "the same on every primary")
    for item in args.names:
        path = Path(item)
        if item.endswith(".lua") or path.is_file():
            for library in load_libraries([item]):
                expected[library.name] = library.sha256
        else:
            expected[item] = None
    found = asyncio.run(inspect(list(expected), target))
    if found.error is not None:
        print(f"error: {found.error.describe()}", file=sys.stderr)
        return EXIT_PERMANENT if found.error.permanent else EXIT_TRANSIENT
    rows, problems, unreachable = status_rows(found, expected)
    if args.output == "json":
        print(json.dumps({"nodes": rows, "problems": problems}, indent=2))
    else:
        _print_table(rows, ["library", "node", "state", "sha256"], sys.stdout)
        for problem in problems:
            print(f"DRIFT: {problem}", file=sys.stderr)
    if unreachable:
        return EXIT_PERMANENT if all(e.permanent for e in unreachable) else EXIT_TRANSIENT
    return EXIT_DRIFT if problems else EXIT_OK


def status_rows(
    found: InspectResult, expected: dict[str, str | None]
) -> tuple[list[dict[str, str]], list[str], list[NodeError]]:
    """Per (library, node) rows, the drift problems (each naming the node), and node read errors."""
    from redis_functions_operator.redis.topology import Node

    assert found.topology is not None
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    unreachable: list[NodeError] = []
    names = set(expected)
    for snapshots, _ in found.per_node.values():
        if not expected:
            names.update(snapshots)
    for node, down in found.topology.unreachable:
        unreachable.append(down)
        problems.append(f"{node.address}: unreachable ({down.describe()})")
    for node, (_, read_error) in found.per_node.items():
        if read_error is not None:
            unreachable.append(read_error)
            problems.append(f"{node.address}: cannot read ({read_error.describe()})")
    for name in sorted(names):
        shas: dict[Node, str | None] = {}
        for node, (snaps, _) in found.per_node.items():
            snap = snaps.get(name)
            shas[node] = snap.sha256 if snap else None
        want = expected.get(name)
        if want is None:
            present = [s for s in shas.values() if s]
            want = max(set(present), key=present.count) if present else None
        for node in sorted(shas, key=lambda n: n.endpoint):
            sha = shas[node]
            state = "present" if sha and sha == want else ("missing" if sha is None else "different")
            if found.per_node[node][1] is not None:
                state = "unknown"
            rows.append({"library": name, "node": node.address, "state": state, "sha256": sha or "-"})
            if state in ("missing", "different"):
                problems.append(f"{node.address}: library {name} is {state}")
    return rows, problems, unreachable


def cmd_export(args: argparse.Namespace) -> int:
    import asyncio

    import yaml

    from redis_functions_operator.redis.sync import inspect

    target = target_from_args(args)
    found = asyncio.run(inspect(list(args.names), target))
    if found.error is not None:
        print(f"error: {found.error.describe()}", file=sys.stderr)
        return EXIT_PERMANENT if found.error.permanent else EXIT_TRANSIENT
    codes: dict[str, list[bytes]] = {}
    for snapshots, _ in found.per_node.values():
        for name, snap in snapshots.items():
            if snap.code is not None:
                codes.setdefault(name, []).append(snap.code)
    documents = []
    for name in sorted(codes):
        variants = codes[name]
        code = max(set(variants), key=variants.count)
        if len(set(variants)) > 1:
            print(f"warning: {name} differs between primaries; exporting the most common code", file=sys.stderr)
        documents.append(library_manifest(name, code, target, args.namespace, observe=args.observe))
    yaml.add_representer(str, _yaml_str, Dumper=yaml.SafeDumper)
    print(yaml.safe_dump_all(documents, sort_keys=False, width=1 << 20), end="")
    return EXIT_OK


def library_manifest(
    name: str, code: bytes, target: Target, namespace: str | None, observe: bool = False
) -> dict[str, Any]:
    """A RedisFunctionLibrary for an already-loaded library, accepted by the CRD as is. ``deletionPolicy: Retain``:
    adopting a library must not make deleting the object delete it. With ``observe`` the object only watches
    (``managementPolicy: Observe``): a team sees the operator's view of what it loaded by hand before letting it
    enforce anything."""
    metadata: dict[str, Any] = {"name": _k8s_name(name)}
    if namespace:
        metadata["namespace"] = namespace
    spec_target: dict[str, Any] = {"endpoints": [str(e) for e in target.endpoints], "mode": target.mode.value}
    if target.sentinel_master:
        spec_target["sentinel"] = {"masterName": target.sentinel_master}
    if target.tls:
        spec_target["tls"] = {"enabled": True}
    spec: dict[str, Any] = {
        "libraryName": name,
        "version": f"sha256-{code_sha256(code)[:12]}",
        "code": code.decode("utf-8", "surrogateescape"),
        "target": spec_target,
        "deletionPolicy": "Retain",
    }
    if observe:
        spec["managementPolicy"] = "Observe"
    return {
        "apiVersion": "redisfunctions.dev/v1alpha1",
        "kind": "RedisFunctionLibrary",
        "metadata": metadata,
        "spec": spec,
    }


def cmd_dump(args: argparse.Namespace) -> int:
    import asyncio

    from redis_functions_operator.redis.connect import Endpoint
    from redis_functions_operator.redis.dump import DumpError, dump, encode_dump_file

    target = target_from_args(args)
    node = None
    if args.node:
        try:
            node = Endpoint.parse(args.node)
        except ValueError as exc:
            raise UsageError(f"--node: {exc}") from None
    try:
        taken = asyncio.run(dump(target, node))
    except DumpError as exc:
        print(f"error: {exc.error.describe()}", file=sys.stderr)
        return EXIT_PERMANENT if exc.error.permanent else EXIT_TRANSIENT
    Path(args.file).write_bytes(encode_dump_file(taken))
    print(
        f"dumped {len(taken.libraries)} libraries ({len(taken.payload)} bytes, format {taken.format}) from "
        f"{taken.source} ({taken.server.label}) to {args.file}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    import asyncio

    from redis_functions_operator.redis.dump import RestorePolicy, decode_dump_file, restore

    target = target_from_args(args)
    try:
        taken = decode_dump_file(Path(args.file).read_bytes())
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror}") from None
    except ValueError as exc:  # a damaged record line (json, base64)
        raise UsageError(f"{args.file}: not a dump file this tool can read ({exc})") from None
    if not taken.recorded:
        print(
            f"note: {args.file} is a bare FUNCTION DUMP payload (no record of its source): its format is checked "
            "against each primary, its code cannot be vetted",
            file=sys.stderr,
        )
    result = asyncio.run(restore(target, taken, RestorePolicy(args.policy)))
    if args.output == "json":
        print(json.dumps(result_json(result), indent=2))
    else:
        print_sync_result(result, sys.stdout)
    return exit_code([result])


def cmd_run(args: argparse.Namespace) -> int:  # pragma: no cover - exercised by the e2e suite
    try:
        from redis_functions_operator.k8s.main import run_operator
    except ImportError:
        raise UsageError("the operator is not part of this build") from None
    result: int = run_operator(args)
    return result


# --- rendering -----------------------------------------------------------------------------------------------------


def report(results: Sequence[SyncResult], output: str) -> int:
    """Print engine results as tables or JSON; return the exit code they call for."""
    if output == "json":
        print(json.dumps([result_json(r) for r in results], indent=2))
    else:
        for result in results:
            print_sync_result(result, sys.stdout)
    return exit_code(results)


def exit_code(results: Sequence[SyncResult]) -> int:
    """0 when every library is verified everywhere; else 3 if any failure is permanent, else 4."""
    errors = [r.error for r in results if not r.ok and r.error is not None]
    if not errors and all(r.ok for r in results):
        return EXIT_OK
    if any(e.permanent for e in errors):
        return EXIT_PERMANENT
    return EXIT_TRANSIENT


def result_json(result: SyncResult) -> dict[str, Any]:
    return {
        "library": result.library,
        "sha256": result.sha256 or None,
        "ok": result.ok,
        "verified": f"{result.verified_count}/{len(result.nodes)}",
        "error": _error_json(result.error),
        "blockingNode": result.blocking_node,
        "nodes": [_node_json(n) for n in result.nodes],
        "tests": [{"name": p.name, "node": p.node, "passed": p.passed, "reply": p.actual} for p in result.probes],
    }


def _node_json(node: NodeResult) -> dict[str, Any]:
    return {
        "address": node.address,
        "role": node.node.role.value,
        "slots": node.node.slots,
        "outcome": node.outcome.value,
        "before": node.before_sha256,
        "after": node.after_sha256,
        "error": _error_json(node.error),
    }


def _error_json(error: NodeError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"reason": error.kind.value, "message": error.describe(), "permanent": error.permanent}


def print_sync_result(result: SyncResult, out: TextIO) -> None:
    verdict = "OK" if result.ok else ("FAILED" if result.permanent else "RETRY")
    header = f"{result.library}: {verdict}, {result.verified_count}/{len(result.nodes)} primaries verified"
    print(header, file=out)
    rows = [
        {
            "node": n.address,
            "slots": n.node.slots or "-",
            "outcome": n.outcome.value,
            "sha256": (n.after_sha256 or "-")[:12],
            "error": n.error.describe() if n.error else "",
        }
        for n in result.nodes
    ]
    if rows:
        _print_table(rows, ["node", "slots", "outcome", "sha256", "error"], out, indent="  ")
    for probe in result.probes:
        verdict = "passed" if probe.passed else f"FAILED, got {probe.actual}"
        print(f"  smoke test {probe.name} on {probe.node}: {verdict}", file=out)
    if result.error is not None and not result.ok:
        where = f" on {result.blocking_node}" if result.blocking_node else ""
        print(f"  error{where}: {result.error.kind.value}: {result.error.describe()}", file=out)
        if result.blocking_node and any(n.outcome.value == "RolledBack" for n in result.nodes):
            print("  the nodes that had taken the new code were put back to their previous code", file=out)


def _print_table(rows: list[dict[str, str]], columns: list[str], out: TextIO, indent: str = "") -> None:
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print(indent + "  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip(), file=out)
    for row in rows:
        print(indent + "  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip(), file=out)


class _Progress:
    """``[n/total] name`` on a terminal for long syncs; silent when stderr is not a TTY."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.done, self.out = total, 0, out
        self.enabled = total > 1 and out.isatty()

    def step(self, result: SyncResult) -> None:
        self.done += 1
        if self.enabled:
            mark = "ok" if result.ok else "!!"
            print(f"\r\033[K[{self.done}/{self.total}] {mark} {result.library}", end="", file=self.out, flush=True)

    def finish(self) -> None:
        if self.enabled:
            print(file=self.out)


def _k8s_name(library: str) -> str:
    name = library.lower().replace("_", "-").strip("-") or "library"
    return name[:253]


def _yaml_str(dumper: Any, value: str) -> Any:
    style = "|" if "\n" in value and _block_safe(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _block_safe(value: str) -> bool:
    """YAML literal blocks cannot carry trailing spaces on lines, tabs at odd places or CR reliably."""
    return "\r" not in value and not any(line.endswith(" ") for line in value.split("\n"))


__all__ = ["main"]
