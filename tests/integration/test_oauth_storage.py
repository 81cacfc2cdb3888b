"""Keyless storage, proven: on an OAuth stack the app has no key and Azurite takes only real tokens.

The stack here runs Azurite with `--oauth basic` over HTTPS (a throwaway CA made at start).
The end-to-end suite (test_pipeline_e2e.py) runs on such a stack too; this module checks
what makes that run a proof: what the app process was given, that it fetched storage
tokens with its managed identity, and that Azurite refuses what is not a valid token.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.storage.blob.aio import BlobServiceClient

from localdev.azurite import DEV_ACCOUNT_KEY
from localdev.identity_endpoint import OPENAI_RESOURCE, STORAGE_RESOURCE, SYSTEM_IDENTITY
from localdev.stack import Stack
from processing.core.layout import ALL_CONTAINERS, STORAGE_CONNECTION
from tests.integration.harness import (
    HARNESS_CLIENT_ID,
    RunnerProcess,
    harness_credential,
    identity,
    submit_and_wait,
)

pytestmark = pytest.mark.integration

# conftest.py: this module's `stack` is an OAuth stack (and only that).
STACK_STORAGE_AUTH = ("oauth",)

OPENAI_SCOPE = OPENAI_RESOURCE + "/.default"
KEY_MARKERS = ("AccountKey=", "SharedAccessSignature=", "SharedAccessKey=", "sig=")


def process_environment(pid: int) -> dict[str, str]:
    """The environment a running process really has (Linux /proc), not what we meant to give it."""
    path = Path(f"/proc/{pid}/environ")
    if not path.exists():
        pytest.skip("needs /proc to read another process's environment")
    pairs = (item.split(b"=", 1) for item in path.read_bytes().split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


async def test_the_app_process_gets_account_urls_and_the_managed_identity_only(
    stack: Stack, runner: RunnerProcess
) -> None:
    assert runner.process is not None and runner.process.poll() is None
    env = process_environment(runner.process.pid)

    # The identity-based connection, as the Bicep sets it on the Function App.
    assert env[f"{STORAGE_CONNECTION}__blobServiceUri"] == stack.blob_url
    assert env[f"{STORAGE_CONNECTION}__queueServiceUri"] == stack.queue_url
    assert stack.blob_url.startswith("https://127.0.0.1:") and stack.queue_url.startswith("https://127.0.0.1:")
    assert env[f"{STORAGE_CONNECTION}__credential"] == "managedidentity"
    assert env["IDENTITY_ENDPOINT"] == stack.settings["IDENTITY_ENDPOINT"]
    assert env["IDENTITY_HEADER"] == stack.identity_header
    # Trust of the local CA comes from the environment, with no code in the app.
    assert Path(env["SSL_CERT_FILE"]).read_text().startswith(stack.ca_file.read_text())

    # ... and nothing that could authenticate to storage without the identity.
    assert STORAGE_CONNECTION not in env
    for name, value in env.items():
        assert DEV_ACCOUNT_KEY not in value, name
        assert not any(marker.lower() in value.lower() for marker in KEY_MARKERS), name
        assert "connection_string" not in name.lower(), name
    assert "AZURE_OPENAI_API_KEY" not in env
    # What the runner was asked to run with is the stack's own OAuth settings.
    assert not any(k == STORAGE_CONNECTION or DEV_ACCOUNT_KEY in v for k, v in runner.settings.items())


async def test_the_app_fetches_storage_tokens_with_its_managed_identity(
    stack: Stack, runner: RunnerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], *[[str(i), f"row {i}"] for i in range(20)]])

    code, info = await submit_and_wait(stack, path, "echo")
    assert code == 0, (info, runner.log()[-3000:])
    assert (info["total_rows"], info["ok_rows"]) == (20, 20)

    stats = await identity(stack, "GET", "/_identity/stats")
    app = stats["by_identity"][SYSTEM_IDENTITY]
    # The app (system-assigned identity) asked for storage tokens, which only a bearer-token
    # client does, and for Azure OpenAI tokens; the test's own clients used another identity.
    assert sum(n for resource, n in app.items() if resource.rstrip("/") == STORAGE_RESOURCE) >= 1
    assert app.get(OPENAI_RESOURCE, 0) >= 1
    assert stats["by_identity"][HARNESS_CLIENT_ID].get(STORAGE_RESOURCE, 0) >= 1


class ScopeOf:
    """A token credential that asks `credential` for `scope`, whatever the client wants."""

    def __init__(self, credential: Any, scope: str) -> None:
        self.credential, self.scope = credential, scope

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return await self.credential.get_token(self.scope)

    async def close(self) -> None:
        await self.credential.close()


async def list_containers(stack: Stack, credential: Any = None, **options: Any) -> set[str]:
    options = {**stack.storage_client_options(), **options}
    async with BlobServiceClient(stack.blob_url, credential=credential, **options) as blobs:
        return {c.name async for c in blobs.list_containers()}


async def test_azurite_takes_a_storage_token_and_refuses_no_token_or_a_wrong_one(stack: Stack) -> None:
    # The app's own identity, through the real ManagedIdentityCredential: accepted.
    async with harness_credential(stack, client_id=None) as credential:
        assert await list_containers(stack, credential) >= set(ALL_CONTAINERS)

    # No credential at all: Azurite refuses (it would have to for the app's success to mean anything).
    with pytest.raises(HttpResponseError) as anonymous:
        await list_containers(stack)
    assert anonymous.value.status_code == 403
    assert anonymous.value.error_code == "AuthorizationFailure"

    # A genuine token of the same identity, but for Azure OpenAI: wrong audience, refused.
    async with harness_credential(stack, client_id=None) as credential:
        with pytest.raises(ClientAuthenticationError) as wrong_audience:
            await list_containers(stack, ScopeOf(credential, OPENAI_SCOPE))
    assert wrong_audience.value.status_code == 403
    assert wrong_audience.value.error_code == "AuthenticationFailed"


async def test_azurite_refuses_an_expired_storage_token(stack: Stack) -> None:
    await identity(stack, "POST", "/_identity/config", {"expired": True})
    try:
        # A fresh credential (tokens are cached per credential object) gets an expired token.
        async with harness_credential(stack, client_id="00000000-0000-4000-8000-00000000e001") as credential:
            with pytest.raises(ClientAuthenticationError) as expired:
                await list_containers(stack, credential)
    finally:
        await identity(stack, "POST", "/_identity/config", {"expired": False})
    assert expired.value.error_code == "AuthenticationFailed"


async def test_tls_is_verified_against_the_stacks_own_ca(stack: Stack) -> None:
    assert stack.ca_file is not None and stack.ca_file.parent == stack.workdir / "tls"
    # The CA's private key is nowhere: it signed Azurite's certificate and was dropped.
    assert sorted(p.name for p in stack.ca_file.parent.iterdir()) == [
        "azurite-cert.pem",
        "azurite-key.pem",
        "ca-bundle.pem",
        "ca.pem",
    ]
    assert os.stat(stack.ca_file.parent / "azurite-key.pem").st_mode & 0o077 == 0
    # Without the CA, a client refuses Azurite's certificate: verification is really on.
    async with harness_credential(stack) as credential:
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            # retry_total=0: the SDK would otherwise retry a TLS failure for over a minute.
            await list_containers(stack, credential, connection_verify=True, retry_total=0)


async def test_azurite_still_accepts_the_development_key_in_oauth_mode(stack: Stack) -> None:
    # Why the proof is "the app was given no key" and not "Azurite refused a key".
    options = stack.storage_client_options()
    async with BlobServiceClient.from_connection_string(stack.connection_string, **options) as blobs:
        assert {c.name async for c in blobs.list_containers()} >= set(ALL_CONTAINERS)
    assert stack.connection_string.startswith("DefaultEndpointsProtocol=https;")
