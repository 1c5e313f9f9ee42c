"""Images for ``loupe serve``: thumbnails made through Loupe's guarded decode (media.decode_reduced), a
placeholder that names the reason when a blob cannot be shown, and the stored bytes with the
Content-Type of their real format once their header passed the same checks."""

from __future__ import annotations

import html
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

from loupe_workers.media import decode as media

THUMB_SIDES = (256, 1024)  # the sizes offered (?size=): grid cards and the sample page of TIFFs
CACHE_BYTES = 64 << 20
# what browsers display; other stored formats (TIFF) are shown as a large thumbnail
BROWSER_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
                 "bmp": "image/bmp"}  # fmt: skip


@dataclass(frozen=True)
class Picture:
    """A response body: an image, or a placeholder (``reason`` set) standing in for one."""

    body: bytes
    content_type: str
    reason: str | None = None
    detail: str | None = None


def placeholder(reason: str, detail: str, side: int = 256) -> Picture:
    """A small SVG saying why there is no picture."""
    height = side * 3 // 4
    text = html.escape(f"not shown: {reason}")
    body = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{height}" viewBox="0 0 {side} {height}">'
            f'<rect width="100%" height="100%" fill="#eeeeee"/><text x="50%" y="50%" font-family="sans-serif" '
            f'font-size="{max(10, side // 16)}" fill="#666" text-anchor="middle">{text}</text>'
            f"<title>{html.escape(detail[:300])}</title></svg>")  # fmt: skip
    return Picture(body.encode(), "image/svg+xml", reason, detail)


def make_thumbnail(data: bytes, side: int) -> Picture:
    """A JPEG of at most ``side`` px on its long side, upright, from one reduced decode; a placeholder
    when the header checks refuse the file or it does not decode. Never raises."""
    try:
        decoded = media.decode_reduced(data, side=max(1, side // 2), max_pixels=media.DEFAULT_MAX_PIXELS,
                                       memory_limit=media.DEFAULT_MEMORY_LIMIT)  # fmt: skip
        image = decoded.image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=82)
    except media.ImageRejected as error:
        return placeholder(error.reason, error.detail, side)
    except Exception as error:  # a hostile file must cost a placeholder, never the server
        return placeholder("corrupt", f"{type(error).__name__}: {error}", side)
    return Picture(out.getvalue(), "image/jpeg")


def original(data: bytes) -> Picture:
    """The stored bytes when a browser can show them and their header passes the decode guard (a
    decompression bomb is never handed to the browser); else a placeholder with the reason."""
    fmt = media.sniff_format(data)
    if fmt not in BROWSER_TYPES:
        return placeholder("format", f"{fmt or 'unknown'} bytes are not shown by browsers")
    try:
        media.check_image(data, max_pixels=media.DEFAULT_MAX_PIXELS, memory_limit=media.DEFAULT_MEMORY_LIMIT)
    except media.ImageRejected as error:
        return placeholder(error.reason, error.detail)
    except Exception as error:
        return placeholder("corrupt", f"{type(error).__name__}: {error}")
    return Picture(data, BROWSER_TYPES[fmt])


class ThumbnailCache:
    """Thumbnails by (sha256, side), least recently used dropped beyond ``limit`` bytes. Thread-safe."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple[str, int], Picture] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, sha256: str, side: int) -> Picture | None:
        with self._lock:
            found = self._items.get((sha256, side))
            if found is not None:
                self._items.move_to_end((sha256, side))
            return found

    def put(self, sha256: str, side: int, picture: Picture) -> None:
        with self._lock:
            if (sha256, side) in self._items or len(picture.body) > self.limit:
                return
            self._items[(sha256, side)] = picture
            self._bytes += len(picture.body)
            while self._bytes > self.limit:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.body)
