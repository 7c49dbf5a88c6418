"""The package's layering is a contract: imports point down only. The contract itself lives in ``.importlinter``
and is checked by import-linter (what kopf itself uses); this file runs it under pytest too, and adds what a layers
contract cannot say: that every module of the package sits in some layer (a new top-level module must be placed),
and that the library model stands on nothing (but the shape of a failure)."""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "redis_functions_operator"
CONFIG = REPO / ".importlinter"


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed: run make bootstrap"
    out = subprocess.run(
        [lint_imports, "--no-cache", "--no-logo"], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 kept, 0 broken" in out.stdout


def test_every_module_of_the_package_is_in_a_layer() -> None:
    config = configparser.ConfigParser()
    config.read(CONFIG)
    layers = config["importlinter:contract:layers"]["layers"]
    placed = {name.strip() for line in layers.splitlines() for name in line.split("|") if name.strip()}
    top_level = {
        f"redis_functions_operator.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert top_level - placed == set(), "place these in a layer of .importlinter"


def test_the_model_stands_on_nothing() -> None:
    """The engine stands on the model: no Lua reader, no vet under it; only the shape of a failure, which stands on
    nothing itself."""
    ours = {n for n in imported_names(PACKAGE / "library" / "model.py") if n.startswith("redis_functions_operator")}
    assert ours <= {"redis_functions_operator.library.failure"}
    assert not {
        n for n in imported_names(PACKAGE / "library" / "failure.py") if n.startswith("redis_functions_operator")
    }


def test_no_package_named_operator() -> None:
    assert not (PACKAGE.parent / "operator").exists()
    assert not (PACKAGE.parent / "operator.py").exists()
