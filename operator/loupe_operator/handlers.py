"""kopf handlers: thin. Observe, call the pure reconcile function, act, write status only when changed."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import kopf
from pydantic import ValidationError

from loupe_api import openlineage
from loupe_api.common import SecretReference, parse_duration
from loupe_api.constants import GROUP, VERSION
from loupe_api.dataset import COMMIT_ANNOTATION, DatasetSpec, DatasetStatus, RayMode
from loupe_api.ingest import IngestSourceSpec, IngestSourceStatus, ScanSummary
from loupe_api.jobs import RunRequest
from loupe_api.keys import gc_result_key, model_key, result_key
from loupe_api.retention import GcResult, RetentionStatus
from loupe_api.retrain import RetrainPolicySpec, RetrainPolicyStatus, RetrainRun, TrainingResult
from loupe_api.retry import TransientRefusal
from loupe_api.triggers import manifest_file_keys, run_environment
from loupe_api.versions import VersionRecord
from loupe_operator.adapters import actions, kube, metrics
from loupe_operator.adapters.launchers import KubeRayLauncher, Launcher, LocalLauncher, SubmitLauncher
from loupe_operator.adapters.storage import StoreLocation, scan_source
from loupe_operator.manifests.rayjob import KubeRayDefaults, Owner
from loupe_operator.reconcile.conditions import set_condition
from loupe_operator.reconcile.dataset import (
    Decision,
    Event,
    Observed,
    reconcile_dataset,
    reconcile_retention,
)
from loupe_operator.reconcile.retrain import (
    PolicyObserved,
    action_kind,
    after_delivery,
    job_manifest,
    rayjob_action_manifest,
    reconcile_policy,
    webhook_payload,
)
from loupe_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
# Sources are checked this often; each rescans only when its own pollInterval has passed.
SOURCE_TICK_SECONDS = min(SETTINGS.source_poll_seconds, 5.0)
_launchers: dict[str, Launcher] = {}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _kuberay_defaults() -> KubeRayDefaults:
    return KubeRayDefaults(
        image=SETTINGS.worker_image,
        ray_version=SETTINGS.ray_version,
        workers=SETTINGS.workers,
        head=SETTINGS.head_resources,
        worker=SETTINGS.worker_resources,
        cluster_selector=SETTINGS.cluster_selector,
        service_account_name=SETTINGS.ray_service_account,
        active_deadline_seconds=SETTINGS.job_deadline_seconds,
        ttl_seconds_after_finished=SETTINGS.job_ttl_seconds,
    )


def _launcher(mode: str, address: str | None, namespace: str) -> Launcher:
    key = {"local": "local", "submit": f"submit:{address}", "kuberay": f"kuberay:{namespace}"}[mode]
    if key not in _launchers:
        if mode == "local":
            _launchers[key] = LocalLauncher(Path(SETTINGS.local_state_dir).expanduser())
        elif mode == "submit":
            if not address:
                raise kopf.PermanentError("ray mode submit needs spec.ray.address or LOUPE_RAY_ADDRESS")
            _launchers[key] = SubmitLauncher(address)
        else:
            _launchers[key] = KubeRayLauncher(namespace, _kuberay_defaults())
    return _launchers[key]


def _job_env(mode: str, namespace: str, request: RunRequest) -> dict[str, str]:
    """Credential values for jobs whose environment the operator passes itself; kuberay uses secretKeyRef."""
    secrets = request.secrets()
    if not secrets or mode == "kuberay" or (mode == "submit" and not SETTINGS.submit_passes_credentials):
        return {}
    return kube.credential_env(namespace, secrets)


def _write_status(patch: kopf.Patch, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Merge-patch the status only when it differs; keys that disappeared are removed."""
    if old == new:
        return False
    patch.status.update(new)
    for key in old.keys() - new.keys():
        patch.status[key] = None
    return True


# This replica's kopf peering identity, set by ``python -m loupe_operator`` (the chart's command); under a
# plain ``kopf run`` it stays None and the replica does not announce itself before kopf starts.
PEER_IDENTITY: str | None = None


