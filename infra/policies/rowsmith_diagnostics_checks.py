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
from checkov.common.models.enums import CheckCategories
from rowsmith_policy_base import TemplateCheck

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


class DiagnosticSettingPresent(TemplateCheck):
    resource_types = tuple(REQUIRED_CATEGORIES)
    category = CheckCategories.LOGGING
    evaluated = ("diagnosticSettings",)

    def passes(self, scan: tmpl.Scanned) -> bool:
        required = REQUIRED_CATEGORIES[scan.resource["type"]]
        settings = scan.deployed_on(DIAGNOSTIC_SETTINGS, "scope", scan.symbol)
        return any(_has_workspace(res["body"]) and required <= _enabled_categories(res["body"]) for res in settings)


class DiagnosticSettingValid(TemplateCheck):
    resource_types = (DIAGNOSTIC_SETTINGS,)
    category = CheckCategories.LOGGING
    evaluated = ("scope", "properties/workspaceId", "properties/logs")

    def passes(self, scan: tmpl.Scanned) -> bool:
        body = scan.resource["body"]
        target = scan.related(scan.resource, "scope")
        supported = SUPPORTED_CATEGORIES.get(target["type"]) if target else None
        logs = tmpl.lookup(body, "properties", "logs")
        if supported is None or not _has_workspace(body) or not isinstance(logs, list) or not logs:
            return False
        # A category group (allLogs, audit) has no fixed content or cost; name categories.
        return all(isinstance(log, dict) and log.get("category") in supported for log in logs)


diagnostic_setting_present = DiagnosticSettingPresent(
    "CKV_ROWSMITH_10",
    "Storage blob and queue services, Azure OpenAI and Function Apps send their logs to Log Analytics",
)
diagnostic_setting_valid = DiagnosticSettingValid(
    "CKV_ROWSMITH_11",
    "Diagnostic settings go to a Log Analytics workspace and name only categories their target offers",
)
