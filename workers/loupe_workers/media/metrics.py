"""Pure image-quality metrics and perceptual hashes over small decoded arrays.

Every function takes the one reduced-scale working image (or its grey version) so a single decode
feeds every metric.
"""

from __future__ import annotations

import functools
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
# each channel's weighted square per level, the float32 products of the formula below (a lookup is
# faster than the three multiplications, with the same values)
_WEIGHTED_SQUARES = (0.241 * _SQUARES, 0.691 * _SQUARES, 0.068 * _SQUARES)
_BRIGHTNESS_LEVELS = 1024


def _weighted_squares(rgb: U8Array) -> npt.NDArray[np.float32]:
    """.241 R^2 + .691 G^2 + .068 B^2 per pixel, in float32 (the square of 255 x perceived brightness)."""
    red, green, blue = _WEIGHTED_SQUARES
    weighted = np.take(red, rgb[..., 0]) + np.take(green, rgb[..., 1]) + np.take(blue, rgb[..., 2])
    return np.asarray(weighted, dtype=np.float32)  # float32 already: no copy


def perceived_brightness(rgb: U8Array) -> npt.NDArray[np.float32]:
    """Per-pixel brightness in [0, 1]: sqrt(.241 R^2 + .691 G^2 + .068 B^2) / 255."""
    return np.asarray(np.sqrt(_weighted_squares(rgb)) / 255.0, dtype=np.float32)  # float32 already


_TONE_QUANTILES = np.array([1, 99], dtype=np.float64) / 100


def _brightness_percentiles(rgb: U8Array) -> tuple[float, float]:
    """np.percentile(perceived_brightness(rgb), (1, 99)) bit for bit, in a third of its time: one
    partition of the weighted squares (brightness is a monotone function of them, so their order
    statistics are the brightnesses' own), only the 4 order statistics taken to brightness, and
    numpy's linear interpolation between them repeated in its dtypes (float32 values, float64 weights)."""
    weighted = _weighted_squares(rgb).ravel()
    n = weighted.size
    virtual = (n - 1) * _TONE_QUANTILES
    floor = np.floor(virtual)
    gamma = virtual - floor
    lower = floor.astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    part = np.partition(weighted, np.unique(np.concatenate((lower, upper))))
    a = np.sqrt(part[lower]) / 255.0
    b = np.sqrt(part[upper]) / 255.0
    step = b - a
    values = np.where(gamma >= 0.5, b - step * (1 - gamma), a + step * gamma)
    return float(values[0]), float(values[1])


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
    """``values`` low-passed by the 5-tap binomial kernel ``times`` times (sigma sqrt(times) px), the
    border mirrored (OpenCV's separable filter: the native-resolution window is 512 x 512)."""
    import cv2

    out: Any = values
    for _ in range(times):
        out = cv2.sepFilter2D(out, cv2.CV_32F, _BINOMIAL, _BINOMIAL, borderType=cv2.BORDER_REFLECT_101)
    return np.asarray(out, np.float32)


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
# a detail share of 0.02 % maps to a sharpness of 0.5 (measured at native resolution, where the two finest
# octaves hold a smaller share of a photo's variance than at the small working scale)
_DETAIL_SCALE = 2400.0


