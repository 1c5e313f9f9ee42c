"""The operator's pure Dataset reconciliation: launch, adopt, succeed, fail, retry, give up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loupe_api.dataset import DatasetSpec, DatasetStats, DatasetStatus
from loupe_api.versions import VersionRecord
from loupe_operator.reconcile.conditions import get_condition
from loupe_operator.reconcile.dataset import (
    JobObservation,
    Observed,
    absolute_uri,
    inputs_digest,
    job_id,
    reconcile_dataset,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = DatasetSpec.model_validate({"sources": [{"name": "cams"}]})


def observed(status: DatasetStatus | None = None, **changes: object) -> Observed:
    base: dict[str, object] = {
        "name": "defects",
        "generation": 1,
        "spec": SPEC,
        "status": status or DatasetStatus(),
        "now": T0,
        "mode": "submit",
        "source_digests": {"cams": "abc"},
    }
    base.update(changes)
    return Observed(**base)  # type: ignore[arg-type]


def version(v: str, samples: int = 10) -> VersionRecord:
    return VersionRecord(
        dataset="defects", version=v, created=T0, run_id="r", spec_digest="s", source_digest="d",
        content_digest=f"c{v}", code_version="0.1.0", manifest_uri=f"datasets/defects/runs/{v}/manifest.parquet",
        rejected_uri="x", lineage_uri=f"datasets/defects/runs/{v}/lineage.parquet", samples=samples,
        stats=DatasetStats(samples=samples),
    )  # fmt: skip


def condition(status: DatasetStatus, type_: str) -> tuple[str, str]:
    found = get_condition(status.conditions, type_)
    assert found is not None, type_
    return found.status, found.reason


def test_first_reconcile_launches_one_deterministic_job() -> None:
    decision = reconcile_dataset(observed())
    assert decision.launch is not None
    assert decision.launch.id == job_id("defects", inputs_digest(1, {"cams": "abc"}), 1)
    assert decision.status.job == decision.launch and decision.status.observed_generation == 1
    assert condition(decision.status, "Progressing") == ("True", "JobStarted")
    assert condition(decision.status, "Ready") == ("False", "NoVersion")
    # a restarted operator that lost the status computes the same job id: it adopts, never duplicates
    assert reconcile_dataset(observed()).launch == decision.launch


def test_running_job_is_tracked_not_relaunched() -> None:
    started = reconcile_dataset(observed()).status
    running = reconcile_dataset(observed(started, job=JobObservation("Running")))
    assert running.launch is None and running.requeue_after
    assert running.status.job is not None and running.status.job.state == "Running"


def test_success_reports_the_version_and_stops() -> None:
    started = reconcile_dataset(observed()).status
    done = reconcile_dataset(
        observed(started, job=JobObservation("Succeeded", "created 1.0.0"), versions=[version("1.0.0", 23)])
    )
    assert done.launch is None
    assert done.status.current_version == "1.0.0" and done.status.samples == 23
    assert [v.version for v in done.status.versions] == ["1.0.0"]
    assert condition(done.status, "Ready") == ("True", "VersionAvailable")
    assert condition(done.status, "Progressing") == ("False", "UpToDate")
    assert {e.reason for e in done.events} == {"JobSucceeded", "VersionCreated"}
    # nothing changed: the next reconcile is a no-op with an identical status
    again = reconcile_dataset(observed(done.status, versions=[version("1.0.0", 23)]))
    assert again.launch is None and again.events == []
    assert again.status == done.status


def test_new_source_listing_or_spec_generation_starts_a_new_run() -> None:
    start = reconcile_dataset(observed()).status
    done = reconcile_dataset(
        observed(start, job=JobObservation("Succeeded"), versions=[version("1.0.0")])
    ).status
    changed = reconcile_dataset(observed(done, versions=[version("1.0.0")], source_digests={"cams": "new"}))
    assert changed.launch is not None and changed.launch.attempts == 1
    respec = reconcile_dataset(observed(done, versions=[version("1.0.0")], generation=2))
    assert respec.launch is not None and respec.launch.id != changed.launch.id


def test_failure_keeps_previous_version_and_retries_with_backoff_then_gives_up() -> None:
    start = reconcile_dataset(observed()).status
    done = reconcile_dataset(
        observed(start, job=JobObservation("Succeeded"), versions=[version("1.0.0")])
    ).status
    launched = reconcile_dataset(
        observed(done, versions=[version("1.0.0")], source_digests={"cams": "new"})
    ).status
    failed = reconcile_dataset(
        observed(
            launched,
            versions=[version("1.0.0")],
            source_digests={"cams": "new"},
            job=JobObservation("Failed", "S3 unreachable"),
        )
    )
    assert failed.launch is None
    assert failed.status.current_version == "1.0.0"
    assert condition(failed.status, "Ready") == ("True", "VersionAvailable")
    degraded = get_condition(failed.status.conditions, "Degraded")
    assert degraded is not None and degraded.status == "True" and "S3 unreachable" in degraded.message
    assert "1.0.0 stays current" in degraded.message
    assert failed.requeue_after == 30.0
    status = failed.status
    for attempt in (2, 3):
        later = reconcile_dataset(
            observed(
                status,
                versions=[version("1.0.0")],
                source_digests={"cams": "new"},
                now=T0 + timedelta(hours=attempt),
            )
        )
        assert later.launch is not None and later.launch.attempts == attempt
        status = reconcile_dataset(
            observed(
                later.status,
                versions=[version("1.0.0")],
                source_digests={"cams": "new"},
                job=JobObservation("Failed", "again"),
            )
        ).status
    gave_up = reconcile_dataset(
        observed(
            status, versions=[version("1.0.0")], source_digests={"cams": "new"}, now=T0 + timedelta(days=1)
        )
    )
    assert gave_up.launch is None and condition(gave_up.status, "Progressing") == ("False", "GaveUp")


def test_lost_job_counts_as_failed() -> None:
    started = reconcile_dataset(observed()).status
    lost = reconcile_dataset(observed(started, job=None))
    assert lost.status.job is not None and lost.status.job.state == "Failed"
    assert condition(lost.status, "Degraded")[0] == "True"


def test_missing_source_is_degraded_without_launching() -> None:
    decision = reconcile_dataset(observed(missing_sources=["cams"]))
    assert decision.launch is None
    assert condition(decision.status, "Degraded") == ("True", "SourceMissing")


def test_transition_time_kept_while_condition_unchanged() -> None:
    first = reconcile_dataset(observed()).status
    second = reconcile_dataset(
        observed(first, job=JobObservation("Running"), now=T0 + timedelta(minutes=5))
    ).status
    a, b = get_condition(first.conditions, "Progressing"), get_condition(second.conditions, "Progressing")
    assert a is not None and b is not None and a.last_transition_time == b.last_transition_time == T0


def test_version_seen_while_job_still_running_is_reported_once() -> None:
    started = reconcile_dataset(observed()).status
    running = reconcile_dataset(observed(started, job=JobObservation("Running"), versions=[version("1.0.0")]))
    assert [e.reason for e in running.events] == ["VersionCreated"]
    assert running.status.current_version == "1.0.0"
    done = reconcile_dataset(
        observed(running.status, job=JobObservation("Succeeded"), versions=[version("1.0.0")])
    )
    assert [e.reason for e in done.events] == ["JobSucceeded"]


def test_waits_for_the_first_source_listing() -> None:
    waiting = reconcile_dataset(observed(source_digests={"cams": ""}))
    assert waiting.launch is None and waiting.requeue_after
    assert condition(waiting.status, "Progressing") == ("False", "WaitingForSourceScan")


def test_status_shows_full_uris_under_the_store() -> None:
    assert (
        absolute_uri("s3://store/loupe/", "datasets/a/m.parquet") == "s3://store/loupe/datasets/a/m.parquet"
    )
    assert absolute_uri("/data/store", "datasets/a/m.parquet") == "/data/store/datasets/a/m.parquet"
    assert absolute_uri("s3://store", "s3://other/x") == "s3://other/x"


def test_sources_rescan_on_their_own_poll_interval() -> None:
    from loupe_operator.handlers import scan_due

    assert scan_due(None, 100.0, "1h", 300)  # never scanned (or the operator restarted): now
    assert not scan_due(100.0, 100.0 + 3599, "1h", 300)
    assert scan_due(100.0, 100.0 + 3600, "1h", 300)
    assert scan_due(100.0, 130.0, "30s", 300) and not scan_due(100.0, 129.0, "30s", 300)
    assert not scan_due(100.0, 399.0, None, 300) and scan_due(100.0, 400.0, None, 300)  # operator default


MANUAL = DatasetSpec.model_validate({"sources": [{"name": "cams"}], "versioning": {"mode": "manual"}})


def test_manual_versioning_builds_only_when_asked_once_per_request() -> None:
    waiting = reconcile_dataset(observed(spec=MANUAL))
    assert waiting.launch is None
    assert condition(waiting.status, "Progressing") == ("False", "WaitingForCommit")
    progressing = get_condition(waiting.status.conditions, "Progressing")
    assert progressing is not None and "loupe.dev/commit" in progressing.message
    # new listings and spec generations do not start a run by themselves
    assert (
        reconcile_dataset(
            observed(waiting.status, spec=MANUAL, generation=2, source_digests={"cams": "new"})
        ).launch
        is None
    )

    asked = reconcile_dataset(observed(waiting.status, spec=MANUAL, commit_request="2026-01-01T10:00"))
    assert asked.launch is not None and asked.launch.commit_request == "2026-01-01T10:00"
    done = reconcile_dataset(
        observed(asked.status, spec=MANUAL, commit_request="2026-01-01T10:00",
                 job=JobObservation("Succeeded"), versions=[version("1.0.0")])
    )  # fmt: skip
    assert done.launch is None and done.status.current_version == "1.0.0"
    assert condition(done.status, "Progressing") == ("False", "WaitingForCommit")
    # the request was served: changed inputs wait for the next one
    later = reconcile_dataset(
        observed(done.status, spec=MANUAL, commit_request="2026-01-01T10:00", source_digests={"cams": "more"},
                 versions=[version("1.0.0")])
    )  # fmt: skip
    assert later.launch is None
    again = reconcile_dataset(
        observed(done.status, spec=MANUAL, commit_request="second", source_digests={"cams": "more"},
                 versions=[version("1.0.0")])
    )  # fmt: skip
    assert again.launch is not None and again.launch.id != asked.launch.id


def test_a_failed_manual_request_is_retried_under_its_own_id() -> None:
    asked = reconcile_dataset(observed(spec=MANUAL, commit_request="r1"))
    assert asked.launch is not None
    failed = reconcile_dataset(
        observed(asked.status, spec=MANUAL, commit_request="r1", job=JobObservation("Failed", "boom"))
    )
    assert failed.launch is None and condition(failed.status, "Progressing") == ("False", "RetryScheduled")
    retried = reconcile_dataset(
        observed(failed.status, spec=MANUAL, commit_request="r1", generation=2, now=T0 + timedelta(hours=1))
    )
    assert retried.launch is not None and retried.launch.attempts == 2
    assert retried.launch.inputs_digest == asked.launch.inputs_digest


def test_auto_mode_ignores_the_commit_annotation() -> None:
    plain = reconcile_dataset(observed())
    annotated = reconcile_dataset(observed(commit_request="anything"))
    assert plain.launch is not None and annotated.launch == plain.launch
