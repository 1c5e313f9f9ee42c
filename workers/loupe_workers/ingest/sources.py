"""Listing sources: include/exclude globs, media kinds, and the store behind each source.

A source folder is input like any file in it, so it is read defensively (``FolderSource``): only
regular files are read; a symbolic link is followed only when it resolves inside the source root
(``followSymlinks: insideRoot``, the default) and never to a device, FIFO or socket; loops, dangling
links, unreadable folders and names that are not UTF-8 are listed as ``Unlisted`` entries with a
reason instead of stopping the run or vanishing; reads never block (O_NONBLOCK), never follow a link
swapped in after listing (O_NOFOLLOW) and are bounded by the size seen when the file was opened.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loupe_api.ingest import IngestSourceSpec
from loupe_api.listing import listing_digest as _digest
from loupe_api.listing import matches_any, media_kind, selected
from loupe_storage.store import ObjectInfo, ObjectStore, S3Store, StoreError

# Reasons of entries that are listed but never read; both are gate names (``gates.failed_gates``).
UNREADABLE = "unreadable"
TOO_LARGE = "max_file_size"


class SourceUnavailable(StoreError):
    """The source root itself is missing or cannot be read: the run must not version an empty listing."""


class SourceReadError(Exception):
    """A listed entry that cannot be read safely (permissions, type, size); ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Unlisted:
    """An entry of a source folder that is recorded with its reason but never read."""

    key: str
    reason: str
    detail: str


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _printable(name: str) -> str:
    """A name that was not UTF-8 (surrogate-escaped by the OS layer), its bad bytes written as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cause(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else type(exc).__name__


class FolderSource:
    """A source folder, listed and read so that nothing in it can hang, crash or escape the run."""

    def __init__(
        self,
        root: str | Path,
        *,
        follow_symlinks: Literal["never", "insideRoot"] = "insideRoot",
        read_margin: int = 0,
    ) -> None:
        self.given = Path(root).expanduser().absolute()
        self._given_text = str(self.given).rstrip("/")  # "/" itself: keys then join as "/key"
        self.follow_symlinks = follow_symlinks
        self.read_margin = read_margin

    @property
    def uri(self) -> str:
        return str(self.given)

    @property
    def root(self) -> Path:
        """The resolved root (a mount point may itself be a link); every read must stay inside it."""
        return self.given.resolve()

    def uri_of(self, key: str) -> str:
        clean = key and key[0] != "/" and key[-1] != "/" and "//" not in key and "/./" not in key
        if clean and not key.startswith("./") and not key.endswith("/.") and key != ".":
            return f"{self._given_text}/{key}"  # what the path join gives, without one per listed key
        return str(self.given / key)

    def _check_root(self) -> Path:
        root = self.given
        if not root.exists():
            reason = "does not exist" if not root.is_symlink() else "is a dangling link"
            raise SourceUnavailable(f"source folder {root} {reason} (unmounted, renamed or deleted?)")
        if not root.is_dir():
            raise SourceUnavailable(f"source {root} is not a folder")
        try:
            with os.scandir(root):
                pass
        except OSError as exc:
            raise SourceUnavailable(f"cannot read source folder {root}: {_cause(exc)}") from exc
        return root.resolve()

    def scan(self) -> Iterator[ObjectInfo | Unlisted]:
        """Regular files as ObjectInfo, everything else that was found as Unlisted, sorted by key."""
        real_root = self._check_root()
        yield from self._walk(real_root, real_root, "", {self._identity(real_root)})

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for entry in self.scan():
            if isinstance(entry, ObjectInfo) and entry.key.startswith(prefix):
                yield entry

    @staticmethod
    def _identity(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_dev, st.st_ino

    def _walk(
        self, real_root: Path, folder: Path, prefix: str, visited: set[tuple[int, int]]
    ) -> Iterator[ObjectInfo | Unlisted]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Unlisted(_printable(prefix), UNREADABLE, f"cannot read folder: {_cause(exc)}")
            return
        for entry in entries:
            key = prefix + entry.name
            if not _is_utf8(entry.name):
                yield Unlisted(_printable(key), UNREADABLE, "file name is not valid UTF-8")
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while listing: it is simply not there
            except OSError as exc:
                yield Unlisted(key, UNREADABLE, f"cannot stat: {_cause(exc)}")
                continue
            path: Path | None = None  # built only for links and folders: most entries are files
            if stat.S_ISLNK(st.st_mode):
                followed = self._follow(real_root, Path(entry.path), key)
                if isinstance(followed, Unlisted):
                    yield followed
                    continue
                path, st = followed
            if stat.S_ISDIR(st.st_mode):
                identity = (st.st_dev, st.st_ino)
                if identity in visited:  # a loop, or a second link to a folder already listed
                    yield Unlisted(
                        key + "/", UNREADABLE, "folder already listed through another path (link loop?)"
                    )
                    continue
                visited.add(identity)
                yield from self._walk(real_root, path or Path(entry.path), key + "/", visited)
            elif stat.S_ISREG(st.st_mode):
                yield ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_size}-{st.st_mtime_ns}")
            else:
                yield Unlisted(key, UNREADABLE, f"{_kind_of(st.st_mode)}, never read")

    def _follow(self, real_root: Path, link: Path, key: str) -> tuple[Path, os.stat_result] | Unlisted:
        if self.follow_symlinks == "never":
            return Unlisted(key, UNREADABLE, "symbolic link, not followed (followSymlinks: never)")
        try:
            target = link.resolve(strict=True)
        except FileNotFoundError:
            return Unlisted(key, UNREADABLE, f"dangling symbolic link to {link.readlink()}")
        except RuntimeError:  # Python < 3.13 reports a loop this way
            return Unlisted(key, UNREADABLE, "symbolic link loop")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return Unlisted(key, UNREADABLE, "symbolic link loop")
            return Unlisted(key, UNREADABLE, f"cannot resolve symbolic link: {_cause(exc)}")
        if not target.is_relative_to(real_root):
            return Unlisted(key, UNREADABLE, "symbolic link to a path outside the source folder, never read")
        try:
            return target, target.stat()
        except OSError as exc:
            return Unlisted(key, UNREADABLE, f"cannot stat link target: {_cause(exc)}")

    def _real_path(self, key: str) -> Path:
        """The file to open for a listed key, re-checked now: links may have changed since listing."""
        if key.startswith("/") or ".." in Path(key).parts:
            raise SourceReadError(f"key {key!r} escapes the source folder")
        path = self.given / key
        real_root = self.root
        real = path.resolve()
        if path.is_symlink() or real != real_root / key:
            if self.follow_symlinks == "never":
                raise SourceReadError("symbolic link, not followed (followSymlinks: never)")
            if not real.is_relative_to(real_root):
                raise SourceReadError("symbolic link to a path outside the source folder, never read")
        return real

    def get(self, key: str) -> bytes:
        """The file's bytes; KeyError when it vanished since listing, SourceReadError when unsafe."""
        real = self._real_path(key)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        except OSError as exc:
            raise SourceReadError(f"cannot open: {_cause(exc)}") from exc
        with os.fdopen(fd, "rb", buffering=0) as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceReadError(f"{_kind_of(st.st_mode)}, never read")
            limit = st.st_size + self.read_margin
            try:
                data = handle.read(limit + 1) or b""
            except OSError as exc:
                raise SourceReadError(f"read failed: {_cause(exc)}") from exc
        if len(data) > limit:
            raise SourceReadError(f"grew while being read (more than {limit} bytes)")
        return data

    def put(self, key: str, data: bytes) -> None:
        raise StoreError("source folders are read-only to Loupe")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        raise StoreError("source folders are read-only to Loupe")

    def exists(self, key: str) -> bool:
        try:
            return self._real_path(key).is_file()
        except SourceReadError:
            return False

    def delete(self, key: str) -> None:
        raise StoreError("source folders are read-only to Loupe")


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
    return FolderSource(path, follow_symlinks=spec.filesystem.follow_symlinks)


