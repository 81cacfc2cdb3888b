"""Diagnostic settings: the resources that see data send their logs to Log Analytics.

CKV_ROWSMITH_10 looks, for each blob service, queue service, Azure OpenAI account and
Function App, for a diagnostic setting in the same template that is scoped to it, goes to a
Log Analytics workspace and enables the categories listed here. CKV_ROWSMITH_11 checks
each diagnostic setting on its own: a workspace destination and only categories its
target's resource type offers (Azure Monitor's supported-logs reference), so a typo
cannot silently collect nothing.
"""

from __future__ import annotations

from typing import Any

import rowsmith_template as tmpl
from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

DIAGNOSTIC_SETTINGS = "Microsoft.Insights/diagnosticSettings"

# Log categories each resource type offers (Azure Monitor "Supported logs" reference).
SUPPORTED_CATEGORIES = {
    "Microsoft.Storage/storageAccounts/blobServices": {"StorageRead", "StorageWrite", "StorageDelete"},
    "Microsoft.Storage/storageAccounts/queueServices": {"StorageRead", "StorageWrite", "StorageDelete"},
    "Microsoft.CognitiveServices/accounts": {"Audit", "RequestResponse", "Trace"},
    "Microsoft.Web/sites": {
        "AppServiceAntivirusScanAuditLogs",
        "AppServiceAppLogs",
        "AppServiceAuditLogs",
        "AppServiceConsoleLogs",
        "AppServiceFileAuditLogs",
        "AppServiceHTTPLogs",
        "AppServiceIPSecAuditLogs",
        "AppServicePlatformLogs",
        "FunctionAppLogs",
        "WorkflowRuntime",
    },
}

# What each monitored type must send.
REQUIRED_CATEGORIES = {
    "Microsoft.Storage/storageAccounts/blobServices": {"StorageRead", "StorageWrite", "StorageDelete"},
    "Microsoft.Storage/storageAccounts/queueServices": {"StorageRead", "StorageWrite", "StorageDelete"},
    "Microsoft.CognitiveServices/accounts": {"Audit", "RequestResponse"},
    "Microsoft.Web/sites": {"FunctionAppLogs"},
}


def _enabled_categories(body: dict[str, Any]) -> set[str]:
    logs = tmpl.lookup(body, "properties", "logs")
    if not isinstance(logs, list):
        return set()
    # `enabled: true` written as a literal; a parameter could turn it off.
    return {
        log["category"] for log in logs if isinstance(log, dict) and log.get("enabled") is True and "category" in log
    }


def _has_workspace(body: dict[str, Any]) -> bool:
    workspace = tmpl.lookup(body, "properties", "workspaceId")
    return not tmpl.missing(workspace) and workspace not in ("", None)


class DiagnosticSettingPresent(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Storage blob and queue services, Azure OpenAI and Function Apps send their logs to Log Analytics",
            id="CKV_ROWSMITH_10",
            categories=(CheckCategories.LOGGING,),
            supported_resources=tuple(REQUIRED_CATEGORIES),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["diagnosticSettings"]
        path, symbol = tmpl.entity(self.entity_path)
        found = tmpl.resources(tmpl.template(path))
        required = REQUIRED_CATEGORIES[found[symbol]["type"]]
        for res in found.values():
            if res["type"] != DIAGNOSTIC_SETTINGS or res["existing"] or res["condition"] is not None:
                continue
            body = res["body"]
            if tmpl.symbol_of(body.get("scope")) != symbol or not _has_workspace(body):
                continue
            if required <= _enabled_categories(body):
                return CheckResult.PASSED
        return CheckResult.FAILED


class DiagnosticSettingValid(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Diagnostic settings go to a Log Analytics workspace and name only categories their target offers",
            id="CKV_ROWSMITH_11",
            categories=(CheckCategories.LOGGING,),
            supported_resources=(DIAGNOSTIC_SETTINGS,),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["scope", "properties/workspaceId", "properties/logs"]
        path, symbol = tmpl.entity(self.entity_path)
        found = tmpl.resources(tmpl.template(path))
        body = found[symbol]["body"]
        target = found.get(tmpl.symbol_of(body.get("scope")) or "")
        supported = SUPPORTED_CATEGORIES.get(target["type"]) if target else None
        logs = tmpl.lookup(body, "properties", "logs")
        if supported is None or not _has_workspace(body) or not isinstance(logs, list) or not logs:
            return CheckResult.FAILED
        for log in logs:
            # A category group (allLogs, audit) has no fixed content or cost; name categories.
            if not isinstance(log, dict) or log.get("category") not in supported:
                return CheckResult.FAILED
        return CheckResult.PASSED


diagnostic_setting_present = DiagnosticSettingPresent()
diagnostic_setting_valid = DiagnosticSettingValid()
