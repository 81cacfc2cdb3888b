"""`rowsmith estimate` on the shipped sample and pipeline, and the price table it uses."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from processing.core.errors import ConfigurationError, JobInputError
from processing.core.prices import load_prices, price_for
from processing.core.settings import APP_ROOT, app_values
from rowsmith_cli import estimate, main

SAMPLE = APP_ROOT / "samples" / "support_tickets.csv"


def run(path: Path, pipeline: str, **env: str) -> dict:
    return asyncio.run(estimate.estimate(path, pipeline, app_values(env)))


def sample_rows() -> list[dict[str, str]]:
    with SAMPLE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_sample_is_counted_rendered_and_priced_from_the_table():
    info = run(SAMPLE, "triage", AZURE_OPENAI_DEPLOYMENT="gpt-4o-mini")
    rows = sample_rows()
    assert (info["rows"], info["requests"], info["row_errors"]) == (len(rows), len(rows), 0)
    assert info["input_blob"] == "input/triage/support_tickets.csv"
    # The first prompts are the pipeline's template filled with those rows' cells.
    assert [p["row"] for p in info["prompts"]] == [1, 2, 3]
    first = info["prompts"][0]["messages"]
    assert first[0]["role"] == "system" and first[0]["content"].startswith("You triage support tickets")
    assert first[1]["content"] == (
        f"Channel: {rows[0]['channel']}\nPlan: {rows[0]['plan']}\nSubject: {rows[0]['subject']}\n\n{rows[0]['body']}"
    )
    tokens = info["tokens"]
    assert tokens["exact"] and tokens["counted_with"] == "tokenizer o200k_base"
    assert tokens["answer_budget"] == len(rows) * 300  # triage's max_tokens
    # English text: roughly four characters a token, so the exact count is near the app's estimate.
    chars = sum(len(m["content"]) for m in first)
    assert chars / 6 < tokens["per_request_prompt"] < chars / 2
    price = load_prices()["gpt-4o-mini"]
    cost = info["cost"]
    assert (tokens["model_family"], tokens["reasoning_budget"]) == ("standard", 0)
    expected = (tokens["prompt"] * price.input + tokens["answer_budget"] * price.output) / 1e6
    assert cost["max_usd"] == pytest.approx(expected, abs=1e-6)
    assert cost["batch_max_usd"] == pytest.approx(expected * (1 - price.batch_discount), abs=1e-6)
    assert cost["price"]["source"].startswith("https://") and "placeholder" not in cost


def test_the_duration_follows_the_configured_quota():
    info = run(SAMPLE, "triage", AZURE_OPENAI_RPM="60", AZURE_OPENAI_TPM="10000000")
    # 240 requests at 97 % of 60 a minute: the request rate binds, not the tokens.
    assert info["duration"]["bound"] == "rpm"
    assert info["duration"]["seconds"] == pytest.approx(240 * 60 / (60 * 0.97), abs=0.1)
    assert run(SAMPLE, "triage")["duration"]["seconds"] is None  # not paced: no figure invented


def test_the_duration_counts_tokens_as_the_apps_pacer_does_the_reasoning_budget_included():
    # The README's quota example: at 60,000 TPM a reasoning model's requests are admitted at their
    # prompt plus max_tokens plus reasoning_budget (2,300 tokens and more each), so tokens bind.
    reasoning = run(SAMPLE, "triage", AZURE_OPENAI_RPM="600", AZURE_OPENAI_TPM="60000")
    standard = run(
        SAMPLE, "triage", AZURE_OPENAI_RPM="600", AZURE_OPENAI_TPM="60000", AZURE_OPENAI_MODEL_FAMILY="standard"
    )
    assert reasoning["duration"]["bound"] == "tpm"
    per_request = reasoning["tokens"]["per_request_prompt"] + 300 + 2000  # triage max_tokens + the default budget
    assert reasoning["duration"]["seconds"] == pytest.approx(240 * per_request * 60 / (60000 * 0.97), rel=0.02)
    assert reasoning["duration"]["seconds"] > 5 * standard["duration"]["seconds"]


def test_the_default_model_is_priced_with_a_labelled_placeholder():
    info = run(SAMPLE, "triage", AZURE_OPENAI_DEPLOYMENT="gpt-5.6-luna")
    assert "no published Azure OpenAI price" in info["cost"]["placeholder"]
    # A reasoning model thinks out of its own budget (2000 a request unless the pipeline says),
    # billed as output: the most the job can cost includes it.
    tokens, price = info["tokens"], load_prices()["gpt-5.6-luna"]
    assert tokens["model_family"] == "reasoning" and tokens["reasoning_budget"] == info["requests"] * 2000
    output = tokens["answer_budget"] + tokens["reasoning_budget"]
    assert info["cost"]["max_usd"] == pytest.approx((tokens["prompt"] * price.input + output * price.output) / 1e6)


def test_a_prices_file_overrides_the_table_and_an_unknown_model_has_no_cost(tmp_path: Path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {"gpt-4o-mini": {"input": 1, "output": 2, "source": "our contract"}}}))
    info = run(SAMPLE, "triage", ROWSMITH_PRICES_FILE=str(prices), AZURE_OPENAI_DEPLOYMENT="gpt-4o-mini")
    tokens = info["tokens"]
    assert info["cost"]["max_usd"] == pytest.approx((tokens["prompt"] * 1 + tokens["answer_budget"] * 2) / 1e6)
    assert info["cost"]["price"]["source"] == "our contract"
    unknown = run(SAMPLE, "triage", AZURE_OPENAI_DEPLOYMENT="my-model")
    assert unknown["cost"] is None and "ROWSMITH_PRICES_FILE" in unknown["cost_error"]
    assert unknown["tokens"]["exact"] is False  # no known tokenizer: the labelled estimate
    prices.write_text(json.dumps({"models": {"x": {"input": -1, "output": 1}}}))
    with pytest.raises(ConfigurationError, match="negative"):
        load_prices(prices)


def test_a_deployment_name_is_priced_by_its_model_prefix():
    prices = load_prices()
    assert price_for("gpt-4o-mini-2024", prices) is prices["gpt-4o-mini"]
    assert price_for("gpt-4o-eu", prices) is prices["gpt-4o"]
    assert price_for("llama", prices) is None


def test_a_file_missing_the_prompts_columns_fails_as_its_job_would(tmp_path: Path):
    bad = tmp_path / "tickets.csv"
    bad.write_text("subject,text\nhello,world\n")
    with pytest.raises(JobInputError) as err:
        run(bad, "triage")
    assert "input/triage/tickets.csv does not have" in str(err.value)
    assert err.value.where == "header (line 1)" and "pipelines/triage.toml" in err.value.fix


def test_the_command_prints_json_and_people_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    # No model to sample: no local stack in this state folder, no endpoint in the shell.
    monkeypatch.setenv("ROWSMITH_STATE_DIR", str(tmp_path / "no-stack"))
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    assert main.main(["estimate", str(SAMPLE), "--pipeline", "triage", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["rows"] == 240 and info["cost"]["max_usd"] > 0
    # Without a sample the answers are counted at their budget, and every figure says so, and why.
    assert info["basis"] == info["tokens"]["basis"] == info["cost"]["basis"] == "upper bound"
    assert "no model to sample" in info["note"]
    assert info["cost"]["usd"] == info["cost"]["max_usd"] and info["tokens"]["sample"] is None
    assert info["tokens"]["completion"] == info["tokens"]["answer_budget"] + info["tokens"]["reasoning_budget"]
    assert main.main(["estimate", str(SAMPLE), "--pipeline", "triage"]) == 0
    out = capsys.readouterr().out
    assert "--- row 1 (line 2) ---" in out and "240 rows, 240 requests" in out
    assert "cost (upper bound): at most $" in out and "tokens (upper bound: answers at their budget" in out
    assert "note: no model to sample" in out
    # --sample 0 asks for the upper bound: nothing to explain.
    assert main.main(["estimate", str(SAMPLE), "--pipeline", "triage", "--sample", "0", "--json"]) == 0
    assert "note" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"channel,plan,subject,body\nemail,Pro,caf\xe9,x\n")
    assert main.main(["estimate", str(bad), "--pipeline", "triage"]) == 1
    err = capsys.readouterr().err
    assert "is not valid UTF-8" in err and "  where: byte " in err and "  fix: save the file as UTF-8" in err


def test_the_pipelines_budget_is_set_beside_the_estimate(tmp_path: Path):
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    triage = (APP_ROOT / "pipelines" / "triage.toml").read_text(encoding="utf-8")
    (pipelines / "capped.toml").write_text("budget_usd = 0.01\n" + triage, encoding="utf-8")
    (pipelines / "roomy.toml").write_text("budget_usd = 100\n" + triage, encoding="utf-8")
    env = {"ROWSMITH_PIPELINES_DIR": str(pipelines), "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini"}

    capped = run(SAMPLE, "capped", **env)
    budget = capped["budget"]
    assert budget["usd"] == 0.01 and budget["reached"] is True and capped["cost"]["usd"] > 0.01
    # The job would stop where the budget runs out: about budget / cost per row rows are sent.
    per_row = capped["cost"]["usd"] / capped["requests"]
    assert budget["rows_sent_about"] == pytest.approx(0.01 / per_row, abs=2)
    assert f"about {budget['rows_sent_about']:,} of 240 rows would be sent" in estimate.describe(capped)

    roomy = run(SAMPLE, "roomy", **env)
    assert roomy["budget"] == {"usd": 100.0, "reached": False}
    assert "not reached by this estimate" in estimate.describe(roomy)
    assert run(SAMPLE, "triage", AZURE_OPENAI_DEPLOYMENT="gpt-4o-mini")["budget"] is None
