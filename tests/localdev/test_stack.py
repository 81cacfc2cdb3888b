"""The composed local stack: real subprocesses, real SDKs, nothing left running afterwards."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import stat
import time
from pathlib import Path

import pytest
from azure.identity.aio import ManagedIdentityCredential, get_bearer_token_provider
from azure.storage.blob import BlobServiceClient
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient
from azure.storage.queue import QueueServiceClient
from azure.storage.queue.aio import QueueServiceClient as AsyncQueueServiceClient
from cryptography import x509
from openai import AsyncAzureOpenAI

from localdev.azurite import (
    DEV_ACCOUNT_KEY,
    OAuthOptions,
    azurite_command,
    connection_string,
    ensure_resources,
    make_dev_certificates,
    start_azurite,
)
from localdev.ports import pid_alive, port_open
from localdev.stack import (
    STATE_FILE,
    Stack,
    StackAlreadyRunningError,
    StackPorts,
    stack_app_settings,
    start_stack,
    write_local_settings,
)
from processing.core.layout import ALL_CONTAINERS, ALL_QUEUES
from processing.core.settings import Settings


def assert_all_gone(stack: Stack) -> None:
    for name, service in stack.services.items():
        assert not pid_alive(service.pid), f"{name} (pid {service.pid}) still runs"
    for name, port in stack.ports.as_dict().items():
        assert not port_open("127.0.0.1", port), f"{name} port {port} still listens"


async def test_stack_serves_the_app_and_stops_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = start_stack(tmp_path, deployments=["gpt-4o-mini", "gpt-4o"])
    try:
        settings = stack.app_settings()
        assert settings["AZURE_OPENAI_ENDPOINT"] == stack.emulator_url
        assert settings["AZURE_OPENAI_DEPLOYMENT"] == "gpt-4o-mini"
        assert settings["AZURE_OPENAI_API_VERSION"] == "2025-04-01-preview"
        assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
        assert settings["IDENTITY_ENDPOINT"] == stack.identity_url + "/msi/token"
        assert "AccountName=devstoreaccount1" in settings["AzureWebJobsStorage"]

        # The app's containers and queues exist, and creating them again is harmless.
        ensure_resources(stack.connection_string, ALL_CONTAINERS, ALL_QUEUES)
        with BlobServiceClient.from_connection_string(stack.connection_string) as blobs:
            assert {c.name for c in blobs.list_containers()} == set(ALL_CONTAINERS)
        with QueueServiceClient.from_connection_string(stack.connection_string) as queues:
            assert {q.name for q in queues.list_queues()} == set(ALL_QUEUES)

        # What the Function App does, with nothing but the stack's settings.
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        async with ManagedIdentityCredential() as credential:
            provider = get_bearer_token_provider(credential, "https://cognitiveservices.azure.com/.default")
            async with AsyncAzureOpenAI(
                azure_endpoint=settings["AZURE_OPENAI_ENDPOINT"],
                api_version=settings["AZURE_OPENAI_API_VERSION"],
                azure_ad_token_provider=provider,
                max_retries=0,
            ) as client:
                answer = await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "ping"}]
                )
        assert answer.choices[0].message.content == f"emulated answer {hashlib.sha256(b'ping').hexdigest()[:16]}"

        # Another process finds it through the state file (the CLI reads app_settings from it).
        state = json.loads((tmp_path / STATE_FILE).read_text())
        assert state["app_settings"] == settings
        assert Stack.from_dict(state).to_dict() == stack.to_dict()
        for name, service in stack.services.items():
            assert (tmp_path / f"{name}.pid").read_text().strip() == str(service.pid)
            assert service.log.is_file()
        with pytest.raises(StackAlreadyRunningError):
            start_stack(tmp_path)
    finally:
        stack.stop()
    assert_all_gone(stack)
    assert not (tmp_path / STATE_FILE).exists()
    stack.stop()  # a second stop is harmless


def test_detached_stack_survives_its_starter_and_stops_from_the_state_file(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, detached=True)
    try:
        for service in stack.services.values():
            # Its own session: a Ctrl-C or exit of the starter does not reach it.
            assert os.getsid(service.pid) == service.pid
        loaded = Stack.load(tmp_path / STATE_FILE)
        assert all(loaded.running().values())
        loaded.stop()
        assert_all_gone(loaded)
        assert not (tmp_path / STATE_FILE).exists()
    finally:
        stack.stop()


def test_persistent_azurite_keeps_data_across_restarts(tmp_path: Path) -> None:
    first = start_azurite(tmp_path, in_memory=False)
    try:
        ensure_resources(first.connection_string, ["kept"], [])
    finally:
        first.stop()
    assert not first.is_running()
    second = start_azurite(tmp_path, in_memory=False)
    try:
        with BlobServiceClient.from_connection_string(second.connection_string) as blobs:
            assert [c.name for c in blobs.list_containers()] == ["kept"]
        assert (tmp_path / "azurite-data").is_dir()
    finally:
        second.stop()


def test_connection_string_is_azurites_development_account() -> None:
    conn = connection_string(10000, 10001)
    fields = dict(part.split("=", 1) for part in conn.strip(";").split(";"))
    assert fields["AccountName"] == "devstoreaccount1"
    assert fields["BlobEndpoint"] == "http://127.0.0.1:10000/devstoreaccount1"
    assert fields["QueueEndpoint"] == "http://127.0.0.1:10001/devstoreaccount1"
    # The published well-known Azurite key, and nothing else, is what this string carries.
    assert fields["AccountKey"].startswith("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1")


def test_write_local_settings(tmp_path: Path) -> None:
    path = write_local_settings(tmp_path / "local.settings.json", {"A": "1", "FUNCTIONS_WORKER_RUNTIME": "python"})
    assert json.loads(path.read_text()) == {
        "IsEncrypted": False,
        "Values": {"A": "1", "FUNCTIONS_WORKER_RUNTIME": "python"},
    }


# --- OAuth mode: Azurite over HTTPS taking bearer tokens, and an app with no key -----------


async def test_oauth_stack_gives_the_app_urls_and_identity_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = start_stack(tmp_path, storage_auth="oauth")
    try:
        settings = stack.app_settings()
        assert stack.oauth and stack.storage_auth == "oauth"
        assert "AzureWebJobsStorage" not in settings
        assert settings["AzureWebJobsStorage__blobServiceUri"] == stack.blob_url
        assert settings["AzureWebJobsStorage__queueServiceUri"] == stack.queue_url
        assert settings["AzureWebJobsStorage__tableServiceUri"] == stack.table_url
        assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
        assert stack.blob_url == f"https://127.0.0.1:{stack.ports.blob}/devstoreaccount1"
        assert not any(DEV_ACCOUNT_KEY in value or "AccountKey" in value for value in settings.values())
        # The app's own settings code sees an identity-based connection and the managed identity.
        app = Settings.from_env(settings)
        assert app.storage.is_identity_based and app.managed_identity
        assert (app.storage.blob_url, app.storage.queue_url) == (stack.blob_url, stack.queue_url)
        # TLS trust by environment: the bundle starts with the stack's CA.
        assert stack.ca_file == tmp_path / "tls" / "ca.pem"
        assert settings["SSL_CERT_FILE"] == settings["REQUESTS_CA_BUNDLE"] == str(tmp_path / "tls" / "ca-bundle.pem")
        assert Path(settings["SSL_CERT_FILE"]).read_text().startswith(stack.ca_file.read_text())

        # The containers and queues were made over HTTPS, and the app's identity can see them.
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        options = stack.storage_client_options()
        async with (
            ManagedIdentityCredential() as credential,
            AsyncBlobServiceClient(stack.blob_url, credential=credential, **options) as blobs,
            AsyncQueueServiceClient(stack.queue_url, credential=credential, **options) as queues,
        ):
            assert {c.name async for c in blobs.list_containers()} == set(ALL_CONTAINERS)
            assert {q.name async for q in queues.list_queues()} == set(ALL_QUEUES)

        # The state file round-trips the mode and the CA (the CLI and `local down` read it).
        state = json.loads((tmp_path / STATE_FILE).read_text())
        assert state["storage_auth"] == "oauth" and state["ca_file"] == str(stack.ca_file)
        assert state["urls"]["blob"].startswith("https://")
        loaded = Stack.from_dict(state)
        assert loaded.to_dict() == stack.to_dict()
        assert (loaded.oauth, loaded.ca_file, loaded.blob_url) == (True, stack.ca_file, stack.blob_url)
        # Tools still get the development account, over HTTPS (Azurite keeps taking shared keys).
        assert loaded.connection_string.startswith("DefaultEndpointsProtocol=https;")
        ensure_resources(loaded.connection_string, ["made-with-the-key"], [], ca_file=loaded.ca_file)
    finally:
        stack.stop()
    assert_all_gone(stack)


def test_storage_auth_is_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage_auth"):
        start_stack(tmp_path, storage_auth="sas")
    assert not any(tmp_path.iterdir())


def test_a_state_file_from_before_oauth_mode_loads_as_key_mode() -> None:
    ports = StackPorts(1, 2, 3, 4, 5)
    stack = Stack(Path("/nowhere"), ports, stack_app_settings(ports, "h", "gpt-4o-mini"), {})
    state = stack.to_dict()
    del state["storage_auth"], state["ca_file"]
    loaded = Stack.from_dict(state)
    assert (loaded.storage_auth, loaded.ca_file, loaded.oauth) == ("key", None, False)
    assert loaded.blob_url == "http://127.0.0.1:1/devstoreaccount1"
    assert loaded.connection_string == stack.settings["AzureWebJobsStorage"]
    with pytest.raises(ValueError, match="storage_auth"):
        Stack.from_dict({**state, "storage_auth": "anonymous"})


def test_app_settings_of_both_modes(tmp_path: Path) -> None:
    ports = StackPorts(10000, 10001, 10002, 4000, 5000)
    key = stack_app_settings(ports, "header", "gpt-4o-mini")
    assert key["AzureWebJobsStorage"] == connection_string(10000, 10001, 10002)
    assert not any(name.startswith("AzureWebJobsStorage__") for name in key)
    oauth = stack_app_settings(ports, "header", "gpt-4o-mini", storage_auth="oauth", ca_bundle=tmp_path / "b.pem")
    assert oauth["AzureWebJobsStorage__queueServiceUri"] == "https://127.0.0.1:10001/devstoreaccount1"
    assert "AzureWebJobsStorage" not in oauth
    # Everything but storage is the same in both modes.
    storage_only = {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    common = {k: v for k, v in oauth.items() if not k.startswith("AzureWebJobsStorage") and k not in storage_only}
    assert common == {k: v for k, v in key.items() if k != "AzureWebJobsStorage"}
    with pytest.raises(ValueError, match="CA bundle"):
        stack_app_settings(ports, "header", "gpt-4o-mini", storage_auth="oauth")


def test_dev_certificates_chain_to_a_throwaway_ca(tmp_path: Path) -> None:
    certs = make_dev_certificates(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Only Azurite's own key is written, readable by its owner alone; the CA's key is nowhere.
    assert stat.S_IMODE(certs.key.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["azurite-cert.pem", "azurite-key.pem", "ca.pem"]
    # A second run replaces them with a new CA.
    again = make_dev_certificates(tmp_path / "tls")
    assert x509.load_pem_x509_certificate(again.ca.read_bytes()) != ca


def test_azurite_command_in_oauth_mode(tmp_path: Path) -> None:
    options = OAuthOptions(cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    command = azurite_command(Path("azurite"), blob_port=1, queue_port=2, table_port=3, oauth=options)
    tail = command[command.index("--oauth") :]
    assert tail == ["--oauth", "basic", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")]
    assert "--oauth" not in azurite_command(Path("azurite"), blob_port=1, queue_port=2, table_port=3)
    with pytest.raises(ValueError, match="basic"):
        OAuthOptions(cert=tmp_path / "c.pem", key=tmp_path / "k.pem", level="full")
    generated = OAuthOptions.generate(tmp_path / "tls")
    assert generated.ca == tmp_path / "tls" / "ca.pem" and generated.cert.is_file() and generated.key.is_file()


def _wait_for_text(path: Path, text: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def test_azurite_queue_gc_interval_is_applied(tmp_path: Path) -> None:
    # The benchmarks rely on it: Azurite's own debug log shows the interval its queue GC sleeps for.
    sleeps = "QueueGCManager:markSweepLoop() Sleep for {}\n"
    azurite = start_azurite(tmp_path, debug=True, queue_gc_interval_ms=123_456)
    try:
        assert _wait_for_text(tmp_path / "azurite-debug.log", sleeps.format(123456))
    finally:
        azurite.stop()
    default = start_azurite(tmp_path / "default", debug=True)
    try:
        assert _wait_for_text(tmp_path / "default" / "azurite-debug.log", sleeps.format(60000))
    finally:
        default.stop()


def test_azurite_queue_gc_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        start_azurite(tmp_path, queue_gc_interval_ms=0)
