"""The shipped `triage` pipeline on the shipped sample, against each model family, end to end.

The same pipeline file, unchanged, on a reasoning deployment (the Bicep's default: no
temperature, max_completion_tokens with room to think) and on a standard one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from localdev.openai_emulator.config import REASONING_DEPLOYMENT, STANDARD_DEPLOYMENT
from localdev.stack import Stack
from processing.core.settings import APP_ROOT
from tests.integration.harness import RunnerProcess, app_settings, download, emulator, manifest, submit_and_wait

pytestmark = pytest.mark.integration

SAMPLE = APP_ROOT / "samples" / "support_tickets.csv"
SDK_LOGGERS = re.compile(r" (INFO|DEBUG) (azure|httpx2?|openai)[\w.]*: ")


def sample_rows() -> int:
    with SAMPLE.open(newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.DictReader(f))


@pytest.mark.parametrize("deployment", [REASONING_DEPLOYMENT, STANDARD_DEPLOYMENT])
async def test_triage_answers_every_sample_ticket_on_both_model_families(
    stack: Stack, clean: None, tmp_path: Path, deployment: str
) -> None:
    settings = app_settings(
        stack, ROWSMITH_PIPELINES_DIR=str(APP_ROOT / "pipelines"), AZURE_OPENAI_DEPLOYMENT=deployment
    )
    log = tmp_path / "runner.log"
    with RunnerProcess(settings, log) as runner:
        code, info = await submit_and_wait(stack, SAMPLE, "triage", timeout=120)
        runner_log = runner.log()
    total = sample_rows()
    assert code == 0, (info, runner_log[-3000:])
    assert (info["total_rows"], info["ok_rows"], info["error_rows"]) == (total, total, 0)
    stats = await emulator(stack, "GET", "/_emulator/stats")
    assert stats["deployments"][deployment].get("rejected_parameters", 0) == 0  # no 400 on the way
    done = await manifest(stack, info["job"])
    assert done is not None
    if deployment == REASONING_DEPLOYMENT:
        # The job's accounting counts the thinking: 512 tokens a row at the default effort.
        assert info["reasoning_tokens"] == done.tokens["reasoning"] == 512 * total
        assert info["completion_tokens"] > info["reasoning_tokens"]
    else:
        assert info["reasoning_tokens"] == 0 and info["completion_tokens"] > 0
    results = (await download(stack, "output", "triage/support_tickets.results.csv")).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(results, newline="")))
    assert len(rows) == total and {r["status"] for r in rows} == {"ok"}
    assert {r["category"] for r in rows} <= {
        "billing", "bug", "how-to", "feature-request", "account-access",
        "data-privacy", "performance", "integration", "praise", "other",
    }  # fmt: skip
    # What the real worker would forward to Application Insights: the SDKs' INFO lines are not
    # among it (the app quiets them, not the runner), and the whole job logs far below a line a row.
    assert not SDK_LOGGERS.search(runner_log), SDK_LOGGERS.findall(runner_log)[:3]
    assert runner_log.count("\n") < total // 2, runner_log[-3000:]


async def test_a_job_whose_rows_all_fail_is_not_a_success(stack: Stack, clean: None, tmp_path: Path) -> None:
    # The answer's budget alone, no room to think: a reasoning model answers nothing (issue 12).
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    shipped = (APP_ROOT / "pipelines" / "triage.toml").read_text(encoding="utf-8")
    (pipelines / "triage.toml").write_text("reasoning_budget = 0\n" + shipped, encoding="utf-8")
    settings = app_settings(stack, ROWSMITH_PIPELINES_DIR=str(pipelines))
    with RunnerProcess(settings, tmp_path / "runner.log"):
        code, info = await submit_and_wait(stack, SAMPLE, "triage", timeout=120)
    total = sample_rows()
    assert code == 4, json.dumps(info)
    assert (info["ok_rows"], info["error_rows"]) == (0, total)
    assert info["error"].startswith(f"every row failed ({total} of {total}): {total} with code length: ")
    assert "raise reasoning_budget" in info["error"] and "\n" not in info["error"]


async def test_a_job_with_some_failed_rows_says_how_many(stack: Stack, runner: RunnerProcess, tmp_path: Path) -> None:
    path = tmp_path / "three.csv"
    path.write_text("id,text\n1,fine\n2,filtered [[fault:content_filter]]\n3,fine too\n", encoding="utf-8")
    code, info = await submit_and_wait(stack, path, "echo")
    assert code == 0, info
    assert (info["ok_rows"], info["error_rows"]) == (2, 1)
    assert info["warning"].startswith("1 of 3 rows failed (1 with code content_filter: content_filter: ")
    assert info["warning"].endswith(f"`rowsmith results {info['job']} --failed` writes them to a CSV to upload again")
