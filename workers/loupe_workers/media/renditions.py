"""Renditions: one derived form of one image, made the same way every time (pure: bytes in, bytes out).

Every decode goes through the guard of loupe_workers.media.decode (header check, decompression-bomb and
memory refusal). The steps, in a fixed order so the same input and parameters give the same bytes:

1. guarded decode (a JPEG DCT-scaled towards ``maxSide``: the draft is part of the parameters' output);
2. to 8 bits: 16-bit grey scaled (v * 255 / 65535, rounded: 65535 -> 255, 32768 -> 128), 48-bit RGB
   already reduced to its high bytes by Pillow; palette, 1-bit, LA and PA expanded;
3. to sRGB: an embedded ICC profile converted with littlecms (perceptual intent); CMYK without a
   profile by Pillow's naive formula (no CMYK profile ships offline); alpha kept aside and re-attached;
4. the EXIF orientation applied to the pixels;
5. scaled down (never up) so the long side is ``maxSide``, with the spec's filter;
6. alpha composited over white unless ``keepAlpha``;
7. encoded with fixed settings and no metadata (no EXIF, XMP, ICC, dpi, timestamps), unless
   ``stripExif: false``, which copies the source's EXIF with the orientation reset to 1.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageCms

from loupe_api.renditions import RenditionSpec
from loupe_workers.media import decode

_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_DEEP = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class Rendition:
    """The encoded bytes of one rendition and what a manifest row records of them."""

    data: bytes
    format: str
    width: int
    height: int
    sha256: str


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image`` in an 8-bit mode littlecms and the encoders take: L, LA, RGB, RGBA or CMYK."""
    mode = image.mode
    if mode in _DEEP:  # 16-bit grey (I: Pillow's 32-bit container for it), scaled with rounding
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    if mode == "F":  # float samples: taken as 0..1, the convention of float TIFFs
        values = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
        return Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode == "PA":
        return image.convert("RGBA")
    if mode == "1":
        return image.convert("L")
    if mode in ("La", "RGBa"):
        return image.convert(mode[:-1] + "A")
    return image.convert("RGB")  # YCbCr, LAB, HSV, RGBX: Pillow's own conversion


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    if image.mode in ("LA", "RGBA"):
        return image.convert(image.mode[:-1]), image.getchannel("A")
    return image, None


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB pixels in sRGB: through the embedded profile when there is one that fits the mode."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                image, source, _SRGB, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or mismatched profile (an RGB profile on a grey image): as if untagged
    return image.convert("RGB")


def _exif_bytes(image: Image.Image) -> bytes | None:
    """The source's EXIF with the orientation reset (it is applied to the pixels), or None."""
    try:
        exif = image.getexif()
    except Exception:  # broken EXIF: the rendition simply has none
        return None
    if not exif:
        return None
    exif[ExifTags.Base.Orientation] = 1
    try:
        return exif.tobytes()
    except Exception:
        return None


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


def render(
    data: bytes,
    spec: RenditionSpec,
    *,
    max_pixels: int = decode.DEFAULT_MAX_PIXELS,
    memory_limit: int = decode.DEFAULT_MEMORY_LIMIT,
) -> Rendition:
    """The rendition ``spec`` of the image ``data``; raises decode.ImageRejected (corrupt, format,
    max_pixels) for anything the guard refuses or the conversion cannot read, and nothing else."""
    header = decode.check_image(
        data, max_pixels=max_pixels, memory_limit=memory_limit, draft_side=spec.max_side
    )
    _, orientation = decode.load_frame(header)  # the one guarded decode (shared with the analysis)
    image = header.image
    try:
        exif = None if spec.strip_exif else _exif_bytes(image)
        icc = image.info.get("icc_profile")
        colour, alpha = _split_alpha(_eight_bit(image))
        rgb = _to_srgb(colour, icc if isinstance(icc, bytes) else None)
        out = rgb if alpha is None else Image.merge("RGBA", (*rgb.split(), alpha))
        method = decode.EXIF_TRANSPOSE.get(orientation)
        if method is not None:
            out = out.transpose(method)
        size = _target_size(*out.size, spec.max_side)
        if size != out.size:
            out = out.resize(size, _RESAMPLE[spec.resample])  # RGBA is resized premultiplied by Pillow
        if out.mode == "RGBA" and not (spec.keep_alpha and alpha is not None):
            background = Image.new("RGB", out.size, (255, 255, 255))
            background.paste(out, mask=out.getchannel("A"))
            out = background
        out.info = {}  # nothing of the source's metadata (dpi, ICC, XMP, text chunks) reaches the encoder
        buffer = io.BytesIO()
        options: dict[str, object] = {}
        if spec.format == "jpeg":
            options = {"quality": spec.quality, "subsampling": 2, "optimize": False, "progressive": False}
        elif spec.format == "webp":
            options = {"quality": spec.quality, "method": 4, "lossless": False}
        else:
            options = {"compress_level": 6, "optimize": False}
        if exif:
            options["exif"] = exif
        out.save(buffer, format=_PIL_FORMAT[spec.format], **options)
    except decode.ImageRejected:
        raise
    except Exception as exc:  # whatever a hostile file triggers past the guard is reported, not raised
        raise decode.ImageRejected(
            "corrupt", f"rendition failed: {type(exc).__name__}: {exc}", width=header.width,
            height=header.height, fmt=header.format,
        ) from exc  # fmt: skip
    encoded = buffer.getvalue()
    return Rendition(encoded, spec.format, out.width, out.height, hashlib.sha256(encoded).hexdigest())
