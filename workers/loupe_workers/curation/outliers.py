"""Dataset-relative gates: robust outliers of a measure within a stratum (pure: no I/O, no decoding).

"Blurry for this camera" is what a line engineer means: a camera with a softer lens has every photo below
an absolute blur threshold, and a sharp camera's slightly defocused shot stays above it. A gate's
``relative`` section judges each sample against the other samples of its own stratum (its camera, site,
source or any metadata field) with the robust z-score of Iglewicz and Hoaglin::

    z = 0.6745 (x - median) / MAD            (MAD: median absolute deviation from the median)

one-sided, in the gate's direction (blur: too soft; noise: too grainy; dark: too dark; bright: too
blown out; low contrast: too flat). Decisions, each made here and explained where it is made:

- Which samples make the statistics: those the absolute gates keep (an absolutely rejected or
  quarantined sample is not part of the dataset, so it must not move its stratum's median), counted once
  per content (sha256): exact copies of one photo would otherwise shrink the MAD. The same samples are
  judged.
- Scale: sharpness and noise are ratios that span a decade between sharp and soft photos or clean and
  grainy ones, with a long upper tail; they are judged on their logarithm, so "half as sharp as this
  camera's usual" is the same z whatever the camera's usual. The bounded measures (brightness p99,
  blown-out share, contrast) are judged as they are.
- MAD = 0 (more than half the stratum has the same value, e.g. no blown-out pixel at all): the mean
  absolute deviation stands in for it (z = (x - median) / (1.2533 MeanAD), as Iglewicz and Hoaglin
  advise), and the spread is never taken below a per-measure floor (``Measure.floor``), so a stratum of
  identical values does not call a hair's difference an outlier.
- Small strata: fewer than ``minSamples`` distinct samples are not judged (their median and MAD are
  reported, their threshold is not).
- Missing key (a sample without the metadata field, a photo without EXIF camera): not judged and counted
  as ``missing``. Pooling them into one "unknown" stratum would mix unrelated cameras, whose median says
  nothing about any of them.
- Missing measure (a row measured before the measure existed): neither counted nor judged.
- Low contrast: photos with more than 5 % blown out are left to the bright gate, as in the absolute gate.
- Stability (issue 11 item 4: a newcomer must never cause a published sample to be dropped): a relative
  verdict changes when samples arrive, so reject and quarantine apply only to samples that were not
  accepted in the parent version; a published sample beyond the threshold gets the flag instead. Flags
  are recomputed on every version, so they always agree with the statistics stored with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loupe_api.dataset import DatasetStats, QualityGates
from loupe_api.outliers import STRATA_REPORTED, RelativeGate, RelativeGateStats, StratumStats
from loupe_api.samples import RELATIVE_PREFIX, Disposition, Flag, Gate, SampleRow

MAD_TO_Z = 0.6745  # the MAD of a normal distribution is 0.6745 sigma
MEAN_AD_TO_SIGMA = 1.253314  # sqrt(pi / 2): the mean absolute deviation of a normal is 0.7979 sigma
LOG_EPSILON = 1e-3  # log of a measure of 0 (a flat synthetic image)
FLAG_PREFIX = RELATIVE_PREFIX  # flags relative:GATE (samples.Flag), and the reason of a drop
_LOW_CONTRAST_MAX_CLIPPED = 0.05  # as gates._LOW_CONTRAST_MAX_CLIPPED


@dataclass(frozen=True)
class Measure:
    """How one gate's stored measure is judged relatively."""

    column: str
    below: bool  # an outlier is too low (blur, dark, low contrast) or too high (bright, noise)
    log: bool  # judged on the logarithm (ratio-like measures)
    floor: float  # the smallest spread (sigma, in judged units) a stratum is credited with
    epsilon: float = 0.0  # log measures: values below this are taken as this (the measure's resolution)


MEASURES: dict[str, Measure] = {
    # log units: 0.05 is a 5 % change of sharpness or grain. A grain below 0.05 (0-255 scale) is none at
    # all (a flat sky measures 0): without that floor, a camera whose sky reads 0 in a third of its shots
    # spreads its logs over decades and nothing is ever beyond its threshold (seen on the tuning half)
    Gate.BLUR: Measure("sharpness", below=True, log=True, floor=0.05, epsilon=0.05),
    Gate.NOISE: Measure("noise", below=False, log=True, floor=0.05, epsilon=0.05),
    # 0.02 of brightness chosen on the tuning half (0.01 flagged 4 clean shots of fixed cameras, 0.02 none)
    Gate.DARK: Measure("brightness_p99", below=True, log=False, floor=0.02),
    # clean photos with a bright sky spread their blown-out share over 0-25 %: the spread is taken as at
    # least 5 % of the frame (0.05 chosen on the benchmark's tuning half: with 0.01 the relative bright
    # gate flagged 57 clean shots of mixed-scene cameras for 13 over-exposed ones)
    Gate.BRIGHT: Measure("clipped", below=False, log=False, floor=0.05),
    Gate.LOW_CONTRAST: Measure("contrast", below=True, log=False, floor=0.01),
}


