"""`python -m localdev.runner` as a child process, for the tests and the benchmarks.

`rowsmith local up` starts its runner detached (rowsmith_cli/local.py); this one is
attached: its output is copied to a log file, and `start` returns once the runner has
printed its ready line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from processing.core.settings import APP_ROOT

READY_LINE = b'{"ready": "runner"'


class RunnerProcess:
    """The runner driving function_app.py with exactly `env` as its environment."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.env = dict(env)
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> RunnerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localdev.runner", "--app-dir", str(APP_ROOT)],
            cwd=APP_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the runner did not start in {timeout:g} s; log:\n{self.log()[-3000:]}")
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("ab") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if line.startswith(READY_LINE):
                    self._ready.set()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

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


def start_detached(settings: Mapping[str, str], log_path: Path) -> int:
    """Start a runner that outlives its caller (`rowsmith local up`): this environment plus
    `settings`, its output appended to `log_path`. Returns its pid."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "localdev.runner", "--app-dir", str(APP_ROOT)],
            cwd=APP_ROOT,
            env={**os.environ, **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the `rowsmith local up` that started it
        )
    return process.pid
