"""Job entrypoint used by Ray jobs: ``python -m loupe_workers run-job PAYLOAD.json``.

The payload is a loupe_api.RunRequest; the result (a RunResult) is printed as the last line of
output, prefixed with ``LOUPE_RESULT``, so whoever launched the job can read it from the job logs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loupe_api.dataset import DatasetStats
from loupe_api.jobs import FAILURE_PREFIX, RESULT_PREFIX, RunFailure, RunRequest, RunResult
from loupe_storage.store import open_store
from loupe_storage.versions import list_versions
from loupe_workers.compute.executor import make_executor
from loupe_workers.pipeline.run import RunError, run_dataset
from loupe_workers.versioning.gc_job import gc_summary, run_gc_job


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "run-job":
        sys.stderr.write("usage: python -m loupe_workers run-job PAYLOAD.json | - | env:VARIABLE\n")
        return 2
    source = argv[1]
    if source == "-":
        text = sys.stdin.read()
    elif source.startswith("env:"):  # how Ray jobs receive it: an env var of their runtime_env
        text = os.environ[source[len("env:") :]]
    else:
        text = Path(source).read_text()
    request = RunRequest.model_validate_json(text)
    if request.kind == "gc":  # retention on a schedule: no Ray, no sources
        sys.stdout.write(RESULT_PREFIX + gc_job(request).model_dump_json(by_alias=True) + "\n")
        return 0
    # LOUPE_EXECUTOR=inline runs without starting Ray (a local-mode job on a laptop or in tests)
    executor = make_executor(
        os.environ.get("LOUPE_EXECUTOR", "ray"), parallelism=request.spec.ray.parallelism
    )
    try:
        result = run_dataset(request, executor=executor)
    except RunError as exc:  # a refusal, not a crash: say why in a line the launcher can read
        failure = RunFailure(reason=exc.reason, message=str(exc))
        sys.stdout.write(FAILURE_PREFIX + failure.model_dump_json(by_alias=True) + "\n")
        return 1
    sys.stdout.write(RESULT_PREFIX + result.model_dump_json(by_alias=True) + "\n")
    return 0


def gc_job(request: RunRequest) -> RunResult:
    """Expire, tier and collect for one dataset; the GcResult goes to storage, a summary to the log."""
    secret = request.spec.storage.credentials_secret_ref
    store = open_store(request.store_uri, endpoint=request.store_endpoint, region=request.store_region,
                       credentials_secret=secret.name if secret else None)  # fmt: skip
    job_id = request.run_id or "gc"
    done = run_gc_job(store, request.dataset, request.spec.retention, job_id)
    versions = list_versions(store, request.dataset)
    return RunResult(dataset=request.dataset, run_id=job_id, stats=DatasetStats(), message=gc_summary(done),
                     current_version=versions[-1].version if versions else None, expired=done.expired)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
