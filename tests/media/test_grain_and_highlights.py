"""Grain told from fine texture by scale, and blown-out highlights counted at the detail image's pixels.

Real photos (scikit-image's gravel and grass textures, tinted so they are colour photos: the grey-photo
path already judged them by scale) with generated degradations; never the development corpus."""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loupe_api.dataset import QualityGates
from loupe_workers.curation import gates
from loupe_workers.media import decode as media
from loupe_workers.media import metrics
from support.photos import photo

DEFAULT = QualityGates()


def _tinted(name: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A grey texture photo as a colour one (green-yellow, like foliage or lichen), at its own pixels."""
    grey = np.asarray(photo(name, 1024).convert("L"), dtype=np.float32)
    return np.stack([grey * 0.55 + 20, grey * 0.85 + 20, grey * 0.35 + 10], axis=-1)


def _jpeg(values: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _flags(data: bytes) -> tuple[set[str], dict[str, float]]:
    analysis = media.analyze_image(data, max_pixels=media.DEFAULT_MAX_PIXELS)
    record = {
        "status": "ok", "format": analysis.format, "width": analysis.width, "height": analysis.height,
        "media": "image", "extension": ".jpg", **analysis.metrics,
    }  # fmt: skip
    return {name for name, _, _ in gates.failed_gates(record, DEFAULT)}, analysis.metrics


def _grey_detail(data: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    decoded = media.decode_reduced(
        data, side=media.WORKING_SIZE, max_pixels=media.DEFAULT_MAX_PIXELS, detail=media.DETAIL_SIDE
    )
    detail = decoded.image if decoded.detail is None else decoded.detail
    return np.asarray(detail.convert("L"), dtype=np.uint8)


def test_colour_texture_is_not_grain() -> None:
    """Gravel in colour: its flattest blocks read as grain of sigma above the threshold (the flat-block
    estimate alone flagged it), but that texture does not shrink when the image is halved: not noise."""
    data = _jpeg(_tinted("gravel"))
    flat_blocks = metrics.noise_sigma(_grey_detail(data))
    assert flat_blocks > DEFAULT.noise.threshold  # what the measure read before it was told by scale
    flags, measured = _flags(data)
    assert "noise" not in flags and measured["noise"] < DEFAULT.noise.threshold, measured
    # a tenth of the reading is kept, so rougher textures still read higher (relative gates, insights)
    assert measured["noise"] == pytest.approx(metrics.TEXTURE_SHARE * flat_blocks, abs=1e-5)


@pytest.mark.parametrize("sigma", [10.0, 20.0])
def test_grain_on_colour_texture_is_flagged(sigma: float) -> None:
    """Real grain on the same texture halves when halved: flagged, and measured near its own strength
    once JPEG has smoothed it (sigma 10 reads about 5-6, 20 about 10-11)."""
    values = _tinted("gravel")
    grainy = values + np.random.default_rng(0).normal(0.0, sigma, values.shape)
    flags, measured = _flags(_jpeg(grainy))
    assert "noise" in flags, measured
    assert sigma / 4 < measured["noise"] < sigma, measured


def test_grain_keeps_the_flat_block_estimate() -> None:
    """A photo with grain (the astronaut, grey, sigma 6): halving halves the grain, so the measure is
    the flat-block estimate itself, and the scale estimate (used for grey photos) agrees with it."""
    values = np.asarray(photo("astronaut", 512).convert("L"), dtype=np.float32)
    grainy = values + np.random.default_rng(1).normal(0.0, 6.0, values.shape)
    grey = np.clip(np.rint(grainy), 0, 255).astype(np.uint8)
    e1 = metrics.noise_sigma(grey)
    assert 3.0 < e1 < 6.0  # the flattest blocks read a little below the grain's sigma
    assert metrics.fine_noise(grey, grey_photo=False, e1=e1) == e1
    assert 0.7 * e1 < metrics.fine_noise(grey, grey_photo=True, e1=e1) < 1.3 * e1


@functools.lru_cache(maxsize=1)  # read only (two tests share it)
def _mosaic() -> np.ndarray[Any, np.dtype[np.float32]]:
    """A 2559 x 1704 photo (an odd width, as a camera's crop may have): 3 x 3 scikit-image photos,
    each resampled to 853 x 568, so the frame has skin, fur, sky and china as a camera photo has."""
    names = ("chelsea", "coffee", "astronaut", "rocket", "coffee", "chelsea", "astronaut", "rocket", "coffee")
    tiles = [np.asarray(photo(n, 853).resize((853, 568), Image.Resampling.LANCZOS)) for n in names]
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in (0, 3, 6)]
    return np.concatenate(rows, axis=0).astype(np.float32)


def _detail_noise(data: bytes) -> float:
    """The noise measure as it was read before large JPEGs got their own grain decode: on the detail
    image (a DCT reduction by 4 of a 2560 px JPEG), told from texture by the scale-ratio threshold."""
    decoded = media.decode_reduced(
        data, side=media.WORKING_SIZE, max_pixels=media.DEFAULT_MAX_PIXELS, detail=media.DETAIL_SIDE
    )
    assert decoded.detail is not None
    thumb = np.asarray(metrics.thumbnail(decoded.image), dtype=np.uint8)
    return metrics.fine_noise(np.asarray(decoded.detail.convert("L"), np.uint8), metrics.is_grey(thumb))


def test_grain_on_a_large_photo_is_flagged() -> None:
    """Grain of sigma 5 on a 2559 px photo: on the detail image (drafted by 4) it is averaged down to
    about 0.8, below the threshold (missed before); read at half the reduction (1280 px) it halves when
    halved as white grain does, and is flagged. The photo as shot is not."""
    values = _mosaic()
    grainy = _jpeg(values + np.random.default_rng(3).normal(0.0, 5.0, values.shape))
    assert _detail_noise(grainy) < DEFAULT.noise.threshold  # what the measure read before
    flags, measured = _flags(grainy)
    assert "noise" in flags and measured["noise"] > DEFAULT.noise.threshold, measured
    clean_flags, clean = _flags(_jpeg(values))
    assert "noise" not in clean_flags and clean["noise"] < 0.5 * DEFAULT.noise.threshold, clean


def test_gravel_filling_a_large_frame_is_not_grain() -> None:
    """Gravel tiled to fill a 2560 px frame at its own pixels (the development corpus's "Path" is such a
    photo): on the detail image, drafted by 4, it passed the scale-ratio threshold and was flagged as
    grainy; at 1280 px it does not halve when halved, so the part that halves is about nothing."""
    grey = np.asarray(photo("gravel", 512).convert("L"), dtype=np.float32)
    tiled = np.tile(grey, (4, 5))[:1600, :2560]
    values = np.stack([tiled * 0.55 + 20, tiled * 0.85 + 20, tiled * 0.35 + 10], axis=-1)
    data = _jpeg(values)
    assert _detail_noise(data) > DEFAULT.noise.threshold  # flagged before
    flags, measured = _flags(data)
    assert "noise" not in flags and measured["noise"] < 0.5 * DEFAULT.noise.threshold, measured


def test_grain_decode_is_half_the_detail_reduction() -> None:
    """Large JPEGs only: a 2559 px JPEG (detail drafted by 4, to 640 px) has its grain read at 1280 px,
    a 1600 px one (detail drafted by 2) and a 2559 px PNG (no draft) on the detail image itself."""
    image = Image.fromarray(np.clip(_mosaic(), 0, 255).astype(np.uint8))
    for fmt, side, expected in (("JPEG", 2559, (852, 1280)), ("JPEG", 1600, None), ("PNG", 2559, None)):
        resized = image if side == image.width else image.resize((side, round(side * 1704 / 2559)))
        buffer = io.BytesIO()
        resized.save(buffer, fmt)
        data = buffer.getvalue()
        decoded = media.decode_reduced(
            data, side=media.WORKING_SIZE, max_pixels=media.DEFAULT_MAX_PIXELS, detail=media.DETAIL_SIDE
        )
        grain = media._grain_grey(data, decoded, media.DEFAULT_MEMORY_LIMIT)
        assert (None if grain is None else grain.shape) == expected, (fmt, side)


def test_reduced_grain_is_told_by_scale() -> None:
    """On a reduced JPEG, colour or grey, the measure is the part that halves when halved."""
    values = np.asarray(photo("astronaut", 512).convert("L"), dtype=np.float32)
    grainy = values + np.random.default_rng(4).normal(0.0, 6.0, values.shape)
    grey = np.clip(np.rint(grainy), 0, 255).astype(np.uint8)
    assert metrics.fine_noise(grey, reduced=True) == metrics.fine_noise(grey, grey_photo=True) > 1.0
    e1 = metrics.noise_sigma(grey)
    assert metrics.fine_noise(grey) == e1 != metrics.fine_noise(grey, reduced=True)


def test_fine_blown_patches_are_counted() -> None:
    """Grass two stops over: its blown-out blades are finer than the 128-255 px working image, which
    averages them with the shade between (about a fifth of it blown); at the detail image's pixels half
    the photo is blown: flagged over-exposed. The photo as shot blows nothing."""
    values = _tinted("grass") * np.array([1.4, 1.15, 1.6], dtype=np.float32)
    clean_flags, clean = _flags(_jpeg(values))
    assert "bright" not in clean_flags and clean["clipped"] < 0.05, clean
    over = np.clip((values / 255.0) ** 2.2 * 4.0, 0.0, 1.0) ** (1 / 2.2) * 255.0
    data = _jpeg(over)
    flags, measured = _flags(data)
    assert "bright" in flags and measured["clipped"] > DEFAULT.bright.threshold, measured
    decoded = media.decode_reduced(
        data, side=media.WORKING_SIZE, max_pixels=media.DEFAULT_MAX_PIXELS, detail=media.DETAIL_SIDE
    )
    working = metrics.clipped_highlights(np.asarray(decoded.image, dtype=np.uint8))
    assert working < DEFAULT.bright.threshold < measured["clipped"]  # the working image alone missed it


def test_clipped_share_matches_its_definition() -> None:
    """The share of pixels with any channel at 250 or more, on a non-contiguous view as well."""
    rgb = np.random.default_rng(2).integers(0, 256, (120, 161, 3), dtype=np.uint8)
    expected = float((rgb.max(axis=-1) >= metrics.CLIP_LEVEL).mean())
    assert metrics.clipped_highlights(rgb) == pytest.approx(expected)
    view = rgb[:, ::2]
    assert metrics.clipped_highlights(view) == pytest.approx(float((view.max(axis=-1) >= 250).mean()))
    assert metrics.clipped_highlights(np.zeros((0, 0, 3), np.uint8)) == 0.0
