"""`python -m localdev.runner` as a child process: attached (tests, benchmarks) or detached (`rowsmith local up`).

Attached (`start`), its output is copied to a log file and `start` returns once the runner
has printed its ready line; `stop` is SIGTERM (the runner finishes the invocations in
flight) then SIGKILL, `kill` is SIGKILL at once (what the crash tests do). Detached
(`start_detached`), it gets its own session, so it survives the command that started it,
writes to the log file itself and is not waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from localdev.ports import spawn
from localdev.private_files import open_private_log
from processing.core.settings import APP_ROOT

READY_LINE = b'{"ready": "runner"'
# What the runner's command line contains: `rowsmith local down` signals only a process that matches.
PROCESS_MARKER = "localdev.runner"


class RunnerProcess:
    """The runner driving function_app.py with exactly `env` as its environment.

    `lease_seconds` (`--lease-seconds`: the visibility of a received message, so the messages
    of a SIGKILLed runner come back in seconds, not the host's 10 minutes), `host_json`
    (`--host-json`) and `functions` (`--functions`) are the runner's own flags; None keeps
    its defaults.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        *,
        lease_seconds: float | None = None,
        host_json: Path | None = None,
        functions: Sequence[str] | None = None,
    ) -> None:
        self.env = dict(env)
        self.log_path = log
        self.args: list[str] = []
        if lease_seconds is not None:
            self.args += ["--lease-seconds", str(lease_seconds)]
        if host_json is not None:
            self.args += ["--host-json", str(host_json)]
        if functions:
            self.args += ["--functions", ",".join(functions)]
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "localdev.runner", "--app-dir", str(APP_ROOT), *self.args]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> RunnerProcess:
        """Start attached; return once the runner is ready (it is stopped if it is not within `timeout`)."""
        self.process = subprocess.Popen(
            self.command,
            cwd=APP_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the runner did not start in {timeout:g} s; log:\n{self.log()[-3000:]}")
        return self

    def start_detached(self) -> int:
        """Start in a session of its own, output appended to the log; return its pid at once."""
        self.process = spawn(self.command, log_path=self.log_path, cwd=APP_ROOT, env=self.env, detached=True)
        return self.process.pid

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with open_private_log(self.log_path) as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if line.startswith(READY_LINE):
                    self._ready.set()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease handed back, whatever was in flight stays half done."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(15)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM (the runner finishes the invocations in flight), then SIGKILL after `grace` s."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> RunnerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def with_this_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus `settings`: what `rowsmith local up` gives its runner."""
    return {**os.environ, **settings}
