"""The band layout hamming_pairs chooses: exact recall (pigeonhole over per-band probe radii) against
brute force on random hashes with planted near pairs, at the distances dedup searches."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from loupe_workers.curation import hamming


def planted(n: int, seed: int) -> npt.NDArray[np.uint64]:
    """Uniform random hashes; a fifth of them a copy of another with each bit flipped with p 0.12."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 1 << 63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, n).astype(np.uint64)
    copies = rng.choice(n, n // 5, replace=False)
    origins = rng.integers(0, n, len(copies))
    flips = np.zeros(len(copies), np.uint64)
    for bit in range(64):
        flips |= (rng.random(len(copies)) < 0.12).astype(np.uint64) << np.uint64(bit)
    hashes[copies] = hashes[origins] ^ flips
    return hashes


def brute(hashes: npt.NDArray[np.uint64], max_distance: int) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for start in range(0, len(hashes), 1024):
        d = np.bitwise_count(hashes[start : start + 1024, None] ^ hashes[None, :])
        r, c = np.nonzero(d <= max_distance)
        found.update((a, b) for a, b in zip((r + start).tolist(), c.tolist(), strict=True) if a < b)
    return found


@pytest.mark.parametrize("max_distance", [8, 10, 12])
def test_chosen_layout_finds_exactly_the_brute_force_pairs(max_distance: int) -> None:
    hashes = planted(20_000, max_distance)
    want = brute(hashes, max_distance)
    assert len(want) > 1000  # the planted pairs are there
    a, b = hamming.hamming_pairs(hashes, max_distance)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == want and len(a) == len(want)
    query = np.zeros(len(hashes), dtype=bool)
    query[-3000:] = True  # an increment: only pairs with a new item
    a, b = hamming.hamming_pairs(hashes, max_distance, query)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {p for p in want if query[p[0]] or query[p[1]]}


@pytest.mark.parametrize("n", [3001, 20_000, 1_000_000, 1 << 24])
@pytest.mark.parametrize("max_distance", list(range(0, 24)))
def test_probe_radii_keep_the_pigeonhole_bound(n: int, max_distance: int) -> None:
    layout = hamming.band_layout(n, max_distance)
    radii = hamming.probe_radii(layout, max_distance)
    assert sum(r + 1 for r in radii) > max_distance  # some band differs in at most its radius
    assert all(-1 <= r <= max_distance // len(layout) for r in radii)


def test_the_million_hash_layout_is_cheaper_at_distance_10() -> None:
    n = 1_000_000
    layout = hamming.band_layout(n, 10)
    even = [hamming._even_layout(bands) for bands in range(3, 12)]
    chosen = hamming.layout_cost(n, layout, hamming.probe_radii(layout, 10))
    assert chosen == min(hamming.layout_cost(n, lay, hamming.probe_radii(lay, 10)) for lay in even)
    uniform = hamming.layout_cost(n, layout, [10 // len(layout)] * len(layout))
    assert chosen < 0.8 * uniform  # one band probed at radius 2 instead of 3
