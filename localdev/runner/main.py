"""`python -m localdev.runner`: the command line, the ready line and the signals (a second one stops at once)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import localdev.runner
from localdev.runner.discovery import load_app
from localdev.runner.errors import RunnerError
from localdev.runner.hostconfig import HostQueueConfig
from localdev.runner.runner import DEFAULT_LEASE_SECONDS, DEFAULT_SHUTDOWN_TIMEOUT, Runner

log = logging.getLogger("localdev.runner")
_PACKAGE_DOC = localdev.runner.__doc__ or ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localdev.runner", description=_PACKAGE_DOC.split("\n")[0])
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
    if level == "DEBUG":
        # The app quiets the SDKs' loggers itself (processing/adapters/clients.py), as it must in
        # the real worker, which forwards every record; a DEBUG run wants to hear them.
        for name in ("azure", "httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        return asyncio.run(_main(args))
    except (RunnerError, OSError) as exc:
        print(f"localdev.runner: {exc}", file=sys.stderr)
        return 2
