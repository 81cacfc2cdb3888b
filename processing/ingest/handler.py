"""Ingest: a BlobCreated event in, a job manifest and row messages out.

The blob is streamed (never read whole) and parsed in a worker thread; rows are grouped
into messages of `rows_per_message` (never across a shard boundary) and sent
concurrently. Every `ingest_checkpoint_rows` rows the manifest records how far ingest
got, so a redelivered event after a crash resumes there instead of starting over.

A file too large to read within one invocation (functionTimeout is 10 minutes) is read in
passes: once `ingest_budget_seconds` have passed, ingest checkpoints, puts the same event
back on the uploads queue and returns; the next pass resumes at the checkpoint with a fresh
dequeue count, so a ten-million-row file never looks like a failing message.

A cancel request (`rowsmith cancel`, adapters/cancels.py) is read at the start of each pass
and at each checkpoint: from then on rows are counted but not enqueued, so the job still
learns its total and finalize writes every row (those never enqueued as `cancelled`).
"""

from __future__ import annotations

import logging
import secrets
import time
from urllib.parse import unquote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from processing.adapters import cancels, job_store
from processing.adapters.blob_lock import LEASE_SECONDS, BlobLock
from processing.adapters.clients import Clients
from processing.adapters.error_reports import fail_job
from processing.adapters.queue_sender import Enqueuer
from processing.core.budget import check_priced, job_budget
from processing.core.csv_reader import CsvStream
from processing.core.errors import BadName, ConfigurationError, JobInputError
from processing.core.host_config import max_dequeue_count
from processing.core.layout import (
    INPUT_CONTAINER,
    UPLOADS_QUEUE,
    ingest_lock_blob,
    job_id_for,
    normalise_etag,
    output_prefix,
    route,
    starts_a_job,
)
from processing.core.manifest import BadManifest, Manifest
from processing.core.messages import BlobCreated, FinalizeMessage
from processing.core.pipelines import Pipeline, load_pipeline
from processing.core.prices import job_price
from processing.core.result_columns import added_columns
from processing.core.settings import Settings
from processing.core.states import FINAL_STATES, JobState
from processing.ingest.batcher import Batcher

log = logging.getLogger(__name__)


def _check_account(clients: Clients, event: BlobCreated) -> None:
    """The event's URL must be the app's own input container: the job id hashes the URL, so a
    URL of any other host would make a new job (and new model calls) for the same blob."""
    own = unquote(urlsplit(clients.input.url).path).rstrip("/") + "/"
    parts = urlsplit(event.url)
    if parts.netloc.lower() != urlsplit(clients.input.url).netloc.lower() or not unquote(parts.path).startswith(own):
        raise BadName("event URL refused: it is not a blob of the app's input container")


async def _job_for(clients: Clients, event: BlobCreated) -> Manifest:
    """The upload's job, created on first sight; every duplicate event finds the same one."""
    pipeline_name, _ = route(event.blob)
    _check_account(clients, event)
    job = job_id_for(event.url, event.etag)
    manifest = await job_store.load(clients.jobs, job)
    if manifest is None:
        manifest = Manifest(
            job=job,
            source_container=event.container,
            source_blob=event.blob,
            source_url=event.url,
            source_etag=normalise_etag(event.etag),
            pipeline_name=pipeline_name,
            output_prefix=output_prefix(event.blob),
            shard_rows=clients.settings.shard_rows,
            row_key=secrets.token_hex(32),
            shard_max_blocks=clients.settings.shard_max_blocks,
        )
        if not await job_store.create(clients.jobs, manifest):
            manifest = await job_store.load(clients.jobs, job)  # a concurrent duplicate created it first
            assert manifest is not None
    if manifest.source_blob != event.blob or manifest.source_etag != normalise_etag(event.etag):
        raise BadManifest("manifest at this job id is for another upload")
    return manifest


