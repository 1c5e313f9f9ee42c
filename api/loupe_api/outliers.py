"""Dataset-relative quality gates: the spec section and the per-stratum statistics stored with a version.

A gate's absolute threshold says what is blurry for any camera; the ``relative`` section of a gate says
what is blurry *for this camera* (or site, or any metadata field): a sample whose stored measure is a
robust outlier of its own stratum. The math lives in ``loupe_workers.curation.outliers`` (pure, no I/O).
"""

from __future__ import annotations

from pydantic import Field

from loupe_api.common import ApiModel, GateAction

# what a stratum key may name: the source, the label, the EXIF camera (make and model, read from the stored
# EXIF of every record whatever the source's metadata settings) or any metadata field
STRATUM_KEY_PATTERN = r"^(source|label|camera|metadata\.[A-Za-z0-9_.-]+)$"
RELATIVE_MIN_SAMPLES_FLOOR = 5  # below this a median and a MAD say nothing
STRATA_REPORTED = 100  # strata listed per gate in a version record (the largest); the rest are summed


class RelativeGate(ApiModel):
    """Flag a sample whose measure is an outlier for its own stratum: robust z-score
    0.6745 (x - median) / MAD against the stratum's median and MAD, in the gate's direction only
    (blur: too soft, noise: too grainy, ...). The action defaults to flag: a relative verdict moves when
    other samples arrive, so only samples new in a version are ever dropped by it (reject or
    quarantine); a sample already published in the parent version is flagged instead, never dropped."""

    by: str = Field(
        pattern=STRATUM_KEY_PATTERN,
        description="Stratum key: source, label, camera (EXIF make and model) or metadata.FIELD "
        "(e.g. metadata.camera). Samples without a value for it are not judged.",
    )
    max_z: float = Field(
        default=3.5, gt=0, description="Robust z-score beyond which a sample is an outlier of its stratum."
    )
    min_samples: int = Field(
        default=20,
        ge=RELATIVE_MIN_SAMPLES_FLOOR,
        description="Strata with fewer distinct samples than this are not judged (reported as such).",
    )
    action: GateAction = Field(
        default="flag",
        description="flag (default), reject or quarantine. reject and quarantine only drop samples new "
        "in this version; a published sample that is an outlier is flagged.",
    )


class StratumStats(ApiModel):
    """The statistics of one stratum of one relative gate."""

    value: str = Field(description="The stratum key's value.")
    samples: int = Field(description="Distinct samples (by content) with a measure in the stratum.")
    judged: bool = Field(description="Whether the stratum had minSamples or more and was judged.")
    median: float | None = Field(default=None, description="Median of the measure.")
    mad: float | None = Field(default=None, description="Median absolute deviation of the measure.")
    threshold: float | None = Field(
        default=None, description="The measure, in its own units, beyond which a sample is an outlier."
    )
    outliers: int = Field(default=0, description="Samples beyond the threshold (flagged or dropped).")


class RelativeGateStats(ApiModel):
    """Per-stratum statistics of one gate's relative section, as they decided one version."""

    gate: str = Field(description="The gate (blur, dark, bright, noise, low_contrast).")
    measure: str = Field(description="The stored per-sample measure judged.")
    direction: str = Field(description="below or above: the side an outlier lies on.")
    by: str = Field(description="The stratum key.")
    max_z: float = Field(description="The robust z-score limit.")
    min_samples: int = Field(description="The smallest judged stratum.")
    action: GateAction = Field(description="The action on new samples.")
    strata: list[StratumStats] = Field(
        default_factory=list, description=f"The largest strata (at most {STRATA_REPORTED}), largest first."
    )
    other_strata: int = Field(default=0, description="Strata left out of the list.")
    other_samples: int = Field(default=0, description="Samples of the strata left out.")
    other_outliers: int = Field(default=0, description="Outliers of the strata left out.")
    unjudged_strata: int = Field(default=0, description="Strata smaller than minSamples (all strata).")
    missing: int = Field(default=0, description="Samples without a value for the key (not judged).")
    outliers: int = Field(default=0, description="Outliers in all strata.")
    flagged: int = Field(default=0, description="Outliers kept with the flag relative:GATE.")
    dropped: int = Field(default=0, description="New outliers rejected or quarantined.")
