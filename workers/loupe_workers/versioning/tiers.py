"""Storage tiers: the sample bytes of old versions move to a colder S3 storage class.

``plan_levels`` (pure) gives each version the tier its age reaches (0: stays where it is); the current
version, tagged versions and the newest ``keepLast`` always stay at 0. ``apply_tiers`` moves a blob only
when every version of the dataset that references it has reached that tier, so a blob shared with a
younger or kept version stays in its class; a blob another dataset of the store also references stays
too. Only blobs move: records, manifest parts and run folders stay in STANDARD, so `loupe versions`,
`show` and `query` keep working on a tiered version.

On S3 a move is a copy of the object onto itself with the new StorageClass, plus the tag
``loupe-tier=<class>`` (and the rule's ``tags``). A store that refuses the class (MinIO knows only STANDARD
and REDUCED_REDUNDANCY unless a remote tier is configured) gets the tags alone, for a bucket lifecycle
rule to act on, and the version's TierRecord says ``applied: tags``. A folder store has no classes:
tiering does nothing there and records nothing.

Reading: GLACIER and DEEP_ARCHIVE objects cannot be read until restored, so a version recorded there is
refused by ``ensure_readable`` (export, open_dataset) with the way back, ``loupe restore``; the other
classes (STANDARD_IA, GLACIER_IR, ...) read at once and are only shown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import get_args

from loupe_api.common import parse_duration
from loupe_api.keys import (
    BLOBS,
    DATASETS,
    VERSION_RECORD,
    blob_key,
    tier_key,
    tiers_pass_key,
    tiers_prefix,
)
from loupe_api.retention import (
    ARCHIVE_CLASSES,
    TIER_TAG,
    RetentionSpec,
    StorageClass,
    TierRecord,
)
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore, S3Store
from loupe_storage.versions import known_datasets, list_versions
from loupe_workers.versioning.retention import referenced_keys
from loupe_workers.versioning.versions import list_tags, read_version, utcnow

RESTORE_DAYS = 7  # how long S3 keeps the temporary copy of an archived object while it is copied back


class VersionArchived(LookupError):
    """The version's bytes are in an archive class: reading them needs `loupe restore` first."""


def _age_origin(record: VersionRecord, tier: TierRecord | None) -> datetime:
    # a restored version ages again from its restore, else the next run would archive it at once
    return tier.since if tier is not None and tier.applied == "restored" else record.created


def plan_levels(
    versions: Sequence[VersionRecord],
    spec: RetentionSpec,
    *,
    tagged: Iterable[str] = (),
    tiers: dict[str, TierRecord] | None = None,
    now: datetime,
) -> dict[str, int]:
    """Version -> tier level: 0 stays, i stays in ``spec.tiers[i - 1]``. ``versions`` oldest first."""
    if not versions or not spec.tiers:
        return {r.version: 0 for r in versions}
    hot = {versions[-1].version} | set(tagged)
    if spec.keep_last is not None:
        hot |= {r.version for r in versions[-spec.keep_last :]}
    ages = [parse_duration(t.after) for t in spec.tiers]
    levels = {}
    for record in versions:
        age = (now - _age_origin(record, (tiers or {}).get(record.version))).total_seconds()
        levels[record.version] = 0 if record.version in hot else sum(1 for a in ages if age >= a)
    return levels


def blob_levels(references: dict[str, set[str]], levels: dict[str, int]) -> dict[str, int]:
    """Blob -> the tier it may go to: the lowest level among the versions that reference it."""
    out: dict[str, int] = {}
    for version, blobs in references.items():
        for blob in blobs:
            out[blob] = min(out.get(blob, levels[version]), levels[version])
    return out


def read_tiers(store: ObjectStore, dataset: str) -> dict[str, TierRecord]:
    found = {}
    for info in store.list(tiers_prefix(dataset)):
        if info.key.endswith(".json"):
            tier = TierRecord.model_validate_json(store.get(info.key))
            found[tier.version] = tier
    return found


def read_tier(store: ObjectStore, dataset: str, version: str) -> TierRecord | None:
    try:
        return TierRecord.model_validate_json(store.get(tier_key(dataset, version)))
    except KeyError:
        return None


def describe(tier: TierRecord | None) -> str:
    """How `loupe versions` shows where a version's bytes are."""
    if tier is None or tier.applied == "restored":
        return ""
    since = tier.since.date().isoformat()
    if tier.storage_class not in get_args(StorageClass):  # a rule with tags only: lifecycle rules act
        return f"tagged ({tier.storage_class}) since {since}"
    state = "archived" if tier.archived() else "tier"
    how = "" if tier.applied == "storageClass" else f", as tag {TIER_TAG}: the store has no such class"
    return f"{state} ({tier.storage_class}{how}) since {since}"


