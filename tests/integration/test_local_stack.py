"""`rowsmith local up` as a user relies on it: one stack whatever the folder, its options kept,
its jobs on disk across `down`/`up`, and a half-dead stack told in a second, not a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processing.core.settings import APP_ROOT

pytestmark = pytest.mark.integration


def rowsmith(state: Path, cwd: Path, *args: str, timeout: float = 120) -> tuple[int, dict, str, float]:
    """(exit code, the last stdout line as JSON, stderr, seconds) of one `rowsmith ... --json`."""
    env = {**os.environ, "ROWSMITH_STATE_DIR": str(state), "PYTHONPATH": str(APP_ROOT)}
    for name in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_BLOB_ENDPOINT", "AZURE_STORAGE_QUEUE_ENDPOINT"):
        env.pop(name, None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rowsmith_cli.main", *args, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    return done.returncode, json.loads(last), done.stderr, time.monotonic() - started


def test_one_stack_from_any_folder_its_options_kept_its_jobs_on_disk_and_a_dead_one_told_at_once(tmp_path: Path):
    state = tmp_path / "state"
    settings_file = tmp_path / "local.settings.json"
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    code, info, _, _ = rowsmith(state, here, "local", "up", "--settings-file", str(settings_file))
    try:
        assert code == 0 and info["already_running"] is False and info["in_memory"] is False, info
        written = settings_file.read_text()

        # From another folder: the same stack, and its settings file left as it was.
        code, again, _, _ = rowsmith(state, elsewhere, "local", "up", "--settings-file", str(settings_file))
        assert code == 0 and again["already_running"] is True and again["ports"] == info["ports"]
        assert settings_file.read_text() == written
        # Other options: refused, naming them and how to restart.
        code, other, _, _ = rowsmith(state, elsewhere, "local", "up", "--rpm", "600")
        assert code == 1 and other["differing_options"] == ["rpm"]
        assert (
            "--rpm 0 (asked: 600)" in other["error"]
            and "rowsmith local down && rowsmith local up --rpm 600" in (other["error"])
        )

        rows = tmp_path / "rows.csv"
        rows.write_text("subject,body\n" + "".join(f"s{i},b{i}\n" for i in range(5)), encoding="utf-8")
        code, job, _, _ = rowsmith(state, here, "submit", str(rows), "--pipeline", "summarise", "--wait")
        assert code == 0 and job["state"] == "done", job

        # Azurite keeps its data on disk: the job is still there after `down` and `up`.
        code, down, _, _ = rowsmith(state, elsewhere, "local", "down")
        assert code == 0 and down["stopped"] is True and down["jobs_kept"] == 1
        # (A slow model now, so that a job is still running when Azurite dies below.)
        up_again = ("local", "up", "--latency-ms", "1000", "--settings-file", str(settings_file))
        first_ports = info["ports"]
        code, info, _, _ = rowsmith(state, elsewhere, *up_again)
        assert code == 0 and info["already_running"] is False
        # Azurite comes back on its ports: the kept jobs' blob URLs (their ids, their events) still hold.
        assert {k: info["ports"][k] for k in ("blob", "queue")} == {k: first_ports[k] for k in ("blob", "queue")}
        code, listing, _, _ = rowsmith(state, here, "status")
        assert code == 0 and [(j["job"], j["state"]) for j in listing["jobs"]] == [(job["job"], "done")]

        many = tmp_path / "many.csv"
        many.write_text("subject,body\n" + "".join(f"s{i},b{i}\n" for i in range(200)), encoding="utf-8")
        code, running, _, _ = rowsmith(state, here, "submit", str(many), "--pipeline", "summarise")
        assert code == 0, running
        env = {**os.environ, "ROWSMITH_STATE_DIR": str(state), "PYTHONPATH": str(APP_ROOT)}
        watch = subprocess.Popen(
            [sys.executable, "-m", "rowsmith_cli.main", "watch", running["job"]],
            env=env,
            cwd=here,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert watch.poll() is None, watch.communicate()

        # Half dead: Azurite gone, the state file left. Told in seconds, on one line, no traceback:
        # to the `watch` that was waiting, and to every command after.
        os.kill(int((state / "azurite.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        _, watch_err = watch.communicate(timeout=30)
        assert watch.returncode == 1 and time.monotonic() - killed < 5
        port = info["ports"]["blob"]
        dead = f"the local stack is not running (Azurite on 127.0.0.1:{port} does not answer): run rowsmith local up"
        assert f"error: {dead}" in watch_err.splitlines() and "Traceback" not in watch_err
        for args in (("status",), ("submit", str(rows), "--pipeline", "summarise", "--wait")):
            code, failed, stderr, seconds = rowsmith(state, here, *args, timeout=30)
            assert code == 1 and seconds < 10, (args, seconds)
            assert failed["error"] == dead
            assert "Traceback" not in stderr
        code, status, _, _ = rowsmith(state, here, "local", "status")
        assert code == 1 and status["running"] is False and "half running: azurite stopped" in status["message"]
    finally:
        code, _, _, seconds = rowsmith(state, here, "local", "down")
    # With Azurite dead the runner cannot finish its invocations: `down` does not wait 20 s for it.
    assert code == 0 and seconds < 15
