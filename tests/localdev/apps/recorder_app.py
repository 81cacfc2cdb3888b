"""A v2-model app whose functions record every message: async, sync, and an HTTP one the runner ignores.

`build_app` makes a fresh app per test, with queue names under the test's own prefix.
"""

from __future__ import annotations

import asyncio
import time

import azure.functions as func

from tests.localdev.apps.probe import Probe


def delay_of(body: bytes) -> float:
    """A body "sleep:<seconds>[:...]" makes the invocation take that long."""
    text = body.decode("utf-8", errors="replace")
    if text.startswith("sleep:"):
        return float(text.split(":")[1])
    return 0.0


def build_app(prefix: str, probe: Probe) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=f"{prefix}-record", connection="AzureWebJobsStorage")
    async def record(msg: func.QueueMessage) -> None:
        probe.enter("record", msg)
        finished = False
        try:
            await asyncio.sleep(delay_of(msg.get_body()))
            finished = True
        finally:
            probe.leave(msg, finished=finished)

    @app.queue_trigger(arg_name="item", queue_name=f"{prefix}-sync", connection="AzureWebJobsStorage")
    def record_sync(item: func.QueueMessage, context: func.Context) -> None:
        assert context.function_name == "record_sync"
        probe.enter("record_sync", item)
        time.sleep(delay_of(item.get_body()))
        probe.leave(item)

    @app.route(route="ping", auth_level=func.AuthLevel.ANONYMOUS)
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    return app
