"""The local runner against a real Azurite: discovery, delivery, retries, poison, encoding, limits, shutdown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import azure.functions as func
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from localdev.azurite import Azurite, start_azurite
from localdev.runner.errors import RunnerError
from localdev.runner.hostconfig import HostQueueConfig, parse_timespan
from localdev.runner.runner import Runner
from tests.localdev.apps import failing_app, recorder_app
from tests.localdev.apps.probe import Probe

REPO = Path(__file__).resolve().parents[2]
CLI_APP = Path(__file__).resolve().parent / "apps" / "cli_app"

# Short retries so a test with several attempts takes seconds.
FAST = HostQueueConfig(visibility_timeout=1.0, max_polling_interval=0.5, max_dequeue_count=3, message_encoding="none")


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    instance = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def env(azurite: Azurite) -> dict[str, str]:
    """App settings for the runner: only Azurite's development connection string."""
    return {"AzureWebJobsStorage": azurite.connection_string}


@pytest.fixture
async def service(azurite: Azurite) -> AsyncIterator[QueueServiceClient]:
    async with QueueServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    # Each test its own queues: one Azurite serves the whole session.
    return "t" + uuid.uuid4().hex[:10]


async def make_queue(service: QueueServiceClient, name: str) -> QueueClient:
    queue = service.get_queue_client(name)
    await queue.create_queue()
    return queue


class Rig(NamedTuple):
    probe: Probe
    runner: Runner
    queue: QueueClient


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
def rig(env: dict[str, str], service: QueueServiceClient, prefix: str) -> MakeRig:
    """`await rig(function, queue, config=FAST, app=recorder_app.build_app, **runner_options)`: a Runner
    that drives only `function` of a fresh fixture app, and the queue `<prefix>-<queue>`, created."""

    async def make(
        function: str,
        queue: str,
        config: HostQueueConfig = FAST,
        *,
        app: Callable[[str, Probe], func.FunctionApp] = recorder_app.build_app,
        **options: Any,
    ) -> Rig:
        probe = Probe()
        runner = Runner(app(prefix, probe), config, functions=[function], env=env, **options)
        return Rig(probe, runner, await make_queue(service, f"{prefix}-{queue}"))

    return make


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def visible_count(queue: QueueClient) -> int:
    return len(await queue.peek_messages(max_messages=32)) if await exists(queue) else 0


async def exists(queue: QueueClient) -> bool:
    try:
        await queue.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


async def peek_texts(queue: QueueClient) -> list[str]:
    return [str(m.content) for m in await queue.peek_messages(max_messages=32)]


