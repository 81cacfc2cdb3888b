"""What a queue-triggered function is called with, and the call itself, through the real runtime.

The message becomes what the host sends the worker: the body (decoded per host.json
`messageEncoding`: base64, or none for the raw text) and the queue trigger's metadata (id,
dequeue count, times, pop receipt). `azure-functions-runtime` decodes them into its
`azure.functions.QueueMessage`, adds its `context` if the function asks for it, and runs async
functions on the loop and sync ones in its thread pool (localdev.runner.worker).
"""

from __future__ import annotations

import base64
import binascii

from azure.storage.queue import QueueMessage as StorageQueueMessage

from localdev.runner.discovery import QueueFunction
from localdev.runner.worker import invoke, trigger_metadata


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


async def call(fn: QueueFunction, message: StorageQueueMessage, body: bytes, pop_receipt: str) -> None:
    """One invocation of `fn` with `message`; raises worker.InvocationFailed if the function raised."""
    await invoke(fn.indexed, fn.arg_name, body, trigger_metadata(message, pop_receipt))
