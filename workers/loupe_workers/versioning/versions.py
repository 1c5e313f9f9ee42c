"""Friendly lookups over the version records ``loupe_storage.versions`` reads and writes: by number or
tag, with one-line errors that say what the store does hold; tags and expiry markers."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime

from loupe_api.keys import expired_key, tag_key, tags_prefix
from loupe_api.retention import ExpiredVersion
from loupe_api.tags import SEMVER, TagRecord
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_storage.versions import known_datasets, latest_version, read_record, version_names


def suggestion(name: str, choices: list[str], what: str) -> str:
    """'; did you mean X?' for a near miss, else the choices there are (at most 10), for one-line errors."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    if not choices:
        return f"; no {what} there yet"
    shown = ", ".join(choices[:10]) + (f" and {len(choices) - 10} more" if len(choices) > 10 else "")
    return f"; {what} there: {shown}"


class UnknownVersion(LookupError):
    """A dataset or version the store does not hold; the message (one line) names the store and says
    what it does hold."""


class DatasetNotFound(UnknownVersion):
    """No committed version of the dataset in the store."""


class VersionNotFound(UnknownVersion):
    """The dataset exists but has no such version."""


def read_version(store: ObjectStore, dataset: str, version: str) -> VersionRecord:
    try:
        return read_record(store, dataset, version)
    except KeyError as exc:
        gone = read_expired(store, dataset, version)
        if gone is not None:
            raise VersionNotFound(
                f"version {version} of {dataset} expired on {gone.expired.date().isoformat()} "
                f"({gone.reason}); its data is gone from {store.uri}"
            ) from exc
        versions = version_names(store, dataset)
        if not versions:
            raise DatasetNotFound(no_dataset_message(store, dataset)) from exc
        raise VersionNotFound(
            f"dataset {dataset} has no version {version} in {store.uri}{suggestion(version, versions, 'versions')}"
        ) from exc


def no_dataset_message(store: ObjectStore, dataset: str) -> str:
    return f"dataset {dataset} has no versions in {store.uri}{suggestion(dataset, known_datasets(store), 'datasets')}"


def resolve_version(store: ObjectStore, dataset: str, version: str | None = None) -> VersionRecord:
    """A version by number or by tag (``production``), or the latest; UnknownVersion (a LookupError)
    when there is none."""
    if version is not None and not SEMVER.match(version):
        tag = read_tag(store, dataset, version)
        if tag is not None:
            return read_version(store, dataset, tag.version)
        versions = version_names(store, dataset)
        if not versions:
            raise DatasetNotFound(no_dataset_message(store, dataset))
        choices = versions + list_tag_names(store, dataset)
        raise VersionNotFound(f"dataset {dataset} has no version or tag {version} in {store.uri}"
                              f"{suggestion(version, choices, 'versions and tags')}")  # fmt: skip
    if version is not None:
        return read_version(store, dataset, version)
    latest = latest_version(store, dataset)
    if latest is None:
        raise DatasetNotFound(no_dataset_message(store, dataset))
    return latest


def read_expired(store: ObjectStore, dataset: str, version: str) -> ExpiredVersion | None:
    try:
        return ExpiredVersion.model_validate_json(store.get(expired_key(dataset, version)))
    except KeyError:
        return None


def read_tag(store: ObjectStore, dataset: str, name: str) -> TagRecord | None:
    try:
        return TagRecord.model_validate_json(store.get(tag_key(dataset, name)))
    except KeyError:
        return None


def list_tag_names(store: ObjectStore, dataset: str) -> list[str]:
    prefix = tags_prefix(dataset)
    return sorted(i.key[len(prefix) : -len(".json")] for i in store.list(prefix) if i.key.endswith(".json"))


def list_tags(store: ObjectStore, dataset: str) -> list[TagRecord]:
    """Every tag of a dataset, by name."""
    return [t for name in list_tag_names(store, dataset) if (t := read_tag(store, dataset, name)) is not None]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
