"""Azurite (the storage emulator from npm) as a child process on loopback ports.

Flags we always pass, and why:
- `--skipApiVersionCheck`: the current storage SDKs send an API version newer than the
  one Azurite knows, and Azurite would refuse every request.
- `--disableTelemetry`: Azurite otherwise sends usage telemetry to Application Insights;
  the local stack must not talk to anything but 127.0.0.1.
- `--loose` (default on): ignore headers and parameters Azurite does not implement instead
  of failing the request.
- `--inMemoryPersistence` or `--location DIR`, never both (Azurite refuses the pair).

OAuth mode (`--oauth basic`, see `OAuthOptions`): Azurite then also accepts bearer tokens,
over HTTPS only, so it needs a certificate; `make_dev_certificates` makes a throwaway CA
and a certificate for 127.0.0.1/localhost signed by it. What Azurite 3.x checks in a token
(node_modules/azurite/dist/src/{blob,queue}/authentication/*TokenAuthenticator.js): the
signature is NOT verified; `nbf`, `exp` and `iat` must be present, with nbf <= now <= exp;
`iss` must start with https://sts.windows.net/ (or another cloud's STS prefix); `aud` must
be https://storage.azure.com (trailing slash optional), the storage app id
e406a681-f3d4-42a8-90b6-c2b029497af1, or https://<account>.blob|queue.core.windows.net.
A bearer token over http is refused (the SDKs refuse to send one anyway). Shared key and
SAS stay accepted in this mode (the shared-key authenticator runs first), and a request
with no credential at all is refused (403 AuthorizationFailure).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localdev.ports import LOOPBACK, free_ports, pid_alive, spawn, terminate_pid, wait_for_port
from localdev.private_files import private_dir, write_private

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
    parts = [
        f"DefaultEndpointsProtocol={'https' if https else 'http'}",
        f"AccountName={DEV_ACCOUNT_NAME}",
        f"AccountKey={DEV_ACCOUNT_KEY}",
        f"BlobEndpoint={account_url(blob_port, https=https, host=host)}",
        f"QueueEndpoint={account_url(queue_port, https=https, host=host)}",
    ]
    if table_port:
        parts.append(f"TableEndpoint={account_url(table_port, https=https, host=host)}")
    return ";".join(parts) + ";"


def account_url(port: int | None, *, https: bool = False, host: str = LOOPBACK) -> str:
    """The development account's endpoint on one of Azurite's ports (blob, queue or table)."""
    return f"{'https' if https else 'http'}://{host}:{port}/{DEV_ACCOUNT_NAME}"


# Azurite knows one OAuth level: "basic" (checks a token's claims, not its signature).
OAUTH_LEVELS = ("basic",)
CERT_DAYS = 30


@dataclass(frozen=True)
class DevCertificates:
    """A throwaway CA and Azurite's HTTPS certificate for 127.0.0.1 and localhost, as PEM files.

    The CA's private key is never written anywhere: it signs the one leaf certificate and
    is gone, so nothing else can ever be issued under this CA. Clients trust `ca`.
    """

    ca: Path  # the CA certificate: what clients trust (SSL_CERT_FILE, connection_verify)
    cert: Path  # Azurite's certificate
    key: Path  # its private key (owner-only permissions)


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage that allows exactly `allowed` (x509.KeyUsage wants every flag spelled out)."""
    return x509.KeyUsage(**{usage: usage in allowed for usage in _KEY_USAGES})


