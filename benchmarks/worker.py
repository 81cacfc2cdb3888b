"""The measured work, each kind in a fresh process: `python -m benchmarks.worker KIND ...`.

A fresh process per measurement makes peak RSS (VmHWM) comparable between runs and
keeps the CPU time of one thing apart from everything else. The app's environment (the
stack's settings) comes from the parent; each worker prints one JSON line with its figures.

Kinds:
- `ingest EVENT_FILE`: `processing.ingest.handle_upload` with that BlobCreated event
  (`--bare-clients`: a what-if, with processing/adapters/clients.py's storage clients built with
  `use_env_settings=False`).
- `ceiling CSV JOB`: the ceiling of ingest: the same rows as the messages ingest would send,
  encoded before the clock starts, put on the same queue with the same concurrency by a bare
  asyncio loop (`--app-client`: with the storage client built as processing/adapters/clients.py
  builds it, instead of a bare one).
- `finalize JOB`: `processing.finalize.handle_finalize` for that job (one check).
- `finalize-floor JOB CSV_BYTES JSONL_BYTES`: the floor of finalize: download the job's
  shards and upload that many bytes as 4 MiB blocks, with no parsing or formatting.
- `bare-rows CSV ROWS PER_MESSAGE`: the floor of a job's CPU and storage transactions: the
  SDK calls a row needs (send, receive in batches, chat completion, append, delete) and
  nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.storage.blob import BlobBlock
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from processing.adapters import job_store
from processing.adapters.clients import build_clients, make_openai, make_queue_service
from processing.adapters.identity import make_credential
from processing.core import layout, model_family
from processing.core.layout import JOBS_CONTAINER, OUTPUT_CONTAINER, ROWS_QUEUE
from processing.core.messages import Row, RowsMessage
from processing.core.pipelines import Pipeline
from processing.core.settings import Settings

BLOCK = 4 * 1024 * 1024


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    """VmHWM: this process's own peak RSS.

    Not ru_maxrss: Linux carries the parent's high-water mark over a vfork+exec, so a worker
    started by a 150 MB parent would report at least 150 MB whatever it used itself.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _timed(work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    rss_before = _rss_mb()
    cpu0, t0 = time.process_time(), time.perf_counter()
    extra = await work()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _peak_mb(),
        **extra,
    }


def _connection(settings: Settings) -> str:
    conn = settings.storage.connection_string
    assert conn, "the benchmarks run against Azurite's connection string"
    return conn


# Bare clients: on loopback, no proxy or netrc lookups per request (use_env_settings=False).
def _blobs(settings: Settings) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(_connection(settings), use_env_settings=False)


def _queues(settings: Settings) -> QueueServiceClient:
    return QueueServiceClient.from_connection_string(_connection(settings), use_env_settings=False)


# --- ingest and its ceiling ---------------------------------------------------------------------


async def ingest(args: argparse.Namespace) -> dict[str, Any]:
    from processing.ingest.handler import handle_upload

    event = Path(args.event_file).read_text()
    settings = Settings.from_env()
    if args.bare_clients:
        from processing.adapters import clients as clients_module

        # build_clients looks these up at call time: patch the module, not this file's names.
        clients_module.make_blob_service = lambda storage, credential: _blobs(settings)  # type: ignore[assignment]
        clients_module.make_queue_service = lambda storage, credential: _queues(settings)  # type: ignore[assignment]
    clients = build_clients(settings)
    try:
        holder: dict[str, Any] = {}

        async def work() -> dict[str, Any]:
            holder["job"] = await handle_upload(event, clients)
            return {}

        figures = await _timed(work)
        manifest = await job_store.load(clients.jobs, holder["job"])
        assert manifest is not None
        figures.update(job=manifest.job, state=manifest.state, rows=manifest.total_rows or 0)
        return figures
    finally:
        await clients.close()


def _messages(csv_path: str, job: str) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        return [RowsMessage(job, (Row(i, tuple(cells)),)).to_json() for i, cells in enumerate(reader)]


async def _put_all(queue: QueueClient, messages: list[str], concurrency: int) -> None:
    pending = iter(messages)

    async def sender() -> None:
        for text in pending:
            await queue.send_message(text)

    await asyncio.gather(*(sender() for _ in range(concurrency)))


async def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env()
    messages = _messages(args.csv, args.job)
    service = make_queue_service(settings.storage, None) if args.app_client else _queues(settings)
    queue = service.get_queue_client(ROWS_QUEUE)
    try:

        async def work() -> dict[str, Any]:
            await _put_all(queue, messages, settings.ingest_concurrency)
            return {}

        figures = await _timed(work)
        figures["rows"] = len(messages)
        return figures
    finally:
        await service.close()


# --- finalize and its floor -----------------------------------------------------------------------


async def finalize(args: argparse.Namespace) -> dict[str, Any]:
    from processing.core.messages import FinalizeMessage
    from processing.finalize.handler import handle_finalize

    clients = build_clients(Settings.from_env())
    try:

        async def work() -> dict[str, Any]:
            await handle_finalize(FinalizeMessage(args.job).to_json(), clients)
            return {}

        figures = await _timed(work)
        manifest = await job_store.load(clients.jobs, args.job)
        assert manifest is not None
        figures.update(state=manifest.state, results=manifest.results, counts=manifest.counts)
        return figures
    finally:
        await clients.close()


