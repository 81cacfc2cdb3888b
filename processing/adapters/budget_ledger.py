"""The budget ledger in storage: `jobs/<job>/budget.json`, shared by every instance.

Each change is a read and a write conditioned on the blob's ETag, retried when another
instance wrote first; within one instance a lock per job takes turns, so the ETag races are
only between instances. The decisions are processing/core/budget.py's.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from processing.core.budget import Admit, Ledger, admit, settle
from processing.core.errors import TransientError
from processing.core.layout import budget_blob

CONFLICT_TRIES = 20

# One lock per job and event loop (a lock is bound to the loop it first waits on).
_locks: dict[tuple[int, str], asyncio.Lock] = {}


def _lock(job: str) -> asyncio.Lock:
    key = (id(asyncio.get_running_loop()), job)
    if key not in _locks:
        if len(_locks) > 1024:
            _locks.clear()  # jobs long finished; a lock held right now stays referenced by its holder
        _locks[key] = asyncio.Lock()
    return _locks[key]


async def _change[T](jobs: ContainerClient, job: str, change: Callable[[Ledger], T]) -> T:
    blob = jobs.get_blob_client(budget_blob(job))
    async with _lock(job):
        for attempt in range(CONFLICT_TRIES):
            kwargs: dict[str, Any]
            try:
                stream = await blob.download_blob()
                ledger = Ledger.from_bytes(await stream.readall())
                kwargs = {"etag": stream.properties.etag, "match_condition": MatchConditions.IfNotModified}
            except ResourceNotFoundError:
                ledger = Ledger()
                kwargs = {"match_condition": MatchConditions.IfMissing}
            result = change(ledger)
            try:
                await blob.upload_blob(ledger.to_bytes(), overwrite=True, **kwargs)
                return result
            except (ResourceModifiedError, ResourceExistsError):
                # Another instance wrote first: decide again on what it wrote.
                await asyncio.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise TransientError(f"job {job}: the budget ledger changed under every one of {CONFLICT_TRIES} tries")


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
