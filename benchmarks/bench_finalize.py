"""Finalize: the seconds and peak memory of the check that merges a job's result lines.

Set-up (not timed): a manifest in `processing` state and result shards holding every row
but the last, written with `processing.adapters.shards.append` as process_rows writes them. Then,
each in a fresh process: one finalize check that scans those lines (what the checks
during a job do, incrementally), the last row's record is appended, and the measured
check: it reads the new tail, sees every row and writes the ordered, de-duplicated
results CSV and JSON lines. The floor moves the same bytes (the shards in, the two
outputs' sizes out in 4 MiB blocks) with no parsing or formatting.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

from benchmarks.common import HEADER, PIPELINE_ONE, Context, Direct, Result, loadavg, row_cells, run_worker
from processing.adapters import job_store, shards
from processing.core.layout import FINALIZE_QUEUE, JOBS_CONTAINER, OUTPUT_CONTAINER
from processing.core.manifest import Manifest
from processing.core.pipelines import load_pipeline
from processing.core.records import Record
from processing.core.result_columns import added_columns
from processing.core.settings import DEFAULTS
from processing.core.states import JobState

SHARD_ROWS = DEFAULTS["shard_rows"]
MAX_BLOCKS = DEFAULTS["shard_max_blocks"]


def _record(index: int) -> Record:
    cells = row_cells(index)
    answer = f"emulated answer {hashlib.sha256(cells[2].encode()).hexdigest()[:16]}"
    return Record.answered(index, cells, answer, (44, 9))


async def _set_up(ctx: Context, direct: Direct, lines: int) -> str:
    pipeline = load_pipeline(PIPELINE_ONE, ctx.pipelines_dir)
    job = f"bench-finalize-{uuid.uuid4().hex[:12]}"
    container = direct.blobs.get_container_client(JOBS_CONTAINER)
    manifest = Manifest(
        job=job,
        source_container="input",
        source_blob=f"{PIPELINE_ONE}/finalize-{lines}.csv",  # never uploaded: not superseded
        source_url=f"http://127.0.0.1/devstoreaccount1/input/{PIPELINE_ONE}/finalize-{lines}.csv",
        source_etag="0x8DCBENCH",
        pipeline_name=PIPELINE_ONE,
        output_prefix=f"{PIPELINE_ONE}/finalize-{lines}-{job}",
        state=JobState.PROCESSING,
        pipeline=pipeline.to_dict(),
        header=list(HEADER),
        output_columns=added_columns(HEADER, pipeline.output.fields),
        delimiter=",",
        shard_rows=SHARD_ROWS,
        total_rows=lines,
        ingested_rows=lines,
    )
    if not await job_store.create(container, manifest):
        raise RuntimeError(f"manifest of {job} exists already")
    for shard in range(manifest.shards):
        first = shard * SHARD_ROWS
        last = min(lines - 1, first + SHARD_ROWS)  # the job's very last row comes later
        await shards.append(container, job, shard, [_record(i) for i in range(first, last)], max_blocks=MAX_BLOCKS)
    return job


async def run(ctx: Context) -> list[Result]:
    lines = ctx.sizes.finalize_lines
    direct = Direct(ctx.direct)
    env = ctx.env()
    try:
        ctx.log(f"finalize: writing {lines - 1:,} result lines")
        job = await _set_up(ctx, direct, lines)
        await direct.clear_queue(FINALIZE_QUEUE)
        ctx.log("finalize: a check that scans them (not the figure)")
        scan = await asyncio.to_thread(run_worker, ctx, ["finalize", job], env)
        if scan["state"] != JobState.PROCESSING:
            raise RuntimeError(f"the scanning check ended as {scan}")
        await direct.clear_queue(FINALIZE_QUEUE)  # it rescheduled itself
        container = direct.blobs.get_container_client(JOBS_CONTAINER)
        await shards.append(container, job, (lines - 1) // SHARD_ROWS, [_record(lines - 1)], max_blocks=MAX_BLOCKS)
        ctx.log(f"finalize: the merge of {lines:,} lines")
        merge = await asyncio.to_thread(run_worker, ctx, ["finalize", job], env)
        merge["loadavg"] = loadavg()
        if merge["state"] != JobState.DONE or merge["counts"].get("ok") != lines:
            raise RuntimeError(f"the merging check ended as {merge}")
        csv_bytes = await direct.blob_size(OUTPUT_CONTAINER, merge["results"]["csv"])
        jsonl_bytes = await direct.blob_size(OUTPUT_CONTAINER, merge["results"]["jsonl"])
        ctx.log("finalize: the floor (the same bytes in and out, no parsing)")
        floor = await asyncio.to_thread(run_worker, ctx, ["finalize-floor", job, str(csv_bytes), str(jsonl_bytes)], env)
        floor["loadavg"] = loadavg()
    finally:
        await direct.close()

    details: dict[str, Any] = {
        "lines": lines,
        "shards": -(-lines // SHARD_ROWS),
        "scan_check": scan,
        "merge_check": merge,
        "floor": floor,
        "output_bytes": {"csv": csv_bytes, "jsonl": jsonl_bytes},
        "notes": [
            "finalize_seconds: the last check of a job (scan the new tail, write results.csv and .jsonl); "
            "the earlier checks' incremental scan is scan_check",
            "baseline: the floor moves the same bytes with no parsing or formatting",
            "peak RSS includes the interpreter and the SDKs: rss_before_mb is the process before the check",
        ],
    }
    ctx.details["finalize"] = details
    rate = f"{lines / merge['seconds']:,.0f} lines/s; scan of {lines - 1:,} lines {scan['seconds']:.1f} s"
    before = f"{merge['rss_before_mb']:.0f} MB before the check"
    # Both figures are the merge against the floor: name -> (their key, digits, unit, the floor's unit, note).
    figures = {
        "finalize_seconds": ("seconds", 2, "s", "s (floor: same bytes, no parsing)", rate),
        "finalize_peak_rss_mb": ("peak_rss_mb", 1, "MB", "MB (floor's peak RSS)", before),
    }
    return [
        Result(name, round(merge[key], digits), unit, round(floor[key], digits), None, baseline_unit=per, note=note)
        for name, (key, digits, unit, per, note) in figures.items()
    ]
