"""Multi-index Hamming search (hamming.hamming_pairs) at a million 64-bit hashes: time per band layout.

Run:  .venv/bin/python benchmarks/bench_hamming.py [--n 1000000] [--distances 8 10] [--check 20000]
                                                   [--layouts chosen 4 5] [--skip-previous]
      .venv/bin/python benchmarks/bench_hamming.py --pixel-check [--png-share 0.05]
      .venv/bin/python benchmarks/bench_hamming.py --cross [--sizes 10000 100000 1000000] [--crop-distance 16]
                                                   [--limit 60]

The hashes: uniform random 64-bit values, 1 % of them replaced by a copy of another with each bit flipped
with probability 0.1 (planted near pairs). For each distance it times:

- ``previous``: the search as it was before (band_layout's former rule, about log2(n) bits per band,
  the same probe radius distance // bands on every band, every query probed against every mask);
- ``chosen``: hamming_pairs with today's band_layout (probe_radii: only distance % bands + 1 bands at the
  full radius; queries in cache-sized chunks; each query-query pair probed from one side only);
- ``B``: the same search on B even bands (``--layouts``).

and prints seconds (wall and CPU; the search is single-threaded), the ratio of CPU seconds to ``previous``, the layout's relative cost (hamming.layout_cost) and the
pairs found, which must be the same for every layout. ``--check N`` also compares every layout's pairs
with brute force on the first N hashes. It prints figures and asserts nothing.

``--cross``: hamming.cross_pairs as dedup.window_candidates calls it, the sub-window hashes of 1 % new
files (29 windows each) against N whole hashes at crop_distance (the spec default, 16 bits): brute force
against the band index, CPU seconds, triples and whether both give the same arrays. Queries are random
(``random``) or a tenth of them near copies of whole hashes (``planted``, each bit flipped with p 0.12).
A search whose estimate exceeds ``--limit`` seconds is timed on a slice of the queries and scaled
linearly (its cost is linear in the queries at a fixed table); the line says so.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))

from loupe_workers.curation import hamming

IntArray = npt.NDArray[np.int64]
Pairs = tuple[IntArray, IntArray]


def planted(n: int, seed: int = 0) -> npt.NDArray[np.uint64]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 1 << 63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, n).astype(np.uint64)
    k = n // 100
    flips = np.zeros(k, np.uint64)
    for bit in range(64):
        flips |= (rng.random(k) < 0.1).astype(np.uint64) << np.uint64(bit)
    hashes[1 : 2 * k : 2] = hashes[0 : 2 * k : 2] ^ flips
    return hashes


def previous_layout(n: int, max_distance: int) -> list[tuple[int, int]]:
    bits = min(hamming.MAX_BAND_BITS, max(8, math.ceil(math.log2(max(n, 2)))))
    bands = max(-(-64 // hamming.MAX_BAND_BITS), min(max_distance + 1, 64 // bits))
    return hamming._even_layout(bands)


def previous_pairs(hashes: npt.NDArray[np.uint64], max_distance: int) -> Pairs:
    """The former search: one radius for every band, every query against every mask at once."""
    n = len(hashes)
    query = np.ones(n, dtype=bool)
    layout = previous_layout(n, max_distance)
    radius = max_distance // len(layout)
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    for offset, width in layout:
        band = ((hashes >> np.uint64(offset)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(band, kind="stable")
        band = band[order]
        ordered = hashes[order]
        is_query = query[order]
        counts = np.bincount(band, minlength=1 << width)
        occupied = counts > 0
        starts = np.cumsum(counts) - counts
        query_pos = np.flatnonzero(is_query)
        query_band = band[query_pos]
        for mask in hamming._flip_masks(width, radius):
            probe = query_band ^ mask
            found = np.flatnonzero(occupied[probe])
            if found.size == 0:
                continue
            hit_probe = probe[found]
            per = counts[hit_probe]
            total = int(per.sum())
            i = np.repeat(query_pos[found], per)
            j = np.arange(total, dtype=np.int64) + np.repeat(starts[hit_probe] - (np.cumsum(per) - per), per)
            keep = (i != j) & ~(is_query[j] & (j < i))
            i, j = i[keep], j[keep]
            close = hamming._popcount(ordered[i] ^ ordered[j]) <= max_distance
            if close.any():
                firsts.append(order[i[close]])
                seconds.append(order[j[close]])
    return hamming._normalise(firsts, seconds)


def brute(hashes: npt.NDArray[np.uint64], max_distance: int) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for start in range(0, len(hashes), 512):
        d = np.bitwise_count(hashes[start : start + 512, None] ^ hashes[None, :])
        r, c = np.nonzero(d <= max_distance)
        found.update((a, b) for a, b in zip((r + start).tolist(), c.tolist(), strict=True) if a < b)
    return found


def as_set(pairs: Pairs) -> set[tuple[int, int]]:
    return set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


def searches(n: int, distance: int, names: list[str], previous: bool) -> dict[str, Callable[..., Pairs]]:
    out: dict[str, Callable[..., Pairs]] = {}
    if previous:
        out["previous"] = previous_pairs
    for name in names:
        layout = hamming.band_layout(n, distance) if name == "chosen" else hamming._even_layout(int(name))
        out[name] = lambda h, t, lay=layout: hamming.hamming_pairs(h, t, layout=lay)
    return out


def describe(n: int, distance: int, name: str) -> str:
    layout = previous_layout(n, distance) if name == "previous" else (
        hamming.band_layout(n, distance) if name == "chosen" else hamming._even_layout(int(name))
    )  # fmt: skip
    radii = (
        [distance // len(layout)] * len(layout)
        if name == "previous"
        else hamming.probe_radii(layout, distance)
    )
    cost = hamming.layout_cost(n, layout, radii)
    return f"widths {[w for _, w in layout]} radii {radii} cost {cost:,.0f}"


def pixel_check(hashes: npt.NDArray[np.uint64], png_share: float) -> None:
    """The identity search of the default spec (perceptual at 8 bits, exact pixels on): before, one
    search at the pixel radius (10 bits) over every hash; now one at 8 bits plus the 10-bit search of
    dedup.pixel_candidates, which only pairs DCT-scaled JPEGs with lossless copies of the same size.
    Every hash here is one size; ``png_share`` of them are PNGs, the rest JPEGs."""
    from loupe_workers.curation.dedup import PIXEL_CANDIDATE_DISTANCE, pixel_candidates

    n = len(hashes)
    rng = np.random.default_rng(1)
    formats = np.where(rng.random(n) < png_share, "png", "jpeg")
    records = [{"width": 1920, "height": 1080, "format": f} for f in formats.tolist()]
    query = np.ones(n, dtype=bool)
    figures: dict[str, float] = {}
    for name in ("before", "now"):
        started, cpu = time.perf_counter(), time.process_time()
        if name == "before":
            a, _ = hamming.hamming_pairs(hashes, PIXEL_CANDIDATE_DISTANCE, query)
            found = len(a)
        else:
            a, _ = hamming.hamming_pairs(hashes, 8, query)
            x, _ = pixel_candidates(records, hashes, query, PIXEL_CANDIDATE_DISTANCE)
            found = len(a) + len(x)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        figures[name] = cpu_seconds
        ratio = f"{cpu_seconds / figures['before']:.2f}x before" if name == "now" else ""
        print(f"n={n} default identity search ({png_share:.0%} png) {name:>6}: {seconds:7.2f} s wall "
              f"{cpu_seconds:7.2f} s cpu {ratio:>12}  {found} pairs (target: under 22 s)")  # fmt: skip
        sys.stdout.flush()


def cross_queries(table: npt.NDArray[np.uint64], count: int, near: bool, seed: int) -> npt.NDArray[np.uint64]:
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, 1 << 63, count, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    if near:
        k = count // 10
        flips = np.zeros(k, np.uint64)
        for bit in range(64):
            flips |= (rng.random(k) < 0.12).astype(np.uint64) << np.uint64(bit)
        queries[:k] = table[rng.integers(0, len(table), k)] ^ flips
    return queries


def timed_cross(
    queries: npt.NDArray[np.uint64], table: npt.NDArray[np.uint64], distance: int, indexed: bool, rows: int
) -> tuple[float, tuple[npt.NDArray[np.int64], ...]]:
    """CPU seconds of cross_pairs on the first ``rows`` queries, scaled to all of them."""
    cpu = time.process_time()
    found = hamming.cross_pairs(queries[:rows], table, distance, indexed=indexed)
    return (time.process_time() - cpu) * len(queries) / rows, found


def cross_check(sizes: list[int], distance: int, limit: float) -> None:
    # seconds per cost unit of each path, measured on a small search of this run (the baseline)
    table = planted(20_000, 5)
    queries = cross_queries(table, 5_800, False, 6)
    brute_units, index_units = hamming.cross_cost(len(queries), len(table), distance)
    rate = {False: timed_cross(queries, table, distance, False, len(queries))[0] / brute_units}
    rate[True] = timed_cross(queries, table, distance, True, len(queries))[0] / index_units
    for n in sizes:
        table = planted(n, 7)
        for kind in ("random", "planted"):
            queries = cross_queries(table, n // 100 * 29, kind == "planted", 8)
            units = dict(zip((False, True), hamming.cross_cost(len(queries), n, distance), strict=True))
            chosen = "index" if units[True] < units[False] else "brute force"
            seconds: dict[bool, float] = {}
            results: dict[bool, tuple[npt.NDArray[np.int64], ...]] = {}
            notes: list[str] = []
            rows = len(queries)
            for indexed in (False, True):
                estimate = rate[indexed] * units[indexed]
                if estimate > limit:
                    rows = min(rows, max(1, int(len(queries) * limit / estimate / 4)))
            for indexed in (False, True):
                seconds[indexed], results[indexed] = timed_cross(queries, table, distance, indexed, rows)
            if rows < len(queries):
                notes.append(
                    f"both timed (and triples counted) on the first {rows} of {len(queries)} queries, seconds scaled"
                )
            same = all(
                np.array_equal(a, b) and a.dtype == b.dtype
                for a, b in zip(results[False], results[True], strict=True)
            )
            print(f"cross n={n} queries={len(queries)} {kind:>7} distance {distance}: brute force "
                  f"{seconds[False]:8.2f} s cpu, index {seconds[True]:8.2f} s cpu "
                  f"({seconds[False] / seconds[True]:.2f}x), {len(results[True][0])} triples, "
                  f"{'same arrays' if same else 'DIFFERENT'}; cross_pairs picks {chosen}; "
                  f"{'; '.join(notes)}")  # fmt: skip
            sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--distances", type=int, nargs="+", default=[8, 10])
    parser.add_argument("--layouts", nargs="+", default=["chosen", "4"], help="'chosen' or a band count")
    parser.add_argument("--skip-previous", action="store_true")
    parser.add_argument("--check", type=int, default=20_000, help="brute-force check on this many (0: none)")
    parser.add_argument("--pixel-check", action="store_true", help="only the default dedup search (below)")
    parser.add_argument("--png-share", type=float, default=0.05)
    parser.add_argument("--cross", action="store_true", help="only the crop-candidate cross search (above)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--crop-distance", type=int, default=16, help="spec crop_distance default")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds before a search is sliced")
    args = parser.parse_args()
    if args.cross:
        cross_check(args.sizes, args.crop_distance, args.limit)
        return
    hashes = planted(args.n)
    hamming.hamming_pairs(hashes[:5000], 8)  # warm up
    if args.pixel_check:
        pixel_check(hashes, args.png_share)
        return
    for distance in args.distances:
        if args.check:
            sample = hashes[: args.check]
            want = brute(sample, distance)
            for name, search in searches(len(sample), distance, args.layouts, not args.skip_previous).items():
                same = as_set(search(sample, distance)) == want
                print(f"check n={len(sample)} distance {distance} {name:>8}: {len(want)} pairs, "
                      f"{'equal to' if same else 'DIFFERENT FROM'} brute force")  # fmt: skip
        base = None
        found = None
        for name, search in searches(args.n, distance, args.layouts, not args.skip_previous).items():
            started = time.perf_counter()
            cpu = time.process_time()
            pairs = search(hashes, distance)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
            base = cpu_seconds if name == "previous" else base  # cpu: the machine may be shared
            ratio = f"{cpu_seconds / base:.2f}x previous" if base else ""
            pair_set = as_set(pairs)
            agree = "" if found is None else (" same pairs" if pair_set == found else " DIFFERENT PAIRS")
            found = pair_set if found is None else found
            print(f"n={args.n} distance {distance} {name:>8}: {seconds:7.2f} s wall {cpu_seconds:7.2f} s cpu "
                  f"{ratio:>15}  {len(pair_set)} pairs{agree}  {describe(args.n, distance, name)}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
