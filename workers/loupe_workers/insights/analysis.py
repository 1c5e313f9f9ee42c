"""Dataset health and drift: pure functions over manifest rows (and embeddings when there are some).

Health describes one version: class balance, duplicate and flag rates, quality distributions, coverage of
metadata slices with the gaps spelled out, label change against the parent, freshness. Drift compares the
samples that are new in a version with a reference version: PSI on quality metrics, metadata and labels,
a Kolmogorov-Smirnov statistic on each metric, and a nearest-neighbour two-sample statistic on embeddings.

Capture times are input like any other (EXIF, a path pattern, static metadata): a time with an offset is
an instant; a time without one is taken as UTC when times are compared (freshness), and the hour of day
of a slice is the wall-clock hour as recorded. A value that is no real date and time ("2023:13:45
25:61:00", "0000:00:00 00:00:00", year 99999, garbage bytes) counts as no capture time.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from loupe_api.dataset import DriftSpec, DriftSummary, HealthSpec, HealthSummary
from loupe_api.samples import Disposition

Row = Mapping[str, Any]  # a row read: a manifest row (loupe_api.samples.SampleRow) or synthetic.gap_rows'
QUALITY_METRICS = ("sharpness", "brightness_p99", "brightness_p5", "clipped", "contrast", "noise", "entropy")
MAX_GAPS_IN_STATUS = 10
_EPSILON = 1e-4  # PSI of an empty bin would be infinite: floor the proportions


def time_of_day(hour: int) -> str:
    if 6 <= hour < 12:
        return "morning"
    if 12 <= hour < 18:
        return "afternoon"
    if 18 <= hour < 22:
        return "evening"
    return "night"


def slice_fields(row: Row) -> dict[str, str]:
    """The fields a slice can use: metadata, label, split, and hour/time of day from the capture time."""
    fields: dict[str, str] = {}
    if row.get("metadata"):
        fields.update(_metadata_fields(row["metadata"]))
    if row.get("label"):
        fields["label"] = str(row["label"])
    if row.get("split"):
        fields["split"] = str(row["split"])
    captured = capture_time(row)
    if captured is not None:
        fields["hourOfDay"] = f"{captured.hour:02d}"
        fields["timeOfDay"] = time_of_day(captured.hour)
    return fields


def parse_capture_time(value: object) -> datetime | None:
    """An ISO 8601 or EXIF ('YYYY:MM:DD HH:MM:SS') time as recorded, naive or with its offset; None
    for anything that is no real date and time."""
    if not isinstance(value, str) or not value.strip("\x00 "):
        return None
    text = value.strip("\x00 ")
    if len(text) >= 19 and text[4] == ":" and text[7] == ":" and text[10] == " ":  # EXIF layout
        text = f"{text[0:4]}-{text[5:7]}-{text[8:10]}T{text[11:]}"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            parsed.astimezone(UTC)  # 0001-01-01T00:00+02:00 has no UTC instant: OverflowError
    except (ValueError, OverflowError, TypeError):
        return None
    return parsed


def instant(moment: datetime) -> datetime:
    """The UTC instant of a capture time: a naive one is taken as UTC (naive and aware compare)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_object(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str | bytes) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def capture_time(row: Row) -> datetime | None:
    """The capture time of a row (EXIF first, then the metadata's capture_time), as recorded; None when
    it has none or an impossible one."""
    exif, metadata = row.get("exif"), row.get("metadata")
    try:
        return _capture_time(exif, metadata)
    except TypeError:  # a value that cannot key the memo
        return _capture_time.__wrapped__(exif, metadata)


# Memos by the stored text: health parses every accepted row's metadata and EXIF (twice for the capture
# time), and most rows of a dataset share the same few texts. Both are pure functions of their arguments.
@lru_cache(maxsize=1 << 16)
def _capture_time(exif: object, metadata: object) -> datetime | None:
    for text in (exif, metadata):
        found = parse_capture_time(_json_object(text).get("capture_time"))
        if found is not None:
            return found
    return None


@lru_cache(maxsize=1 << 16)
def _metadata_fields_memo(text: str) -> dict[str, str]:
    return {k: str(v) for k, v in json.loads(text).items()}


def _metadata_fields(text: str) -> dict[str, str]:
    return dict(_metadata_fields_memo(text))  # a copy: the memo's dict is shared


