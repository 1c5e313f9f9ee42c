"""The operator on a real kube-apiserver and etcd: apply specs, get versions in status."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from skimage import data as skdata

from loupe_workers.ingest.demo import DemoFile
from support.chart import argocd_health
from support.operator_process import E2E_NAMESPACE as NAMESPACE
from support.operator_process import condition as condition_of
from support.operator_process import dataset_spec, get_object, source_spec, start_operator, wait_for
from support.processes import free_port

REPO = Path(__file__).resolve().parents[2]


def _operator(cluster: Any, tmp_path: Path, log_name: str, **settings: str) -> subprocess.Popen[bytes]:
    return start_operator(cluster.kubeconfig_path, tmp_path, log_name, [NAMESPACE], **settings)


def get(cluster: Any, kind: str, name: str) -> dict[str, Any]:
    return get_object(cluster, kind, name, NAMESPACE)


def test_local_mode_versions_in_status(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    images, _ = corpus
    liveness, metrics_port = free_port(), free_port()
    operator = _operator(
        cluster,
        tmp_path,
        "operator.log",
        LOUPE_LIVENESS_PORT=str(liveness),
        LOUPE_METRICS_PORT=str(metrics_port),
    )
    try:
        source = source_spec("line-a-cameras", images, labels={"format": "folder"})
        dataset = dataset_spec("defects", "line-a-cameras")
        manifest = tmp_path / "specs.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [source, dataset]}))
        cluster.kubectl("apply", "-f", str(manifest), check=True)

        def ready_version() -> str | None:
            status = get(cluster, "dataset", "defects").get("status") or {}
            ready = [
                c for c in status.get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"
            ]
            return status.get("currentVersion") if ready else None

        assert wait_for("version 1.0.0", ready_version) == "1.0.0"
        status = get(cluster, "dataset", "defects")["status"]
        assert status["observedGeneration"] == 1 and status["samples"] > 10
        assert status["versions"][0]["version"] == "1.0.0"
        assert (tmp_path / "store" / "datasets" / NAMESPACE / "defects" / "versions" / "1.0.0.json").is_file()
        table = cluster.kubectl("get", "datasets", "-n", NAMESPACE).stdout
        assert "VERSION" in table and "1.0.0" in table and "True" in table
        source_status = get(cluster, "ingestsource", "line-a-cameras")["status"]
        assert source_status["lastScan"]["objects"] >= 30

        # new objects: the source notices, the dataset gets a MINOR version
        Image.fromarray(skdata.chelsea()[:200]).save(images / "animals" / "upside-down.jpg", quality=90)
        assert wait_for("version 1.1.0", lambda: ready_version() == "1.1.0")
        events = cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
        reasons = {e["reason"] for e in json.loads(events)["items"]}
        assert {"JobStarted", "JobSucceeded", "VersionCreated"} <= reasons

        # a failing run leaves the previous version current and says why
        cluster.kubectl("patch", "dataset", "defects", "-n", NAMESPACE, "--type=merge",
                        "-p", json.dumps({"spec": {"storage": {"uri": "s3://"}}}))  # fmt: skip

        def degraded() -> dict[str, Any] | None:
            status = get(cluster, "dataset", "defects").get("status") or {}
            found = [
                c for c in status.get("conditions", []) if c["type"] == "Degraded" and c["status"] == "True"
            ]
            return found[0] if found else None

        condition = wait_for("Degraded", degraded)
        assert condition["message"]
        assert get(cluster, "dataset", "defects")["status"]["currentVersion"] == "1.1.0"

        health = urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=5)
        assert health.status == 200
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        )
        assert "loupe_versions_created_total 2.0" in scraped
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        print((tmp_path / "operator.log").read_text()[-5000:])


def test_operator_killed_mid_run_adopts_its_job(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    images, _ = corpus
    specs = [source_spec("restart-source", images), dataset_spec("restart", "restart-source")]
    first = _operator(cluster, tmp_path, "operator-1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        manifest = tmp_path / "restart.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": specs}))
        cluster.kubectl("apply", "-f", str(manifest), check=True)

        def job_state() -> str | None:
            job = (get(cluster, "dataset", "restart").get("status") or {}).get("job") or {}
            return job.get("state") if job.get("state") in ("Pending", "Running") else None

        wait_for("a running job", job_state, timeout=120)
        first.kill()  # no goodbye: as if the pod were evicted mid-run
        first.wait(timeout=30)
        second = _operator(cluster, tmp_path, "operator-2.log")

        def version() -> str | None:
            status = get(cluster, "dataset", "restart").get("status") or {}
            return status.get("currentVersion")

        assert wait_for("version 1.0.0 after the restart", version) == "1.0.0"
        time.sleep(3)  # a few more reconciles: nothing else may start
        versions = sorted(
            (tmp_path / "store" / "datasets" / NAMESPACE / "restart" / "versions").glob("*.json")
        )
        assert [v.name for v in versions] == ["1.0.0.json"]
        job_ids = {p.stem for p in (tmp_path / "jobs").glob("*.pid")}
        assert len(job_ids) == 1  # launched once, adopted by the second operator
        status = get(cluster, "dataset", "restart")["status"]
        assert status["job"]["id"] in job_ids and status["job"]["state"] == "Succeeded"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def test_deleting_datasets_stops_jobs_and_keeps_versions(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    images, _ = corpus
    source = source_spec("delete-source", images)

    def dataset(name: str) -> dict[str, Any]:
        return dataset_spec(name, "delete-source")

    operator = _operator(cluster, tmp_path, "operator.log")
    try:
        manifest = tmp_path / "delete.json"
        manifest.write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": [source, dataset("kept")]})
        )
        cluster.kubectl("apply", "-f", str(manifest), check=True)
        wait_for(
            "kept@1.0.0", lambda: (get(cluster, "dataset", "kept").get("status") or {}).get("currentVersion")
        )
        cluster.kubectl("delete", "dataset", "kept", "-n", NAMESPACE, "--timeout=60s", check=True)
        # committed versions are never deleted with the resource
        assert (tmp_path / "store" / "datasets" / NAMESPACE / "kept" / "versions" / "1.0.0.json").is_file()

        manifest.write_text(json.dumps(dataset("doomed")))
        cluster.kubectl("apply", "-f", str(manifest), check=True)

        def running_job() -> str | None:
            job = (get(cluster, "dataset", "doomed").get("status") or {}).get("job") or {}
            return job.get("id") if job.get("state") in ("Pending", "Running") else None

        job_id = wait_for("a running job", running_job, timeout=120)
        cluster.kubectl("delete", "dataset", "doomed", "-n", NAMESPACE, "--timeout=60s", check=True)
        gone = cluster.kubectl("get", "dataset", "doomed", "-n", NAMESPACE)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        pid = int((tmp_path / "jobs" / f"{job_id}.pid").read_text())

        def stopped() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        assert wait_for("the job process to stop", stopped, timeout=30)
        assert not (
            tmp_path / "store" / "datasets" / NAMESPACE / "doomed" / "versions" / "1.0.0.json"
        ).exists()
    finally:
        operator.terminate()
        operator.wait(timeout=30)


@pytest.mark.s3
def test_s3_storage_outage_degrades_then_recovers_without_leaking_credentials(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path, minio: Any
) -> None:
    images, _ = corpus
    minio.make_bucket("e2e-store")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "store-credentials", "namespace": NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key},
    }
    source = {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "IngestSource",
        "metadata": {"name": "s3-source", "namespace": NAMESPACE},
        "spec": {"filesystem": {"path": str(images)}},
    }
    dataset = {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "on-s3", "namespace": NAMESPACE},
        "spec": {
            "sources": [{"name": "s3-source"}],
            "storage": {
                "uri": "s3://e2e-store/loupe",
                "endpoint": minio.endpoint,
                "credentialsSecretRef": {"name": "store-credentials"},
            },
        },
    }
    operator = _operator(cluster, tmp_path, "operator.log")
    try:
        manifest = tmp_path / "s3.json"
        manifest.write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": [secret, source, dataset]})
        )
        cluster.kubectl("apply", "-f", str(manifest), check=True)

        def status() -> dict[str, Any]:
            found: dict[str, Any] = get(cluster, "dataset", "on-s3").get("status") or {}
            return found

        def condition(type_: str) -> dict[str, Any]:
            return next((c for c in status().get("conditions", []) if c["type"] == type_), {})

        assert wait_for("on-s3@1.0.0", lambda: status().get("currentVersion")) == "1.0.0"
        listed = minio.client().list_objects_v2(
            Bucket="e2e-store", Prefix=f"loupe/datasets/{NAMESPACE}/on-s3/versions/"
        )
        assert [o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])] == ["1.0.0.json"]

        minio.stop()  # S3 goes away
        Image.fromarray(skdata.coffee()[:270]).save(images / "objects" / "coffee-flipped.jpg", quality=90)
        degraded = wait_for(
            "Degraded", lambda: condition("Degraded").get("status") == "True" and condition("Degraded")
        )
        assert degraded["reason"] == "StorageUnavailable" and status()["currentVersion"] == "1.0.0"

        minio.start()  # it comes back: the operator recovers by itself
        assert wait_for("on-s3@1.1.0", lambda: status().get("currentVersion") == "1.1.0", timeout=300)
        assert wait_for("Degraded cleared", lambda: condition("Degraded").get("status") == "False")

        secret_value = minio.secret_key
        everything = [
            json.dumps(get(cluster, "dataset", "on-s3")),
            cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout,
            (tmp_path / "operator.log").read_text(),
        ]
        assert all(secret_value not in text for text in everything)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        if not minio.is_running:
            minio.start()


def test_manual_versioning_waits_for_the_commit_annotation(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    """versioning.mode: manual builds nothing until asked; a new loupe.dev/commit value asks once."""
    images, _ = corpus
    specs = [
        source_spec("manual-source", images),
        dataset_spec("manual", "manual-source", versioning={"mode": "manual"}),
    ]
    manifest = tmp_path / "manual.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": specs}))
    operator = _operator(cluster, tmp_path, "operator.log")
    try:
        cluster.kubectl("apply", "-f", str(manifest), check=True)

        def progressing(reason: str) -> dict[str, Any] | None:
            status = get(cluster, "dataset", "manual").get("status") or {}
            found = [c for c in status.get("conditions", []) if c["type"] == "Progressing"]
            return status if found and found[0]["reason"] == reason else None

        waiting = wait_for("WaitingForCommit", lambda: progressing("WaitingForCommit"))
        assert not waiting.get("currentVersion") and not waiting.get("job")
        health, message = argocd_health("Dataset", get(cluster, "dataset", "manual"))
        assert health == "Suspended" and "loupe.dev/commit" in message, (health, message)
        cluster.kubectl(
            "annotate", "dataset", "manual", "-n", NAMESPACE, "loupe.dev/commit=first", check=True
        )
        status = wait_for(
            "version 1.0.0", lambda: (s := progressing("WaitingForCommit")) and s.get("currentVersion") and s
        )
        assert status["currentVersion"] == "1.0.0" and status["job"]["commitRequest"] == "first"
        assert "'first' was served" in condition_of({"status": status}, "Progressing")["message"]
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        print((tmp_path / "operator.log").read_text()[-5000:])