@dataclass(frozen=True)
class Limit:
    """A stratum's robust centre and spread, and the threshold they give (all in measure units except
    ``sigma``, which is in judged units: log units for log measures)."""

    median: float
    mad: float
    centre: float  # the median in judged units (its log for log measures)
    sigma: float
    threshold: float


def _judged(value: float, measure: Measure) -> float:
    return math.log(max(value, measure.epsilon, LOG_EPSILON)) if measure.log else value


def _unjudged(value: float, measure: Measure) -> float:
    return math.exp(value) if measure.log else value


def robust_sigma(values: Sequence[float], floor: float = 0.0) -> tuple[float, float, float]:
    """(median, MAD, sigma) of the values; sigma = MAD / 0.6745, or 1.2533 x the mean absolute deviation
    when the MAD is 0, and never below ``floor``."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values")
    median = float(np.median(array))
    deviations = np.abs(array - median)
    mad = float(np.median(deviations))
    sigma = mad / MAD_TO_Z if mad > 0 else MEAN_AD_TO_SIGMA * float(deviations.mean())
    return median, mad, max(sigma, floor)


def robust_z(value: float, median: float, sigma: float) -> float:
    """The robust z-score of a value (0 when the stratum has no spread at all and the value is the median)."""
    if sigma <= 0:
        return 0.0 if value == median else math.copysign(math.inf, value - median)
    return (value - median) / sigma


def stratum_limit(values: Sequence[float], max_z: float, measure: Measure) -> Limit:
    """The threshold of one stratum: median -/+ max_z sigma in judged units, given back in measure units."""
    judged = [_judged(v, measure) for v in values]
    median, mad, sigma = robust_sigma(judged, measure.floor)
    edge = median - max_z * sigma if measure.below else median + max_z * sigma
    if measure.log:  # report the centre and spread in the measure's own units too
        raw = np.asarray(values, dtype=np.float64)
        raw_median = float(np.median(raw))
        raw_mad = float(np.median(np.abs(raw - raw_median)))
        return Limit(raw_median, raw_mad, median, sigma, _unjudged(edge, measure))
    return Limit(median, mad, median, sigma, edge)


def is_outlier(value: float, limit: Limit, measure: Measure) -> bool:
    """Strictly beyond the threshold, on the gate's side."""
    return value < limit.threshold if measure.below else value > limit.threshold


def stratum_key(record: Mapping[str, Any], by: str) -> str | None:
    """The record's value for a stratum key (None: it has none). ``camera`` is EXIF make and model from
    the stored EXIF (present whatever the source's metadata settings)."""
    if by == "source":
        value = record.get("source")
    elif by == "label":
        value = record.get("label")
    elif by == "camera":
        exif = _json_object(record.get("exif"))
        parts = [str(exif[k]).strip() for k in ("camera_make", "camera_model") if exif.get(k)]
        value = " ".join(p for p in parts if p) or None
    elif by.startswith("metadata."):
        value = _json_object(record.get("metadata")).get(by.removeprefix("metadata."))
    else:
        raise ValueError(f"unknown stratum key {by!r}")
    if value is None or value == "":
        return None
    return str(value)


