"""A job's spec (pipeline, bound template, deployment, shard geometry), read once per instance."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from processing.adapters import cancels, job_store
from processing.adapters.clients import Clients
from processing.core.manifest import Manifest
from processing.core.pipelines import Pipeline
from processing.core.prices import Price
from processing.core.prompts import BoundTemplate
from processing.core.states import FINAL_STATES


@dataclass(frozen=True)
class JobSpec:
    """The immutable part of a manifest that every row of the job needs."""

    job: str
    pipeline: Pipeline
    template: BoundTemplate
    deployment: str
    shard_rows: int
    shard_max_blocks: int
    row_key: str = ""  # signs the job's rows messages (messages.rows_signature)
    total_rows: int | None = None  # None while the job is still ingesting
    cancelled: bool = False  # `rowsmith cancel` asked: rows end as `cancelled`, without a model call
    price: Price | None = None  # the job's price, fixed at ingest (None: not in the price table)
    budget_usd: float | None = None  # the job's cap, enforced through the budget ledger

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
            row_key=manifest.row_key,
            total_rows=manifest.total_rows,
            price=Price.from_dict(manifest.price) if manifest.price else None,
            budget_usd=manifest.budget_usd or None,
        )


class SpecCache:
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
        # Jobs whose budget this instance saw reached: their rows are refused without a ledger read.
        self.budget_reached: set[str] = set()

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
        if spec is None:
            spec = JobSpec.from_manifest(manifest, clients.settings.openai_deployment)
        elif spec.total_rows != manifest.total_rows:
            spec = replace(spec, total_rows=manifest.total_rows)  # ingest finished since
        if not spec.cancelled and await cancels.requested(clients.jobs, job):
            spec = replace(spec, cancelled=True)
        self._items[job] = (spec, time.monotonic())
        self._items.move_to_end(job)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return spec


specs = SpecCache()
