"""The emulator's answers: deterministic and clearly fake, shaped by the request's response_format.

The answer rule
---------------
Let `u` be the text of the LAST message whose role is "user" ("" if there is none; a
content given as parts is the concatenation of its text parts) and
`h = sha256(u.encode()).hexdigest()`.

- Plain text (no `response_format`, or type "text"): `f"emulated answer {h[:16]}"`.
- `response_format = {"type": "json_object"}`: the JSON text of
  `{"answer": f"emulated answer {h[:16]}"}`.
- `response_format = {"type": "json_schema", "json_schema": {"schema": S, ...}}`: the JSON
  text of an object built from S. For each property `p` of an object schema, with
  `hh = sha256((u + "\\x00" + p).encode()).hexdigest()`:
    - `const` -> that value; `enum` -> `enum[int(hh[:8], 16) % len(enum)]`
    - string -> `f"{p}-{hh[:8]}"` (cut to `maxLength` if given)
    - integer -> `int(hh[:4], 16) % 100`; with both `minimum` and `maximum`:
      `minimum + int(hh[:4], 16) % (maximum - minimum + 1)`
    - number -> the integer rule as a float; boolean -> `int(hh[0], 16) % 2 == 0`; null -> None
    - array of plain strings -> `[f"{p}-{hh[:6]}"]`; array of anything else -> one item
      made by these rules under the same name `p` (repeated up to `minItems`)
    - object -> the same rules for its own properties (each hashed with its own name)
  `$ref` to `#/$defs/...` (or `#/definitions/...`) is followed; for `anyOf`/`oneOf` and
  type lists the first non-null choice is used. Every property is filled in, in schema
  order.
- `n` > 1 gives n identical choices.

Usage, in every answer: `prompt_tokens` is the request's prompt counted with its model's
tokenizer (localdev.openai_emulator.chat, localdev.openai_emulator.tokens), `completion_tokens =
reasoning + tokens(answer)`, the answer counted with the same tokenizer, where `reasoning` is
what the deployment's model profile spends thinking (0 for a standard model;
localdev.openai_emulator.models) and is reported as
`completion_tokens_details.reasoning_tokens`. The budget is the request's
`max_completion_tokens` (or `max_tokens`); reasoning is spent first, out of it (a budget no
larger than the reasoning gives an empty answer). If the answer has more tokens than are left,
the content is cut after that many tokens, `completion_tokens` is the budget and
`finish_reason` is "length" (so a cut JSON answer does not parse, as with a real model);
else "stop".
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from localdev.openai_emulator import tokens as tokenizer
from localdev.openai_emulator.chat import ChatRequest

_SAFE = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}
_PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": _SAFE}]


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def text_answer(user_text: str) -> str:
    return f"emulated answer {sha256_hex(user_text)[:16]}"


def schema_answer(user_text: str, schema: dict[str, Any]) -> Any:
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _value(user_text, "", schema, defs, 0)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 16:
        ref = str(schema["$ref"])
        schema = defs.get(ref.rsplit("/", 1)[-1], {})
        seen += 1
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_resolve(s, defs) for s in schema[key]]
            return next((s for s in options if s.get("type") != "null"), options[0] if options else {})
    return schema


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "null")
    if "properties" in schema and "type" not in schema:
        return "object"
    return str(kind)


def _value(user_text: str, name: str, schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    schema = _resolve(schema, defs)
    kind = _type_of(schema)
    if kind == "object":
        if depth > 10:  # a recursive schema: stop instead of recursing forever
            return {}
        props = schema.get("properties", {})
        return {p: _value(user_text, p, s, defs, depth + 1) for p, s in props.items()}
    hh = sha256_hex(f"{user_text}\x00{name}")
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][int(hh[:8], 16) % len(schema["enum"])]
    if kind == "array":
        items = _resolve(schema.get("items", {}), defs)
        plain_string = _type_of(items) == "string" and not items.get("enum") and "const" not in items
        item = f"{name}-{hh[:6]}" if plain_string else _value(user_text, name, items, defs, depth + 1)
        return [item] * max(1, int(schema.get("minItems", 1)))
    return _scalar(kind, name, hh, schema)


def _scalar(kind: str, name: str, hh: str, schema: dict[str, Any]) -> Any:
    if kind in ("integer", "number"):
        raw = int(hh[:4], 16)
        low, high = schema.get("minimum"), schema.get("maximum")
        value = int(low) + raw % (int(high) - int(low) + 1) if low is not None and high is not None else raw % 100
        return float(value) if kind == "number" else value
    if kind == "boolean":
        return int(hh[0], 16) % 2 == 0
    if kind == "null":
        return None
    text = f"{name}-{hh[:8]}"
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


def render_answer(request: ChatRequest) -> str:
    fmt = request.body.get("response_format") or {}
    kind = fmt.get("type", "text")
    if kind == "json_schema":
        return json.dumps(schema_answer(request.user_text, fmt["json_schema"]["schema"]))
    if kind == "json_object":
        return json.dumps({"answer": text_answer(request.user_text)})
    return text_answer(request.user_text)


# The malformed answers' sizes: deeper than Python's recursion limit (1,000) and longer than its
# integer-conversion limit (4,300 digits), yet short enough for a request's max_tokens (the test
# pipeline's 4,000) to let through: o200k counts "[[" or "]]" as one token (1,500 tokens here) and
# 5,000 nines as 1,667.
DEEP_NESTING = 1_500
HUGE_INT_DIGITS = 5_000
_SLOT = "\x00malformed\x00"


def malformed_answer(request: ChatRequest, kind: str) -> str:
    """The schema's answer with its first property made bad in the way `kind` says (faults json_*)."""
    fmt = request.body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    value = schema_answer(request.user_text, schema) if schema else {"answer": text_answer(request.user_text)}
    if not isinstance(value, dict) or not value:
        value = {"answer": value}
    props = (schema or {}).get("properties", {})
    if kind == "json_off_enum":
        name = next((p for p, s in props.items() if isinstance(s, dict) and s.get("enum")), next(iter(value)))
        return json.dumps({**value, name: f"off-enum-{sha256_hex(request.user_text)[:8]}"})
    raw = {
        "json_nan": "NaN",
        "json_deep": "[" * DEEP_NESTING + "]" * DEEP_NESTING,
        "json_huge_int": "9" * HUGE_INT_DIGITS,
    }[kind]
    # json.dumps cannot write these (NaN it writes only with allow_nan; the others not at all): splice them in.
    return json.dumps({**value, next(iter(value)): _SLOT}).replace(json.dumps(_SLOT), raw)


