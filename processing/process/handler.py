"""Process: one rows message in, one model call per row, one append of their records.

Rows of a message run concurrently, each taking its turn from the instance's limiter for
the deployment (processing/core/rate_limiter.py). What happens to each row depends on how it ended:
the decision table is processing/process/row_outcomes.py; a configuration error (404, 401) marks the
job fatal once, and finalize fails it with a report.
"""

from __future__ import annotations

import asyncio
import logging
import random

from processing.adapters import azure_openai, claims, job_store, shards, telemetry
from processing.adapters.clients import Clients
from processing.adapters.error_reports import mark_fatal
from processing.core.errors import BadMessage, ConfigurationError, RowError, Throttled, TransientError
from processing.core.host_config import max_dequeue_count
from processing.core.messages import Row, RowsMessage, signature_matches
from processing.core.rate_limiter import limiter_for
from processing.core.records import Record
from processing.core.states import CANCELLED_REASON, RowCode
from processing.process import row_outcomes
from processing.process.job_specs import JobSpec, specs
from processing.process.row_outcomes import Requeue

log = logging.getLogger(__name__)

# A 429's delay can be long (minutes); a queue message may be hidden at most 7 days.
MAX_VISIBILITY = 7 * 24 * 3600


async def _answer(clients: Clients, spec: JobSpec, row: Row) -> Record | Exception:
    if spec.cancelled:
        return Record.failed(row.index, row.cells, RowCode.CANCELLED, CANCELLED_REASON)
    if spec.job in specs.fatal:
        return Record.failed(row.index, row.cells, RowCode.CONFIG, specs.fatal[spec.job])
    settings = clients.settings
    limiter = limiter_for(
        spec.deployment, spec.pipeline.rpm or settings.openai_rpm, spec.pipeline.tpm or settings.openai_tpm
    )
    try:
        prompt = spec.template.render(row.cells)
        answer = await azure_openai.complete(
            clients.openai,
            spec.pipeline,
            spec.deployment,
            prompt,
            using_key=bool(settings.openai_api_key),
            retries=settings.openai_max_retries,
            limiter=limiter,
            family=spec.pipeline.model_family or settings.openai_model_family,
        )
    except RowError as exc:
        return Record.failed(row.index, row.cells, exc.code, str(exc))
    except ConfigurationError as exc:
        specs.fatal[spec.job] = str(exc)
        await mark_fatal(clients, spec.job, exc)
        return Record.failed(row.index, row.cells, RowCode.CONFIG, str(exc))
    except (Throttled, TransientError) as exc:
        return exc
    return Record.answered(
        row.index, row.cells, answer.value, (answer.prompt_tokens, answer.completion_tokens, answer.reasoning_tokens)
    )


async def handle_rows(body: str | bytes, dequeue_count: int, clients: Clients) -> None:
    message = RowsMessage.from_json(body)
    spec = await specs.get(clients, message.job)
    if spec is None:
        log.info("job %s is unknown, done or failed: its rows message is dropped", message.job)
        return
    rows = await claims.rows_of(clients.jobs, message)
    check_rows(message, rows, spec.row_key, spec.total_rows)
    outcomes = await asyncio.gather(*(telemetry.row(_answer(clients, spec, row), spec, row.index) for row in rows))
    plan = row_outcomes.plan(
        rows,
        outcomes,
        dequeue_count=dequeue_count,
        tries=message.tries,
        waits=message.waits,
        max_dequeue=max_dequeue_count(),
    )
    if plan.retry:
        # Nothing succeeded: let the host retry the whole message (dequeue count, then poison).
        raise TransientError(plan.retry)
    if plan.record:
        shard = rows[0].index // spec.shard_rows
        await shards.append(clients.jobs, spec.job, shard, plan.record, max_blocks=spec.shard_max_blocks)
    for requeue in plan.requeue:
        await _requeue(clients, spec, requeue)


def check_rows(message: RowsMessage, rows: tuple[Row, ...], key: str, total: int | None) -> None:
    """The rows are the job's own: signed with its key (so neither cells nor indices were
    chosen by the sender), in one shard, and within the job's rows once their number is known."""
    if key and not (message.sig and signature_matches(key, message.job, rows, message.sig)):
        raise BadMessage("rows message is not signed with its job's key")
    if not rows:
        raise BadMessage("rows message has no rows")
    if total is not None and rows[-1].index >= total:
        raise BadMessage("rows message names rows beyond the job's total")


async def _requeue(clients: Clients, spec: JobSpec, requeue: Requeue) -> None:
    # Jitter spreads a burst of throttled rows so they do not all return in the same second.
    visibility = min(MAX_VISIBILITY, max(1, round(requeue.delay * random.uniform(1.0, 1.2) + 0.5)))
    message = RowsMessage(spec.job, requeue.rows, waits=requeue.waits, tries=requeue.tries)
    if spec.row_key:
        message = message.signed(spec.row_key)
    # Rows that came by claim check go back by claim check: a queue message holds 64 KiB.
    text = claims.inline(message) or await claims.store(clients.jobs, message, unique=True)
    await clients.rows_queue.send_message(text, visibility_timeout=visibility)


async def handle_poison(body: str | bytes, clients: Clients) -> None:
    """A rows message that failed every attempt: record its rows as failed, so the job completes."""
    message = RowsMessage.from_json(body)
    manifest = await job_store.load(clients.jobs, message.job)
    if manifest is None:
        log.error("poison message for unknown job %s dropped", message.job)
        return
    rows = await claims.rows_of(clients.jobs, message)
    # A forged poison message would otherwise record a victim's row as failed (the first record wins).
    check_rows(message, rows, manifest.row_key, manifest.total_rows)
    reason = (
        f"failed {max_dequeue_count()} times (the worker crashed or timed out each time); "
        "see the function logs for the error"
    )
    records = [Record.failed(r.index, r.cells, RowCode.POISON, reason) for r in rows]
    shard = manifest.shard_of(rows[0].index)
    await shards.append(clients.jobs, message.job, shard, records, max_blocks=manifest.shard_max_blocks)
