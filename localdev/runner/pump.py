"""One function's pump: fetch, lease, invoke, then delete, retry later or move to poison.

With host.json's `extensions.queues`, as the host's queue extension does:

- fetch up to `batchSize` messages with a long visibility (the host's 10 minutes, renewed
  at half-time while the invocation runs); fetch again as soon as the messages in flight
  drop to `newBatchThreshold` or below, so at most batchSize + newBatchThreshold run at
  once; while the queue stays empty, poll with a randomised exponential backoff from
  100 ms up to `maxPollingInterval`;
- success deletes the message; an exception makes it visible again after
  `visibilityTimeout`, or once its dequeue count reaches `maxDequeueCount` moves the
  original text to `<queue>-poison` (created if missing) and deletes it. A message already
  dequeued more than `maxDequeueCount` times (a crashed runner), or one that is not valid
  base64, goes to poison without an invocation. A queue whose name already ends in
  `-poison` has no poison queue: a failed message there stays invisible until its lease
  lapses (the host does the same, to avoid a hot retry loop);
- an invocation still running after host.json's `functionTimeout` is cancelled and fails,
  so its message follows the retry above (the host fails it too, and restarts the worker);
- an invocation cancelled at shutdown hands its message back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, fields

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient

from localdev.runner.discovery import QueueFunction
from localdev.runner.hostconfig import MIN_POLLING_INTERVAL, HostQueueConfig
from localdev.runner.invocation import call, decode_body

log = logging.getLogger("localdev.runner")


@dataclass
class FunctionStats:
    """Counters of one function; `Runner.stats` holds one per function, `Runner.totals()` their sum."""

    invocations: int = 0
    successes: int = 0
    failures: int = 0
    poisoned: int = 0  # moved to <queue>-poison (after failures, or without an invocation)
    abandoned: int = 0  # still running at shutdown past the bounded wait; released to the queue
    timeouts: int = 0  # failed for running past functionTimeout (counted in failures too)
    in_flight: int = 0  # messages received and not yet settled
    max_in_flight: int = 0

    def add(self, other: FunctionStats) -> None:
        for f in fields(self):
            if f.name == "max_in_flight":
                self.max_in_flight = max(self.max_in_flight, other.max_in_flight)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Lease:
    """A received message while it is ours: its pop receipt changes with each visibility update."""

    message: StorageQueueMessage
    pop_receipt: str
    renewed_at: float
    renewal: asyncio.Task[None] | None = None
    settling: bool = False


class Pump:
    """Fetches and invokes one function's messages with the host's batch and threshold semantics."""

    def __init__(
        self,
        fn: QueueFunction,
        queue: QueueClient,
        poison: QueueClient | None,
        *,
        config: HostQueueConfig,
        stats: FunctionStats,
        lease_seconds: float,
    ) -> None:
        self.fn = fn
        self.config = config
        self.queue = queue
        self.poison = poison
        self.stats = stats
        self.lease_seconds = lease_seconds
        self.tasks: set[asyncio.Task[None]] = set()
        self.leases: dict[str, Lease] = {}
        # Set when an invocation settles at or under the threshold, and on stop: one wake-up
        # source, so the fetch loop never needs a helper task per wait.
        self.wake = asyncio.Event()
        self.stopping = False
        self._missing_queue_logged = False

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
            messages_per_page=self.config.batch_size, visibility_timeout=int(self.lease_seconds)
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
        lease = Lease(message, message.pop_receipt or "", time.monotonic())
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

    async def _handle(self, lease: Lease) -> None:
        message = lease.message
        try:
            if message.dequeue_count is not None and message.dequeue_count > self.config.max_dequeue_count:
                # Dequeued more often than allowed without a verdict (a runner died mid-invocation):
                # the host moves it to poison before invoking, and so do we.
                await self._poison(lease, f"dequeue count {message.dequeue_count} is over MaxDequeueCount")
                return
            body = decode_body(message.content, self.config.message_encoding)
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

    async def _invoke(self, lease: Lease, body: bytes) -> None:
        message = lease.message
        fn = self.fn
        self.stats.invocations += 1
        try:
            # A sync function's thread cannot be stopped: on timeout it is failed here while the
            # thread runs on (the host would restart the whole worker process instead).
            async with asyncio.timeout(self.config.function_timeout):
                await call(fn, message, body, lease.pop_receipt)
        except (Exception, asyncio.CancelledError) as exc:
            current = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and current is not None and current.cancelling():
                raise  # shutdown cancelled the invocation: _handle hands the message back
            # Anything else the function raised is a failed invocation. A stray CancelledError from
            # deep inside it counts as one here too, which the real worker does not do: it sends no
            # response for it, and the host waits out functionTimeout and restarts the worker.
            # function_app._handle turns it into an ordinary exception so both agree.
            self.stats.failures += 1
            if isinstance(exc, TimeoutError):
                self.stats.timeouts += 1
                reason = f"timed out after functionTimeout ({self.config.function_timeout:g} s)"
            elif isinstance(exc, asyncio.CancelledError):
                # The real worker sends no response for this: the host waits for functionTimeout
                # and restarts the worker. Failing it at once is the outcome, sooner.
                reason = "raised CancelledError (the worker would not answer; the host fails it at functionTimeout)"
            else:
                reason = str(exc)  # the runtime has logged the traceback ("Native invocation failed")
            log.error(
                "function %s failed on message %s (dequeue count %s of %s): %s",
                fn.name,
                message.id,
                message.dequeue_count,
                self.config.max_dequeue_count,
                reason,
            )
            await self._failed(lease)
            return
        self.stats.successes += 1
        log.debug("function %s completed message %s", fn.name, message.id)
        await self._delete(lease)

    async def _failed(self, lease: Lease) -> None:
        if self.poison is None:
            # No poison queue (this is one): leave the message invisible until its lease lapses,
            # as the host does, instead of spinning on it.
            await self._settle(lease)
            return
        if (lease.message.dequeue_count or 0) >= self.config.max_dequeue_count:
            await self._poison(lease, f"it has reached MaxDequeueCount of {self.config.max_dequeue_count}")
        else:
            await self._release(lease, self.config.visibility_timeout)

    async def _settle(self, lease: Lease) -> str:
        """Stop renewing the lease and return the current pop receipt."""
        lease.settling = True
        if lease.renewal is not None and not lease.renewal.done():
            with contextlib.suppress(Exception):
                await lease.renewal
        return lease.pop_receipt

    async def _delete(self, lease: Lease) -> None:
        pop_receipt = await self._settle(lease)
        try:
            await self.queue.delete_message(lease.message.id, pop_receipt)
        except ResourceNotFoundError:
            log.debug("%s: message %s was already gone", self.fn.name, lease.message.id)
        except HttpResponseError as exc:
            # A pop-receipt mismatch means another consumer took the message over (our lease lapsed).
            log.warning("%s: could not delete message %s: %s", self.fn.name, lease.message.id, exc.message)

    async def _release(self, lease: Lease, visibility: float) -> None:
        pop_receipt = await self._settle(lease)
        try:
            # Whole seconds, as the storage service takes them (the host truncates the TimeSpan too).
            await self.queue.update_message(lease.message.id, pop_receipt, visibility_timeout=int(visibility))
        except (ResourceNotFoundError, HttpResponseError) as exc:
            log.warning("%s: could not release message %s: %s", self.fn.name, lease.message.id, exc)

    async def _poison(self, lease: Lease, reason: str) -> None:
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
        lease_seconds = self.lease_seconds
        while not self.stopping:
            await asyncio.sleep(lease_seconds / 4)
            now = time.monotonic()
            for lease in list(self.leases.values()):
                if not lease.settling and lease.renewal is None and now - lease.renewed_at >= lease_seconds / 2:
                    lease.renewal = asyncio.create_task(self._renew(lease))

    async def _renew(self, lease: Lease) -> None:
        try:
            updated = await self.queue.update_message(
                lease.message.id, lease.pop_receipt, visibility_timeout=int(self.lease_seconds)
            )
            lease.pop_receipt = updated.pop_receipt or lease.pop_receipt
            lease.renewed_at = time.monotonic()
            log.debug("%s: renewed the lease of message %s", self.fn.name, lease.message.id)
        except AzureError as exc:
            log.warning("%s: could not renew the lease of message %s: %s", self.fn.name, lease.message.id, exc)
        finally:
            lease.renewal = None
