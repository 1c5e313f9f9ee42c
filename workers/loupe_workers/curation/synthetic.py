"""Synthetic data kept honest: pure functions over manifest rows.

A sample is synthetic when its IngestSource says so (``spec.synthetic: true``) or when the metadata field
named by the Dataset's ``spec.synthetic.field`` holds a true value. Curation then

- caps the synthetic share of the version (``maxRatio``): published synthetic samples are kept first,
  the rest in a seed-determined order, so a later run with more synthetic input keeps the earlier choice;
- keeps synthetic samples out of val and test (``evalSplits: realOnly``, the default): real samples are
  split among themselves, sticky as always, and synthetic ones go to train;
- records real and synthetic counts overall, per split and per class, and the gap between the two
  populations on the drift figures (quality metrics, labels, embeddings), in words.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from loupe_api.dataset import DatasetStats
from loupe_api.samples import Disposition, SampleRow
from loupe_api.synthetic import (
    CAP_REASON,
    EVAL_REASON,
    SyntheticCounts,
    SyntheticGap,
    SyntheticSpec,
    SyntheticSummary,
)
from loupe_workers.curation.splits import SplitUnit, assign_splits

Row = Mapping[str, Any]  # a row read (manifest rows, and the measures gap_rows keeps)
R = TypeVar("R", bound=SampleRow)  # a manifest row marked here, handed back in its own type
TRUE_VALUES = frozenset({"true", "yes", "on", "1", "synthetic"})
MIN_COMPARED = 8  # fewer samples on either side: no gap is judged (too few to tell from chance)
KS_ALPHA = 0.001  # per measure; seven metrics and labels are tested, so chance alarms stay rare
LABEL_TVD = 0.2  # class mixes further apart than this (total variation) are a gap, when beyond chance
MUCH = 2.0  # a median ratio beyond 2x (or below 1/2) is "much"
GAP_SAMPLES = 20_000  # rows per side the gap is computed on: KS and medians are exact enough there


def is_synthetic(source_synthetic: bool, metadata: Mapping[str, Any], spec: SyntheticSpec) -> bool:
    """Whether a sample is synthetic: its source is, or its marker field holds a true value."""
    if source_synthetic:
        return True
    name = spec.metadata_name()
    return name is not None and str(metadata.get(name, "")).strip().lower() in TRUE_VALUES


def _priority(seed: int, sample_id: str) -> str:
    return hashlib.sha256(f"synthetic:{seed}:{sample_id}".encode()).hexdigest()


def synthetic_allowance(real: int, max_ratio: float | None) -> int | None:
    """How many synthetic samples ``real`` real ones allow (None: no cap)."""
    if max_ratio is None or max_ratio >= 1:
        return None
    # the largest s with s / (real + s) <= max_ratio, robust to float rounding at exact ratios
    allowed = math.floor(max_ratio * real / (1 - max_ratio) + 1e-9)
    return max(allowed, 0)


def cap(accepted: Sequence[R], spec: SyntheticSpec, seed: int, published: set[str]) -> list[R]:
    """The synthetic rows that ``maxRatio`` leaves out (already marked rejected, reason synthetic_cap).

    Published synthetic samples rank first (an append never drops one while the cap allows it), then by a
    seed-determined hash of the sample id, so adding synthetic input never reshuffles the earlier choice.
    """
    synthetic = [r for r in accepted if r.get("synthetic")]
    allowed = synthetic_allowance(len(accepted) - len(synthetic), spec.max_ratio)
    if allowed is None or len(synthetic) <= allowed:
        return []
    ranked = sorted(
        synthetic, key=lambda r: (r["sample_id"] not in published, _priority(seed, r["sample_id"]))
    )
    left_out = ranked[allowed:]
    for row in left_out:
        row["disposition"], row["reason"] = Disposition.REJECTED, CAP_REASON
        row["detail"] = (
            f"synthetic share capped at maxRatio {spec.max_ratio:g}: {allowed} synthetic samples allowed "
            f"next to {len(accepted) - len(synthetic)} real ones, {len(synthetic)} offered"
        )
    return left_out


def assign(
    units: list[SplitUnit],
    synthetic_ids: set[str],
    ratios: dict[str, float],
    seed: int,
    previous: dict[str, str],
    eval_splits: str,
) -> tuple[dict[str, str], set[str]]:
    """Split of every sample id, and the synthetic ids that must leave because their group is in val/test.

    realOnly: real samples (the real members of each group) are assigned exactly as without synthetic
    data, sticky splits included; a group of synthetic samples only goes to train; a synthetic member of
    a group with real samples follows its group, and leaves the version when that group is in val or
    test (groups never straddle splits). mixed: everything is assigned together.
    """
    if eval_splits == "mixed" or not synthetic_ids:
        return assign_splits(units, ratios, seed, previous), set()
    real_of = [tuple(m for m in unit.members if m not in synthetic_ids) for unit in units]
    real_units = [SplitUnit(real, unit.stratum) for real, unit in zip(real_of, units, strict=True) if real]
    assignment = assign_splits(real_units, ratios, seed, previous)
    leaving: set[str] = set()
    for real, unit in zip(real_of, units, strict=True):
        split = assignment[real[0]] if real else "train"
        for member in unit.members:
            if member in synthetic_ids:
                if split != "train":
                    leaving.add(member)
                assignment[member] = split
    return assignment, leaving


def leave_eval(rows: Iterable[R], leaving: set[str], split_of: Mapping[str, str]) -> list[R]:
    """Mark the synthetic members of val/test groups rejected (reason synthetic_in_eval)."""
    left: list[R] = []
    for row in rows:
        if row["sample_id"] in leaving and row.get("disposition") == Disposition.ACCEPTED:
            row["disposition"], row["reason"] = Disposition.REJECTED, EVAL_REASON
            row["detail"] = (
                f"synthetic copy grouped with real samples of {split_of[row['sample_id']]}: "
                "evaluation splits stay real (spec.synthetic.evalSplits: realOnly)"
            )
            left.append(row)
    return left


def _count_rejected(stats: DatasetStats, reason: str, count: int) -> None:
    if count:
        stats.rejected[reason] = stats.rejected.get(reason, 0) + count


def cap_groups(
    groups: list[list[R]], spec: SyntheticSpec, seed: int, published: set[str], stats: DatasetStats
) -> list[list[R]]:
    """The kept groups (each the kept rows of one near-duplicate group) after ``maxRatio``, counting
    what it left out."""
    left = cap([row for members in groups for row in members], spec, seed, published)
    if not left:
        return groups
    _count_rejected(stats, CAP_REASON, len(left))
    gone = {id(row) for row in left}
    kept = [[r for r in members if id(r) not in gone] for members in groups]
    return [members for members in kept if members]


def split(
    groups: Sequence[Sequence[SampleRow]],
    units: list[SplitUnit],
    ratios: dict[str, float],
    seed: int,
    previous: dict[str, str],
    spec: SyntheticSpec,
    stats: DatasetStats,
) -> dict[str, str]:
    """Split of every kept sample id under ``evalSplits`` (see ``assign``); synthetic members of val/test
    groups are marked rejected (synthetic_in_eval) and counted."""
    synthetic_ids = {r["sample_id"] for members in groups for r in members if r.get("synthetic")}
    assignment, leaving = assign(units, synthetic_ids, ratios, seed, previous, spec.eval_splits)
    members = (row for rows in groups for row in rows)
    _count_rejected(stats, EVAL_REASON, len(leave_eval(members, leaving, assignment)))
    return assignment


def real_and_synthetic(rows: Iterable[R]) -> tuple[list[R], list[R]]:
    """The real rows and the synthetic rows (rows of manifests written before the column are real)."""
    real: list[R] = []
    fake: list[R] = []
    for row in rows:
        (fake if row.get("synthetic") else real).append(row)
    return real, fake


def gap_rows(rows: Sequence[Row], limit: int = GAP_SAMPLES) -> list[Row]:
    """What the gap is computed on: the measures, label and sha256 of at most ``limit`` rows (a subset fixed
    by sample id, so versions compare alike), without the metadata the drift figures would parse."""
    keep = ("sample_id", "sha256", "label", *_WORDS)
    chosen = rows if len(rows) <= limit else sorted(rows, key=lambda r: _priority(0, r["sample_id"]))[:limit]
    return [{k: r.get(k) for k in keep} for r in chosen]


def _counts(rows: Iterable[Row]) -> SyntheticCounts:
    tally = Counter(bool(r.get("synthetic")) for r in rows)
    total = tally[True] + tally[False]
    return SyntheticCounts(
        real=tally[False], synthetic=tally[True], ratio=tally[True] / total if total else 0.0
    )


def summarize(rows: Sequence[Row], spec: SyntheticSpec) -> SyntheticSummary | None:
    """Real and synthetic counts of a version's rows (accepted ones overall, per split, per label; and the
    synthetic ones left out), None without synthetic data."""
    accepted = [r for r in rows if r.get("disposition") == Disposition.ACCEPTED]
    others = [r for r in rows if r.get("disposition") != Disposition.ACCEPTED]
    capped = sum(1 for r in others if r.get("reason") == CAP_REASON)
    left_out = sum(1 for r in others if r.get("reason") == EVAL_REASON)
    if not capped and not left_out and not any(r.get("synthetic") for r in accepted):
        return None
    by_split: dict[str, list[Row]] = {}
    by_class: dict[str, list[Row]] = {}
    for row in accepted:
        by_split.setdefault(str(row.get("split") or ""), []).append(row)
        if row.get("label"):
            by_class.setdefault(str(row["label"]), []).append(row)
    return SyntheticSummary(
        overall=_counts(accepted),
        splits={k: _counts(v) for k, v in sorted(by_split.items())},
        classes={k: _counts(v) for k, v in sorted(by_class.items())},
        capped=capped,
        left_out_of_eval=left_out,
        max_ratio=spec.max_ratio,
        eval_splits=spec.eval_splits,
    )


# ---- the gap between synthetic and real samples -------------------------------------------------

# metric -> (name in words, word when synthetic is higher, word when lower)
_WORDS: dict[str, tuple[str, str, str]] = {
    "sharpness": ("sharpness", "sharper", "softer"),
    "noise": ("noise", "noisier", "cleaner (less noise)"),
    "brightness_p99": ("highlight brightness", "brighter", "darker"),
    "brightness_p5": ("shadow brightness", "lighter in the shadows", "darker in the shadows"),
    "clipped": ("blown-out share", "more blown out", "less blown out"),
    "contrast": ("contrast", "more contrasty", "flatter"),
    "entropy": ("entropy", "busier (more tonal detail)", "simpler (less tonal detail)"),
}


def ks_threshold(n_real: int, n_synthetic: int, alpha: float = KS_ALPHA) -> float:
    """The two-sample Kolmogorov-Smirnov statistic above which two samples differ at level ``alpha``."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n_real + n_synthetic) / (n_real * n_synthetic))


