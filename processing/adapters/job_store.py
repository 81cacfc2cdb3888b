"""Reading and writing job manifests in the jobs container, always with an ETag condition."""

from __future__ import annotations

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from processing.core.layout import manifest_blob
from processing.core.manifest import Manifest

_JSON = ContentSettings(content_type="application/json")


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
