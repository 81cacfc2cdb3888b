"""The storage layout: every container, queue and blob name the app reads or writes.

One module owns the names so that one module can check them. The queue names appear in
trigger decorators, which the Functions host reads when it indexes the app, before any
setting could change them; tests/infra checks that the Bicep creates exactly these.

    input/<pipeline>/<file>.csv           what users upload (a file at the top uses `default`)
    output/<pipeline>/<file>.results.csv  the results, and .results.jsonl, or .error.json
    jobs/<job>/manifest.json              the job: source, pipeline snapshot, state, counts
    jobs/<job>/shards/<shard>[.<seg>].jsonl   result records (append blobs, see shards.py)
    jobs/<job>/claims/<first-row>.json    rows too large for a queue message (claims.py)
    jobs/<job>/progress.json              finalize's counts and row bitmap
    jobs/<job>/fatal.json                 a job-level error met while processing rows
    jobs/<job>/ingest.lock                the lease that keeps one ingest per upload
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote, urlsplit

# App-setting prefix of the storage connection used by every trigger. In Azure it is
# identity-based (AzureWebJobsStorage__blobServiceUri, __queueServiceUri,
# __credential=managedidentity); locally it is Azurite's connection string.
STORAGE_CONNECTION = "AzureWebJobsStorage"

# Containers.
INPUT_CONTAINER = "input"
OUTPUT_CONTAINER = "output"
JOBS_CONTAINER = "jobs"

# Queues.
UPLOADS_QUEUE = "uploads"  # BlobCreated events from Event Grid (locally: localdev/event_grid)
ROWS_QUEUE = "rows"  # row messages, one or more rows each
FINALIZE_QUEUE = "finalize"  # self-rescheduling completion check per job
POISON_SUFFIX = "-poison"  # the Functions host's poison queue naming
ROWS_POISON_QUEUE = ROWS_QUEUE + POISON_SUFFIX
UPLOADS_POISON_QUEUE = UPLOADS_QUEUE + POISON_SUFFIX
FINALIZE_POISON_QUEUE = FINALIZE_QUEUE + POISON_SUFFIX

APP_QUEUES = (UPLOADS_QUEUE, ROWS_QUEUE, FINALIZE_QUEUE)
ALL_QUEUES = APP_QUEUES + tuple(q + POISON_SUFFIX for q in APP_QUEUES)
ALL_CONTAINERS = (INPUT_CONTAINER, OUTPUT_CONTAINER, JOBS_CONTAINER)

DEFAULT_PIPELINE = "default"


# --- input: which uploads start a job, and with which pipeline ------------------------


def starts_a_job(container: str, blob: str) -> bool:
    """A .csv in the input container. Event Grid filters on the same (case-insensitively);
    it is checked again because anyone with send rights on the queue can enqueue an event."""
    return container == INPUT_CONTAINER and blob.lower().endswith(".csv")


def route(blob_name: str) -> tuple[str, str]:
    """`<pipeline>/<rest>` → (pipeline, rest); a file at the top of the container uses default."""
    head, sep, rest = blob_name.partition("/")
    if not sep:
        return DEFAULT_PIPELINE, blob_name
    return head, rest


# --- jobs: one id per upload -----------------------------------------------------------


def normalise_etag(etag: str) -> str:
    return etag.strip().strip('"')


def job_id_for(url: str, etag: str) -> str:
    """A readable, stable id: the file's stem plus a hash of its URL path and ETag.

    Every duplicate BlobCreated event for one upload names the same job, and a new upload of
    the same name (a new ETag) is a new job.
    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    digest = hashlib.sha256(f"{parts.netloc.lower()}{path}|{normalise_etag(etag)}".encode()).hexdigest()
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:40] or "file"
    return f"{slug}-{digest[:12]}"


# --- the jobs container ----------------------------------------------------------------


def manifest_blob(job: str) -> str:
    return f"{job}/manifest.json"


def shard_blob(job: str, shard: int, segment: int = 0) -> str:
    """A shard's results; a full shard continues in segments 1, 2, ... (see shards.py)."""
    if segment:
        return f"{job}/shards/{shard:05d}.{segment:03d}.jsonl"
    return f"{job}/shards/{shard:05d}.jsonl"


def claim_blob(job: str, first_row: int, suffix: str = "") -> str:
    return f"{job}/claims/{first_row:09d}{suffix}.json"


def ingest_lock_blob(job: str) -> str:
    return f"{job}/ingest.lock"


def progress_blob(job: str) -> str:
    return f"{job}/progress.json"


def fatal_blob(job: str) -> str:
    return f"{job}/fatal.json"


# --- the output container --------------------------------------------------------------


def output_prefix(pipeline: str, rest: str) -> str:
    """output/<pipeline>/<file without .csv>: every output of the job adds a suffix to it."""
    stem = rest[:-4] if rest.lower().endswith(".csv") else rest
    return f"{pipeline}/{stem}"


def error_report_blob(prefix: str) -> str:
    return f"{prefix}.error.json"


def results_blobs(prefix: str, job: str, *, superseded: bool) -> tuple[str, str]:
    """(csv, jsonl) names. A job whose input was uploaded again before it finished puts its
    job id in the name, so it never overwrites the newer upload's results."""
    base = f"{prefix}.{job}" if superseded else prefix
    return f"{base}.results.csv", f"{base}.results.jsonl"
