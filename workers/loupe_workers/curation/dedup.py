"""Duplicate grouping: exact bytes, exact decoded pixels, perceptual hash distance (in any of the 8 flips
and quarter turns), crops and small rotations (sub-window hash candidates confirmed by a geometric
verification); groups formed around their kept copy; keep policy."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from loupe_api.dataset import DedupSpec
from loupe_api.samples import DupKind
from loupe_workers.curation.hamming import HashArray, connected_groups, cross_pairs, hamming_pairs, hex_to_u64
from loupe_workers.media.decode import TRACE_BINS, energy_above, trace_peak

Record = Mapping[str, Any]  # dedup only reads rows (the pipeline's are loupe_api.samples.CurationRow)
Measures = dict[str, float]
KeepMeasures = Callable[[Record], Measures | None]


class Verify(Protocol):
    """Geometric verification of two records (geometry.Verifier): None if they do not show one photo,
    else the scale of the transform from the first to the second (above 1 when the second shows a part
    of the first: a crop). ``expect_mirrored`` is told, before the crop candidates are verified, which
    blobs will be asked for mirrored too: a verifier that decodes serves both orientations from one
    decode (one that does not can ignore it)."""

    def __call__(self, a: Record, b: Record, /) -> float | None: ...

    def expect_mirrored(self, shas: Collection[str], /) -> None: ...


CROP_SCALE = 1.03  # a verified pair whose scale is beyond 1.03 (either way): one is a crop of the other

ORIENTATIONS = 7  # hash_variants: the 7 other flips and quarter turns first, then sub-window hashes


def split_variants(record: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """A record's stored hash variants: (its 7 flipped and turned hashes, its sub-window hashes)."""
    values = list(record.get("hash_variants") or ())
    return values[:ORIENTATIONS], values[ORIENTATIONS:]


# Hash distance under which two same-sized images are decoded in full to compare their pixels:
# a lossless re-encode decodes to the same pixels, but its hash may come from another decode path (a
# DCT-scaled JPEG against a lossless copy). Two files of one decode path with the same pixels hash the
# same, so they are decoded only at distance 0: a recompressed or edited copy of the same size is not.
PIXEL_CANDIDATE_DISTANCE = 10

# bestOriginal: how copies are told apart (media.keep_measures gives detail, detail_x/_y, padded)
UPSCALE_PIXEL_RATIO = 0.8  # a copy with more than 1.25x the pixels of another may be its upscale:
UPSCALE_SIZES = 8  # (checked against the 8 largest smaller sizes of the group)
# It is when it bears the resampling trace of the factor between them (media.decode's trace bins: a peak
# of the first- or second-difference profile at the folded 1 / factor), evidence that does not fade with
# the copy's own sharpness as its spectrum above the smaller copy's Nyquist does (a soft original has
# next to none there either). Where that frequency is a harmonic of the JPEG block grid (2x: 0.5), whose
# own peaks are there, it takes the first-difference peak standing well above the grid's lowest other
# harmonics and a poorer spectrum above the smaller copy's Nyquist (UPSCALE_GRID_ENERGY) both.
UPSCALE_TRACE = 4.0  # a trace peak: 4x the profile spectrum's median (noise reaches about 2-3)
UPSCALE_TRACE_HINTED = 3.0  # or 3x with a poor spectrum above the smaller copy's Nyquist besides
UPSCALE_GRID_TRACE = 2.0  # at a grid harmonic: 2x the grid's two lowest other harmonics (some camera
# originals show a period-2 peak of their own, with their grid's)
UPSCALE_ENERGY = 0.25  # spectral density above the other's Nyquist under 0.25x that below: soft or upscaled
UPSCALE_GRID_ENERGY = 0.5  # and the spectral share under 0.5 (an upscale's own JPEG noise lifts it)
UPSCALE_ENERGY_ALONE = 0.02  # so little that it needs no trace (a large factor, or traces not measured)
PADDED_FRACTION = 0.02  # more than 2 % of the area in uniform bars: letterboxed or pillarboxed
ASPECT_TOLERANCE = 0.02  # |log aspect| difference under which two copies have the same shape
ANISOTROPY_MARGIN = (
    0.2  # with no majority shape, a copy this much more anisotropic (|log dx/dy|) is stretched
)
SAME_RESOLUTION = 0.98  # pixel counts within 2 % are the same resolution
SAME_COMPRESSION = 0.9  # bytes per pixel within 10 % (same format) are the same compression
SAME_DETAIL = 0.95  # fine detail within 5 % is as sharp
# Newcomers linked into one connected set of up to this many are grouped around its best original; a
# larger set (a chain of similar photos: one photo's copies number tens) around its best-connected members
LARGEST_COMPARED = 256


@dataclass
class DuplicateInfo:
    """Result for one record: its group id (None if unique), whether it is the kept copy, and why not;
    ``reason`` (for the kept copy of a group) says why it was the one kept."""

    group: str | None
    kept: bool
    kind: str | None  # exact_duplicate or near_duplicate, for copies that are not kept
    of: str | None  # sample id of the kept copy
    reason: str | None = field(default=None, compare=False)


