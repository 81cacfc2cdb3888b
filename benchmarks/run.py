"""`python -m benchmarks`: run the benchmarks of issue 5 and write the table of figures.

Starts a local stack (Azurite, the identity endpoint, the Azure OpenAI emulator) in
benchmarks/out/work, runs the groups in an order where none disturbs another (ingest and
finalize with no runner, then the jobs and the quota job through one runner), prints the
table and writes results.json (the eight figures) and details.json (everything measured).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks import bench_finalize, bench_ingest, bench_jobs
from benchmarks.common import (
    BENCH_DIR,
    FULL,
    QUICK,
    Context,
    Result,
    effective_pipelines,
    loadavg,
    machine,
    stop_workers,
)
from benchmarks.report import markdown, rows_of, text_table
from localdev.stack import running_stack, start_stack

GROUPS = ("ingest", "finalize", "jobs", "quota")
NAMES = {
    "ingest": ("ingest_ratio", "rss_delta_mb"),
    "finalize": ("finalize_seconds", "finalize_peak_rss_mb"),
    "jobs": ("cpu_ms_per_row", "storage_tx_per_row_1", "storage_tx_per_row_20"),
    "quota": ("quota_utilisation",),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds): a smoke run, not figures")
    parser.add_argument(
        "--out",
        type=Path,
        help="write results.json, details.json and the work files here "
        "(default: benchmarks/results.json, benchmarks/out/)",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated groups to run ({', '.join(GROUPS)}); their figures replace those in an existing "
        "results.json",
    )
    parser.add_argument(
        "--ingest-rows",
        type=int,
        help="rows of the big ingest (default 200,000; each 200,000-row run takes minutes on a busy 2-core machine)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown tables for docs/benchmarks.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a figure misses its target")
    return parser.parse_args(argv)


def _log_to_stderr(started: float) -> Any:
    def log(message: str) -> None:
        print(f"[bench {time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    return log


async def _run_groups(ctx: Context, groups: list[str]) -> list[Result]:
    results: list[Result] = []
    if "ingest" in groups:
        results += await bench_ingest.run(ctx)
    if "finalize" in groups:
        results += await bench_finalize.run(ctx)
    if "jobs" in groups or "quota" in groups:
        results += await bench_jobs.run(ctx, set(groups))
    return results


def _merge(path: Path, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Existing entries of results.json, with the fresh figures replacing those of the same name."""
    if not path.exists():
        return fresh
    names = {r["name"] for r in fresh}
    kept = [r for r in json.loads(path.read_text()) if r.get("name") not in names]
    return kept + fresh


def _merge_details(path: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return fresh
    merged = json.loads(path.read_text())
    for key, value in fresh.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "run":
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the stacks' finally blocks stop Azurite and the emulators.
    signal.signal(signal.SIGTERM, _interrupt)
    groups = [g.strip() for g in (args.only or ",".join(GROUPS)).split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        print(f"unknown group(s) {', '.join(sorted(unknown))}; known: {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.ingest_rows:
        sizes = replace(sizes, ingest_rows=args.ingest_rows)
    if args.out is not None:
        out = args.out.resolve()
        results_path, details_path, workdir = out / "results.json", out / "details.json", out / "work"
    else:
        results_path, details_path = BENCH_DIR / "results.json", BENCH_DIR / "out" / "details.json"
        workdir = BENCH_DIR / "out" / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("stack-*"):  # stacks of earlier runs that are no longer running
        if running_stack(old) is None:
            shutil.rmtree(old, ignore_errors=True)

    started = time.monotonic()
    log = _log_to_stderr(started)
    details: dict[str, Any] = {"machine": machine()}
    details["run"] = {
        "mode": "quick" if args.quick else "full",
        "groups": groups,
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": asdict(sizes),
    }
    pipelines_dir, limiter = effective_pipelines(workdir)
    details["limiter_settings"] = limiter
    log(f"{details['run']['mode']} run of {', '.join(groups)}; quota pipeline rpm/tpm: {limiter}")
    log("starting the local stack")
    # No local Event Grid: every benchmark raises its uploads' events itself, when it starts timing.
    stack = start_stack(workdir / "stack-main", event_grid_interval=None)
    try:
        ctx = Context(stack, sizes, workdir, pipelines_dir, details, log)
        results = asyncio.run(_run_groups(ctx, groups))
    finally:
        stop_workers()
        stack.stop()
    details["run"]["seconds"] = round(time.monotonic() - started, 1)
    details["machine"]["loadavg_at_end"] = loadavg()
    details["results"] = {
        r.name: {"passed": r.passed, "baseline_unit": r.baseline_unit, "note": r.note} for r in results
    }

    public = [r.public() for r in results]
    if args.only:
        public = _merge(results_path, public)
        details = _merge_details(details_path, details)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    details_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(public, indent=2) + "\n")
    details_path.write_text(json.dumps(details, indent=2, default=str) + "\n")

    print()
    print(text_table(rows_of(public, details["results"])))
    print()
    print(f"results: {results_path}\ndetails: {details_path}")
    if args.markdown:
        print()
        print(markdown(public, details))
    missed = [r.name for r in results if r.passed is False]
    if missed:
        print(f"\nmissed targets: {', '.join(missed)}")
    return 1 if missed and args.strict else 0
