"""Every resource uses a GA API version.

It applies to every resource type, which also gives each scanned .bicep file at least one
result: tests/infra relies on that to prove checkov parsed every file (it skips a file it
cannot parse without failing).
"""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class GaApiVersion(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Resources use a GA (non-preview) API version",
            id="CKV_ROWSMITH_7",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_resources=("*",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        # Preview API versions change shape and can be retired without notice.
        version = str(self.api_version or "")
        return CheckResult.FAILED if not version or "preview" in version else CheckResult.PASSED


check = GaApiVersion()
