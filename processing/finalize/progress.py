"""Finalize's progress: which rows have a record (a bitmap) and the counts, read incrementally.

Each check reads only what was appended to the shards since the last check (append blobs
only grow); the progress is one blob written with an ETag condition, so a duplicate finalize
chain loses the race and stops.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from processing.adapters import shards
from processing.adapters.clients import Clients
from processing.core.layout import progress_blob
from processing.core.manifest import Manifest
from processing.core.records import Record, parse_lines


@dataclass
class Progress:
    offsets: list[list[int]] = field(default_factory=list)  # bytes read of each shard's segments
    seen: int = 0
    ok: int = 0
    error: int = 0
    # Spend: summed over every line, duplicates and `spend` lines included, as each was billed.
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning tokens included
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    retries: int = 0
    # Error rows by code, and the first message seen of each: what `submit --wait` says a failure was.
    error_codes: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    changed_at: float = 0.0  # wall time of the last new record (or of the first check)
    bitmap: bytearray = field(default_factory=bytearray, repr=False)
    etag: str | None = field(default=None, repr=False)

    def has(self, index: int) -> bool:
        return bool(self.bitmap[index >> 3] >> (index & 7) & 1)

    def mark(self, index: int) -> bool:
        """True if this is the first record of the row."""
        if self.has(index):
            return False
        self.bitmap[index >> 3] |= 1 << (index & 7)
        return True

    def all_seen(self, start: int, end: int) -> bool:
        """Whether every row in [start, end) has a record; whole bytes are compared at C speed."""
        head = min(end, -(-start // 8) * 8)  # first multiple of 8 at or after start
        tail = max(head, end // 8 * 8)  # last multiple of 8 at or before end
        whole = self.bitmap[head // 8 : tail // 8]
        return (
            all(self.has(i) for i in range(start, head))
            and whole == b"\xff" * len(whole)
            and all(self.has(i) for i in range(tail, end))
        )

    def to_bytes(self) -> bytes:
        head = {k: v for k, v in asdict(self).items() if k not in ("bitmap", "etag")}
        # One blob holds counts and bitmap together, so they can never disagree.
        return json.dumps(head).encode() + b"\n" + bytes(self.bitmap)

    @classmethod
    def from_bytes(cls, raw: bytes, etag: str) -> Progress:
        head, _, bitmap = raw.partition(b"\n")
        progress = cls(**json.loads(head))
        progress.bitmap = bytearray(bitmap)
        progress.etag = etag
        return progress


async def load_progress(clients: Clients, manifest: Manifest) -> Progress:
    total = manifest.total_rows or 0
    try:
        stream = await clients.jobs.download_blob(progress_blob(manifest.job))
        progress = Progress.from_bytes(await stream.readall(), stream.properties.etag)
    except ResourceNotFoundError:
        progress = Progress()
    progress.bitmap.extend(b"\x00" * max(0, total // 8 + 1 - len(progress.bitmap)))
    progress.offsets.extend([0] for _ in range(max(0, manifest.shards - len(progress.offsets))))
    return progress


async def save_progress(clients: Clients, manifest: Manifest, progress: Progress) -> bool:
    kwargs: dict[str, Any] = (
        {"etag": progress.etag, "match_condition": MatchConditions.IfNotModified}
        if progress.etag
        else {"match_condition": MatchConditions.IfMissing}
    )
    try:
        result = await clients.jobs.get_blob_client(progress_blob(manifest.job)).upload_blob(
            progress.to_bytes(), overwrite=True, **kwargs
        )
    except (ResourceModifiedError, ResourceExistsError):
        return False
    progress.etag = result["etag"]
    return True


async def scan(clients: Clients, manifest: Manifest, progress: Progress) -> None:
    total = manifest.total_rows or 0
    for shard in range(manifest.shards):
        first = shard * manifest.shard_rows
        if progress.all_seen(first, min(total, first + manifest.shard_rows)):
            continue  # complete: later appends can only be duplicates, so spare the request
        offsets = progress.offsets[shard]
        async for segment in shards.segments(clients.jobs, manifest.job, shard, max_blocks=manifest.shard_max_blocks):
            if len(offsets) <= segment.number:
                offsets.append(0)
            start = offsets[segment.number]
            size = segment.properties.size
            if size > start:
                data = await (await segment.blob.download_blob(offset=start, length=size - start)).readall()
                # Appends are whole lines; stop at the last newline in case a block landed mid-read.
                end = data.rfind(b"\n") + 1
                _count(progress, parse_lines(data[:end]), total)
                offsets[segment.number] = start + end


def _count(progress: Progress, records: Iterable[Record], total: int) -> None:
    for record in records:
        if not 0 <= record.index < total:
            continue
        progress.prompt_tokens += record.usage[0]
        progress.completion_tokens += record.usage[1]
        progress.reasoning_tokens += record.usage[2]
        progress.cached_tokens += record.usage[3]
        progress.requests += record.calls[0]
        progress.retries += record.calls[1]
        if record.is_result and progress.mark(record.index):
            progress.seen += 1
            if record.ok:
                progress.ok += 1
            else:
                progress.error += 1
                code = record.code or "error"
                progress.error_codes[code] = progress.error_codes.get(code, 0) + 1
                progress.error_examples.setdefault(code, record.error[:300])
