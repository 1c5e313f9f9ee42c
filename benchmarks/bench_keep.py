"""Which copy the bestOriginal keep policy keeps, at web size and at camera size (issue 11, item 5).

Run:  .venv/bin/python benchmarks/bench_keep.py [--sizes 640 2048] [--trace 4 6] [--hinted 3 4] [--upscale-2x]

The groups are bench_near_duplicates.py's: each photo (scikit-image's and the development corpus,
never the test photos) with its 22 edits, at a long side of 640 px (every photo reduced: crisp) and
2048 px (the corpus photos at their own size, 1280-2048 px, often soft at their own pixels; scikit-image's
are smaller and stay as they are). Grouping is taken as given (every copy of a photo in one group, crops
shown inside every uncropped copy, as verified crop candidates show them), so that only the choice of
the kept copy is measured: ``dedup.best_original`` on each copy's ``media.keep_measures``.

For each setting of the upscale test (``dedup.UPSCALE_TRACE``: the resampling-trace peak that marks a
copy as an upscale of a smaller one by the factor between them; ``dedup.UPSCALE_TRACE_HINTED``: the lower
peak that does so with a poor spectrum above the smaller one's Nyquist frequency besides), and for the
rule before traces (baseline: a spectral density above the smaller one's Nyquist under 0.25 of that
below, alone; crops' sizes left out of both), it prints how many
groups keep a processed copy (one of
bench_near_duplicates.PROCESSED: resized, recompressed, cropped, letterboxed, upscaled, stretched,
blurred, rotated) instead of the original or a lossless-looking transform of it, per half of the photos
(even places in name order: tuning; odd: held out) and which edits won. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import math
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


def record(item: dict[str, Any]) -> dict[str, Any]:
    """The record fields best_original reads, the edit and the keep measures of one copy."""
    with Image.open(io.BytesIO(item["data"])) as image:
        width, height, fmt = image.width, image.height, (image.format or "").lower()
    return {"source": "bench", "key": item["file"], "size": len(item["data"]), "format": fmt,
            "width": width, "height": height, "edit": item["edit"],
            "measures": media.keep_measures(item["data"], max_pixels=100_000_000)}  # fmt: skip


def groups(long_side: int, upscale_2x: bool) -> dict[str, list[dict[str, Any]]]:
    """Each photo's copies (with ``upscale_2x`` also a 2x bicubic upscale of the original's JPEG)."""
    with tempfile.TemporaryDirectory() as tmp:
        items = nd.build(Path(tmp), long_side)
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(item["photo"], []).append(record(item))
        if upscale_2x and item["edit"] == "original":
            with Image.open(io.BytesIO(item["data"])) as image:
                big = image.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)
            data = nd.encode(big, "JPEG", 90)
            out[item["photo"]].append(record({"file": f"{item['photo']}__upscale_200.jpg", "data": data,
                                              "edit": "upscale_200"}))  # fmt: skip
    return out


# the upscale test's thresholds (dedup's names): a setting of the table is one value for each
NAMES = (
    "UPSCALE_TRACE",
    "UPSCALE_TRACE_HINTED",
    "UPSCALE_GRID_TRACE",
    "UPSCALE_ENERGY",
    "UPSCALE_ENERGY_ALONE",
)
# the rule before resampling traces: the spectral share alone, under 0.25
BASELINE = (math.inf, math.inf, math.inf, 0.25, 0.25)


def kept_edits(photo_groups: dict[str, list[dict[str, Any]]], setting: tuple[float, ...]) -> dict[str, str]:
    """The edit kept in each photo's group with the upscale test at this setting."""
    for name, value in zip(NAMES, setting, strict=True):
        setattr(dedup, name, value)  # read by best_original at call time
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
    parser.add_argument("--trace", type=float, nargs="+", default=[dedup.UPSCALE_TRACE, 6.0])
    parser.add_argument("--hinted", type=float, nargs="+", default=[dedup.UPSCALE_TRACE_HINTED, 4.0])
    parser.add_argument("--upscale-2x", action="store_true", help="add a 2x bicubic upscale to each group")
    args = parser.parse_args()
    default = tuple(float(getattr(dedup, name)) for name in NAMES)
    settings = [BASELINE, default]
    settings += [(t, h, *default[2:]) for t in args.trace for h in args.hinted if (t, h) != default[:2]]
    print("| long side | upscale trace, hinted trace | processed copy kept: tuning half | held-out half | "
          "edits kept instead |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    processed = nd.PROCESSED | {"upscale_200"}
    for size in args.sizes:
        photo_groups = groups(size, args.upscale_2x)
        names = sorted(photo_groups)
        tuning = set(names[0::2])
        for setting in settings:
            kept = kept_edits(photo_groups, setting)
            wrong = {p: e for p, e in kept.items() if e in processed}
            tune = sum(1 for p in wrong if p in tuning)
            held = len(wrong) - tune
            won = ", ".join(f"{e} {n}" for e, n in Counter(wrong.values()).most_common())
            label = (
                "baseline: spectral share alone < 0.25"
                if setting == BASELINE
                else f"{setting[0]}, {setting[1]}"
            )
            mark = " (default)" if setting == default else ""
            print(f"| {size} | {label}{mark} | {tune} of {len(tuning)} | {held} of {len(names) - len(tuning)} | "
                  f"{won or '-'} |", flush=True)  # fmt: skip
    for name, value in zip(NAMES, default, strict=True):
        setattr(dedup, name, value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
