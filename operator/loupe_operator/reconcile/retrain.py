"""Pure RetrainPolicy reconciliation: settle the runs in flight, then start what the triggers say is due.

Level-based like Datasets: run names are derived from the policy, the dataset version and the schedule
slot, and every decision is recomputed from status, storage and the live Jobs, so a restarted operator
neither loses a run nor starts one twice; cooldown and ``Forbid`` are judged from the runs in status.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import yaml

from loupe_api.common import SecretReference, parse_duration
from loupe_api.keys import result_key
from loupe_api.retrain import (
    Baseline,
    ModelRecord,
    RetrainPolicySpec,
    RetrainPolicyStatus,
    RetrainRun,
    TrainingResult,
)
from loupe_api.triggers import ACTIVE_RUN_STATES, cooldown_left, evaluate, promote
from loupe_api.versions import VersionRecord, absolute_uri
from loupe_operator.manifests.rayjob import Owner, secret_key_refs
from loupe_operator.reconcile.conditions import set_condition
from loupe_operator.reconcile.dataset import Event, JobObservation

SIGNATURE_HEADER = "X-Loupe-Signature-256"
WEBHOOK_BACKOFF_SECONDS = 2.0
ActionKind = Literal["job", "rayJob", "webhook", "command"]


def action_kind(spec: RetrainPolicySpec) -> ActionKind:
    action = spec.action
    if action.job is not None:
        return "job"
    if action.ray_job is not None:
        return "rayJob"
    return "webhook" if action.webhook is not None else "command"


# ---- what a run receives --------------------------------------------------------------------------


def _with_env(pod_spec: dict[str, Any], env: dict[str, str], secret: SecretReference | None) -> None:
    extra = [{"name": k, "value": v} for k, v in sorted(env.items())] + (
        secret_key_refs(secret, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        if secret
        else []  # what boto3 reads
    )
    for container in pod_spec.get("containers", []):
        names = {e["name"] for e in extra}
        container["env"] = [e for e in container.get("env", []) if e.get("name") not in names] + extra


def _metadata(run: RetrainRun, owner: Owner) -> dict[str, Any]:
    return {
        "name": run.name,
        "namespace": owner.namespace,
        "labels": {"loupe.dev/retrain-policy": owner.name, "app.kubernetes.io/managed-by": "loupe-operator"},
        "ownerReferences": [
            {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid,
             "controller": True, "blockOwnerDeletion": True}
        ],
    }  # fmt: skip


def job_manifest(
    template: dict[str, Any],
    run: RetrainRun,
    owner: Owner,
    env: dict[str, str],
    secret: SecretReference | None,
) -> dict[str, Any]:
    """A batch/v1 Job from the policy's template, with the run's environment in every container."""
    spec = copy.deepcopy(template)
    spec.setdefault("backoffLimit", 0)  # a failed training run is reported, not silently retried
    _with_env(spec.setdefault("template", {}).setdefault("spec", {}), env, secret)
    spec["template"]["spec"].setdefault("restartPolicy", "Never")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(run, owner), "spec": spec}


def rayjob_action_manifest(
    template: dict[str, Any],
    run: RetrainRun,
    owner: Owner,
    env: dict[str, str],
    secret: SecretReference | None,
) -> dict[str, Any]:
    """A ray.io/v1 RayJob from the policy's template: the run's environment in its runtime env and pods."""
    spec = copy.deepcopy(template)
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    spec["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    cluster = spec.get("rayClusterSpec") or {}
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    for group in groups:
        if "template" in group:
            _with_env(group["template"].setdefault("spec", {}), {}, secret)
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": _metadata(run, owner), "spec": spec}


def observe_job(job: dict[str, Any]) -> JobObservation:
    """Loupe's run state from a batch/v1 Job's status."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobObservation("Succeeded", condition.get("message") or "")
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "JobFailed"
            return JobObservation("Failed", condition.get("message") or reason, reason)
    return JobObservation("Running" if status.get("active") or status.get("ready") else "Pending")


def webhook_payload(run: RetrainRun, env: dict[str, str]) -> bytes:
    """The JSON body a webhook receives (the run's environment as camel-free keys; no credentials)."""
    body = {"run": run.name, "trigger": run.trigger, **{k.removeprefix("LOUPE_").lower(): v for k, v in env.items()
                                                          if k.startswith("LOUPE_")}}  # fmt: skip
    return json.dumps(body, sort_keys=True).encode()


def signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def after_delivery(run: RetrainRun, error: str | None, now: datetime, max_attempts: int) -> list[Event]:
    """Record one webhook delivery: Running on success; else retry with exponential backoff, bounded."""
    run.attempts += 1
    if error is None:
        run.state, run.next_attempt, run.message = "Running", None, "delivered; waiting for its result"
        return [Event("Normal", "RunStarted", f"run {run.name} delivered to the webhook ({run.trigger})")]
    if run.attempts >= max_attempts:
        run.state, run.completion_time, run.next_attempt = "Failed", now, None
        run.message = f"webhook delivery failed {run.attempts} times: {error}"
        return [Event("Warning", "RunFailed", f"run {run.name}: {run.message}")]
    run.next_attempt = now + timedelta(seconds=WEBHOOK_BACKOFF_SECONDS * 2 ** (run.attempts - 1))
    run.message = f"delivery {run.attempts} failed ({error}); retrying at {run.next_attempt.isoformat()}"
    return []


# ---- the decision -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyObserved:
    name: str
    namespace: str
    generation: int
    spec: RetrainPolicySpec
    status: RetrainPolicyStatus
    created: datetime
    now: datetime
    dataset: str  # namespace/name
    store_uri: str
    versions: list[VersionRecord] = field(default_factory=list)
    dataset_missing: bool = False
    drift_score: float | None = None
    live: dict[str, JobObservation | None] = field(default_factory=dict)  # active Job/RayJob runs
    results: dict[str, TrainingResult] = field(default_factory=dict)  # result records found, by run


@dataclass
class PolicyDecision:
    status: RetrainPolicyStatus
    start: list[RetrainRun] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    requeue_after: float | None = None


def _finish(
    run: RetrainRun, result: TrainingResult | None, live: JobObservation | None, now: datetime
) -> None:
    run.completion_time = now
    if result is not None:
        run.state, run.model_uri, run.metrics = result.state, result.model_uri, dict(result.metrics)
        run.message = result.message or (f"model {result.model_uri}" if result.model_uri else "finished")
    elif live is not None and live.state == "Failed":
        run.state, run.message = "Failed", live.message or "the run failed"
    else:
        run.state, run.message = "Failed", f"the run finished without writing its result to {run.result_uri}"


def _settle(observed: PolicyObserved, decision: PolicyDecision, kind: ActionKind) -> None:
    status, now = decision.status, observed.now
    timeout = timedelta(seconds=parse_duration(observed.spec.run_timeout))
    for run in status.runs:
        if run.state not in ACTIVE_RUN_STATES:
            continue
        result = observed.results.get(run.name)
        if kind in ("job", "rayJob"):
            live = observed.live.get(run.name)
            if live is None:
                live = JobObservation("Failed", "its Job can no longer be found", "JobMissing")
            if live.state in ACTIVE_RUN_STATES:
                run.state = live.state
                continue
            _finish(run, result if live.state == "Succeeded" else None, live, now)
        else:  # webhook and command: the run reports only through its result record
            if result is None:
                if run.start_time is not None and now - run.start_time > timeout:
                    run.state, run.completion_time = "Failed", now
                    run.message = f"no result at {run.result_uri} within {observed.spec.run_timeout}"
                else:
                    continue
            else:
                _finish(run, result, None, now)
        if run.state == "Succeeded":
            status.last_trained_version = run.dataset_version
            decision.events.append(
                Event("Normal", "RunSucceeded", f"run {run.name} succeeded: {run.message}")
            )
            if run.model_uri:
                run.promoted = promote(observed.spec.promotion, status.baseline, run.metrics)
                metric = observed.spec.promotion.metric if observed.spec.promotion else None
                if run.promoted:
                    status.baseline = Baseline(run=run.name, model_uri=run.model_uri,
                                               dataset_version=run.dataset_version,
                                               metric=run.metrics.get(metric) if metric else None)  # fmt: skip
                    decision.events.append(
                        Event("Normal", "ModelPromoted", f"{run.model_uri} is the new baseline")
                    )
                version = next((v for v in observed.versions if v.version == run.dataset_version), None)
                decision.models.append(
                    ModelRecord(
                        model_uri=run.model_uri, policy=f"{observed.namespace}/{observed.name}", run=run.name,
                        dataset=observed.dataset, dataset_version=run.dataset_version,
                        manifest_uri=absolute_uri(observed.store_uri, version.manifest_uri) if version else "",
                        metrics=run.metrics, promoted=run.promoted, created=now,
                    )
                )  # fmt: skip
        else:
            decision.events.append(Event("Warning", "RunFailed", f"run {run.name} failed: {run.message}"))


