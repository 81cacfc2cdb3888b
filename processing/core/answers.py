"""A JSON-schema pipeline's answer: parsed strictly, then checked against the pipeline's schema.

The model's answer is steered by the cells of the file, so it is untrusted input. Python's
`json.loads` on its own accepts `NaN`, `Infinity` and `-Infinity` (which are not JSON: a
`.results.jsonl` holding one is unreadable to every other JSON reader), turns `1e999` into
infinity, raises a bare ValueError on an integer of over 4,300 digits and a RecursionError on
deep nesting. Each of those escaped the `invalid_json` handling and cost five model calls and a
misleading `poison` error. Here every way an answer can be wrong raises
`RowError(code="invalid_json")` with the reason (where in the answer, which rule), which
`processing.adapters.azure_openai.complete` asks again for a bounded number of times.

The checks, in order (cheapest first, each bound before the work it protects):
1. size: at most MAX_ANSWER_CHARS characters;
2. nesting: at most MAX_DEPTH objects/arrays deep, counted before parsing;
3. strict parse: no NaN/Infinity literals, no number that overflows to infinity, integers
   within 64 bits (checked by length before Python converts them);
4. the root is an object, and it validates against the pipeline's schema (JSON Schema
   2020-12, by `jsonschema`): types, `enum`, `required`, `additionalProperties: false` at
   every level (processing.core.pipelines fills those in), and whatever else the schema says.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any, NoReturn

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from processing.core.errors import RowError
from processing.core.states import RowCode

# pipelines.py caps max_tokens at 100,000 and a token averages about 4 characters, so no answer a
# pipeline can ask for comes near this; past it the answer is runaway output. It also keeps a
# record small: even with every character escaped as \uXXXX (6 bytes) an answer this long is
# 3 MB, inside one 4 MiB append block of a results shard.
MAX_ANSWER_CHARS = 500_000
# pipelines.py accepts schemas nested at most 10 levels (_MAX_SCHEMA_DEPTH, Azure's limit for
# strict structured outputs), so a valid answer is at most 11 containers deep. 32 leaves room
# and stays far below Python's recursion limit (1,000), where json's parser raises RecursionError.
MAX_DEPTH = 32
# Integers must fit in 64 bits, what a database column, pandas or .NET reads back from the
# results. Longer digit strings are refused by length, before Python converts them (conversion
# is quadratic in the digits, and past 4,300 digits it raises ValueError).
MAX_INT = 2**63 - 1
_MAX_INT_DIGITS = len(str(MAX_INT))
# What the reason quotes of the answer, so the error stays short wherever it is stored.
QUOTE_CHARS = 200

# A JSON string (escapes included), to blank out before counting brackets: a bracket inside a
# string does not nest. Unrolled-loop form, linear on long strings.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
_JSON_NAMES[type(None)] = "null"


class _Rejected(ValueError):
    """Raised from inside json.loads' hooks: carries the reason out of the parser."""


def _reject(reason: str) -> NoReturn:
    raise RowError(f"the answer is not valid JSON for the pipeline's schema: {reason}", code=RowCode.INVALID_JSON)


def _quote(content: str) -> str:
    return repr(content[:QUOTE_CHARS]) + ("…" if len(content) > QUOTE_CHARS else "")


def nesting_depth(content: str, limit: int = MAX_DEPTH) -> int:
    """How deep objects and arrays nest in `content` (strings skipped); stops counting past `limit`."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', content)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def _constant(name: str) -> NoReturn:
    raise _Rejected(f"{name} is not a JSON value")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Rejected(f"an integer of {len(text.lstrip('-'))} digits is outside the 64-bit range")
    value = int(text)
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise _Rejected(f"the integer {text} is outside the 64-bit range")
    return value


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"the number {text[:40]} overflows to infinity")
    return value


def parse_strict(content: str) -> Any:
    """`content` as JSON, strictly (see the module docstring); RowError `invalid_json` otherwise."""
    if len(content) > MAX_ANSWER_CHARS:
        _reject(f"{len(content):,} characters, over the limit of {MAX_ANSWER_CHARS:,}")
    depth = nesting_depth(content)
    if depth > MAX_DEPTH:
        _reject(f"objects and arrays nest more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(content, parse_constant=_constant, parse_int=_integer, parse_float=_number)
    except _Rejected as exc:
        _reject(str(exc))
    except json.JSONDecodeError as exc:
        _reject(f"{exc.msg} at character {exc.pos}: {_quote(content)}")
    except (ValueError, RecursionError) as exc:  # a backstop: the bounds above should stop these first
        _reject(f"{type(exc).__name__}: {str(exc)[:QUOTE_CHARS]}")


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Draft202012Validator:
    # Keyed by the schema's canonical text: the pipeline snapshot is rebuilt for every message.
    return Draft202012Validator(json.loads(schema_json))


def schema_violation(value: Any, schema: dict[str, Any]) -> str | None:
    """Why `value` does not match `schema` (where and which rule), or None if it does."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    message = error.message if len(error.message) <= QUOTE_CHARS else error.message[:QUOTE_CHARS] + "…"
    return f"at {error.json_path} ({error.validator}): {message}"


def parse_answer(content: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema pipeline's answer as a dict that matches `schema`; RowError `invalid_json` otherwise."""
    value = parse_strict(content)
    if not isinstance(value, dict):
        _reject(f"it is {_JSON_NAMES.get(type(value), 'a value')}, not an object: {_quote(content)}")
    violation = schema_violation(value, schema)
    if violation is not None:
        _reject(violation)
    return value
