"""`rowsmith cancel`, `rowsmith watch` and Ctrl-C during `submit --wait`, as a user runs them on the local stack.

The CLI runs as a subprocess pointed at the test's stack (its state file in ROWSMITH_STATE_DIR);
the app runs in a runner; the emulator's latency keeps a job running long enough to act on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from localdev.stack import STATE_FILE, Stack
from processing.adapters import cancels
from processing.core.layout import JOBS_CONTAINER, cancel_blob
from processing.core.settings import APP_ROOT
from processing.core.states import JobState, RowCode
from tests.integration import test_cli as cli
from tests.integration.faults_util import (
    Workers,
    blobs,
    csv_bytes,
    emulator_config,
    emulator_stats,
    parse_jsonl,
    submit,
)
from tests.integration.harness import FIXTURE_PIPELINES, download, manifest, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def cli_reads_the_apps_pipelines(monkeypatch: pytest.MonkeyPatch) -> None:
    # `submit` checks the file against the pipelines the app runs with (the runner's are the
    # test fixtures, with `echo`) before it uploads; the CLI subprocesses inherit this.
    monkeypatch.setenv("ROWSMITH_PIPELINES_DIR", str(FIXTURE_PIPELINES))


def cli_state(stack: Stack, tmp_path: Path) -> Path:
    """A state folder that names the test's stack, as `rowsmith local up` would have left it."""
    state = tmp_path / "cli-state"
    state.mkdir(exist_ok=True)
    (state / STATE_FILE).write_text(json.dumps(stack.to_dict()))
    return state


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rowsmith_cli.main", *args]


async def rowsmith(state: Path, *args: str, timeout: float = 120) -> tuple[int, dict]:
    # In a thread: the test's loop stays free while the command runs.
    return await asyncio.to_thread(cli.rowsmith, state, *args, timeout=timeout)


def rows(n: int, tag: str) -> bytes:
    return csv_bytes(["id", "text"], [[str(i), f"{tag} {i}"] for i in range(n)])


async def output_lines(stack: Stack, job: str) -> list[dict]:
    found = await manifest(stack, job)
    assert found is not None and "jsonl" in found.results
    return parse_jsonl(await download(stack, "output", found.results["jsonl"]))


async def cancel_exists(stack: Stack, job: str) -> bool:
    async with blobs(stack) as service:
        return await service.get_blob_client(JOBS_CONTAINER, cancel_blob(job)).exists()


async def wait_for_answers(stack: Stack, job: str, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await manifest(stack, job)
        if found and found.counts.get("ok", 0) >= at_least:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job} did not answer {at_least} rows in {timeout} s")


