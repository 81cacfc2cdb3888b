"""The job commands: submit, watch, cancel, status, results. Each returns (exit code, JSON-able summary)."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from processing.adapters import cancels, job_store
from processing.core import layout
from processing.core.budget import BUDGET_META, check_priced, job_budget
from processing.core.errors import BadName
from processing.core.layout import (
    FINALIZE_QUEUE,
    INPUT_CONTAINER,
    JOB_META,
    JOBS_CONTAINER,
    OUTPUT_CONTAINER,
)
from processing.core.manifest import Manifest
from processing.core.prices import job_price
from processing.core.states import FINAL_STATES, RESULT_STATES, JobState, RowCode
from rowsmith_cli import failed_rows, preflight, progress
from rowsmith_cli.target import Target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 3
# The job is done but not one row has an answer (every row an error): nothing to use, so not a success.
EXIT_NO_ROWS_ANSWERED = 4


def summary(manifest: Manifest) -> dict[str, Any]:
    started = manifest.times.get("created")
    finished = manifest.times.get("finished")

    def output_blob(kind: str) -> str | None:
        return f"{OUTPUT_CONTAINER}/{manifest.results[kind]}" if kind in manifest.results else None

    return {
        "job": manifest.job,
        "state": manifest.state,
        "source": f"{manifest.source_container}/{manifest.source_blob}",
        "pipeline": manifest.pipeline_name,
        "total_rows": manifest.total_rows,
        "ok_rows": manifest.counts.get("ok", 0),
        # Rows completed as `missing` by the stall deadline are errors in the output too.
        "error_rows": manifest.counts.get("error", 0) + manifest.counts.get("missing", 0),
        "missing_rows": manifest.counts.get("missing", 0),
        # Cancelled rows are errors too (counted in error_rows); set once finalize ended a cancelled job.
        "cancelled_rows": manifest.counts.get("cancelled", 0),
        "prompt_tokens": manifest.tokens.get("prompt", 0),
        "completion_tokens": manifest.tokens.get("completion", 0),
        "reasoning_tokens": manifest.tokens.get("reasoning", 0),
        "cached_tokens": manifest.tokens.get("cached", 0),
        # Every request sent and every billed answer, retries and duplicate deliveries included.
        "requests": manifest.requests,
        "retries": manifest.retries,
        "cost_usd": manifest.cost_usd,  # None: the price table has no price for the job's deployment
        "price_model": (manifest.price or {}).get("model"),
        "budget_usd": manifest.budget_usd,
        "budget_rows": manifest.row_errors.get(RowCode.BUDGET, {}).get("rows", 0),
        "budget_reached": bool((manifest.budget or {}).get("reached")),
        "seconds": round((finished or time.time()) - started, 1) if started else None,
        "results_blob": output_blob("csv"),
        "results_jsonl_blob": output_blob("jsonl"),
        "error_report_blob": output_blob("error_report"),
        "error": (manifest.error or {}).get("error"),
    }


async def submit(
    target: Target,
    path: Path,
    *,
    pipeline: str | None,
    wait: bool,
    timeout: float,
    quiet: bool,
    check: dict[str, Any] | None = None,
    budget_usd: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """Upload `path`; with `check` (the app's settings) it is first read as ingest would read it,
    and a file whose job would fail is refused with that job's message, before any upload.
    `budget_usd` caps the job's spend (below the pipeline's own cap, if it has one)."""
    preflight.check_path(path)
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise ValueError(f"--budget-usd must be a positive number of dollars, not {budget_usd:g}")
    if check is not None:
        checked_pipeline = preflight.pipeline_for(pipeline, check)
        await preflight.check_file(path, checked_pipeline, check)
        deployment = checked_pipeline.deployment or check["openai_deployment"]
        budget = job_budget(
            checked_pipeline.budget_usd, {BUDGET_META: str(budget_usd)} if budget_usd else None, str(path)
        )
        check_priced(
            budget,
            job_price(deployment, check.get("prices_file")) is not None,
            deployment,
            checked_pipeline.name,
            str(path),
        )
    name = preflight.input_blob_name(path, pipeline)
    blob = target.blobs.get_blob_client(INPUT_CONTAINER, name)
    with path.open("rb") as data:
        result = await blob.upload_blob(
            data,
            overwrite=True,
            content_settings=ContentSettings(content_type="text/csv"),
            max_concurrency=4,
            # The blob carries the cap to ingest: storage alone, as everything the CLI asks of a job.
            metadata={BUDGET_META: repr(budget_usd)} if budget_usd is not None else None,
        )
    etag = result["etag"]
    # Only the upload, in Azure and locally: Event Grid (the local stack's own, there) raises
    # the BlobCreated event, and the job's id follows from the blob's URL and new ETag.
    job = layout.job_id_for(blob.url, etag)
    info: dict[str, Any] = {"job": job, "state": "submitted", "input_blob": f"{INPUT_CONTAINER}/{name}"}
    if not quiet:
        print(f"uploaded {path} to {INPUT_CONTAINER}/{name} ({target.description}); job {job}", file=sys.stderr)
    if not wait:
        return EXIT_OK, info
    return await wait_for(target, job, timeout=timeout, quiet=quiet)


def interrupted_line(job: str) -> str:
    return (
        f"interrupted: job {job} keeps running; re-attach with `rowsmith watch {job}`, "
        f"or stop it with `rowsmith cancel {job}`"
    )


def snapshot(manifest: Manifest, at: float) -> progress.Snapshot:
    return progress.Snapshot.of(
        summary(manifest), at=at, ingested=manifest.ingested_rows, row_errors=manifest.row_errors
    )


async def error_report(target: Target, manifest: Manifest) -> dict[str, Any]:
    """A failed job's error report (its error.json: what, where, fix), else what its manifest says."""
    detail = dict(manifest.error or {})
    name = manifest.results.get("error_report")
    if name:
        try:
            stream = await target.blobs.get_blob_client(OUTPUT_CONTAINER, name).download_blob()
            body = json.loads(await stream.readall())
        except (ResourceNotFoundError, ValueError):
            body = None
        if isinstance(body, dict):
            detail.update({k: str(body[k]) for k in ("error", "where", "fix") if body.get(k)})
    return detail


