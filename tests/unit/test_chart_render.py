"""The files the chart, the examples, the Dockerfile and docs/install.md copy or restate, kept in step — no helm
needed (the rendering itself is tested with the real helm in tests/e2e/test_chart.py).

* the chart's crds/ is the repository's crds/, byte for byte (one source of truth: edit crds/, then
  ``cp crds/*.yaml charts/redis-functions-operator/crds/``);
* the example chart's files/*.lua are lua/*.lua, byte for byte, and each is listed in its values;
* one version everywhere: pyproject, the chart's appVersion, the Dockerfile's default VERSION label;
* every key of the chart's values.yaml is in docs/install.md's values table and in values.schema.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "redis-functions-operator"
EXAMPLE = REPO / "examples" / "libraries"


def _names(folder: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


def test_chart_crds_are_the_repository_crds_byte_for_byte() -> None:
    assert _names(CHART / "crds", "*") == _names(REPO / "crds", "*.yaml"), (
        "the chart's crds/ must hold exactly the repository's crds/*.yaml"
    )
    for name in _names(REPO / "crds", "*.yaml"):
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/redis-functions-operator/crds/{name} differs from crds/{name}: "
            "run `cp crds/*.yaml charts/redis-functions-operator/crds/`"
        )


def test_example_chart_ships_the_lua_libraries_byte_for_byte() -> None:
    assert _names(EXAMPLE / "files", "*.lua") == _names(REPO / "lua", "*.lua")
    for name in _names(REPO / "lua", "*.lua"):
        assert (EXAMPLE / "files" / name).read_bytes() == (REPO / "lua" / name).read_bytes(), (
            f"examples/libraries/files/{name} differs from lua/{name}: run `cp lua/*.lua examples/libraries/files/`"
        )
    listed = yaml.safe_load((EXAMPLE / "values.yaml").read_text())["libraries"]
    assert sorted(f"{name}.lua" for name in listed) == _names(REPO / "lua", "*.lua")


def test_one_version_everywhere() -> None:
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version.group(1)
    assert chart["version"] == version.group(1)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG VERSION={version.group(1)}\n" in dockerfile
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == ""  # defaults to appVersion


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in _OPAQUE:
            keys += _leaf_keys(value, f"{path}.")
        else:
            keys.append(path)
    return keys


# Values that are Kubernetes objects passed through as a whole: documented as one key.
_OPAQUE = {
    "resources",
    "podSecurityContext",
    "containerSecurityContext",
    "tmpVolume",
    "livenessProbe",
    "readinessProbe",
}

VALUE_KEYS = _leaf_keys(yaml.safe_load((CHART / "values.yaml").read_text()))


@pytest.mark.parametrize("key", VALUE_KEYS)
def test_every_value_is_documented_and_in_the_schema(key: str) -> None:
    doc = (REPO / "docs" / "install.md").read_text()
    assert f"`{key}`" in doc, f"{key} is missing from the values table in docs/install.md"
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    node = schema
    for part in key.split("."):
        assert part in node.get("properties", {}), f"{key} is missing from values.schema.json"
        node = node["properties"][part]
