"""How fast `rowsmith cancel` stops a job, and that every row still ends exactly once.

(a) A running 2,000-row job (the emulator answers in 400 ms, so it runs for minutes) is cancelled
    with the CLI: it ends within one finalize interval (3 s here) of the request, with the rows
    answered so far and the rest `cancelled`, each row once. The measured figures are printed.
(b) A 30,000-row file is cancelled while ingest is still enqueueing it: ingest stops enqueueing
    at its next checkpoint and counts the rest, finalize writes every row once, answered or
    cancelled, and the model is not asked for the rows never enqueued.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path

import pytest

from localdev.stack import Stack
from processing.adapters import cancels
from processing.adapters.blob_lock import LEASE_SECONDS
from processing.core.layout import FINALIZE_QUEUE, JOBS_CONTAINER, cancel_blob
from processing.core.states import JobState, RowCode
from tests.integration.faults_util import (
    Workers,
    blobs,
    emulator_config,
    emulator_stats,
    queue_count,
    submit,
    wait_until,
)
from tests.integration.harness import download, manifest, wait_state
from tests.integration.test_cancel_watch import (
    cli_reads_the_apps_pipelines,  # noqa: F401 - the autouse fixture: the CLI reads the app's pipelines
    cli_state,
    output_lines,
    rows,
    rowsmith,
    wait_for_answers,
)

pytestmark = pytest.mark.integration

FINALIZE_INTERVAL = 3.0
# `rowsmith cancel` asks finalize for a check at once (cancels.check_now), so the job ends after
# the host's next poll of the finalize queue (host.json: at most 2 s) and the writing of its
# results; measured at 0.5 to 3.4 s here (without the early check: 2.0 to 4.7 s). The allowance
# is for a loaded machine.
ALLOWANCE = 1.0


async def requested_at(stack: Stack, job: str) -> float:
    async with blobs(stack) as service:
        blob = service.get_blob_client(JOBS_CONTAINER, cancel_blob(job))
        return float(json.loads(await (await blob.download_blob()).readall())["requested"])


def assert_every_row_once(lines: list[dict], total: int, tag: str) -> tuple[int, int]:
    """Every input row exactly once, in order, answered or cancelled; (answered, cancelled)."""
    assert [line["row"] for line in lines] == list(range(1, total + 1))
    ok = sum(line["status"] == "ok" for line in lines)
    cancelled = sum(line.get("code") == RowCode.CANCELLED for line in lines)
    assert ok + cancelled == total, {line.get("code") for line in lines}
    assert all(line["input"]["text"] == f"{tag} {line['row'] - 1}" for line in lines)
    return ok, cancelled


async def results_csv_rows(stack: Stack, job: str) -> list[list[str]]:
    found = await manifest(stack, job)
    assert found is not None
    data = (await download(stack, "output", found.results["csv"])).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(data, newline="")))[1:]


async def test_cancel_of_a_running_2000_row_job_ends_it_within_one_finalize_interval(
    stack: Stack, workers: Workers, tmp_path: Path
):
    await emulator_config(stack, latency_ms=400)
    workers.start(ROWSMITH_FINALIZE_INTERVAL_SECONDS=str(FINALIZE_INTERVAL))
    state = cli_state(stack, tmp_path)
    total = 2000
    job = await submit(stack, "echo/cancel-timing.csv", rows(total, "timed"))
    await wait_state(stack, job, frozenset({JobState.PROCESSING}), timeout=60)
    await wait_for_answers(stack, job, at_least=50)

    code, info = await rowsmith(state, "cancel", job)
    assert code == 0 and info["cancel"] == "requested", info
    requested = await requested_at(stack, job)
    ended = await wait_state(stack, job, frozenset({JobState.CANCELLED}), timeout=30)
    noticed = time.time()
    took = ended.times["finished"] - requested

    lines = await output_lines(stack, job)
    ok, cancelled = assert_every_row_once(lines, total, "timed")
    assert ok >= 50 and cancelled > total / 2
    assert (ended.counts["ok"], ended.counts["cancelled"]) == (ok, cancelled)
    assert len(await results_csv_rows(stack, job)) == total
    print(
        f"cancel of a {total}-row job: ended {took:.2f} s after the request (finalize interval "
        f"{FINALIZE_INTERVAL:g} s; seen by the test {noticed - requested:.2f} s after); {ok} answered, "
        f"{cancelled} cancelled"
    )
    assert took <= FINALIZE_INTERVAL + ALLOWANCE, took

    # The early check's chain ended with the job: no finalize message is left going round (a
    # check that found another writing the results looks once more after the lease could lapse).
    async def no_finalize_messages() -> bool:
        return await queue_count(stack, FINALIZE_QUEUE) == 0

    await wait_until(
        no_finalize_messages, timeout=LEASE_SECONDS + 2 * FINALIZE_INTERVAL + 5, what="the finalize queue emptied"
    )


async def test_cancel_in_the_middle_of_ingest_still_ends_every_row_exactly_once(stack: Stack, workers: Workers):
    await emulator_config(stack, latency_ms=50)
    workers.start(ROWSMITH_FINALIZE_INTERVAL_SECONDS=str(FINALIZE_INTERVAL), ROWSMITH_INGEST_CHECKPOINT_ROWS="2000")
    total = 30_000
    job = await submit(stack, "echo/cancel-ingest.csv", rows(total, "large"))
    # Past the first checkpoint, well before the end of the file.
    deadline = time.monotonic() + 120
    while True:
        found = await manifest(stack, job)
        if found and found.state == JobState.INGESTING and found.ingested_rows >= 2000:
            break
        assert found is None or found.state == JobState.INGESTING, "ingest finished before it could be cancelled"
        assert time.monotonic() < deadline, "ingest did not reach its first checkpoint"
        await asyncio.sleep(0.1)
    enqueued_at_cancel = found.ingested_rows
    async with blobs(stack) as service:
        assert await cancels.request(service.get_container_client(JOBS_CONTAINER), job)
    requested = await requested_at(stack, job)

    ended = await wait_state(stack, job, frozenset({JobState.CANCELLED}), timeout=240)
    assert ended.total_rows == total
    lines = await output_lines(stack, job)
    ok, cancelled = assert_every_row_once(lines, total, "large")
    assert (ended.counts["ok"], ended.counts["cancelled"]) == (ok, cancelled)
    assert len(await results_csv_rows(stack, job)) == total
    # Ingest stopped enqueueing at the checkpoint after the request: the rest never reached the model.
    calls = (await emulator_stats(stack))["requests"]
    assert calls < total / 2 and cancelled > total / 2
    print(
        f"cancel during ingest of {total} rows (at >= {enqueued_at_cancel} enqueued): ended "
        f"{ended.times['finished'] - requested:.2f} s after the request; {ok} answered, {cancelled} cancelled, "
        f"{calls} model calls"
    )
