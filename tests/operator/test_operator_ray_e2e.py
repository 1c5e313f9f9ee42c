"""The operator launching real Ray jobs: submit mode on a local Ray cluster, and kuberay mode with this
test playing the KubeRay controller (no kubelet can run pods here): it runs the RayJob's entrypoint on the
local Ray cluster, with the Secrets its pods reference, and writes the RayJob status as KubeRay would."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from skimage import data as skdata

from loupe_api.retry import retry_transient
from loupe_workers.ingest.demo import DemoFile
from support.operator_process import E2E_NAMESPACE as NAMESPACE
from support.operator_process import condition, get_object, start_operator, stop_operator, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.ray, pytest.mark.s3]


def _apply(cluster: Any, tmp_path: Path, *objects: dict[str, Any]) -> None:
    manifest = tmp_path / f"apply-{time.monotonic_ns()}.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))
    cluster.kubectl("apply", "-f", str(manifest), check=True)


def _secret(name: str, minio: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key},
    }


def _dataset(name: str, source: str, minio: Any, bucket: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "sources": [{"name": source}],
            "storage": {
                "uri": f"s3://{bucket}/loupe",
                "endpoint": minio.endpoint,
                "credentialsSecretRef": {"name": "minio-keys"},
            },
            **spec,
        },
    }


def _status(cluster: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get_object(cluster, "dataset", name).get("status") or {}
    return found


def _ready_version(cluster: Any, name: str) -> str | None:
    """The current version once Ready and no job is running (a version is visible just before its job ends)."""
    obj = get_object(cluster, "dataset", name)
    job_state = ((obj.get("status") or {}).get("job") or {}).get("state")
    if condition(obj, "Ready").get("status") != "True" or job_state in ("Pending", "Running"):
        return None
    version: str | None = (obj.get("status") or {}).get("currentVersion")
    return version


def _version_files(minio: Any, bucket: str, name: str) -> list[str]:
    listed = minio.client().list_objects_v2(
        Bucket=bucket, Prefix=f"loupe/datasets/{NAMESPACE}/{name}/versions/"
    )
    return sorted(o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", []))


def _jpeg(array: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_submit_mode_versions_from_s3_sources(
    cluster: Any,
    corpus: tuple[Path, list[DemoFile]],
    tmp_path: Path,
    minio: Any,
    ray_cluster: str,
    operator_log: Path,
) -> None:
    images, _ = corpus
    s3 = minio.client()
    minio.make_bucket("submit-raw")
    minio.make_bucket("submit-store")
    for path in sorted(images.rglob("*")):
        if path.is_file():
            s3.put_object(
                Bucket="submit-raw", Key=f"line-a/{path.relative_to(images)}", Body=path.read_bytes()
            )
    source = {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "IngestSource",
        "metadata": {"name": "bucket-cams", "namespace": NAMESPACE},
        "spec": {
            "s3": {
                "endpoint": minio.endpoint,
                "bucket": "submit-raw",
                "prefix": "line-a/",
                "credentialsSecretRef": {"name": "minio-keys"},
            },
            "labels": {"format": "folder"},
        },
    }
    operator = start_operator(
        cluster.kubeconfig_path, tmp_path, operator_log.name, [NAMESPACE],
        LOUPE_RAY_MODE="submit", LOUPE_RAY_ADDRESS=ray_cluster,
    )  # fmt: skip
    started = time.monotonic()
    try:
        _apply(cluster, tmp_path, _secret("minio-keys", minio), source,
               _dataset("from-bucket", "bucket-cams", minio, "submit-store"))  # fmt: skip
        assert wait_for("from-bucket@1.0.0", lambda: _ready_version(cluster, "from-bucket")) == "1.0.0"
        first_version_s = time.monotonic() - started
        status = _status(cluster, "from-bucket")
        assert status["job"]["mode"] == "submit" and status["job"]["state"] == "Succeeded"
        manifest_uri = status["versions"][0]["manifestUri"]
        assert manifest_uri.startswith("s3://submit-store/loupe/")
        head = s3.head_object(Bucket="submit-store", Key=manifest_uri.removeprefix("s3://submit-store/"))
        assert head["ContentLength"] > 0
        assert status["samples"] > 10 and status["stats"]["scanned"] >= 30

        # new objects in the bucket: the source notices, a MINOR version follows
        s3.put_object(Bucket="submit-raw", Key="line-a/animals/cat-upside-down.jpg",
                      Body=_jpeg(skdata.chelsea()[:200]))  # fmt: skip
        assert wait_for("from-bucket@1.1.0", lambda: _ready_version(cluster, "from-bucket") == "1.1.0")
        assert _status(cluster, "from-bucket")["samples"] == status["samples"] + 1

        # a spec change that removes samples (a PNG named .jpg is now rejected, not flagged): MAJOR
        cluster.kubectl("patch", "dataset", "from-bucket", "-n", NAMESPACE, "--type=merge", "-p",
                        json.dumps({"spec": {"qualityGates": {"extension": {"action": "reject"}}}}), check=True)  # fmt: skip
        assert wait_for("from-bucket@2.0.0", lambda: _ready_version(cluster, "from-bucket") == "2.0.0")
        status = _status(cluster, "from-bucket")
        assert status["observedGeneration"] == 2 and status["stats"]["rejected"].get("extension", 0) >= 1
        assert _version_files(minio, "submit-store", "from-bucket") == [
            "1.0.0.json",
            "1.1.0.json",
            "2.0.0.json",
        ]
        table = cluster.kubectl("get", "datasets", "-n", NAMESPACE).stdout
        row = next(line for line in table.splitlines() if line.startswith("from-bucket"))
        assert "2.0.0" in row and str(status["samples"]) in row and "True" in row
        print(f"submit mode: apply -> 1.0.0 in {first_version_s:.1f} s")
    finally:
        stop_operator(operator)
    # structured logs: every line is JSON, and those about a resource name it
    lines = [json.loads(line) for line in operator_log.read_text().splitlines() if line.strip()]
    about = [line for line in lines if line.get("object", {}).get("name") == "from-bucket"]
    assert about and all(
        line["object"]["namespace"] == NAMESPACE and line["object"]["kind"] == "Dataset" for line in about
    )
    assert any("status changed" in line["message"] for line in about)
    # routine polls stay quiet (a warning about a timer cut short at shutdown is not routine, and may appear)
    assert not any(
        line["message"].startswith("Timer ") and line["message"].endswith(" succeeded.") for line in lines
    )
    assert minio.secret_key not in operator_log.read_text()


# --- kuberay: this test is the KubeRay controller --------------------------------------------------


def _rayjobs(cluster: Any, dataset: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "rayjobs", "-n", NAMESPACE, "-l", f"loupe.dev/dataset={dataset}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"] if out.returncode == 0 else []
    return items


def _patch_rayjob_status(cluster: Any, name: str, status: dict[str, Any]) -> None:
    cluster.patch_status("rayjob", name, NAMESPACE, status)


def _pod_env(cluster: Any, rayjob: dict[str, Any]) -> dict[str, str]:
    """What the kubelet would put in the head pod's environment: secretKeyRefs resolved."""
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for entry in head.get("env", []):
        ref = entry["valueFrom"]["secretKeyRef"]
        secret = get_object(cluster, "secret", ref["name"])
        env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def _run_rayjob(cluster: Any, rayjob: dict[str, Any], ray_address: str) -> None:
    """KubeRay's part: start the job on a Ray cluster, follow it, and write the RayJob's status."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    name = rayjob["metadata"]["name"]
    _patch_rayjob_status(cluster, name, {"jobDeploymentStatus": "Initializing"})
    env_vars = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    client = JobSubmissionClient(ray_address)
    submission = retry_transient(  # KubeRay retries a busy head the same way
        lambda: client.submit_job(
            entrypoint=rayjob["spec"]["entrypoint"],
            submission_id=f"{name}-{time.monotonic_ns()}",
            runtime_env={"env_vars": {**env_vars, **_pod_env(cluster, rayjob)}},
        ),
        "submit the RayJob's job",
    )
    _patch_rayjob_status(
        cluster, name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": submission}
    )
    final = wait_for("the Ray job", lambda: client.get_job_status(submission) in
                     (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and client.get_job_status(submission),
                     timeout=300)  # fmt: skip
    if final != JobStatus.SUCCEEDED:
        print(client.get_job_logs(submission)[-3000:])
    _patch_rayjob_status(cluster, name, {"jobDeploymentStatus": "Complete", "jobStatus": str(final.value)})


def test_kuberay_mode_rayjob_lifecycle(
    cluster: Any,
    corpus: tuple[Path, list[DemoFile]],
    tmp_path: Path,
    minio: Any,
    ray_cluster: str,
    operator_log: Path,
) -> None:
    images, _ = corpus
    minio.make_bucket("kuberay-store")
    source = {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "IngestSource",
        "metadata": {"name": "mounted-cams", "namespace": NAMESPACE},
        "spec": {"filesystem": {"path": str(images)}},
    }
    operator = start_operator(
        cluster.kubeconfig_path, tmp_path, operator_log.name, [NAMESPACE],
        LOUPE_RAY_MODE="kuberay", LOUPE_WORKER_IMAGE="registry.example/loupe-worker:0.1.0",
        LOUPE_JOB_DEADLINE_SECONDS="600", LOUPE_MAX_ATTEMPTS="1",
        LOUPE_WORKER_RESOURCES='{"cpu": "4", "memory": "8Gi", "gpu": 1}',
        # the operator's default storage and its Secret: the Datasets below name no storage
        LOUPE_DEFAULT_STORE="s3://kuberay-store/loupe", LOUPE_STORE_ENDPOINT=minio.endpoint,
        LOUPE_STORE_CREDENTIALS_SECRET="minio-keys",
    )  # fmt: skip
    try:
        dataset = _dataset("on-kuberay", "mounted-cams", minio, "kuberay-store")
        del dataset["spec"]["storage"]
        _apply(cluster, tmp_path, _secret("minio-keys", minio), source, dataset)
        (rayjob,) = wait_for("a RayJob", lambda: _rayjobs(cluster, "on-kuberay"), timeout=60)
        # what the real RayJob CRD accepted: owned by the Dataset, bounded, cleaned up, GPUs requested
        owner = get_object(cluster, "dataset", "on-kuberay")["metadata"]["uid"]
        assert rayjob["metadata"]["ownerReferences"][0]["uid"] == owner
        spec = rayjob["spec"]
        assert spec["activeDeadlineSeconds"] == 600 and spec["shutdownAfterJobFinishes"] is True
        worker = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        assert worker["image"] == "registry.example/loupe-worker:0.1.0"
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert minio.secret_key not in json.dumps(rayjob)  # credentials only by secretKeyRef
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in worker["env"]}
        assert refs == {"minio-keys"}
        assert _status(cluster, "on-kuberay")["job"]["id"] == rayjob["metadata"]["name"]

        _run_rayjob(cluster, rayjob, ray_cluster)
        assert wait_for("on-kuberay@1.0.0", lambda: _ready_version(cluster, "on-kuberay")) == "1.0.0"
        assert _status(cluster, "on-kuberay")["job"]["state"] == "Succeeded"
        assert _version_files(minio, "kuberay-store", "on-kuberay") == ["1.0.0.json"]

        # a new object: a second RayJob, which runs past its deadline
        Image.fromarray(skdata.astronaut()[:340]).save(images / "people" / "mirrored.jpg", quality=90)
        second = wait_for("a second RayJob", lambda: [j for j in _rayjobs(cluster, "on-kuberay")
                                                        if j["metadata"]["name"] != rayjob["metadata"]["name"]])[0]  # fmt: skip
        _patch_rayjob_status(cluster, second["metadata"]["name"], {"jobDeploymentStatus": "Running"})
        _patch_rayjob_status(cluster, second["metadata"]["name"], {
            "jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded",
            "message": "The RayJob has passed the activeDeadlineSeconds. DeletionTimestamp is set to now.",
        })  # fmt: skip
        degraded = wait_for("Degraded", lambda: condition(get_object(cluster, "dataset", "on-kuberay"), "Degraded")
                            .get("status") == "True" and condition(get_object(cluster, "dataset", "on-kuberay"), "Degraded"))  # fmt: skip
        assert degraded["reason"] == "DeadlineExceeded" and "activeDeadlineSeconds" in degraded["message"]
        status = _status(cluster, "on-kuberay")
        assert status["currentVersion"] == "1.0.0" and status["job"]["state"] == "Failed"
        assert _version_files(minio, "kuberay-store", "on-kuberay") == [
            "1.0.0.json"
        ]  # previous version intact

        # deleting a Dataset mid-run deletes its RayJob (no garbage collector runs here: the finalizer did it)
        short_lived = _dataset("short-lived", "mounted-cams", minio, "kuberay-store")
        del short_lived["spec"]["storage"]
        _apply(cluster, tmp_path, short_lived)
        (doomed,) = wait_for("a RayJob", lambda: _rayjobs(cluster, "short-lived"), timeout=60)
        cluster.kubectl("delete", "dataset", "short-lived", "-n", NAMESPACE, "--timeout=60s", check=True)
        gone = cluster.kubectl("get", "rayjob", doomed["metadata"]["name"], "-n", NAMESPACE)
        assert gone.returncode != 0 and "NotFound" in gone.stderr

        events = json.loads(cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        mine = [e for e in events if e["involvedObject"]["name"] == "on-kuberay"]
        assert {"JobStarted", "JobSucceeded", "VersionCreated", "JobFailed"} <= {e["reason"] for e in mine}
        assert all(minio.secret_key not in json.dumps(e) for e in events)
    finally:
        stop_operator(operator)
    assert minio.secret_key not in operator_log.read_text()
