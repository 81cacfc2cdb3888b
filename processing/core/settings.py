"""The one place that reads the environment, and the table of every setting the app reads.

`SETTINGS_REFERENCE` is declarative: each entry names the variable, its default, how it is
parsed and checked, and what it means. `Settings` takes its defaults from it, `from_env` reads
exactly its names, the README's configuration table is rendered from it (`markdown_table`,
checked by a test) and tests/infra checks the Bicep against it. Every other module receives a
`Settings` (or a value from it); `get_settings()` reads the environment once per process, and
tests build their own with `Settings.from_env({...})`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.core.errors import ConfigurationError
from processing.core.layout import STORAGE_CONNECTION

APP_ROOT = Path(__file__).resolve().parents[2]
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY")
# The data-plane API version. Not the latest GA (2024-10-21): `reasoning_effort` arrived in
# 2024-12-01-preview, and GPT-5-family deployments (the Bicep's default model is one) need
# 2025-04-01-preview or later. `max_completion_tokens`, which reasoning models require instead of
# `max_tokens`, exists since 2024-09-01-preview and standard models accept it on these versions
# too, so one request shape serves both families (processing/core/model_family.py). An older
# version set in AZURE_OPENAI_API_VERSION still works: its 400 for `max_completion_tokens` makes
# the app fall back to `max_tokens`.
DEFAULT_API_VERSION = "2025-04-01-preview"
# infra/main.bicep's default model (and deployment name); tests/infra checks they agree.
DEFAULT_DEPLOYMENT = "gpt-5.6-luna"

Parser = Callable[[str, str], Any]  # (setting name, raw text) -> value; raises ConfigurationError


def whole(minimum: int = 1, maximum: int | None = None) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"setting {name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigurationError(f"setting {name}={value} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigurationError(f"setting {name}={value} must be at most {maximum}")
        return value

    return parse


def number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"setting {name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigurationError(f"setting {name}={value} must not be negative")
    return value


def text(name: str, raw: str) -> str:
    return raw


def choice(*allowed: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ConfigurationError(f"setting {name}={raw!r} must be one of {', '.join(allowed)}")
        return value

    return parse


def url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def path(name: str, raw: str) -> Path:
    return Path(raw)


@dataclass(frozen=True)
class Setting:
    name: str  # the environment variable (an app setting in Azure)
    description: str
    default: Any = None  # the value when unset or blank
    attribute: str = ""  # the `Settings` field it fills; "" when read another way (storage, identity)
    parse: Parser = text
    shown: str = ""  # the default as the README shows it, when not `default` itself
    azure: bool = False  # set by infra/ on the Function App

    @property
    def documented_default(self) -> str:
        """The README's default column ("" when there is none)."""
        if self.shown:
            return self.shown
        return "" if self.default is None else str(self.default)

    def read(self, env: Mapping[str, str]) -> Any:
        raw = env.get(self.name, "").strip()
        return self.parse(self.name, raw) if raw else self.default


