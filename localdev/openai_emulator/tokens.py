"""The emulator's token counts: OpenAI's own tokenizer, so its usage is what the service would bill.

The encoding follows the model a deployment serves (its profile's `model`, which defaults to
the deployment's name; localdev.openai_emulator.models): `cl100k_base` for gpt-3.5 and gpt-4
(but not gpt-4o or gpt-4.1), `o200k_base` for gpt-4o, gpt-4.1, gpt-5.x, the o-series and any
name it does not know (every current model uses it).

A chat request's prompt is counted as OpenAI documents for chat models: for each message, 3
tokens of framing plus the tokens of its role and its content (the text parts of a content given
as parts) and, when it has a `name`, 1 more plus the name's tokens; then 3 that prime the
answer. A `response_format` schema is not counted (the service counts it, in a way it does not
publish; `rowsmith estimate` leaves it out too). A cell's own "<|endoftext|>" is text to the
service, never a special token.

An answer's completion tokens are its content's tokens; an answer cut at the completion budget
is cut after that many tokens (a token that ends inside a multi-byte character is dropped with
the partial character).

Fallback: bpe-openai ships the encodings inside the package (tiktoken downloads them at first
use, which fails offline) and is one of the project's dependencies. If it cannot be imported,
the emulator counts 4 characters a token, as it did before: `max(1, characters // 4 + 4 *
messages)` for a prompt and `characters // 4 + 1` for an answer, cut at `4 * budget`
characters (`EXACT` says which is in use).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

PER_MESSAGE = 3
PER_NAME = 1
PRIMING = 3
DEFAULT_ENCODING = "o200k_base"
_CL100K = ("gpt-35", "gpt-3.5", "gpt-4")
_O200K = ("gpt-4o", "gpt-4.1")


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...
    def decode_bytes(self, tokens: list[int]) -> bytes: ...


def encoding_name(model: str) -> str:
    name = model.lower()
    if name.startswith(_CL100K) and not name.startswith(_O200K):
        return "cl100k_base"
    return DEFAULT_ENCODING


@functools.cache
def _encoding(name: str) -> _Encoding | None:
    try:
        import bpe_openai
    except ImportError:
        return None
    return bpe_openai.get_encoding(name)


EXACT = _encoding(DEFAULT_ENCODING) is not None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _count(enc: _Encoding, text: str) -> int:
    return len(enc.encode(text, disallowed_special=())) if text else 0


def prompt_tokens(messages: list[dict[str, Any]], model: str) -> int:
    enc = _encoding(encoding_name(model))
    if enc is None:
        chars = sum(len(_text(m.get("content"))) for m in messages)
        return max(1, chars // 4 + 4 * len(messages))
    total = PRIMING
    for message in messages:
        total += PER_MESSAGE + _count(enc, str(message.get("role", ""))) + _count(enc, _text(message.get("content")))
        name = message.get("name")
        if isinstance(name, str) and name:
            total += PER_NAME + _count(enc, name)
    return total


def completion_tokens(text: str, model: str) -> int:
    enc = _encoding(encoding_name(model))
    if enc is None:
        return len(text) // 4 + 1
    return _count(enc, text)


def cut(text: str, budget: int, model: str) -> str:
    """`text`'s first `budget` tokens (what a model stopped at `length` had written)."""
    enc = _encoding(encoding_name(model))
    if enc is None:
        return text[: 4 * budget]
    tokens = enc.encode(text, disallowed_special=())
    return enc.decode_bytes(tokens[:budget]).decode("utf-8", errors="ignore")