async def wait_for(target: Target, job: str, *, timeout: float, quiet: bool) -> tuple[int, dict[str, Any]]:
    container = target.blobs.get_container_client(JOBS_CONTAINER)
    deadline = time.monotonic() + timeout
    # --json: plain lines on stderr too (stdout keeps its one JSON object).
    display = progress.ProgressDisplay(sys.stderr, plain=quiet)
    manifest: Manifest | None = None
    try:
        while time.monotonic() < deadline:
            # A local stack that dies while we wait is told at the next poll, not after the SDK's retries.
            gone = target.not_running()
            if gone:
                display.close()
                return EXIT_FAILED, {"job": job, "state": manifest.state if manifest else "unknown", "error": gone}
            manifest = await job_store.load(container, job)
            if manifest:
                display.update(snapshot(manifest, time.monotonic()))
                if manifest.state in FINAL_STATES:
                    break
            await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels the task, then main exits 130): the job goes on in the app.
        display.close()
        print(interrupted_line(job), file=sys.stderr, flush=True)
        raise
    display.close()
    if manifest is None:
        return EXIT_TIMEOUT, {"job": job, "state": "not-started", "error": "the job did not start in time"}
    info = summary(manifest)
    if manifest.state == JobState.DONE:
        failed = info["error_rows"]
        if failed and not info["ok_rows"]:
            info["error"] = f"every row failed ({failed} of {info['total_rows']}): {_main_error(manifest)}"
            return EXIT_NO_ROWS_ANSWERED, info
        if failed:
            info["warning"] = (
                f"{failed} of {info['total_rows']} rows failed ({_main_error(manifest)}); "
                f"`rowsmith results {job} --failed` writes them to a CSV to upload again"
            )
        return EXIT_OK, info
    if manifest.state == JobState.FAILED:
        # What, where and fix, as the job's error report has them: main prints them under the error.
        report = await error_report(target, manifest)
        info.update({key: report[key] for key in ("error", "where", "fix") if report.get(key)})
        return EXIT_FAILED, info
    if manifest.state == JobState.CANCELLED:
        info["error"] = f"job {job} was cancelled; its results hold the rows answered before"
        return EXIT_FAILED, info
    info["error"] = f"timed out after {timeout:.0f} s; the job is still {manifest.state}"
    return EXIT_TIMEOUT, info