def _median(rows: Sequence[Row], metric: str) -> float | None:
    values = [float(r[metric]) for r in rows if r.get(metric) is not None and math.isfinite(float(r[metric]))]
    return float(np.median(values)) if values else None


def _metric_gap(
    metric: str, real: Sequence[Row], synthetic: Sequence[Row], figure: Mapping[str, Any]
) -> SyntheticGap:
    name, higher, lower = _WORDS[metric]
    m_real, m_syn = _median(real, metric), _median(synthetic, metric)
    ks = figure.get("ks")
    threshold = ks_threshold(len(real), len(synthetic))
    significant = ks is not None and ks > threshold and m_real is not None and m_syn is not None
    gap = SyntheticGap(measure=f"quality.{metric}", significant=significant, text="", real_median=m_real,
                       synthetic_median=m_syn, psi=figure.get("psi"), ks=ks, threshold=threshold)  # fmt: skip
    if m_real is None or m_syn is None:
        gap.text = f"{name}: not measured"
        return gap
    if not significant:
        gap.text = f"no significant gap in {name} (median {m_syn:.3g} synthetic, {m_real:.3g} real)"
        return gap
    word = higher if m_syn > m_real else lower
    if m_real > 0 and m_syn > 0:
        ratio = m_syn / m_real
        much = "much " if ratio >= MUCH or ratio <= 1 / MUCH else ""
        figure_text = f"median {name} {ratio:.2g}x real"
    else:
        much, figure_text = "", f"median {name} {m_syn:.3g} against {m_real:.3g}"
    gap.text = f"synthetic images are {much}{word} than real ones ({figure_text})"
    return gap


