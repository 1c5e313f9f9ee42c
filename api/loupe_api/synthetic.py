"""Synthetic data kept honest: which samples are synthetic, how much of a version they may be, where they
may go, and how far they are from the real samples."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from loupe_api.common import ApiModel

EvalSplits = Literal["realOnly", "mixed"]
SYNTHETIC_FIELD_PATTERN = r"^metadata\.[A-Za-z0-9_][A-Za-z0-9_.-]*$"
CAP_REASON = "synthetic_cap"  # rejected rows left out by maxRatio
EVAL_REASON = "synthetic_in_eval"  # a synthetic copy grouped with a real sample of val or test


class SyntheticSpec(ApiModel):
    """Synthetic samples (rendered, generated): marked by their IngestSource (spec.synthetic: true) or by a
    metadata field; capped, kept out of evaluation splits and compared with the real samples."""

    field: str | None = Field(
        default=None,
        description="metadata.NAME: a metadata field whose value true, yes, on, 1 or synthetic (any case) "
        "marks a sample synthetic, besides every sample of an IngestSource with synthetic: true.",
        json_schema_extra={"pattern": SYNTHETIC_FIELD_PATTERN},
    )
    max_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Largest share of synthetic samples in the version (0-1). Synthetic samples beyond it "
        "are left out with reason synthetic_cap: those already published are kept first, the rest in a "
        "seed-determined order (spec.splits.seed), so the choice is stable across versions. Empty: no cap.",
    )
    eval_splits: EvalSplits = Field(
        default="realOnly",
        description="realOnly: synthetic samples go to train only, val and test are real (their shares "
        "are of the real samples); mixed: synthetic samples are split like real ones.",
    )
    compare: bool = Field(
        default=True,
        description="Compare synthetic with real samples (quality metrics, labels, embeddings when "
        "computed) and record the gap in words.",
    )

    @field_validator("field")
    @classmethod
    def _metadata_field(cls, value: str | None) -> str | None:
        if value is not None and not re.match(SYNTHETIC_FIELD_PATTERN, value):
            raise ValueError(f"{value!r} is not metadata.NAME (e.g. metadata.synthetic)")
        return value

    def metadata_name(self) -> str | None:
        """The metadata field name of ``field`` (without the metadata. prefix)."""
        return self.field.removeprefix("metadata.") if self.field else None


class SyntheticCounts(ApiModel):
    """Real and synthetic samples of a version, or of one of its splits or classes."""

    real: int = Field(default=0, description="Real samples.")
    synthetic: int = Field(default=0, description="Synthetic samples.")
    ratio: float = Field(default=0.0, description="Synthetic share: synthetic / (real + synthetic).")


class SyntheticGap(ApiModel):
    """How synthetic samples differ from real ones on one measure."""

    measure: str = Field(description="quality.<metric>, labels or embeddings.")
    significant: bool = Field(description="Whether the difference is beyond chance at these sample sizes.")
    text: str = Field(description="The gap in words.")
    real_median: float | None = Field(default=None, description="Median of the real samples (metrics).")
    synthetic_median: float | None = Field(default=None, description="Median of the synthetic samples.")
    psi: float | None = Field(default=None, description="Population stability index, real as reference.")
    ks: float | None = Field(default=None, description="Kolmogorov-Smirnov statistic (metrics).")
    threshold: float | None = Field(
        default=None, description="The statistic above which the gap counts as significant."
    )
    statistic: float | None = Field(
        default=None,
        description="labels: total variation distance; embeddings: nearest-neighbour two-sample "
        "statistic (0: mixed as chance, 1: fully separate).",
    )


class SyntheticSummary(ApiModel):
    """Synthetic samples of a version: counts overall, per split and per class, and the gap to real ones."""

    overall: SyntheticCounts = Field(description="Counts over the version.")
    splits: dict[str, SyntheticCounts] = Field(default_factory=dict, description="Counts per split.")
    classes: dict[str, SyntheticCounts] = Field(default_factory=dict, description="Counts per label.")
    capped: int = Field(
        default=0, description="Synthetic samples left out by maxRatio (reason synthetic_cap)."
    )
    left_out_of_eval: int = Field(
        default=0,
        description="Synthetic copies left out because their group is in val or test (reason synthetic_in_eval).",
    )
    max_ratio: float | None = Field(default=None, description="The cap in force.")
    eval_splits: EvalSplits = Field(default="realOnly", description="Where synthetic samples may go.")
    gaps: list[SyntheticGap] = Field(default_factory=list, description="The gap per measure.")
    embedding: float | None = Field(
        default=None, description="Embedding two-sample statistic of synthetic against real (0: same)."
    )
    verdict: str = Field(default="", description="The gap in one sentence.")
