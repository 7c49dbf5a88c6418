"""Apply and inspect RedisFunctionLibrary objects with kubectl, as a user would."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from tests.support.control_plane import ControlPlane


def library_code(name: str, body: str = "return 'v1'", functions: Iterable[str] = ("f",)) -> str:
    lines = [f"#!lua name={name}"]
    lines += [f"redis.register_function('{name}_{fn}', function(keys, args) {body} end)" for fn in functions]
    return "\n".join(lines) + "\n"


def manifest(name: str, namespace: str, endpoints: Iterable[str], **spec: Any) -> dict[str, Any]:
    target = {"endpoints": list(endpoints)}
    target.update(spec.pop("target", {}))
    annotations = spec.pop("annotations", None)
    body: dict[str, Any] = {
        "apiVersion": "redisfunctions.dev/v1alpha1",
        "kind": "RedisFunctionLibrary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"target": target, **spec},
    }
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


class Libraries:
    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.namespace = namespace

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.cp.kubectl("-n", self.namespace, *args, check=check, input=input)

    def apply(self, name: str, endpoints: Iterable[str], server_side: bool = False, **spec: Any) -> None:
        self.cp.apply_yaml(yaml.safe_dump(manifest(name, self.namespace, endpoints, **spec)), server_side=server_side)

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", "rfl", name, "-o", "json").stdout)
        return result

    def exists(self, name: str) -> bool:
        return self.kubectl("get", "rfl", name, check=False).returncode == 0

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for condition in self.get(name).get("status", {}).get("conditions", []):
            if condition["type"] == type_:
                return dict(condition)
        return None

    def wait_ready(self, name: str, timeout: float = 30) -> dict[str, Any]:
        waited = self.kubectl("wait", "--for=condition=Ready", f"rfl/{name}", f"--timeout={timeout:.0f}s", check=False)
        assert waited.returncode == 0, (
            f"{name} not Ready: {waited.stderr}\n{json.dumps(self.get(name).get('status'), indent=1)}"
        )
        return self.get(name)

    def wait_for(
        self, name: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 30, what: str = ""
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.get(name)
            if predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(
            f"{name}: timed out after {timeout}s waiting for {what}; status:\n{json.dumps(last.get('status'), indent=1)}"
        )

    def wait_condition(
        self, name: str, type_: str, status: str = "True", reason: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        def matches(obj: dict[str, Any]) -> bool:
            for c in obj.get("status", {}).get("conditions", []):
                if c["type"] == type_ and c["status"] == status and (reason is None or c["reason"] == reason):
                    return c.get("observedGeneration") == obj["metadata"]["generation"]
            return False

        obj = self.wait_for(name, matches, timeout, f"{type_}={status} reason={reason}")
        return next(c for c in obj["status"]["conditions"] if c["type"] == type_)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def wait_event(self, name: str, reason: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(name):
                if event.get("reason") == reason:
                    return event
            time.sleep(0.2)
        raise AssertionError(f"no {reason} event for {name}; events: {[e.get('reason') for e in self.events(name)]}")

    def delete(self, name: str, wait: bool = True, timeout: float = 30) -> Any:
        return self.kubectl(
            "delete", "rfl", name, f"--wait={str(wait).lower()}", f"--timeout={timeout:.0f}s", check=False
        )

    def annotate(self, name: str, **annotations: str) -> None:
        pairs = [f"redisfunctions.dev/{k.replace('_', '-')}={v}" for k, v in annotations.items()]
        self.kubectl("annotate", "--overwrite", "rfl", name, *pairs)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "rfl", name, "--type=merge", "-p", json.dumps({"spec": spec}))
