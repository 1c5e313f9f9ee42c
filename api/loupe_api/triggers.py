"""When a RetrainPolicy starts a run, and whether its model is promoted: pure functions shared by the
operator and embedded mode (``loupe run -f``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from loupe_api.common import parse_duration
from loupe_api.retrain import Baseline, PromotionSpec, RetrainPolicySpec, RetrainRun
from loupe_api.versions import PartList, VersionRecord, absolute_uri, is_part_list

ACTIVE_RUN_STATES = ("Pending", "Running")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True)
class DueRun:
    """A run that should start: on which version, why, and its deterministic name."""

    name: str
    dataset_version: str
    reason: str
    schedule_slot: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    """What the triggers say now: a run to start, or why not."""

    due: DueRun | None
    waiting: str = ""


def run_name(policy: str, dataset_version: str, slot: datetime | None = None) -> str:
    """The same policy, version and schedule slot always give the same (DNS-safe) name: idempotent starts."""
    token = f"{dataset_version}/{slot.isoformat() if slot else ''}"
    return (
        f"{policy[:40]}-{dataset_version.replace('.', '-')}-{hashlib.sha256(token.encode()).hexdigest()[:6]}"
    )


def new_data_since(versions: list[VersionRecord], base: str | None) -> tuple[int, bool, int]:
    """(samples added, whether any MAJOR version, size of the base version) after ``base``, up to the latest."""
    later = [v for v in versions if base is None or _key(v.version) > _key(base)]
    added = sum(v.change.added if v.change else v.samples for v in later)
    major = any(v.change is None or v.change.bump == "major" for v in later)
    base_size = next((v.samples for v in versions if v.version == base), 0)
    return added, major, base_size


def latest_schedule_slot(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The most recent cron slot in (since, now], if any."""
    from croniter import croniter  # light, pure Python; imported here so api models load without it

    slot: datetime | None = None
    runner = croniter(schedule, since)
    while True:
        candidate: datetime = runner.get_next(datetime)
        if candidate > now:
            return slot
        slot = candidate


def evaluate(
    policy: str,
    spec: RetrainPolicySpec,
    versions: list[VersionRecord],
    runs: list[RetrainRun],
    *,
    last_trained_version: str | None,
    last_schedule_time: datetime | None,
    created: datetime,
    drift_score: float | None,
    now: datetime,
) -> Verdict:
    """Level-based trigger evaluation on the latest dataset version; cooldown, suspend and concurrency are
    the caller's (they decide *whether* to start, this decides *what* is due)."""
    if not versions:
        return Verdict(None, "the dataset has no version yet")
    latest = versions[-1]
    triggers = spec.triggers
    slot = (
        latest_schedule_slot(triggers.schedule, last_schedule_time or created, now)
        if triggers.schedule
        else None
    )
    if slot is not None:
        return Verdict(
            DueRun(
                run_name(policy, latest.version, slot), latest.version, f"schedule {triggers.schedule}", slot
            )
        )
    if any(r.dataset_version == latest.version for r in runs):
        return Verdict(None, f"version {latest.version} already has a run")
    added, major, base_size = new_data_since(versions, last_trained_version)
    since = f"since {last_trained_version}" if last_trained_version else "(no model trained yet)"
    reasons: list[str] = []
    if triggers.min_new_samples is not None and added >= triggers.min_new_samples:
        reasons.append(f"{added} new samples {since} (at least {triggers.min_new_samples})")
    if triggers.min_new_fraction is not None and (
        base_size == 0 or added / base_size >= triggers.min_new_fraction
    ):
        reasons.append(f"{added} new samples {since}, fraction {added / base_size if base_size else 1:.2f}")
    if triggers.on_major_version and major:
        reasons.append(f"MAJOR version {since}")
    if (
        triggers.drift_threshold is not None
        and drift_score is not None
        and drift_score > triggers.drift_threshold
    ):
        reasons.append(f"drift {drift_score:.3f} above {triggers.drift_threshold}")
    if not reasons:
        return Verdict(None, f"{added} new samples {since}: no trigger met")
    return Verdict(DueRun(run_name(policy, latest.version), latest.version, "; ".join(reasons)))


def cooldown_left(spec: RetrainPolicySpec, runs: list[RetrainRun], now: datetime) -> float:
    """Seconds until the cooldown since the latest run's start has passed (0: none left)."""
    if not spec.cooldown:
        return 0.0
    starts = [r.start_time for r in runs if r.start_time is not None]
    if not starts:
        return 0.0
    ready_at = max(starts) + timedelta(seconds=parse_duration(spec.cooldown))
    return max(0.0, (ready_at - now).total_seconds())


def promote(promotion: PromotionSpec | None, baseline: Baseline | None, metrics: dict[str, float]) -> bool:
    """Whether a finished run's model replaces the baseline."""
    if promotion is None:
        return True  # nothing to compare on: the newest model is the baseline
    value = metrics.get(promotion.metric)
    if value is None:
        return False  # a run that does not report the metric cannot be judged better
    if baseline is None or baseline.metric is None:
        return True
    gain = value - baseline.metric if promotion.higher_is_better else baseline.metric - value
    return gain > promotion.min_improvement


def manifest_file_keys(manifest_uri: str, part_list: bytes | None) -> list[str]:
    """The store keys of the Parquet files holding a manifest: the parts its part list names, or the
    manifest itself (versions written before parts). ``part_list``: the list's bytes, when it is one."""
    if not is_part_list(manifest_uri) or part_list is None:
        return [manifest_uri]
    return [part.key for part in PartList.model_validate_json(part_list).parts]


def run_environment(
    run: RetrainRun,
    policy: str,
    dataset: str,
    version: VersionRecord,
    store_uri: str,
    store_endpoint: str | None,
    manifest_files: list[str] | None = None,
) -> dict[str, str]:
    """What every action gets: the dataset version, its manifest (with a split column) and where to write.

    LOUPE_MANIFEST_URI names the version's manifest: a part list (``*.parts.json``) for versions with
    parts. LOUPE_MANIFEST_FILES is a JSON list of the absolute URIs of the Parquet files that hold it
    (``pandas.read_parquet(json.loads(...))``), so a training script needs to know nothing of parts.
    ``manifest_files``: those files' store keys (``manifest_file_keys``); default the manifest itself."""
    files = manifest_files if manifest_files is not None else [version.manifest_uri]
    env = {
        "LOUPE_POLICY": policy,
        "LOUPE_RUN": run.name,
        "LOUPE_DATASET": dataset,
        "LOUPE_DATASET_VERSION": version.version,
        "LOUPE_MANIFEST_URI": absolute_uri(store_uri, version.manifest_uri),
        "LOUPE_LINEAGE_URI": absolute_uri(store_uri, version.lineage_uri),
        "LOUPE_RESULT_URI": run.result_uri,
        "LOUPE_STORE_URI": store_uri,
        "LOUPE_MANIFEST_FILES": json.dumps([absolute_uri(store_uri, key) for key in files]),
    }
    if store_endpoint:
        env["LOUPE_STORE_ENDPOINT"] = store_endpoint
        env["AWS_ENDPOINT_URL"] = store_endpoint
    return env