SETTINGS_REFERENCE: tuple[Setting, ...] = (
    Setting(
        f"{STORAGE_CONNECTION}__blobServiceUri",
        "Blob endpoint of the storage account, for the identity-based connection.",
        azure=True,
    ),
    Setting(
        f"{STORAGE_CONNECTION}__queueServiceUri",
        "Queue endpoint of the storage account, for the identity-based connection.",
        azure=True,
    ),
    Setting(
        f"{STORAGE_CONNECTION}__accountName",
        "Alternative to the two URIs: the storage account name (public cloud endpoints).",
    ),
    Setting(
        STORAGE_CONNECTION,
        "Local development only: Azurite's connection string. Never set in Azure (it would carry a key).",
    ),
    Setting(
        "AZURE_OPENAI_ENDPOINT",
        "Azure OpenAI endpoint, `https://<name>.openai.azure.com`.",
        attribute="openai_endpoint",
        parse=url,
        shown="(required)",
        azure=True,
    ),
    Setting(
        "AZURE_OPENAI_DEPLOYMENT",
        "Model deployment used by pipelines that do not name one.",
        default=DEFAULT_DEPLOYMENT,
        attribute="openai_deployment",
        azure=True,
    ),
    Setting(
        "AZURE_OPENAI_API_VERSION",
        "Azure OpenAI data-plane API version.",
        default=DEFAULT_API_VERSION,
        attribute="openai_api_version",
        azure=True,
    ),
    Setting(
        "AZURE_OPENAI_MODEL_FAMILY",
        "Whether the deployments are reasoning models (`reasoning`: no `temperature`, `max_completion_tokens` = "
        "`max_tokens` + `reasoning_budget`), `standard` ones, or `auto`: guessed from the name (`o*`, `gpt-5*`) "
        "and corrected, once per deployment and process, by the 400 Azure answers to a wrong guess (the row is "
        "asked again at once, never failed for it). A pipeline's `model_family` overrides it.",
        default="auto",
        attribute="openai_model_family",
        parse=choice("auto", "reasoning", "standard"),
    ),
    Setting(
        "AZURE_OPENAI_API_KEY",
        "Opt-out of keyless auth (logged as a warning). Leave unset; the deployment disables keys anyway.",
        attribute="openai_api_key",
    ),
    Setting(
        "AZURE_OPENAI_TIMEOUT_SECONDS",
        "Timeout of one model call.",
        default=60.0,
        attribute="openai_timeout_seconds",
        parse=number,
        shown="60",
    ),
    Setting(
        "AZURE_OPENAI_MAX_RETRIES",
        "Quick in-call retries of connection errors, timeouts and 5xx (429s are re-queued, never slept on).",
        default=2,
        attribute="openai_max_retries",
        parse=whole(minimum=0),
    ),
    # The two per-minute budgets of one instance: 0 is not paced, the Bicep sets the deployment's quota.
    *(
        Setting(name, description, default=0, attribute=attribute, parse=whole(minimum=0), azure=True)
        for name, attribute, description in (
            (
                "AZURE_OPENAI_RPM",
                "openai_rpm",
                "Requests per minute one instance may send, for pipelines without `rpm` (0: not paced; "
                "429s still slow it down). The Bicep sets the deployment's whole quota.",
            ),
            (
                "AZURE_OPENAI_TPM",
                "openai_tpm",
                "Tokens per minute (prompt + completion budget, reasoning included) one instance may send, for "
                "pipelines without `tpm`.",
            ),
        )
    ),
    Setting(
        "IDENTITY_ENDPOINT",
        "Managed identity endpoint; when present the app uses ManagedIdentityCredential.",
        shown="(set by the platform)",
    ),
    Setting("WEBSITE_INSTANCE_ID", "Marks a run inside Azure Functions.", shown="(set by the platform)"),
    Setting(
        "HTTPS_PROXY",
        "Standard proxy variable (also HTTP_PROXY). Storage clients consult the environment's proxy settings "
        "only when one of them is set.",
    ),
    Setting("HTTP_PROXY", "See HTTPS_PROXY."),
    Setting(
        "AZURE_CLIENT_ID",
        "Client id of a user-assigned identity; unset means system-assigned.",
        attribute="client_id",
    ),
    Setting(
        "ROWSMITH_PIPELINES_DIR",
        "Folder of pipeline files (`<name>.toml`).",
        default=APP_ROOT / "pipelines",
        attribute="pipelines_dir",
        parse=path,
        shown="pipelines/",
    ),
    Setting(
        "ROWSMITH_SHARD_ROWS",
        "Rows per results shard (append blob), at most 20000: keeps shards under 50,000 blocks.",
        default=10_000,
        attribute="shard_rows",
        # An append blob takes 50,000 blocks; duplicates and retries need headroom.
        parse=whole(maximum=20_000),
    ),
    Setting(
        "ROWSMITH_FINALIZE_INTERVAL_SECONDS",
        "Delay between a job's completion checks; also how often each instance re-reads the state of the jobs "
        "it is processing.",
        default=10.0,
        attribute="finalize_interval_seconds",
        parse=number,
        shown="10",
    ),
    Setting(
        "ROWSMITH_INGEST_CONCURRENCY",
        "Queue sends in flight while a file is ingested.",
        default=32,
        attribute="ingest_concurrency",
        parse=whole(),
    ),
    Setting(
        "ROWSMITH_INGEST_CHECKPOINT_ROWS",
        "Rows between ingest checkpoints (resume point after a crash).",
        default=5_000,
        attribute="ingest_checkpoint_rows",
        parse=whole(),
    ),
    Setting(
        "ROWSMITH_MAX_ROW_BYTES",
        "Hard limit of one row's size; larger rows become row errors.",
        default=1_048_576,
        attribute="max_row_bytes",
        parse=whole(minimum=1024),
    ),
    Setting(
        "ROWSMITH_SHARD_MAX_BLOCKS",
        "Blocks after which a results shard (append blob, limit 50,000) continues in a new blob.",
        default=45_000,
        attribute="shard_max_blocks",
        # Appenders that have not noticed a full shard yet need the headroom before the hard limit.
        parse=whole(maximum=50_000),
    ),
    Setting(
        "ROWSMITH_STALL_TIMEOUT_SECONDS",
        "A job with no new result for this long is completed, its missing rows marked `missing`.",
        default=3600.0,
        attribute="stall_timeout_seconds",
        parse=number,
        shown="3600",
    ),
    Setting(
        "ROWSMITH_INGEST_BUDGET_SECONDS",
        "Time one ingest invocation reads a file before handing over to a fresh one (functionTimeout is 10 min).",
        default=480.0,
        attribute="ingest_budget_seconds",
        parse=number,
        shown="480",
    ),
    # Telemetry (processing/adapters/telemetry.py) reads these through `TelemetrySettings`, not
    # `Settings`: it is configured at import, before (and without) the app's connections.
    Setting(
        "ROWSMITH_TELEMETRY",
        "Where traces, metrics and logs go: `azure` (Application Insights, Entra ID auth), `otlp` (an "
        "OTLP/HTTP collector), `console` (spans and metrics on stdout), `none`, or `auto`: `azure` when "
        "APPLICATIONINSIGHTS_CONNECTION_STRING is set, else `otlp` when OTEL_EXPORTER_OTLP_ENDPOINT is, else `none`.",
        default="auto",
        parse=choice("auto", "azure", "otlp", "console", "none"),
    ),
    Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "The Application Insights resource telemetry goes to: its ids and endpoints, no key (local auth is off; the "
        "app sends with its identity's Entra token).",
        azure=True,
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "Base URL of an OTLP/HTTP collector, `http://127.0.0.1:4318` say (traces, metrics and logs).",
        parse=url,
    ),
    Setting(
        "ROWSMITH_RESULTS_DELIMITER",
        "Delimiter of the results CSV: `input` (the input's, as detected or as the pipeline names it), `,`, `;`, "
        "`tab` or `pipe`.",
        default="input",
        attribute="results_delimiter",
        parse=choice("input", ",", ";", "tab", "pipe"),
    ),
    Setting(
        "ROWSMITH_RESULTS_BOM",
        "Whether the results CSV (always UTF-8) starts with a byte-order mark: `input` (when the input had one or "
        "was not UTF-8, so Excel opens it as it opened the input), `true` or `false`.",
        default="input",
        attribute="results_bom",
        parse=choice("input", "true", "false"),
    ),
    Setting(
        "ROWSMITH_PRICES_FILE",
        "JSON file of token prices per model (the shape of processing/core/prices.json) whose models replace "
        "or add to the shipped table; `rowsmith estimate` prices with it, and each new job takes its price (its "
        "cost, its budget) from it, a file deployed with the app.",
        attribute="prices_file",
        parse=path,
        shown="(the shipped table)",
    ),
)

