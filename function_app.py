"""Rowsmith's Azure Functions: triggers and bindings only; the logic lives in processing/.

Every trigger uses the identity-based `AzureWebJobsStorage` connection. Errors map to
queue behaviour: returning completes the message; raising lets the host retry it after
host.json's visibilityTimeout, up to maxDequeueCount, then moves it to `<queue>-poison`.
A CancelledError the work raises on its own is raised as an ordinary exception (see `_handle`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import azure.functions as func

from processing.adapters import telemetry
from processing.adapters.clients import get_clients
from processing.core.errors import BadMessage, CancelledFromInside
from processing.core.layout import (
    FINALIZE_POISON_QUEUE,
    FINALIZE_QUEUE,
    ROWS_POISON_QUEUE,
    ROWS_QUEUE,
    STORAGE_CONNECTION,
    UPLOADS_POISON_QUEUE,
    UPLOADS_QUEUE,
)
from processing.finalize import handler as finalize
from processing.ingest import handler as ingest
from processing.process import handler as process

telemetry.configure()  # once per worker process: the exporters ROWSMITH_TELEMETRY names
app = func.FunctionApp()
log = logging.getLogger("rowsmith")


@telemetry.staged  # one span per invocation; its job, stage and attempt on every log record inside
async def _handle(queue: str, msg: func.QueueMessage, work: Awaitable[object]) -> None:
    try:
        await work
    except BadMessage as exc:
        # Retrying cannot fix a message we cannot read or must not trust; say so once instead of
        # five times. The log names the reason (text of ours), never the body (the sender's).
        log.error("dropping unreadable message %s from %s (%s): %s", msg.id, queue, type(exc).__name__, exc)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this invocation itself was cancelled (shutdown): not ours to turn into a failure
        # A CancelledError surfacing from deep inside a library (a timeout, a closed client) while
        # nobody cancelled us: the Python worker sends no response for it, so the host waits out
        # functionTimeout and restarts the worker, ending every invocation in flight. As an
        # ordinary exception it is one failed invocation, which the host retries (then poisons).
        raise CancelledFromInside(f"the work on message {msg.id} from {queue} was cancelled from inside") from None


@app.queue_trigger(arg_name="msg", queue_name=UPLOADS_QUEUE, connection=STORAGE_CONNECTION)
async def ingest_upload(msg: func.QueueMessage) -> None:
    """A BlobCreated event for input/<pipeline>/<file>.csv: start or resume its job."""
    await _handle(UPLOADS_QUEUE, msg, ingest.handle_upload(msg.get_body(), get_clients()))


@app.queue_trigger(arg_name="msg", queue_name=UPLOADS_POISON_QUEUE, connection=STORAGE_CONNECTION)
async def record_poison_upload(msg: func.QueueMessage) -> None:
    """An upload that failed ingest every time: fail its job with an error report, never silently."""
    await _handle(UPLOADS_POISON_QUEUE, msg, ingest.handle_upload_poison(msg.get_body(), get_clients()))


@app.queue_trigger(arg_name="msg", queue_name=ROWS_QUEUE, connection=STORAGE_CONNECTION)
async def process_rows(msg: func.QueueMessage) -> None:
    """Send each row of the message to Azure OpenAI and append its result."""
    await _handle(ROWS_QUEUE, msg, process.handle_rows(msg.get_body(), msg.dequeue_count or 1, get_clients()))


@app.queue_trigger(arg_name="msg", queue_name=ROWS_POISON_QUEUE, connection=STORAGE_CONNECTION)
async def record_poison_rows(msg: func.QueueMessage) -> None:
    """Rows that failed every attempt: record them as failed so their job still completes."""
    await _handle(ROWS_POISON_QUEUE, msg, process.handle_poison(msg.get_body(), get_clients()))


@app.queue_trigger(arg_name="msg", queue_name=FINALIZE_QUEUE, connection=STORAGE_CONNECTION)
async def finalize_job(msg: func.QueueMessage) -> None:
    """Check a job; when every row has a result or an error, write the results files."""
    await _handle(FINALIZE_QUEUE, msg, finalize.handle_finalize(msg.get_body(), get_clients()))


@app.queue_trigger(arg_name="msg", queue_name=FINALIZE_POISON_QUEUE, connection=STORAGE_CONNECTION)
async def retry_poison_finalize(msg: func.QueueMessage) -> None:
    """A finalize check that failed every time: look again in a few minutes, so the job completes."""
    await _handle(FINALIZE_POISON_QUEUE, msg, finalize.handle_finalize_poison(msg.get_body(), get_clients()))
