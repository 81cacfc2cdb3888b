"""checkov over infra/: no failed check, skips only with a reason, every file scanned,
and our own policies (infra/policies) proven to fail on deliberately bad templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep import FIXTURES, INFRA, bicep_files
from tests.infra.checkov_scan import CUSTOM_PREFIX, Scan, run_checkov

POLICY_FIXTURES = FIXTURES / "policies"

CUSTOM_CHECKS = {f"{CUSTOM_PREFIX}{n}" for n in range(1, 15)}

# Which custom checks each bad fixture must fail, and no others.
EXPECTED_FAILURES = {
    "storage_shared_key_on.bicep": {"CKV_ROWSMITH_1"},
    "storage_shared_key_from_param.bicep": {"CKV_ROWSMITH_1"},
    "storage_public_blob.bicep": {"CKV_ROWSMITH_2"},
    "storage_tls10.bicep": {"CKV_ROWSMITH_3"},
    "storage_defaults.bicep": {"CKV_ROWSMITH_1", "CKV_ROWSMITH_2", "CKV_ROWSMITH_3"},
    "openai_keys_on.bicep": {"CKV_ROWSMITH_4"},
    "appinsights_keys_on.bicep": {"CKV_ROWSMITH_5"},
    "loganalytics_keys_on.bicep": {"CKV_ROWSMITH_6"},
    "storage_preview_api.bicep": {"CKV_ROWSMITH_7"},
    "diagnostics_other_preview_api.bicep": {"CKV_ROWSMITH_7"},
    # Role scopes: Event Grid's queue sender, managed identities' storage data roles.
    "rbac_queue_sender_on_queue_service.bicep": {"CKV_ROWSMITH_8"},
    "rbac_eventgrid_sender_on_account.bicep": {"CKV_ROWSMITH_8", "CKV_ROWSMITH_9"},
    "rbac_app_blob_role_on_account.bicep": {"CKV_ROWSMITH_9"},
    "rbac_app_queue_role_no_scope.bicep": {"CKV_ROWSMITH_9"},
    "rbac_deadletter_writer_on_blob_service.bicep": {"CKV_ROWSMITH_9"},
    # Diagnostic settings.
    "storage_diagnostics_missing.bicep": {"CKV_ROWSMITH_10"},
    "openai_diagnostics_wrong_category.bicep": {"CKV_ROWSMITH_10", "CKV_ROWSMITH_11"},
    "functionapp_diagnostics_not_to_workspace.bicep": {"CKV_ROWSMITH_10", "CKV_ROWSMITH_11"},
    # Blob versioning and its lifecycle bound.
    "storage_versioning_off.bicep": {"CKV_ROWSMITH_12"},
    "storage_versions_unbounded.bicep": {"CKV_ROWSMITH_13"},
    # Event Grid dead letters.
    "eventgrid_no_deadletter.bicep": {"CKV_ROWSMITH_14"},
    "eventgrid_deadletter_without_identity.bicep": {"CKV_ROWSMITH_14"},
}

# Valid Bicep that checkov cannot parse, kept to prove the scanned-files check notices.
UNPARSEABLE_FIXTURE = "pycep_unsupported.bicep"


@pytest.fixture(scope="module")
def infra_scan() -> Scan:
    return run_checkov(INFRA)


@pytest.fixture(scope="module")
def fixture_scan() -> Scan:
    return run_checkov(POLICY_FIXTURES)


def _unscanned(scan: Scan, files: list[Path]) -> set[Path]:
    return {f.resolve() for f in files} - scan.files


def _assert_checks_ran_cleanly(scan: Scan) -> None:
    # checkov logs a crashing check or an unloadable policy file and carries on.
    assert "Failed to run check" not in scan.log, scan.log[-3000:]
    assert "Cannot load external check" not in scan.log, scan.log[-3000:]


def test_no_failed_checks(infra_scan: Scan) -> None:
    failed = [f"{r['check_id']} {r['resource']} {r['file_path']}:{r['file_line_range']}" for r in infra_scan.failed]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert infra_scan.returncode == 0


def test_every_bicep_file_was_scanned(infra_scan: Scan) -> None:
    assert infra_scan.parsing_errors == []
    assert _unscanned(infra_scan, bicep_files()) == set()


def test_custom_policies_ran_and_passed_on_our_templates(infra_scan: Scan) -> None:
    _assert_checks_ran_cleanly(infra_scan)
    passed = {r["check_id"] for r in infra_scan.passed}
    assert passed >= CUSTOM_CHECKS, f"custom checks that never ran: {CUSTOM_CHECKS - passed}"


def test_skips_are_written_in_the_template_with_a_reason(infra_scan: Scan) -> None:
    for record in infra_scan.skipped:
        reason = (record["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 20, f"{record['check_id']} on {record['resource']} skipped without a reason"
        assert not record["check_id"].startswith(CUSTOM_PREFIX), "our own policies are never skipped"


def test_no_skip_comment_is_stale(infra_scan: Scan) -> None:
    # Every `checkov:skip` in a template must match a check that applies there.
    skipped = {(Path(r["file_abs_path"]).resolve(), r["check_id"]) for r in infra_scan.skipped}
    for path in bicep_files():
        for check_id in re.findall(r"checkov:skip=([A-Z0-9_]+):", path.read_text()):
            assert (path.resolve(), check_id) in skipped, f"{path}: skip of {check_id} matches nothing"


def test_each_custom_policy_fails_on_its_bad_fixture(fixture_scan: Scan) -> None:
    _assert_checks_ran_cleanly(fixture_scan)
    for name, expected in EXPECTED_FAILURES.items():
        path = (POLICY_FIXTURES / name).resolve()
        failed = {c for c in fixture_scan.ids("failed", path) if c.startswith(CUSTOM_PREFIX)}
        assert failed == expected, f"{name}: failed {sorted(failed)}, expected {sorted(expected)}"
    covered = set().union(*EXPECTED_FAILURES.values())
    assert covered == CUSTOM_CHECKS


def test_every_fixture_is_accounted_for() -> None:
    names = {p.name for p in POLICY_FIXTURES.glob("*.bicep")}
    assert names == set(EXPECTED_FAILURES) | {UNPARSEABLE_FIXTURE}


def test_scanned_files_check_catches_a_file_checkov_skipped(fixture_scan: Scan) -> None:
    # checkov exits as if all were well for a file it cannot parse; comparing the
    # scanned files with the file list is what exposes it.
    fixtures = sorted(POLICY_FIXTURES.glob("*.bicep"))
    assert _unscanned(fixture_scan, fixtures) == {(POLICY_FIXTURES / UNPARSEABLE_FIXTURE).resolve()}
