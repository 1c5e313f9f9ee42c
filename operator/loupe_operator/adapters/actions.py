"""Starting, observing and stopping RetrainPolicy runs: batch/v1 Jobs, RayJobs and webhook deliveries."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from loupe_operator.manifests.rayjob import RAY_GROUP, RAY_VERSION, RAYJOBS, observe_rayjob
from loupe_operator.reconcile.dataset import JobObservation
from loupe_operator.reconcile.retrain import SIGNATURE_HEADER, ActionKind, observe_job, signature

WEBHOOK_TIMEOUT_SECONDS = 10.0


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404


def create(kind: ActionKind, manifest: dict[str, Any]) -> None:
    """Create the run's Job or RayJob; one that exists already (an operator restart) is adopted."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    namespace = manifest["metadata"]["namespace"]
    try:
        if kind == "job":
            client.BatchV1Api().create_namespaced_job(namespace, manifest)
        else:
            client.CustomObjectsApi().create_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAYJOBS, manifest
            )
    except ApiException as exc:
        if exc.status != 409:
            raise


def observe(kind: ActionKind, namespace: str, name: str) -> JobObservation | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        if kind == "job":
            job = client.BatchV1Api().read_namespaced_job(name, namespace)
            return observe_job(client.ApiClient().sanitize_for_serialization(job))
        rayjob = client.CustomObjectsApi().get_namespaced_custom_object(
            RAY_GROUP, RAY_VERSION, namespace, RAYJOBS, name
        )
        return observe_rayjob(rayjob)
    except ApiException as exc:
        if _not_found(exc):
            return None
        raise


def stop(kind: ActionKind, namespace: str, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        if kind == "job":
            client.BatchV1Api().delete_namespaced_job(name, namespace, propagation_policy="Background")
        elif kind == "rayJob":
            client.CustomObjectsApi().delete_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAYJOBS, name
            )
    except ApiException as exc:
        if not _not_found(exc):
            raise


def deliver(url: str, body: bytes, key: bytes | None) -> str | None:
    """POST the payload (signed when there is a key); None on a 2xx answer, else what went wrong."""
    headers = {"Content-Type": "application/json", "User-Agent": "loupe-operator"}
    if key:
        headers[SIGNATURE_HEADER] = signature(key, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
