"""Pure image-quality metrics and perceptual hashes over small decoded arrays.

Every function takes the one reduced-scale working image (or its grey version) so a single decode
feeds every metric.
"""

from __future__ import annotations

import math
from typing import Any

import imagehash
import numpy as np
import numpy.typing as npt
from PIL import Image

BLUR_THUMBNAIL = 64
_NOISE_BLOCK = 8
_NOISE_SHARE = 0.1  # noise is read from the flattest 10 % of the 8x8 blocks
_IMMERKAER = math.sqrt(math.pi / 2) / 6.0  # mean |response| of the Immerkaer kernel -> sigma
CLIP_LEVEL = 250  # a channel value from which it counts as blown out
HASH_KINDS = ("phash", "dhash", "ahash", "whash")


U8Array = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]


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
    """The image reduced to at most 64 px on its long side (the dark gate reads its brightness there)."""
    thumb = image.copy()
    thumb.thumbnail((BLUR_THUMBNAIL, BLUR_THUMBNAIL), Image.Resampling.BILINEAR)
    return thumb


_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16  # a Gaussian of sigma 1 px


def _smooth(values: FloatArray, times: int) -> FloatArray:
    """``values`` low-passed by the 5-tap binomial kernel ``times`` times (sigma sqrt(times) px)."""
    out = values
    for _ in range(times):
        padded = np.pad(out, 2, mode="reflect")
        rows = sum(_BINOMIAL[i] * padded[i : i + out.shape[0], :] for i in range(5))
        out = np.asarray(sum(_BINOMIAL[i] * rows[:, i : i + out.shape[1]] for i in range(5)), np.float32)
    return out


def _white_energies() -> tuple[float, float]:
    """Energy of unit-variance white noise in the finest band and in the next one (see sharpness)."""
    k1 = _BINOMIAL.astype(np.float64)
    k4 = np.convolve(np.convolve(np.convolve(k1, k1), k1), k1)
    one = np.zeros((17, 17))
    one[8, 8] = 1.0
    first = np.zeros((17, 17))
    first[6:11, 6:11] = np.outer(k1, k1)
    second = np.outer(k4, k4)
    return float(((one - first) ** 2).sum()), float(((first - second) ** 2).sum())


_WHITE_FINE, _WHITE_NEXT = _white_energies()
_DETAIL_SCALE = 400.0  # a detail share of 0.16 % maps to a sharpness of 0.65


def sharpness(grey: U8Array) -> float:
    """Fine detail against coarse detail; low means blurry, the same for a dark, flat or low-contrast photo
    as for a bright one.

    On the grey working image: the energy of the finest octave (the image minus itself smoothed at
    sigma 1 px) over the energy of the next one (smoothed at 1 px minus smoothed at 2 px). A camera photo
    scores about 0.7-4 (soft misty scenes low, foliage and texture high); blur removes the finest octave
    first, so a photo blurred by 1 % of its long side scores about 0.2-0.35. Changing brightness or contrast
    scales both energies alike and leaves the score; a flat frame scores 1."""
    if min(grey.shape) < 16:
        return 1.0
    g = grey.astype(np.float32)
    fine = _smooth(g, 1)
    coarse = _smooth(fine, 3)
    inner = (slice(4, -4), slice(4, -4))  # away from the padded border
    variance = float(g[inner].var())
    if variance < 4.0:  # a flat frame (grey levels within about +-2) has nothing to judge: not blurry
        return 1.0
    finest = float(np.mean((g - fine)[inner] ** 2))
    next_band = float(np.mean((fine - coarse)[inner] ** 2))
    eps = 0.01  # in grey levels squared: a flat frame is not called blurry
    ratio = (finest + eps) / (next_band + eps)
    # A photo blurred so far that both bands hold only pixel noise (grain, JPEG, the rounding to 8 bits,
    # all white: in both bands in a fixed proportion) would score like a sharp one. So the detail left
    # once that noise is taken out, as a share of the image's variance, also bounds the score: camera
    # photos keep at least 0.3 % of their variance in the two finest octaves, a heavy blur far less.
    floor = max(noise_sigma(grey) ** 2, 1 / 12)
    detail = max(0.0, finest - floor * _WHITE_FINE) + max(0.0, next_band - floor * _WHITE_NEXT)
    share = detail / variance
    return min(ratio, _DETAIL_SCALE * share)


