"""Shared helpers of the fault, crash-recovery and chaos tests (tests/integration/test_faults.py,
test_crash_recovery.py, test_chaos.py).

- `Workers`: runners (harness.RunnerProcess) that a test may SIGKILL, with the runner's own flags:
  a short `--lease-seconds` (so the messages a SIGKILLed runner held come back in seconds, not
  the host's 10 minutes), `--host-json` (a copy of the app's host.json with a shorter
  visibilityTimeout, so retries take seconds) and `--functions`.
- queue, blob, emulator and identity-endpoint helpers, and an in-process app environment for
  calling the decorated functions directly, as tests/integration/test_functions_direct.py does.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from localdev import control
from localdev.event_grid.events import blob_created_message
from localdev.openai_emulator.config import EmulatorConfig
from localdev.openai_emulator.faults import FAULT_KINDS
from localdev.stack import Stack
from processing.adapters import clients as clients_module
from processing.core import layout
from processing.core.layout import ALL_QUEUES, INPUT_CONTAINER, JOBS_CONTAINER, UPLOADS_QUEUE
from processing.core.manifest import Manifest
from processing.core.records import Record, parse_lines
from processing.core.settings import APP_ROOT, get_settings
from tests.integration.harness import RunnerProcess, app_settings, wait_state

# --- the runner as a child process --------------------------------------------------------------


def host_json_with(directory: Path, *, visibility_seconds: int, function_timeout_seconds: int | None = None) -> Path:
    """A copy of the app's host.json with another visibilityTimeout (the retry delay of a failed message)
    and, if given, another functionTimeout.

    maxDequeueCount stays as it is: processing/core/host_config.py reads the app's own host.json.
    """
    data = json.loads((APP_ROOT / "host.json").read_text(encoding="utf-8"))
    queues = data["extensions"]["queues"]
    queues["visibilityTimeout"] = time.strftime("%H:%M:%S", time.gmtime(visibility_seconds))
    name = f"host-visibility-{visibility_seconds}s"
    if function_timeout_seconds is not None:
        data["functionTimeout"] = time.strftime("%H:%M:%S", time.gmtime(function_timeout_seconds))
        name += f"-timeout-{function_timeout_seconds}s"
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


class Workers:
    """Starts workers for one test and stops every one it started at the end."""

    def __init__(self, stack: Stack, directory: Path) -> None:
        self.stack = stack
        self.directory = directory
        self.started: list[RunnerProcess] = []

    def start(
        self,
        *,
        visibility_seconds: int | None = 1,
        lease_seconds: float | None = None,
        functions: list[str] | None = None,
        **overrides: str,
    ) -> RunnerProcess:
        """`visibility_seconds=None` keeps the app's host.json (10 s between retries of a failed message)."""
        n = len(self.started)
        worker = RunnerProcess(
            app_settings(self.stack, **overrides),
            self.directory / f"runner-{n}.log",
            lease_seconds=lease_seconds,
            host_json=host_json_with(self.directory, visibility_seconds=visibility_seconds)
            if visibility_seconds is not None
            else None,
            functions=functions,
        )
        self.started.append(worker)
        return worker.start()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-4000:]}" for w in self.started)

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


# --- storage ------------------------------------------------------------------------------------


# The aio clients close their transport on leaving `async with`: use them as `async with queues(stack) as service:`.
# The stack's CA options: on an OAuth stack Azurite speaks HTTPS with a certificate of its own.
def queues(stack: Stack) -> QueueServiceClient:
    return QueueServiceClient.from_connection_string(stack.connection_string, **stack.storage_client_options())


def blobs(stack: Stack) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(stack.connection_string, **stack.storage_client_options())


async def clear_queues(stack: Stack) -> None:
    """Empty every app queue, hidden messages included (so a test never sees another's leftovers)."""
    async with queues(stack) as service:
        for name in ALL_QUEUES:
            with contextlib.suppress(ResourceNotFoundError):
                await service.get_queue_client(name).clear_messages()


async def queue_count(stack: Stack, name: str) -> int:
    """Messages in a queue, visible or not (Azurite's count is exact)."""
    async with queues(stack) as service:
        props = await service.get_queue_client(name).get_queue_properties()
        return props.approximate_message_count or 0


async def send(stack: Stack, name: str, *texts: str, visibility_timeout: int | None = None) -> None:
    async with queues(stack) as service:
        queue = service.get_queue_client(name)
        for text in texts:
            await queue.send_message(text, visibility_timeout=visibility_timeout)


async def peek(stack: Stack, name: str) -> list[str]:
    """The visible messages at the front of a queue (at most 32), without taking them."""
    async with queues(stack) as service:
        return [m.content for m in await service.get_queue_client(name).peek_messages(max_messages=32)]


async def take_all(stack: Stack, name: str) -> list[tuple[str, int]]:
    """Receive and delete every visible message of a queue: (text, dequeue count) each."""
    taken: list[tuple[str, int]] = []
    async with queues(stack) as service:
        queue = service.get_queue_client(name)
        while True:
            page = [
                m async for m in queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60)
            ]
            if not page:
                return taken
            for message in page:
                taken.append((message.content, message.dequeue_count or 0))
                await queue.delete_message(message)


