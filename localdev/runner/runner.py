"""The runner: drives an app's queue-triggered functions, one pump per function, and stops them gracefully.

On stop: no new fetches; invocations in flight get `shutdown_timeout` to finish, then are
cancelled and their messages made visible again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential

from localdev.runner.connections import Connections
from localdev.runner.discovery import QueueFunction, discover
from localdev.runner.errors import RunnerError
from localdev.runner.hostconfig import HostQueueConfig
from localdev.runner.pump import FunctionStats, Pump
from localdev.runner.worker import start_threadpool

log = logging.getLogger("localdev.runner")

# The host receives with a 10-minute visibility and renews it at half-time while the function runs.
DEFAULT_LEASE_SECONDS = 600.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0  # under `rowsmith local down`'s 15 s before it kills us
FETCH_STOP_TIMEOUT = 2.0  # how long stop waits for a receive in progress before cancelling it


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
        self._connections = Connections(found, env, credential)
        if any(not f.is_async for f in found):
            # The worker's own pool, as in Azure: its size (PYTHON_THREADPOOL_THREAD_COUNT, else
            # Python's default for the machine) caps how many sync invocations run at once.
            start_threadpool()
        self.ready = asyncio.Event()
        self._force = asyncio.Event()
        self._pumps: list[Pump] = []

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

    async def run(self, stop: asyncio.Event) -> None:
        """Drive the functions until `stop` is set, then drain and close. A Runner runs once."""
        if self._pumps:
            raise RunnerError("this Runner has already run; make a new one")
        tasks: list[asyncio.Task[None]] = []
        try:
            services = self._connections.open()
            for fn in self.functions:
                service = services[fn.connection]
                poison = fn.poison_queue_name
                # Queue clients from one service client share its connection pool.
                pump = Pump(
                    fn,
                    service.get_queue_client(fn.queue_name),
                    service.get_queue_client(poison) if poison else None,
                    config=self.config,
                    stats=self.stats[fn.name],
                    lease_seconds=self.lease_seconds,
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
            # The worker's thread pool stays for the process, as in the worker: threads cannot be
            # interrupted, and a sync invocation still running finishes on its own.
            await self._connections.close()
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
