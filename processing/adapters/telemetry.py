"""OpenTelemetry for the app: spans per stage, row and model call, metrics, and log records that
say which job, pipeline, stage, attempt and row they are about.

`configure()` runs once per process (function_app.py calls it at import) and picks the exporters
from `TelemetrySettings` (ROWSMITH_TELEMETRY): Application Insights through the Azure Monitor
distro with an Entra ID credential (Application Insights has local auth off, so there is no
instrumentation key to hold), an OTLP/HTTP collector, the console, or none. With none no
provider is built: the helpers below only set a context variable, so the cost is a few
attribute look-ups per row.

The attributes live in a context variable (`_scope`), set by `stage()`, `row()` and
`model_call()`, which asyncio copies into every task a stage starts. From there a log record
factory puts them on every log record (so the OTel logging handler exports them as attributes,
and local logs carry them too) and a span processor puts them on every span started inside,
including the HTTP and storage spans of the Azure Monitor distro's instrumentations.

Names of spans, metrics and attributes are constants here: infra/core/workbook.json queries
them and tests/infra checks that the two agree.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Concatenate, Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from processing.core import layout, messages
from processing.core.errors import Throttled
from processing.core.prices import Price
from processing.core.records import Record
from processing.core.settings import TelemetrySettings

log = logging.getLogger(__name__)

SERVICE_NAME = "rowsmith"
INSTRUMENTATION_SCOPE = "rowsmith"
# The loggers whose records are exported: the app's modules and function_app.py's. Not the root
# logger: azure-core logs every storage request at INFO, which would be most of the bill.
APP_LOGGERS = ("processing", "rowsmith")

# --- attributes (spans and log records) ---------------------------------------------------------
JOB_ID = "rowsmith.job_id"
PIPELINE = "rowsmith.pipeline"
STAGE = "rowsmith.stage"
ATTEMPT = "rowsmith.attempt"  # the message's dequeue count; on a model-call span, the model attempt
ROW_INDEX = "rowsmith.row_index"
OUTCOME = "rowsmith.outcome"  # ok, a row error code, or what sends the row back to the queue
QUEUE = "messaging.destination.name"
DEPLOYMENT = "gen_ai.request.model"
# --- attributes of metrics only -----------------------------------------------------------------
TOKEN_KIND = "rowsmith.token_kind"
JOB_STATE = "rowsmith.job_state"

# --- span names ---------------------------------------------------------------------------------
STAGE_SPAN_PREFIX = "rowsmith."  # + the stage: rowsmith.ingest, rowsmith.process, ...
ROW_SPAN = "rowsmith.row"
MODEL_SPAN = "rowsmith.model_call"

# The stage each queue's trigger runs.
STAGES = {
    layout.UPLOADS_QUEUE: "ingest",
    layout.ROWS_QUEUE: "process",
    layout.FINALIZE_QUEUE: "finalize",
    layout.UPLOADS_POISON_QUEUE: "poison",
    layout.ROWS_POISON_QUEUE: "poison",
    layout.FINALIZE_POISON_QUEUE: "poison",
}

# --- metric names -------------------------------------------------------------------------------
ROWS_METRIC = "rowsmith.rows"  # rows recorded, by OUTCOME
TOKENS_METRIC = "rowsmith.tokens"  # by TOKEN_KIND
TOKEN_KINDS = ("prompt", "completion", "reasoning", "cached")  # Record.usage's order
COST_METRIC = "rowsmith.cost"  # USD
MODEL_DURATION_METRIC = "rowsmith.model.duration"  # seconds per model call attempt
THROTTLED_METRIC = "rowsmith.model.throttled"  # 429s
QUEUE_DELAY_METRIC = "rowsmith.queue.delay"  # seconds from a message's insertion to its stage's start
JOBS_METRIC = "rowsmith.jobs"  # jobs entering a state, by JOB_STATE (created, done, failed, cancelled)
METRICS = (
    ROWS_METRIC,
    TOKENS_METRIC,
    COST_METRIC,
    MODEL_DURATION_METRIC,
    THROTTLED_METRIC,
    QUEUE_DELAY_METRIC,
    JOBS_METRIC,
)
# Seconds: the SDK's default boundaries are sized for milliseconds.
_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


# --- the scope: what the current stage, row and model call are ----------------------------------


@dataclass
class _Scope:
    attributes: dict[str, Any]
    span: Span | None = None
    stage: _Scope | None = None  # the stage scope this one is inside (itself, for a stage)
    model_attempts: int = 0  # model calls so far in this row
    price: Any = None  # the job's prices.Price (on a stage scope, once a row told it): what tokens cost


# asyncio copies it into each task a stage starts (the rows of a message run as tasks).
_scope: ContextVar[_Scope | None] = ContextVar("rowsmith_telemetry_scope", default=None)


def current_attributes() -> dict[str, Any]:
    """The rowsmith.* attributes of where the caller is (empty outside any stage)."""
    scope = _scope.get()
    return dict(scope.attributes) if scope else {}


# --- the providers ------------------------------------------------------------------------------


@dataclass
class _Instruments:
    rows: Any
    tokens: Any
    cost: Any
    model_duration: Any
    throttled: Any
    queue_delay: Any
    jobs: Any

    @classmethod
    def from_meter(cls, meter: otel_metrics.Meter) -> _Instruments:
        return cls(
            rows=meter.create_counter(ROWS_METRIC, unit="{row}", description="Rows recorded, by outcome"),
            tokens=meter.create_counter(TOKENS_METRIC, unit="{token}", description="Tokens, by kind"),
            cost=meter.create_counter(COST_METRIC, unit="USD", description="Cost of the rows' model calls"),
            model_duration=meter.create_histogram(
                MODEL_DURATION_METRIC,
                unit="s",
                description="Duration of one model call attempt",
                explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
            ),
            throttled=meter.create_counter(THROTTLED_METRIC, unit="{response}", description="429s from the model"),
            queue_delay=meter.create_histogram(
                QUEUE_DELAY_METRIC,
                unit="s",
                description="From a message's insertion (plus any visibility delay it was sent with) to its stage",
                explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
            ),
            jobs=meter.create_counter(JOBS_METRIC, unit="{job}", description="Jobs entering a state"),
        )


@dataclass
class _State:
    exporter: str = "none"
    tracer: otel_trace.Tracer | None = None
    instruments: _Instruments | None = None
    # What flush() and reset() act on: the SDK providers this module built.
    providers: list[Any] = field(default_factory=list)
    handlers: list[logging.Handler] = field(default_factory=list)


_state = _State()


class _Once:
    configured = False  # configure() ran
    log_factory = False  # the log record factory is installed (it stays, whatever reset() does)


def enabled() -> bool:
    return _state.tracer is not None


def exporter() -> str:
    """The exporter in use: azure, otlp, console, memory (tests) or none."""
    return _state.exporter


def configure(settings: TelemetrySettings | None = None, *, install_global: bool = True) -> str:
    """Set telemetry up for this process, once; returns the exporter chosen.

    Later calls return the first choice (function_app.py is imported once per worker, but tests
    import it many times). `install_global` also makes the providers OpenTelemetry's global ones,
    so that the Functions worker's trace context and other libraries' spans join ours."""
    if _Once.configured:
        return _state.exporter
    _Once.configured = True
    _install_log_factory()
    chosen = "none"
    try:
        # Inside the try: a mistyped ROWSMITH_TELEMETRY must not stop function_app.py from loading.
        settings = settings or TelemetrySettings.from_env()
        chosen = settings.exporter
        if chosen == "azure":
            _configure_azure(settings)
        elif chosen in ("otlp", "console"):
            _configure_sdk(chosen, settings, install_global=install_global)
    except Exception:
        # Telemetry must never stop the app from processing rows: say so and run without it.
        log.exception("telemetry could not be set up with exporter %r; running without it", chosen)
        _state.exporter = "none"
        return "none"
    _state.exporter = chosen
    return chosen


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": SERVICE_NAME})


def _configure_azure(settings: TelemetrySettings) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    from processing.adapters.identity import make_sync_credential

    if not settings.connection_string:
        raise ValueError("ROWSMITH_TELEMETRY=azure needs APPLICATIONINSIGHTS_CONNECTION_STRING")
    configure_azure_monitor(
        connection_string=settings.connection_string,
        # Entra ID: the identity needs Monitoring Metrics Publisher on the component (core/rbac.bicep).
        credential=make_sync_credential(managed_identity=settings.managed_identity, client_id=settings.client_id),
        logger_name=APP_LOGGERS[0],
        resource=_resource(),
        span_processors=[ScopeSpanProcessor()],
    )
    # The distro handles one logger; function_app.py's gets the same handler.
    handlers = [h for h in logging.getLogger(APP_LOGGERS[0]).handlers if type(h).__name__ == "LoggingHandler"]
    for name in APP_LOGGERS[1:]:
        for handler in handlers:
            logging.getLogger(name).addHandler(handler)
    _state.tracer = otel_trace.get_tracer(INSTRUMENTATION_SCOPE)
    _state.instruments = _Instruments.from_meter(otel_metrics.get_meter(INSTRUMENTATION_SCOPE))


def _configure_sdk(chosen: str, settings: TelemetrySettings, *, install_global: bool) -> None:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    log_exporter = None
    if chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if not settings.otlp_endpoint:
            raise ValueError("ROWSMITH_TELEMETRY=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT")
        base = settings.otlp_endpoint
        span_exporter: Any = OTLPSpanExporter(endpoint=f"{base}/v1/traces")
        metric_exporter: Any = OTLPMetricExporter(endpoint=f"{base}/v1/metrics")
        log_exporter = OTLPLogExporter(endpoint=f"{base}/v1/logs")
    else:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # Log records already reach the console through the host's own handler.
        span_exporter = ConsoleSpanExporter(out=sys.stdout)
        metric_exporter = ConsoleMetricExporter(out=sys.stdout)
    _install(
        BatchSpanProcessor(span_exporter),
        PeriodicExportingMetricReader(metric_exporter),
        log_exporter,
        chosen,
        install_global=install_global,
    )


def use_exporters(span_exporter: Any, metric_reader: Any, log_exporter: Any = None) -> None:
    """Send this process's telemetry to these (tests: the SDK's in-memory exporter and reader),
    whatever configure() chose; spans and log records are exported as they end."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    reset()
    _Once.configured = True  # a later configure() (an import of function_app.py) keeps these
    _install_log_factory()
    _install(SimpleSpanProcessor(span_exporter), metric_reader, log_exporter, "memory", install_global=False)


