"""Clients, created once per process (per event loop) and reused by every invocation."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import get_bearer_token_provider
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from openai import AsyncAzureOpenAI

from processing.adapters.identity import make_credential
from processing.core.layout import FINALIZE_QUEUE, INPUT_CONTAINER, JOBS_CONTAINER, OUTPUT_CONTAINER, ROWS_QUEUE
from processing.core.settings import Settings, StorageSettings, get_settings

log = logging.getLogger(__name__)

# Token scope of Azure OpenAI (the `/.default` form; ManagedIdentityCredential strips it).
OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"


# A download's first GET would otherwise fetch up to 32 MiB, and the SDK keeps it (and a
# copy of its remainder for each chunk it hands out) until the parser has read past it:
# ingest's memory would grow with the file up to 32 MiB of CSV. 4 MiB per GET keeps it flat
# for a few more requests (about 250 per GiB).
DOWNLOAD_CHUNK_BYTES = 4 * 1024 * 1024


def make_blob_service(storage: StorageSettings, credential: AsyncTokenCredential | None) -> BlobServiceClient:
    options = {
        "use_env_settings": storage.use_env_proxy,
        "max_single_get_size": DOWNLOAD_CHUNK_BYTES,
        "max_chunk_get_size": DOWNLOAD_CHUNK_BYTES,
    }
    if storage.connection_string:  # Azurite only
        return BlobServiceClient.from_connection_string(storage.connection_string, **options)
    assert storage.blob_url
    return BlobServiceClient(storage.blob_url, credential=credential, **options)


def make_queue_service(storage: StorageSettings, credential: AsyncTokenCredential | None) -> QueueServiceClient:
    if storage.connection_string:  # Azurite only
        return QueueServiceClient.from_connection_string(
            storage.connection_string, use_env_settings=storage.use_env_proxy
        )
    assert storage.queue_url
    return QueueServiceClient(storage.queue_url, credential=credential, use_env_settings=storage.use_env_proxy)


def make_openai(settings: Settings, credential: AsyncTokenCredential) -> AsyncAzureOpenAI:
    common = {
        "azure_endpoint": settings.openai_endpoint,
        "api_version": settings.openai_api_version,
        # The client would sleep on a 429 for up to two minutes per retry, holding the worker;
        # processing/adapters/azure_openai.py retries 5xx and connection errors itself and re-queues 429s.
        "max_retries": 0,
        "timeout": settings.openai_timeout_seconds,
    }
    if settings.openai_api_key:
        log.warning(
            "AZURE_OPENAI_API_KEY is set: calling Azure OpenAI with an API key instead of the managed "
            "identity. Keyless deployments (disableLocalAuth) reject it; unset it to use Entra ID."
        )
        return AsyncAzureOpenAI(api_key=settings.openai_api_key, **common)
    provider = get_bearer_token_provider(credential, OPENAI_SCOPE)
    return AsyncAzureOpenAI(azure_ad_token_provider=provider, **common)


@dataclass
class Clients:
    settings: Settings
    credential: AsyncTokenCredential
    blobs: BlobServiceClient
    queues: QueueServiceClient
    openai: AsyncAzureOpenAI
    loop: asyncio.AbstractEventLoop

    @property
    def input(self) -> ContainerClient:
        return self.blobs.get_container_client(INPUT_CONTAINER)

    @property
    def output(self) -> ContainerClient:
        return self.blobs.get_container_client(OUTPUT_CONTAINER)

    @property
    def jobs(self) -> ContainerClient:
        return self.blobs.get_container_client(JOBS_CONTAINER)

    def queue(self, name: str) -> QueueClient:
        return self.queues.get_queue_client(name)

    @property
    def rows_queue(self) -> QueueClient:
        return self.queue(ROWS_QUEUE)

    @property
    def finalize_queue(self) -> QueueClient:
        return self.queue(FINALIZE_QUEUE)

    async def close(self) -> None:
        await self.openai.close()
        await self.blobs.close()
        await self.queues.close()
        await self.credential.close()


# Loggers of the SDKs this app calls through. At INFO, azure-core logs every HTTP request and
# response, and openai and httpx a line per call: the Python worker forwards every record to the
# host, so about five lines per row would go to Application Insights (and cost there). Their
# warnings and errors still come through. openai 3.x sends through httpx2 (httpx's successor),
# which logs under its own name; httpx covers other clients and older openai releases.
QUIET_LOGGERS = ("azure", "httpx", "httpx2", "openai")


def quiet_sdk_loggers() -> None:
    """Set the SDKs' loggers to WARNING unless someone set them already (a DEBUG session, say)."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def build_clients(settings: Settings) -> Clients:
    quiet_sdk_loggers()  # once per process, with the clients
    credential = make_credential(settings)
    return Clients(
        settings=settings,
        credential=credential,
        blobs=make_blob_service(settings.storage, credential),
        queues=make_queue_service(settings.storage, credential),
        openai=make_openai(settings, credential),
        loop=asyncio.get_running_loop(),
    )


_clients: Clients | None = None


def get_clients() -> Clients:
    """The process's clients. Rebuilt only if the event loop changed (tests run a loop each)."""
    global _clients  # noqa: PLW0603 - one set of clients per process is the point
    loop = asyncio.get_running_loop()
    if _clients is None or _clients.loop is not loop or loop.is_closed():
        _clients = build_clients(get_settings())
    return _clients
