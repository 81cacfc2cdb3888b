"""`rowsmith estimate`: what a file would cost before it is uploaded.

Reads the file with ingest's own checks (preflight.py), renders every row's prompt, counts its
tokens (tokens.py) and prices them with the model's entry in the price table
(processing/core/prices.py). Without a sample ("basis": "upper bound") the answer is priced at
its budget, `max_tokens` per request, and on a reasoning model the thinking at its own,
`reasoning_budget` per request (both billed as output): the most a job can be billed for them,
since how long each will be is not known yet. With `--sample N` ("basis": "sampled N rows") the
first N rows are sent to the deployment as the app sends them (sampling.py) and the answer and
reasoning tokens they were billed are extrapolated to every request; the difference between the
prompt tokens the service reported and the counter's for the same rows (a JSON schema's share,
which the counter cannot see) is added per request. The upper bound is kept beside it.
The duration is the pace the app itself keeps (at 97 % of the configured RPM/TPM, counting
each request as its estimate plus max_tokens, as Azure admits it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processing.core import model_family
from processing.core.model_family import Family
from processing.core.prices import load_prices, price_for
from processing.core.rate_limiter import HEADROOM
from rowsmith_cli import preflight, sampling
from rowsmith_cli.tokens import counter_for

UPPER_BOUND = "upper bound"

SHOWN_PROMPTS = 3
# Rows `estimate` sends to the model when a model is reachable and --sample is not given: enough
# for answer lengths within a few percent on a uniform file, a negligible share of a job's bill.
DEFAULT_SAMPLE = 10
NO_MODEL_NOTE = (
    "no model to sample (no running local stack, no AZURE_OPENAI_ENDPOINT in this shell): answers are counted at "
    "their budget; start the local stack or set AZURE_OPENAI_ENDPOINT for a sampled estimate"
)


def _duration(requests: int, admission_tokens: int, rpm: int, tpm: int) -> dict[str, Any]:
    by_requests = requests * 60 / (rpm * HEADROOM) if rpm else 0.0
    by_tokens = admission_tokens * 60 / (tpm * HEADROOM) if tpm else 0.0
    info: dict[str, Any] = {"rpm": rpm, "tpm": tpm}
    if not (rpm or tpm):
        info.update(seconds=None, bound=None, note="not paced: set AZURE_OPENAI_RPM/TPM to the quota for a duration")
        return info
    info.update(seconds=round(max(by_requests, by_tokens), 1), bound="rpm" if by_requests >= by_tokens else "tpm")
    return info


def _budget(budget_usd: float, cost: dict[str, Any] | None, requests: int) -> dict[str, Any] | None:
    """The pipeline's cap beside the estimate: whether the job would reach it, and about where."""
    if not budget_usd:
        return None
    info: dict[str, Any] = {"usd": budget_usd}
    if cost is None or not requests:
        return info
    per_request = cost["usd"] / requests
    info["reached"] = cost["usd"] > budget_usd
    if info["reached"]:
        # The app stops once the unspent budget cannot cover one request's worst case.
        worst = cost["max_usd"] / requests
        info["rows_sent_about"] = max(0, min(requests, int((budget_usd - worst) / per_request) + 1))
    return info


def _per_request(total: int, rows: int, requests: int) -> int:
    return round(total / rows * requests) if rows else 0


