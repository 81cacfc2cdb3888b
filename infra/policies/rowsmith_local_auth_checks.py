"""Local (key) authentication is off on Azure OpenAI, Application Insights and Log Analytics."""

from __future__ import annotations

from checkov.common.models.enums import CheckCategories
from rowsmith_policy_base import LiteralPropertyCheck

openai_local_auth_disabled = LiteralPropertyCheck(
    "CKV_ROWSMITH_4",
    "Microsoft.CognitiveServices/accounts",
    "disableLocalAuth",
    (True,),
    "Azure OpenAI (Cognitive Services) accounts disable key authentication",
    category=CheckCategories.IAM,
)
# Application Insights spells it with a capital D in the 2020-02-02 API.
app_insights_local_auth_disabled = LiteralPropertyCheck(
    "CKV_ROWSMITH_5",
    "Microsoft.Insights/components",
    "DisableLocalAuth",
    (True,),
    "Application Insights accepts only Entra-authenticated telemetry",
    category=CheckCategories.IAM,
)
log_analytics_local_auth_disabled = LiteralPropertyCheck(
    "CKV_ROWSMITH_6",
    "Microsoft.OperationalInsights/workspaces",
    "features.disableLocalAuth",
    (True,),
    "Log Analytics workspaces disable shared-key authentication",
    category=CheckCategories.IAM,
)
