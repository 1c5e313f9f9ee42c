"""Sampling figures: coverage radius against budget for kCenter, uniqueness and random on a real-photo
embedding set, and selection time on synthetic vectors.

Run:  .venv/bin/python benchmarks/bench_sampling.py [--n 100000] [--dim 1280] [--budget 200]

The embedding set is the development corpus (``benchmarks/corpus.py``: Debian wallpaper camera photos,
kept apart from the test fixtures), each photo whole and in 9 half-size windows (3 x 3 places), embedded
with the built-in model (MobileNetV2, 1280-d). The coverage radius of a selection is the largest cosine
distance from any sample to its nearest selected sample: the worst-covered sample. Random is the mean
over 5 seeds. Timing uses seeded Gaussian vectors (no structure: the worst case for farthest-point).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import photos  # type: ignore[import-not-found]
from loupe_api.sampling import SamplingSpec
from loupe_workers.curation import sampling
from loupe_workers.embedding.embed import EmbedConfig, Embedder, decode_for_model

BUDGETS = (5, 10, 20, 40, 80, 160)


def _jpeg(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def corpus_embeddings() -> npt.NDArray[np.float32]:
    embedder = Embedder(EmbedConfig())
    pixels: list[npt.NDArray[np.uint8]] = []
    for path in photos():
        with Image.open(path) as opened:
            opened.draft("RGB", (640, 640))
            whole = opened.convert("RGB")
        whole.thumbnail((640, 640))
        w, h = whole.size
        windows = [whole] + [
            whole.crop(
                (round(x * w / 2), round(y * h / 2), round(x * w / 2 + w / 2), round(y * h / 2 + h / 2))
            )
            for x in (0, 0.5, 1)
            for y in (0, 0.5, 1)
        ]
        pixels.extend(decode_for_model(_jpeg(i), embedder.size, max_pixels=10**8) for i in windows)
    stacked = np.stack(pixels)
    return embedder.infer([str(i) for i in range(len(stacked))], stacked).vectors


def radius_of(vectors: npt.NDArray[np.float32], spec: SamplingSpec) -> float:
    rows = [{"sample_id": f"{i:06d}", "label": None} for i in range(len(vectors))]
    chosen = sampling.select(rows, spec, vectors=vectors)
    return sampling.coverage_radius(vectors, [int(s) for s in chosen.selected])


def coverage(vectors: npt.NDArray[np.float32]) -> None:
    print(f"coverage radius (cosine distance) on {len(vectors)} dev-corpus embeddings:")
    print(f"{'budget':>7} {'kCenter':>8} {'uniqueness':>11} {'random':>8}")
    for budget in BUDGETS:
        if budget >= len(vectors):
            break
        k = radius_of(vectors, SamplingSpec(max_samples=budget, strategy="kCenter"))
        u = radius_of(vectors, SamplingSpec(max_samples=budget, strategy="uniqueness"))
        r = float(np.mean([radius_of(vectors, SamplingSpec(max_samples=budget, seed=s)) for s in range(5)]))
        print(f"{budget:>7} {k:>8.3f} {u:>11.3f} {r:>8.3f}")


def timing(n: int, dim: int, budget: int) -> None:
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    rows = [{"sample_id": f"{i:07d}", "label": f"c{i % 10}"} for i in range(n)]
    print(f"selection time, {n} synthetic {dim}-d vectors, budget {budget}:")
    for strategy in ("random", "kCenter"):
        spec = SamplingSpec.model_validate({"maxSamples": budget, "strategy": strategy})
        start = time.perf_counter()
        chosen = sampling.select(rows, spec, vectors=vectors)
        took = time.perf_counter() - start
        print(f"  {strategy:>10}: {took:6.1f} s ({len(chosen.selected)} selected)")
    # sticky: half the budget selected in the parent, the rest filled
    sticky = set(chosen.selected[: budget // 2])
    start = time.perf_counter()
    sampling.select(
        rows, SamplingSpec(max_samples=budget, strategy="kCenter"), vectors=vectors, sticky=sticky
    )
    print(f"  kCenter with {len(sticky)} kept from the parent: {time.perf_counter() - start:6.1f} s")
    m = min(n, 10_000)
    start = time.perf_counter()
    sampling.select(rows[:m], SamplingSpec(max_samples=budget, strategy="uniqueness"), vectors=vectors[:m])
    print(f"  uniqueness on {m} (exact 3-NN, O(n^2)): {time.perf_counter() - start:6.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--skip-corpus", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_corpus:
        coverage(corpus_embeddings())
    timing(args.n, args.dim, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