async def handle_upload(body: str | bytes, clients: Clients) -> str | None:
    """Start (or resume) the job for one BlobCreated event. Returns the job id, if any."""
    event = BlobCreated.from_event(body)
    if not starts_a_job(event.container, event.blob):
        log.info("ignoring %r/%r: not a .csv in the %s container", event.container, event.blob, INPUT_CONTAINER)
        return None
    manifest = await _job_for(clients, event)
    job = manifest.job
    if manifest.state != JobState.INGESTING:
        log.info("job %s is already %s: duplicate BlobCreated event ignored", job, manifest.state)
        return job
    text = body if isinstance(body, str) else body.decode()
    lock = BlobLock(clients.jobs, ingest_lock_blob(job))
    if not await lock.acquire():
        # Another ingest is reading this upload, or one died holding the lease (it lapses within
        # 15 s). Look again after that, as a fresh message: waiting costs no dequeue attempt,
        # and once the job has left `ingesting` the copy is ignored.
        log.info("job %s: another ingest of this upload holds the lock; checking again in %d s", job, LEASE_SECONDS)
        await clients.queue(UPLOADS_QUEUE).send_message(text, visibility_timeout=LEASE_SECONDS)
        return job
    try:
        finished = await _ingest_locked(clients, job, event)
    finally:
        await lock.release()
    if not finished:
        # Out of time for this invocation: the same event, sent again, resumes the job. Sent
        # after the lock is released; if we die before, this message is redelivered instead.
        await clients.queue(UPLOADS_QUEUE).send_message(text)
    return job


async def _ingest_locked(clients: Clients, job: str, event: BlobCreated) -> bool:
    """Ingest while holding the job's lock; False if the time budget ran out first."""
    # Read again under the lock: the ingest we waited on may have finished meanwhile.
    manifest = await job_store.load(clients.jobs, job)
    if manifest is None or manifest.state != JobState.INGESTING:
        return True
    try:
        pipeline = load_pipeline(manifest.pipeline_name, clients.settings.pipelines_dir)
        if not await _ingest(clients, manifest, pipeline, event):
            log.info("job %s: %d rows ingested; continuing in a new invocation", job, manifest.ingested_rows)
            return False
    except (ConfigurationError, JobInputError) as exc:
        await fail_job(clients, manifest, exc)
    except job_store.ManifestConflict:
        log.warning("job %s: the manifest changed under this ingest; it stops", job)
    return True


async def handle_upload_poison(body: str | bytes, clients: Clients) -> str | None:
    """An upload whose ingest failed every attempt: fail its job with a report, never silently."""
    event = BlobCreated.from_event(body)
    if not starts_a_job(event.container, event.blob):
        return None
    manifest = await _job_for(clients, event)
    if manifest.state in FINAL_STATES:
        return manifest.job
    await fail_job(
        clients,
        manifest,
        JobInputError(
            f"reading {event.container}/{event.blob} failed {max_dequeue_count()} times; the function logs "
            "have each error",
            where="ingest",
            fix="right after a deployment this is usually role assignments still propagating (up to 10 minutes): "
            "upload the file again; otherwise check the logs for the storage error",
        ),
    )
    return manifest.job