def reconcile_policy(observed: PolicyObserved) -> PolicyDecision:
    now, generation, spec = observed.now, observed.generation, observed.spec
    status = observed.status.model_copy(deep=True)
    status.observed_generation = generation
    decision = PolicyDecision(status=status)
    kind = action_kind(spec)

    def condition(type_: str, value: Literal["True", "False"], reason: str, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, type_, value, reason, message, now=now, generation=generation
        )

    _settle(observed, decision, kind)
    finished = [r for r in status.runs if r.state in ("Succeeded", "Failed")]
    if finished and finished[0].state == "Failed":
        condition("Degraded", "True", "RunFailed", f"run {finished[0].name} failed: {finished[0].message}")
    else:
        condition(
            "Degraded",
            "False",
            "RunsHealthy",
            "the latest finished run succeeded" if finished else "no run has finished",
        )

    active = [r for r in status.runs if r.state in ACTIVE_RUN_STATES]
    if observed.dataset_missing:
        condition("Ready", "False", "DatasetMissing", f"Dataset {observed.dataset} not found")
        condition("Degraded", "True", "DatasetMissing", f"Dataset {observed.dataset} not found")
        return decision
    baseline = f"; baseline {status.baseline.model_uri}" if status.baseline else ""
    condition("Ready", "True", "Watching", f"watching {observed.dataset}{baseline}")
    verdict = evaluate(
        observed.name, spec, observed.versions, status.runs,
        last_trained_version=status.last_trained_version, last_schedule_time=status.last_schedule_time,
        created=observed.created, drift_score=observed.drift_score, now=now,
    )  # fmt: skip
    due, waiting = verdict.due, verdict.waiting
    blocked = ""
    if due is not None:
        left = cooldown_left(spec, status.runs, now)
        if spec.suspend:
            blocked = "suspended"
        elif any(r.name == due.name for r in status.runs):
            blocked = f"run {due.name} exists"
        elif left > 0:
            blocked = f"cooling down for {left:.0f} s"
            decision.requeue_after = left
        elif active and spec.concurrency_policy == "Forbid":
            blocked = f"run {active[0].name} is still active (concurrencyPolicy Forbid)"
    if blocked:
        due, waiting = None, blocked
    if due is not None and active and spec.concurrency_policy == "Replace":
        for run in active:
            run.state, run.completion_time, run.message = "Stopped", now, f"replaced by {due.name}"
            decision.stop.append(run.name)
            decision.events.append(Event("Normal", "RunReplaced", f"run {run.name} replaced by {due.name}"))
    if due is not None:
        run = RetrainRun(
            name=due.name, dataset_version=due.dataset_version, state="Pending", start_time=now,
            trigger=due.reason, result_uri=absolute_uri(observed.store_uri, result_key(observed.namespace, observed.name, due.name)),
        )  # fmt: skip
        if due.schedule_slot is not None:
            status.last_schedule_time = due.schedule_slot
        status.runs.insert(0, run)
        decision.start.append(run)
        if kind != "webhook":  # a webhook run starts when its delivery succeeds
            decision.events.append(
                Event("Normal", "RunStarted", f"run {run.name} on {due.dataset_version}: {due.reason}")
            )
    status.runs = status.runs[: spec.history_limit]
    running = [r for r in status.runs if r.state in ACTIVE_RUN_STATES]
    if running:
        held = (
            f"; next run held back: {waiting}" if waiting and due is None and verdict.due is not None else ""
        )
        condition(
            "Progressing", "True", "RunActive", f"run {running[0].name} is {running[0].state.lower()}{held}"
        )
    else:
        condition("Progressing", "False", "Idle", waiting or "no run is due")
    return decision
