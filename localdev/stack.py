"""The local stack: Azurite, the identity endpoint, the Azure OpenAI emulator and a local Event Grid.

`start_stack(workdir)` runs them as child processes on free loopback ports, creates
the app's containers and queues, writes `workdir/stack.json` (pids, ports, app settings)
and returns a `Stack`. `Stack.app_settings()` is the environment the Function App needs
to run against it; `Stack.load(path).stop()` stops a stack another process started
(`rowsmith local up` starts one detached, `rowsmith local down` stops it). The Event
Grid (localdev/event_grid) polls Azurite's `input` container and puts the BlobCreated
event of each new or overwritten .csv on `uploads`, as the Bicep's subscription does, so
a file dropped with any tool starts its job; what it has seen is kept in
`workdir/event-grid.json`.

Two ways for the app to reach storage (`storage_auth`):

- "key" (the default): Azurite over HTTP, and the app gets Azurite's development
  connection string (`AzureWebJobsStorage`, with the published development account key).
- "oauth": Azurite over HTTPS with `--oauth basic`, a certificate from a throwaway CA
  generated in `workdir/tls`, and the app gets what it gets in Azure and nothing more:
  `AzureWebJobsStorage__blobServiceUri`/`__queueServiceUri`/`__tableServiceUri`,
  `AzureWebJobsStorage__credential=managedidentity` and the identity endpoint, so every
  storage call carries a bearer token from the managed identity. To trust the CA without
  any change in the app, the settings add `SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE`
  pointing at `workdir/tls/ca-bundle.pem` (the CA plus certifi's public roots), which
  Python's ssl module (and so aiohttp, the SDKs' async transport) and requests read.
  Creating the containers and queues still uses the development account over HTTPS:
  Azurite keeps accepting shared keys in this mode, which is why the proof of keylessness
  is that the app is given no key, not that Azurite refuses one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from subprocess import Popen
from typing import Any

from localdev import azurite as azurite_mod
from localdev import control, identity_endpoint
from localdev.event_grid import main as event_grid
from localdev.openai_emulator import cli as emulator_cli
from localdev.openai_emulator import server as emulator_server
from localdev.openai_emulator.config import DEFAULT_DEPLOYMENTS, EmulatorConfig
from localdev.ports import (
    LOOPBACK,
    free_ports,
    pid_matches,
    python_module_command,
    spawn,
    terminate_pid,
    wait_for_port,
)
from localdev.private_files import private_dir, write_private
from processing.core.layout import ALL_CONTAINERS, ALL_QUEUES, STORAGE_CONNECTION
from processing.core.settings import DEFAULT_API_VERSION

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "stack.json"
STATE_VERSION = 1
# Children are stopped in this order: the emulators first, storage last.
STOP_ORDER = ("eventgrid", "emulator", "identity", "azurite")
# How the app authenticates to storage (see the module docstring).
STORAGE_AUTH_KEY = "key"
STORAGE_AUTH_OAUTH = "oauth"
STORAGE_AUTH_MODES = (STORAGE_AUTH_KEY, STORAGE_AUTH_OAUTH)
TLS_DIR = "tls"  # under the workdir: the OAuth mode's CA and Azurite's certificate
CA_BUNDLE = "ca-bundle.pem"  # the CA plus public roots: what SSL_CERT_FILE points at
# The Functions host's setting that makes an identity-based connection use the managed identity.
MANAGED_IDENTITY_CREDENTIAL = "managedidentity"


class StackAlreadyRunningError(RuntimeError):
    pass


@dataclass
class StackPorts:
    """Ports of the stack's services; None means a free one is picked at start."""

    blob: int | None = None
    queue: int | None = None
    table: int | None = None
    identity: int | None = None
    emulator: int | None = None

    @classmethod
    def of(cls, ports: StackPorts | Mapping[str, int] | None) -> StackPorts:
        if ports is None:
            return cls()
        if isinstance(ports, StackPorts):
            return cls(**{f.name: getattr(ports, f.name) for f in fields(cls)})
        unknown = set(ports) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown stack ports: {', '.join(sorted(unknown))}")
        return cls(**dict(ports))

    def filled(self) -> StackPorts:
        names = [f.name for f in fields(self)]
        spare = iter(free_ports(len(names)))
        return StackPorts(**{n: getattr(self, n) or next(spare) for n in names})

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Service:
    """One child process of the stack."""

    name: str
    pid: int
    marker: str  # what its command line must contain before we signal it (pid reuse guard)
    log: Path
    process: Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_matches(self.pid, self.marker)

    def stop(self, timeout: float = 10.0) -> None:
        terminate_pid(self.pid, self.marker, timeout)
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.wait(timeout=5)

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "marker": self.marker, "log": str(self.log)}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Service:
        return cls(name, int(data["pid"]), str(data["marker"]), Path(data["log"]))


