"""One Azure OpenAI chat completion per row, and what each failure means.

The openai client is built with `max_retries=0`: it would otherwise sleep on a 429 for up
to two minutes per retry. Here a 429 is never slept on: it becomes `Throttled` and the row
goes back to the queue with the server's delay, so quota pressure costs no dequeue attempt
and holds no worker. 5xx, timeouts and dropped connections get a few quick retries.

The request's parameters follow the deployment's model family (processing/core/model_family.py).
A 400 that says the family was wrong (`temperature` or `max_tokens` unsupported, and so on) is
not the row's fault: the row is asked again at once with the parameters that 400 asks for, and
the process remembers the family of that deployment, so later rows never see that 400.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

import openai
from azure.core.exceptions import ClientAuthenticationError
from openai import AsyncAzureOpenAI

from processing.adapters import telemetry
from processing.core import model_family
from processing.core.answers import parse_answer
from processing.core.errors import ConfigurationError, RowError, Throttled, TransientError
from processing.core.model_family import Family
from processing.core.pipelines import Pipeline, PipelineError
from processing.core.rate_limiter import RateLimiter, estimate_tokens
from processing.core.records import Spend

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 5.0
# A JSON-schema answer that does not parse is asked for again this many times in all, then
# becomes a row error: a model that keeps answering badly must not loop through the queue.
JSON_TRIES = 3


@dataclass(frozen=True)
class Answer:
    value: Any  # str for text pipelines, dict for JSON-schema pipelines
    prompt_tokens: int
    completion_tokens: int  # reasoning tokens included, as Azure counts (and bills) them
    reasoning_tokens: int = 0


# The family each deployment turned out to be, learnt from a 400 (this process's memory:
# Functions keeps a worker process for many invocations).
_families: dict[str, Family] = {}


class WrongFamily(Exception):
    """Azure's 400 says the deployment is of another family: ask again as `family`."""

    def __init__(self, family: Family, message: str) -> None:
        super().__init__(message)
        self.family = family


def family_for(deployment: str, configured: str) -> Family:
    """The family to ask `deployment` as: what a 400 taught this process, else the configured one."""
    return _families.get(deployment) or model_family.resolve(configured, deployment)


def forget_families() -> None:
    """Forget what 400s taught (tests start each case from the configuration)."""
    _families.clear()


def retry_after(headers: Any) -> float:
    """Azure OpenAI sends `retry-after-ms` and `retry-after`; prefer the precise one."""
    if headers is None:
        return DEFAULT_RETRY_AFTER
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return DEFAULT_RETRY_AFTER


def _error_object(exc: openai.APIStatusError) -> dict[str, Any]:
    # openai puts Azure's inner `error` object in `body` (or the whole body, if it has none).
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body)
    return err if isinstance(err, dict) else {}


def _error_code(exc: openai.APIStatusError) -> str:
    return str(exc.code or _error_object(exc).get("code") or "")


def _server_message(exc: openai.APIStatusError) -> str:
    return str(_error_object(exc).get("message") or exc)


def _error_param(exc: openai.APIStatusError) -> str:
    return str(exc.param or _error_object(exc).get("param") or "")


def build_messages(pipeline: Pipeline, user: str) -> list[dict[str, str]]:
    messages = []
    if pipeline.system_prompt:
        messages.append({"role": "system", "content": pipeline.system_prompt})
    messages.append({"role": "user", "content": user})
    return messages


