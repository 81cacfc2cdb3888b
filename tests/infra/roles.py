"""The role assignments the deployment must make: exactly these (core/rbac.bicep)."""

from __future__ import annotations

# Built-in role definition ids (Azure built-in roles reference), with the resource type
# each may be scoped to. Nothing else may be assigned.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": ("Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts"),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": (
        "Storage Queue Data Message Sender",
        "Microsoft.Storage/storageAccounts",
    ),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": (
        "Cognitive Services OpenAI User",
        "Microsoft.CognitiveServices/accounts",
    ),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}

# (principal parameter of rbac.bicep, principalType, role name): exactly these assignments.
EXPECTED_ASSIGNMENTS = {
    ("functionAppPrincipalId", "ServicePrincipal", "Storage Blob Data Owner"),
    ("functionAppPrincipalId", "ServicePrincipal", "Storage Queue Data Contributor"),
    ("functionAppPrincipalId", "ServicePrincipal", "Storage Table Data Contributor"),
    ("functionAppPrincipalId", "ServicePrincipal", "Cognitive Services OpenAI User"),
    ("functionAppPrincipalId", "ServicePrincipal", "Monitoring Metrics Publisher"),
    ("eventGridPrincipalId", "ServicePrincipal", "Storage Queue Data Message Sender"),
    ("userPrincipalId", "User", "Storage Blob Data Contributor"),
    ("userPrincipalId", "User", "Storage Queue Data Contributor"),
    ("userPrincipalId", "User", "Cognitive Services OpenAI User"),
}

# Where each principal parameter must come from in main.bicep.
PRINCIPAL_SOURCES = {
    "functionAppPrincipalId": ("functionApp", "outputs", "principalId"),
    "eventGridPrincipalId": ("eventGrid", "outputs", "principalId"),
    "userPrincipalId": ("principalId",),
}
