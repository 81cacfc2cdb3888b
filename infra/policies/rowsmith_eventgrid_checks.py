"""Event subscriptions keep what they cannot deliver, written with a managed identity.

Without a dead-letter destination Event Grid drops an event once its retry policy runs
out, and at once on a 400, 403 or 413 from an Azure destination (a role that has not
propagated yet, for instance). `deadLetterWithResourceIdentity` writes those events to a
blob container with the topic's own identity; the plain `deadLetterDestination` has none.
"""

from __future__ import annotations

import rowsmith_template as tmpl
from rowsmith_policy_base import TemplateCheck

EVENT_SUBSCRIPTIONS = (
    "Microsoft.EventGrid/systemTopics/eventSubscriptions",
    "Microsoft.EventGrid/topics/eventSubscriptions",
    "Microsoft.EventGrid/domains/eventSubscriptions",
    "Microsoft.EventGrid/eventSubscriptions",
)


class DeadLetterWithIdentity(TemplateCheck):
    resource_types = EVENT_SUBSCRIPTIONS
    evaluated = ("properties/deadLetterWithResourceIdentity", "properties/deadLetterDestination")

    def passes(self, scan: tmpl.Scanned) -> bool:
        body = scan.resource["body"]
        if not tmpl.missing(tmpl.lookup(body, "properties", "deadLetterDestination")):
            return False
        dead_letter = tmpl.lookup(body, "properties", "deadLetterWithResourceIdentity")
        identity = tmpl.lookup(dead_letter, "identity", "type")
        endpoint = tmpl.lookup(dead_letter, "deadLetterDestination", "endpointType")
        destination = tmpl.lookup(dead_letter, "deadLetterDestination", "properties")
        if identity not in ("SystemAssigned", "UserAssigned") or endpoint != "StorageBlob":
            return False
        return isinstance(destination, dict) and {"resourceId", "blobContainerName"} <= set(destination)


check = DeadLetterWithIdentity(
    "CKV_ROWSMITH_14", "Event subscriptions dead-letter to a blob container with a managed identity"
)
