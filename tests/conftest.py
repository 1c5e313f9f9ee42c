"""Shared fixtures: the demo corpus of real photos, a MinIO server, a local Ray cluster."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loupe_workers.ingest.demo import DemoFile, build_demo_corpus


@pytest.fixture(scope="session")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoFile]]:
    root = tmp_path_factory.mktemp("demo") / "images"
    files = build_demo_corpus(root, size="small")
    return root, files


@pytest.fixture
def corpus(demo_master: tuple[Path, list[DemoFile]], tmp_path: Path) -> tuple[Path, list[DemoFile]]:
    """A private copy of the demo corpus that a test may change."""
    root = tmp_path / "images"
    shutil.copytree(demo_master[0], root)
    return root, demo_master[1]


@pytest.fixture(scope="session")
def minio() -> Iterator[object]:
    from support.minio_server import MinioServer

    with MinioServer() as server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real local Ray cluster with its dashboard and Job Submission API; yields that API's address."""
    import sys

    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    # jobs run `python -m loupe_workers ...`: this interpreter's environment must come first on PATH
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    from support.processes import free_port

    port = free_port()
    context = ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        logging_level="WARNING",
        log_to_driver=False,
    )
    yield f"http://{context.dashboard_url}"
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A real control plane with Loupe's CRDs, KubeRay's RayJob CRD and the e2e namespace."""
    from support.control_plane import ControlPlane, kuberay_crd
    from support.operator_process import E2E_NAMESPACE

    repo = Path(__file__).resolve().parents[1]
    with ControlPlane() as plane:
        plane.kubectl("apply", "-f", str(repo / "crds"), check=True)
        plane.apply(kuberay_crd("ray.io_rayjobs.yaml"), server_side=True, check=True)
        plane.wait_crds_established("datasets.loupe.dev", "ingestsources.loupe.dev", "rayjobs.ray.io")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": E2E_NAMESPACE}}
        plane.kubectl(
            "apply", "-f", "-", input=json.dumps(namespace), check=True
        )  # may exist on a real cluster
        yield plane


@pytest.fixture
def operator_log(tmp_path: Path) -> Iterator[Path]:
    """Where an e2e test's operator logs; its tail is printed after the test (pytest shows it on failure)."""
    log = tmp_path / "operator.log"
    yield log
    if log.exists():
        print(log.read_text()[-6000:])


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """The session's Ray when one runs (ray_cluster), else a one-CPU local Ray started the way the
    product starts it (compute.executor.ensure_ray: transient start-up failures retried)."""
    import ray

    from loupe_workers.compute.executor import ensure_ray

    started = not ray.is_initialized()
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    ensure_ray(num_cpus=1)
    yield
    if started:
        ray.shutdown()
