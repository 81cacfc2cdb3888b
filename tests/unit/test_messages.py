import json

import pytest

from localdev.event_grid.events import blob_created_event, queue_message
from processing.core.messages import BadMessage, BlobCreated, FinalizeMessage, Row, RowsMessage


def test_rows_message_round_trips_and_is_versioned():
    msg = RowsMessage("job-1", (Row(3, ("a", "b,c")), Row(4, ("é", ""))), waits=2, tries=1)
    data = json.loads(msg.to_json())
    assert data["v"] == 1
    assert RowsMessage.from_json(msg.to_json()) == msg


def test_unknown_version_is_refused():
    with pytest.raises(BadMessage, match="version"):
        RowsMessage.from_json(json.dumps({"v": 99, "type": "rows", "job": "j", "rows": [[0, ["x"]]]}))


def test_event_grid_event_is_accepted_plain_or_base64():
    event = blob_created_event(
        url="https://acct.blob.core.windows.net/input/triage/a.csv",
        container="input",
        blob="triage/a.csv",
        etag='"0x8D"',
        size=10,
    )
    plain = BlobCreated.from_event(json.dumps(event))
    encoded = BlobCreated.from_event(queue_message(event))  # as Event Grid writes it to a queue
    assert plain == encoded
    assert (plain.container, plain.blob, plain.etag, plain.api) == ("input", "triage/a.csv", "0x8D", "PutBlob")


def test_other_event_types_and_garbage_are_bad_messages():
    with pytest.raises(BadMessage):
        BlobCreated.from_event(json.dumps({"eventType": "Microsoft.Storage.BlobDeleted"}))
    with pytest.raises(BadMessage):
        BlobCreated.from_event("not json at all!")


def test_finalize_message_round_trips():
    assert FinalizeMessage.from_json(FinalizeMessage("j", checks=3).to_json()) == FinalizeMessage("j", 3)
