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


def test_pixel_candidates_are_the_wide_pairs_a_scaled_jpeg_can_have_with_a_lossless_copy() -> None:
    """Only a DCT-scaled JPEG and a lossless copy of the same size are searched at the pixel radius
    (10 bits); pairs of one format, of two sizes, or of two stored samples are not."""
    from loupe_workers.curation.dedup import pixel_candidates

    rng = np.random.default_rng(3)
    base = rng.integers(0, 1 << 62, 6000, dtype=np.int64).astype(np.uint64)
    nine_bits = np.uint64(0b111111111)
    hashes = base.copy()
    records = [{"width": 640, "height": 480, "format": "jpeg"} for _ in range(len(base))]
    # 0/1: jpeg vs png of one size, 9 bits apart -> a candidate
    hashes[1] = hashes[0] ^ nine_bits
    records[1] = {"width": 640, "height": 480, "format": "png"}
    # 2/3: two jpegs 9 bits apart -> not (same format: the same pixels hash the same)
    hashes[3] = hashes[2] ^ nine_bits
    # 4/5: jpeg vs png of different sizes -> not
    hashes[5] = hashes[4] ^ nine_bits
    records[5] = {"width": 480, "height": 640, "format": "png"}
    # 6/7: jpeg vs png, one size, 11 bits apart -> not
    hashes[7] = hashes[6] ^ np.uint64(0b11111111111)
    records[7] = {"width": 640, "height": 480, "format": "png"}
    # 8/9: jpeg vs png, one size, 9 bits apart, both stored (not queries) -> not
    hashes[9] = hashes[8] ^ nine_bits
    records[9] = {"width": 640, "height": 480, "format": "png"}
    query = np.ones(len(base), dtype=bool)
    query[[8, 9]] = False
    a, b = pixel_candidates(records, hashes, query, 10)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(0, 1)}
    # one format only: nothing is searched, nothing found
    only_jpeg = [{**r, "format": "jpeg"} for r in records]
    a, b = pixel_candidates(only_jpeg, hashes, query, 10)
    assert len(a) == 0


def near_copies(
    origins: npt.NDArray[np.uint64], bits: npt.NDArray[np.int64], seed: int
) -> npt.NDArray[np.uint64]:
    """Each origin with exactly bits[k] of its 64 bits flipped, at random places."""
    rng = np.random.default_rng(seed)
    out = origins.copy()
    for k, count in enumerate(bits.tolist()):
        for bit in rng.choice(64, count, replace=False).tolist():
            out[k] ^= np.uint64(1) << np.uint64(bit)
    return out


@pytest.mark.parametrize(("queries", "table"), [(3000, 6000), (6000, 3000)])  # either side indexed
@pytest.mark.parametrize("max_distance", [5, 10, 16])
def test_indexed_cross_search_gives_exactly_the_brute_force_triples(
    queries: int, table: int, max_distance: int
) -> None:
    """Random hashes, and queries that are table hashes with exactly 0 to max_distance + 2 bits flipped:
    every distance up to the bound, and just beyond it, on every band boundary the layout has."""
    rng = np.random.default_rng(max_distance)
    stored = rng.integers(0, 1 << 63, table, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    asked = rng.integers(0, 1 << 63, queries, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    planted_at = rng.choice(queries, queries * 3 // 4, replace=False)
    bits = rng.integers(0, max_distance + 3, len(planted_at))
    bits[len(bits) // 3 :] = max_distance  # at the bound: the pairs a band probed one bit short misses
    asked[planted_at] = near_copies(stored[rng.integers(0, table, len(planted_at))], bits, max_distance)
    want = hamming.cross_pairs(asked, stored, max_distance, indexed=False)
    got = hamming.cross_pairs(asked, stored, max_distance, indexed=True)
    assert np.bincount(want[2], minlength=max_distance + 1)[: max_distance + 1].min() > 0  # every distance
    for brute, index in zip(want, got, strict=True):
        assert brute.dtype == index.dtype
        np.testing.assert_array_equal(index, brute)  # the same triples, in the same order


def test_cross_search_indexes_only_where_the_cost_model_says_it_pays() -> None:
    """Crop candidates (16 bits): brute force for a small increment, the index at a million stored."""
    brute, indexed = hamming.cross_cost(290, 10_000, 16)
    assert brute < indexed
    brute, indexed = hamming.cross_cost(290_000, 1_000_000, 16)
    assert indexed < brute
