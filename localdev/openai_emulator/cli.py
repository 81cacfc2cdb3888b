"""`python -m localdev.openai_emulator`: the command line, and the flags that start a child emulator.

Run: `python -m localdev.openai_emulator --port N --jwks-url URL [--rpm R] [--tpm T]
[--latency-ms L] [--deployments a,b] [--models JSON] [--seed S] [--fault-rates JSON]`; it prints one JSON
line starting `{"ready": "openai-emulator"` once it listens. The control API requires
`X-IDENTITY-HEADER` with $IDENTITY_HEADER (the stack's); without it a random value is made up
and printed in that line as `control_header`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import localdev.openai_emulator
from localdev.openai_emulator.config import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_DEPLOYMENTS,
    DEFAULT_MAX_TOKENS,
    EmulatorConfig,
)
from localdev.openai_emulator.server import OpenAIEmulator
from localdev.ports import LOOPBACK, run_forever

# What the emulator's command line contains (localdev.stack signals only a process that matches).
PROCESS_MARKER = "localdev.openai_emulator"
_PACKAGE_DOC = localdev.openai_emulator.__doc__ or ""


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    config = EmulatorConfig(
        deployments=[d.strip() for d in args.deployments.split(",") if d.strip()],
        models=json.loads(args.models) if args.models else {},
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        fault_rates=json.loads(args.fault_rates) if args.fault_rates else {},
        timeout_seconds=args.timeout_seconds,
        fault_retry_after_ms=args.fault_retry_after_ms,
        context_window=args.context_window,
        default_max_tokens=args.default_max_tokens,
        seed=args.seed,
    )
    config.validate()
    return config


def config_to_args(config: EmulatorConfig) -> list[str]:
    """The command-line flags that make a child emulator start with `config`."""
    args = [
        "--deployments", ",".join(config.deployments),
        "--rpm", str(config.rpm),
        "--tpm", str(config.tpm),
        "--latency-ms", str(config.latency_ms),
        "--jitter-ms", str(config.jitter_ms),
        "--timeout-seconds", str(config.timeout_seconds),
        "--fault-retry-after-ms", str(config.fault_retry_after_ms),
        "--context-window", str(config.context_window),
        "--default-max-tokens", str(config.default_max_tokens),
    ]  # fmt: skip
    if config.fault_rates:
        args += ["--fault-rates", json.dumps(config.fault_rates)]
    if config.models:
        args += ["--models", json.dumps(config.models)]
    if config.seed is not None:
        args += ["--seed", str(config.seed)]
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localdev.openai_emulator", description=_PACKAGE_DOC.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--jwks-url", required=True, help="the identity endpoint's /.well-known/jwks.json")
    parser.add_argument("--deployments", default=",".join(DEFAULT_DEPLOYMENTS), help="comma-separated names")
    parser.add_argument(
        "--models", help='JSON model profiles, for example {"tickets": {"model": "gpt-5.6-luna", "retired": false}}'
    )
    parser.add_argument("--rpm", type=int, default=0, help="requests per minute per deployment (0: unlimited)")
    parser.add_argument("--tpm", type=int, default=0, help="tokens per minute per deployment (0: unlimited)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="mean added latency")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="latency jitter, plus or minus")
    parser.add_argument("--fault-rates", help='JSON, for example {"500": 0.1, "drop": 0.05}')
    parser.add_argument("--timeout-seconds", type=float, default=30.0, help="how long a 'timeout' fault stalls")
    parser.add_argument("--fault-retry-after-ms", type=int, default=1000, help="retry-after-ms of a '429' fault")
    parser.add_argument("--context-window", type=int, default=DEFAULT_CONTEXT_WINDOW)
    parser.add_argument("--default-max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--seed", type=int, help="seed of the fault draw (reproducible faults)")
    # From the environment only, so `ps` never shows it (as the identity endpoint's header).
    parser.set_defaults(control_header=os.environ.get("IDENTITY_HEADER") or None)
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    emulator = OpenAIEmulator(args.jwks_url, config_from_args(args), control_header=args.control_header)
    served = await emulator.serve(LOOPBACK, args.port)
    ready: dict[str, object] = {
        "ready": "openai-emulator",
        "url": served.url,
        "deployments": emulator.config.deployments,
    }
    if not args.control_header:  # made up here: the caller has no other way to learn it
        ready["control_header"] = emulator.control_header
    print(json.dumps(ready), flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT
    finally:
        await served.stop()


def main(argv: list[str] | None = None) -> None:
    run_forever(_main(parse_args(argv)))
