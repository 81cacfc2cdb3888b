"""Names shared by function_app.py, the Bicep in infra/, the CLI and the local stack.

These are fixed, not settings: the queue names appear in trigger decorators that are
read when the Functions host indexes the app, before any setting could change them,
and tests/infra checks that the Bicep creates exactly these.
"""

from __future__ import annotations

# App-setting prefix of the storage connection used by every trigger. In Azure it is
# identity-based (AzureWebJobsStorage__blobServiceUri, __queueServiceUri,
# __credential=managedidentity); locally it is Azurite's connection string.
STORAGE_CONNECTION = "AzureWebJobsStorage"

# Containers.
INPUT_CONTAINER = "input"  # users drop CSVs here: input/<pipeline>/<file>.csv
OUTPUT_CONTAINER = "output"  # results and error reports: output/<pipeline>/<file>.results.csv
JOBS_CONTAINER = "jobs"  # manifests, result shards, claim checks: jobs/<job-id>/...

# Queues.
UPLOADS_QUEUE = "uploads"  # BlobCreated events from Event Grid (or `rowsmith submit` locally)
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

# Token scopes (the `/.default` form; ManagedIdentityCredential strips it).
OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"
