"""Process: one rows message in, one model call per row, one append of their records.

Rows of a message run concurrently, each taking its turn from the instance's limiter for
the deployment (processing/limiter.py). What happens to each row depends on how it ended:
the decision table is processing/row_outcomes.py; a configuration error (404, 401) marks the
job fatal once, and finalize fails it with a report.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass

from processing import claims, job_store, model, row_outcomes, shards
from processing.clients import Clients
from processing.errors import ConfigurationError, RowError, Throttled, TransientError
from processing.failures import mark_fatal
from processing.hostconfig import max_dequeue_count
from processing.limiter import limiter_for
from processing.manifest import Manifest
from processing.messages import Row, RowsMessage
from processing.pipelines import Pipeline
from processing.prompts import BoundTemplate
from processing.records import Record
from processing.row_outcomes import Requeue
from processing.states import FINAL_STATES, RowCode

log = logging.getLogger(__name__)

# A 429's delay can be long (minutes); a queue message may be hidden at most 7 days.
MAX_VISIBILITY = 7 * 24 * 3600


@dataclass(frozen=True)
class JobSpec:
    """The immutable part of a manifest that every row of the job needs."""

    job: str
    pipeline: Pipeline
    template: BoundTemplate
    deployment: str
    shard_rows: int
    shard_max_blocks: int

    @classmethod
    def from_manifest(cls, manifest: Manifest, default_deployment: str) -> JobSpec:
        pipeline = Pipeline.from_dict(manifest.pipeline)
        return cls(
            job=manifest.job,
            pipeline=pipeline,
            template=pipeline.template.bind(manifest.header),
            deployment=pipeline.deployment or default_deployment,
            shard_rows=manifest.shard_rows,
            shard_max_blocks=manifest.shard_max_blocks,
        )


class _SpecCache:
    """Per-process cache: a job's spec is read once per instance, not once per message.

    The job's state is read again every `finalize_interval_seconds`: once a job is done or
    failed, its rows still in the queue (a row throttled past the stall deadline, a duplicate
    delivery) are dropped instead of costing a model call each, for ever in the case of a
    quota that never frees. One read serves every concurrent message of the job (an
    instance runs about 24 at once), so that is one small read per job per instance per
    interval, and one at the start of a job.
    """

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[str, tuple[JobSpec, float]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[JobSpec | None]] = {}
        self._size = size
        self.fatal: dict[str, str] = {}

    async def get(self, clients: Clients, job: str) -> JobSpec | None:
        cached = self._items.get(job)
        if cached and time.monotonic() - cached[1] < clients.settings.finalize_interval_seconds:
            self._items.move_to_end(job)
            return cached[0]
        loading = self._loading.get(job)
        if loading is None or loading.get_loop() is not asyncio.get_running_loop():
            loading = asyncio.ensure_future(self._load(clients, job, cached[0] if cached else None))
            self._loading[job] = loading
            loading.add_done_callback(functools.partial(self._forget, job))
        # Shielded: one caller cancelled (its invocation timed out) must not cancel the others' read.
        return await asyncio.shield(loading)

    def _forget(self, job: str, done: asyncio.Future[JobSpec | None]) -> None:
        if self._loading.get(job) is done:
            del self._loading[job]

    async def _load(self, clients: Clients, job: str, spec: JobSpec | None) -> JobSpec | None:
        manifest = await job_store.load(clients.jobs, job)
        if manifest is None or not manifest.header or manifest.state in FINAL_STATES:
            self._items.pop(job, None)
            return None
        spec = spec or JobSpec.from_manifest(manifest, clients.settings.openai_deployment)
        self._items[job] = (spec, time.monotonic())
        self._items.move_to_end(job)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return spec


_specs = _SpecCache()


async def _answer(clients: Clients, spec: JobSpec, row: Row) -> Record | Exception:
    if spec.job in _specs.fatal:
        return Record.failed(row.index, row.cells, RowCode.CONFIG, _specs.fatal[spec.job])
    settings = clients.settings
    limiter = limiter_for(
        spec.deployment, spec.pipeline.rpm or settings.openai_rpm, spec.pipeline.tpm or settings.openai_tpm
    )
    try:
        prompt = spec.template.render(row.cells)
        answer = await model.complete(
            clients.openai,
            spec.pipeline,
            spec.deployment,
            prompt,
            using_key=bool(settings.openai_api_key),
            retries=settings.openai_max_retries,
            limiter=limiter,
        )
    except RowError as exc:
        return Record.failed(row.index, row.cells, exc.code, str(exc))
    except ConfigurationError as exc:
        _specs.fatal[spec.job] = str(exc)
        await mark_fatal(clients, spec.job, exc)
        return Record.failed(row.index, row.cells, RowCode.CONFIG, str(exc))
    except (Throttled, TransientError) as exc:
        return exc
    return Record.answered(row.index, row.cells, answer.value, (answer.prompt_tokens, answer.completion_tokens))


async def handle_rows(body: str | bytes, dequeue_count: int, clients: Clients) -> None:
    message = RowsMessage.from_json(body)
    spec = await _specs.get(clients, message.job)
    if spec is None:
        log.info("job %s is unknown, done or failed: its rows message is dropped", message.job)
        return
    rows = await claims.rows_of(clients.jobs, message)
    outcomes = await asyncio.gather(*(_answer(clients, spec, row) for row in rows))
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
        await _requeue(clients, spec.job, requeue)


async def _requeue(clients: Clients, job: str, requeue: Requeue) -> None:
    # Jitter spreads a burst of throttled rows so they do not all return in the same second.
    visibility = min(MAX_VISIBILITY, max(1, round(requeue.delay * random.uniform(1.0, 1.2) + 0.5)))
    message = RowsMessage(job, requeue.rows, waits=requeue.waits, tries=requeue.tries)
    # Rows that came by claim check go back by claim check: a queue message holds 64 KiB.
    text = claims.inline(message) or await claims.store(clients.jobs, message, unique=True)
    await clients.rows_queue.send_message(text, visibility_timeout=visibility)


async def handle_poison(body: str | bytes, clients: Clients) -> None:
    """A rows message that failed every attempt: record its rows as failed, so the job completes."""
    message = RowsMessage.from_json(body)
    rows = await claims.rows_of(clients.jobs, message)
    manifest = await job_store.load(clients.jobs, message.job)
    if manifest is None:
        log.error("poison message for unknown job %s dropped", message.job)
        return
    reason = (
        f"failed {max_dequeue_count()} times (the worker crashed or timed out each time); "
        "see the function logs for the error"
    )
    records = [Record.failed(r.index, r.cells, RowCode.POISON, reason) for r in rows]
    shard = manifest.shard_of(rows[0].index)
    await shards.append(clients.jobs, message.job, shard, records, max_blocks=manifest.shard_max_blocks)
