"""Label-error candidates without a second annotator (pure: numpy and faiss, no storage).

Two signals, each giving a score in [0, 1] and a reason a reviewer can check:

- **neighbours**: a sample's k nearest labelled samples by cosine on its embedding vote for their labels,
  each vote weighted by its similarity; the score is 1 minus the share of the sample's own label. The
  neighbourhood is capped at the size of the sample's own class minus one (at least MIN_REACH), so
  every member of a small, tight class can still be all-agreeing (k = 10 over a class of 4 would
  otherwise flag all of them). Copies in one group (a duplicate group) are one vote, never their own.
- **predictions** (confident learning, as cleanlab's ``find_label_issues``): per class j the threshold
  t_j is the mean predicted probability of j over the samples labelled j; a sample is a candidate when
  the most probable class among those at or above their threshold is not its label. Its score is the
  margin p(that class) - p(label). Predictions should be out-of-sample (cross-validated), as for cleanlab.

``rank`` merges both lists per sample (the higher score wins, both reasons kept) and keeps the best.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from loupe_api.samples import SampleRow

FloatArray = npt.NDArray[np.float32]
EXACT_LIMIT = 20_000  # up to this many samples the neighbours are exact (n^2 d work); above, HNSW
MIN_REACH = 3  # a small class's members are still judged by 3 neighbours, not by their single nearest
MAX_EXTRA = 64  # neighbours searched beyond k to step over copies in the same group
QUERY_CHUNK = 1024  # queries per block: the exact block is 1024 x n floats (80 MiB at 20,000)
REASON = "labelError"  # the review queue's reason for these candidates


@dataclass(frozen=True)
class LabelErrorCandidate:
    """One sample whose label looks wrong: the class the evidence points to, how strongly, and why."""

    sample_id: str
    label: str
    suggested: str
    confidence: float  # of the suggestion: its neighbour vote share, or its predicted probability
    score: float
    method: str  # neighbours, predictions, or neighbours+predictions
    reason: str

    def row(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> LabelErrorCandidate:
        return LabelErrorCandidate(
            str(row["sample_id"]), str(row["label"]), str(row["suggested"]), float(row["confidence"]),
            float(row["score"]), str(row["method"]), str(row["reason"]),
        )  # fmt: skip


def unit_rows(vectors: npt.ArrayLike) -> FloatArray:
    """The rows L2-normalised as contiguous float32 (cosine similarity is then a dot product)."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def nearest(vectors: FloatArray, k: int) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Cosine similarities and rows of the k nearest other rows of each row, nearest first.

    Exact up to EXACT_LIMIT rows (blocks of one matrix product: BLAS beat a faiss flat index three
    times over on 2 busy cores), faiss HNSW above; a row is never its own neighbour, even when another
    row holds the same vector (that row is).
    """
    n = len(vectors)
    k = min(k, n - 1)
    if n < 2 or k < 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    unit = unit_rows(vectors)
    if n > EXACT_LIMIT:
        return _nearest_hnsw(unit, k)
    return exact_nearest(unit, k)


def exact_nearest(
    unit: FloatArray, k: int, block_rows: int = QUERY_CHUNK
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """``nearest`` by exact search over unit rows (1 <= k < rows), ``block_rows`` queries per matrix
    product (the memory bound: block_rows x n floats)."""
    n = len(unit)
    sims = np.empty((n, k), np.float32)
    rows = np.empty((n, k), np.int64)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        block = unit[start:stop] @ unit.T
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.lexsort((top, -top_sims), axis=1)  # nearest first; ties by row: deterministic
        rows[start:stop] = np.take_along_axis(top, order, axis=1)
        sims[start:stop] = np.take_along_axis(top_sims, order, axis=1)
    return sims, rows


def _nearest_hnsw(unit: FloatArray, k: int) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    import faiss

    n = len(unit)
    index = faiss.IndexHNSWFlat(unit.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = max(64, 4 * k)
    index.add(unit)
    sims = np.full((n, k), -1.0, np.float32)
    rows = np.full((n, k), -1, np.int64)
    for start in range(0, n, QUERY_CHUNK):
        stop = min(n, start + QUERY_CHUNK)
        found_sims, found = index.search(unit[start:stop], k + 1)
        for offset, (row_sims, row_found) in enumerate(zip(found_sims, found, strict=True)):
            own = start + offset
            keep = [(s, r) for s, r in zip(row_sims.tolist(), row_found.tolist(), strict=True) if 0 <= r != own][:k]  # fmt: skip
            for j, (s, r) in enumerate(keep):
                sims[own, j], rows[own, j] = s, r
    return sims, rows


def _quote(name: str) -> str:
    return f"'{name}'"


def neighbour_candidates(
    sample_ids: Sequence[str],
    labels: Sequence[str],
    vectors: FloatArray,
    *,
    k: int = 10,
    min_score: float = 0.5,
    groups: Sequence[str] | None = None,
) -> list[LabelErrorCandidate]:
    """Samples whose label disagrees with the similarity-weighted labels of their nearest neighbours.

    ``labels[i]`` labels ``vectors[i]``; pass labelled samples only (an unlabelled one has no vote).
    Samples that share a ``groups`` value (copies of one photo: a duplicate group, a burst) are one
    piece of evidence: they never vote for each other, and cast one vote (their nearest member) for
    any other sample, so that copies cannot outvote the rest of a class.
    """
    if len(sample_ids) != len(labels) or len(labels) != len(vectors):
        raise ValueError("sample_ids, labels and vectors must have one entry per sample")
    if groups is not None and len(groups) != len(labels):
        raise ValueError("groups must have one entry per sample")
    classes = sorted(set(labels))
    if len(classes) < 2:
        return []
    code = {name: c for c, name in enumerate(classes)}
    y = np.array([code[name] for name in labels], np.int64)
    group_of = list(groups) if groups is not None else [str(i) for i in range(len(y))]
    # a class's size in groups: a sample's neighbourhood reaches at most the rest of its own class
    sizes = Counter(c for _, c in set(zip(group_of, y.tolist(), strict=True)))
    extra = min(max(Counter(group_of).values()) - 1, MAX_EXTRA)  # searched past copies in one group
    sims, rows = nearest(vectors, k + extra)
    out = []
    for i in range(len(y)):
        others, seen = [], {group_of[i]}
        for j, r in enumerate(rows[i].tolist()):
            if r >= 0 and group_of[r] not in seen:  # one vote per group: its nearest member
                seen.add(group_of[r])
                others.append(j)
        if sizes[int(y[i])] < 2:  # the only sample (or group) of its class: nothing to compare it with
            continue
        reach = min(k, max(sizes[int(y[i])] - 1, MIN_REACH), len(others))
        row = rows[i, others[:reach]]
        weights = np.clip(sims[i, others[:reach]], 0.0, None) + 1e-6  # a dissimilar neighbour hardly votes
        counted = np.bincount(y[row], weights=weights, minlength=len(classes)).astype(np.float64)
        votes = counted / counted.sum()
        suggested = int(np.argmax(votes))  # ties go to the first class by name: deterministic
        score = float(1.0 - votes[y[i]])
        if suggested == y[i] or score < min_score:
            continue
        counts = Counter(int(c) for c in y[row])
        own = counts.get(int(y[i]), 0)
        reason = (
            f"{counts[suggested]} of its {len(row)} nearest neighbours are labelled {_quote(classes[suggested])}"
            + (f", {own} {_quote(classes[y[i]])}" if own else f", none {_quote(classes[y[i]])}")
        )
        out.append(LabelErrorCandidate(sample_ids[i], labels[i], classes[suggested],
                                       round(float(votes[suggested]), 6), round(score, 6), "neighbours",
                                       reason))  # fmt: skip
    return out


def class_thresholds(labels: npt.NDArray[np.int64], probs: FloatArray) -> FloatArray:
    """t_j: the mean probability of class j over samples labelled j (cleanlab's per-class threshold).

    A class that no sample is labelled with gets the median of the others: a model that names it
    confidently still disagrees with the label, but it is not given a free pass or a ban.
    """
    n_classes = probs.shape[1]
    thresholds = np.full(n_classes, np.nan, np.float32)
    for j in range(n_classes):
        mine = labels == j
        if mine.any():
            thresholds[j] = float(probs[mine, j].mean())
    known = thresholds[~np.isnan(thresholds)]
    fallback = float(np.median(known)) if len(known) else 0.5
    return np.where(np.isnan(thresholds), fallback, thresholds).astype(np.float32)


def confident_learning(
    sample_ids: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    probs: FloatArray,
    *,
    min_score: float = 0.5,
) -> list[LabelErrorCandidate]:
    """Samples where another class is confidently predicted (above its class threshold) over the label.

    ``probs[i, j]`` is the predicted probability of ``classes[j]`` for ``sample_ids[i]``; every label
    must be one of ``classes``.
    """
    if probs.shape != (len(sample_ids), len(classes)) or len(labels) != len(sample_ids):
        raise ValueError("probs must be (samples, classes), with one label per sample")
    code = {name: c for c, name in enumerate(classes)}
    missing = sorted(set(labels) - set(code))
    if missing:
        raise ValueError(f"labels {', '.join(missing)} are not among the predicted classes")
    if not len(labels):
        return []
    y = np.array([code[name] for name in labels], np.int64)
    p = np.asarray(probs, np.float32)
    thresholds = class_thresholds(y, p)
    confident = np.where(p >= thresholds[None, :], p, -1.0)
    best = np.argmax(confident, axis=1)
    out = []
    for i in range(len(y)):
        j = int(best[i])
        if confident[i, j] < 0 or j == y[i]:  # no class confident, or the label itself
            continue
        margin = float(p[i, j] - p[i, y[i]])
        if margin <= 0 or margin < min_score:  # it must beat the label, not tie it
            continue
        reason = (
            f"predicted {_quote(classes[j])} at {p[i, j]:.2f} (its class threshold {thresholds[j]:.2f}), "
            f"{_quote(classes[y[i]])} at {p[i, y[i]]:.2f}"
        )
        out.append(LabelErrorCandidate(sample_ids[i], labels[i], classes[j], round(float(p[i, j]), 6),
                                       round(margin, 6), "predictions", reason))  # fmt: skip
    return out


def top1_probabilities(
    labels: Sequence[str], predicted: Sequence[str], confidence: Sequence[float]
) -> tuple[list[str], FloatArray]:
    """Classes and a probability matrix from top-1 predictions (label, confidence) only: the rest of
    the mass is spread evenly over the other classes, as nothing more is known of it."""
    classes = sorted(set(labels) | set(predicted))
    code = {name: c for c, name in enumerate(classes)}
    n, width = len(predicted), len(classes)
    rest = np.array([(1.0 - c) / max(width - 1, 1) for c in confidence], np.float32)
    probs = np.repeat(rest[:, None], width, axis=1) if n else np.zeros((0, width), np.float32)
    for i, (name, c) in enumerate(zip(predicted, confidence, strict=True)):
        probs[i, code[name]] = c
    return classes, probs.astype(np.float32)


def rank(*found: Sequence[LabelErrorCandidate], limit: int) -> list[LabelErrorCandidate]:
    """One candidate per sample, highest score first (ties: the more confident suggestion, then by
    sample id), at most ``limit``.

    A sample both methods flag keeps the higher score and both reasons.
    """
    by_sample: dict[str, LabelErrorCandidate] = {}
    for candidates in found:
        for c in candidates:
            seen = by_sample.get(c.sample_id)
            if seen is None:
                by_sample[c.sample_id] = c
                continue
            first, second = (seen, c) if seen.score >= c.score else (c, seen)
            by_sample[c.sample_id] = LabelErrorCandidate(
                c.sample_id, c.label, first.suggested, first.confidence, first.score,
                "+".join(sorted({*first.method.split("+"), *second.method.split("+")})),
                f"{first.reason}; {second.reason}",
            )  # fmt: skip
    ordered = sorted(by_sample.values(), key=lambda c: (-c.score, -c.confidence, c.sample_id))
    return ordered[:limit]


def in_rows(
    rows: Sequence[SampleRow],
    vectors: Mapping[str, FloatArray],
    *,
    k: int,
    min_score: float,
    limit: int,
) -> tuple[int, list[LabelErrorCandidate]]:
    """Neighbour candidates among a version's accepted manifest rows: (samples checked, ranked candidates).

    Labelled rows with an embedding (``vectors`` by sha256) take part; the copies of one duplicate
    group (dedup action flag keeps them) count as one piece of evidence.
    """
    labelled = [r for r in rows if r.get("label") and r.get("sha256") in vectors]
    if not labelled:
        return 0, []
    found = neighbour_candidates(
        [str(r["sample_id"]) for r in labelled],
        [str(r["label"]) for r in labelled],
        np.stack([vectors[r["sha256"]] for r in labelled]).astype(np.float32),
        k=k,
        min_score=min_score,
        groups=[str(r.get("dup_group") or r["sample_id"]) for r in labelled],
    )
    return len(labelled), rank(found, limit=limit)


def from_predictions(
    rows: Sequence[SampleRow],
    predictions: Mapping[str, tuple[str, float]],
    *,
    min_score: float,
) -> list[LabelErrorCandidate]:
    """Confident-learning candidates among labelled rows with an imported top-1 prediction
    (``predictions``: sample id -> (class, confidence))."""
    labelled = [r for r in rows if r.get("label") and r["sample_id"] in predictions]
    if not labelled:
        return []
    labels = [str(r["label"]) for r in labelled]
    predicted = [predictions[r["sample_id"]] for r in labelled]
    classes, probs = top1_probabilities(labels, [p for p, _ in predicted], [c for _, c in predicted])
    return confident_learning(
        [str(r["sample_id"]) for r in labelled], labels, classes, probs, min_score=min_score
    )
