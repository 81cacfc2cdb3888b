"""What a job spent, and a job that may spend only so much, on the local stack.

The emulator's own counters are the reference for what was billed: every answer it served
(an answer that failed the schema included) is a billed request, and every request it saw was sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.stack import Stack
from processing.core.prices import Price, job_price
from processing.core.settings import DEFAULT_DEPLOYMENT
from processing.core.states import JobState, RowCode
from tests.integration.faults_util import Workers, csv_bytes, emulator_stats, parse_jsonl, submit
from tests.integration.harness import download, wait_state
from tests.integration.test_cancel_watch import cli_reads_the_apps_pipelines, cli_state, rowsmith  # noqa: F401

pytestmark = pytest.mark.integration


def price() -> Price:
    found = job_price(DEFAULT_DEPLOYMENT, None)
    assert found is not None, "the stack's default deployment is in the shipped price table"
    return found


async def test_every_billed_attempt_is_counted_in_tokens_requests_and_cost(
    stack: Stack, workers: Workers, tmp_path: Path
):
    workers.start()
    texts = [
        "plain one",
        "plain two",
        "[[fault:invalid_json:2]] answered on its third try",  # three billed answers
        "[[fault:invalid_json]] never valid",  # three billed answers, then an invalid_json error
        "[[fault:500:1]] a 5xx first",  # one unbilled request, then an answer
        "[[fault:429:1]] throttled first",  # re-enqueued after the 429, then an answer
    ]
    job = await submit(stack, "classify/spend.csv", csv_bytes(["text"], [[t] for t in texts]))
    done = await wait_state(stack, job, timeout=90)
    stats = await emulator_stats(stack)

    assert done.state == JobState.DONE
    assert (done.counts["ok"], done.counts["error"]) == (5, 1)
    assert done.row_errors[RowCode.INVALID_JSON]["rows"] == 1
    # Not only the last try of each answered row: every answer served is in the job's tokens.
    assert done.tokens["prompt"] == stats["tokens"]["prompt"]
    assert done.tokens["completion"] == stats["tokens"]["completion"]
    assert done.tokens["reasoning"] == stats["tokens"]["reasoning"]
    assert stats["answered"] == 2 + 3 + 3 + 1 + 1
    assert done.requests == stats["requests"] == stats["answered"] + 2  # the 500 and the 429
    assert done.retries == done.requests - len(texts)
    expected = price().cost(stats["tokens"]["prompt"], stats["tokens"]["completion"])
    assert done.cost_usd == pytest.approx(expected, abs=1e-6)
    assert done.price is not None and done.price["model"] == price().model

    # `status` tells the same, and the error row's line in the results keeps nothing of it hidden.
    code, status = await rowsmith(cli_state(stack, tmp_path), "status", job)
    assert code == 0, status
    assert (status["requests"], status["retries"]) == (done.requests, done.retries)
    assert status["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert status["prompt_tokens"] == stats["tokens"]["prompt"]
    lines = parse_jsonl(await download(stack, "output", done.results["jsonl"]))
    assert [line["status"] for line in lines] == ["ok", "ok", "ok", "error", "ok", "ok"]
    # The row that failed after three billed answers says what they were billed, as answered rows do.
    assert lines[3]["code"] == RowCode.INVALID_JSON and lines[3]["usage"]["completion_tokens"] > 0
    # Here no row was delivered twice, so the rows' usage adds up to everything served.
    assert sum(line["usage"]["prompt_tokens"] for line in lines) == stats["tokens"]["prompt"]


async def test_a_budget_smaller_than_the_jobs_cost_ends_it_done_with_budget_rows(
    stack: Stack, workers: Workers, tmp_path: Path
):
    # Two instances share the budget through storage alone, as on Azure.
    workers.start()
    workers.start()
    total = 160
    budget = 0.05
    state = cli_state(stack, tmp_path)
    source = tmp_path / "capped.csv"
    source.write_bytes(csv_bytes(["id", "text"], [[str(i), f"budget row {i}"] for i in range(total)]))

    code, info = await rowsmith(state, "submit", str(source), "--pipeline", "echo", "--budget-usd", str(budget))
    assert code == 0, info
    done = await wait_state(stack, info["job"], timeout=120)
    stats = await emulator_stats(stack)

    assert done.state == JobState.DONE
    budget_rows = done.row_errors.get(RowCode.BUDGET, {}).get("rows", 0)
    assert 0 < budget_rows < total, done.counts
    assert done.counts["ok"] + budget_rows == total
    assert done.budget == {"usd": budget, "reached": True, "rows": budget_rows}
    # No model call for a refused row: the emulator answered exactly the rows that were answered.
    assert stats["answered"] == done.counts["ok"]
    assert done.cost_usd is not None
    # Never above the budget by more than the requests in flight (here each request's cost is well
    # under the worst case reserved for it, so not above the budget at all).
    per_request = done.cost_usd / done.counts["ok"]
    print(
        f"budget ${budget}: {done.counts['ok']} rows answered, {budget_rows} ended `budget`, cost "
        f"${done.cost_usd:.6f}, {stats['max_in_flight']} requests in flight at most, ${per_request:.6f} a request"
    )
    assert done.cost_usd <= budget + stats["max_in_flight"] * per_request
    assert done.cost_usd <= budget

    lines = parse_jsonl(await download(stack, "output", done.results["jsonl"]))
    refused = [line for line in lines if line.get("code") == RowCode.BUDGET]
    assert len(refused) == budget_rows and "budget of $0.05" in refused[0]["error"]
    assert [line["row"] for line in lines] == list(range(1, total + 1))

    code, status = await rowsmith(state, "status", info["job"])
    assert code == 0 and status["budget_usd"] == budget and status["budget_rows"] == budget_rows
    assert status["budget_reached"] is True


async def test_submit_refuses_a_budget_that_is_not_a_positive_amount(stack: Stack, tmp_path: Path):
    source = tmp_path / "a.csv"
    source.write_bytes(csv_bytes(["id", "text"], [["1", "x"]]))
    code, info = await rowsmith(
        cli_state(stack, tmp_path), "submit", str(source), "--pipeline", "echo", "--budget-usd", "-1"
    )
    assert code == 1 and "--budget-usd" in info["error"]
