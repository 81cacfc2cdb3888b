"""The `rowsmith` command: submit files, watch jobs, fetch results, run the local stack."""