def distribution(values: Sequence[float], bins: int = 10) -> dict[str, Any]:
    """A histogram and a few quantiles of one metric."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return {"count": 0}
    counts, edges = np.histogram(data, bins=bins)
    p5, p50, p95 = np.percentile(data, [5, 50, 95])
    return {"count": int(data.size), "mean": float(data.mean()), "p5": float(p5), "p50": float(p50),
            "p95": float(p95), "edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}  # fmt: skip


def class_balance(rows: Iterable[Row]) -> dict[str, Any]:
    counts = Counter(str(r["label"]) for r in rows if r.get("label"))
    if not counts:
        return {"counts": {}, "imbalance": None, "entropy": None}
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return {
        "counts": dict(sorted(counts.items())),
        "imbalance": max(counts.values()) / min(counts.values()),
        "entropy": entropy / math.log(len(counts)) if len(counts) > 1 else 1.0,  # 1: perfectly balanced
    }


def coverage(rows: Sequence[Row], spec: HealthSpec) -> list[dict[str, Any]]:
    """For each configured slice, the samples per combination of values and the combinations missing."""
    if not spec.slices:  # nothing to cover: no row's fields are needed
        return []
    fields_of = [slice_fields(r) for r in rows]
    out = []
    for fields in spec.slices:
        seen: dict[str, set[str]] = {f: set(spec.expected.get(f, [])) for f in fields}
        counts: Counter[tuple[str, ...]] = Counter()
        for values in fields_of:
            if all(f in values for f in fields):
                combo = tuple(values[f] for f in fields)
                counts[combo] += 1
                for f, v in zip(fields, combo, strict=True):
                    seen[f].add(v)
        gaps = []
        for combo in itertools.product(*(sorted(seen[f]) for f in fields)):
            if counts[combo] < spec.min_samples:
                where = " ".join(f"{f} {v}" for f, v in zip(fields, combo, strict=True))
                gaps.append({"values": dict(zip(fields, combo, strict=True)), "samples": counts[combo],
                             "text": f"{'no' if counts[combo] == 0 else counts[combo]} samples for {where}"})  # fmt: skip
        out.append(
            {"fields": fields, "counts": {"/".join(k): v for k, v in sorted(counts.items())}, "gaps": gaps}
        )
    return out


def label_change(rows: Sequence[Row], parent_rows: Sequence[Row]) -> dict[str, Any]:
    """Per-label counts against the parent, and the total variation distance of the two distributions."""
    now = Counter(str(r["label"]) for r in rows if r.get("label"))
    before = Counter(str(r["label"]) for r in parent_rows if r.get("label"))
    labels = sorted(now.keys() | before.keys())
    n_now, n_before = sum(now.values()) or 1, sum(before.values()) or 1
    tvd = 0.5 * sum(abs(now[k] / n_now - before[k] / n_before) for k in labels)
    return {"delta": {k: now[k] - before[k] for k in labels if now[k] != before[k]},
            "totalVariation": tvd if parent_rows else None}  # fmt: skip


def health(
    accepted: Sequence[Row], others: Sequence[Row], parent_accepted: Sequence[Row], spec: HealthSpec
) -> tuple[HealthSummary, dict[str, Any]]:
    """The health figures of a version (full) and their summary for status."""
    seen = len(accepted) + len(others)
    duplicates = [r for r in others if r.get("disposition") == Disposition.DUPLICATE]
    dup_kinds = Counter(str(r.get("dup_kind") or "unknown") for r in duplicates)
    flagged = sum(1 for r in accepted if r.get("flags"))
    balance = class_balance(accepted)
    slices = coverage(accepted, spec)
    gaps = [g["text"] for s in slices for g in s["gaps"]]
    captures = [t for t in (capture_time(r) for r in accepted) if t is not None]
    full: dict[str, Any] = {
        "samples": len(accepted),
        "seen": seen,
        "classBalance": balance,
        "duplicates": {"rate": len(duplicates) / seen if seen else 0.0, "byKind": dict(dup_kinds)},
        "flags": dict(Counter(f for r in accepted for f in (r.get("flags") or []))),
        "dispositions": dict(Counter(str(r.get("disposition")) for r in others)),
        "quality": {m: distribution([float(r[m]) for r in accepted if r.get(m) is not None]) for m in QUALITY_METRICS},
        "slices": slices,
        "labelChange": label_change(accepted, parent_accepted),
        "freshness": {"newest": max(captures, key=instant).isoformat() if captures else None,
                      "oldest": min(captures, key=instant).isoformat() if captures else None,
                      "withCaptureTime": len(captures)},
        "splits": dict(Counter(str(r.get("split")) for r in accepted)),
    }  # fmt: skip
    summary = HealthSummary(
        classes=len(balance["counts"]),
        imbalance=balance["imbalance"],
        duplicate_rate=full["duplicates"]["rate"],
        flagged_rate=flagged / len(accepted) if accepted else 0.0,
        gaps=gaps[:MAX_GAPS_IN_STATUS],
        newest_sample=full["freshness"]["newest"],
    )
    return summary, full


# ---- drift ------------------------------------------------------------------------------------------


def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float | None:
    """Population stability index of a numeric metric, with bins at the reference's quantiles."""
    ref = np.asarray([v for v in reference if v is not None], dtype=np.float64)
    cur = np.asarray([v for v in current if v is not None], dtype=np.float64)
    if ref.size < 2 or cur.size == 0:
        return None
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1) / ref.size
    q = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1) / cur.size
    return _psi(p, q)


