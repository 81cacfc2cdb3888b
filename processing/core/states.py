"""The words a job and a row can end in: job states, row outcomes and row error codes.

They are StrEnums, so they are written to manifests, records and the results files as the
plain strings they always were, and compare equal to those strings when read back.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    INGESTING = "ingesting"  # ingest is reading the file and enqueuing its rows
    PROCESSING = "processing"  # every row is enqueued; finalize is waiting for their records
    DONE = "done"  # the results files are written (some rows may be errors)
    FAILED = "failed"  # the job as a whole could not run; output/.../<file>.error.json says why
    CANCELLED = "cancelled"  # `rowsmith cancel`: the results files hold the answered rows, the rest as `cancelled`


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
# Final states whose results files are written (every input row is in them).
RESULT_STATES = frozenset({JobState.DONE, JobState.CANCELLED})


# The error text of a row ended by `rowsmith cancel` (process and finalize write the same).
CANCELLED_REASON = "the job was cancelled (rowsmith cancel) before this row was answered"


class RowStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    # Not a result: the billed requests of a row that was re-enqueued (processing/core/records.py).
    SPEND = "spend"


class RowCode(StrEnum):
    """Why a row ended as an error (the `code` of its record; README "Troubleshooting" explains each)."""

    BAD_ROW = "bad_row"  # its field count differs from the header's
    ROW_TOO_LARGE = "row_too_large"  # over ROWSMITH_MAX_ROW_BYTES
    CONTENT_FILTER = "content_filter"  # the prompt or the answer was filtered
    CONTEXT_LENGTH = "context_length_exceeded"  # the prompt does not fit the model's window
    BAD_REQUEST = "bad_request"  # any other 400
    LENGTH = "length"  # a JSON answer cut off at max_tokens
    INVALID_JSON = "invalid_json"  # a schema pipeline's answer was not strict JSON matching its schema, every try
    CONFIG = "config"  # a job-level configuration error met while this row was processed
    TRANSIENT = "transient"  # 5xx, timeouts or connection errors on every attempt
    POISON = "poison"  # the worker crashed or timed out on every attempt
    MISSING = "missing"  # no record by the stall deadline
    CANCELLED = "cancelled"  # the job was cancelled (`rowsmith cancel`) before the row was answered
    BUDGET = "budget"  # the job's budget (budget_usd, submit --budget-usd) was spent before this row was sent
    ROW_ERROR = "row_error"  # a permanent row error without a more specific code
