"""The budget ledger in storage: `jobs/<job>/budget.json`, shared by every instance.

Each write is a read and a write conditioned on the blob's ETag, retried when another
instance wrote first; within one instance the changes of a job are group-committed (below),
so the ETag races are only between instances. The decisions are processing/core/budget.py's.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from processing.core.budget import Admit, Ledger, admit, settle
from processing.core.errors import TransientError
from processing.core.layout import budget_blob

CONFLICT_TRIES = 20

# Within an instance the changes of a job are group-committed: every change asked for while a
# write is under way goes into the next write together, so an instance running 24 messages at
# once makes about one ledger write per round, not two per message.
Change = Callable[[Ledger], Any]


@dataclass
class _Batch:
    pending: list[tuple[Change, asyncio.Future[Any]]] = field(default_factory=list)
    writing: bool = False
    handover: asyncio.Task[None] | None = None  # the write that took over from a cancelled writer


_batches: dict[tuple[int, str], _Batch] = {}


async def _change[T](jobs: ContainerClient, job: str, change: Callable[[Ledger], T]) -> T:
    loop = asyncio.get_running_loop()
    key = (id(loop), job)
    batch = _batches.setdefault(key, _Batch())
    done: asyncio.Future[T] = loop.create_future()
    batch.pending.append((change, done))
    if not batch.writing:
        # No write is under way: this caller writes, for itself and whoever joins meanwhile.
        batch.writing = True
        await _drain(jobs, job, key, batch)
    return await done


async def _drain(jobs: ContainerClient, job: str, key: tuple[int, str], batch: _Batch) -> None:
    try:
        while batch.pending:
            changes, batch.pending = batch.pending, []
            await _write(jobs, job, changes)
    finally:
        if batch.pending:
            # The writer was cancelled with others waiting: a task of its own writes for them.
            batch.handover = asyncio.ensure_future(_drain(jobs, job, key, batch))
        else:
            batch.writing = False
            _batches.pop(key, None)


async def _write(jobs: ContainerClient, job: str, changes: list[tuple[Change, asyncio.Future[Any]]]) -> None:
    """One read-modify-write applying `changes` in order; each one's future gets its result."""
    blob = jobs.get_blob_client(budget_blob(job))
    try:
        for attempt in range(CONFLICT_TRIES):
            kwargs: dict[str, Any]
            try:
                stream = await blob.download_blob()
                ledger = Ledger.from_bytes(await stream.readall())
                kwargs = {"etag": stream.properties.etag, "match_condition": MatchConditions.IfNotModified}
            except ResourceNotFoundError:
                ledger = Ledger()
                kwargs = {"match_condition": MatchConditions.IfMissing}
            results = [change(ledger) for change, _ in changes]  # pure: applied again after a conflict
            try:
                await blob.upload_blob(ledger.to_bytes(), overwrite=True, **kwargs)
            except (ResourceModifiedError, ResourceExistsError):
                # Another instance wrote first: decide again on what it wrote.
                await asyncio.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                continue
            for (_, done), result in zip(changes, results, strict=True):
                done.set_result(result)
            return
        raise TransientError(f"job {job}: the budget ledger changed under every one of {CONFLICT_TRIES} tries")
    except Exception as exc:
        for _, done in changes:
            if not done.done():
                done.set_exception(exc)
    except BaseException:
        # Cancelled (the invocation timed out): the others waiting on this write ask again.
        for _, done in changes:
            if not done.done():
                done.set_exception(TransientError(f"job {job}: the budget ledger write was cancelled"))
        raise


async def reserve(jobs: ContainerClient, job: str, budget_usd: float, asks: Sequence[float]) -> tuple[str, list[Admit]]:
    """Reserve the worst case of the rows that may be sent; (reservation id, each row's decision)."""
    reservation = uuid.uuid4().hex
    decisions = await _change(jobs, job, lambda ledger: admit(ledger, budget_usd, asks, reservation, time.time()))
    return reservation, decisions


async def settle_spend(jobs: ContainerClient, job: str, reservation: str, spent_usd: float) -> None:
    await _change(jobs, job, lambda ledger: settle(ledger, reservation, spent_usd))


async def read(jobs: ContainerClient, job: str) -> Ledger | None:
    try:
        return Ledger.from_bytes(await (await jobs.download_blob(budget_blob(job))).readall())
    except ResourceNotFoundError:
        return None
