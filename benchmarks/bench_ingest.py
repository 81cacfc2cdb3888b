"""Ingest: rows enqueued per second against the bare-loop ceiling, and peak RSS at two sizes.

Every run is a fresh `benchmarks.worker` process against a fresh local stack, checked
afterwards to hold exactly the rows expected in the rows queue. Fresh, because Azurite's
in-memory queue store slows down as messages accumulate and stalls for minutes when it
garbage-collects tens of thousands of deleted ones (its extent metadata is removed one
document at a time from an indexed LokiJS collection): clearing the queue between two
200,000-message runs would measure Azurite's garbage collector, not us.

Those stacks also run Azurite's queue garbage collector once an hour instead of every
minute (localdev/azurite_queue_gc.cjs): each pass lists every stored message with an
unindexed query, O(messages^2), and blocks the emulator for seconds to tens of seconds at
these depths. It is time-driven, so the slower of two runs would meet more and longer
pauses; nothing is deleted during an ingest, so there is nothing for it to collect anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import PIPELINE_ONE, Context, Direct, Result, loadavg, run_worker, stop_workers
from localdev.stack import Stack, start_stack
from processing.core.layout import ROWS_QUEUE
from processing.core.states import JobState

QUEUE_GC_MS = 3_600_000  # Azurite's queue GC: once an hour instead of every 60 s (see the docstring)
APP_CLIENT_ROWS = 10_000  # the client-construction comparison is a side note: smaller is enough


async def _fresh(
    ctx: Context, label: str, body: Callable[[Stack, Direct], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    stack = await asyncio.to_thread(
        start_stack, ctx.workdir / f"stack-{label}", azurite_queue_gc_ms=QUEUE_GC_MS, event_grid_interval=None
    )
    direct = Direct(stack.connection_string)
    try:
        return await body(stack, direct)
    finally:
        stop_workers()  # only ever one, and only left running if the run was interrupted
        await direct.close()
        await asyncio.to_thread(stack.stop)


async def _expect_rows(direct: Direct, rows: int, what: str) -> None:
    count = await direct.queue_count(ROWS_QUEUE)
    if count != rows:
        raise RuntimeError(f"{what}: the rows queue holds {count} messages, expected {rows}")


async def _ingest(ctx: Context, rows: int, *, bare_clients: bool = False) -> dict[str, Any]:
    label = f"ingest-{rows}{'-bare' if bare_clients else ''}"

    async def body(stack: Stack, direct: Direct) -> dict[str, Any]:
        job, event = await direct.upload_input(ctx.csv(rows), PIPELINE_ONE, f"ingest-{rows}.csv")
        event_file = ctx.workdir / f"{label}.event.json"
        event_file.write_text(event)
        args = ["ingest", str(event_file)] + (["--bare-clients"] if bare_clients else [])
        figures = await asyncio.to_thread(run_worker, ctx, args, ctx.env(stack))
        if figures["job"] != job or figures["state"] != JobState.PROCESSING or figures["rows"] != rows:
            raise RuntimeError(f"ingest of {rows} rows ended as {figures}")
        await _expect_rows(direct, rows, f"ingest of {rows} rows")
        return figures

    figures = await _fresh(ctx, label, body)
    figures.update(rate=rows / figures["seconds"], loadavg=loadavg())
    return figures


async def _ceiling(ctx: Context, rows: int, job: str, *, app_client: bool = False) -> dict[str, Any]:
    """The same messages as ingest sent (the same job id in each), put by a bare loop."""

    async def body(stack: Stack, direct: Direct) -> dict[str, Any]:
        args = ["ceiling", str(ctx.csv(rows)), job] + (["--app-client"] if app_client else [])
        figures = await asyncio.to_thread(run_worker, ctx, args, ctx.env(stack))
        await _expect_rows(direct, rows, "ceiling")
        return figures

    figures = await _fresh(ctx, f"ceiling-{rows}{'-app' if app_client else ''}", body)
    figures.update(rate=rows / figures["seconds"], loadavg=loadavg())
    return figures


def _pooled_rate(runs: list[dict[str, Any]]) -> float:
    return sum(r["rows"] for r in runs) / sum(r["seconds"] for r in runs)


async def run(ctx: Context) -> list[Result]:
    sizes = ctx.sizes
    big, small = sizes.ingest_rows, sizes.ingest_small_rows
    side = min(APP_CLIENT_ROWS, big)
    # ABBA: ingest, ceiling, ceiling, ingest. The machine's speed drifts by 10-15 % over minutes
    # (it is shared); pooling two runs of each in this order cancels a steady drift, and a
    # single pair would not.
    ingests: list[dict[str, Any]] = []
    ceilings: list[dict[str, Any]] = []
    ctx.log(f"ingest: handle_upload of {big:,} rows (fresh stack), 1 of 2")
    ingests.append(await _ingest(ctx, big))
    job = ingests[0]["job"]
    for n in (1, 2):
        ctx.log(f"ingest: the ceiling, a bare loop putting the same {big:,} messages, {n} of 2")
        ceilings.append(await _ceiling(ctx, big, job))
        ctx.log(f"ingest: {ceilings[-1]['rate']:,.0f} rows/s")
    ctx.log(f"ingest: handle_upload of {big:,} rows, 2 of 2")
    ingests.append(await _ingest(ctx, big))
    ctx.log(f"ingest: {ingests[-1]['rate']:,.0f} rows/s; now handle_upload of {small:,} rows (peak RSS)")
    ingest_small = await _ingest(ctx, small)
    ctx.log(
        f"ingest: side runs of {side:,} rows: ceilings with a bare client and with the app's client construction, "
        "and ingest with bare clients (what-if)"
    )
    bare_side = await _ceiling(ctx, side, job)
    app_side = await _ceiling(ctx, side, job, app_client=True)
    whatif = await _ingest(ctx, side, bare_clients=True)

    ingest_rate, ceiling_rate = _pooled_rate(ingests), _pooled_rate(ceilings)
    ratio = ingest_rate / ceiling_rate
    cpu_ratio = sum(r["cpu_seconds"] for r in ceilings) / sum(r["cpu_seconds"] for r in ingests)
    peak_big = max(r["peak_rss_mb"] for r in ingests)
    delta = peak_big - ingest_small["peak_rss_mb"]
    ctx.details["ingest"] = {
        "rows": big,
        "small_rows": small,
        "concurrency": sizes.ingest_concurrency,
        "order": "ingest, ceiling, ceiling, ingest (ABBA), then the small ingest and the side runs",
        "ingest_runs": ingests,
        "ceiling_runs": ceilings,
        "ingest_rate": ingest_rate,
        "ceiling_rate": ceiling_rate,
        "pair_ratios": [i["rate"] / c["rate"] for i, c in zip(ingests, reversed(ceilings), strict=True)],
        "ingest_small": ingest_small,
        "ceiling_bare_client": bare_side,
        "ceiling_app_client": app_side,
        "cpu_ms_per_row": {
            "ceiling": 1000 * sum(r["cpu_seconds"] for r in ceilings) / (2 * big),
            "ingest": 1000 * sum(r["cpu_seconds"] for r in ingests) / (2 * big),
        },
        "cpu_ratio": cpu_ratio,
        "ingest_bare_clients": whatif,
        "app_client_vs_bare_client": app_side["rate"] / bare_side["rate"],
        "app_client_vs_bare_client_cpu": bare_side["cpu_seconds"] / app_side["cpu_seconds"],
        "whatif_ingest_ratio_with_bare_clients": whatif["rate"] / bare_side["rate"],
        "notes": [
            "ingest_ratio = rows/s of handle_upload (download, parse, encode, send, checkpoints, manifest) "
            "over rows/s of a bare loop putting the same pre-encoded messages with the same concurrency; "
            "each pooled over two runs in ABBA order, each run on a fresh stack",
            "pair_ratios: the first ingest over the second ceiling and the second ingest over the first; "
            "their spread shows how much the machine drifted",
            "cpu_ratio = the ceilings' CPU over the ingests' for the same rows: the same comparison, less "
            "sensitive to other load on the machine",
            "app_client_vs_bare_client: the ceiling with the queue client built by processing.adapters.clients."
            "make_queue_service over a bare client (use_env_settings=False), in rows/s; _cpu: the same in CPU "
            "per row. Below 1 means processing's client construction costs throughput (before commit f84819e "
            "it left use_env_settings on: 0.48)",
            "whatif_ingest_ratio_with_bare_clients: handle_upload of the side-run rows with processing's storage "
            "clients replaced by bare ones, over the bare ceiling of the same rows",
        ],
    }
    return [
        Result(
            "ingest_ratio",
            round(ratio, 3),
            "x ceiling",
            round(ceiling_rate, 1),
            ">= 0.8",
            ratio >= 0.8,
            baseline_unit="rows/s (ceiling)",
            note=(
                f"ingest {ingest_rate:,.0f} rows/s (2 runs, ABBA); CPU ratio {cpu_ratio:.2f}; what-if with bare "
                f"storage clients {whatif['rate'] / bare_side['rate']:.2f} (at {side:,} rows)"
            ),
        ),
        Result(
            "rss_delta_mb",
            round(delta, 1),
            "MB",
            round(ingest_small["peak_rss_mb"], 1),
            "<= 50",
            abs(delta) <= 50,
            baseline_unit=f"MB peak RSS at {small:,} rows",
            note=f"peak RSS {peak_big:.0f} MB at {big:,} rows (the higher of 2 runs)",
        ),
    ]
