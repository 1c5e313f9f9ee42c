"""Rendition benchmark on the development corpus: how fast one core renders, and what reuse saves.

Run:  .venv/bin/python benchmarks/bench_renditions.py [--limit 20] [--sides 512 1024 full]

Prints figures; it asserts nothing. The photos are the development corpus (benchmarks/corpus.py: camera
photographs of 1.3-4 MP from Debian's wallpaper packages, never the test photos). For each rendition
parameter set it times ``media.renditions.render`` on every photo (one process, one core), then the
stage's second pass over the same store (``compute.renditions.ensure_renditions``: everything found,
nothing rendered), which is what a second dataset or an unchanged rerun costs.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

from PIL import Image

from corpus import photos
from loupe_api.renditions import RenditionSpec
from loupe_storage.store import LocalStore, put_blob
from loupe_workers.compute.executor import InlineExecutor
from loupe_workers.compute.renditions import Limits, ensure_renditions
from loupe_workers.media.renditions import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="photos to use (0: all)")
    parser.add_argument("--sides", nargs="+", default=["512", "1024", "full"], help="maxSide values")
    args = parser.parse_args(argv)
    files = photos()
    files = files[: args.limit] if args.limit else files
    data = [path.read_bytes() for path in files]
    megapixels = []
    for blob in data:
        with Image.open(io.BytesIO(blob)) as image:
            megapixels.append(image.width * image.height / 1e6)
    print(
        f"{len(data)} photos, {sum(megapixels) / len(data):.1f} MP on average, {sum(map(len, data)) / 1e6:.0f} MB"
    )
    for side in args.sides:
        spec = RenditionSpec(format="jpeg", quality=90, maxSide=None if side == "full" else int(side))
        start = time.perf_counter()
        made = [render(blob, spec) for blob in data]
        took = time.perf_counter() - start
        out_bytes = sum(len(m.data) for m in made)
        print(f"jpeg q90 maxSide={side:>5}: {len(data) / took:6.2f} images/s on one core, "
              f"{out_bytes / len(made) / 1e3:7.0f} kB per rendition")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(folder)
        shas = [put_blob(store, blob) for blob in data]
        specs = {"train-1024": RenditionSpec(maxSide=1024)}
        for label in ("first pass (rendered)", "second pass (found in the store)"):
            start = time.perf_counter()
            done = ensure_renditions(store, shas, specs, executor=InlineExecutor(), limits=Limits())
            took = time.perf_counter() - start
            print(f"stage, {label}: {took:.2f} s ({done.computed} computed, {done.found} found)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
