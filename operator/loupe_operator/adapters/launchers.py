"""Ways to run a Dataset job. Each is idempotent by job id: launching an id that exists adopts it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from loupe_api.jobs import (
    ENTRYPOINT,
    FAILURE_PREFIX,
    PAYLOAD_ENV,
    RESULT_PREFIX,
    RunFailure,
    RunRequest,
    RunResult,
)
from loupe_api.retry import retry_transient
from loupe_operator.manifests.rayjob import (
    RAY_GROUP,
    RAY_VERSION,
    RAYJOBS,
    KubeRayDefaults,
    Owner,
    observe_rayjob,
    rayjob_manifest,
)
from loupe_operator.reconcile.dataset import JobObservation

if TYPE_CHECKING:
    from ray.job_submission import JobDetails

T = TypeVar("T")
log = logging.getLogger(__name__)


def result_from_logs(logs: str) -> RunResult | None:
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return RunResult.model_validate_json(line[len(RESULT_PREFIX) :])
    return None


def _failure(logs: str, fallback: str) -> JobObservation:
    """A failed job's reason and message: its RunFailure line when it refused, else its last line."""
    lines = [line for line in logs.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(FAILURE_PREFIX):
            with contextlib.suppress(ValueError):
                failure = RunFailure.model_validate_json(line[len(FAILURE_PREFIX) :])
                return JobObservation("Failed", failure.message[:500], failure.reason)
    return JobObservation("Failed", (lines[-1] if lines else fallback)[:500])


class Launcher(Protocol):
    def launch(
        self, job_id: str, request: RunRequest, env: dict[str, str], owner: Owner | None = None
    ) -> None: ...

    def observe(self, job_id: str) -> JobObservation | None: ...

    def result(self, job_id: str) -> RunResult | None: ...

    def stop(self, job_id: str) -> None: ...


class SubmitLauncher:
    """The Ray Job Submission API of an existing Ray cluster (http://head:8265)."""

    _STATES = {
        "PENDING": "Pending",
        "RUNNING": "Running",
        "SUCCEEDED": "Succeeded",
        "FAILED": "Failed",
        "STOPPED": "Failed",
    }

    def __init__(self, address: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.sleep = sleep
        self.client = self._retry(lambda: JobSubmissionClient(address), f"connect to Ray at {address}")

    def _retry(self, action: Callable[[], T], what: str) -> T:
        def note(attempt: int, exc: BaseException) -> None:
            log.warning("%s: transient refusal (try %d), retrying: %s", what, attempt, exc)

        return retry_transient(action, what, sleep=self.sleep, on_retry=note)

    def launch(
        self, job_id: str, request: RunRequest, env: dict[str, str], owner: Owner | None = None
    ) -> None:
        if self.observe(job_id) is not None:
            return  # already launched (e.g. before an operator restart): adopt it

        def submit() -> None:
            try:
                self.client.submit_job(
                    entrypoint=ENTRYPOINT,
                    submission_id=job_id,
                    runtime_env={"env_vars": {PAYLOAD_ENV: request.model_dump_json(by_alias=True), **env}},
                    metadata={"loupe.dev/dataset": request.dataset},
                )
            except RuntimeError:
                if self.observe(job_id) is None:
                    raise  # a refused try that still created the job is adopted, not submitted twice

        self._retry(submit, f"submit job {job_id} to {self.address}")

    def observe(self, job_id: str) -> JobObservation | None:
        def info() -> JobDetails | None:
            try:
                return self.client.get_job_info(job_id)
            except RuntimeError as exc:  # the SDK raises RuntimeError for every refusal
                if "status code 404" in str(exc):  # "Job ... does not exist"
                    return None
                raise  # a busy or restarting head is not a lost job

        found = self._retry(info, f"read job {job_id} from {self.address}")
        if found is None:
            return None
        state = self._STATES.get(str(found.status), "Running")
        message = found.message or ""
        if state == "Failed":
            return _failure(self._logs(job_id), message or "the job failed")
        return JobObservation(state, message)  # type: ignore[arg-type]

    def _logs(self, job_id: str) -> str:
        return self._retry(lambda: self.client.get_job_logs(job_id), f"read the logs of job {job_id}")

    def result(self, job_id: str) -> RunResult | None:
        return result_from_logs(self._logs(job_id))

    def stop(self, job_id: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.client.stop_job(job_id)


class LocalLauncher:
    """A child process on the operator's machine, for development. State lives in files under
    ``state_dir`` so a restarted operator finds (and adopts) what it launched."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # reaped here, so none lingers as a zombie

    def _paths(self, job_id: str) -> tuple[Path, Path, Path]:
        base = self.state_dir / job_id
        return base.with_suffix(".pid"), base.with_suffix(".log"), base.with_suffix(".rc")

    def launch(
        self, job_id: str, request: RunRequest, env: dict[str, str], owner: Owner | None = None
    ) -> None:
        pid_file, log_file, rc_file = self._paths(job_id)
        if pid_file.exists():
            return
        environment = {**os.environ, **env, PAYLOAD_ENV: request.model_dump_json(by_alias=True)}
        # A shell wrapper records the exit code, so the outcome survives the operator itself.
        script = f'{sys.executable} -m loupe_workers run-job env:{PAYLOAD_ENV} > "{log_file}" 2>&1; echo $? > "{rc_file}"'
        process = subprocess.Popen(["/bin/sh", "-c", script], env=environment, start_new_session=True)
        self._children[job_id] = process
        pid_file.write_text(str(process.pid))

    def observe(self, job_id: str) -> JobObservation | None:
        pid_file, log_file, rc_file = self._paths(job_id)
        if not pid_file.exists():
            return None
        child = self._children.get(job_id)
        if child is not None and child.poll() is not None:
            del self._children[job_id]
        if rc_file.exists() and rc_file.read_text().strip():
            code = int(rc_file.read_text().strip())
            if code == 0:
                return JobObservation("Succeeded")
            logs = log_file.read_text() if log_file.exists() else ""
            return _failure(logs, f"exit code {code}")
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ProcessLookupError, ValueError):
            return JobObservation("Failed", "the job process disappeared")
        return JobObservation("Running")

    def result(self, job_id: str) -> RunResult | None:
        _, log_file, _ = self._paths(job_id)
        return result_from_logs(log_file.read_text()) if log_file.exists() else None

    def stop(self, job_id: str) -> None:
        pid_file, _, _ = self._paths(job_id)
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        child = self._children.pop(job_id, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)


class KubeRayLauncher:
    """A ``ray.io/v1`` RayJob per run in the Dataset's namespace; the KubeRay operator runs it.

    Launching a name that exists adopts it (409 Conflict); the outcome comes from
    ``jobDeploymentStatus``, and the version itself from storage, so no pod logs are read."""

    def __init__(self, namespace: str, defaults: KubeRayDefaults) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.defaults = defaults
        self.api = client.CustomObjectsApi()

    def launch(
        self, job_id: str, request: RunRequest, env: dict[str, str], owner: Owner | None = None
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        if owner is None:
            raise ValueError("a RayJob needs the Dataset that owns it")
        # env is ignored on purpose: credentials reach the pods by secretKeyRef, never as values
        manifest = rayjob_manifest(job_id, request, owner, self.defaults)
        try:
            self.api.create_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, self.namespace, RAYJOBS, manifest
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: created before an operator restart; adopt it
                raise

    def observe(self, job_id: str) -> JobObservation | None:
        from kubernetes.client.exceptions import ApiException

        try:
            rayjob = self.api.get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, self.namespace, RAYJOBS, job_id
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return observe_rayjob(rayjob)

    def result(self, job_id: str) -> RunResult | None:
        return None  # the committed version is read from storage

    def stop(self, job_id: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, self.namespace, RAYJOBS, job_id, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def describe(request: RunRequest) -> str:
    """A log-safe summary of a request (never credentials: requests carry none)."""
    return json.dumps(
        {"dataset": request.dataset, "store": request.store_uri, "sources": sorted(request.sources)}
    )
