"""Retention and garbage collection.

``plan_expiry`` (pure) decides which versions of a dataset its RetentionSpec lets go: never the current
version, a tagged one, or one a model was trained on. ``expire`` writes a tombstone for each
(datasets/<d>/expired/<v>.json) before it removes the version record, so a crash leaves either the
version or its tombstone. ``collect_garbage`` is a mark and sweep over the whole store: it marks what
every remaining version of every dataset references (its record, part lists and parts, its run folder,
the blobs of its samples, accepted or not, the renditions its manifest names, and its review files) and
deletes the rest of the blobs, renditions, parts, run folders and reviews, but only under the collection
lock and only when no run holds a lease (leases.py): a blob, rendition or part an in-flight run relies on
is never collected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from loupe_api.common import parse_duration
from loupe_api.keys import (
    BLOBS,
    DATASETS,
    MODELS,
    RENDITIONS,
    dataset_prefix,
    expired_key,
    inputs_seen_prefix,
    reviews_prefix,
    run_prefix,
    version_key_of,
)
from loupe_api.retention import ExpiredVersion, RetentionSpec
from loupe_api.retrain import ModelRecord
from loupe_api.tags import TagRecord
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore, blob_key
from loupe_storage.versions import known_datasets, list_versions
from loupe_workers.storage import manifest
from loupe_workers.storage.leases import gc_lock
from loupe_workers.versioning.versions import list_tags, utcnow


@dataclass(frozen=True)
class Expiry:
    version: str
    reason: str


def plan_expiry(
    versions: Sequence[VersionRecord],
    spec: RetentionSpec,
    *,
    tagged: Iterable[str] = (),
    trained_on: Iterable[str] = (),
    now: datetime,
) -> list[Expiry]:
    """The versions (oldest first) that no rule keeps. ``versions`` oldest first, as list_versions."""
    if not spec.active() or not versions:
        return []
    keep = {versions[-1].version} | set(tagged) | set(trained_on)
    if spec.keep_last is not None:
        keep |= {r.version for r in versions[-spec.keep_last :]}
    max_age = parse_duration(spec.keep_for) if spec.keep_for else None
    if max_age is not None:
        keep |= {r.version for r in versions if (now - r.created).total_seconds() < max_age}
    rules = []
    if spec.keep_last is not None:
        rules.append(f"not among the last {spec.keep_last}")
    if spec.keep_for is not None:
        rules.append(f"older than {spec.keep_for}")
    reason = " and ".join(rules) + ", untagged, no model trained on it"
    return [Expiry(r.version, reason) for r in versions if r.version not in keep]


def trained_versions(store: ObjectStore, dataset: str) -> set[str]:
    """Versions of ``dataset`` that a recorded model was trained on."""
    found = set()
    for info in store.list(MODELS):
        if info.key.endswith(".json"):
            model = ModelRecord.model_validate_json(store.get(info.key))
            if model.dataset == dataset:
                found.add(model.dataset_version)
    return found


def retention_plan(
    store: ObjectStore, dataset: str, spec: RetentionSpec, now: datetime | None = None
) -> list[Expiry]:
    tags: list[TagRecord] = list_tags(store, dataset)
    return plan_expiry(
        list_versions(store, dataset),
        spec,
        tagged=[t.version for t in tags],
        trained_on=trained_versions(store, dataset),
        now=now or utcnow(),
    )


def expire(store: ObjectStore, dataset: str, plan: Sequence[Expiry]) -> list[ExpiredVersion]:
    """Expire the planned versions: tombstone first, then the record. Their bytes go at the next gc."""
    done = []
    records = {r.version: r for r in list_versions(store, dataset)}
    now = utcnow()
    for item in plan:
        record = records.get(item.version)
        if record is None:
            continue
        tombstone = ExpiredVersion(dataset=dataset, version=record.version, created=record.created,
                                   expired=now, reason=item.reason, samples=record.samples,
                                   run_id=record.run_id, parent=record.parent)  # fmt: skip
        body = json.dumps(tombstone.to_wire(), indent=2, sort_keys=True).encode()
        store.put(expired_key(dataset, record.version), body)
        store.delete(version_key_of(dataset, record.version))
        done.append(tombstone)
    return done


# --- mark and sweep -------------------------------------------------------------------------------

# What the sweep may delete: content and run outputs. Records, tags, tombstones, embeddings (a cache
# shared by datasets, keyed by content), models and retraining state are never swept.
SWEPT = (BLOBS, "parts/", "runs/", "reviews/", "inputs/")  # blobs, and these folders of each dataset
# Renditions are swept like blobs: shared by content across datasets, written only by a run (inside its
# lease, so a collection never sees one a run is about to name), kept while any kept version names one.


@dataclass
class GcReport:
    versions: int = 0  # versions whose references were kept
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    skipped: str = ""  # why nothing was swept, when nothing could be


def referenced_keys(store: ObjectStore, record: VersionRecord) -> tuple[set[str], set[str]]:
    """(keys, prefixes) a version needs: its record, part lists, parts, blobs and renditions; its run
    folder and reviews as prefixes."""
    keys = {version_key_of(record.dataset, record.version)}
    kinds: tuple[manifest.Which, ...] = ("accepted", "rejected", "lineage")
    for which in kinds:
        key = manifest.version_key(record, which)
        keys.add(key)
        keys.update(manifest.part_files(store, key))
        # Quarantined samples keep their bytes for review; lineage edges name the raw objects' blobs
        # (a video, whose frames are blobs of their own).
        column, raw = ("blob", "raw_sha256") if which == "lineage" else ("blob_uri", "video_sha256")
        try:  # manifests name their renditions; parts older than spec.renditions lack the column
            wanted = [column, raw] if which == "lineage" else [column, raw, "renditions"]
            table = manifest.read_version_table(store, record, which, columns=wanted)
        except ValueError:
            table = manifest.read_version_table(store, record, which, columns=[column, raw])
        keys.update(str(k) for k in table.column(column).to_pylist() if k)
        keys.update(blob_key(str(sha)) for sha in table.column(raw).to_pylist() if sha)
        if "renditions" in table.column_names:
            keys.update(rendition_keys(table.column("renditions").to_pylist()))
    prefixes = {
        f"{run_prefix(record.dataset, record.run_id)}/",
        reviews_prefix(record.dataset, record.version),
        inputs_seen_prefix(record.dataset, record.version),
    }
    return keys, prefixes


def rendition_keys(cells: Iterable[str | None]) -> set[str]:
    """The rendition objects named by a manifest's ``renditions`` cells ({name: {key, ...}} as JSON)."""
    found = set()
    for cell in cells:
        for entry in (json.loads(cell) if cell else {}).values():
            if isinstance(entry, dict) and entry.get("key"):
                found.add(str(entry["key"]))
    return found


