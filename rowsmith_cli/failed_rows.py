"""`rowsmith results JOB --failed`: the rows that ended as errors, as uploaded, in a CSV to upload again.

Which rows failed comes from the job's `.results.jsonl` (`row` and `status` only). Their cells
come from the job's own input blob, read again at the ETag the job read, and parsed as ingest
parsed it (the job's delimiter and encoding): never from the records, whose cells may be cut to
the header's width (a ragged row), shortened (a row over ROWSMITH_MAX_ROW_BYTES) or not the
job's at all. So every row keeps its field count and every cell its full text. Cells are then
neutralised against formula injection as in the results CSV (processing/core/formulas.py),
unless the pipeline says `neutralise_formulas = false`, and written with the job's delimiter and
the pipeline's encoding (UTF-8 if it names none), so the file reads the same way when uploaded
to the same pipeline. An input that began with a byte-order mark gets its failed rows in the
encoding the mark named, behind the same mark (Excel opens it as it opened the input).
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from processing.core.csv_reader import CsvStream
from processing.core.formulas import safe_row
from processing.core.manifest import Manifest
from processing.core.pipelines import Pipeline

# Rows are read whole here: far above any ROWSMITH_MAX_ROW_BYTES a job could have run with
# (past 8 x that setting the job fails as a whole and has no results to take rows from).
RAW_ROW_BYTES = 1 << 30


class InputGone(RuntimeError):
    """The job's input blob was deleted or replaced since the job read it."""


@dataclass(frozen=True)
class FailedRows:
    written: int  # rows written to the file
    not_found: int  # failed rows the input no longer has (0 unless the records disagree with it)


async def failed_indices(chunks: AsyncIterator[bytes]) -> set[int]:
    """The 0-based indices of the rows a `.results.jsonl` reports as not ok."""
    failed: set[int] = set()
    pending = b""

    def take(line: bytes) -> None:
        if line.strip():
            record = json.loads(line)
            if record.get("status") != "ok":
                failed.add(int(record["row"]) - 1)

    async for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            take(line)
    take(pending)
    return failed


async def write_failed_rows(blobs: BlobServiceClient, manifest: Manifest, failed: set[int], dest: Path) -> FailedRows:
    """Write the input's header and its rows in `failed`, raw and neutralised, to `dest`."""
    source = f"{manifest.source_container}/{manifest.source_blob}"
    pipeline = Pipeline.from_dict(manifest.pipeline)
    blob = blobs.get_blob_client(manifest.source_container, manifest.source_blob)
    try:
        download = await blob.download_blob(etag=manifest.source_etag, match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, ResourceModifiedError):
        raise InputGone(
            f"{source} was deleted or uploaded again since job {manifest.job} read it, so its rows as uploaded "
            "are gone; the job's .results.jsonl (rowsmith results JOB --jsonl) has the cells the job recorded"
        ) from None
    written = 0
    stream = CsvStream(
        download.chunks(),
        name=source,
        delimiter=manifest.delimiter,
        encoding=pipeline.encoding,
        max_row_bytes=RAW_ROW_BYTES,
    )
    try:
        async with stream:
            encoding = stream.encoding if stream.bom else pipeline.encoding or "utf-8"
            with dest.open("w", newline="", encoding=encoding) as out:
                if stream.bom:
                    out.write("\ufeff")  # the mark, in the encoding it names
                writer = csv.writer(out, delimiter=stream.delimiter, lineterminator="\r\n")
                writer.writerow(safe_row(stream.header, manifest.pipeline))
                async for batch in stream.batches():
                    for row in batch:
                        if row.index in failed:
                            writer.writerow(safe_row(row.cells, manifest.pipeline))
                            written += 1
    except BaseException as exc:
        dest.unlink(missing_ok=True)  # half a file of rows to re-run is worse than none
        if isinstance(exc, ResourceModifiedError):  # uploaded again while we read it
            raise InputGone(f"{source} was uploaded again while its failed rows were read; nothing written") from None
        raise
    return FailedRows(written, len(failed) - written)
