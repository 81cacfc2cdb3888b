"""Loopback ports, and the child processes and in-process servers listening on them.

Everything in the local stack listens on 127.0.0.1 only: nothing here may be reachable
from (or reach) another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from localdev.private_files import CHILD_UMASK, open_private_log

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct free ports: the sockets stay bound until all are picked, so no duplicates."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
    name: str | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until something accepts connections on host:port.

    With `process`, fail at once (with the tail of its log) if it exits first, instead of
    waiting out the timeout for a server that will never come.
    """
    label = name or f"{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{label} exited with code {process.returncode} before listening{_tail(log_path)}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{label} did not listen on {host}:{port} within {timeout:.0f} s{_tail(log_path)}")
        time.sleep(0.05)


def _tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(text) if text else ""


# --- child processes ---------------------------------------------------------------------


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    detached: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child with stdout and stderr appended to `log_path`.

    Detached children get their own session, so they survive the parent (and its Ctrl-C):
    that is what `rowsmith local up` needs. Attached ones share the parent's process group,
    so a Ctrl-C in a test run reaches them too.
    """
    with open_private_log(log_path) as log:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=detached,
            umask=CHILD_UMASK,  # what the child writes (Azurite's data, its own logs) is private too
        )


def python_module_command(module: str, *args: str) -> list[str]:
    # -u: the ready line reaches the log file at once, not when a buffer fills.
    return [sys.executable, "-u", "-m", module, *args]


def pid_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's: certainly not ours
        return True
    return not _is_zombie(pid)


def pid_matches(pid: int, marker: str) -> bool:
    """Whether `pid` still runs a command line containing `marker`.

    Guards against pid reuse: a state file can outlive its processes, and stopping must
    never signal an unrelated process that happens to have the same pid now. Where
    /proc is missing (macOS), liveness is all we can check.
    """
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True
    try:
        return marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def terminate_pid(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`. Returns whether the process is gone.

    Signals only `pid` itself (never a group or a name), and only while it still matches
    `marker`.
    """
    if not pid_matches(pid, marker):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return True
    if pid_matches(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return _wait_gone(pid, 5.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def _reap(pid: int) -> None:
    # A child of this process stays a zombie (and "alive" to kill(pid, 0)) until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


# --- in-process aiohttp servers -----------------------------------------------------------


@dataclass
class ServedApp:
    """An aiohttp application listening on a loopback port inside this event loop."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve_app(app: web.Application, host: str = LOOPBACK, port: int = 0) -> ServedApp:
    """Serve `app` on host:port (0 picks a free port, read back from the bound socket)."""
    if host != LOOPBACK:
        raise ValueError(f"the local stack listens on {LOOPBACK} only, not {host}")
    runner = web.AppRunner(
        app,
        access_log=None,  # an access log line per request costs more than the request itself
        handler_cancellation=True,  # a client that gave up frees its handler (and the in-flight gauge)
        shutdown_timeout=1.0,  # a stuck "timeout" fault must not hold up shutdown for a minute
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return ServedApp(runner, host, runner.addresses[0][1])


def run_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run a server's main coroutine until SIGTERM or Ctrl-C, then let it clean up.

    SIGTERM is how the stack stops its children: cancelling the task runs the servers'
    `finally` blocks instead of dying mid-write.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(main)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
