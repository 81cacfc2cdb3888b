"""What each Azure OpenAI answer means for a row, through the real openai client and tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from localdev.openai_emulator.config import DEFAULT_DEPLOYMENTS, REASONING_DEPLOYMENT, STANDARD_DEPLOYMENT
from localdev.stack import Stack
from processing.adapters import azure_openai
from processing.adapters.clients import make_openai
from processing.adapters.identity import make_credential
from processing.core.errors import ConfigurationError, RowError, Throttled, TransientError
from processing.core.pipelines import Output, Pipeline, PipelineError
from processing.core.settings import Settings
from tests.integration.harness import app_settings, emulated_text, emulator

pytestmark = pytest.mark.integration

TEXT = Pipeline(name="t", prompt="{x}", max_tokens=50)


@pytest.fixture
async def settings(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Settings]:
    values = app_settings(stack, AZURE_OPENAI_MAX_RETRIES="0")
    for name, value in values.items():
        monkeypatch.setenv(name, value)  # azure-identity reads IDENTITY_ENDPOINT itself
    yield Settings.from_env(values)


@pytest.fixture
async def call(settings: Settings):
    credential = make_credential(settings)
    client = make_openai(settings, credential)

    async def complete(text: str, pipeline: Pipeline = TEXT, deployment: str = REASONING_DEPLOYMENT, **kw):
        return await azure_openai.complete(client, pipeline, deployment, text, **kw)

    yield complete
    await client.close()
    await credential.close()


async def test_an_answer_carries_text_and_usage(call):
    answer = await call("hello")
    assert answer.value == emulated_text("hello")
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0


@contextlib.asynccontextmanager
async def profiles(stack: Stack, models: dict[str, dict[str, Any]]) -> AsyncIterator[None]:
    """Extra emulator deployments with these model profiles, for one test."""
    azure_openai.forget_families()
    await emulator(
        stack, "POST", "/_emulator/config", {"deployments": [*DEFAULT_DEPLOYMENTS, *models], "models": models}
    )
    try:
        yield
    finally:
        await emulator(stack, "POST", "/_emulator/config", {"deployments": list(DEFAULT_DEPLOYMENTS)})
        azure_openai.forget_families()


async def _rejected(stack: Stack, deployment: str) -> int:
    stats = await emulator(stack, "GET", "/_emulator/stats")
    return stats["deployments"].get(deployment, {}).get("rejected_parameters", 0)


@pytest.mark.parametrize("deployment", [REASONING_DEPLOYMENT, STANDARD_DEPLOYMENT])
async def test_both_model_families_answer_with_the_parameters_they_take(call, stack: Stack, deployment):
    answer = await call("hello", deployment=deployment)
    assert answer.value == emulated_text("hello")
    # The default's name says it reasons: no 400 on the way, and its thinking is counted.
    assert await _rejected(stack, deployment) == 0
    assert answer.reasoning_tokens == (512 if deployment == REASONING_DEPLOYMENT else 0)
    assert answer.completion_tokens > answer.reasoning_tokens


async def test_an_unknown_family_is_learnt_from_one_400_and_remembered(call, stack: Stack):
    # A name that says nothing, serving a reasoning model: `auto` first asks as a standard model.
    async with profiles(stack, {"tickets": {"model": "gpt-5.6-luna"}}):
        first = await call("one", deployment="tickets", family="auto")
        assert await _rejected(stack, "tickets") == 1  # temperature 0.0: unsupported_value, once
        second = await call("two", deployment="tickets", family="auto")
        assert await _rejected(stack, "tickets") == 1  # remembered: no second 400
    assert (first.value, second.value) == (emulated_text("one"), emulated_text("two"))
    assert first.reasoning_tokens == second.reasoning_tokens == 512


async def test_a_standard_model_configured_as_reasoning_is_corrected_too(call, stack: Stack):
    pipeline = replace(TEXT, reasoning_effort="low")
    async with profiles(stack, {"classic": {"model": "gpt-4.1", "reasoning": False}}):
        answer = await call("hi", pipeline, deployment="classic", family="reasoning")
        again = await call("ho", pipeline, deployment="classic", family="reasoning")
        assert await _rejected(stack, "classic") == 1  # reasoning_effort: unsupported_parameter, once
    assert (answer.value, again.value) == (emulated_text("hi"), emulated_text("ho"))


async def test_an_empty_answer_cut_at_length_says_to_raise_the_budget(call):
    starved = replace(TEXT, max_tokens=300, reasoning_budget=0)
    with pytest.raises(RowError, match=r"gave no answer: raise reasoning_budget \(now 0\)") as err:
        await call("think hard", starved)
    assert err.value.code == "length"


async def test_a_retired_model_is_a_configuration_error_that_says_so(call, stack: Stack):
    async with profiles(stack, {"old-model": {"model": "gpt-4o-mini", "retired": True}}):
        with pytest.raises(PipelineError, match="model version is retired") as err:
            await call("x", deployment="old-model")
    assert "deploy a current model" in err.value.fix


async def test_a_json_schema_answer_is_parsed(call):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    pipeline = replace(TEXT, output=Output("json", column="", schema={**schema, "additionalProperties": False}))
    answer = await call("count", pipeline)
    assert isinstance(answer.value, dict) and isinstance(answer.value["n"], int)


async def test_429_is_throttled_with_the_servers_delay(call):
    with pytest.raises(Throttled) as err:
        await call("busy [[fault:429]]")
    assert 0 < err.value.retry_after <= 60


@pytest.mark.parametrize("fault", ["500", "503", "drop"])
async def test_server_errors_and_dropped_connections_are_transient(call, fault):
    with pytest.raises(TransientError):
        await call(f"x [[fault:{fault}]]")


@pytest.mark.parametrize(
    ("fault", "code"), [("content_filter", "content_filter"), ("context_length", "context_length_exceeded")]
)
async def test_content_filter_and_context_length_are_permanent_row_errors(call, fault, code):
    with pytest.raises(RowError) as err:
        await call(f"x [[fault:{fault}]]")
    assert err.value.code == code


async def test_an_unknown_deployment_is_a_configuration_error(call):
    with pytest.raises(ConfigurationError, match="no deployment 'gpt-9'"):
        await call("x", deployment="gpt-9")


async def test_a_token_the_resource_refuses_is_transient_not_fatal(settings: Settings, stack: Stack):
    # A storage-audience token is refused like a principal without the role: 401. Right after
    # `azd up` that is role propagation, so the row is retried, never failing the job.
    from azure.identity.aio import get_bearer_token_provider
    from openai import AsyncAzureOpenAI

    credential = make_credential(settings)
    client = AsyncAzureOpenAI(
        azure_endpoint=settings.openai_endpoint,
        api_version=settings.openai_api_version,
        azure_ad_token_provider=get_bearer_token_provider(credential, "https://storage.azure.com/.default"),
        max_retries=0,
    )
    try:
        with pytest.raises(TransientError, match=r"refused the token \(401"):
            await azure_openai.complete(client, TEXT, REASONING_DEPLOYMENT, "x")
    finally:
        await client.close()
        await credential.close()


async def test_an_api_key_is_a_configuration_error_naming_the_setting(settings: Settings):
    keyed = replace(settings, openai_api_key="not-a-real-key-0000")
    credential = make_credential(keyed)
    client = make_openai(keyed, credential)
    try:
        with pytest.raises(ConfigurationError, match="unset AZURE_OPENAI_API_KEY"):
            await azure_openai.complete(client, TEXT, REASONING_DEPLOYMENT, "x", using_key=True)
    finally:
        await client.close()
        await credential.close()


async def test_a_429_is_never_slept_on_inside_the_call(call, stack: Stack):
    from tests.integration.harness import emulator

    before = (await emulator(stack, "GET", "/_emulator/stats"))["requests"]
    with pytest.raises(Throttled):
        await call("slow down [[fault:429]]", retries=2)
    after = (await emulator(stack, "GET", "/_emulator/stats"))["requests"]
    assert after - before == 1  # one request: the row goes back to the queue instead


async def test_a_brief_server_error_is_retried_within_the_call(call):
    answer = await call("blip [[fault:503:1]]", retries=1)
    assert answer.value == emulated_text("blip [[fault:503:1]]")


JSON = replace(
    TEXT,
    output=Output(
        "json",
        column="",
        schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
            "additionalProperties": False,
        },
    ),
)


async def _requests(stack: Stack) -> int:
    from tests.integration.harness import emulator

    return (await emulator(stack, "GET", "/_emulator/stats"))["requests"]


async def test_an_answer_that_is_not_json_is_asked_for_again(call, stack: Stack):
    before = await _requests(stack)
    answer = await call("count [[fault:invalid_json:1]]", JSON)
    assert isinstance(answer.value["n"], int)
    assert await _requests(stack) - before == 2


async def test_an_answer_that_is_never_json_is_a_row_error_after_a_bounded_number_of_tries(call, stack: Stack):
    before = await _requests(stack)
    with pytest.raises(RowError, match=r"not valid JSON.*asked 3 times") as err:
        await call("count [[fault:invalid_json]]", JSON, retries=2)
    assert err.value.code == "invalid_json"
    assert await _requests(stack) - before == azure_openai.JSON_TRIES


async def test_the_limiter_hears_429s_and_the_remaining_budget(call, stack: Stack):
    from processing.core.rate_limiter import RateLimiter
    from tests.integration.harness import emulator

    limiter = RateLimiter(rpm=6000)
    with pytest.raises(Throttled):
        await call("slow [[fault:429]]", limiter=limiter)
    assert limiter.stats["throttled"] == 1 and limiter.factor < 1
    # The emulator's quota nearly spent: its x-ratelimit-remaining-requests header reaches 0.
    await emulator(stack, "POST", "/_emulator/config", {"rpm": 2})
    try:
        await call("one", limiter=limiter)
        await call("two", limiter=limiter)
    finally:
        await emulator(stack, "POST", "/_emulator/config", {"rpm": 0})
    assert limiter.stats["exhausted"] >= 1


async def test_a_reasoning_model_that_takes_a_standard_request_gets_room_to_think(call, stack: Stack):
    # temperature 1 is a reasoning model's default, so no 400 tells it apart: its empty answer,
    # all reasoning, does; the row is asked again with the reasoning budget, later rows at once.
    warm = replace(TEXT, temperature=1.0, max_tokens=300)
    async with profiles(stack, {"quiet-thinker": {"model": "o4-mini"}}):
        before = (await emulator(stack, "GET", "/_emulator/stats"))["requests"]
        first = await call("one", warm, deployment="quiet-thinker")
        second = await call("two", warm, deployment="quiet-thinker")
        after = (await emulator(stack, "GET", "/_emulator/stats"))["requests"]
    assert (first.value, second.value) == (emulated_text("one"), emulated_text("two"))
    assert after - before == 3  # one starved answer, then two with room
