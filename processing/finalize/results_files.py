"""Writing output/<pipeline>/<file>.results.csv and .results.jsonl: shard by shard, in row order,
keeping the first record of each row, so memory is bounded by one shard, not by the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob.aio import BlobClient

from processing.adapters import job_store, shards
from processing.adapters.clients import Clients
from processing.core.csv_reader import CsvStream, ParsedRow
from processing.core.errors import BadMessage, JobInputError, TransientError
from processing.core.formulas import safe_row
from processing.core.layout import JOB_META, SOURCE_META, normalise_etag, results_blobs
from processing.core.manifest import Manifest
from processing.core.pipelines import Pipeline
from processing.core.records import Record, parse_lines
from processing.core.result_columns import unique_header
from processing.core.results_format import results_format
from processing.core.states import CANCELLED_REASON, JobState, RowCode
from processing.core.text import clean_text

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 * 1024 * 1024


# Line separators that str.splitlines() and JavaScript treat as line ends: escaped, so one
# record is one line for every reader (json.dumps keeps them raw with ensure_ascii=False).
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def json_line(data: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON, and a .results.jsonl must stay readable by any
    # JSON reader. Answers are parsed strictly (processing/core/answers.py) and shard records read
    # NaN as null (records.py), so this raises only if a new path lets one in. clean_text: a lone
    # surrogate that got past every point of entry still cannot make the write raise.
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return clean_text(text).translate(_LINE_BREAKS).encode() + b"\n"


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _BlockWriter:
    """Stream an output blob as staged blocks, committed at the end."""

    def __init__(self, blob: BlobClient, content_type: str, condition: dict[str, Any] | None = None) -> None:
        self.blob = blob
        self.content_type = content_type
        self.condition = condition or {}  # what the commit is conditional on (see _Claim)
        self.metadata: dict[str, str] = {}
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
        await self.blob.commit_block_list(
            self.blocks,
            content_settings=ContentSettings(content_type=self.content_type),
            metadata=self.metadata or None,
            **self.condition,
        )


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


async def _current_input_etag(clients: Clients, manifest: Manifest) -> str | None:
    """The input's ETag now; None if it was deleted."""
    blob = clients.blobs.get_blob_client(manifest.source_container, manifest.source_blob)
    try:
        return normalise_etag((await blob.get_blob_properties()).etag)
    except ResourceNotFoundError:
        return None


async def _properties(blob: BlobClient) -> BlobProperties | None:
    try:
        return await blob.get_blob_properties()
    except ResourceNotFoundError:
        return None


def _condition(props: BlobProperties | None) -> dict[str, Any]:
    """Write only over what we looked at: nothing (If-None-Match: *) or that version (If-Match)."""
    if props is None:
        return {"match_condition": MatchConditions.IfMissing}
    return {"etag": props.etag, "match_condition": MatchConditions.IfNotModified}


async def _copy(clients: Clients, source: str, dest: str, metadata: dict[str, str], content_type: str) -> None:
    """Stream one output blob to another name, unless that name exists already (a retry)."""
    out = _BlockWriter(
        clients.output.get_blob_client(dest), content_type, {"match_condition": MatchConditions.IfMissing}
    )
    out.metadata = metadata
    try:
        download = await clients.output.download_blob(source)
    except ResourceNotFoundError:
        return
    async for chunk in download.chunks():
        await out.write(chunk)
    with contextlib.suppress(ResourceExistsError):
        await out.commit()


async def _set_aside(clients: Clients, manifest: Manifest, props: BlobProperties) -> None:
    """A newer upload's job is about to replace an older job's results: keep the older ones
    under that job's own name and point its manifest there, so `rowsmith results OLDJOB`
    still returns its own rows. Nothing is replaced silently."""
    old_job = (props.metadata or {}).get(JOB_META, "")
    try:
        old = await job_store.load(clients.jobs, old_job)
    except BadMessage:
        old = None
    if old is None or old.output_prefix != manifest.output_prefix or old.results.get("csv") != props.name:
        return  # nobody's results point here any more
    csv_name, jsonl_name = results_blobs(old.output_prefix, old.job, superseded=True)
    meta = dict(props.metadata or {})
    await _copy(clients, old.results["csv"], csv_name, meta, "text/csv; charset=utf-8")
    await _copy(clients, old.results.get("jsonl", ""), jsonl_name, meta, "application/x-ndjson")
    old.results = {**old.results, "csv": csv_name, "jsonl": jsonl_name}
    old.superseded = True
    await job_store.save(clients.jobs, old)  # ManifestConflict: finalize retries the whole write