async def test_cancel_mid_way_ends_the_job_with_every_row_answered_or_cancelled(
    stack: Stack, workers: Workers, tmp_path: Path
):
    await emulator_config(stack, latency_ms=1000)
    workers.start()
    state = cli_state(stack, tmp_path)
    total = 400
    job = await submit(stack, "echo/to-cancel.csv", rows(total, "cancel me"))
    await wait_for_answers(stack, job, at_least=5)

    code, info = await rowsmith(state, "cancel", job)
    assert code == 0, info
    assert info["cancel"] == "requested" and f"rowsmith watch {job}" in info["message"]
    code, again = await rowsmith(state, "cancel", job)  # idempotent: the request stands as it was
    assert code == 0 and again["cancel"] in ("already requested", "not needed"), again

    # Within a few finalize intervals (1 s here), not after the 400 rows at 1 s each.
    ended = await wait_state(stack, job, frozenset({JobState.CANCELLED}), timeout=30)
    calls = (await emulator_stats(stack))["requests"]
    await asyncio.sleep(4)  # a spec refresh (1 s) and more: the model is not called again
    assert (await emulator_stats(stack))["requests"] == calls
    assert calls < total

    lines = await output_lines(stack, job)
    assert [line["row"] for line in lines] == list(range(1, total + 1))  # every input row, in order
    ok = [line for line in lines if line["status"] == "ok"]
    cancelled = [line for line in lines if line.get("code") == RowCode.CANCELLED]
    assert len(ok) + len(cancelled) == total
    assert len(ok) >= 5 and len(cancelled) > total / 2
    assert all(line["input"]["text"] == f"cancel me {line['row'] - 1}" for line in cancelled)
    assert (ended.counts["ok"], ended.counts["cancelled"]) == (len(ok), len(cancelled))

    code, status = await rowsmith(state, "status", job)
    assert code == 0 and status["state"] == "cancelled"
    assert (status["ok_rows"], status["error_rows"], status["cancelled_rows"]) == (
        len(ok),
        len(cancelled),
        len(cancelled),
    )
    # `results` hands over what was done, and `watch` of an ended job returns at once with its code.
    code, fetched = await rowsmith(state, "results", job, "-o", str(tmp_path / "out.csv"))
    assert code == 0 and fetched["file"] == str(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().count("cancelled") >= len(cancelled)
    code, watched = await rowsmith(state, "watch", job)
    assert code == 1 and watched["state"] == "cancelled"


async def test_a_cancel_during_ingest_stops_enqueueing_and_still_writes_every_row(stack: Stack, workers: Workers):
    workers.start()
    total = 300
    job = await submit(stack, "echo/cancel-early.csv", rows(total, "never sent"))
    # Before ingest gets to the rows (the event is a queue hop away): no row is enqueued.
    async with blobs(stack) as service:
        assert await cancels.request(service.get_container_client(JOBS_CONTAINER), job)
    ended = await wait_state(stack, job, frozenset({JobState.CANCELLED}), timeout=60)
    assert ended.total_rows == total
    lines = await output_lines(stack, job)
    assert len(lines) == total and {line.get("code") for line in lines} == {RowCode.CANCELLED}
    assert (await emulator_stats(stack))["requests"] == 0


async def test_watch_follows_a_running_job_to_the_end_and_cancel_of_a_done_job_changes_nothing(
    stack: Stack, workers: Workers, tmp_path: Path
):
    await emulator_config(stack, latency_ms=200)
    workers.start()
    state = cli_state(stack, tmp_path)
    job = await submit(stack, "echo/to-watch.csv", rows(60, "watch me"))
    await wait_state(stack, job, frozenset({JobState.PROCESSING, JobState.INGESTING}), timeout=30)

    code, watched = await rowsmith(state, "watch", job, "--timeout", "90")
    assert code == 0, watched
    assert (watched["state"], watched["ok_rows"], watched["total_rows"]) == ("done", 60, 60)

    code, info = await rowsmith(state, "cancel", job)
    assert code == 0 and info["cancel"] == "not needed" and "already done" in info["message"]
    assert not await cancel_exists(stack, job)
    after = await manifest(stack, job)
    assert after is not None and after.state == JobState.DONE and after.counts["ok"] == 60

    code, missing = await rowsmith(state, "watch", "no-such-job-000000000000")
    assert code == 1 and "no job" in missing["error"]


async def test_ctrl_c_during_submit_wait_says_how_to_reattach_or_cancel(stack: Stack, workers: Workers, tmp_path: Path):
    await emulator_config(stack, latency_ms=1000)
    workers.start()
    state = cli_state(stack, tmp_path)
    data = tmp_path / "interrupted.csv"
    data.write_bytes(rows(200, "interrupt me"))
    proc = await asyncio.create_subprocess_exec(
        *cli_command("submit", str(data), "--pipeline", "echo", "--wait"),
        env={**os.environ, "ROWSMITH_STATE_DIR": str(state), "PYTHONPATH": str(APP_ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(6)  # uploaded and showing progress
        proc.send_signal(signal.SIGINT)
        out_bytes, err_bytes = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
    out, err = out_bytes.decode(), err_bytes.decode()
    assert proc.returncode == 130, (out, err)
    job = err.split("; job ", 1)[1].split()[0]
    hints = [line for line in err.splitlines() if "rowsmith watch" in line]
    assert hints == [
        f"interrupted: job {job} keeps running; re-attach with `rowsmith watch {job}`, "
        f"or stop it with `rowsmith cancel {job}`"
    ]
    assert "Traceback" not in err
    # The job did keep running; stop it, as the hint says.
    code, info = await rowsmith(state, "cancel", job)
    assert code == 0 and info["cancel"] == "requested", info
    await wait_state(stack, job, frozenset({JobState.CANCELLED}), timeout=30)
