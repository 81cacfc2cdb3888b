"""The local identity endpoint, driven by the real azure-identity ManagedIdentityCredential."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential

from localdev import control
from localdev.identity_endpoint import (
    CONTROL_PREFIX,
    OPENAI_RESOURCE,
    STORAGE_RESOURCE,
    SYSTEM_IDENTITY,
    IdentityEndpoint,
)
from localdev.ports import ServedApp

OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    endpoint: IdentityEndpoint
    served: ServedApp

    @property
    def token_url(self) -> str:
        return self.served.url + "/msi/token"

    def _control(self, path: str, kwargs: dict[str, object]) -> dict[str, object]:
        # The control API requires the endpoint's own header, as the stack's helpers send it.
        if path.startswith(CONTROL_PREFIX) and "headers" not in kwargs:
            kwargs["headers"] = {control.HEADER: self.endpoint.header}
        return kwargs

    async def get(self, path: str, **kwargs: object) -> tuple[int, dict]:
        kwargs = self._control(path, kwargs)
        async with aiohttp.ClientSession() as session, session.get(self.served.url + path, **kwargs) as r:
            return r.status, await r.json()

    async def post(self, path: str, body: object, **kwargs: object) -> tuple[int, dict]:
        kwargs = self._control(path, kwargs)
        async with aiohttp.ClientSession() as session, session.post(self.served.url + path, json=body, **kwargs) as r:
            return r.status, await r.json()


@pytest.fixture
async def identity(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    endpoint = IdentityEndpoint()
    served = await endpoint.serve()
    # Exactly what App Service / Flex Consumption set; without them the credential would
    # probe IMDS (169.254.169.254), which these tests must never reach.
    monkeypatch.setenv("IDENTITY_ENDPOINT", served.url + "/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", endpoint.header)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield Running(endpoint, served)
    await served.stop()


async def verified_claims(running: Running, token: str, audience: str) -> dict:
    status, jwks = await running.get("/.well-known/jwks.json")
    assert status == 200
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience)


async def test_aio_credential_gets_a_signed_token_with_the_documented_claims(identity: Running) -> None:
    async with ManagedIdentityCredential() as credential:
        before = int(time.time())
        token = await credential.get_token(OPENAI_SCOPE)
    claims = await verified_claims(identity, token.token, "https://cognitiveservices.azure.com")
    endpoint = identity.endpoint
    assert claims["iss"] == f"https://sts.windows.net/{endpoint.tenant_id}/"
    assert claims["tid"] == endpoint.tenant_id
    assert claims["oid"] == claims["sub"] == endpoint.principal_id
    assert claims["appid"] == endpoint.client_id
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] <= int(time.time())
    assert before <= claims["iat"] <= int(time.time())
    # The credential's idea of the expiry is the token's own.
    assert token.expires_on == claims["exp"]


async def test_sync_credential_and_the_storage_audience(identity: Running) -> None:
    credential = SyncManagedIdentityCredential()
    token = await asyncio.to_thread(credential.get_token, STORAGE_SCOPE)
    claims = await verified_claims(identity, token.token, "https://storage.azure.com")
    assert claims["aud"] == "https://storage.azure.com"
    assert identity.endpoint.stats.tokens["https://storage.azure.com"] == 1


# What Azurite's `--oauth basic` checks (node_modules/azurite/dist/src/{blob,queue}/authentication/
# *TokenAuthenticator.js and utils/constants.js): the signature is not verified; these are.
AZURITE_ISSUER_PREFIXES = ("https://sts.windows.net/",)
AZURITE_STORAGE_AUDIENCE = re.compile(r"^https://storage\.azure\.com/?$")


@pytest.mark.parametrize("resource", ["https://storage.azure.com", "https://storage.azure.com/"])
async def test_storage_tokens_carry_what_azurite_checks(identity: Running, resource: str) -> None:
    status, body = await identity.get(
        "/msi/token",
        params={"api-version": "2019-08-01", "resource": resource},
        headers={"X-IDENTITY-HEADER": identity.endpoint.header},
    )
    assert status == 200 and body["resource"] == resource
    claims = await verified_claims(identity, body["access_token"], resource)
    now = time.time()
    assert {"nbf", "exp", "iat"} <= set(claims)
    assert claims["nbf"] <= now <= claims["exp"]
    assert claims["iss"] == f"https://sts.windows.net/{identity.endpoint.tenant_id}/"
    assert claims["iss"].startswith(AZURITE_ISSUER_PREFIXES)
    assert AZURITE_STORAGE_AUDIENCE.match(claims["aud"])
    assert int(body["expires_on"]) == claims["exp"]


async def test_stats_count_tokens_per_identity_and_resource(identity: Running) -> None:
    user_assigned = "11111111-2222-4333-8444-555555555555"
    async with ManagedIdentityCredential() as system, ManagedIdentityCredential(client_id=user_assigned) as user:
        await system.get_token(STORAGE_SCOPE)
        await system.get_token(OPENAI_SCOPE)
        await user.get_token(STORAGE_SCOPE)
    _, stats = await identity.get("/_identity/stats")
    assert stats["by_identity"] == {
        SYSTEM_IDENTITY: {STORAGE_RESOURCE: 1, OPENAI_RESOURCE: 1},
        user_assigned: {STORAGE_RESOURCE: 1},
    }
    assert stats["tokens"] == {STORAGE_RESOURCE: 2, OPENAI_RESOURCE: 1}
    _, reset = await identity.post("/_identity/reset", {})
    assert reset["by_identity"] == {} and reset["tokens_issued"] == 0


async def test_user_assigned_identity_is_named_in_the_token(identity: Running) -> None:
    client_id = "11111111-2222-4333-8444-555555555555"
    async with ManagedIdentityCredential(client_id=client_id) as credential:
        token = await credential.get_token(OPENAI_SCOPE)
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["appid"] == client_id
    assert claims["oid"] != identity.endpoint.principal_id


async def test_a_wrong_identity_header_is_refused(identity: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    status, body = await identity.get(
        "/msi/token",
        params={"api-version": "2019-08-01", "resource": "https://storage.azure.com"},
        headers={"X-IDENTITY-HEADER": "not-the-header"},
    )
    assert status == 401
    assert body["statusCode"] == 401

    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    async with ManagedIdentityCredential() as credential:
        with pytest.raises(ClientAuthenticationError, match="X-IDENTITY-HEADER"):
            await credential.get_token(OPENAI_SCOPE)
    assert identity.endpoint.stats.tokens.total() == 0
    assert identity.endpoint.stats.rejected == 2


@pytest.mark.parametrize(
    "params",
    [
        {"api-version": "2019-08-01"},  # no resource
        {"resource": "https://storage.azure.com"},  # no api-version
        {"api-version": "2017-09-01", "resource": "https://storage.azure.com"},  # the older protocol
    ],
)
async def test_missing_or_wrong_parameters_are_a_400(identity: Running, params: dict[str, str]) -> None:
    status, body = await identity.get(
        "/msi/token", params=params, headers={"X-IDENTITY-HEADER": identity.endpoint.header}
    )
    assert status == 400
    assert body["statusCode"] == 400 and body["message"]


async def test_injected_failures_reach_the_credential_and_are_counted(identity: Running) -> None:
    status, config = await identity.post("/_identity/config", {"failure_rate": 1.0})
    assert status == 200 and config["failure_rate"] == 1.0
    # retry_total=0: the credential otherwise retries a 500 three times with back-off (~5 s).
    async with ManagedIdentityCredential(retry_total=0) as credential:
        with pytest.raises(ClientAuthenticationError):
            await credential.get_token(OPENAI_SCOPE)
    # The sync credential (MSAL underneath) reports the same 500 as "unavailable".
    with pytest.raises(CredentialUnavailableError, match="500"):
        await asyncio.to_thread(SyncManagedIdentityCredential(retry_total=0).get_token, OPENAI_SCOPE)

    await identity.post("/_identity/config", {"failure_rate": 0.0})
    async with ManagedIdentityCredential(retry_total=0) as credential:
        await credential.get_token(OPENAI_SCOPE)
    _, stats = await identity.get("/_identity/stats")
    assert stats["failures"] == 2
    assert stats["requests"] == 3
    assert stats["tokens"] == {"https://cognitiveservices.azure.com": 1}


async def test_expired_tokens_and_token_lifetime_on_demand(identity: Running) -> None:
    await identity.post("/_identity/config", {"expired": True})
    async with ManagedIdentityCredential() as credential:
        expired = await credential.get_token(OPENAI_SCOPE)
    assert expired.expires_on < time.time()
    claims = jwt.decode(expired.token, options={"verify_signature": False})
    assert claims["exp"] < time.time()

    status, config = await identity.post("/_identity/config", {"expired": False, "lifetime_seconds": 120})
    assert status == 200
    assert config == {"failure_rate": 0.0, "expired": False, "lifetime_seconds": 120}
    async with ManagedIdentityCredential() as credential:
        short = await credential.get_token(OPENAI_SCOPE)
    claims = jwt.decode(short.token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert claims["exp"] > time.time()


async def test_bad_configuration_is_refused_and_changes_nothing(identity: Running) -> None:
    for body in ({"failure_rate": 2}, {"expired": "yes"}, {"lifetime": 5}, [1]):
        status, answer = await identity.post("/_identity/config", body)
        assert status == 400, body
        assert answer["error"]
    status, config = await identity.get("/_identity/config")
    assert config == {"failure_rate": 0.0, "expired": False, "lifetime_seconds": 3600}


@pytest.mark.parametrize("path", ["/_identity/config", "/_identity/stats"])
async def test_the_control_api_refuses_a_request_without_the_header(identity: Running, path: str) -> None:
    status, body = await identity.post(path.replace("stats", "reset"), {"expired": True}, headers={})
    assert status == 401 and "requires the X-IDENTITY-HEADER header" in body["error"]
    status, body = await identity.get(path, headers={control.HEADER: "not-the-header"})
    assert status == 403 and "does not match" in body["error"]
    status, body = await identity.post("/_identity/config", {"expired": True}, headers={control.HEADER: "x"})
    assert status == 403
    # Nothing was changed: tokens are still valid, and health stays open for the stack's start-up check.
    _, config = await identity.get("/_identity/config")
    assert config["expired"] is False
    async with aiohttp.ClientSession() as session, session.get(identity.served.url + "/_identity/health") as r:
        assert r.status == 200


def test_a_header_given_to_the_command_line_is_not_printed() -> None:
    header = "given-header-" + "x" * 32
    process = subprocess.Popen(
        [sys.executable, "-m", "localdev.identity_endpoint", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
        env={**os.environ, "IDENTITY_HEADER": header},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert json.loads(line)["ready"] == "identity-endpoint" and "IDENTITY_HEADER" not in json.loads(line)
        assert header not in line
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_command_line_prints_one_ready_line_and_serves_tokens() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "localdev.identity_endpoint", "--port", "0", "--tenant", "tenant-x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["ready"] == "identity-endpoint"
        assert ready["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
        assert len(ready["IDENTITY_HEADER"]) >= 32  # random per start
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("IDENTITY_ENDPOINT", ready["IDENTITY_ENDPOINT"])
            mp.setenv("IDENTITY_HEADER", ready["IDENTITY_HEADER"])
            token = SyncManagedIdentityCredential().get_token(STORAGE_SCOPE)
        claims = jwt.decode(token.token, options={"verify_signature": False})
        assert claims["iss"] == "https://sts.windows.net/tenant-x/"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0  # SIGTERM is a clean shutdown
