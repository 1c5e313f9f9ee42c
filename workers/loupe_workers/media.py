"""Reading one image: real format from the bytes, header checks before decoding, one reduced decode."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from loupe_workers import metrics

# Loupe enforces its own pixel limit before decoding; Pillow's check would raise instead of reporting.
Image.MAX_IMAGE_PIXELS = None
# The working image that feeds every metric and hash has a long side in [WORKING_SIZE, 2 * WORKING_SIZE):
# JPEGs get there by DCT scaling during decode (draft), other formats by an integer box reduction.
WORKING_SIZE = 128

_PIL_FORMATS = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "GIF": "gif",
}
_EXTENSIONS = {
    "jpeg": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "png": {".png"},
    "webp": {".webp"},
    "bmp": {".bmp", ".dib"},
    "tiff": {".tif", ".tiff"},
    "gif": {".gif"},
}
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}


def sniff_format(data: bytes) -> str | None:
    """Real format from magic numbers: an image format, 'video', or None."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if (
        head[4:8] == b"ftyp"
        or head[:4] == b"\x1a\x45\xdf\xa3"
        or (head[:4] == b"RIFF" and head[8:11] == b"AVI")
    ):
        return "video"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video"
    return None


def extension_matches(extension: str, real_format: str) -> bool:
    """Whether a file extension names the real format."""
    return extension.lower() in _EXTENSIONS.get(real_format, set())


class ImageRejected(Exception):
    """An image that cannot be analysed; ``reason`` is a gate name (corrupt, format, max_pixels)."""

    def __init__(self, reason: str, detail: str, *, width: int = 0, height: int = 0, fmt: str | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.width = width
        self.height = height
        self.format = fmt


@dataclass
class ImageAnalysis:
    """Everything derived from one decode of one image."""

    format: str
    width: int
    height: int
    metrics: dict[str, float]
    hashes: dict[str, str]
    exif: dict[str, Any] = field(default_factory=dict)


def _exif_fields(image: Image.Image) -> tuple[dict[str, Any], int]:
    """Capture time, camera and GPS from EXIF, and the orientation tag."""
    exif = image.getexif()
    if not exif:
        return {}, 1
    out: dict[str, Any] = {}
    orientation = int(exif.get(ExifTags.Base.Orientation, 1) or 1)
    make, model = exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model)
    if make:
        out["camera_make"] = str(make).strip("\x00 ")
    if model:
        out["camera_model"] = str(model).strip("\x00 ")
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    captured = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    if captured:
        out["capture_time"] = _exif_time(str(captured))
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    if gps:
        lat = _gps_degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef))
        lon = _gps_degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef))
        if lat is not None and lon is not None:
            out["gps_lat"], out["gps_lon"] = round(lat, 7), round(lon, 7)
    return out, orientation


def _exif_time(text: str) -> str:
    """EXIF 'YYYY:MM:DD HH:MM:SS' as ISO 8601."""
    text = text.strip("\x00 ")
    if len(text) >= 19 and text[4] == ":" and text[7] == ":":
        return f"{text[0:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"
    return text


def _gps_degrees(value: Any, ref: Any) -> float | None:
    try:
        degrees, minutes, seconds = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    result = degrees + minutes / 60 + seconds / 3600
    return -result if str(ref).upper() in ("S", "W") else result


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open lazily and check the header: format and declared size, before any pixel is decoded."""
    if not data:
        raise ImageRejected("corrupt", "empty file")
    real = sniff_format(data)
    # Re-asserted on every call: another import may have restored Pillow's limit, whose check
    # would report a bomb (or a large image within max_pixels) as corrupt.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Exception as exc:
        detail = "not an image" if real is None else f"unreadable {real} header: {exc}"
        raise ImageRejected("corrupt", detail, fmt=real) from exc
    fmt = _PIL_FORMATS.get(image.format or "")
    width, height = image.size
    if fmt is None:
        raise ImageRejected("format", f"unsupported format {image.format}", width=width, height=height)
    if width * height > max_pixels:
        raise ImageRejected(
            "max_pixels",
            f"declares {width}x{height} = {width * height} pixels, above the limit of {max_pixels}",
            width=width,
            height=height,
            fmt=fmt,
        )
    return image


def analyze_image(data: bytes, *, max_pixels: int, hash_kind: str = "phash") -> ImageAnalysis:
    """One reduced-scale decode of ``data`` feeding every metric and hash; raises ImageRejected."""
    image = open_image(data, max_pixels=max_pixels)
    fmt = _PIL_FORMATS[image.format or ""]
    width, height = image.size
    try:
        exif, orientation = _exif_fields(image)
    except Exception:  # broken EXIF must not lose the image
        exif, orientation = {}, 1
    try:
        if fmt == "jpeg" and max(width, height) >= 2 * WORKING_SIZE:
            scale = WORKING_SIZE / max(width, height)
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()
        working = _to_rgb(image)
        factor = max(working.size) // WORKING_SIZE
        if factor >= 2:
            working = working.reduce(factor)
    except ImageRejected:
        raise
    except Exception as exc:
        raise ImageRejected("corrupt", f"decode failed: {exc}", width=width, height=height, fmt=fmt) from exc
    if orientation != 1:
        working.info["exif"] = image.info.get("exif", b"")
        working = ImageOps.exif_transpose(working) or working
        if orientation in _ROTATING_ORIENTATIONS:
            width, height = height, width
    grey_image = working.convert("L")
    grey = np.asarray(grey_image, dtype=np.uint8)
    thumb = metrics.thumbnail(working)  # exposure and blur read a 64 px thumbnail, as cleanvision does
    p99, p5 = metrics.exposure(np.asarray(thumb, dtype=np.uint8))
    values = {
        "brightness_p99": p99,
        "brightness_p5": p5,
        "sharpness": metrics.sharpness_score(thumb.convert("L")),
        "noise": metrics.noise_sigma(grey),
        "entropy": metrics.entropy_bits(grey),
        "aspect_ratio": metrics.aspect_ratio(width, height),
    }
    return ImageAnalysis(
        format=fmt,
        width=width,
        height=height,
        metrics={k: round(v, 6) for k, v in values.items()},
        hashes={hash_kind: metrics.perceptual_hash(grey_image, hash_kind)},
        exif=exif,
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) or 1.0
        return Image.fromarray((array / top * 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def pixel_digest(data: bytes) -> str:
    """sha256 of the fully decoded, orientation-applied RGB pixels and their size: equal for lossless re-encodes."""
    import hashlib

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgb = _to_rgb(ImageOps.exif_transpose(image) or image)
        digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
        digest.update(rgb.tobytes())
        return digest.hexdigest()
