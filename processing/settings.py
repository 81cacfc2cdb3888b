"""The one place that reads the environment.

Every other module receives a `Settings` (or a value from it). `get_settings()` reads
the environment once per process; tests build their own with `Settings.from_env({...})`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from processing.errors import ConfigurationError
from processing.names import STORAGE_CONNECTION

APP_ROOT = Path(__file__).resolve().parent.parent
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY")
DEFAULT_API_VERSION = "2024-10-21"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"setting {name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigurationError(f"setting {name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"setting {name}={value} must be at most {maximum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"setting {name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigurationError(f"setting {name}={value} must not be negative")
    return value


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
    openai_deployment: str
    openai_api_version: str = DEFAULT_API_VERSION
    # Present only when a user opts out of keyless auth; identity.py warns loudly.
    openai_api_key: str | None = None
    openai_timeout_seconds: float = 60.0
    # In-client retries of connection errors and 5xx; 429s are never slept on in-process
    # (the row is re-enqueued with the server's delay, see processing/process.py).
    openai_max_retries: int = 2
    # Per-instance pace for pipelines that set no rpm/tpm of their own (0: not paced).
    openai_rpm: int = 0
    openai_tpm: int = 0
    managed_identity: bool = False
    client_id: str | None = None
    pipelines_dir: Path = APP_ROOT / "pipelines"
    shard_rows: int = 10_000
    finalize_interval_seconds: float = 10.0
    ingest_concurrency: int = 32
    ingest_checkpoint_rows: int = 5_000
    max_row_bytes: int = 1_048_576
    shard_max_blocks: int = 45_000
    stall_timeout_seconds: float = 3600.0
    ingest_budget_seconds: float = 480.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip()
        if not endpoint:
            raise ConfigurationError(
                "AZURE_OPENAI_ENDPOINT is not set: give the Azure OpenAI account's endpoint, "
                "for example https://<name>.openai.azure.com"
            )
        # App Service and Flex Consumption set IDENTITY_ENDPOINT (and WEBSITE_INSTANCE_ID);
        # the local identity emulator sets IDENTITY_ENDPOINT too, so the same code path runs.
        managed = bool(env.get("IDENTITY_ENDPOINT") or env.get("WEBSITE_INSTANCE_ID"))
        return cls(
            storage=StorageSettings.from_env(env),
            openai_endpoint=endpoint.rstrip("/"),
            openai_deployment=env.get("AZURE_OPENAI_DEPLOYMENT", "").strip() or "gpt-4o-mini",
            openai_api_version=env.get("AZURE_OPENAI_API_VERSION", "").strip() or DEFAULT_API_VERSION,
            openai_api_key=env.get("AZURE_OPENAI_API_KEY", "").strip() or None,
            openai_timeout_seconds=_float(env, "AZURE_OPENAI_TIMEOUT_SECONDS", 60.0),
            openai_max_retries=_int(env, "AZURE_OPENAI_MAX_RETRIES", 2, minimum=0),
            openai_rpm=_int(env, "AZURE_OPENAI_RPM", 0, minimum=0),
            openai_tpm=_int(env, "AZURE_OPENAI_TPM", 0, minimum=0),
            managed_identity=managed,
            client_id=env.get("AZURE_CLIENT_ID", "").strip() or None,
            pipelines_dir=Path(env.get("ROWSMITH_PIPELINES_DIR", "").strip() or APP_ROOT / "pipelines"),
            # An append blob takes 50,000 blocks; duplicates and retries need headroom.
            shard_rows=_int(env, "ROWSMITH_SHARD_ROWS", 10_000, maximum=20_000),
            finalize_interval_seconds=_float(env, "ROWSMITH_FINALIZE_INTERVAL_SECONDS", 10.0),
            ingest_concurrency=_int(env, "ROWSMITH_INGEST_CONCURRENCY", 32),
            ingest_checkpoint_rows=_int(env, "ROWSMITH_INGEST_CHECKPOINT_ROWS", 5_000),
            max_row_bytes=_int(env, "ROWSMITH_MAX_ROW_BYTES", 1_048_576, minimum=1024),
            # An append blob holds 50,000 blocks; appenders that have not noticed a full shard
            # yet need the headroom before the hard limit.
            shard_max_blocks=_int(env, "ROWSMITH_SHARD_MAX_BLOCKS", 45_000, maximum=50_000),
            stall_timeout_seconds=_float(env, "ROWSMITH_STALL_TIMEOUT_SECONDS", 3600.0),
            # functionTimeout is 10 minutes; ingest hands over to a fresh invocation well before.
            ingest_budget_seconds=_float(env, "ROWSMITH_INGEST_BUDGET_SECONDS", 480.0),
        )


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once (Functions restarts the worker on a settings change)."""
    return Settings.from_env()


@dataclass(frozen=True)
class SettingDoc:
    name: str
    default: str
    description: str
    azure: bool = False  # set by infra/ on the Function App


