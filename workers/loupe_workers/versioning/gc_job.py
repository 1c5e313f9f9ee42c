"""The gc job the operator launches on spec.retention.schedule: expiry, storage tiers and garbage
collection in one pass, recorded at ``gc_result_key`` for the operator's status and Event. It composes
retention (what may go, what no version needs) and tiers (what moves); neither imports the other's job."""

from __future__ import annotations

from collections.abc import Iterable

from loupe_api.keys import expired_prefix, gc_result_key, run_prefix
from loupe_api.retention import ExpiredVersion, GcResult, RetentionSpec
from loupe_storage.store import ObjectStore
from loupe_workers.versioning.retention import collect_garbage, expire, retention_plan
from loupe_workers.versioning.semver import version_key
from loupe_workers.versioning.tiers import apply_tiers
from loupe_workers.versioning.versions import utcnow


def run_gc_job(store: ObjectStore, dataset: str, spec: RetentionSpec, job_id: str) -> GcResult:
    """Expire what spec.retention lets go, move what its tiers reach, collect what no version needs, and
    record it all at gc_result_key for the operator. Never the current, a tagged or a trained-on version:
    plan_expiry keeps them whatever the rules say."""
    result = GcResult(dataset=dataset, job_id=job_id, time=utcnow())
    if spec.active():
        result.expired = [t.version for t in expire(store, dataset, retention_plan(store, dataset, spec))]
    tiered = apply_tiers(store, dataset, spec)
    result.tiered = {t.version: t.storage_class for t in tiered.moved}
    collected = collect_garbage(store)
    result.deleted, result.freed_bytes = len(collected.deleted), collected.freed_bytes
    # A run expires what its own retention lets go (pipeline.run); the job that frees those versions'
    # bytes reports them too, or status would say "expired none" after every run-and-gc pair.
    freed = freed_versions(store, dataset, collected.deleted)
    result.expired += sorted(set(freed) - set(result.expired), key=version_key)
    result.skipped = collected.skipped
    result.time = utcnow()
    store.put(gc_result_key(dataset, job_id), result.model_dump_json(by_alias=True, indent=2).encode())
    return result


def freed_versions(store: ObjectStore, dataset: str, deleted: Iterable[str]) -> list[str]:
    """Expired versions of ``dataset`` whose run folder a collection just deleted: each version has a
    folder of its own (its part lists), so this is the collection that freed that version's bytes."""
    runs = [key for key in deleted if key.startswith(run_prefix(dataset, ""))]
    found = []
    for info in store.list(expired_prefix(dataset)) if runs else ():
        if info.key.endswith(".json"):
            tombstone = ExpiredVersion.model_validate_json(store.get(info.key))
            folder = f"{run_prefix(dataset, tombstone.run_id)}/"
            if any(key.startswith(folder) for key in runs):
                found.append(tombstone.version)
    return found


def gc_summary(result: GcResult) -> str:
    """The gc job in words, for its RunResult and the operator's Event."""
    expired = ", ".join(result.expired) or "none"
    moved = ", ".join(f"{v} to {c}" for v, c in sorted(result.tiered.items()))
    parts = [f"expired {expired}", f"freed {result.freed_bytes} bytes in {result.deleted} objects"]
    if moved:
        parts.append(f"moved {moved}")
    if result.skipped:
        parts.append(f"nothing collected: {result.skipped}")
    return "; ".join(parts)
