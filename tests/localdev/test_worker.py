"""The runner's seam to azure-functions-runtime (localdev.runner.worker): the internal entry points it pins.

Each test goes through the runtime's own loader or invocation path, so a runtime release that
moves or changes them fails here, by name, rather than somewhere in the end-to-end suite.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueMessage as StorageQueueMessage

from localdev.runner.discovery import discover, load_app
from localdev.runner.errors import RunnerError
from localdev.runner.invocation import call
from localdev.runner.worker import InvocationFailed, start_threadpool
from processing.core.layout import ROWS_POISON_QUEUE, ROWS_QUEUE, UPLOADS_QUEUE

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def stored_message(body: str, dequeue_count: int = 3) -> StorageQueueMessage:
    message = StorageQueueMessage(content=body)
    message.id = "message-1"
    message.dequeue_count = dequeue_count
    message.inserted_on = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    message.expires_on = message.inserted_on + timedelta(days=7)
    message.next_visible_on = message.inserted_on + timedelta(minutes=10)
    return message


def one_function_app(seen: dict[str, Any]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="worker-seam", connection="AzureWebJobsStorage")
    async def seam(msg: func.QueueMessage, context: func.Context) -> None:
        seen.update(msg=msg, context=context)
        text = msg.get_body().decode()
        if text == "raise":
            raise ValueError("the function's own error")
        if text == "cancel":
            raise asyncio.CancelledError

    @app.queue_trigger(arg_name="item", queue_name="worker-seam-sync", connection="AzureWebJobsStorage")
    def seam_sync(item: func.QueueMessage) -> None:
        seen.update(thread=threading.current_thread().name, body=item.get_body())

    return app


async def test_the_real_app_is_indexed_by_the_worker_loader() -> None:
    functions, others = discover(load_app(REPO))
    queues = {f.name: f.queue_name for f in functions}
    assert queues["ingest_upload"] == UPLOADS_QUEUE
    assert queues["process_rows"] == ROWS_QUEUE
    assert queues["record_poison_rows"] == ROWS_POISON_QUEUE
    assert len(functions) == 6 and others == {}
    assert all(f.is_async and f.connection == "AzureWebJobsStorage" for f in functions)


async def test_the_runtime_decodes_the_trigger_and_builds_the_context() -> None:
    seen: dict[str, Any] = {}
    (fn, _sync), _ = discover(one_function_app(seen))
    message = stored_message("héllo")
    await call(fn, message, "héllo".encode(), "receipt-2")
    msg: func.QueueMessage = seen["msg"]
    assert (msg.id, msg.get_body(), msg.dequeue_count, msg.pop_receipt) == (
        "message-1",
        "héllo".encode(),
        3,
        "receipt-2",
    )
    assert (msg.insertion_time, msg.expiration_time, msg.time_next_visible) == (
        message.inserted_on,
        message.expires_on,
        message.next_visible_on,
    )
    context = seen["context"]
    assert context.function_name == "seam"
    assert Path(context.function_directory) == HERE
    assert context.invocation_id and context.thread_local_storage.invocation_id == context.invocation_id


async def test_sync_functions_run_in_the_runtime_thread_pool() -> None:
    seen: dict[str, Any] = {}
    (_, sync), _ = discover(one_function_app(seen))
    start_threadpool()
    await call(sync, stored_message("x"), b"x", "r")
    assert seen["body"] == b"x" and seen["thread"] != threading.current_thread().name


async def test_a_raising_function_is_a_failed_invocation_and_a_cancelled_error_passes_through() -> None:
    (fn, _), _ = discover(one_function_app({}))
    with pytest.raises(InvocationFailed, match="the function's own error"):
        await call(fn, stored_message("raise"), b"raise", "r")
    # The runtime answers nothing for a CancelledError (the host then waits for functionTimeout);
    # the pump decides what it means.
    with pytest.raises(asyncio.CancelledError):
        await call(fn, stored_message("cancel"), b"cancel", "r")


def test_the_worker_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="worker-refused", connection="AzureWebJobsStorage")
    async def unbound(msg: func.QueueMessage, extra: str) -> None:
        del msg, extra

    with pytest.raises(RunnerError, match=r"cannot load the unbound function.*extra"):
        discover(app)

    (tmp_path / "two_apps.py").write_text(
        "import azure.functions as func\nfirst = func.FunctionApp()\nsecond = func.FunctionApp()\n"
    )
    with pytest.raises(RunnerError, match="More than one"):
        load_app(tmp_path, "two_apps")
