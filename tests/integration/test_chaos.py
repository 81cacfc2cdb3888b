"""Chaos: a 2,000-row job through every fault at once, end to end on the local stack (issue 4).

10% 5xx, 10% 429 and 5% timeouts from the model, the upload's BlobCreated event delivered
twice, row messages duplicated while the job runs, and the worker SIGKILLed once mid-job
and restarted. The results CSV must still hold exactly 2,000 rows, in order, each with the
input as written and either the answer to its own prompt or a row error that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter

import pytest

from localdev.stack import Stack
from processing.core.layout import ROWS_QUEUE
from tests.integration.faults_util import (
    Workers,
    csv_bytes,
    emulator_config,
    emulator_stats,
    parse_csv,
    parse_jsonl,
    peek,
    send,
    shard_records,
    submit,
    wait_until,
)
from tests.integration.harness import download, emulated_text, manifest, wait_state

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean")]

ROWS = 2000
# (No cell starting with "=": the results CSV neutralises spreadsheet formulas, a separate concern.)
TRICKY = ["plain", "with, comma", 'with "quotes"', "two\nlines", "ünïcödé ✓", "{text} braces", "tab\there"]


class Duplicator:
    """Re-sends copies of row messages it sees on the queue: at-least-once delivery, made visible."""

    def __init__(self, stack: Stack, rng: random.Random, share: float = 0.1) -> None:
        self.stack = stack
        self.rng = rng
        self.share = share
        self.sent = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed peek or send just means fewer duplicates
                copies = [text for text in await peek(self.stack, ROWS_QUEUE) if self.rng.random() < self.share]
                await send(self.stack, ROWS_QUEUE, *copies)
                self.sent += len(copies)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.5)

    async def stop(self) -> None:
        self._stop.set()
        if self._task:
            await self._task


async def test_chaos_2000_rows_faults_duplicates_and_a_kill_still_give_each_row_once(stack: Stack, workers: Workers):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    await emulator_config(
        stack,
        fault_rates={"500": 0.05, "503": 0.05, "429": 0.10, "timeout": 0.05},
        fault_retry_after_ms=300,
        timeout_seconds=5,
        seed=seed,
    )
    settings = {
        "lease_seconds": 4.0,  # the killed worker's messages come back in seconds
        "visibility_seconds": 1,
        "AZURE_OPENAI_TIMEOUT_SECONDS": "1.5",  # a 'timeout' fault stalls 5 s
        "ROWSMITH_INGEST_CHECKPOINT_ROWS": "250",
    }
    rows = [[f"{i:05d}", f"{TRICKY[i % len(TRICKY)]} #{i}"] for i in range(ROWS)]
    workers.start(**settings)
    started = time.monotonic()
    job = await submit(stack, "echo/chaos.csv", csv_bytes(["id", "text"], rows), events=2)
    duplicator = Duplicator(stack, rng)
    duplicator.start()
    try:
        # One SIGKILL at a random point of the job, then a new worker takes over.
        target = rng.randint(ROWS // 10, ROWS // 2)

        async def reached() -> bool:
            found = await manifest(stack, job)
            return bool(found and (found.state in ("done", "failed") or sum(found.counts.values()) >= target))

        await wait_until(reached, timeout=180, interval=0.2, what=f"{target} rows done before the kill")
        workers.started[0].kill()
        at_kill = await manifest(stack, job)
        context = f"seed {seed}; killed at {sum(at_kill.counts.values())} rows recorded ({at_kill.state})"
        assert at_kill.state == "processing", context
        workers.start(**settings)

        try:
            done = await wait_state(stack, job, timeout=300)
        except AssertionError as exc:
            raise AssertionError(f"{context}\n{exc}\n{workers.logs()}") from None
    finally:
        await duplicator.stop()
    elapsed = time.monotonic() - started
    assert done.state == "done", (context, done)

    header, out = parse_csv(await download(stack, "output", "echo/chaos.results.csv"))
    assert header == ["id", "text", "answer", "status", "error"]
    assert len(out) == ROWS, context
    errors = []
    for row, result in zip(rows, out, strict=True):
        assert result[:2] == row, (context, result)  # the input as written, in order
        if result[3] == "ok":
            assert result[2:] == [emulated_text(f"Row {row[0]}: {row[1]}"), "ok", ""], (context, result)
        else:
            assert result[2:4] == ["", "error"] and result[4], (context, result)
            errors.append(result)
    lines = parse_jsonl(await download(stack, "output", "echo/chaos.results.jsonl"))
    assert [line["row"] for line in lines] == list(range(1, ROWS + 1))
    codes = Counter(line["code"] for line in lines if line["status"] == "error")
    # A row error says what went wrong; "missing" (no result recorded) would be a lost row.
    assert "missing" not in codes, (context, codes)
    assert done.counts == {"ok": ROWS - len(errors), "error": len(errors)}, context

    # The chaos did happen.
    stats = await emulator_stats(stack)
    for kind in ("500", "503", "429", "timeout"):
        assert stats["faults"].get(kind, 0) > 0, (kind, stats["faults"])
    records = await shard_records(stack, job)
    appended = Counter(r.index for r in records)
    assert set(appended) == set(range(ROWS))
    assert duplicator.sent > 0 and len(records) > ROWS, context
    print(
        f"\nchaos ({context}): {elapsed:.0f} s, {len(errors)} row errors {dict(codes)}, "
        f"{duplicator.sent} duplicated messages, {len(records) - ROWS} duplicate records, "
        f"model faults {stats['faults']}, {stats['requests']} requests"
    )
