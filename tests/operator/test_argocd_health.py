"""Argo CD health checks (charts/loupe/argocd/*.lua) on statuses written by the real operator.

The operator runs as its own process with a kubeconfig that authenticates as the chart's
ServiceAccount (a TokenRequest token), so it has exactly the chart's RBAC of a namespaced install; its
log must show no permission error. The Lua runs in a Lua 5.1 interpreter (lupa), as in Argo CD.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loupe_workers.ingest.demo import DemoFile
from support.chart import argocd_health, as_list, documents, install_chart_crds, operator_kubeconfig, template
from support.operator_process import condition, start_operator, stop_operator, wait_for
from support.processes import free_port

NAMESPACE = "loupe-argocd"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from support.control_plane import ControlPlane

    # OwnerReferencesPermissionEnforcement (on in OpenShift and some hardened clusters) checks that the
    # operator may set blockOwnerDeletion on the RayJobs its Datasets own.
    with ControlPlane(
        apiserver_args=["--enable-admission-plugins=OwnerReferencesPermissionEnforcement"]
    ) as plane:
        install_chart_crds(plane)
        yield plane


def _get(cluster: Any, kind: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        cluster.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json", check=True).stdout
    )
    return result


def _health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    return argocd_health(kind, obj)


def test_operator_with_chart_rbac_statuses_read_by_argocd_health_checks(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    images, _ = corpus
    kubeconfig = operator_kubeconfig(cluster, tmp_path, [NAMESPACE])
    # the kubeconfig really is the ServiceAccount, not the admin
    whoami = cluster.kubectl("auth", "whoami", f"--kubeconfig={kubeconfig}", "-o", "json")
    identity = json.loads(whoami.stdout)["status"]["userInfo"]["username"] if whoami.returncode == 0 else ""
    assert identity == "system:serviceaccount:loupe-system:loupe", whoami.stderr
    operator: subprocess.Popen[bytes] | None = start_operator(
        kubeconfig, tmp_path, "operator.log", [NAMESPACE]
    )
    try:
        specs = [
            {
                "apiVersion": "loupe.dev/v1alpha1",
                "kind": "IngestSource",
                "metadata": {"name": "cameras", "namespace": NAMESPACE},
                "spec": {"filesystem": {"path": str(images)}, "labels": {"format": "folder"}},
            },
            {
                "apiVersion": "loupe.dev/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": "defects", "namespace": NAMESPACE},
                "spec": {"sources": [{"name": "cameras"}]},
            },
        ]
        (tmp_path / "specs.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": specs}))
        cluster.kubectl("apply", "-f", str(tmp_path / "specs.json"), check=True)

        # Every Dataset state seen until Ready, each judged by the health check.
        seen: list[tuple[str, str, dict[str, Any]]] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            obj = _get(cluster, "dataset", "defects")
            status, message = _health("Dataset", obj)
            seen.append((status, message, obj))
            if status == "Healthy":
                break
            time.sleep(0.2)
        statuses = [s for s, _, _ in seen]
        assert statuses[-1] == "Healthy", f"never Healthy: {[(s, m) for s, m, _ in seen][-5:]}"
        assert "Degraded" not in statuses, [(s, m) for s, m, _ in seen if s == "Degraded"]
        assert statuses[0] == "Progressing"
        first = seen[0][2]
        if not first.get("status"):
            assert seen[0][1] == "Waiting for the operator to observe generation 1"
        running = [
            (m, o)
            for s, m, o in seen
            if (o.get("status") or {}).get("job", {}).get("state") in ("Pending", "Running")
        ]
        assert running, "no snapshot caught the job running"
        for message, obj in running:
            assert _health("Dataset", obj)[0] == "Progressing"
            assert "job" in message and obj["status"]["job"]["id"] in message, message
        healthy = seen[-1]
        assert healthy[1] == f"version 1.0.0 with {healthy[2]['status']['samples']} samples"

        source = _get(cluster, "ingestsource", "cameras")
        status, message = _health("IngestSource", source)
        assert status == "Healthy" and message.endswith("bytes") and "objects" in message, message

        # A storage URI the operator cannot use: Degraded with the operator's message, old version kept.
        cluster.kubectl("patch", "dataset", "defects", "-n", NAMESPACE, "--type=merge",
                        "-p", json.dumps({"spec": {"storage": {"uri": "s3://"}}}), check=True)  # fmt: skip

        def degraded() -> tuple[str, str, dict[str, Any]] | None:
            obj = _get(cluster, "dataset", "defects")
            status, message = _health("Dataset", obj)
            return (status, message, obj) if status == "Degraded" else None

        status, message, obj = wait_for("Dataset Degraded", degraded, timeout=120, interval=0.5)
        assert message == condition(obj, "Degraded")["message"] and "s3://" in message, message
        assert obj["metadata"]["generation"] == 2
        assert obj["status"]["currentVersion"] == "1.0.0"

        # A source folder that vanished: the IngestSource is Degraded with the listing error.
        cluster.kubectl("patch", "ingestsource", "cameras", "-n", NAMESPACE, "--type=merge",
                        "-p", json.dumps({"spec": {"filesystem": {"path": str(tmp_path / "gone")}}}), check=True)  # fmt: skip

        def source_degraded() -> tuple[str, str] | None:
            found = _health("IngestSource", _get(cluster, "ingestsource", "cameras"))
            return found if found[0] == "Degraded" else None

        status, message = wait_for("IngestSource Degraded", source_degraded, timeout=120, interval=0.5)
        assert "cannot list" in message and "gone" in message, message

        # Repaired: Healthy again.
        cluster.kubectl("patch", "ingestsource", "cameras", "-n", NAMESPACE, "--type=merge",
                        "-p", json.dumps({"spec": {"filesystem": {"path": str(images)}}}), check=True)  # fmt: skip
        wait_for(
            "IngestSource Healthy again",
            lambda: _health("IngestSource", _get(cluster, "ingestsource", "cameras"))[0] == "Healthy",
            timeout=120,
            interval=0.5,
        )
    finally:
        stop_operator(operator)
        operator = None
    log = (tmp_path / "operator.log").read_text()
    assert "forbidden" not in log.lower(), (
        "the operator hit a permission the chart does not grant:\n"
        + "\n".join(line for line in log.splitlines() if "forbidden" in line.lower())
    )


def test_retrain_policy_health_on_server_validated_statuses(cluster: Any) -> None:
    """The operator does not reconcile RetrainPolicies yet: statuses are written through the status
    subresource by hand (validated by the CRD's schema), to check the run-aware branch of the script."""
    if cluster.kubectl("get", "namespace", NAMESPACE).returncode != 0:
        cluster.kubectl("create", "namespace", NAMESPACE, check=True)
    cluster.apply(
        "apiVersion: loupe.dev/v1alpha1\nkind: RetrainPolicy\n"
        f"metadata: {{name: detector, namespace: {NAMESPACE}}}\n"
        "spec:\n  datasetRef: defects\n"
        "  action:\n    webhook: {url: 'https://ci.example.com/hooks/retrain'}\n"
    )
    obj = _get(cluster, "retrainpolicy", "detector")
    assert _health("RetrainPolicy", obj) == (
        "Progressing",
        "Waiting for the operator to observe generation 1",
    )

    def with_status(status: dict[str, Any]) -> dict[str, Any]:
        cluster.patch_status("retrainpolicy", "detector", NAMESPACE, status)
        return _get(cluster, "retrainpolicy", "detector")

    now = "2026-01-01T00:00:00Z"
    ready = {"type": "Ready", "status": "True", "reason": "Idle", "message": "model 7 trained on 1.2.0",
             "lastTransitionTime": now, "observedGeneration": 1}  # fmt: skip
    run = {"name": "detector-1", "datasetVersion": "1.2.0", "state": "Running", "startTime": now}
    obj = with_status({"observedGeneration": 1, "conditions": [ready], "runs": [run]})
    assert _health("RetrainPolicy", obj) == ("Progressing", "run detector-1 is running")
    obj = with_status(
        {"observedGeneration": 1, "conditions": [ready], "runs": [{**run, "state": "Succeeded"}]}
    )
    assert _health("RetrainPolicy", obj) == ("Healthy", "model 7 trained on 1.2.0")
    degraded = {"type": "Degraded", "status": "True", "reason": "RunFailed", "message": "run detector-2 failed: OOMKilled",
                "lastTransitionTime": now, "observedGeneration": 1}  # fmt: skip
    obj = with_status(
        {"observedGeneration": 1, "conditions": [ready, degraded], "runs": [{**run, "state": "Failed"}]}
    )
    assert _health("RetrainPolicy", obj) == ("Degraded", "run detector-2 failed: OOMKilled")


def test_cluster_wide_operator_with_chart_rbac(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    """The cluster-wide install's RBAC (a separate release) is enough for the operator in any namespace."""
    images, _ = corpus
    kubeconfig = operator_kubeconfig(cluster, tmp_path, [], release="loupe-cw", namespace="loupe-cw")
    cluster.kubectl("create", "namespace", "anywhere", check=True)
    operator: subprocess.Popen[bytes] | None = start_operator(kubeconfig, tmp_path, "operator-cw.log", [])
    try:
        cluster.apply(
            "apiVersion: loupe.dev/v1alpha1\nkind: IngestSource\n"
            "metadata: {name: photos, namespace: anywhere}\n"
            f"spec: {{filesystem: {{path: {json.dumps(str(images))}}}}}\n"
        )

        def healthy() -> tuple[str, str] | None:
            obj = json.loads(
                cluster.kubectl("get", "ingestsource", "photos", "-n", "anywhere", "-o", "json").stdout
            )
            found = _health("IngestSource", obj)
            return found if found[0] == "Healthy" else None

        _, message = wait_for("IngestSource Healthy", healthy, timeout=120, interval=0.5)
        assert "objects" in message
    finally:
        stop_operator(operator)
    log = (tmp_path / "operator-cw.log").read_text()
    assert "forbidden" not in log.lower(), "\n".join(
        line for line in log.splitlines() if "forbidden" in line.lower()
    )


def test_kuberay_mode_with_chart_rbac(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    """kuberay mode under the chart's RBAC: the operator creates and watches a RayJob (this test
    writes the RayJob's status, as the KubeRay controller would); a failed RayJob makes the Dataset
    Degraded with the RayJob's reason, and deleting a Dataset with a running job deletes its RayJob."""
    from support.control_plane import kuberay_crd

    images, _ = corpus
    namespace = "loupe-kuberay"
    cluster.apply(kuberay_crd("ray.io_rayjobs.yaml"), server_side=True)
    cluster.wait_crds_established("rayjobs.ray.io")
    kubeconfig = operator_kubeconfig(cluster, tmp_path, [namespace], release="loupe-kr", namespace="loupe-kr")
    operator: subprocess.Popen[bytes] | None = start_operator(
        kubeconfig, tmp_path, "operator-kr.log", [namespace],
        LOUPE_RAY_MODE="kuberay", LOUPE_MAX_ATTEMPTS="1",
    )  # fmt: skip

    def get(kind: str, name: str) -> dict[str, Any]:
        out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        found: dict[str, Any] = json.loads(out.stdout) if out.returncode == 0 else {}
        return found

    def rayjobs() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            cluster.kubectl("get", "rayjobs", "-n", namespace, "-o", "json", check=True).stdout
        )["items"]
        return items

    try:
        for name in ("fails", "deleted"):
            cluster.apply(
                "apiVersion: loupe.dev/v1alpha1\nkind: IngestSource\n"
                f"metadata: {{name: {name}-src, namespace: {namespace}}}\n"
                f"spec: {{filesystem: {{path: {json.dumps(str(images))}}}}}\n---\n"
                "apiVersion: loupe.dev/v1alpha1\nkind: Dataset\n"
                f"metadata: {{name: {name}, namespace: {namespace}}}\n"
                f"spec: {{sources: [{{name: {name}-src}}]}}\n"
            )
        jobs = wait_for("two RayJobs", lambda: len(rayjobs()) == 2 and rayjobs(), timeout=120, interval=0.5)
        by_dataset = {j["metadata"]["ownerReferences"][0]["name"]: j["metadata"]["name"] for j in jobs}
        status, message = _health("Dataset", get("dataset", "fails"))
        assert status == "Progressing" and by_dataset["fails"] in message, message

        cluster.patch_status("rayjob", by_dataset["fails"], namespace, {"jobDeploymentStatus": "Failed",
                             "reason": "DeadlineExceeded", "message": "activeDeadlineSeconds reached"})  # fmt: skip

        def degraded() -> tuple[str, str] | None:
            found = _health("Dataset", get("dataset", "fails"))
            return found if found[0] == "Degraded" else None

        _, message = wait_for("Dataset Degraded", degraded, timeout=60, interval=0.5)
        assert "DeadlineExceeded" in message and by_dataset["fails"] in message, message

        cluster.kubectl("delete", "dataset", "deleted", "-n", namespace, "--wait=false", check=True)
        wait_for("the RayJob deleted", lambda: by_dataset["deleted"] not in {j["metadata"]["name"] for j in rayjobs()},
                 timeout=60, interval=0.5)  # fmt: skip
        wait_for("the Dataset gone", lambda: not get("dataset", "deleted"), timeout=60, interval=0.5)
    finally:
        stop_operator(operator)
    log = (tmp_path / "operator-kr.log").read_text()
    assert "forbidden" not in log.lower(), "\n".join(
        line for line in log.splitlines() if "forbidden" in line.lower()
    )


def test_two_peered_replicas_with_the_charts_command(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    """peering.enabled: the Deployment's own command line runs twice under the chart's RBAC; exactly one
    replica works, the one of higher priority, even on an object that existed before either started; the
    other waits, and when the working one stops the other takes over."""
    images, _ = corpus
    namespace = "loupe-peers"
    values = {
        "replicaCount": 2,
        "peering": {"enabled": True, "name": "loupe"},
        "watchNamespaces": [namespace],
    }
    kubeconfig = operator_kubeconfig(
        cluster, tmp_path, [namespace], release="loupe-hp", namespace="loupe-hp", values=values
    )
    peering = [d for d in documents(template(values).stdout) if d["kind"] == "KopfPeering"]
    cluster.apply(as_list(peering))
    # the object exists before either replica starts: both list it at once, the sharpest start-up race
    cluster.apply(
        "apiVersion: loupe.dev/v1alpha1\nkind: IngestSource\n"
        f"metadata: {{name: photos, namespace: {namespace}}}\n"
        f"spec: {{filesystem: {{path: {json.dumps(str(images))}}}}}\n"
    )
    processes: list[subprocess.Popen[bytes]] = []

    def workers(marker: str) -> list[int]:
        logs = [(tmp_path / f"peer-{i}.log").read_text() for i in range(len(processes))]
        return [i for i, text in enumerate(logs) if marker in text]

    try:
        # Replica 0 starts alone: without the start-up settle, whenever its priority is the lower, it
        # would find no peer and handle the object before replica 1 exists. Replica 1 starts once
        # replica 0 has announced itself, well inside the settle interval, as replicas of one rollout do.
        for index in range(2):
            rendered = documents(template({**values, "liveness": {"port": free_port()}}).stdout)
            (container,) = next(d for d in rendered if d["kind"] == "Deployment")["spec"]["template"]["spec"][
                "containers"
            ]
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            env.update({  # as start_operator: local jobs under tmp_path, no metrics port clash
                "KUBECONFIG": str(kubeconfig), "LOUPE_RAY_MODE": "local", "LOUPE_METRICS_PORT": "0",
                "LOUPE_DEFAULT_STORE": str(tmp_path / "store"), "LOUPE_LOCAL_STATE_DIR": str(tmp_path / "jobs"),
                "LOUPE_EXECUTOR": "inline", "HOME": str(tmp_path),
                "LOUPE_PEERING_SETTLE_SECONDS": "20",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            })  # fmt: skip
            log = (tmp_path / f"peer-{index}.log").open("w")
            processes.append(subprocess.Popen(container["command"] + container.get("args", []), env={**os.environ, **env},
                                              stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            wait_for(
                f"replica {index} announced", lambda i=index: i in workers("announced to peers"), timeout=60
            )

        def healthy() -> bool:
            obj = json.loads(
                cluster.kubectl("get", "ingestsource", "photos", "-n", namespace, "-o", "json").stdout
            )
            return _health("IngestSource", obj)[0] == "Healthy"

        wait_for("IngestSource Healthy", healthy, timeout=120, interval=0.5)

        (active,) = wait_for("one replica handling it", lambda: workers("source listing changed"), timeout=30)
        time.sleep(5)  # the standby is up by now, and still does nothing
        assert workers("source listing changed") == [active]
        announced = [re.search(r"announced to peers with priority (\d+)", (tmp_path / f"peer-{i}.log").read_text())
                     for i in range(2)]  # fmt: skip
        priorities = [int(m[1]) for m in announced if m is not None]
        assert priorities[active] > priorities[1 - active]  # the higher priority works, from the start
        assert all(p.poll() is None for p in processes), "a replica exited"

        # the working replica goes away (a drained node): the standby takes over
        stop_operator(processes[active])
        cluster.kubectl("patch", "ingestsource", "photos", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"spec": {"exclude": ["**/*.mp4"]}}), check=True)  # fmt: skip
        standby = 1 - active
        wait_for("the standby taking over", lambda: standby in workers("source listing changed"), timeout=150)
    finally:
        for process in processes:
            stop_operator(process)
    for index in range(2):
        text = (tmp_path / f"peer-{index}.log").read_text()
        assert "forbidden" not in text.lower(), "\n".join(
            line for line in text.splitlines() if "forbidden" in line.lower()
        )
