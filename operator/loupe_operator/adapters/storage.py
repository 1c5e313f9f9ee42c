"""What the operator reads from object storage and from sources: version records and cheap listings.

Stores and S3 sources are reached through ``loupe_storage``, the client the workers use; only the
defensive walk of a source folder (which must list what it cannot read) is the operator's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from loupe_api.ingest import IngestSourceSpec
from loupe_api.listing import listing_digest, selected
from loupe_api.versions import VersionRecord
from loupe_storage.store import AccessKeys, ObjectStore, S3Store, open_store
from loupe_storage.versions import list_versions


def access_keys(credentials: dict[str, str] | None) -> AccessKeys | None:
    """The pair ``kube.s3_credentials`` read from a Secret, for the shared client."""
    if credentials is None:
        return None
    return AccessKeys(credentials["access_key_id"], credentials["secret_access_key"])


def _folder_objects(root: Path) -> Iterator[tuple[str, int, str]]:
    """(key, size, change tag) of every file under a source folder; one it cannot stat is still listed."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".tmp-"):
                continue
            full = Path(dirpath) / name
            # a name that is not UTF-8 still gets a key (its bad bytes as \\xNN), or the digest fails
            key = os.fsencode(full.relative_to(root).as_posix()).decode("utf-8", "backslashreplace")
            try:
                stat = full.stat()
            except OSError:  # a dangling link, a loop, a file gone: the job records it with its reason
                yield key, 0, "unreadable"
                continue
            yield key, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}"


@dataclass(frozen=True)
class Scan:
    objects: int
    bytes: int
    digest: str


def scan_source(name: str, spec: IngestSourceSpec, credentials: dict[str, str] | None = None) -> Scan:
    """A cheap listing of the media objects a source holds (keys, sizes, ETags; no content)."""
    if spec.s3 is not None:
        prefix = f"{spec.s3.prefix.strip('/')}/" if spec.s3.prefix.strip("/") else ""
        bucket = S3Store(spec.s3.bucket, endpoint=spec.s3.endpoint, region=spec.s3.region,
                         access_keys=access_keys(credentials))  # fmt: skip
        listed: Iterator[tuple[str, int, str]] = (
            (i.key[len(prefix) :], i.size, i.etag) for i in bucket.list(prefix)
        )
    else:
        assert spec.filesystem is not None
        listed = _folder_objects(Path(spec.filesystem.path))
    entries = [
        (name, relative, size, etag)
        for relative, size, etag in listed
        if selected(relative, spec.include, spec.exclude, list(spec.media_kinds)) is not None
    ]
    return Scan(objects=len(entries), bytes=sum(e[2] for e in entries), digest=listing_digest(entries))


@dataclass(frozen=True)
class StoreLocation:
    """Where a Dataset's versions live, with what the operator needs to reach it (credentials in memory only)."""

    uri: str
    endpoint: str | None = None
    region: str | None = None
    credentials: dict[str, str] | None = field(default=None, repr=False)

    @cached_property
    def store(self) -> ObjectStore:  # one client per reconcile
        return open_store(self.uri, endpoint=self.endpoint, region=self.region,
                          access_keys=access_keys(self.credentials))  # fmt: skip

    def read_versions(self, dataset: str) -> list[VersionRecord]:
        """Committed versions of a dataset, oldest first (the workers write them)."""
        return list_versions(self.store, dataset)

    def read_optional(self, key: str) -> bytes | None:
        """The object at ``key``, or None when there is none (yet)."""
        try:
            return self.store.get(key)
        except KeyError:
            return None

    def write(self, key: str, data: bytes) -> None:
        self.store.put(key, data)  # atomic on both: readers never see half a record