async def _targets(clients: Clients, manifest: Manifest) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(csv, jsonl, csv condition, jsonl condition): where this job's results go, and the
    version of each name the write may replace.

    | the canonical results file is | and the input now is | this job writes                       |
    |-------------------------------|----------------------|---------------------------------------|
    | missing, or this job's own    | any                  | the canonical names                   |
    | any other                     | a newer upload       | `<prefix>.results.<job>.*`            |
    | an older upload's job's       | this job's, or gone  | the canonical names, after the older  |
    |                               |                      | job's results are set aside for it    |
    """
    prefix = manifest.output_prefix
    csv_name, jsonl_name = results_blobs(prefix, manifest.job, superseded=False)
    csv_blob = clients.output.get_blob_client(csv_name)
    existing = await _properties(csv_blob)
    owner = (existing.metadata or {}).get(JOB_META) if existing else None
    if owner != manifest.job:
        current = await _current_input_etag(clients, manifest)
        manifest.superseded = current is not None and current != manifest.source_etag
        if manifest.superseded:
            csv_name, jsonl_name = results_blobs(prefix, manifest.job, superseded=True)
            csv_blob = clients.output.get_blob_client(csv_name)
            existing = await _properties(csv_blob)
        elif existing is not None and owner:
            await _set_aside(clients, manifest, existing)
    jsonl = await _properties(clients.output.get_blob_client(jsonl_name))
    return csv_name, jsonl_name, _condition(existing), _condition(jsonl)


class _SourceRows:
    """The input file's rows, read in step with the output (row order), for rows without a record.

    Only a job completed by the stall deadline, or cancelled, needs them; if the input was deleted or replaced
    meanwhile, those rows keep empty cells and their error still names the row.
    """

    def __init__(self, clients: Clients, manifest: Manifest) -> None:
        self.clients = clients
        self.manifest = manifest
        self._stream: CsvStream | None = None
        self._rows: AsyncGenerator[ParsedRow] | None = None
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
    async def _iterate(stream: CsvStream) -> AsyncGenerator[ParsedRow]:
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
            if record.is_result:
                first.setdefault(record.index, record)
    return first


def _missing_text(manifest: Manifest) -> str:
    if manifest.incomplete:
        return f"no result was recorded: {manifest.incomplete['reason']}"
    return "no result was recorded"


async def write_outputs(clients: Clients, manifest: Manifest, tally: Counter[str] | None = None) -> dict[str, str]:
    """Every row in order; a row without a record is `cancelled` in a cancelled job, else `missing`.

    `tally`, if given, counts the rows as written: `ok`, `error`, and `cancelled` among the
    errors (a cancelled job's rows still in flight may land after the last scan)."""
    cancelled = manifest.state == JobState.CANCELLED
    code, missing = (RowCode.CANCELLED, CANCELLED_REASON) if cancelled else (RowCode.MISSING, _missing_text(manifest))
    csv_name, jsonl_name, csv_if, jsonl_if = await _targets(clients, manifest)
    csv_out = _BlockWriter(clients.output.get_blob_client(csv_name), "text/csv; charset=utf-8", csv_if)
    jsonl_out = _BlockWriter(clients.output.get_blob_client(jsonl_name), "application/x-ndjson", jsonl_if)
    csv_out.metadata = jsonl_out.metadata = {JOB_META: manifest.job, SOURCE_META: manifest.source_etag}
    fields = Pipeline.from_dict(manifest.pipeline).output.fields
    width = len(manifest.header)
    keys = unique_header(manifest.header)
    settings = clients.settings
    form = results_format(
        input_delimiter=manifest.delimiter,
        input_bom=manifest.bom,
        input_encoding=manifest.encoding,
        delimiter=settings.results_delimiter,
        bom=settings.results_bom,
    )
    if form.prefix:
        await csv_out.write(form.prefix)
    text = io.StringIO()
    writer = csv.writer(text, delimiter=form.delimiter, lineterminator="\r\n")
    writer.writerow(safe_row([*manifest.header, *manifest.output_columns], manifest.pipeline))
    total = manifest.total_rows or 0
    # Rows that never got a record (a stalled or cancelled job) take their cells from the input file.
    source = _SourceRows(clients, manifest)
    if manifest.incomplete or cancelled:
        await source.open()
    try:
        for shard in range(manifest.shards):
            first = await _shard_records(clients, manifest, shard)
            start = shard * manifest.shard_rows
            for index in range(start, min(total, start + manifest.shard_rows)):
                record = first.get(index)
                if record is None:
                    record = Record.failed(index, await source.cells(index), code, missing)
                if tally is not None:
                    tally[record.status] += 1
                    tally[RowCode.CANCELLED] += record.code == RowCode.CANCELLED
                cells, added = _row_out(width, fields, record)
                writer.writerow(safe_row(cells + added, manifest.pipeline))
                line: dict[str, Any] = {
                    "row": index + 1,
                    "input": dict(zip(keys, cells, strict=True)),
                    "status": record.status,
                }
                if record.ok:
                    line["answer"] = record.answer
                else:
                    line["error"] = record.error
                    line["code"] = record.code
                if record.ok or any(record.usage):
                    # An error row's billed attempts (a schema retried, then given up) show too.
                    line["usage"] = {
                        "prompt_tokens": record.usage[0],
                        "completion_tokens": record.usage[1],
                        "reasoning_tokens": record.usage[2],
                        "cached_tokens": record.usage[3],
                    }
                await jsonl_out.write(json_line(line))
                if text.tell() >= BLOCK_BYTES:
                    await csv_out.write(clean_text(text.getvalue()).encode())
                    text.seek(0)
                    text.truncate()
            del first
    finally:
        await source.close()
    await csv_out.write(clean_text(text.getvalue()).encode())
    try:
        await csv_out.commit()
        await jsonl_out.commit()
    except (ResourceExistsError, ResourceModifiedError):
        # Someone wrote the name since we looked: never overwrite blind; the check is retried
        # (the host redelivers finalize) and decides again with what is there now.
        raise TransientError(f"job {manifest.job}: its results file changed while it was written") from None
    return {"csv": csv_name, "jsonl": jsonl_name}
