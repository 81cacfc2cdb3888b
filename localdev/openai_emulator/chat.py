"""A chat-completions request: the body's validation, its last user text and its prompt tokens.

A body must be a JSON object with a non-empty `messages` list of objects with a `role`;
`stream` is refused (the emulator does not stream); `max_tokens`, `max_completion_tokens`
and `n` are whole numbers of at least 1; `response_format` is text, json_object or
json_schema (with a `name` and a `schema` object). Anything else is a `BadRequestError`
(a 400 naming the parameter).

The prompt tokens: counted with the tokenizer of the model the deployment serves, as OpenAI
counts a chat prompt (localdev.openai_emulator.tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from localdev.openai_emulator import tokens


@dataclass
class ChatRequest:
    deployment: str
    api_version: str
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    user_text: str
    prompt_tokens: int
    max_tokens: int | None  # max_completion_tokens, else max_tokens: the whole completion budget
    model: str = ""  # the model the deployment serves: its tokenizer counts the tokens


class BadRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def chat_request(deployment: str, api_version: str, body: dict[str, Any], model: str = "") -> ChatRequest:
    """The request behind a body that `parse_body` accepted, to a deployment of `model` (default: its name)."""
    model = model or deployment
    messages = body["messages"]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return ChatRequest(
        deployment=deployment,
        api_version=api_version,
        body=body,
        messages=messages,
        user_text=last_user_text(messages),
        prompt_tokens=tokens.prompt_tokens(messages, model),
        max_tokens=max_tokens,
        model=model,
    )


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' is a required property and must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequestError(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    if body.get("stream"):
        raise BadRequestError("the emulator does not stream; send stream=false", "stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadRequestError(f"'{name}' must be a whole number, at least 1", name)
    _check_response_format(body.get("response_format"))
    return body


def _check_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise BadRequestError("response_format.type must be text, json_object or json_schema", "response_format")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict) or not spec.get("name"):
            raise BadRequestError("response_format.json_schema needs a 'name' and a 'schema' object", "response_format")