def noise_sigma(grey: U8Array) -> float:
    """Sensor noise (sigma on the 0-255 scale of the working image), measured where the photo is flat:
    Immerkaer's estimate in every 8x8 block, averaged over the flattest 10 % of the blocks that are not
    clipped to black or white, so texture (grass, gravel, foliage) does not read as noise."""
    height, width = grey.shape
    if height < 3 or width < 3:
        return 0.0
    g = grey.astype(np.float32)
    # the kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of [1,-2,1] with itself
    rows = g[:, :-2] - 2 * g[:, 1:-1] + g[:, 2:]
    response = np.abs(rows[:-2] - 2 * rows[1:-1] + rows[2:])
    b = _NOISE_BLOCK
    h, w = response.shape[0] // b * b, response.shape[1] // b * b
    if h == 0 or w == 0:
        return float(response.mean() * _IMMERKAER)
    blocks = response[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3)).ravel()
    inner = g[1 : 1 + h, 1 : 1 + w].reshape(h // b, b, w // b, b)
    unclipped = ((inner.min(axis=(1, 3)) > 2) & (inner.max(axis=(1, 3)) < 253)).ravel()
    if unclipped.sum() >= 4:
        blocks = blocks[unclipped]
    count = max(1, round(blocks.size * _NOISE_SHARE))
    return float(np.partition(blocks, count - 1)[:count].mean() * _IMMERKAER)


CHROMA_NOISE_GAIN = 1.6  # independent RGB noise of sigma s shows as about s / 1.6 in Cb and Cr


def noise_level(ycbcr: U8Array) -> float:
    """Sensor noise that texture does not fake (sigma on the 0-255 scale of the working image).

    Noise is in every channel, texture (foliage, gravel, fabric) mostly in the luminance only: the estimate
    is the smaller of the luminance noise and 1.6 x the larger colour-difference (Cb, Cr) noise, each
    measured in the flattest blocks (:func:`noise_sigma`). A grey image has no colour to check: there,
    noise is told from texture by scale, as white noise halves when the image is halved and texture
    mostly does not: sqrt(4/3 (e1^2 - e2^2)), e1 and e2 the estimates at full and half scale."""
    y = np.ascontiguousarray(ycbcr[..., 0])
    luma = noise_sigma(y)
    chroma = ycbcr[..., 1:].astype(np.int16) - 128
    if chroma.size == 0 or float(np.percentile(np.abs(chroma), 99)) < 3:
        h, w = y.shape[0] // 2 * 2, y.shape[1] // 2 * 2
        half = np.rint(y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))).astype(np.uint8)
        return math.sqrt(max(0.0, 4 / 3 * (luma**2 - noise_sigma(half) ** 2)))
    colour = max(noise_sigma(np.ascontiguousarray(ycbcr[..., c])) for c in (1, 2))
    return min(luma, CHROMA_NOISE_GAIN * colour)


def clipped_highlights(rgb: U8Array) -> float:
    """Share of the pixels (0-1) with a colour channel blown out (250 or more): over-exposure clips the
    channels one by one (a sunlit green leaf turns flat yellow-green long before it turns white)."""
    return float((rgb.max(axis=-1) >= CLIP_LEVEL).mean())


def contrast(rgb: U8Array) -> float:
    """Contrast in [0, 1] that a change of exposure leaves alone: (p99 - p1) / (p99 + p1) of perceived
    brightness (the spread of the tones against their level; a photo whose tones were squeezed together
    scores low, a dark but otherwise normal photo does not)."""
    low, high = np.percentile(perceived_brightness(rgb), (1, 99))
    return float((high - low) / (high + low)) if high + low > 0 else 0.0


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


# --- near duplicates that survive flips, quarter turns and letterboxing ------------------------------

BORDER_STD = 3.0  # a border line's grey spread (0-255) at most this, and
BORDER_MEAN = 8.0  # its mean within this of the outermost line's: a uniform letterbox or pillarbox bar
BORDER_MAX_FRACTION = 0.45  # a side never loses more than this share of the image


def border_box(grey: U8Array) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) bounds of the content inside uniform borders (letterbox and
    pillarbox bars): lines at an edge whose spread is about 0 and whose mean equals that edge's
    outermost line are trimmed, up to BORDER_MAX_FRACTION per side."""
    height, width = grey.shape
    g = grey.astype(np.float32)
    row_mean, row_std = g.mean(axis=1), g.std(axis=1)
    col_mean, col_std = g.mean(axis=0), g.std(axis=0)

    def trimmed(means: npt.NDArray[np.float32], stds: npt.NDArray[np.float32], size: int) -> int:
        limit = int(size * BORDER_MAX_FRACTION)
        colour = float(means[0])
        count = 0
        while count < limit and stds[count] <= BORDER_STD:
            if abs(float(means[count]) - colour) > BORDER_MEAN:
                break
            count += 1
        return count

    top = trimmed(row_mean, row_std, height)
    bottom = height - trimmed(row_mean[::-1], row_std[::-1], height)
    left = trimmed(col_mean, col_std, width)
    right = width - trimmed(col_mean[::-1], col_std[::-1], width)
    return top, bottom, left, right


def trim_border(grey: Image.Image) -> Image.Image:
    """The grey working image without its uniform borders (itself when it has none)."""
    top, bottom, left, right = border_box(np.asarray(grey, dtype=np.uint8))
    if (top, left) == (0, 0) and (bottom, right) == (grey.height, grey.width):
        return grey
    return grey.crop((left, top, right, bottom))


def _dihedral(pixels: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
    """The 8 flips and quarter turns of a square array; the identity first."""
    t = pixels.T
    return [pixels, pixels[:, ::-1], pixels[::-1], pixels[::-1, ::-1], t, t[:, ::-1], t[::-1], t[::-1, ::-1]]


def _bits_hex(bits: npt.NDArray[np.bool_]) -> str:
    return bytes(np.packbits(bits.ravel())).hex()


def hash_variants(grey: Image.Image, kind: str) -> list[str]:
    """The 64-bit hash of ``grey`` and of its 7 flips and quarter turns (the identity first), as 16 hex
    digits each. pHash resizes once to 32 x 32 and transforms that (exactly imagehash's phash for the
    identity); the other kinds hash each transposed image."""
    if kind != "phash":
        out: list[str] = []
        for method in (None, *_VARIANT_TRANSPOSES):
            image = grey if method is None else grey.transpose(method)
            out.append(perceptual_hash(image, kind))
        return out
    import scipy.fftpack

    pixels = np.asarray(grey.convert("L").resize((32, 32), Image.Resampling.LANCZOS))
    result = []
    for variant in _dihedral(pixels):
        dct = scipy.fftpack.dct(scipy.fftpack.dct(variant, axis=0), axis=1)[:8, :8]
        result.append(_bits_hex(dct > np.median(dct)))
    return result


_VARIANT_TRANSPOSES = (
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_180,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
)
