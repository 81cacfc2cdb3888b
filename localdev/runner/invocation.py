"""What a queue-triggered function is called with, and the call itself.

The trigger argument is the worker's own `azure.functions.queue.QueueMessage` (id, body
decoded per host.json `messageEncoding` (base64, or none for the raw text), dequeue_count,
times, pop receipt), plus `context` if the function asks for it; async functions run on
the loop, sync ones in the runner's thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage as QueueTriggerMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage

from localdev.runner.discovery import QueueFunction


def decode_body(content: object, encoding: str) -> bytes | None:
    """The message's body as the function gets it; None if it is not valid base64 (`encoding` "base64")."""
    text = "" if content is None else str(content)
    if encoding == "none":
        return text.encode("utf-8")
    try:
        # .NET's Convert.FromBase64String skips whitespace and rejects anything else.
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def arguments(
    fn: QueueFunction, message: StorageQueueMessage, body: bytes, pop_receipt: str, function_directory: str
) -> dict[str, Any]:
    """The keyword arguments of one invocation: the trigger, and `context` if the function takes it."""
    kwargs: dict[str, Any] = {
        # azure.functions.queue.QueueMessage: the worker's own class, the one that carries dequeue_count.
        fn.arg_name: QueueTriggerMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=pop_receipt,
        )
    }
    if fn.wants_context:
        kwargs["context"] = InvocationContext(fn.name, function_directory)
    return kwargs


async def call(fn: QueueFunction, kwargs: dict[str, Any], executor: ThreadPoolExecutor | None) -> None:
    """Run the function: on the loop if it is async, else in `executor` with this context's variables."""
    if fn.is_async:
        await fn.user_function(**kwargs)
    else:
        run = functools.partial(contextvars.copy_context().run, fn.user_function, **kwargs)
        await asyncio.get_running_loop().run_in_executor(executor, run)


class InvocationContext(func.Context):
    """The `context` argument: what a queue-triggered Python function can ask of it locally."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()
        self._tls.invocation_id = self._invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None  # no distributed tracing locally

    @property
    def retry_context(self) -> Any:
        return None  # queue triggers retry through the queue, not a retry policy
