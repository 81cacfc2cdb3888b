"""Result shards: append blobs of records, and the chain of segments a full shard continues in.

Rows are sharded by index (`shard_rows` per shard). An append blob holds at most 50,000
blocks, so a shard continues in a next segment blob: appenders move on when an append
reports the blob holds `max_blocks` blocks (or the service refuses one more), and readers
follow a shard's segments in order, going on past a segment only if it is that full.
An append is not idempotent and a message may be redelivered after its append, so a shard
may hold a row more than once; finalize keeps the first record per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobProperties
from azure.storage.blob.aio import BlobClient, ContainerClient

from processing.adapters import telemetry
from processing.core.layout import shard_blob
from processing.core.records import Record

# Append Block accepts at most 4 MiB per call on older service versions; stay under it.
MAX_APPEND = 4 * 1024 * 1024 - 1024


def _blocks(lines: Iterable[bytes]) -> Iterator[bytes]:
    block = bytearray()
    for line in lines:
        if block and len(block) + len(line) > MAX_APPEND:
            yield bytes(block)
            block.clear()
        block += line
    if block:
        yield bytes(block)


async def ensure_shard(jobs: ContainerClient, job: str, shard: int, segment: int = 0) -> None:
    blob = jobs.get_blob_client(shard_blob(job, shard, segment))
    with contextlib.suppress(ResourceExistsError):
        await blob.create_append_blob(match_condition=MatchConditions.IfMissing)


# The segment each (job, shard) is appended to in this process: a full one is never tried again.
_segments: dict[tuple[str, int], int] = {}


async def append(jobs: ContainerClient, job: str, shard: int, records: Iterable[Record], *, max_blocks: int) -> None:
    """Append records to one shard, whole lines per block (appenders run concurrently)."""
    key = (job, shard)
    records = tuple(records)
    for block in _blocks(r.to_line() for r in records):
        while True:
            segment = _segments.get(key, 0)
            blob = jobs.get_blob_client(shard_blob(job, shard, segment))
            try:
                result = await blob.append_block(block)
            except ResourceNotFoundError:
                await ensure_shard(jobs, job, shard, segment)
                continue
            except HttpResponseError as exc:
                if exc.error_code != "BlockCountExceedsLimit":
                    raise
                # Another instance filled it past our threshold: the block was not written.
                _segments[key] = max(_segments.get(key, 0), segment + 1)
                continue
            if int(result.get("blob_committed_block_count") or 0) >= max_blocks:
                _segments[key] = max(_segments.get(key, 0), segment + 1)
            break
    # Every row's record is written here (process, poison, ingest's bad rows): counted once written.
    telemetry.rows_recorded(records)


@dataclass(frozen=True)
class Segment:
    number: int
    blob: BlobClient
    properties: BlobProperties


async def segments(jobs: ContainerClient, job: str, shard: int, *, max_blocks: int) -> AsyncIterator[Segment]:
    """A shard's segments in order; a missing shard has none. The chain goes on past a
    segment only if it holds `max_blocks` blocks, the point where appenders move on."""
    number = 0
    while True:
        blob = jobs.get_blob_client(shard_blob(job, shard, number))
        try:
            properties = await blob.get_blob_properties()
        except ResourceNotFoundError:
            return
        yield Segment(number, blob, properties)
        if (properties.append_blob_committed_block_count or 0) < max_blocks:
            return
        number += 1
