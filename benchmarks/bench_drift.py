"""Embedding drift benchmark: the nearest-neighbour two-sample statistic (analysis.knn_two_sample) against
the exact full-matrix computation it replaced, on synthetic unit vectors.

Run:  .venv/bin/python benchmarks/bench_drift.py [--sizes 2000 16000 64000] [--dim 1280] [--seeds 1]

For each reference size, an incoming sample of max(1000, size / 4) vectors, drawn from the same
distribution (unshifted) or a shifted one. The vectors: 64 random unit cluster centres in d dimensions,
each point a centre plus isotropic noise, normalised (embeddings of a few kinds of scenes); the shifted
sample moves every point a little along one common direction and favours half of the clusters. Each
case runs in its own process; printed: wall time, the Python/numpy peak memory the function allocates
(tracemalloc, inputs excluded) and the process's peak RSS, the statistic, and its difference from the
exact value. The exact computation (an n x n similarity matrix and its argpartition, about 16 n^2 bytes)
runs only where that fits in --exact-limit GB. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from loupe_workers.insights import analysis

Vectors = npt.NDArray[np.float32]


def exact_knn_two_sample(reference: Vectors, current: Vectors, k: int = 5) -> float | None:
    """The statistic as computed before: the full pooled similarity matrix."""
    n1, n2 = len(reference), len(current)
    if n1 < 2 or n2 < 2:
        return None
    pooled = np.concatenate([reference, current]).astype(np.float32)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-12
    k = min(k, n1 + n2 - 1)
    similarity = pooled @ pooled.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argpartition(-similarity, k, axis=1)[:, :k]
    group = np.r_[np.zeros(n1, dtype=bool), np.ones(n2, dtype=bool)]
    same = float((group[neighbours] == group[:, None]).mean())
    n = n1 + n2
    expected = (n1 * (n1 - 1) + n2 * (n2 - 1)) / (n * (n - 1))
    return float(max(0.0, (same - expected) / (1 - expected)))


def sample(n: int, dim: int, shifted: bool, rng: np.random.Generator, centres: Vectors) -> Vectors:
    weights = np.ones(len(centres))
    if shifted:
        weights[: len(centres) // 2] = 3.0  # some kinds of scene more often
    which = rng.choice(len(centres), n, p=weights / weights.sum())
    points = centres[which] + rng.normal(0, 1.0 / np.sqrt(dim), (n, dim)).astype(np.float32)
    if shifted:
        direction = np.zeros(dim, np.float32)
        direction[0] = 1.0
        points += 0.15 * direction  # and all of them a little different (lighting, a new camera)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def _case(method: str, size: int, incoming: int, dim: int, shifted: bool, seed: int, out: Any) -> None:
    rng = np.random.default_rng(1000 + size)
    centres = rng.normal(0, 1, (64, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    reference = sample(size, dim, False, rng, centres)
    current = sample(incoming, dim, shifted, np.random.default_rng(2000 + size + shifted), centres)
    tracemalloc.start()
    started = time.perf_counter()
    if method == "exact":
        value = exact_knn_two_sample(reference, current)
    else:
        value = analysis.knn_two_sample(reference, current, seed=seed)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.send((value, seconds, peak, rss))


def run_case(method: str, size: int, incoming: int, dim: int, shifted: bool, seed: int) -> tuple[Any, ...]:
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_case, args=(method, size, incoming, dim, shifted, seed, send))
    process.start()
    result = receive.recv()
    process.join()
    return tuple(result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000, 64000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--seeds", type=int, default=1, help="query-subsample seeds for the new statistic")
    parser.add_argument("--exact-limit", type=float, default=8.0, help="GB the exact matrix may take")
    args = parser.parse_args()
    print(f"d={args.dim}, k=5, queries per set at most {analysis.KNN_QUERIES}, chunk {analysis.KNN_CHUNK}")
    header = f"{'reference':>9} {'incoming':>8} {'shift':>5} {'method':>9} {'seconds':>8} {'traced MB':>9} {'RSS MB':>8} {'statistic':>9} {'- exact':>8}"
    print(header)
    for size in args.sizes:
        incoming = max(1000, size // 4)
        n = size + incoming
        for shifted in (False, True):
            exact = None
            if 16 * n * n / 1e9 <= args.exact_limit:
                value, seconds, peak, rss = run_case("exact", size, incoming, args.dim, shifted, 0)
                exact = value
                print(f"{size:>9} {incoming:>8} {shifted!s:>5} {'exact':>9} {seconds:>8.2f} {peak / 1e6:>9.0f} "
                      f"{rss / 1e6:>8.0f} {value:>9.4f} {'':>8}")  # fmt: skip
            else:
                print(f"{size:>9} {incoming:>8} {shifted!s:>5} {'exact':>9} skipped: the matrix needs "
                      f"{16 * n * n / 1e9:.1f} GB")  # fmt: skip
            for seed in range(args.seeds):
                value, seconds, peak, rss = run_case("new", size, incoming, args.dim, shifted, seed)
                diff = f"{value - exact:>+8.4f}" if exact is not None else f"{'n/a':>8}"
                print(f"{size:>9} {incoming:>8} {shifted!s:>5} {'new s=' + str(seed):>9} {seconds:>8.2f} "
                      f"{peak / 1e6:>9.0f} {rss / 1e6:>8.0f} {value:>9.4f} {diff}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
