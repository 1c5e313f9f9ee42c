"""Retention run by the operator: a gc job at each slot of spec.retention.schedule (else after each new
version), its result in the Dataset's status and an Event; the gc job itself (`run-job` with kind gc)
never expires the current, a tagged or a trained-on version, and records what it freed where the
operator reads it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kopf
import yaml

from loupe_api.dataset import DatasetSpec, DatasetStats, DatasetStatus, JobStatus
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RESULT_PREFIX, RunRequest, RunResult
from loupe_api.keys import gc_result_key, model_key, run_prefix
from loupe_api.retention import GcResult, RetentionSpec, RetentionStatus
from loupe_api.retrain import ModelRecord
from loupe_api.versions import VersionChange, VersionRecord
from loupe_operator.adapters.launchers import LocalLauncher
from loupe_operator.adapters.storage import StoreLocation
from loupe_operator.reconcile.dataset import (
    Decision,
    JobObservation,
    Observed,
    gc_due,
    reconcile_retention,
)
from loupe_storage.store import LocalStore, blob_key
from loupe_storage.versions import list_versions
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.versioning.tags import set_tag
from loupe_workers.versioning.versions import read_expired
from support.cli import QUICKSTART
from support.photos import jpeg, photo

CREATED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NIGHTLY = RetentionSpec(keep_last=2, schedule="0 3 * * *")


def version(number: str) -> VersionRecord:
    return VersionRecord(dataset="ns/d", version=number, created=CREATED, run_id="r", spec_digest="s",
                         source_digest="s", content_digest="c", code_version="0", manifest_uri="m",
                         rejected_uri="r", lineage_uri="l", samples=1, stats=DatasetStats(),
                         change=VersionChange(bump="minor"))  # fmt: skip


def observed(retention: RetentionSpec, now: datetime, status: DatasetStatus | None = None) -> Observed:
    spec = DatasetSpec.model_validate({"sources": [{"name": "s"}], "retention": retention.to_wire()})
    return Observed(name="d", generation=1, spec=spec, status=status or DatasetStatus(), now=now,
                    mode="local", versions=[version("1.0.0"), version("1.1.0")])  # fmt: skip


def test_gc_is_due_at_each_schedule_slot_and_otherwise_after_each_version() -> None:
    state = RetentionStatus()
    assert gc_due(NIGHTLY, state, "1.1.0", CREATED, CREATED + timedelta(hours=14)) is None  # before 03:00
    due = gc_due(NIGHTLY, state, "1.1.0", CREATED, CREATED + timedelta(hours=16))
    assert due == ("schedule 0 3 * * *", datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    state.last_slot = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert gc_due(NIGHTLY, state, "1.1.0", CREATED, CREATED + timedelta(hours=30)) is None  # slot served
    assert gc_due(NIGHTLY, state, "1.1.0", CREATED, CREATED + timedelta(days=2)) is not None  # the next one
    after_each = RetentionSpec(keep_last=2)
    assert gc_due(after_each, RetentionStatus(), "1.1.0", CREATED, CREATED) == ("version 1.1.0", None)
    assert gc_due(after_each, RetentionStatus(last_version="1.1.0"), "1.1.0", CREATED, CREATED) is None
    assert gc_due(RetentionSpec(), RetentionStatus(), "1.1.0", CREATED, CREATED) is None  # nothing to do
    assert gc_due(after_each, RetentionStatus(), None, CREATED, CREATED) is None  # no version yet


def test_the_gc_job_is_started_once_per_slot_then_its_result_lands_in_status_and_an_event() -> None:
    now = datetime(2026, 12, 1, 3, 5, tzinfo=UTC)
    first = reconcile_retention(observed(NIGHTLY, now), CREATED)
    assert first.launch is not None and first.launch.startswith("loupe-gc-d-")
    assert first.state.job_state == "Pending" and [e.reason for e in first.events] == ["GcJobStarted"]
    again = reconcile_retention(observed(NIGHTLY, now), CREATED)
    assert again.launch == first.launch  # a restarted operator derives the same id: adopted, not doubled

    running = DatasetStatus(retention=first.state)
    later = now + timedelta(minutes=1)
    busy = reconcile_retention(observed(NIGHTLY, later, running), CREATED, JobObservation("Running"))
    assert busy.launch is None and busy.events == [] and busy.state.job_state == "Running"

    result = GcResult(dataset="ns/d", job_id=first.launch, time=later, expired=["1.0.0"],
                      tiered={"0.9.0": "GLACIER_IR"}, deleted=7, freed_bytes=123456)  # fmt: skip
    succeeded = JobObservation("Succeeded")
    done = reconcile_retention(observed(NIGHTLY, later, running), CREATED, succeeded, result)
    assert done.launch is None  # this slot is served
    assert done.state.job_state == "Succeeded" and done.state.last_gc_time == later
    assert done.state.expired_versions == ["1.0.0"] and done.state.freed_bytes == 123456
    assert done.state.tiered == {"0.9.0": "GLACIER_IR"}
    [event] = done.events
    assert event.type == "Normal" and event.reason == "GarbageCollected"
    assert "expired 1.0.0" in event.message and "freed 123456 bytes in 7 objects" in event.message
    wire = DatasetStatus(retention=done.state).to_wire()["retention"]  # what kubectl shows
    assert wire["freedBytes"] == 123456 and wire["expiredVersions"] == ["1.0.0"]

    failed = reconcile_retention(observed(NIGHTLY, later, running), CREATED, JobObservation("Failed", "OOM"))
    assert failed.state.job_state == "Failed" and failed.events[0].reason == "GarbageCollectionFailed"
    assert "OOM" in failed.events[0].message


def test_no_gc_job_while_a_run_is_in_flight() -> None:
    now = datetime(2026, 12, 1, 3, 5, tzinfo=UTC)
    run = JobStatus(id="loupe-d-abc-1", mode="local", state="Running")
    waiting = reconcile_retention(observed(NIGHTLY, now, DatasetStatus(job=run)), CREATED)
    assert waiting.launch is None and waiting.state.last_slot is None  # the slot is still owed


# --- the gc job, launched and read back by the operator's own handler code ------------------------------

DATASET = "team/defects"  # namespace/name, as the operator names datasets in storage


def build(store: Path, images: Path) -> str:
    """One run-job, as the operator launches it (inline executor: no Ray needed)."""
    documents = list(yaml.safe_load_all(QUICKSTART.read_text()))
    source = next(d for d in documents if d["kind"] == "IngestSource")
    source["spec"]["filesystem"]["path"] = str(images)
    dataset = next(d for d in documents if d["kind"] == "Dataset")["spec"]
    request = RunRequest(dataset=DATASET, spec=DatasetSpec.model_validate(dataset), store_uri=str(store),
                         sources={source["metadata"]["name"]: IngestSourceSpec.model_validate(source["spec"])})  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "loupe_workers", "run-job", "-"], text=True, timeout=600,
                          input=request.model_dump_json(by_alias=True), capture_output=True,
                          env={**os.environ, "LOUPE_EXECUTOR": "inline"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX))
    return str(RunResult.model_validate_json(line[len(RESULT_PREFIX) :]).version)


def test_the_operator_runs_the_gc_job_which_keeps_current_tagged_and_trained_on_versions(
    demo_master: tuple[Path, list[DemoFile]], tmp_path: Path
) -> None:
    from loupe_operator.handlers import _retention

    images = tmp_path / "images"
    shutil.copytree(demo_master[0], images)
    root = tmp_path / "store"
    store = LocalStore(root)
    v1 = build(root, images)
    set_tag(store, DATASET, v1, "production")
    (images / "objects" / "coffee.jpg").write_bytes(jpeg(photo("coffee", 320)))
    v2 = build(root, images)  # a model is trained on it below
    rocket = jpeg(photo("rocket", 320))
    (images / "objects" / "rocket.jpg").write_bytes(rocket)
    v3 = build(root, images)  # the only version holding the rocket
    (images / "objects" / "rocket.jpg").unlink()
    v4 = build(root, images)  # current
    trained = ModelRecord(model_uri="s3://models/m1", policy="team/p", run="r1", dataset=DATASET,
                          dataset_version=v2, manifest_uri="m", created=CREATED)  # fmt: skip
    store.put(model_key(trained.model_uri), trained.model_dump_json(by_alias=True).encode())

    documents = list(yaml.safe_load_all(QUICKSTART.read_text()))
    wire = next(d for d in documents if d["kind"] == "Dataset")["spec"]
    wire["retention"] = {"keepLast": 1, "schedule": "0 3 * * *"}
    spec = DatasetSpec.model_validate(wire)
    body = kopf.Body({"metadata": {"name": "defects", "namespace": "team", "uid": "u1",
                                   "creationTimestamp": "2026-11-30T12:00:00Z"}, "spec": wire})  # fmt: skip
    location = StoreLocation(str(root))
    launcher = LocalLauncher(tmp_path / "jobs")
    now = datetime(2026, 12, 1, 3, 5, tzinfo=UTC)  # just after the first slot

    def reconcile(status: DatasetStatus) -> Decision:
        observed = Observed(name="defects", generation=1, spec=spec, status=status, now=now, mode="local",
                            versions=location.read_versions(DATASET), store_uri=str(root))  # fmt: skip
        decision = Decision(status=status.model_copy(deep=True))
        _retention(body, observed, decision, launcher, location, spec, "local")
        return decision

    started = reconcile(DatasetStatus())
    state = started.status.retention
    assert state is not None and state.job_id and state.job_state == "Pending"
    assert [e.reason for e in started.events] == ["GcJobStarted"]
    deadline = time.monotonic() + 300  # a wait for the child process, not a speed assertion
    while (launcher.observe(state.job_id) or JobObservation("Failed")).state == "Running":
        assert time.monotonic() < deadline, "the gc job did not finish"
        time.sleep(0.5)
    finished = reconcile(started.status)
    done = finished.status.retention
    assert done is not None and done.job_state == "Succeeded", done
    assert done.expired_versions == [v3] and done.freed_bytes >= len(rocket)
    [event] = finished.events
    assert event.reason == "GarbageCollected" and f"expired {v3}" in event.message
    assert finished.status.to_wire()["retention"]["freedBytes"] == done.freed_bytes  # what kubectl shows

    assert [r.version for r in list_versions(store, DATASET)] == [v1, v2, v4]  # tagged, trained, current
    tombstone = read_expired(store, DATASET, v3)
    assert tombstone is not None
    # the operator's dataset names hold a slash (namespace/name): v3's run folder goes too, kept ones stay
    assert not list(store.list(run_prefix(DATASET, tombstone.run_id)))
    assert all(list(store.list(run_prefix(DATASET, r.run_id))) for r in list_versions(store, DATASET))
    assert not store.exists(blob_key(hashlib.sha256(rocket).hexdigest()))  # collected with v3
    result = GcResult.model_validate_json(location.read_optional(gc_result_key(DATASET, state.job_id)) or b"")
    assert result.expired == [v3] and result.deleted > 0 and result.skipped == ""
    assert reconcile(finished.status).events == []  # the slot is served: nothing more until the next
