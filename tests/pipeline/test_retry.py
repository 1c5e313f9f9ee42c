"""Transient refusals (a loaded Ray head's "No available agent", a local Ray's start-up timeout) are
retried with bounds; anything else fails at once.

A real Ray head cannot be made to refuse on cue, so the launcher tests put a scripted client in place
of the Job Submission SDK's (the real cluster tests are in test_launchers.py and test_operator_ray_e2e.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from loupe_api.retry import TransientRefusal, is_transient, retry_transient
from loupe_operator.adapters.launchers import SubmitLauncher

AGENT = RuntimeError(
    "Request failed with status code 500: No available agent to submit job, please try again later.."
)


def scripted(*outcomes: Any) -> Any:
    """A callable that raises or returns ``outcomes`` in turn, and counts its calls."""
    queue = list(outcomes)

    def call(*_: Any, **__: Any) -> Any:
        call.calls += 1  # type: ignore[attr-defined]
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    call.calls = 0  # type: ignore[attr-defined]
    return call


def test_transient_refusals_are_retried_with_growing_bounded_waits() -> None:
    waits: list[float] = []
    action = scripted(
        AGENT,
        ConnectionError("refused"),
        RuntimeError("The current node timed out during startup"),
        Exception("Failed to connect to GCS within 60 seconds. GCS may have been killed."),
        7,
    )
    assert retry_transient(action, "submit", sleep=waits.append) == 7
    assert action.calls == 5 and waits == [1.0, 2.0, 4.0, 8.0]


def test_every_try_refused_gives_one_clear_error() -> None:
    waits: list[float] = []
    with pytest.raises(
        TransientRefusal, match=r"submit job j: still refused after 6 tries over 25 s: .*No available agent"
    ):
        retry_transient(scripted(*[AGENT] * 6), "submit job j", sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_other_errors_are_raised_at_once() -> None:
    action = scripted(RuntimeError("Request failed with status code 400: invalid runtime_env"), 1)
    with pytest.raises(RuntimeError, match="400"):
        retry_transient(action, "submit", sleep=lambda _: None)
    assert action.calls == 1
    assert not is_transient(ValueError("bad address"))


class FakeClient:
    """The part of ray.job_submission.JobSubmissionClient the launcher uses, with scripted answers."""

    def __init__(self, submit: Any, info: Any) -> None:
        self.submit_job, self.get_job_info = submit, info
        self.get_job_logs = lambda job_id: ""


def launcher(client: FakeClient) -> SubmitLauncher:
    made = SubmitLauncher.__new__(SubmitLauncher)
    made.address, made.sleep, made.client = "http://head:8265", lambda _: None, client
    return made


class Info:
    status, message = "RUNNING", ""


MISSING = RuntimeError("Request failed with status code 404: Job j does not exist.")


def test_submission_refused_by_a_busy_head_is_retried(request_payload: Any) -> None:
    client = FakeClient(submit=scripted(AGENT, AGENT, "j"), info=scripted(MISSING, MISSING, MISSING))
    launcher(client).launch("j", request_payload, {})
    assert client.submit_job.calls == 3


def test_a_refused_try_that_created_the_job_is_adopted_not_resubmitted(request_payload: Any) -> None:
    client = FakeClient(submit=scripted(AGENT), info=scripted(MISSING, Info()))
    launcher(client).launch("j", request_payload, {})
    assert client.submit_job.calls == 1


def test_a_busy_head_is_not_a_lost_job() -> None:
    busy = RuntimeError("Request failed with status code 503: Service Unavailable.")
    observed = launcher(FakeClient(submit=None, info=scripted(busy, Info()))).observe("j")
    assert observed is not None and observed.state == "Running"
    assert launcher(FakeClient(submit=None, info=scripted(MISSING))).observe("j") is None


@pytest.fixture
def request_payload() -> Any:
    from loupe_api.dataset import DatasetSpec
    from loupe_api.jobs import RunRequest

    spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}]})
    return RunRequest(dataset="ns/d", spec=spec, sources={}, store_uri="/tmp/store")
