"""The storage layout: every container, queue and blob name the app reads or writes.

One module owns the names so that one module can check them. The queue names appear in
trigger decorators, which the Functions host reads when it indexes the app, before any
setting could change them; tests/infra checks that the Bicep creates exactly these.

    input/<pipeline>/<file>.csv           what users upload (a file at the top uses `default`)
    output/<pipeline>/<file>.results.csv  the results, and .results.jsonl, or .error.json
                                          (the output prefix mirrors the input name: see
                                          `output_prefix`; input/<file>.csv -> output/<file>.*)
    jobs/<job>/manifest.json              the job: source, pipeline snapshot, state, counts
    jobs/<job>/shards/<shard>[.<seg>].jsonl   result records (append blobs, see shards.py)
    jobs/<job>/claims/<first-row>.json    rows too large for a queue message (claims.py)
    jobs/<job>/progress.json              finalize's counts and row bitmap
    jobs/<job>/fatal.json                 a job-level error met while processing rows
    jobs/<job>/ingest.lock                the lease that keeps one ingest per upload
    jobs/<job>/finalize.lock              the lease held by the one finalize check writing the results
    jobs/<job>/cancel.json                `rowsmith cancel`'s request (written once, never changed)
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import unquote, urlsplit

from processing.core.errors import BadName
from processing.core.text import clean_text

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


# --- the validator: every name a path is derived from ------------------------------
#
# The Azure SDK collapses `.` and `..` path segments before it sends a request, and the
# service serves the normalised path, so a name like `a/../../output/x` reaches another
# container. Every name that arrives (an event's subject and URL, a message's job or claim,
# a manifest's source, an eTag) is checked here before any path is built from it.

# Azure's limit for a blob name is 1,024 characters. The longest name derived from an input
# name is `<prefix>.results.<job>.jsonl` (the prefix is at most the input name; a job id is at
# most 53 characters), so an input name of at most 900 characters keeps every derived name
# under the limit with room to spare.
AZURE_MAX_BLOB_NAME = 1024
MAX_INPUT_NAME = 900

JOB_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}-[0-9a-f]{12}")
PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_CLAIM_TAIL = re.compile(r"claims/[0-9]{9}(?:-[0-9a-f]{8})?\.json")
# What Azure Storage and Azurite hand out (`0x8DC...`, or a quoted hex/UUID form): no `*`
# (which matches any version), no quotes, commas or spaces (which would form a list).
_ETAG = re.compile(r"[0-9A-Za-z_.:+/=-]{1,128}")
# Bidirectional controls make a name read differently from what it is (U+202E et al.).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def name_problem(name: object) -> str:
    """Why `name` (a blob name inside its container) is unsafe to build a path from; "" if it is safe."""
    if not isinstance(name, str) or not name:
        return "the name is empty"
    if len(name) > MAX_INPUT_NAME:
        return f"the name is longer than {MAX_INPUT_NAME} characters"
    for ch in name:
        if ch == "\\":
            return "the name has a backslash"
        if ch in _BIDI:
            return "the name has a bidirectional control character"
        category = unicodedata.category(ch)
        if category == "Cs":
            return "the name has a lone surrogate"
        if category == "Cc":
            return "the name has a control character"
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            return "the name has an empty, '.' or '..' path segment"
        if segment.endswith("."):
            return "a path segment of the name ends with '.'"  # Azure advises against it; URLs may drop it
    return ""


def check_blob_name(name: object, what: str = "blob name") -> str:
    problem = name_problem(name)
    if problem:
        raise BadName(f"{what} refused: {problem}")
    assert isinstance(name, str)
    return name


def check_job_id(job: object) -> str:
    """An id `job_id_for` could have made, exactly; anything else names no job."""
    if not isinstance(job, str) or not JOB_ID.fullmatch(job):
        raise BadName("job id refused: it is not of the form <slug>-<12 hex digits>")
    return job


def check_claim(job: str, claim: object) -> str:
    """A claim-check blob of this job's own (`<job>/claims/<row>[-<hex>].json`), nothing else."""
    prefix = f"{check_job_id(job)}/"
    if not isinstance(claim, str) or not claim.startswith(prefix) or not _CLAIM_TAIL.fullmatch(claim[len(prefix) :]):
        raise BadName("claim refused: it is not a claim blob under the job's own prefix")
    return claim


