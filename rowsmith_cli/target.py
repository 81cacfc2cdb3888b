"""Where the CLI talks to: the local stack (Azurite) or a deployed storage account.

Against Azure the CLI signs in as the developer (`az login` / `azd auth login`) through
DefaultAzureCredential; the deployment grants that user the data roles it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from localdev.ports import LOOPBACK, pid_alive, port_open
from localdev.stack import STATE_FILE, Stack
from processing.adapters.clients import make_blob_service, make_queue_service
from processing.core.settings import StorageSettings
from rowsmith_cli.settings import CliSettings

# The storage SDK's ExponentialRetry settings for the local stack (its defaults: 15 s, then x3).
LOCAL_RETRY = {"retry_total": 2, "initial_backoff": 0.5, "increment_base": 2, "connection_timeout": 3}
RUNNER_PID = "runner.pid"  # in the state dir, next to stack.json: the detached runner's pid


class TargetError(Exception):
    """The CLI does not know which storage account to use, or the local stack does not answer."""


@dataclass
class Target:
    blobs: BlobServiceClient
    queues: QueueServiceClient
    credential: AsyncTokenCredential | None
    description: str
    # The local stack's state folder: `not_running()` looks at its processes' ports (None in Azure).
    state_dir: Path | None = None
    stack: Stack | None = None

    def not_running(self) -> str | None:
        """The one-line error for a local stack that stopped answering; None if it answers (or is Azure)."""
        if self.stack is None or self.state_dir is None:
            return None
        dead = dead_part(self.stack, self.state_dir)
        return f"the local stack is not running ({dead}): run rowsmith local up" if dead else None

    async def close(self) -> None:
        await self.blobs.close()
        await self.queues.close()
        if self.credential:
            await self.credential.close()


def stack_file(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def local_stack(state_dir: Path) -> Stack | None:
    try:
        return Stack.load(stack_file(state_dir))
    except (OSError, ValueError, KeyError):
        return None


def runner_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / RUNNER_PID).read_text().strip())
    except (OSError, ValueError):
        return None


def dead_part(stack: Stack, state_dir: Path) -> str | None:
    """What of a recorded local stack does not answer (None: all of it does), in a few words.

    A connect with a short timeout per port, so a half-dead stack is told in a second, not after
    the SDKs' retries (a minute and a half) and a traceback.
    """
    for name, port in (
        ("Azurite", stack.ports.blob),
        ("Azurite", stack.ports.queue),
        ("the model emulator", stack.ports.emulator),
    ):
        if port and not port_open(LOOPBACK, port):
            return f"{name} on {LOOPBACK}:{port} does not answer"
    pid = runner_pid(state_dir)
    if pid is not None and not pid_alive(pid):
        return f"its runner, pid {pid}, is gone"
    return None


def resolve(account: str | None, *, local: bool, cli: CliSettings, check: bool = True) -> Target:
    if local or (account is None and cli.storage_account is None and cli.blob_url is None):
        stack = local_stack(cli.state_dir)
        if stack is None:
            raise TargetError(
                "no storage account given and no local stack running: start one with `rowsmith local up`, "
                "or pass --account NAME (or set AZURE_STORAGE_ACCOUNT, as `azd env get-values` provides)"
            )
        dead = dead_part(stack, cli.state_dir) if check else None
        if dead:
            raise TargetError(f"the local stack is not running ({dead}): run rowsmith local up")
        # Azurite's development account (over HTTPS, trusting the stack's own CA, in OAuth mode).
        # Short waits between retries: Azurite is on this machine, and a stack that dies while a
        # command waits must be told in seconds (the SDK's default backoff adds up to a minute and more).
        options = {**stack.storage_client_options(), **LOCAL_RETRY}
        return Target(
            BlobServiceClient.from_connection_string(stack.connection_string, **options),
            QueueServiceClient.from_connection_string(stack.connection_string, **options),
            None,
            "local stack",
            state_dir=cli.state_dir,
            stack=stack,
        )
    name = account or cli.storage_account
    blob = cli.blob_url if not account and cli.blob_url else f"https://{name}.blob.core.windows.net"
    queue = cli.queue_url if not account and cli.queue_url else f"https://{name}.queue.core.windows.net"
    storage = StorageSettings(blob_url=blob, queue_url=queue)
    credential = DefaultAzureCredential(exclude_managed_identity_credential=True)
    return Target(
        make_blob_service(storage, credential),
        make_queue_service(storage, credential),
        credential,
        f"storage account {name or blob}",
    )