def _settle_peering(
    settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """Announce this replica to its peers, then wait one settle interval before kopf handles anything.

    kopf starts a peered replica paused and resumes it at its first peering event when that shows no
    peer of higher priority; so of two replicas started together, one whose first event predates the
    other's first heartbeat handles the objects that already exist, and so does the other. Heartbeats
    written here, before kopf's own keep-alive and watchers start, let each replica's first peering event
    list every replica started with it: the lower priority never resumes."""
    if SETTINGS.peering is None or PEER_IDENTITY is None:
        return
    heartbeat = {
        "priority": int(settings.peering.priority),
        "lifetime": int(settings.peering.lifetime),
        "lastseen": datetime.now(UTC).isoformat(),
    }
    found = kube.announce_peer(SETTINGS.peering, SETTINGS.namespaces, PEER_IDENTITY, heartbeat)
    logger.info(
        f"announced to peers with priority {heartbeat['priority']}; settling before handling objects",
        extra={"peering": SETTINGS.peering, "objects": found, "seconds": SETTINGS.peering_settle_seconds},
    )
    time.sleep(SETTINGS.peering_settle_seconds)


@kopf.on.startup()
def configure(
    settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    # Structural schemas prune unknown status fields, so kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    kube.load_config()
    _settle_peering(settings, logger)
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
    _last_scan[body.metadata.uid or ""] = time.monotonic()
    _reconcile_source(body, patch, logger)


_last_scan: dict[str, float] = {}  # uid -> monotonic time of the last listing (a restart rescans at once)


def scan_due(last: float | None, now: float, poll_interval: str | None, default_seconds: float) -> bool:
    """Whether a source's own ``pollInterval`` (else the operator's default) has passed since its last scan."""
    interval = parse_duration(poll_interval) if poll_interval else default_seconds
    return last is None or now - last >= interval


@kopf.timer(GROUP, VERSION, "ingestsources", interval=SOURCE_TICK_SECONDS, initial_delay=5)
def source_poll(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    uid, now = body.metadata.uid or "", time.monotonic()
    if not scan_due(_last_scan.get(uid), now, body.spec.get("pollInterval"), SETTINGS.source_poll_seconds):
        return
    _last_scan[uid] = now
    _reconcile_source(body, patch, logger)


@kopf.on.delete(GROUP, VERSION, "ingestsources", optional=True)
def source_deleted(body: kopf.Body, **_: Any) -> None:
    _last_scan.pop(body.metadata.uid or "", None)


# ---- Dataset --------------------------------------------------------------------------------------


def _with_default_storage_secret(spec: DatasetSpec) -> DatasetSpec:
    """A Dataset on the default storage uses the default storage's Secret, by name, in its own namespace
    (where its job's pods run)."""
    if spec.storage.uri is not None or spec.storage.credentials_secret_ref is not None:
        return spec
    if not SETTINGS.store_credentials_secret:
        return spec
    ref = SecretReference(name=SETTINGS.store_credentials_secret)
    return spec.model_copy(
        update={"storage": spec.storage.model_copy(update={"credentials_secret_ref": ref})}
    )


def dataset_store(spec: DatasetSpec, namespace: str) -> tuple[StoreLocation, SecretReference | None]:
    """Where a Dataset's versions live, and the Secret that opens it."""
    spec = _with_default_storage_secret(spec)
    secret = spec.storage.credentials_secret_ref
    location = StoreLocation(
        uri=spec.storage.uri or SETTINGS.default_store,
        endpoint=spec.storage.endpoint or SETTINGS.store_endpoint,
        region=spec.storage.region or SETTINGS.store_region,
        credentials=kube.s3_credentials(namespace, secret) if secret else None,
    )
    return location, secret


def _reconcile_dataset(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    started = time.monotonic()
    name, namespace = body.metadata.name or "", body.metadata.namespace or "default"
    generation = int(body.metadata.get("generation") or 1)
    old = dict(body.status or {})
    status = DatasetStatus.model_validate(old)
    try:
        spec = DatasetSpec.model_validate(dict(body.spec))
    except ValidationError as exc:  # rules the CRD schema cannot express: say which field, keep the version
        fields = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        message = f"invalid spec ({fields}); the current version stays"
        status.observed_generation = generation
        status.conditions = set_condition(
            status.conditions, "Degraded", "True", "InvalidSpec", message, now=_now(), generation=generation
        )
        _write_status(patch, old, status.to_wire())
        metrics.RECONCILES.labels("Dataset", "error").inc()
        raise kopf.PermanentError(message) from exc
    mode = spec.ray.mode or SETTINGS.ray_mode
    address = spec.ray.address or SETTINGS.ray_address
    spec = _with_default_storage_secret(spec)  # the job is told which Secret opens the default storage
    location, _ = dataset_store(spec, namespace)
    store_uri = location.uri
    dataset_key = f"{namespace}/{name}"
    sources: dict[str, IngestSourceSpec] = {}
    digests: dict[str, str] = {}
    missing: list[str] = []
    for ref in spec.sources:
        source = kube.get_custom(namespace, "ingestsources", ref.name)
        if source is None:
            missing.append(ref.name)
            continue
        sources[ref.name] = IngestSourceSpec.model_validate(source["spec"])
        digests[ref.name] = ((source.get("status") or {}).get("lastScan") or {}).get("listingDigest", "")

    def retry_later(reason: str, message: str, delay: float, cause: Exception) -> NoReturn:
        status.observed_generation = generation  # the spec was seen; tools comparing generations must know
        status.conditions = set_condition(
            status.conditions, "Degraded", "True", reason, message, now=_now(), generation=generation
        )
        _write_status(patch, old, status.to_wire())
        metrics.RECONCILES.labels("Dataset", "error").inc()
        raise kopf.TemporaryError(message, delay=delay) from cause

    try:
        versions = location.read_versions(dataset_key)
    except Exception as exc:
        retry_later("StorageUnavailable", f"cannot read versions from {store_uri}: {exc}", 15, exc)
    try:
        launcher = _launcher(mode, address, namespace)
        live = launcher.observe(status.job.id) if status.job is not None else None
    except TransientRefusal as exc:
        retry_later("RayUnavailable", f"{exc}; retrying in 30 s", 30, exc)
    observed = Observed(
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
        store_uri=store_uri,
        commit_request=str((body.metadata.annotations or {}).get(COMMIT_ANNOTATION, "")),
    )
    decision = reconcile_dataset(observed)
    if decision.launch is not None:
        request = RunRequest(
            dataset=dataset_key, spec=spec, sources=sources, store_uri=store_uri,
            store_endpoint=location.endpoint, store_region=location.region, run_id=decision.launch.id,
        )  # fmt: skip
        owner = Owner(f"{GROUP}/{VERSION}", "Dataset", name, body.metadata.uid or "", namespace)
        try:
            launcher.launch(decision.launch.id, request, _job_env(mode, namespace, request), owner)
        except TransientRefusal as exc:  # the status keeps the previous job: nothing was started
            kept = f"; version {status.current_version} stays current" if status.current_version else ""
            retry_later("RayUnavailable", f"{exc}{kept}; retrying in 30 s", 30, exc)
        metrics.RUNS.labels("started", mode).inc()
    _retention(body, replace(observed, status=decision.status), decision, launcher, location, spec, mode)
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if event.reason == "JobSucceeded":
            metrics.RUNS.labels("succeeded", mode).inc()
            result = launcher.result(status.job.id) if status.job is not None else None
            if result is not None:
                metrics.SAMPLES.inc(result.stats.processed)
        elif event.reason == "JobFailed":
            metrics.RUNS.labels("failed", mode).inc()
        elif event.reason == "VersionCreated":
            metrics.VERSIONS.inc()
            openlineage.emit(
                f"loupe.dataset/{dataset_key}", f"{dataset_key}@{decision.status.current_version}", "COMPLETE",
                [(src.location_uri(), ref) for ref, src in sorted(sources.items())],
                [(store_uri, f"{dataset_key}@{decision.status.current_version}")],
            )  # fmt: skip
    if _write_status(patch, old, decision.status.to_wire()):
        logger.info("status changed: version %s, job %s", decision.status.current_version,
                    decision.status.job.state if decision.status.job else None)  # fmt: skip
    metrics.RECONCILES.labels("Dataset", "ok").inc()
    metrics.RECONCILE_SECONDS.labels("Dataset").observe(time.monotonic() - started)


def _retention(body: kopf.Body, observed: Observed, decision: Decision, launcher: Launcher,
               location: StoreLocation, spec: DatasetSpec, mode: RayMode) -> None:  # fmt: skip
    """spec.retention on Kubernetes: fold in the last gc job's result, start the next one when due."""
    state, namespace = observed.status.retention, body.metadata.namespace or "default"
    dataset_key = f"{namespace}/{observed.name}"
    live, result = None, None
    if state is not None and state.job_id and state.job_state in ("Pending", "Running"):
        live = launcher.observe(state.job_id)
        if live is not None and live.state == "Succeeded":
            raw = location.read_optional(gc_result_key(dataset_key, state.job_id))
            result = GcResult.model_validate_json(raw) if raw is not None else None
    stamp = body.metadata.get("creationTimestamp")
    created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else observed.now
    gc = reconcile_retention(observed, created, live, result)
    if gc.launch is not None:
        request = RunRequest(dataset=dataset_key, spec=spec, sources={}, store_uri=location.uri, kind="gc",
                             store_endpoint=location.endpoint, store_region=location.region, run_id=gc.launch)  # fmt: skip
        owner = Owner(f"{GROUP}/{VERSION}", "Dataset", observed.name, body.metadata.uid or "", namespace)
        try:
            launcher.launch(gc.launch, request, _job_env(mode, namespace, request), owner)
        except TransientRefusal:
            return  # nothing started: the status keeps the previous gc, and the next reconcile retries
    if gc.state != RetentionStatus():
        decision.status.retention = gc.state
    decision.events.extend(gc.events)


@kopf.on.resume(GROUP, VERSION, "datasets")
@kopf.on.create(GROUP, VERSION, "datasets")
@kopf.on.update(GROUP, VERSION, "datasets", field="spec")
def dataset_changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_dataset(body, patch, logger)


@kopf.on.update(GROUP, VERSION, "datasets", field=("metadata", "annotations", COMMIT_ANNOTATION))
def dataset_commit_requested(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    """Manual versioning: a new value of the annotation asks for a version now, not at the next poll."""
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
        namespace = body.metadata.namespace or "default"
        _launcher(mode, spec.ray.address or SETTINGS.ray_address, namespace).stop(job["id"])
        logger.info("stopped job %s", job["id"])


# ---- RetrainPolicy --------------------------------------------------------------------------------


def _reconcile_policy(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    started = time.monotonic()
    name, namespace = body.metadata.name or "", body.metadata.namespace or "default"
    spec = RetrainPolicySpec.model_validate(dict(body.spec))
    old = dict(body.status or {})
    status = RetrainPolicyStatus.model_validate(old)
    now = _now()
    dataset_key = f"{namespace}/{spec.dataset_ref}"
    dataset = kube.get_custom(namespace, "datasets", spec.dataset_ref)
    location, secret = StoreLocation(SETTINGS.default_store), None
    versions: list[VersionRecord] = []
    drift: float | None = None
    if dataset is not None:
        location, secret = dataset_store(DatasetSpec.model_validate(dataset["spec"]), namespace)
        drift = ((dataset.get("status") or {}).get("drift") or {}).get("score")
        try:
            versions = location.read_versions(dataset_key)
        except Exception as exc:
            message = f"cannot read versions of {dataset_key} from {location.uri}: {exc}"
            status.conditions = set_condition(status.conditions, "Degraded", "True", "StorageUnavailable",
                                              message, now=now, generation=body.metadata.get("generation"))  # fmt: skip
            _write_status(patch, old, status.to_wire())
            raise kopf.TemporaryError(message, delay=15) from exc
    kind = action_kind(spec)
    active = [r for r in status.runs if r.state in ("Pending", "Running")]
    live = {r.name: actions.observe(kind, namespace, r.name) for r in active if kind in ("job", "rayJob")}
    results = {}
    for run in active:
        raw = location.read_optional(result_key(namespace, name, run.name))
        if raw is not None:
            results[run.name] = TrainingResult.model_validate_json(raw)
    created = datetime.fromisoformat(str(body.metadata.get("creationTimestamp")).replace("Z", "+00:00"))
    decision = reconcile_policy(
        PolicyObserved(
            name=name, namespace=namespace, generation=int(body.metadata.get("generation") or 1), spec=spec,
            status=status, created=created, now=now, dataset=dataset_key, store_uri=location.uri,
            versions=versions, dataset_missing=dataset is None, drift_score=drift, live=live, results=results,
        )
    )  # fmt: skip
    by_version = {v.version: v for v in versions}
    owner = Owner(f"{GROUP}/{VERSION}", "RetrainPolicy", name, body.metadata.uid or "", namespace)

    def env_of(run: RetrainRun) -> dict[str, str]:
        version = by_version[run.dataset_version]
        files = manifest_file_keys(version.manifest_uri, location.read_optional(version.manifest_uri))
        return run_environment(run, f"{namespace}/{name}", dataset_key, version, location.uri,
                               location.endpoint, files)  # fmt: skip

    for run_name_ in decision.stop:
        actions.stop(kind, namespace, run_name_)
    for run in decision.start:
        openlineage.emit(f"loupe.retrain/{namespace}/{name}", run.name, "START",
                         [(location.uri, f"{dataset_key}@{run.dataset_version}")], [])  # fmt: skip
        metrics.RETRAIN_RUNS.labels("started", kind).inc()
        try:
            if kind == "job":
                actions.create(kind, job_manifest(spec.action.job or {}, run, owner, env_of(run), secret))
            elif kind == "rayJob":
                actions.create(
                    kind, rayjob_action_manifest(spec.action.ray_job or {}, run, owner, env_of(run), secret)
                )
            elif kind == "command":
                run.state, run.completion_time = "Failed", now
                run.message = "command actions run only in embedded mode (loupe run -f)"
        except Exception as exc:  # e.g. a template the API server refuses: the run fails, saying why
            run.state, run.completion_time, run.message = "Failed", now, f"could not create its {kind}: {exc}"
            decision.events.append(Event("Warning", "RunFailed", f"run {run.name}: {run.message}"))
    if kind == "webhook" and spec.action.webhook is not None:
        hook = spec.action.webhook
        key = (
            kube.secret_value(namespace, hook.secret_ref.name, hook.secret_ref.key).encode()
            if hook.secret_ref
            else None
        )
        for run in decision.status.runs:
            if run.state == "Pending" and (run.next_attempt is None or run.next_attempt <= now):
                error = actions.deliver(hook.url, webhook_payload(run, env_of(run)), key)
                decision.events.extend(after_delivery(run, error, now, hook.max_attempts))
    for model in decision.models:
        location.write(model_key(model.model_uri), model.model_dump_json(by_alias=True).encode())
    for run in decision.status.runs:
        previous = next((r for r in status.runs if r.name == run.name), None)
        if run.state in ("Succeeded", "Failed") and (previous is None or previous.state != run.state):
            metrics.RETRAIN_RUNS.labels(run.state.lower(), kind).inc()
            openlineage.emit(f"loupe.retrain/{namespace}/{name}", run.name,
                             "COMPLETE" if run.state == "Succeeded" else "FAIL",
                             [(location.uri, f"{dataset_key}@{run.dataset_version}")],
                             [(run.model_uri, run.model_uri)] if run.model_uri else [])  # fmt: skip
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if _write_status(patch, old, decision.status.to_wire()):
        logger.info("status changed: %s", ", ".join(f"{r.name} {r.state}" for r in decision.status.runs[:3]))
    metrics.RECONCILES.labels("RetrainPolicy", "ok").inc()
    metrics.RECONCILE_SECONDS.labels("RetrainPolicy").observe(time.monotonic() - started)


@kopf.on.resume(GROUP, VERSION, "retrainpolicies")
@kopf.on.create(GROUP, VERSION, "retrainpolicies")
@kopf.on.update(GROUP, VERSION, "retrainpolicies", field="spec")
def policy_changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_policy(body, patch, logger)


@kopf.timer(GROUP, VERSION, "retrainpolicies", interval=SETTINGS.poll_seconds, initial_delay=3)
def policy_poll(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_policy(body, patch, logger)