async def estimate(
    path: Path,
    pipeline_name: str | None,
    settings: dict[str, Any],
    *,
    sample: int = 0,
    model_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The estimate; `sample` > 0 first asks the model the first rows, with the settings in
    `model_env` (the app's: rowsmith_cli/settings.model_environment)."""
    prices = load_prices(settings.get("prices_file"))
    preflight.check_path(path)
    pipeline = preflight.pipeline_for(pipeline_name, settings)
    model = pipeline.deployment or settings["openai_deployment"]
    counter = counter_for(model)
    checked = await preflight.check_file(
        path, pipeline, settings, count=counter.prompt_tokens, show=SHOWN_PROMPTS, sample=sample
    )
    requests = checked.requests
    answer_budget = requests * pipeline.max_tokens
    # The family the app would try first for this deployment (a wrong `auto` guess is corrected
    # by Azure's first 400; the estimate takes the guess).
    family = model_family.resolve(pipeline.model_family or settings["openai_model_family"], model)
    reasoning_budget = requests * pipeline.reasoning_budget if family == Family.REASONING else 0
    price = price_for(model, prices)
    basis = UPPER_BOUND
    prompt = checked.prompt_tokens
    completion = answer_budget + reasoning_budget
    reasoning = reasoning_budget
    cached = 0  # prompt tokens served from the cache: only a sample can tell
    sampled: dict[str, Any] | None = None
    if sample and checked.sampled:
        found, endpoint = await sampling.sample(pipeline, model, checked.sampled, model_env or {})
        sampled = {**found.as_dict(), "endpoint": endpoint}
        if price:
            sampled["cost_usd"] = round(
                price.cost(found.prompt_tokens, found.completion_tokens, found.cached_tokens), 6
            )
        if found.answered:
            # Per row asked, answered or not: a row that failed after billed attempts is as
            # likely among the rest as in the sample.
            basis = f"sampled {found.rows} rows"
            prompt += _per_request(found.prompt_tokens - found.counted_prompt_tokens, found.rows, requests)
            completion = _per_request(found.completion_tokens, found.rows, requests)
            reasoning = _per_request(found.reasoning_tokens, found.rows, requests)
            cached = _per_request(found.cached_tokens, found.rows, requests)
    tokens: dict[str, Any] = {
        "basis": basis,
        "counted_with": counter.method,
        "exact": counter.exact,
        "prompt": prompt,
        "completion": completion,  # reasoning included, as Azure counts and bills it
        "reasoning": reasoning,
        "cached": cached,
        "answer_budget": answer_budget,
        "model_family": str(family),
        "reasoning_budget": reasoning_budget,
        "per_request_prompt": round(prompt / requests, 1) if requests else 0,
        "sample": sampled,
    }
    cost: dict[str, Any] | None = None
    if price:
        prompt_usd = price.cost(prompt, 0)
        answer_usd = price.cost(0, answer_budget)
        reasoning_usd = price.cost(0, reasoning_budget)
        expected_usd = price.cost(prompt, completion, cached)
        cost = {
            "currency": "USD",
            "basis": basis,
            "usd": round(expected_usd, 6),
            "batch_usd": round(expected_usd * (1 - price.batch_discount), 6),
            "max_usd": round(prompt_usd + answer_usd + reasoning_usd, 6),
            "prompt_usd": round(prompt_usd, 6),
            "answer_budget_usd": round(answer_usd, 6),
            "reasoning_budget_usd": round(reasoning_usd, 6),
            "batch_max_usd": round((prompt_usd + answer_usd + reasoning_usd) * (1 - price.batch_discount), 6),
            "price": {
                "model": price.model,
                "input_per_million": price.input,
                "cached_input_per_million": price.cached_input,
                "output_per_million": price.output,
                "batch_discount": price.batch_discount,
                "source": price.source,
                "as_of": price.as_of,
            },
        }
        if price.placeholder:
            cost["placeholder"] = price.placeholder
    return {
        "file": str(path),
        "input_blob": f"input/{checked.input_blob}",
        "pipeline": pipeline.name,
        "deployment": model,
        "delimiter": checked.delimiter,
        "encoding": checked.encoding,
        "rows": checked.rows,
        "row_errors": checked.row_errors,
        "requests": requests,
        "basis": basis,
        "tokens": tokens,
        "cost": cost,
        "cost_error": None if price else f"no price for {model!r} in the price table: add it with ROWSMITH_PRICES_FILE",
        "budget": _budget(pipeline.budget_usd, cost, requests),
        "duration": _duration(
            requests,
            # As the app's pacer counts a request: prompt estimate plus the whole completion
            # budget it asks for, the reasoning budget included on a reasoning model.
            checked.admission_tokens + (requests * pipeline.reasoning_budget if family == Family.REASONING else 0),
            pipeline.rpm or settings["openai_rpm"],
            pipeline.tpm or settings["openai_tpm"],
        ),
        "prompts": checked.prompts,
    }


def describe(info: dict[str, Any]) -> str:
    """The estimate for people: the first prompts, then the figures."""
    lines = []
    for prompt in info["prompts"]:
        lines.append(f"--- row {prompt['row']} (line {prompt['line']}) ---")
        lines.extend(f"[{m['role']}]\n{m['content']}" for m in prompt["messages"])
    tokens = info["tokens"]
    lines.append("---")
    lines.append(
        f"{info['file']} -> {info['input_blob']} (pipeline {info['pipeline']}, deployment {info['deployment']}): "
        f"{info['rows']} rows, {info['requests']} requests"
        + (f", {info['row_errors']} row(s) would be row errors (not sent)" if info["row_errors"] else "")
    )
    sampled = tokens["sample"]
    if sampled:
        errors = ", ".join(f"{n} {code}" for code, n in sampled["errors"].items())
        lines.append(
            f"sample: {sampled['rows']} rows sent to {info['deployment']} at {sampled['endpoint']}, "
            f"{sampled['answered']} answered"
            + (f" ({errors})" if errors else "")
            + f": {sampled['prompt_tokens']:,} prompt, {sampled['completion_tokens']:,} completion "
            f"({sampled['reasoning_tokens']:,} reasoning) tokens"
            + (f", ${sampled['cost_usd']:.4f} billed" if "cost_usd" in sampled else "")
        )
    if tokens["basis"] == UPPER_BOUND:
        lines.append(
            f"tokens (upper bound: answers at their budget; --sample N measures them): {tokens['prompt']:,} prompt "
            f"({tokens['counted_with']}), up to {tokens['answer_budget']:,} answer (max_tokens per request)"
            + (
                f", up to {tokens['reasoning_budget']:,} reasoning (reasoning_budget per request)"
                if tokens["reasoning_budget"]
                else ""
            )
        )
    else:
        lines.append(
            f"tokens ({tokens['basis']}, extrapolated): {tokens['prompt']:,} prompt ({tokens['counted_with']}), "
            f"{tokens['completion']:,} completion"
            + (f" of which {tokens['reasoning']:,} reasoning" if tokens["reasoning"] else "")
            + f"; upper bound {tokens['answer_budget'] + tokens['reasoning_budget']:,} completion"
        )
    cost = info["cost"]
    if cost:
        price = cost["price"]
        if cost["basis"] != UPPER_BOUND:
            lines.append(
                f"cost ({cost['basis']}): about ${cost['usd']:.4f}; Batch API: ${cost['batch_usd']:.4f}; "
                f"at most ${cost['max_usd']:.4f}"
            )
        else:
            lines.append(
                f"cost (upper bound): at most ${cost['max_usd']:.4f} (prompt ${cost['prompt_usd']:.4f} + answers at "
                f"their budget ${cost['answer_budget_usd']:.4f}"
                + (
                    f" + reasoning at its budget ${cost['reasoning_budget_usd']:.4f}"
                    if tokens["reasoning_budget"]
                    else ""
                )
                + f"); Batch API: ${cost['batch_max_usd']:.4f}"
            )
        lines.append(
            f"price: {price['model']} ${price['input_per_million']}/M input, ${price['output_per_million']}/M output "
            f"({price['source']}, {price['as_of']})"
        )
        if cost.get("placeholder"):
            lines.append(f"PLACEHOLDER PRICE: {cost['placeholder']}")
    else:
        lines.append(f"cost: unknown: {info['cost_error']}")
    duration = info["duration"]
    if duration["seconds"] is None:
        lines.append(f"duration: {duration['note']}")
    else:
        lines.append(
            f"duration: about {duration['seconds']:,.0f} s at {duration['rpm']} RPM / {duration['tpm']} TPM "
            f"(bound by {duration['bound']})"
        )
    budget = info.get("budget")
    if budget and "reached" in budget:
        lines.append(
            f"budget: ${budget['usd']:g} (pipeline budget_usd): "
            + (
                f"reached; about {budget['rows_sent_about']:,} of {info['requests']:,} rows would be sent, the rest "
                "end as `budget` rows"
                if budget["reached"]
                else "not reached by this estimate"
            )
        )
    if info.get("note"):
        lines.append(f"note: {info['note']}")
    return "\n".join(lines)


def to_json(info: dict[str, Any]) -> str:
    return json.dumps(info, ensure_ascii=False)
