"""The Azure OpenAI emulator, called by the real openai client with real managed-identity tokens.

Expected answers are recomputed here from the rule in localdev/openai_emulator/answers.py's
docstring, independently of the emulator's own code; token counts with OpenAI's tokenizer
(bpe-openai) and the chat framing of localdev/openai_emulator/tokens.py's docstring.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import bpe_openai
import jwt
import openai
import pytest
from azure.identity.aio import ManagedIdentityCredential, get_bearer_token_provider
from openai import AsyncAzureOpenAI
from pydantic import BaseModel

from localdev import control
from localdev.identity_endpoint import IdentityEndpoint
from localdev.openai_emulator import tokens as emulator_tokens
from localdev.openai_emulator.answers import DEEP_NESTING, HUGE_INT_DIGITS
from localdev.openai_emulator.config import REASONING_DEPLOYMENT, STANDARD_DEPLOYMENT, EmulatorConfig
from localdev.openai_emulator.faults import MALFORMED_JSON_KINDS
from localdev.openai_emulator.server import OpenAIEmulator
from localdev.ports import ServedApp, serve_app

OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"
API_VERSION = "2024-10-21"
DEPLOYMENT = STANDARD_DEPLOYMENT  # a standard model: takes max_tokens and any temperature


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected_text(user: str) -> str:
    return f"emulated answer {sha(user)[:16]}"


def prop_hash(user: str, prop: str) -> str:
    return sha(user + "\x00" + prop)


def count(text: str, encoding: str = "o200k_base") -> int:
    return len(bpe_openai.get_encoding(encoding).encode(text, disallowed_special=()))


def expected_prompt_tokens(messages: list[dict[str, str]], encoding: str = "o200k_base") -> int:
    # OpenAI's chat rule: 3 per message plus its role and content, and 3 that prime the answer.
    return 3 + sum(3 + count(m["role"], encoding) + count(m["content"], encoding) for m in messages)


@dataclass
class Local:
    identity: IdentityEndpoint
    emulator: OpenAIEmulator
    identity_app: ServedApp
    emulator_app: ServedApp
    credential: ManagedIdentityCredential

    def client(self, scope: str = OPENAI_SCOPE, **kwargs: Any) -> AsyncAzureOpenAI:
        provider = get_bearer_token_provider(self.credential, scope)
        options: dict[str, Any] = {"max_retries": 0, **kwargs}
        return AsyncAzureOpenAI(
            azure_endpoint=self.emulator_app.url, api_version=API_VERSION, azure_ad_token_provider=provider, **options
        )

    async def control(
        self, method: str, path: str, body: object = None, header: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A control-API request, with the emulator's own header unless `header` says otherwise ("": none)."""
        value = self.emulator.control_header if header is None else header
        headers = {control.HEADER: value} if value else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.emulator_app.url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def raw_chat(self, headers: dict[str, str], body: object) -> tuple[int, dict[str, Any]]:
        url = f"{self.emulator_app.url}/openai/deployments/{DEPLOYMENT}/chat/completions"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, params={"api-version": API_VERSION}, headers=headers, json=body) as response,
        ):
            return response.status, await response.json()


@pytest.fixture
async def local(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Local]:
    identity = IdentityEndpoint()
    identity_app = await identity.serve()
    emulator = OpenAIEmulator(identity_app.url + "/.well-known/jwks.json", EmulatorConfig(seed=1))
    emulator_app = await emulator.serve()
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity_app.url + "/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", identity.header)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    credential = ManagedIdentityCredential()
    yield Local(identity, emulator, identity_app, emulator_app, credential)
    await credential.close()
    await emulator_app.stop()
    await identity_app.stop()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


# --- answers ------------------------------------------------------------------------------------