@dataclass
class Completion:
    body: dict[str, Any]  # the chat.completion object
    completion_tokens: int  # of every choice together, reasoning included
    reasoning_tokens: int = 0


def completion(
    chat: ChatRequest, completion_id: str, content: str | None = None, *, reasoning: int = 0, model: str = ""
) -> Completion:
    """The answer to `chat` (`content`, or by the answer rule), with its usage and finish reason.

    `reasoning`: the tokens the model thinks before answering, spent first out of the budget."""
    content = render_answer(chat) if content is None else content
    counted = model or chat.model or chat.deployment  # whose tokenizer counts the answer
    tokens = tokenizer.completion_tokens(content, counted)
    finish = "stop"
    if chat.max_tokens is not None and reasoning >= chat.max_tokens:
        content, tokens, reasoning, finish = "", 0, chat.max_tokens, "length"
    elif chat.max_tokens is not None and reasoning + tokens > chat.max_tokens:
        left = chat.max_tokens - reasoning
        content, tokens, finish = tokenizer.cut(content, left, counted), left, "length"
    tokens += reasoning
    n = int(chat.body.get("n") or 1)
    message = {"role": "assistant", "content": content, "refusal": None}
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or chat.deployment,
        "system_fingerprint": "fp_rowsmith_emulator",
        "prompt_filter_results": _PROMPT_FILTER_RESULTS,
        "choices": [
            {
                "index": i,
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
                "content_filter_results": _SAFE,
            }
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": tokens * n,
            "total_tokens": chat.prompt_tokens + tokens * n,
            "completion_tokens_details": {
                "reasoning_tokens": reasoning * n,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
                "audio_tokens": 0,
            },
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
    }
    return Completion(body, tokens * n, reasoning * n)
