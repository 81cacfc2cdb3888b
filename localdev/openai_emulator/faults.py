"""Which fault, if any, a request gets: seeded random draws and `[[fault:KIND]]` markers.

`fault_rates` maps kinds to probabilities (summing to at most 1), drawn per request from
a `random.Random(seed)`, so a seeded run with the same requests in the same order
repeats its faults. Kinds: "500", "503", "429" (with `retry-after-ms` =
`fault_retry_after_ms`, default 1000, and no quota used), "timeout" (sleep
`timeout_seconds`, default 30, then answer normally), "drop" (close the connection with
no answer), "content_filter" (400, code content_filter, innererror
ResponsibleAIPolicyViolation), "context_length" (400 context_length_exceeded) and
"invalid_json" (200 with finish_reason "stop" but content that is not JSON, as a model
ignoring its response_format would answer). Four more are answers that parse with a lax JSON
reader but break the request's schema or JSON itself (localdev.openai_emulator.answers.malformed_answer):
"json_nan" (a bare `NaN`), "json_deep" (an array nested DEEP_NESTING levels deep),
"json_huge_int" (an integer of HUGE_INT_DIGITS digits) and "json_off_enum" (a value outside the
property's `enum`); each replaces the first property of the schema's answer (the first with an
`enum` for json_off_enum).

Deterministic trigger: a last user message containing `[[fault:KIND]]` always gets that
fault; `[[fault:KIND:N]]` gets it the first N times that exact message is seen, then a
normal answer (to test retries). Markers win over random faults.

(localdev.openai_emulator.server carries the faults out.)
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping

from localdev.openai_emulator.answers import sha256_hex

MALFORMED_JSON_KINDS = ("json_nan", "json_deep", "json_huge_int", "json_off_enum")
FAULT_KINDS = (
    "500",
    "503",
    "429",
    "timeout",
    "drop",
    "content_filter",
    "context_length",
    "invalid_json",
    *MALFORMED_JSON_KINDS,
)
_MARKER = re.compile(r"\[\[fault:([a-z0-9_]+)(?::(\d+))?\]\]")


class FaultDraw:
    """Picks each request's fault; remembers how often each marked message was seen."""

    def __init__(self, seed: int | None) -> None:
        self._random = random.Random(seed)
        self._marker_counts: Counter[str] = Counter()

    def reseed(self, seed: int | None) -> None:
        """Start the random draw again from `seed` (the marker counts stay)."""
        self._random = random.Random(seed)

    def reset(self, seed: int | None) -> None:
        """Reseed and forget the marker counts."""
        self.reseed(seed)
        self._marker_counts.clear()

    def pick(self, user_text: str, rates: Mapping[str, float]) -> str | None:
        if "[[fault:" in user_text:
            match = _MARKER.search(user_text)
            if match and match.group(1) in FAULT_KINDS:
                kind, times = match.group(1), match.group(2)
                if times is None:
                    return kind
                key = sha256_hex(user_text)
                self._marker_counts[key] += 1
                if self._marker_counts[key] <= int(times):
                    return kind
                return None
        if not rates or not any(rates.values()):
            return None
        draw = self._random.random()
        for kind in FAULT_KINDS:  # a fixed order, so a seed means the same thing every run
            draw -= rates.get(kind, 0.0)
            if draw < 0:
                return kind
        return None