async def test_text_answer_follows_the_documented_rule(local: Local) -> None:
    messages = [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": "Ticket 42: the invoice is wrong"},
    ]
    async with local.client() as client:
        completion = await client.chat.completions.create(model=DEPLOYMENT, messages=messages)
    content = expected_text("Ticket 42: the invoice is wrong")  # the LAST user message counts
    assert completion.object == "chat.completion"
    assert completion.model == DEPLOYMENT
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == expected_prompt_tokens(messages)
    assert completion.usage.completion_tokens == count(content)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "feature", "other"]},
        "summary": {"type": "string"},
        "priority": {"type": "integer"},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "score": {"type": "number"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "tier": {"type": "string", "enum": ["free", "pro"]}},
            "required": ["name", "tier"],
            "additionalProperties": False,
        },
    },
    "required": ["category", "summary", "priority", "stars", "score", "urgent", "tags", "customer"],
    "additionalProperties": False,
}


def expected_schema_answer(u: str) -> dict[str, Any]:
    def h(prop: str) -> str:
        return prop_hash(u, prop)

    return {
        "category": ["billing", "bug", "feature", "other"][int(h("category")[:8], 16) % 4],
        "summary": f"summary-{h('summary')[:8]}",
        "priority": int(h("priority")[:4], 16) % 100,
        "stars": 1 + int(h("stars")[:4], 16) % 5,
        "score": float(int(h("score")[:4], 16) % 100),
        "urgent": int(h("urgent")[0], 16) % 2 == 0,
        "tags": [f"tags-{h('tags')[:6]}"],
        "customer": {"name": f"name-{h('name')[:8]}", "tier": ["free", "pro"][int(h("tier")[:8], 16) % 2]},
    }


async def test_json_schema_answer_conforms_and_is_deterministic(local: Local) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "triage", "schema": SCHEMA, "strict": True}}
    async with local.client() as client:
        answers = [
            await client.chat.completions.create(model=DEPLOYMENT, messages=user(text), response_format=fmt)
            for text in ("printer on fire", "printer on fire", "refund please")
        ]
    parsed = [json.loads(a.choices[0].message.content or "") for a in answers]
    assert parsed[0] == expected_schema_answer("printer on fire")
    assert parsed[1] == parsed[0]
    assert parsed[2] == expected_schema_answer("refund please")
    assert parsed[2] != parsed[0]
    content = answers[0].choices[0].message.content or ""
    assert answers[0].usage is not None and answers[0].usage.completion_tokens == count(content)


class Customer(BaseModel):
    name: str
    tier: Literal["free", "pro"]


class Triage(BaseModel):
    category: Literal["billing", "bug", "feature", "other"]
    confidence: float
    customer: Customer  # pydantic emits this as $defs + $ref


async def test_structured_outputs_parse_with_a_pydantic_model(local: Local) -> None:
    async with local.client() as client:
        completion = await client.chat.completions.parse(
            model=DEPLOYMENT, messages=user("my card was charged twice"), response_format=Triage
        )
    triage = completion.choices[0].message.parsed
    assert isinstance(triage, Triage)
    u = "my card was charged twice"
    assert triage.category == ["billing", "bug", "feature", "other"][int(prop_hash(u, "category")[:8], 16) % 4]
    assert triage.customer.name == f"name-{prop_hash(u, 'name')[:8]}"
    assert triage.confidence == float(int(prop_hash(u, "confidence")[:4], 16) % 100)


async def test_json_object_mode_and_max_tokens_cut(local: Local) -> None:
    async with local.client() as client:
        obj = await client.chat.completions.create(
            model=DEPLOYMENT, messages=user("hello"), response_format={"type": "json_object"}
        )
        cut = await client.chat.completions.create(model=DEPLOYMENT, messages=user("hello"), max_tokens=2)
    assert json.loads(obj.choices[0].message.content or "") == {"answer": expected_text("hello")}
    assert cut.choices[0].finish_reason == "length"
    # Cut after two tokens (o200k: "emul", "ated"), not after a number of characters.
    enc = bpe_openai.get_encoding("o200k_base")
    assert cut.choices[0].message.content == enc.decode(enc.encode(expected_text("hello"))[:2]) == "emulated"
    assert cut.usage is not None and cut.usage.completion_tokens == 2


