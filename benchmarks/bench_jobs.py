"""Whole jobs through `python -m localdev.runner`: CPU per row, storage transactions, quota use.

The runner's storage connection points at a counting proxy in front of Azurite, so every
storage request the app makes (ingest, process, finalize, and the runner's own receives,
deletes and polls) is counted; the benchmark's own uploads and polling go straight to
Azurite and are not. Counting starts when the BlobCreated event is sent and stops half a
second after the job's manifest says done.

Floors, measured first (before the runner starts, so it cannot take their messages): a
bare worker that does only the SDK calls a row needs, with the runner's concurrency,
through the same proxy: its CPU per row and transactions per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import (
    PIPELINE_BUDGET,
    PIPELINE_ONE,
    PIPELINE_QUOTA,
    PIPELINE_TWENTY,
    Context,
    Direct,
    Result,
    emulator,
    loadavg,
    proc_cpu_seconds,
    proc_memory_mb,
    run_worker,
)
from benchmarks.proxy import CountingProxy, Counts
from localdev import azurite as azurite_mod
from localdev.runner.process import RunnerProcess
from localdev.stack import Stack, start_stack
from processing.core.layout import FINALIZE_QUEUE, OUTPUT_CONTAINER, ROWS_QUEUE, STORAGE_CONNECTION, UPLOADS_QUEUE
from processing.core.states import FINAL_STATES, JobState

GRACE = 0.5  # after done: the runner deletes the last finalize message
POLL = 0.2


@dataclass
class JobRun:
    label: str
    rows: int
    seconds: float  # event sent -> manifest done
    cpu_seconds: float  # the runner's, over the same span
    counts: Counts
    manifest: dict[str, Any]
    ok_rows: int  # distinct rows answered in the results .jsonl
    runner_memory: dict[str, float]
    first_request: float | None = None  # seconds after the event was sent
    last_answer: float | None = None
    emulator: dict[str, Any] = field(default_factory=dict)

    @property
    def per_row(self) -> float:
        return self.counts.total / self.rows

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_ms_per_row": round(1000 * self.cpu_seconds / self.rows, 3),
            "storage_tx": self.counts.as_dict(),
            "storage_tx_per_row": round(self.per_row, 4),
            "tx_per_row_by_operation": ops_per_row(self.counts, self.rows),
            "tx_by_component_per_row": by_component(self.counts, self.rows),
            "ok_rows": self.ok_rows,
            "manifest": self.manifest,
            "runner_memory_mb": self.runner_memory,
            "first_request_s": self.first_request,
            "last_answer_s": self.last_answer,
            "emulator": self.emulator,
        }


def ops_per_row(counts: Counts, rows: int) -> dict[str, float]:
    return {f"{op} {res}": round(n / rows, 4) for (op, res), n in counts.by_op.most_common()}


def component(op: str, resource: str) -> str:
    """Which part of the app a request belongs to, from what it touched."""
    if resource in ("queue:uploads", "blob:input", "blob:ingest-lock"):
        return "finalize" if op == "GetBlobProperties" else "ingest"
    if resource.endswith("-poison"):
        return "idle polling (poison queues)"
    if resource in ("queue:finalize", "blob:progress", "blob:output", "blob:fatal"):
        return "finalize"
    if resource == "blob:shard":
        return "finalize" if op in ("GetBlob", "GetBlobProperties") else "process"
    if resource == "queue:rows":
        return "ingest" if op == "PutMessage" else "process"
    if resource == "blob:manifest":
        return "manifest (ingest, process, finalize)"
    return "other"


def by_component(counts: Counts, rows: int) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for (op, res), n in counts.by_op.items():
        totals[component(op, res)] += n
    return {name: round(n / rows, 4) for name, n in totals.most_common()}


async def _job(ctx: Context, rig: _Rig, *, pipeline: str, rows: int, label: str, watch: bool = False) -> JobRun:
    """One job from the BlobCreated event to done; `watch`: follow the emulator's counters too."""
    direct, proxy, runner, stack = rig.direct, rig.proxy, rig.runner, rig.stack
    assert runner is not None
    job, event = await direct.upload_input(ctx.csv(rows), pipeline, f"{label}-{rows}.csv")
    if watch:
        await emulator(stack, "POST", "/_emulator/reset")
    proxy.reset()
    cpu0 = proc_cpu_seconds(runner.pid)
    t0 = time.monotonic()
    await direct.send_event(event)
    first_request = last_answer = None
    previous = t0
    answered, changed, longest = 0, 0.0, 0.0  # the longest wait between two polls that saw new answers
    deadline = t0 + ctx.sizes.job_timeout
    stats: dict[str, Any] = {}
    while True:
        manifest = await direct.manifest(job)
        now = time.monotonic()
        if watch:
            stats = await emulator(stack, "GET", "/_emulator/stats")
            # A change seen now happened since the previous poll: take the middle.
            middle = (previous + now) / 2 - t0
            if first_request is None and stats["requests"] > 0:
                first_request = changed = middle
            if last_answer is None and stats["answered"] > answered:
                longest = max(longest, middle - changed)
                answered, changed = stats["answered"], middle
            if last_answer is None and stats["answered"] >= rows:
                last_answer = middle
        previous = now
        if manifest is not None and manifest.state in FINAL_STATES:
            break
        if now > deadline:
            raise TimeoutError(f"{label}: job {job} not done after {ctx.sizes.job_timeout:.0f} s")
        if not runner.alive():
            raise RuntimeError(f"{label}: the runner exited; see {runner.log_path}")
        await asyncio.sleep(POLL)
    seconds = time.monotonic() - t0
    await asyncio.sleep(GRACE)
    counts = proxy.snapshot()
    cpu = proc_cpu_seconds(runner.pid) - cpu0
    memory = proc_memory_mb(runner.pid)
    if watch:
        stats = {**await emulator(stack, "GET", "/_emulator/stats"), "longest_pause_s": round(longest, 2)}
    ok_rows = 0
    if manifest.state == JobState.DONE and manifest.results.get("jsonl"):
        seen = set()
        for line in (await direct.download(OUTPUT_CONTAINER, manifest.results["jsonl"])).splitlines():
            record = json.loads(line)
            if record.get("status") == "ok":
                seen.add(record["row"])
        ok_rows = len(seen)
    return JobRun(
        label=label,
        rows=rows,
        seconds=seconds,
        cpu_seconds=cpu,
        counts=counts,
        manifest={
            "job": job,
            "state": manifest.state,
            "counts": manifest.counts,
            "times": {k: round(v - manifest.times.get("created", v), 2) for k, v in manifest.times.items()},
        },
        ok_rows=ok_rows,
        runner_memory=memory,
        first_request=first_request,
        last_answer=last_answer,
        emulator=stats,
    )


