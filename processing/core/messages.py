"""Versioned queue messages.

Every producer of ours writes plain JSON text (host.json `messageEncoding: none`).
Event Grid may deliver its event base64-encoded; `decode_body` accepts both.
A message larger than `INLINE_LIMIT` goes to a blob and the message carries its name
(claim check), because a queue message is at most 64 KiB.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from processing.core.errors import RowsmithError

VERSION = 1
# Leave room under the 64 KiB queue limit for the envelope and any base64 re-encoding.
INLINE_LIMIT = 48 * 1024


class BadMessage(RowsmithError):
    """A message we cannot understand; retrying will not change it."""


def decode_body(body: bytes | str) -> Any:
    """Parse a queue body as JSON, or as base64 of JSON (Event Grid's other encoding)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(base64.b64decode(text, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage(f"message is neither JSON nor base64 JSON: {text[:80]!r}") from None


def _envelope(body: bytes | str, kind: str) -> dict[str, Any]:
    """The JSON object of a message of ours, checked for its type and version."""
    data = decode_body(body)
    if not isinstance(data, dict) or data.get("type") != kind:
        raise BadMessage(f"not a {kind} message")
    version = data.get("v")
    if version != VERSION:
        raise BadMessage(f"{kind} message version {version!r} is not supported (expected {VERSION})")
    return data


@dataclass(frozen=True)
class Row:
    index: int  # 0-based data-row index in the input file (header excluded)
    cells: tuple[str, ...]


def _rows_data(rows: tuple[Row, ...]) -> list[list[Any]]:
    return [[r.index, list(r.cells)] for r in rows]


@dataclass(frozen=True)
class RowsMessage:
    """One or more consecutive rows of a job to send to the model."""

    job: str
    rows: tuple[Row, ...] = ()
    claim: str | None = None  # blob name in the jobs container holding the rows
    waits: int = 0  # how many times 429s have re-enqueued these rows (not dequeue attempts)
    tries: int = 0  # attempts already spent before these rows were split off a failed message

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": VERSION, "type": "rows", "job": self.job}
        if self.waits:
            data["waits"] = self.waits
        if self.tries:
            data["tries"] = self.tries
        if self.claim:
            data["claim"] = self.claim
        else:
            data["rows"] = _rows_data(self.rows)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def rows_json(rows: tuple[Row, ...]) -> str:
        """The rows alone, as a claim-check blob holds them."""
        return json.dumps(_rows_data(rows), ensure_ascii=False)

    @staticmethod
    def parse_rows(raw: Any) -> tuple[Row, ...]:
        try:
            return tuple(Row(int(i), tuple(str(c) for c in cells)) for i, cells in raw)
        except (TypeError, ValueError):
            raise BadMessage("rows must be a list of [index, [cells...]] pairs") from None

    @classmethod
    def from_json(cls, body: bytes | str) -> RowsMessage:
        data = _envelope(body, "rows")
        rows = cls.parse_rows(data.get("rows", []))
        claim = data.get("claim")
        if not rows and not claim:
            raise BadMessage("rows message has neither rows nor a claim")
        return cls(
            job=str(data["job"]),
            rows=rows,
            claim=claim,
            waits=int(data.get("waits", 0)),
            tries=int(data.get("tries", 0)),
        )


@dataclass(frozen=True)
class FinalizeMessage:
    job: str
    checks: int = 0  # how many times finalize has looked at this job

    def to_json(self) -> str:
        return json.dumps({"v": VERSION, "type": "finalize", "job": self.job, "checks": self.checks})

    @classmethod
    def from_json(cls, body: bytes | str) -> FinalizeMessage:
        data = _envelope(body, "finalize")
        return cls(job=str(data["job"]), checks=int(data.get("checks", 0)))


@dataclass(frozen=True)
class BlobCreated:
    """The parts of an Event Grid `Microsoft.Storage.BlobCreated` event that ingest needs."""

    url: str  # https://<account>.blob.core.windows.net/input/<pipeline>/<file>.csv
    etag: str
    container: str
    blob: str
    content_length: int | None = None
    api: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_event(cls, body: bytes | str) -> BlobCreated:
        event = decode_body(body)
        if isinstance(event, list):  # a webhook-style batch of one
            if len(event) != 1:
                raise BadMessage(f"expected one event, got {len(event)}")
            event = event[0]
        if not isinstance(event, dict):
            raise BadMessage("event is not a JSON object")
        kind = event.get("eventType") or event.get("type")
        if kind != "Microsoft.Storage.BlobCreated":
            raise BadMessage(f"unexpected event type {kind!r}")
        data = event.get("data") or {}
        subject = str(event.get("subject") or "")
        # subject: /blobServices/default/containers/<container>/blobs/<name>
        marker = "/containers/"
        if marker not in subject or "/blobs/" not in subject:
            raise BadMessage(f"event subject {subject!r} does not name a blob")
        container, _, blob = subject.split(marker, 1)[1].partition("/blobs/")
        url = data.get("url")
        etag = data.get("eTag") or data.get("etag")
        if not url or not etag:
            raise BadMessage("event data lacks url or eTag")
        return cls(
            url=str(url),
            etag=str(etag),
            container=container,
            blob=blob,
            content_length=data.get("contentLength"),
            api=str(data.get("api", "")),
        )
