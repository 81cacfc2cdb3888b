"""Counting a request's prompt tokens: with the model's own tokenizer when it can be had
offline, else with the app's documented estimate (processing/core/rate_limiter.estimate_tokens).

bpe-openai ships OpenAI's BPE encodings inside the package (tiktoken downloads them at first
use, which fails without network access), so counts are exact for the text sent. Chat framing
follows OpenAI's published rule: per message 3 tokens plus its role's and content's, and 3 that
prime the answer (the local emulator counts the same way: localdev/openai_emulator/tokens.py). A JSON-schema
pipeline's response_format also counts as prompt on the service; that part is not included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from processing.core.rate_limiter import estimate_tokens

# Encodings by model family: o200k for gpt-4o, gpt-4.1, gpt-5.x and the o-series.
_ENCODINGS = (
    ("gpt-35", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
)
PER_MESSAGE = 3
PRIMING = 3


def encoding_for(model: str) -> str | None:
    return next((enc for prefix, enc in _ENCODINGS if model.startswith(prefix)), None)


@dataclass(frozen=True)
class Counter:
    method: str  # "tokenizer <encoding>" or "estimate (4 characters per token)"
    exact: bool
    _count: Callable[[list[dict[str, str]]], int]

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return self._count(messages)


def counter_for(model: str) -> Counter:
    """The model's tokenizer if its encoding is known and installed, else the estimate."""
    encoding = encoding_for(model)
    if encoding:
        try:
            import bpe_openai  # the CLI's own dependency: never imported by the app
        except ImportError:
            bpe_openai = None
        if bpe_openai is not None:
            enc = bpe_openai.get_encoding(encoding)

            def exact(messages: list[dict[str, str]]) -> int:
                # A cell's own "<|endoftext|>" is text to the service, never a special token.
                body = sum(
                    len(enc.encode(m.get("role", ""), disallowed_special=()))
                    + len(enc.encode(m.get("content", ""), disallowed_special=()))
                    for m in messages
                )
                return body + PER_MESSAGE * len(messages) + PRIMING

            return Counter(f"tokenizer {encoding}", True, exact)
    return Counter("estimate (4 characters per token, as the app paces)", False, lambda m: estimate_tokens(m, 0))
