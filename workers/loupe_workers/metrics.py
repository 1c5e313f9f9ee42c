"""Pure image-quality metrics and perceptual hashes over small decoded arrays.

Every function takes the one reduced-scale working image (or its grey version) so a single decode
feeds every metric.
"""

from __future__ import annotations

import math

import imagehash
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

BLUR_THUMBNAIL = 64
BLUR_SCALE = 20.0  # edge spread (0-255 scale) that maps to a sharpness of 1 - 1/e
HASH_KINDS = ("phash", "dhash", "ahash", "whash")


U8Array = npt.NDArray[np.uint8]


_SQUARES = np.arange(256, dtype=np.float32) ** 2
_BRIGHTNESS_LEVELS = 1024


def perceived_brightness(rgb: U8Array) -> npt.NDArray[np.float32]:
    """Per-pixel brightness in [0, 1]: sqrt(.241 R^2 + .691 G^2 + .068 B^2) / 255."""
    weighted = 0.241 * _SQUARES[rgb[..., 0]] + 0.691 * _SQUARES[rgb[..., 1]] + 0.068 * _SQUARES[rgb[..., 2]]
    brightness: npt.NDArray[np.float32] = np.sqrt(weighted) / 255.0
    return brightness


def exposure(rgb: U8Array) -> tuple[float, float]:
    """(99th percentile, 5th percentile) of perceived brightness, from a 1024-level histogram."""
    levels = np.minimum(
        (perceived_brightness(rgb) * _BRIGHTNESS_LEVELS).astype(np.int32), _BRIGHTNESS_LEVELS - 1
    )
    cumulative = np.cumsum(np.bincount(levels.ravel(), minlength=_BRIGHTNESS_LEVELS))
    total = cumulative[-1]
    p99 = int(np.searchsorted(cumulative, 0.99 * total))
    p5 = int(np.searchsorted(cumulative, 0.05 * total))
    return (p99 + 0.5) / _BRIGHTNESS_LEVELS, (p5 + 0.5) / _BRIGHTNESS_LEVELS


def thumbnail(image: Image.Image) -> Image.Image:
    """The image reduced to at most 64 px on its long side."""
    thumb = image.copy()
    thumb.thumbnail((BLUR_THUMBNAIL, BLUR_THUMBNAIL), Image.Resampling.BILINEAR)
    return thumb


def sharpness_score(thumb: Image.Image) -> float:
    """Score in [0, 1]; low means blurry: 1 - exp(-s / 20), s the spread of an edge filter over a
    64 px grey thumbnail (as cleanvision measures it), borders excluded."""
    edges = np.asarray(thumb.filter(ImageFilter.FIND_EDGES), dtype=np.float32)[1:-1, 1:-1]
    if edges.size == 0:
        return 0.0
    return float(1.0 - math.exp(-float(edges.std()) / BLUR_SCALE))


def noise_sigma(grey: U8Array) -> float:
    """Immerkaer's fast noise estimate (sigma on the 0-255 scale)."""
    height, width = grey.shape
    if height < 3 or width < 3:
        return 0.0
    g = grey.astype(np.float32)
    # the kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of [1,-2,1] with itself
    rows = g[:, :-2] - 2 * g[:, 1:-1] + g[:, 2:]
    response = rows[:-2] - 2 * rows[1:-1] + rows[2:]
    total = float(np.abs(response).sum())
    return float(total * math.sqrt(math.pi / 2) / (6.0 * (width - 2) * (height - 2)))


def entropy_bits(grey: U8Array) -> float:
    """Shannon entropy of the grey-level histogram, in bits (0-8)."""
    counts = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def aspect_ratio(width: int, height: int) -> float:
    """min(w/h, h/w), in (0, 1]."""
    return float(min(width / height, height / width))


_HASHERS = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}


def perceptual_hash(grey: Image.Image, kind: str) -> str:
    """The 64-bit hash of the working image, as 16 hex digits."""
    return str(_HASHERS[kind](grey))


def hamming(a: str, b: str) -> int:
    """Hamming distance of two hex-encoded 64-bit hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
