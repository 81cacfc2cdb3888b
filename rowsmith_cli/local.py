"""`rowsmith local up|down|status` and `rowsmith demo`: the local stack as background processes.

The stack is Azurite, the managed-identity endpoint, the Azure OpenAI emulator, the local
Event Grid (all from localdev/) and the local runner driving function_app.py. Its state (pids, ports, the app
settings) lives in <state dir>/stack.json; `local.settings.json` is written for `func start`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localdev.event_grid.main import DEFAULT_INTERVAL_SECONDS
from localdev.openai_emulator.config import DEFAULT_DEPLOYMENTS
from localdev.ports import LOOPBACK, pid_alive, port_open, terminate_pid
from localdev.private_files import private_dir, write_private
from localdev.runner.process import PROCESS_MARKER as RUNNER_MARKER
from localdev.runner.process import RunnerProcess, with_this_environment
from localdev.stack import Stack, running_stack, start_stack, write_local_settings
from rowsmith_cli import commands
from rowsmith_cli.settings import CliSettings
from rowsmith_cli.target import RUNNER_PID, TargetError, dead_part, resolve, runner_pid, stack_file

OPTIONS_FILE = "options.json"  # in the state dir: the options the running stack was started with
AZURITE_DATA = "azurite-data"  # in the state dir: Azurite's blobs and queues, unless --in-memory
# `local up`'s options that shape the running stack, with their flags and defaults: a second
# `local up` compares them with the stack's (and the restart hint names the non-default ones).
STACK_FLAGS: dict[str, tuple[str, Any]] = {}
# --<name>-port: a fixed port for each of the stack's services; 0 (the default) takes a free one.
AZURITE_SERVICES = ("blob", "queue", "table")
PORT_OPTIONS = {
    "blob": "Azurite's blob",
    "queue": "Azurite's queue",
    "table": "Azurite's table",
    "emulator": "the Azure OpenAI emulator's",
    "identity": "the identity endpoint's",
}


def _stack_option(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    action = parser.add_argument(flag, **kwargs)
    STACK_FLAGS[action.dest] = (flag, action.default)


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    _stack_option(parser, "--latency-ms", type=float, default=20, help="emulated model latency (default 20)")
    _stack_option(
        parser,
        "--rpm",
        type=int,
        default=0,
        help="requests-per-minute quota of the emulator, and the app's own pace (AZURE_OPENAI_RPM) (0: none)",
    )
    _stack_option(
        parser,
        "--tpm",
        type=int,
        default=0,
        help="tokens-per-minute quota of the emulator, and the app's own pace (AZURE_OPENAI_TPM) (0: none)",
    )
    _stack_option(
        parser,
        "--finalize-interval",
        type=float,
        default=2,
        help="seconds between a job's completion checks (default 2)",
    )
    _stack_option(
        parser,
        "--event-grid-interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between the local Event Grid's looks at the input container (default 1)",
    )
    _stack_option(
        parser,
        "--storage-auth",
        choices=("key", "oauth"),
        default="key",
        help="key: Azurite's development account (default); oauth: Azurite over HTTPS checking bearer tokens, "
        "the app given only account URLs and the managed identity, as in Azure",
    )
    _stack_option(
        parser,
        "--in-memory",
        action="store_true",
        help="Azurite keeps its data in memory: `local down` loses every job (default: on disk in the state folder)",
    )
    _stack_option(
        parser,
        "--deployment",
        default=DEFAULT_DEPLOYMENTS[0],
        help=f"the model deployment the app calls, which the emulator serves (default {DEFAULT_DEPLOYMENTS[0]}; "
        "a name like gpt-5... or o3... is a reasoning model, others a standard one)",
    )
    for service, what in PORT_OPTIONS.items():
        _stack_option(
            parser, f"--{service}-port", type=int, default=0, help=f"{what} port on 127.0.0.1 (default 0: a free one)"
        )
    parser.add_argument(
        "--settings-file",
        type=Path,
        default=None,
        help="where to write the settings for `func start` (default: local.settings.json in the project folder)",
    )


def settings_file(args: argparse.Namespace, cli: CliSettings) -> Path:
    if getattr(args, "settings_file", None):
        return Path(args.settings_file).resolve()
    return (cli.project or cli.state_dir) / "local.settings.json"


def requested_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {dest: getattr(args, dest, default) for dest, (_, default) in STACK_FLAGS.items()}
    options["no_runner"] = bool(getattr(args, "no_runner", False))
    return options


def differing_options(running_with: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{option: (the running stack's value, the asked one)} for each option that differs.

    An option the running stack did not record (a stack started by an older `rowsmith`) is not compared.
    """
    return {
        name: (running_with[name], value)
        for name, value in wanted.items()
        # A port asked as 0 is "any": the running stack's (free) port does.
        if name in running_with and running_with[name] != value and not (name.endswith("_port") and value == 0)
    }


