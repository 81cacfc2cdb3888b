"""Process: one rows message in, one model call per row, one append of their records.

Rows of a message run concurrently, each taking its turn from the instance's limiter for
the deployment (processing/limiter.py). What happens to each row depends on how it ended:
  answered or a permanent error  -> recorded in the job's results shard
  429, or no turn within 15 s    -> re-enqueued with that delay; no dequeue attempt used
  transient (5xx, timeout, ...)  -> the message is retried by the host (or re-enqueued if only
                                    some rows failed); on the last attempt, recorded as an error
  configuration (404, 401)       -> the job is marked fatal once; finalize fails it with a report
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from processing import jobs, model, results
from processing.clients import Clients
from processing.errors import ConfigurationError, RowError, Throttled, TransientError
from processing.failures import mark_fatal
from processing.hostconfig import max_dequeue_count
from processing.jobs import Manifest, State
from processing.limiter import limiter_for
from processing.messages import INLINE_LIMIT, Row, RowsMessage
from processing.pipelines import Pipeline
from processing.prompts import BoundTemplate
from processing.results import Record

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
        manifest = await jobs.load(clients.jobs, job)
        if manifest is None or not manifest.header or manifest.state in State.FINAL:
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
        return Record(row.index, results.ERROR, list(row.cells), error=_specs.fatal[spec.job], code="config")
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
        return Record(row.index, results.ERROR, list(row.cells), error=str(exc), code=exc.code)
    except ConfigurationError as exc:
        _specs.fatal[spec.job] = str(exc)
        await mark_fatal(clients, spec.job, exc)
        return Record(row.index, results.ERROR, list(row.cells), error=str(exc), code="config")
    except (Throttled, TransientError) as exc:
        return exc
    return Record(
        row.index,
        results.OK,
        list(row.cells),
        answer=answer.value,
        usage=(answer.prompt_tokens, answer.completion_tokens),
    )


async def _load_rows(clients: Clients, message: RowsMessage) -> tuple[Row, ...]:
    if message.rows:
        return message.rows
    assert message.claim
    stream = await clients.jobs.download_blob(message.claim)
    return RowsMessage.parse_rows(json.loads(await stream.readall()))


async def handle_rows(body: str | bytes, dequeue_count: int, clients: Clients) -> None:
    message = RowsMessage.from_json(body)
    spec = await _specs.get(clients, message.job)
    if spec is None:
        log.info("job %s is unknown, done or failed: its rows message is dropped", message.job)
        return
    rows = await _load_rows(clients, message)
    outcomes = await asyncio.gather(*(_answer(clients, spec, row) for row in rows))

    done: list[Record] = []
    throttled: list[tuple[Row, Throttled]] = []
    transient: list[tuple[Row, Exception]] = []
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, Record):
            done.append(outcome)
        elif isinstance(outcome, Throttled):
            throttled.append((row, outcome))
        else:
            transient.append((row, outcome))

    # `tries` carries attempts already spent by rows re-enqueued from a partly failed message.
    attempts = dequeue_count + message.tries
    last_attempt = attempts >= max_dequeue_count()
    if transient and last_attempt:
        # Out of attempts: record the real reason now instead of losing it in the poison queue.
        for row, exc in transient:
            done.append(
                Record(
                    row.index,
                    results.ERROR,
                    list(row.cells),
                    error=f"gave up after {attempts} attempts: {exc}",
                    code="transient",
                )
            )
        transient = []
    if transient and not done and not throttled:
        # Nothing succeeded: let the host retry the whole message (dequeue count, then poison).
        raise TransientError(str(transient[0][1]))

    if done:
        shard = rows[0].index // spec.shard_rows
        await results.append(clients.jobs, spec.job, shard, done, max_blocks=spec.shard_max_blocks)
    if throttled:
        delay = max(t.retry_after for _, t in throttled)
        # This delivery is free (a 429 is not a failure), but earlier failed ones still count.
        spent = message.tries + dequeue_count - 1
        await _requeue(clients, spec.job, [r for r, _ in throttled], delay, waits=message.waits + 1, tries=spent)
    if transient:
        # Some rows of a multi-row message failed: retry just those, with a short backoff.
        await _requeue(
            clients, spec.job, [r for r, _ in transient], 2.0 * attempts, waits=message.waits, tries=attempts
        )


async def _requeue(clients: Clients, job: str, rows: list[Row], delay: float, *, waits: int, tries: int) -> None:
    # Jitter spreads a burst of throttled rows so they do not all return in the same second.
    visibility = min(MAX_VISIBILITY, max(1, round(delay * random.uniform(1.0, 1.2) + 0.5)))
    message = RowsMessage(job, tuple(rows), waits=waits, tries=tries)
    text = message.to_json()
    if len(text.encode()) > INLINE_LIMIT:
        # Rows that came by claim check go back by claim check: a queue message holds 64 KiB.
        name = jobs.claim_blob(job, rows[0].index, suffix=f"-{uuid.uuid4().hex[:8]}")
        await clients.jobs.upload_blob(name, RowsMessage.rows_json(tuple(rows)).encode(), overwrite=True)
        text = RowsMessage(job, claim=name, waits=waits, tries=tries).to_json()
    await clients.rows_queue.send_message(text, visibility_timeout=visibility)


async def handle_poison(body: str | bytes, clients: Clients) -> None:
    """A rows message that failed every attempt: record its rows as failed, so the job completes."""
    message = RowsMessage.from_json(body)
    rows = await _load_rows(clients, message)
    manifest = await jobs.load(clients.jobs, message.job)
    if manifest is None:
        log.error("poison message for unknown job %s dropped", message.job)
        return
    reason = (
        f"failed {max_dequeue_count()} times (the worker crashed or timed out each time); "
        "see the function logs for the error"
    )
    records = [Record(r.index, results.ERROR, list(r.cells), error=reason, code="poison") for r in rows]
    shard = rows[0].index // manifest.shard_rows
    await results.append(clients.jobs, message.job, shard, records, max_blocks=manifest.shard_max_blocks)