async def _load(target: Target, job: str) -> Manifest | None:
    """The job's manifest; a job id the app could not have made names no job (and no path)."""
    try:
        return await job_store.load(target.blobs.get_container_client(JOBS_CONTAINER), job)
    except BadName:
        return None


async def watch(target: Target, job: str, *, timeout: float, quiet: bool) -> tuple[int, dict[str, Any]]:
    """Re-attach to a job's progress: the same display and exit codes as `submit --wait`."""
    if await _load(target, job) is None:
        return EXIT_FAILED, {"job": job, "error": f"no job {job}"}
    return await wait_for(target, job, timeout=timeout, quiet=quiet)


async def cancel(target: Target, job: str) -> tuple[int, dict[str, Any]]:
    """Ask the job to stop, through storage alone; a job already ended is left as it is."""
    manifest = await _load(target, job)
    if manifest is None:
        return EXIT_FAILED, {"job": job, "error": f"no job {job}"}
    info = summary(manifest)
    if manifest.state in FINAL_STATES:
        info["cancel"] = "not needed"
        info["message"] = f"job {job} is already {manifest.state}; nothing to cancel"
        return EXIT_OK, info
    first = await cancels.request(target.blobs.get_container_client(JOBS_CONTAINER), job)
    info["cancel"] = "requested" if first else "already requested"
    when = "within one finalize interval"
    if first:
        try:
            # Checked now, not at the next scheduled check (which queue polling can delay past an interval).
            await cancels.check_now(target.queues.get_queue_client(FINALIZE_QUEUE), job)
        except HttpResponseError as exc:
            # Without queue rights the request still stands: the job's own next check ends it.
            info["warning"] = f"could not ask for an early check ({exc.reason}); the job's next check ends it"
            when = "at the job's next completion check"
    info["message"] = (
        f"cancel of job {job} {info['cancel']}: rows not yet answered end as `cancelled` {when}; "
        f"follow it with `rowsmith watch {job}`"
    )
    return EXIT_OK, info


async def status(target: Target, job: str | None) -> tuple[int, dict[str, Any]]:
    container = target.blobs.get_container_client(JOBS_CONTAINER)
    if job:
        manifest = await _load(target, job)
        if manifest is None:
            return EXIT_FAILED, {"job": job, "error": f"no job {job}"}
        return EXIT_OK, summary(manifest)
    return EXIT_OK, {"jobs": [summary(m) for m in await job_store.list_manifests(container)]}


