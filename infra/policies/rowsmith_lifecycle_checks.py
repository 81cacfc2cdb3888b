"""Blob versions are bounded: a lifecycle rule deletes previous versions after some days.

Without one, versioning keeps every overwritten and deleted blob forever and the capacity
bill only grows. The check looks, for each blob service, for a management policy of the
same account (in the same template) with an enabled rule that deletes versions.
"""

from __future__ import annotations

from typing import Any

import rowsmith_template as tmpl
from rowsmith_policy_base import TemplateCheck

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


class BlobVersionsExpire(TemplateCheck):
    resource_types = ("Microsoft.Storage/storageAccounts/blobServices",)
    evaluated = ("parent",)

    def passes(self, scan: tmpl.Scanned) -> bool:
        account = tmpl.symbol_of(scan.resource["body"].get("parent"))
        policies = scan.deployed_on(MANAGEMENT_POLICIES, "parent", account)
        return any(_deletes_versions(res["body"]) for res in policies)


check = BlobVersionsExpire("CKV_ROWSMITH_13", "A lifecycle rule deletes previous blob versions after a number of days")
