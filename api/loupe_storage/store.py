"""Object storage behind one small interface: a local folder or any S3-compatible store.

The one client both the operator and the workers use; keys are built by ``loupe_api.keys``."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat as stat_module
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from loupe_api import keys
from loupe_api.common import credential_env_names
from loupe_api.listing import prefix_folder

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: key relative to the store root, size and a change tag (ETag or size+mtime)."""

    key: str
    size: int
    etag: str


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation; the message is one line naming where."""


def os_reason(exc: OSError) -> str:
    """'no space left on device (ENOSPC)': the cause of an OSError in words and its errno name."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror.lower() if exc.strerror else str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def _os_error(action: str, path: object, exc: OSError) -> StoreError:
    return StoreError(f"cannot {action} {exc.filename or path}: {os_reason(exc)}")


TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600.0  # no live writer leaves a temp file untouched this long


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


blob_key = keys.blob_key  # re-exported: the content address of raw bytes


def put_blob(store: ObjectStore, data: bytes, sha256: str | None = None) -> str:
    """Store bytes by content; a second copy costs nothing. Returns the sha256."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    key = blob_key(digest)
    if not store.exists(key):
        store.put_if_absent(key, data)
    return digest


class LocalStore:
    """A folder. Writes go through a temporary file and an atomic rename or link.

    Every OSError (disk full, read-only file system, permission denied) becomes a one-line StoreError
    naming the path and the cause; a failed write removes its temporary file, and ``sweep_temp`` removes
    the ones a killed process left behind.
    """

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
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        except OSError as exc:
            raise _os_error("read", path, exc) from exc

    def mkdir(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error("create folder", folder, exc) from exc

    def _temp(self, path: Path, data: bytes, *, durable: bool = True) -> Path:
        self.mkdir(path.parent)
        temp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            _discard(temp)
            raise StoreError(f"cannot write {path}: {os_reason(exc)}") from exc
        return temp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        temp = self._temp(path, data)
        try:
            temp.replace(path)
        except OSError as exc:
            _discard(temp)
            raise StoreError(f"cannot write {path}: {os_reason(exc)}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        # Blobs are content-addressed and verifiable; an fsync each would cost more than decoding.
        durable = not key.startswith(keys.BLOBS)
        temp = self._temp(path, data, durable=durable)
        if durable:
            os.sync()  # a version record is published only after every blob it names is on disk
        try:
            os.link(temp, path)  # fails if the target exists: an atomic create-if-absent
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {os_reason(exc)}") from exc
        finally:
            _discard(temp)
        return True

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return path.is_file()
        except OSError as exc:
            raise _os_error("read", path, exc) from exc

    def sweep_temp(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Remove the ``.tmp-*`` files a killed writer left, when untouched for ``older_than`` seconds
        (a live writer's are newer, so a concurrent run is never disturbed). Best effort: never raises.
        Returns how many were removed."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(TEMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                try:
                    info = full.lstat()
                    if stat_module.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                        full.unlink()
                        removed += 1
                except OSError:
                    continue
        return removed

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root
        if not base.is_dir():
            if base.exists():
                raise StoreError(f"{base} is not a folder")
            return
        start = base / prefix_folder(prefix)
        if start != base and not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start, onerror=_raise_list_error):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(TEMP_PREFIX))
            for name in sorted(filenames):
                if name.startswith(TEMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(base).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = full.stat()
                except FileNotFoundError:
                    continue  # deleted since the folder was read
                except OSError as exc:
                    raise _os_error("read", full, exc) from exc
                yield ObjectInfo(key=key, size=stat.st_size, etag=f"{stat.st_size}-{stat.st_mtime_ns}")

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error("delete", path, exc) from exc

    def uri_of(self, key: str) -> str:
        return str(self._path(key))


def _discard(temp: Path) -> None:
    with contextlib.suppress(OSError):  # on a read-only file system the temp file was never created
        temp.unlink(missing_ok=True)


def _raise_list_error(exc: OSError) -> None:
    raise _os_error("list", exc.filename, exc) from exc


@dataclass(frozen=True)
class AccessKeys:
    """An S3 key pair held in memory (the operator reads it from a Secret); never printed."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


S3_MAX_ATTEMPTS = 3  # AWS_MAX_ATTEMPTS overrides; a server that refuses connections fails in seconds
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
              "403", "Forbidden"}  # fmt: skip