async def results(
    target: Target, job: str, output: Path | None, *, jsonl: bool, failed: bool = False
) -> tuple[int, dict[str, Any]]:
    manifest = await _load(target, job)
    if manifest is None:
        return EXIT_FAILED, {"job": job, "error": f"no job {job}"}
    key = "jsonl" if jsonl or failed else "csv"
    if manifest.state not in RESULT_STATES or key not in manifest.results:
        info = summary(manifest)
        info["error"] = info.get("error") or f"job {job} is {manifest.state}; results exist once it is done"
        return EXIT_FAILED, info
    stream = None
    for _ in range(2):  # a newer upload's job may set this job's results aside meanwhile: read again
        name = manifest.results[key]
        try:
            stream = await target.blobs.get_blob_client(OUTPUT_CONTAINER, name).download_blob()
        except ResourceNotFoundError:
            return EXIT_FAILED, {"job": job, "error": f"{OUTPUT_CONTAINER}/{name} is missing"}
        # The file names the job that wrote it: never hand over another job's rows as this job's.
        if (stream.properties.metadata or {}).get(JOB_META, job) == job:
            break
        stream = None
        manifest = await _load(target, job) or manifest
    if stream is None:
        return EXIT_FAILED, {"job": job, "error": f"{OUTPUT_CONTAINER}/{name} holds another job's results"}
    if failed:
        stem = Path(manifest.source_blob).stem
        dest = output or Path(f"{stem}.failed.csv")
    else:
        dest = output or Path(name.rsplit("/", 1)[-1])
    if failed:
        indices = await failed_rows.failed_indices(stream.chunks())
        try:
            rows = await failed_rows.write_failed_rows(target.blobs, manifest, indices, dest)
        except failed_rows.InputGone as exc:
            return EXIT_FAILED, {**summary(manifest), "error": str(exc)}
        info = {**summary(manifest), "file": str(dest), "failed_rows": rows.written}
        if rows.not_found:
            info["error"] = f"{rows.not_found} failed row(s) are not in {manifest.source_blob} any more"
        return (EXIT_FAILED if rows.not_found else EXIT_OK), info
    with dest.open("wb") as out:
        async for chunk in stream.chunks():
            out.write(chunk)
    return EXIT_OK, {**summary(manifest), "file": str(dest)}


def _main_error(manifest: Manifest) -> str:
    """The commonest error of a job's rows, in a few words: its code, how many rows, its first message."""
    if not manifest.row_errors:
        missing = manifest.counts.get("missing", 0)
        return f"{missing} row(s) never got a result" if missing else "see the results' error column"
    code, info = next(iter(manifest.row_errors.items()))
    example = " ".join(str(info.get("example", "")).split())
    if len(example) > 240:
        example = example[:237] + "..."
    return (
        f"{info.get('rows', 0)} with code {code}: {example}" if example else f"{info.get('rows', 0)} with code {code}"
    )


def describe(info: dict[str, Any]) -> str:
    """One human line for a job summary."""
    if "state" not in info or "total_rows" not in info:
        return json.dumps(info)
    total = info["total_rows"] if info["total_rows"] is not None else "?"
    parts = [
        f"{info['job']}  {info['state']:<10}  {info.get('ok_rows', 0)} ok, {info.get('error_rows', 0)} errors "
        f"of {total} rows  ({info.get('source')}, pipeline {info.get('pipeline')})"
    ]
    if info.get("cancelled_rows"):
        parts.append(f"  {info['cancelled_rows']} row(s) were cancelled before they were answered (code: cancelled)")
    if info.get("missing_rows"):
        parts.append(f"  {info['missing_rows']} row(s) never got a result before the stall deadline (code: missing)")
    if info.get("requests"):
        cost = f"${info['cost_usd']:.4f}" if info.get("cost_usd") is not None else "cost unknown (no price)"
        parts.append(
            f"  spent: {cost}, {info['requests']} requests ({info.get('retries', 0)} retries), "
            f"{info.get('prompt_tokens', 0)} prompt + {info.get('completion_tokens', 0)} completion tokens"
        )
    if info.get("budget_usd"):
        reached = f"reached: {info.get('budget_rows', 0)} row(s) not sent (code: budget)"
        parts.append(f"  budget: ${info['budget_usd']:g}, {reached if info.get('budget_reached') else 'not reached'}")
    if info.get("results_blob"):
        parts.append(f"  results: {info['results_blob']}")
    return "\n".join(parts)
