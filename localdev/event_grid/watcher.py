"""Watch a container and raise BlobCreated for each new or overwritten blob (the local Event Grid).

Each poll lists the subscription's container and compares every blob with what the last
poll saw: a blob is new when its name was not there, overwritten when its version changed
(the ETag for a block blob; the creation time for an append or page blob, which in Azure
raise BlobCreated when created, not on every append or page write). Each such blob gets
the event Azure would raise for it, and the events that pass the subscription's filter go
to its queue. A blob is recorded as seen only once its event is sent, so a failed send is
retried on the next poll.

At least once, as Event Grid: what was seen is saved to a small JSON file after each poll
that changed it, so a restart raises only what changed meanwhile; without the file (or
after a crash between a send and the save) an event is raised again, which ingest
tolerates (the job id derives from the URL and ETag).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobProperties, BlobType
from azure.storage.blob.aio import ContainerClient
from azure.storage.queue.aio import QueueClient

from localdev.event_grid.events import blob_created_event, queue_message
from localdev.event_grid.subscription import Subscription
from localdev.private_files import write_private

log = logging.getLogger(__name__)

STATE_VERSION = 1


def blob_version(blob: BlobProperties) -> str:
    """What changes when a write raises a new BlobCreated for this blob."""
    if blob.blob_type == BlobType.BLOCKBLOB:
        return f"etag:{blob.etag}"
    return f"created:{blob.creation_time.isoformat() if blob.creation_time else blob.etag}"


def blob_type_name(blob: BlobProperties) -> str:
    """Event Grid's data.blobType: BlockBlob, AppendBlob or PageBlob."""
    return BlobType(blob.blob_type).value


class Watcher:
    """Polls `container` and sends the subscription's events to `queue`."""

    def __init__(
        self,
        container: ContainerClient,
        queue: QueueClient,
        subscription: Subscription,
        state_file: Path | None = None,
    ) -> None:
        if container.container_name != subscription.container:
            raise ValueError(f"the subscription watches {subscription.container!r}, not {container.container_name!r}")
        self.container = container
        self.queue = queue
        self.subscription = subscription
        self.state_file = state_file
        self.seen: dict[str, str] = self._load()

    async def poll(self) -> list[dict[str, Any]]:
        """One look at the container; returns the events sent to the queue."""
        sent: list[dict[str, Any]] = []
        listed: set[str] = set()
        changed = False
        try:
            async for blob in self.container.list_blobs(include=["copy"]):
                listed.add(blob.name)
                version = blob_version(blob)
                if self.seen.get(blob.name) == version:
                    continue
                event = await self._event_for(blob)
                if self.subscription.matches(event):
                    await self.queue.send_message(
                        queue_message(event), time_to_live=self.subscription.queue_message_ttl_seconds
                    )
                    sent.append(event)
                    log.info(
                        "BlobCreated %s/%s (%s) -> %s",
                        blob.container,
                        blob.name,
                        event["data"]["api"],
                        self.queue.queue_name,
                    )
                self.seen[blob.name] = version
                changed = True
            gone = set(self.seen) - listed  # deleted: a new blob of that name raises again
            for name in gone:
                del self.seen[name]
            changed = changed or bool(gone)
        finally:
            if changed:
                self._save()
        return sent

    async def _event_for(self, blob: BlobProperties) -> dict[str, Any]:
        return blob_created_event(
            url=self.container.get_blob_client(blob.name).url,
            container=self.container.container_name,
            blob=blob.name,
            etag=blob.etag,
            size=blob.size,
            api=await self._api(blob),
            content_type=blob.content_settings.content_type or "application/octet-stream",
            blob_type=blob_type_name(blob),
            account=self.container.account_name or "",
        )

    async def _api(self, blob: BlobProperties) -> str:
        """The storage call that wrote the blob last, as far as its properties tell.

        Copy properties survive only until the next Put Blob or Put Block List; a block blob
        written by Put Block List has committed blocks, one written by Put Blob has none.
        """
        if blob.copy and blob.copy.id:
            return "CopyBlob"
        if blob.blob_type != BlobType.BLOCKBLOB:
            return "PutBlob"
        committed, _ = await self.container.get_blob_client(blob.name).get_block_list("committed")
        return "PutBlockList" if committed else "PutBlob"

    # --- state ----------------------------------------------------------------------------

    def _load(self) -> dict[str, str]:
        if self.state_file is None:
            return {}
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("version") != STATE_VERSION or data.get("container") != self.container.container_name:
            return {}
        return {str(k): str(v) for k, v in data.get("blobs", {}).items()}

    def _save(self) -> None:
        if self.state_file is None:
            return
        document = {"version": STATE_VERSION, "container": self.container.container_name, "blobs": self.seen}
        # Atomic (the next start never reads half a file) and 0600, as every file of the stack.
        # Not saved is only a re-raise after a restart, which ingest tolerates.
        with contextlib.suppress(OSError):
            write_private(self.state_file, json.dumps(document, indent=1, sort_keys=True))