@dataclass(frozen=True)
class ListedObject:
    """A media object found in a source."""

    source: str
    key: str
    size: int
    etag: str
    kind: str  # image or video
    uri: str
    problem: str | None = None  # a gate reason (unreadable, max_file_size): recorded, never read
    detail: str | None = None

    def unread_id(self) -> str:
        """Sample id of an entry that was never read: there are no bytes to address it by."""
        return hashlib.sha256(f"unread\0{self.source}\0{self.key}".encode()).hexdigest()


def list_media(
    name: str, spec: IngestSourceSpec, store: ObjectStore, *, max_file_size: int | None = None
) -> tuple[list[ListedObject], list[ObjectInfo]]:
    """Media objects of the source (sorted by key), and the other listed objects (sidecars, label files).

    Entries that must not be read (see ``FolderSource``) and files above ``max_file_size`` come back
    as media objects with a ``problem``, so the version lists each of them with its reason.
    """
    media: list[ListedObject] = []
    others: list[ObjectInfo] = []
    entries = store.scan() if isinstance(store, FolderSource) else store.list()
    for entry in entries:
        if isinstance(entry, Unlisted):
            folder = entry.key.endswith("/")  # what an unreadable folder held is unknown: always listed
            kind = (
                "image" if folder else selected(entry.key, spec.include, spec.exclude, list(spec.media_kinds))
            )
            if kind is not None:
                etag = "unread-" + hashlib.sha256(entry.detail.encode()).hexdigest()[:16]
                media.append(ListedObject(name, entry.key, 0, etag, kind, store.uri_of(entry.key),
                                          entry.reason, entry.detail))  # fmt: skip
            continue
        info = entry
        if not matches_any(info.key, spec.include) or matches_any(info.key, spec.exclude):
            continue
        if media_kind(info.key) is None:
            others.append(info)
            continue
        kind = selected(info.key, spec.include, spec.exclude, list(spec.media_kinds))
        if kind is None:
            continue
        obj = ListedObject(name, info.key, info.size, info.etag, kind, store.uri_of(info.key))
        if max_file_size is not None and info.size > max_file_size:
            detail = f"{info.size} bytes, above the limit of {max_file_size} (qualityGates.maxFileSize)"
            obj = ListedObject(name, info.key, info.size, info.etag, kind, obj.uri, TOO_LARGE, detail)
        media.append(obj)
    media.sort(key=lambda o: o.key)
    return media, others


def listing_digest(objects: list[ListedObject]) -> str:
    """Digest of what was listed: changes when any object is added, removed or changed."""
    return _digest((o.source, o.key, o.size, o.etag) for o in objects)
