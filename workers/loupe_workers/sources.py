"""Listing sources: include/exclude globs, media kinds, and the store behind each source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loupe_api.ingest import IngestSourceSpec
from loupe_api.listing import listing_digest as _digest
from loupe_api.listing import matches_any, media_kind, selected
from loupe_workers.store import LocalStore, ObjectInfo, ObjectStore, S3Store


def source_store(spec: IngestSourceSpec, base_dir: Path | None = None) -> ObjectStore:
    """The store a source reads from; relative folder paths resolve against ``base_dir``."""
    if spec.s3 is not None:
        secret = spec.s3.credentials_secret_ref
        return S3Store(
            spec.s3.bucket,
            spec.s3.prefix,
            endpoint=spec.s3.endpoint,
            region=spec.s3.region,
            credentials_secret=secret.name if secret else None,
        )
    assert spec.filesystem is not None
    path = Path(spec.filesystem.path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return LocalStore(path)


@dataclass(frozen=True)
class ListedObject:
    """A media object found in a source."""

    source: str
    key: str
    size: int
    etag: str
    kind: str  # image or video
    uri: str


def list_media(
    name: str, spec: IngestSourceSpec, store: ObjectStore
) -> tuple[list[ListedObject], list[ObjectInfo]]:
    """Media objects of the source (sorted by key), and the other listed objects (sidecars, label files)."""
    media: list[ListedObject] = []
    others: list[ObjectInfo] = []
    for info in store.list():
        if not matches_any(info.key, spec.include) or matches_any(info.key, spec.exclude):
            continue
        if media_kind(info.key) is None:
            others.append(info)
            continue
        kind = selected(info.key, spec.include, spec.exclude, list(spec.media_kinds))
        if kind is not None:
            media.append(ListedObject(name, info.key, info.size, info.etag, kind, store.uri_of(info.key)))
    media.sort(key=lambda o: o.key)
    return media, others


def listing_digest(objects: list[ListedObject]) -> str:
    """Digest of what was listed: changes when any object is added, removed or changed."""
    return _digest((o.source, o.key, o.size, o.etag) for o in objects)
