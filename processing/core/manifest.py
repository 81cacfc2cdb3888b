"""The job manifest: one per uploaded file, `jobs/<job-id>/manifest.json`.

Only ingest and finalize write it, always with an ETag condition (job_store.py). It holds
what every row of the job needs (the pipeline snapshot, the header, the shard geometry)
and what the job has come to (state, counts, tokens, the names of its results).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from processing.core.settings import DEFAULTS
from processing.core.states import JobState

MANIFEST_VERSION = 1


@dataclass
class Manifest:
    job: str
    source_container: str
    source_blob: str
    source_url: str
    source_etag: str
    pipeline_name: str
    output_prefix: str  # output/<pipeline>/<file-without-.csv>; outputs add .results.csv etc.
    state: str = JobState.INGESTING
    pipeline: dict[str, Any] = field(default_factory=dict)  # snapshot of the pipeline
    header: list[str] = field(default_factory=list)
    output_columns: list[str] = field(default_factory=list)  # answer columns after clash renaming
    delimiter: str = ","
    # Fixed when the job is created, so a settings change never re-shards a running job.
    shard_rows: int = DEFAULTS["shard_rows"]
    shard_max_blocks: int = DEFAULTS["shard_max_blocks"]  # a segment this full continues in the next one
    total_rows: int | None = None
    ingested_rows: int = 0  # resume point: rows before it are enqueued (or recorded)
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    # completion includes reasoning (as Azure counts and bills them); reasoning is its share.
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0, "reasoning": 0})
    # Error rows by code, most rows first: {"length": {"rows": 240, "example": "<first message>"}}.
    row_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
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

    def shard_of(self, index: int) -> int:
        return index // self.shard_rows

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
