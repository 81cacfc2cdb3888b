"""Cancel requests: `jobs/<job>/cancel.json`, written once by `rowsmith cancel`, read by the stages.

Storage alone carries the request (no endpoint): the CLI writes the blob only if it is missing,
so cancelling twice changes nothing and the first request's time stands. Ingest reads it at each
checkpoint, process once per job spec refresh (job_specs.py), finalize once per check.

Finalize checks a job every ROWSMITH_FINALIZE_INTERVAL_SECONDS, but the host's queue polling
(up to host.json's maxPollingInterval) and the check itself add to that, so a request could wait
longer than one interval for the next check. `check_now` adds one finalize message, visible at
once: the job ends at that check, and the chain it starts stops there with the others (a
duplicate chain of a running job loses the progress race; of an ended one, sees it ended).
"""

from __future__ import annotations

import json
import time

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient
from azure.storage.queue.aio import QueueClient

from processing.core.layout import cancel_blob
from processing.core.messages import FinalizeMessage


async def request(jobs: ContainerClient, job: str) -> bool:
    """Record the cancel request; False if one was already there (idempotent)."""
    body = json.dumps({"job": job, "requested": time.time()}).encode()
    try:
        await jobs.get_blob_client(cancel_blob(job)).upload_blob(
            body,
            overwrite=True,
            match_condition=MatchConditions.IfMissing,
            content_settings=ContentSettings(content_type="application/json"),
        )
    except ResourceExistsError:
        return False
    return True


async def requested(jobs: ContainerClient, job: str) -> bool:
    """Whether the job's cancel was requested: one metadata read, no body."""
    try:
        await jobs.get_blob_client(cancel_blob(job)).get_blob_properties()
    except ResourceNotFoundError:
        return False
    return True


async def check_now(finalize_queue: QueueClient, job: str) -> None:
    """Ask finalize to check `job` at once rather than at its next scheduled check."""
    await finalize_queue.send_message(FinalizeMessage(job).to_json())
