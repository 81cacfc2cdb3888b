"""Running checkov on Bicep from its own venv (see infra/checks.mk) and reading its report."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.bicep import INFRA, REPO

CHECKOV = REPO / ".venv" / "infra-tools" / "bin" / "checkov"
POLICIES = INFRA / "policies"
CUSTOM_PREFIX = "CKV_ROWSMITH_"

# Offline: no platform download, no package update check, nothing uploaded.
OFFLINE_ENV = {
    "BC_SKIP_MAPPING": "TRUE",
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass
class Scan:
    root: Path
    passed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    parsing_errors: list[str]
    log: str
    returncode: int
    files: set[Path] = field(default_factory=set)

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.passed + self.failed + self.skipped

    def ids(self, result: str, path: Path) -> set[str]:
        records = {"passed": self.passed, "failed": self.failed, "skipped": self.skipped}[result]
        return {r["check_id"] for r in records if Path(r["file_abs_path"]) == path}


def run_checkov(root: Path) -> Scan:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make test` (it installs infra/checks.mk's tools)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_API", "PRISMA"))}
    env.update(OFFLINE_ENV)
    proc = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(root),
            "--framework",
            "bicep",
            "--external-checks-dir",
            str(POLICIES),
            "--skip-download",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.stdout.strip(), f"checkov printed no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    # One framework gives one report; be tolerant of checkov returning a list.
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert len(bicep) <= 1
    results = bicep[0]["results"] if bicep else {}
    scan = Scan(
        root=root,
        passed=results.get("passed_checks", []),
        failed=results.get("failed_checks", []),
        skipped=results.get("skipped_checks", []),
        parsing_errors=results.get("parsing_errors", []),
        log=proc.stderr,
        returncode=proc.returncode,
    )
    scan.files = {Path(r["file_abs_path"]).resolve() for r in scan.results}
    return scan