def _label_gap(
    real: Sequence[Row], synthetic: Sequence[Row], figure: Mapping[str, Any]
) -> SyntheticGap | None:
    ref = Counter(str(r["label"]) for r in real if r.get("label"))
    cur = Counter(str(r["label"]) for r in synthetic if r.get("label"))
    if not ref or not cur:
        return None
    from scipy.stats import chi2_contingency

    labels = sorted(ref.keys() | cur.keys())
    n_ref, n_cur = sum(ref.values()), sum(cur.values())
    tvd = 0.5 * sum(abs(ref[k] / n_ref - cur[k] / n_cur) for k in labels)
    p_value = 1.0
    if len(labels) > 1:
        p_value = float(
            chi2_contingency(np.array([[ref[k] for k in labels], [cur[k] for k in labels]])).pvalue
        )
    significant = tvd > LABEL_TVD and p_value < KS_ALPHA
    gap = SyntheticGap(measure="labels", significant=significant, text="", psi=figure.get("psi"),
                       statistic=tvd, threshold=LABEL_TVD)  # fmt: skip
    if not significant:
        gap.text = f"no significant gap in the class mix (total variation {tvd:.2f})"
        return gap
    over = max(labels, key=lambda k: cur[k] / n_cur - ref[k] / n_ref)
    gap.text = (
        f"synthetic images have another class mix than real ones (total variation {tvd:.2f}; {over} is "
        f"{cur[over] / n_cur:.0%} of synthetic, {ref[over] / n_ref:.0%} of real)"
    )
    return gap