async def _ingest(clients: Clients, manifest: Manifest, pipeline: Pipeline, event: BlobCreated) -> bool:
    """Read (the rest of) the file; False if the time budget ran out first (resume later)."""
    settings = clients.settings
    deadline = time.monotonic() + settings.ingest_budget_seconds
    name = f"{event.container}/{event.blob}"
    # Every chunk of the download is pinned to the event's ETag: a file uploaded again while we
    # read it raises ResourceModifiedError rather than mixing two versions.
    replaced = JobInputError(f"{name} was replaced before it was read in full; the new upload is its own job")
    try:
        download = await clients.input.download_blob(
            event.blob, etag=manifest.source_etag, match_condition=MatchConditions.IfNotModified
        )
    except ResourceModifiedError:
        await fail_job(clients, manifest, replaced, report=False)
        return True
    except ResourceNotFoundError:
        await fail_job(clients, manifest, JobInputError(f"{name} was deleted before it could be read"), report=False)
        return True

    resume_from = manifest.ingested_rows
    if resume_from:
        log.info("job %s: resuming ingest at row %d", manifest.job, resume_from)
    stream = CsvStream(
        download.chunks(),
        name=name,
        delimiter=pipeline.delimiter,
        encoding=pipeline.encoding,
        max_row_bytes=settings.max_row_bytes,
        skip_rows=resume_from,
    )
    try:
        total = await _stream_rows(
            clients,
            manifest,
            pipeline,
            stream,
            name=name,
            resume_from=resume_from,
            deadline=deadline,
            metadata=download.properties.metadata,
        )
    except ResourceModifiedError:
        await fail_job(clients, manifest, replaced, report=False)
        return True
    if total is None:
        return False

    # Finalize is enqueued before the state changes: if we crash in between, the
    # redelivered event resumes, enqueues it again, and the duplicate chain stops itself.
    delay = int(settings.finalize_interval_seconds) if total else 0
    await clients.finalize_queue.send_message(FinalizeMessage(manifest.job).to_json(), visibility_timeout=delay)
    manifest.total_rows = total
    manifest.ingested_rows = total
    manifest.state = JobState.PROCESSING
    manifest.stamp("ingested")
    await job_store.save(clients.jobs, manifest)
    log.info("job %s: %d rows enqueued from %s", manifest.job, total, name)
    return True


def _price_and_budget(
    manifest: Manifest, pipeline: Pipeline, settings: Settings, metadata: dict[str, str] | None, name: str
) -> None:
    """Fix the job's price and cap when it starts: a price or pipeline change never reprices it."""
    deployment = pipeline.deployment or settings.openai_deployment
    price = job_price(deployment, settings.prices_file)
    manifest.price = price.to_dict() if price else None
    manifest.budget_usd = job_budget(pipeline.budget_usd, metadata, name)
    check_priced(manifest.budget_usd, price is not None, deployment, pipeline.name, name)


async def _stream_rows(
    clients: Clients,
    manifest: Manifest,
    pipeline: Pipeline,
    stream: CsvStream,
    *,
    name: str,
    resume_from: int,
    deadline: float,
    metadata: dict[str, str] | None = None,
) -> int | None:
    """Parse the file and enqueue its rows, checkpointing; the number of data rows, or None
    if the deadline passed first (everything up to `manifest.ingested_rows` is enqueued)."""
    settings = clients.settings
    async with stream, Enqueuer(clients.rows_queue, settings.ingest_concurrency) as enqueuer:
        header = stream.header
        pipeline.check_header(header, name)
        if not manifest.header:
            manifest.header = header
            manifest.delimiter = stream.delimiter
            manifest.encoding, manifest.bom = stream.encoding, stream.bom
            manifest.pipeline = pipeline.to_dict()
            manifest.output_columns = added_columns(header, pipeline.output.fields)
            _price_and_budget(manifest, pipeline, settings, metadata, name)
        manifest.ingest_passes += 1
        await job_store.save(clients.jobs, manifest)
        batcher = Batcher(manifest, pipeline, clients, enqueuer)
        next_checkpoint = resume_from + settings.ingest_checkpoint_rows
        cancelled = await cancels.requested(clients.jobs, manifest.job)
        async for batch in stream.batches():
            for parsed in batch:
                if not cancelled:
                    await batcher.add(parsed, len(header))
                if parsed.index + 1 >= next_checkpoint:
                    await batcher.checkpoint()
                    manifest.ingested_rows = parsed.index + 1
                    await job_store.save(clients.jobs, manifest)
                    next_checkpoint = manifest.ingested_rows + settings.ingest_checkpoint_rows
                    if not cancelled and await cancels.requested(clients.jobs, manifest.job):
                        cancelled = True
                        log.info(
                            "job %s: cancelled at row %d; counting the rest without enqueueing",
                            manifest.job,
                            parsed.index + 1,
                        )
                    if time.monotonic() >= deadline:
                        return None
        await batcher.checkpoint()
    return stream.total_rows
