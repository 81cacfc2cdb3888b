"""Ingest against host.json's functionTimeout: its time budget hands over to a fresh invocation
before the host would cut it off (in Azure: ROWSMITH_INGEST_BUDGET_SECONDS 480 against 600 s).

Both limits are scaled down so a file that takes several times functionTimeout to read runs in
seconds: sequential sends (ROWSMITH_INGEST_CONCURRENCY 1) make ingest slow enough to need it.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from localdev.stack import Stack
from tests.integration.faults_util import host_json_with
from tests.integration.harness import RunnerProcess, app_settings, download, emulator, manifest, submit_and_wait

pytestmark = pytest.mark.integration

FUNCTION_TIMEOUT = 3  # seconds; host.json's is 600
ROWS = 400
BUDGET = 0.5  # seconds; the app's default is 480


def ingest_settings(stack: Stack, budget: float) -> dict[str, str]:
    return app_settings(
        stack,
        ROWSMITH_INGEST_BUDGET_SECONDS=str(budget),
        # The budget is checked at each checkpoint: the rows between two must take well under
        # functionTimeout minus the budget (in Azure: 5000 rows in the 120 s between 480 and 600).
        ROWSMITH_INGEST_CHECKPOINT_ROWS="5",
        ROWSMITH_INGEST_CONCURRENCY="1",
    )


def write_rows(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([f"{i:04d}", f"text {i}"] for i in range(ROWS))
    return path


async def test_ingest_hands_over_within_its_budget_and_never_meets_function_timeout(
    stack: Stack, tmp_path: Path
) -> None:
    await emulator(stack, "POST", "/_emulator/reset")
    host_json = host_json_with(tmp_path, visibility_seconds=1, function_timeout_seconds=FUNCTION_TIMEOUT)
    with RunnerProcess(ingest_settings(stack, BUDGET), tmp_path / "runner.log", host_json=host_json) as runner:
        code, info = await submit_and_wait(stack, write_rows(tmp_path / "long.csv"), "echo", timeout=240)
        log = runner.log()

    assert code == 0, (info, log[-3000:])
    found = await manifest(stack, info["job"])
    assert found is not None and found.counts == {"ok": ROWS, "error": 0}
    # Reading the file took longer than one invocation may run (each pass used its budget)...
    assert found.ingest_passes * BUDGET > FUNCTION_TIMEOUT
    # ...and none of them was cut off by the host's limit.
    assert not re.search(r"ingest_upload failed .*functionTimeout", log), log[-3000:]
    out = (await download(stack, "output", "echo/long.results.csv")).decode()
    assert len(out.splitlines()) == ROWS + 1


async def test_without_the_budget_function_timeout_cuts_ingest_off_and_the_job_fails(
    stack: Stack, tmp_path: Path
) -> None:
    # The same file with a budget over functionTimeout: every attempt is cut off, as the host
    # would, until the upload goes to poison and the job is failed with a reason.
    host_json = host_json_with(tmp_path, visibility_seconds=1, function_timeout_seconds=FUNCTION_TIMEOUT)
    with RunnerProcess(ingest_settings(stack, 60), tmp_path / "runner.log", host_json=host_json) as runner:
        code, info = await submit_and_wait(stack, write_rows(tmp_path / "cut.csv"), "echo", timeout=120)
        log = runner.log()

    assert code != 0, (info, log[-3000:])
    assert len(re.findall(r"ingest_upload failed .*functionTimeout", log)) == 5, log[-3000:]
    found = await manifest(stack, info["job"])
    assert found is not None and found.state == "failed"
