"""The local runner: drives a v2-model Python function app's queue triggers against Azurite.

A development harness, not a production host. In Azure the Functions host runs the same
`function_app.py`; here, where Core Tools cannot be installed, this module imports the app,
reads its registered functions (`app.get_functions()`: names, bindings and callables, never a
hand-kept list) and reproduces what the host's queue extension does with host.json's
`extensions.queues`:

- per function, fetch up to `batchSize` messages with a long visibility (the host's 10 minutes,
  renewed at half-time while the invocation runs); fetch again as soon as the messages in
  flight for that function drop to `newBatchThreshold` or below, so at most
  batchSize + newBatchThreshold run at once; while a queue stays empty, poll with a randomised
  exponential backoff from 100 ms up to `maxPollingInterval`;
- hand each message to the function as the worker's `azure.functions.queue.QueueMessage` (id,
  body decoded per `messageEncoding` (base64, or none for the raw text), dequeue_count, times,
  pop receipt), plus `context` if the function asks for it; async functions run on the loop,
  sync ones in a thread pool;
- success deletes the message; an exception makes it visible again after `visibilityTimeout`,
  or once its dequeue count reaches `maxDequeueCount` moves the original text to
  `<queue>-poison` (created if missing) and deletes it. A message already dequeued more than
  `maxDequeueCount` times (a crashed runner), or one that is not valid base64, goes to poison
  without an invocation. A queue whose name already ends in `-poison` has no poison queue: a
  failed message there stays invisible until its lease lapses (the host does the same, to
  avoid a hot retry loop).
- on stop: no new fetches; invocations in flight get `shutdown_timeout` to finish, then are
  cancelled and their messages made visible again at once.

Connections: a trigger's `connection` names an app-setting prefix, resolved by
`processing.core.settings.StorageSettings` (Azurite's connection string, or identity-based
service URIs with the process's credential). One queue service client per connection, made
once and reused by every fetch, delete and update.

Run: `python -m localdev.runner [--app-dir DIR] [--host-json PATH] [--functions a,b]
[--log-level LEVEL]`; it prints one JSON line starting `{"ready": "runner"` listing the
functions and queues it drives, and stops gracefully on SIGINT/SIGTERM (a second signal
stops at once).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import contextvars
import functools
import importlib
import inspect
import json
import logging
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import azure.functions as func
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as QueueTriggerMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from processing.core.errors import ConfigurationError
from processing.core.settings import StorageSettings

log = logging.getLogger("localdev.runner")

# The host's default when a trigger names no connection.
HOST_DEFAULT_CONNECTION = "AzureWebJobsStorage"
POISON_SUFFIX = "-poison"
# The host receives with a 10-minute visibility and renews it at half-time while the function runs.
DEFAULT_LEASE_SECONDS = 600.0
# The queue extension's QueuePollingIntervals.Minimum: the first backoff step, and the floor of
# maxPollingInterval.
MIN_POLLING_INTERVAL = 0.1
MAX_BATCH_SIZE = 32  # the storage service returns at most 32 messages per request
DEFAULT_SHUTDOWN_TIMEOUT = 10.0  # under `rowsmith local down`'s 15 s before it kills us
FETCH_STOP_TIMEOUT = 2.0  # how long stop waits for a receive in progress before cancelling it
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
# "[d.]hh:mm:ss[.fffffff]", the .NET TimeSpan form host.json uses.
_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d{1,7})?)$")


class RunnerError(Exception):
    """The app, host.json or a connection cannot be driven as given; the message says how to fix it."""


# --- host.json ---------------------------------------------------------------------------


def parse_timespan(value: object, name: str) -> float:
    """Seconds in a host.json duration: "hh:mm:ss", "d.hh:mm:ss", fractions, or (v1 style) milliseconds."""
    if isinstance(value, bool):
        raise RunnerError(f'host.json {name}: expected a duration like "00:00:30", got {value!r}')
    if isinstance(value, int | float):
        return float(value) / 1000.0
    match = _TIMESPAN.match(str(value).strip())
    if not match:
        raise RunnerError(f'host.json {name}: expected a duration like "00:00:30", got {value!r}')
    days = int(match["d"] or 0)
    hours, minutes, seconds = int(match["h"]), int(match["m"]), float(match["s"])
    if hours > 23 or minutes > 59 or seconds >= 60:
        raise RunnerError(f"host.json {name}: {value!r} is not a valid duration")
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class HostQueueConfig:
    """host.json `extensions.queues`, with the queue extension's defaults and limits."""

    batch_size: int = 16
    # None means the extension's default, batchSize / 2. (The host multiplies that default by the
    # core count on dedicated plans; a local harness takes one, as on Consumption.)
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # seconds a failed message stays invisible before its retry
    max_polling_interval: float = 60.0  # seconds; the longest wait between polls of an empty queue
    message_encoding: Literal["base64", "none"] = "base64"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise RunnerError(f"host.json batchSize must be 1..{MAX_BATCH_SIZE}, got {self.batch_size}")
        if self.new_batch_threshold is None:
            object.__setattr__(self, "new_batch_threshold", self.batch_size // 2)
        elif self.new_batch_threshold < 0:
            raise RunnerError(f"host.json newBatchThreshold must not be negative, got {self.new_batch_threshold}")
        if self.max_dequeue_count < 1:
            raise RunnerError(f"host.json maxDequeueCount must be at least 1, got {self.max_dequeue_count}")
        if self.visibility_timeout < 0:
            raise RunnerError(f"host.json visibilityTimeout must not be negative, got {self.visibility_timeout}")
        if self.max_polling_interval < MIN_POLLING_INTERVAL:
            raise RunnerError(
                f"host.json maxPollingInterval must be at least {MIN_POLLING_INTERVAL * 1000:.0f} ms, "
                f"got {self.max_polling_interval * 1000:.0f} ms"
            )
        if self.message_encoding not in ("base64", "none"):
            raise RunnerError(f"host.json messageEncoding must be base64 or none, got {self.message_encoding!r}")

    @property
    def threshold(self) -> int:
        assert self.new_batch_threshold is not None  # resolved in __post_init__
        return self.new_batch_threshold

    @property
    def max_concurrency(self) -> int:
        """The most invocations in flight per function: batchSize + newBatchThreshold."""
        return self.batch_size + self.threshold

    @classmethod
    def from_dict(cls, host: Mapping[str, Any]) -> HostQueueConfig:
        """From a parsed host.json (version 2.0: `extensions.queues`). Keys are case-insensitive, as in the host."""
        extensions = _lower_keys(host).get("extensions") or {}
        queues = _lower_keys(_lower_keys(extensions).get("queues") or {})
        kwargs: dict[str, Any] = {}
        for key, name in (
            ("batchsize", "batch_size"),
            ("newbatchthreshold", "new_batch_threshold"),
            ("maxdequeuecount", "max_dequeue_count"),
        ):
            if key in queues:
                value = queues[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise RunnerError(f"host.json {key}: expected a whole number, got {value!r}")
                kwargs[name] = value
        if "visibilitytimeout" in queues:
            kwargs["visibility_timeout"] = parse_timespan(queues["visibilitytimeout"], "visibilityTimeout")
        if "maxpollinginterval" in queues:
            kwargs["max_polling_interval"] = parse_timespan(queues["maxpollinginterval"], "maxPollingInterval")
        if "messageencoding" in queues:
            kwargs["message_encoding"] = str(queues["messageencoding"]).strip().lower()
        return cls(**kwargs)

    @classmethod
    def from_host_json(cls, path: str | Path) -> HostQueueConfig:
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunnerError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise RunnerError(f"{path} must hold a JSON object")
        return cls.from_dict(document)

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _lower_keys(value: object) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, Mapping) else {}


# --- the app's functions -----------------------------------------------------------------


@dataclass(frozen=True)
class QueueFunction:
    """One queue-triggered function, as registered on the app."""

    name: str
    queue_name: str
    connection: str
    arg_name: str
    user_function: Callable[..., Any]
    is_async: bool
    wants_context: bool
    bindings: tuple[Mapping[str, Any], ...] = ()

    @property
    def poison_queue_name(self) -> str | None:
        """`<queue>-poison`, unless this is a poison queue already or the name would be too long (as in the host)."""
        name = self.queue_name + POISON_SUFFIX
        if self.queue_name.endswith(POISON_SUFFIX) or not _QUEUE_NAME.match(name):
            return None
        return name

    def check_drivable(self) -> None:
        """Refuse at start what would fail on every message: the runner provides the trigger and `context` only."""
        if not _QUEUE_NAME.match(self.queue_name):
            raise RunnerError(
                f"function {self.name}: queue name {self.queue_name!r} is not a literal queue name "
                "(app-setting expressions like %name% are not resolved by the local runner)"
            )
        extra = [b for b in self.bindings if b.get("name") != self.arg_name]
        if extra:
            described = ", ".join(f"{b.get('type')} {b.get('direction')} '{b.get('name')}'" for b in extra)
            raise RunnerError(
                f"function {self.name} has bindings the local runner does not provide ({described}); "
                "leave it out with --functions, or use `func start`"
            )
        params = inspect.signature(self.user_function).parameters
        unknown = [p for p in params if p not in (self.arg_name, "context")]
        if unknown:
            raise RunnerError(f"function {self.name}: parameters {unknown} are neither its trigger nor `context`")


def discover(app: Any) -> tuple[list[QueueFunction], dict[str, str]]:
    """The app's queue-triggered functions, and the others by name with their trigger types.

    Everything comes from the registered metadata: a function added to the app is driven
    without any change here.
    """
    if not hasattr(app, "get_functions"):
        raise RunnerError(f"{app!r} is not an azure.functions.FunctionApp (it has no get_functions())")
    queue_functions: list[QueueFunction] = []
    others: dict[str, str] = {}
    if getattr(app, "functions_bindings", None):
        # get_functions() remembers the names it has seen and calls a second listing a duplicate
        # (azure-functions 1.26); the worker lists once per process, we may list again (tests,
        # a doctor run first). Duplicates within one listing are still refused.
        app.functions_bindings = None
    for fn in app.get_functions():
        name = fn.get_function_name()
        raw = fn.get_function_json()
        bindings = (json.loads(raw) if isinstance(raw, str) else raw).get("bindings", [])
        triggers = [b for b in bindings if str(b.get("type", "")).lower().endswith("trigger")]
        trigger = next((b for b in triggers if str(b.get("type", "")).lower() == "queuetrigger"), None)
        if trigger is None:
            others[name] = ", ".join(str(b.get("type")) for b in triggers) or "no trigger"
            continue
        user_function = fn.get_user_function()
        queue_functions.append(
            QueueFunction(
                name=name,
                queue_name=str(trigger.get("queueName", "")),
                connection=str(trigger.get("connection") or HOST_DEFAULT_CONNECTION),
                arg_name=str(trigger["name"]),
                user_function=user_function,
                is_async=inspect.iscoroutinefunction(user_function),
                wants_context="context" in inspect.signature(user_function).parameters,
                bindings=tuple(bindings),
            )
        )
    return queue_functions, others


class _Context(func.Context):
    """The `context` argument: what a queue-triggered Python function can ask of it locally."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()
        self._tls.invocation_id = self._invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None  # no distributed tracing locally

    @property
    def retry_context(self) -> Any:
        return None  # queue triggers retry through the queue, not a retry policy


# --- running -------------------------------------------------------------------------------


@dataclass
class FunctionStats:
    """Counters of one function; `Runner.stats` holds one per function, `Runner.totals()` their sum."""

    invocations: int = 0
    successes: int = 0
    failures: int = 0
    poisoned: int = 0  # moved to <queue>-poison (after failures, or without an invocation)
    abandoned: int = 0  # still running at shutdown past the bounded wait; released to the queue
    in_flight: int = 0  # messages received and not yet settled
    max_in_flight: int = 0

    def add(self, other: FunctionStats) -> None:
        for f in fields(self):
            if f.name == "max_in_flight":
                self.max_in_flight = max(self.max_in_flight, other.max_in_flight)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class _Lease:
    """A received message while it is ours: its pop receipt changes with each visibility update."""

    message: StorageQueueMessage
    pop_receipt: str
    renewed_at: float
    renewal: asyncio.Task[None] | None = None
    settling: bool = False


class _Pump:
    """Fetches and invokes one function's messages with the host's batch and threshold semantics."""

    def __init__(
        self,
        runner: Runner,
        fn: QueueFunction,
        queue: QueueClient,
        poison: QueueClient | None,
    ) -> None:
        self.runner = runner
        self.fn = fn
        self.config = runner.config
        self.queue = queue
        self.poison = poison
        self.stats = runner.stats[fn.name]
        self.tasks: set[asyncio.Task[None]] = set()
        self.leases: dict[str, _Lease] = {}
        # Set when an invocation settles at or under the threshold, and on stop: one wake-up
        # source, so the fetch loop never needs a helper task per wait.
        self.wake = asyncio.Event()
        self.stopping = False
        self._missing_queue_logged = False
        try:
            self._function_directory = str(Path(inspect.getfile(fn.user_function)).resolve().parent)
        except TypeError:  # a callable without a source file
            self._function_directory = str(Path.cwd())

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def fetch_loop(self) -> None:
        backoff = MIN_POLLING_INTERVAL
        while not self.stopping:
            while len(self.tasks) > self.config.threshold and not self.stopping:
                self.wake.clear()
                await self.wake.wait()
            if self.stopping:
                break
            try:
                messages = await self._receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep polling through Azurite restarts and auth hiccups
                log.warning("%s: receiving from %s failed: %s", self.fn.name, self.fn.queue_name, exc)
                messages = []
            if messages:
                backoff = MIN_POLLING_INTERVAL
                for message in messages:
                    self._start(message)
                continue  # a queue with messages is polled again at once (after the threshold wait)
            # Randomised, like the extension's backoff, so several runners do not poll in step.
            delay = backoff * random.uniform(0.8, 1.2)
            backoff = min(backoff * 2, self.config.max_polling_interval)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(delay, self.config.max_polling_interval))

    async def _receive(self) -> list[StorageQueueMessage]:
        # One request per fetch: the first page only (the SDK pager would otherwise ask again
        # for the rest of max_messages whenever a page comes back short).
        pages = self.queue.receive_messages(
            messages_per_page=self.config.batch_size, visibility_timeout=int(self.runner.lease_seconds)
        ).by_page()
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            return []
        except ResourceNotFoundError:
            if not self._missing_queue_logged:
                log.warning(
                    "%s: queue %s does not exist (yet); polling until it does", self.fn.name, self.fn.queue_name
                )
                self._missing_queue_logged = True
            return []
        self._missing_queue_logged = False
        return [message async for message in page]

    def _start(self, message: StorageQueueMessage) -> None:
        lease = _Lease(message, message.pop_receipt or "", time.monotonic())
        self.leases[message.id] = lease
        task = asyncio.create_task(self._handle(lease), name=f"{self.fn.name}:{message.id}")
        self.tasks.add(task)
        self.stats.in_flight = len(self.tasks)
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.stats.in_flight = len(self.tasks)
        if len(self.tasks) <= self.config.threshold:
            self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: settling a message failed", self.fn.name, exc_info=task.exception())

    async def _handle(self, lease: _Lease) -> None:
        message = lease.message
        try:
            if message.dequeue_count is not None and message.dequeue_count > self.config.max_dequeue_count:
                # Dequeued more often than allowed without a verdict (a runner died mid-invocation):
                # the host moves it to poison before invoking, and so do we.
                await self._poison(lease, f"dequeue count {message.dequeue_count} is over MaxDequeueCount")
                return
            body = self._decode(message.content)
            if body is None:
                # The host's MessageDecodingFailed handler does the same: retrying cannot decode it.
                await self._poison(lease, "it is not valid base64 (host.json messageEncoding is base64)")
                return
            await self._invoke(lease, body)
        except asyncio.CancelledError:
            if not lease.settling:
                # Shutdown gave up waiting for the function: hand the message back now rather than
                # when its lease lapses. (Mid-settlement, the lease lapsing redelivers it anyway.)
                self.stats.abandoned += 1
                await self._release(lease, 0)
            raise
        finally:
            self.leases.pop(message.id, None)

    def _decode(self, content: object) -> bytes | None:
        text = "" if content is None else str(content)
        if self.config.message_encoding == "none":
            return text.encode("utf-8")
        try:
            # .NET's Convert.FromBase64String skips whitespace and rejects anything else.
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return None

    async def _invoke(self, lease: _Lease, body: bytes) -> None:
        message = lease.message
        fn = self.fn
        kwargs: dict[str, Any] = {
            # azure.functions.queue.QueueMessage: the worker's own class, the one that carries dequeue_count.
            fn.arg_name: QueueTriggerMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=lease.pop_receipt,
            )
        }
        if fn.wants_context:
            kwargs["context"] = _Context(fn.name, self._function_directory)
        self.stats.invocations += 1
        try:
            if fn.is_async:
                await fn.user_function(**kwargs)
            else:
                call = functools.partial(contextvars.copy_context().run, fn.user_function, **kwargs)
                await asyncio.get_running_loop().run_in_executor(self.runner.executor, call)
        except (Exception, asyncio.CancelledError) as exc:
            current = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and current is not None and current.cancelling():
                raise  # shutdown cancelled the invocation: _handle hands the message back
            # Anything else the function raised, a stray CancelledError from deep inside it included,
            # is a failed invocation, as in the worker.
            self.stats.failures += 1
            log.error(
                "function %s failed on message %s (dequeue count %s of %s)",
                fn.name,
                message.id,
                message.dequeue_count,
                self.config.max_dequeue_count,
                exc_info=exc,
            )
            await self._failed(lease)
            return
        self.stats.successes += 1
        log.debug("function %s completed message %s", fn.name, message.id)
        await self._delete(lease)

    async def _failed(self, lease: _Lease) -> None:
        if self.poison is None:
            # No poison queue (this is one): leave the message invisible until its lease lapses,
            # as the host does, instead of spinning on it.
            await self._settle(lease)
            return
        if (lease.message.dequeue_count or 0) >= self.config.max_dequeue_count:
            await self._poison(lease, f"it has reached MaxDequeueCount of {self.config.max_dequeue_count}")
        else:
            await self._release(lease, self.config.visibility_timeout)

    async def _settle(self, lease: _Lease) -> str:
        """Stop renewing the lease and return the current pop receipt."""
        lease.settling = True
        if lease.renewal is not None and not lease.renewal.done():
            with contextlib.suppress(Exception):
                await lease.renewal
        return lease.pop_receipt

    async def _delete(self, lease: _Lease) -> None:
        pop_receipt = await self._settle(lease)
        try:
            await self.queue.delete_message(lease.message.id, pop_receipt)
        except ResourceNotFoundError:
            log.debug("%s: message %s was already gone", self.fn.name, lease.message.id)
        except HttpResponseError as exc:
            # A pop-receipt mismatch means another consumer took the message over (our lease lapsed).
            log.warning("%s: could not delete message %s: %s", self.fn.name, lease.message.id, exc.message)

    async def _release(self, lease: _Lease, visibility: float) -> None:
        pop_receipt = await self._settle(lease)
        try:
            # Whole seconds, as the storage service takes them (the host truncates the TimeSpan too).
            await self.queue.update_message(lease.message.id, pop_receipt, visibility_timeout=int(visibility))
        except (ResourceNotFoundError, HttpResponseError) as exc:
            log.warning("%s: could not release message %s: %s", self.fn.name, lease.message.id, exc)

    async def _poison(self, lease: _Lease, reason: str) -> None:
        message = lease.message
        if self.poison is None:
            log.warning(
                "function %s: message %s: %s, and %s has no poison queue",
                self.fn.name,
                message.id,
                reason,
                self.fn.queue_name,
            )
            await self._settle(lease)
            return
        log.warning(
            "function %s: moving message %s to queue %s: %s", self.fn.name, message.id, self.poison.queue_name, reason
        )
        # The original text as it was on the wire: with base64 encoding it stays base64.
        content = "" if message.content is None else str(message.content)
        try:
            await self.poison.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                await self.poison.create_queue()
            await self.poison.send_message(content)
        self.stats.poisoned += 1
        await self._delete(lease)

    async def renew_loop(self) -> None:
        """Keep long invocations' messages invisible: renew each lease at about half its length."""
        lease_seconds = self.runner.lease_seconds
        while not self.stopping:
            await asyncio.sleep(lease_seconds / 4)
            now = time.monotonic()
            for lease in list(self.leases.values()):
                if not lease.settling and lease.renewal is None and now - lease.renewed_at >= lease_seconds / 2:
                    lease.renewal = asyncio.create_task(self._renew(lease))

    async def _renew(self, lease: _Lease) -> None:
        try:
            updated = await self.queue.update_message(
                lease.message.id, lease.pop_receipt, visibility_timeout=int(self.runner.lease_seconds)
            )
            lease.pop_receipt = updated.pop_receipt or lease.pop_receipt
            lease.renewed_at = time.monotonic()
            log.debug("%s: renewed the lease of message %s", self.fn.name, lease.message.id)
        except AzureError as exc:
            log.warning("%s: could not renew the lease of message %s: %s", self.fn.name, lease.message.id, exc)
        finally:
            lease.renewal = None


def default_credential() -> AsyncTokenCredential:
    """The credential for identity-based connections: the app's own choice (managed identity in Azure)."""
    from processing.adapters.identity import make_credential
    from processing.core.settings import get_settings

    try:
        settings = get_settings()
    except ConfigurationError as exc:
        # The app's settings are incomplete (say, no Azure OpenAI endpoint), but storage can still
        # be reached with the developer's login.
        from azure.identity.aio import DefaultAzureCredential

        log.warning("app settings incomplete (%s); using DefaultAzureCredential for storage", exc)
        return DefaultAzureCredential()
    return make_credential(settings)


class Runner:
    """Drives an app's queue-triggered functions; `await run(stop)` until `stop` is set.

    `functions` picks a subset by name (default: every queue-triggered function). `env` is
    what connections are resolved from (default: the process environment, read by
    processing.core.settings). `credential` is used for identity-based connections (default:
    `default_credential()`, created only if one is needed; one we create, we close).
    """

    def __init__(
        self,
        app: Any,
        host_config: HostQueueConfig | None = None,
        *,
        functions: Collection[str] | None = None,
        env: Mapping[str, str] | None = None,
        credential: AsyncTokenCredential | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.config = host_config or HostQueueConfig()
        if lease_seconds < 2:
            raise RunnerError("lease_seconds must be at least 2 (the lease is renewed at half-time, in whole seconds)")
        if shutdown_timeout < 0:
            raise RunnerError("shutdown_timeout must not be negative")
        self.lease_seconds = lease_seconds
        self.shutdown_timeout = shutdown_timeout
        found, self.not_driven = discover(app)
        if functions is not None:
            wanted = set(functions)
            unknown = wanted - {f.name for f in found}
            if unknown:
                raise RunnerError(
                    f"no queue-triggered function named {', '.join(sorted(unknown))}; "
                    f"the app has {', '.join(f.name for f in found) or 'none'}"
                )
            found = [f for f in found if f.name in wanted]
        if not found:
            raise RunnerError("the app has no queue-triggered functions to drive")
        for fn in found:
            fn.check_drivable()
        self.functions: list[QueueFunction] = found
        self.stats: dict[str, FunctionStats] = {f.name: FunctionStats() for f in found}
        # Resolve every connection now: a missing setting fails at start, not on the first message.
        self._storage: dict[str, StorageSettings] = {}
        for fn in found:
            if fn.connection not in self._storage:
                try:
                    self._storage[fn.connection] = StorageSettings.from_env(env, prefix=fn.connection)
                except ConfigurationError as exc:
                    raise RunnerError(f"function {fn.name}: connection {fn.connection!r}: {exc}") from None
        self._credential_arg = credential
        self._credential: AsyncTokenCredential | None = None
        self._owns_credential = False
        sync_slots = sum(self.config.max_concurrency for f in found if not f.is_async)
        # A pool sized to the sync functions' own limit, so the shared default executor (and its
        # size, which depends on the machine) never becomes the cap on their concurrency.
        self.executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=sync_slots, thread_name_prefix="runner") if sync_slots else None
        )
        self.ready = asyncio.Event()
        self._force = asyncio.Event()
        self._pumps: list[_Pump] = []

    def totals(self) -> FunctionStats:
        total = FunctionStats()
        for stats in self.stats.values():
            total.add(stats)
        return total

    def describe(self) -> list[dict[str, str | None]]:
        return [
            {"function": f.name, "queue": f.queue_name, "poison_queue": f.poison_queue_name, "connection": f.connection}
            for f in self.functions
        ]

    def force_stop(self) -> None:
        """Stop without waiting for in-flight invocations (a second Ctrl-C)."""
        self._force.set()

    def _credential_for_identity(self) -> AsyncTokenCredential:
        if self._credential is None:
            if self._credential_arg is None:
                self._credential, self._owns_credential = default_credential(), True
            else:
                self._credential = self._credential_arg
        return self._credential

    def _service_client(self, storage: StorageSettings) -> QueueServiceClient:
        if storage.connection_string:  # Azurite only
            # Loopback needs no proxy or netrc; with env settings on, aiohttp looks both up in a
            # thread for every request.
            return QueueServiceClient.from_connection_string(storage.connection_string, use_env_settings=False)
        assert storage.queue_url
        return QueueServiceClient(storage.queue_url, credential=self._credential_for_identity())

    async def run(self, stop: asyncio.Event) -> None:
        """Drive the functions until `stop` is set, then drain and close. A Runner runs once."""
        if self._pumps:
            raise RunnerError("this Runner has already run; make a new one")
        services: dict[str, QueueServiceClient] = {}
        tasks: list[asyncio.Task[None]] = []
        try:
            for conn, storage in self._storage.items():
                try:
                    services[conn] = self._service_client(storage)
                except ValueError as exc:  # a malformed connection string or URL
                    raise RunnerError(f"connection {conn!r}: {exc}") from None
            for fn in self.functions:
                service = services[fn.connection]
                poison = fn.poison_queue_name
                # Queue clients from one service client share its connection pool.
                pump = _Pump(
                    self,
                    fn,
                    service.get_queue_client(fn.queue_name),
                    service.get_queue_client(poison) if poison else None,
                )
                self._pumps.append(pump)
                tasks.append(asyncio.create_task(pump.fetch_loop(), name=f"fetch:{fn.name}"))
                tasks.append(asyncio.create_task(pump.renew_loop(), name=f"renew:{fn.name}"))
                log.info("driving %s on queue %s (connection %s)", fn.name, fn.queue_name, fn.connection)
            for name, trigger in self.not_driven.items():
                log.info("not driving %s (%s)", name, trigger)
            self.ready.set()
            await stop.wait()
            log.info("stopping: no new messages; waiting up to %.0f s for invocations in flight", self.shutdown_timeout)
            for pump in self._pumps:
                pump.stop()
            # A fetch in progress normally ends in milliseconds; one stuck in the SDK's retries
            # (storage unreachable) is abandoned rather than allowed to hold up shutdown.
            fetches = [t for t in tasks if t.get_name().startswith("fetch:")]
            _, stuck = await asyncio.wait(fetches, timeout=FETCH_STOP_TIMEOUT)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
            await self._drain()  # no fetch runs any more: the set of invocations can only shrink
        finally:
            # Normally drained by now; if run() itself was cancelled or failed, stop everything
            # before the clients it uses are closed.
            leftovers = [*tasks, *(task for pump in self._pumps for task in pump.tasks)]
            for task in leftovers:
                task.cancel()
            if leftovers:
                await asyncio.wait(leftovers, timeout=5)
            for service in services.values():
                await service.close()
            if self._credential is not None and self._owns_credential:
                await self._credential.close()
            if self.executor is not None:
                # Threads cannot be interrupted: a sync invocation still running finishes on its own.
                self.executor.shutdown(wait=False, cancel_futures=True)
            t = self.totals()
            log.info(
                "stopped: %d invocations, %d succeeded, %d failed, %d moved to poison, %d abandoned",
                t.invocations,
                t.successes,
                t.failures,
                t.poisoned,
                t.abandoned,
            )

    async def _drain(self) -> None:
        in_flight = {task for pump in self._pumps for task in pump.tasks}
        if not in_flight:
            return
        everything = asyncio.gather(*in_flight, return_exceptions=True)
        force = asyncio.create_task(self._force.wait())
        await asyncio.wait({everything, force}, timeout=self.shutdown_timeout, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        pending = [task for task in in_flight if not task.done()]
        if pending:
            log.warning("%d invocation(s) still running at shutdown: releasing their messages", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(everything, timeout=1)


# --- command line --------------------------------------------------------------------------


def load_app(app_dir: Path, module: str = "function_app") -> Any:
    """Import `module` from `app_dir` (put first on sys.path, as the worker does) and return its `app`."""
    app_dir = app_dir.resolve()
    if not (app_dir / f"{module}.py").is_file():
        raise RunnerError(f"no {module}.py in {app_dir}")
    sys.path.insert(0, str(app_dir))
    loaded = importlib.import_module(module)
    app = getattr(loaded, "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise RunnerError(f"{app_dir / (module + '.py')} defines no `app = azure.functions.FunctionApp()`")
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localdev.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="folder of function_app.py (default: cwd)")
    parser.add_argument("--host-json", type=Path, help="host.json to read (default: APP_DIR/host.json)")
    parser.add_argument("--functions", help="comma-separated function names to drive (default: all queue triggers)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        help=f"seconds to let invocations finish on SIGTERM/SIGINT (default {DEFAULT_SHUTDOWN_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        help=f"visibility of a received message, renewed at half-time (default {DEFAULT_LEASE_SECONDS:.0f})",
    )
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    host_json: Path = args.host_json or args.app_dir / "host.json"
    if args.host_json is None and not host_json.is_file():
        log.warning("no host.json in %s: using the queue extension's defaults", args.app_dir)
        config = HostQueueConfig()
    else:
        config = HostQueueConfig.from_host_json(host_json)
    names = [n.strip() for n in args.functions.split(",") if n.strip()] if args.functions else None
    runner = Runner(
        load_app(args.app_dir),
        config,
        functions=names,
        lease_seconds=args.lease_seconds,
        shutdown_timeout=args.shutdown_timeout,
    )
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            runner.force_stop()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    run = asyncio.create_task(runner.run(stop))
    ready = asyncio.create_task(runner.ready.wait())
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        line = {"ready": "runner", "functions": runner.describe(), "not_driven": runner.not_driven}
        print(json.dumps({**line, "host": config.describe()}), flush=True)
    else:
        ready.cancel()
    await run
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if level != "DEBUG":
        # The storage SDK logs every request at INFO: noise, and real cost at thousands of messages a minute.
        logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        return asyncio.run(_main(args))
    except (RunnerError, OSError) as exc:
        print(f"localdev.runner: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