def _json_object(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _measure_of(record: Mapping[str, Any], gate: str, measure: Measure) -> float | None:
    value = record.get(measure.column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if gate == Gate.LOW_CONTRAST and (record.get("clipped") or 0.0) > _LOW_CONTRAST_MAX_CLIPPED:
        return None  # over-exposure squeezes the tones: the bright gate's
    return float(value)


@dataclass
class Verdict:
    """One relative gate's verdict on one record."""

    gate: str
    action: str  # flag, reject or quarantine (reject and quarantine only for samples new in the version)
    detail: str


@dataclass
class Judgement:
    """Verdicts by record index, and the statistics of every relative gate."""

    verdicts: dict[int, list[Verdict]] = field(default_factory=dict)
    stats: list[RelativeGateStats] = field(default_factory=list)


def relative_gates(gates: QualityGates) -> list[tuple[str, RelativeGate]]:
    """The enabled gates with a relative section, in a fixed order."""
    out: list[tuple[str, RelativeGate]] = []
    for name in MEASURES:
        gate = getattr(gates, name)
        if gate.enabled and gate.relative is not None:
            out.append((name, gate.relative))
    return out


def judge(
    records: Sequence[SampleRow], gates: QualityGates, published: Sequence[bool] | None = None
) -> Judgement:
    """Judge every record against its stratum, for every relative gate.

    ``records`` are the samples the absolute gates kept; ``published[i]`` says record i was accepted in
    the parent version (then it is only ever flagged, whatever the action).
    """
    published = published if published is not None else [False] * len(records)
    judgement = Judgement()
    for name, rel in relative_gates(gates):
        measure = MEASURES[name]
        members: dict[str, list[int]] = {}
        missing = 0
        for index, record in enumerate(records):
            if _measure_of(record, name, measure) is None:
                continue
            key = stratum_key(record, rel.by)
            if key is None:
                missing += 1
                continue
            members.setdefault(key, []).append(index)
        strata: list[StratumStats] = []
        stats = RelativeGateStats(
            gate=name,
            measure=measure.column,
            direction="below" if measure.below else "above",
            by=rel.by,
            max_z=rel.max_z,
            min_samples=rel.min_samples,
            action=rel.action,
            missing=missing,
        )
        for key, indices in members.items():
            distinct: dict[str, float] = {}
            for i in indices:  # one value per content: exact copies must not shrink the spread
                value = _measure_of(records[i], name, measure)
                assert value is not None
                distinct.setdefault(str(records[i].get("sha256") or i), value)
            values = list(distinct.values())
            limit = stratum_limit(values, rel.max_z, measure)
            entry = StratumStats(
                value=key, samples=len(values), judged=len(values) >= rel.min_samples,
                median=_round(limit.median), mad=_round(limit.mad),
            )  # fmt: skip
            if entry.judged:
                entry.threshold = _round(limit.threshold)
                for i in indices:
                    value = _measure_of(records[i], name, measure)
                    assert value is not None
                    if not is_outlier(value, limit, measure):
                        continue
                    entry.outliers += 1
                    action = "flag" if published[i] else rel.action
                    z = robust_z(_judged(value, measure), limit.centre, limit.sigma)
                    detail = (
                        f"{measure.column} {value:.3f} {'below' if measure.below else 'above'} "
                        f"{limit.threshold:.3f} for {rel.by}={key} (median {limit.median:.3f}, "
                        f"robust z {z:.1f})"
                    )
                    judgement.verdicts.setdefault(i, []).append(Verdict(name, action, detail))
                    if action == "flag":
                        stats.flagged += 1
                    else:
                        stats.dropped += 1
            else:
                stats.unjudged_strata += 1
            stats.outliers += entry.outliers
            strata.append(entry)
        strata.sort(key=lambda s: (-s.samples, s.value))
        stats.strata = strata[:STRATA_REPORTED]
        rest = strata[STRATA_REPORTED:]
        stats.other_strata = len(rest)
        stats.other_samples = sum(s.samples for s in rest)
        stats.other_outliers = sum(s.outliers for s in rest)
        judgement.stats.append(stats)
    return judgement


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def apply(
    rows: Sequence[SampleRow], candidates: list[int], judgement: Judgement, stats: DatasetStats
) -> list[int]:
    """Write the verdicts of ``judge`` (made on ``[rows[i] for i in candidates]``) into the rows: flags
    ``relative:GATE``; a new sample with a reject or quarantine verdict leaves (quarantine beats reject,
    as for absolute gates; reason ``relative:GATE``). Returns the candidates that stay."""
    staying: list[int] = []
    for position, index in enumerate(candidates):
        row = rows[index]
        verdicts = judgement.verdicts.get(position, [])
        flags = [Flag.relative(v.gate) for v in verdicts if v.action == "flag"]
        row["flags"] = [*(row.get("flags") or []), *flags]
        decisive = next(
            (v for action in ("quarantine", "reject") for v in verdicts if v.action == action), None
        )
        if decisive is None:
            staying.append(index)
            continue
        reason = FLAG_PREFIX + decisive.gate
        row["reason"], row["detail"] = reason, decisive.detail
        if decisive.action == "quarantine":
            row["disposition"] = Disposition.QUARANTINED
            stats.quarantined[reason] = stats.quarantined.get(reason, 0) + 1
        else:
            row["disposition"] = Disposition.REJECTED
            row.pop("blob_uri", None)  # rejected bytes are not kept
            stats.rejected[reason] = stats.rejected.get(reason, 0) + 1
    return staying
