"""A schema pipeline's answer is strict JSON that matches the schema, or the row error says why."""

from __future__ import annotations

import json
import sys

import pytest

from processing.core import answers
from processing.core.answers import MAX_ANSWER_CHARS, MAX_DEPTH, parse_answer
from processing.core.errors import RowError
from processing.core.pipelines import _check_schema

# The schema as processing/core/pipelines.py hands it over: required and additionalProperties filled in.
SCHEMA = _check_schema(
    {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["red", "green", "blue"]},
            "score": {"type": "integer"},
            "share": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "who": {"type": "object", "properties": {"name": {"type": ["string", "null"]}}},
        },
    },
    "test.toml",
)
GOOD = {"label": "red", "score": 3, "share": 0.5, "tags": ["a"], "who": {"name": None}}


def answer_with(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


def reason(content: str) -> str:
    with pytest.raises(RowError) as err:
        parse_answer(content, SCHEMA)
    assert err.value.code == "invalid_json"
    return str(err.value)


def test_an_answer_that_matches_the_schema_comes_back_as_a_dict():
    assert parse_answer(json.dumps(GOOD), SCHEMA) == GOOD


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str):
    assert f"{constant} is not a JSON value" in reason(answer_with(share="@").replace('"@"', constant))


def test_a_number_that_overflows_to_infinity_is_refused():
    assert "1e999 overflows to infinity" in reason(answer_with(share="@").replace('"@"', "1e999"))


@pytest.mark.parametrize("digits", [20, 5_000, 100_000])
def test_an_integer_past_64_bits_is_refused_by_its_length(digits: int):
    assert f"an integer of {digits} digits is outside the 64-bit range" in reason(
        answer_with(score="@").replace('"@"', "9" * digits)
    )


def test_the_64_bit_range_is_inclusive():
    assert parse_answer(answer_with(score=2**63 - 1), SCHEMA)["score"] == 2**63 - 1
    assert parse_answer(answer_with(score=-(2**63)), SCHEMA)["score"] == -(2**63)
    assert "outside the 64-bit range" in reason(answer_with(score=2**63))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, sys.getrecursionlimit() + 10, 50_000])
def test_nesting_past_the_bound_is_refused_before_the_parser_recurses(depth: int):
    content = answer_with(tags="@").replace('"@"', "[" * depth + "]" * depth)
    assert f"nest more than {MAX_DEPTH} levels deep" in reason(content)


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = '[{"' * 100 + '\\"]'
    assert parse_answer(answer_with(tags=[text]), SCHEMA)["tags"] == [text]


def test_an_answer_over_the_size_bound_is_refused_unread():
    content = answer_with(tags=["x" * MAX_ANSWER_CHARS])
    assert f"over the limit of {MAX_ANSWER_CHARS:,}" in reason(content)


def test_text_that_is_not_json_names_the_position():
    assert "Expecting value at character 0: 'Sure! {'" in reason("Sure! {")


@pytest.mark.parametrize(("content", "kind"), [("[1]", "an array"), ('"red"', "a string"), ("null", "null")])
def test_the_root_must_be_an_object(content: str, kind: str):
    assert f"it is {kind}, not an object" in reason(content)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (answer_with(label="purple"), "at $.label (enum): 'purple' is not one of ['red', 'green', 'blue']"),
        (answer_with(score="3"), "at $.score (type): '3' is not of type 'integer'"),
        (answer_with(score=True), "at $.score (type): True is not of type 'integer'"),
        (answer_with(share="0.5"), "at $.share (type): '0.5' is not of type 'number'"),
        (answer_with(tags=[1]), "at $.tags[0] (type): 1 is not of type 'string'"),
        (answer_with(who={"name": 7}), "at $.who.name (type): 7 is not of type 'string', 'null'"),
        (answer_with(extra=1), "at $ (additionalProperties): Additional properties are not allowed ('extra'"),
        (answer_with(who={"name": None, "x": 1}), "at $.who (additionalProperties)"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "score"}), "at $ (required): 'score' is a required"),
        (answer_with(who={}), "at $.who (required): 'name' is a required property"),
    ],
)
def test_a_schema_violation_names_the_path_and_the_rule(content: str, where: str):
    assert where in reason(content)


def test_a_long_value_is_quoted_short_in_the_reason():
    text = reason(answer_with(label="x" * 10_000))
    assert "at $.label (enum)" in text and len(text) < 400


def test_the_validator_is_built_once_per_schema():
    answers._validator.cache_clear()
    for _ in range(3):
        parse_answer(json.dumps(GOOD), dict(SCHEMA))  # a fresh copy each time, as each message's snapshot is
    assert answers._validator.cache_info().misses == 1


def test_nothing_non_json_reaches_the_results_jsonl():
    from processing.core.records import parse_lines
    from processing.finalize.results_files import json_line

    # A record appended before answers were parsed strictly reads NaN/Infinity as null ...
    [old] = parse_lines(b'{"i":0,"status":"ok","cells":[],"answer":{"share":NaN,"n":-Infinity},"usage":[1,1]}\n')
    assert old.answer == {"share": None, "n": None}
    assert json.loads(json_line({"answer": old.answer})) == {"answer": {"share": None, "n": None}}
    # ... and the writer refuses any that a new path might let in, instead of writing bare NaN.
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json_line({"answer": {"share": float("nan")}})
