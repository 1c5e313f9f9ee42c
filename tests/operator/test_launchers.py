"""Launching Dataset jobs for real: a local child process, and Ray's Job Submission API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_operator.adapters.launchers import Launcher, LocalLauncher, SubmitLauncher
from loupe_operator.reconcile.dataset import JobObservation
from loupe_workers.ingest.demo import DemoFile


def request(images: Path, store: str) -> RunRequest:
    return RunRequest(
        dataset="defects",
        spec=DatasetSpec.model_validate({"sources": [{"name": "cams"}], "ray": {"parallelism": 1}}),
        sources={"cams": IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})},
        store_uri=store,
    )


def wait(launcher: Launcher, job_id: str, timeout: float = 300) -> JobObservation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = launcher.observe(job_id)
        assert seen is not None
        if seen.state in ("Succeeded", "Failed"):
            return seen
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_local_launcher_runs_adopts_and_reports(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    images, _ = corpus
    launcher = LocalLauncher(tmp_path / "jobs")
    assert launcher.observe("job-1") is None
    launcher.launch("job-1", request(images, str(tmp_path / "store")), {"RAY_ADDRESS": ""})
    launcher.launch("job-1", request(images, str(tmp_path / "store")), {})  # adopted, not started twice
    assert len(list((tmp_path / "jobs").glob("*.pid"))) == 1
    assert wait(launcher, "job-1").state == "Succeeded"
    result = launcher.result("job-1")
    assert result is not None and result.version == "1.0.0" and result.created
    # a restarted operator (a new launcher on the same state) still knows the outcome
    assert LocalLauncher(tmp_path / "jobs").observe("job-1") == JobObservation("Succeeded")


def test_local_launcher_reports_failure_with_reason(tmp_path: Path) -> None:
    launcher = LocalLauncher(tmp_path / "jobs")
    launcher.launch("job-bad", request(tmp_path / "missing", "s3://"), {})
    seen = wait(launcher, "job-bad", timeout=120)
    assert seen.state == "Failed" and seen.message
    assert launcher.result("job-bad") is None


@pytest.mark.ray
def test_submit_launcher_on_a_real_ray_cluster(
    corpus: tuple[Path, list[DemoFile]], tmp_path: Path, ray_cluster: str
) -> None:
    images, _ = corpus
    launcher = SubmitLauncher(ray_cluster)
    assert launcher.observe("loupe-defects-1") is None
    launcher.launch("loupe-defects-1", request(images, str(tmp_path / "store")), {})
    launcher.launch("loupe-defects-1", request(images, str(tmp_path / "store")), {})  # adopted
    seen = wait(launcher, "loupe-defects-1")
    assert seen.state == "Succeeded", seen.message
    result = launcher.result("loupe-defects-1")
    assert result is not None and result.version == "1.0.0" and result.stats.samples > 10
    assert (tmp_path / "store" / "datasets" / "defects" / "versions" / "1.0.0.json").is_file()
