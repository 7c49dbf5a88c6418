"""What every helper that starts a process needs: die with the test process, and stop by its own handle.

Plain Python, no pytest."""

from __future__ import annotations

import ctypes
import platform
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

#: prctl(2), resolved here in the parent: no dlopen between fork and exec.
_PRCTL: Callable[..., int] | None = ctypes.CDLL(None).prctl if platform.system() == "Linux" else None


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that SIGKILLs the child if the test process dies hard. Only from the main thread: the signal
    fires when the *thread* that forked the child exits. ``None`` where it cannot be done."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    return _die_with_parent


def terminate(process: subprocess.Popen[Any] | None, timeout: float) -> None:
    """SIGTERM, up to ``timeout`` seconds to exit (0: none), then SIGKILL. Nothing if it already exited."""
    if process is None or process.poll() is not None:
        return
    if timeout > 0:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait(10)