def _flag(name: str) -> str:
    return STACK_FLAGS[name][0] if name in STACK_FLAGS else "--" + name.replace("_", "-")


def _as_argument(name: str, value: Any) -> str:
    if value is True:
        return _flag(name)
    return f"{_flag(name)} {value:g}" if isinstance(value, float) else f"{_flag(name)} {value}"


def restart_command(wanted: Mapping[str, Any]) -> str:
    """`rowsmith local down && rowsmith local up ...` with the asked options that are not defaults."""
    asked = [
        _as_argument(name, value)
        for name, value in wanted.items()
        if value != (STACK_FLAGS[name][1] if name in STACK_FLAGS else False)
    ]
    return " ".join(["rowsmith local down && rowsmith local up", *asked])


def options_differ_message(differ: Mapping[str, tuple[Any, Any]], wanted: Mapping[str, Any]) -> str:
    def shown(value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    listed = ", ".join(f"{_flag(name)} {shown(old)} (asked: {shown(new)})" for name, (old, new) in differ.items())
    return (
        f"the local stack is already running with other options: {listed}. "
        f"To restart it with the new ones: `{restart_command(wanted)}`"
    )


def _previous_port(previous: Mapping[str, Any], name: str) -> int | None:
    """The port Azurite's `name` service had last time, if it is free: the jobs kept on disk know
    their blobs by URLs with that port (a job's id, its events), so they carry on after `up`."""
    if name not in AZURITE_SERVICES or previous.get("in_memory"):
        return None
    port = previous.get(f"{name}_port")
    return port if isinstance(port, int) and port > 0 and not port_open(LOOPBACK, port) else None


def _recorded_options(cli: CliSettings) -> dict[str, Any]:
    try:
        data = json.loads((cli.state_dir / OPTIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running(cli: CliSettings) -> Stack | None:
    """The local stack, if it is up (and its runner, unless it was started without one)."""
    stack = running_stack(cli.state_dir)
    pid = runner_pid(cli.state_dir)
    if stack and all(stack.running().values()) and (pid is None or pid_alive(pid)):
        return stack
    return None


def _start_runner(state_dir: Path, settings: dict[str, str]) -> int:
    # Detached: it survives the `rowsmith local up` that started it.
    pid = RunnerProcess(with_this_environment(settings), state_dir / "runner.log").start_detached()
    write_private(state_dir / RUNNER_PID, f"{pid}\n")
    return pid


def local_app_settings(stack: Stack, finalize_interval: float, *, rpm: int = 0, tpm: int = 0) -> dict[str, str]:
    settings = {**stack.app_settings(), "ROWSMITH_FINALIZE_INTERVAL_SECONDS": str(finalize_interval)}
    # The emulator's quota is also the app's pace: without it the app would send as fast as it can
    # and live on 429s (each one pauses it), as a deployment without AZURE_OPENAI_RPM/TPM would.
    if rpm:
        settings["AZURE_OPENAI_RPM"] = str(rpm)
    if tpm:
        settings["AZURE_OPENAI_TPM"] = str(tpm)
    return settings


class OptionsDiffer(Exception):
    """`local up` asked for options the running stack was not started with."""


def settings_owner(path: Path, own: Stack) -> str | None:
    """The Azurite endpoint a settings file points at when it is another stack that still answers."""
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except (OSError, ValueError, AttributeError):
        return None
    text = " ".join(str(v) for v in values.values()) if isinstance(values, dict) else ""
    for port in {int(p) for p in re.findall(rf"{LOOPBACK}:(\d+)", text)}:
        if port not in own.ports.as_dict().values() and port_open(LOOPBACK, port):
            return f"{LOOPBACK}:{port}"
    return None


def up(args: argparse.Namespace, cli: CliSettings) -> tuple[Stack, bool]:
    """Start the stack and the runner unless they run already; (stack, already_running).

    Raises OptionsDiffer when a stack runs with other options than `args` asks for.
    """
    wanted = requested_options(args)
    stack = running(cli)
    if stack:
        differ = differing_options(_recorded_options(cli), wanted)
        if differ:
            raise OptionsDiffer(options_differ_message(differ, wanted))
        return stack, True
    previous = _recorded_options(cli)
    down(cli)  # whatever is left of a half-dead stack goes first
    private_dir(cli.state_dir)  # 0700: stack.json holds the identity header
    deployments = [args.deployment, *(d for d in DEFAULT_DEPLOYMENTS if d != args.deployment)]
    ports = {name: getattr(args, f"{name}_port", 0) or None for name in PORT_OPTIONS}
    if not wanted["in_memory"]:
        ports = {name: port or _previous_port(previous, name) for name, port in ports.items()}
    stack = start_stack(
        cli.state_dir,
        detached=True,
        ports=ports,
        deployments=deployments,
        in_memory=bool(wanted["in_memory"]),
        latency_ms=args.latency_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        storage_auth=getattr(args, "storage_auth", "key"),
        event_grid_interval=getattr(args, "event_grid_interval", DEFAULT_INTERVAL_SECONDS),
    )
    # The ports it got: a later `up --blob-port N` compares with the port in use, not with "any".
    wanted |= {f"{name}_port": port for name, port in stack.ports.as_dict().items() if f"{name}_port" in wanted}
    write_private(cli.state_dir / OPTIONS_FILE, json.dumps(wanted, indent=2) + "\n")
    settings = local_app_settings(stack, args.finalize_interval, rpm=args.rpm, tpm=args.tpm)
    if not wanted["no_runner"]:
        _start_runner(cli.state_dir, settings)
    path = settings_file(args, cli)
    other = settings_owner(path, stack)
    if other:
        # Another stack (another state folder) still answers there: its `func start` keeps working.
        print(f"warning: {path} is left as it is: it names another running stack ({other})", file=sys.stderr)
    else:
        write_local_settings(path, settings)
    return stack, False


def down(cli: CliSettings) -> dict[str, Any]:
    stopped = False
    pid = runner_pid(cli.state_dir)
    if pid and pid_alive(pid):
        # SIGTERM lets the runner finish the invocations in flight; only our runner is signalled.
        # With Azurite gone it cannot finish them: no point waiting for it.
        recorded = running_stack(cli.state_dir)
        storage_up = recorded is not None and bool(recorded.ports.blob) and port_open(LOOPBACK, recorded.ports.blob)
        terminate_pid(pid, RUNNER_MARKER, timeout=20 if storage_up else 3)
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


def _ports_text(stack: Stack) -> str:
    p = stack.ports
    return f"Azurite blob {LOOPBACK}:{p.blob}, queue :{p.queue}; model emulator :{p.emulator}; identity :{p.identity}"


def _options_text(options: Mapping[str, Any]) -> str:
    quota = ", ".join(f"{n} {options[n]}" for n in ("rpm", "tpm") if options.get(n))
    parts = [f"quota {quota}" if quota else "no quota"]
    if options.get("deployment"):
        parts.append(f"deployment {options['deployment']}")
    if options.get("storage_auth") == "oauth":
        parts.append("OAuth storage")
    return ", ".join(parts)


def status_line(stack: Stack | None, cli: CliSettings, jobs: int | None, *, half: str | None = None) -> str:
    """`local status` as one line: what runs, where, its pid, the state folder and the jobs it keeps."""
    if stack is None:
        return f"local stack not running (state folder {cli.state_dir}); start it with `rowsmith local up`"
    if half:
        return (
            f"local stack half running: {half} (state folder {cli.state_dir}); "
            "`rowsmith local up` restarts it, `rowsmith local down` stops what is left"
        )
    options = _recorded_options(cli)
    pid = runner_pid(cli.state_dir)
    runner = f"runner pid {pid}" if pid else "no runner (for `func start`)"
    kept = "in memory (lost at `local down`)" if stack.in_memory else "on disk"
    held = f"{jobs} job(s) " if jobs is not None else "jobs "
    return (
        f"local stack running: {_ports_text(stack)}; {runner}, Azurite pid {stack.services['azurite'].pid}; "
        f"{_options_text(options)}; state folder {cli.state_dir}; {held}{kept}"
    )


async def _job_count(cli: CliSettings) -> int | None:
    try:
        target = resolve(None, local=True, cli=cli)
    except TargetError:
        return None
    try:
        _, info = await asyncio.wait_for(commands.status(target, None), timeout=10)
        return len(info.get("jobs", []))
    except Exception:  # the count is a courtesy: a stack that cannot list its jobs still has a status
        return None
    finally:
        await target.close()


async def run(args: argparse.Namespace, cli: CliSettings) -> tuple[int, dict[str, Any]]:
    if args.action == "up":
        try:
            stack, already = up(args, cli)
        except OptionsDiffer as exc:
            return commands.EXIT_FAILED, {
                "running": True,
                "already_running": True,
                "error": str(exc),
                "differing_options": sorted(differing_options(_recorded_options(cli), requested_options(args))),
            }
        settings = stack.app_settings()
        path = settings_file(args, cli)
        info = {
            "running": True,
            "already_running": already,
            "state_dir": str(cli.state_dir),
            "state_file": str(stack_file(cli.state_dir)),
            "in_memory": stack.in_memory,
            "ports": stack.ports.as_dict(),
            "openai_endpoint": settings["AZURE_OPENAI_ENDPOINT"],
            "identity_endpoint": settings["IDENTITY_ENDPOINT"],
            "local_settings": str(path),
        }
        word = "already running" if already else "started"
        line = status_line(stack, cli, None).removeprefix("local stack running: ")
        info["message"] = f"local stack {word}: {line}; settings for `func start` in {path}"
        return commands.EXIT_OK, info
    if args.action == "down":
        stack = running_stack(cli.state_dir)
        jobs = await _job_count(cli) if stack and not stack.in_memory else None
        info = down(cli)
        if not info["stopped"]:
            info["message"] = f"local stack was not running (state folder {cli.state_dir})"
        elif stack is not None and not stack.in_memory:
            held = f"{jobs} job(s)" if jobs is not None else "its jobs"
            info["jobs_kept"] = jobs
            info["message"] = (
                f"local stack stopped; {held} kept on disk in {cli.state_dir / AZURITE_DATA} "
                "(`rowsmith local up` brings them back)"
            )
        else:
            info["message"] = "local stack stopped; its jobs were in memory and are gone"
        return commands.EXIT_OK, info
    recorded = running_stack(cli.state_dir)
    stack = running(cli)
    half = None
    if recorded is not None and stack is None:
        gone = [name for name, alive in recorded.running().items() if not alive]
        pid = runner_pid(cli.state_dir)
        if pid is not None and not pid_alive(pid):
            gone.append("runner")
        half = ", ".join(gone) + " stopped"
    elif stack is not None:
        half = dead_part(stack, cli.state_dir)
    alive = stack is not None and half is None
    info: dict[str, Any] = {"running": alive, "state_dir": str(cli.state_dir)}
    if stack is not None:
        info.update(
            {"ports": stack.ports.as_dict(), "in_memory": stack.in_memory, "runner_pid": runner_pid(cli.state_dir)}
        )
    jobs = await _job_count(cli) if alive else None
    if jobs is not None:
        info["jobs_kept"] = jobs
    info["message"] = status_line(stack or recorded, cli, jobs, half=half)
    return (commands.EXIT_OK if alive else commands.EXIT_FAILED), info


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
        # A stack of its own, stopped at the end: nothing of it is worth keeping on disk.
        args.in_memory = True
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