def psi_categorical(reference: Iterable[str], current: Iterable[str]) -> float | None:
    ref, cur = Counter(reference), Counter(current)
    if not ref or not cur:
        return None
    keys = sorted(ref.keys() | cur.keys())
    p = np.array([ref[k] for k in keys], dtype=np.float64) / sum(ref.values())
    q = np.array([cur[k] for k in keys], dtype=np.float64) / sum(cur.values())
    return _psi(p, q)


def _psi(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> float:
    p, q = np.maximum(p, _EPSILON), np.maximum(q, _EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic, computed as scipy.stats.ks_2samp computes it (same
    operations, same float), without importing scipy.stats (about a second of a small incremental run)
    or computing the p-value nobody reads. Values with NaN go through scipy, which propagates it."""
    ref = [v for v in reference if v is not None]
    cur = [v for v in current if v is not None]
    if len(ref) < 2 or not cur:
        return None
    data1, data2 = np.sort(np.asarray(ref)), np.sort(np.asarray(cur))
    if np.isnan(data1).any() or np.isnan(data2).any():
        from scipy.stats import ks_2samp

        return float(ks_2samp(ref, cur).statistic)
    pooled = np.concatenate([data1, data2])
    reference_cdf = np.searchsorted(data1, pooled, side="right") / len(data1)
    current_cdf = np.searchsorted(data2, pooled, side="right") / len(data2)
    differences = reference_cdf - current_cdf
    below = np.clip(-differences[np.argmin(differences)], 0, 1)
    above = differences[np.argmax(differences)]
    statistic = float(below if below > above else above)
    if max(len(data1), len(data2)) <= _KS_EXACT_MAX_N:  # scipy's exact method rounds it to a lattice step
        lcm = len(data1) // math.gcd(len(data1), len(data2)) * len(data2)
        statistic = int(np.round(statistic * lcm)) * 1.0 / lcm
    return statistic


_KS_EXACT_MAX_N = 10_000  # scipy.stats.ks_2samp's method="auto": exact up to this many values a side


KNN_QUERIES = 4096  # samples of each set whose neighbours are looked up (seeded); the rest only answer
KNN_CHUNK = 2048  # queries per faiss search: memory is the pooled vectors plus chunk x (k + 1) results


def knn_two_sample(
    reference: npt.NDArray[np.float32],
    current: npt.NDArray[np.float32],
    k: int = 5,
    *,
    max_queries: int = KNN_QUERIES,
    chunk: int = KNN_CHUNK,
    seed: int = 0,
) -> float | None:
    """Schilling's nearest-neighbour statistic, rescaled to [0, 1]: 0 when the new samples' neighbours are
    as mixed as chance says, 1 when every neighbour comes from the sample's own set (fully separate).

    Neighbours are exact (faiss brute-force inner product on unit vectors, ``chunk`` queries at a time),
    searched among every pooled sample, so memory is O(n * d + chunk * k), never n x n. A set larger than
    ``max_queries`` has a seeded random subset of that many queried; each set's same-set fraction is then
    the mean over its queried samples, an unbiased estimate of the exact statistic (below ``max_queries``
    per set it is the exact statistic). Time is O(min(n, 2 * max_queries) * n * d).
    """
    import faiss

    n1, n2 = len(reference), len(current)
    if n1 < 2 or n2 < 2:
        return None
    pooled = np.concatenate([reference, current]).astype(np.float32)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-12
    n = n1 + n2
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    same_fraction = 0.0
    for start, size in ((0, n1), (n1, n2)):
        rows = np.arange(start, start + size)
        if size > max_queries:
            rows = np.sort(rng.choice(rows, max_queries, replace=False))
        same = 0
        for first in range(0, len(rows), chunk):
            queried = rows[first : first + chunk]
            _, found = faiss.knn(pooled[queried], pooled, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
            found = np.asarray(found, np.int64)
            not_self = found != queried[:, None]
            # drop the query itself (or, when an exact copy outranked it, the (k + 1)th neighbour)
            not_self[not_self.all(axis=1), k] = False
            neighbours = found[not_self].reshape(len(queried), k)
            same += int(((neighbours >= n1) == (start == n1)).sum())
        same_fraction += size / n * same / (len(rows) * k)
    expected = (n1 * (n1 - 1) + n2 * (n2 - 1)) / (n * (n - 1))
    return float(max(0.0, (same_fraction - expected) / (1 - expected)))


def drift(
    reference: Sequence[Row],
    current: Sequence[Row],
    reference_version: str,
    spec: DriftSpec,
    *,
    vectors: dict[str, npt.NDArray[np.float32]] | None = None,
) -> tuple[DriftSummary, dict[str, Any]]:
    """Drift of the samples in ``current`` (those new since the reference) against ``reference``."""
    figures: dict[str, dict[str, float | None]] = {}
    for metric in QUALITY_METRICS:
        ref = [r.get(metric) for r in reference]
        cur = [r.get(metric) for r in current]
        figures[f"quality.{metric}"] = {"psi": psi(ref, cur), "ks": ks_statistic(ref, cur)}  # type: ignore[arg-type]
    figures["labels"] = {"psi": psi_categorical((str(r.get("label")) for r in reference),
                                                (str(r.get("label")) for r in current))}  # fmt: skip
    skip = {"label", "split", "hourOfDay", "capture_time", "frame_index", "frame_time"}
    fields = sorted({f for r in reference for f in slice_fields(r)} - skip)
    for f in fields:
        values_ref = [slice_fields(r).get(f, "(none)") for r in reference]
        values_cur = [slice_fields(r).get(f, "(none)") for r in current]
        distinct = set(values_ref) | set(values_cur)
        if len(distinct) <= max(
            10, (len(values_ref) + len(values_cur)) // 2
        ):  # identifiers are not categories
            figures[f"metadata.{f}"] = {"psi": psi_categorical(values_ref, values_cur)}
    embedding = None
    if vectors:
        ref_v = [vectors[r["sha256"]] for r in reference if r.get("sha256") in vectors]
        cur_v = [vectors[r["sha256"]] for r in current if r.get("sha256") in vectors]
        if ref_v and cur_v:
            embedding = knn_two_sample(np.stack(ref_v), np.stack(cur_v))
    ranked: list[tuple[float, str]] = sorted(
        ((psi_value, k) for k, v in figures.items() if (psi_value := v.get("psi")) is not None), reverse=True
    )
    score = max([p for p, _ in ranked] + ([embedding] if embedding is not None else []), default=0.0)
    top = [f"{k} PSI {p:.3f}" for p, k in ranked[:3] if p > 0.01]
    if embedding is not None:
        top.insert(0, f"embeddings {embedding:.3f}")
    if len(current) < spec.min_samples or len(reference) < spec.min_samples:
        score, embedding = 0.0, None  # a handful of samples gives huge, meaningless PSI values
        top = [f"too few samples to judge ({len(current)} new, {len(reference)} in {reference_version}; "
               f"at least {spec.min_samples} each)"]  # fmt: skip
    summary = DriftSummary(score=score, reference=reference_version, new_samples=len(current), embedding=embedding,
                           top=top, exceeded=score > spec.threshold)  # fmt: skip
    return summary, {"reference": reference_version, "newSamples": len(current), "figures": figures,
                     "embedding": embedding, "score": score}  # fmt: skip
