"""Storage data roles are scoped to the container or queue they are for.

A role assignment's `scope` is a resource symbol; these checks look that resource up in
the same template (rowsmith_template) and demand a container for blob data roles and a
queue for queue data roles. An assignment without a scope (the whole resource group), or
with a scope or role the template does not spell out, fails: it cannot be proven narrow.
"""

from __future__ import annotations

import rowsmith_template as tmpl
from checkov.common.models.enums import CheckCategories
from rowsmith_policy_base import TemplateCheck

ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"

# Built-in role definition ids.
BLOB_DATA_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",  # Storage Blob Data Reader
}
QUEUE_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"  # Storage Queue Data Message Sender
QUEUE_DATA_ROLES = {
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
    "19e7f393-937e-4f77-808e-94535e297925",  # Storage Queue Data Reader
    "8a0f0c08-91a1-4084-bc3d-661d67233fed",  # Storage Queue Data Message Processor
    QUEUE_MESSAGE_SENDER,
}


class _ScopedRoleCheck(TemplateCheck):
    resource_types = (ROLE_ASSIGNMENT,)
    category = CheckCategories.IAM

    @staticmethod
    def _scoped_to(scan: tmpl.Scanned, expected: str) -> bool:
        target = scan.related(scan.resource, "scope")
        return target is not None and target["type"] == expected


class QueueSenderOnQueue(_ScopedRoleCheck):
    """Whoever may only put messages on a queue (Event Grid) gets that right on one queue."""

    evaluated = ("scope",)

    def passes(self, scan: tmpl.Scanned) -> bool:
        if tmpl.role_definition_guid(scan.tpl, scan.resource["body"]) != QUEUE_MESSAGE_SENDER:
            return True
        return self._scoped_to(scan, QUEUE)


class ManagedIdentityStorageRolesScoped(_ScopedRoleCheck):
    """A managed identity's blob and queue data roles name the container or queue.

    It applies to assignments written with `principalType: 'ServicePrincipal'`: the
    identities this deployment creates. The deploying person's assignments take their type
    from a parameter and are account-wide on purpose (docs/security.md); tests/infra
    pins each of them.
    """

    evaluated = ("properties/roleDefinitionId", "scope")

    def passes(self, scan: tmpl.Scanned) -> bool:
        body = scan.resource["body"]
        if tmpl.lookup(body, "properties", "principalType") != "ServicePrincipal":
            return True
        role = tmpl.role_definition_guid(scan.tpl, body)
        if role is None:
            return False  # a role the template does not name cannot be proven narrow
        if role in BLOB_DATA_ROLES:
            return self._scoped_to(scan, CONTAINER)
        if role in QUEUE_DATA_ROLES:
            return self._scoped_to(scan, QUEUE)
        return True


queue_sender_on_queue = QueueSenderOnQueue(
    "CKV_ROWSMITH_8", "Storage Queue Data Message Sender is assigned on a queue, never the account"
)
managed_identity_storage_roles_scoped = ManagedIdentityStorageRolesScoped(
    "CKV_ROWSMITH_9", "Blob and queue data roles of managed identities are scoped to a container or a queue"
)