async def _bare(ctx: Context, proxy: CountingProxy, env: dict[str, str], rows: int, per_message: int) -> dict[str, Any]:
    proxy.reset()
    args = ["bare-rows", str(ctx.csv(rows)), str(rows), str(per_message)]
    figures = await asyncio.to_thread(run_worker, ctx, args, env)
    counts = proxy.snapshot()
    figures.update(
        loadavg=loadavg(),
        cpu_ms_per_row=1000 * figures["cpu_seconds"] / rows,
        storage_tx=counts.as_dict(),
        storage_tx_per_row=counts.total / rows,
        tx_per_row_by_operation=ops_per_row(counts, rows),
    )
    return figures


async def _configure_emulator(stack: Stack, **config: Any) -> None:
    await emulator(stack, "POST", "/_emulator/config", {"jitter_ms": 0.0, "fault_rates": {}, **config})
    await emulator(stack, "POST", "/_emulator/reset")


def _ok(run: JobRun) -> bool:
    return run.manifest["state"] == JobState.DONE and run.ok_rows == run.rows


@dataclass
class _Rig:
    """A stack seen through a counting proxy, with a runner pointed at the proxy."""

    stack: Stack
    proxy: CountingProxy
    direct: Direct
    env: dict[str, str]
    runner: RunnerProcess | None = None


@contextlib.asynccontextmanager
async def _rig(ctx: Context, stack: Stack) -> AsyncIterator[_Rig]:
    proxy = CountingProxy(stack.ports.blob, stack.ports.queue)  # type: ignore[arg-type]
    ports = await proxy.start()
    proxied = azurite_mod.connection_string(ports["blob"], ports["queue"], stack.ports.table)
    direct = Direct(stack.connection_string, app_blob_url=azurite_mod.account_url(ports["blob"]))
    rig = _Rig(stack, proxy, direct, ctx.env(stack, **{STORAGE_CONNECTION: proxied}))
    try:
        yield rig
    finally:
        if rig.runner is not None:
            await asyncio.to_thread(rig.runner.stop)
        await proxy.stop()
        await rig.direct.close()


async def _start_runner(ctx: Context, rig: _Rig, label: str) -> RunnerProcess:
    rig.runner = RunnerProcess(rig.env, ctx.workdir / f"runner-{label}.log")
    await asyncio.to_thread(rig.runner.start)
    return rig.runner