async def test_tokens_are_counted_with_the_deployments_own_tokenizer(local: Local) -> None:
    # gpt-4 encodes with cl100k, gpt-4.1 (and gpt-4o, gpt-5.x) with o200k: the same text counts
    # differently, and each deployment reports its own model's count.
    text = "Ünïcödé ticket: le café est fermé 東京 🎉 <|endoftext|> " * 5
    await local.control(
        "POST",
        "/_emulator/config",
        {"deployments": [DEPLOYMENT, "legacy"], "models": {"legacy": {"model": "gpt-4-0613"}}},
    )
    messages = [{"role": "system", "content": "Classify."}, {"role": "user", "content": text}]
    async with local.client() as client:
        new = await client.chat.completions.create(model=DEPLOYMENT, messages=messages)
        old = await client.chat.completions.create(model="legacy", messages=messages)
    assert count(text, "o200k_base") != count(text, "cl100k_base")
    assert new.usage is not None and old.usage is not None
    assert new.usage.prompt_tokens == expected_prompt_tokens(messages, "o200k_base")
    assert old.usage.prompt_tokens == expected_prompt_tokens(messages, "cl100k_base")
    content = expected_text(text)
    assert (new.usage.completion_tokens, old.usage.completion_tokens) == (count(content), count(content, "cl100k_base"))
    _, stats = await local.control("GET", "/_emulator/stats")
    assert stats["tokens"]["prompt"] == new.usage.prompt_tokens + old.usage.prompt_tokens


def test_a_cut_in_multibyte_text_ends_at_a_token_and_keeps_whole_characters() -> None:
    # The emulator's own answers are ASCII (JSON escapes), but a fault's content need not be.
    text = "東京都の天気は晴れです 🎉🎉 " * 4
    enc = bpe_openai.get_encoding("o200k_base")
    tokens = enc.encode(text)
    cuts = [emulator_tokens.cut(text, n, DEPLOYMENT) for n in range(1, len(tokens))]
    for n, cut in enumerate(cuts, start=1):
        assert text.startswith(cut) and "\ufffd" not in cut
        assert len(enc.encode(enc.decode_bytes(tokens[:n]).decode("utf-8", errors="ignore"))) <= n
    assert emulator_tokens.cut(text, len(tokens), DEPLOYMENT) == text
    assert emulator_tokens.completion_tokens(text, DEPLOYMENT) == len(tokens)


# --- authentication --------------------------------------------------------------------------


async def test_an_api_key_is_refused_like_a_keyless_resource(local: Local) -> None:
    client = AsyncAzureOpenAI(
        azure_endpoint=local.emulator_app.url, api_version=API_VERSION, api_key="a-key", max_retries=0
    )
    async with client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("hi"))
    assert caught.value.status_code == 401
    assert caught.value.code == "AuthenticationTypeDisabled"
    assert caught.value.message.endswith("Key based authentication is disabled for this resource.")


async def test_an_expired_token_is_refused(local: Local) -> None:
    local.identity.config.update({"expired": True})
    async with local.client() as client:
        with pytest.raises(openai.AuthenticationError, match="expired") as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("hi"))
    assert caught.value.code == "InvalidAuthenticationToken"


async def test_a_token_for_another_audience_is_refused(local: Local) -> None:
    async with local.client(scope=STORAGE_SCOPE) as client:
        with pytest.raises(openai.AuthenticationError, match="audience") as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("hi"))
    assert "https://storage.azure.com" in caught.value.message


async def test_missing_forged_and_foreign_tokens_are_refused(local: Local) -> None:
    good = (await local.credential.get_token(OPENAI_SCOPE)).token
    header, _, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    forged_payload = jwt.utils.base64url_encode(json.dumps({**claims, "oid": "someone-else"}).encode()).decode()
    foreign = IdentityEndpoint(tenant_id=local.identity.tenant_id)  # a different key pair
    foreign_token, _ = foreign.issue_token("https://cognitiveservices.azure.com")
    cases = {
        "no access token": {},
        "not a well-formed JWT": {"Authorization": "Bearer not-a-jwt"},
        "signature does not verify": {"Authorization": f"Bearer {header}.{forged_payload}.{signature}"},
        "signing key": {"Authorization": f"Bearer {foreign_token}"},
    }
    for reason, headers in cases.items():
        status, body = await local.raw_chat(headers, {"messages": user("hi")})
        assert status == 401, reason
        assert body["error"]["code"] == "InvalidAuthenticationToken"
        assert reason in body["error"]["message"]
    status, _ = await local.raw_chat({"Authorization": f"Bearer {good}"}, {"messages": user("hi")})
    assert status == 200