def sharpness(grey: U8Array, noise: float | None = None, detail_scale: float = _DETAIL_SCALE) -> float:
    """Fine detail against coarse detail; low means blurry, the same for a dark, flat or low-contrast photo
    as for a bright one.

    On the grey working image: the energy of the finest octave (the image minus itself smoothed at
    sigma 1 px) over the energy of the next one (smoothed at 1 px minus smoothed at 2 px). A camera photo
    scores about 0.7-4 (soft misty scenes low, foliage and texture high); blur removes the finest octave
    first, so a photo blurred by 1 % of its long side scores about 0.2-0.35. Changing brightness or contrast
    scales both energies alike and leaves the score; a flat frame scores 1. ``noise``: the grain sigma
    if already measured (:func:`noise_sigma` of ``grey`` or of the image it was cut from)."""
    if min(grey.shape) < 16:
        return 1.0
    import cv2

    inner = (slice(6, -6), slice(6, -6))  # away from the mirrored border
    count = (grey.shape[0] - 12) * (grey.shape[1] - 12)
    # of the 8-bit values: the same integer sums as of their float copy, a sixth of the time
    variance = float(cv2.meanStdDev(np.ascontiguousarray(grey[inner]))[1][0, 0]) ** 2
    if variance < 4.0:  # a flat frame (grey levels within about +-2) has nothing to judge: not blurry
        return 1.0
    g = grey.astype(np.float32)
    fine = _smooth(g, 1)
    coarse = cv2.sepFilter2D(fine, cv2.CV_32F, _BINOMIAL3, _BINOMIAL3, borderType=cv2.BORDER_REFLECT_101)
    finest = float(cv2.norm(g[inner], fine[inner], cv2.NORM_L2SQR)) / count
    next_band = float(cv2.norm(fine[inner], coarse[inner], cv2.NORM_L2SQR)) / count
    eps = 0.01  # in grey levels squared: a flat frame is not called blurry
    ratio = (finest + eps) / (next_band + eps)
    # A photo blurred so far that both bands hold only pixel noise (grain, JPEG, the rounding to 8 bits,
    # all white: in both bands in a fixed proportion) would score like a sharp one. So the detail left
    # once that noise is taken out, as a share of the image's variance, also bounds the score: camera
    # photos keep at least 0.3 % of their variance in the two finest octaves, a heavy blur far less.
    floor = max((noise_sigma(grey) if noise is None else noise) ** 2, 1 / 12)
    detail = max(0.0, finest - floor * _WHITE_FINE) + max(0.0, next_band - floor * _WHITE_NEXT)
    share = detail / variance
    return float(min(ratio, detail_scale * share))


