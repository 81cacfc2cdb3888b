"""Event subscriptions keep what they cannot deliver, written with a managed identity.

Without a dead-letter destination Event Grid drops an event once its retry policy runs
out, and at once on a 400, 403 or 413 from an Azure destination (a role that has not
propagated yet, for instance). `deadLetterWithResourceIdentity` writes those events to a
blob container with the topic's own identity; the plain `deadLetterDestination` has none.
"""

from __future__ import annotations

from typing import Any

import rowsmith_template as tmpl
from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

EVENT_SUBSCRIPTIONS = (
    "Microsoft.EventGrid/systemTopics/eventSubscriptions",
    "Microsoft.EventGrid/topics/eventSubscriptions",
    "Microsoft.EventGrid/domains/eventSubscriptions",
    "Microsoft.EventGrid/eventSubscriptions",
)


class DeadLetterWithIdentity(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Event subscriptions dead-letter to a blob container with a managed identity",
            id="CKV_ROWSMITH_14",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_resources=EVENT_SUBSCRIPTIONS,
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["properties/deadLetterWithResourceIdentity", "properties/deadLetterDestination"]
        path, symbol = tmpl.entity(self.entity_path)
        body = tmpl.resources(tmpl.template(path))[symbol]["body"]
        if not tmpl.missing(tmpl.lookup(body, "properties", "deadLetterDestination")):
            return CheckResult.FAILED
        dead_letter = tmpl.lookup(body, "properties", "deadLetterWithResourceIdentity")
        identity = tmpl.lookup(dead_letter, "identity", "type")
        endpoint = tmpl.lookup(dead_letter, "deadLetterDestination", "endpointType")
        destination = tmpl.lookup(dead_letter, "deadLetterDestination", "properties")
        if identity not in ("SystemAssigned", "UserAssigned") or endpoint != "StorageBlob":
            return CheckResult.FAILED
        if not isinstance(destination, dict) or not {"resourceId", "blobContainerName"} <= set(destination):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = DeadLetterWithIdentity()