async def test_a_restarted_identity_endpoint_new_key_is_fetched(local: Local) -> None:
    async with local.client() as client:
        await client.chat.completions.create(model=DEPLOYMENT, messages=user("first"))
    port = local.identity_app.port
    await local.identity_app.stop()
    restarted = IdentityEndpoint(header=local.identity.header)
    app = await serve_app(restarted.app(), port=port)
    try:
        async with ManagedIdentityCredential() as credential:
            token = (await credential.get_token(OPENAI_SCOPE)).token
        status, body = await local.raw_chat({"Authorization": f"Bearer {token}"}, {"messages": user("again")})
        assert status == 200, body
    finally:
        await app.stop()


# --- request validation ----------------------------------------------------------------------


async def test_unknown_deployment_and_bad_bodies(local: Local) -> None:
    async with local.client() as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-5-imaginary", messages=user("hi"))
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=DEPLOYMENT, messages=[])
    assert missing.value.code == "DeploymentNotFound"
    token = (await local.credential.get_token(OPENAI_SCOPE)).token
    status, body = await local.raw_chat({"Authorization": f"Bearer {token}"}, {"prompt": "hi"})
    assert status == 400
    assert "messages" in body["error"]["message"]


async def test_v1_route_takes_the_deployment_from_the_body(local: Local) -> None:
    token = (await local.credential.get_token(OPENAI_SCOPE)).token
    url = local.emulator_app.url + "/openai/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        body = {"model": DEPLOYMENT, "messages": user("v1")}
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            answer = await response.json()
        body = {"model": "unknown", "messages": user("v1")}
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 404
    assert answer["choices"][0]["message"]["content"] == expected_text("v1")


# --- quotas ---------------------------------------------------------------------------------------


async def test_rpm_quota_answers_429_with_retry_after(local: Local) -> None:
    status, config = await local.control("POST", "/_emulator/config", {"rpm": 2})
    assert status == 200 and config["rpm"] == 2
    async with local.client() as client:
        first = await client.chat.completions.with_raw_response.create(model=DEPLOYMENT, messages=user("1"))
        second = await client.chat.completions.with_raw_response.create(model=DEPLOYMENT, messages=user("2"))
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("3"))
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    headers = caught.value.response.headers
    retry_ms = int(headers["retry-after-ms"])
    assert 55_000 < retry_ms <= 60_000  # the first request leaves the window a minute after it came
    assert int(headers["retry-after"]) == math.ceil(retry_ms / 1000)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "call rate limit" in caught.value.message
    status, stats = await local.control("GET", "/_emulator/stats")
    assert stats["throttled"] == stats["quota_throttled"] == 1
    assert stats["by_status"] == {"200": 2, "429": 1}


async def test_tpm_admission_counts_prompt_and_max_tokens(local: Local) -> None:
    await local.control("POST", "/_emulator/config", {"tpm": 2500})
    messages = user("x" * 40)
    cost = expected_prompt_tokens(messages) + 1000
    async with local.client() as client:
        first = await client.chat.completions.with_raw_response.create(
            model=DEPLOYMENT, messages=messages, max_tokens=1000
        )
        assert first.headers["x-ratelimit-remaining-tokens"] == str(2500 - cost)
        await client.chat.completions.create(model=DEPLOYMENT, messages=messages, max_tokens=1000)
        with pytest.raises(openai.RateLimitError, match="token rate limit"):
            await client.chat.completions.create(model=DEPLOYMENT, messages=messages, max_tokens=1000)
        # A small request still fits in what is left.
        await client.chat.completions.create(model=DEPLOYMENT, messages=messages, max_tokens=10)


