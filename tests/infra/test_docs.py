"""docs/deploy.md's role table says what core/rbac.bicep grants, no more and no less."""

from __future__ import annotations

from tests.infra.bicep import REPO
from tests.infra.roles import EXPECTED_ASSIGNMENTS

DEPLOY = REPO / "docs" / "deploy.md"

WHO = {
    "functionAppPrincipalId": "Function App",
    "eventGridPrincipalId": "Event Grid system topic",
    "userPrincipalId": "you",
}


def _role_rows() -> set[tuple[str, str]]:
    text = DEPLOY.read_text()
    section = text.split("### Roles", 1)[1].split("\n#", 1)[0]
    rows, who = set(), ""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("who", "---"):
            continue
        # "you (`principalId`, type User)" names the user once; later rows say "you".
        who = cells[0].split(" (")[0] or who
        rows.add((who, cells[1]))
    return rows


def test_role_table_matches_the_bicep() -> None:
    expected = {(WHO[principal], role) for principal, _, role in EXPECTED_ASSIGNMENTS}
    assert _role_rows() == expected


def test_docs_cover_cleanup_and_propagation() -> None:
    text = DEPLOY.read_text()
    for phrase in ("azd down --purge", "AuthorizationPermissionMismatch", "10", "local_settings_from_azd.py"):
        assert phrase in text, phrase
