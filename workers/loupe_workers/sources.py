"""Listing sources: include/exclude globs, media kinds, and the store behind each source."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from loupe_api.ingest import IngestSourceSpec
from loupe_workers.media import VIDEO_EXTENSIONS
from loupe_workers.store import LocalStore, ObjectInfo, ObjectStore, S3Store

# Files that sit beside images (annotations, notes) and are never treated as media.
SIDECAR_EXTENSIONS = frozenset(
    {".txt", ".json", ".csv", ".tsv", ".md", ".yaml", ".yml", ".xml", ".html", ".log", ".ini", ".toml"}
)


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob where * and ? stay within one path segment and ** crosses segments."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def matches_any(key: str, patterns: list[str]) -> bool:
    return any(glob_regex(p).match(key) for p in patterns)


def media_kind(key: str) -> str | None:
    """'video' for video extensions, None for sidecar files, else 'image' (the content decides later)."""
    suffix = PurePosixPath(key).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in SIDECAR_EXTENSIONS:
        return None
    return "image"


def source_store(spec: IngestSourceSpec, base_dir: Path | None = None) -> ObjectStore:
    """The store a source reads from; relative folder paths resolve against ``base_dir``."""
    if spec.s3 is not None:
        return S3Store(spec.s3.bucket, spec.s3.prefix, endpoint=spec.s3.endpoint, region=spec.s3.region)
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
        kind = media_kind(info.key)
        if kind is None:
            others.append(info)
            continue
        if kind not in spec.media_kinds:
            continue
        media.append(ListedObject(name, info.key, info.size, info.etag, kind, store.uri_of(info.key)))
    media.sort(key=lambda o: o.key)
    return media, others


def listing_digest(objects: list[ListedObject]) -> str:
    """Digest of what was listed: changes when any object is added, removed or changed."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: (o.source, o.key)):
        digest.update(f"{obj.source}\0{obj.key}\0{obj.size}\0{obj.etag}\n".encode())
    return digest.hexdigest()