def _embedding_gap(statistic: float, threshold: float) -> SyntheticGap:
    significant = statistic > threshold
    if statistic >= 0.75:
        words = "synthetic and real images are far apart in embedding space"
    elif significant:
        words = "synthetic and real images are apart in embedding space"
    else:
        words = "synthetic and real images mix in embedding space (no significant gap)"
    return SyntheticGap(measure="embeddings", significant=significant, statistic=statistic, threshold=threshold,
                        text=f"{words} (two-sample statistic {statistic:.2f}; 0: mixed as chance, 1: fully separate)")  # fmt: skip


def describe_gap(
    summary: SyntheticSummary,
    real: Sequence[Row],
    synthetic: Sequence[Row],
    drift_figures: Mapping[str, Any],
    *,
    embedding_threshold: float,
) -> SyntheticSummary:
    """Fill the gap of ``summary`` from the drift figures of ``synthetic`` against ``real`` (insights.analysis
    .drift, real as the reference): per metric the KS statistic against its critical value at these sample
    sizes and the median ratio in words; the class mix; the embedding two-sample statistic."""
    if len(real) < MIN_COMPARED or len(synthetic) < MIN_COMPARED:
        summary.verdict = (
            f"too few samples to compare ({len(synthetic)} synthetic, {len(real)} real; at least "
            f"{MIN_COMPARED} each)"
        )
        return summary
    figures: Mapping[str, Any] = drift_figures.get("figures", {})
    gaps = [_metric_gap(m, real, synthetic, figures.get(f"quality.{m}", {})) for m in _WORDS]
    label_gap = _label_gap(real, synthetic, figures.get("labels", {}))
    if label_gap is not None:
        gaps.append(label_gap)
    embedding = drift_figures.get("embedding")
    if embedding is not None:
        gaps.append(_embedding_gap(float(embedding), embedding_threshold))
        summary.embedding = float(embedding)
    # significant gaps first, each by how far its statistic is beyond its threshold
    gaps.sort(key=lambda g: (not g.significant, -((g.ks or g.statistic or 0.0) / (g.threshold or 1.0))))
    summary.gaps = gaps
    found = [g.measure.removeprefix("quality.") for g in gaps if g.significant]
    if found:
        summary.verdict = f"synthetic images differ from real ones in {', '.join(found)}: " + "; ".join(
            g.text for g in gaps if g.significant
        )
    else:
        compared = (
            ["quality metrics"]
            + ["labels"] * (label_gap is not None)
            + ["embeddings"] * (embedding is not None)
        )
        summary.verdict = (
            f"no significant gap between {len(synthetic)} synthetic and {len(real)} real images "
            f"({', '.join(compared)})"
        )
    return summary


def lines(summary: SyntheticSummary) -> list[str]:
    """The synthetic summary of a version in words (loupe show)."""
    o = summary.overall
    out = [
        f"  synthetic: {o.synthetic} of {o.real + o.synthetic} samples ({o.ratio:.1%}); "
        + ", ".join(f"{k or '-'} {c.synthetic}/{c.real + c.synthetic}" for k, c in summary.splits.items())
        + f" (evalSplits {summary.eval_splits}"
        + (
            f", maxRatio {summary.max_ratio:g}: {summary.capped} left out"
            if summary.max_ratio is not None
            else ""
        )
        + ")"
    ]
    if summary.left_out_of_eval:
        out.append(f"    {summary.left_out_of_eval} synthetic copies of val/test samples left out")
    if summary.classes:
        out.append(
            "    per class: "
            + ", ".join(f"{k} {c.synthetic}/{c.real + c.synthetic}" for k, c in summary.classes.items())
        )
    if summary.verdict:
        out.append(f"    gap: {summary.verdict}")
    return out


def manifest_counts(rows: Iterable[Row]) -> SyntheticCounts:
    """Real and synthetic counts of manifest rows (rows of manifests written before the column: real)."""
    return _counts(rows)
