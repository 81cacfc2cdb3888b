"""Result records: one JSON line per row, appended to per-job shards (append blobs).

An append is not idempotent and a message may be redelivered after its append, so a
shard may hold a row more than once; finalize keeps the first record per row. Rows are
sharded by index so each shard stays far below the 50,000-block limit of an append blob.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from processing.jobs import shard_blob

OK = "ok"
ERROR = "error"
# Append Block accepts at most 4 MiB per call on older service versions; stay under it.
MAX_APPEND = 4 * 1024 * 1024 - 1024


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


async def ensure_shard(jobs: ContainerClient, job: str, shard: int) -> None:
    blob = jobs.get_blob_client(shard_blob(job, shard))
    with contextlib.suppress(ResourceExistsError):
        await blob.create_append_blob(match_condition=MatchConditions.IfMissing)


async def append(jobs: ContainerClient, job: str, shard: int, records: Iterable[Record]) -> None:
    """Append records to one shard, whole lines per block (appenders run concurrently)."""
    blob = jobs.get_blob_client(shard_blob(job, shard))
    for block in _blocks(r.to_line() for r in records):
        try:
            await blob.append_block(block)
        except ResourceNotFoundError:
            await ensure_shard(jobs, job, shard)
            await blob.append_block(block)