@contextlib.asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[asyncio.Event]:
    """Run `runner` in the background; on exit stop it and wait for run() to return."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    ready = asyncio.create_task(runner.ready.wait())
    await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what run() raised
    assert ready.done(), "runner did not become ready"
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def timed(awaitable: Awaitable[object]) -> float:
    start = time.monotonic()
    await awaitable
    return time.monotonic() - start


async def stop_during_invocation(probe: Probe, runner: Runner, queue: QueueClient, body: str) -> float:
    """Send `body`, run `runner` until the invocation starts, stop it: the seconds run() took to return."""
    await queue.send_message(body)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: len(probe.calls) == 1, what="the invocation to start")
    stop.set()
    return await timed(asyncio.wait_for(task, 10))


# --- host.json --------------------------------------------------------------------------------


def test_host_json_defaults_and_values(tmp_path: Path) -> None:
    defaults = HostQueueConfig.from_dict({"version": "2.0"})
    assert (defaults.batch_size, defaults.threshold, defaults.max_dequeue_count) == (16, 8, 5)
    assert (defaults.visibility_timeout, defaults.max_polling_interval, defaults.message_encoding) == (0, 60, "base64")
    assert defaults.max_concurrency == 24

    path = tmp_path / "host.json"
    path.write_text(
        json.dumps(
            {
                "version": "2.0",
                # The host binds configuration case-insensitively.
                "Extensions": {
                    "Queues": {
                        "BatchSize": 5,
                        "maxDequeueCount": 2,
                        "visibilityTimeout": "00:01:30.5",
                        "maxPollingInterval": "1.00:00:00",
                        "messageEncoding": "None",
                    }
                },
            }
        )
    )
    config = HostQueueConfig.from_host_json(path)
    assert (config.batch_size, config.threshold, config.max_dequeue_count) == (5, 2, 2)
    assert config.visibility_timeout == 90.5
    assert config.max_polling_interval == 86400
    assert config.message_encoding == "none"
    assert HostQueueConfig.from_dict({"extensions": {"queues": {"newBatchThreshold": 0}}}).threshold == 0
    # The repo's own host.json parses.
    assert HostQueueConfig.from_host_json(REPO / "host.json").message_encoding == "none"


@pytest.mark.parametrize(
    "queues",
    [
        {"batchSize": 33},
        {"batchSize": 0},
        {"batchSize": "16"},
        {"newBatchThreshold": -1},
        {"maxDequeueCount": 0},
        {"visibilityTimeout": "30s"},
        {"visibilityTimeout": "00:61:00"},
        {"maxPollingInterval": "00:00:00.050"},
        {"messageEncoding": "utf8"},
    ],
)
def test_host_json_rejects_what_the_host_rejects(queues: dict[str, object]) -> None:
    with pytest.raises(RunnerError):
        HostQueueConfig.from_dict({"extensions": {"queues": queues}})


def test_timespans() -> None:
    assert parse_timespan("00:00:10", "x") == 10
    assert parse_timespan("2.01:00:00", "x") == 2 * 86400 + 3600
    assert parse_timespan(2000, "x") == 2.0  # host.json v1 wrote milliseconds


# --- discovery --------------------------------------------------------------------------------


async def test_functions_come_from_the_registered_metadata(
    env: dict[str, str], service: QueueServiceClient, prefix: str
) -> None:
    probe = Probe()
    app = recorder_app.build_app(prefix, probe)

    # Registered after the fixture app was built, unknown to the runner's code: still driven.
    @app.queue_trigger(arg_name="late", queue_name=f"{prefix}-late", connection="AzureWebJobsStorage")
    async def added_later(late: func.QueueMessage) -> None:
        probe.enter("added_later", late)
        probe.leave(late)

    runner = Runner(app, FAST, env=env)
    assert {(f["function"], f["queue"]) for f in runner.describe()} == {
        ("record", f"{prefix}-record"),
        ("record_sync", f"{prefix}-sync"),
        ("added_later", f"{prefix}-late"),
    }
    assert runner.not_driven == {"ping": "httpTrigger"}
    sync = next(f for f in runner.functions if f.name == "record_sync")
    assert (sync.is_async, sync.connection, sync.wants_context) == (False, "AzureWebJobsStorage", True)

    queues = {name: await make_queue(service, f"{prefix}-{name}") for name in ("record", "sync", "late")}
    async with running(runner):
        for name, queue in queues.items():
            await queue.send_message(f"hello {name}")
        await wait_until(lambda: len(probe.calls) == 3, what="one invocation per function")
    assert sorted(c.body for c in probe.calls) == [b"hello late", b"hello record", b"hello sync"]
    assert {c.function for c in probe.calls} == {"record", "record_sync", "added_later"}
    # The sync function ran off the event loop's thread.
    main_thread = next(c.thread for c in probe.calls if c.function == "record")
    assert next(c.thread for c in probe.calls if c.function == "record_sync") != main_thread


def test_subset_and_refusals(env: dict[str, str], prefix: str) -> None:
    app = recorder_app.build_app(prefix, Probe())
    assert [f.name for f in Runner(app, FAST, functions=["record"], env=env).functions] == ["record"]
    with pytest.raises(RunnerError, match="no queue-triggered function named nope"):
        Runner(app, FAST, functions=["nope"], env=env)
    with pytest.raises(RunnerError, match="AzureWebJobsStorage"):
        Runner(app, FAST, env={})  # no connection setting: fails at start, naming it

    # An output binding the runner cannot provide is refused up front, unless left out.
    app.queue_trigger(arg_name="msg", queue_name=f"{prefix}-out", connection="AzureWebJobsStorage")(
        app.queue_output(arg_name="out", queue_name=f"{prefix}-next", connection="AzureWebJobsStorage")(_forward)
    )
    with pytest.raises(RunnerError, match="queue OUT 'out'"):
        Runner(app, FAST, env=env)
    assert len(Runner(app, FAST, functions=["record", "record_sync"], env=env).functions) == 2


def _forward(msg: func.QueueMessage, out: func.Out[str]) -> None:
    out.set(msg.get_body().decode())


# --- delivery, retries, poison ----------------------------------------------------------------


async def test_messages_are_processed_and_deleted(rig: MakeRig) -> None:
    probe, runner, queue = await rig("record", "record")
    bodies = [f"row {i}" for i in range(40)]
    async with running(runner):
        await asyncio.gather(*(queue.send_message(b) for b in bodies))
        await wait_until(lambda: runner.stats["record"].successes == 40, what="40 successes")
        await wait_until(lambda: runner.stats["record"].in_flight == 0, what="deletes")
        assert await visible_count(queue) == 0
        assert (await queue.get_queue_properties()).approximate_message_count == 0
    assert sorted(c.body.decode() for c in probe.calls) == sorted(bodies)
    assert all(c.dequeue_count == 1 and c.has_pop_receipt and c.has_insertion_time for c in probe.calls)
    stats = runner.stats["record"]
    assert (stats.invocations, stats.successes, stats.failures, stats.poisoned) == (40, 40, 0, 0)


async def test_failure_is_retried_after_visibility_timeout_then_succeeds(
    rig: MakeRig, service: QueueServiceClient, prefix: str
) -> None:
    probe, runner, queue = await rig("flaky", "flaky", app=functools.partial(failing_app.build_app, fail_times=2))
    async with running(runner):
        await queue.send_message("try me")
        await wait_until(lambda: runner.stats["flaky"].successes == 1, what="the third attempt")
        await wait_until(lambda: runner.stats["flaky"].in_flight == 0, what="the delete")
        assert await visible_count(queue) == 0
        assert not await exists(service.get_queue_client(f"{prefix}-flaky-poison"))
    calls = probe.of("flaky")
    assert [c.dequeue_count for c in calls] == [1, 2, 3]
    assert len({c.message_id for c in calls}) == 1
    # Each retry waited out visibilityTimeout (1 s; whole seconds on the service).
    assert all(later.at - earlier.at >= 0.9 for earlier, later in itertools.pairwise(calls))
    stats = runner.stats["flaky"]
    assert (stats.invocations, stats.successes, stats.failures, stats.poisoned) == (3, 1, 2, 0)


async def test_message_goes_to_poison_after_max_dequeue_count(
    rig: MakeRig, service: QueueServiceClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="localdev.runner")
    probe, runner, queue = await rig("doomed", "doomed", app=failing_app.build_app)
    poison = service.get_queue_client(f"{prefix}-doomed-poison")
    original = '{"row": 7, "text": "naïve <b>&amp;</b>"}'
    async with running(runner):
        await queue.send_message(original)
        await wait_until(lambda: runner.stats["doomed"].poisoned == 1, what="the move to poison")
        # Moved on the failure of the last allowed attempt, not one more visibilityTimeout later.
        assert time.monotonic() - probe.of("doomed")[-1].at < 0.8
        await wait_until(lambda: runner.stats["doomed"].in_flight == 0, what="the delete")
        # The poison queue did not exist: the runner created it, with the original text.
        assert await peek_texts(poison) == [original]
        assert await visible_count(queue) == 0
    calls = probe.of("doomed")
    assert [c.dequeue_count for c in calls] == [1, 2, 3]
    assert all(later.at - earlier.at >= 0.9 for earlier, later in itertools.pairwise(calls))
    stats = runner.stats["doomed"]
    assert (stats.invocations, stats.failures, stats.poisoned, stats.successes) == (3, 3, 1, 0)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 3
    message = failures[-1].getMessage()
    assert "doomed" in message and calls[0].message_id in message and "dequeue count 3" in message
    assert failures[-1].exc_info is not None and "always fails" in str(failures[-1].exc_info[1])


async def test_over_dequeued_message_goes_to_poison_without_invocation(
    env: dict[str, str], service: QueueServiceClient, prefix: str
) -> None:
    probe = Probe()
    config = HostQueueConfig(max_dequeue_count=2, max_polling_interval=0.5, message_encoding="none")
    queue = await make_queue(service, f"{prefix}-doomed")
    await queue.send_message("left over by a crashed runner")
    for _ in range(3):  # received three times, never settled
        message = await queue.receive_message(visibility_timeout=30)
        assert message is not None
        await queue.update_message(message, visibility_timeout=0)
    runner = Runner(failing_app.build_app(prefix, probe), config, functions=["doomed"], env=env)
    async with running(runner):
        await wait_until(lambda: runner.stats["doomed"].poisoned == 1, what="the move to poison")
    assert probe.calls == []
    assert await peek_texts(service.get_queue_client(f"{prefix}-doomed-poison")) == ["left over by a crashed runner"]


async def test_failure_on_a_poison_queue_is_not_released(
    rig: MakeRig, service: QueueServiceClient, prefix: str
) -> None:
    probe, runner, queue = await rig("doomed_poison", "doomed-poison", app=failing_app.build_app, lease_seconds=2)
    async with running(runner):
        await queue.send_message("already poison")
        await wait_until(lambda: runner.stats["doomed_poison"].failures == 1, what="the failure")
        await asyncio.sleep(0.3)
        # Not released (no hot loop) and no <queue>-poison-poison: it comes back when the lease lapses.
        assert await visible_count(queue) == 0
        await wait_until(lambda: runner.stats["doomed_poison"].failures == 2, timeout=5, what="the redelivery")
    assert [c.dequeue_count for c in probe.of("doomed_poison")][:2] == [1, 2]
    assert not await exists(service.get_queue_client(f"{prefix}-doomed-poison-poison"))
    assert runner.stats["doomed_poison"].poisoned == 0


async def test_a_cancelled_error_from_the_function_is_a_failure(rig: MakeRig) -> None:
    probe, runner, queue = await rig("stray_cancel", "stray", app=failing_app.build_app)
    async with running(runner):
        await queue.send_message("cancel me once")
        await wait_until(lambda: runner.stats["stray_cancel"].successes == 1, what="the retry")
    assert [c.dequeue_count for c in probe.calls] == [1, 2]
    assert (runner.stats["stray_cancel"].failures, runner.stats["stray_cancel"].abandoned) == (1, 0)


async def test_a_queue_created_after_start_is_picked_up(
    env: dict[str, str], service: QueueServiceClient, prefix: str
) -> None:
    probe = Probe()
    runner = Runner(recorder_app.build_app(prefix, probe), FAST, functions=["record"], env=env)
    async with running(runner):
        await asyncio.sleep(0.3)  # polling a queue that does not exist yet
        queue = await make_queue(service, f"{prefix}-record")
        await queue.send_message("late queue")
        await wait_until(lambda: runner.stats["record"].successes == 1, what="the message on the new queue")
    assert [c.body for c in probe.calls] == [b"late queue"]


class FakeCredential:
    """An AsyncTokenCredential that records the scopes asked of it."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("not-a-real-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


