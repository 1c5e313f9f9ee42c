"""The faster forms of the image metrics give the numbers of their plain numpy definitions bit for bit.

Each shortcut in media/metrics.py (one partition for the brightness percentiles, a partition for the hash
medians, Pillow's RGBX layout for the clipped share, the separable Immerkaer filter and area-mean clip
mask for grain, the exact edge check before border_box) is compared with the straightforward
computation it replaced, on real photos (scikit-image's) and on generated edge cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from loupe_workers.media import metrics
from support.photos import photo

U8 = np.ndarray[Any, np.dtype[np.uint8]]
RNG_SEED = 7


def _photos() -> list[Image.Image]:
    return [photo(name, side) for name in ("astronaut", "coffee", "chelsea") for side in (97, 128, 320)]


def _random_rgb(rng: np.random.Generator) -> list[U8]:
    shapes = [(1, 1), (1, 2), (2, 3), (3, 3), (9, 9), (10, 17), (43, 64)]
    out = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]
    out += [np.full((5, 7, 3), 255, np.uint8), np.zeros((6, 4, 3), np.uint8)]
    return out


def test_brightness_percentiles_equal_numpy_percentile() -> None:
    rng = np.random.default_rng(RNG_SEED)
    arrays = [np.asarray(image, dtype=np.uint8) for image in _photos()] + _random_rgb(rng)
    for rgb in arrays:
        expected = tuple(float(v) for v in np.percentile(metrics.perceived_brightness(rgb), (1, 99)))
        assert metrics._brightness_percentiles(rgb) == expected, rgb.shape


def test_perceived_brightness_keeps_its_formula() -> None:
    rgb = np.random.default_rng(RNG_SEED).integers(0, 256, (31, 29, 3), dtype=np.uint8)
    squares = np.arange(256, dtype=np.float32) ** 2
    weighted = 0.241 * squares[rgb[..., 0]] + 0.691 * squares[rgb[..., 1]] + 0.068 * squares[rgb[..., 2]]
    assert np.array_equal(metrics.perceived_brightness(rgb), np.sqrt(weighted) / 255.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_medians_equal_numpy_median(dtype: Any) -> None:
    rng = np.random.default_rng(RNG_SEED)
    values = rng.normal(0, 100, (40, 64)).astype(dtype)
    values[::3, ::2] = values[::3, 1::2]  # ties on either side of the middle
    values[5] = 1.5
    assert np.array_equal(metrics._row_medians(values), np.median(values, axis=1, keepdims=True))
    assert metrics._row_medians(values).dtype == np.median(values, axis=1, keepdims=True).dtype


def test_clipped_share_from_rgbx_equals_rgb() -> None:
    rng = np.random.default_rng(RNG_SEED)
    pixels = rng.integers(240, 256, (37, 53, 3), dtype=np.uint8)
    pixels[0, :3] = [[249, 249, 249], [250, 0, 0], [0, 0, 250]]  # the level either side of the limit
    images = [Image.fromarray(pixels), *_photos()]
    for image in images:
        rgb = np.asarray(image, dtype=np.uint8)
        four = metrics.rgbx(image)
        assert four.shape == (*rgb.shape[:2], 4)
        assert np.array_equal(four[..., :3], rgb)
        assert metrics.clipped_highlights(four) == metrics.clipped_highlights(rgb)
        assert metrics.clipped_highlights(rgb) == pytest.approx(float((rgb.max(axis=-1) >= 250).mean()))


def _reference_noise(grey: U8) -> float:
    """noise_sigma as first written: the 3x3 Immerkaer kernel, integral-image block sums, a block
    counted as unclipped when its 64 pixels all lie in 3-252."""
    import cv2

    height, width = grey.shape
    if height < 3 or width < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = cv2.convertScaleAbs(cv2.filter2D(np.ascontiguousarray(grey), cv2.CV_16S, kernel)[1:-1, 1:-1])
    h, w = response.shape[0] // 8 * 8, response.shape[1] // 8 * 8
    if h == 0 or w == 0:
        return float(response.mean() * metrics._IMMERKAER)
    sums = response[:h, :w].reshape(h // 8, 8, w // 8, 8).sum(axis=(1, 3)).ravel()
    blocks = sums.astype(np.float64) / 64
    inner = grey[1 : 1 + h, 1 : 1 + w].reshape(h // 8, 8, w // 8, 8)
    unclipped = ((inner.min(axis=(1, 3)) >= 3) & (inner.max(axis=(1, 3)) <= 252)).ravel()
    if unclipped.sum() >= 4:
        blocks = blocks[unclipped]
    count = max(1, round(blocks.size * metrics._NOISE_SHARE))
    return float(np.partition(blocks, count - 1)[:count].mean() * metrics._IMMERKAER)


def test_noise_sigma_equals_its_definition() -> None:
    rng = np.random.default_rng(RNG_SEED)
    greys = [np.asarray(image.convert("L"), dtype=np.uint8) for image in _photos()]
    greys += [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(3, 3), (9, 9), (10, 17), (43, 64)]]
    clipped = np.asarray(photo("astronaut", 200).convert("L"), dtype=np.uint8).copy()
    clipped[:60] = 255  # blown sky: its blocks are left out
    clipped[-40:, :50] = 2
    greys += [clipped, np.full((50, 60), 255, np.uint8), np.zeros((40, 40), np.uint8)]
    for grey in greys:
        assert metrics.noise_sigma(grey) == _reference_noise(grey), grey.shape


def test_border_box_edge_check_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines whose spread is near BORDER_STD, bars of every kind and plain photos: border_box with
    the exact edge check gives what the per-line statistics alone give."""
    rng = np.random.default_rng(RNG_SEED)
    greys = [np.asarray(image.convert("L"), dtype=np.uint8) for image in _photos()]
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        spread = int(rng.integers(0, 12))
        grey = np.clip(int(rng.integers(0, 256)) + rng.integers(-spread, spread + 1, (h, w)), 0, 255)
        if rng.random() < 0.5:  # a bar below a textured part, or the reverse
            grey[int(rng.integers(0, h)) :] = rng.integers(0, 256, (1, w))
        greys.append(grey.astype(np.uint8))
    fast = [metrics.border_box(grey) for grey in greys]
    checked = sum(metrics._no_uniform_edge(grey) for grey in greys)
    monkeypatch.setattr(metrics, "_no_uniform_edge", lambda grey: False)
    assert fast == [metrics.border_box(grey) for grey in greys]
    assert 0 < checked < len(greys)  # both paths were taken


