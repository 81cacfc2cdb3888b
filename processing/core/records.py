"""A row's result record: what process appends to a shard and finalize reads back.

One JSON line per row, `{"i": index, "status": "ok", "cells": [...], "answer": ..., "usage": [p, c, r, k]}`
or `{"i": index, "status": "error", "cells": [...], "error": "...", "code": "..."}`, and `"calls": [n, t]`
when the row made model requests. The usage is prompt, completion (reasoning included),
reasoning and cached prompt tokens summed over every answer Azure billed in the delivery that
wrote the line (an answer that failed its schema check is billed, and counted, too); calls are the
requests sent and how many of them were retries. Records written before reasoning tokens were
counted have two numbers, before cached tokens three.

A row re-enqueued after billed requests (a 429 after an answer that failed its schema check, say)
leaves a `"status": "spend"` line holding only its usage and calls: never a result, but counted
in the job's spend. A shard may hold a row more than once (appends are not idempotent, and a
redelivered message calls the model again); finalize keeps the first record of a row for the
results, and counts the usage of every line, because every one of them was billed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from processing.core.states import RowCode, RowStatus
from processing.core.text import clean_json, clean_text

Usage = tuple[int, int, int, int]  # prompt, completion (reasoning included), reasoning, cached prompt tokens
NO_USAGE: Usage = (0, 0, 0, 0)


@dataclass
class Spend:
    """What one row's model requests in one delivery cost: every request sent, and the tokens of
    every answer Azure billed. Filled in by the model call as it goes, so a row that then fails,
    or is re-enqueued, still reports what it spent."""

    requests: int = 0
    prompt: int = 0
    completion: int = 0  # reasoning included
    reasoning: int = 0
    cached: int = 0

    def bill(self, prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> None:
        self.prompt += prompt
        self.completion += completion
        self.reasoning += reasoning
        self.cached += cached

    @property
    def usage(self) -> Usage:
        return (self.prompt, self.completion, self.reasoning, self.cached)

    def calls(self, first_delivery: bool) -> tuple[int, int]:
        """(requests, retries): on a row's first delivery its first request is not a retry."""
        return (self.requests, max(0, self.requests - 1) if first_delivery else self.requests)


@dataclass(frozen=True)
class Record:
    index: int
    status: str  # RowStatus
    cells: list[str]
    answer: Any = None  # text, or a dict of JSON-schema fields
    error: str = ""
    code: str = ""  # RowCode: machine-readable error kind
    usage: Usage = NO_USAGE  # billed tokens: prompt, completion (reasoning included), reasoning, cached
    calls: tuple[int, int] = (0, 0)  # model requests sent, and how many of them were retries

    @classmethod
    def answered(cls, index: int, cells: Sequence[str], answer: Any, usage: Sequence[int]) -> Record:
        # The answer is the model's (steered by the row's cells): its text is cleaned here, where it enters.
        return cls(index, RowStatus.OK, [clean_text(c) for c in cells], answer=clean_json(answer), usage=_usage(usage))

    @classmethod
    def failed(cls, index: int, cells: Sequence[str], code: RowCode | str, error: str) -> Record:
        return cls(index, RowStatus.ERROR, [clean_text(c) for c in cells], error=clean_text(error), code=code)

    @classmethod
    def spent(cls, index: int, usage: Usage, calls: tuple[int, int]) -> Record:
        """The billed requests of a row that was re-enqueued: counted, never a result."""
        return cls(index, RowStatus.SPEND, [], usage=usage, calls=calls)

    @property
    def ok(self) -> bool:
        return self.status == RowStatus.OK

    @property
    def is_result(self) -> bool:
        """An answer or an error: what the results files hold (a `spend` line is not)."""
        return self.status != RowStatus.SPEND

    def to_line(self) -> bytes:
        data: dict[str, Any] = {"i": self.index, "status": self.status, "cells": self.cells}
        if self.ok:
            data["answer"] = self.answer
        elif self.status == RowStatus.ERROR:
            data["error"] = self.error
            data["code"] = self.code
        if self.ok or any(self.usage):
            data["usage"] = list(self.usage)
        if any(self.calls):
            data["calls"] = list(self.calls)
        # ensure_ascii keeps every control character escaped, so one record is one line.
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        usage = [*(data.get("usage") or ()), 0, 0, 0, 0]  # 2 or 3 numbers in records of older versions
        calls = [*(data.get("calls") or ()), 0, 0]
        # A shard line is JSON with every non-ASCII character escaped, so `\ud800` reads back as a
        # lone surrogate: cleaned again here, for shards written before records were cleaned.
        return cls(
            index=int(data["i"]),
            status=data["status"],
            cells=[clean_text(str(c)) for c in data.get("cells", [])],
            answer=clean_json(data.get("answer")),
            error=clean_text(str(data.get("error", ""))),
            code=clean_text(str(data.get("code", ""))),
            usage=_usage(usage),
            calls=(int(calls[0]), int(calls[1])),
        )


def _usage(numbers: Sequence[Any]) -> Usage:
    padded = [*numbers, 0, 0, 0, 0]
    return (int(padded[0]), int(padded[1]), int(padded[2]), int(padded[3]))


def _no_constant(name: str) -> None:
    return None


def parse_lines(data: bytes) -> Iterator[Record]:
    for line in data.splitlines():
        if line.strip():
            # A record appended before answers were parsed strictly may hold NaN or Infinity:
            # read as null, so the results written from it stay JSON.
            yield Record.from_json(json.loads(line, parse_constant=_no_constant))
