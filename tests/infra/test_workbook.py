"""The jobs workbook (infra/core/workbook.bicep): it is valid workbook JSON, deployed on the
Application Insights resource, and its queries read only names the app emits.

The names come from processing/adapters/telemetry.py's constants, so a metric renamed in the
code without the workbook (or the other way round) fails here rather than as an empty chart.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from processing.adapters import telemetry
from tests.infra.bicep import INFRA, is_ref, module, module_file, only, resources

WORKBOOK_BICEP = INFRA / "core" / "workbook.bicep"
WORKBOOK_JSON = INFRA / "core" / "workbook.json"

# What the workbook is for (issue 13): jobs, throughput, tokens, cost and errors, over time.
REQUIRED_METRICS = {
    telemetry.JOBS_METRIC,
    telemetry.ROWS_METRIC,
    telemetry.TOKENS_METRIC,
    telemetry.COST_METRIC,
    telemetry.THROTTLED_METRIC,
    telemetry.MODEL_DURATION_METRIC,
    telemetry.QUEUE_DELAY_METRIC,
}
# Every attribute the code puts on spans, logs or metrics; the workbook may group by these only.
ATTRIBUTES = {
    telemetry.JOB_ID,
    telemetry.PIPELINE,
    telemetry.STAGE,
    telemetry.ATTEMPT,
    telemetry.ROW_INDEX,
    telemetry.OUTCOME,
    telemetry.QUEUE,
    telemetry.DEPLOYMENT,
    telemetry.TOKEN_KIND,
    telemetry.JOB_STATE,
}
SPANS = {telemetry.STAGE_SPAN_PREFIX + stage for stage in set(telemetry.STAGES.values())} | {
    telemetry.ROW_SPAN,
    telemetry.MODEL_SPAN,
}
TABLES = {"customMetrics", "dependencies", "traces"}


def _workbook() -> dict[str, Any]:
    return json.loads(WORKBOOK_JSON.read_text(encoding="utf-8"))


def _queries() -> list[str]:
    return [item["content"]["query"] for item in _workbook()["items"] if item["type"] == 3]


def test_the_workbook_is_workbook_json() -> None:
    data = _workbook()
    assert data["version"] == "Notebook/1.0"
    names = [item["name"] for item in data["items"]]
    assert len(names) == len(set(names)), "item names must be unique"
    for item in data["items"]:
        if item["type"] == 3:
            content = item["content"]
            assert content["version"] == "KqlItem/1.0"
            assert content["resourceType"] == "microsoft.insights/components"
            assert content["timeContextFromParameter"] == "TimeRange"
    (params,) = [item for item in data["items"] if item["type"] == 9]
    assert "TimeRange" in {p["name"] for p in params["content"]["parameters"]}


def test_every_query_reads_a_table_application_insights_has() -> None:
    for query in _queries():
        assert query.split("\n", 1)[0].strip() in TABLES, query


def test_the_queries_name_only_metrics_the_code_emits_and_every_one_it_should_show() -> None:
    named = {m for q in _queries() for m in re.findall(r'name == "([^"]+)"', q) if q.startswith("customMetrics")}
    assert named <= set(telemetry.METRICS), f"metrics the code does not emit: {sorted(named - set(telemetry.METRICS))}"
    assert named >= REQUIRED_METRICS, f"not shown: {sorted(REQUIRED_METRICS - named)}"


def test_the_queries_group_by_attributes_the_code_sets() -> None:
    used = {key for q in _queries() for key in re.findall(r'customDimensions\["([^"]+)"\]', q)}
    assert used, "the workbook reads no attribute"
    assert used <= ATTRIBUTES, f"attributes the code does not set: {sorted(used - ATTRIBUTES)}"


def test_span_queries_name_spans_the_code_starts() -> None:
    for query in _queries():
        if not query.startswith("dependencies"):
            continue
        exact = set(re.findall(r'name [!=]= "([^"]+)"', query))
        assert exact <= SPANS, f"spans the code does not start: {sorted(exact - SPANS)}"
        for prefix in re.findall(r'name startswith "([^"]+)"', query):
            assert any(span.startswith(prefix) for span in SPANS), prefix


@pytest.mark.parametrize("title", ["Jobs by state", "Throughput", "Tokens", "Cost", "Row errors"])
def test_the_workbook_shows(title: str) -> None:
    titles = [item["content"].get("title", "") for item in _workbook()["items"] if item["type"] == 3]
    assert any(t.startswith(title) for t in titles), titles


def test_the_bicep_deploys_the_json_on_the_application_insights_resource() -> None:
    workbook = only(resources(WORKBOOK_BICEP, "Microsoft.Insights/workbooks"), "workbook")
    props = workbook.body["properties"]
    assert props["category"] == "workbook" and props["version"] == "Notebook/1.0"
    assert is_ref(props["sourceId"], "appInsights", "id")
    assert "loadTextContent('workbook.json')" in WORKBOOK_BICEP.read_text(encoding="utf-8")
    assert module_file("workbook") == WORKBOOK_BICEP.resolve()
    passed = module("workbook")["config"]["params"]
    assert is_ref(passed["appInsightsName"], "monitoring", "outputs", "appInsightsName")
