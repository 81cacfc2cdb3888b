"""The local Event Grid: what one poll of Azurite's `input` sends, and what it never sends twice.

The watcher runs in this process against a real Azurite and the real storage SDKs, sending
to a queue of the test's own; each `poll()` is one look, so nothing here waits on a clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from localdev.azurite import Azurite, ensure_resources, start_azurite
from localdev.event_grid.events import blob_created_event
from localdev.event_grid.subscription import CSV_UPLOADS
from localdev.event_grid.watcher import Watcher
from processing.core.layout import ALL_CONTAINERS, INPUT_CONTAINER, OUTPUT_CONTAINER, job_id_for, normalise_etag
from processing.core.messages import BlobCreated

QUEUE = "event-grid-test"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    instance = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        ensure_resources(instance.connection_string, ALL_CONTAINERS, [QUEUE])
        yield instance
    finally:
        instance.stop()


class Rig:
    def __init__(self, blobs: BlobServiceClient, queue: QueueClient, state: Path) -> None:
        self.blobs = blobs
        self.input: ContainerClient = blobs.get_container_client(INPUT_CONTAINER)
        self.queue = queue
        self.state = state

    def watcher(self, state: Path | None = None) -> Watcher:
        return Watcher(self.input, self.queue, CSV_UPLOADS, state)

    async def put(self, name: str, data: bytes, container: str = INPUT_CONTAINER, **kwargs: Any) -> str:
        result = await self.blobs.get_blob_client(container, name).upload_blob(data, overwrite=True, **kwargs)
        return result["etag"]

    async def queued(self) -> list[BlobCreated]:
        """Every message on the test queue, parsed as the app parses it, and removed."""
        found = []
        async for message in self.queue.receive_messages(messages_per_page=32):
            found.append(BlobCreated.from_event(message.content))
            await self.queue.delete_message(message)
        return found


@pytest.fixture
async def rig(azurite: Azurite, tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        BlobServiceClient.from_connection_string(azurite.connection_string) as blobs,
        QueueServiceClient.from_connection_string(azurite.connection_string) as queues,
    ):
        queue = queues.get_queue_client(QUEUE)
        await queue.clear_messages()
        async for blob in blobs.get_container_client(INPUT_CONTAINER).list_blobs():
            await blobs.get_container_client(INPUT_CONTAINER).delete_blob(blob.name)
        yield Rig(blobs, queue, tmp_path / "event-grid.json")


async def test_a_new_blob_raises_the_event_azure_would_and_the_app_reads_it(rig: Rig) -> None:
    etag = await rig.put("echo/tickets.csv", b"id,text\n1,a\n", content_settings=ContentSettings("text/csv"))
    [event] = await rig.watcher().poll()

    blob = rig.input.get_blob_client("echo/tickets.csv")
    assert event["eventType"] == "Microsoft.Storage.BlobCreated"
    assert event["subject"] == "/blobServices/default/containers/input/blobs/echo/tickets.csv"
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert event["eventTime"].endswith("Z") and event["id"] and event["metadataVersion"] == "1"
    data = event["data"]
    assert data["api"] == "PutBlob" and data["blobType"] == "BlockBlob"
    assert (data["url"], data["eTag"]) == (blob.url, normalise_etag(etag))
    assert (data["contentLength"], data["contentType"]) == (12, "text/csv")
    assert len(data["sequencer"]) == 32 and set(data["sequencer"]) <= set("0123456789abcdef")

    [queued] = await rig.queued()
    assert (queued.container, queued.blob, queued.api) == ("input", "echo/tickets.csv", "PutBlob")
    # The job `rowsmith submit --wait` waits for is the one this event starts.
    assert job_id_for(queued.url, queued.etag) == job_id_for(blob.url, etag)


async def test_api_follows_the_call_that_wrote_the_blob(rig: Rig) -> None:
    await rig.put("echo/put.csv", b"id\n1\n")
    staged = rig.input.get_blob_client("echo/blocks.csv")
    await staged.stage_block("b1", b"id\n1\n")
    await staged.commit_block_list([BlobBlock("b1")])
    await rig.input.get_blob_client("echo/copy.csv").start_copy_from_url(rig.input.get_blob_client("echo/put.csv").url)

    events = await rig.watcher().poll()
    assert {e["subject"].rsplit("/", 1)[-1]: e["data"]["api"] for e in events} == {
        "put.csv": "PutBlob",
        "blocks.csv": "PutBlockList",
        "copy.csv": "CopyBlob",
    }


async def test_only_csv_files_in_input_raise_an_event_and_an_overwrite_raises_a_new_one(rig: Rig) -> None:
    await rig.put("echo/notes.txt", b"not a table")
    await rig.put("echo/elsewhere.csv", b"id\n1\n", container=OUTPUT_CONTAINER)
    first = await rig.put("echo/upper.CSV", b"id\n1\n")  # the subject filter ignores case, as in the Bicep
    watcher = rig.watcher()
    assert [e["subject"] for e in await watcher.poll()] == [
        "/blobServices/default/containers/input/blobs/echo/upper.CSV"
    ]

    second = await rig.put("echo/upper.CSV", b"id\n2\n")
    [event] = await watcher.poll()
    assert event["data"]["eTag"] == normalise_etag(second) != normalise_etag(first)
    assert [e.etag for e in await rig.queued()] == [normalise_etag(first), normalise_etag(second)]


async def test_an_unchanged_blob_is_not_raised_again_not_even_after_a_restart(rig: Rig) -> None:
    await rig.put("echo/once.csv", b"id\n1\n")
    watcher = rig.watcher(rig.state)
    assert len(await watcher.poll()) == 1
    assert await watcher.poll() == [] and await watcher.poll() == []
    # A restarted Event Grid reads what it saw from the stack's state folder ...
    assert await rig.watcher(rig.state).poll() == []
    # ... and without that file raises again (at least once, as Event Grid; ingest tolerates it).
    assert len(await rig.watcher().poll()) == 1
    assert len(await rig.queued()) == 2


async def test_a_blob_deleted_and_uploaded_again_is_raised_again(rig: Rig) -> None:
    watcher = rig.watcher(rig.state)
    await rig.put("echo/again.csv", b"id\n1\n")
    assert len(await watcher.poll()) == 1
    await rig.input.delete_blob("echo/again.csv")
    assert await watcher.poll() == []
    await rig.put("echo/again.csv", b"id\n1\n")
    assert len(await watcher.poll()) == 1


def test_the_filter_is_the_subscriptions() -> None:
    def event(container: str = "input", blob: str = "a/b.csv", api: str = "PutBlob") -> dict[str, Any]:
        url = f"http://127.0.0.1/devstoreaccount1/{container}/{blob}"
        return blob_created_event(url=url, container=container, blob=blob, etag="0x1", size=1, api=api)

    assert CSV_UPLOADS.matches(event())
    assert CSV_UPLOADS.matches(event(api="putblocklist"))  # StringIn compares case-insensitively
    assert not CSV_UPLOADS.matches(event(container="output"))
    assert not CSV_UPLOADS.matches(event(container="inputs"))
    assert not CSV_UPLOADS.matches(event(blob="a/b.csv.txt"))
    # Data Lake's CreateFile raises BlobCreated for an empty file before FlushWithClose fills it.
    assert not CSV_UPLOADS.matches(event(api="CreateFile"))
    assert not CSV_UPLOADS.matches({**event(), "eventType": "Microsoft.Storage.BlobDeleted"})


async def test_an_append_blob_raises_once_when_created_not_on_each_append(rig: Rig) -> None:
    log = rig.input.get_blob_client("echo/growing.csv")
    await log.create_append_blob()
    watcher = rig.watcher()
    [event] = await watcher.poll()
    assert (event["data"]["api"], event["data"]["blobType"], event["data"]["contentLength"]) == (
        "PutBlob",
        "AppendBlob",
        0,
    )
    await log.append_block(b"id\n1\n")
    assert await watcher.poll() == []  # as in Azure: AppendBlock raises no BlobCreated