async def test_identity_based_connection_uses_the_credential(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    # Service URIs instead of a connection string: the identity-based form used in Azure. Nothing
    # listens on port 1: the receive is stuck in the SDK's retries, and must not hold up shutdown.
    env = {
        "AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:1/devstoreaccount1",
        "AzureWebJobsStorage__blobServiceUri": "https://127.0.0.1:1/devstoreaccount1",
    }
    credential = FakeCredential()
    runner = Runner(recorder_app.build_app(prefix, Probe()), FAST, functions=["record"], env=env, credential=credential)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: bool(credential.scopes), what="a token request")
    assert set(credential.scopes) == {"https://storage.azure.com/.default"}
    stop.set()
    assert await timed(asyncio.wait_for(task, 10)) < 4


# --- message encoding -------------------------------------------------------------------------


async def test_message_encoding_none_passes_the_raw_text(rig: MakeRig) -> None:
    config = HostQueueConfig(message_encoding="none", max_polling_interval=0.5)
    probe, runner, queue = await rig("record", "record", config)
    text = '{"name": "Zoë", "note": "x=1&y=2"}'
    async with running(runner):
        await queue.send_message(text)
        await queue.send_message(base64.b64encode(b"looks like base64").decode())
        await wait_until(lambda: runner.stats["record"].successes == 2, what="both messages")
    assert sorted(c.body for c in probe.calls) == sorted([text.encode("utf-8"), base64.b64encode(b"looks like base64")])