def _tie(record: Record) -> tuple[Any, ...]:
    return (record["source"], record["key"], record.get("frame_index") or 0)


def _keep_order(record: Record, policy: str) -> tuple[Any, ...]:
    tie = _tie(record)
    if policy == "highestResolution":
        return (-(int(record["width"]) * int(record["height"])), *tie)
    if policy == "largestFile":
        return (-int(record["size"]), *tie)
    if policy == "earliest":
        captured = record.get("capture_time") or "9999"
        return (captured, *tie)
    return tie


_POLICY_REASONS = {
    "highestResolution": "highest resolution",
    "largestFile": "largest file",
    "earliest": "earliest capture",
    "first": "first by source and key",
}


def _pixels(record: Record) -> int:
    return int(record["width"]) * int(record["height"])


def _log_aspect(record: Record) -> float:
    w, h = int(record["width"]), int(record["height"])
    return abs(math.log(max(w, 1) / max(h, 1)))  # a quarter turn keeps the shape


JPEG_GRID = 2 * TRACE_BINS // 8  # trace bins per harmonic of the 8-pixel JPEG block grid


def upscaled_from(values: Measures, factor: float) -> bool:
    """Whether a copy (its keep measures) is an upscale by ``factor`` (above 1) of a smaller one: it
    bears that factor's resampling trace (see UPSCALE_TRACE), or has next to no spectrum above the
    smaller one's Nyquist frequency (a large factor, whose trace lies below the trace bins)."""
    energy = energy_above(values, 0.5 / factor)
    if energy < UPSCALE_ENERGY_ALONE:
        return True
    phase = 1 / factor % 1.0  # the interpolation phase repeats at this frequency, folded into [0, 0.5]
    frequency = min(phase, 1 - phase)
    grid = round(frequency * 2 * TRACE_BINS / JPEG_GRID)
    if abs(frequency * 2 * TRACE_BINS - grid * JPEG_GRID) > 1 or grid == 0:
        peaks = [p for order in (1, 2) if (p := trace_peak(values, order, frequency)) is not None]
        peak = max(peaks, default=0.0)
        return peak > UPSCALE_TRACE or (peak > UPSCALE_TRACE_HINTED and energy < UPSCALE_ENERGY)
    first = trace_peak(values, 1, frequency)
    # the grid's two lowest other harmonics: in an upscale's smooth blocks the grid's own upper ones are high
    harmonics = [values.get(f"trace1_{k * JPEG_GRID}", 0.0) for k in (1, 2, 3) if k != grid][:2]
    return (
        first is not None
        and first > max(UPSCALE_TRACE, UPSCALE_GRID_TRACE * max(harmonics))
        and energy < UPSCALE_GRID_ENERGY
    )


def letterboxed(
    members: Sequence[int],
    records: Sequence[Record],
    found: Mapping[int, Measures | None],
    cropped: Mapping[int, Collection[int]],
) -> set[int]:
    """The copies in letterbox or pillarbox bars: more than PADDED_FRACTION of the area in uniform
    bars that change the shape (content of another shape than the frame), around content of the
    shape of another copy's frame (a letterboxed copy fits that frame into another), or of the
    content of a less padded copy of another frame (bars continuing an original's own dark edges).
    A photo whose own dark edges read as bars has content of no copy's frame. Crops set no shape;
    copies measured before content_aspect was (no value) go by their bars alone."""

    def padded(i: int) -> float:
        values = found.get(i)
        return (values or {}).get("padded") or 0.0

    def content(i: int) -> float:
        values = found.get(i)
        aspect = None if values is None else values.get("content_aspect")
        return abs(math.log(aspect)) if aspect else math.nan  # a quarter turn keeps the shape

    def same(a: float, b: float) -> bool:
        return abs(a - b) <= ASPECT_TOLERANCE  # False for a nan (not measured)

    references = [j for j in members if not cropped.get(j)]
    out: set[int] = set()
    for i in members:
        if padded(i) <= PADDED_FRACTION:
            continue
        shape, frame = content(i), _log_aspect(records[i])
        if math.isnan(shape) or (
            not same(shape, frame)
            and any(
                same(shape, _log_aspect(records[j]))
                or (
                    padded(j) < padded(i)
                    and same(shape, content(j))
                    and not same(frame, _log_aspect(records[j]))
                )
                for j in references
                if j != i
            )
        ):
            out.add(i)
    return out


