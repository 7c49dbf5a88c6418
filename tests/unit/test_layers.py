"""The package's layering is a contract: imports point down only. This test reads every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "redis_functions_operator"

# module (or sub-package) -> top-level names it must never import (directly or by sub-module)
FORBIDDEN = {
    "library": (
        "redis",
        "kopf",
        "kubernetes",
        "redis_functions_operator.redis",
        "redis_functions_operator.reconcile",
        "redis_functions_operator.k8s",
        "redis_functions_operator.cli",
    ),
    "redis": ("kopf", "kubernetes", "redis_functions_operator.k8s", "redis_functions_operator.reconcile"),
    "reconcile": ("kopf", "kubernetes", "redis", "redis_functions_operator.k8s"),
}

#: The library wing's private rooms: only the wing itself (and lint's one user, the CLI) may import them.
WING_PRIVATE = {
    "redis_functions_operator.library._lua": (),
    "redis_functions_operator.library.lint": ("cli.py",),
}


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_of(layer: str) -> list[Path]:
    single = PACKAGE / f"{layer}.py"
    return [single] if single.exists() else sorted((PACKAGE / layer).rglob("*.py"))


def test_imports_point_down_only() -> None:
    violations = []
    for layer, forbidden in FORBIDDEN.items():
        for path in modules_of(layer):
            for name in imported_names(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    violations.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert violations == []


def test_every_layer_exists() -> None:
    for layer in FORBIDDEN:
        assert modules_of(layer), layer


def test_the_library_wing_is_entered_through_its_face() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "library":
            continue
        for name in imported_names(path):
            for private, allowed in WING_PRIVATE.items():
                if (name == private or name.startswith(private + ".")) and str(relative) not in allowed:
                    violations.append(f"{relative} imports {name}")
    assert violations == []


def test_the_model_stands_on_nothing() -> None:
    """The engine stands on the model: no Lua reader, no vet under it."""
    assert not {n for n in imported_names(PACKAGE / "library" / "model.py") if n.startswith("redis_functions_operator")}


def test_no_package_named_operator() -> None:
    assert not (PACKAGE.parent / "operator").exists()
    assert not (PACKAGE.parent / "operator.py").exists()
