"""Concurrent queue sends with a bound on how many are in flight.

Storage queues have no batch send, so throughput comes from concurrency; the bound keeps
memory and sockets flat however large the file is.
"""

from __future__ import annotations

import asyncio

from azure.storage.queue.aio import QueueClient


class Enqueuer:
    def __init__(self, queue: QueueClient, concurrency: int) -> None:
        self._queue = queue
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._error: BaseException | None = None
        self.sent = 0

    async def send(self, text: str, visibility_timeout: int | None = None) -> None:
        if self._error:
            raise self._error
        await self._slots.acquire()
        task = asyncio.create_task(self._send(text, visibility_timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, text: str, visibility_timeout: int | None) -> None:
        try:
            await self._queue.send_message(text, visibility_timeout=visibility_timeout)
            self.sent += 1
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._slots.release()

    async def drain(self) -> None:
        """Wait for every send so far; raise the first failure."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self._error:
            raise self._error
