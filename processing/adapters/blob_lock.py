"""An exclusive, self-renewing blob lease: one ingest per upload at a time.

Event Grid delivers at least once, and a redelivered event can arrive while the first ingest
of the same upload is still reading. Without a lock both would enqueue the rows between the
last checkpoint and the point where their manifest writes collide: every such row would be
sent to the model twice. The lease lapses within 15 seconds of its holder dying, so a crashed
ingest never blocks the job for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob.aio import BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)

LEASE_SECONDS = 15  # the shortest lease Blob Storage grants: a dead holder blocks for little time
RENEW_SECONDS = 5


class BlobLock:
    def __init__(self, container: ContainerClient, name: str) -> None:
        self._blob = container.get_blob_client(name)
        self._lease: BlobLeaseClient | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        """True if we hold the lock now; False if someone else does."""
        with contextlib.suppress(ResourceExistsError):
            await self._blob.upload_blob(b"", overwrite=False)
        lease = BlobLeaseClient(self._blob)
        try:
            await lease.acquire(lease_duration=LEASE_SECONDS)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseAlreadyPresent
                return False
            raise
        self._lease = lease
        self._renewer = asyncio.create_task(self._renew())
        return True

    async def _renew(self) -> None:
        assert self._lease is not None
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._lease.renew()
            except HttpResponseError as exc:
                log.warning("lost the lease on %s: %s", self._blob.blob_name, exc.message)
                return

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._lease is not None:
            with contextlib.suppress(HttpResponseError):
                await self._lease.release()
        self._lease = self._renewer = None
