"""`rowsmith results JOB --failed`: the failed rows exactly as uploaded (field count, full cells),
neutralised against formula injection, ready to upload again."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.stack import Stack
from rowsmith_cli import commands
from tests.integration.harness import RunnerProcess, app_settings, local_target, submit_and_wait

pytestmark = pytest.mark.integration

MAX_ROW = 2048  # ROWSMITH_MAX_ROW_BYTES: a row over it is a row error whose record keeps cut cells
LONG = "x" * (MAX_ROW + 100)


@pytest.fixture(scope="module")
def small_rows_runner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    settings = app_settings(stack, ROWSMITH_MAX_ROW_BYTES=str(MAX_ROW))
    with RunnerProcess(settings, tmp_path_factory.mktemp("runner") / "runner.log") as process:
        yield process


async def run_job(stack: Stack, path: Path, pipeline: str, runner: RunnerProcess) -> str:
    code, info = await submit_and_wait(stack, path, pipeline, timeout=90)
    # Done; a job in which every row failed is done with exit 4, not success (README: exit codes).
    expected = commands.EXIT_OK if info.get("ok_rows") else commands.EXIT_NO_ROWS_ANSWERED
    assert code == expected and info["state"] == "done", (info, runner.log()[-3000:])
    return info["job"]


async def failed(stack: Stack, job: str, dest: Path) -> tuple[int, dict]:
    target = local_target(stack)
    try:
        return await commands.results(target, job, dest, jsonl=False, failed=True)
    finally:
        await target.close()


def rows_of(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding=encoding), newline=""), delimiter=delimiter))


async def test_failed_rows_come_back_as_uploaded_with_every_field_and_neutralised(
    stack: Stack, small_rows_runner: RunnerProcess, tmp_path: Path
):
    upload = tmp_path / "tickets.csv"
    upload.write_text(
        "id,text\r\n"
        "1,fine\r\n"
        "ragged,too,many,fields,here\r\n"  # cut to the header's width in the results
        "short\r\n"
        '=1+1,@SUM(A1),-3,"+44 20, 7946"\r\n'  # ragged and full of formulas
        f"5,{LONG}\r\n"  # over ROWSMITH_MAX_ROW_BYTES: its record holds the cell cut short
        "6,filtered [[fault:content_filter]]\r\n"
        "7,also fine\r\n",
        encoding="utf-8",
    )
    job = await run_job(stack, upload, "echo", small_rows_runner)

    dest = tmp_path / "again.csv"
    code, info = await failed(stack, job, dest)
    assert code == 0 and info["failed_rows"] == 5, info
    assert rows_of(dest) == [
        ["id", "text"],
        ["ragged", "too", "many", "fields", "here"],
        ["short"],
        ["'=1+1", "'@SUM(A1)", "-3", "'+44 20, 7946"],
        ["5", LONG],
        ["6", "filtered [[fault:content_filter]]"],
    ]

    # Uploaded again, the file is read as the original was: the same rows fail for the same reasons.
    again = await run_job(stack, dest, "echo", small_rows_runner)
    code, info = await failed(stack, again, tmp_path / "again-again.csv")
    assert code == 0 and info["failed_rows"] == 5
    assert rows_of(tmp_path / "again-again.csv")[1:3] == [["ragged", "too", "many", "fields", "here"], ["short"]]


async def test_the_jobs_delimiter_encoding_and_formula_setting_are_kept(
    stack: Stack, small_rows_runner: RunnerProcess, tmp_path: Path
):
    upload = tmp_path / "fixed.csv"
    upload.write_bytes("id;text\r\n1;ok\r\n2;café;crème;=brûlée\r\n".encode("cp1252"))
    job = await run_job(stack, upload, "echo-cp1252", small_rows_runner)
    dest = tmp_path / "fixed.failed.csv"
    code, info = await failed(stack, job, dest)
    assert code == 0 and info["failed_rows"] == 1, info
    # The sniffed ';' and the pipeline's windows-1252, so the same pipeline reads it back.
    assert rows_of(dest, "cp1252", ";") == [["id", "text"], ["2", "café", "crème", "'=brûlée"]]

    # A byte-order mark stays: Excel's "CSV UTF-8" (with ";") and a UTF-16 file come back as they were.
    for name, codec, mark in (("excel", "utf-8", codecs.BOM_UTF8), ("wide", "utf-16-le", codecs.BOM_UTF16_LE)):
        marked = tmp_path / f"{name}.csv"
        marked.write_bytes(mark + "id;text\r\n1;ok\r\n2;naïve;extra\r\n".encode(codec))
        job = await run_job(stack, marked, "echo", small_rows_runner)
        code, info = await failed(stack, job, tmp_path / f"{name}.failed.csv")
        data = (tmp_path / f"{name}.failed.csv").read_bytes()
        assert code == 0 and data == mark + "id;text\r\n2;naïve;extra\r\n".encode(codec), (info, data)

    raw = tmp_path / "raw.csv"
    raw.write_text("id,text\n1,=A1,@B2\n", encoding="utf-8")
    job = await run_job(stack, raw, "echo-raw", small_rows_runner)  # neutralise_formulas = false
    code, info = await failed(stack, job, tmp_path / "raw.failed.csv")
    assert code == 0 and rows_of(tmp_path / "raw.failed.csv") == [["id", "text"], ["1", "=A1", "@B2"]]


async def test_an_input_uploaded_again_since_the_job_gives_no_file(
    stack: Stack, small_rows_runner: RunnerProcess, tmp_path: Path
):
    upload = tmp_path / "changed.csv"
    upload.write_text("id,text\n1,a,b\n", encoding="utf-8")
    job = await run_job(stack, upload, "echo", small_rows_runner)
    upload.write_text("id,text\n1,other,cells\n", encoding="utf-8")
    target = local_target(stack)
    try:
        # A new upload (no event: the stack raises it only through `submit`), so the job's ETag is stale.
        await target.blobs.get_blob_client("input", "echo/changed.csv").upload_blob(upload.read_bytes(), overwrite=True)
    finally:
        await target.close()
    dest = tmp_path / "changed.failed.csv"
    code, info = await failed(stack, job, dest)
    assert code == 1 and "was deleted or uploaded again since job" in info["error"], info
    assert not dest.exists()  # never rows from another upload