async def complete(
    client: AsyncAzureOpenAI,
    pipeline: Pipeline,
    deployment: str,
    user: str,
    *,
    using_key: bool = False,
    retries: int = 0,
    limiter: RateLimiter | None = None,
    family: str = "auto",
    spend: Spend | None = None,
) -> Answer:
    """One answer; 5xx, timeouts and dropped connections are retried `retries` times in-call.

    Every attempt first takes its turn from `limiter` (which may raise Throttled instead of
    waiting long); a 429 slows the limiter down and is raised as Throttled, never slept on.
    `family` is the configured model family (auto, reasoning, standard); a 400 that says it is
    wrong is answered by one more attempt as the family it names.

    `spend`, if given, counts every request sent and the tokens of every answer Azure billed,
    as they happen: a row that ends in an exception still tells what it spent.
    """
    spend = Spend() if spend is None else spend
    messages = build_messages(pipeline, user)
    failures = 0
    bad_json = 0
    switched = False
    while True:
        current = family_for(deployment, family)
        # Azure admits a request by its prompt plus the completion budget it asks for.
        cost = estimate_tokens(messages, model_family.budget(pipeline, current))
        if limiter:
            await limiter.acquire(cost)
        try:
            spend.requests += 1
            with telemetry.model_call(deployment):  # a span, its duration and its 429 per attempt
                answer, headers = await _complete_once(
                    client, pipeline, deployment, messages, using_key=using_key, family=current, spend=spend
                )
        except WrongFamily as exc:
            if switched:
                raise RowError(str(exc), code="bad_request") from None
            switched = True
            if _families.get(deployment) != exc.family:
                log.warning(
                    "deployment %s answered as a %s model would not (%s); asking it as a %s model from now on. "
                    "Set AZURE_OPENAI_MODEL_FAMILY or the pipeline's model_family to skip this first 400",
                    deployment,
                    current,
                    exc,
                    exc.family,
                )
                _families[deployment] = exc.family
            continue
        except Throttled as exc:
            if limiter:
                limiter.on_throttled(exc.retry_after)
            raise
        except TransientError:
            if failures == retries:
                raise
            # Short, jittered backoff: longer outages are the queue's job (visibilityTimeout).
            await asyncio.sleep(min(8.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0))
            failures += 1
            continue
        except RowError as exc:
            if exc.code != "invalid_json":
                raise  # content filter, context length, ...: asking again cannot help
            bad_json += 1
            if bad_json >= JSON_TRIES:
                raise RowError(f"{exc} (asked {bad_json} times)", code=exc.code) from None
            continue
        if limiter:
            limiter.on_answer(headers, cost)
        if answer.reasoning_tokens and current != Family.REASONING and deployment not in _families:
            # It reasons although it took a standard request: give later rows room to think.
            log.warning("deployment %s reasons (it spent reasoning tokens): asking it as a reasoning model", deployment)
            _families[deployment] = Family.REASONING
        return answer


