"""Helpers for tests that push files through the real functions on the local stack.

Every helper works with both kinds of stack (`localdev.stack`'s `storage_auth`): with a
"key" stack the test's own storage clients use Azurite's development connection string;
with an "oauth" stack they use bearer tokens from the stack's identity endpoint (the real
`ManagedIdentityCredential`, as the user-assigned identity HARNESS_CLIENT_ID, so the
endpoint's stats tell the test's tokens from the app's) over HTTPS, trusting the stack's CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azure.identity.aio import ManagedIdentityCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from localdev import control
from localdev.runner import process
from localdev.stack import Stack
from processing.adapters import job_store
from processing.adapters.clients import make_blob_service, make_queue_service
from processing.core.layout import ALL_QUEUES, STORAGE_CONNECTION
from processing.core.manifest import Manifest
from processing.core.settings import APP_ROOT, StorageSettings
from processing.core.states import FINAL_STATES
from rowsmith_cli import commands
from rowsmith_cli.settings import identity_environment
from rowsmith_cli.target import Target

FIXTURE_PIPELINES = Path(__file__).resolve().parent.parent / "fixtures" / "pipelines"
# The identity the tests' own storage clients use on an OAuth stack: a user-assigned one, so
# the identity endpoint counts its tokens apart from the app's (system-assigned) ones.
HARNESS_CLIENT_ID = "00000000-0000-4000-8000-00000000d001"


def emulated_text(user_message: str) -> str:
    """The emulator's documented answer for a text request (localdev/openai_emulator/answers.py)."""
    return f"emulated answer {hashlib.sha256(user_message.encode()).hexdigest()[:16]}"


class RunnerProcess(process.RunnerProcess):
    """The runner with a stack's app settings: its storage connection comes from `settings`
    only, never from this process's environment. The keyword arguments are the runner's own
    flags (localdev.runner.process)."""

    def __init__(self, settings: Mapping[str, str], log: Path, **flags: Any) -> None:
        self.settings = dict(settings)  # what the test asked for, apart from the inherited environment
        env = {k: v for k, v in os.environ.items() if not k.startswith(STORAGE_CONNECTION)}
        env.update(settings)
        env["PYTHONPATH"] = str(APP_ROOT)
        super().__init__(env, log, **flags)


def app_settings(stack: Stack, **overrides: str) -> dict[str, str]:
    settings = {
        **stack.app_settings(),
        "ROWSMITH_PIPELINES_DIR": str(FIXTURE_PIPELINES),
        "ROWSMITH_FINALIZE_INTERVAL_SECONDS": "1",
    }
    settings.update(overrides)
    return settings


def harness_credential(stack: Stack, client_id: str | None = HARNESS_CLIENT_ID) -> ManagedIdentityCredential:
    """The real ManagedIdentityCredential, pointed at `stack`'s identity endpoint (None: the app's identity)."""
    # IDENTITY_ENDPOINT/IDENTITY_HEADER of `stack` while the credential is made (it reads them once, then).
    with identity_environment(stack.settings):
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def local_target(stack: Stack) -> Target:
    if stack.oauth:
        credential = harness_credential(stack)
        options = stack.storage_client_options()
        return Target(
            BlobServiceClient(stack.blob_url, credential=credential, **options),
            QueueServiceClient(stack.queue_url, credential=credential, **options),
            credential,
            "test stack (OAuth)",
        )
    storage = StorageSettings(connection_string=stack.connection_string)
    return Target(make_blob_service(storage, None), make_queue_service(storage, None), None, "test stack")


async def submit_and_wait(
    stack: Stack, path: Path, pipeline: str | None, timeout: float = 60
) -> tuple[int, dict[str, Any]]:
    target = local_target(stack)
    try:
        return await commands.submit(target, path, pipeline=pipeline, wait=True, timeout=timeout, quiet=True)
    finally:
        await target.close()


async def download(stack: Stack, container: str, name: str) -> bytes:
    target = local_target(stack)
    try:
        stream = await target.blobs.get_blob_client(container, name).download_blob()
        return await stream.readall()
    finally:
        await target.close()


async def queue_lengths(stack: Stack) -> dict[str, int]:
    """Messages in every app queue, visible or not."""
    target = local_target(stack)
    try:
        lengths = {}
        for name in ALL_QUEUES:
            props = await target.queues.get_queue_client(name).get_queue_properties()
            lengths[name] = props.approximate_message_count or 0
        return lengths
    finally:
        await target.close()


async def manifest(stack: Stack, job: str) -> Manifest | None:
    target = local_target(stack)
    try:
        return await job_store.load(target.blobs.get_container_client("jobs"), job)
    finally:
        await target.close()


async def wait_state(stack: Stack, job: str, states: frozenset[str] = FINAL_STATES, timeout: float = 60) -> Manifest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await manifest(stack, job)
        if found and found.state in states:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job} did not reach {set(states)} in {timeout} s")


async def emulator(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The Azure OpenAI emulator's control API (`/_emulator/stats`, `/_emulator/config`, ...)."""
    return await control.call(stack.emulator_url, method, path, body, header=stack.identity_header)


async def identity(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The identity endpoint's control API (`/_identity/stats`, `/_identity/config`, ...)."""
    return await control.call(stack.identity_url, method, path, body, header=stack.identity_header)