async def test_message_encoding_base64_decodes_and_poisons_what_is_not_base64(
    rig: MakeRig, service: QueueServiceClient, prefix: str
) -> None:
    config = HostQueueConfig(message_encoding="base64", max_polling_interval=0.5)
    probe, runner, queue = await rig("record", "record", config)
    binary = b"\x00\xff\x10 binary \xe2\x82\xac"
    async with running(runner):
        await queue.send_message(base64.b64encode(binary).decode())
        await queue.send_message("plain text, not base64!")
        await wait_until(lambda: runner.stats["record"].successes == 1, what="the base64 message")
        await wait_until(lambda: runner.stats["record"].poisoned == 1, what="the undecodable message")
    assert [c.body for c in probe.calls] == [binary]
    assert runner.stats["record"].invocations == 1  # the undecodable one never reached the function
    assert await peek_texts(service.get_queue_client(f"{prefix}-record-poison")) == ["plain text, not base64!"]


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrency_never_exceeds_batch_size_plus_threshold(rig: MakeRig) -> None:
    config = HostQueueConfig(batch_size=4, new_batch_threshold=2, max_polling_interval=0.5, message_encoding="none")
    probe, runner, queue = await rig("record", "record", config)
    # Short and long invocations mixed, so a new batch arrives while long ones still run.
    bodies = [f"sleep:{0.05 if i % 2 else 0.4}:{i}" for i in range(36)]
    await asyncio.gather(*(queue.send_message(b) for b in bodies))
    async with running(runner):
        await wait_until(lambda: runner.stats["record"].successes == 36, timeout=20, what="36 invocations")
    assert probe.max_in_flight <= 6
    assert runner.stats["record"].max_in_flight <= 6
    # More than one batch at a time: fetching resumed at the threshold, not only when idle.
    assert probe.max_in_flight > 4


