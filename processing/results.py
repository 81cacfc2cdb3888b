"""Result records: one JSON line per row, appended to per-job shards (append blobs).

An append is not idempotent and a message may be redelivered after its append, so a
shard may hold a row more than once; finalize keeps the first record per row. Rows are
sharded by index, and a shard whose append blob nears the 50,000-block limit continues in
a next segment blob: appenders move on when an append reports the blob holds
`max_blocks` blocks (or the service refuses one more), and finalize reads a shard's
segments in order, going on past a segment only if it is that full.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from processing.jobs import shard_blob

OK = "ok"
ERROR = "error"
# Append Block accepts at most 4 MiB per call on older service versions; stay under it.
MAX_APPEND = 4 * 1024 * 1024 - 1024
BLOCK_LIMIT = 50_000  # blocks an append blob can hold


@dataclass(frozen=True)
class Record:
    index: int
    status: str  # ok | error
    cells: list[str]
    answer: Any = None  # text, or a dict of JSON-schema fields
    error: str = ""
    code: str = ""  # machine-readable error kind: content_filter, bad_row, poison, ...
    usage: tuple[int, int] = (0, 0)  # prompt, completion tokens

    def to_line(self) -> bytes:
        data: dict[str, Any] = {"i": self.index, "status": self.status, "cells": self.cells}
        if self.status == OK:
            data["answer"] = self.answer
            data["usage"] = list(self.usage)
        else:
            data["error"] = self.error
            data["code"] = self.code
        # ensure_ascii keeps every control character escaped, so one record is one line.
        return json.dumps(data, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        usage = data.get("usage") or (0, 0)
        return cls(
            index=int(data["i"]),
            status=data["status"],
            cells=data.get("cells", []),
            answer=data.get("answer"),
            error=data.get("error", ""),
            code=data.get("code", ""),
            usage=(int(usage[0]), int(usage[1])),
        )


def parse_lines(data: bytes) -> Iterator[Record]:
    for line in data.splitlines():
        if line.strip():
            yield Record.from_json(json.loads(line))


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


async def append(
    jobs: ContainerClient, job: str, shard: int, records: Iterable[Record], *, max_blocks: int = 45_000
) -> None:
    """Append records to one shard, whole lines per block (appenders run concurrently)."""
    key = (job, shard)
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
