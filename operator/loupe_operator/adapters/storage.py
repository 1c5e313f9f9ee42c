"""What the operator reads from object storage and from sources: version records and cheap listings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loupe_api.ingest import IngestSourceSpec
from loupe_api.keys import versions_prefix
from loupe_api.listing import listing_digest, prefix_folder, selected
from loupe_api.versions import VersionRecord


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split("."))


def _s3_client(endpoint: str | None, region: str | None, credentials: dict[str, str] | None = None) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or os.environ.get("AWS_REGION") or "us-east-1",
        aws_access_key_id=(credentials or {}).get("access_key_id"),
        aws_secret_access_key=(credentials or {}).get("secret_access_key"),
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5, read_timeout=20
        ),
    )


def _objects(
    uri: str, prefix: str, endpoint: str | None, region: str | None, credentials: dict[str, str] | None
) -> Iterator[tuple[str, int, str]]:
    """(key relative to uri, size, etag) under uri/prefix, for s3:// or a folder."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        base = parsed.path.strip("/")
        base = f"{base}/" if base else ""
        client = _s3_client(endpoint, region, credentials)
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=parsed.netloc, Prefix=base + prefix
        ):
            for item in page.get("Contents", []):
                yield item["Key"][len(base) :], int(item["Size"]), str(item["ETag"]).strip('"')
        return
    root = Path(parsed.path if parsed.scheme == "file" else uri)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    start = root / prefix_folder(prefix)  # the versions of one dataset, not every blob of the store
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".tmp-"):
                continue
            full = Path(dirpath) / name
            # a name that is not UTF-8 still gets a key (its bad bytes as \\xNN), or the digest fails
            key = os.fsencode(full.relative_to(root).as_posix()).decode("utf-8", "backslashreplace")
            if key.startswith(prefix):
                try:
                    stat = full.stat()
                except OSError:  # a dangling link, a loop, a file gone: the job records it with its reason
                    yield key, 0, "unreadable"
                    continue
                yield key, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}"


def _read(
    uri: str, key: str, endpoint: str | None, region: str | None, credentials: dict[str, str] | None
) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        base = parsed.path.strip("/")
        full = f"{base}/{key}" if base else key
        body: bytes = (
            _s3_client(endpoint, region, credentials)
            .get_object(Bucket=parsed.netloc, Key=full)["Body"]
            .read()
        )
        return body
    root = Path(parsed.path if parsed.scheme == "file" else uri)
    return (root / key).read_bytes()


def read_versions(
    store_uri: str, dataset: str, endpoint: str | None = None, region: str | None = None,
    credentials: dict[str, str] | None = None,
) -> list[VersionRecord]:  # fmt: skip
    """Committed versions of a dataset, oldest first (the workers write them; see loupe_api.versions)."""
    prefix = versions_prefix(dataset)
    try:
        names = [
            key[len(prefix) : -len(".json")]
            for key, _, _ in _objects(store_uri, prefix, endpoint, region, credentials)
            if key.endswith(".json") and key.count(".") == 3
        ]
    except FileNotFoundError:
        return []
    names.sort(key=_version_key)
    return [
        VersionRecord.model_validate_json(
            _read(store_uri, f"{prefix}{n}.json", endpoint, region, credentials)
        )
        for n in names
    ]


@dataclass(frozen=True)
class Scan:
    objects: int
    bytes: int
    digest: str


def scan_source(name: str, spec: IngestSourceSpec, credentials: dict[str, str] | None = None) -> Scan:
    """A cheap listing of the media objects a source holds (keys, sizes, ETags; no content)."""
    if spec.s3 is not None:
        uri, endpoint, region = f"s3://{spec.s3.bucket}", spec.s3.endpoint, spec.s3.region
        prefix = f"{spec.s3.prefix.strip('/')}/" if spec.s3.prefix.strip("/") else ""
    else:
        assert spec.filesystem is not None
        uri, endpoint, region, prefix = spec.filesystem.path, None, None, ""
    entries = []
    for key, size, etag in _objects(uri, prefix, endpoint, region, credentials):
        relative = key[len(prefix) :] if spec.s3 is not None else key
        if selected(relative, spec.include, spec.exclude, list(spec.media_kinds)) is not None:
            entries.append((name, relative, size, etag))
    return Scan(objects=len(entries), bytes=sum(e[2] for e in entries), digest=listing_digest(entries))


@dataclass(frozen=True)
class StoreLocation:
    """Where a Dataset's versions live, with what the operator needs to reach it (credentials in memory only)."""

    uri: str
    endpoint: str | None = None
    region: str | None = None
    credentials: dict[str, str] | None = field(default=None, repr=False)

    def read_versions(self, dataset: str) -> list[VersionRecord]:
        return read_versions(self.uri, dataset, self.endpoint, self.region, self.credentials)

    def read_optional(self, key: str) -> bytes | None:
        """The object at ``key``, or None when there is none (yet)."""
        try:
            return _read(self.uri, key, self.endpoint, self.region, self.credentials)
        except FileNotFoundError:
            return None
        except Exception as exc:  # boto3's NoSuchKey carries its code in the response
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def write(self, key: str, data: bytes) -> None:
        parsed = urlparse(self.uri)
        if parsed.scheme == "s3":
            base = parsed.path.strip("/")
            _s3_client(self.endpoint, self.region, self.credentials).put_object(
                Bucket=parsed.netloc, Key=f"{base}/{key}" if base else key, Body=data
            )
            return
        path = Path(parsed.path if parsed.scheme == "file" else self.uri) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".tmp-{path.name}")
        partial.write_bytes(data)
        partial.replace(path)  # readers never see half a record

    def list_keys(self, prefix: str) -> list[str]:
        try:
            return [
                key for key, _, _ in _objects(self.uri, prefix, self.endpoint, self.region, self.credentials)
            ]
        except FileNotFoundError:
            return []
