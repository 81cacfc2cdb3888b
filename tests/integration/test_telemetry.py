"""One job's telemetry, end to end on the local stack (issue 13, "Telemetry").

- The decorated functions of function_app.py run in this process (as in test_functions_direct.py),
  so the SDK's in-memory span exporter, metric reader and log exporter see everything the app
  emits: the spans of each stage, row and model call with their attributes, the log records with
  the job id, and the metrics, which are compared with the job's manifest and the emulator's count.
- The real Azure Monitor distro, in a child process, sends to a loopback stand-in for
  Application Insights with the local managed identity's Entra token.
- The local runner (a child process, as `rowsmith local up` runs the app) exports a job's
  telemetry to an OTLP collector on loopback.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import ssl
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from azure.functions.queue import QueueMessage
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import function_app
from localdev.azurite import make_dev_certificates
from localdev.identity_endpoint import IdentityEndpoint, endpoint_settings
from localdev.ports import serve_app
from localdev.stack import Stack
from processing.adapters import telemetry as t
from processing.core.layout import FINALIZE_QUEUE, ROWS_QUEUE
from processing.core.settings import APP_ROOT
from tests.integration.faults_util import (
    call,
    close_in_process_clients,
    csv_bytes,
    emulator_config,
    emulator_stats,
    in_process_env,
    submit,
    take_all,
    upload,
    wait_until,
)
from tests.integration.harness import RunnerProcess, app_settings, manifest, wait_state

pytestmark = pytest.mark.integration
# Ingest is driven by hand here: the stack's Event Grid would add an uploads message of its own.
STACK_EVENT_GRID = False
INSTRUMENTATION_ID = "00000000-0000-4000-8000-00000000e001"  # an id, not a key


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
    stack: Stack, clean: None, monkeypatch: pytest.MonkeyPatch, exporters: Exporters, caplog: pytest.LogCaptureFixture
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


# --- Application Insights with Entra ID: the real distro, a loopback ingestion endpoint ------------


class Ingestion:
    """A stand-in for Application Insights' ingestion endpoint: records each batch and its token."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, str, list[dict[str, Any]]]] = []  # (path, Authorization, items)

    async def track(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        # /v2.1/track takes a JSON array of items (live metrics, if it calls, posts other shapes).
        items = json.loads(raw) if raw.strip() else []
        items = items if isinstance(items, list) else [items]
        self.batches.append((request.path, request.headers.get("Authorization", ""), items))
        return web.json_response({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.track)
        return app


async def test_application_insights_gets_the_telemetry_with_the_identitys_entra_token(tmp_path: Path):
    identity = IdentityEndpoint()
    identity_served = await identity.serve()
    # azure-core sends a bearer token over HTTPS only: the stand-in has a throwaway CA's certificate.
    certs = make_dev_certificates(tmp_path / "tls")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs.cert, certs.key)
    ingestion = Ingestion()
    runner = web.AppRunner(ingestion.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    # An Application Insights connection string has ids and endpoints, and no key.
    connection = f"InstrumentationKey={INSTRUMENTATION_ID};IngestionEndpoint={base}/;LiveEndpoint={base}/"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_", "HTTP"))},
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
        **endpoint_settings(identity_served.url, identity.header),  # as Flex Consumption sets them
        "NO_PROXY": "127.0.0.1,localhost",
        # The distro's calls home (statsbeat, its control plane) and the Azure VM resource
        # detector (IMDS) are off here; the child refuses any other traffic and says so.
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
        # Every trace kept (the distro's default samples at 5 traces per second, from an empty budget).
        "OTEL_TRACES_SAMPLER": "microsoft.fixed_percentage",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "TMPDIR": str(tmp_path),  # the exporter's offline retry storage
        "REQUESTS_CA_BUNDLE": str(certs.ca),
        "SSL_CERT_FILE": str(certs.ca),
        "PYTHONPATH": str(APP_ROOT),
    }
    body = '{"v":1,"type":"finalize","job":"orders-0123456789ab"}'
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("telemetry_child.py")),
            body,
            env=env,
            cwd=APP_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(child.communicate(), timeout=120)
    finally:
        await runner.cleanup()
        await identity_served.stop()
    text = out.decode()
    assert child.returncode == 0, text
    assert "EXPORTER azure" in text and "FLUSHED" in text, text
    assert "EGRESS" not in text, text  # nothing left the machine

    # Every batch carried a bearer token from the managed identity, for Azure Monitor.
    assert ingestion.batches, text
    audiences = set()
    for _path, authorization, _items in ingestion.batches:
        scheme, _, token = authorization.partition(" ")
        assert scheme == "Bearer" and token, authorization
        audiences.add(jwt.decode(token, options={"verify_signature": False})["aud"])
    assert audiences <= {"https://monitor.azure.com", "https://monitor.azure.com/"} and audiences, audiences
    assert identity.stats.tokens, "no token was asked of the identity endpoint"

    items = [item for path, _a, batch in ingestion.batches if path.endswith("/track") for item in batch]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["data"]["baseType"], []).append(item["data"]["baseData"])
    assert all(item["iKey"] == INSTRUMENTATION_ID for item in items)
    # The stage's span (a dependency), its log record (a trace) and the jobs metric, with the job.
    (stage,) = [d for d in by_kind["RemoteDependencyData"] if d["name"] == "rowsmith.finalize"]
    assert stage["properties"][t.JOB_ID] == "orders-0123456789ab" and stage["properties"][t.ATTEMPT] == "2"
    (record,) = [m for m in by_kind["MessageData"] if m["message"] == "a log record about the job"]
    assert record["properties"][t.JOB_ID] == "orders-0123456789ab" and record["properties"][t.STAGE] == "finalize"
    jobs = [m for m in by_kind["MetricData"] if m["metrics"][0]["name"] == t.JOBS_METRIC]
    assert jobs and jobs[0]["properties"][t.JOB_STATE] == "done"


