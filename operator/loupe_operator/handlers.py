"""kopf handlers: thin. Observe, call the pure reconcile function, act, write status only when changed."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from loupe_api.constants import GROUP, VERSION
from loupe_api.dataset import DatasetSpec, DatasetStatus
from loupe_api.ingest import IngestSourceSpec, IngestSourceStatus, ScanSummary
from loupe_api.jobs import RunRequest
from loupe_operator import kube, metrics
from loupe_operator.conditions import set_condition
from loupe_operator.launchers import Launcher, LocalLauncher, SubmitLauncher
from loupe_operator.reconcile import Observed, reconcile_dataset
from loupe_operator.settings import OperatorSettings
from loupe_operator.storage import read_versions, scan_source

SETTINGS = OperatorSettings()
_launchers: dict[str, Launcher] = {}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _launcher(mode: str, address: str | None) -> Launcher:
    key = f"{mode}:{address}"
    if key not in _launchers:
        if mode == "local":
            _launchers[key] = LocalLauncher(Path(SETTINGS.local_state_dir).expanduser())
        elif mode == "submit":
            if not address:
                raise kopf.PermanentError("ray mode submit needs spec.ray.address or LOUPE_RAY_ADDRESS")
            _launchers[key] = SubmitLauncher(address)
        else:
            raise kopf.PermanentError(f"ray mode {mode} is not supported by this operator build yet")
    return _launchers[key]


def _write_status(patch: kopf.Patch, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Merge-patch the status only when it differs; keys that disappeared are removed."""
    if old == new:
        return False
    patch.status.update(new)
    for key in old.keys() - new.keys():
        patch.status[key] = None
    return True


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Structural schemas prune unknown status fields, so kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    kube.load_config()
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(SETTINGS.metrics_port)


# ---- IngestSource ---------------------------------------------------------------------------------


