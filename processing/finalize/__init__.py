"""Stage 3, finalize: notice when every row of a job has a record, then write the results files."""