# --- OTLP from the local runner (a child process, as `rowsmith local up` runs the app) ------------


class Collector:
    """An OTLP/HTTP collector on loopback: the spans and log records it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.logs: list[Any] = []
        self.metrics: list[str] = []

    async def receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.path == "/v1/traces":
            batch = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
            self.spans += [s for r in batch.resource_spans for sc in r.scope_spans for s in sc.spans]
        elif request.path == "/v1/logs":
            batch = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
            self.logs += [lr for r in batch.resource_logs for sc in r.scope_logs for lr in sc.log_records]
        elif request.path == "/v1/metrics":
            batch = metrics_service_pb2.ExportMetricsServiceRequest.FromString(raw)
            self.metrics += [m.name for r in batch.resource_metrics for sc in r.scope_metrics for m in sc.metrics]
        return web.Response(body=b"", content_type="application/x-protobuf")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.receive)
        return app


def _attributes(item: Any) -> dict[str, Any]:
    values = {}
    for kv in item.attributes:
        kind = kv.value.WhichOneof("value")
        values[kv.key] = getattr(kv.value, kind) if kind else None
    return values


async def test_the_local_runner_exports_a_jobs_telemetry_over_otlp(stack: Stack, clean: None, tmp_path: Path):
    collector = Collector()
    served = await serve_app(collector.app())
    settings = app_settings(
        stack,
        OTEL_EXPORTER_OTLP_ENDPOINT=served.url,
        # The SDK's own export schedule, shortened so the test does not wait a minute for metrics.
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BLRP_SCHEDULE_DELAY="200",
    )
    try:
        with RunnerProcess(settings, tmp_path / "runner.log"):
            job = await submit(stack, "echo/otlp.csv", csv_bytes(["id", "text"], [["1", "a"], ["2", "b"]]))
            done = await wait_state(stack, job, timeout=60)
            assert done.state == "done"

            async def exported() -> bool:
                rows = [s for s in collector.spans if s.name == t.ROW_SPAN and _attributes(s)[t.JOB_ID] == job]
                stages = {s.name for s in collector.spans if _attributes(s).get(t.JOB_ID) == job}
                wanted = {t.STAGE_SPAN_PREFIX + s for s in ("ingest", "process", "finalize")}
                return len(rows) == 2 and wanted <= stages and t.ROWS_METRIC in collector.metrics

            await wait_until(exported, timeout=30, what="the job's spans and metrics at the collector")
    finally:
        await served.stop()
    rows = [s for s in collector.spans if s.name == t.ROW_SPAN and _attributes(s)[t.JOB_ID] == job]
    assert sorted(_attributes(s)[t.ROW_INDEX] for s in rows) == [0, 1]
    assert all(_attributes(s)[t.PIPELINE] == "echo" for s in rows)
    assert any(_attributes(r).get(t.JOB_ID) == job for r in collector.logs)
