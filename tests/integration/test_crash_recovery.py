"""Redelivery and crashes, end to end on the local stack (issue 4, "Faults").

Queue delivery is at least once, Event Grid's too, and a worker can die at any moment: a
row message may run twice (after its append, before its delete), an upload's event may
arrive several times, and ingest may stop half way. Whatever happens, the results CSV has
every row exactly once, and a restarted ingest resumes at its checkpoint.

Workers here run with a 4 s lease (the host's is 10 minutes), so the messages a SIGKILLed
worker held come back in seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

import function_app
from localdev.stack import Stack
from processing.core.layout import FINALIZE_QUEUE, ROWS_POISON_QUEUE, ROWS_QUEUE, UPLOADS_QUEUE
from tests.integration import faults_util
from tests.integration.faults_util import Workers
from tests.integration.harness import download, emulated_text, manifest, wait_state

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean")]

LEASE = 4.0


def table(n: int, tag: str) -> list[list[str]]:
    return [[f"{i:05d}", f"{tag} {i}"] for i in range(n)]


async def upload_table(stack: Stack, stem: str, n: int) -> tuple[list[list[str]], str, str]:
    """Put `table(n, <stem with spaces>)` in input/echo/<stem>.csv: the rows, the job id, the BlobCreated event."""
    rows = table(n, stem.replace("-", " "))
    job, event = await faults_util.upload(stack, f"echo/{stem}.csv", faults_util.csv_bytes(["id", "text"], rows))
    return rows, job, event


async def ingest(event: str) -> None:
    """One delivery of `event` to ingest_upload, run in this process."""
    await faults_util.call(function_app.ingest_upload)(faults_util.message(event))


async def ingested(stack: Stack, stem: str, n: int) -> tuple[list[list[str]], str]:
    """`upload_table`, then its event delivered to ingest once: the rows and the job id."""
    rows, job, event = await upload_table(stack, stem, n)
    await ingest(event)
    return rows, job


def prompt(row: list[str]) -> str:
    """The echo pipeline's user message (tests/fixtures/pipelines/echo.toml)."""
    return f"Row {row[0]}: {row[1]}"


async def finish(stack: Stack, job: str, workers: Workers, timeout: float = 150) -> None:
    done = await faults_util.finish(stack, job, workers, timeout)
    assert done.counts["error"] == 0, done.counts


async def assert_each_row_once(stack: Stack, stem: str, rows: list[list[str]]) -> None:
    """The results CSV: every input row once, in order, with the answer to its own prompt."""
    header, out = faults_util.parse_csv(await download(stack, "output", f"echo/{stem}.results.csv"))
    assert header == ["id", "text", "answer", "status", "error"]
    assert len(out) == len(rows)
    for row, result in zip(rows, out, strict=True):
        assert result == [*row, emulated_text(prompt(row)), "ok", ""], result


