"""The RayJob a Dataset run becomes (pure), and Loupe's reading of KubeRay's status."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from loupe_api.common import credential_env_names
from loupe_api.dataset import DatasetSpec, PodResources, RaySpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import PAYLOAD_ENV, RunRequest
from loupe_operator.manifests.rayjob import KubeRayDefaults, Owner, observe_rayjob, rayjob_manifest

OWNER = Owner("loupe.dev/v1alpha1", "Dataset", "defects", "0b5e2c9e-7d1f-4a51-9d7a-3f0c2b1a9e11", "vision")
DEFAULTS = KubeRayDefaults(image="registry.example/loupe-worker:0.1.0", ray_version="2.60.0")


def _request(ray: dict[str, Any] | None = None) -> RunRequest:
    return RunRequest(
        dataset="vision/defects",
        spec=DatasetSpec.model_validate(
            {
                "sources": [{"name": "cams"}],
                "storage": {"uri": "s3://store/loupe", "credentialsSecretRef": {"name": "store-keys"}},
                "ray": ray or {},
            }
        ),
        sources={
            "cams": IngestSourceSpec.model_validate(
                {
                    "s3": {
                        "bucket": "raw",
                        "credentialsSecretRef": {"name": "raw-keys", "accessKeyIdKey": "id"},
                    }
                }
            )
        },
        store_uri="s3://store/loupe",
        run_id="loupe-defects-0123456789-1",
    )


def test_rayjob_owns_nothing_secret_and_carries_the_payload() -> None:
    manifest = rayjob_manifest("loupe-defects-0123456789-1", _request(), OWNER, DEFAULTS)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    meta = manifest["metadata"]
    assert meta["name"] == "loupe-defects-0123456789-1" and meta["namespace"] == "vision"
    (owner,) = meta["ownerReferences"]
    assert owner["uid"] == OWNER.uid and owner["kind"] == "Dataset" and owner["controller"] is True
    spec = manifest["spec"]
    assert spec["entrypoint"] == f"python -m loupe_workers run-job env:{PAYLOAD_ENV}"
    assert spec["activeDeadlineSeconds"] == 3600 and spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 600
    # the payload round-trips through the runtime environment, unchanged
    env_vars = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert RunRequest.model_validate_json(env_vars[PAYLOAD_ENV]) == _request()
    # every Secret reaches every pod by reference, under the names the workers read
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["image"] == DEFAULTS.image
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        store_id, store_secret = credential_env_names("store-keys")
        raw_id, raw_secret = credential_env_names("raw-keys")
        assert refs[store_id] == {"name": "store-keys", "key": "AWS_ACCESS_KEY_ID"}
        assert refs[store_secret] == {"name": "store-keys", "key": "AWS_SECRET_ACCESS_KEY"}
        assert refs[raw_id] == {"name": "raw-keys", "key": "id"}
        assert raw_secret in refs
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert all(set(e) == {"name", "valueFrom"} for e in container["env"])  # never a literal value


def test_spec_overrides_defaults_and_gpus_are_requested() -> None:
    ray = {
        "image": "registry.example/loupe-worker:0.1.0-gpu",
        "workers": 3,
        "worker": {"cpu": "8", "memory": "32Gi", "gpu": 1},
        "activeDeadlineSeconds": 900,
        "serviceAccountName": "ray-workers",
    }
    spec = rayjob_manifest("j", _request(ray), OWNER, DEFAULTS)["spec"]
    assert spec["activeDeadlineSeconds"] == 900
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    pod = group["template"]["spec"]
    assert pod["serviceAccountName"] == "ray-workers"
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1}
    assert resources["requests"] == resources["limits"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"].endswith("-gpu") and "nvidia.com/gpu" not in head["resources"]["limits"]
    # no workers: a head-only cluster
    solo = rayjob_manifest("j", _request({"workers": 0}), OWNER, DEFAULTS)["spec"]["rayClusterSpec"]
    assert "workerGroupSpecs" not in solo


def test_cluster_selector_runs_on_an_existing_cluster() -> None:
    spec = rayjob_manifest("j", _request({"clusterSelector": {"ray.io/cluster": "shared"}}), OWNER, DEFAULTS)[
        "spec"
    ]
    assert spec["clusterSelector"] == {"ray.io/cluster": "shared"}
    assert "rayClusterSpec" not in spec and "shutdownAfterJobFinishes" not in spec
    # an operator-wide selector applies to Datasets that name none
    defaults = KubeRayDefaults(image="i", ray_version="2.60.0", cluster_selector={"ray.io/cluster": "pool"})
    assert rayjob_manifest("j", _request(), OWNER, defaults)["spec"]["clusterSelector"] == {
        "ray.io/cluster": "pool"
    }


@pytest.mark.parametrize(
    "ray, words",
    [
        ({"clusterSelector": {"ray.io/cluster": "shared"}, "workers": 2}, "clusterSelector"),
        ({"mode": "kuberay", "address": "http://head:8265"}, "address"),
        ({"worker": {"cpu": "lots"}}, "cpu"),
    ],
)
def test_contradictory_ray_specs_are_refused(ray: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        RaySpec.model_validate(ray)


@pytest.mark.parametrize(
    "status, expected",
    [
        ({}, ("Pending", "")),
        ({"jobDeploymentStatus": "Initializing"}, ("Pending", "")),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, ("Running", "")),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, ("Succeeded", "")),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, ("Failed", "JobFailed")),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "past 600 s"},
            ("Failed", "DeadlineExceeded"),
        ),
        ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED"}, ("Failed", "JobFailed")),
    ],
)
def test_kuberay_status_maps_to_loupe_states(status: dict[str, Any], expected: tuple[str, str]) -> None:
    seen = observe_rayjob({"status": status})
    assert (seen.state, seen.reason) == expected
    if seen.state == "Failed":
        assert seen.message  # a failure always says something


def test_pod_resources_default_to_a_small_cpu_pod() -> None:
    assert PodResources().model_dump() == {"cpu": "2", "memory": "4Gi", "gpu": 0}
