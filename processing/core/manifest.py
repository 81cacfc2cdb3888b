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

from processing.core import layout
from processing.core.errors import BadMessage, BadName
from processing.core.settings import DEFAULTS
from processing.core.states import JobState
from processing.core.text import clean_json

# 2: one-to-one output prefix (layout.output_prefix) and a row key; 1 used the legacy prefix.
MANIFEST_VERSION = 2


class BadManifest(BadMessage):
    """A manifest that does not describe the job it is stored for: never acted on."""


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
    # How the input was encoded: its codec and whether it began with a byte-order mark; the
    # results CSV follows them (processing/core/results_format.py). Old manifests: UTF-8, no mark.
    encoding: str = "utf-8"
    bom: bool = False
    # Fixed when the job is created, so a settings change never re-shards a running job.
    shard_rows: int = DEFAULTS["shard_rows"]
    shard_max_blocks: int = DEFAULTS["shard_max_blocks"]  # a segment this full continues in the next one
    total_rows: int | None = None
    ingested_rows: int = 0  # resume point: rows before it are enqueued (or recorded)
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    # Every billed answer's tokens, retries and duplicate deliveries included (what the bill counts):
    # completion includes reasoning (as Azure counts and bills them); reasoning is its share, and
    # cached the share of prompt tokens served from the prompt cache.
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0, "reasoning": 0, "cached": 0})
    requests: int = 0  # model requests sent (429s and failures included)
    retries: int = 0  # of those, the ones that asked again for a row already asked
    # The job's price (prices.Price.to_dict), fixed when the job starts; None: the table has no
    # price for its deployment, and the job reports tokens without a cost.
    price: dict[str, Any] | None = None
    cost_usd: float | None = None  # the tokens above at that price
    budget_usd: float | None = None  # the cap (pipeline budget_usd, or submit --budget-usd if lower)
    # Once the job ends with a budget: {"usd": cap, "reached": bool, "rows": rows ended `budget`}.
    budget: dict[str, Any] | None = None
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
    # Hex key that signs the job's row messages (messages.rows_signature); "" in old manifests.
    row_key: str = field(default="", repr=False)
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
        # clean_json: one lone surrogate in an error text must not make the job unsaveable.
        return json.dumps(clean_json(data), ensure_ascii=False, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, etag: str | None = None) -> Manifest:
        try:
            data = json.loads(raw)
            known = set(cls.__dataclass_fields__) - {"etag"}
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, RecursionError, AttributeError):
            raise BadManifest("manifest is not a manifest object") from None
        manifest.etag = etag
        return manifest

    def check(self, job: str) -> Manifest:
        """This manifest, if it describes `job`: its own id, a source in `input` with a safe
        name, and the pipeline and output prefix derived from that name. A planted manifest
        that names another container, another job's files or an output of its choosing fails."""
        if self.job != job:
            raise BadManifest("manifest names another job")
        if self.source_container != layout.INPUT_CONTAINER:
            raise BadManifest("manifest's source is not in the input container")
        try:
            blob = layout.check_blob_name(self.source_blob, "manifest source")
            layout.check_etag(self.source_etag)
        except BadName as exc:
            raise BadManifest(str(exc)) from None
        derive = layout.legacy_output_prefix if self.version == 1 else layout.output_prefix
        if self.output_prefix != derive(blob) or self.pipeline_name != layout.route(blob)[0]:
            raise BadManifest("manifest's output prefix or pipeline is not the one its source name gives")
        if self.total_rows is not None and (type(self.total_rows) is not int or self.total_rows < 0):
            raise BadManifest("manifest's total_rows is not a count")
        for count in (self.shard_rows, self.shard_max_blocks):
            if type(count) is not int or count < 1:
                raise BadManifest("manifest's shard geometry is not a positive count")
        if not isinstance(self.row_key, str) or (self.row_key and len(self.row_key) != 64):
            raise BadManifest("manifest's row key is malformed")
        return self

    def stamp(self, name: str) -> None:
        self.times.setdefault(name, time.time())
