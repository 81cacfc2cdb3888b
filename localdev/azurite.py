"""Azurite (the storage emulator from npm) as a child process on loopback ports.

Flags we always pass, and why:
- `--skipApiVersionCheck`: the current storage SDKs send an API version newer than the
  one Azurite knows, and Azurite would refuse every request.
- `--disableTelemetry`: Azurite otherwise sends usage telemetry to Application Insights;
  the local stack must not talk to anything but 127.0.0.1.
- `--loose` (default on): ignore headers and parameters Azurite does not implement instead
  of failing the request.
- `--inMemoryPersistence` or `--location DIR`, never both (Azurite refuses the pair).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from localdev.ports import LOOPBACK, free_ports, pid_alive, spawn, terminate_pid, wait_for_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account. These are the constants Microsoft publishes
# for Azurite and the old storage emulator (the same on every machine, not a secret); this
# is the only key in the repository and it only ever opens Azurite.
DEV_ACCOUNT_NAME = "devstoreaccount1"
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# What `terminate_pid` looks for in the process's command line before signalling it.
PROCESS_MARKER = "azurite"


class AzuriteNotFoundError(RuntimeError):
    """Azurite is not installed where we look."""


def find_azurite(root: Path = REPO_ROOT) -> Path:
    """The Azurite launcher: the repo's pinned npm install first, then one on PATH."""
    local = root / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return local
    on_path = shutil.which("azurite")
    if on_path:
        return Path(on_path)
    raise AzuriteNotFoundError(
        f"Azurite not found in {local.parent} or on PATH: run `npm ci` in {root} (package.json pins it)"
    )


def connection_string(
    blob_port: int, queue_port: int, table_port: int | None = None, *, host: str = LOOPBACK, https: bool = False
) -> str:
    """The development account's connection string for Azurite on these ports."""
    scheme = "https" if https else "http"
    parts = [
        f"DefaultEndpointsProtocol={scheme}",
        f"AccountName={DEV_ACCOUNT_NAME}",
        f"AccountKey={DEV_ACCOUNT_KEY}",
        f"BlobEndpoint={scheme}://{host}:{blob_port}/{DEV_ACCOUNT_NAME}",
        f"QueueEndpoint={scheme}://{host}:{queue_port}/{DEV_ACCOUNT_NAME}",
    ]
    if table_port:
        parts.append(f"TableEndpoint={scheme}://{host}:{table_port}/{DEV_ACCOUNT_NAME}")
    return ";".join(parts) + ";"


@dataclass
class OAuthOptions:
    """Azurite's bearer-token mode (`--oauth basic`): HTTPS only, so it needs a certificate.

    Azurite decodes tokens without checking the signature but requires nbf/exp/iat, an
    issuer starting https://sts.windows.net/ and the storage audience. Not used yet.
    """

    cert: Path
    key: Path
    level: str = "basic"


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    pid: int
    host: str = LOOPBACK
    https: bool = False
    location: Path | None = None
    log_path: Path | None = None
    process: Popen[bytes] | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    @property
    def blob_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.blob_port}/{DEV_ACCOUNT_NAME}"

    @property
    def queue_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.queue_port}/{DEV_ACCOUNT_NAME}"

    @property
    def table_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.table_port}/{DEV_ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port, host=self.host, https=self.https)

    def is_running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Azurite (safe to call twice; in-memory data is gone afterwards)."""
        terminate_pid(self.pid, PROCESS_MARKER, timeout)
        if self.process is not None:
            self.process.wait(timeout=5)


def azurite_command(
    executable: Path,
    *,
    blob_port: int,
    queue_port: int,
    table_port: int,
    host: str = LOOPBACK,
    location: Path | None = None,
    in_memory: bool = True,
    loose: bool = True,
    silent: bool = True,
    debug_log: Path | None = None,
    oauth: OAuthOptions | None = None,
) -> list[str]:
    if in_memory and location is not None:
        raise ValueError("Azurite takes --inMemoryPersistence or --location, not both")
    if not in_memory and location is None:
        raise ValueError("a persistent Azurite needs a location (a folder for its data)")
    command = [
        str(executable),
        "--blobHost", host, "--blobPort", str(blob_port),
        "--queueHost", host, "--queuePort", str(queue_port),
        "--tableHost", host, "--tablePort", str(table_port),
        "--skipApiVersionCheck",
        "--disableTelemetry",
    ]  # fmt: skip
    command += ["--inMemoryPersistence"] if in_memory else ["--location", str(location)]
    if loose:
        command.append("--loose")
    if silent and debug_log is None:
        command.append("--silent")
    if debug_log is not None:
        command += ["--debug", str(debug_log)]
    if oauth is not None:
        command += ["--oauth", oauth.level, "--cert", str(oauth.cert), "--key", str(oauth.key)]
    return command


def start_azurite(
    workdir: Path,
    *,
    blob_port: int | None = None,
    queue_port: int | None = None,
    table_port: int | None = None,
    in_memory: bool = True,
    location: Path | None = None,
    loose: bool = True,
    debug: bool = False,
    oauth: OAuthOptions | None = None,
    detached: bool = False,
    timeout: float = 30.0,
    executable: Path | None = None,
) -> Azurite:
    """Start Azurite with blob, queue and table on loopback ports (free ones unless given).

    Logs go to `workdir/azurite.log` (with `debug`, Azurite's request log to
    `workdir/azurite-debug.log`). A persistent instance keeps its data in `location`,
    by default `workdir/azurite-data`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    picked = iter(free_ports(3))
    blob_port = blob_port or next(picked)
    queue_port = queue_port or next(picked)
    table_port = table_port or next(picked)
    if not in_memory:
        location = location or workdir / "azurite-data"
        location.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "azurite.log"
    command = azurite_command(
        executable or find_azurite(),
        blob_port=blob_port,
        queue_port=queue_port,
        table_port=table_port,
        location=None if in_memory else location,
        in_memory=in_memory,
        loose=loose,
        silent=not debug,
        debug_log=workdir / "azurite-debug.log" if debug else None,
        oauth=oauth,
    )
    # cwd=workdir: whatever Azurite writes beside itself stays out of the checkout.
    process = spawn(command, log_path=log_path, cwd=workdir, detached=detached)
    azurite = Azurite(
        blob_port,
        queue_port,
        table_port,
        process.pid,
        https=oauth is not None,
        location=None if in_memory else location,
        log_path=log_path,
        process=process,
    )
    try:
        for port, name in ((blob_port, "blob"), (queue_port, "queue"), (table_port, "table")):
            wait_for_port(LOOPBACK, port, timeout, process=process, name=f"Azurite {name}", log_path=log_path)
    except BaseException:
        azurite.stop()
        raise
    return azurite


def ensure_resources(connection_string: str, containers: Iterable[str] = (), queues: Iterable[str] = ()) -> None:
    """Create containers and queues if missing (idempotent), with the real storage SDK."""
    with BlobServiceClient.from_connection_string(connection_string) as blobs:
        for name in containers:
            with contextlib.suppress(ResourceExistsError):
                blobs.create_container(name)
    with QueueServiceClient.from_connection_string(connection_string) as queue_service:
        for name in queues:
            # Azurite answers 409 for an existing queue; Azure answers 204 if its metadata matches.
            with contextlib.suppress(ResourceExistsError):
                queue_service.create_queue(name)
