"""Reading one image: real format from the bytes, header checks before decoding, one reduced decode."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageMode

from loupe_workers.media import metrics

# Loupe enforces its own pixel limit before decoding; Pillow's check would raise instead of reporting.
Image.MAX_IMAGE_PIXELS = None
# The working image that feeds every metric and hash has a long side in [WORKING_SIZE, 2 * WORKING_SIZE):
# JPEGs get there by DCT scaling during decode (draft), other formats by an integer box reduction.
WORKING_SIZE = 128
# Fine blur and grain are measured on the same decode before it is reduced: JPEGs are drafted only down to
# a long side of DETAIL_SIDE-2047 px (the photo itself below 2048 px), other formats box-reduced to it.
DETAIL_SIDE = 512
# Defaults of spec.qualityGates.maxPixels (limit, memoryLimit) for callers outside a dataset run.
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MEMORY_LIMIT = 1 << 30
_STRIP_PIXELS = 1 << 20  # conversions to RGB and the full-decode hash work a strip of about 1 MP at a time

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
_PALETTE = ("P", "PA", "1")  # modes whose pixels are dithered from a few colours


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
    # the hashes of the 7 flips and quarter turns of the border-trimmed working image (near duplicates),
    # then (pHash) those of metrics.WINDOW_COUNT sub-windows of it (crop candidates)
    hash_variants: list[str] = field(default_factory=list)


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


@dataclass
class Header:
    """What the header check found: the lazily opened image (drafted, for a JPEG read at reduced
    scale) and the size and frame count it declares."""

    image: Image.Image
    format: str
    width: int
    height: int
    frames: int
    decode_bytes: int


@dataclass
class Decoded:
    """One reduced decode: RGB pixels with the orientation applied, and what the file declares."""

    image: Image.Image
    format: str
    width: int  # as stored, before the orientation is applied
    height: int
    orientation: int
    exif: dict[str, Any] = field(default_factory=dict)
    # with decode_reduced(detail=N): RGB at about native resolution, long side in [N, 2N) (or the image's
    # own when smaller), the orientation not applied; fine blur and grain are measured on it
    detail: Image.Image | None = None


def _png_problem(data: bytes) -> str | None:
    """Why a PNG's chunk structure is broken (a chunk cut short, a bad CRC, no IEND), or None.

    Pillow skips the CRCs of image data and stops reading once the rows are filled, so a flipped
    bit in IDAT or a file cut after its last row would decode to wrong pixels without an error;
    libpng refuses both.
    """
    view = memoryview(data)
    pos, size = 8, len(data)
    while True:
        if pos + 12 > size:
            return f"truncated at byte {size}: no IEND chunk"
        length = int.from_bytes(view[pos : pos + 4], "big")
        name = bytes(view[pos + 4 : pos + 8]).decode("latin-1")
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > size:
            return f"truncated in the {name!r} chunk at byte {pos} (file ends at byte {size})"
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return f"bad CRC in the {name!r} chunk at byte {pos}"
        if name == "IEND":
            return None
        pos = end


def _bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of a Pillow image in memory: 8-bit multi-band modes take 4."""
    try:
        info = ImageMode.getmode(mode)
    except KeyError:
        return 4
    return 4 if len(info.bands) > 1 else max(1, np.dtype(info.typestr).itemsize)


def decode_bytes(image: Image.Image, fmt: str, width: int, height: int) -> int:
    """Bytes the decode of the first frame needs, from the header (``image`` drafted if it will be).

    The pixels of the stored mode (16-bit 2 bytes, palette and 1-bit 1, alpha, CMYK and RGB 4), plus
    what the decoder holds besides: libwebp a canvas, the previous frame and an RGBA buffer (16
    bytes a pixel in all); a progressive JPEG its DCT coefficients at full size; libtiff a strip or
    RGBA buffer. Only the first frame or page is ever decoded.
    """
    w, h = image.size
    pixels = w * h * _bytes_per_pixel(image.mode)
    if fmt == "webp":
        return w * h * 16
    if fmt == "tiff":
        return pixels * 2
    if fmt == "jpeg" and (image.info.get("progressive") or image.info.get("progression")):
        return pixels + width * height * 2 * int(getattr(image, "layers", 3) or 3)
    return pixels


