"""Versioned queue messages.

Every producer of ours writes plain JSON text (host.json `messageEncoding: none`).
Event Grid may deliver its event base64-encoded; `decode_body` accepts both.
A message larger than `INLINE_LIMIT` goes to a blob and the message carries its name
(claim check), because a queue message is at most 64 KiB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processing.core import layout
from processing.core.errors import BadMessage, BadName
from processing.core.text import clean_text

__all__ = ["BadMessage", "BadName", "BlobCreated", "FinalizeMessage", "Row", "RowsMessage", "parse"]

VERSION = 1
# Leave room under the 64 KiB queue limit for the envelope and any base64 re-encoding.
INLINE_LIMIT = 48 * 1024
# Bounds on every number a message carries: a sender chooses them, and each feeds a delay,
# a count or an index. A message outside them is refused, not clamped.
MAX_ROW_INDEX = 2**40  # far beyond any file; keeps bitmaps and shard numbers sane
MAX_ROWS = 1000  # rows of one message (rows_per_message is at most 100)
MAX_CELLS = 100_000  # cells of one row
MAX_COUNT = 1_000_000  # waits, tries, checks, poisoned


def decode_body(body: bytes | str) -> Any:
    """Parse a queue body as JSON, or as base64 of JSON (Event Grid's other encoding).

    The error never quotes the body: it is whatever a sender chose to write."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise BadMessage("message is not UTF-8") from None
    text = text.strip()
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return json.loads(base64.b64decode(text, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, UnicodeEncodeError, json.JSONDecodeError, RecursionError, ValueError):
        raise BadMessage("message is neither JSON nor base64 JSON") from None


def _int(data: dict[str, Any], key: str, *, default: int | None = None, high: int = MAX_COUNT) -> int:
    value = data.get(key, default)
    # bool is an int in Python; a message that says `true` for a count is not one of ours.
    if type(value) is not int or not 0 <= value <= high:
        raise BadMessage(f"field {key!r} must be an integer from 0 to {high}")
    return value


def _envelope(body: bytes | str, kind: str, fields: frozenset[str]) -> dict[str, Any]:
    """The JSON object of a message of ours, checked for its type, version and fields."""
    data = decode_body(body)
    if not isinstance(data, dict) or data.get("type") != kind:
        raise BadMessage(f"not a {kind} message")
    version = data.get("v")
    if type(version) is not int or version != VERSION:
        raise BadMessage(f"{kind} message version is not supported (expected {VERSION})")
    unknown = set(data) - fields - {"v", "type"}
    if unknown:
        raise BadMessage(f"{kind} message has {len(unknown)} unknown field(s)")
    return data


@dataclass(frozen=True)
class Row:
    index: int  # 0-based data-row index in the input file (header excluded)
    cells: tuple[str, ...]


def _rows_data(rows: tuple[Row, ...]) -> list[list[Any]]:
    return [[r.index, list(r.cells)] for r in rows]


def rows_signature(key: str, job: str, rows: tuple[Row, ...]) -> str:
    """HMAC-SHA256 of the job and its rows with the job's own key (kept in its manifest).

    Ingest signs the rows it read; process and the poison handler record only rows whose
    signature matches, so a forged rows message cannot put other cells, or another answer,
    into a job's results (the first record of a row wins). The key never leaves the jobs container."""
    payload = json.dumps([job, _rows_data(rows)], ensure_ascii=True, separators=(",", ":")).encode()
    return hmac.new(bytes.fromhex(key), payload, hashlib.sha256).hexdigest()


def signature_matches(key: str, job: str, rows: tuple[Row, ...], sig: str) -> bool:
    return hmac.compare_digest(rows_signature(key, job, rows), sig)


_ROWS_FIELDS = frozenset({"job", "rows", "claim", "waits", "tries", "sig"})
_SIG_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class RowsMessage:
    """One or more consecutive rows of a job to send to the model (queues `rows`, `rows-poison`)."""

    job: str
    rows: tuple[Row, ...] = ()
    claim: str | None = None  # blob name in the jobs container holding the rows
    waits: int = 0  # how many times 429s have re-enqueued these rows (not dequeue attempts)
    tries: int = 0  # attempts already spent before these rows were split off a failed message
    sig: str = ""  # rows_signature of the rows (inline or in the claim)

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": VERSION, "type": "rows", "job": self.job}
        if self.waits:
            data["waits"] = self.waits
        if self.tries:
            data["tries"] = self.tries
        if self.sig:
            data["sig"] = self.sig
        if self.claim:
            data["claim"] = self.claim
        else:
            data["rows"] = _rows_data(self.rows)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    def signed(self, key: str) -> RowsMessage:
        return RowsMessage(
            self.job, self.rows, self.claim, self.waits, self.tries, rows_signature(key, self.job, self.rows)
        )

    @staticmethod
    def rows_json(rows: tuple[Row, ...]) -> str:
        """The rows alone, as a claim-check blob holds them."""
        return json.dumps(_rows_data(rows), ensure_ascii=False)

    @staticmethod
    def parse_rows(raw: Any) -> tuple[Row, ...]:
        """`[[index, [cells...]], ...]`: ascending indices, string cells (cleaned of lone surrogates)."""
        shape = BadMessage("rows must be a list of [index, [cells...]] pairs with ascending indices")
        if not isinstance(raw, list) or len(raw) > MAX_ROWS:
            raise shape
        rows: list[Row] = []
        for item in raw:
            if not isinstance(item, list) or len(item) != 2:
                raise shape
            index, cells = item
            if type(index) is not int or not 0 <= index < MAX_ROW_INDEX or (rows and index <= rows[-1].index):
                raise shape
            if not isinstance(cells, list) or len(cells) > MAX_CELLS or not all(isinstance(c, str) for c in cells):
                raise shape
            rows.append(Row(index, tuple(clean_text(c) for c in cells)))
        return tuple(rows)

    @classmethod
    def from_json(cls, body: bytes | str) -> RowsMessage:
        data = _envelope(body, "rows", _ROWS_FIELDS)
        job = layout.check_job_id(data.get("job"))
        rows = cls.parse_rows(data.get("rows", []))
        claim = data.get("claim")
        if claim is not None:
            claim = layout.check_claim(job, claim)
        if bool(rows) == bool(claim):
            raise BadMessage("a rows message has either rows or a claim")
        sig = data.get("sig", "")
        if not isinstance(sig, str) or (sig and (len(sig) != 64 or not set(sig) <= _SIG_HEX)):
            raise BadMessage("field 'sig' must be 64 lower-case hex digits")
        return cls(
            job=job,
            rows=rows,
            claim=claim,
            waits=_int(data, "waits", default=0),
            tries=_int(data, "tries", default=0),
            sig=sig,
        )


_FINALIZE_FIELDS = frozenset({"job", "checks", "poisoned"})


@dataclass(frozen=True)
class FinalizeMessage:
    """A completion check of one job (queues `finalize`, `finalize-poison`)."""

    job: str
    checks: int = 0  # how many times finalize has looked at this job
    poisoned: int = 0  # how many times a check of this job failed every attempt (bounded)

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": VERSION, "type": "finalize", "job": self.job, "checks": self.checks}
        if self.poisoned:
            data["poisoned"] = self.poisoned
        return json.dumps(data)

    @classmethod
    def from_json(cls, body: bytes | str) -> FinalizeMessage:
        data = _envelope(body, "finalize", _FINALIZE_FIELDS)
        return cls(
            job=layout.check_job_id(data.get("job")),
            checks=_int(data, "checks", default=0),
            poisoned=_int(data, "poisoned", default=0),
        )


_SUBJECT = "/blobServices/default/containers/"


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
        """The event, with its names checked (layout.check_event_names); BadMessage otherwise.

        Anyone with send rights on `uploads` can write one, so the subject, URL and eTag are
        names the app is about to derive paths from, not facts."""
        event = decode_body(body)
        if isinstance(event, list):  # a webhook-style batch of one
            if len(event) != 1:
                raise BadMessage("expected exactly one event")
            event = event[0]
        if not isinstance(event, dict):
            raise BadMessage("event is not a JSON object")
        kind = event.get("eventType", event.get("type"))
        if kind != "Microsoft.Storage.BlobCreated":
            raise BadMessage("not a Microsoft.Storage.BlobCreated event")
        data = event.get("data")
        subject = event.get("subject")
        if not isinstance(data, dict) or not isinstance(subject, str):
            raise BadMessage("event lacks its data object or subject")
        if not subject.startswith(_SUBJECT) or "/blobs/" not in subject:
            raise BadMessage("event subject does not name a blob")
        container, _, blob = subject[len(_SUBJECT) :].partition("/blobs/")
        container, blob, url = layout.check_event_names(container, blob, data.get("url"))
        etag = layout.check_etag(data.get("eTag", data.get("etag")))
        size = data.get("contentLength")
        if size is not None and (type(size) is not int or size < 0):
            raise BadMessage("field 'contentLength' must be a non-negative integer")
        api = data.get("api", "")
        if not isinstance(api, str):
            raise BadMessage("field 'api' must be a string")
        return cls(url=url, etag=etag, container=container, blob=blob, content_length=size, api=clean_text(api)[:64])


# One parser per queue; a poison queue holds the message as its own queue had it.
PARSERS: dict[str, Callable[[bytes | str], object]] = {
    layout.UPLOADS_QUEUE: BlobCreated.from_event,
    layout.UPLOADS_POISON_QUEUE: BlobCreated.from_event,
    layout.ROWS_QUEUE: RowsMessage.from_json,
    layout.ROWS_POISON_QUEUE: RowsMessage.from_json,
    layout.FINALIZE_QUEUE: FinalizeMessage.from_json,
    layout.FINALIZE_POISON_QUEUE: FinalizeMessage.from_json,
}


def parse(queue: str, body: bytes | str) -> object:
    """The message of `queue`, fully checked; BadMessage for anything else."""
    return PARSERS[queue](body)