# The default of the setting that fills `Settings.<attribute>` (and the manifest's shard geometry):
# written once, in the table above.
DEFAULTS: Mapping[str, Any] = {s.attribute: s.default for s in SETTINGS_REFERENCE if s.attribute}


def markdown_table(settings: tuple[Setting, ...]) -> str:
    """The README's configuration table rows for `settings`."""
    lines = ["| setting | default | Azure | meaning |", "|---|---|---|---|"]
    for s in settings:
        lines.append(f"| `{s.name}` | {s.documented_default or '—'} | {'yes' if s.azure else ''} | {s.description} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class StorageSettings:
    """How to reach the storage account: identity-based URIs, or Azurite's connection string."""

    blob_url: str | None = None
    queue_url: str | None = None
    # Only ever Azurite's development account: see `is_identity_based`.
    connection_string: str | None = None
    # With use_env_settings on, azure-core's aiohttp transport looks the proxy (and ~/.netrc)
    # up in the environment on every request, which halves queue throughput (benchmarks/);
    # only pay for that when a proxy is actually configured.
    use_env_proxy: bool = False

    @property
    def is_identity_based(self) -> bool:
        return self.connection_string is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, prefix: str = STORAGE_CONNECTION) -> StorageSettings:
        """Resolve a connection the way the Functions host resolves a binding's `connection`."""
        env = os.environ if env is None else env
        proxy = any(env.get(name, "").strip() for name in PROXY_VARIABLES)
        conn = env.get(prefix, "").strip()
        if conn:
            return cls(connection_string=conn, use_env_proxy=proxy)
        blob = env.get(f"{prefix}__blobServiceUri", "").strip()
        queue = env.get(f"{prefix}__queueServiceUri", "").strip()
        account = env.get(f"{prefix}__accountName", "").strip()
        if account:
            blob = blob or f"https://{account}.blob.core.windows.net"
            queue = queue or f"https://{account}.queue.core.windows.net"
        if not (blob and queue):
            raise ConfigurationError(
                f"storage is not configured: set {prefix}__accountName (or {prefix}__blobServiceUri "
                f"and {prefix}__queueServiceUri) for an identity-based connection, or {prefix} to "
                "Azurite's connection string for local development"
            )
        return cls(blob_url=blob.rstrip("/"), queue_url=queue.rstrip("/"), use_env_proxy=proxy)


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    openai_endpoint: str
    openai_deployment: str = DEFAULTS["openai_deployment"]
    openai_api_version: str = DEFAULTS["openai_api_version"]
    openai_model_family: str = DEFAULTS["openai_model_family"]
    # Present only when a user opts out of keyless auth; clients.py warns loudly.
    openai_api_key: str | None = None
    openai_timeout_seconds: float = DEFAULTS["openai_timeout_seconds"]
    # Quick retries of connection errors and 5xx made by processing/adapters/azure_openai.py itself (the
    # client's own are off); 429s are never slept on in-process (the row is re-enqueued
    # with the server's delay).
    openai_max_retries: int = DEFAULTS["openai_max_retries"]
    # Per-instance pace for pipelines that set no rpm/tpm of their own (0: not paced).
    openai_rpm: int = DEFAULTS["openai_rpm"]
    openai_tpm: int = DEFAULTS["openai_tpm"]
    managed_identity: bool = False
    client_id: str | None = None
    pipelines_dir: Path = DEFAULTS["pipelines_dir"]
    shard_rows: int = DEFAULTS["shard_rows"]
    finalize_interval_seconds: float = DEFAULTS["finalize_interval_seconds"]
    ingest_concurrency: int = DEFAULTS["ingest_concurrency"]
    ingest_checkpoint_rows: int = DEFAULTS["ingest_checkpoint_rows"]
    max_row_bytes: int = DEFAULTS["max_row_bytes"]
    shard_max_blocks: int = DEFAULTS["shard_max_blocks"]
    stall_timeout_seconds: float = DEFAULTS["stall_timeout_seconds"]
    ingest_budget_seconds: float = DEFAULTS["ingest_budget_seconds"]
    prices_file: Path | None = None
    results_delimiter: str = DEFAULTS["results_delimiter"]
    results_bom: str = DEFAULTS["results_bom"]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, storage: bool = True) -> Settings:
        """`storage=False`: the model's settings only, storage left unset (`rowsmith estimate
        --sample` calls the model as the app does, and never storage)."""
        env = os.environ if env is None else env
        values = app_values(env)
        if not values["openai_endpoint"]:
            raise ConfigurationError(
                "AZURE_OPENAI_ENDPOINT is not set: give the Azure OpenAI account's endpoint, "
                "for example https://<name>.openai.azure.com"
            )
        # App Service and Flex Consumption set IDENTITY_ENDPOINT (and WEBSITE_INSTANCE_ID);
        # the local identity emulator sets IDENTITY_ENDPOINT too, so the same code path runs.
        managed = bool(env.get("IDENTITY_ENDPOINT") or env.get("WEBSITE_INSTANCE_ID"))
        connection = StorageSettings.from_env(env) if storage else StorageSettings()
        return cls(storage=connection, managed_identity=managed, **values)


