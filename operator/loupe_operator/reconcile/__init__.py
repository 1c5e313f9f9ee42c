"""Pure reconciliation: from what is observed to the next status and what to launch (no I/O)."""
