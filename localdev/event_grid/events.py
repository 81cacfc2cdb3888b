"""The `Microsoft.Storage.BlobCreated` event as Event Grid raises it, and its queue message.

The one builder of this event in the project: the local Event Grid (watcher.py) raises it
for every new or overwritten blob, and tests and benchmarks that drive ingest by hand
build theirs here. Shape: Event Grid schema (the subscription's `eventDeliverySchema`),
the fields of Azure's published BlobCreated example, with what the local stack cannot know
made up plausibly: `requestId`/`clientRequestId`/`storageDiagnostics.batchId` are fresh
UUIDs (Azure's name the request that wrote the blob), and `topic` names the development
account under a zero subscription.

Encoding: Event Grid writes one event per message to a storage-queue destination, as the
base64 of its JSON (it wrote plain text until about 2022; MicrosoftDocs/azure-docs#102923
records the change). The app accepts both (processing.core.messages.decode_body).
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from localdev.azurite import DEV_ACCOUNT_NAME
from localdev.event_grid.subscription import BLOB_CREATED
from processing.core.layout import normalise_etag

LOCAL_SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "rowsmith-local"

# Azure's sequencer: 32 hex digits, increasing for successive writes of one blob name.
# Time in 100 ns steps keeps increasing across restarts; the counter breaks ties within one.
_ticks = itertools.count()


def storage_topic(account: str = DEV_ACCOUNT_NAME) -> str:
    """The system topic's source: the storage account's resource id."""
    return (
        f"/subscriptions/{LOCAL_SUBSCRIPTION_ID}/resourceGroups/{LOCAL_RESOURCE_GROUP}"
        f"/providers/Microsoft.Storage/storageAccounts/{account}"
    )


def sequencer() -> str:
    return f"{time.time_ns() // 100:016x}{next(_ticks) % 16**16:016x}"


def event_time(moment: datetime | None = None) -> str:
    """ISO 8601 in UTC with a `Z`, as Event Grid writes eventTime."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def blob_created_event(
    *,
    url: str,
    container: str,
    blob: str,
    etag: str,
    size: int,
    api: str = "PutBlob",
    content_type: str = "text/csv",
    blob_type: str = "BlockBlob",
    account: str = DEV_ACCOUNT_NAME,
) -> dict[str, Any]:
    """The BlobCreated event for a write of `container/blob` (url: the blob's own URL)."""
    request = str(uuid.uuid4())
    return {
        "topic": storage_topic(account),
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": BLOB_CREATED,
        "eventTime": event_time(),
        "id": request,
        "data": {
            "api": api,
            "clientRequestId": str(uuid.uuid4()),
            "requestId": request,
            "eTag": normalise_etag(etag),  # Azure's event carries it without the quotes of the HTTP header
            "contentType": content_type,
            "contentLength": size,
            "blobType": blob_type,
            "url": url,
            "sequencer": sequencer(),
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def queue_message(event: dict[str, Any]) -> str:
    """The storage-queue message Event Grid writes for `event`: base64 of its JSON."""
    return base64.b64encode(json.dumps(event, separators=(",", ":")).encode("utf-8")).decode("ascii")


def blob_created_message(**fields: Any) -> str:
    """`queue_message(blob_created_event(**fields))`: what lands on the queue for one write."""
    return queue_message(blob_created_event(**fields))
