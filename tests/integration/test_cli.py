"""The `rowsmith` command as a user runs it: local up (twice), submit --wait --json, status, results, down."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from processing.core.settings import APP_ROOT

pytestmark = pytest.mark.integration


def rowsmith(state_dir: Path, *args: str, timeout: float = 180) -> tuple[int, dict]:
    env = {**os.environ, "ROWSMITH_STATE_DIR": str(state_dir), "PYTHONPATH": str(APP_ROOT)}
    for name in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_BLOB_ENDPOINT", "AZURE_STORAGE_QUEUE_ENDPOINT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "rowsmith_cli.main", *args, "--json"],
        env=env,
        cwd=state_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    return done.returncode, json.loads(last)


def test_the_cli_runs_a_job_on_the_local_stack(tmp_path: Path):
    state = tmp_path / "state"
    settings_file = tmp_path / "local.settings.json"
    code, info = rowsmith(state, "local", "up", "--settings-file", str(settings_file))
    try:
        assert code == 0, info
        assert info["already_running"] is False
        # `up` twice is harmless: the same stack, not a second one.
        code, again = rowsmith(state, "local", "up", "--settings-file", str(settings_file))
        assert code == 0 and again["already_running"] is True
        assert again["openai_endpoint"] == info["openai_endpoint"]
        values = json.loads(settings_file.read_text())["Values"]
        assert values["IDENTITY_ENDPOINT"] and values["AZURE_OPENAI_ENDPOINT"] == info["openai_endpoint"]
        assert "AZURE_OPENAI_API_KEY" not in values

        tickets = tmp_path / "tickets.csv"
        with tickets.open("w", newline="") as f:
            csv.writer(f).writerows(
                [["subject", "body"], *[[f"subject {i}", f"body, with comma {i}"] for i in range(25)]]
            )
        code, job = rowsmith(state, "submit", str(tickets), "--pipeline", "summarise", "--wait", "--timeout", "90")
        assert code == 0, job
        assert job["state"] == "done"
        assert (job["total_rows"], job["ok_rows"], job["error_rows"]) == (25, 25, 0)
        assert job["results_blob"] == "output/summarise/tickets.results.csv"

        code, status = rowsmith(state, "status", job["job"])
        assert code == 0 and status["state"] == "done" and status["total_rows"] == 25
        code, listing = rowsmith(state, "status")
        assert [j["job"] for j in listing["jobs"]] == [job["job"]]

        out = tmp_path / "out.csv"
        code, fetched = rowsmith(state, "results", job["job"], "-o", str(out))
        assert code == 0 and fetched["file"] == str(out)
        rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
        assert len(rows) == 25 and rows[3]["body"] == "body, with comma 3"
        assert all(r["summary"].startswith("emulated answer ") and r["status"] == "ok" for r in rows)

        code, missing = rowsmith(state, "status", "no-such-job")
        assert code == 1 and "no-such-job" in missing["error"]

        # After a job (the app and the runner fetched tokens with the header): no log holds the
        # identity header, the state dir is the owner's only, and so is local.settings.json.
        header = values["IDENTITY_HEADER"].encode()
        logs = sorted(state.glob("*.log"))
        assert {p.name for p in logs} >= {"identity.log", "emulator.log", "azurite.log", "runner.log"}
        assert [p.name for p in logs if header in p.read_bytes()] == []
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir() if p.is_file()} == {
            p.name: 0o600 for p in state.iterdir() if p.is_file()
        }
        assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    finally:
        code, down = rowsmith(state, "local", "down")
    assert code == 0 and down["stopped"] is True
    code, after = rowsmith(state, "local", "status")
    assert code == 1 and after["running"] is False


def test_local_up_without_the_runner_is_for_func_start(tmp_path: Path):
    state = tmp_path / "state"
    settings_file = tmp_path / "local.settings.json"
    code, info = rowsmith(state, "local", "up", "--no-runner", "--settings-file", str(settings_file))
    try:
        assert code == 0, info
        assert not (state / "runner.pid").exists()
        code, status = rowsmith(state, "local", "status")
        assert code == 0 and status["running"] is True
        settings = json.loads(settings_file.read_text())
        assert settings["IsEncrypted"] is False
        # What `func start` needs: Azurite for the triggers, the emulators for identity and the model.
        assert {"AzureWebJobsStorage", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_OPENAI_ENDPOINT"} <= set(
            settings["Values"]
        )
    finally:
        code, down = rowsmith(state, "local", "down")
    assert code == 0 and down["stopped"] is True


def test_local_up_in_oauth_mode_runs_a_job_with_no_storage_key_in_the_app(tmp_path: Path):
    state = tmp_path / "state"
    settings_file = tmp_path / "local.settings.json"
    code, info = rowsmith(state, "local", "up", "--storage-auth", "oauth", "--settings-file", str(settings_file))
    try:
        assert code == 0, info
        values = json.loads(settings_file.read_text())["Values"]
        # What the app (and `func start`) gets: account URLs and the managed identity, as in Azure.
        assert "AzureWebJobsStorage" not in values
        assert values["AzureWebJobsStorage__blobServiceUri"].startswith("https://127.0.0.1:")
        assert values["AzureWebJobsStorage__credential"] == "managedidentity"
        assert not any("AccountKey" in v for v in values.values())

        rows = tmp_path / "rows.csv"
        rows.write_text("subject,body\n" + "".join(f"s{i},b{i}\n" for i in range(10)), encoding="utf-8")
        code, job = rowsmith(state, "submit", str(rows), "--pipeline", "summarise", "--wait", "--timeout", "90")
        assert code == 0, job
        assert (job["state"], job["ok_rows"]) == ("done", 10)
    finally:
        code, down = rowsmith(state, "local", "down")
    assert code == 0 and down["stopped"] is True
