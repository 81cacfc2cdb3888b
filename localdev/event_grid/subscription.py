"""The event subscription infra/app/eventsubscription.bicep creates, as data the local Event Grid applies.

This is the one place the local stack states the filter; tests/infra checks that it equals
the Bicep's `filter` object and destination queue. Matching follows Event Grid's rules:
the subject filters compare case-insensitively unless `isSubjectCaseSensitive`, and a
`StringIn` advanced filter compares strings case-insensitively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processing.core.layout import INPUT_CONTAINER, UPLOADS_QUEUE

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBJECT_CONTAINER_PREFIX = "/blobServices/default/containers/"
# The one advanced-filter operator the subscription uses; another would need its own rule here.
STRING_IN = "StringIn"


@dataclass(frozen=True)
class AdvancedFilter:
    operator_type: str
    key: str  # a dotted path into the event, e.g. data.api
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.operator_type != STRING_IN:
            raise ValueError(f"the local Event Grid knows only {STRING_IN} filters, not {self.operator_type!r}")

    def matches(self, event: Mapping[str, Any]) -> bool:
        value: Any = event
        for part in self.key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
        return isinstance(value, str) and value.lower() in {v.lower() for v in self.values}

    def to_bicep(self) -> dict[str, Any]:
        return {"operatorType": self.operator_type, "key": self.key, "values": list(self.values)}


@dataclass(frozen=True)
class Subscription:
    """An Event Grid subscription that delivers to a storage queue (EventGridSchema)."""

    included_event_types: tuple[str, ...]
    subject_begins_with: str
    subject_ends_with: str
    is_subject_case_sensitive: bool
    advanced_filters: tuple[AdvancedFilter, ...]
    queue_name: str
    queue_message_ttl_seconds: int

    @property
    def container(self) -> str:
        """The one container whose blobs can pass `subject_begins_with` (the one to watch)."""
        rest = self.subject_begins_with.removeprefix(SUBJECT_CONTAINER_PREFIX)
        if rest == self.subject_begins_with or not rest.endswith("/") or rest.count("/") != 1:
            raise ValueError(f"subjectBeginsWith {self.subject_begins_with!r} does not name one container")
        return rest[:-1]

    def matches(self, event: Mapping[str, Any]) -> bool:
        if event.get("eventType") not in self.included_event_types:
            return False
        subject = str(event.get("subject", ""))
        begins, ends = self.subject_begins_with, self.subject_ends_with
        if not self.is_subject_case_sensitive:
            subject, begins, ends = subject.lower(), begins.lower(), ends.lower()
        if not (subject.startswith(begins) and subject.endswith(ends)):
            return False
        return all(f.matches(event) for f in self.advanced_filters)

    def bicep_filter(self) -> dict[str, Any]:
        """The `filter` object of the Bicep's eventSubscriptions resource this stands for."""
        return {
            "includedEventTypes": list(self.included_event_types),
            "subjectBeginsWith": self.subject_begins_with,
            "subjectEndsWith": self.subject_ends_with,
            "isSubjectCaseSensitive": self.is_subject_case_sensitive,
            "advancedFilters": [f.to_bicep() for f in self.advanced_filters],
        }


# infra/app/eventsubscription.bicep `csv-uploads`: BlobCreated for input/**.csv, from calls
# that commit a blob's content, to the uploads queue, each message kept for 7 days.
CSV_UPLOADS = Subscription(
    included_event_types=(BLOB_CREATED,),
    subject_begins_with=f"{SUBJECT_CONTAINER_PREFIX}{INPUT_CONTAINER}/",
    subject_ends_with=".csv",
    is_subject_case_sensitive=False,
    advanced_filters=(
        AdvancedFilter(STRING_IN, "data.api", ("PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose")),
    ),
    queue_name=UPLOADS_QUEUE,
    queue_message_ttl_seconds=604800,
)