async def finalize_floor(args: argparse.Namespace) -> dict[str, Any]:
    blobs = _blobs(Settings.from_env())
    container = blobs.get_container_client(JOBS_CONTAINER)
    output = blobs.get_container_client(OUTPUT_CONTAINER)
    manifest = await job_store.load(container, args.job)
    assert manifest is not None
    filler = b"x" * BLOCK

    async def write(name: str, size: int) -> None:
        blob = output.get_blob_client(name)
        blocks = []
        while size > 0:
            block_id = uuid.uuid4().hex
            await blob.stage_block(block_id, filler[: min(size, BLOCK)])
            blocks.append(BlobBlock(block_id))
            size -= BLOCK
        await blob.commit_block_list(blocks)

    async def work() -> dict[str, Any]:
        read = 0
        for shard in range(manifest.shards):
            stream = await container.download_blob(layout.shard_blob(args.job, shard))
            read += len(await stream.readall())
        await write(f"bench-floor/{args.job}.csv", args.csv_bytes)
        await write(f"bench-floor/{args.job}.jsonl", args.jsonl_bytes)
        return {"bytes_read": read, "bytes_written": args.csv_bytes + args.jsonl_bytes}

    try:
        return await _timed(work)
    finally:
        await blobs.close()


# --- the bare per-row floor -------------------------------------------------------------------------


async def bare_rows(args: argparse.Namespace) -> dict[str, Any]:
    """The SDK calls a row needs with the runner's concurrency (batchSize 16, threshold 8), and nothing else."""
    settings = Settings.from_env()
    blobs, queues = _blobs(settings), _queues(settings)
    credential = make_credential(settings)
    openai = make_openai(settings, credential)
    queue = queues.get_queue_client(ROWS_QUEUE)
    job = f"bench-bare-{uuid.uuid4().hex[:8]}"
    shard = blobs.get_blob_client(JOBS_CONTAINER, layout.shard_blob(job, 0))
    with open(args.csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [Row(i, tuple(cells)) for i, cells in zip(range(args.rows), reader, strict=False)]
    per = args.per_message
    messages = [RowsMessage(job, tuple(rows[i : i + per])).to_json() for i in range(0, len(rows), per)]
    batch, threshold = 16, 8
    deployment = settings.openai_deployment
    # The parameters the app would send this deployment's model family (a reasoning default
    # takes no temperature and needs room to think), so the baseline does the same model work.
    family = model_family.resolve(settings.openai_model_family, deployment)
    params = model_family.request_params(Pipeline(name="bare", prompt="{x}", max_tokens=30), family)

    async def answer(index: int, cells: list[str]) -> bytes:
        prompt = f"Row {cells[0]}: {cells[1]}\n\n{cells[2]}"
        response = await openai.chat.completions.create(
            model=deployment, messages=[{"role": "user", "content": prompt}], **params
        )
        usage = response.usage
        line = {
            "i": index,
            "status": "ok",
            "cells": cells,
            "answer": response.choices[0].message.content,
            "usage": [usage.prompt_tokens, usage.completion_tokens] if usage else [0, 0],
        }
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    async def handle(message: Any) -> None:
        data = json.loads(message.content)
        lines = await asyncio.gather(*(answer(i, cells) for i, cells in data["rows"]))
        await shard.append_block(b"".join(lines))
        await queue.delete_message(message.id, message.pop_receipt)

    async def work() -> dict[str, Any]:
        await _put_all(queue, messages, settings.ingest_concurrency)
        await shard.create_append_blob(match_condition=MatchConditions.IfMissing)
        remaining = len(messages)
        in_flight: set[asyncio.Task[None]] = set()
        wake = asyncio.Event()
        received = 0

        errors: list[BaseException] = []

        def settled(task: asyncio.Task[None]) -> None:
            nonlocal remaining
            in_flight.discard(task)
            remaining -= 1
            if not task.cancelled() and task.exception() is not None:
                errors.append(task.exception())  # type: ignore[arg-type]
            wake.set()

        while remaining > 0:
            if errors:
                raise errors[0]
            while len(in_flight) > threshold:
                wake.clear()
                await wake.wait()
            if received >= len(messages):  # everything received: wait for the rest to finish
                wake.clear()
                await wake.wait()
                continue
            pages = queue.receive_messages(messages_per_page=batch, visibility_timeout=600).by_page()
            try:
                got = [m async for m in await pages.__anext__()]
            except StopAsyncIteration:
                got = []
            received += len(got)
            if not got:
                await asyncio.sleep(0.05)
            for message in got:
                task = asyncio.create_task(handle(message))
                in_flight.add(task)
                task.add_done_callback(settled)
        return {}

    try:
        figures = await _timed(work)
        figures.update(rows=len(rows), messages=len(messages))
        return figures
    finally:
        await openai.close()
        await credential.close()
        await blobs.close()
        await queues.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    kinds = parser.add_subparsers(dest="kind", required=True)
    p = kinds.add_parser("ingest")
    p.add_argument("event_file")
    p.add_argument("--bare-clients", action="store_true")
    p = kinds.add_parser("ceiling")
    p.add_argument("csv")
    p.add_argument("job")
    p.add_argument("--app-client", action="store_true")
    p = kinds.add_parser("finalize")
    p.add_argument("job")
    p = kinds.add_parser("finalize-floor")
    p.add_argument("job")
    p.add_argument("csv_bytes", type=int)
    p.add_argument("jsonl_bytes", type=int)
    p = kinds.add_parser("bare-rows")
    p.add_argument("csv")
    p.add_argument("rows", type=int)
    p.add_argument("per_message", type=int)
    return parser.parse_args(argv)


KINDS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "ingest": ingest,
    "ceiling": ceiling,
    "finalize": finalize,
    "finalize-floor": finalize_floor,
    "bare-rows": bare_rows,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = asyncio.run(KINDS[args.kind](args))
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
