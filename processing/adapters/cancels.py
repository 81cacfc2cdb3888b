"""Cancel requests: `jobs/<job>/cancel.json`, written once by `rowsmith cancel`, read by the stages.

Storage alone carries the request (no endpoint): the CLI writes the blob only if it is missing,
so cancelling twice changes nothing and the first request's time stands. Ingest reads it at each
checkpoint, process once per job spec refresh (job_specs.py), finalize once per check.
"""

from __future__ import annotations

import json
import time

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from processing.core.layout import cancel_blob


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
