"""Which parameters each model family is sent, and which family a 400 from Azure asks for."""

from __future__ import annotations

import pytest

from processing.core.model_family import Family, budget, guess, next_family, request_params, resolve
from processing.core.pipelines import Pipeline

TRIAGE = Pipeline(name="triage", prompt="{x}", temperature=0.0, max_tokens=300)


@pytest.mark.parametrize(
    ("deployment", "family"),
    [
        ("gpt-5.6-luna", Family.REASONING),
        ("o4-mini", Family.REASONING),
        ("GPT-5-mini", Family.REASONING),
        ("gpt-5.1-chat", Family.STANDARD),
        ("gpt-4.1-mini", Family.STANDARD),
        ("tickets", Family.STANDARD),
        ("openai-prod", Family.STANDARD),
    ],
)
def test_auto_guesses_from_the_deployment_name(deployment, family):
    assert guess(deployment) == family
    assert resolve("auto", deployment) == resolve("", deployment) == family


def test_a_configured_family_beats_the_name():
    assert resolve("standard", "gpt-5.6-luna") == Family.STANDARD
    assert resolve("reasoning", "tickets") == Family.REASONING


def test_a_reasoning_model_gets_no_temperature_and_room_to_think():
    params = request_params(TRIAGE, Family.REASONING)
    assert params == {"max_completion_tokens": 300 + TRIAGE.reasoning_budget}
    effort = Pipeline(name="t", prompt="{x}", max_tokens=100, reasoning_effort="low", reasoning_budget=500)
    assert request_params(effort, Family.REASONING) == {"max_completion_tokens": 600, "reasoning_effort": "low"}
    assert budget(effort, Family.REASONING) == 600 and budget(effort, Family.STANDARD) == 100


def test_a_standard_model_gets_the_answer_budget_and_the_temperature_never_the_effort():
    effort = Pipeline(name="t", prompt="{x}", max_tokens=100, temperature=0.3, reasoning_effort="high")
    assert request_params(effort, Family.STANDARD) == {"max_completion_tokens": 100, "temperature": 0.3}
    assert request_params(effort, Family.LEGACY) == {"max_tokens": 100, "temperature": 0.3}


TEMPERATURE = (
    "Unsupported value: 'temperature' does not support 0.0 with this model. Only the default (1) value is supported."
)
MAX_TOKENS = (
    "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
)


@pytest.mark.parametrize(
    ("family", "code", "param", "message", "expected"),
    [
        (Family.STANDARD, "unsupported_value", "temperature", TEMPERATURE, Family.REASONING),
        (Family.LEGACY, "unsupported_parameter", "max_tokens", MAX_TOKENS, Family.REASONING),
        (
            Family.STANDARD,
            "unsupported_parameter",
            "temperature",
            "Unsupported parameter: 'temperature'",
            Family.REASONING,
        ),
        (Family.REASONING, "unsupported_parameter", "reasoning_effort", "not supported", Family.STANDARD),
        (Family.STANDARD, "", "", "Unrecognized request argument supplied: max_completion_tokens", Family.LEGACY),
        # Already the family the 400 asks for, or a 400 about something else: no switch.
        (Family.REASONING, "unsupported_value", "temperature", TEMPERATURE, None),
        (Family.STANDARD, "invalid_value", "reasoning_effort", "Invalid value: 'xhigh'", None),
        (Family.STANDARD, "content_filter", "prompt", "filtered", None),
        (Family.STANDARD, "BadRequest", "messages", "messages must be an array", None),
    ],
)
def test_the_400_azure_answers_a_wrong_family_names_the_right_one(family, code, param, message, expected):
    assert next_family(family, code, param, message) == expected