# The configuration reference: README's table and tests/infra's consistency check read
# this, and a unit test proves `Settings.from_env` reads exactly these names.
SETTINGS_REFERENCE: tuple[SettingDoc, ...] = (
    SettingDoc(
        f"{STORAGE_CONNECTION}__blobServiceUri",
        "",
        "Blob endpoint of the storage account, for the identity-based connection.",
        azure=True,
    ),
    SettingDoc(
        f"{STORAGE_CONNECTION}__queueServiceUri",
        "",
        "Queue endpoint of the storage account, for the identity-based connection.",
        azure=True,
    ),
    SettingDoc(
        f"{STORAGE_CONNECTION}__accountName",
        "",
        "Alternative to the two URIs: the storage account name (public cloud endpoints).",
    ),
    SettingDoc(
        STORAGE_CONNECTION,
        "",
        "Local development only: Azurite's connection string. Never set in Azure (it would carry a key).",
    ),
    SettingDoc(
        "AZURE_OPENAI_ENDPOINT",
        "(required)",
        "Azure OpenAI endpoint, https://<name>.openai.azure.com.",
        azure=True,
    ),
    SettingDoc(
        "AZURE_OPENAI_DEPLOYMENT",
        "gpt-4o-mini",
        "Model deployment used by pipelines that do not name one.",
        azure=True,
    ),
    SettingDoc("AZURE_OPENAI_API_VERSION", DEFAULT_API_VERSION, "Azure OpenAI data-plane API version.", azure=True),
    SettingDoc(
        "AZURE_OPENAI_API_KEY",
        "",
        "Opt-out of keyless auth (logged as a warning). Leave unset; the deployment disables keys anyway.",
    ),
    SettingDoc("AZURE_OPENAI_TIMEOUT_SECONDS", "60", "Timeout of one model call."),
    SettingDoc(
        "AZURE_OPENAI_MAX_RETRIES",
        "2",
        "Quick in-call retries of connection errors, timeouts and 5xx (429s are re-queued, never slept on).",
    ),
    SettingDoc(
        "AZURE_OPENAI_RPM",
        "0",
        "Requests per minute one instance may send, for pipelines without `rpm` (0: not paced; "
        "429s still slow it down). The Bicep sets the deployment's whole quota.",
        azure=True,
    ),
    SettingDoc(
        "AZURE_OPENAI_TPM",
        "0",
        "Tokens per minute (prompt + max_tokens) one instance may send, for pipelines without `tpm`.",
        azure=True,
    ),
    SettingDoc(
        "IDENTITY_ENDPOINT",
        "(set by the platform)",
        "Managed identity endpoint; when present the app uses ManagedIdentityCredential.",
    ),
    SettingDoc("WEBSITE_INSTANCE_ID", "(set by the platform)", "Marks a run inside Azure Functions."),
    SettingDoc(
        "HTTPS_PROXY",
        "",
        "Standard proxy variable (also HTTP_PROXY). Storage clients consult the environment's proxy settings "
        "only when one of them is set.",
    ),
    SettingDoc("HTTP_PROXY", "", "See HTTPS_PROXY."),
    SettingDoc("AZURE_CLIENT_ID", "", "Client id of a user-assigned identity; unset means system-assigned."),
    SettingDoc("ROWSMITH_PIPELINES_DIR", "pipelines/", "Folder of pipeline files (<name>.toml)."),
    SettingDoc(
        "ROWSMITH_SHARD_ROWS",
        "10000",
        "Rows per results shard (append blob), at most 20000: keeps shards under 50,000 blocks.",
    ),
    SettingDoc(
        "ROWSMITH_FINALIZE_INTERVAL_SECONDS",
        "10",
        "Delay between a job's completion checks; also how often each instance re-reads the state of the jobs "
        "it is processing.",
    ),
    SettingDoc("ROWSMITH_INGEST_CONCURRENCY", "32", "Queue sends in flight while a file is ingested."),
    SettingDoc(
        "ROWSMITH_INGEST_CHECKPOINT_ROWS",
        "5000",
        "Rows between ingest checkpoints (resume point after a crash).",
    ),
    SettingDoc("ROWSMITH_MAX_ROW_BYTES", "1048576", "Hard limit of one row's size; larger rows become row errors."),
    SettingDoc(
        "ROWSMITH_SHARD_MAX_BLOCKS",
        "45000",
        "Blocks after which a results shard (append blob, limit 50,000) continues in a new blob.",
    ),
    SettingDoc(
        "ROWSMITH_STALL_TIMEOUT_SECONDS",
        "3600",
        "A job with no new result for this long is completed, its missing rows marked `missing`.",
    ),
    SettingDoc(
        "ROWSMITH_INGEST_BUDGET_SECONDS",
        "480",
        "Time one ingest invocation reads a file before handing over to a fresh one (functionTimeout is 10 min).",
    ),
)


@dataclass(frozen=True)
class CliSettings:
    """What the `rowsmith` command reads from the environment (azd writes these names)."""

    storage_account: str | None
    blob_url: str | None
    queue_url: str | None
    state_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CliSettings:
        env = os.environ if env is None else env
        return cls(
            storage_account=env.get("AZURE_STORAGE_ACCOUNT", "").strip() or None,
            blob_url=env.get("AZURE_STORAGE_BLOB_ENDPOINT", "").strip() or None,
            queue_url=env.get("AZURE_STORAGE_QUEUE_ENDPOINT", "").strip() or None,
            state_dir=Path(env.get("ROWSMITH_STATE_DIR", "").strip() or ".rowsmith"),
        )


CLI_SETTINGS_REFERENCE: tuple[SettingDoc, ...] = (
    SettingDoc("AZURE_STORAGE_ACCOUNT", "", "`rowsmith` against Azure: the storage account (azd sets it)."),
    SettingDoc("AZURE_STORAGE_BLOB_ENDPOINT", "", "`rowsmith` against Azure: blob endpoint, if not the public cloud."),
    SettingDoc(
        "AZURE_STORAGE_QUEUE_ENDPOINT", "", "`rowsmith` against Azure: queue endpoint, if not the public cloud."
    ),
    SettingDoc("ROWSMITH_STATE_DIR", ".rowsmith", "Where `rowsmith local up` keeps the local stack's state and logs."),
)