def row_indices(text: str) -> list[int]:
    """The row indices a rows message carries inline."""
    return [int(index) for index, _cells in json.loads(text).get("rows", [])]


async def upload(stack: Stack, name: str, data: bytes) -> tuple[str, str]:
    """Put a file in input/; return its job id and the BlobCreated event Event Grid would raise."""
    async with blobs(stack) as service:
        blob = service.get_blob_client(INPUT_CONTAINER, name)
        etag = (await blob.upload_blob(data, overwrite=True))["etag"]
        url = blob.url
    event = blob_created_message(url=url, container=INPUT_CONTAINER, blob=name, etag=etag, size=len(data))
    return layout.job_id_for(url, etag), event


async def submit(stack: Stack, name: str, data: bytes, *, events: int = 1) -> str:
    """Upload and raise the BlobCreated event `events` times (Event Grid delivers at least once).

    The stack's local Event Grid raises the upload's event once more, a second or so later:
    one more duplicate, which ingest ignores as it would Azure's."""
    job, event = await upload(stack, name, data)
    await send(stack, UPLOADS_QUEUE, *([event] * events))
    return job


async def shard_records(stack: Stack, job: str) -> list[Record]:
    """Every record appended to the job's result shards, duplicates included, in append order
    (the `spend` lines of re-enqueued rows are not records of a result, and are left out)."""
    found: list[Record] = []
    async with blobs(stack) as service:
        container = service.get_container_client(JOBS_CONTAINER)
        async for blob in container.list_blobs(name_starts_with=f"{job}/shards/"):
            data = await (await container.download_blob(blob.name)).readall()
            found.extend(r for r in parse_lines(data) if r.is_result)
    return found


# --- files --------------------------------------------------------------------------------------


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def parse_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


# --- the emulators' control APIs ------------------------------------------------------------------


async def emulator_config(stack: Stack, **changes: Any) -> dict[str, Any]:
    return await control.call(stack.emulator_url, "POST", "/_emulator/config", changes, header=stack.identity_header)


async def emulator_stats(stack: Stack) -> dict[str, Any]:
    return await control.call(stack.emulator_url, "GET", "/_emulator/stats", header=stack.identity_header)


async def reset_emulator(stack: Stack) -> None:
    """Back to the stack's defaults (no faults, latency or quota) with zeroed counters and markers."""
    defaults = EmulatorConfig()
    await emulator_config(
        stack,
        latency_ms=defaults.latency_ms,
        jitter_ms=defaults.jitter_ms,
        rpm=defaults.rpm,
        tpm=defaults.tpm,
        # fault_rates entries are merged, not replaced: zero every kind.
        fault_rates={kind: 0.0 for kind in FAULT_KINDS},
        timeout_seconds=defaults.timeout_seconds,
        fault_retry_after_ms=defaults.fault_retry_after_ms,
        context_window=defaults.context_window,
        default_max_tokens=defaults.default_max_tokens,
        seed=defaults.seed,
    )
    await control.call(stack.emulator_url, "POST", "/_emulator/reset", header=stack.identity_header)


async def identity_config(stack: Stack, **changes: Any) -> dict[str, Any]:
    return await control.call(stack.identity_url, "POST", "/_identity/config", changes, header=stack.identity_header)


async def identity_stats(stack: Stack) -> dict[str, Any]:
    return await control.call(stack.identity_url, "GET", "/_identity/stats", header=stack.identity_header)


async def reset_identity(stack: Stack) -> None:
    await identity_config(stack, failure_rate=0.0, expired=False, lifetime_seconds=3600)
    await control.call(stack.identity_url, "POST", "/_identity/reset", header=stack.identity_header)


# --- waiting ------------------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[Any]], *, timeout: float, interval: float = 0.25, what: str = "the condition"
) -> Any:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(interval)


# --- calling the functions in this process ------------------------------------------------------


def in_process_env(stack: Stack, monkeypatch: pytest.MonkeyPatch, **overrides: str) -> None:
    """Point this process's settings and clients at the stack, as the runner's environment does."""
    for name, value in app_settings(stack, **overrides).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    clients_module._clients = None


async def close_in_process_clients() -> None:
    if clients_module._clients is not None:
        await clients_module._clients.close()
    clients_module._clients = None
    get_settings.cache_clear()


def call(builder: Any) -> Callable[..., Awaitable[None]]:
    """The user function behind a decorated function of function_app.py."""
    return builder.build().get_user_function()


def message(body: str, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id="test", body=body.encode(), dequeue_count=dequeue_count)


async def finish(stack: Stack, job: str, workers: Workers, timeout: float = 150) -> Manifest:
    """Wait for the job to be done; on a timeout or another end, fail with the workers' logs."""
    try:
        done = await wait_state(stack, job, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None
    assert done.state == "done", (done, workers.logs())
    return done