def best_original(
    members: Sequence[int],
    records: Sequence[Record],
    measures: Callable[[int], Measures | None],
    cropped: Mapping[int, Collection[int]] | None = None,
    outline: Callable[[int], Measures | None] | None = None,
) -> tuple[int, str]:
    """The least-processed copy of a group and why: not letterboxed (see letterboxed), not stretched
    (shape of the group's majority), not cropped (shown by a verified crop candidate to lie inside
    another copy still in the running: ``cropped`` maps a copy to those it lies inside), not
    upscaled (more pixels than a smaller, uncropped copy and the resampling trace of the factor
    between them, see upscaled_from: a soft original is not taken for an upscale of its own resize),
    then the highest resolution, the least compressed (bytes per pixel, same format), the sharpest,
    then by source and key. Each step only narrows the candidates when some, not all, fail it.

    ``outline`` gives media.shape_measures (padded, content_aspect), read of every member; ``measures``
    the whole keep measures, then read only of the copies that need them (those still in the running
    when the shape, the upscale test or the sharpness is judged). Without ``outline`` both come from
    ``measures``. A member without shape measures (undecodable) sets no size for the upscale test."""
    shapes_of = {i: (outline or measures)(i) for i in members}
    found: dict[int, Measures | None] = {} if outline is not None else dict(shapes_of)

    def full(i: int) -> Measures | None:
        if i not in found:
            found[i] = measures(i)
        return found[i]

    candidates = list(members)
    reasons: list[str] = []

    def narrow(bad: Callable[[int], bool], why: str) -> None:
        nonlocal candidates
        failing = {i for i in candidates if bad(i)}
        if failing and len(failing) < len(candidates):
            candidates = [i for i in candidates if i not in failing]
            reasons.append(why)

    def get(i: int, name: str) -> float | None:
        values = full(i)
        return None if values is None else values.get(name)

    inside = cropped or {}
    boxed = letterboxed(members, records, shapes_of, inside)
    narrow(lambda i: i in boxed, "not letterboxed")
    unpadded = [i for i in members if i not in boxed] or list(members)
    shapes = {i: _log_aspect(records[i]) for i in unpadded}
    ordered_shapes = sorted(shapes.values())
    support = {
        i: bisect_right(ordered_shapes, s + ASPECT_TOLERANCE)
        - bisect_left(ordered_shapes, s - ASPECT_TOLERANCE)
        for i, s in shapes.items()
    }  # how many copies share each copy's shape
    top = max(support.values())
    leaders = [i for i in unpadded if support[i] == top]
    majority: float | None = None
    spread = max(shapes[i] for i in leaders) - min(shapes[i] for i in leaders)
    if top > 1 and spread <= 2 * ASPECT_TOLERANCE:  # one shape shared by the most copies
        majority = shapes[leaders[0]]
    elif len(leaders) > 1:  # no majority: the copy whose detail is far more isotropic sets the shape

        def anisotropy(i: int) -> float | None:
            dx, dy = get(i, "detail_x"), get(i, "detail_y")
            return abs(math.log((dx + 1e-6) / (dy + 1e-6))) if dx and dy else None

        known = sorted((a, i) for i in leaders if (a := anisotropy(i)) is not None)
        if len(known) >= 2 and known[1][0] - known[0][0] > ANISOTROPY_MARGIN:
            majority = shapes[known[0][1]]
    if majority is not None:
        shape: float = majority
        narrow(lambda i: abs(_log_aspect(records[i]) - shape) > ASPECT_TOLERANCE, "not stretched")

    running = set(candidates)
    narrow(lambda i: any(o in running for o in inside.get(i, ())), "not cropped")
    # an upscale bears the resampling trace of the factor from the copy it was made from
    # (a crop's size says nothing of a scale factor)
    sizes = sorted(
        {_pixels(records[j]) for j in members if shapes_of[j] is not None and not inside.get(j)}, reverse=True
    )

    def upscaled(i: int) -> bool:
        pixels = _pixels(records[i])
        if not any(size < UPSCALE_PIXEL_RATIO * pixels for size in sizes):
            return False  # no smaller copy: nothing to be an upscale of, and no need to measure
        values = full(i)
        if values is None or "band0" not in values:  # not measured (a tiny or undecodable copy)
            return False
        smaller = [size for size in sizes if size < UPSCALE_PIXEL_RATIO * pixels][:UPSCALE_SIZES]
        return any(upscaled_from(values, math.sqrt(pixels / size)) for size in smaller)

    narrow(upscaled, "not upscaled")
    most = max(_pixels(records[i]) for i in candidates)
    narrow(lambda i: _pixels(records[i]) < SAME_RESOLUTION * most, "highest resolution")
    rate = {i: int(records[i]["size"]) / max(1, _pixels(records[i])) for i in candidates}
    best_rate: dict[Any, float] = {}
    for i in candidates:  # bytes per pixel compare copies of one format only
        fmt = records[i].get("format")
        best_rate[fmt] = max(best_rate.get(fmt, 0.0), rate[i])
    narrow(lambda i: rate[i] < SAME_COMPRESSION * best_rate[records[i].get("format")], "least compressed")
    sharp = {i: get(i, "detail") for i in candidates}
    if all(v is not None for v in sharp.values()):
        best_detail = max(v for v in sharp.values() if v is not None)
        narrow(lambda i: (sharp[i] or 0.0) < SAME_DETAIL * best_detail, "sharpest")
    keeper = min(candidates, key=lambda i: _tie(records[i]))
    return keeper, "best original: " + (", ".join(reasons) if reasons else "copies equivalent, first by key")


BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


