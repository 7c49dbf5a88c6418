"""A latency-injecting TCP proxy, run as its own process so a test can put one slow node in front of an operator.

    python -m tests.support.tcp_proxy --listen 0 --target 127.0.0.1:6379 --delay-ms 6000 [--control 0]

Every chunk of bytes read from either side is delivered to the other side ``delay`` milliseconds after it was read
(latency, not bandwidth: a pipelined stream stays pipelined, order is kept). The delay applies to bytes read after a
change; bytes already in flight keep the delivery time they were given. Connecting is never delayed: the proxy
accepts at once and opens its own connection to the target, so a client sees a node that *answers slowly*, not one
that is unreachable.

On start the process prints one line on stdout, ``READY listen=<port> control=<port>``, then nothing else. The control
port takes one text command per line and answers one line:

* ``delay <ms>`` → ``ok delay=<ms>`` (takes effect for bytes read from then on)
* ``get`` → ``delay=<ms> connections=<open connections> accepted=<total>``
* ``drop`` → ``ok dropped=<n>``: closes every proxied connection (both sides)

:class:`DelayProxy` is the test side: it starts the process, reads the READY line, sends control commands and stops
the process by its own handle (with ``PR_SET_PDEATHSIG`` so it dies with the test process). Plain Python, no pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from tests.support.processes import die_with_parent, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CHUNK = 65536


# --------------------------------------------------------------------------------------------------------------------
# the proxy process


class _Proxy:
    def __init__(self, target_host: str, target_port: int, delay_ms: float) -> None:
        self.target = (target_host, target_port)
        self.delay = max(0.0, delay_ms) / 1000.0
        self.connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.handlers: set[asyncio.Task[None]] = set()
        self.accepted = 0

    async def handle_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        pair: tuple[asyncio.StreamWriter, ...] = (client_writer,)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
            pair = (client_writer, server_writer)
            self.connections.add((client_writer, server_writer))
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.handlers.discard(task)
            self.connections.discard((pair[0], pair[-1]))
            for writer in pair:
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as fast as the peer sends, deliver each chunk ``delay`` after it was read, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:  # EOF from the reader: pass it on, then stop
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
            writer.close()

    def drop(self) -> int:
        pairs = list(self.connections)
        for pair in pairs:
            for writer in pair:
                writer.close()
        return len(pairs)

    async def handle_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                words = line.decode(errors="replace").split()
                if not words:
                    continue
                if words[0] == "delay" and len(words) == 2:
                    try:
                        self.delay = max(0.0, float(words[1])) / 1000.0
                        answer = f"ok delay={self.delay * 1000:.0f}"
                    except ValueError:
                        answer = f"error: not a number: {words[1]}"
                elif words[0] == "get":
                    answer = (
                        f"delay={self.delay * 1000:.0f} connections={len(self.connections)} accepted={self.accepted}"
                    )
                elif words[0] == "drop":
                    answer = f"ok dropped={self.drop()}"
                else:
                    answer = "error: commands are 'delay <ms>', 'get', 'drop'"
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    host, _, port_text = args.target.rpartition(":")
    proxy = _Proxy(host or HOST, int(port_text), args.delay_ms)
    listener = await asyncio.start_server(proxy.handle_client, args.listen_host, args.listen)
    control = await asyncio.start_server(proxy.handle_control, HOST, args.control)
    listen_port = listener.sockets[0].getsockname()[1]
    control_port = control.sockets[0].getsockname()[1]
    print(f"READY listen={listen_port} control={control_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()
    control.close()
    handlers = list(proxy.handlers)
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.tcp_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument("--listen-host", default=HOST)
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay added to every chunk")
    parser.add_argument("--control", type=int, default=0, help="control port (0: any free port)")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


# --------------------------------------------------------------------------------------------------------------------
# the test side


_LIVE: weakref.WeakSet[DelayProxy] = weakref.WeakSet()


def live_proxies() -> list[DelayProxy]:
    """Proxies started by this process and still running (for leak checks)."""
    return [p for p in list(_LIVE) if p.running()]


class DelayProxy:
    """One proxy process: ``DelayProxy(target_port, delay_ms).start()``; ``port`` is where clients connect."""

    def __init__(self, target_port: int, delay_ms: float = 0.0, *, target_host: str = HOST, listen: int = 0) -> None:
        self.target = f"{target_host}:{target_port}"
        self.initial_delay_ms = delay_ms
        self.listen = listen
        self.port = 0
        self.control_port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 15.0) -> DelayProxy:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, "-m", "tests.support.tcp_proxy", "--listen", str(self.listen),
                   "--target", self.target, "--delay-ms", str(self.initial_delay_ms)]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            preexec_fn=die_with_parent(),
        )
        _LIVE.add(self)
        assert self.process.stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        line = ready[0] if ready else ""
        if not line.startswith("READY"):
            self.kill()
            raise RuntimeError(f"tcp proxy to {self.target} did not start in {timeout}s (got {line!r})")
        fields = dict(word.split("=", 1) for word in line.split()[1:])
        self.port, self.control_port = int(fields["listen"]), int(fields["control"])
        return self

    def command(self, text: str, timeout: float = 5.0) -> str:
        with socket.create_connection((HOST, self.control_port), timeout=timeout) as sock:
            sock.sendall(text.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        reply = answer.decode().strip()
        if reply.startswith("error"):
            raise RuntimeError(f"tcp proxy: {reply}")
        return reply

    def set_delay(self, delay_ms: float) -> None:
        self.command(f"delay {delay_ms:.0f}")

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in (word.split("=", 1) for word in self.command("get").split())}

    def drop_connections(self) -> int:
        return int(self.command("drop").split("=", 1)[1])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        process = self.process
        if process is None:
            return
        terminate(process, timeout)
        if process.stdout is not None:
            process.stdout.close()
        _LIVE.discard(self)

    def kill(self) -> None:
        process = self.process
        terminate(process, 0)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        _LIVE.discard(self)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
