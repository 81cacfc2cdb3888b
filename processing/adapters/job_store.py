"""Reading and writing job manifests in the jobs container, always with an ETag condition."""

from __future__ import annotations

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from processing.adapters import telemetry
from processing.core.errors import BadMessage
from processing.core.layout import check_job_id, manifest_blob
from processing.core.manifest import BadManifest, Manifest

_JSON = ContentSettings(content_type="application/json")


class ManifestConflict(Exception):
    """Someone else wrote the manifest since we read it."""


# A manifest is a few KiB; one far larger was not written by the app.
MAX_MANIFEST_BYTES = 1024 * 1024


async def load(jobs: ContainerClient, job: str) -> Manifest | None:
    """The job's manifest, checked against the job (Manifest.check); BadName for a job id the
    app could not have made, BadManifest for a manifest that does not describe its job."""
    name = manifest_blob(check_job_id(job))
    try:
        stream = await jobs.download_blob(name)
        if (stream.properties.size or 0) > MAX_MANIFEST_BYTES:
            raise BadManifest("manifest is larger than any the app writes")
        raw = await stream.readall()
    except ResourceNotFoundError:
        return None
    manifest = Manifest.from_json(raw, etag=stream.properties.etag).check(job)
    telemetry.bind(job=manifest.job, pipeline=manifest.pipeline_name)  # the stage's spans and logs name it
    return manifest


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
    telemetry.job_state(manifest)
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
        try:
            manifest = await load(jobs, name)
        except BadMessage:
            continue  # not a job of the app's (a bad id or manifest): `status` lists only real ones
        if manifest:
            found.append(manifest)
        if len(found) >= limit:
            break
    found.sort(key=lambda m: m.times.get("created", 0), reverse=True)
    return found
