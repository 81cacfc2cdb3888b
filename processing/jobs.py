"""Jobs: one manifest blob per uploaded file, `jobs/<job-id>/manifest.json`.

The job id derives from the blob's URL and ETag, so every duplicate BlobCreated event
for one upload names the same job, and a new upload of the same name (a new ETag) is a
new job. Only ingest and finalize write the manifest, always with an ETag condition.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

MANIFEST_VERSION = 1
_JSON = ContentSettings(content_type="application/json")


class State:
    INGESTING = "ingesting"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    FINAL = frozenset({DONE, FAILED})


def normalise_etag(etag: str) -> str:
    return etag.strip().strip('"')


def job_id_for(url: str, etag: str) -> str:
    """A readable, stable id: the file's stem plus a hash of its URL path and ETag."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    digest = hashlib.sha256(f"{parts.netloc.lower()}{path}|{normalise_etag(etag)}".encode()).hexdigest()
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:40] or "file"
    return f"{slug}-{digest[:12]}"


def manifest_blob(job: str) -> str:
    return f"{job}/manifest.json"


def shard_blob(job: str, shard: int, segment: int = 0) -> str:
    """A shard's results; a full shard continues in segments 1, 2, ... (see results.append)."""
    if segment:
        return f"{job}/shards/{shard:05d}.{segment:03d}.jsonl"
    return f"{job}/shards/{shard:05d}.jsonl"


def claim_blob(job: str, first_row: int, suffix: str = "") -> str:
    return f"{job}/claims/{first_row:09d}{suffix}.json"


def ingest_lock_blob(job: str) -> str:
    return f"{job}/ingest.lock"


def progress_blob(job: str) -> str:
    return f"{job}/progress.json"


@dataclass
class Manifest:
    job: str
    source_container: str
    source_blob: str
    source_url: str
    source_etag: str
    pipeline_name: str
    output_prefix: str  # output/<pipeline>/<file-without-.csv>; outputs add .results.csv etc.
    state: str = State.INGESTING
    pipeline: dict[str, Any] = field(default_factory=dict)  # snapshot of the pipeline
    header: list[str] = field(default_factory=list)
    output_columns: list[str] = field(default_factory=list)  # answer columns after clash renaming
    delimiter: str = ","
    shard_rows: int = 10_000
    shard_max_blocks: int = 45_000  # a shard segment this full continues in the next one
    total_rows: int | None = None
    ingested_rows: int = 0  # resume point: rows before it are enqueued (or recorded)
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    times: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None
    results: dict[str, str] = field(default_factory=dict)
    # A newer upload replaced the source before this job finished: its results carry the job
    # id in their name, so they never overwrite the newer upload's results.
    superseded: bool = False
    # Set when finalize completed a job that stopped making progress: rows without a result
    # are in the output as errors with code "missing", and this says how many and why.
    incomplete: dict[str, Any] | None = None
    ingest_passes: int = 0  # ingest invocations that read the file (more than 1: resumed)
    version: int = MANIFEST_VERSION
    etag: str | None = field(default=None, compare=False, repr=False)

    @property
    def shards(self) -> int:
        rows = self.total_rows if self.total_rows is not None else self.ingested_rows
        return max(1, -(-rows // self.shard_rows))

    def to_json(self) -> bytes:
        data = asdict(self)
        data.pop("etag")
        return json.dumps(data, ensure_ascii=False, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, etag: str | None = None) -> Manifest:
        data = json.loads(raw)
        known = set(cls.__dataclass_fields__) - {"etag"}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.etag = etag
        return manifest

    def stamp(self, name: str) -> None:
        self.times.setdefault(name, time.time())


class ManifestConflict(Exception):
    """Someone else wrote the manifest since we read it."""


async def load(jobs: ContainerClient, job: str) -> Manifest | None:
    try:
        stream = await jobs.download_blob(manifest_blob(job))
        raw = await stream.readall()
    except ResourceNotFoundError:
        return None
    return Manifest.from_json(raw, etag=stream.properties.etag)


async def create(jobs: ContainerClient, manifest: Manifest) -> bool:
    """Write a new manifest; False if it already exists (a duplicate event got there first)."""
    manifest.stamp("created")
    try:
        result = await jobs.get_blob_client(manifest_blob(manifest.job)).upload_blob(
            manifest.to_json(), overwrite=False, content_settings=_JSON
        )
    except ResourceExistsError:
        return False
    manifest.etag = result["etag"]
    return True


async def save(jobs: ContainerClient, manifest: Manifest) -> None:
    """Replace the manifest if nobody else changed it since it was read."""
    try:
        result = await jobs.get_blob_client(manifest_blob(manifest.job)).upload_blob(
            manifest.to_json(),
            overwrite=True,
            etag=manifest.etag,
            match_condition=MatchConditions.IfNotModified,
            content_settings=_JSON,
        )
    except ResourceModifiedError:
        raise ManifestConflict(manifest.job) from None
    manifest.etag = result["etag"]


async def list_manifests(jobs: ContainerClient, limit: int = 200) -> list[Manifest]:
    found: list[Manifest] = []
    async for blob in jobs.walk_blobs(delimiter="/"):
        name = blob.name.rstrip("/")
        manifest = await load(jobs, name)
        if manifest:
            found.append(manifest)
        if len(found) >= limit:
            break
    found.sort(key=lambda m: m.times.get("created", 0), reverse=True)
    return found
