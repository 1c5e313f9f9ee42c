"""Label QA across several label sets: what a version records of how its label sets agree.

Every source that labels the same bytes contributes one *label set* to that sample, named after the
source (annotators, vendors, model pre-labels). Per version Loupe records (loupe_workers.curation.label_qa
computes it):

- agreement of the sets' classes: Cohen's kappa for two sets, Fleiss' kappa for three or more (the
  sets present on each sample; samples with fewer than two sets are not judged), overall and per class
  (one class against the rest), with the raw share of agreeing pairs and Cohen's kappa of every pair;
- agreement of boxes: per class, boxes of two sets matched greedily at IoU >= ``boxIou`` (default 0.5),
  agreement = matched / (boxes of both - matched), summed over every pair of sets;
- a consensus label per sample (majority vote; the golden set wins where it labels the sample), its
  support (share of the sets agreeing with it) and the samples in disagreement (review queue);
- with ``spec.labels.golden`` (a source, or a metadata tag ``metadata.NAME=VALUE`` marking the samples
  whose tagged copy's labels are truth): accuracy, precision and recall per class of every other set
  against it (the golden set is the reference: agreement leaves it out).

The full figures live in the version record (``labelQa``); the Dataset status carries counts only
(``stats.labelQa``).
"""

from __future__ import annotations

from pydantic import Field

from loupe_api.common import ApiModel

AGREEMENT_REASON = "LabelAgreementTooLow"  # RunError reason of a version refused by spec.labels.minAgreement
DISAGREEMENT = "labelDisagreement"  # review-queue reason of a sample whose label sets disagree


class ClassAgreement(ApiModel):
    """Agreement on one class: that class against all others."""

    kappa: float | None = Field(
        default=None, description="Kappa of the class against the rest (None when no set ever used it)."
    )
    ratings: int = Field(default=0, description="Times a set gave this class on a judged sample.")


class PairAgreement(ApiModel):
    """Cohen's kappa of two label sets on the samples both label."""

    sets: list[str] = Field(description="The two label sets.")
    samples: int = Field(default=0, description="Samples both sets label with a class.")
    agreement: float | None = Field(default=None, description="Share of those samples with the same class.")
    kappa: float | None = Field(default=None, description="Cohen's kappa on them.")


class BoxClassAgreement(ApiModel):
    """IoU-matched box agreement of one class, over every pair of sets on every sample."""

    matched: int = Field(default=0, description="Box pairs matched at IoU >= boxIou.")
    union: int = Field(default=0, description="Boxes of both sets minus the matched pairs.")
    agreement: float | None = Field(default=None, description="matched / union.")


class BoxAgreement(ApiModel):
    """IoU-matched agreement of the sets' boxes."""

    iou: float = Field(description="The IoU at which two boxes of one class match.")
    samples: int = Field(default=0, description="Samples where two or more sets gave boxes.")
    matched: int = Field(default=0, description="Matched box pairs, all classes.")
    union: int = Field(default=0, description="Boxes of both sets minus matched pairs, all classes.")
    agreement: float | None = Field(default=None, description="matched / union over all classes.")
    per_class: dict[str, BoxClassAgreement] = Field(default_factory=dict, description="Per class.")


class ClassAccuracy(ApiModel):
    """How one label set's class compares with the golden set's on one class."""

    support: int = Field(default=0, description="Samples the golden set gives this class.")
    precision: float | None = Field(
        default=None, description="Of the set's samples of this class, the share golden agrees with."
    )
    recall: float | None = Field(
        default=None, description="Of golden's samples of this class, the share the set matches."
    )


class SetAccuracy(ApiModel):
    """One label set against the golden set, on the samples both label."""

    samples: int = Field(default=0, description="Samples labelled by both.")
    accuracy: float | None = Field(default=None, description="Share with the golden class.")
    per_class: dict[str, ClassAccuracy] = Field(default_factory=dict, description="Per golden class.")


class GoldenAccuracy(ApiModel):
    """Accuracy of every other label set against the golden one (spec.labels.golden)."""

    golden: str = Field(description="spec.labels.golden: the golden source, or the metadata tag.")
    samples: int = Field(default=0, description="Samples with a golden class (labelled by the golden set).")
    sets: dict[str, SetAccuracy] = Field(default_factory=dict, description="Per other label set.")


class ConsensusCounts(ApiModel):
    """How the consensus label of each sample was reached (samples with at least one label set)."""

    single: int = Field(default=0, description="Samples labelled by one set only (nothing to agree on).")
    unanimous: int = Field(default=0, description="Samples where every set gives the same class.")
    majority: int = Field(default=0, description="Samples decided by a strict majority of the sets.")
    golden: int = Field(default=0, description="Samples in disagreement decided by the golden set.")
    ties: int = Field(default=0, description="Samples with no majority and no golden label (to review).")


class LabelQaStats(ApiModel):
    """Label QA of one version across its label sets (absent when no sample has two label sets)."""

    sets: list[str] = Field(default_factory=list, description="Label sets (source names) seen on samples.")
    samples: int = Field(default=0, description="Samples with at least one label set.")
    judged: int = Field(default=0, description="Samples with a class from two or more sets.")
    method: str = Field(default="", description="cohen (two sets) or fleiss (three or more).")
    kappa: float | None = Field(default=None, description="Overall kappa of the sets' classes.")
    agreement: float | None = Field(
        default=None, description="Raw agreement: the share of agreeing pairs of sets over judged samples."
    )
    per_class: dict[str, ClassAgreement] = Field(default_factory=dict, description="Kappa per class.")
    pairs: list[PairAgreement] = Field(
        default_factory=list, description="Cohen's kappa of every pair of sets."
    )
    boxes: BoxAgreement | None = Field(default=None, description="Box agreement (when sets give boxes).")
    consensus: ConsensusCounts = Field(
        default_factory=ConsensusCounts, description="How consensus was reached."
    )
    disagreements: int = Field(
        default=0,
        description="Samples (not left out by a gate) whose sets disagree and that the golden set does not "
        "settle: in the review queue as labelDisagreement.",
    )
    golden: GoldenAccuracy | None = Field(default=None, description="Accuracy against spec.labels.golden.")
    min_agreement: float | None = Field(default=None, description="spec.labels.minAgreement of the version.")


class LabelQaCounts(ApiModel):
    """Label QA in the Dataset status: counts only (the figures are in the version record)."""

    sets: int = Field(default=0, description="Label sets seen on samples.")
    judged: int = Field(default=0, description="Samples with a class from two or more sets.")
    disagreements: int = Field(
        default=0, description="Samples whose sets disagree, not settled by the golden set (to review)."
    )
    ties: int = Field(default=0, description="Samples with no majority and no golden label.")