def noise_sigma(grey: U8Array) -> float:
    """Sensor noise (sigma on the 0-255 scale of ``grey``), measured where the photo is flat:
    Immerkaer's estimate in every 8x8 block, averaged over the flattest 10 % of the blocks that are not
    clipped to black or white, so texture (grass, gravel, foliage) does not read as noise."""
    import cv2

    height, width = grey.shape
    if height < 3 or width < 3:
        return 0.0
    grey = np.ascontiguousarray(grey)
    # |response| in integers, saturated at 255: only edges reach that, and their blocks are never flat.
    # The kernel is [1, -2, 1] down and across: the separable filter gives the same integers, faster.
    response = cv2.convertScaleAbs(cv2.sepFilter2D(grey, cv2.CV_16S, _SECOND_DIFF, _SECOND_DIFF)[1:-1, 1:-1])
    b = _NOISE_BLOCK
    h, w = response.shape[0] // b * b, response.shape[1] // b * b
    if h == 0 or w == 0:
        return float(response.mean() * _IMMERKAER)
    total = cv2.integral(response[:h, :w])[::b, ::b]  # exact integer block sums
    sums = total[1:, 1:] - total[:-1, 1:] - total[1:, :-1] + total[:-1, :-1]
    blocks = sums.ravel().astype(np.float64) / (b * b)
    # a block is unclipped when every pixel is in 3-252: then, and only then, the area mean of the
    # 0/255 mask over the block (an exact 8x reduction) is 255
    inside = cv2.inRange(grey[1 : 1 + h, 1 : 1 + w], 3, 252)
    unclipped = cv2.resize(inside, (w // b, h // b), interpolation=cv2.INTER_AREA).ravel() == 255
    if np.count_nonzero(unclipped) >= 4:
        blocks = blocks[unclipped]
    count = max(1, round(blocks.size * _NOISE_SHARE))
    return float(np.partition(blocks, count - 1)[:count].mean() * _IMMERKAER)


_SECOND_DIFF = np.array([1, -2, 1], dtype=np.float32)  # Immerkaer's kernel is its outer product
_BINOMIAL3 = np.convolve(np.convolve(_BINOMIAL, _BINOMIAL), _BINOMIAL).astype(np.float32)  # sigma sqrt 3


DETAIL_WINDOW = 512  # blur is judged on this many native pixels a side, where the photo has most detail


def detail_window(grey: U8Array, side: int = DETAIL_WINDOW) -> U8Array:
    """The ``side`` x ``side`` part of ``grey`` (the native-resolution detail image) with the most
    structure: the window whose 8x-reduced copy has the largest gradient sum. The reduced copy is too
    coarse to see blur, so a blurred photo and its sharp original pick the same window, and a sharp
    subject before a soft background is where the window lands."""
    import cv2

    height, width = grey.shape
    if height <= side and width <= side:
        return grey
    f = 8
    small = cv2.resize(grey, (max(1, width // f), max(1, height // f)), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    energy = np.zeros_like(small)
    energy[:, 1:] += np.abs(np.diff(small, axis=1))
    energy[1:, :] += np.abs(np.diff(small, axis=0))
    wh, ww = min(side // f, small.shape[0]), min(side // f, small.shape[1])
    total = cv2.integral(energy)  # (h + 1) x (w + 1) running sums
    sums = total[wh:, ww:] - total[:-wh, ww:] - total[wh:, :-ww] + total[:-wh, :-ww]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    y0, x0 = min(int(top) * f, max(0, height - side)), min(int(left) * f, max(0, width - side))
    return grey[y0 : y0 + side, x0 : x0 + side]


WORKING_DETAIL_SCALE = 400.0  # the same bound on the small working image, where fine detail is coarser


def fine_sharpness(detail: U8Array, noise: float | None = None, working: U8Array | None = None) -> float:
    """:func:`sharpness` at native resolution: on the most detailed 512 x 512 window of the detail image
    (the photo itself up to 2047 px a side, else a 1/2-1/8 reduction with a long side of 1024-2047 px),
    so a blur that the small working image cannot see (a Gaussian of 0.25 % of the long side, a slight
    defocus) lowers it, while a sharp subject before a soft background keeps it high. With ``working``
    (the grey working image): the lower of that and the working image's own score, where a heavy blur
    (1 % of the long side) still shows."""
    fine = sharpness(detail_window(detail), noise)
    if working is None:
        return fine
    # a heavy blur leaves only pixel noise at native resolution (both octaves in a white-noise ratio);
    # on the small working image it still shows, so the score is the lower of the two
    return min(fine, sharpness(working, detail_scale=WORKING_DETAIL_SCALE))


def is_grey(rgb: U8Array) -> bool:
    """Whether a photo has no colour to speak of (99 % of its pixels' channels within 3 levels)."""
    # channel by channel: numpy reduces a last axis of 3 an element at a time (8x slower)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return bool(np.count_nonzero(spread >= 3) < 0.01 * spread.size)


# grain halves when the image is halved (e2 / e1 about 0.5, 1 or less with texture under it); fine
# natural texture (lichen, foliage, gravel) holds or grows at the coarser scale, and a resampled clean
# photo's flattest blocks grow about 2x. Chosen on the tuning half of the development photos (clean
# ones 1.57-8 at 640 px, grain of sigma 5 up to 1.53).
GRAIN_SCALE_RATIO = 1.4
# what a colour photo's texture-dominated reading keeps: small enough that no texture reaches a grain
# threshold, but ordered (a rougher texture reads higher) for dataset-relative gates and insights
TEXTURE_SHARE = 0.1


def fine_noise(
    detail: U8Array, grey_photo: bool = False, e1: float | None = None, reduced: bool = False
) -> float:
    """Grain at native resolution (sigma on the 0-255 scale of the detail image): :func:`noise_sigma` in
    the flattest blocks, e1, if the image halved (2 x 2 means) reads below GRAIN_SCALE_RATIO x e1, e2:
    grain halves when halved, fine texture (lichen, gravel, leaves at the photo's own pixels) does not.
    Otherwise the reading is texture, and a tenth of it (TEXTURE_SHARE) is kept. A grey photo (a texture
    such as gravel fills it) is always told by scale: white noise halves and texture mostly does not, so
    sqrt(4/3 (e1^2 - e2^2)), the part that halves. ``e1``: the full-scale estimate if already measured.

    ``reduced``: ``detail`` is a JPEG reduced by 2 or more (DCT scaling), and is told by scale alone as
    a grey photo is. At the photo's own pixels JPEG has quantized away the finest part of the grain, so a
    grainy photo's e2 / e1 reaches 1.5 and only the threshold above tells it; reduced by 2, what is left
    of the grain is white again (e2 / e1 0.55-0.6 at sigma 5), and fine texture that the threshold let
    through (gravel filling a 2560 px frame: 1.1-1.3) is taken out by the formula."""
    import cv2

    e1 = noise_sigma(detail) if e1 is None else e1
    h, w = detail.shape[0] // 2 * 2, detail.shape[1] // 2 * 2
    if e1 == 0.0 or h < 6 or w < 6:
        return e1
    # 2 x 2 means (OpenCV's area reduction by exactly 2: a tenth of a millisecond a megapixel)
    half = cv2.resize(np.ascontiguousarray(detail[:h, :w]), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    e2 = noise_sigma(np.asarray(half, np.uint8))
    if grey_photo or reduced:
        return math.sqrt(max(0.0, 4 / 3 * (e1**2 - e2**2)))
    return e1 if e2 < GRAIN_SCALE_RATIO * e1 else TEXTURE_SHARE * e1


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
    channels one by one (a sunlit green leaf turns flat yellow-green long before it turns white). Read on
    the detail image: a reduction averages small blown patches (sunlit leaves, glints) with their
    surroundings, so a 128 px copy of a blown-out photo of foliage shows half as much as its pixels.
    ``rgb``: (height, width, 3), or (height, width, 4) whose 4th channel is not read (Pillow's own RGBX
    layout of an RGB image, which it hands over without repacking: :func:`rgbx`)."""
    import cv2

    if rgb.size == 0:
        return 0.0
    pixels = rgb.shape[0] * rgb.shape[1]
    if rgb.shape[-1] == 4:
        # a saturating subtraction leaves a channel nonzero only from 250 up, and the padding byte 0:
        # a pixel's 4 bytes read as one int32 are then nonzero where it is clipped (one pass, no mask)
        over = cv2.subtract(np.ascontiguousarray(rgb), _CLIP_SUBTRAHEND)
        kept = pixels - cv2.countNonZero(over.view(np.int32).reshape(rgb.shape[:2]))
        return float(1.0 - kept / pixels)  # as the 3-channel path computes it, to the last bit
    # OpenCV's inRange marks the pixels with every channel at most 249 (a tenth of numpy's time)
    kept = cv2.countNonZero(cv2.inRange(np.ascontiguousarray(rgb), (0, 0, 0), (CLIP_LEVEL - 1,) * 3))
    return float(1.0 - kept / pixels)


_CLIP_SUBTRAHEND = np.array([CLIP_LEVEL - 1] * 3 + [255], dtype=np.float64)  # an OpenCV scalar


def rgbx(image: Image.Image) -> U8Array:
    """An RGB image's pixels as (height, width, 4), the 4th byte padding: Pillow stores RGB 4 bytes a
    pixel and copies that layout as it is, where np.asarray repacks it to 3 (twice the time)."""
    width, height = image.size
    return np.frombuffer(image.tobytes("raw", "RGBX"), dtype=np.uint8).reshape(height, width, 4)


def tones(rgb: U8Array) -> tuple[float, float, float]:
    """(contrast, black level, tonal range) of perceived brightness, from its 1st and 99th percentiles
    p1 and p99 (one pass):

    - contrast in [0, 1], which a change of exposure leaves alone: (p99 - p1) / (p99 + p1), the spread of
      the tones against their level (a dark but otherwise normal photo does not score low);
    - black level: p1, how far the darkest tones are lifted from black (haze, a washed-out photo);
    - tonal range: p99 - p1, how much of the brightness scale the tones span (a squeezed photo of a dark
      scene keeps a fair contrast ratio but spans little of the scale)."""
    low, high = _brightness_percentiles(rgb)
    ratio = (high - low) / (high + low) if high + low > 0 else 0.0
    return ratio, low, high - low


def contrast(rgb: U8Array) -> float:
    """(p99 - p1) / (p99 + p1) of perceived brightness (the first of :func:`tones`)."""
    return tones(rgb)[0]


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
    if _no_uniform_edge(grey):
        return 0, height, 0, width
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


def _no_uniform_edge(grey: U8Array) -> bool:
    """Whether each of the 4 outermost lines is spread well beyond BORDER_STD (most photos), so no
    side has a bar to trim. The variances are exact (integer sums); a 1 % margin covers the float32
    rounding of the per-line std that border_box compares otherwise, so the answer is the same."""
    if min(grey.shape) < 2:
        return False
    edges = (grey[0], grey[-1], grey[:, 0], grey[:, -1])
    for line in edges:
        values = line.astype(np.int64)
        n, total = values.size, int(values.sum())
        # n^2 var = n sum(x^2) - (sum x)^2; var > 1.01 x BORDER_STD^2, in integers
        if 100 * (n * int(values @ values) - total * total) <= 101 * BORDER_STD**2 * n * n:
            return False
    return True


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


def _row_medians(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """np.median(values, axis=1, keepdims=True) of rows of 64, bit for bit (the mean of the 32nd and
    33rd smallest, summed and halved in the rows' dtype), without np.median's overhead."""
    middle = np.partition(values, (31, 32), axis=1)[:, 31:33]
    return (middle[:, :1] + middle[:, 1:]) / 2


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
    # the 8 transforms in one DCT call per axis: pocketfft transforms each row alike, so every hash is
    # bit for bit the one a DCT per transform gives (checked on the bench corpus), in 60 % of the time
    stack = np.stack(_dihedral(pixels))
    dct = scipy.fftpack.dct(scipy.fftpack.dct(stack, axis=1), axis=2)[:, :8, :8].reshape(8, 64)
    bits = dct > _row_medians(dct)
    return [bytes(row).hex() for row in np.packbits(bits, axis=1)]


_VARIANT_TRANSPOSES = (
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_180,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
)


# --- crop candidates: pHashes of sub-windows, compared with other images' whole hashes ----------------

WINDOW_SCALES = (0.93, 0.86, 0.78)  # window side as a share of the image side (crops keeping 86-60 %)
WINDOW_PLACES = (0.0, 0.5, 1.0)  # window offsets as a share of the free margin, on each axis
WINDOW_COUNT = len(WINDOW_SCALES) * len(WINDOW_PLACES) ** 2


@functools.lru_cache(maxsize=1024)
def _dct_rows(size: int) -> npt.NDArray[np.float32]:
    """The 8 lowest DCT-II rows of a 32-sample signal after area-averaging ``size`` samples to 32."""
    edges = np.linspace(0.0, size, 33)
    j = np.arange(size)
    overlap = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j), 0.0, None)
    box = overlap / overlap.sum(axis=1, keepdims=True)
    k, n = np.arange(8)[:, None], np.arange(32)[None, :]
    dct = 2.0 * np.cos(np.pi * k * (2 * n + 1) / 64.0)
    rows: npt.NDArray[np.float32] = (dct @ box).astype(np.float32)
    return rows


def window_hashes(grey: Image.Image) -> list[str]:
    """pHashes (16 hex digits each) of WINDOW_COUNT sub-windows of the (border-trimmed) grey working
    image, of the image's aspect, at WINDOW_SCALES of its side and WINDOW_PLACES positions. A crop of
    this image hashes close to one of them, so comparing them with other images' whole hashes finds
    crop candidates. Each window is area-averaged to 32 x 32 and its 8 x 8 lowest DCT terms are
    thresholded at their median, as pHash does (by matrix products, not a resize per window)."""
    pixels = np.asarray(grey.convert("L"), dtype=np.float32)
    height, width = pixels.shape
    out: list[str] = []
    for scale in WINDOW_SCALES:
        wh, ww = max(8, round(height * scale)), max(8, round(width * scale))
        cy, cx = _dct_rows(wh), _dct_rows(ww)
        tops = [round((height - wh) * p) for p in WINDOW_PLACES]
        lefts = [round((width - ww) * p) for p in WINDOW_PLACES]
        bands = np.stack([cy @ pixels[t : t + wh] for t in tops])  # (places, 8, width)
        blocks = np.stack([bands[:, :, x : x + ww] for x in lefts], axis=1)  # (places, places, 8, ww)
        dct = (blocks @ cx.T).reshape(-1, 64)
        bits = dct > _row_medians(dct)
        out.extend(bytes(row).hex() for row in np.packbits(bits, axis=1))
    return out
