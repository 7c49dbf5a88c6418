"""How ``diff`` and ``sync --dry-run`` show a plan: per library and per primary, what a sync would do, with the
code's unified diff and the functions it adds, removes or re-flags; and the exit code, read like
``terraform plan -detailed-exitcode``.

====  ==========================================================================================================
0     nothing would change: every primary holds exactly these libraries
1     a sync would change something (load a missing library, replace other code)
2     usage error (bad arguments, unreadable file, a library refused before any load)
3     a sync would fail: a function name belongs to another library on a primary (or a permanent read error)
4     a primary could not be read (unreachable, loading...): the plan is incomplete, try again
====  ==========================================================================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from redis_functions_operator.redis.plan import Change, LibraryPlan, NodePlan, Plan

EXIT_SAME, EXIT_CHANGES, EXIT_FAILS, EXIT_INCOMPLETE = 0, 1, 3, 4


def exit_code(plan: Plan) -> int:
    unread = ([plan.error] if plan.error is not None else []) + plan.unread
    if plan.conflicts or any(e.permanent for e in unread):
        return EXIT_FAILS
    if unread:
        return EXIT_INCOMPLETE
    return EXIT_CHANGES if plan.changes else EXIT_SAME


def function_changes(node: NodePlan, plan: LibraryPlan) -> dict[str, Any]:
    """Functions the library would add, remove, or change the flags of, on this primary."""
    loaded: Mapping[str, tuple[str, ...]] = dict(node.held.functions) if node.held is not None else {}
    wanted = {f.name: f.flags for f in plan.library.functions}
    return {
        "added": sorted(set(wanted) - set(loaded)),
        "removed": sorted(set(loaded) - set(wanted)),
        "flags": {
            name: {"from": sorted(loaded[name]), "to": sorted(wanted[name])}
            for name in sorted(set(wanted) & set(loaded))
            if set(wanted[name]) != set(loaded[name])
        },
    }


def code_diff(node: NodePlan, plan: LibraryPlan, path: Path | None) -> str:
    """The unified diff of the code a primary holds against the file ("" when it holds none or the same)."""
    if node.held is None or node.held.code is None or node.change is Change.SAME:
        return ""
    before = node.held.code.decode("utf-8", "replace").splitlines(keepends=True)
    after = plan.library.code.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(
        before, after, fromfile=f"{node.node.address} (loaded)", tofile=str(path or plan.library.name)
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def to_json(plan: Plan, paths: Mapping[str, Path]) -> dict[str, Any]:
    return {
        "changes": plan.changes,
        "error": plan.error.describe() if plan.error is not None else None,
        "libraries": [
            {
                "library": p.library.name,
                "file": str(paths.get(p.library.name, "")),
                "sha256": p.library.sha256,
                "changes": p.changes,
                "nodes": [_node_json(n, p, paths.get(p.library.name)) for n in p.nodes],
            }
            for p in plan.libraries
        ],
    }


def _node_json(node: NodePlan, plan: LibraryPlan, path: Path | None) -> dict[str, Any]:
    return {
        "node": node.node.address,
        "change": node.change.value,
        "loadedSha256": node.held.sha256 if node.held is not None else None,
        "functions": function_changes(node, plan) if node.change is not Change.UNKNOWN else None,
        "owners": [{"function": f, "library": lib} for f, lib in node.owners],
        "diff": code_diff(node, plan, path),
        "error": node.error.describe() if node.error is not None else None,
    }


def print_plan(plan: Plan, paths: Mapping[str, Path], out: TextIO) -> None:
    if plan.error is not None:
        print(f"error: {plan.error.describe()}", file=out)
        return
    for library_plan in plan.libraries:
        _print_library(library_plan, paths.get(library_plan.library.name), out)


def _print_library(plan: LibraryPlan, path: Path | None, out: TextIO) -> None:
    library = plan.library
    changing = sum(1 for n in plan.nodes if n.change is not Change.SAME)
    verdict = f"{changing} of {len(plan.nodes)} primaries would change" if changing else "no change"
    print(f"{library.name} ({path or '-'}, sha256 {library.sha256[:12]}): {verdict}", file=out)
    shown: set[bytes] = set()
    for node in plan.nodes:
        print(f"  {node.node.address:<22} {node.change.value}{_details(node, plan)}", file=out)
        diff = code_diff(node, plan, path)
        held = node.held.code if node.held is not None and node.held.code is not None else b""
        if diff and held not in shown:  # the same loaded code on several primaries: its diff once
            shown.add(held)
            out.write("".join(f"    {line}" for line in diff.splitlines(keepends=True)))


def _details(node: NodePlan, plan: LibraryPlan) -> str:
    if node.change is Change.UNKNOWN:
        return f": {node.error.describe() if node.error is not None else 'not read'}"
    if node.change is Change.CONFLICT:
        owned = ", ".join(f"{function} belongs to library {library}" for function, library in node.owners)
        return f": a sync would fail ({owned})"
    if node.change is Change.SAME:
        return ""
    changes = function_changes(node, plan)
    parts = [f"+{name}" for name in changes["added"]] + [f"-{name}" for name in changes["removed"]]
    parts += [
        f"~{name} flags [{', '.join(c['from'])}] -> [{', '.join(c['to'])}]" for name, c in changes["flags"].items()
    ]
    return f": {' '.join(parts)}" if parts else ": same functions, other code"


__all__ = ["code_diff", "exit_code", "function_changes", "print_plan", "to_json"]
