"""RetrainPolicy logic, pure: triggers, cooldown, concurrency, run settlement and promotion."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from loupe_api.dataset import DatasetStats
from loupe_api.retrain import RetrainPolicySpec, RetrainPolicyStatus, RetrainRun, TrainingResult
from loupe_api.triggers import evaluate, promote, run_name
from loupe_api.versions import VersionChange, VersionRecord
from loupe_operator.manifests.rayjob import Owner
from loupe_operator.reconcile.dataset import JobObservation
from loupe_operator.reconcile.retrain import (
    PolicyObserved,
    after_delivery,
    job_manifest,
    observe_job,
    reconcile_policy,
    signature,
    webhook_payload,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def version(v: str, samples: int, bump: str = "minor", added: int = 0) -> VersionRecord:
    return VersionRecord(
        dataset="ns/ds", version=v, created=NOW, run_id=f"r{v}", spec_digest="s", source_digest="d",
        content_digest=f"c{v}", code_version="0.1.0", manifest_uri=f"datasets/ns/ds/runs/{v}/manifest.parquet",
        rejected_uri="x", lineage_uri="l", samples=samples, stats=DatasetStats(),
        change=VersionChange(bump=bump, added=added),  # type: ignore[arg-type]
    )  # fmt: skip


def spec(**fields: Any) -> RetrainPolicySpec:
    return RetrainPolicySpec.model_validate(
        {"datasetRef": "ds", "action": {"job": {"template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}}},
         **fields}
    )  # fmt: skip


def observed(policy: RetrainPolicySpec, versions: list[VersionRecord], status: RetrainPolicyStatus | None = None,
             now: datetime = NOW, **more: Any) -> PolicyObserved:  # fmt: skip
    return PolicyObserved(
        name="p", namespace="ns", generation=1, spec=policy, status=status or RetrainPolicyStatus(),
        created=NOW - timedelta(days=1), now=now, dataset="ns/ds", store_uri="s3://store/loupe", versions=versions,
        **more,
    )  # fmt: skip


HISTORY = [
    version("1.0.0", 100, "major", 100),
    version("1.1.0", 103, added=3),
    version("1.2.0", 110, added=7),
]


def test_new_samples_are_counted_from_the_last_trained_version() -> None:
    policy = spec(triggers={"minNewSamples": 10, "onMajorVersion": False})
    due = evaluate("p", policy, HISTORY, [], last_trained_version="1.0.0", last_schedule_time=None,
                   created=NOW, drift_score=None, now=NOW).due  # fmt: skip
    assert due is not None and due.dataset_version == "1.2.0" and "10 new samples since 1.0.0" in due.reason
    below = evaluate("p", policy, HISTORY, [], last_trained_version="1.1.0", last_schedule_time=None,
                     created=NOW, drift_score=None, now=NOW)  # fmt: skip
    assert below.due is None and "7 new samples" in below.waiting
    fraction = spec(triggers={"minNewFraction": 0.06, "onMajorVersion": False})
    assert evaluate("p", fraction, HISTORY, [], last_trained_version="1.1.0", last_schedule_time=None,
                    created=NOW, drift_score=None, now=NOW).due is not None  # 7/103 >= 0.06  # fmt: skip


def test_major_versions_drift_and_schedule_trigger() -> None:
    history = [*HISTORY, version("2.0.0", 90, "major")]
    major = evaluate("p", spec(), history, [], last_trained_version="1.2.0", last_schedule_time=None,
                     created=NOW, drift_score=None, now=NOW).due  # fmt: skip
    assert major is not None and "MAJOR" in major.reason
    quiet = spec(triggers={"onMajorVersion": False, "driftThreshold": 0.3})
    args: dict[str, Any] = {
        "last_trained_version": "1.2.0",
        "last_schedule_time": None,
        "created": NOW,
        "now": NOW,
    }
    assert evaluate("p", quiet, HISTORY, [], drift_score=0.2, **args).due is None
    drifted = evaluate("p", quiet, HISTORY, [], drift_score=0.5, **args).due
    assert drifted is not None and "drift 0.500" in drifted.reason
    nightly = spec(triggers={"onMajorVersion": False, "schedule": "0 3 * * *"})
    slot = evaluate("p", nightly, HISTORY, [], last_trained_version="1.2.0", drift_score=None, created=NOW,
                    last_schedule_time=datetime(2026, 11, 21, 3, 0, tzinfo=UTC), now=NOW).due  # fmt: skip
    assert slot is not None and slot.schedule_slot == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert slot.name != run_name("p", "1.2.0")  # each slot its own run, even on the same version


def test_exactly_one_run_per_version_and_cooldown_and_forbid() -> None:
    policy = spec(triggers={"minNewSamples": 1}, cooldown="1h")
    first = reconcile_policy(observed(policy, HISTORY))
    (run,) = first.start
    assert run.dataset_version == "1.2.0" and run.result_uri.startswith("s3://store/loupe/retrain/ns/p/runs/")
    # the same observation again (an operator restart before status was written) names the same run
    assert reconcile_policy(observed(policy, HISTORY)).start[0].name == run.name
    # with the run in status: no second run for the version, whatever the trigger says
    live = {run.name: JobObservation("Running")}
    again = reconcile_policy(observed(policy, HISTORY, first.status, NOW + timedelta(minutes=5), live=live))
    assert not again.start
    # a newer version while the run is active and the cooldown has passed: Forbid holds it back
    newer = [*HISTORY, version("1.3.0", 120, added=10)]
    later = NOW + timedelta(hours=2)
    held = reconcile_policy(observed(policy, newer, again.status, later, live=live))
    assert not held.start and "Forbid" in _condition(held.status, "Progressing")["message"]
    # within the cooldown: nothing, and the condition says so
    done = {run.name: JobObservation("Succeeded")}
    result = TrainingResult(model_uri="s3://m/1", metrics={"accuracy": 0.8})
    cooling = reconcile_policy(observed(policy, newer, again.status, NOW + timedelta(minutes=30), live=done,
                                        results={run.name: result}))  # fmt: skip
    assert not cooling.start and "cooling down" in _condition(cooling.status, "Progressing")["message"]
    assert cooling.status.runs[0].state == "Succeeded" and cooling.status.last_trained_version == "1.2.0"
    # Replace stops the active run for the new one
    replace = spec(triggers={"minNewSamples": 1}, concurrencyPolicy="Replace")
    replaced = reconcile_policy(observed(replace, newer, again.status, later, live=live))
    assert replaced.stop == [run.name] and replaced.start and replaced.status.runs[1].state == "Stopped"
    # suspend starts nothing
    assert not reconcile_policy(observed(spec(triggers={"minNewSamples": 1}, suspend=True), HISTORY)).start


def test_settled_runs_promote_by_metric_and_failures_degrade() -> None:
    policy = spec(triggers={"minNewSamples": 1}, promotion={"metric": "accuracy"})
    started = reconcile_policy(observed(policy, HISTORY))
    run = started.start[0]
    good = TrainingResult(model_uri="s3://m/good", metrics={"accuracy": 0.9})
    settled = reconcile_policy(observed(policy, HISTORY, started.status, live={run.name: JobObservation("Succeeded")},
                                        results={run.name: good}))  # fmt: skip
    assert settled.status.baseline is not None and settled.status.baseline.metric == 0.9
    assert settled.status.runs[0].promoted is True
    (model,) = settled.models
    assert model.model_uri == "s3://m/good" and model.dataset_version == "1.2.0"
    assert model.manifest_uri == "s3://store/loupe/datasets/ns/ds/runs/1.2.0/manifest.parquet"
    assert {e.reason for e in settled.events} == {"RunSucceeded", "ModelPromoted"}
    assert promote(policy.promotion, settled.status.baseline, {"accuracy": 0.85}) is False
    assert promote(policy.promotion, settled.status.baseline, {"accuracy": 0.95}) is True
    assert promote(policy.promotion, settled.status.baseline, {}) is False
    # a Job that failed: the run fails with its reason and the policy is Degraded
    newer = [*HISTORY, version("1.3.0", 120, added=10)]
    second = reconcile_policy(observed(policy, newer, settled.status)).start[0]
    failed_job = JobObservation(
        "Failed", "Job has reached the specified backoff limit", "BackoffLimitExceeded"
    )
    failed = reconcile_policy(observed(policy, newer, reconcile_policy(observed(policy, newer, settled.status)).status,
                                       live={second.name: failed_job}))  # fmt: skip
    assert failed.status.runs[0].state == "Failed" and "backoff limit" in failed.status.runs[0].message
    assert _condition(failed.status, "Degraded")["status"] == "True"
    assert failed.status.baseline is not None and failed.status.baseline.model_uri == "s3://m/good"
    # a Job that completed without writing a result: failed, saying where it should have written
    silent = reconcile_policy(observed(policy, newer, reconcile_policy(observed(policy, newer, settled.status)).status,
                                       live={second.name: JobObservation("Succeeded")}))  # fmt: skip
    assert "without writing its result" in silent.status.runs[0].message


def test_job_manifest_and_status() -> None:
    policy = spec()
    run = RetrainRun(
        name="p-1-2-0-abc123", dataset_version="1.2.0", state="Pending", result_uri="s3://r/x.json"
    )
    owner = Owner("loupe.dev/v1alpha1", "RetrainPolicy", "p", "uid-1", "ns")
    from loupe_api.common import SecretReference

    manifest = job_manifest(policy.action.job or {}, run, owner, {"LOUPE_DATASET_VERSION": "1.2.0"},
                            SecretReference(name="keys"))  # fmt: skip
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LOUPE_DATASET_VERSION"]["value"] == "1.2.0"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "keys",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert (
        manifest["spec"]["backoffLimit"] == 0
        and manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    )
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert observe_job({"status": {}}).state == "Pending"
    assert observe_job({"status": {"active": 1}}).state == "Running"
    assert (
        observe_job({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).state == "Succeeded"
    )
    failed = observe_job({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                     "message": "Job was active longer than specified deadline"}]}})  # fmt: skip
    assert (failed.state, failed.reason) == ("Failed", "DeadlineExceeded")


def test_webhook_deliveries_are_signed_and_bounded() -> None:
    run = RetrainRun(
        name="r", dataset_version="1.0.0", state="Pending", trigger="t", result_uri="s3://r/x.json"
    )
    body = webhook_payload(run, {"LOUPE_DATASET_VERSION": "1.0.0", "LOUPE_RESULT_URI": "s3://r/x.json"})
    assert b'"dataset_version": "1.0.0"' in body and b"AWS" not in body
    assert signature(b"k", body) == signature(b"k", body) != signature(b"other", body)
    assert not after_delivery(run, "HTTP 500", NOW, 3) and run.attempts == 1 and run.state == "Pending"
    assert run.next_attempt == NOW + timedelta(seconds=2)
    after_delivery(run, "HTTP 500", NOW, 3)
    assert run.next_attempt == NOW + timedelta(seconds=4)
    (event,) = after_delivery(run, "HTTP 500", NOW, 3)
    assert run.state == "Failed" and event.reason == "RunFailed" and "3 times" in run.message


def _condition(status: RetrainPolicyStatus, type_: str) -> dict[str, Any]:
    return next(c.model_dump() for c in status.conditions if c.type == type_)


def test_openlineage_events_over_file_and_http_transports(tmp_path: Any, monkeypatch: Any) -> None:
    import http.server
    import threading

    from loupe_api import openlineage

    for name in [n for n in os.environ if n.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    assert openlineage.emit("loupe.retrain/ns/p", "r1", "START", [], []) is False  # off unless configured
    log = tmp_path / "lineage.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(log))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    inputs, outputs = [("s3://store/loupe", "ns/ds@1.2.0")], [("s3://models/m1.onnx", "s3://models/m1.onnx")]
    assert openlineage.emit("loupe.retrain/ns/p", "r1", "START", inputs, [])
    assert openlineage.emit("loupe.retrain/ns/p", "r1", "COMPLETE", inputs, outputs)
    start, complete = (json.loads(line) for line in log.read_text().splitlines())
    assert start["eventType"] == "START" and complete["eventType"] == "COMPLETE"
    assert start["run"]["runId"] == complete["run"]["runId"] == openlineage.run_id("r1")
    assert (
        complete["inputs"][0]["name"] == "ns/ds@1.2.0"
        and complete["outputs"][0]["namespace"] == "s3://models/m1.onnx"
    )

    received: list[dict[str, Any]] = []

    class Marquez(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(
                {"path": self.path, "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))}
            )
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Marquez)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in [n for n in os.environ if n.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert openlineage.emit("loupe.dataset/ns/ds", "ns/ds@1.2.0", "COMPLETE", [("/data/raw", "cams")],
                                [("s3://store/loupe", "ns/ds@1.2.0")])  # fmt: skip
    finally:
        server.shutdown()
    (event,) = received
    assert event["path"] == "/api/v1/lineage" and event["body"]["job"]["name"] == "loupe.dataset/ns/ds"
