"""Stage 2, process: a rows message in; one model call per row, its records appended to a shard."""
