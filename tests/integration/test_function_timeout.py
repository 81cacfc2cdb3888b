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
ROWS = 500
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
    # Reading the file took several passes (on a loaded 2-core machine, several functionTimeouts)...
    assert found.ingest_passes >= 2
    # ...and none of them was cut off by the host's limit.
    assert not re.search(r"ingest_upload failed .*functionTimeout", log), log[-3000:]
    out = (await download(stack, "output", "echo/long.results.csv")).decode()
    assert len(out.splitlines()) == ROWS + 1


async def test_without_the_budget_function_timeout_cuts_ingest_off_as_failed_attempts(
    stack: Stack, tmp_path: Path
) -> None:
    # The same file with a budget over functionTimeout: attempts are cut off, as the host would.
    # Checkpoints let the next attempt resume, but each cut-off is a failure of the same message,
    # so its dequeue count climbs toward poison: a file needing more than maxDequeueCount attempts
    # would fail its job. (A hand-over within the budget is a fresh message each time instead.)
    # A shorter limit still, so the file takes several of them on any machine.
    host_json = host_json_with(tmp_path, visibility_seconds=1, function_timeout_seconds=1)
    with RunnerProcess(ingest_settings(stack, 60), tmp_path / "runner.log", host_json=host_json) as runner:
        code, info = await submit_and_wait(stack, write_rows(tmp_path / "cut.csv"), "echo", timeout=120)
        log = runner.log()

    cut = re.findall(r"ingest_upload failed on message (\S+) \(dequeue count (\d+) of 5\): timed out", log)
    assert cut, (code, info, log[-3000:])
    assert len({message for message, _ in cut}) == 1
    assert [int(count) for _, count in cut] == list(range(1, len(cut) + 1))
