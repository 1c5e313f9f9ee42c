"""KubeRay: the ``ray.io/v1`` RayJob a Dataset run becomes, and what its status means. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from loupe_api.common import SecretReference, credential_env_names
from loupe_api.dataset import PodResources, RaySpec
from loupe_api.jobs import ENTRYPOINT, PAYLOAD_ENV, RunRequest
from loupe_operator.reconcile.dataset import JobObservation

RAY_GROUP, RAY_VERSION, RAYJOBS = "ray.io", "v1", "rayjobs"
DATASET_LABEL = "loupe.dev/dataset"

# KubeRay's RayJob has no conditions: jobDeploymentStatus is the lifecycle, Complete and Failed are final.
_ACTIVE = {"": "Pending", "New": "Pending", "Initializing": "Pending", "Waiting": "Pending",
           "Retrying": "Pending", "Suspending": "Pending", "Suspended": "Pending", "Running": "Running"}  # fmt: skip


@dataclass(frozen=True)
class Owner:
    """The resource a job belongs to: it owns the RayJob, so deleting it collects the RayJob too."""

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str


@dataclass(frozen=True)
class KubeRayDefaults:
    """The operator's defaults for what a Dataset's ``spec.ray`` leaves empty."""

    image: str
    ray_version: str
    workers: int = 1
    head: PodResources = field(default_factory=PodResources)
    worker: PodResources = field(default_factory=PodResources)
    cluster_selector: dict[str, str] = field(default_factory=dict)
    service_account_name: str | None = None
    active_deadline_seconds: int = 3600
    ttl_seconds_after_finished: int = 600


def _resources(resources: PodResources) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpu:
        amounts["nvidia.com/gpu"] = resources.gpu
    return {"requests": dict(amounts), "limits": dict(amounts)}


def secret_key_refs(ref: SecretReference, key_id_variable: str, secret_variable: str) -> list[dict[str, Any]]:
    """A Secret's two S3 keys as pod env entries by ``secretKeyRef``: the pod spec names the Secret, never the keys."""
    pairs = ((key_id_variable, ref.access_key_id_key), (secret_variable, ref.secret_access_key_key))
    return [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}} for var, key in pairs
    ]


def secret_env(secrets: dict[str, SecretReference]) -> list[dict[str, Any]]:
    """Every Secret a job needs, under the per-Secret names the workers read (``credential_env_names``)."""
    return [
        entry
        for name, ref in sorted(secrets.items())
        for entry in secret_key_refs(ref, *credential_env_names(name))
    ]


def _pod_template(
    container: str, image: str, resources: PodResources, env: list[dict[str, Any]], account: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": container,
                "image": image,
                "resources": _resources(resources),
                "env": env,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if account:
        spec["serviceAccountName"] = account
    return {"metadata": {"labels": {"app.kubernetes.io/part-of": "loupe"}}, "spec": spec}


def rayjob_manifest(
    job_id: str, request: RunRequest, owner: Owner, defaults: KubeRayDefaults
) -> dict[str, Any]:
    """The RayJob for one run: a throwaway RayCluster (or ``clusterSelector``), payload in the job's
    runtime environment, credentials by reference, a deadline, and clean-up when it finishes."""
    ray: RaySpec = request.spec.ray
    payload = request.model_dump_json(by_alias=True, exclude_none=True)
    runtime_env = {"env_vars": {PAYLOAD_ENV: payload, "LOUPE_EXECUTOR": "ray"}}
    spec: dict[str, Any] = {
        "entrypoint": ENTRYPOINT,
        "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True, width=1 << 20),
        "activeDeadlineSeconds": ray.active_deadline_seconds or defaults.active_deadline_seconds,
        "backoffLimit": 0,  # retries are the operator's: bounded, with backoff, visible in status
    }
    selector = ray.cluster_selector or defaults.cluster_selector
    if selector:
        # An existing RayCluster: it must already hold storage credentials (env or workload identity).
        spec["clusterSelector"] = dict(selector)
    else:
        image = ray.image or defaults.image
        account = ray.service_account_name or defaults.service_account_name
        env = secret_env(request.secrets())
        workers = defaults.workers if ray.workers is None else ray.workers
        worker = ray.worker or defaults.worker
        cluster: dict[str, Any] = {
            "rayVersion": defaults.ray_version,
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0"},
                "template": _pod_template("ray-head", image, ray.head or defaults.head, env, account),
            },
        }
        if workers:
            cluster["workerGroupSpecs"] = [
                {
                    "groupName": "workers",
                    "replicas": workers,
                    "minReplicas": workers,
                    "maxReplicas": workers,
                    "rayStartParams": {},
                    "template": _pod_template("ray-worker", image, worker, env, account),
                }
            ]
        spec["rayClusterSpec"] = cluster
        spec["shutdownAfterJobFinishes"] = True
        spec["ttlSecondsAfterFinished"] = defaults.ttl_seconds_after_finished
    return {
        "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}",
        "kind": "RayJob",
        "metadata": {
            "name": job_id,
            "namespace": owner.namespace,
            "labels": {
                DATASET_LABEL: owner.name,
                "app.kubernetes.io/managed-by": "loupe-operator",
                "app.kubernetes.io/part-of": "loupe",
            },
            "ownerReferences": [
                {
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def observe_rayjob(rayjob: dict[str, Any]) -> JobObservation:
    """Loupe's job state from a RayJob's status, as the KubeRay controller writes it."""
    status: dict[str, Any] = rayjob.get("status") or {}
    deployment = str(status.get("jobDeploymentStatus") or "")
    message = str(status.get("message") or "")
    reason = str(status.get("reason") or "")
    if deployment == "Complete":
        job_status = str(status.get("jobStatus") or "")
        if job_status == "SUCCEEDED":
            return JobObservation("Succeeded", message)
        return JobObservation("Failed", message or f"the Ray job ended {job_status or 'without a status'}",
                              reason or "JobFailed")  # fmt: skip
    if deployment == "Failed":
        detail = message or "the RayJob failed"
        return JobObservation("Failed", f"{reason}: {detail}" if reason else detail, reason or "JobFailed")
    state = _ACTIVE.get(deployment, "Running")
    return JobObservation(state, message)  # type: ignore[arg-type]
