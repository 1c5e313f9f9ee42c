"""Which copy the bestOriginal keep policy keeps, at web size and at camera size (issue 11, item 5).

Run:  .venv/bin/python benchmarks/bench_keep.py [--sizes 640 2048] [--energy 0.25 0.15 0.12]

The groups are bench_near_duplicates.py's: each photo (scikit-image's and the development corpus,
never the test photos) with its 22 edits, at a long side of 640 px (every photo reduced: crisp) and
2048 px (the corpus photos at their own size, 1280-2048 px, often soft at their own pixels; scikit-image's
are smaller and stay as they are). Grouping is taken as given (every copy of a photo in one group, crops
shown inside every uncropped copy, as verified crop candidates show them), so that only the choice of
the kept copy is measured: ``dedup.best_original`` on each copy's ``media.keep_measures``.

For each threshold of the upscale test (``dedup.UPSCALE_ENERGY``: a copy is taken for an upscale of a
smaller one when its spectral density above the smaller one's Nyquist frequency is under this share of
the density below it) it prints how many groups keep a processed copy (one of
bench_near_duplicates.PROCESSED: resized, recompressed, cropped, letterboxed, upscaled, stretched,
blurred, rotated) instead of the original or a lossless-looking transform of it, per half of the photos
(even places in name order: tuning; odd: held out) and which edits won. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for folder in ("api", "workers", "benchmarks"):
    sys.path.insert(0, str(REPO / folder))

from PIL import Image  # noqa: E402

import bench_near_duplicates as nd  # noqa: E402
from loupe_workers.curation import dedup  # noqa: E402
from loupe_workers.media import decode as media  # noqa: E402

CROPS = {"crop90", "crop75", "crop60", "crop75_mirror"}


def groups(long_side: int) -> dict[str, list[dict[str, Any]]]:
    """Each photo's copies: the record fields best_original reads, the edit and the keep measures."""
    with tempfile.TemporaryDirectory() as tmp:
        items = nd.build(Path(tmp), long_side)
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        with Image.open(io.BytesIO(item["data"])) as image:
            width, height, fmt = image.width, image.height, (image.format or "").lower()
        record = {"source": "bench", "key": item["file"], "size": len(item["data"]), "format": fmt,
                  "width": width, "height": height, "edit": item["edit"],
                  "measures": media.keep_measures(item["data"], max_pixels=100_000_000)}  # fmt: skip
        out.setdefault(item["photo"], []).append(record)
    return out


def kept_edits(photo_groups: dict[str, list[dict[str, Any]]], energy: float) -> dict[str, str]:
    """The edit kept in each photo's group with the upscale test at ``energy``."""
    dedup.UPSCALE_ENERGY = energy  # read by best_original at call time
    kept = {}
    for photo, records in photo_groups.items():
        members = list(range(len(records)))
        uncropped = [i for i, r in enumerate(records) if r["edit"] not in CROPS]
        cropped = {i: uncropped for i, r in enumerate(records) if r["edit"] in CROPS}
        keeper, _ = dedup.best_original(members, records, lambda i, rs=records: rs[i]["measures"], cropped)
        kept[photo] = records[keeper]["edit"]
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 2048])
    parser.add_argument(
        "--energy", type=float, nargs="+", default=[dedup.UPSCALE_ENERGY, 0.2, 0.15, 0.12, 0.1]
    )
    args = parser.parse_args()
    default = dedup.UPSCALE_ENERGY
    print(
        "| long side | upscale energy | processed copy kept: tuning half | held-out half | edits kept instead |"
    )
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        photo_groups = groups(size)
        names = sorted(photo_groups)
        tuning = set(names[0::2])
        for energy in args.energy:
            kept = kept_edits(photo_groups, energy)
            wrong = {p: e for p, e in kept.items() if e in nd.PROCESSED}
            tune = sum(1 for p in wrong if p in tuning)
            held = len(wrong) - tune
            won = ", ".join(f"{e} {n}" for e, n in Counter(wrong.values()).most_common())
            mark = " (default)" if energy == default else ""
            print(f"| {size} | {energy}{mark} | {tune} of {len(tuning)} | {held} of {len(names) - len(tuning)} | "
                  f"{won or '-'} |", flush=True)  # fmt: skip
    dedup.UPSCALE_ENERGY = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
