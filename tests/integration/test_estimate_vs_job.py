"""`rowsmith estimate` against what the job then reports, on the local stack.

The emulator counts tokens with OpenAI's tokenizer (localdev/openai_emulator/tokens.py), so its
usage is the reference: the estimate's prompt count must agree with the job's, and the answer
and reasoning tokens it extrapolates from the rows it samples (10 by default, when a model is
reachable, as the local stack's is) must come within 10 % of the job's.
The shipped sample and `triage` pipeline run on the stack's default deployment, a reasoning
model (it thinks 512 tokens a request at the default effort; the budget is 2,300).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localdev.stack import Stack
from processing.core.prices import load_prices, price_for
from processing.core.settings import APP_ROOT
from rowsmith_cli import estimate
from tests.integration import test_cli as cli
from tests.integration.faults_util import Workers, blobs, emulator_config, emulator_stats
from tests.integration.harness import FIXTURE_PIPELINES, manifest
from tests.integration.test_cancel_watch import cli_state

pytestmark = pytest.mark.integration

SAMPLE = APP_ROOT / "samples" / "support_tickets.csv"
TOLERANCE = 0.10


def off_by(estimated: float, actual: float) -> float:
    return abs(estimated - actual) / actual


async def test_a_sampled_estimate_is_within_ten_percent_of_the_job(
    stack: Stack, workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The app and the CLI read the shipped pipelines (triage); the CLI finds the model through
    # the stack's app settings, as nothing in this shell names an Azure OpenAI endpoint.
    monkeypatch.setenv("ROWSMITH_PIPELINES_DIR", str(APP_ROOT / "pipelines"))
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    workers.start(ROWSMITH_PIPELINES_DIR=str(APP_ROOT / "pipelines"))
    state = cli_state(stack, tmp_path)
    data = tmp_path / "support_tickets.csv"
    data.write_bytes(SAMPLE.read_bytes())

    code, bound = cli.rowsmith(state, "estimate", str(data), "--pipeline", "triage", "--sample", "0")
    assert code == 0 and bound["basis"] == "upper bound" and "note" not in bound, bound
    # The command as a user types it: the stack's model is reachable, so it samples by default.
    code, est = cli.rowsmith(state, "estimate", str(data), "--pipeline", "triage")
    assert code == 0, est
    tokens = est["tokens"]
    assert est["basis"] == tokens["basis"] == est["cost"]["basis"] == f"sampled {estimate.DEFAULT_SAMPLE} rows"
    assert tokens["sample"]["answered"] == estimate.DEFAULT_SAMPLE and tokens["sample"]["errors"] == {}
    assert tokens["sample"]["endpoint"] == stack.emulator_url
    assert est["prompts"] and est["rows"] == 240 and est["duration"]
    text = estimate.describe(est)
    assert f"sample: {estimate.DEFAULT_SAMPLE} rows sent to gpt-5.6-luna" in text
    assert f"tokens (sampled {estimate.DEFAULT_SAMPLE} rows, extrapolated)" in text
    assert f"cost (sampled {estimate.DEFAULT_SAMPLE} rows): about $" in text

    code, submitted = cli.rowsmith(state, "submit", str(data), "--pipeline", "triage", "--wait", timeout=300)
    assert code == 0 and submitted["state"] == "done", submitted
    job = submitted["job"]
    found = await manifest(stack, job)
    assert found is not None and found.counts["ok"] == est["requests"] == 240
    actual = found.tokens
    async with blobs(stack) as service:
        raw = json.loads(
            await (await service.get_blob_client("jobs", f"{job}/manifest.json").download_blob()).readall()
        )
    _, status = cli.rowsmith(state, "status", job)
    # The job's cost: the manifest's (and status's) cost_usd, the job's billed tokens at its price
    # snapshot; where a job carries none (an app from before it was recorded), its own tokens at
    # the same price table.
    recorded = raw.get("cost_usd", status.get("cost_usd"))
    if recorded is not None:
        job_cost = float(recorded)
        assert status.get("cost_usd") in (None, recorded)
    else:
        price = price_for(est["deployment"], load_prices())
        assert price is not None
        job_cost = price.cost(actual["prompt"], actual["completion"], actual.get("cached", 0))
    print(f"job cost {'from the manifest' if recorded is not None else 'computed from its tokens'}")

    misses = {
        "prompt": off_by(tokens["prompt"], actual["prompt"]),
        "completion": off_by(tokens["completion"], actual["completion"]),
        "reasoning": off_by(tokens["reasoning"], actual["reasoning"]),
        "cost": off_by(est["cost"]["usd"], job_cost),
    }
    print(
        f"estimate vs job: {json.dumps({k: round(v * 100, 3) for k, v in misses.items()})} % off; "
        f"estimate {tokens['prompt']}/{tokens['completion']}/{tokens['reasoning']} tokens ${est['cost']['usd']:.6f}, "
        f"job {actual['prompt']}/{actual['completion']}/{actual['reasoning']} tokens ${job_cost:.6f}, "
        f"upper bound {bound['tokens']['prompt']}/{bound['tokens']['completion']} tokens "
        f"${bound['cost']['max_usd']:.6f}"
    )
    assert all(miss <= TOLERANCE for miss in misses.values()), (misses, tokens, actual)
    # The prompt is counted with the same tokenizer the emulator counts with: not within 10 %, equal.
    assert tokens["prompt"] == actual["prompt"]
    # The upper bound without a sample is well above what the job spent (it budgets 2,300 a request).
    assert bound["tokens"]["completion"] > 3 * actual["completion"]
    assert bound["cost"]["max_usd"] > job_cost


async def test_a_sample_waits_out_a_429_and_counts_a_refused_row_as_an_error(
    stack: Stack, clean: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # No app needed: the sample calls the stack's emulator itself. The fault markers are the
    # emulator's: one 429 (retry-after 300 ms) before an answer, and a content-filter refusal.
    monkeypatch.setenv("ROWSMITH_PIPELINES_DIR", str(FIXTURE_PIPELINES))
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    await emulator_config(stack, fault_retry_after_ms=300)
    state = cli_state(stack, tmp_path)
    data = tmp_path / "faults.csv"
    data.write_text(
        "id,text\n1,fine\n2,slow [[fault:429:1]]\n3,refused [[fault:content_filter]]\n4,fine too\n5,not sampled\n",
        encoding="utf-8",
    )
    code, est = cli.rowsmith(state, "estimate", str(data), "--pipeline", "echo", "--sample", "4")
    assert code == 0, est
    sample = est["tokens"]["sample"]
    assert (sample["rows"], sample["answered"], sample["errors"]) == (4, 3, {"content_filter": 1})
    assert est["basis"] == "sampled 4 rows" and est["requests"] == 5
    # Five requests were sent for four rows (the 429 and its retry); the refusal billed nothing.
    assert sample["requests"] == 5
    stats = await emulator_stats(stack)
    assert stats["tokens"]["completion"] == sample["completion_tokens"]
    assert est["tokens"]["completion"] == round(sample["completion_tokens"] / 4 * 5)