@dataclass
class Stack:
    workdir: Path
    ports: StackPorts
    settings: dict[str, str]
    services: dict[str, Service]
    detached: bool = False
    in_memory: bool = True
    deployments: list[str] = field(default_factory=lambda: list(DEFAULT_DEPLOYMENTS))
    started_at: float = field(default_factory=time.time)
    storage_auth: str = STORAGE_AUTH_KEY
    # OAuth mode: the throwaway CA that signed Azurite's certificate (clients trust it).
    ca_file: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    # --- what callers use ---------------------------------------------------------------

    def app_settings(self) -> dict[str, str]:
        """The Function App's environment for this stack (a copy: change it freely)."""
        return dict(self.settings)

    @property
    def emulator_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.emulator}"

    @property
    def identity_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.identity}"

    @property
    def jwks_url(self) -> str:
        return self.identity_url + identity_endpoint.JWKS_PATH

    @property
    def oauth(self) -> bool:
        """Whether Azurite takes bearer tokens (HTTPS) and the app gets no key."""
        return self.storage_auth == STORAGE_AUTH_OAUTH

    @property
    def connection_string(self) -> str:
        """Azurite's development account (shared key), for tools and tests.

        In "key" mode it is the app's own `AzureWebJobsStorage`; in "oauth" mode the app
        never gets it (its endpoints are HTTPS: trust `ca_file`, see `storage_client_options`).
        """
        conn = self.settings.get(STORAGE_CONNECTION)
        if conn:
            return conn
        assert self.ports.blob and self.ports.queue
        return azurite_mod.connection_string(self.ports.blob, self.ports.queue, self.ports.table, https=self.oauth)

    @property
    def identity_header(self) -> str:
        return self.settings["IDENTITY_HEADER"]

    @property
    def blob_url(self) -> str:
        return azurite_mod.account_url(self.ports.blob, https=self.oauth)

    @property
    def queue_url(self) -> str:
        return azurite_mod.account_url(self.ports.queue, https=self.oauth)

    @property
    def table_url(self) -> str:
        return azurite_mod.account_url(self.ports.table, https=self.oauth)

    def storage_client_options(self) -> dict[str, Any]:
        """Keyword arguments for an azure-core storage client of this stack (the CA to trust)."""
        return azurite_mod.client_options(self.ca_file)

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    def running(self) -> dict[str, bool]:
        return {name: service.alive() for name, service in self.services.items()}

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every child (safe to call twice) and remove the state and pid files."""
        for name in STOP_ORDER:
            service = self.services.get(name)
            if service is not None:
                service.stop(timeout)
        if not self._stopped:
            self._remove_own_files()
        self._stopped = True

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state file -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "workdir": str(self.workdir),
            "started_at": self.started_at,
            "detached": self.detached,
            "in_memory": self.in_memory,
            "deployments": list(self.deployments),
            "storage_auth": self.storage_auth,
            "ca_file": str(self.ca_file) if self.ca_file else None,
            "ports": self.ports.as_dict(),
            "processes": {name: s.to_dict() for name, s in self.services.items()},
            "urls": {
                "blob": self.blob_url,
                "queue": self.queue_url,
                "table": self.table_url,
                "identity": self.identity_url,
                "jwks": self.jwks_url,
                "emulator": self.emulator_url,
            },
            # rowsmith_cli.target reads app_settings.AzureWebJobsStorage from here (key mode).
            "app_settings": self.app_settings(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stack:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown stack state version {data.get('version')!r}")
        return cls(
            workdir=Path(data["workdir"]),
            ports=StackPorts.of(data["ports"]),
            settings=dict(data["app_settings"]),
            services={name: Service.from_dict(name, s) for name, s in data["processes"].items()},
            detached=bool(data.get("detached", False)),
            in_memory=bool(data.get("in_memory", True)),
            deployments=list(data.get("deployments", DEFAULT_DEPLOYMENTS)),
            started_at=float(data.get("started_at", 0.0)),
            storage_auth=_checked_storage_auth(str(data.get("storage_auth", STORAGE_AUTH_KEY))),
            ca_file=Path(data["ca_file"]) if data.get("ca_file") else None,
        )

    def save(self, path: Path | None = None) -> Path:
        path = path or self.state_path
        write_private(path, json.dumps(self.to_dict(), indent=2))  # 0600, atomic: never half a file
        for name, service in self.services.items():
            write_private(self.workdir / f"{name}.pid", f"{service.pid}\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Stack:
        return cls.from_dict(json.loads(path.read_text()))

    def _remove_own_files(self) -> None:
        # Only files that still describe this stack: a newer stack may have replaced them.
        with contextlib.suppress(OSError, ValueError, KeyError):
            if Stack.load(self.state_path).to_dict()["processes"] == self.to_dict()["processes"]:
                self.state_path.unlink()
        for name, service in self.services.items():
            pid_file = self.workdir / f"{name}.pid"
            with contextlib.suppress(OSError, ValueError):
                if int(pid_file.read_text().strip()) == service.pid:
                    pid_file.unlink()


def running_stack(workdir: Path) -> Stack | None:
    """The stack recorded in `workdir`, if any of its processes still runs."""
    path = workdir / STATE_FILE
    try:
        stack = Stack.load(path)
    except (OSError, ValueError, KeyError):
        return None
    return stack if any(stack.running().values()) else None


def start_stack(
    workdir: Path,
    *,
    ports: StackPorts | Mapping[str, int] | None = None,
    in_memory: bool = True,
    detached: bool = False,
    deployments: list[str] | tuple[str, ...] = DEFAULT_DEPLOYMENTS,
    models: Mapping[str, Mapping[str, Any]] | None = None,
    rpm: int = 0,
    tpm: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    fault_rates: Mapping[str, float] | None = None,
    seed: int | None = None,
    debug: bool = False,
    timeout: float = 60.0,
    storage_auth: str = STORAGE_AUTH_KEY,
    azurite_queue_gc_ms: int | None = None,
    event_grid_interval: float | None = event_grid.DEFAULT_INTERVAL_SECONDS,
) -> Stack:
    """Start Azurite, the identity endpoint and the emulator; return once all answer.

    `detached`: the children get their own session and survive this process (for
    `rowsmith local up`); stop them later with `Stack.load(workdir / "stack.json").stop()`.
    `in_memory=False` keeps Azurite's data in `workdir/azurite-data` across restarts.
    `storage_auth="oauth"`: Azurite over HTTPS taking bearer tokens, and app settings with
    no key (see the module docstring); "key" (the default) gives the app Azurite's
    development connection string. `azurite_queue_gc_ms`: see `azurite.start_azurite`.
    `models`: the emulator's model profiles (localdev.openai_emulator.models); the first
    deployment is the app's AZURE_OPENAI_DEPLOYMENT.
    `event_grid_interval`: seconds between the local Event Grid's polls of `input`
    (localdev/event_grid); None runs no Event Grid (only whoever sends events raises them).
    """
    storage_auth = _checked_storage_auth(storage_auth)
    workdir = private_dir(workdir.resolve())  # 0700: it holds the identity header (stack.json)
    existing = running_stack(workdir)
    if existing is not None:
        raise StackAlreadyRunningError(
            f"a local stack is already running from {existing.state_path}; stop it first (`rowsmith local down`)"
        )
    # Validated before anything starts: a bad fault rate should not leave Azurite behind.
    config = EmulatorConfig(
        deployments=list(deployments),
        models={name: dict(profile) for name, profile in (models or {}).items()},
        rpm=rpm,
        tpm=tpm,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        fault_rates=dict(fault_rates or {}),
        seed=seed,
    )
    config.validate()
    picked = StackPorts.of(ports).filled()
    header = secrets.token_urlsafe(32)
    oauth: azurite_mod.OAuthOptions | None = None
    ca_bundle: Path | None = None
    if storage_auth == STORAGE_AUTH_OAUTH:
        # A fresh throwaway CA per start; its private key is never written.
        oauth = azurite_mod.OAuthOptions.generate(workdir / TLS_DIR)
        assert oauth.ca is not None
        ca_bundle = write_ca_bundle(oauth.ca, workdir / TLS_DIR / CA_BUNDLE)
    services: dict[str, Service] = {}
    try:
        # The Python servers start first and Azurite's start-up (the slowest) overlaps theirs.
        services["identity"] = _spawn_identity(workdir, picked.identity, header, detached)
        services["emulator"] = _spawn_emulator(workdir, picked, config, detached, header)
        services["azurite"] = _azurite_service(
            azurite_mod.start_azurite(
                workdir,
                blob_port=picked.blob,
                queue_port=picked.queue,
                table_port=picked.table,
                in_memory=in_memory,
                debug=debug,
                detached=detached,
                timeout=timeout,
                oauth=oauth,
                queue_gc_interval_ms=azurite_queue_gc_ms,
            )
        )
        for name in ("identity", "emulator"):
            _wait_ready(services[name], getattr(picked, name), timeout)
        # Set-up with the development account (over HTTPS in OAuth mode: Azurite still takes
        # shared keys there). The app itself never gets this string in OAuth mode.
        conn = azurite_mod.connection_string(picked.blob, picked.queue, picked.table, https=oauth is not None)
        azurite_mod.ensure_resources(conn, ALL_CONTAINERS, ALL_QUEUES, ca_file=oauth.ca if oauth is not None else None)
        if event_grid_interval is not None:
            services["eventgrid"] = _spawn_event_grid(
                workdir, picked, event_grid_interval, oauth.ca if oauth is not None else None, detached
            )
    except BaseException:
        for name in STOP_ORDER:
            if name in services:
                services[name].stop()
        raise
    stack = Stack(
        workdir=workdir,
        ports=picked,
        settings=stack_app_settings(
            picked, header, config.deployments[0], storage_auth=storage_auth, ca_bundle=ca_bundle
        ),
        services=services,
        detached=detached,
        in_memory=in_memory,
        deployments=config.deployments,
        storage_auth=storage_auth,
        ca_file=oauth.ca if oauth is not None else None,
    )
    stack.save()
    return stack


def stack_app_settings(
    ports: StackPorts,
    header: str,
    deployment: str,
    *,
    storage_auth: str = STORAGE_AUTH_KEY,
    ca_bundle: Path | None = None,
) -> dict[str, str]:
    """The Function App's settings for a stack on these ports (what `Stack.app_settings()` returns).

    "key": Azurite's development connection string. "oauth": the identity-based connection
    exactly as the Bicep sets it in Azure (service URIs + `__credential=managedidentity`), no
    key and no connection string, plus the CA bundle the app's TLS must trust (`ca_bundle`).
    """
    storage_auth = _checked_storage_auth(storage_auth)
    assert ports.blob and ports.queue and ports.table and ports.identity and ports.emulator
    storage: dict[str, str]
    if storage_auth == STORAGE_AUTH_OAUTH:
        if ca_bundle is None:
            raise ValueError("OAuth mode needs the CA bundle that Azurite's certificate chains to")
        storage = {
            f"{STORAGE_CONNECTION}__blobServiceUri": azurite_mod.account_url(ports.blob, https=True),
            f"{STORAGE_CONNECTION}__queueServiceUri": azurite_mod.account_url(ports.queue, https=True),
            f"{STORAGE_CONNECTION}__tableServiceUri": azurite_mod.account_url(ports.table, https=True),
            f"{STORAGE_CONNECTION}__credential": MANAGED_IDENTITY_CREDENTIAL,
            # Read by OpenSSL through Python's ssl module (aiohttp, httpx) and by requests: the
            # app trusts the local CA with no code of its own.
            "SSL_CERT_FILE": str(ca_bundle),
            "REQUESTS_CA_BUNDLE": str(ca_bundle),
        }
    else:
        storage = {STORAGE_CONNECTION: azurite_mod.connection_string(ports.blob, ports.queue, ports.table)}
    return {
        **storage,
        **identity_endpoint.endpoint_settings(f"http://{LOOPBACK}:{ports.identity}", header),
        "AZURE_OPENAI_ENDPOINT": f"http://{LOOPBACK}:{ports.emulator}",
        "AZURE_OPENAI_DEPLOYMENT": deployment,
        "AZURE_OPENAI_API_VERSION": DEFAULT_API_VERSION,
        "FUNCTIONS_WORKER_RUNTIME": "python",
    }


def write_ca_bundle(ca_file: Path, path: Path) -> Path:
    """`ca_file` followed by certifi's public roots (if installed), for SSL_CERT_FILE.

    SSL_CERT_FILE replaces the default CA file, so the bundle keeps the usual public roots:
    the local CA is added trust, and nothing else the process does over TLS breaks.
    """
    parts = [ca_file.read_text()]
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with requests, an azure-core dependency
        pass
    else:
        parts.append(Path(certifi.where()).read_text())
    return write_private(path, "\n".join(p.rstrip("\n") for p in parts) + "\n")


def _checked_storage_auth(value: str) -> str:
    if value not in STORAGE_AUTH_MODES:
        raise ValueError(f"storage_auth must be one of {', '.join(STORAGE_AUTH_MODES)}, not {value!r}")
    return value


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The children run `-m localdev...` from the workdir: make the checkout importable
    # whether or not the package is pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def _spawn_identity(workdir: Path, port: int | None, header: str, detached: bool) -> Service:
    command = python_module_command("localdev.identity_endpoint", "--port", str(port))
    log = workdir / "identity.log"
    # The header travels in the environment, not argv, so `ps` does not show it.
    env = _child_env({"IDENTITY_HEADER": header})
    process = spawn(command, log_path=log, cwd=workdir, env=env, detached=detached)
    return Service("identity", process.pid, identity_endpoint.PROCESS_MARKER, log, process)


def _spawn_emulator(workdir: Path, ports: StackPorts, config: EmulatorConfig, detached: bool, header: str) -> Service:
    jwks_url = f"http://{LOOPBACK}:{ports.identity}{identity_endpoint.JWKS_PATH}"
    args = ["--port", str(ports.emulator), "--jwks-url", jwks_url, *emulator_cli.config_to_args(config)]
    log = workdir / "emulator.log"
    process = spawn(
        python_module_command("localdev.openai_emulator", *args),
        log_path=log,
        cwd=workdir,
        env=_child_env({"IDENTITY_HEADER": header}),  # its control API requires the stack's header
        detached=detached,
    )
    return Service("emulator", process.pid, emulator_cli.PROCESS_MARKER, log, process)


def _spawn_event_grid(
    workdir: Path, ports: StackPorts, interval: float, ca_file: Path | None, detached: bool
) -> Service:
    assert ports.blob and ports.queue
    command = event_grid.command(
        blob_port=ports.blob,
        queue_port=ports.queue,
        state_file=workdir / event_grid.STATE_FILE,
        interval=interval,
        ca_file=ca_file,
    )
    log = workdir / "event-grid.log"
    process = spawn(command, log_path=log, cwd=workdir, env=_child_env(), detached=detached)
    return Service("eventgrid", process.pid, event_grid.PROCESS_MARKER, log, process)


def _azurite_service(instance: azurite_mod.Azurite) -> Service:
    """A started Azurite, as one of the stack's services."""
    assert instance.log_path is not None
    return Service("azurite", instance.pid, azurite_mod.PROCESS_MARKER, instance.log_path, instance.process)


def _wait_ready(service: Service, port: int | None, timeout: float) -> None:
    assert port is not None
    wait_for_port(LOOPBACK, port, timeout, process=service.process, name=service.name, log_path=service.log)
    # A listening port could belong to another process that grabbed the free port first:
    # ask the health route, and make sure our child is still the one alive.
    prefix = identity_endpoint.CONTROL_PREFIX if service.name == "identity" else emulator_server.CONTROL_PREFIX
    path = prefix + control.HEALTH
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    finally:
        connection.close()
    if status != 200 or not service.alive():
        raise RuntimeError(f"{service.name} on port {port} is not ours or not healthy (see {service.log})")


def write_local_settings(path: Path, settings: Mapping[str, str]) -> Path:
    """Write a local.settings.json for `func start`, 0600 (git-ignored: it holds IDENTITY_HEADER and, in
    "key" mode, Azurite's key)."""
    document = {"IsEncrypted": False, "Values": dict(settings)}
    return write_private(path, json.dumps(document, indent=2) + "\n")