def _reconcile_source(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    started = time.monotonic()
    namespace, generation = body.metadata.namespace or "default", body.metadata.get("generation")
    spec = IngestSourceSpec.model_validate(dict(body.spec))
    old = dict(body.status or {})
    status = IngestSourceStatus.model_validate(
        {
            k: v
            for k, v in old.items()
            if k in IngestSourceStatus.model_fields or k in ("observedGeneration", "lastScan", "conditions")
        }
    )
    status.observed_generation = generation
    now = _now()
    try:
        credentials = kube.s3_credentials(namespace, spec.s3.credentials_secret_ref if spec.s3 else None)
        scan = scan_source(body.metadata.name or "", spec, credentials)
    except Exception as exc:  # unreachable bucket, missing folder or Secret: report, retry later
        message = f"cannot list {spec.location_uri()}: {exc}"
        status.conditions = set_condition(
            status.conditions, "Ready", "False", "ListFailed", message, now=now, generation=generation
        )
        status.conditions = set_condition(
            status.conditions, "Degraded", "True", "ListFailed", message, now=now, generation=generation
        )
        _write_status(patch, old, status.to_wire())
        metrics.RECONCILES.labels("IngestSource", "error").inc()
        raise kopf.TemporaryError(message, delay=30) from exc
    changed = status.last_scan is None or status.last_scan.listing_digest != scan.digest
    status.last_scan = ScanSummary(
        time=now if changed or status.last_scan is None else status.last_scan.time,
        objects=scan.objects,
        bytes=scan.bytes,
        listing_digest=scan.digest,
    )
    message = f"{scan.objects} objects, {scan.bytes} bytes"
    status.conditions = set_condition(
        status.conditions, "Ready", "True", "Listed", message, now=now, generation=generation
    )
    status.conditions = set_condition(
        status.conditions, "Degraded", "False", "Listed", message, now=now, generation=generation
    )
    _write_status(patch, old, status.to_wire())
    if changed:
        logger.info("source listing changed: %s", message)
    metrics.RECONCILES.labels("IngestSource", "ok").inc()
    metrics.RECONCILE_SECONDS.labels("IngestSource").observe(time.monotonic() - started)


@kopf.on.resume(GROUP, VERSION, "ingestsources")
@kopf.on.create(GROUP, VERSION, "ingestsources")
@kopf.on.update(GROUP, VERSION, "ingestsources", field="spec")
def source_changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_source(body, patch, logger)


@kopf.timer(GROUP, VERSION, "ingestsources", interval=SETTINGS.source_poll_seconds, initial_delay=5)
def source_poll(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_source(body, patch, logger)


# ---- Dataset --------------------------------------------------------------------------------------


def _reconcile_dataset(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    started = time.monotonic()
    name, namespace = body.metadata.name or "", body.metadata.namespace or "default"
    generation = int(body.metadata.get("generation") or 1)
    spec = DatasetSpec.model_validate(dict(body.spec))
    old = dict(body.status or {})
    status = DatasetStatus.model_validate(old)
    mode = spec.ray.mode or SETTINGS.ray_mode
    address = spec.ray.address or SETTINGS.ray_address
    store_uri = spec.storage.uri or SETTINGS.default_store
    endpoint = spec.storage.endpoint or SETTINGS.store_endpoint
    region = spec.storage.region or SETTINGS.store_region
    dataset_key = f"{namespace}/{name}"
    sources: dict[str, IngestSourceSpec] = {}
    digests: dict[str, str] = {}
    missing: list[str] = []
    for ref in spec.sources:
        source = kube.get_ingest_source(namespace, ref.name)
        if source is None:
            missing.append(ref.name)
            continue
        sources[ref.name] = IngestSourceSpec.model_validate(source["spec"])
        digests[ref.name] = ((source.get("status") or {}).get("lastScan") or {}).get("listingDigest", "")
    secret_ref = spec.storage.credentials_secret_ref
    credentials = kube.s3_credentials(namespace, secret_ref) if secret_ref else None
    try:
        versions = read_versions(store_uri, dataset_key, endpoint, region, credentials)
    except Exception as exc:
        message = f"cannot read versions from {store_uri}: {exc}"
        status.conditions = set_condition(
            status.conditions,
            "Degraded",
            "True",
            "StorageUnavailable",
            message,
            now=_now(),
            generation=generation,
        )
        _write_status(patch, old, status.to_wire())
        metrics.RECONCILES.labels("Dataset", "error").inc()
        raise kopf.TemporaryError(message, delay=15) from exc
    launcher = _launcher(mode, address)
    live = launcher.observe(status.job.id) if status.job is not None else None
    decision = reconcile_dataset(
        Observed(
            name=name,
            generation=generation,
            spec=spec,
            status=status,
            now=_now(),
            mode=mode,
            missing_sources=missing,
            source_digests=digests,
            versions=versions,
            job=live,
            max_attempts=SETTINGS.max_attempts,
            retry_backoff_seconds=SETTINGS.retry_backoff_seconds,
            poll_seconds=SETTINGS.poll_seconds,
        )
    )
    if decision.launch is not None:
        request = RunRequest(
            dataset=dataset_key, spec=spec, sources=sources, store_uri=store_uri,
            store_endpoint=endpoint, store_region=region, run_id=decision.launch.id,
        )  # fmt: skip
        env = kube.credential_env(namespace, secret_ref) if mode == "local" and secret_ref else {}
        launcher.launch(decision.launch.id, request, env)
        metrics.RUNS.labels("started", mode).inc()
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if event.reason == "JobSucceeded":
            metrics.RUNS.labels("succeeded", mode).inc()
        elif event.reason == "JobFailed":
            metrics.RUNS.labels("failed", mode).inc()
        elif event.reason == "VersionCreated":
            metrics.VERSIONS.inc()
    if _write_status(patch, old, decision.status.to_wire()):
        logger.info("status changed: version %s, job %s", decision.status.current_version,
                    decision.status.job.state if decision.status.job else None)  # fmt: skip
    metrics.RECONCILES.labels("Dataset", "ok").inc()
    metrics.RECONCILE_SECONDS.labels("Dataset").observe(time.monotonic() - started)


@kopf.on.resume(GROUP, VERSION, "datasets")
@kopf.on.create(GROUP, VERSION, "datasets")
@kopf.on.update(GROUP, VERSION, "datasets", field="spec")
def dataset_changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_dataset(body, patch, logger)


@kopf.timer(GROUP, VERSION, "datasets", interval=SETTINGS.poll_seconds, initial_delay=2)
def dataset_poll(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_dataset(body, patch, logger)


@kopf.on.delete(GROUP, VERSION, "datasets")
def dataset_deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Stop a running job; committed versions stay in storage."""
    job: dict[str, Any] = dict(body.status or {}).get("job") or {}
    if job.get("state") in ("Pending", "Running"):
        spec = DatasetSpec.model_validate(dict(body.spec))
        mode = spec.ray.mode or SETTINGS.ray_mode
        _launcher(mode, spec.ray.address or SETTINGS.ray_address).stop(job["id"])
        logger.info("stopped job %s", job["id"])
