"""Sub-quadratic search for pairs of 64-bit hashes within a Hamming distance (multi-index hashing).

Split the 64 bits into m bands. If two hashes differ in at most t bits, some band differs in at most
floor(t / m) bits (pigeonhole). For each band, probe every value within that radius of each query's band
value in a counting-sort table of all band values, then verify candidates on the full 64 bits. With
m ~ 64 / log2(n) the expected candidates per probe stay near one, so time is about
n * m * C(64/m, <=r) table look-ups, all vectorised, and memory is linear in n.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import numpy.typing as npt

BRUTE_FORCE_LIMIT = 3000
MAX_BAND_BITS = 24  # a band's counting table has 2**width entries: wider bands cannot be tabled
_CHUNK = 512

IntArray = npt.NDArray[np.int64]
HashArray = npt.NDArray[np.uint64]


def hex_to_u64(values: list[str]) -> HashArray:
    """Hex strings (16 digits) as uint64."""
    return np.array([int(v, 16) for v in values], dtype=np.uint64)


def _popcount(values: HashArray) -> npt.NDArray[np.uint8]:
    return np.bitwise_count(values)


def _brute_force(
    hashes: HashArray, max_distance: int, query: npt.NDArray[np.bool_]
) -> tuple[IntArray, IntArray]:
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    query_idx = np.flatnonzero(query)
    for start in range(0, len(query_idx), _CHUNK):
        rows = query_idx[start : start + _CHUNK]
        distances = _popcount(hashes[rows, None] ^ hashes[None, :])
        r, c = np.nonzero(distances <= max_distance)
        i, j = rows[r], c
        keep = (i != j) & ~(query[j] & (j < i))  # each query-query pair once
        firsts.append(i[keep])
        seconds.append(j[keep])
    return _normalise(firsts, seconds)


def _normalise(firsts: list[IntArray], seconds: list[IntArray]) -> tuple[IntArray, IntArray]:
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = np.concatenate(firsts).astype(np.int64)
    b = np.concatenate(seconds).astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _flip_masks(width: int, radius: int) -> list[int]:
    masks = [0]
    for k in range(1, radius + 1):
        for bits in combinations(range(width), k):
            masks.append(sum(1 << b for b in bits))
    return masks


def band_layout(n: int, max_distance: int) -> list[tuple[int, int]]:
    """(offset, width) of each band: about log2(n) bits per band, at most max_distance + 1 bands
    unless that would make a band wider than MAX_BAND_BITS (more bands only lower the probe radius
    max_distance // bands, so the pigeonhole bound still holds)."""
    bits = min(MAX_BAND_BITS, max(8, math.ceil(math.log2(max(n, 2)))))
    bands = max(-(-64 // MAX_BAND_BITS), min(max_distance + 1, 64 // bits))
    widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
    offsets = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(offsets, widths, strict=True))


def hamming_pairs(
    hashes: HashArray, max_distance: int, query: npt.NDArray[np.bool_] | None = None
) -> tuple[IntArray, IntArray]:
    """Index pairs (i < j) whose hashes differ in at most ``max_distance`` bits.

    With ``query``, only pairs that involve at least one query item are searched: a new version
    compares only its new samples against the stored ones.
    """
    n = len(hashes)
    if query is None:
        query = np.ones(n, dtype=bool)
    if n < 2 or max_distance < 0 or not query.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if n <= BRUTE_FORCE_LIMIT or max_distance >= 24:
        return _brute_force(hashes, max_distance, query)
    layout = band_layout(n, max_distance)
    radius = max_distance // len(layout)
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    for offset, width in layout:
        # Work in band-sorted order so every table look-up below walks memory almost sequentially.
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
        for mask in _flip_masks(width, radius):
            probe = query_band ^ mask
            found = np.flatnonzero(occupied[probe])
            if found.size == 0:
                continue
            hit_probe = probe[found]
            per = counts[hit_probe]
            total = int(per.sum())
            i = np.repeat(query_pos[found], per)
            j = np.arange(total, dtype=np.int64) + np.repeat(starts[hit_probe] - (np.cumsum(per) - per), per)
            keep = (i != j) & ~(is_query[j] & (j < i))  # each query-query pair once
            i, j = i[keep], j[keep]
            close = _popcount(ordered[i] ^ ordered[j]) <= max_distance
            if close.any():
                firsts.append(order[i[close]])
                seconds.append(order[j[close]])
    return _normalise(firsts, seconds)


def cross_pairs(
    queries: HashArray, table: HashArray, max_distance: int
) -> tuple[IntArray, IntArray, npt.NDArray[np.uint8]]:
    """(query index, table index, distance) of every query/table pair within ``max_distance`` bits, by
    chunked brute force: O(len(queries) * len(table)) popcounts in bounded memory. Meant for loose
    thresholds (crop candidates at 16 of 64 bits), where multi-index probing costs about as much."""
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    found: list[npt.NDArray[np.uint8]] = []
    if max_distance < 0 or not len(queries) or not len(table):
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    rows = max(1, (1 << 22) // len(table))  # about 4 M distances at a time
    for start in range(0, len(queries), rows):
        distances = _popcount(queries[start : start + rows, None] ^ table[None, :])
        r, c = np.nonzero(distances <= max_distance)
        firsts.append((r + start).astype(np.int64))
        seconds.append(c.astype(np.int64))
        found.append(distances[r, c])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(found)


def connected_groups(n: int, firsts: IntArray, seconds: IntArray) -> IntArray:
    """Component label of each of n items, given undirected edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(firsts), dtype=np.int8), (firsts, seconds)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    result: IntArray = labels.astype(np.int64)
    return result
