"""One job's telemetry, end to end on the local stack (issue 13, "Telemetry").

The decorated functions of function_app.py run in this process (as in test_functions_direct.py),
so the SDK's in-memory span exporter, metric reader and log exporter see everything the app
emits: the spans of each stage, row and model call with their attributes, the log records with
the job id, and the metrics, which are compared with the job's manifest and the emulator's count.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import function_app
from localdev.stack import Stack
from processing.adapters import telemetry as t
from processing.core.layout import FINALIZE_QUEUE, ROWS_QUEUE
from tests.integration.faults_util import (
    call,
    close_in_process_clients,
    csv_bytes,
    emulator_config,
    emulator_stats,
    in_process_env,
    take_all,
    upload,
    wait_until,
)
from tests.integration.harness import manifest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean")]
# Ingest is driven by hand here: the stack's Event Grid would add an uploads message of its own.
STACK_EVENT_GRID = False


class Exporters:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.logs = InMemoryLogRecordExporter()

    def points(self, name: str) -> list[Any]:
        found = []
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def sums(self, name: str, by: str) -> Counter[str]:
        totals: Counter[str] = Counter()
        for point in self.points(name):
            totals[str(point.attributes.get(by))] += point.value
        return totals


@pytest.fixture
def exporters() -> Iterator[Exporters]:
    installed = Exporters()
    t.use_exporters(installed.spans, installed.metrics, installed.logs)
    yield installed
    t.reset()


def queued(body: str, dequeue_count: int = 1, waited: float = 0.5) -> QueueMessage:
    """A message as the trigger hands it over, inserted `waited` seconds ago."""
    inserted = datetime.now(UTC) - timedelta(seconds=waited)
    return QueueMessage(id="test", body=body.encode(), dequeue_count=dequeue_count, insertion_time=inserted)


async def test_a_jobs_spans_logs_and_metrics_carry_its_job_rows_and_attempts(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, exporters: Exporters, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="processing")  # host.json's level: Information
    await emulator_config(stack, fault_retry_after_ms=100)
    in_process_env(stack, monkeypatch, ROWSMITH_FINALIZE_INTERVAL_SECONDS="0")
    rows = [["1", "hello"], ["2", "busy [[fault:429:1]]"], ["3", "world"], ["4", "one cell", "too many"]]
    try:
        job, event = await upload(stack, "echo/telemetry.csv", csv_bytes(["id", "text"], rows))
        await call(function_app.ingest_upload)(queued(event, waited=2.0))
        for body, count in await take_all(stack, ROWS_QUEUE):
            await call(function_app.process_rows)(queued(body, count))
        # The 429'd row comes back after its retry-after (and the app's jitter), as a new message.
        [(again, count)] = await wait_until(lambda: take_all(stack, ROWS_QUEUE), timeout=30, what="the 429'd row")
        await call(function_app.process_rows)(queued(again, count))

        async def finalized() -> Any:
            for body, count in await take_all(stack, FINALIZE_QUEUE):
                await call(function_app.finalize_job)(queued(body, count))
            done = await manifest(stack, job)
            return done if done and done.state == "done" else None

        done = await wait_until(finalized, timeout=30, interval=0.3, what="the job to be done")
    finally:
        await close_in_process_clients()
    t.flush()
    stats = await emulator_stats(stack)
    assert stats["throttled"] == 1 and done.total_rows == 4

    spans = exporters.spans.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)

    # Stages: one span per invocation, each with the job, its pipeline, stage and attempt.
    for stage in ("ingest", "process", "finalize"):
        stage_spans = by_name[t.STAGE_SPAN_PREFIX + stage]
        for span in stage_spans:
            attrs = span.attributes
            assert (attrs[t.JOB_ID], attrs[t.PIPELINE], attrs[t.STAGE]) == (job, "echo", stage), attrs
            assert attrs[t.ATTEMPT] >= 1
    assert len(by_name["rowsmith.process"]) == 4  # three rows messages, then the 429'd row again

    # Rows: one span per row and delivery, inside its stage's span, with its index and outcome.
    process_ids = {span.context.span_id for span in by_name["rowsmith.process"]}
    row_spans = by_name[t.ROW_SPAN]
    assert sorted(span.attributes[t.ROW_INDEX] for span in row_spans) == [0, 1, 1, 2]  # row 3 was a bad row
    for span in row_spans:
        assert span.parent is not None and span.parent.span_id in process_ids
        assert (span.attributes[t.JOB_ID], span.attributes[t.PIPELINE]) == (job, "echo")
        assert span.attributes[t.ATTEMPT] == 1  # each delivery is a message's first
    outcomes = Counter((span.attributes[t.ROW_INDEX], span.attributes[t.OUTCOME]) for span in row_spans)
    assert outcomes == Counter({(0, "ok"): 1, (1, "Throttled"): 1, (1, "ok"): 1, (2, "ok"): 1})

    # Model calls: one span per attempt, inside its row's span; the 429 is an error span.
    row_ids = {span.context.span_id: span for span in row_spans}
    model_spans = by_name[t.MODEL_SPAN]
    assert len(model_spans) == stats["requests"] == 4
    for span in model_spans:
        row = row_ids[span.parent.span_id]
        assert span.attributes[t.ROW_INDEX] == row.attributes[t.ROW_INDEX]
        assert (span.attributes[t.JOB_ID], span.attributes[t.ATTEMPT]) == (job, 1)
        assert span.attributes[t.DEPLOYMENT]
    failed = [span for span in model_spans if span.status.status_code == StatusCode.ERROR]
    assert [span.attributes[t.ROW_INDEX] for span in failed] == [1]

    # Log records carry the job (and their stage) as attributes.
    records = [item.log_record for item in exporters.logs.get_finished_logs()]
    about_job = [r for r in records if (r.attributes or {}).get(t.JOB_ID) == job]
    assert about_job, [r.body for r in records]
    assert {r.attributes[t.STAGE] for r in about_job} >= {"finalize"}
    assert all(r.attributes[t.PIPELINE] == "echo" for r in about_job)

    # Metrics: rows by outcome add up to the job's rows, tokens to the manifest's totals.
    rows_by_outcome = exporters.sums(t.ROWS_METRIC, t.OUTCOME)
    assert rows_by_outcome == Counter({"ok": 3, "bad_row": 1})
    assert sum(rows_by_outcome.values()) == done.total_rows
    assert rows_by_outcome["ok"] == done.counts["ok"]
    tokens = exporters.sums(t.TOKENS_METRIC, t.TOKEN_KIND)
    for kind in t.TOKEN_KINDS:
        assert tokens.get(kind, 0) == done.tokens.get(kind, 0), (kind, tokens, done.tokens)
    assert tokens["prompt"] > 0 and tokens["completion"] > 0
    # Cost at the job's own price, as the manifest prices its tokens.
    assert done.cost_usd, done
    assert exporters.sums(t.COST_METRIC, t.PIPELINE)["echo"] == pytest.approx(done.cost_usd, abs=1e-6)
    assert exporters.sums(t.THROTTLED_METRIC, t.DEPLOYMENT).total() == stats["throttled"] == 1
    latency = exporters.points(t.MODEL_DURATION_METRIC)
    assert sum(p.count for p in latency) == stats["requests"]
    assert {p.attributes[t.OUTCOME] for p in latency} == {"ok", "throttled"}
    delays = exporters.points(t.QUEUE_DELAY_METRIC)
    ingest_delay = [p for p in delays if p.attributes[t.STAGE] == "ingest"]
    assert ingest_delay and ingest_delay[0].min >= 2.0  # inserted two seconds before the trigger ran
    assert exporters.sums(t.JOBS_METRIC, t.JOB_STATE) == Counter({"ingesting": 1, "done": 1})
