"""Run the operator as a real process (``redis-functions-operator run``) against a test control plane, the way the
Deployment runs it, and stop it by its own handle. Plain Python (no pytest), so ``make demo`` uses it too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.processes import terminate

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        args: Sequence[str] = ("--all-namespaces",),
        executable: Sequence[str] | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.args = list(args)
        self.executable = list(executable or [sys.executable, "-m", "redis_functions_operator"])
        self.health_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    def start(self, timeout: float = 30.0) -> OperatorProcess:
        return self.launch().wait_healthy(timeout)

    def launch(self) -> OperatorProcess:
        """Start the process without waiting for it (several operators then start side by side: see
        :meth:`wait_healthy`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        command = [*self.executable, "run", *self.args, "--liveness", f"127.0.0.1:{self.health_port}"]
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        log.close()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> OperatorProcess:
        """Until ``/healthz`` answers; stops the process and raises if it exits or does not answer in time."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.health() is not None:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                data: dict[str, Any] = json.loads(response.read())
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def metrics(self, timeout: float = 10.0) -> dict[str, float]:
        """The operator's /metrics, as ``{'name{labels}': value}``."""
        with urllib.request.urlopen(self.health_url.replace("/healthz", "/metrics"), timeout=timeout) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        terminate(process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def operator_env(base: dict[str, str]) -> dict[str, str]:
    """The control plane's env plus what the operator process needs to import the package from the repo."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT / "operator"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
