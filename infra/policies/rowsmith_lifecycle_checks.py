"""Blob versions are bounded: a lifecycle rule deletes previous versions after some days.

Without one, versioning keeps every overwritten and deleted blob forever and the capacity
bill only grows. The check looks, for each blob service, for a management policy of the
same account (in the same template) with an enabled rule that deletes versions.
"""

from __future__ import annotations

from typing import Any

import rowsmith_template as tmpl
from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

MANAGEMENT_POLICIES = "Microsoft.Storage/storageAccounts/managementPolicies"


def _deletes_versions(body: dict[str, Any]) -> bool:
    rules = tmpl.lookup(body, "properties", "policy", "rules")
    if not isinstance(rules, list):
        return False
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("enabled") is not True:
            continue
        days = tmpl.lookup(rule, "definition", "actions", "version", "delete", "daysAfterCreationGreaterThan")
        if not tmpl.missing(days) and days is not None:
            return True
    return False


class BlobVersionsExpire(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="A lifecycle rule deletes previous blob versions after a number of days",
            id="CKV_ROWSMITH_13",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_resources=("Microsoft.Storage/storageAccounts/blobServices",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["parent"]
        path, symbol = tmpl.entity(self.entity_path)
        found = tmpl.resources(tmpl.template(path))
        account = tmpl.symbol_of(found[symbol]["body"].get("parent"))
        for res in found.values():
            if res["type"] != MANAGEMENT_POLICIES or res["existing"] or res["condition"] is not None:
                continue
            if account and tmpl.symbol_of(res["body"].get("parent")) == account and _deletes_versions(res["body"]):
                return CheckResult.PASSED
        return CheckResult.FAILED


check = BlobVersionsExpire()