def check_etag(etag: object) -> str:
    """The eTag without quotes; never `*`, which would match whatever the blob holds now."""
    if not isinstance(etag, str) or not _ETAG.fullmatch(normalise_etag(etag)):
        raise BadName("eTag refused: it is not a single eTag value")
    return normalise_etag(etag)


def is_pipeline_name(name: str) -> bool:
    return bool(PIPELINE_NAME.fullmatch(name))


def check_event_names(container: object, blob: object, url: object) -> tuple[str, str, str]:
    """An event's container, blob name and URL: the container is `input`, the name is safe,
    and the URL names that same blob (so the job id hashes what the app will read)."""
    if container != INPUT_CONTAINER:
        raise BadName(f"event refused: its container is not {INPUT_CONTAINER!r}")
    name = check_blob_name(blob, "event subject")
    if not isinstance(url, str):
        raise BadName("event URL refused: not a string")
    try:
        parts = urlsplit(url)
        path = unquote(parts.path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise BadName("event URL refused: it does not parse") from None
    if len(url) > 4 * MAX_INPUT_NAME or not url.isascii() or not url.isprintable():
        raise BadName("event URL refused: a blob URL is printable, percent-encoded ASCII")
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise BadName("event URL refused: not a plain http(s) blob URL")
    if not path.endswith(f"/{INPUT_CONTAINER}/{name}") or name_problem(path.strip("/")):
        raise BadName("event URL refused: it does not name the subject's blob")
    return INPUT_CONTAINER, name, url


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
    parts = urlsplit(clean_text(url))
    path = unquote(parts.path)
    digest = hashlib.sha256(f"{parts.netloc.lower()}{path}|{normalise_etag(clean_text(etag))}".encode()).hexdigest()
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


def finalize_lock_blob(job: str) -> str:
    return f"{job}/finalize.lock"


def progress_blob(job: str) -> str:
    return f"{job}/progress.json"


def budget_blob(job: str) -> str:
    """The budget ledger of a job with a budget (processing/core/budget.py)."""
    return f"{job}/budget.json"


def fatal_blob(job: str) -> str:
    return f"{job}/fatal.json"


def cancel_blob(job: str) -> str:
    """The cancel request; its job id is checked, as the CLI takes it from the user."""
    return f"{check_job_id(job)}/cancel.json"


# --- the output container --------------------------------------------------------------


def output_prefix(blob_name: str) -> str:
    """output/<prefix>: every output of the job adds a suffix to it. One-to-one with the input name.

    The prefix mirrors the input's name, without its `.csv` when that is exactly `.csv` and
    what is left does not itself end in `.csv` (any case); otherwise it is the whole name:

        input/x.csv            -> output/x.results.csv
        input/default/x.csv    -> output/default/x.results.csv
        input/x.CSV            -> output/x.CSV.results.csv
        input/x.csv.csv        -> output/x.csv.csv.results.csv

    Injective: a prefix ending in `.csv` (any case) is an input name as it is; any other is an
    input name without `.csv`. So no two uploads ever share a results file.
    """
    stem = blob_name[:-4]
    if blob_name.endswith(".csv") and not stem.lower().endswith(".csv"):
        return stem
    return blob_name


def legacy_output_prefix(blob_name: str) -> str:
    """The prefix manifests of version 1 derived (`<pipeline>/<stem>`); not one-to-one, read only."""
    pipeline, rest = route(blob_name)
    stem = rest[:-4] if rest.lower().endswith(".csv") else rest
    return f"{pipeline}/{stem}"


# Metadata on every results file: the job that wrote it and the input version it was made
# from, so a job can tell whose file it would replace and `rowsmith results JOB` whose it got.
JOB_META = "rowsmith_job"
SOURCE_META = "rowsmith_source_etag"


def error_report_blob(prefix: str) -> str:
    return f"{prefix}.error.json"


def results_blobs(prefix: str, job: str, *, superseded: bool) -> tuple[str, str]:
    """(csv, jsonl) names. A job whose input was uploaded again before it finished puts its
    job id in the name, so it never overwrites the newer upload's results.

    `<prefix>.results.<job>.csv` cannot be another input's `<prefix>.results.csv`: what comes
    before `.csv` is a job id, never `results`."""
    if superseded:
        return f"{prefix}.results.{job}.csv", f"{prefix}.results.{job}.jsonl"
    return f"{prefix}.results.csv", f"{prefix}.results.jsonl"
