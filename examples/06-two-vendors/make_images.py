"""Write the delivery's images: 16 real photographs shipped with scikit-image (no download)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = {
    "astronaut": data.astronaut, "cameraman": data.camera, "chelsea": data.chelsea, "coffee": data.coffee,
    "coins": data.coins, "rocket": data.rocket, "motorcycle": lambda: data.stereo_motorcycle()[0],
    "hubble": data.hubble_deep_field, "moon": data.moon, "brick": data.brick, "grass": data.grass,
    "gravel": data.gravel, "page": data.page, "text": data.text, "ihc": data.immunohistochemistry,
    "retina": data.retina,
}  # fmt: skip


def main(root: Path) -> None:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, load in PHOTOS.items():
        picture = Image.fromarray(np.ascontiguousarray(load())).convert("RGB")
        picture.thumbnail((512, 512))  # small: the example runs in seconds
        picture.save(images / f"{name}.jpg", quality=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "delivery")
