"""Writing output/<pipeline>/<file>.results.csv and .results.jsonl: shard by shard, in row order,
keeping the first record of each row, so memory is bounded by one shard, not by the file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobClient

from processing.adapters import shards
from processing.adapters.clients import Clients
from processing.core.csv_reader import CsvStream, ParsedRow
from processing.core.errors import JobInputError
from processing.core.formulas import safe_row
from processing.core.layout import normalise_etag, results_blobs
from processing.core.manifest import Manifest
from processing.core.pipelines import Pipeline
from processing.core.records import Record, parse_lines
from processing.core.result_columns import unique_header
from processing.core.states import RowCode

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 * 1024 * 1024


# Line separators that str.splitlines() and JavaScript treat as line ends: escaped, so one
# record is one line for every reader (json.dumps keeps them raw with ensure_ascii=False).
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def json_line(data: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON, and a .results.jsonl must stay readable by any
    # JSON reader. Answers are parsed strictly (processing/core/answers.py) and shard records read
    # NaN as null (records.py), so this raises only if a new path lets one in.
    return json.dumps(data, ensure_ascii=False, allow_nan=False).translate(_LINE_BREAKS).encode() + b"\n"


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _BlockWriter:
    """Stream an output blob as staged blocks, committed at the end."""

    def __init__(self, blob: BlobClient, content_type: str) -> None:
        self.blob = blob
        self.content_type = content_type
        self.buffer = bytearray()
        self.blocks: list[BlobBlock] = []

    async def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= BLOCK_BYTES:
            await self._stage()

    async def _stage(self) -> None:
        block_id = uuid.uuid4().hex
        await self.blob.stage_block(block_id, bytes(self.buffer))
        self.blocks.append(BlobBlock(block_id))
        self.buffer.clear()

    async def commit(self) -> None:
        if self.buffer:
            await self._stage()
        # An empty list makes an empty blob (a header-only file's .jsonl); no 0-byte block.
        await self.blob.commit_block_list(self.blocks, content_settings=ContentSettings(content_type=self.content_type))


def _row_out(width: int, fields: tuple[str, ...], record: Record) -> tuple[list[str], list[str]]:
    cells = list(record.cells[:width]) + [""] * max(0, width - len(record.cells))
    if record.ok:
        answers = (
            [_cell_text(record.answer)]
            if len(fields) == 1 and not isinstance(record.answer, dict)
            else [_cell_text((record.answer or {}).get(f)) for f in fields]
        )
    else:
        answers = [""] * len(fields)
    return cells, [*answers, record.status, record.error]


async def _superseded(clients: Clients, manifest: Manifest) -> bool:
    """True if the input was uploaded again (a new ETag) since this job read it."""
    blob = clients.blobs.get_blob_client(manifest.source_container, manifest.source_blob)
    try:
        props = await blob.get_blob_properties()
    except ResourceNotFoundError:
        return False  # deleted, not replaced: this job's results are still the latest
    return normalise_etag(props.etag) != manifest.source_etag


class _SourceRows:
    """The input file's rows, read in step with the output (row order), for rows without a record.

    Only a job completed by the stall deadline needs them; if the input was deleted or replaced
    meanwhile, those rows keep empty cells and their error still names the row.
    """

    def __init__(self, clients: Clients, manifest: Manifest) -> None:
        self.clients = clients
        self.manifest = manifest
        self._stream: CsvStream | None = None
        self._rows: AsyncGenerator[ParsedRow, None] | None = None
        self._current: ParsedRow | None = None

    async def open(self) -> None:
        m = self.manifest
        blob = self.clients.blobs.get_blob_client(m.source_container, m.source_blob)
        try:
            download = await blob.download_blob(etag=m.source_etag, match_condition=MatchConditions.IfNotModified)
            stream = CsvStream(
                download.chunks(),
                name=f"{m.source_container}/{m.source_blob}",
                delimiter=m.delimiter,
                encoding=Pipeline.from_dict(m.pipeline).encoding,
                max_row_bytes=self.clients.settings.max_row_bytes,
            )
            await stream.__aenter__()
        except (ResourceNotFoundError, ResourceModifiedError, JobInputError) as exc:
            log.warning("job %s: cannot re-read the input for its missing rows: %s", m.job, exc)
            return
        self._stream = stream
        self._rows = self._iterate(stream)

    @staticmethod
    async def _iterate(stream: CsvStream) -> AsyncGenerator[ParsedRow, None]:
        async for batch in stream.batches():
            for row in batch:
                yield row

    async def cells(self, index: int) -> list[str]:
        while self._rows is not None and (self._current is None or self._current.index < index):
            try:
                self._current = await anext(self._rows)
            except StopAsyncIteration:
                self._rows = None
            except (ResourceModifiedError, JobInputError) as exc:
                log.warning("job %s: re-reading the input stopped: %s", self.manifest.job, exc)
                self._rows = None
        if self._current is not None and self._current.index == index:
            return list(self._current.cells)
        return []

    async def close(self) -> None:
        if self._rows is not None:
            await self._rows.aclose()
        if self._stream is not None:
            await self._stream.__aexit__(None, None, None)


async def _shard_records(clients: Clients, manifest: Manifest, shard: int) -> dict[int, Record]:
    """The first record of each row of a shard, read over its segments in order."""
    first: dict[int, Record] = {}
    async for segment in shards.segments(clients.jobs, manifest.job, shard, max_blocks=manifest.shard_max_blocks):
        data = await (await segment.blob.download_blob()).readall()
        for record in parse_lines(data):
            first.setdefault(record.index, record)
    return first


def _missing_text(manifest: Manifest) -> str:
    if manifest.incomplete:
        return f"no result was recorded: {manifest.incomplete['reason']}"
    return "no result was recorded"


async def write_outputs(clients: Clients, manifest: Manifest) -> dict[str, str]:
    missing = _missing_text(manifest)
    manifest.superseded = await _superseded(clients, manifest)
    csv_name, jsonl_name = results_blobs(manifest.output_prefix, manifest.job, superseded=manifest.superseded)
    csv_out = _BlockWriter(clients.output.get_blob_client(csv_name), "text/csv; charset=utf-8")
    jsonl_out = _BlockWriter(clients.output.get_blob_client(jsonl_name), "application/x-ndjson")
    fields = Pipeline.from_dict(manifest.pipeline).output.fields
    width = len(manifest.header)
    keys = unique_header(manifest.header)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(safe_row([*manifest.header, *manifest.output_columns], manifest.pipeline))
    total = manifest.total_rows or 0
    # Rows that never got a record (a stalled job) take their cells from the input file itself.
    source = _SourceRows(clients, manifest)
    if manifest.incomplete:
        await source.open()
    try:
        for shard in range(manifest.shards):
            first = await _shard_records(clients, manifest, shard)
            start = shard * manifest.shard_rows
            for index in range(start, min(total, start + manifest.shard_rows)):
                record = first.get(index)
                if record is None:
                    record = Record.failed(index, await source.cells(index), RowCode.MISSING, missing)
                cells, added = _row_out(width, fields, record)
                writer.writerow(safe_row(cells + added, manifest.pipeline))
                line: dict[str, Any] = {
                    "row": index + 1,
                    "input": dict(zip(keys, cells, strict=True)),
                    "status": record.status,
                }
                if record.ok:
                    line["answer"] = record.answer
                    line["usage"] = {
                        "prompt_tokens": record.usage[0],
                        "completion_tokens": record.usage[1],
                        "reasoning_tokens": record.usage[2],
                    }
                else:
                    line["error"] = record.error
                    line["code"] = record.code
                await jsonl_out.write(json_line(line))
                if text.tell() >= BLOCK_BYTES:
                    await csv_out.write(text.getvalue().encode())
                    text.seek(0)
                    text.truncate()
            del first
    finally:
        await source.close()
    await csv_out.write(text.getvalue().encode())
    await csv_out.commit()
    await jsonl_out.commit()
    return {"csv": csv_name, "jsonl": jsonl_name}
