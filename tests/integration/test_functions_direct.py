"""Call the decorated functions themselves, in this process, one message at a time.

This is how Azure Functions tests are usually written (the function, not the host): it
shows the mapping in function_app.py from queue messages to processing/, step by step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from azure.functions.queue import QueueMessage

import function_app
from localdev.event_grid.events import blob_created_message
from localdev.stack import Stack
from processing.adapters import clients as clients_module
from processing.adapters import job_store
from processing.core import layout
from processing.core.errors import CancelledFromInside
from processing.core.settings import get_settings
from tests.integration.harness import app_settings, download, emulated_text, emulator, local_target, manifest

pytestmark = pytest.mark.integration


def user_function(builder):
    return builder.build().get_user_function()


@pytest.fixture
async def app_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # The finalize check is enqueued with no delay here so the test can take it at once.
    for name, value in app_settings(stack, ROWSMITH_SHARD_ROWS="4", ROWSMITH_FINALIZE_INTERVAL_SECONDS="0").items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    clients_module._clients = None
    yield
    if clients_module._clients:
        await clients_module._clients.close()
    get_settings.cache_clear()
    clients_module._clients = None


async def drain(queue_name: str, stack: Stack) -> list[tuple[str, int]]:
    """Take every visible message off a queue (body, dequeue count), as the host would."""
    target = local_target(stack)
    try:
        queue = target.queues.get_queue_client(queue_name)
        taken = []
        async for msg in queue.receive_messages(messages_per_page=32, visibility_timeout=30):
            taken.append((msg.content, msg.dequeue_count))
            await queue.delete_message(msg)
        # Queues are not FIFO; order row messages by their first row for readable tests.
        return sorted(taken, key=lambda t: json.loads(t[0]).get("rows", [[0]])[0][0])
    finally:
        await target.close()


def message(body: str, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id="test", body=body.encode(), dequeue_count=dequeue_count)


async def upload(stack: Stack, name: str, data: str) -> tuple[str, str]:
    """Put a file in input/; return its job id and the BlobCreated event Event Grid would raise."""
    target = local_target(stack)
    try:
        blob = target.blobs.get_blob_client("input", name)
        etag = (await blob.upload_blob(data.encode(), overwrite=True))["etag"]
    finally:
        await target.close()
    event = blob_created_message(url=blob.url, container="input", blob=name, etag=etag, size=len(data))
    return layout.job_id_for(blob.url, etag), event


async def upload_and_ingest(stack: Stack, name: str, data: str) -> tuple[str, list[tuple[str, int]], str]:
    """Upload, run ingest_upload on its event; return (job, row messages, finalize message)."""
    job, event = await upload(stack, name, data)
    await drain("rows", stack)
    await drain("finalize", stack)
    await user_function(function_app.ingest_upload)(message(event))
    rows = await drain("rows", stack)
    (final,) = await drain("finalize", stack)
    return job, rows, final[0]


async def test_each_function_does_its_step(stack: Stack, app_env: None):
    data = "id,text\n" + "".join(f"{i},hello {i}\n" for i in range(10))
    job, rows, final = await upload_and_ingest(stack, "echo/direct.csv", data)

    assert len(rows) == 10  # one message per row with rows_per_message = 1
    assert json.loads(final)["job"] == job  # and exactly one finalize check

    # Process every row but one, then ask finalize: it must wait for the missing row.
    for body, count in rows[:-1]:
        await user_function(function_app.process_rows)(message(body, count))
    await user_function(function_app.finalize_job)(message(final))
    waiting = await manifest(stack, job)
    assert waiting.state == "processing" and waiting.counts == {"ok": 9, "error": 0}
    await asyncio.sleep(1.2)  # finalize re-checks after at least a second
    (recheck,) = await drain("finalize", stack)

    # The last row arrives twice (at-least-once delivery); the output still has it once.
    await user_function(function_app.process_rows)(message(rows[-1][0]))
    await user_function(function_app.process_rows)(message(rows[-1][0], 2))
    await user_function(function_app.finalize_job)(message(recheck[0]))

    out = (await download(stack, "output", "echo/direct.results.csv")).decode().splitlines()
    assert out[0] == "id,text,answer,status,error"
    assert out[1:] == [f"{i},hello {i},{emulated_text(f'Row {i}: hello {i}')},ok," for i in range(10)]


async def test_a_jobs_concurrent_messages_share_one_manifest_read_and_stop_once_it_is_done(
    stack: Stack, app_env: None, monkeypatch: pytest.MonkeyPatch
):
    data = "id,text\n" + "".join(f"{i},hello {i}\n" for i in range(24))
    job, rows, final = await upload_and_ingest(stack, "echo/herd.csv", data)
    reads: list[str] = []
    real_load = job_store.load

    async def counting_load(container, job_id):  # the real read, counted
        reads.append(job_id)
        return await real_load(container, job_id)

    monkeypatch.setattr(job_store, "load", counting_load)
    # An instance takes up to 24 messages at once; with the cache stale (interval 0 here),
    # they must not each read the manifest.
    await asyncio.gather(*(user_function(function_app.process_rows)(message(body, n)) for body, n in rows))
    assert reads.count(job) == 1
    await user_function(function_app.finalize_job)(message(final))
    assert (await manifest(stack, job)).state == "done"

    # A late duplicate of a row of a finished job is dropped: it costs no model call.
    await emulator(stack, "POST", "/_emulator/reset")
    await user_function(function_app.process_rows)(message(rows[3][0], 2))
    assert (await emulator(stack, "GET", "/_emulator/stats"))["requests"] == 0
    out = (await download(stack, "output", "echo/herd.results.csv")).decode().splitlines()
    assert len(out) == 25


async def test_a_poisoned_rows_message_records_its_rows_as_failed(stack: Stack, app_env: None):
    _job, rows, final = await upload_and_ingest(stack, "echo/poisoned.csv", "id,text\n1,a\n2,b\n")

    await user_function(function_app.process_rows)(message(rows[0][0]))
    # The second row's message failed maxDequeueCount times and reached rows-poison.
    await user_function(function_app.record_poison_rows)(message(rows[1][0], 1))
    await user_function(function_app.finalize_job)(message(final))

    out = (await download(stack, "output", "echo/poisoned.results.csv")).decode().splitlines()
    assert out[1].endswith(",ok,")
    assert out[2].startswith("2,b,,error,failed 5 times")


async def test_an_unreadable_message_is_dropped_not_retried(stack: Stack, app_env: None, caplog):
    # Raising would make the host retry five times a message that can never be read.
    await user_function(function_app.process_rows)(message("this is not json"))
    await user_function(function_app.ingest_upload)(message(json.dumps({"eventType": "Something.Else"})))
    assert "dropping unreadable message" in caplog.text


async def test_an_upload_that_failed_every_attempt_gets_an_error_report(stack: Stack, app_env: None):
    job, event = await upload(stack, "echo/never-read.csv", "id,text\n1,a\n")

    await user_function(function_app.record_poison_upload)(message(event))

    report = json.loads(await download(stack, "output", "echo/never-read.error.json"))
    assert "failed 5 times" in report["error"] and "upload the file again" in report["fix"]
    assert (await manifest(stack, job)).state == "failed"


async def test_a_poisoned_finalize_check_is_tried_again_later(stack: Stack, app_env: None):
    await drain("finalize", stack)
    body = '{"v":1,"type":"finalize","job":"j1-0123456789ab"}'
    await user_function(function_app.retry_poison_finalize)(message(body))
    target = local_target(stack)
    try:
        props = await target.queues.get_queue_client("finalize").get_queue_properties()
    finally:
        await target.close()
    # Hidden for minutes, but there: the job will be checked again rather than forgotten.
    assert props.approximate_message_count == 1
    assert await drain("finalize", stack) == []


async def test_a_throttled_oversized_row_goes_back_by_claim_check(stack: Stack, app_env: None):
    big = "w" * 60_000 + " [[fault:429:1]]"  # over a queue message; throttled once
    _job, rows, final = await upload_and_ingest(stack, "echo/big-row.csv", f"id,text\n1,{big}\n")
    assert "claim" in json.loads(rows[0][0])

    await user_function(function_app.process_rows)(message(rows[0][0]))
    await asyncio.sleep(2.6)  # the emulator's retry-after is 1 s; we wait that, plus jitter
    (again,) = await drain("rows", stack)
    body = json.loads(again[0])
    assert "claim" in body and body["waits"] == 1  # a 64 KiB message could not carry it inline

    await user_function(function_app.process_rows)(message(again[0]))
    await user_function(function_app.finalize_job)(message(final))
    out = (await download(stack, "output", "echo/big-row.results.csv")).decode().splitlines()
    assert out[1] == f"1,{big},{emulated_text(f'Row 1: {big}')},ok,"


async def test_an_upload_replaced_before_its_job_finishes_never_overwrites_the_newer_results(
    stack: Stack, app_env: None
):
    old_job, old_rows, old_final = await upload_and_ingest(stack, "echo/report.csv", "id,text\n1,old\n")
    new_job, new_rows, new_final = await upload_and_ingest(stack, "echo/report.csv", "id,text\n1,new\n")
    for body, _ in [*new_rows, *old_rows]:
        await user_function(function_app.process_rows)(message(body))
    # The newer upload's job finishes first; the older one finishing later must not overwrite it.
    await user_function(function_app.finalize_job)(message(new_final))
    await user_function(function_app.finalize_job)(message(old_final))

    latest = (await download(stack, "output", "echo/report.results.csv")).decode().splitlines()
    assert latest[1].startswith("1,new,")
    older = (await download(stack, "output", f"echo/report.results.{old_job}.csv")).decode().splitlines()
    assert older[1].startswith("1,old,")
    old = await manifest(stack, old_job)
    assert old.state == "done" and old.superseded is True and new_job != old_job


async def test_a_stray_cancelled_error_from_the_work_is_an_ordinary_failure() -> None:
    # The real worker sends no response for a CancelledError: the host would wait out
    # functionTimeout and restart the worker. An ordinary exception is one retried invocation.
    async def work() -> None:
        raise asyncio.CancelledError

    with pytest.raises(CancelledFromInside, match="cancelled from inside"):
        await function_app._handle("rows", QueueMessage(id="m-1", body=b"{}"), work())


async def test_an_invocation_that_is_itself_cancelled_stays_cancelled() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(function_app._handle("rows", QueueMessage(id="m-2", body=b"{}"), work()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
