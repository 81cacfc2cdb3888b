"""Jobs past the platform's limits: files read over several invocations, shards that fill up,
and jobs that stop making progress. The limits are set small so the real code paths run."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.stack import Stack
from processing.core import layout
from rowsmith_cli import commands
from tests.integration import harness
from tests.integration.harness import RunnerProcess

pytestmark = pytest.mark.integration

STALL_SECONDS = 15


@pytest.fixture(scope="module")
def small_limits_runner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    settings = harness.app_settings(
        stack,
        ROWSMITH_SHARD_MAX_BLOCKS="3",  # a shard segment takes three appends, then the next one starts
        ROWSMITH_INGEST_BUDGET_SECONDS="0",  # hand over to a new invocation at every checkpoint
        ROWSMITH_INGEST_CHECKPOINT_ROWS="25",
        ROWSMITH_STALL_TIMEOUT_SECONDS=str(STALL_SECONDS),
    )
    with RunnerProcess(settings, tmp_path_factory.mktemp("runner") / "runner.log") as process:
        yield process


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows(rows)
    return path


def results(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]


async def shard_blobs(stack: Stack, job: str) -> list[str]:
    target = harness.local_target(stack)
    try:
        container = target.blobs.get_container_client("jobs")
        return [b.name async for b in container.list_blobs(name_starts_with=f"{job}/shards/")]
    finally:
        await target.close()


async def test_a_file_read_over_several_invocations_into_full_shards_comes_back_whole(
    stack: Stack, small_limits_runner: RunnerProcess, tmp_path: Path
) -> None:
    await harness.emulator(stack, "POST", "/_emulator/reset")
    rows = [[f"{i:03d}", f"text {i}"] for i in range(100)]
    code, info = await harness.submit_and_wait(stack, write_rows(tmp_path / "passes.csv", rows), "echo", timeout=120)

    assert code == 0, (info, small_limits_runner.log()[-3000:])
    found = await harness.manifest(stack, info["job"])
    assert found is not None
    # Four passes of 25 rows, each a fresh invocation, plus the one that sees the end of the file.
    assert found.ingest_passes >= 4
    # Every row was enqueued once: resuming never re-sent the rows before the checkpoint.
    assert (await harness.emulator(stack, "GET", "/_emulator/stats"))["requests"] == 100

    # One append per row message, and a segment is full at three blocks: shard 0 spans several
    # blobs (more than three blocks land in one while concurrent appenders learn it is full).
    names = await shard_blobs(stack, info["job"])
    assert {layout.shard_blob(info["job"], 0, k) for k in range(3)} <= set(names)

    out = results(await harness.download(stack, "output", "echo/passes.results.csv"))
    assert [r[0] for r in out] == [r[0] for r in rows]
    for (row_id, text), result in zip(rows, out, strict=True):
        assert result == [row_id, text, harness.emulated_text(f"Row {row_id}: {text}"), "ok", ""]


async def test_a_job_that_stops_making_progress_completes_with_the_stuck_rows_marked_missing(
    stack: Stack, small_limits_runner: RunnerProcess, tmp_path: Path
) -> None:
    # One row is throttled for ever: it goes back to the queue again and again and never
    # gets a result, as under a quota that never frees.
    await harness.emulator(stack, "POST", "/_emulator/config", {"fault_retry_after_ms": 500})
    rows = [[f"{i:02d}", f"fine {i}"] for i in range(20)]
    rows[7] = ["07", "stuck [[fault:429]]"]
    try:
        code, info = await harness.submit_and_wait(
            stack, write_rows(tmp_path / "stuck.csv", rows), "echo", timeout=STALL_SECONDS + 60
        )
    finally:
        await harness.emulator(stack, "POST", "/_emulator/config", {"fault_retry_after_ms": 1000})

    assert code == 0, (info, small_limits_runner.log()[-3000:])
    found = await harness.manifest(stack, info["job"])
    assert found is not None and found.state == "done"
    assert found.incomplete is not None and found.incomplete["missing"] == 1
    assert "ROWSMITH_STALL_TIMEOUT_SECONDS" in found.incomplete["reason"]
    assert found.counts == {"ok": 19, "error": 0, "missing": 1}

    # The stuck row is still in the queue, throttled each time it comes back; now that its job
    # is done it is dropped (within one ROWSMITH_FINALIZE_INTERVAL_SECONDS, 1 s here) instead
    # of costing a model call every half second for ever.
    await asyncio.sleep(2.5)
    await harness.emulator(stack, "POST", "/_emulator/reset")
    await asyncio.sleep(3)
    assert (await harness.emulator(stack, "GET", "/_emulator/stats"))["requests"] == 0

    out = results(await harness.download(stack, "output", "echo/stuck.results.csv"))
    assert len(out) == 20
    # The stuck row keeps its input cells, read back from the uploaded file.
    assert out[7][:2] == ["07", "stuck [[fault:429]]"]
    assert out[7][3] == "error" and "no result was recorded" in out[7][4]
    assert all(r[3] == "ok" for i, r in enumerate(out) if i != 7)

    # `rowsmith results --failed` gives back exactly the rows to run again, as a CSV to upload.
    target = harness.local_target(stack)
    try:
        code, fetched = await commands.results(target, info["job"], tmp_path / "again.csv", jsonl=False, failed=True)
    finally:
        await target.close()
    assert code == 0 and fetched["failed_rows"] == 1
    with (tmp_path / "again.csv").open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["id", "text"], ["07", "stuck [[fault:429]]"]]
