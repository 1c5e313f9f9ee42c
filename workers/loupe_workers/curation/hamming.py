"""Sub-quadratic search for pairs of 64-bit hashes within a Hamming distance (multi-index hashing).

Split the 64 bits into m bands. If two hashes differ in at most t bits, some band i differs in at most
r_i bits whenever sum(r_i + 1) > t (pigeonhole): t % m + 1 bands at radius floor(t / m), the others one
less (probe_radii). For each band, probe every value within its radius of each query's band value in a
counting-sort table of all band values, then verify candidates on the full 64 bits. band_layout picks
the m whose probes plus candidates cost least (layout_cost; at a million hashes 3 bands of ~21 bits), so
time is about n * sum_i C(w_i, <=r_i) table look-ups, all vectorised, and memory is linear in n. When
every item is a query, a pair whose bands differ is probed from one side only (half the look-ups).

cross_pairs (sub-window hashes against whole hashes) probes the same band tables, built over the larger
side, where cross_cost says that beats brute force. At its 16 of 64 bits the index is only a constant
factor ahead, and only at a million hashes (benchmarks/bench_hamming.py --cross): exact search at a
quarter of the bits keeps most of brute force's work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import numpy.typing as npt

BRUTE_FORCE_LIMIT = 3000
MAX_BAND_BITS = 24  # a band's counting table has 2**width entries: wider bands cannot be tabled
_CHUNK = 512
_PROBE_CHUNK = 1 << 16  # queries probed together: their arrays stay in cache
CANDIDATE_COST = 1.2  # a verified candidate against a table probe, measured (benchmarks/bench_hamming.py)
BRUTE_PAIR_COST = 0.1  # one brute-force distance against a table probe (cross_pairs), measured there too

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


def probe_radii(layout: Sequence[tuple[int, int]], max_distance: int) -> list[int]:
    """The probe radius of each band (-1: the band is not probed). Two hashes within max_distance
    differ in at most r_i bits on some band i whenever sum(r_i + 1) > max_distance (pigeonhole), so
    only max_distance % bands + 1 bands need the radius max_distance // bands and the others one
    less: the widest bands, whose probes cost most, get the smaller radius."""
    bands = len(layout)
    radius, rest = divmod(max_distance, bands)
    narrow_first = sorted(range(bands), key=lambda b: (layout[b][1], b))
    full = set(narrow_first[: rest + 1])
    return [radius if b in full else radius - 1 for b in range(bands)]


def layout_cost(n: int, layout: Sequence[tuple[int, int]], radii: Sequence[int]) -> float:
    """Relative cost of a search: table probes plus candidates verified (CANDIDATE_COST each)."""
    cost = 0.0
    for (_, width), radius in zip(layout, radii, strict=True):
        probes = sum(math.comb(width, k) for k in range(radius + 1))
        cost += probes * (1.0 + CANDIDATE_COST * n / 2.0**width)
    return cost


def _even_layout(bands: int) -> list[tuple[int, int]]:
    widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
    offsets = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(offsets, widths, strict=True))


def band_layout(n: int, max_distance: int) -> list[tuple[int, int]]:
    """(offset, width) of each band: the even split of the 64 bits, into at least 64 / MAX_BAND_BITS
    and at most max_distance + 1 bands, whose search (probe_radii) costs least by layout_cost. The
    pigeonhole bound holds for any number of bands (bands * (max_distance // bands + 1) >
    max_distance); at a million hashes this is 3 bands of about 21 bits."""
    fewest = -(-64 // MAX_BAND_BITS)
    candidates = [_even_layout(b) for b in range(fewest, max(fewest, min(max_distance + 1, 16)) + 1)]
    return min(candidates, key=lambda lay: layout_cost(n, lay, probe_radii(lay, max_distance)))


def hamming_pairs(
    hashes: HashArray,
    max_distance: int,
    query: npt.NDArray[np.bool_] | None = None,
    *,
    layout: Sequence[tuple[int, int]] | None = None,
) -> tuple[IntArray, IntArray]:
    """Index pairs (i < j) whose hashes differ in at most ``max_distance`` bits.

    With ``query``, only pairs that involve at least one query item are searched: a new version
    compares only its new samples against the stored ones. ``layout`` overrides band_layout.
    """
    n = len(hashes)
    if query is None:
        query = np.ones(n, dtype=bool)
    if n < 2 or max_distance < 0 or not query.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if n <= BRUTE_FORCE_LIMIT or max_distance >= 24:
        return _brute_force(hashes, max_distance, query)
    layout = band_layout(n, max_distance) if layout is None else layout
    everyone = bool(query.all())
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    for (offset, width), radius in zip(layout, probe_radii(layout, max_distance), strict=True):
        if radius < 0:
            continue
        # Work in band-sorted order so every table look-up below walks memory almost sequentially.
        band = ((hashes >> np.uint64(offset)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(band, kind="stable")
        band = band[order]
        ordered = hashes[order]
        is_query = query[order]
        counts = np.bincount(band, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        # masks by their highest flipped bit: a pair of two queries whose bands differ by a mask is
        # found from the one whose band has that bit clear, so when every item is a query only
        # those are probed (half the work); mask 0 (the same band value) is probed from every query
        by_top: dict[int, list[int]] = {}
        for mask in _flip_masks(width, radius):
            by_top.setdefault(mask.bit_length() - 1, []).append(mask)
        positions = np.flatnonzero(is_query)
        for begin in range(0, len(positions), _PROBE_CHUNK):  # a chunk's arrays stay in cache
            chunk_pos = positions[begin : begin + _PROBE_CHUNK]
            chunk_band = band[chunk_pos]
            for top, masks in by_top.items():
                query_pos, query_band = chunk_pos, chunk_band
                if everyone and top >= 0:
                    clear = (chunk_band >> top) & 1 == 0
                    query_pos, query_band = chunk_pos[clear], chunk_band[clear]
                for mask in masks:
                    probe = query_band ^ mask
                    per_all = counts[probe]
                    found = np.flatnonzero(per_all)
                    if found.size == 0:
                        continue
                    per = per_all[found]
                    total = int(per.sum())
                    i = np.repeat(query_pos[found], per)
                    j = np.arange(total, dtype=np.int64) + np.repeat(
                        starts[probe[found]] - (np.cumsum(per) - per), per
                    )
                    if mask == 0 or not everyone:
                        keep = (i != j) & ~(is_query[j] & (j < i))  # each query-query pair once
                        i, j = i[keep], j[keep]
                    close = _popcount(ordered[i] ^ ordered[j]) <= max_distance
                    if close.any():
                        firsts.append(order[i[close]])
                        seconds.append(order[j[close]])
    return _normalise(firsts, seconds)


def _brute_cross(
    queries: HashArray, table: HashArray, max_distance: int
) -> tuple[IntArray, IntArray, npt.NDArray[np.uint8]]:
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    found: list[npt.NDArray[np.uint8]] = []
    rows = max(1, (1 << 22) // len(table))  # about 4 M distances at a time
    for start in range(0, len(queries), rows):
        distances = _popcount(queries[start : start + rows, None] ^ table[None, :])
        # flat positions, split into (row, column): the pairs np.nonzero gives, in its order, 3x faster
        at = np.flatnonzero(distances <= max_distance)
        r, c = np.divmod(at, len(table))
        firsts.append((r + start).astype(np.int64))
        seconds.append(c.astype(np.int64))
        found.append(distances.reshape(-1)[at])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(found)


def _indexed_cross(
    probers: HashArray,
    indexed: HashArray,
    max_distance: int,
    layout: Sequence[tuple[int, int]],
    radii: Sequence[int],
) -> IntArray:
    """Sorted, distinct keys prober * len(indexed) + item of every pair within max_distance: bands over
    ``indexed`` (counting-sort tables), every prober's band value probed at each band's radius."""
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    for (offset, width), radius in zip(layout, radii, strict=True):
        if radius < 0:
            continue
        field = np.uint64((1 << width) - 1)
        band = ((indexed >> np.uint64(offset)) & field).astype(np.int64)
        order = np.argsort(band, kind="stable")
        ordered = indexed[order]
        counts = np.bincount(band, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        prober_band = ((probers >> np.uint64(offset)) & field).astype(np.int64)
        masks = np.array(_flip_masks(width, radius), dtype=np.int64)
        # probers x masks in blocks of about _PROBE_CHUNK probes: few probers with many masks, or the
        # reverse, both stay vectorised and in cache
        per_block = max(1, _PROBE_CHUNK // len(masks))
        for begin in range(0, len(probers), per_block):
            rows = np.arange(begin, min(begin + per_block, len(probers)), dtype=np.int64)
            probe = (prober_band[rows, None] ^ masks[None, :]).reshape(-1)
            per_all = counts[probe]
            hit = np.flatnonzero(per_all)
            if hit.size == 0:
                continue
            per = per_all[hit]
            i = np.repeat(rows[hit // len(masks)], per)
            j = np.arange(int(per.sum()), dtype=np.int64) + np.repeat(
                starts[probe[hit]] - (np.cumsum(per) - per), per
            )
            close = _popcount(probers[i] ^ ordered[j]) <= max_distance
            firsts.append(i[close])
            seconds.append(order[j[close]])
    if not firsts:
        return np.empty(0, np.int64)
    # a pair close on several bands is found once per band
    keys: IntArray = np.unique(np.concatenate(firsts) * len(indexed) + np.concatenate(seconds))
    return keys


def cross_cost(queries: int, table: int, max_distance: int) -> tuple[float, float]:
    """(brute force, indexed) relative costs of a cross search, in table probes: brute force is
    BRUTE_PAIR_COST per pair; the index is built over the larger side and probed with the smaller."""
    small, large = sorted((queries, table))
    layout = band_layout(large, max_distance)
    indexed = small * layout_cost(large, layout, probe_radii(layout, max_distance))
    return BRUTE_PAIR_COST * queries * table, indexed


def cross_pairs(
    queries: HashArray, table: HashArray, max_distance: int, *, indexed: bool | None = None
) -> tuple[IntArray, IntArray, npt.NDArray[np.uint8]]:
    """(query index, table index, distance) of every query/table pair within ``max_distance`` bits,
    ordered by query then table index. Multi-index search (bands over the larger side, probed with the
    smaller) where cross_cost says it is cheaper, otherwise chunked brute force in bounded memory; both
    give the same triples. ``indexed`` forces one or the other."""
    if max_distance < 0 or not len(queries) or not len(table):
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    if indexed is None:
        brute, index = cross_cost(len(queries), len(table), max_distance)
        indexed = index < brute
    if not indexed:
        return _brute_cross(queries, table, max_distance)
    probe_queries = len(queries) <= len(table)  # index the larger side, probe with the smaller
    probers, items = (queries, table) if probe_queries else (table, queries)
    layout = band_layout(len(items), max_distance)
    keys = _indexed_cross(probers, items, max_distance, layout, probe_radii(layout, max_distance))
    first, second = np.divmod(keys, len(items))
    if not probe_queries:  # found as (table, query): back to query-major order
        first, second = second, first
        by_query = np.lexsort((second, first))
        first, second = first[by_query], second[by_query]
    distances = _popcount(queries[first] ^ table[second])
    return first, second, distances


def connected_groups(n: int, firsts: IntArray, seconds: IntArray) -> IntArray:
    """Component label of each of n items, given undirected edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(firsts), dtype=np.int8), (firsts, seconds)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    result: IntArray = labels.astype(np.int64)
    return result