async def test_a_client_with_retries_waits_out_retry_after_ms(local: Local) -> None:
    # [[fault:429:1]]: throttled once, then answered; the fault's retry-after-ms is honoured.
    await local.control("POST", "/_emulator/config", {"fault_retry_after_ms": 300})
    async with local.client(max_retries=1) as client:
        started = time.monotonic()
        completion = await client.chat.completions.create(model=DEPLOYMENT, messages=user("go [[fault:429:1]]"))
    assert time.monotonic() - started >= 0.3
    assert completion.choices[0].message.content == expected_text("go [[fault:429:1]]")


# --- faults --------------------------------------------------------------------------------------


async def test_fault_markers(local: Local) -> None:
    async with local.client() as client:

        async def ask(text: str) -> Any:
            return await client.chat.completions.create(model=DEPLOYMENT, messages=user(text))

        with pytest.raises(openai.InternalServerError) as e500:
            await ask("a [[fault:500]]")
        assert e500.value.status_code == 500
        with pytest.raises(openai.InternalServerError) as e503:
            await ask("a [[fault:503]]")
        assert e503.value.status_code == 503
        with pytest.raises(openai.BadRequestError) as filtered:
            await ask("a [[fault:content_filter]]")
        assert filtered.value.code == "content_filter"
        assert isinstance(filtered.value.body, dict)
        assert filtered.value.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
        with pytest.raises(openai.BadRequestError) as too_long:
            await ask("a [[fault:context_length]]")
        assert too_long.value.code == "context_length_exceeded"
        with pytest.raises(openai.APIConnectionError):
            await ask("a [[fault:drop]]")
        # :N faults only the first N times that exact message is seen.
        with pytest.raises(openai.InternalServerError):
            await ask("b [[fault:500:1]]")
        assert (await ask("b [[fault:500:1]]")).choices[0].message.content == expected_text("b [[fault:500:1]]")
    _, stats = await local.control("GET", "/_emulator/stats")
    assert stats["faults"] == {"500": 2, "503": 1, "content_filter": 1, "context_length": 1, "drop": 1}
    assert stats["dropped"] == 1


@pytest.mark.parametrize("kind", MALFORMED_JSON_KINDS)
async def test_malformed_json_faults_break_only_the_first_property(local: Local, kind: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "triage", "schema": SCHEMA, "strict": True}}
    text = f"printer on fire [[fault:{kind}]]"
    async with local.client() as client:
        answer = await client.chat.completions.create(
            model=DEPLOYMENT, messages=user(text), response_format=fmt, max_tokens=4000
        )
    content = answer.choices[0].message.content or ""
    assert answer.choices[0].finish_reason == "stop"  # a 200 a client would take as a finished answer
    good = expected_schema_answer(text)
    if kind == "json_off_enum":
        parsed = json.loads(content)
        assert parsed["category"] not in SCHEMA["properties"]["category"]["enum"]
        assert {**parsed, "category": good["category"]} == good
        return
    flaw = {
        "json_nan": "NaN",
        "json_deep": "[" * DEEP_NESTING + "]" * DEEP_NESTING,
        "json_huge_int": "9" * HUGE_INT_DIGITS,
    }
    assert content.count(flaw[kind]) == 1
    assert json.loads(content.replace(flaw[kind], "null")) == {**good, "category": None}
    # What a lax reader makes of each: NaN is accepted (not JSON) and the huge integer raises
    # (int_max_str_digits). The deep nesting depends on the Python version (3.13 parses it,
    # older ones raise RecursionError), which is why processing/core/answers.py counts the
    # depth before parsing.
    if kind == "json_nan":
        assert math.isnan(json.loads(content)["category"])
    elif kind == "json_huge_int":
        with pytest.raises(ValueError):
            json.loads(content)


async def test_timeout_fault_outlasts_the_client(local: Local) -> None:
    await local.control("POST", "/_emulator/config", {"timeout_seconds": 5})
    async with local.client(timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("slow [[fault:timeout]]"))
    assert time.monotonic() - started < 3


