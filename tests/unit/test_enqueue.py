"""The ingest sender pool: every message sent once, never more in flight than the bound,
and a failure surfaces at the next send or at drain instead of being lost."""

from __future__ import annotations

import asyncio

import pytest

from processing.adapters.queue_sender import Enqueuer


class SlowQueue:
    """Stands in for the queue client's send_message: records what arrives and how many overlap."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[tuple[str, int | None]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_on = fail_on

    async def send_message(self, text: str, visibility_timeout: int | None = None) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if text == self.fail_on:
                raise OSError(f"send of {text} failed")
            self.sent.append((text, visibility_timeout))
        finally:
            self.in_flight -= 1


async def test_every_message_is_sent_once_within_the_bound() -> None:
    queue = SlowQueue()
    async with Enqueuer(queue, concurrency=4) as enqueuer:  # type: ignore[arg-type]
        for i in range(100):
            await enqueuer.send(f"m{i}", visibility_timeout=7 if i == 3 else None)
        await enqueuer.drain()
        assert enqueuer.sent == 100
    assert sorted(text for text, _ in queue.sent) == sorted(f"m{i}" for i in range(100))
    assert dict(queue.sent)["m3"] == 7
    assert 1 < queue.most_in_flight <= 4


async def test_drain_waits_for_everything_accepted_so_far() -> None:
    queue = SlowQueue()
    async with Enqueuer(queue, concurrency=8) as enqueuer:  # type: ignore[arg-type]
        for i in range(20):
            await enqueuer.send(f"a{i}")
        await enqueuer.drain()
        assert len(queue.sent) == 20  # a checkpoint after drain may record these rows as enqueued
        await enqueuer.send("b")
        await enqueuer.drain()
    assert len(queue.sent) == 21


async def test_a_failed_send_is_raised_and_stops_further_sends() -> None:
    queue = SlowQueue(fail_on="m5")
    async with Enqueuer(queue, concurrency=2) as enqueuer:  # type: ignore[arg-type]
        with pytest.raises(OSError, match="send of m5 failed"):
            for i in range(1000):
                await enqueuer.send(f"m{i}")
            await enqueuer.drain()
        with pytest.raises(OSError, match="m5"):
            await enqueuer.drain()
    # The job resumes from its last checkpoint, so what follows the failure is not sent.
    assert len(queue.sent) < 20


async def test_close_stops_the_senders() -> None:
    queue = SlowQueue()
    enqueuer = Enqueuer(queue, concurrency=3)  # type: ignore[arg-type]
    await enqueuer.send("x")
    await enqueuer.drain()
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    await enqueuer.close()
    after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert len(before - after) == 3
