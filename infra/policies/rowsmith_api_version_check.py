"""Every resource uses a GA API version, with one named exception.

`Microsoft.Insights/diagnosticSettings` has no GA API version for today's (named, several
per resource) diagnostic settings: the only GA version, 2016-09-01, is the legacy single
setting named 'service'. 2021-05-01-preview is the version Microsoft's template reference
documents, so that exact type and version are allowed, and nothing else.

It applies to every resource type, which also gives each scanned .bicep file at least one
result: tests/infra relies on that to prove checkov parsed every file (it skips a file it
cannot parse without failing).
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckResult
from rowsmith_policy_base import RowsmithCheck

# Resource type -> the one preview API version allowed for it, and why (see above).
PREVIEW_EXCEPTIONS = {
    "Microsoft.Insights/diagnosticSettings": "2021-05-01-preview",
}


class GaApiVersion(RowsmithCheck):
    resource_types = ("*",)

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        # Preview API versions change shape and can be retired without notice.
        version = str(self.api_version or "")
        if not version:
            return CheckResult.FAILED
        if "preview" not in version:
            return CheckResult.PASSED
        allowed = {t.lower(): v for t, v in PREVIEW_EXCEPTIONS.items()}.get(str(self.entity_type).lower())
        return CheckResult.PASSED if version == allowed else CheckResult.FAILED


check = GaApiVersion("CKV_ROWSMITH_7", "Resources use a GA (non-preview) API version")