async def run(ctx: Context, groups: set[str]) -> list[Result]:
    out: list[Result] = []
    details: dict[str, Any] = {}
    try:
        if "jobs" in groups:
            out += await _jobs(ctx, details)
        if "quota" in groups:
            out.append(await _quota(ctx, details))
    finally:
        ctx.details["jobs"] = details
    return out


async def _jobs(ctx: Context, details: dict[str, Any]) -> list[Result]:
    """CPU and storage transactions: the floors, then two jobs, on the main stack, emulator latency 0."""
    rows = ctx.sizes.job_rows
    await _configure_emulator(ctx.stack, latency_ms=0.0, rpm=0, tpm=0)
    async with _rig(ctx, ctx.stack) as rig:
        for queue in (UPLOADS_QUEUE, ROWS_QUEUE, FINALIZE_QUEUE):
            await rig.direct.clear_queue(queue)
        ctx.log(f"jobs: bare floor, {rows:,} rows, 1 and 20 rows per message")
        details["bare_1"] = await _bare(ctx, rig.proxy, rig.env, rows, 1)
        details["bare_20"] = await _bare(ctx, rig.proxy, rig.env, rows, 20)
        for queue in (ROWS_QUEUE, FINALIZE_QUEUE):
            await rig.direct.clear_queue(queue)
        await _start_runner(ctx, rig, "jobs")
        ctx.log(f"jobs: {rows:,} rows, rows_per_message 1, emulator latency 0")
        one = await _job(ctx, rig, pipeline=PIPELINE_ONE, rows=rows, label="job-1")
        ctx.log(f"jobs: done in {one.seconds:.1f} s; now rows_per_message 20")
        twenty = await _job(ctx, rig, pipeline=PIPELINE_TWENTY, rows=rows, label="job-20")
        ctx.log("jobs: rows_per_message 1 again, under a budget (the ledger's cost)")
        budget = await _job(ctx, rig, pipeline=PIPELINE_BUDGET, rows=rows, label="job-budget")
    details["job_1"] = one.summary()
    details["job_20"] = twenty.summary()
    details["job_budget"] = budget.summary()
    return [*_job_results(ctx, one, twenty, details), _budget_result(one, budget)]


def _budget_result(one: JobRun, budget: JobRun) -> Result:
    """What a budget adds: the ledger's reserve and settle, a read and a write each per rows message."""
    if not _ok(budget):
        raise RuntimeError(f"{budget.label}: {budget.ok_rows} of {budget.rows} rows answered; {budget.manifest}")
    return Result(
        "budget_storage_tx_per_row",
        round(budget.per_row, 3),
        "tx/row",
        round(one.per_row, 3),
        None,
        baseline_unit="tx/row (the same job without a budget)",
        note=f"{budget.per_row - one.per_row:+.2f} tx/row; {budget.seconds / one.seconds:.2f}x the time of the job "
        "without a budget",
    )


async def _quota(ctx: Context, details: dict[str, Any]) -> Result:
    """The quota job, on a fresh stack of its own.

    Fresh, because the pace it is measured against is time: Azurite's garbage collector
    stalls for seconds on a stack that has deleted thousands of messages before (the jobs),
    and a stalled receive leaves the app's limiter idle.
    """
    sizes = ctx.sizes
    ctx.log(
        f"quota: {sizes.quota_rows:,} rows at {sizes.quota_rpm} RPM / {sizes.quota_tpm:,} TPM, "
        f"{sizes.quota_latency_ms:g} ms latency, on a fresh stack (about {sizes.quota_rows / sizes.quota_rpm:.0f} min)"
    )
    stack = await asyncio.to_thread(
        start_stack,
        ctx.workdir / "stack-quota",
        rpm=sizes.quota_rpm,
        tpm=sizes.quota_tpm,
        latency_ms=sizes.quota_latency_ms,
        event_grid_interval=None,  # the benchmark raises each upload's event itself, timed
    )
    try:
        async with _rig(ctx, stack) as rig:
            await _start_runner(ctx, rig, "quota")
            quota = await _job(ctx, rig, pipeline=PIPELINE_QUOTA, rows=sizes.quota_rows, label="quota", watch=True)
    finally:
        await asyncio.to_thread(stack.stop)
    return _quota_result(ctx, quota, details)


def _tx_per_row(name: str, run: JobRun, bare: dict[str, Any], target: str, passed: bool) -> Result:
    """Storage transactions per row of a job, against the bare worker's at the same rows per message."""
    return Result(
        name,
        round(run.per_row, 3),
        "tx/row",
        round(bare["storage_tx_per_row"], 3),
        target,
        passed,
        baseline_unit="tx/row (bare floor)",
        note=f"{run.counts.total:,} requests for {run.rows:,} rows",
    )