def _sweepable(key: str, folders: Sequence[str]) -> bool:
    """Whether the sweep may delete ``key``. ``folders``: the dataset folders with versions, longest
    first. A dataset name may hold a slash (the operator's namespace/name), so the folder is found by
    name; a folder no version names (a first run that failed) is read as datasets/<one or more
    segments>/<swept folder>/..."""
    if key.startswith((BLOBS, RENDITIONS)):
        return True
    if not key.startswith(DATASETS):
        return False
    owner = next((f for f in folders if key.startswith(f)), None)
    if owner is not None:
        head, _, rest = key[len(owner) :].partition("/")
        return bool(rest) and f"{head}/" in SWEPT[1:]
    parts = key.split("/")
    return any(f"{p}/" in SWEPT[1:] for p in parts[2:-1])


def collect_garbage(store: ObjectStore, *, dry_run: bool = False) -> GcReport:
    """Delete blobs, renditions, parts, run folders and reviews that no version of any dataset references."""
    report = GcReport()
    with gc_lock(store) as may_sweep:
        if not may_sweep:
            report.skipped = (
                "a run is in flight (it may reuse stored blobs and parts): run loupe gc again later"
            )
            return report
        keys: set[str] = set()
        prefixes: set[str] = set()
        for dataset in known_datasets(store):
            for record in list_versions(store, dataset):
                found, folders = referenced_keys(store, record)
                keys |= found
                prefixes |= folders
                report.versions += 1
        owners = sorted((f"{dataset_prefix(d)}/" for d in known_datasets(store)), key=len, reverse=True)
        for info in list(store.list("")):
            if (
                not _sweepable(info.key, owners)
                or info.key in keys
                or any(info.key.startswith(p) for p in prefixes)
            ):
                continue
            report.deleted.append(info.key)
            report.freed_bytes += info.size
            if not dry_run:
                store.delete(info.key)
    return report