def ensure_readable(store: ObjectStore, dataset: str, version: str) -> None:
    """Refuse, in one line, to read a version whose bytes are archived."""
    tier = read_tier(store, dataset, version)
    if tier is not None and tier.archived():
        raise VersionArchived(
            f"version {version} of {dataset} is archived in {tier.storage_class} since "
            f"{tier.since.date().isoformat()}; restore it with `loupe restore {dataset}@{version}`"
        )


def _blobs(store: ObjectStore, record: VersionRecord) -> set[str]:
    keys, _ = referenced_keys(store, record)
    return {k for k in keys if k.startswith(BLOBS)}


def _sizes(store: ObjectStore) -> dict[str, int]:
    return {info.key: info.size for info in store.list(BLOBS)}


@dataclass
class TierReport:
    moved: list[TierRecord] = field(default_factory=list)
    rewarmed: int = 0  # blobs moved back warmer because a younger version holds them again
    restoring: int = 0  # archived blobs of those, waiting for an S3 restore
    skipped: str = ""  # why nothing was done, when nothing could be


def apply_tiers(
    store: ObjectStore, dataset: str, spec: RetentionSpec, now: datetime | None = None
) -> TierReport:
    """Move the blobs of the versions whose age reached a tier; record each version moved."""
    report = TierReport()
    if not spec.tiers:
        return report
    if not isinstance(store, S3Store):
        report.skipped = f"storage tiers apply to S3 stores only; {store.uri} is a folder"
        return report
    now = now or utcnow()
    versions = list_versions(store, dataset)
    tiers = read_tiers(store, dataset)
    present = {r.version for r in versions}
    for version in set(tiers) - present:  # expired since it was tiered: its record says nothing now
        store.delete(tier_key(dataset, version))
    levels = plan_levels(versions, spec, tagged=[t.version for t in list_tags(store, dataset)],
                         tiers=tiers, now=now)  # fmt: skip

    def due(version: str) -> bool:
        level, tier = levels[version], tiers.get(version)
        if level == 0:
            return False
        return tier is None or tier.applied == "restored" or tier.storage_class != spec.tiers[level - 1].label

    todo = [r for r in versions if due(r.version)]
    tracked = any(t.moved for v, t in tiers.items() if v in present and t.applied != "restored")
    if not todo and not tracked:
        return report
    settled = _fingerprint(store, spec, levels)
    if not todo and _last_pass(store, dataset) == settled:
        return report  # no version due, and nothing a rewarm depends on changed: read no manifest
    references = {r.version: _blobs(store, r) for r in versions}
    elsewhere: set[str] = set()  # blobs another dataset needs: their tier is not ours to decide
    for other in known_datasets(store):
        if other != dataset:
            for record in list_versions(store, other):
                elsewhere |= _blobs(store, record)
    allowed = blob_levels(references, levels)
    for blob in elsewhere:
        allowed[blob] = 0
    if tracked:
        _rewarm(store, dataset, spec, tiers, allowed, levels, report)
    sizes = _sizes(store)
    for record in todo:
        level = levels[record.version]
        rule = spec.tiers[level - 1]
        before = tiers.get(record.version)
        tier = TierRecord(dataset=dataset, version=record.version, storage_class=rule.label,
                          applied="storageClass" if rule.storage_class else "tags", since=now,
                          moved=dict(before.moved) if before and before.applied != "restored" else {})  # fmt: skip
        for blob in sorted(references[record.version]):
            if blob not in sizes:  # named but never stored (an empty or unreadable object's digest)
                continue
            if allowed[blob] < level:
                tier.shared += 1
                continue
            if not store.set_tier(blob, rule.storage_class, {TIER_TAG: rule.label} | rule.tags):
                tier.applied = "tags"
            tier.moved[blob.rsplit("/", 1)[-1]] = rule.label
            tier.blobs += 1
            tier.bytes += sizes.get(blob, 0)
        store.put(tier_key(dataset, record.version), tier.model_dump_json(by_alias=True, indent=2).encode())
        report.moved.append(tier)
    if report.restoring:  # archived blobs wait for S3: the next pass must look again
        store.delete(tiers_pass_key(dataset))
    else:
        store.put(tiers_pass_key(dataset), json.dumps({"fingerprint": settled}).encode())
    return report


