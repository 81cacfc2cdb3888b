"""Which exporters telemetry sets up, from the settings alone (processing/adapters/telemetry.py).

Application Insights cannot run here: for it the test records what configure_azure_monitor is
asked (the connection string, an Entra ID credential, the app's loggers). OTLP is exported for
real, to an HTTP server on loopback; the console to captured stdout.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import azure.identity
import azure.monitor.opentelemetry
import pytest

from processing.adapters import telemetry
from processing.core.settings import TelemetrySettings

# The shape of an Application Insights connection string: ids and endpoints, no key.
CONNECTION_STRING = (
    "InstrumentationKey=00000000-0000-4000-8000-000000000000;"
    "IngestionEndpoint=https://example.in.applicationinsights.azure.com/;"
    "LiveEndpoint=https://example.livediagnostics.monitor.azure.com/"
)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    telemetry.reset()
    yield
    telemetry.reset()


@dataclass
class Msg:
    body: bytes
    dequeue_count: int | None = 1
    insertion_time: datetime | None = None

    def get_body(self) -> bytes:
        return self.body


FINALIZE = Msg(b'{"v":1,"type":"finalize","job":"orders-0123456789ab"}', dequeue_count=3)


def test_auto_picks_azure_then_otlp_then_none():
    assert TelemetrySettings.from_env({}).exporter == "none"
    assert TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}).exporter == "otlp"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "APPLICATIONINSIGHTS_CONNECTION_STRING": "x"}
    assert TelemetrySettings.from_env(both).exporter == "azure"
    assert TelemetrySettings.from_env({**both, "ROWSMITH_TELEMETRY": "Console"}).exporter == "console"
    assert (
        TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318/"}).otlp_endpoint == "http://h:4318"
    )


def test_an_unknown_mode_is_a_configuration_error():
    with pytest.raises(Exception, match="ROWSMITH_TELEMETRY"):
        TelemetrySettings.from_env({"ROWSMITH_TELEMETRY": "datadog"})


def test_none_builds_no_provider_but_log_records_still_name_the_job(caplog: pytest.LogCaptureFixture):
    assert telemetry.configure(TelemetrySettings(mode="none"), install_global=False) == "none"
    assert not telemetry.enabled()
    caplog.set_level(logging.INFO)
    with telemetry.stage("finalize", FINALIZE):
        logging.getLogger("processing.test").info("checking")
    logging.getLogger("processing.test").info("outside")
    inside, outside = caplog.records
    assert getattr(inside, telemetry.JOB_ID) == "orders-0123456789ab"
    assert getattr(inside, telemetry.STAGE) == "finalize" and getattr(inside, telemetry.ATTEMPT) == 3
    assert not hasattr(outside, telemetry.JOB_ID)


def test_configure_runs_once_per_process():
    assert telemetry.configure(TelemetrySettings(mode="none"), install_global=False) == "none"
    assert telemetry.configure(TelemetrySettings(mode="console"), install_global=False) == "none"


def test_console_prints_spans_and_metrics(capsys: pytest.CaptureFixture[str]):
    assert telemetry.configure(TelemetrySettings(mode="console"), install_global=False) == "console"
    with telemetry.stage("finalize", FINALIZE):
        pass
    telemetry.job_state(type("M", (), {"pipeline_name": "orders", "state": "done"})())
    telemetry.flush()
    out = capsys.readouterr().out
    assert '"name": "rowsmith.finalize"' in out and '"rowsmith.job_id": "orders-0123456789ab"' in out
    assert telemetry.JOBS_METRIC in out


class Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, int]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        Collector.received.append((self.path, self.headers.get("Content-Type", ""), length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_otlp_exports_traces_metrics_and_logs_to_the_endpoint(collector: str):
    settings = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": collector + "/"})
    assert telemetry.configure(settings, install_global=False) == "otlp"
    inserted = datetime.now(UTC) - timedelta(seconds=2)
    with telemetry.stage("finalize", Msg(FINALIZE.body, insertion_time=inserted)):
        logging.getLogger("processing.test").warning("a record for the collector")
    telemetry.flush()
    paths = {path for path, _, _ in Collector.received}
    assert {"/v1/traces", "/v1/metrics", "/v1/logs"} <= paths
    assert all(kind == "application/x-protobuf" and size > 0 for _, kind, size in Collector.received)
    telemetry.reset()  # while the collector still answers: shutting down exports once more


def test_otlp_without_an_endpoint_runs_without_telemetry(caplog: pytest.LogCaptureFixture):
    assert telemetry.configure(TelemetrySettings(mode="otlp"), install_global=False) == "none"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in caplog.text
    assert not telemetry.enabled()


@pytest.fixture
def azure_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", lambda **kw: calls.append(kw))
    return calls


def test_azure_sends_to_the_connection_string_with_the_managed_identity(azure_calls: list[dict[str, Any]]):
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING,
        "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi",
        "AZURE_CLIENT_ID": "11111111-1111-4111-8111-111111111111",
    }
    assert telemetry.configure(TelemetrySettings.from_env(env), install_global=False) == "azure"
    (call,) = azure_calls
    assert call["connection_string"] == CONNECTION_STRING
    credential = call["credential"]
    # Entra ID, synchronous (the exporters send from their own threads), for the user-assigned identity.
    assert isinstance(credential, azure.identity.ManagedIdentityCredential)
    assert "11111111-1111-4111-8111-111111111111" in json.dumps(vars(credential._credential), default=str)
    assert call["logger_name"] == "processing"
    assert any(isinstance(p, telemetry.ScopeSpanProcessor) for p in call["span_processors"])
    assert call["resource"].attributes["service.name"] == "rowsmith"
    assert telemetry.enabled()


def test_azure_off_azure_uses_the_developers_login(azure_calls: list[dict[str, Any]]):
    settings = TelemetrySettings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING})
    assert telemetry.configure(settings, install_global=False) == "azure"
    assert isinstance(azure_calls[0]["credential"], azure.identity.DefaultAzureCredential)


def test_azure_without_a_connection_string_runs_without_telemetry(azure_calls: list[dict[str, Any]]):
    assert telemetry.configure(TelemetrySettings(mode="azure"), install_global=False) == "none"
    assert azure_calls == []


def test_spans_started_inside_a_stage_by_other_code_carry_its_attributes():
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    telemetry.use_exporters(spans, InMemoryMetricReader())
    with telemetry.stage("finalize", FINALIZE):
        # What an instrumentation does (an HTTP or storage call): a span of its own tracer.
        telemetry._state.tracer.start_span("GET blob", attributes={telemetry.STAGE: "theirs"}).end()
    (theirs,) = [s for s in spans.get_finished_spans() if s.name == "GET blob"]
    assert theirs.attributes[telemetry.JOB_ID] == "orders-0123456789ab"
    assert theirs.attributes[telemetry.STAGE] == "theirs"  # an attribute it set itself is kept


def test_a_mistyped_mode_is_logged_and_the_app_still_loads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("ROWSMITH_TELEMETRY", "datadog")
    assert telemetry.configure(install_global=False) == "none"
    assert "ROWSMITH_TELEMETRY='datadog' must be one of" in caplog.text


def test_spend_lines_count_their_tokens_and_cost_but_are_not_rows():
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from processing.core.prices import Price
    from processing.core.records import Record

    reader = InMemoryMetricReader()
    telemetry.use_exporters(InMemorySpanExporter(), reader)
    price = Price(
        model="m", input=1.0, cached_input=0.5, output=4.0, batch_discount=0.5, reasoning=False, source="t", as_of="t"
    )
    records = [
        Record.answered(0, ["a"], "x", (100, 20, 0, 40)),
        Record.failed(1, ["b"], "budget", "over budget"),
        Record.spent(2, (50, 10, 0, 0), (1, 0)),  # billed, re-enqueued: not a result
    ]
    telemetry.rows_recorded(records, pipeline="orders", price=price)
    points = {
        (m.name, tuple(sorted(p.attributes.items()))): p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    rows = {k[1]: v for k, v in points.items() if k[0] == telemetry.ROWS_METRIC}
    assert rows == {
        ((telemetry.OUTCOME, "ok"), (telemetry.PIPELINE, "orders")): 1,
        ((telemetry.OUTCOME, "budget"), (telemetry.PIPELINE, "orders")): 1,
    }
    tokens = {dict(k[1])[telemetry.TOKEN_KIND]: v for k, v in points.items() if k[0] == telemetry.TOKENS_METRIC}
    assert tokens == {"prompt": 150, "completion": 30, "cached": 40}
    (cost,) = [v for k, v in points.items() if k[0] == telemetry.COST_METRIC]
    assert cost == pytest.approx(price.cost(150, 30, 40))


def test_every_queue_a_trigger_reads_names_its_stage():
    from processing.core.layout import ALL_QUEUES

    assert set(telemetry.STAGES) == set(ALL_QUEUES)
    assert set(telemetry.STAGES.values()) == {"ingest", "process", "finalize", "poison"}
