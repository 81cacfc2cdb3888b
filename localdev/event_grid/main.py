"""`python -m localdev.event_grid`: the local Event Grid as a process of the local stack.

It reaches Azurite as the stack's own set-up does: the development account (shared key),
over HTTPS trusting the stack's CA in OAuth mode (`--ca-file`). In Azure the system topic
writes to the queue with its own managed identity; locally no token is needed for that,
and the identity endpoint's counters stay the app's and the tests' own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from localdev import azurite
from localdev.event_grid.subscription import CSV_UPLOADS
from localdev.event_grid.watcher import Watcher
from localdev.ports import python_module_command, run_forever

PROCESS_MARKER = "localdev.event_grid"
DEFAULT_INTERVAL_SECONDS = 1.0
STATE_FILE = "event-grid.json"  # in the stack's state folder: what was seen, across restarts
# After this many failed polls in a row (Azurite gone, say), wait longer between tries.
BACKOFF_AFTER = 5

log = logging.getLogger("localdev.event_grid")


def command(
    *, blob_port: int, queue_port: int, state_file: Path, interval: float, ca_file: Path | None = None
) -> list[str]:
    """The command line the stack starts this process with."""
    args = ["--blob-port", str(blob_port), "--queue-port", str(queue_port)]
    args += ["--state-file", str(state_file), "--interval", str(interval)]
    if ca_file is not None:
        args += ["--ca-file", str(ca_file)]
    return python_module_command(PROCESS_MARKER, *args)


async def watch(args: argparse.Namespace) -> None:
    conn = azurite.connection_string(args.blob_port, args.queue_port, https=args.ca_file is not None)
    options = azurite.client_options(args.ca_file)
    subscription = CSV_UPLOADS
    async with (
        BlobServiceClient.from_connection_string(conn, **options) as blobs,
        QueueServiceClient.from_connection_string(conn, **options) as queues,
    ):
        watcher = Watcher(
            blobs.get_container_client(subscription.container),
            queues.get_queue_client(subscription.queue_name),
            subscription,
            args.state_file,
        )
        print(json.dumps({"ready": "event-grid", "container": subscription.container, "interval": args.interval}))
        failures = 0
        while True:
            try:
                await watcher.poll()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("poll failed (%d in a row): %s", failures, exc)
            await asyncio.sleep(args.interval * (10 if failures >= BACKOFF_AFTER else 1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {PROCESS_MARKER}", description=__doc__.split("\n")[0])
    parser.add_argument("--blob-port", type=int, required=True, help="Azurite's blob port")
    parser.add_argument("--queue-port", type=int, required=True, help="Azurite's queue port")
    parser.add_argument("--ca-file", type=Path, help="the CA to trust: Azurite over HTTPS (OAuth mode)")
    parser.add_argument("--state-file", type=Path, help="where to keep what was seen across restarts")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_SECONDS, help="seconds between polls (default 1)"
    )
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per raised event is the useful log; azure-core's per-request lines are not.
    logging.getLogger("azure").setLevel(logging.WARNING)
    run_forever(watch(parse_args(argv)))