def _declared_frames(image: Image.Image, fmt: str) -> int:
    """Frames an APNG or WebP declares (read from acTL or the WebP header: no decoding). GIF and
    TIFF are not counted: that walks the whole file, and only the first frame is decoded anyway."""
    if fmt in ("png", "webp"):
        return int(getattr(image, "n_frames", 1) or 1)
    return 1


def check_image(
    data: bytes,
    *,
    max_pixels: int,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    draft_side: int | None = None,
    short: bool = False,
) -> Header:
    """Open lazily and check the header before any pixel is decoded: real format, declared pixels,
    chunk structure (PNG), frames, and the memory the decode would need. A JPEG is drafted (DCT
    scaling) to keep its long side (short side if ``short``) at least ``draft_side``; the memory
    estimate is of that reduced decode."""
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
    try:
        problem = _png_problem(data) if fmt == "png" else None
        frames = _declared_frames(image, fmt)
        reference = min(width, height) if short else max(width, height)
        if fmt == "jpeg" and draft_side and reference >= 2 * draft_side:
            scale = draft_side / reference
            request = (
                (draft_side, draft_side) if short else (math.ceil(width * scale), math.ceil(height * scale))
            )
            image.draft("RGB", request)
    except Exception as exc:
        problem = f"unreadable {fmt} header: {exc}"
    if problem is not None:
        raise ImageRejected("corrupt", problem, width=width, height=height, fmt=fmt)
    need = decode_bytes(image, fmt, width, height)
    if need > memory_limit:
        w, h = image.size
        scaled = f" (read at {w}x{h})" if (w, h) != (width, height) else ""
        of_frames = f", first of {frames} frames" if frames > 1 else ""
        raise ImageRejected(
            "max_pixels",
            f"decoding {width}x{height} {image.mode} {fmt}{scaled}{of_frames} needs about "
            f"{_mib(need)}, above the memory limit of {_mib(memory_limit)}",
            width=width,
            height=height,
            fmt=fmt,
        )
    return Header(image, fmt, width, height, frames, need)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def open_image(data: bytes, *, max_pixels: int, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> Image.Image:
    """The lazily opened image once the header check passed (see check_image); nothing decoded."""
    return check_image(data, max_pixels=max_pixels, memory_limit=memory_limit).image


def load_frame(header: Header) -> tuple[dict[str, Any], int]:
    """Decode (the first frame, at the drafted scale), then read EXIF from the loaded image: reading it
    first would run the decode inside the EXIF error handling, and a second load() does nothing."""
    try:
        header.image.load()
    except Exception as exc:
        raise ImageRejected(
            "corrupt",
            f"decode failed: {type(exc).__name__}: {exc}",
            width=header.width,
            height=header.height,
            fmt=header.format,
        ) from exc
    try:
        return _exif_fields(header.image)
    except Exception:  # broken EXIF must not lose the image
        return {}, 1


def decode_reduced(
    data: bytes,
    *,
    side: int,
    max_pixels: int,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    short: bool = False,
    draft_side: int | None = None,
    detail: int = 0,
) -> Decoded:
    """The one guarded decode: header check, one decode (JPEG DCT scaling to ``draft_side``, default
    ``side``), then an integer box reduction so the long side (short side if ``short``) is in
    [side, 2 * side), converting to RGB strip by strip so no full-size copy is ever made; orientation
    applied. With ``detail``, JPEGs are drafted only down to a long side of ``detail`` and that image
    (reduced so its long side is in [detail, 2 * detail)) is kept as ``Decoded.detail``. Raises
    ImageRejected (corrupt, format, max_pixels) and nothing else."""
    header = check_image(
        data, max_pixels=max_pixels, memory_limit=memory_limit, draft_side=draft_side or detail or side,
        short=short,
    )  # fmt: skip
    exif, orientation = load_frame(header)
    image = header.image
    try:
        reference = min(image.size) if short else max(image.size)
        working = _reduced_rgb(image, max(1, reference // side))
        # a palette image's dithering is not grain: it is measured on the working image only
        fine = (
            _reduced_rgb(image, max(1, max(image.size) // detail))
            if detail and image.mode not in _PALETTE
            else None
        )
        method = EXIF_TRANSPOSE.get(orientation)
        if method is not None:
            working = working.transpose(method)
    except Exception as exc:
        raise ImageRejected(
            "corrupt", f"conversion failed: {type(exc).__name__}: {exc}", width=header.width,
            height=header.height, fmt=header.format,
        ) from exc  # fmt: skip
    return Decoded(working, header.format, header.width, header.height, orientation, exif, fine)


GRAIN_MAX_REDUCTION = 2  # grain is read on a JPEG reduced by at most this much where the detail is smaller


def _grain_grey(data: bytes, decoded: Decoded, memory_limit: int) -> npt.NDArray[np.uint8] | None:
    """The grey image grain is read on, where it is not the detail image: a JPEG whose detail decode is
    a DCT reduction by 4 or 8 (a long side of 2048 px or more) is decoded once more, grey only, at half
    that reduction. Drafted by 4, sensor grain of sigma 5 is averaged down to about the level of a clean
    photo's finest texture (and the 8 x 8 blocks' 2 x 2 reconstructions read as grain of their own); at a
    reduction by 2 it stands well clear of both (benchmarks/bench_quality.py, full size), and it is told
    from texture by scale (metrics.fine_noise, ``reduced``). About 9 ms a 4 MP JPEG (a second entropy
    decode). None: use the detail image (other formats, smaller JPEGs, a decode over ``memory_limit``
    or one that fails)."""
    if decoded.detail is None or decoded.format != "jpeg":
        return None
    factor = round(max(decoded.width, decoded.height) / max(decoded.detail.size))  # a draft rounds up
    if factor <= GRAIN_MAX_REDUCTION:
        return None
    scale = factor // GRAIN_MAX_REDUCTION
    # Pillow drafts by the largest power of 2 up to min(width // request): the request rounds down
    size = (max(1, decoded.width // scale), max(1, decoded.height // scale))
    if (decoded.width // scale + 1) * (decoded.height // scale + 1) > memory_limit:
        return None
    try:  # the bytes passed check_image and one decode already: a failure here only loses the finer read
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", size)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except Exception:
        return None


def analyze_image(
    data: bytes, *, max_pixels: int, memory_limit: int = DEFAULT_MEMORY_LIMIT, hash_kind: str = "phash"
) -> ImageAnalysis:
    """One reduced-scale decode of ``data`` feeding every metric and hash; raises ImageRejected."""
    decoded = decode_reduced(
        data, side=WORKING_SIZE, max_pixels=max_pixels, memory_limit=memory_limit, detail=DETAIL_SIDE
    )
    working = decoded.image
    width, height = decoded.width, decoded.height
    if decoded.orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    grey_image = working.convert("L")
    grey = np.asarray(grey_image, dtype=np.uint8)
    thumb = metrics.thumbnail(working)  # the dark gate reads a 64 px thumbnail, as cleanvision does
    thumb_rgb = np.asarray(thumb, dtype=np.uint8)
    p99, p5 = metrics.exposure(thumb_rgb)
    rgb = np.asarray(working, dtype=np.uint8)
    # blur and grain at native resolution (the detail image, grey)
    fine = np.asarray((working if decoded.detail is None else decoded.detail).convert("L"), dtype=np.uint8)
    grain = metrics.noise_sigma(fine)
    grain_grey = _grain_grey(data, decoded, memory_limit)
    contrast, black_level, tonal_range = metrics.tones(rgb)
    values = {
        "brightness_p99": p99,
        "brightness_p5": p5,
        # on the detail image: reducing averages small blown patches away
        "clipped": metrics.clipped_highlights(
            rgb if decoded.detail is None else metrics.rgbx(decoded.detail)
        ),
        "contrast": contrast,
        "black_level": black_level,
        "tonal_range": tonal_range,
        "sharpness": metrics.fine_sharpness(fine, grain, grey),
        "noise": metrics.fine_noise(fine, metrics.is_grey(thumb_rgb), grain)
        if grain_grey is None
        else metrics.fine_noise(grain_grey, reduced=True),
        "entropy": metrics.entropy_bits(grey),
        "aspect_ratio": metrics.aspect_ratio(width, height),
    }
    # hashed without letterbox or pillarbox bars, in all 8 orientations: the identity is the stored hash
    trimmed = metrics.trim_border(grey_image)
    variants = metrics.hash_variants(trimmed, hash_kind)
    # after the 7 orientations, pHashes of sub-windows: candidates for crops (dedup.split_variants)
    windows = metrics.window_hashes(trimmed) if hash_kind == "phash" else []
    return ImageAnalysis(
        format=decoded.format,
        width=width,
        height=height,
        metrics={k: round(v, 6) for k, v in values.items()},
        hashes={hash_kind: variants[0]},
        exif=decoded.exif,
        hash_variants=variants[1:] + windows,
    )


EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _depth_shift(image: Image.Image) -> int:
    """Right shift that brings a 16- or 32-bit image's largest value into 8 bits (its extrema are read
    without a copy)."""
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return 0
    top = image.getextrema()[1]
    return max(0, int(top).bit_length() - 8) if isinstance(top, int | float) else 0


def _to_rgb(image: Image.Image, shift: int | None = None) -> Image.Image:
    """RGB of ``image`` (alpha over white, deep images shifted to 8 bits): call it on strips, as it
    copies the whole image."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image)
        if image.mode == "I":
            array = np.clip(array, 0, None)
        shift = _depth_shift(image) if shift is None else shift
        return Image.fromarray((array >> shift).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _strip_rows(width: int, multiple: int = 1) -> int:
    rows = max(1, _STRIP_PIXELS // max(1, width))
    return max(multiple, rows // multiple * multiple)


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """``image`` reduced by ``factor`` (box) and converted to RGB, a strip at a time: reducing before
    converting keeps the extra memory to one strip (a whole-image convert would copy it at 4 bytes a
    pixel, or 8 for the float path 16-bit images used to take)."""
    if image.mode == "RGB":
        return image.reduce(factor) if factor >= 2 else image
    width, height = image.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = _strip_rows(width, factor)
    shift = _depth_shift(image)
    for top in range(0, height, rows):
        strip = _to_rgb(image.crop((0, top, width, min(height, top + rows))), shift)
        out.paste(strip.reduce(factor) if factor >= 2 else strip, (0, top // factor))
    return out


def _oriented_strips(image: Image.Image, orientation: int) -> Iterator[Image.Image]:
    """Horizontal strips of ``image`` with the EXIF orientation applied, top to bottom, each made from
    the matching band of the stored image: no full-size transposed copy."""
    width, height = image.size
    method = EXIF_TRANSPOSE.get(orientation)
    swap = orientation in _ROTATING_ORIENTATIONS
    out_width, out_height = (height, width) if swap else (width, height)
    rows = _strip_rows(out_width)
    for top in range(0, out_height, rows):
        bottom = min(out_height, top + rows)
        if method is None or orientation == 2:
            box = (0, top, width, bottom)
        elif not swap:  # 3, 4: rows from the bottom
            box = (0, height - bottom, width, height - top)
        elif orientation in (5, 6):
            box = (top, 0, bottom, height)
        else:  # 7, 8: columns from the right
            box = (width - bottom, 0, width - top, height)
        strip = image.crop(box)
        yield strip if method is None else strip.transpose(method)


def _pixel_sha256(header: Header, orientation: int) -> str:
    """sha256 of the loaded image's orientation-applied RGB pixels and their size, a strip at a time."""
    image = header.image
    try:
        width, height = image.size
        if orientation in _ROTATING_ORIENTATIONS:
            width, height = height, width
        digest = hashlib.sha256(f"{width}x{height}:".encode())
        shift = _depth_shift(image)
        for strip in _oriented_strips(image, orientation):
            digest.update(_to_rgb(strip, shift).tobytes())
    except Exception as exc:
        raise ImageRejected(
            "corrupt", f"full decode failed: {type(exc).__name__}: {exc}", width=header.width,
            height=header.height, fmt=header.format,
        ) from exc  # fmt: skip
    return digest.hexdigest()


def pixel_digest(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    keep: dict[str, float] | None = None,
) -> str:
    """sha256 of the fully decoded, orientation-applied RGB pixels and their size: equal for lossless
    re-encodes. Guarded like every decode (header check, memory estimate), converted and hashed a
    strip at a time; raises ImageRejected (corrupt, max_pixels) and nothing else.

    With ``keep`` (a dict), the keep measures (see keep_measures) are put into it first: from the same
    decode, or for an RGB JPEG from a decode of its luma alone, as keep_measures reads it; it stays
    empty when they cannot be measured, and is filled even when the digest then fails."""
    header = check_image(data, max_pixels=max_pixels, memory_limit=memory_limit)
    if keep is not None and _luma_only(header):
        with contextlib.suppress(Exception):  # not measurable: compared by its stored fields only
            keep.update(keep_measures(data, max_pixels=max_pixels, memory_limit=memory_limit))
        keep = None
    _, orientation = load_frame(header)
    if keep is not None:
        with contextlib.suppress(Exception):
            keep.update(_keep_values(header))
    return _pixel_sha256(header, orientation)


def _luma_only(header: Header) -> bool:
    """Whether the keep measures decode the file's luma alone: an RGB (YCbCr) JPEG, for which libjpeg
    then skips chroma upsampling and colour conversion (half the decode of a camera photo). Its grey
    is the JPEG's own Y plane rather than Pillow's L of the decoded RGB (within a grey level or two)."""
    return header.format == "jpeg" and header.image.mode == "RGB"


KEEP_CROP = 768  # the fine-detail measures read a centred crop of at most this many native pixels a side
SHAPE_SIDE = (
    2 * WORKING_SIZE
)  # the bars are found on a grey image of long side in [SHAPE_SIDE, 2 * SHAPE_SIDE)
SHAPE_MEASURES = ("padded", "content_aspect")  # what shape_measures gives of keep_measures
BAR_MARGIN = 4  # native pixels: a JPEG's ringing along a bar's edge spans about half its 8-pixel block
# Bump when keep_measures' values change: stored measures (manifest column keep_measures) of another
# version are measured again.
KEEP_MEASURES_VERSION = 4


def keep_measures(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, memory_limit: int = DEFAULT_MEMORY_LIMIT
) -> dict[str, float]:
    """What the bestOriginal keep policy compares between copies, from one full decode (run only for
    members of a duplicate group): ``detail`` (energy of the finest octave over the next one, at native
    resolution: about 1 for a camera image at any size, far lower for an upscale or a blurred copy),
    ``detail_x`` / ``detail_y`` (the same along one axis: a stretch lowers one of them), ``padded``
    (the share of the area in uniform letterbox or pillarbox bars), ``content_aspect`` (width over
    height of the content inside them: a letterboxed copy's is another copy's frame), ``band0``.. (the power spectrum
    in third-octave bands) and ``trace1_k`` / ``trace2_k`` (resampling traces: see TRACE_BINS).
    Raises ImageRejected."""
    header = check_image(data, max_pixels=max_pixels, memory_limit=memory_limit)
    if _luma_only(header):
        header.image.draft("L", None)
    load_frame(header)
    return _keep_values(header)


def shape_measures(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, memory_limit: int = DEFAULT_MEMORY_LIMIT
) -> dict[str, float]:
    """keep_measures' ``padded`` and ``content_aspect`` alone (the same values, from the same decode):
    what the keep policy reads of every group member, where the rest of keep_measures is read only of
    the copies still in the running. (A DCT-scaled decode would cost most of a full luma decode: the
    entropy decoding of every coefficient is the bulk of either.) Raises ImageRejected."""
    header = check_image(data, max_pixels=max_pixels, memory_limit=memory_limit)
    if _luma_only(header):
        header.image.draft("L", None)
    load_frame(header)
    try:
        grey = _grey(header.image)
        return _shape_values(_shape_grey(grey), grey.width, grey.height)[0]
    except Exception as exc:
        raise ImageRejected(
            "corrupt", f"full decode failed: {type(exc).__name__}: {exc}", width=header.width,
            height=header.height, fmt=header.format,
        ) from exc  # fmt: skip


def _grey(image: Image.Image) -> Image.Image:
    """The keep measures' grey of a loaded image (an L image is its own: L to RGB to L is the identity)."""
    return image if image.mode == "L" else _reduced_rgb(image, 1).convert("L")


def _shape_grey(grey: Image.Image) -> Image.Image:
    """The grey image the bars are found on: long side in [SHAPE_SIDE, 2 * SHAPE_SIDE), or the whole
    image when smaller."""
    factor = max(1, max(grey.size) // SHAPE_SIDE)
    return grey.reduce(factor) if factor >= 2 else grey


def _shape_values(
    small: Image.Image, width: int, height: int
) -> tuple[dict[str, float], tuple[int, int, int, int]]:
    """padded and content_aspect from the reduced grey ``small``, and the box of the content to read
    fine detail in, in the ``width`` x ``height`` image (left, top, right, bottom): inside the bars by
    a reduced pixel and BAR_MARGIN more, as their edge (and the ringing along it) is not the photo's."""
    pixels = np.asarray(small, dtype=np.uint8)
    top, bottom, left, right = metrics.border_box(pixels)
    padded = 1.0 - (bottom - top) * (right - left) / max(1, pixels.size)
    sx, sy = width / max(1, small.width), height / max(1, small.height)
    box = (
        round(left * sx), round(top * sy), min(width, round(right * sx)), min(height, round(bottom * sy)),
    )  # fmt: skip
    content_aspect = (box[2] - box[0]) / max(1, box[3] - box[1])
    mx, my = math.ceil(sx) + BAR_MARGIN, math.ceil(sy) + BAR_MARGIN
    inner = (
        box[0] + (mx if left > 0 else 0), box[1] + (my if top > 0 else 0),
        box[2] - (mx if right < small.width else 0), box[3] - (my if bottom < small.height else 0),
    )  # fmt: skip
    if inner[2] - inner[0] < 8 or inner[3] - inner[1] < 8:
        inner = box
    return {"padded": round(padded, 6), "content_aspect": round(content_aspect, 6)}, inner


@functools.lru_cache(maxsize=4)
def _spectrum_layout(rows: int, cols: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], Any]:
    """The Hann window of a ``rows`` x ``cols`` crop, and the third-octave band of each of its rfft2
    frequencies that falls in one (with the mask of those): the same for every crop of that shape."""
    window = (np.hanning(rows)[:, None] * np.hanning(cols)[None, :]).astype(np.float32)
    # row r and row rows - r have opposite vertical frequencies (fftfreq negates the same products),
    # so the same radius and band: the bands of the rows up to rows // 2, mirrored (half the logs)
    folded = np.minimum(np.arange(rows), rows - np.arange(rows))
    vertical = np.abs(np.fft.fftfreq(rows)[: rows // 2 + 1])
    radius = np.hypot(vertical[:, None], np.fft.rfftfreq(cols)[None, :])
    band = np.floor(-3 * np.log2(np.maximum(radius, 1e-9) / 0.5)).astype(np.int64)[folded]
    inside = (band >= 0) & (band < SPECTRUM_BANDS)
    return window, band[inside], inside


def _keep_values(header: Header) -> dict[str, float]:
    """keep_measures of a loaded image (see there); raises ImageRejected."""
    import cv2
    from scipy.fft import rfft2

    try:
        grey = _grey(header.image)
        width, height = grey.size
        shape, box = _shape_values(_shape_grey(grey), width, height)
        padded, content_aspect = shape["padded"], shape["content_aspect"]
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        half_w, half_h = min(KEEP_CROP, box[2] - box[0]) // 2, min(KEEP_CROP, box[3] - box[1]) // 2
        crop = grey.crop((cx - half_w, cy - half_h, cx + half_w, cy + half_h))
        g = np.asarray(crop, dtype=np.float32)
    except Exception as exc:
        raise ImageRejected(
            "corrupt", f"full decode failed: {type(exc).__name__}: {exc}", width=header.width,
            height=header.height, fmt=header.format,
        ) from exc  # fmt: skip

    def ratio(fine: npt.NDArray[np.float32], coarse: npt.NDArray[np.float32]) -> float:
        # sums of squares in double, as np.mean of the float32 squares was (within float rounding)
        finest = cv2.norm(g, fine, cv2.NORM_L2SQR) / g.size
        return float(finest / (cv2.norm(fine, coarse, cv2.NORM_L2SQR) / g.size + 1e-6))

    def gaussian_filter1d(
        values: npt.NDArray[np.float32], sigma: float, axis: int
    ) -> npt.NDArray[np.float32]:
        # scipy's gaussian_filter1d (radius 4 sigma, mirrored border) in OpenCV's float32 filter: 7x
        # faster, within 5e-5 grey levels of it
        kernel = _gaussian_kernel(sigma)
        kx, ky = (_UNIT, kernel) if axis == 0 else (kernel, _UNIT)
        out = cv2.sepFilter2D(values, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT)
        return np.asarray(out, dtype=np.float32)

    if g.shape[0] < 8 or g.shape[1] < 8:
        return {"detail": 0.0, "detail_x": 0.0, "detail_y": 0.0, **shape}
    # a 2-D Gaussian filter is the 1-D one down the columns, then along the rows: the column passes
    # serve detail_y and the 2-D detail both (the same arithmetic as scipy's gaussian_filter)
    down1, down2 = gaussian_filter1d(g, 1.0, axis=0), gaussian_filter1d(g, 2.0, axis=0)
    values = {
        "detail": ratio(gaussian_filter1d(down1, 1.0, axis=1), gaussian_filter1d(down2, 2.0, axis=1)),
        "detail_x": ratio(gaussian_filter1d(g, 1.0, axis=1), gaussian_filter1d(g, 2.0, axis=1)),
        "detail_y": ratio(down1, down2),
        "padded": padded,
        "content_aspect": content_aspect,
    }
    # the power spectrum in third-octave bands of cycles per pixel (band k ends at 0.5 / 2 ** (k / 3)),
    # as shares of the total: an upscale by s has next to nothing above 0.5 / s
    window, band, inside = _spectrum_layout(*g.shape)
    # scipy's pocketfft vectorises the rows, and in single precision (the crop's float32) is 3x faster
    # again, within 1e-7 of the shares in double
    spectrum = rfft2((g - g.mean()) * window)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    energy = np.bincount(band, weights=power[inside], minlength=SPECTRUM_BANDS)
    total = float(energy.sum()) or 1.0
    values.update({f"band{k}": float(e) / total for k, e in enumerate(energy)})
    for order in (1, 2):
        peaks = _trace_spectrum(g, order)
        values.update({f"trace{order}_{k}": float(peaks[k]) for k in range(TRACE_LOW, TRACE_BINS + 1)})
    return {k: round(v, 6) for k, v in values.items()}


# Resampling traces (Gallagher 2005; Kirchner 2008): an image interpolated by a factor s has periodic
# local correlations, so the mean |difference| of each column (row) varies with the interpolation phase,
# at frequency 1 / s cycles per pixel folded into [0, 0.5] (2x: 0.5; 1.5x: 1/3), whatever its sharpness.
TRACE_BINS = 32  # the profile spectrum kept at bins of 1/64 cycle per pixel, bin k centred on k / 64
TRACE_LOW = 2  # below 1/32 cycle per pixel the profile follows the scene, not the resampling


def _trace_spectrum(g: npt.NDArray[np.float32], order: int) -> npt.NDArray[np.float64]:
    """Peak strength of the column and the row profile of |``order``-th difference| per bin (see
    TRACE_BINS): the largest spectral magnitude in the bin over the median above 1/32 cycle per pixel,
    about 2 for noise, averaged over the two axes."""
    out = np.zeros(TRACE_BINS + 1)
    for axis in (1, 0):
        profile = np.abs(np.diff(g, order, axis=axis)).mean(axis=1 - axis, dtype=np.float64)
        magnitude = np.abs(np.fft.rfft((profile - profile.mean()) * np.hanning(len(profile))))
        frequency = np.fft.rfftfreq(len(profile))
        floor = float(np.median(magnitude[frequency >= TRACE_LOW / (2 * TRACE_BINS)])) + 1e-9
        peaks = np.zeros(TRACE_BINS + 1)
        np.maximum.at(peaks, np.rint(frequency * 2 * TRACE_BINS).astype(np.int64), magnitude / floor)
        out += peaks / 2
    return out


def trace_peak(measures: dict[str, float], order: int, frequency: float) -> float | None:
    """The resampling-trace peak (keep_measures' trace bins of the ``order``-th difference) at
    ``frequency`` cycles per pixel: the bin holding it, and its neighbour when it lies near their edge.
    None where not measured (a tiny image) or below the lowest bin."""
    position = frequency * 2 * TRACE_BINS
    nearest = round(position)
    bins = {nearest}
    if abs(position - nearest) > 0.25:  # the sizes' rounding may move the peak into the next bin
        bins.add(nearest + (1 if position > nearest else -1))
    found = [measures.get(f"trace{order}_{k}") for k in bins if TRACE_LOW <= k <= TRACE_BINS]
    known = [v for v in found if v is not None]
    return max(known) if known else None


_UNIT = np.ones(1, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _gaussian_kernel(sigma: float) -> npt.NDArray[np.float32]:
    """scipy.ndimage's 1-D Gaussian: radius int(4 sigma + 0.5), weights normalised to sum 1."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * x * x / (sigma * sigma))
    kernel: npt.NDArray[np.float32] = (weights / weights.sum()).astype(np.float32)
    return kernel


SPECTRUM_BANDS = 18  # third-octave bands from 0.5 down to 0.5 / 64 cycles per pixel


def energy_above(measures: dict[str, float], frequency: float) -> float:
    """Spectral density (keep_measures' bands, per third octave) above ``frequency`` cycles per pixel over
    the density in the octave below it: about 1 or more for detail a camera recorded, near 0 above
    the Nyquist frequency of the image an upscale was made from. Bands count by log-frequency overlap."""
    cut = -3 * math.log2(max(frequency, 1e-9) / 0.5)  # in band units: 0 at 0.5 cycles per pixel

    def share(lo: float, hi: float) -> float:
        out = 0.0
        for k in range(SPECTRUM_BANDS):
            overlap = min(hi, k + 1) - max(lo, k)
            if overlap > 0:
                out += measures.get(f"band{k}", 0.0) * overlap
        return out

    below = share(cut, cut + 3) / 3
    return share(0.0, cut) / cut / below if below > 0 and cut > 0 else 0.0
