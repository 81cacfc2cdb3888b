"""A CSV in, results out: the real functions, ManagedIdentityCredential and openai client."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest

from localdev.event_grid.events import blob_created_message
from localdev.stack import Stack
from processing.core.formulas import neutralise
from processing.core.layout import UPLOADS_QUEUE
from tests.integration.harness import (
    RunnerProcess,
    download,
    emulated_text,
    emulator,
    local_target,
    manifest,
    submit_and_wait,
    wait_state,
)

pytestmark = pytest.mark.integration


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_results(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


TRICKY = ["plain", "with, comma", 'with "quotes"', "two\nlines", "ünïcödé ✓", "{text} braces", "=1+1"]


async def test_500_rows_come_back_in_order_each_with_its_own_answer(stack: Stack, runner: RunnerProcess, tmp_path):
    await emulator(stack, "POST", "/_emulator/reset")
    rows = [[f"{i:04d}", f"{TRICKY[i % len(TRICKY)]} #{i}"] for i in range(500)]
    path = write_csv(tmp_path / "five hundred.csv", ["id", "text"], rows)

    code, info = await submit_and_wait(stack, path, "echo")

    assert code == 0, (info, runner.log()[-3000:])
    assert info["state"] == "done"
    assert (info["total_rows"], info["ok_rows"], info["error_rows"]) == (500, 500, 0)
    assert info["results_blob"] == "output/echo/five hundred.results.csv"
    header, out = read_results(await download(stack, "output", "echo/five hundred.results.csv"))
    assert header == ["id", "text", "answer", "status", "error"]
    assert len(out) == 500
    for (row_id, text), result in zip(rows, out, strict=True):
        # Input cells as written (a formula-like cell guarded with a leading '), then the answer
        # to this row's own prompt, which the model saw with the cell exactly as written.
        assert result == [row_id, neutralise(text), emulated_text(f"Row {row_id}: {text}"), "ok", ""]
    assert out[6][1] == "'=1+1 #6"

    lines = (await download(stack, "output", "echo/five hundred.results.jsonl")).decode().split("\n")[:-1]
    assert len(lines) == 500
    assert json.loads(lines[6])["input"]["text"] == "=1+1 #6"  # the JSON lines keep exact values
    first = json.loads(lines[0])
    assert first["row"] == 1 and first["input"] == {"id": "0000", "text": rows[0][1]}
    assert first["usage"]["prompt_tokens"] > 0

    stats = await emulator(stack, "GET", "/_emulator/stats")
    # Every call carried a bearer token from the managed-identity endpoint; no key, no anonymous call.
    assert stats["auth"]["bearer"] >= 500
    assert stats["auth"].get("api-key", 0) == 0
    assert stats["auth"].get("none", 0) == 0


def expected_enum(user: str, prop: str, options: list[str]) -> str:
    digest = hashlib.sha256((user + "\x00" + prop).encode()).hexdigest()
    return options[int(digest[:8], 16) % len(options)]


async def test_json_schema_answers_become_columns_without_clashing(stack: Stack, runner: RunnerProcess, tmp_path):
    # The input already has a "label" column: the answer's label must not overwrite it.
    rows = [[f"thing {i}", "keep me"] for i in range(40)]
    path = write_csv(tmp_path / "colours.csv", ["text", "label"], rows)

    code, info = await submit_and_wait(stack, path, "classify")

    assert code == 0, info
    header, out = read_results(await download(stack, "output", "classify/colours.results.csv"))
    assert header == ["text", "label", "rowsmith_label", "score", "status", "error"]
    for (text, label), result in zip(rows, out, strict=True):
        assert result[:2] == [text, label]
        assert result[2] == expected_enum(f"Classify: {text}", "label", ["red", "green", "blue"])
        assert result[3].isdigit()
        assert result[4:] == ["ok", ""]


async def test_a_duplicate_blob_created_event_yields_one_job(stack: Stack, runner: RunnerProcess, tmp_path):
    path = write_csv(tmp_path / "dup.csv", ["id", "text"], [[str(i), f"t{i}"] for i in range(30)])
    target = local_target(stack)
    try:
        blob = target.blobs.get_blob_client("input", "echo/dup.csv")
        with path.open("rb") as data:
            etag = (await blob.upload_blob(data, overwrite=True))["etag"]
        event = blob_created_message(
            url=blob.url, container="input", blob="echo/dup.csv", etag=etag, size=path.stat().st_size
        )
        uploads = target.queues.get_queue_client(UPLOADS_QUEUE)
        for _ in range(3):  # Event Grid may deliver one upload's event more than once
            await uploads.send_message(event)
    finally:
        await target.close()
    from processing.core.layout import job_id_for

    job = job_id_for(blob.url, etag)
    done = await wait_state(stack, job)
    assert done.state == "done"
    # A late duplicate after the job is done changes nothing either.
    target = local_target(stack)
    try:
        await target.queues.get_queue_client(UPLOADS_QUEUE).send_message(event)
        _, jobs_listed = await _jobs_for(target, "input/echo/dup.csv")
    finally:
        await target.close()
    assert jobs_listed == [job]
    _, out = read_results(await download(stack, "output", "echo/dup.results.csv"))
    assert [r[0] for r in out] == [str(i) for i in range(30)]
    assert (await manifest(stack, job)).counts == {"ok": 30, "error": 0}


async def _jobs_for(target, source: str):
    from processing.adapters import job_store

    found = await job_store.list_manifests(target.blobs.get_container_client("jobs"))
    return found, [m.job for m in found if f"{m.source_container}/{m.source_blob}" == source]


async def test_a_missing_column_fails_the_job_with_an_error_report(stack: Stack, runner: RunnerProcess, tmp_path):
    path = write_csv(tmp_path / "no text.csv", ["id", "body"], [["1", "hello"]])

    code, info = await submit_and_wait(stack, path, "echo")

    assert code == 1
    assert info["state"] == "failed"
    assert info["error_report_blob"] == "output/echo/no text.error.json"
    report = json.loads(await download(stack, "output", "echo/no text.error.json"))
    assert "'text'" in report["error"] and "no text.csv" in report["error"]
    assert report["where"] == "header (line 1)"
    assert "pipelines/echo.toml" in report["fix"]


async def test_an_unknown_pipeline_fails_the_job_once(stack: Stack, runner: RunnerProcess, tmp_path):
    path = write_csv(tmp_path / "x.csv", ["text"], [["a"]])
    code, info = await submit_and_wait(stack, path, "nosuchpipeline")
    assert code == 1 and info["state"] == "failed"
    report = json.loads(await download(stack, "output", "nosuchpipeline/x.error.json"))
    assert "unknown pipeline 'nosuchpipeline'" in report["error"]
    assert "echo" in report["error"]  # lists what is available


async def test_a_header_only_file_completes_with_an_empty_result(stack: Stack, runner: RunnerProcess, tmp_path):
    path = write_csv(tmp_path / "empty.csv", ["id", "text"], [])
    code, info = await submit_and_wait(stack, path, "echo")
    assert code == 0 and info["total_rows"] == 0
    header, out = read_results(await download(stack, "output", "echo/empty.results.csv"))
    assert header == ["id", "text", "answer", "status", "error"] and out == []
