"""Stage 1, ingest: a BlobCreated event in; the job's manifest and its row messages out."""
