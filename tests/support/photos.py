"""Real photos from scikit-image and the transforms that make near duplicates of them."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# name -> scikit-image loader; all ship with scikit-image itself (no download)
PHOTO_NAMES = (
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "camera",
    "coins",
    "horse",
    "moon",
    "brick",
    "grass",
)


def photo(name: str, long_side: int = 320) -> Image.Image:
    """An RGB scikit-image photo, reduced so tests stay fast."""
    import skimage.data

    loaded = getattr(skimage.data, "stereo_motorcycle" if name == "motorcycle" else name)()
    array = loaded[0] if name == "motorcycle" else loaded
    if array.dtype != np.uint8:
        array = (array.astype(np.float64) / max(float(array.max()), 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(array).convert("RGB")
    scale = long_side / max(image.size)
    if scale < 1:
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
    return image


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def crop(image: Image.Image, fraction: float, x: float = 0.5, y: float = 0.5) -> Image.Image:
    """A crop keeping ``fraction`` of each side, placed at (x, y) in [0, 1] of the free margin."""
    w, h = image.size
    cw, ch = round(w * fraction), round(h * fraction)
    left, top = round((w - cw) * x), round((h - ch) * y)
    return image.crop((left, top, left + cw, top + ch))


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "flip": ImageOps.mirror,
    "crop75": lambda i: crop(i, 0.75),
    "crop60": lambda i: crop(i, 0.6),
    "reframe": lambda i: crop(i, 0.8, 0.1, 0.9),  # off-centre: the subject moves in the frame
    "reframe60": lambda i: crop(i, 0.6, 0.1, 0.9),  # a third of the photo, off-centre: no sub-window hash
    "brighter": lambda i: ImageEnhance.Brightness(i).enhance(1.3),
    "smaller": lambda i: i.resize((i.width // 2, i.height // 2), Image.Resampling.LANCZOS),
}
