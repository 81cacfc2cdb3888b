"""`rowsmith local up|down|status` and `rowsmith demo`: the local stack as background processes.

The stack is Azurite, the managed-identity endpoint, the Azure OpenAI emulator, the local
Event Grid (all from localdev/) and the local runner driving function_app.py. Its state (pids, ports, the app
settings) lives in <state dir>/stack.json; `local.settings.json` is written for `func start`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from localdev.event_grid.main import DEFAULT_INTERVAL_SECONDS
from localdev.ports import pid_alive, terminate_pid
from localdev.private_files import private_dir, write_private
from localdev.runner.process import PROCESS_MARKER as RUNNER_MARKER
from localdev.runner.process import RunnerProcess, with_this_environment
from localdev.stack import Stack, running_stack, start_stack, write_local_settings
from processing.core.settings import APP_ROOT
from rowsmith_cli import commands
from rowsmith_cli.settings import CliSettings
from rowsmith_cli.target import resolve, stack_file

RUNNER_PID = "runner.pid"


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-ms", type=float, default=20, help="emulated model latency (default 20)")
    parser.add_argument("--rpm", type=int, default=0, help="emulated requests-per-minute quota (0: none)")
    parser.add_argument("--tpm", type=int, default=0, help="emulated tokens-per-minute quota (0: none)")
    parser.add_argument(
        "--finalize-interval", type=float, default=2, help="seconds between a job's completion checks (default 2)"
    )
    parser.add_argument(
        "--event-grid-interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between the local Event Grid's looks at the input container (default 1)",
    )
    parser.add_argument(
        "--storage-auth",
        choices=("key", "oauth"),
        default="key",
        help="key: Azurite's development account (default); oauth: Azurite over HTTPS checking bearer tokens, "
        "the app given only account URLs and the managed identity, as in Azure",
    )
    parser.add_argument(
        "--settings-file",
        type=Path,
        default=APP_ROOT / "local.settings.json",
        help="where to write the settings for `func start` (default: local.settings.json in the app)",
    )


def _runner_pid(cli: CliSettings) -> int | None:
    try:
        return int((cli.state_dir / RUNNER_PID).read_text().strip())
    except (OSError, ValueError):
        return None


def running(cli: CliSettings) -> Stack | None:
    """The local stack, if it is up (and its runner, unless it was started without one)."""
    stack = running_stack(cli.state_dir)
    pid = _runner_pid(cli)
    if stack and all(stack.running().values()) and (pid is None or pid_alive(pid)):
        return stack
    return None


def _start_runner(state_dir: Path, settings: dict[str, str]) -> int:
    # Detached: it survives the `rowsmith local up` that started it.
    pid = RunnerProcess(with_this_environment(settings), state_dir / "runner.log").start_detached()
    write_private(state_dir / RUNNER_PID, f"{pid}\n")
    return pid


def local_app_settings(stack: Stack, finalize_interval: float) -> dict[str, str]:
    return {**stack.app_settings(), "ROWSMITH_FINALIZE_INTERVAL_SECONDS": str(finalize_interval)}


def up(args: argparse.Namespace, cli: CliSettings) -> tuple[Stack, bool]:
    """Start the stack and the runner unless they run already; (stack, already_running)."""
    stack = running(cli)
    if stack:
        return stack, True
    down(cli)  # whatever is left of a half-dead stack goes first
    private_dir(cli.state_dir)  # 0700: stack.json holds the identity header
    stack = start_stack(
        cli.state_dir,
        detached=True,
        latency_ms=args.latency_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        storage_auth=getattr(args, "storage_auth", "key"),
        event_grid_interval=getattr(args, "event_grid_interval", DEFAULT_INTERVAL_SECONDS),
    )
    settings = local_app_settings(stack, args.finalize_interval)
    if not getattr(args, "no_runner", False):
        _start_runner(cli.state_dir, settings)
    write_local_settings(args.settings_file, settings)
    return stack, False


def down(cli: CliSettings) -> dict[str, Any]:
    stopped = False
    pid = _runner_pid(cli)
    if pid and pid_alive(pid):
        # SIGTERM lets the runner finish the invocations in flight; only our runner is signalled.
        terminate_pid(pid, RUNNER_MARKER, timeout=20)
        stopped = True
    (cli.state_dir / RUNNER_PID).unlink(missing_ok=True)
    path = stack_file(cli.state_dir)
    if path.is_file():
        try:
            Stack.load(path).stop()
            stopped = True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    return {"stopped": stopped}


async def run(args: argparse.Namespace, cli: CliSettings) -> tuple[int, dict[str, Any]]:
    if args.action == "up":
        stack, already = up(args, cli)
        settings = stack.app_settings()
        info = {
            "running": True,
            "already_running": already,
            "state_file": str(stack_file(cli.state_dir)),
            "openai_endpoint": settings["AZURE_OPENAI_ENDPOINT"],
            "identity_endpoint": settings["IDENTITY_ENDPOINT"],
            "local_settings": str(args.settings_file),
        }
        if not args.json:
            word = "already running" if already else "started"
            print(f"local stack {word}; settings for `func start` in {info['local_settings']}", file=sys.stderr)
        return commands.EXIT_OK, info
    if args.action == "down":
        return commands.EXIT_OK, down(cli)
    stack = running(cli)
    return (commands.EXIT_OK if stack else commands.EXIT_FAILED), {"running": bool(stack)}


def preview(path: Path, rows: int = 5, width: int = 34) -> str:
    """A few rows of the results, input columns first and last few added columns, truncated."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        body = [r for _, r in zip(range(rows), reader, strict=False)]
    keep = [0, *range(max(1, len(header) - 5), len(header))] if len(header) > 6 else list(range(len(header)))

    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    table = [[cut(header[i]) for i in keep]] + [[cut(r[i]) if i < len(r) else "" for i in keep] for r in body]
    widths = [max(len(row[c]) for row in table) for c in range(len(keep))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table)


async def demo(args: argparse.Namespace, cli: CliSettings) -> tuple[int, dict[str, Any]]:
    started = running(cli) is None
    if started:
        if not args.json:
            print("starting the local stack (Azurite, identity endpoint, Azure OpenAI emulator, Event Grid, runner)...")
        up(args, cli)
    try:
        target = resolve(None, local=True, cli=cli)
        try:
            code, info = await commands.submit(
                target, args.file, pipeline=args.pipeline, wait=True, timeout=args.timeout, quiet=args.json
            )
            if code == commands.EXIT_OK:
                out_dir = Path("results")
                out_dir.mkdir(exist_ok=True)
                name = Path(info["results_blob"]).name
                code, info = await commands.results(target, info["job"], out_dir / name, jsonl=False)
        finally:
            await target.close()
    finally:
        if started:
            down(cli)
    if not args.json:
        print(commands.describe(info))
        if info.get("file"):
            print(f"\nresults file: {info['file']}\n")
            print(preview(Path(info["file"])))
        elif info.get("error"):
            print(f"error: {info['error']}", file=sys.stderr)
    return code, info


__all__ = ["add_stack_options", "demo", "run"]
