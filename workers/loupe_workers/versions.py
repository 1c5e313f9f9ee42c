"""Version records in storage: listing, reading, and the atomic, idempotent commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from loupe_api.versions import VersionRecord
from loupe_workers.semver import version_key
from loupe_workers.store import ObjectStore


def dataset_prefix(dataset: str) -> str:
    return f"datasets/{dataset}"


def version_key_of(dataset: str, version: str) -> str:
    return f"{dataset_prefix(dataset)}/versions/{version}.json"


def run_prefix(dataset: str, run_id: str) -> str:
    return f"{dataset_prefix(dataset)}/runs/{run_id}"


def list_versions(store: ObjectStore, dataset: str) -> list[VersionRecord]:
    """Committed versions, oldest first."""
    prefix = f"{dataset_prefix(dataset)}/versions/"
    names = []
    for info in store.list(prefix):
        name = info.key[len(prefix) :]
        if name.endswith(".json") and name.count(".") == 3:
            names.append(name[: -len(".json")])
    names.sort(key=version_key)
    return [read_version(store, dataset, v) for v in names]


def read_version(store: ObjectStore, dataset: str, version: str) -> VersionRecord:
    try:
        data = store.get(version_key_of(dataset, version))
    except KeyError as exc:
        raise LookupError(f"{dataset} has no version {version}") from exc
    return VersionRecord.model_validate_json(data)


def resolve_version(store: ObjectStore, dataset: str, version: str | None = None) -> VersionRecord:
    """A named version, or the latest; LookupError when there is none."""
    if version is not None:
        return read_version(store, dataset, version)
    latest = latest_version(store, dataset)
    if latest is None:
        raise LookupError(f"dataset {dataset} has no versions in {store.uri}")
    return latest


def latest_version(store: ObjectStore, dataset: str) -> VersionRecord | None:
    versions = list_versions(store, dataset)
    return versions[-1] if versions else None


class CommitConflict(RuntimeError):
    """Another run committed the same version number first."""


def commit_version(store: ObjectStore, record: VersionRecord) -> tuple[VersionRecord, bool]:
    """Write the version record if absent. Returns the committed record and whether this call wrote it:
    (ours, True), or (the one another attempt of the same run committed, False): a retried run, or two
    identical runs at once, which share the deterministic run id. Raises CommitConflict otherwise."""
    key = version_key_of(record.dataset, record.version)
    body = json.dumps(record.to_wire(), indent=2, sort_keys=True).encode()
    if store.put_if_absent(key, body):
        return record, True
    existing = VersionRecord.model_validate_json(store.get(key))
    if existing.run_id == record.run_id:
        return existing, False
    raise CommitConflict(
        f"{record.dataset} {record.version} was committed by run {existing.run_id} while run {record.run_id} "
        "was computing it; run again to build on it"
    )


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