async def outcomes(local: Local, count: int) -> list[int]:
    token = (await local.credential.get_token(OPENAI_SCOPE)).token
    results = []
    for i in range(count):
        status, _ = await local.raw_chat({"Authorization": f"Bearer {token}"}, {"messages": user(f"row {i}")})
        results.append(status)
    return results


async def test_random_faults_are_reproducible_with_a_seed(local: Local) -> None:
    status, _ = await local.control("POST", "/_emulator/config", {"fault_rates": {"500": 0.5}, "seed": 7})
    assert status == 200
    first = await outcomes(local, 30)
    await local.control("POST", "/_emulator/reset")
    second = await outcomes(local, 30)
    # "500" is first in the draw order: a request fails when its draw falls below 0.5.
    draws = random.Random(7)
    assert first == second == [500 if draws.random() < 0.5 else 200 for _ in range(30)]
    assert 200 in first and 500 in first


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/_emulator/config", None), ("POST", "/_emulator/config", {"fault_rates": {"500": 1.0}}),
     ("GET", "/_emulator/stats", None), ("POST", "/_emulator/reset", None)],
)  # fmt: skip
async def test_the_control_api_refuses_a_request_without_the_stacks_header(
    local: Local, method: str, path: str, body: object
) -> None:
    status, answer = await local.control(method, path, body, header="")
    assert status == 401 and "requires the X-IDENTITY-HEADER header" in answer["error"]
    status, answer = await local.control(method, path, body, header="not-the-header")
    assert status == 403 and "does not match" in answer["error"]
    # Nothing changed, and health (the stack's start-up check) needs no header.
    assert local.emulator.config.fault_rates == {}
    status, _ = await local.control("GET", "/_emulator/health", header="")
    assert status == 200


async def test_bad_configuration_is_refused(local: Local) -> None:
    for body in ({"fault_rates": {"oops": 0.1}}, {"fault_rates": {"500": 0.7, "503": 0.7}}, {"rpm": -1}, {"x": 1}):
        status, answer = await local.control("POST", "/_emulator/config", body)
        assert status == 400, body
        assert answer["error"]
    status, config = await local.control("GET", "/_emulator/config")
    assert config["fault_rates"] == {} and config["rpm"] == 0


# --- latency, concurrency and stats --------------------------------------------------------------


async def test_latency_concurrency_and_stats(local: Local) -> None:
    await local.control("POST", "/_emulator/config", {"latency_ms": 200})
    async with local.client() as client:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(client.chat.completions.create(model=DEPLOYMENT, messages=user(f"q{i}")) for i in range(8))
        )
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.5  # concurrent, not one after another
    key_client = AsyncAzureOpenAI(
        azure_endpoint=local.emulator_app.url, api_version=API_VERSION, api_key="k", max_retries=0
    )
    async with key_client:
        with pytest.raises(openai.AuthenticationError):
            await key_client.chat.completions.create(model=DEPLOYMENT, messages=user("hi"))
    await local.raw_chat({}, {"messages": user("hi")})

    status, stats = await local.control("GET", "/_emulator/stats")
    assert status == 200
    assert stats["auth"] == {"bearer": 8, "api-key": 1, "none": 1}
    assert stats["requests"] == 10 and stats["answered"] == 8
    assert stats["by_status"] == {"200": 8, "401": 2}
    assert stats["max_in_flight"] == 8 and stats["in_flight"] == 0
    served = sum(a.usage.total_tokens for a in answers if a.usage)
    assert stats["tokens"]["total"] == served
    assert stats["deployments"][DEPLOYMENT]["answered"] == 8

    _, zeroed = await local.control("POST", "/_emulator/reset")
    assert zeroed["requests"] == 0 and zeroed["auth"] == {"bearer": 0, "api-key": 0, "none": 0}


def test_config_defaults_are_the_documented_ones() -> None:
    config = EmulatorConfig()
    assert config.deployments == ["gpt-5.6-luna", "gpt-4.1-mini"] and config.models == {}
    assert (config.rpm, config.tpm, config.latency_ms, config.default_max_tokens) == (0, 0, 0.0, 1000)
    assert config.timeout_seconds == 30.0