@pytest.fixture
async def direct(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """This process calls the functions of function_app.py itself (as the host would)."""
    faults_util.in_process_env(stack, monkeypatch)
    yield
    await faults_util.close_in_process_clients()


# --- duplicate delivery ------------------------------------------------------------------------


async def test_row_messages_delivered_twice_and_late_duplicate_events_still_give_each_row_once(
    stack: Stack, workers: Workers, direct: None
):
    rows, job, event = await upload_table(stack, "twice", 25)
    await ingest(event)
    taken = await faults_util.take_all(stack, ROWS_QUEUE)
    assert len(taken) == 25
    # Every row message twice, and the upload's BlobCreated event twice more after its ingest.
    await faults_util.send(stack, ROWS_QUEUE, *[text for text, _ in taken] * 2)
    await faults_util.send(stack, UPLOADS_QUEUE, event, event)

    workers.start()
    await finish(stack, job, workers)

    await assert_each_row_once(stack, "twice", rows)
    records = await faults_util.shard_records(stack, job)
    assert Counter(r.index for r in records) == {i: 2 for i in range(25)}  # both copies ran ...
    assert (await faults_util.emulator_stats(stack))["requests"] == 50  # ... and the late events enqueued nothing


async def test_concurrent_duplicate_blob_created_events_start_one_job(stack: Stack, workers: Workers, direct: None):
    rows, job, event = await upload_table(stack, "same-event", 40)
    # Three deliveries of one event, taken by three instances at the same moment.
    await asyncio.gather(*(ingest(event) for _ in range(3)))

    sent = await faults_util.take_all(stack, ROWS_QUEUE)
    indices = Counter(i for text, _ in sent for i in faults_util.row_indices(text))
    # The first ingest saves the header; the others find the manifest changed and stop before
    # sending anything.
    assert indices == {i: 1 for i in range(40)}
    await faults_util.send(stack, ROWS_QUEUE, *[text for text, _ in sent])
    workers.start()
    await finish(stack, job, workers)
    await assert_each_row_once(stack, "same-event", rows)


async def test_a_duplicate_event_arriving_while_ingest_runs_does_not_enqueue_the_rows_again(
    stack: Stack, workers: Workers, monkeypatch: pytest.MonkeyPatch
):
    # One send at a time, so the first ingest is still running when the duplicate comes.
    faults_util.in_process_env(stack, monkeypatch, ROWSMITH_INGEST_CONCURRENCY="1")
    try:
        n = 400
        rows, job, event = await upload_table(stack, "late-duplicate", n)
        first = asyncio.create_task(ingest(event))

        async def header_saved() -> bool:
            found = await manifest(stack, job)
            return bool(found and found.header)

        await faults_util.wait_until(header_saved, timeout=30, interval=0.02, what="the first ingest saving the header")
        assert not first.done()
        # Event Grid delivered the event again.
        await ingest(event)
        await first
    finally:
        await faults_util.close_in_process_clients()

    sent = await faults_util.take_all(stack, ROWS_QUEUE)
    indices = Counter(i for text, _ in sent for i in faults_util.row_indices(text))
    assert set(indices) == set(range(n))
    await faults_util.send(stack, ROWS_QUEUE, *[text for text, _ in sent])
    workers.start()
    await finish(stack, job, workers)
    await assert_each_row_once(stack, "late-duplicate", rows)  # the output is right either way ...

    # ... but each doubled row is a second model call (tokens, quota) whose answer finalize drops.
    doubled = sum(1 for c in indices.values() if c > 1)
    assert doubled == 0, f"{doubled} of {n} rows were enqueued twice by one duplicate BlobCreated event"


async def test_a_crash_between_append_and_delete_runs_the_row_again_and_keeps_it_once(
    stack: Stack, workers: Workers, direct: None
):
    rows, job = await ingested(stack, "append-then-die", 20)
    # Run every row message without taking it off the queue: the append happens, the delete never.
    pending = await faults_util.peek(stack, ROWS_QUEUE)
    assert len(pending) == 20
    for text in pending:
        await faults_util.call(function_app.process_rows)(faults_util.message(text))
    assert len(await faults_util.shard_records(stack, job)) == 20

    # The host redelivers each message: every row runs a second time. Finalize starts only once
    # they all have, since process drops the rows of a job it has seen completed.
    workers.start(functions=["process_rows"])

    async def rerun() -> bool:
        return (
            await faults_util.queue_count(stack, ROWS_QUEUE) == 0
            and len(await faults_util.shard_records(stack, job)) >= 40
        )

    await faults_util.wait_until(rerun, timeout=120, what="every row message run a second time")
    workers.start(functions=["finalize_job"])
    await finish(stack, job, workers)

    await assert_each_row_once(stack, "append-then-die", rows)
    assert Counter(r.index for r in await faults_util.shard_records(stack, job)) == {i: 2 for i in range(20)}


async def test_a_row_whose_worker_died_every_time_goes_to_poison_and_is_recorded_as_failed(
    stack: Stack, workers: Workers, direct: None
):
    rows, job = await ingested(stack, "doomed", 3)
    taken = sorted(await faults_util.take_all(stack, ROWS_QUEUE), key=lambda t: faults_util.row_indices(t[0]))
    doomed, others = taken[1][0], [t for t, _ in (taken[0], taken[2])]
    await faults_util.send(stack, ROWS_QUEUE, doomed)

    # Five workers each received the doomed message and died before settling it.
    async with faults_util.queues(stack) as service:
        queue = service.get_queue_client(ROWS_QUEUE)
        for attempt in range(1, 6):

            async def receive(queue=queue) -> int:
                async for m in queue.receive_messages(max_messages=1, visibility_timeout=1):
                    return m.dequeue_count
                return 0

            count = await faults_util.wait_until(
                receive, timeout=30, interval=0.2, what=f"receive #{attempt} of the message"
            )
            assert count == attempt
    await asyncio.sleep(1.2)  # the fifth lease lapses
    await faults_util.send(stack, ROWS_QUEUE, *others)

    worker = workers.start()
    done = await wait_state(stack, job, timeout=90)
    assert done.state == "done" and done.counts == {"ok": 2, "error": 1}, (done, workers.logs())
    assert "to queue rows-poison" in worker.log()
    _, out = faults_util.parse_csv(await download(stack, "output", "echo/doomed.results.csv"))
    assert out[0][3] == out[2][3] == "ok"
    assert out[1][:4] == [*rows[1], "", "error"]
    assert out[1][4].startswith("failed 5 times (the worker crashed or timed out each time)")
    assert await faults_util.queue_count(stack, ROWS_POISON_QUEUE) == 0  # consumed: recorded, not left behind


# --- SIGKILL -----------------------------------------------------------------------------------


async def test_sigkill_mid_ingest_resumes_at_the_checkpoint_instead_of_starting_over(stack: Stack, workers: Workers):
    n, every = 600, 20
    rows = table(n, "resume")
    # Ingest alone, one send at a time, a checkpoint every 50 rows: slow enough to stop half way.
    ingest_only = {
        "functions": ["ingest_upload"],
        "lease_seconds": LEASE,
        "ROWSMITH_INGEST_CHECKPOINT_ROWS": str(every),
        "ROWSMITH_INGEST_CONCURRENCY": "1",
    }
    first = workers.start(**ingest_only)
    job = await faults_util.submit(stack, "echo/resume.csv", faults_util.csv_bytes(["id", "text"], rows))

    async def half_way() -> bool:
        found = await manifest(stack, job)
        return bool(found and found.state == "ingesting" and found.ingested_rows >= 8 * every)

    await faults_util.wait_until(half_way, timeout=60, interval=0.05, what="ingest reaching its 8th checkpoint")
    first.kill()
    await asyncio.sleep(0.5)  # let a request the worker had already sent land
    at_restart = await manifest(stack, job)
    assert at_restart.state == "ingesting"
    checkpoint = at_restart.ingested_rows
    assert 0 < checkpoint < n and checkpoint % every == 0

    second = workers.start(**ingest_only)

    async def ingested() -> bool:
        found = await manifest(stack, job)
        return bool(found and found.state == "processing")

    await faults_util.wait_until(ingested, timeout=60, what="the restarted ingest finishing")
    second.stop()
    assert f"resuming ingest at row {checkpoint}" in second.log()

    sent = await faults_util.take_all(stack, ROWS_QUEUE)
    indices = Counter(i for text, _ in sent for i in faults_util.row_indices(text))
    assert set(indices) == set(range(n))  # nothing lost
    # Resumed, not restarted: rows before the checkpoint were sent once; only rows the dead
    # worker sent after its last checkpoint were sent again.
    assert all(indices[i] == 1 for i in range(checkpoint))
    again = sorted(i for i, c in indices.items() if c > 1)
    assert all(checkpoint <= i < checkpoint + every and indices[i] == 2 for i in again), again
    assert len(sent) == n + len(again)

    # The rows go back (duplicates too) and a whole worker finishes the job.
    await faults_util.send(stack, ROWS_QUEUE, *[text for text, _ in sent])
    assert await faults_util.queue_count(stack, FINALIZE_QUEUE) >= 1
    workers.start(lease_seconds=LEASE)
    await finish(stack, job, workers)
    await assert_each_row_once(stack, "resume", rows)


async def test_sigkill_at_a_random_moment_then_restart_completes_the_job_once(stack: Stack, workers: Workers):
    # 400 ms per call and at most 24 calls in flight: the job takes 7 s or more, so the kill lands in it
    # (in ingest, in processing, between an append and its delete, or in a finalize check).
    await faults_util.emulator_config(stack, latency_ms=400, jitter_ms=100)
    settings = {"lease_seconds": LEASE, "ROWSMITH_INGEST_CHECKPOINT_ROWS": "100"}
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.3, 3.0)
    n = 400
    rows = table(n, "killed")
    first = workers.start(**settings)
    job = await faults_util.submit(stack, "echo/killed.csv", faults_util.csv_bytes(["id", "text"], rows))

    async def started() -> bool:
        return await manifest(stack, job) is not None

    await faults_util.wait_until(started, timeout=30, interval=0.05, what="the job starting")
    await asyncio.sleep(delay)
    first.kill()
    at_kill = await manifest(stack, job)
    context = f"seed {seed}: killed {delay:.2f} s after the job started, manifest {at_kill}"
    assert at_kill is not None and at_kill.state != "done", context
    done_before = len({r.index for r in await faults_util.shard_records(stack, job)})

    workers.start(**settings)
    try:
        await finish(stack, job, workers)
    except AssertionError as exc:
        raise AssertionError(f"{context}\n{exc}") from None

    await assert_each_row_once(stack, "killed", rows)
    final = await manifest(stack, job)
    assert final.counts == {"ok": n, "error": 0}, context
    assert done_before < n, context
    assert all("to queue rows-poison" not in w.log() for w in workers.started), context
    # Every row had an answer: its prompt was sent at least once (more for those cut off by the kill).
    assert (await faults_util.emulator_stats(stack))["answered"] >= n
