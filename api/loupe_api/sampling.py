"""Budgeted sampling: keep at most N samples (overall, per class, per stratum), chosen by a strategy.

What is left out is not deleted: it becomes a rejected row with reason ``sampling`` (exportable as "to
label next"), and a later spec with a larger budget brings it back. Selection is deterministic for a
spec and sticky: while ``spec.sampling`` is unchanged, a sample selected in the parent version stays
selected. The algorithms live in ``loupe_workers.curation.sampling`` (pure, no I/O).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from loupe_api.common import ApiModel, cel_rules
from loupe_api.outliers import STRATUM_KEY_PATTERN

SAMPLING_REASON = "sampling"  # the reason of every left-out row
SamplingStrategy = Literal["random", "weighted", "kCenter", "uniqueness", "hardest"]
EMBEDDING_STRATEGIES: tuple[SamplingStrategy, ...] = ("kCenter", "uniqueness")
GROUPS_REPORTED = 100  # classes or strata listed in a version record (the largest); the rest are summed
WEIGHT_FIELD_PATTERN = r"^metadata\.[A-Za-z0-9_.-]+$"


class StratumCap(ApiModel):
    """At most ``max`` samples for each value of a stratum key (a camera, a site, a source)."""

    by: str = Field(
        pattern=STRATUM_KEY_PATTERN,
        description="Stratum key: source, label, camera (EXIF make and model) or metadata.FIELD. Samples "
        "without a value share one stratum of their own.",
    )
    max: int = Field(ge=1, description="Most samples selected per value of the key.")


class SamplingSpec(ApiModel):
    """Keep a budget of samples, chosen by a strategy; the others are left out with reason sampling (not
    deleted: they can be exported as "to label next", and a larger budget brings them back). While this
    section is unchanged, every sample selected in the parent version stays selected."""

    model_config = cel_rules(
        (
            "has(self.maxSamples) || has(self.perClass) || has(self.perStratum)",
            "set maxSamples, perClass or perStratum",
        ),
        (
            "!has(self.strategy) || self.strategy != 'weighted' || has(self.weightField)",
            "strategy weighted needs weightField",
        ),
        (
            "!has(self.strategy) || self.strategy != 'hardest' || has(self.predictions)",
            "strategy hardest needs predictions",
        ),
    )

    max_samples: int | None = Field(default=None, ge=1, description="Most samples selected overall.")
    per_class: int | None = Field(
        default=None,
        ge=1,
        description="Most samples selected per label (unlabelled samples count as one class).",
    )
    per_stratum: StratumCap | None = Field(
        default=None, description="Most samples selected per value of a stratum key."
    )
    strategy: SamplingStrategy = Field(
        default="random",
        description="Which samples fill the budget: random (seeded, by a hash of each sample id, so a "
        "larger budget selects a superset), weighted (random, with probability proportional to weightField), "
        "kCenter (greedy farthest-point on embeddings: covers the embedding space; needs spec.embedding), "
        "uniqueness (farthest from their nearest neighbours first, as FiftyOne's uniqueness; needs "
        "spec.embedding) or hardest (lowest prediction confidence first; needs predictions).",
    )
    weight_field: str | None = Field(
        default=None,
        pattern=WEIGHT_FIELD_PATTERN,
        description="weighted: metadata.FIELD holding each sample's weight (a number >= 0).",
    )
    default_weight: float = Field(
        default=1.0,
        ge=0,
        description="weighted: the weight of a sample whose field is missing or not a number.",
    )
    predictions: str | None = Field(
        default=None,
        min_length=1,
        description="hardest: a predictions file (JSON lines or CSV with sample, label, confidence; the "
        "sample named by id, sha256, key or URI), a path relative to the spec file or absolute. Samples "
        "without a prediction come after every predicted one.",
    )
    seed: int = Field(default=0, description="Seed of the random order (ties of every strategy).")

    @model_validator(mode="after")
    def _consistent(self) -> SamplingSpec:
        if self.max_samples is None and self.per_class is None and self.per_stratum is None:
            raise ValueError(
                "set maxSamples, perClass or perStratum (a sampling section without a budget keeps everything)"
            )
        if self.strategy == "weighted" and self.weight_field is None:
            raise ValueError(
                "strategy weighted needs weightField (metadata.FIELD holding each sample's weight)"
            )
        if self.strategy != "weighted" and self.weight_field is not None:
            raise ValueError(f"weightField is read by strategy weighted only (strategy is {self.strategy})")
        if self.strategy == "hardest" and self.predictions is None:
            raise ValueError("strategy hardest needs predictions (a file of sample, label, confidence)")
        if self.strategy != "hardest" and self.predictions is not None:
            raise ValueError(f"predictions are read by strategy hardest only (strategy is {self.strategy})")
        return self

    def digest(self) -> str:
        """Digest of the section: a version whose parent was sampled with the same digest keeps the
        parent's selection."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class SamplingCounts(ApiModel):
    """What sampling did, in counts (the Dataset's status; the version record has the details)."""

    strategy: SamplingStrategy = Field(description="The strategy.")
    candidates: int = Field(description="Samples that passed gates and dedup, before sampling.")
    selected: int = Field(description="Samples selected (in the version).")
    left_out: int = Field(description="Samples left out with reason sampling.")
    coverage_radius: float | None = Field(
        default=None,
        description="kCenter: the largest cosine distance from a candidate to its nearest selected sample.",
    )


class SamplingGroup(ApiModel):
    """Selected and left-out samples of one class or stratum."""

    value: str = Field(description="The class or stratum value ('' for none).")
    selected: int = Field(description="Samples selected.")
    left_out: int = Field(description="Samples left out.")


class SamplingSummary(ApiModel):
    """How one version was sampled (stored in its record)."""

    strategy: SamplingStrategy = Field(description="The strategy.")
    spec_digest: str = Field(description="Digest of spec.sampling: the next version keeps this selection "
                             "while it is unchanged.")  # fmt: skip
    seed: int = Field(default=0, description="The seed.")
    max_samples: int | None = Field(default=None, description="The overall budget.")
    per_class: int | None = Field(default=None, description="The per-class budget.")
    per_stratum_by: str | None = Field(default=None, description="The stratum key of perStratum.")
    per_stratum: int | None = Field(default=None, description="The per-stratum budget.")
    candidates: int = Field(description="Samples that passed gates and dedup, before sampling.")
    selected: int = Field(description="Samples selected.")
    left_out: int = Field(description="Samples left out with reason sampling.")
    kept_from_parent: int = Field(
        default=0, description="Selected samples that were selected in the parent under the same spec."
    )
    coverage_radius: float | None = Field(
        default=None,
        description="kCenter: the largest cosine distance from a candidate to its nearest selected sample.",
    )
    classes: list[SamplingGroup] = Field(
        default_factory=list, description=f"Per class, the largest {GROUPS_REPORTED} first."
    )
    strata: list[SamplingGroup] = Field(
        default_factory=list, description=f"Per stratum of perStratum, the largest {GROUPS_REPORTED} first."
    )

    def counts(self) -> SamplingCounts:
        return SamplingCounts(
            strategy=self.strategy,
            candidates=self.candidates,
            selected=self.selected,
            left_out=self.left_out,
            coverage_radius=self.coverage_radius,
        )
