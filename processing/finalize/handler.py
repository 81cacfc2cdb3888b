"""Finalize: notice when every row of a job has a record, then write the results.

Each check reads only what was appended to the shards since the last check (append
blobs only grow), marks rows seen in a bitmap and keeps counts; the progress is one blob
written with an ETag condition, so a duplicate finalize chain loses the race and stops.
When all rows are seen the outputs are written shard by shard, in row order, keeping the
first record of each row, so memory is bounded by one shard, not by the file.

A job that stops making progress (no new record for ROWSMITH_STALL_TIMEOUT_SECONDS) is
completed anyway: its rows without a record are written as errors with code "missing" and
the manifest's `incomplete` says how many and why, so a job always ends.

A job whose cancel was requested (`rowsmith cancel`, adapters/cancels.py) is completed at its
next check: the rows with a record as they are, the rest as errors with code "cancelled", and
the manifest's state is `cancelled`. Ingest finishes counting the rows first (without
enqueueing them), so every input row is in the output.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from processing.adapters import cancels, job_store, telemetry
from processing.adapters.blob_lock import LEASE_SECONDS, BlobLock
from processing.adapters.clients import Clients
from processing.adapters.error_reports import fail_job, read_fatal
from processing.core.errors import JobInputError
from processing.core.host_config import max_dequeue_count
from processing.core.layout import finalize_lock_blob
from processing.core.manifest import Manifest
from processing.core.messages import FinalizeMessage
from processing.core.prices import Price
from processing.core.states import FINAL_STATES, JobState, RowCode, RowStatus
from processing.finalize.completion import Completion, Step, completion, first_step, stall_reason
from processing.finalize.progress import Progress, load_progress, save_progress, scan
from processing.finalize.results_files import write_outputs

log = logging.getLogger(__name__)


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
    cancelled = await cancels.requested(clients.jobs, manifest.job)
    progress = await load_progress(clients, manifest)
    before = progress.seen
    await scan(clients, manifest, progress)
    now = time.time()
    if progress.seen > before or not progress.changed_at:
        progress.changed_at = now
    if not await save_progress(clients, manifest, progress):
        log.info("job %s: another finalize holds the progress; this chain stops", manifest.job)
        return
    manifest.counts = {"ok": progress.ok, "error": progress.error}
    spend(manifest, progress)
    manifest.row_errors = {
        code: {"rows": rows, "example": progress.error_examples.get(code, "")}
        for code, rows in sorted(progress.error_codes.items(), key=lambda item: -item[1])
    }
    total = manifest.total_rows or 0
    stall = clients.settings.stall_timeout_seconds
    verdict = completion(
        total=total,
        seen=progress.seen,
        idle_seconds=now - progress.changed_at,
        stall_seconds=stall,
        cancelled=cancelled,
    )
    if verdict == Completion.STALLED:
        missing = total - progress.seen
        manifest.incomplete = {"missing": missing, "reason": stall_reason(missing, stall)}
        manifest.counts["missing"] = missing
        log.error("job %s: no progress for %g s; completing it with %d row(s) missing", manifest.job, stall, missing)
    if verdict == Completion.CANCELLED:
        log.info("job %s: cancelled; %d row(s) without a result end as cancelled", manifest.job, total - progress.seen)
    if verdict == Completion.PENDING:
        if progress.seen > before:
            manifest.stamp("first_result")
        if not await _save(clients, manifest):
            return
    else:
        # One check writes a job's results. Two chains (a cancel's early check beside the
        # scheduled one, a redelivered message) can both pass the progress race when one loads
        # the progress after the other saved it; the later one would then overwrite the results
        # the earlier one's manifest describes.
        lock = BlobLock(clients.jobs, finalize_lock_blob(manifest.job))
        if not await lock.acquire():
            log.info("job %s: another finalize is writing its results", manifest.job)
            # Should that one die, its lease lapses: look again after it.
            await _reschedule(clients, message, LEASE_SECONDS)
            return
        try:
            current = await job_store.load(clients.jobs, manifest.job)
            if current is None or current.etag != manifest.etag:
                log.info("job %s: manifest changed under us; another finalize is ahead", manifest.job)
                return  # that one ended the job, or saved its check and rescheduled itself
            await _complete(clients, manifest, verdict)
            if not await _save(clients, manifest):
                return
        finally:
            await lock.release()
    if manifest.state in FINAL_STATES:
        telemetry.job_state(manifest)
        log.info("job %s %s: %s", manifest.job, manifest.state, manifest.counts)
        return
    await _reschedule(clients, message, interval)


async def _complete(clients: Clients, manifest: Manifest, verdict: Completion) -> None:
    manifest.state = JobState.CANCELLED if verdict == Completion.CANCELLED else JobState.DONE
    written: Counter[str] = Counter()
    manifest.results = await write_outputs(clients, manifest, written)
    if verdict == Completion.CANCELLED:
        # What the results hold: rows whose call was under way may have landed since the scan.
        manifest.counts = {str(k): written[k] for k in (RowStatus.OK, RowStatus.ERROR, RowCode.CANCELLED)}
    if manifest.budget_usd:
        rows = manifest.row_errors.get(RowCode.BUDGET, {}).get("rows", 0)
        manifest.budget = {"usd": manifest.budget_usd, "reached": bool(rows), "rows": rows}
    manifest.stamp("finished")


async def _save(clients: Clients, manifest: Manifest) -> bool:
    try:
        await job_store.save(clients.jobs, manifest)
    except job_store.ManifestConflict:
        log.info("job %s: manifest changed under us; another finalize is ahead", manifest.job)
        return False
    return True


def spend(manifest: Manifest, progress: Progress) -> None:
    """The job's tokens, requests and cost so far: every billed attempt, at the job's own price."""
    manifest.tokens = {
        "prompt": progress.prompt_tokens,
        "completion": progress.completion_tokens,
        "reasoning": progress.reasoning_tokens,
        "cached": progress.cached_tokens,
    }
    manifest.requests = progress.requests
    manifest.retries = progress.retries
    if manifest.price:
        cost = Price.from_dict(manifest.price).cost(
            progress.prompt_tokens, progress.completion_tokens, progress.cached_tokens
        )
        manifest.cost_usd = round(cost, 6)


# After a finalize check failed every attempt (a storage outage, say), look again later
# rather than never: finalize is idempotent. But not for ever: after POISON_RETRIES such
# rounds (about 25 attempts over 15 minutes) the job fails with a report, so it still ends.
POISON_RETRY_SECONDS = 300
POISON_RETRIES = 3


async def handle_finalize_poison(body: str | bytes, clients: Clients) -> None:
    message = FinalizeMessage.from_json(body)
    if message.poisoned < POISON_RETRIES:
        log.warning("job %s: finalize failed every attempt; checking again in %d s", message.job, POISON_RETRY_SECONDS)
        await _reschedule(clients, message, POISON_RETRY_SECONDS, poisoned=message.poisoned + 1)
        return
    manifest = await job_store.load(clients.jobs, message.job)
    if manifest is None or manifest.state in FINAL_STATES:
        return
    await fail_job(
        clients,
        manifest,
        JobInputError(
            f"finishing the job failed {(POISON_RETRIES + 1) * max_dequeue_count()} times; the function logs have "
            "each error",
            where="finalize",
            fix="check the function logs for the storage error, then upload the file again",
        ),
    )


async def _reschedule(clients: Clients, message: FinalizeMessage, delay: int, *, poisoned: int | None = None) -> None:
    again = FinalizeMessage(
        message.job, checks=message.checks + 1, poisoned=message.poisoned if poisoned is None else poisoned
    )
    await clients.finalize_queue.send_message(again.to_json(), visibility_timeout=delay)
