"""The composed local stack: real subprocesses, real SDKs, nothing left running afterwards."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from azure.identity.aio import ManagedIdentityCredential, get_bearer_token_provider
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from openai import AsyncAzureOpenAI

from localdev.azurite import connection_string, ensure_resources, start_azurite
from localdev.ports import pid_alive, port_open
from localdev.stack import STATE_FILE, Stack, StackAlreadyRunningError, start_stack, write_local_settings
from processing.names import ALL_CONTAINERS, ALL_QUEUES


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
        assert settings["AZURE_OPENAI_API_VERSION"] == "2024-10-21"
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
