"""The role assignments the deployment must make: exactly these (core/rbac.bicep), each at
exactly this scope."""

from __future__ import annotations

from processing.core import layout

# Built-in role definition ids (Azure built-in roles reference). Nothing else may be assigned.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

# Scope descriptions, by the type of the resource a role assignment is scoped to.
ACCOUNT = "storage account"
OPENAI = "Azure OpenAI account"
APP_INSIGHTS = "Application Insights"
SCOPE_TYPES = {
    "Microsoft.Storage/storageAccounts": ACCOUNT,
    "Microsoft.Storage/storageAccounts/blobServices/containers": "container",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "queue",
    "Microsoft.CognitiveServices/accounts": OPENAI,
    "Microsoft.Insights/components": APP_INSIGHTS,
}

# Containers and queues that exist only for the platform (not in processing/core/layout.py).
DEPLOYMENT_CONTAINER = "app-package"
HOST_CONTAINERS = ("azure-webjobs-hosts", "azure-webjobs-secrets")
DEAD_LETTER_CONTAINER = "deadletter"


def container(name: str) -> str:
    return f"container {name}"


def queue(name: str) -> str:
    return f"queue {name}"


APP = ("functionAppPrincipalId", "ServicePrincipal")
EVENT_GRID = ("eventGridPrincipalId", "ServicePrincipal")
# The deploying principal's type is a parameter (azd's AZURE_PRINCIPAL_TYPE).
USER = ("userPrincipalId", "userPrincipalType")

# (principal parameter of rbac.bicep, principalType, role name, scope): exactly these.
EXPECTED_ASSIGNMENTS = {
    *{(*APP, "Storage Blob Data Contributor", container(c)) for c in layout.ALL_CONTAINERS},
    (*APP, "Storage Blob Data Contributor", container(DEPLOYMENT_CONTAINER)),
    *{(*APP, "Storage Blob Data Owner", container(c)) for c in HOST_CONTAINERS},
    *{(*APP, "Storage Queue Data Contributor", queue(q)) for q in layout.ALL_QUEUES},
    (*APP, "Storage Table Data Contributor", ACCOUNT),
    (*APP, "Cognitive Services OpenAI User", OPENAI),
    (*APP, "Monitoring Metrics Publisher", APP_INSIGHTS),
    (*EVENT_GRID, "Storage Queue Data Message Sender", queue(layout.UPLOADS_QUEUE)),
    (*EVENT_GRID, "Storage Blob Data Contributor", container(DEAD_LETTER_CONTAINER)),
    (*USER, "Storage Blob Data Contributor", ACCOUNT),
    (*USER, "Storage Queue Data Contributor", ACCOUNT),
    (*USER, "Cognitive Services OpenAI User", OPENAI),
}

# Where each principal parameter must come from in main.bicep.
PRINCIPAL_SOURCES = {
    "functionAppPrincipalId": ("functionApp", "outputs", "principalId"),
    "eventGridPrincipalId": ("eventGrid", "outputs", "principalId"),
    "userPrincipalId": ("principalId",),
    "userPrincipalType": ("principalType",),
}
