"""Concurrent queue sends with a bound on how many are in flight.

Storage queues have no batch send, so throughput comes from concurrency; the bound keeps
memory and sockets flat however large the file is. A fixed set of sender coroutines takes
messages from a small asyncio queue: no task is created per message, which at thousands of
sends a second is a measurable share of ingest's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib

from azure.storage.queue.aio import QueueClient


class Enqueuer:
    """Use as `async with Enqueuer(...) as e:`; `send` returns once the message is accepted
    for sending, `drain` once every accepted message is sent (or raises the first failure)."""

    def __init__(self, queue: QueueClient, concurrency: int) -> None:
        self._queue = queue
        self._concurrency = concurrency
        self._pending: asyncio.Queue[tuple[str, int | None]] = asyncio.Queue(maxsize=concurrency)
        self._senders: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self.sent = 0

    async def __aenter__(self) -> Enqueuer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, text: str, visibility_timeout: int | None = None) -> None:
        if self._error:
            raise self._error
        if not self._senders:
            self._senders = [asyncio.create_task(self._sender()) for _ in range(self._concurrency)]
        await self._pending.put((text, visibility_timeout))

    async def _sender(self) -> None:
        while True:
            text, visibility_timeout = await self._pending.get()
            try:
                if self._error is None:  # after a failure the rest is dropped: the job resumes from its checkpoint
                    await self._queue.send_message(text, visibility_timeout=visibility_timeout)
                    self.sent += 1
            except Exception as exc:
                self._error = self._error or exc
            finally:
                self._pending.task_done()

    async def drain(self) -> None:
        """Wait for every send so far; raise the first failure."""
        await self._pending.join()
        if self._error:
            raise self._error

    async def close(self) -> None:
        """Stop the senders (messages not yet sent are dropped: call `drain` first to keep them)."""
        for task in self._senders:
            task.cancel()
        for task in self._senders:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._senders = []
