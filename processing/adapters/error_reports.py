"""Failing a whole job once, with an error report a person can act on.

A job-level problem (unknown pipeline, missing column, not UTF-8, unknown deployment,
a rejected API key) is written once as output/<pipeline>/<file>.error.json and the
manifest is marked failed; nothing is retried, so there is no retry storm or poison loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from processing.adapters import job_store, telemetry
from processing.adapters.clients import Clients
from processing.core.errors import ConfigurationError
from processing.core.layout import error_report_blob, fatal_blob
from processing.core.manifest import Manifest
from processing.core.states import JobState
from processing.core.text import clean_json, clean_text

log = logging.getLogger(__name__)


def describe(exc: Exception) -> dict[str, str]:
    kind = "configuration" if isinstance(exc, ConfigurationError) else "input"
    where = getattr(exc, "where", "") or ""
    fix = getattr(exc, "fix", "") or ""
    if not fix and isinstance(exc, ConfigurationError):
        fix = "fix the pipeline file or the app setting named above, then upload the file again"
    # An error's text can quote a cell, a name or an answer: cleaned so the report can be written.
    return {"kind": kind, "error": clean_text(str(exc)), "where": clean_text(where), "fix": clean_text(fix)}


async def fail_job(
    clients: Clients, manifest: Manifest, exc: Exception | dict[str, str], *, report: bool = True
) -> None:
    detail = clean_json(exc) if isinstance(exc, dict) else describe(exc)
    log.error("job %s failed: %s", manifest.job, detail["error"])
    manifest.state = JobState.FAILED
    manifest.error = detail
    manifest.stamp("finished")
    if report:
        name = error_report_blob(manifest.output_prefix)
        body: dict[str, Any] = {
            "job": manifest.job,
            "source": f"{manifest.source_container}/{manifest.source_blob}",
            "pipeline": manifest.pipeline_name,
            **detail,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        await clients.output.upload_blob(
            name,
            json.dumps(body, indent=2, ensure_ascii=False).encode(),
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
        )
        manifest.results = {"error_report": name}
    await job_store.save(clients.jobs, manifest)
    telemetry.job_state(manifest)


async def mark_fatal(clients: Clients, job: str, exc: Exception) -> None:
    """Record, once, that a job cannot succeed; finalize fails the job when it next looks."""
    with contextlib.suppress(ResourceExistsError):
        await clients.jobs.upload_blob(
            fatal_blob(job),
            json.dumps(describe(exc)).encode(),
            # If-None-Match: * (the SDK takes no etag with IfMissing).
            match_condition=MatchConditions.IfMissing,
        )


async def read_fatal(clients: Clients, job: str) -> dict[str, str] | None:
    try:
        stream = await clients.jobs.download_blob(fatal_blob(job))
        data = json.loads(await stream.readall())
    except ResourceNotFoundError:
        return None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"kind": "configuration", "error": "the job's fatal error record is unreadable", "where": "", "fix": ""}
    return {k: clean_text(str(data.get(k, ""))) for k in ("kind", "error", "where", "fix")}