def _install(span_processor: Any, metric_reader: Any, log_exporter: Any, name: str, *, install_global: bool) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    resource = _resource()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(ScopeSpanProcessor())
    tracer_provider.add_span_processor(span_processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    _state.providers = [tracer_provider, meter_provider]
    if log_exporter is not None:
        from opentelemetry.instrumentation.logging.handler import LoggingHandler
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor

        logger_provider = LoggerProvider(resource=resource)
        processor = SimpleLogRecordProcessor if name == "memory" else BatchLogRecordProcessor
        logger_provider.add_log_record_processor(processor(log_exporter))
        _state.providers.append(logger_provider)
        handler = LoggingHandler(logger_provider=logger_provider)
        for logger in APP_LOGGERS:
            logging.getLogger(logger).addHandler(handler)
        _state.handlers.append(handler)
        if install_global:
            from opentelemetry._logs import set_logger_provider

            set_logger_provider(logger_provider)
    if install_global:
        otel_trace.set_tracer_provider(tracer_provider)
        otel_metrics.set_meter_provider(meter_provider)
    _state.tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
    _state.instruments = _Instruments.from_meter(meter_provider.get_meter(INSTRUMENTATION_SCOPE))
    _state.exporter = name


def flush() -> None:
    """Export what is buffered now (tests; a worker exports on its own schedule)."""
    for provider in _state.providers:
        provider.force_flush()


def reset() -> None:
    """Back to no telemetry (tests): the providers this module built are shut down, and
    configure() may choose again."""
    for handler in _state.handlers:
        for name in APP_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    for provider in _state.providers:
        with contextlib.suppress(Exception):
            provider.shutdown()
    _state.__init__()  # type: ignore[misc]
    _Once.configured = False


# --- attributes on log records and on every span ------------------------------------------------


def _install_log_factory() -> None:
    """Every log record made in a scope carries its attributes (`rowsmith.job_id`, ...)."""
    if _Once.log_factory:
        return
    _Once.log_factory = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scope = _scope.get()
        if scope is not None:
            record.__dict__.update(scope.attributes)
        return record

    logging.setLogRecordFactory(factory)


class ScopeSpanProcessor(SpanProcessor):
    """Puts the scope's attributes on every span that starts inside it (storage and HTTP spans
    from instrumentations too), so any span of a job can be found by its job id."""

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        scope = _scope.get()
        if scope is not None:
            present = getattr(span, "attributes", None) or {}
            span.set_attributes({k: v for k, v in scope.attributes.items() if k not in present})


# --- scopes: stage, row, model call -------------------------------------------------------------


class QueueMessageLike(Protocol):
    """What `stage` reads of azure.functions.QueueMessage."""

    @property
    def dequeue_count(self) -> int | None: ...

    @property
    def insertion_time(self) -> datetime | None: ...

    def get_body(self) -> bytes: ...


def _message_attributes(queue: str, body: bytes | str) -> dict[str, Any]:
    """The job (and pipeline, for an upload) a message is about, or nothing for a message that
    does not parse: the stage itself says why it is dropped."""
    try:
        message = messages.parse(queue, body)
    except Exception:
        return {}
    if isinstance(message, messages.BlobCreated):
        return {JOB_ID: layout.job_id_for(message.url, message.etag), PIPELINE: layout.route(message.blob)[0]}
    job = getattr(message, "job", None)
    return {JOB_ID: job} if isinstance(job, str) else {}


@contextlib.contextmanager
def _open(name: str, attributes: dict[str, Any], *, kind: SpanKind, stage: bool = False) -> Iterator[_Scope]:
    parent = _scope.get()
    merged = {**(parent.attributes if parent else {}), **attributes}
    scope = _Scope(merged)
    scope.stage = scope if stage else (parent.stage if parent else None)
    token = _scope.set(scope)
    try:
        if _state.tracer is None:
            yield scope
            return
        with _state.tracer.start_as_current_span(name, kind=kind, attributes=merged) as span:
            scope.span = span
            yield scope
    finally:
        _scope.reset(token)


@contextlib.contextmanager
def stage(queue: str, msg: QueueMessageLike) -> Iterator[None]:
    """One stage invocation: a span, its attributes for everything inside, and the queue delay."""
    name = STAGES.get(queue, queue)
    attempt = msg.dequeue_count or 1
    attributes: dict[str, Any] = {STAGE: name, ATTEMPT: attempt, QUEUE: queue}
    attributes.update(_message_attributes(queue, msg.get_body()))
    instruments = _state.instruments
    if instruments is not None and msg.insertion_time is not None:
        inserted = msg.insertion_time
        if inserted.tzinfo is None:
            inserted = inserted.replace(tzinfo=UTC)
        delay = max(0.0, (datetime.now(UTC) - inserted).total_seconds())
        instruments.queue_delay.record(delay, {STAGE: name, QUEUE: queue})
    with _open(STAGE_SPAN_PREFIX + name, attributes, kind=SpanKind.INTERNAL, stage=True):
        yield


def staged[**P, R](
    handle: Callable[Concatenate[str, QueueMessageLike, P], Awaitable[R]],
) -> Callable[Concatenate[str, QueueMessageLike, P], Awaitable[R]]:
    """`handle(queue, msg, ...)` run inside `stage(queue, msg)`: function_app.py's one wrapper."""

    @functools.wraps(handle)
    async def wrapper(queue: str, msg: QueueMessageLike, *args: P.args, **kwargs: P.kwargs) -> R:
        with stage(queue, msg):
            return await handle(queue, msg, *args, **kwargs)

    return wrapper


def bind(*, job: str, pipeline: str) -> None:
    """The stage learnt its job's pipeline (from the manifest): put it on the stage's span and on
    what is logged from now on. Only for the stage's own job (finalize also reads other jobs')."""
    scope = _scope.get()
    stage_scope = scope.stage if scope else None
    if stage_scope is None or stage_scope.attributes.get(JOB_ID, job) != job:
        return
    for target in {id(s): s for s in (stage_scope, scope) if s is not None}.values():
        for key, value in ((JOB_ID, job), (PIPELINE, pipeline)):
            if key not in target.attributes:
                target.attributes[key] = value
                if target.span is not None:
                    target.span.set_attribute(key, value)


class JobLike(Protocol):
    """What `row` reads of a job's spec (processing/process/job_specs.py)."""

    @property
    def job(self) -> str: ...

    @property
    def pipeline(self) -> Any: ...  # has .name


async def row[T](work: Awaitable[T], spec: JobLike, index: int) -> T:
    """Await one row's work inside its span; the span's outcome is the row's (ok, its error code)
    or what sent it back to the queue (Throttled, TransientError)."""
    job, pipeline = spec.job, spec.pipeline.name
    bind(job=job, pipeline=pipeline)
    outer = _scope.get()
    if outer is not None and outer.stage is not None and outer.stage.price is None:
        outer.stage.price = getattr(spec, "price", None)
    with _open(ROW_SPAN, {JOB_ID: job, PIPELINE: pipeline, ROW_INDEX: index}, kind=SpanKind.INTERNAL) as scope:
        result = await work
        if scope.span is not None:
            if isinstance(result, BaseException):
                scope.span.set_attribute(OUTCOME, type(result).__name__)
            else:
                ok = getattr(result, "ok", None)
                scope.span.set_attribute(OUTCOME, "ok" if ok else str(getattr(result, "code", "") or "error"))
        return result


@contextlib.contextmanager
def model_call(deployment: str) -> Iterator[None]:
    """One model call attempt: a span (attempt = this row's model attempt), its duration, its 429."""
    parent = _scope.get()
    attempt = 1
    if parent is not None:
        parent.model_attempts += 1
        attempt = parent.model_attempts
    attributes = {ATTEMPT: attempt, DEPLOYMENT: deployment, "gen_ai.operation.name": "chat"}
    start = time.perf_counter()
    outcome = "ok"
    try:
        with _open(MODEL_SPAN, attributes, kind=SpanKind.CLIENT) as scope:
            try:
                yield
            except Throttled:
                outcome = "throttled"
                if scope.span is not None:
                    scope.span.set_status(Status(StatusCode.ERROR, "429"))
                raise
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
    finally:
        instruments = _state.instruments
        if instruments is not None:
            labels = {DEPLOYMENT: deployment, OUTCOME: outcome}
            instruments.model_duration.record(time.perf_counter() - start, labels)
            if outcome == "throttled":
                instruments.throttled.add(1, {DEPLOYMENT: deployment})


# --- metrics from what the stages record --------------------------------------------------------


def rows_recorded(records: Iterable[Record], *, pipeline: str | None = None, price: Price | None = None) -> None:
    """Count rows as their records are written: outcome, tokens by kind, cost.

    A record's `usage` is (prompt, completion incl. reasoning, reasoning, cached) tokens, billed;
    its cost is at the job's price (`price`, else the one the stage's rows brought). Tokens count
    on every line, as the manifest counts them (a duplicate delivery and a `spend` line were billed
    too); the rows metric counts results only, so a row delivered twice is counted twice there."""
    instruments = _state.instruments
    if instruments is None:
        return
    scope = _scope.get()
    pipeline = pipeline or (scope.attributes.get(PIPELINE, "") if scope else "")
    if price is None and scope is not None and scope.stage is not None:
        price = scope.stage.price
    base = {PIPELINE: pipeline}
    outcomes: dict[str, int] = {}
    tokens = [0, 0, 0, 0]
    cost = 0.0
    for record in records:
        if record.is_result:
            outcome = "ok" if record.ok else str(record.code or "error")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        prompt, completion, _, cached = record.usage
        for i, count in enumerate(record.usage):
            tokens[i] += count
        if price is not None and (prompt or completion):
            cost += price.cost(prompt, completion, cached)
    for outcome, count in outcomes.items():
        instruments.rows.add(count, {**base, OUTCOME: outcome})
    for kind, count in zip(TOKEN_KINDS, tokens, strict=True):
        if count:
            instruments.tokens.add(count, {**base, TOKEN_KIND: kind})
    if cost:
        instruments.cost.add(cost, base)


def job_state(manifest: Any) -> None:
    """A job entered `manifest.state` (created as ingesting, or ended: done, failed, cancelled)."""
    instruments = _state.instruments
    if instruments is None:
        return
    instruments.jobs.add(1, {PIPELINE: manifest.pipeline_name, JOB_STATE: str(manifest.state)})
