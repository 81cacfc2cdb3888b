"""A row's result record: what process appends to a shard and finalize reads back.

One JSON line per row, `{"i": index, "status": "ok", "cells": [...], "answer": ..., "usage": [p, c, r]}`
or `{"i": index, "status": "error", "cells": [...], "error": "...", "code": "..."}`. The usage is
prompt, completion (reasoning included) and reasoning tokens; records written before reasoning
tokens were counted have two numbers. A shard may
hold a row more than once (appends are not idempotent); finalize keeps the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from processing.core.states import RowCode, RowStatus
from processing.core.text import clean_json, clean_text


@dataclass(frozen=True)
class Record:
    index: int
    status: str  # RowStatus
    cells: list[str]
    answer: Any = None  # text, or a dict of JSON-schema fields
    error: str = ""
    code: str = ""  # RowCode: machine-readable error kind
    usage: tuple[int, int, int] = (0, 0, 0)  # prompt, completion (reasoning included), reasoning tokens

    @classmethod
    def answered(cls, index: int, cells: Sequence[str], answer: Any, usage: tuple[int, int, int]) -> Record:
        # The answer is the model's (steered by the row's cells): its text is cleaned here, where it enters.
        return cls(index, RowStatus.OK, [clean_text(c) for c in cells], answer=clean_json(answer), usage=usage)

    @classmethod
    def failed(cls, index: int, cells: Sequence[str], code: RowCode | str, error: str) -> Record:
        return cls(index, RowStatus.ERROR, [clean_text(c) for c in cells], error=clean_text(error), code=code)

    @property
    def ok(self) -> bool:
        return self.status == RowStatus.OK

    def to_line(self) -> bytes:
        data: dict[str, Any] = {"i": self.index, "status": self.status, "cells": self.cells}
        if self.ok:
            data["answer"] = self.answer
            data["usage"] = list(self.usage)
        else:
            data["error"] = self.error
            data["code"] = self.code
        # ensure_ascii keeps every control character escaped, so one record is one line.
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        usage = [*(data.get("usage") or ()), 0, 0, 0]  # two numbers in records written before reasoning
        # A shard line is JSON with every non-ASCII character escaped, so `\ud800` reads back as a
        # lone surrogate: cleaned again here, for shards written before records were cleaned.
        return cls(
            index=int(data["i"]),
            status=data["status"],
            cells=[clean_text(str(c)) for c in data.get("cells", [])],
            answer=clean_json(data.get("answer")),
            error=clean_text(str(data.get("error", ""))),
            code=clean_text(str(data.get("code", ""))),
            usage=(int(usage[0]), int(usage[1]), int(usage[2])),
        )


def _no_constant(name: str) -> None:
    return None


def parse_lines(data: bytes) -> Iterator[Record]:
    for line in data.splitlines():
        if line.strip():
            # A record appended before answers were parsed strictly may hold NaN or Infinity:
            # read as null, so the results written from it stay JSON.
            yield Record.from_json(json.loads(line, parse_constant=_no_constant))