def _signed(
    subject: x509.Name,
    issuer: x509.Name,
    *,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    validity: tuple[datetime.datetime, datetime.datetime],
    critical: list[x509.ExtensionType],
    other: list[x509.ExtensionType],
) -> x509.Certificate:
    """A certificate for `public_key`, signed by `signing_key` (SHA-256), with these extensions."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
    )
    for extension in critical:
        builder = builder.add_extension(extension, critical=True)
    for extension in other:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_dev_certificates(
    directory: Path, *, days: int = CERT_DAYS, hosts: Iterable[str] = ("localhost",)
) -> DevCertificates:
    """Generate a fresh CA and a certificate for 127.0.0.1 (+ `hosts`) in `directory`."""
    private_dir(directory)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rowsmith local stack CA (throwaway)")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = _signed(
        ca_name,
        ca_name,
        public_key=ca_key.public_key(),
        signing_key=ca_key,
        validity=(not_before, not_after),
        critical=[x509.BasicConstraints(ca=True, path_length=0), _key_usage("key_cert_sign", "crl_sign")],
        other=[ca_ski],
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    names += [x509.DNSName(h) for h in hosts]
    leaf = _signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]),
        ca_name,
        public_key=leaf_key.public_key(),
        signing_key=ca_key,
        validity=(not_before, not_after),
        critical=[x509.BasicConstraints(ca=False, path_length=None), _key_usage("digital_signature")],
        other=[
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            x509.SubjectAlternativeName(names),
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()),
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
        ],
    )

    paths = DevCertificates(
        ca=directory / "ca.pem", cert=directory / "azurite-cert.pem", key=directory / "azurite-key.pem"
    )
    write_private(paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    write_private(paths.cert, leaf.public_bytes(serialization.Encoding.PEM).decode())
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    paths.key.unlink(missing_ok=True)
    fd = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return paths


@dataclass(frozen=True)
class OAuthOptions:
    """Azurite's bearer-token mode (`--oauth basic`): HTTPS only, so it needs a certificate.

    `ca` is the certificate clients must trust to reach this Azurite (None if `cert` is
    signed by something they trust already). See the module docstring for what Azurite
    checks in a token.
    """

    cert: Path
    key: Path
    ca: Path | None = None
    level: str = "basic"

    def __post_init__(self) -> None:
        if self.level not in OAUTH_LEVELS:
            raise ValueError(f"Azurite's OAuth level must be one of {', '.join(OAUTH_LEVELS)}, not {self.level!r}")

    @classmethod
    def generate(cls, directory: Path) -> OAuthOptions:
        """Options with a freshly generated throwaway CA and certificate in `directory`."""
        certs = make_dev_certificates(directory)
        return cls(cert=certs.cert, key=certs.key, ca=certs.ca)


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
    ca_file: Path | None = None  # what a client must trust to reach it over HTTPS
    process: Popen[bytes] | None = field(default=None, repr=False)

    @property
    def blob_url(self) -> str:
        return account_url(self.blob_port, https=self.https, host=self.host)

    @property
    def queue_url(self) -> str:
        return account_url(self.queue_port, https=self.https, host=self.host)

    @property
    def table_url(self) -> str:
        return account_url(self.table_port, https=self.https, host=self.host)

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


QUEUE_GC_PRELOAD = Path(__file__).with_name("azurite_queue_gc.cjs")


def azurite_env(queue_gc_interval_ms: int | None = None) -> dict[str, str] | None:
    """Azurite's environment: inherited, unless the queue GC interval is changed (a preload)."""
    if queue_gc_interval_ms is None:
        return None
    if queue_gc_interval_ms <= 0:
        raise ValueError(f"queue_gc_interval_ms must be positive, not {queue_gc_interval_ms}")
    env = dict(os.environ)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {QUEUE_GC_PRELOAD}".strip()
    env["ROWSMITH_AZURITE_QUEUE_GC_MS"] = str(int(queue_gc_interval_ms))
    return env


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
    queue_gc_interval_ms: int | None = None,
) -> Azurite:
    """Start Azurite with blob, queue and table on loopback ports (free ones unless given).

    Logs go to `workdir/azurite.log` (with `debug`, Azurite's request log to
    `workdir/azurite-debug.log`). A persistent instance keeps its data in `location`,
    by default `workdir/azurite-data`. `queue_gc_interval_ms`: how often Azurite's queue
    garbage collector runs instead of every 60 s (see azurite_queue_gc.cjs; benchmarks only).
    """
    private_dir(workdir)
    picked = iter(free_ports(3))
    blob_port = blob_port or next(picked)
    queue_port = queue_port or next(picked)
    table_port = table_port or next(picked)
    if not in_memory:
        location = location or workdir / "azurite-data"
        private_dir(location)
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
    process = spawn(command, log_path=log_path, cwd=workdir, env=azurite_env(queue_gc_interval_ms), detached=detached)
    azurite = Azurite(
        blob_port,
        queue_port,
        table_port,
        process.pid,
        https=oauth is not None,
        location=None if in_memory else location,
        log_path=log_path,
        ca_file=oauth.ca if oauth is not None else None,
        process=process,
    )
    try:
        for port, name in ((blob_port, "blob"), (queue_port, "queue"), (table_port, "table")):
            wait_for_port(LOOPBACK, port, timeout, process=process, name=f"Azurite {name}", log_path=log_path)
    except BaseException:
        azurite.stop()
        raise
    return azurite


def client_options(ca_file: Path | None) -> dict[str, Any]:
    """Keyword arguments for an azure-core client that must trust `ca_file` (none for plain HTTP)."""
    return {"connection_verify": str(ca_file)} if ca_file is not None else {}


def ensure_resources(
    connection_string: str,
    containers: Iterable[str] = (),
    queues: Iterable[str] = (),
    *,
    ca_file: Path | None = None,
) -> None:
    """Create containers and queues if missing (idempotent), with the real storage SDK.

    `ca_file`: the CA to trust when the connection string's endpoints are HTTPS (OAuth mode).
    """
    options = client_options(ca_file)
    with BlobServiceClient.from_connection_string(connection_string, **options) as blobs:
        for name in containers:
            with contextlib.suppress(ResourceExistsError):
                blobs.create_container(name)
    with QueueServiceClient.from_connection_string(connection_string, **options) as queue_service:
        for name in queues:
            # Azurite answers 409 for an existing queue; Azure answers 204 if its metadata matches.
            with contextlib.suppress(ResourceExistsError):
                queue_service.create_queue(name)
