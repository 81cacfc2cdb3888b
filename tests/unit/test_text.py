"""Text from anywhere is made encodable at its point of entry: a lone surrogate becomes U+FFFD."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from processing.core.manifest import Manifest
from processing.core.messages import RowsMessage
from processing.core.records import Record, parse_lines
from processing.core.text import REPLACEMENT, clean_json, clean_text

LONE = "\ud800"
JOB = "a-0123456789ab"


def test_a_lone_surrogate_becomes_the_replacement_character_and_a_pair_joins() -> None:
    assert clean_text(f"a{LONE}b") == f"a{REPLACEMENT}b"
    assert clean_text("\ud83d\ude00") == "😀"
    assert clean_text("plain é") == "plain é"


@given(st.text())
def test_any_text_comes_out_encodable_and_unchanged_if_it_already_was(text: str) -> None:
    out = clean_text(text)
    out.encode("utf-8")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert out == text


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_any_json_value_comes_out_encodable(value: object) -> None:
    json.dumps(clean_json(value), ensure_ascii=False).encode("utf-8")


def test_cells_of_a_rows_message_are_cleaned_on_entry() -> None:
    body = json.dumps({"v": 1, "type": "rows", "job": JOB, "rows": [[0, [f"x{LONE}"]]]})
    assert RowsMessage.from_json(body).rows[0].cells == (f"x{REPLACEMENT}",)


def test_answers_and_errors_are_cleaned_where_records_are_made() -> None:
    ok = Record.answered(0, [LONE], {"label": LONE, LONE: [LONE]}, (1, 1))
    bad = Record.failed(1, ["c"], "x", f"model said {LONE}")
    json.dumps([ok.cells, ok.answer, bad.error], ensure_ascii=False).encode("utf-8")
    assert ok.answer == {"label": REPLACEMENT, REPLACEMENT: [REPLACEMENT]}


def test_a_shard_line_read_back_is_cleaned() -> None:
    # to_line escapes with ensure_ascii, so the lone surrogate comes back from json.loads.
    line = b'{"i":0,"status":"ok","cells":["\\ud800"],"answer":"\\udfff","usage":[1,2]}\n'
    (record,) = parse_lines(line)
    assert record.cells == [REPLACEMENT] and record.answer == REPLACEMENT


def test_a_manifest_with_a_lone_surrogate_in_its_error_can_still_be_saved() -> None:
    m = Manifest(JOB, "input", "a.csv", "u", "0x1", "default", "a")
    m.error = {"error": f"bad {LONE}"}
    assert REPLACEMENT in Manifest.from_json(m.to_json()).error["error"]
