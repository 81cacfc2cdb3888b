"""Local (key) authentication is off on Azure OpenAI, Application Insights and Log Analytics."""

from __future__ import annotations

from checkov.common.models.enums import CheckCategories
from rowsmith_policy_base import LiteralPropertyCheck

openai_local_auth_disabled = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_4",
    name="Azure OpenAI (Cognitive Services) accounts disable key authentication (disableLocalAuth: true)",
    resource_types=("Microsoft.CognitiveServices/accounts",),
    path=("properties", "disableLocalAuth"),
    allowed=(True,),
    category=CheckCategories.IAM,
)

# Application Insights spells it with a capital D in the 2020-02-02 API.
app_insights_local_auth_disabled = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_5",
    name="Application Insights accepts only Entra-authenticated telemetry (DisableLocalAuth: true)",
    resource_types=("Microsoft.Insights/components",),
    path=("properties", "DisableLocalAuth"),
    allowed=(True,),
    category=CheckCategories.IAM,
)

log_analytics_local_auth_disabled = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_6",
    name="Log Analytics workspaces disable shared-key authentication (features.disableLocalAuth: true)",
    resource_types=("Microsoft.OperationalInsights/workspaces",),
    path=("properties", "features", "disableLocalAuth"),
    allowed=(True,),
    category=CheckCategories.IAM,
)