async def _complete_once(
    client: AsyncAzureOpenAI,
    pipeline: Pipeline,
    deployment: str,
    messages: list[dict[str, str]],
    *,
    using_key: bool,
    family: Family = Family.STANDARD,
    spend: Spend | None = None,
) -> tuple[Answer, Any]:
    kwargs: dict[str, Any] = model_family.request_params(pipeline, family)
    if pipeline.output.kind == "json":
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "row", "schema": pipeline.output.schema, "strict": True},
        }
    try:
        # The raw response carries x-ratelimit-remaining-*, which the limiter reads.
        raw = await client.chat.completions.with_raw_response.create(
            model=deployment,
            messages=messages,  # type: ignore[arg-type]
            **kwargs,
        )
        response = raw.parse()
    except openai.RateLimitError as exc:
        raise Throttled(retry_after(exc.response.headers), f"429 from Azure OpenAI: {_server_message(exc)}") from None
    except openai.BadRequestError as exc:
        code = _error_code(exc)
        message = _server_message(exc)
        other = model_family.next_family(family, code, _error_param(exc), message)
        if other is not None:
            raise WrongFamily(other, f"400 {code or 'BadRequest'}: {message}") from None
        if code in ("content_filter", "context_length_exceeded"):
            raise RowError(f"{code}: {_server_message(exc)}", code=code) from None
        raise RowError(
            f"Azure OpenAI rejected the request (400 {code}): {_server_message(exc)}", code="bad_request"
        ) from None
    except openai.AuthenticationError as exc:
        code = _error_code(exc)
        if using_key or code == "AuthenticationTypeDisabled":
            # Retrying cannot help: the resource accepts Entra ID tokens only.
            raise ConfigurationError(
                f"Azure OpenAI refused to authenticate (401 {code}): {_server_message(exc)}. AZURE_OPENAI_API_KEY "
                "is set, but this resource accepts only Entra ID tokens: unset AZURE_OPENAI_API_KEY so the app "
                "uses its managed identity"
            ) from None
        # 401 PermissionDenied is what Azure OpenAI answers while a new role assignment is
        # still propagating (minutes after `azd up`): worth retrying.
        hint = (
            ". The identity needs the Cognitive Services OpenAI User role on the account; a new assignment "
            "takes up to 10 minutes to apply"
            if code == "PermissionDenied"
            else ""  # an expired or malformed token: the next attempt gets a fresh one
        )
        raise TransientError(f"Azure OpenAI refused the token (401 {code}): {_server_message(exc)}{hint}") from None
    except openai.PermissionDeniedError as exc:
        raise TransientError(
            f"Azure OpenAI denied access (403 {_error_code(exc)}): {_server_message(exc)}. Check the role "
            "assignment and the account's network rules"
        ) from None
    except openai.NotFoundError as exc:
        where = f"pipelines/{pipeline.name}.toml (deployment)" if pipeline.deployment else "AZURE_OPENAI_DEPLOYMENT"
        if _error_code(exc) == "404":
            # Not DeploymentNotFound: the deployment exists but cannot answer. Azure answers
            # exactly this ("Resource not found") once the deployment's model version is retired.
            raise PipelineError(
                f"Azure OpenAI answered 404 ({_server_message(exc)}) for deployment {deployment!r}: the deployment "
                "exists but does not serve chat completions. Azure answers this when the deployment's model "
                "version is retired (the portal shows 'Retired model version' on the deployment), or when "
                "AZURE_OPENAI_API_VERSION is not a version it serves",
                where=where,
                fix="deploy a current model (docs/deploy.md, The model: `azd env set AZURE_OPENAI_MODEL ...` and "
                f"`azd up`) and point {where} at it, or correct AZURE_OPENAI_API_VERSION; then upload the file again",
            ) from None
        raise PipelineError(
            f"Azure OpenAI has no deployment {deployment!r} (404 {_error_code(exc)}): {_server_message(exc)}",
            where=where,
            fix=f"set {where} to the name of a deployment that exists on the Azure OpenAI account "
            "(Azure portal: the account's Deployments), then upload the file again",
        ) from None
    except openai.APIStatusError as exc:  # 5xx and anything else with a status
        raise TransientError(f"Azure OpenAI answered {exc.status_code}: {_server_message(exc)}") from None
    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
        raise TransientError(f"could not reach Azure OpenAI: {exc}") from None
    except ClientAuthenticationError as exc:
        # The managed identity endpoint fails now and then; a token failure is transient.
        raise TransientError(f"could not get a token from the managed identity: {exc.message}") from None

    choice = response.choices[0]
    usage = response.usage
    prompt_tokens = usage.prompt_tokens if usage else 0
    completion_tokens = usage.completion_tokens if usage else 0
    details = usage.completion_tokens_details if usage else None
    reasoning_tokens = (details.reasoning_tokens or 0) if details else 0
    prompt_details = usage.prompt_tokens_details if usage else None
    cached_tokens = (prompt_details.cached_tokens or 0) if prompt_details else 0
    if spend is not None:
        # Billed from here on, whatever becomes of the answer (filtered, cut off, not the schema).
        spend.bill(prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens)
    content = choice.message.content or ""
    if choice.finish_reason == "content_filter":
        raise RowError("content_filter: the answer was withheld by the content filter", code="content_filter")
    if choice.finish_reason == "length" and not content.strip():
        if reasoning_tokens and family != Family.REASONING:
            # A reasoning model that took our standard parameters (temperature 1 is its default)
            # and thought through a budget sized for the answer alone: ask again with room to think.
            raise WrongFamily(Family.REASONING, f"spent {reasoning_tokens} reasoning tokens and gave no answer")
        raise RowError(_empty_at_length(pipeline, family, completion_tokens, reasoning_tokens), code="length")
    if pipeline.output.kind == "text":
        return Answer(content, prompt_tokens, completion_tokens, reasoning_tokens), raw.headers
    if choice.finish_reason == "length":
        raise RowError(
            f"the answer was cut off at max_tokens={pipeline.max_tokens} before the JSON was complete; "
            "raise max_tokens in the pipeline",
            code="length",
        )
    value = parse_answer(content, pipeline.output.schema)  # strict JSON, checked against the schema
    return Answer(value, prompt_tokens, completion_tokens, reasoning_tokens), raw.headers


def _empty_at_length(pipeline: Pipeline, family: Family, spent: int, reasoning: int) -> str:
    where = f"pipelines/{pipeline.name}.toml"
    if family == Family.REASONING:
        return (
            f"the model used its whole budget of {model_family.budget(pipeline, family)} completion tokens "
            f"({reasoning} of them reasoning) and gave no answer: raise reasoning_budget "
            f"(now {pipeline.reasoning_budget}) or max_tokens (now {pipeline.max_tokens}) in {where}, "
            "or lower reasoning_effort"
        )
    return (
        f"the answer was cut off at max_tokens={pipeline.max_tokens} before any text ({spent} tokens spent): "
        f"raise max_tokens in {where}"
    )
