"""Pure Dataset reconciliation: from what is observed to the next status and the job to launch.

Level-based: the status is recomputed from the spec, the sources, the versions in storage and the
live job on every call, so a restarted operator converges to the same answer. Job ids are derived
from the inputs and the attempt number, so launching is idempotent: a job that was launched before a
crash is adopted, never started twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from loupe_api.dataset import (
    COMMIT_ANNOTATION,
    DatasetSpec,
    DatasetStatus,
    JobStatus,
    RayMode,
    VersionSummary,
)
from loupe_api.retention import GcResult, RetentionSpec, RetentionStatus
from loupe_api.triggers import latest_schedule_slot
from loupe_api.versions import VersionRecord, absolute_uri
from loupe_operator.reconcile.conditions import set_condition

JobState = Literal["Pending", "Running", "Succeeded", "Failed"]
ACTIVE_STATES = ("Pending", "Running")


@dataclass(frozen=True)
class JobObservation:
    """The live state of the job recorded in status (None when the job cannot be found)."""

    state: JobState
    message: str = ""
    reason: str = ""  # why it failed, as a CamelCase word (e.g. KubeRay's DeadlineExceeded)


@dataclass(frozen=True)
class Observed:
    """Everything reconciliation looks at."""

    name: str
    generation: int
    spec: DatasetSpec
    status: DatasetStatus
    now: datetime
    mode: RayMode
    missing_sources: list[str] = field(default_factory=list)
    source_digests: dict[str, str] = field(default_factory=dict)
    versions: list[VersionRecord] = field(default_factory=list)  # committed versions, oldest first
    job: JobObservation | None = None
    max_attempts: int = 3
    retry_backoff_seconds: float = 30.0
    poll_seconds: float = 10.0
    store_uri: str = ""  # where the versions live; status shows full URIs under it
    commit_request: str = ""  # the loupe.dev/commit annotation (manual versioning asks with it)


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    """The next status, the job to launch (if any) and the events to emit."""

    status: DatasetStatus
    launch: JobStatus | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def inputs_digest(generation: int, source_digests: dict[str, str], commit_request: str = "") -> str:
    """Changes when the spec or any source listing changes (or, in manual mode, a new commit request
    comes): then a run is due."""
    inputs: dict[str, object] = {"generation": generation, "sources": source_digests}
    if commit_request:
        inputs["commit"] = commit_request
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def job_id(name: str, digest: str, attempt: int) -> str:
    """A deterministic, DNS-safe job name: the same inputs and attempt always give the same id."""
    return f"loupe-{name[:40]}-{digest[:10]}-{attempt}"


def _summary(record: VersionRecord, store_uri: str) -> VersionSummary:
    return VersionSummary(
        version=record.version,
        created=record.created,
        manifest_uri=absolute_uri(store_uri, record.manifest_uri),
        samples=record.samples,
        digest=record.content_digest,
    )


def _apply_versions(status: DatasetStatus, observed: Observed) -> None:
    if not observed.versions:
        return
    latest = observed.versions[-1]
    status.current_version = latest.version
    status.samples = latest.samples
    status.lineage_uri = absolute_uri(observed.store_uri, latest.lineage_uri)
    limit = observed.spec.versioning.history_limit
    status.versions = [_summary(r, observed.store_uri) for r in reversed(observed.versions[-limit:])]
    status.stats = latest.stats
    status.health = latest.health
    if status.health is not None and status.health.report_uri:
        status.health.report_uri = absolute_uri(observed.store_uri, status.health.report_uri)
    status.drift = latest.drift
    status.synthetic = latest.synthetic.overall if latest.synthetic is not None else None  # counts only


def reconcile_dataset(observed: Observed) -> Decision:
    """The next status of one Dataset, and the job to launch."""
    now, generation = observed.now, observed.generation
    status = observed.status.model_copy(deep=True)
    status.observed_generation = generation
    decision = Decision(status=status)
    previous_current = observed.status.current_version
    _apply_versions(status, observed)
    if status.current_version and status.current_version != previous_current:
        # level-based: reported whenever storage shows a version status did not, whichever branch runs
        decision.events.append(
            Event(
                "Normal", "VersionCreated", f"version {status.current_version} with {status.samples} samples"
            )
        )

    def condition(type_: str, value: Literal["True", "False"], reason: str, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, type_, value, reason, message, now=now, generation=generation
        )

    drift = status.drift
    if drift is not None:
        if drift.exceeded:
            message = f"drift {drift.score:.3f} against {drift.reference} is above {observed.spec.drift.threshold}: {'; '.join(drift.top)}"
            condition("Drifted", "True", "DriftAboveThreshold", message)
            if status.current_version != previous_current:
                decision.events.append(Event("Warning", "DriftDetected", message))
        else:
            condition(
                "Drifted", "False", "WithinThreshold", f"drift {drift.score:.3f} against {drift.reference}"
            )

    def ready_from_versions() -> None:
        if status.current_version:
            condition(
                "Ready",
                "True",
                "VersionAvailable",
                f"version {status.current_version} with {status.samples} samples",
            )
        else:
            condition("Ready", "False", "NoVersion", "no version has been committed yet")

    if observed.missing_sources:
        missing = ", ".join(observed.missing_sources)
        condition("Degraded", "True", "SourceMissing", f"IngestSource(s) not found: {missing}")
        condition("Progressing", "False", "SourceMissing", "waiting for the sources to exist")
        ready_from_versions()
        decision.events.append(Event("Warning", "SourceMissing", f"IngestSource(s) not found: {missing}"))
        return decision

    job = status.job
    if job is not None and job.state in ACTIVE_STATES:
        live = observed.job or JobObservation("Failed", "the job can no longer be found")
        if live.state in ACTIVE_STATES:
            job.state = live.state
            condition("Progressing", "True", "JobRunning", f"job {job.id} is {live.state.lower()}")
            ready_from_versions()
            decision.requeue_after = observed.poll_seconds
            return decision
        job.state = live.state
        job.completion_time = now
        job.message = live.message
        if live.state == "Succeeded":
            decision.events.append(Event("Normal", "JobSucceeded", f"job {job.id} succeeded"))
            condition("Degraded", "False", "JobSucceeded", live.message or f"job {job.id} succeeded")
        else:
            decision.events.append(Event("Warning", "JobFailed", f"job {job.id} failed: {live.message}"))
            kept = f"; version {status.current_version} stays current" if status.current_version else ""
            condition(
                "Degraded", "True", live.reason or "JobFailed", f"job {job.id} failed: {live.message}{kept}"
            )

    unscanned = sorted(name for name, digest in observed.source_digests.items() if not digest)
    if unscanned:  # launching before the first listing would only cause a second run right after it
        condition(
            "Progressing",
            "False",
            "WaitingForSourceScan",
            f"waiting for the first listing of {', '.join(unscanned)}",
        )
        ready_from_versions()
        decision.requeue_after = observed.poll_seconds
        return decision
    manual = observed.spec.versioning.mode == "manual"
    request = observed.commit_request if manual else ""
    serving = job is not None and bool(request) and job.commit_request == request  # retries stay its
    if manual and (not request or (serving and job is not None and job.state == "Succeeded")):
        # manual versioning: a version is built only when asked, once per value of the annotation
        served = f"the request {request!r} was served; " if request else ""
        condition("Progressing", "False", "WaitingForCommit",
                  f"versioning.mode is manual: {served}set the annotation {COMMIT_ANNOTATION} to a new "
                  "value to build a version")  # fmt: skip
        ready_from_versions()
        return decision
    if serving and job is not None:
        digest = job.inputs_digest  # a failed request is retried under its own id, whatever changed since
    else:
        digest = inputs_digest(generation, observed.source_digests, request)
    attempt = 1
    if job is not None and job.inputs_digest == digest:
        if job.state == "Succeeded" or job.attempts >= observed.max_attempts:
            condition("Progressing", "False", "UpToDate" if job.state == "Succeeded" else "GaveUp",
                      "the current inputs have been processed" if job.state == "Succeeded"
                      else f"{job.attempts} attempts failed; change the spec or the sources to try again")  # fmt: skip
            ready_from_versions()
            return decision
        retry_at = (job.completion_time or now) + timedelta(
            seconds=observed.retry_backoff_seconds * 2 ** (job.attempts - 1)
        )
        if now < retry_at:
            condition("Progressing", "False", "RetryScheduled", f"retrying at {retry_at.isoformat()}")
            ready_from_versions()
            decision.requeue_after = (retry_at - now).total_seconds()
            return decision
        attempt = job.attempts + 1
    launch = JobStatus(
        id=job_id(observed.name, digest, attempt),
        mode=observed.mode,
        state="Pending",
        start_time=now,
        inputs_digest=digest,
        attempts=attempt,
        commit_request=request,
    )
    status.job = launch
    decision.launch = launch
    decision.requeue_after = observed.poll_seconds
    decision.events.append(
        Event("Normal", "JobStarted", f"job {launch.id} started ({observed.mode}, attempt {attempt})")
    )
    condition("Progressing", "True", "JobStarted", f"job {launch.id} started")
    ready_from_versions()
    return decision


# ---- retention: the gc job ------------------------------------------------------------------------


def gc_due(
    spec: RetentionSpec, state: RetentionStatus, current_version: str | None, created: datetime, now: datetime
) -> tuple[str, datetime | None] | None:
    """(why, schedule slot) when a gc job is due: at each slot of spec.retention.schedule, else after each
    new version; never when retention has nothing to do or no version exists yet."""
    if not (spec.active() or spec.tiers or spec.schedule) or current_version is None:
        return None
    if spec.schedule:
        slot = latest_schedule_slot(spec.schedule, state.last_slot or created, now)
        return (f"schedule {spec.schedule}", slot) if slot is not None else None
    if state.last_version != current_version:
        return f"version {current_version}", None
    return None


def gc_job_id(name: str, why: str) -> str:
    """The same dataset and slot (or version) always give the same gc job: idempotent launches."""
    return f"loupe-gc-{name[:40]}-{hashlib.sha256(why.encode()).hexdigest()[:10]}"


@dataclass
class RetentionDecision:
    state: RetentionStatus
    launch: str | None = None  # the gc job id to start
    events: list[Event] = field(default_factory=list)


def reconcile_retention(
    observed: Observed,
    created: datetime,
    job: JobObservation | None = None,
    result: GcResult | None = None,
) -> RetentionDecision:
    """The next retention status: fold in a finished gc job (its GcResult), and start the next one when
    due. ``job`` is the live gc job recorded in status, ``result`` what it wrote to storage."""
    state = (observed.status.retention or RetentionStatus()).model_copy(deep=True)
    decision = RetentionDecision(state)
    if state.job_id and state.job_state in ACTIVE_STATES:
        live = job or JobObservation("Failed", "the gc job can no longer be found")
        state.job_state = live.state
        if live.state in ACTIVE_STATES:
            return decision
        if live.state == "Succeeded" and result is not None:
            state.last_gc_time, state.expired_versions = result.time, result.expired
            state.tiered, state.freed_bytes = result.tiered, result.freed_bytes
            moved = ", ".join(f"{v} to {c}" for v, c in sorted(result.tiered.items()))
            state.message = (f"expired {', '.join(result.expired) or 'none'}; freed {result.freed_bytes} bytes "
                             f"in {result.deleted} objects" + (f"; moved {moved}" if moved else "")
                             + (f"; nothing collected: {result.skipped}" if result.skipped else ""))  # fmt: skip
            decision.events.append(
                Event("Normal", "GarbageCollected", f"gc job {state.job_id}: {state.message}")
            )
        else:
            state.job_state = "Failed"
            state.message = f"gc job {state.job_id} failed: {live.message or 'it wrote no result'}"
            decision.events.append(Event("Warning", "GarbageCollectionFailed", state.message))
    run = observed.status.job
    if run is not None and run.state in ACTIVE_STATES:
        return decision  # a gc now would only wait for the run's lease; the next reconcile starts it
    current = observed.versions[-1].version if observed.versions else None
    due = gc_due(observed.spec.retention, state, current, created, observed.now)
    if due is None:
        return decision
    why, slot = due
    if slot is not None:
        state.last_slot = slot
    state.last_version = current
    state.job_id = gc_job_id(observed.name, f"{why} {slot.isoformat() if slot else ''}")
    state.job_state = "Pending"
    decision.launch = state.job_id
    decision.events.append(Event("Normal", "GcJobStarted", f"gc job {state.job_id} started ({why})"))
    return decision
