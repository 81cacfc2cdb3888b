"""A file dropped into the local `input` container with any tool starts its job.

The upload here uses the plain storage SDK, as Azure Storage Explorer or `az storage blob
upload` would, and no rowsmith code: the stack's local Event Grid raises the BlobCreated
event, the runner ingests it, and the results file appears. Once with the development
account's key, once over HTTPS on a stack whose app holds no key (OAuth mode).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from localdev.stack import STORAGE_AUTH_MODES, Stack
from tests.integration.harness import RunnerProcess

STACK_STORAGE_AUTH = STORAGE_AUTH_MODES


async def results_file(blobs: BlobServiceClient, name: str, timeout: float = 90) -> bytes:
    blob = blobs.get_blob_client("output", name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return await (await blob.download_blob()).readall()
        except ResourceNotFoundError:
            await asyncio.sleep(0.5)
    raise AssertionError(f"output/{name} did not appear within {timeout:.0f} s")


async def test_a_csv_uploaded_with_the_storage_sdk_produces_its_results(stack: Stack, runner: RunnerProcess) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows([["id", "text"], *[[str(i), f"dropped {i}"] for i in range(12)]])
    connection_verify = {"connection_verify": str(stack.ca_file)} if stack.ca_file else {}
    async with BlobServiceClient.from_connection_string(stack.connection_string, **connection_verify) as blobs:
        await blobs.get_blob_client("input", "echo/dropped.csv").upload_blob(
            text.getvalue().encode(), overwrite=True, content_settings=ContentSettings(content_type="text/csv")
        )
        rows = list(csv.reader(io.StringIO((await results_file(blobs, "echo/dropped.results.csv")).decode())))
    assert rows[0][:2] == ["id", "text"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(12)]
    assert all(r[-2:] == ["ok", ""] for r in rows[1:])
