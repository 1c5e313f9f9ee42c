"""RetrainPolicy on a real control plane: Jobs started by triggers, run by this test in the kubelet's place
(no pods can start here: it runs the Job's container command locally with the Job's environment and writes
the Job status as the Job controller would), webhooks delivered to a loopback receiver, and a trained model
traced back to the raw bytes it learned from."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as skdata

from loupe_storage.store import LocalStore
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.storage import manifest
from support.chart import argocd_health
from support.operator_process import E2E_NAMESPACE as NAMESPACE
from support.operator_process import condition, get_object, start_operator, stop_operator, wait_for

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "05-retraining" / "train.py"
pytestmark = pytest.mark.k8s


def _apply(cluster: Any, tmp_path: Path, *objects: dict[str, Any]) -> None:
    manifest = tmp_path / f"apply-{time.monotonic_ns()}.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))
    cluster.kubectl("apply", "-f", str(manifest), check=True)


def _source_and_dataset(name: str, images: Path) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "loupe.dev/v1alpha1", "kind": "IngestSource", "metadata": {"name": f"{name}-src", "namespace": NAMESPACE},
         "spec": {"filesystem": {"path": str(images)}, "labels": {"format": "folder"}}},
        {"apiVersion": "loupe.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"sources": [{"name": f"{name}-src"}]}},
    ]  # fmt: skip


def _policy(name: str, dataset: str, action: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "loupe.dev/v1alpha1", "kind": "RetrainPolicy", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"datasetRef": dataset, "action": action, **spec}}  # fmt: skip


def _version(cluster: Any, dataset: str) -> str | None:
    obj = get_object(cluster, "dataset", dataset)
    status = obj.get("status") or {}
    busy = (status.get("job") or {}).get("state") in ("Pending", "Running")
    return None if busy or condition(obj, "Ready").get("status") != "True" else status.get("currentVersion")


def _jobs(cluster: Any, policy: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "jobs", "-n", NAMESPACE, "-l", f"loupe.dev/retrain-policy={policy}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return sorted(items, key=lambda j: j["metadata"]["creationTimestamp"])


def _runs(cluster: Any, policy: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (get_object(cluster, "retrainpolicy", policy).get("status") or {}).get(
        "runs"
    ) or []
    return runs


def _job_status(cluster: Any, name: str, status: dict[str, Any]) -> None:
    cluster.patch_status("job", name, NAMESPACE, status)


def _play_job(cluster: Any, job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The kubelet and the Job controller: run the container command with its env, then write the status."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {"PATH": str(Path(sys.executable).parent)}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = base64.b64decode(
                get_object(cluster, "secret", ref["name"])["data"][ref["key"]]
            ).decode()
    command = [
        sys.executable if part == "python" else part
        for part in container["command"] + container.get("args", [])
    ]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _job_status(cluster, job["metadata"]["name"], {"startTime": started, "active": 1})
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if done.returncode == 0:
        conditions = [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": finished},
                      {"type": "Complete", "status": "True", "lastTransitionTime": finished}]  # fmt: skip
        _job_status(cluster, job["metadata"]["name"], {"active": 0, "succeeded": 1, "completionTime": finished,
                                                        "conditions": conditions, "uncountedTerminatedPods": {}})  # fmt: skip
    return done


def test_job_action_triggers_cooldown_failure_and_lineage(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path, operator_log: Path
) -> None:
    images, _ = corpus
    store = tmp_path / "store"
    operator = start_operator(cluster.kubeconfig_path, tmp_path, operator_log.name, [NAMESPACE])
    second: subprocess.Popen[bytes] | None = None
    try:
        _apply(cluster, tmp_path, *_source_and_dataset("parts", images))
        assert wait_for("parts@1.0.0", lambda: _version(cluster, "parts")) == "1.0.0"
        template = {"template": {"spec": {"containers": [
            {"name": "train", "image": "python:3.11-slim", "command": ["python", str(TRAIN)]}]}}}  # fmt: skip
        _apply(cluster, tmp_path, _policy("detector", "parts", {"job": template}, cooldown="1h",
                                          triggers={"minNewSamples": 3}, promotion={"metric": "accuracy"}))  # fmt: skip

        # the first version (MAJOR, and no model yet) starts exactly one Job with the run's environment
        (job,) = wait_for("a training Job", lambda: _jobs(cluster, "detector"), timeout=60)
        # what Argo CD would show, from the chart's health check on the operator's real status
        health = wait_for("Progressing status", lambda: _runs(cluster, "detector")
                          and argocd_health("RetrainPolicy", get_object(cluster, "retrainpolicy", "detector")))  # fmt: skip
        assert health[0] == "Progressing" and job["metadata"]["name"] in health[1]
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["LOUPE_DATASET"] == f"{NAMESPACE}/parts" and env["LOUPE_DATASET_VERSION"] == "1.0.0"
        assert Path(env["LOUPE_MANIFEST_URI"]).is_file()
        files = json.loads(env["LOUPE_MANIFEST_FILES"])  # the Parquet files of the manifest, absolute
        manifest_key = str(Path(env["LOUPE_MANIFEST_URI"]).relative_to(store))
        assert files and sum(pq.read_metadata(f).num_rows for f in files) == len(
            manifest.read_rows(LocalStore(store), manifest_key)
        )
        assert env["LOUPE_RESULT_URI"].startswith(str(store / "retrain" / NAMESPACE / "detector" / "runs"))
        owner = get_object(cluster, "retrainpolicy", "detector")["metadata"]["uid"]
        assert job["metadata"]["ownerReferences"][0]["uid"] == owner
        trained = _play_job(cluster, job)
        assert trained.returncode == 0, trained.stderr
        run = wait_for(
            "the run to succeed",
            lambda: next((r for r in _runs(cluster, "detector") if r["state"] == "Succeeded"), None),
        )
        assert (
            run["promoted"] is True
            and run["metrics"]["accuracy"] >= 0
            and run["modelUri"].endswith("model.json")
        )
        baseline = get_object(cluster, "retrainpolicy", "detector")["status"]["baseline"]
        assert (
            argocd_health("RetrainPolicy", get_object(cluster, "retrainpolicy", "detector"))[0] == "Healthy"
        )
        assert baseline["modelUri"] == run["modelUri"] and baseline["datasetVersion"] == "1.0.0"

        # the model traces back to the raw bytes of every sample it learned from
        traced = subprocess.run([sys.executable, "-m", "loupe_workers.cli.main", "lineage", "--model", run["modelUri"],
                                 "--store", str(store), "--json"], capture_output=True, text=True, check=True)  # fmt: skip
        trace = json.loads(traced.stdout)
        assert trace["datasetVersion"] == "1.0.0" and trace["run"] == run["name"]
        on_disk = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in images.rglob("*") if p.is_file()}
        raw = {edge["rawSha256"] for edge in trace["rawObjects"]}
        assert raw and raw <= set(on_disk)
        # and a raw object forward to the versions and models that used it
        forward = subprocess.run([sys.executable, "-m", "loupe_workers.cli.main", "lineage", "--raw", next(iter(raw)),
                                  "--store", str(store), "--json"], capture_output=True, text=True, check=True)  # fmt: skip
        used = json.loads(forward.stdout)
        assert f"{NAMESPACE}/parts@1.0.0" in used["versions"] and run["modelUri"] in used["models"]

        # one new sample is below the threshold: a new version, no new Job
        Image.fromarray(skdata.chelsea()[:200]).save(images / "animals" / "flipped.jpg", quality=90)
        assert wait_for("parts@1.1.0", lambda: _version(cluster, "parts") == "1.1.0")
        time.sleep(4)
        assert len(_jobs(cluster, "detector")) == 1
        assert (
            "1 new samples since 1.0.0"
            in condition(get_object(cluster, "retrainpolicy", "detector"), "Progressing")["message"]
        )

        # enough new samples, but within the cooldown: nothing, not even after an operator restart
        for i, photo in enumerate((skdata.coffee(), skdata.rocket(), skdata.astronaut())):
            top = photo[: photo.shape[0] * 2 // 3]  # a new photo (a mirrored copy would be a duplicate)
            Image.fromarray(top).save(images / "objects" / f"mirrored-{i}.jpg", quality=90)
        assert wait_for("parts@1.2.0", lambda: _version(cluster, "parts") == "1.2.0")
        stop_operator(operator)
        second = start_operator(cluster.kubeconfig_path, tmp_path, "operator-2.log", [NAMESPACE])
        wait_for("cooling down", lambda: "cooling down" in condition(get_object(cluster, "retrainpolicy", "detector"),
                                                                     "Progressing").get("message", ""))  # fmt: skip
        assert len(_jobs(cluster, "detector")) == 1

        # without the cooldown the run starts; its Job fails and the policy says why
        cluster.kubectl("patch", "retrainpolicy", "detector", "-n", NAMESPACE, "--type=merge",
                        "-p", json.dumps({"spec": {"cooldown": None}}), check=True)  # fmt: skip
        jobs = wait_for("a second Job", lambda: _jobs(cluster, "detector")[1:], timeout=60)
        assert {e["name"]: e.get("value") for e in jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}[
            "LOUPE_DATASET_VERSION"] == "1.2.0"  # fmt: skip
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _job_status(cluster, jobs[0]["metadata"]["name"], {"startTime": now, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now}],
            "failed": 1, "uncountedTerminatedPods": {}})  # fmt: skip
        degraded = wait_for("Degraded", lambda: condition(get_object(cluster, "retrainpolicy", "detector"), "Degraded")
                            .get("status") == "True" and condition(get_object(cluster, "retrainpolicy", "detector"), "Degraded"))  # fmt: skip
        assert "backoff limit" in degraded["message"]
        status, message = argocd_health("RetrainPolicy", get_object(cluster, "retrainpolicy", "detector"))
        assert status == "Degraded" and "backoff limit" in message
        assert (
            get_object(cluster, "retrainpolicy", "detector")["status"]["baseline"]["modelUri"]
            == run["modelUri"]
        )
        events = json.loads(cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "detector"}
        assert {"RunStarted", "RunSucceeded", "ModelPromoted", "RunFailed"} <= reasons
    finally:
        stop_operator(operator)
        stop_operator(second)


class _Receiver(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        code = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_action_signed_retried_and_bounded(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path, operator_log: Path
) -> None:
    images, _ = corpus
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.answers, _Receiver.received = [500], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/train"
    operator = start_operator(cluster.kubeconfig_path, tmp_path, operator_log.name, [NAMESPACE])
    try:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-key", "namespace": NAMESPACE},
                  "stringData": {"hmac-key": "s3cr3t-signing-key"}}  # fmt: skip
        hook = {"webhook": {"url": url, "secretRef": {"name": "hook-key"}, "maxAttempts": 3}}
        _apply(
            cluster,
            tmp_path,
            secret,
            *_source_and_dataset("hooked", images),
            _policy("pipeline", "hooked", hook),
        )
        assert wait_for("hooked@1.0.0", lambda: _version(cluster, "hooked")) == "1.0.0"
        run = wait_for(
            "delivered",
            lambda: next((r for r in _runs(cluster, "pipeline") if r["state"] == "Running"), None),
        )
        assert run["attempts"] == 2 and len(_Receiver.received) == 2  # one 500, then delivered
        headers, body = _Receiver.received[-1]
        expected = "sha256=" + hmac.new(b"s3cr3t-signing-key", body, hashlib.sha256).hexdigest()
        assert headers["X-Loupe-Signature-256"] == expected
        payload = json.loads(body)
        assert payload["dataset_version"] == "1.0.0" and payload["result_uri"] == run["resultUri"]
        assert "s3cr3t" not in body.decode()
        # the receiving pipeline reports back by writing the result record
        Path(run["resultUri"]).parent.mkdir(parents=True, exist_ok=True)
        Path(run["resultUri"]).write_text(json.dumps({"state": "Succeeded", "modelUri": "s3://models/m1.onnx",
                                                      "metrics": {"accuracy": 0.7}}))  # fmt: skip
        assert wait_for("succeeded", lambda: _runs(cluster, "pipeline")[0]["state"] == "Succeeded")

        # a receiver that keeps failing: bounded retries, then a failed run that says why
        _Receiver.answers = [503] * 10
        before = len(_Receiver.received)
        _apply(cluster, tmp_path, _policy("flaky", "hooked", {"webhook": {"url": url, "maxAttempts": 2}}))
        failed = wait_for(
            "failed", lambda: next((r for r in _runs(cluster, "flaky") if r["state"] == "Failed"), None)
        )
        assert "failed 2 times" in failed["message"] and "HTTP 503" in failed["message"]
        time.sleep(5)
        assert len(_Receiver.received) - before == 2
        assert "s3cr3t-signing-key" not in operator_log.read_text()
    finally:
        stop_operator(operator)
        server.shutdown()
