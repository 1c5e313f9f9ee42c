"""RetrainPolicies in embedded mode (``loupe run -f``): the same triggers, cooldown and promotion as the
operator, with a local ``command`` as the action. The policy's status lives in the store, next to the
dataset, so the loop can be tried without a cluster and re-run idempotently."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loupe_api import openlineage
from loupe_api.keys import model_key, result_key, retrain_status_key
from loupe_api.retrain import (
    Baseline,
    ModelRecord,
    RetrainPolicy,
    RetrainPolicyStatus,
    RetrainRun,
    TrainingResult,
)
from loupe_api.triggers import cooldown_left, evaluate, promote, run_environment
from loupe_storage.store import ObjectStore
from loupe_storage.versions import list_versions
from loupe_workers.storage import manifest
from loupe_workers.versioning.versions import utcnow

LOCAL_NAMESPACE = "local"  # embedded mode has no namespaces; keys keep the operator's layout


@dataclass(frozen=True)
class PolicyOutcome:
    policy: str
    run: RetrainRun | None
    message: str


def status_key(policy: str) -> str:
    return retrain_status_key(LOCAL_NAMESPACE, policy)


def run_policy(
    policy: RetrainPolicy,
    store: ObjectStore,
    base_dir: Path,
    *,
    endpoint: str | None = None,
    now: datetime | None = None,
) -> PolicyOutcome:
    """Evaluate one policy against the dataset's versions in ``store``; run its command if a run is due."""
    now = now or utcnow()
    name, spec = policy.metadata.name, policy.spec
    try:
        status = RetrainPolicyStatus.model_validate_json(store.get(status_key(name)))
    except KeyError:
        status = RetrainPolicyStatus(last_schedule_time=now)  # a schedule counts from the first evaluation
    versions = list_versions(store, spec.dataset_ref)
    verdict = evaluate(
        name, spec, versions, status.runs, last_trained_version=status.last_trained_version,
        last_schedule_time=status.last_schedule_time, created=now, drift_score=None, now=now,
    )  # fmt: skip
    due = verdict.due
    if due is None:
        return PolicyOutcome(name, None, verdict.waiting)
    if spec.suspend:
        return PolicyOutcome(name, None, "suspended")
    left = cooldown_left(spec, status.runs, now)
    if left > 0:
        return PolicyOutcome(name, None, f"cooling down for {left:.0f} s")
    if spec.action.command is None:
        return PolicyOutcome(
            name, None, f"run due ({due.reason}), but only command actions run in embedded mode"
        )
    run = RetrainRun(
        name=due.name, dataset_version=due.dataset_version, state="Running", start_time=now, trigger=due.reason,
        result_uri=store.uri_of(result_key(LOCAL_NAMESPACE, name, due.name)),
    )  # fmt: skip
    version = next(v for v in versions if v.version == due.dataset_version)
    files = manifest.part_files(store, version.manifest_uri)
    env = run_environment(run, name, spec.dataset_ref, version, store.uri, endpoint, files)
    job = f"loupe.retrain/{LOCAL_NAMESPACE}/{name}"
    inputs = [(store.uri, f"{spec.dataset_ref}@{run.dataset_version}")]
    openlineage.emit(job, run.name, "START", inputs, [])
    done = subprocess.run(spec.action.command, cwd=base_dir, env={**os.environ, **env}, check=False,
                          capture_output=True, text=True)  # fmt: skip
    run.completion_time = utcnow()
    try:
        result: TrainingResult | None = TrainingResult.model_validate_json(
            store.get(result_key(LOCAL_NAMESPACE, name, run.name))
        )
    except KeyError:
        result = None
    if done.returncode != 0 and (result is None or result.state == "Succeeded"):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        result = TrainingResult(state="Failed", message=f"exit code {done.returncode}: {tail[0][:300]}")
    if result is None:
        result = TrainingResult(state="Failed", message=f"the command wrote no result to {run.result_uri}")
    run.state, run.model_uri, run.metrics = result.state, result.model_uri, dict(result.metrics)
    run.message = result.message
    if run.state == "Succeeded":
        status.last_trained_version = run.dataset_version
        if run.model_uri:
            run.promoted = promote(spec.promotion, status.baseline, run.metrics)
            metric = spec.promotion.metric if spec.promotion else None
            if run.promoted:
                status.baseline = Baseline(run=run.name, model_uri=run.model_uri, dataset_version=run.dataset_version,
                                           metric=run.metrics.get(metric) if metric else None)  # fmt: skip
            record = ModelRecord(
                model_uri=run.model_uri, policy=name, run=run.name, dataset=spec.dataset_ref,
                dataset_version=run.dataset_version, manifest_uri=store.uri_of(version.manifest_uri),
                metrics=run.metrics, promoted=run.promoted, created=run.completion_time,
            )  # fmt: skip
            store.put(model_key(run.model_uri), record.model_dump_json(by_alias=True).encode())
    if due.schedule_slot is not None:
        status.last_schedule_time = due.schedule_slot
    status.runs = [run, *status.runs][: spec.history_limit]
    store.put(status_key(name), status.model_dump_json(by_alias=True, exclude_none=True).encode())
    outputs = [(run.model_uri, run.model_uri)] if run.model_uri else []
    openlineage.emit(job, run.name, "COMPLETE" if run.state == "Succeeded" else "FAIL", inputs, outputs)
    return PolicyOutcome(name, run, f"{run.state}: {run.message}" if run.message else run.state)
