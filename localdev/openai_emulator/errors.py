"""Azure OpenAI's error bodies, `{"error": {"code", "message", ...}}`, worded as Azure words them."""

from __future__ import annotations

from typing import Any


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


NOT_FOUND_BODY = error_body("404", "Resource not found")
DEPLOYMENT_NOT_FOUND_BODY = error_body(
    "DeploymentNotFound",
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again.",
)
KEY_AUTH_DISABLED_BODY = error_body(
    "AuthenticationTypeDisabled", "Key based authentication is disabled for this resource."
)
INJECTED_500_BODY = error_body(
    "InternalServerError", "The server had an error while processing your request. Sorry about that! (injected)"
)
INJECTED_503_BODY = error_body(
    "ServiceUnavailable",
    "The service is temporarily unable to process your request. Please try again later. (injected)",
)
CONTENT_FILTER_BODY = error_body(
    "content_filter",
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry. To learn more about our content filtering policies please read "
    "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
    param="prompt",
    type=None,
    status=400,
    innererror={
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": {
            "hate": {"filtered": True, "severity": "high"},
            "jailbreak": {"filtered": False, "detected": False},
            "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"},
            "violence": {"filtered": False, "severity": "safe"},
        },
    },
)


def unauthorized_body(audience: str, reason: str) -> dict[str, Any]:
    message = (
        "Unauthorized. Access token is missing, invalid, audience is incorrect "
        f"({audience}), or have expired. Reason: {reason}."
    )
    return error_body("InvalidAuthenticationToken", message)


def bad_request_body(message: str, param: str | None) -> dict[str, Any]:
    return error_body("BadRequest", message, param=param, type="invalid_request_error")


def context_length_body(window: int, tokens: int) -> dict[str, Any]:
    return error_body(
        "context_length_exceeded",
        f"This model's maximum context length is {window} tokens. However, your messages resulted in "
        f"{tokens} tokens. Please reduce the length of the messages.",
        param="messages",
        type="invalid_request_error",
    )


def throttle_body(api_version: str, which: str, seconds: int) -> dict[str, Any]:
    return error_body(
        "429",
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} have "
        f"exceeded {which} rate limit of your current AIServices S0 pricing tier. Please retry after {seconds} "
        "seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the "
        "default rate limit. (local emulator)",
    )