def app_values(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every `Settings` value the environment gives, without requiring the app's connections:
    `rowsmith estimate` runs where no endpoint or storage is configured."""
    env = os.environ if env is None else env
    return {s.attribute: s.read(env) for s in SETTINGS_REFERENCE if s.attribute}


def _reference(name: str) -> Setting:
    return next(s for s in SETTINGS_REFERENCE if s.name == name)


@dataclass(frozen=True)
class TelemetrySettings:
    """What telemetry needs, readable where the app's other settings are missing or wrong: an app
    that cannot start its clients should still say so in its traces."""

    mode: str = "auto"  # ROWSMITH_TELEMETRY
    connection_string: str | None = None  # APPLICATIONINSIGHTS_CONNECTION_STRING
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT
    managed_identity: bool = False
    client_id: str | None = None

    @property
    def exporter(self) -> str:
        """The mode `auto` resolves to."""
        if self.mode != "auto":
            return self.mode
        if self.connection_string:
            return "azure"
        return "otlp" if self.otlp_endpoint else "none"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = os.environ if env is None else env
        return cls(
            mode=_reference("ROWSMITH_TELEMETRY").read(env),
            connection_string=_reference("APPLICATIONINSIGHTS_CONNECTION_STRING").read(env),
            otlp_endpoint=_reference("OTEL_EXPORTER_OTLP_ENDPOINT").read(env),
            managed_identity=bool(env.get("IDENTITY_ENDPOINT") or env.get("WEBSITE_INSTANCE_ID")),
            client_id=_reference("AZURE_CLIENT_ID").read(env),
        )


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once (Functions restarts the worker on a settings change)."""
    return Settings.from_env()
