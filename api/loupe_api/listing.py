"""How a source listing is filtered and fingerprinted. Shared by the operator (which lists sources to
notice changes) and the workers (which process them), so both agree on what changed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import PurePosixPath

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
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
    # DOTALL and \Z: a key may contain a newline, and it must still match (and not match early)
    return re.compile(f"{out}\\Z", re.DOTALL)


def matches_any(key: str, patterns: list[str]) -> bool:
    return any(glob_regex(p).match(key) for p in patterns)


def _suffix(key: str) -> str:
    """``PurePosixPath(key).suffix`` without building a path: a listing asks for millions of them."""
    name = key.rpartition("/")[2]
    if name in ("", "."):  # a trailing slash or dot component: pathlib's own rules decide
        return PurePosixPath(key).suffix
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


def media_kind(key: str) -> str | None:
    """'video' for video extensions, None for sidecar files, else 'image' (the content decides later)."""
    suffix = _suffix(key).lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in SIDECAR_EXTENSIONS:
        return None
    return "image"


def selected(key: str, include: list[str], exclude: list[str], media_kinds: list[str]) -> str | None:
    """The media kind of a listed key if the source takes it, else None."""
    if not matches_any(key, include) or matches_any(key, exclude):
        return None
    kind = media_kind(key)
    return kind if kind in media_kinds else None


def listing_digest(entries: Iterable[tuple[str, str, int, str]]) -> str:
    """Digest of (source, key, size, etag) entries: changes when any object is added, removed or changed."""
    digest = hashlib.sha256()
    for source, key, size, etag in sorted(entries):
        digest.update(f"{source}\0{key}\0{size}\0{etag}\n".encode())
    return digest.hexdigest()


def prefix_folder(prefix: str) -> str:
    """The folder every key under ``prefix`` lies in ("datasets/a/versions/" -> "datasets/a/versions",
    "datasets/a/v" -> "datasets/a", "x" -> ""): a folder store walks only that, not every blob."""
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""
