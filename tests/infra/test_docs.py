"""docs/deploy.md's role table says what core/rbac.bicep grants, at which scope, no more
and no less; the docs name the model the Bicep deploys by default."""

from __future__ import annotations

import re

from tests.infra.bicep import MAIN, REPO, parse
from tests.infra.roles import EXPECTED_ASSIGNMENTS

DEPLOY = REPO / "docs" / "deploy.md"
SECURITY = REPO / "docs" / "security.md"

WHO = {
    "functionAppPrincipalId": "Function App",
    "eventGridPrincipalId": "Event Grid system topic",
    "userPrincipalId": "you",
}


def _scopes(cell: str) -> set[str]:
    """`containers `a`, `b`` -> {container a, container b}; other cells name one resource."""
    match = re.match(r"(containers?|queues?) (.+)$", cell)
    if match:
        kind = match.group(1).rstrip("s")
        return {f"{kind} {name}" for name in re.findall(r"`([^`]+)`", match.group(2))}
    return {cell}


def _role_rows() -> set[tuple[str, str, str]]:
    text = DEPLOY.read_text()
    section = text.split("### Roles", 1)[1].split("\n#", 1)[0]
    rows, who = set(), ""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("who", "---"):
            continue
        # "you (`principalId`, type `principalType`)" names the principal once; later rows say "you".
        who = cells[0].split(" (")[0] or who
        rows |= {(who, cells[1], scope) for scope in _scopes(cells[2])}
    return rows


def test_role_table_matches_the_bicep() -> None:
    expected = {(WHO[principal], role, scope) for principal, _, role, scope in EXPECTED_ASSIGNMENTS}
    rows = _role_rows()
    assert rows == expected, f"not in the docs: {sorted(expected - rows)}; not in the Bicep: {sorted(rows - expected)}"


def test_docs_cover_cleanup_and_propagation() -> None:
    text = DEPLOY.read_text()
    for phrase in ("azd down --purge", "AuthorizationPermissionMismatch", "10", "local_settings_from_azd.py"):
        assert phrase in text, phrase


def test_docs_name_the_default_model_and_where_it_came_from() -> None:
    params = parse(MAIN)["parameters"]
    model, version = params["openAiModelName"]["default"], params["openAiModelVersion"]["default"]
    text = DEPLOY.read_text()
    assert f"`{model}`" in text and version in text
    assert "model-retirement-schedule" in text  # the source of the choice
    assert "quotas-limits" in text  # the source of the requests-per-minute ratios


def test_security_docs_explain_every_account_wide_role() -> None:
    text = SECURITY.read_text()
    section = text.split("## Why each role is as wide as it is", 1)[1].split("\n## ", 1)[0]
    for phrase in ("Storage Table Data Contributor", "AzureFunctionsDiagnosticEvents", "you"):
        assert phrase in section, phrase
