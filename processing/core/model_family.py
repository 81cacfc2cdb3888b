"""Which request parameters a deployment accepts, by model family, and what a 400 says about it.

Two families answer chat completions on Azure OpenAI today, and they disagree on parameters:

- standard (gpt-4o, gpt-4.1, ...): `max_completion_tokens` and any `temperature`;
- reasoning (o-series, gpt-5 family): `max_completion_tokens` only (Azure answers 400
  `unsupported_parameter` to `max_tokens`), `temperature` only at its default of 1 (400
  `unsupported_value` to any other), and `reasoning_effort`. Reasoning tokens are spent out of
  `max_completion_tokens`, so the budget sent is the pipeline's answer budget (`max_tokens`)
  plus its reasoning budget (`reasoning_budget`).

A third shape, legacy (`max_tokens` and `temperature`), is only ever reached by the fallback:
API versions before 2024-09-01-preview do not know `max_completion_tokens` and answer
"Unrecognized request argument supplied: max_completion_tokens".

Whether a deployment is a reasoning model is configured (`AZURE_OPENAI_MODEL_FAMILY`, or a
pipeline's `model_family`): `auto` guesses from the deployment's name, and `next_family`
turns the 400 Azure answers to a wrong guess into the family to ask again with.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from processing.core.pipelines import Pipeline


class Family(StrEnum):
    AUTO = "auto"
    REASONING = "reasoning"
    STANDARD = "standard"
    LEGACY = "legacy"  # reached only by the fallback, never configured


CONFIGURABLE = (Family.AUTO, Family.REASONING, Family.STANDARD)

# Deployment names that are reasoning models when nobody said otherwise: azd names a
# deployment after its model (infra/main.bicep), e.g. gpt-5.6-luna, o4-mini. gpt-5*-chat are not.
_REASONING_NAME = re.compile(r"^(o\d|gpt-5)(?!.*-chat)", re.IGNORECASE)


def guess(deployment: str) -> Family:
    return Family.REASONING if _REASONING_NAME.match(deployment) else Family.STANDARD


def resolve(configured: str, deployment: str) -> Family:
    """The family to try first: the configured one, or for `auto` the name's guess."""
    family = Family(configured or Family.AUTO)
    return guess(deployment) if family == Family.AUTO else family


def budget(pipeline: Pipeline, family: Family) -> int:
    """The completion tokens asked for: the answer's, plus the reasoning's on a reasoning model."""
    if family == Family.REASONING:
        return pipeline.max_tokens + pipeline.reasoning_budget
    return pipeline.max_tokens


def request_params(pipeline: Pipeline, family: Family) -> dict[str, Any]:
    """The chat-completions parameters that `family` accepts for `pipeline`."""
    if family == Family.REASONING:
        params: dict[str, Any] = {"max_completion_tokens": budget(pipeline, family)}
        if pipeline.reasoning_effort:
            params["reasoning_effort"] = pipeline.reasoning_effort
        return params
    if family == Family.LEGACY:
        return {"max_tokens": pipeline.max_tokens, "temperature": pipeline.temperature}
    return {"max_completion_tokens": pipeline.max_tokens, "temperature": pipeline.temperature}


def next_family(family: Family, code: str, param: str, message: str) -> Family | None:
    """The family a 400 asks for instead of `family`, or None when the 400 is about something else.

    Azure's bodies: `unsupported_parameter` (param `max_tokens`, or `temperature` on some
    reasoning models), `unsupported_value` (param `temperature`: "Only the default (1) value is
    supported"), and on older API versions a null code with "Unrecognized request argument
    supplied: <name>".
    """
    named = param or _unrecognized(message)
    if code not in ("unsupported_parameter", "unsupported_value") and not _unrecognized(message):
        return None
    if named in ("temperature", "max_tokens") and family != Family.REASONING:
        return Family.REASONING
    if named == "reasoning_effort" and family == Family.REASONING:
        return Family.STANDARD
    if named == "max_completion_tokens" and family != Family.LEGACY:
        return Family.LEGACY
    return None


def _unrecognized(message: str) -> str:
    match = re.search(r"Unrecognized request argument supplied: (\w+)", message)
    return match.group(1) if match else ""