async def test_sync_functions_run_in_threads_within_the_limit(rig: MakeRig) -> None:
    config = HostQueueConfig(batch_size=2, new_batch_threshold=1, max_polling_interval=0.5, message_encoding="none")
    probe, runner, queue = await rig("record_sync", "sync", config)
    await asyncio.gather(*(queue.send_message(f"sleep:0.2:{i}") for i in range(9)))
    async with running(runner):
        elapsed = await timed(wait_until(lambda: runner.stats["record_sync"].successes == 9, what="9 invocations"))
    assert 2 <= probe.max_in_flight <= 3
    assert len({c.thread for c in probe.calls}) >= 2
    assert elapsed < 9 * 0.2  # they overlapped


# --- leases and shutdown ------------------------------------------------------------------------


async def test_long_invocation_keeps_its_message_by_renewing_the_lease(rig: MakeRig) -> None:
    probe, runner, queue = await rig("record", "record", lease_seconds=2)
    async with running(runner):
        await queue.send_message("sleep:3.5")
        await wait_until(lambda: runner.stats["record"].successes == 1, what="the long invocation")
        await wait_until(lambda: runner.stats["record"].in_flight == 0, what="the delete")
        assert await visible_count(queue) == 0
    # Without renewal the 2 s lease would have lapsed and the message run a second time.
    assert len(probe.calls) == 1


async def test_shutdown_waits_for_invocations_in_flight(rig: MakeRig) -> None:
    probe, runner, queue = await rig("record", "record")
    elapsed = await stop_during_invocation(probe, runner, queue, "sleep:1.0")
    assert elapsed >= 0.7  # it waited for the function ...
    assert len(probe.finished) == 1  # ... which ran to its end
    assert runner.stats["record"].successes == 1
    assert await visible_count(queue) == 0 and (await queue.get_queue_properties()).approximate_message_count == 0
    # No new fetches after stop: a message sent now stays put.
    await queue.send_message("after stop")
    await asyncio.sleep(0.2)
    assert len(probe.calls) == 1


async def test_shutdown_wait_is_bounded_and_releases_the_message(rig: MakeRig) -> None:
    probe, runner, queue = await rig("record", "record", shutdown_timeout=0.5)
    elapsed = await stop_during_invocation(probe, runner, queue, "sleep:30")
    assert elapsed < 3
    assert probe.finished == []
    assert runner.stats["record"].abandoned == 1
    # Handed back at once for the next run, not hidden for the rest of its lease.
    assert await peek_texts(queue) == ["sleep:30"]


# --- the command line ---------------------------------------------------------------------------


async def test_command_line(azurite: Azurite, service: QueueServiceClient, tmp_path: Path) -> None:
    queue = service.get_queue_client("runner-cli")
    with contextlib.suppress(ResourceNotFoundError):
        await queue.delete_queue()
    await queue.create_queue()
    out = tmp_path / "out.txt"
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-u", "-m", "localdev.runner", "--app-dir", str(CLI_APP), "--log-level", "INFO"],
        cwd=REPO,
        env={**os.environ, "AzureWebJobsStorage": azurite.connection_string},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line, (await process.stderr.read()).decode()
        ready = json.loads(line)
        assert ready["ready"] == "runner"
        assert ready["functions"] == [
            {
                "function": "append_line",
                "queue": "runner-cli",
                "poison_queue": "runner-cli-poison",
                "connection": "AzureWebJobsStorage",
            }
        ]
        assert ready["not_driven"] == {"hourly": "timerTrigger"}
        assert ready["host"]["message_encoding"] == "none"  # read from the app's own host.json
        await queue.send_message(json.dumps({"out": str(out), "text": "from the queue"}))
        await wait_until(lambda: out.is_file() and out.read_text().endswith("\n"), what="the function's output")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log_text = stderr.decode()
    assert process.returncode == 0, log_text
    assert out.read_text() == "from the queue|1\n"
    assert "driving append_line on queue runner-cli" in log_text
    assert "stopping" in log_text and "stopped" in log_text
