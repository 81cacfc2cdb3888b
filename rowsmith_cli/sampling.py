"""`rowsmith estimate --sample N`: the first N rows sent to the model as the app sends them.

How long an answer is, and how long a reasoning model thinks, is known only once it answered:
the estimate without a sample can only budget them at their maximum. A sample asks the
deployment through the app's own code (processing/adapters/clients.py's keyless client,
azure_openai.complete with the pipeline's parameters and model family) and reads the usage the
service bills, every billed attempt included as the job counts it (a JSON answer asked for
again, say), which the estimate extrapolates to the whole file. The sample's requests are real
ones: billed, and counted against the deployment's quota.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from processing.adapters import azure_openai
from processing.adapters.clients import make_openai, quiet_sdk_loggers
from processing.adapters.identity import make_credential
from processing.core.errors import RowError, Throttled, TransientError
from processing.core.pipelines import Pipeline
from processing.core.records import Spend
from processing.core.settings import Settings
from rowsmith_cli.settings import identity_environment

# A 429 is waited out (at most this long each, this many times a row): a sample is a handful of rows.
MAX_THROTTLE_WAIT = 60.0
THROTTLE_TRIES = 5


@dataclass
class Sample:
    rows: int = 0  # asked
    answered: int = 0
    requests: int = 0  # sent, retries included
    prompt_tokens: int = 0  # billed, as the service reported them
    counted_prompt_tokens: int = 0  # the same rows' prompts by the estimate's own counter, once each
    completion_tokens: int = 0  # reasoning included, as billed
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, served from the prompt cache
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "answered": self.answered,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "errors": dict(self.errors),
        }


async def _ask(client: Any, pipeline: Pipeline, deployment: str, user: str, settings: Settings, *, spend: Spend) -> Any:
    for _ in range(THROTTLE_TRIES):
        try:
            return await azure_openai.complete(
                client,
                pipeline,
                deployment,
                user,
                using_key=bool(settings.openai_api_key),
                retries=settings.openai_max_retries,
                family=pipeline.model_family or settings.openai_model_family,
                spend=spend,
            )
        except Throttled as exc:
            await asyncio.sleep(min(MAX_THROTTLE_WAIT, exc.retry_after))
    raise TransientError(f"throttled {THROTTLE_TRIES} times")


async def sample(
    pipeline: Pipeline, deployment: str, rows: list[tuple[str, int]], env: Mapping[str, str]
) -> tuple[Sample, str]:
    """Ask `deployment` each of `rows` (user message, counted prompt tokens); returns the usage
    and the endpoint asked. A row the model refuses (content filter, length...) counts as an
    error of its code; a missing endpoint or a refused credential is a ConfigurationError."""
    settings = Settings.from_env(env, storage=False)
    quiet_sdk_loggers()
    with identity_environment(env):
        credential = make_credential(settings)
    client = make_openai(settings, credential)
    found = Sample()
    try:
        for user, counted in rows:
            found.rows += 1
            spend = Spend()  # every billed attempt, a row that then failed included
            try:
                await _ask(client, pipeline, deployment, user, settings, spend=spend)
                found.answered += 1
            except RowError as exc:
                found.errors[exc.code] += 1
            except TransientError:
                found.errors["transient"] += 1
            found.requests += spend.requests
            found.prompt_tokens += spend.prompt
            # Once per row: what the service billed beyond it (a schema's share, a prompt sent
            # again) is what the estimate adds per row.
            found.counted_prompt_tokens += counted
            found.completion_tokens += spend.completion
            found.reasoning_tokens += spend.reasoning
            found.cached_tokens += spend.cached
    finally:
        await client.close()
        await credential.close()
    return found, settings.openai_endpoint