def test_is_grey_equals_channel_spread() -> None:
    rng = np.random.default_rng(RNG_SEED)
    for rgb in [np.asarray(image, dtype=np.uint8) for image in _photos()] + _random_rgb(rng):
        grey = np.repeat(rgb[..., :1], 3, axis=-1)
        for array in (rgb, grey):
            spread = array.max(axis=-1) - array.min(axis=-1)
            assert metrics.is_grey(array) == bool(np.count_nonzero(spread >= 3) < 0.01 * spread.size)


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 31, 256, 427])
def test_spectrum_layout_equals_its_definition(rows: int) -> None:
    """keep_measures' bands, folded over the mirrored vertical frequencies, are the per-frequency ones."""
    from loupe_workers.media import decode

    for cols in (1, 2, 17, 320):
        window, band, inside = decode._spectrum_layout.__wrapped__(rows, cols)
        radius = np.hypot(np.fft.fftfreq(rows)[:, None], np.fft.rfftfreq(cols)[None, :])
        full = np.floor(-3 * np.log2(np.maximum(radius, 1e-9) / 0.5)).astype(np.int64)
        expected = (full >= 0) & (full < decode.SPECTRUM_BANDS)
        assert np.array_equal(inside, expected)
        assert np.array_equal(band, full[expected])
        expected_window = (np.hanning(rows)[:, None] * np.hanning(cols)[None, :]).astype(np.float32)
        assert window.dtype == np.float32 and np.array_equal(window, expected_window)  # the crop's precision
