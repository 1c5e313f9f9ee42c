"""Job entrypoint used by Ray jobs: ``python -m loupe_workers run-job PAYLOAD.json``.

The payload is a loupe_api.RunRequest; the result (a RunResult) is printed as the last line of
output, prefixed with ``LOUPE_RESULT``, so whoever launched the job can read it from the job logs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loupe_api.jobs import FAILURE_PREFIX, RESULT_PREFIX, RunFailure, RunRequest
from loupe_workers.compute.executor import make_executor
from loupe_workers.pipeline.run import RunError, run_dataset


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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