def _job_results(ctx: Context, one: JobRun, twenty: JobRun, details: dict[str, Any]) -> list[Result]:
    for run in (one, twenty):
        if not _ok(run):
            raise RuntimeError(f"{run.label}: {run.ok_rows} of {run.rows} rows answered; {run.manifest}")
    bare1, bare20 = details["bare_1"], details["bare_20"]
    cpu = 1000 * one.cpu_seconds / one.rows
    details["notes"] = [
        "cpu_ms_per_row: the runner process's user+system CPU (/proc/<pid>/stat) from the event to done, "
        "over the rows: ingest, process, finalize and the runner's polling; the emulator and Azurite run "
        "in other processes",
        "baseline of cpu_ms_per_row and storage_tx_per_row_*: the bare worker (the SDK calls a row needs, "
        "the runner's concurrency), through the same proxy",
        f"finalize checks every {ctx.sizes.finalize_interval:g} s (ROWSMITH_FINALIZE_INTERVAL_SECONDS); "
        "their reads and the runner's polls of idle queues are counted, see tx_by_component_per_row",
    ]
    return [
        Result(
            "cpu_ms_per_row",
            round(cpu, 3),
            "ms/row",
            round(bare1["cpu_ms_per_row"], 3),
            None,
            baseline_unit="ms/row (bare SDK calls)",
            note=f"{cpu / bare1['cpu_ms_per_row']:.2f}x the floor; {one.rows:,} rows in {one.seconds:.1f} s",
        ),
        _tx_per_row("storage_tx_per_row_1", one, bare1, "<= 4", one.per_row <= 4),
        _tx_per_row("storage_tx_per_row_20", twenty, bare20, "< 1", twenty.per_row < 1),
    ]


def _quota_result(ctx: Context, run: JobRun, details: dict[str, Any]) -> Result:
    sizes = ctx.sizes
    rpm = sizes.quota_rpm
    lost = run.rows - run.ok_rows
    summary = run.summary()
    if run.first_request is None or run.last_answer is None:
        raise RuntimeError(f"quota: the emulator never saw the job's requests ({run.emulator})")
    span = max(run.last_answer - run.first_request, 1e-3)
    value = run.rows / (span / 60) / rpm
    submit_to_done = run.rows / (run.seconds / 60) / rpm
    # A 60-s sliding window admits a whole minute's quota at once when a job starts, so the most
    # rows a span of T can see answered is rpm * (T/60 + 1).
    window_capacity = run.rows / (rpm * (span / 60 + 1))
    stats = run.emulator
    summary.update(
        rpm=rpm,
        tpm=sizes.quota_tpm,
        latency_ms=sizes.quota_latency_ms,
        limiter_settings=ctx.details.get("limiter_settings"),
        span_first_request_to_last_answer_s=round(span, 2),
        utilisation_first_request_to_last_answer=round(value, 4),
        utilisation_submit_to_done=round(submit_to_done, 4),
        utilisation_of_window_capacity=round(window_capacity, 4),
        rows_lost=lost,
        longest_pause_s=stats.get("longest_pause_s"),
        http_429_sent=stats.get("throttled"),
        quota_429_sent=stats.get("quota_throttled"),
        requests=stats.get("requests"),
        answered=stats.get("answered"),
        tokens=stats.get("tokens"),
        notes=[
            "value: rows / (last answer - first request) in rows per minute, over the quota's RPM; "
            "times from polling /_emulator/stats every 0.2 s; longest_pause_s: the longest time no new answer came",
            "with a 60-s sliding window, a client that sends a whole minute's quota at once at the start "
            f"can reach {(run.rows / rpm) / max(run.rows / rpm - 1, 1e-9):.2f} on a {run.rows:,}-row job; "
            "a client pacing evenly at the quota reaches 1.0",
            "utilisation_of_window_capacity: rows over what the window could have admitted in the span, "
            "rpm * (span/60 + 1): 1.0 for the best possible client, bursting or not",
        ],
    )
    details["quota"] = summary
    passed = value >= 0.9 and lost == 0 and run.manifest["state"] == JobState.DONE
    return Result(
        "quota_utilisation",
        round(value, 3),
        "x quota",
        float(rpm),
        ">= 0.9, 0 rows lost",
        passed,
        baseline_unit="rows/min (the quota's RPM)",
        note=(
            f"{stats.get('throttled', 0):,} 429s sent; {lost} rows lost; submit->done {submit_to_done:.3f}; "
            f"of window capacity {window_capacity:.3f}"
        ),
    )
