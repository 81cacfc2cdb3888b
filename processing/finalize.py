"""Finalize: notice when every row of a job has a record, then write the results.

Each check reads only what was appended to the shards since the last check (append
blobs only grow), marks rows seen in a bitmap and keeps counts; the progress is one blob
written with an ETag condition, so a duplicate finalize chain loses the race and stops.
When all rows are seen the outputs are written shard by shard, in row order, keeping the
first record of each row, so memory is bounded by one shard, not by the file.

A job that stops making progress (no new record for ROWSMITH_STALL_TIMEOUT_SECONDS) is
completed anyway: its rows without a record are written as errors with code "missing" and
the manifest's `incomplete` says how many and why, so a job always ends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobClient

from processing import job_store, shards
from processing.cells import safe_row
from processing.clients import Clients
from processing.columns import unique_header
from processing.completion import Completion, Step, completion, first_step, stall_reason
from processing.csvstream import CsvStream, ParsedRow
from processing.errors import JobInputError
from processing.failures import fail_job, read_fatal
from processing.layout import normalise_etag, progress_blob, results_blobs
from processing.manifest import Manifest
from processing.messages import FinalizeMessage
from processing.pipelines import Pipeline
from processing.records import Record, parse_lines
from processing.states import JobState, RowCode

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 * 1024 * 1024


@dataclass
class Progress:
    offsets: list[list[int]] = field(default_factory=list)  # bytes read of each shard's segments
    seen: int = 0
    ok: int = 0
    error: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    changed_at: float = 0.0  # wall time of the last new record (or of the first check)
    bitmap: bytearray = field(default_factory=bytearray, repr=False)
    etag: str | None = field(default=None, repr=False)

    def has(self, index: int) -> bool:
        return bool(self.bitmap[index >> 3] >> (index & 7) & 1)

    def mark(self, index: int) -> bool:
        """True if this is the first record of the row."""
        if self.has(index):
            return False
        self.bitmap[index >> 3] |= 1 << (index & 7)
        return True

    def all_seen(self, start: int, end: int) -> bool:
        """Whether every row in [start, end) has a record; whole bytes are compared at C speed."""
        head = min(end, -(-start // 8) * 8)  # first multiple of 8 at or after start
        tail = max(head, end // 8 * 8)  # last multiple of 8 at or before end
        whole = self.bitmap[head // 8 : tail // 8]
        return (
            all(self.has(i) for i in range(start, head))
            and whole == b"\xff" * len(whole)
            and all(self.has(i) for i in range(tail, end))
        )

    def to_bytes(self) -> bytes:
        head = {k: v for k, v in asdict(self).items() if k not in ("bitmap", "etag")}
        # One blob holds counts and bitmap together, so they can never disagree.
        return json.dumps(head).encode() + b"\n" + bytes(self.bitmap)

    @classmethod
    def from_bytes(cls, raw: bytes, etag: str) -> Progress:
        head, _, bitmap = raw.partition(b"\n")
        progress = cls(**json.loads(head))
        progress.bitmap = bytearray(bitmap)
        progress.etag = etag
        return progress


async def _load_progress(clients: Clients, manifest: Manifest) -> Progress:
    total = manifest.total_rows or 0
    try:
        stream = await clients.jobs.download_blob(progress_blob(manifest.job))
        progress = Progress.from_bytes(await stream.readall(), stream.properties.etag)
    except ResourceNotFoundError:
        progress = Progress()
    progress.bitmap.extend(b"\x00" * max(0, total // 8 + 1 - len(progress.bitmap)))
    progress.offsets.extend([0] for _ in range(max(0, manifest.shards - len(progress.offsets))))
    return progress


async def _save_progress(clients: Clients, manifest: Manifest, progress: Progress) -> bool:
    kwargs: dict[str, Any] = (
        {"etag": progress.etag, "match_condition": MatchConditions.IfNotModified}
        if progress.etag
        else {"match_condition": MatchConditions.IfMissing}
    )
    try:
        result = await clients.jobs.get_blob_client(progress_blob(manifest.job)).upload_blob(
            progress.to_bytes(), overwrite=True, **kwargs
        )
    except (ResourceModifiedError, ResourceExistsError):
        return False
    progress.etag = result["etag"]
    return True


async def _scan(clients: Clients, manifest: Manifest, progress: Progress) -> None:
    total = manifest.total_rows or 0
    for shard in range(manifest.shards):
        first = shard * manifest.shard_rows
        if progress.all_seen(first, min(total, first + manifest.shard_rows)):
            continue  # complete: later appends can only be duplicates, so spare the request
        offsets = progress.offsets[shard]
        async for segment in shards.segments(clients.jobs, manifest.job, shard, max_blocks=manifest.shard_max_blocks):
            if len(offsets) <= segment.number:
                offsets.append(0)
            start = offsets[segment.number]
            size = segment.properties.size
            if size > start:
                data = await (await segment.blob.download_blob(offset=start, length=size - start)).readall()
                # Appends are whole lines; stop at the last newline in case a block landed mid-read.
                end = data.rfind(b"\n") + 1
                _count(progress, parse_lines(data[:end]), total)
                offsets[segment.number] = start + end


def _count(progress: Progress, records: Iterable[Record], total: int) -> None:
    for record in records:
        if 0 <= record.index < total and progress.mark(record.index):
            progress.seen += 1
            if record.ok:
                progress.ok += 1
                progress.prompt_tokens += record.usage[0]
                progress.completion_tokens += record.usage[1]
            else:
                progress.error += 1


# Line separators that str.splitlines() and JavaScript treat as line ends: escaped, so one
# record is one line for every reader (json.dumps keeps them raw with ensure_ascii=False).
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _json_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).translate(_LINE_BREAKS).encode() + b"\n"


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


async def _write_outputs(clients: Clients, manifest: Manifest) -> dict[str, str]:
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
                    line["usage"] = {"prompt_tokens": record.usage[0], "completion_tokens": record.usage[1]}
                else:
                    line["error"] = record.error
                    line["code"] = record.code
                await jsonl_out.write(_json_line(line))
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


async def handle_finalize(body: str | bytes, clients: Clients) -> None:
    message = FinalizeMessage.from_json(body)
    manifest = await job_store.load(clients.jobs, message.job)
    step = first_step(manifest.state if manifest else None)
    if step == Step.STOP:
        return
    assert manifest is not None
    interval = max(1, round(clients.settings.finalize_interval_seconds))
    if step == Step.WAIT:
        await _reschedule(clients, message, interval)
        return
    fatal = await read_fatal(clients, manifest.job)
    if fatal:
        await fail_job(clients, manifest, fatal)
        return
    progress = await _load_progress(clients, manifest)
    before = progress.seen
    await _scan(clients, manifest, progress)
    now = time.time()
    if progress.seen > before or not progress.changed_at:
        progress.changed_at = now
    if not await _save_progress(clients, manifest, progress):
        log.info("job %s: another finalize holds the progress; this chain stops", manifest.job)
        return
    manifest.counts = {"ok": progress.ok, "error": progress.error}
    manifest.tokens = {"prompt": progress.prompt_tokens, "completion": progress.completion_tokens}
    total = manifest.total_rows or 0
    stall = clients.settings.stall_timeout_seconds
    verdict = completion(total=total, seen=progress.seen, idle_seconds=now - progress.changed_at, stall_seconds=stall)
    if verdict == Completion.STALLED:
        missing = total - progress.seen
        manifest.incomplete = {"missing": missing, "reason": stall_reason(missing, stall)}
        manifest.counts["missing"] = missing
        log.error("job %s: no progress for %g s; completing it with %d row(s) missing", manifest.job, stall, missing)
    if verdict != Completion.PENDING:
        manifest.results = await _write_outputs(clients, manifest)
        manifest.state = JobState.DONE
        manifest.stamp("finished")
    elif progress.seen > before:
        manifest.stamp("first_result")
    try:
        await job_store.save(clients.jobs, manifest)
    except job_store.ManifestConflict:
        log.info("job %s: manifest changed under us; another finalize is ahead", manifest.job)
        return
    if manifest.state == JobState.DONE:
        log.info("job %s done: %s", manifest.job, manifest.counts)
        return
    await _reschedule(clients, message, interval)


# After a finalize check failed every attempt (a storage outage, say), look again later
# rather than never: finalize is idempotent, and a job must always complete.
POISON_RETRY_SECONDS = 300


async def handle_finalize_poison(body: str | bytes, clients: Clients) -> None:
    message = FinalizeMessage.from_json(body)
    log.warning("job %s: finalize failed every attempt; checking again in %d s", message.job, POISON_RETRY_SECONDS)
    await _reschedule(clients, message, POISON_RETRY_SECONDS)


async def _reschedule(clients: Clients, message: FinalizeMessage, delay: int) -> None:
    await clients.finalize_queue.send_message(
        FinalizeMessage(message.job, checks=message.checks + 1).to_json(), visibility_timeout=delay
    )
