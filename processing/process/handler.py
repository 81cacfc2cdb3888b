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
from collections.abc import Sequence
from dataclasses import replace

from processing.adapters import azure_openai, budget_ledger, claims, job_store, shards, telemetry
from processing.adapters.clients import Clients
from processing.adapters.error_reports import mark_fatal
from processing.core import model_family
from processing.core.budget import WAIT_SECONDS, Admit, refused_text, worst_case_usd
from processing.core.errors import BadMessage, ConfigurationError, RowError, Throttled, TransientError
from processing.core.host_config import max_dequeue_count
from processing.core.messages import Row, RowsMessage, signature_matches
from processing.core.rate_limiter import estimate_tokens, limiter_for
from processing.core.records import Record, Spend
from processing.core.states import CANCELLED_REASON, RowCode
from processing.process import row_outcomes
from processing.process.job_specs import JobSpec, specs
from processing.process.row_outcomes import Requeue

log = logging.getLogger(__name__)

# A 429's delay can be long (minutes); a queue message may be hidden at most 7 days.
MAX_VISIBILITY = 7 * 24 * 3600


async def _answer(clients: Clients, spec: JobSpec, row: Row, spend: Spend, admit: Admit) -> Record | Exception:
    if admit == Admit.REFUSE:
        return Record.failed(row.index, row.cells, RowCode.BUDGET, refused_text(spec.budget_usd or 0.0))
    if admit == Admit.WAIT:
        return Throttled(WAIT_SECONDS, "the job's budget is held by its requests in flight")
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
            spend=spend,
        )
    except RowError as exc:
        return Record.failed(row.index, row.cells, exc.code, str(exc))
    except ConfigurationError as exc:
        specs.fatal[spec.job] = str(exc)
        await mark_fatal(clients, spec.job, exc)
        return Record.failed(row.index, row.cells, RowCode.CONFIG, str(exc))
    except (Throttled, TransientError) as exc:
        return exc
    return Record.answered(row.index, row.cells, answer.value, spend.usage)


def _worst_case(spec: JobSpec, row: Row, family: str) -> float:
    assert spec.price is not None
    try:
        messages = azure_openai.build_messages(spec.pipeline, spec.template.render(row.cells))
    except RowError:
        return 0.0  # it fails before any request
    current = azure_openai.family_for(spec.deployment, family)
    budget = model_family.budget(spec.pipeline, current)
    return worst_case_usd(spec.price, estimate_tokens(messages, 0), budget)


async def _budget_gate(clients: Clients, spec: JobSpec, rows: Sequence[Row]) -> tuple[str, list[Admit]]:
    """Each row's turn under the job's budget, and the reservation to settle ("" if none)."""
    sendable = not (spec.cancelled or spec.job in specs.fatal)
    if not (spec.budget_usd and spec.price and sendable):
        return "", [Admit.SEND] * len(rows)
    if spec.job in specs.budget_reached:
        return "", [Admit.REFUSE] * len(rows)
    family = spec.pipeline.model_family or clients.settings.openai_model_family
    asks = [_worst_case(spec, row, family) for row in rows]
    reservation, decisions = await budget_ledger.reserve(clients.jobs, spec.job, spec.budget_usd, asks)
    if Admit.REFUSE in decisions:
        specs.budget_reached.add(spec.job)
        log.info("job %s: its budget of $%g is reached; its remaining rows end as `budget`", spec.job, spec.budget_usd)
    return reservation, decisions


async def handle_rows(body: str | bytes, dequeue_count: int, clients: Clients) -> None:
    message = RowsMessage.from_json(body)
    spec = await specs.get(clients, message.job)
    if spec is None:
        log.info("job %s is unknown, done or failed: its rows message is dropped", message.job)
        return
    rows = await claims.rows_of(clients.jobs, message)
    check_rows(message, rows, spec.row_key, spec.total_rows)
    spends = [Spend() for _ in rows]
    reservation, admits = await _budget_gate(clients, spec, rows)
    try:
        outcomes = await asyncio.gather(
            *(
                telemetry.row(_answer(clients, spec, row, spend, admit), spec, row.index)
                for row, spend, admit in zip(rows, spends, admits, strict=True)
            )
        )
    finally:
        if reservation:
            assert spec.price is not None and spec.budget_usd
            cost = sum(spec.price.cost(s.prompt, s.completion, s.cached) for s in spends)
            await budget_ledger.settle_spend(clients.jobs, spec.job, reservation, cost)
    first_delivery = dequeue_count == 1 and not message.tries and not message.waits
    spent = {row.index: spend for row, spend in zip(rows, spends, strict=True)}
    plan = row_outcomes.plan(
        rows,
        outcomes,
        dequeue_count=dequeue_count,
        tries=message.tries,
        waits=message.waits,
        max_dequeue=max_dequeue_count(),
    )
    # Every record carries its row's spend; rows asked again later leave their spend so far.
    records = [replace(r, usage=spent[r.index].usage, calls=spent[r.index].calls(first_delivery)) for r in plan.record]
    recorded = {r.index for r in records}
    records += [
        Record.spent(row.index, spend.usage, spend.calls(first_delivery))
        for row, spend in zip(rows, spends, strict=True)
        if spend.requests and row.index not in recorded
    ]
    if records:
        shard = rows[0].index // spec.shard_rows
        await shards.append(clients.jobs, spec.job, shard, records, max_blocks=spec.shard_max_blocks)
    if plan.retry:
        # Nothing succeeded: let the host retry the whole message (dequeue count, then poison).
        raise TransientError(plan.retry)
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