SCALED_FORMATS = frozenset({"jpeg"})  # decoded at reduced scale in the DCT (media.decode: drafted)


def _scaled(record: Record) -> bool:
    return record.get("format") in SCALED_FORMATS


def pixel_candidates(
    records: Sequence[Record], hashes: HashArray, query: BoolArray, max_distance: int
) -> tuple[IntArray, IntArray]:
    """Pairs (a < b) that may hold the same pixels although their hashes differ: the same size, one a
    DCT-scaled JPEG and the other not, within ``max_distance`` bits, one of them a query record. Each
    size is searched from its smaller side (its scaled or its other members, or its query members),
    so a dataset of one format costs nothing here."""
    by_size: dict[tuple[Any, Any], list[int]] = {}
    for i, record in enumerate(records):
        by_size.setdefault((record.get("width"), record.get("height")), []).append(i)
    firsts: list[IntArray] = []
    seconds: list[IntArray] = []
    for members in by_size.values():
        if len(members) < 2:
            continue
        index = np.array(members, dtype=np.int64)
        scaled = np.array([records[i].get("format") in SCALED_FORMATS for i in members])
        if scaled.all() or not scaled.any():
            continue
        new = query[index]
        side = min((scaled, ~scaled, new), key=lambda mask: int(mask.sum()))
        a, b = hamming_pairs(hashes[index], max_distance, side)
        keep = (scaled[a] != scaled[b]) & (new[a] | new[b])
        firsts.append(index[a[keep]])
        seconds.append(index[b[keep]])
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _hash_pairs(
    records: Sequence[Record], query: BoolArray, near: int, pixels: int, transforms: bool
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """(identity distance, best distance over the 8 orientations) of each pair with a query record
    within the thresholds. A query's 7 flipped and turned hashes are searched against every stored
    hash with the same multi-index search; pairs of two transformed hashes add nothing (the group is
    closed under composition) and are dropped."""
    n = len(records)
    identity: dict[tuple[int, int], int] = {}
    best: dict[tuple[int, int], int] = {}
    hashes = hex_to_u64([r["hash"] for r in records])
    # Pixel-identical copies of one format share their reduced decode, so their hashes are equal; only
    # a DCT-scaled JPEG against a lossless copy of its pixels differs, by up to ``pixels`` bits. The
    # wide search runs only on those pairs (pixel_candidates), the rest at the near threshold.
    base = near if near >= 0 else (0 if pixels >= 0 else -1)
    pa, pb = hamming_pairs(hashes, base, query)
    if pixels > base:
        xa, xb = pixel_candidates(records, hashes, query, pixels)
        pa, pb = np.concatenate([pa, xa]), np.concatenate([pb, xb])
    if len(pa):
        distances = np.bitwise_count(hashes[pa] ^ hashes[pb])
        for a, b, d in zip(pa.tolist(), pb.tolist(), distances.tolist(), strict=True):
            identity[(a, b)] = d
            if d <= near:
                best[(a, b)] = d
    if not transforms or near < 0:
        return identity, best
    owners: list[int] = []
    variants: list[str] = []
    for i in np.flatnonzero(query).tolist():
        for value in split_variants(records[i])[0]:
            owners.append(i)
            variants.append(value)
    if not variants:
        return identity, best
    every = np.concatenate([hashes, hex_to_u64(variants)])
    owner = np.concatenate([np.arange(n, dtype=np.int64), np.array(owners, dtype=np.int64)])
    mask = np.concatenate([np.zeros(n, dtype=bool), np.ones(len(variants), dtype=bool)])
    va, vb = hamming_pairs(every, near, mask)
    if not len(va):
        return identity, best
    useful = (va < n) & (owner[va] != owner[vb])  # va < vb: va is the stored identity hash
    va, vb = va[useful], vb[useful]
    distances = np.bitwise_count(every[va] ^ every[vb])
    for a, b, d in zip(owner[va].tolist(), owner[vb].tolist(), distances.tolist(), strict=True):
        pair = (min(a, b), max(a, b))
        if d < best.get(pair, near + 1):
            best[pair] = d
    return identity, best


def crop_candidates(
    records: Sequence[Record],
    query: BoolArray,
    max_distance: int,
    per_record: int,
    skip: Callable[[int, int], bool],
) -> list[tuple[int, int, int, int]]:
    """Candidate pairs (a < b, distance, inner) for crops and re-framings: a sub-window hash of one
    record within ``max_distance`` of the other's (``inner``, the likely crop) whole hash, one of them
    a query record, the pair not ``skip``-ped (already linked). Each query record keeps only its
    ``per_record`` closest candidates (by distance, then index), so at most per_record
    verifications are asked per new record. (window_candidates adds crops of mirrored copies.)"""
    found = window_candidates(records, query, max_distance, per_record, skip, mirrored=False)
    return [(a, b, distance, inner) for a, b, distance, inner, _ in found]


MIRRORED = 0  # index, among split_variants' 7 orientations, of the left-right mirrored hash


def window_candidates(
    records: Sequence[Record],
    query: BoolArray,
    max_distance: int,
    per_record: int,
    skip: Callable[[int, int], bool],
    *,
    mirrored: bool = True,
) -> list[tuple[int, int, int, int, bool]]:
    """crop_candidates' pairs (a < b, distance, inner, mirrored), with ``mirrored`` also those where a
    sub-window hash of one record is close to the other's left-right mirrored hash: the inner record is
    a crop of a mirrored copy (the window set is symmetric, so a mirrored crop's place is covered). Its
    verification mirrors the inner image. Direct and mirrored candidates share one ranking per query
    record, so the per_record bound holds for both together."""
    n = len(records)
    if n < 2 or max_distance < 0 or per_record <= 0:
        return []
    variants = [split_variants(record) for record in records]  # every record's: one pass, no per-window loop
    windows = [value for _, sub in variants for value in sub]
    if not windows:
        return []
    owner = np.repeat(np.arange(n, dtype=np.int64), [len(sub) for _, sub in variants])
    hashes = hex_to_u64(windows)
    # whole hashes to search: every identity hash, then (mirrored) the mirrored hash of each record with one
    whole_owner = list(range(n))
    whole_hex = [r["hash"] for r in records]
    if mirrored:
        for i, (turned, _) in enumerate(variants):
            if len(turned) > MIRRORED:
                whole_owner.append(i)
                whole_hex.append(turned[MIRRORED])
    whole = hex_to_u64(whole_hex)
    of_whole = np.array(whole_owner, dtype=np.int64)
    flipped = np.arange(len(whole_owner)) >= n
    queried = np.flatnonzero(query[of_whole])
    mine = np.flatnonzero(query[owner])  # windows of query records against every whole hash
    others = np.flatnonzero(~query[owner])  # and query whole hashes against the other records' windows
    # Searched a block of queries at a time, each block's hits (a window's record as outer, the whole
    # hash's as inner) reduced to one per pair before the next: a first version of 50,000 similar tiles
    # finds hundreds of millions of hits, so memory must follow the pairs, not the hits.
    found: list[tuple[IntArray, IntArray, IntArray, IntArray, BoolArray]] = []
    ranks = _RankBounds(query, per_record, max_distance)

    def keep(hits: tuple[IntArray, IntArray, IntArray, IntArray, BoolArray]) -> None:
        close = ranks.may_rank(hits[0], hits[1], hits[3])
        low, high, inner, distance, flip = (hits[0][close], hits[1][close], hits[2][close], hits[3][close],
                                            hits[4][close])  # fmt: skip
        kept = np.array(
            [not skip(x, y) for x, y in zip(low.tolist(), high.tolist(), strict=True)], dtype=bool
        )
        low, high, inner, distance, flip = low[kept], high[kept], inner[kept], distance[kept], flip[kept]
        ranks.count(low, high, distance)
        found.append((low, high, inner, distance, flip))

    for block in _blocks(mine, len(whole)):
        qi, ti, d = cross_pairs(hashes[block], whole, max_distance)
        keep(_best_hits(owner[block[qi]], of_whole[ti], d, flipped[ti], n))
    for block in _blocks(queried, len(others)):
        qj, tj, e = cross_pairs(whole[block], hashes[others], max_distance)
        keep(_best_hits(owner[others[tj]], of_whole[block[qj]], e, flipped[block[qj]], n))
    a, b, inner, distance, flip = (np.concatenate(column) for column in zip(*found, strict=True))
    best = _best_hits_of_pairs(a, b, inner, distance, flip, n)
    a, b, inner, distance, flip = a[best], b[best], inner[best], distance[best], flip[best]
    # each query record's per_record closest pairs (by distance, direct first, then the pair)
    ends = np.concatenate([a, b])
    pair = np.tile(np.arange(len(a), dtype=np.int64), 2)
    asked = query[ends]
    ends, pair = ends[asked], pair[asked]
    ranked = np.lexsort((b[pair], a[pair], flip[pair], distance[pair], ends))
    starts = _group_starts(ends[ranked])
    rank = np.arange(len(ranked)) - np.maximum.accumulate(np.where(starts, np.arange(len(ranked)), 0))
    chosen = np.unique(pair[ranked[rank < per_record]])
    chosen = chosen[np.lexsort((b[chosen], a[chosen], flip[chosen], distance[chosen]))]
    return list(zip(a[chosen].tolist(), b[chosen].tolist(), distance[chosen].tolist(), inner[chosen].tolist(),
                    flip[chosen].tolist(), strict=True))  # fmt: skip


SEARCH_BLOCK = 1 << 31  # query x table hashes compared per block of a crop candidate search


def _blocks(queries: IntArray, table: int) -> list[IntArray]:
    """``queries`` in blocks of about SEARCH_BLOCK comparisons against a table of ``table`` hashes."""
    rows = max(1, SEARCH_BLOCK // max(1, table))
    return [queries[start : start + rows] for start in range(0, len(queries), rows)] or [queries]


def _best_hits_of_pairs(
    low: IntArray, high: IntArray, inner: IntArray, distance: IntArray, flip: BoolArray, n: int
) -> IntArray:
    """Where each pair (low < high) has its best hit, by pair: the smallest distance, a direct hit before
    a mirrored one at equal distance (its verification needs no mirrored decode), then the smaller inner."""
    key = low * n + high
    by_pair = np.lexsort((inner, flip, distance, key))
    found: IntArray = by_pair[_group_starts(key[by_pair])]
    return found


def _best_hits(
    outer: IntArray, inner: IntArray, distance: npt.NDArray[np.uint8], flip: BoolArray, n: int
) -> tuple[IntArray, IntArray, IntArray, IntArray, BoolArray]:
    """Hits (outer, inner, distance, mirrored) reduced to each pair's best: (low, high, inner, distance,
    mirrored) by pair; a record's hit on itself dropped."""
    apart = outer != inner
    outer, inner, flip = outer[apart], inner[apart], flip[apart]
    wide = distance[apart].astype(np.int64)
    low, high = np.minimum(outer, inner), np.maximum(outer, inner)
    best = _best_hits_of_pairs(low, high, inner, wide, flip, n)
    return low[best], high[best], inner[best], wide[best], flip[best]


class _RankBounds:
    """Per query record, a distance no pair beyond which can be among its ``per_record`` closest: the
    distance within which it already has PAIR_REPEATS x per_record hits that were kept (a pair is found
    at most PAIR_REPEATS times over the blocks, so those are at least per_record distinct pairs). A hit
    beyond the bounds of both its records is dropped as it is found, so the pairs kept stay about
    per_record a record however many hits the search finds."""

    PAIR_REPEATS = 4  # a pair's hits: from each side's windows (a record's windows may span two blocks)

    def __init__(self, query: BoolArray, per_record: int, max_distance: int) -> None:
        self.query = query
        self.needed = self.PAIR_REPEATS * per_record
        self.counts = np.zeros((len(query), max_distance + 1), dtype=np.int64)
        self.bound = np.where(query, max_distance, -1).astype(np.int64)  # no bound for others: -1

    def may_rank(self, low: IntArray, high: IntArray, distance: IntArray) -> BoolArray:
        close: BoolArray = distance <= np.maximum(self.bound[low], self.bound[high])
        return close

    def count(self, low: IntArray, high: IntArray, distance: IntArray) -> None:
        ends = np.concatenate([low, high])
        at = np.concatenate([distance, distance])
        asked = self.query[ends]
        ends, at = ends[asked], at[asked]
        np.add.at(self.counts, (ends, at), 1)
        touched = np.unique(ends)
        enough = np.cumsum(self.counts[touched], axis=1) >= self.needed
        reached = enough.any(axis=1)
        self.bound[touched[reached]] = np.argmax(enough[reached], axis=1)


def _group_starts(ordered: IntArray) -> BoolArray:
    """Where each run of equal values of a sorted array starts."""
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    return starts


def find_duplicates(
    records: list[Record],
    spec: DedupSpec,
    *,
    is_new: list[bool],
    previously_kept: set[str],
    pixel_digest: Callable[[Record], str],
    extra_pairs: Sequence[tuple[int, int]] = (),
    keep_measures: KeepMeasures | None = None,
    verify: Verify | None = None,
    shape_measures: KeepMeasures | None = None,
) -> list[DuplicateInfo]:
    """Group the records (all of which passed the gates).

    Only pairs involving a new record are searched. Groups are stars around their kept copy: every
    member is itself a duplicate of the kept copy (no chains). Records seen before stay as they
    were: a published kept copy stays kept, and its duplicates stay its duplicates; a newcomer that
    matches published copies joins the closest one; the other newcomers form groups among
    themselves: the keep policy picks the kept copy of each set of connected newcomers, the
    newcomers that match it join it, and what is left is split into connected sets again and grouped
    the same way (a set larger than LARGEST_COMPARED around its best-connected members). ``extra_pairs``
    are near-duplicate pairs found elsewhere (by embedding similarity); ``keep_measures`` gives
    what the bestOriginal policy compares (media.keep_measures), asked only of group members that
    need them, and ``shape_measures`` its cheaper part (media.shape_measures), asked of every member;
    ``verify`` confirms crop candidates (``perceptual.crops``): without it, none is searched.
    """
    n = len(records)
    result = [DuplicateInfo(None, True, None, None) for _ in range(n)]
    if n == 0:
        return result
    query = np.array(is_new, dtype=bool)
    # published groups: their kept copy (a previously kept record that was no one's copy) and members
    previous: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        group = record.get("dup_group")
        if group and not query[i]:
            previous.setdefault(group, []).append(i)
    keeper_of: dict[int, int] = {}  # member -> kept copy
    kind_of: dict[int, str | None] = {}
    group_id: dict[int, str] = {}  # kept copy -> group id
    for group, members in previous.items():
        keepers = [
            i
            for i in members
            if records[i]["sample_id"] in previously_kept and not records[i].get("dup_kind")
        ]
        if not keepers:  # the kept copy left the dataset: its former copies are grouped again
            query[members] = True
            continue
        keeper = min(keepers, key=lambda i: _tie(records[i]))
        group_id[keeper] = group
        for i in members:
            if i != keeper:
                keeper_of[i] = keeper
                same_bytes = records[i]["sha256"] == records[keeper]["sha256"]  # a byte copy shares its id
                kind_of[i] = DupKind.EXACT if same_bytes else records[i].get("dup_kind") or DupKind.NEAR
    centres = {i for i in range(n) if not query[i] and i not in keeper_of}

    # edges of the query records: (distance, exact)
    edges: dict[int, dict[int, tuple[float, bool]]] = {}

    def link(a: int, b: int, distance: float, exact: bool) -> None:
        old = edges.get(a, {}).get(b)
        if old is None or (not exact, distance) < (not old[1], old[0]):
            edges.setdefault(a, {})[b] = (distance, exact)
            edges.setdefault(b, {})[a] = (distance, exact)

    if spec.exact.enabled:
        by_sha: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_sha.setdefault(record["sha256"], []).append(i)
        for same in by_sha.values():
            for a in same:
                if query[a]:
                    for b in same:
                        if b != a:
                            link(a, b, 0, True)
    near = spec.perceptual.max_distance if spec.perceptual.enabled else -1
    pixels = PIXEL_CANDIDATE_DISTANCE if spec.exact.enabled and spec.exact.pixels else -1
    identity, best = _hash_pairs(records, query, near, pixels, spec.perceptual.transforms)
    for (a, b), d in identity.items():
        ra, rb = records[a], records[b]
        if (
            d <= pixels
            and (d == 0 or _scaled(ra) != _scaled(rb))  # one decode path: same pixels, same hash
            and ra["sha256"] != rb["sha256"]
            and (ra["width"], ra["height"]) == (rb["width"], rb["height"])
            and pixel_digest(ra) == pixel_digest(rb)
        ):
            link(a, b, 0, True)
    for (a, b), d in best.items():
        link(a, b, d, False)
    cropped: dict[int, set[int]] = {}  # record -> those it was shown to lie inside (verified crops)
    checked = spec.embedding is not None and spec.embedding.verify and verify is not None
    for a, b in extra_pairs:
        if b in edges.get(a, {}):
            continue
        if checked and verify is not None:
            # Two photos of one scene can be as close in embedding space as a photo and its crop: a
            # pair merges only when keypoints agree on one transform, directly or mirrored.
            scale = verify(records[a], records[b])
            if scale is None:
                scale = verify(records[a], {**records[b], "mirror": True})
            if scale is None:
                continue
            if scale > CROP_SCALE:
                cropped.setdefault(b, set()).add(a)
            elif scale < 1 / CROP_SCALE:
                cropped.setdefault(a, set()).add(b)
        link(a, b, max(near, 0) + 0.5, False)
    crop_linked: dict[int, set[int]] = {}  # verified crop pairs
    if spec.perceptual.enabled and spec.perceptual.crops and verify is not None:
        candidates = window_candidates(
            records,
            query,
            spec.perceptual.crop_distance,
            spec.perceptual.max_candidates,
            lambda a, b: b in edges.get(a, {}),
            mirrored=spec.perceptual.transforms,  # the mirrored hash is one of the transforms
        )
        verify.expect_mirrored({str(records[b]["sha256"]) for _, b, _, _, flip in candidates if flip})
        for a, b, d, _, flip in candidates:
            # a crop of a mirrored copy: the keypoints of b's mirror image must agree with a's
            scale = verify(records[a], {**records[b], "mirror": True} if flip else records[b])
            if scale is not None:  # after every hash match: a crop joins behind them
                link(a, b, max(near, 0) + 1 + d / 64, False)
                crop_linked.setdefault(a, set()).add(b)
                crop_linked.setdefault(b, set()).add(a)
                if scale > CROP_SCALE:
                    cropped.setdefault(b, set()).add(a)
                elif scale < 1 / CROP_SCALE:
                    cropped.setdefault(a, set()).add(b)

    measured: dict[int, Measures | None] = {}
    outlined: dict[int, Measures | None] = {}

    def measures(i: int) -> Measures | None:
        if keep_measures is None:
            return None
        if i not in measured:
            measured[i] = keep_measures(records[i])
        return measured[i]

    def outline(i: int) -> Measures | None:
        if shape_measures is None or keep_measures is None:
            return measures(i)
        if i not in outlined:
            outlined[i] = shape_measures(records[i])
        return outlined[i]

    asked: set[tuple[int, int]] = set()
    extra_asks: dict[int, int] = {}

    def verify_with_keeper(keeper: int, i: int) -> bool:
        """A crop verified against a copy of ``keeper`` (not ``keeper`` itself) joins ``keeper`` only
        if it verifies against it too (once per pair, at most max_candidates times per record), so
        every group stays a star around its kept copy."""
        if verify is None or (keeper, i) in asked or extra_asks.get(i, 0) >= spec.perceptual.max_candidates:
            return False
        asked.add((keeper, i))
        extra_asks[i] = extra_asks.get(i, 0) + 1
        scale = verify(records[keeper], records[i])
        if scale is None:
            return False
        link(keeper, i, max(near, 0) + 1.5, False)
        if scale > CROP_SCALE:
            cropped.setdefault(i, set()).add(keeper)
        return True

    # newcomers that match a published kept copy join the closest one
    pool: list[int] = []
    for i in np.flatnonzero(query).tolist():
        if crop_linked.get(i) and not any(c in centres for c in edges.get(i, {})):
            for c in sorted({keeper_of[j] for j in crop_linked[i] if j in keeper_of and not query[j]}):
                if c in centres and verify_with_keeper(c, i):
                    break
        near_centres = [
            (d, not exact, _tie(records[c]), c) for c, (d, exact) in edges.get(i, {}).items() if c in centres
        ]
        if near_centres:
            _, inexact, _, centre = min(near_centres)
            keeper_of[i] = centre
            kind_of[i] = DupKind.NEAR if inexact else DupKind.EXACT
        else:
            pool.append(i)
    # the rest: stars among themselves, one connected set at a time
    reason_of: dict[int, str] = {}

    def connected_sets(members: Sequence[int]) -> list[list[int]]:
        """The connected sets of ``members`` (ascending) by their edges among themselves, each ascending."""
        inside = set(members)
        index = {i: k for k, i in enumerate(members)}
        pairs = [(index[a], index[b]) for a in members for b in edges.get(a, {}) if b in inside and a < b]
        labels = connected_groups(
            len(members),
            np.array([p for p, _ in pairs], dtype=np.int64),
            np.array([q for _, q in pairs], dtype=np.int64),
        )
        found: dict[int, list[int]] = {}
        for i, label in zip(members, labels.tolist(), strict=True):
            found.setdefault(label, []).append(i)
        return list(found.values())

    def choose(choices: list[int]) -> tuple[int, str]:
        # a published copy processed again (new code, changed file) is kept before a newcomer
        published = [i for i in choices if records[i]["sample_id"] in previously_kept]
        choices = published or choices
        if spec.keep == "bestOriginal":
            return best_original(choices, records, measures, cropped, outline)
        return min(choices, key=lambda i: _keep_order(records[i], spec.keep)), _POLICY_REASONS[spec.keep]

    def star(keeper: int, why: str, left: set[int]) -> set[int]:
        """``keeper`` and the members of ``left`` that join it (its duplicates, and crops verified against
        it that were verified against one of those), marked; the members taken."""
        joined = sorted(i for i in edges.get(keeper, {}) if i in left and i != keeper)
        if crop_linked:  # crops verified against a copy of the kept copy
            near_keeper = {keeper, *joined}
            linked = {c for j in near_keeper for c in crop_linked.get(j, ())}
            for i in sorted(c for c in linked if c in left and c not in near_keeper):
                if verify_with_keeper(keeper, i):
                    joined.append(i)
        for i in joined:
            keeper_of[i] = keeper
            kind_of[i] = DupKind.EXACT if edges[keeper][i][1] else DupKind.NEAR
        if joined:
            reason_of[keeper] = why
        return {keeper, *joined}

    work = connected_sets(pool)
    while work:
        remaining = work.pop()
        if len(remaining) < 2:
            continue
        if len(remaining) <= LARGEST_COMPARED:
            # the kept copy is the best original of the whole connected set; what its star leaves is
            # split into connected sets again, so no copy is judged against photos it is not linked to
            keeper, why = choose(remaining)
            taken = star(keeper, why, set(remaining))
            work.extend(connected_sets([i for i in remaining if i not in taken]))
            continue
        # A larger connected set is a chain of similar photos, not one photo's copies: comparing all of
        # it once per star is quadratic (cubic with the letterbox test). Its best-connected members come
        # first, each with its closest neighbours, and the best original of those is a kept copy.
        left = set(remaining)
        degree = {i: sum(1 for j in edges.get(i, {}) if j in left) for i in remaining}
        for seed in sorted(remaining, key=lambda i: (-degree[i], i)):
            if seed not in left:
                continue
            around = sorted((edges[seed][j][0], j) for j in edges.get(seed, {}) if j in left)
            if not around:
                continue
            keeper, why = choose(sorted([seed, *(j for _, j in around[: LARGEST_COMPARED - 1])]))
            left -= star(keeper, why, left)  # seed is the keeper or one of its duplicates: it is taken
    stars: dict[int, list[int]] = {}
    for i, keeper in keeper_of.items():
        stars.setdefault(keeper, []).append(i)
    for keeper, copies in stars.items():
        keeper_id = records[keeper]["sample_id"]
        group = group_id.get(keeper, keeper_id[:16])
        if keeper in reason_of:
            why = reason_of[keeper]
        else:
            why = records[keeper].get("keep_reason") or "published earlier"
        result[keeper] = DuplicateInfo(group, True, None, None, why)
        for i in copies:
            result[i] = DuplicateInfo(group, spec.action == "flag", kind_of[i], keeper_id)
    return result
