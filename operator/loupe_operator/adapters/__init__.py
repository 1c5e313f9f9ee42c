"""The operator's I/O: the Kubernetes API, job launchers, object storage, retraining actions, metrics."""
