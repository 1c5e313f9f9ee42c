"""Version records in a store: listing, reading, the latest, and the atomic, idempotent commit.

The operator reads what the workers write through these functions alone; friendly lookups (tags,
"did you mean", expired versions) build on them in ``loupe_workers.versioning.versions``.
"""

from __future__ import annotations

import json

from loupe_api.keys import DATASETS, VERSION_RECORD, version_key_of, versions_prefix
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore


def _order(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def version_names(store: ObjectStore, dataset: str) -> list[str]:
    """The committed version numbers of a dataset, oldest first (one listing of its versions folder)."""
    prefix = versions_prefix(dataset)
    names = []
    for info in store.list(prefix):
        name = info.key[len(prefix) :]
        if name.endswith(".json") and name.count(".") == 3:
            names.append(name[: -len(".json")])
    return sorted(names, key=_order)


def read_record(store: ObjectStore, dataset: str, version: str) -> VersionRecord:
    """One version record; KeyError when the store does not hold it."""
    return VersionRecord.model_validate_json(store.get(version_key_of(dataset, version)))


def list_versions(store: ObjectStore, dataset: str) -> list[VersionRecord]:
    """Committed versions, oldest first."""
    return [read_record(store, dataset, v) for v in version_names(store, dataset)]


def latest_version(store: ObjectStore, dataset: str) -> VersionRecord | None:
    """The newest committed version, reading only its record."""
    names = version_names(store, dataset)
    return read_record(store, dataset, names[-1]) if names else None


def known_datasets(store: ObjectStore) -> list[str]:
    """The datasets with at least one committed version in ``store``, sorted."""
    found = {m["dataset"] for info in store.list(DATASETS) if (m := VERSION_RECORD.fullmatch(info.key))}
    return sorted(found)


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