# --- model profiles -----------------------------------------------------------------------------


async def test_a_reasoning_profile_refuses_what_azure_reasoning_deployments_refuse(local: Local) -> None:
    client = local.client()
    try:
        with pytest.raises(openai.BadRequestError) as max_tokens:
            await client.chat.completions.create(model=REASONING_DEPLOYMENT, messages=user("hi"), max_tokens=50)
        with pytest.raises(openai.BadRequestError) as temperature:
            await client.chat.completions.create(
                model=REASONING_DEPLOYMENT, messages=user("hi"), max_completion_tokens=900, temperature=0.0
            )
        with pytest.raises(openai.BadRequestError) as effort:
            await client.chat.completions.create(
                model=STANDARD_DEPLOYMENT, messages=user("hi"), max_completion_tokens=50, reasoning_effort="low"
            )
    finally:
        await client.close()
    assert max_tokens.value.body == {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
    assert temperature.value.code == "unsupported_value" and temperature.value.param == "temperature"
    assert temperature.value.message.endswith(
        "'temperature' does not support 0.0 with this model. Only the default (1) value is supported."
    )
    assert (effort.value.code, effort.value.param) == ("unsupported_parameter", "reasoning_effort")


async def test_a_reasoning_profile_spends_reasoning_tokens_out_of_the_budget(local: Local) -> None:
    client = local.client()
    try:
        roomy = await client.chat.completions.create(
            model=REASONING_DEPLOYMENT, messages=user("hi"), max_completion_tokens=900, reasoning_effort="low"
        )
        medium = await client.chat.completions.create(
            model=REASONING_DEPLOYMENT, messages=user("hi"), max_completion_tokens=900
        )
        starved = await client.chat.completions.create(
            model=REASONING_DEPLOYMENT, messages=user("hi"), max_completion_tokens=300
        )
    finally:
        await client.close()
    content = expected_text("hi")
    assert roomy.choices[0].message.content == content and roomy.choices[0].finish_reason == "stop"
    assert roomy.usage is not None and roomy.usage.completion_tokens_details is not None
    assert roomy.usage.completion_tokens_details.reasoning_tokens == 128
    assert roomy.usage.completion_tokens == 128 + count(content)
    assert medium.usage is not None and medium.usage.completion_tokens_details is not None
    assert medium.usage.completion_tokens_details.reasoning_tokens == 512
    # A budget sized for the visible answer alone: all of it goes on reasoning, nothing is answered.
    assert (starved.choices[0].message.content, starved.choices[0].finish_reason) == ("", "length")
    assert starved.usage is not None and starved.usage.completion_tokens == 300
    assert roomy.model == REASONING_DEPLOYMENT


async def test_a_retired_model_answers_as_azure_does(local: Local) -> None:
    status, _ = await local.control("POST", "/_emulator/config", {"models": {STANDARD_DEPLOYMENT: {"retired": True}}})
    assert status == 200
    client = local.client()
    try:
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model=STANDARD_DEPLOYMENT, messages=user("hi"), max_tokens=5)
    finally:
        await client.close()
    assert err.value.body == {"code": "404", "message": "Resource not found"}


async def test_a_profile_names_the_model_behind_any_deployment_name(local: Local) -> None:
    status, _ = await local.control(
        "POST", "/_emulator/config", {"deployments": ["tickets"], "models": {"tickets": {"model": "gpt-5.6-luna"}}}
    )
    assert status == 200
    client = local.client()
    try:
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(model="tickets", messages=user("hi"), temperature=0.5)
        answer = await client.chat.completions.create(model="tickets", messages=user("hi"))
    finally:
        await client.close()
    assert err.value.code == "unsupported_value"
    assert answer.model == "gpt-5.6-luna"
    status, body = await local.control("POST", "/_emulator/config", {"models": {"tickets": {"thinks": True}}})
    assert status == 400 and "thinks" in json.dumps(body)
