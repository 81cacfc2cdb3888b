"""`rowsmith`: submit CSVs, watch jobs, fetch results; start and stop the local stack.

Every command takes --json and then prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from processing.core.errors import RowsmithError
from processing.core.settings import app_values
from rowsmith_cli import commands, estimate, local, progress
from rowsmith_cli.settings import CliSettings, model_environment
from rowsmith_cli.target import TargetError, dead_part, local_stack, resolve


def _non_negative(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--account",
        help="storage account of an Azure deployment (default: AZURE_STORAGE_ACCOUNT, else the local stack)",
    )
    parser.add_argument("--local", action="store_true", help="use the local stack even if an account is set")


def build_parser() -> argparse.ArgumentParser:
    # --json is accepted before or after the command: `rowsmith --json status`, `rowsmith status --json`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object on the last line"
    )
    parser = argparse.ArgumentParser(prog="rowsmith", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p_local = sub.add_parser(
        "local", parents=[common], help="start or stop the local stack (Azurite, emulators, runner)"
    )
    local_sub = p_local.add_subparsers(dest="action", required=True)
    up = local_sub.add_parser("up", parents=[common], help="start the local stack in the background")
    local.add_stack_options(up)
    up.add_argument("--no-runner", action="store_true", help="start Azurite and the emulators only, for `func start`")
    local_sub.add_parser("down", parents=[common], help="stop the local stack")
    local_sub.add_parser("status", parents=[common], help="is the local stack running?")

    p_submit = sub.add_parser("submit", parents=[common], help="upload a CSV to the input container, starting a job")
    p_submit.add_argument("file", type=Path)
    p_submit.add_argument("--pipeline", help="pipeline name: uploads to input/<pipeline>/ (default: default)")
    p_submit.add_argument("--wait", action="store_true", help="show progress and wait until the job ends")
    p_submit.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits (default 3600)")
    p_submit.add_argument(
        "--budget-usd",
        type=float,
        metavar="DOLLARS",
        help="the most this job may spend at the price table's prices; rows it cannot pay for end as `budget` "
        "(lower than the pipeline's budget_usd, if that is set)",
    )
    p_submit.add_argument(
        "--no-check",
        action="store_true",
        help="upload without reading the file here first (when the deployed app's pipelines differ from this folder's)",
    )
    _add_target(p_submit)

    p_estimate = sub.add_parser(
        "estimate",
        parents=[common],
        help="check a CSV as ingest would, show its first prompts, count rows and tokens, and estimate cost and time",
    )
    p_estimate.add_argument("file", type=Path)
    p_estimate.add_argument("--pipeline", help="pipeline name (default: default)")
    p_estimate.add_argument(
        "--sample",
        type=_non_negative,
        default=None,
        metavar="N",
        help="send the first N rows to the model as the app would (billed) and extrapolate answer and reasoning "
        f"tokens from their usage (default: {estimate.DEFAULT_SAMPLE} when a model is reachable: the running "
        "local stack's, or AZURE_OPENAI_ENDPOINT's); --sample 0 sends nothing and counts answers at their "
        "budget (an upper bound)",
    )

    p_watch = sub.add_parser("watch", parents=[common], help="show a running job's progress until it ends")
    p_watch.add_argument("job")
    p_watch.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    _add_target(p_watch)

    p_cancel = sub.add_parser(
        "cancel", parents=[common], help="stop a job: rows not yet answered end as `cancelled` errors"
    )
    p_cancel.add_argument("job")
    _add_target(p_cancel)

    p_status = sub.add_parser("status", parents=[common], help="jobs with their state and row counts")
    p_status.add_argument("job", nargs="?")
    _add_target(p_status)

    p_results = sub.add_parser("results", parents=[common], help="download a job's results CSV")
    p_results.add_argument("job")
    p_results.add_argument("-o", "--output", type=Path, help="where to write it (default: ./<file>.results.csv)")
    p_results.add_argument("--jsonl", action="store_true", help="download the JSON lines twin instead")
    p_results.add_argument(
        "--failed",
        action="store_true",
        help="write only the rows that ended as errors, as a CSV to upload again (default: ./<file>.failed.csv)",
    )
    _add_target(p_results)

    p_demo = sub.add_parser("demo", parents=[common], help="run a CSV end to end on a fresh local stack, then stop it")
    p_demo.add_argument("file", type=Path)
    p_demo.add_argument("--pipeline", default="default")
    p_demo.add_argument("--timeout", type=float, default=600)
    local.add_stack_options(p_demo)
    return parser


def _print_human(command: str, info: dict[str, Any]) -> None:
    if "jobs" in info:
        if not info["jobs"]:
            print("no jobs yet")
        for job in info["jobs"]:
            print(commands.describe(job))
        return
    if command == "estimate" and not info.get("error"):
        print(estimate.describe(info))
        return
    if info.get("error"):
        for line in progress.failure_lines(info):
            print(line, file=sys.stderr)
    elif command in ("status", "submit", "results", "watch"):
        print(commands.describe(info))
    if info.get("message"):
        print(info["message"])
    if info.get("warning"):
        print(f"warning: {info['warning']}", file=sys.stderr)
    if info.get("error_report_blob"):
        print(f"error report: {info['error_report_blob']}", file=sys.stderr)
    if info.get("file") and command == "results":
        print(f"wrote {info['file']}")


async def _estimate(args: argparse.Namespace, cli: CliSettings) -> dict[str, Any]:
    """Sampled when a model is reachable (or --sample N asks), else the upper bound, saying why."""
    sample, env, note = args.sample, None, None
    if sample != 0:
        stack = local_stack(cli.state_dir)
        live = stack if stack is not None and dead_part(stack, cli.state_dir) is None else None
        env = model_environment(live.app_settings() if live else None)
        if sample is None:
            reachable = bool(env.get("AZURE_OPENAI_ENDPOINT", "").strip())
            sample = estimate.DEFAULT_SAMPLE if reachable else 0
            note = None if reachable else estimate.NO_MODEL_NOTE
    info = await estimate.estimate(args.file, args.pipeline, app_values(), sample=sample, model_env=env)
    if note:
        info["note"] = note
    return info


async def _run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    cli = CliSettings.from_env()
    if args.command == "local":
        return await local.run(args, cli)
    if args.command == "demo":
        return await local.demo(args, cli)
    if args.command == "estimate":
        return commands.EXIT_OK, await _estimate(args, cli)
    target = resolve(getattr(args, "account", None), local=getattr(args, "local", False), cli=cli)
    try:
        if args.command == "submit":
            return await commands.submit(
                target,
                args.file,
                pipeline=args.pipeline,
                wait=args.wait,
                timeout=args.timeout,
                quiet=args.json,
                check=None if args.no_check else app_values(),
                budget_usd=args.budget_usd,
            )
        if args.command == "watch":
            return await commands.watch(target, args.job, timeout=args.timeout, quiet=args.json)
        if args.command == "cancel":
            return await commands.cancel(target, args.job)
        if args.command == "status":
            return await commands.status(target, args.job)
        return await commands.results(target, args.job, args.output, jsonl=args.jsonl, failed=args.failed)
    finally:
        await target.close()


def _storage_error(exc: AzureError, args: argparse.Namespace) -> str:
    cli = CliSettings.from_env()
    if args.command != "local" and (getattr(args, "local", False) or not (cli.storage_account or cli.blob_url)):
        stack = local_stack(cli.state_dir)
        dead = dead_part(stack, cli.state_dir) if stack else None
        if dead:
            return f"the local stack is not running ({dead}): run rowsmith local up"
    first = (exc.message or str(exc)).strip().splitlines()
    return f"storage did not answer as expected: {first[0] if first else type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Not a parser default: set_defaults would change the --json action shared with every subcommand.
    args.json = getattr(args, "json", False)
    try:
        code, info = asyncio.run(_run(args))
    except (TargetError, RowsmithError, FileNotFoundError, ValueError) as exc:
        # A job input or pipeline error carries where and fix, as its job's error report would.
        code, info = commands.EXIT_FAILED, {"error": str(exc)}
        info.update({key: getattr(exc, key) for key in ("where", "fix") if getattr(exc, key, "")})
    except AzureError as exc:
        # Storage that stopped answering mid-command: one line, not the SDK's traceback.
        code, info = commands.EXIT_FAILED, {"error": _storage_error(exc, args)}
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        _print_human(args.command, info)
    return code


if __name__ == "__main__":
    sys.exit(main())
