"""Per-object work (read, store by content, decode once, measure, detect) and where it runs: in this
process or as Ray Data tasks on a local or remote cluster."""
