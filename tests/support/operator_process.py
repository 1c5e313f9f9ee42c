"""The operator as its own process against a test control plane, and small polling helpers for e2e tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

E2E_NAMESPACE = "loupe-e2e"  # the namespace the e2e ``cluster`` fixture creates and the operator watches


def get_object(cluster: Any, kind: str, name: str, namespace: str = E2E_NAMESPACE) -> dict[str, Any]:
    """One API object as JSON (``{}`` when it does not exist)."""
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    if out.returncode != 0:
        return {}
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def start_operator(
    kubeconfig: Path, tmp_path: Path, log_name: str, namespaces: list[str], **settings: str
) -> subprocess.Popen[bytes]:
    """``python -m loupe_operator`` in local mode (unless ``settings`` say otherwise), logging to a file.

    Jobs keep their state under ``tmp_path/jobs`` and versions go to ``tmp_path/store`` by default.
    """
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "LOUPE_RAY_MODE": "local",
        "LOUPE_DEFAULT_STORE": str(tmp_path / "store"),
        "LOUPE_LOCAL_STATE_DIR": str(tmp_path / "jobs"),
        "LOUPE_NAMESPACES": json.dumps(namespaces),
        "LOUPE_POLL_SECONDS": "1",
        "LOUPE_SOURCE_POLL_SECONDS": "3",
        "LOUPE_LIVENESS_PORT": "0",
        "LOUPE_METRICS_PORT": "0",
        "LOUPE_EXECUTOR": "inline",  # Ray itself is covered by the submit-mode and pipeline tests
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        **settings,
    }
    log = (tmp_path / log_name).open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "loupe_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop_operator(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


def wait_for(what: str, check: Any, timeout: float = 240.0, interval: float = 1.0) -> Any:
    """Poll ``check()`` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition of ``type_`` in an object's status, or ``{}``."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def source_spec(name: str, images: Path, **spec: Any) -> dict[str, Any]:
    """An IngestSource over a folder, in the e2e namespace (``spec``: more fields, e.g. labels)."""
    return {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "IngestSource",
        "metadata": {"name": name, "namespace": E2E_NAMESPACE},
        "spec": {"filesystem": {"path": str(images)}, **spec},
    }


def dataset_spec(name: str, source: str, **spec: Any) -> dict[str, Any]:
    """A Dataset over one source, in the e2e namespace (``spec``: more fields, e.g. retention)."""
    return {
        "apiVersion": "loupe.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": E2E_NAMESPACE},
        "spec": {"sources": [{"name": source}], **spec},
    }