class S3Store:
    """A bucket and prefix on S3 or any S3-compatible server.

    Credentials: ``access_keys`` when given (the operator's, from a Secret), else the pair the launcher
    put in the environment for ``credentials_secret``, else boto3's own chain (AWS_*, IRSA, ...).

    Connection, credential and permission failures become a one-line StoreError naming the endpoint and
    the bucket.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        credentials_secret: str | None = None,
        access_keys: AccessKeys | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.credentials_secret = credentials_secret  # a name only: the keys come from the environment
        self.access_keys = access_keys
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

            access_key_id, secret_access_key = self._credentials()
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint or None,
                region_name=self.region or os.environ.get("AWS_REGION") or "us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": _max_attempts(), "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                ),
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
            )
        return self._client

    def _credentials(self) -> tuple[str | None, str | None]:
        """The explicit pair, else this Secret's pair when the launcher passed one, else (None, None):
        boto3's own chain (AWS_*, IRSA, ...)."""
        if self.access_keys is not None:
            return self.access_keys.access_key_id, self.access_keys.secret_access_key
        key_id, secret = credential_env_names(self.credentials_secret or "")
        if self.credentials_secret and key_id in os.environ and secret in os.environ:
            return os.environ[key_id], os.environ[secret]
        return None, None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def endpoint_url(self) -> str:
        """The endpoint requests go to (the client's: boto3 also reads AWS_ENDPOINT_URL)."""
        if self._client is not None:
            return str(self._client.meta.endpoint_url)
        return self.endpoint or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str | None, exc: Exception) -> StoreError:
        """One line naming the endpoint and the bucket, for any boto3/botocore failure."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = f"{self.uri_of(key) if key is not None else self.uri} at {self.endpoint_url}"
        if isinstance(exc, EndpointConnectionError):
            return StoreError(f"cannot connect to S3 endpoint {self.endpoint_url} (bucket {self.bucket}): "
                              "is the server up and the endpoint (AWS_ENDPOINT_URL) right?")  # fmt: skip
        if isinstance(exc, NoCredentialsError):
            return StoreError(f"no S3 credentials for bucket {self.bucket} at {self.endpoint_url}: "
                              "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")  # fmt: skip
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            message = " ".join(str(error.get("Message") or "").split())
            detail = f"{code}: {message}" if message else code
            if code in _S3_DENIED:
                return StoreError(f"S3 denied {action} {where} ({detail}): check the credentials and the "
                                  f"bucket policy for {self.bucket}")  # fmt: skip
            if code == "NoSuchBucket":
                return StoreError(f"bucket {self.bucket} does not exist at {self.endpoint_url}")
            return StoreError(f"S3 {action} {where} failed: {detail}")
        text = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(f"S3 {action} {where} failed: {text}")

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from exc
            raise self._error("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("read", key, exc) from exc

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._error("write", key, exc) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise self._error("write", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("write", key, exc) from exc
        return True

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self._error("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("read", key, exc) from exc
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = f"{self.prefix}/" if self.prefix else ""
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"][len(base) :],
                        size=int(item["Size"]),
                        etag=str(item["ETag"]).strip('"'),
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._error("list", prefix, exc) from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("delete", key, exc) from exc

    # --- storage tiers (versioning/tiers.py) ----------------------------------------------------------

    def storage_class(self, key: str) -> tuple[str, str]:
        """(storage class, the x-amz-restore header or "") of one object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("read", key, exc) from exc
        return str(head.get("StorageClass") or "STANDARD"), str(head.get("Restore") or "")

    def set_tier(self, key: str, storage_class: str | None, tags: dict[str, str]) -> bool:
        """Copy the object onto itself in ``storage_class`` (skipped when already there) and merge
        ``tags`` into its tags. False when the store refused the class (MinIO accepts only STANDARD and
        REDUCED_REDUNDANCY unless a tier is configured): then only the tags were set."""
        from botocore.exceptions import BotoCoreError, ClientError

        applied = True
        try:
            if storage_class is not None and self.storage_class(key)[0] != storage_class:
                try:  # one request up to 5 GB, which photos and frames are far below
                    self.client.copy_object(Bucket=self.bucket, Key=self._key(key), StorageClass=storage_class,  # type: ignore[arg-type]
                                            CopySource={"Bucket": self.bucket, "Key": self._key(key)},
                                            MetadataDirective="COPY", TaggingDirective="COPY")  # fmt: skip
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "InvalidStorageClass":
                        raise
                    applied = False
            if tags:
                current = self.client.get_object_tagging(Bucket=self.bucket, Key=self._key(key))["TagSet"]
                merged = {t["Key"]: t["Value"] for t in current} | tags
                self.client.put_object_tagging(Bucket=self.bucket, Key=self._key(key), Tagging={
                    "TagSet": [{"Key": k, "Value": v} for k, v in sorted(merged.items())]})  # fmt: skip
        except (BotoCoreError, ClientError) as exc:
            raise self._error("move", key, exc) from exc
        return applied

    def drop_tags(self, key: str, names: set[str]) -> None:
        """Remove the named tags of one object (a restore takes back the tier tags)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            current = self.client.get_object_tagging(Bucket=self.bucket, Key=self._key(key))["TagSet"]
            kept = [t for t in current if t["Key"] not in names]
            if len(kept) != len(current):
                self.client.put_object_tagging(
                    Bucket=self.bucket, Key=self._key(key), Tagging={"TagSet": kept}
                )
        except (BotoCoreError, ClientError) as exc:
            raise self._error("retag", key, exc) from exc

    def request_restore(self, key: str, days: int) -> None:
        """Ask S3 for a temporary readable copy of an archived (GLACIER, DEEP_ARCHIVE) object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.restore_object(Bucket=self.bucket, Key=self._key(key), RestoreRequest={"Days": days})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "RestoreAlreadyInProgress":
                raise self._error("restore", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("restore", key, exc) from exc

    def uri_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def _max_attempts() -> int:
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS))
    except ValueError:
        return S3_MAX_ATTEMPTS


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials_secret: str | None = None,
    access_keys: AccessKeys | None = None,
) -> ObjectStore:
    """A store from s3://bucket/prefix or a folder path (file:// accepted); ``access_keys`` (S3 only)
    override the environment's."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(
            parsed.netloc,
            parsed.path.lstrip("/"),
            endpoint=endpoint,
            region=region,
            credentials_secret=credentials_secret,
            access_keys=access_keys,
        )
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # plain path (or a Windows drive letter)
        return LocalStore(uri)
    raise StoreError(f"unsupported store URI {uri!r}: use s3://bucket/prefix or a folder path")