def _fingerprint(store: ObjectStore, spec: RetentionSpec, levels: dict[str, int]) -> str:
    """What a pass's outcome depends on besides the versions' contents (immutable): the tier rules, the
    level of each version (age, tags, keepLast) and which versions exist in every dataset of the store
    (a new one may hold a tiered blob again). One listing; no manifest is read."""
    records = sorted(info.key for info in store.list(DATASETS) if VERSION_RECORD.fullmatch(info.key))
    rules = [t.model_dump(mode="json") for t in spec.tiers]
    text = json.dumps({"rules": rules, "levels": levels, "records": records}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _last_pass(store: ObjectStore, dataset: str) -> str | None:
    try:
        return str(json.loads(store.get(tiers_pass_key(dataset)))["fingerprint"])
    except (KeyError, ValueError, TypeError):
        return None


def _rewarm(store: S3Store, dataset: str, spec: RetentionSpec, tiers: dict[str, TierRecord],
            allowed: dict[str, int], levels: dict[str, int], report: TierReport) -> None:  # fmt: skip
    """A blob moved to a tier and since held again by a warmer version (the same photo back, or another
    dataset) goes back to the tier that version allows. An archived one is restored first (S3 takes
    hours): it stays listed, so the next pass copies it back. A version made hot again (tagged, or among
    the newest keepLast) whose blobs are all back is recorded as restored."""
    labels = [t.label for t in spec.tiers]
    for tier in tiers.values():
        if tier.applied == "restored" or not tier.moved:
            continue
        changed = False
        for sha, label in sorted(tier.moved.items()):
            blob = blob_key(sha)
            level = labels.index(label) + 1 if label in labels else len(labels) + 1
            warmer = allowed.get(blob, level)
            if warmer >= level:
                continue
            rule = spec.tiers[warmer - 1] if warmer else None
            target = rule.storage_class if rule else "STANDARD"
            current, restoring = store.storage_class(blob)
            if current in ARCHIVE_CLASSES and target and 'ongoing-request="false"' not in restoring:
                if not restoring:  # a copy out of an archive class needs a restored copy to read
                    store.request_restore(blob, RESTORE_DAYS)
                report.restoring += 1
                continue
            store.set_tier(blob, target, {TIER_TAG: rule.label} if rule else {})
            if rule is None:
                store.drop_tags(blob, {TIER_TAG})
            del tier.moved[sha]
            if rule is not None:
                tier.moved[sha] = rule.label
            report.rewarmed += 1
            changed = True
        if changed and not tier.moved and levels.get(tier.version, 0) == 0:
            tier.applied, tier.storage_class, tier.since = "restored", "STANDARD", utcnow()
        if changed:
            store.put(tier_key(dataset, tier.version), tier.model_dump_json(by_alias=True, indent=2).encode())


@dataclass
class RestoreReport:
    version: str
    copied: int = 0  # blobs now back in STANDARD
    pending: int = 0  # archived blobs whose restore S3 is still working on
    done: bool = False


def restore(store: ObjectStore, dataset: str, version: str, *, days: int = RESTORE_DAYS) -> RestoreReport:
    """Bring a version's bytes back to STANDARD. Archived objects (GLACIER, DEEP_ARCHIVE) first need an
    S3 restore, which takes minutes to hours: this asks for it and reports them pending; run it again
    once S3 is done and the copies go back to STANDARD. Idempotent."""
    record = read_version(store, dataset, version)
    report = RestoreReport(version=record.version)
    tier = read_tier(store, dataset, record.version)
    if tier is None or tier.applied == "restored" or not isinstance(store, S3Store):
        report.done = True
        return report
    stored = _sizes(store)
    for blob in sorted(_blobs(store, record) & stored.keys()):
        storage_class, restoring = store.storage_class(blob)
        if storage_class in ARCHIVE_CLASSES and 'ongoing-request="false"' not in restoring:
            if not restoring:
                store.request_restore(blob, days)
            report.pending += 1
            continue
        store.set_tier(blob, "STANDARD", {})
        store.drop_tags(blob, {TIER_TAG})
        report.copied += 1
    if report.pending == 0:
        back = TierRecord(dataset=dataset, version=record.version, storage_class="STANDARD",
                          applied="restored", since=utcnow(), blobs=report.copied)  # fmt: skip
        store.put(tier_key(dataset, record.version), back.model_dump_json(by_alias=True, indent=2).encode())
        report.done = True
    return report
