"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("loupe_reconciles_total", "Reconciliations by kind and outcome.", ["kind", "outcome"])
RECONCILE_SECONDS = Histogram("loupe_reconcile_duration_seconds", "Duration of one reconciliation.", ["kind"])
RUNS = Counter("loupe_runs_total", "Dataset jobs by event (started, succeeded, failed).", ["event", "mode"])
VERSIONS = Counter("loupe_versions_created_total", "Dataset versions created.")
SAMPLES = Counter("loupe_samples_processed_total", "Objects decoded by finished jobs.")
RETRAIN_RUNS = Counter(
    "loupe_retrain_runs_total", "RetrainPolicy runs by event and action.", ["event", "action"]
)
