"""Model profiles: what model a deployment serves, and which parameters that model accepts.

A deployment's profile comes from the config's `models` (`{"<deployment>": {"model": ...,
"reasoning": ..., "retired": ...}}`, every field optional); what is not given follows from
the model name, which defaults to the deployment's name: `o<digit>...` and `gpt-5...` (except
`...-chat`) are reasoning models, anything else is a standard one; nothing is retired unless
configured so.

A reasoning profile behaves as Azure's reasoning deployments do:
- `max_tokens` is a 400 `unsupported_parameter` ("Use 'max_completion_tokens' instead");
- `temperature` other than 1 is a 400 `unsupported_value` ("Only the default (1) value is
  supported");
- it spends `REASONING_TOKENS[reasoning_effort]` (default effort: medium) out of
  `max_completion_tokens` before it answers: a budget that leaves no room for the answer
  returns an empty answer cut at `length` (localdev.openai_emulator.answers).
A standard profile takes either token parameter and any temperature, and answers a
`reasoning_effort` with a 400 `unsupported_parameter`.

A retired profile answers every request 404 `{"code": "404", "message": "Resource not
found"}`, which is what Azure answers on a deployment whose model version was retired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from localdev.openai_emulator.errors import error_body

REASONING_TOKENS = {"none": 0, "minimal": 16, "low": 128, "medium": 512, "high": 2048, "xhigh": 4096}
DEFAULT_EFFORT = "medium"
PROFILE_FIELDS = ("model", "reasoning", "retired")
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)(?!.*-chat)", re.IGNORECASE)


@dataclass(frozen=True)
class ModelProfile:
    model: str
    reasoning: bool
    retired: bool = False


def profile_for(deployment: str, models: dict[str, dict[str, Any]]) -> ModelProfile:
    given = models.get(deployment, {})
    model = str(given.get("model") or deployment)
    reasoning = given.get("reasoning")
    return ModelProfile(
        model=model,
        reasoning=bool(_REASONING_MODEL.match(model)) if reasoning is None else bool(reasoning),
        retired=bool(given.get("retired", False)),
    )


def validate_models(models: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ValueError('models must be an object of deployment: {"model", "reasoning", "retired"}')
    for name, given in models.items():
        unknown = set(given) - set(PROFILE_FIELDS)
        if unknown:
            raise ValueError(f"models.{name}: unknown fields {sorted(unknown)}; known: {', '.join(PROFILE_FIELDS)}")
        for flag in ("reasoning", "retired"):
            if flag in given and given[flag] is not None and not isinstance(given[flag], bool):
                raise ValueError(f"models.{name}.{flag} must be true, false or null")
    return {str(k): dict(v) for k, v in models.items()}


def _unsupported(param: str, code: str, message: str) -> dict[str, Any]:
    body = error_body(code, message, param=param, type="invalid_request_error")
    # Azure's order: message, type, param, code (clients only read the fields).
    return {"error": {k: body["error"][k] for k in ("message", "type", "param", "code")}}


def rejected(profile: ModelProfile, body: dict[str, Any]) -> dict[str, Any] | None:
    """The 400 body this model answers to `body`'s parameters, or None when it accepts them."""
    if profile.reasoning:
        if body.get("max_tokens") is not None:
            return _unsupported(
                "max_tokens",
                "unsupported_parameter",
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return _unsupported(
                "temperature",
                "unsupported_value",
                f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                "Only the default (1) value is supported.",
            )
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in REASONING_TOKENS:
            supported = ", ".join(f"'{e}'" for e in REASONING_TOKENS)
            return _unsupported(
                "reasoning_effort",
                "invalid_value",
                f"Invalid value: '{effort}'. Supported values are: {supported}.",
            )
        return None
    if body.get("reasoning_effort") is not None:
        return _unsupported(
            "reasoning_effort",
            "unsupported_parameter",
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
        )
    return None


def reasoning_tokens(profile: ModelProfile, body: dict[str, Any]) -> int:
    if not profile.reasoning:
        return 0
    return REASONING_TOKENS.get(str(body.get("reasoning_effort") or DEFAULT_EFFORT), REASONING_TOKENS[DEFAULT_EFFORT])
