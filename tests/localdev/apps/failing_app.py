"""A v2-model app whose functions fail: some attempts, every attempt, or on a poison queue."""

from __future__ import annotations

import asyncio

import azure.functions as func

from tests.localdev.apps.probe import Probe


class Boom(RuntimeError):
    """The fixture's deliberate failure."""


def build_app(prefix: str, probe: Probe, *, fail_times: int = 2) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=f"{prefix}-flaky", connection="AzureWebJobsStorage")
    async def flaky(msg: func.QueueMessage) -> None:
        probe.enter("flaky", msg)
        probe.leave(msg)
        if (msg.dequeue_count or 0) <= fail_times:
            raise Boom(f"attempt {msg.dequeue_count} fails on purpose")

    @app.queue_trigger(arg_name="msg", queue_name=f"{prefix}-doomed", connection="AzureWebJobsStorage")
    async def doomed(msg: func.QueueMessage) -> None:
        probe.enter("doomed", msg)
        probe.leave(msg)
        raise Boom("always fails")

    # A queue that is itself a poison queue: the host gives it no poison queue of its own.
    @app.queue_trigger(arg_name="msg", queue_name=f"{prefix}-doomed-poison", connection="AzureWebJobsStorage")
    def doomed_poison(msg: func.QueueMessage) -> None:
        probe.enter("doomed_poison", msg)
        probe.leave(msg)
        raise Boom("poison handler fails too")

    @app.queue_trigger(arg_name="msg", queue_name=f"{prefix}-stray", connection="AzureWebJobsStorage")
    async def stray_cancel(msg: func.QueueMessage) -> None:
        probe.enter("stray_cancel", msg)
        probe.leave(msg)
        if msg.dequeue_count == 1:
            # What a timeout deep inside a library can surface as: not a shutdown, a failure.
            raise asyncio.CancelledError

    return app
