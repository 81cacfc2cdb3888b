"""The claim check: rows too large for a queue message travel in a blob the message names.

A queue message holds at most 64 KiB; `INLINE_LIMIT` leaves room under it for the envelope
and a base64 re-encoding. Ingest first splits a multi-row message that does not fit; a
single row that still does not fit, or rows re-queued by process, go by claim check.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from processing.core.errors import BadMessage
from processing.core.layout import claim_blob
from processing.core.messages import INLINE_LIMIT, Row, RowsMessage


def inline(message: RowsMessage) -> str | None:
    """The message's text if it fits in a queue message, else None."""
    text = message.to_json()
    return text if len(text.encode()) <= INLINE_LIMIT else None


async def store(jobs: ContainerClient, message: RowsMessage, *, unique: bool = False) -> str:
    """Write the message's rows to a claim blob; the text of the message that names it.

    Ingest's claim is named by the row alone, so a resumed ingest overwrites its own; a
    re-queued row's claim is `unique`, since its first claim may still be read by a redelivery.
    """
    suffix = f"-{uuid.uuid4().hex[:8]}" if unique else ""
    name = claim_blob(message.job, message.rows[0].index, suffix=suffix)
    await jobs.upload_blob(name, RowsMessage.rows_json(message.rows).encode(), overwrite=True)
    return replace(message, rows=(), claim=name).to_json()


async def rows_of(jobs: ContainerClient, message: RowsMessage) -> tuple[Row, ...]:
    """The message's rows: inline, or read from its claim blob."""
    if message.rows:
        return message.rows
    assert message.claim  # layout.check_claim: a blob under the job's own claims/ prefix
    try:
        stream = await jobs.download_blob(message.claim)
    except ResourceNotFoundError:
        raise BadMessage("the message's claim blob does not exist") from None
    try:
        return RowsMessage.parse_rows(json.loads(await stream.readall()))
    except (ValueError, RecursionError):
        raise BadMessage("the message's claim blob is not a rows list") from None
