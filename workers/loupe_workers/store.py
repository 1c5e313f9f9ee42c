"""Object storage behind one small interface: a local folder or any S3-compatible store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from loupe_api.common import credential_env_names

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: key relative to the store root, size and a change tag (ETag or size+mtime)."""

    key: str
    size: int
    etag: str


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class ObjectStore(Protocol):
    """What Loupe needs from object storage."""

    @property
    def uri(self) -> str: ...

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write only if the key does not exist (atomically); True when this call wrote it."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def uri_of(self, key: str) -> str: ...


def blob_key(sha256: str) -> str:
    """Content address of raw bytes."""
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


def put_blob(store: ObjectStore, data: bytes, sha256: str | None = None) -> str:
    """Store bytes by content; a second copy costs nothing. Returns the sha256."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    key = blob_key(digest)
    if not store.exists(key):
        store.put_if_absent(key, data)
    return digest


class LocalStore:
    """A folder. Writes go through a temporary file and an atomic rename or link."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or ".." in parts:  # lexical: resolve() costs a stat per level
            raise StoreError(f"key {key!r} escapes the store root")
        return self.root / key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    def _temp(self, path: Path, data: bytes, *, durable: bool = True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f".tmp-{uuid.uuid4().hex}"
        with temp.open("wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        return temp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        temp = self._temp(path, data)
        temp.replace(path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        # Blobs are content-addressed and verifiable; an fsync each would cost more than decoding.
        durable = not key.startswith("blobs/")
        temp = self._temp(path, data, durable=durable)
        if durable:
            os.sync()  # a version record is published only after every blob it names is on disk
        try:
            os.link(temp, path)  # fails if the target exists: an atomic create-if-absent
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root
        if not base.is_dir():
            if base.exists():
                raise StoreError(f"{base} is not a folder")
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".tmp-"))
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(base).as_posix()
                if not key.startswith(prefix):
                    continue
                stat = full.stat()
                yield ObjectInfo(key=key, size=stat.st_size, etag=f"{stat.st_size}-{stat.st_mtime_ns}")

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def uri_of(self, key: str) -> str:
        return str(self._path(key))


class S3Store:
    """A bucket and prefix on S3 or any S3-compatible server; credentials from the environment."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        credentials_secret: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.credentials_secret = credentials_secret  # a name only: the keys come from the environment
        self._client: S3Client | None = None

    def __getstate__(self) -> dict[str, Any]:  # clients are not picklable; Ray ships stores to workers
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self) -> S3Client:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # this Secret's pair when the launcher passed one, else boto3's own chain (AWS_*, IRSA, ...)
            key_id, secret = credential_env_names(self.credentials_secret or "")
            if not (self.credentials_secret and key_id in os.environ and secret in os.environ):
                key_id = secret = ""
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint or None,
                region_name=self.region or os.environ.get("AWS_REGION") or "us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                ),
                aws_access_key_id=os.environ.get(key_id) if key_id else None,
                aws_secret_access_key=os.environ.get(secret) if secret else None,
            )
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from exc
            raise StoreError(f"get {self.uri_of(key)}: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise
        return True

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"][len(base) :], size=int(item["Size"]), etag=str(item["ETag"]).strip('"')
                )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials_secret: str | None = None,
) -> ObjectStore:
    """A store from s3://bucket/prefix or a folder path (file:// accepted)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(
            parsed.netloc,
            parsed.path.lstrip("/"),
            endpoint=endpoint,
            region=region,
            credentials_secret=credentials_secret,
        )
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # plain path (or a Windows drive letter)
        return LocalStore(uri)
    raise StoreError(f"unsupported store URI {uri!r}: use s3://bucket/prefix or a folder path")
