import json

import pytest

from localdev.event_grid.events import blob_created_event, queue_message
from processing.core.messages import BadMessage, BlobCreated, FinalizeMessage, Row, RowsMessage, signature_matches


def test_rows_message_round_trips_and_is_versioned():
    msg = RowsMessage("job-0123456789ab", (Row(3, ("a", "b,c")), Row(4, ("é", ""))), waits=2, tries=1)
    data = json.loads(msg.to_json())
    assert data["v"] == 1
    assert RowsMessage.from_json(msg.to_json()) == msg


def test_unknown_version_is_refused():
    with pytest.raises(BadMessage, match="version"):
        RowsMessage.from_json(json.dumps({"v": 99, "type": "rows", "job": "j-0123456789ab", "rows": [[0, ["x"]]]}))


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
    assert FinalizeMessage.from_json(FinalizeMessage("j-0123456789ab", checks=3).to_json()) == FinalizeMessage(
        "j-0123456789ab", 3
    )


JOB = "job-0123456789ab"


def rows_body(**fields: object) -> str:
    return json.dumps({"v": 1, "type": "rows", "job": JOB, "rows": [[0, ["x"]]], **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"job": None},
        {"job": "../input/evil"},
        {"job": 7},
        {"waits": "abc"},
        {"waits": -1},
        {"waits": True},
        {"tries": 1.5},
        {"waits": 10**12},
        {"rows": [[0, "x"]]},
        {"rows": [["0", ["x"]]]},
        {"rows": [[-1, ["x"]]]},
        {"rows": [[2, ["x"]], [1, ["y"]]]},
        {"rows": [[0, [1]]]},
        {"rows": "nope"},
        {"rows": [], "claim": "../input/evil3/rows.json"},
        {"rows": [], "claim": f"{JOB}/claims/../../other-0123456789ab/manifest.json"},
        {"claim": f"{JOB}/claims/000000000.json"},  # both rows and a claim
        {"rows": []},  # neither
        {"sig": "zz"},
        {"extra": 1},
        {"v": "1"},
        {"v": True},
    ],
)
def test_every_field_of_a_rows_message_is_checked(fields: dict[str, object]) -> None:
    with pytest.raises(BadMessage):
        RowsMessage.from_json(rows_body(**fields))


def test_a_message_missing_its_job_is_a_bad_message_not_a_key_error() -> None:
    with pytest.raises(BadMessage):
        RowsMessage.from_json(json.dumps({"v": 1, "type": "rows", "rows": [[0, ["x"]]]}))
    with pytest.raises(BadMessage):
        FinalizeMessage.from_json(json.dumps({"v": 1, "type": "finalize"}))
    with pytest.raises(BadMessage):
        FinalizeMessage.from_json(json.dumps({"v": 1, "type": "finalize", "job": JOB, "checks": "abc"}))


def test_the_error_never_echoes_the_body() -> None:
    marker = "attacker-chosen-text-9f3a"
    for body in (marker, json.dumps({"v": 1, "type": "rows", "job": marker}), json.dumps([marker, marker])):
        with pytest.raises(BadMessage) as err:
            RowsMessage.from_json(body)
        assert marker not in str(err.value)


def test_signed_rows_verify_and_altered_rows_do_not() -> None:
    key = "ab" * 32
    msg = RowsMessage(JOB, (Row(0, ("a",)),)).signed(key)
    back = RowsMessage.from_json(msg.to_json())
    assert signature_matches(key, JOB, back.rows, back.sig)
    assert not signature_matches(key, JOB, (Row(0, ("forged",)),), back.sig)
    assert not signature_matches(key, JOB, (Row(1, ("a",)),), back.sig)
    assert not signature_matches("cd" * 32, JOB, back.rows, back.sig)


def event(subject: str, url: str, etag: str = "0x8D") -> str:
    return json.dumps(
        {
            "eventType": "Microsoft.Storage.BlobCreated",
            "subject": subject,
            "data": {"url": url, "eTag": etag, "api": "PutBlob"},
        }
    )


@pytest.mark.parametrize(
    ("subject", "url", "etag"),
    [
        (
            "/blobServices/default/containers/input/blobs/triage/../../output/triage/support_tickets.results.csv",
            "https://a.blob.core.windows.net/input/triage/../../output/triage/support_tickets.results.csv",
            "0x8D",
        ),
        ("/blobServices/default/containers/input/blobs/t/a.csv", "https://a.blob.core.windows.net/input/t/a.csv", "*"),
        (
            "/blobServices/default/containers/output/blobs/t/a.csv",
            "https://a.blob.core.windows.net/output/t/a.csv",
            "1",
        ),
        ("/blobServices/default/containers/input/blobs/t/a.csv", "https://a.blob.core.windows.net/input/t/b.csv", "1"),
        (
            "/blobServices/default/containers/input/blobs/b\x07.csv",
            "https://a.blob.core.windows.net/input/b%07.csv",
            "1",
        ),
        ("/x/containers/input/blobs/t/a.csv", "https://a.blob.core.windows.net/input/t/a.csv", "1"),
    ],
)
def test_forged_events_are_refused(subject: str, url: str, etag: str) -> None:
    with pytest.raises(BadMessage):
        BlobCreated.from_event(event(subject, url, etag))


def test_each_queue_has_one_parser() -> None:
    from processing.core.layout import ALL_QUEUES
    from processing.core.messages import PARSERS, parse

    assert set(PARSERS) == set(ALL_QUEUES)
    assert parse("finalize-poison", FinalizeMessage(JOB, poisoned=2).to_json()) == FinalizeMessage(JOB, 0, 2)
    with pytest.raises(BadMessage):
        parse("rows-poison", "{}")
