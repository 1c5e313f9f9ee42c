"""Residency and access rules: where a source's data may be stored, what it may be used for, and how
sensitive it is; and what a Dataset declares against them.

An IngestSource declares ``residency`` (a jurisdiction or region label), ``allowedUses`` and
``classification``; a Dataset declares ``storage.region`` (where its store lives), ``use`` (what it
serves) and ``access`` (the highest classification it may hold, and whether a violation leaves the
source's samples out or refuses the version). loupe_workers.curation.access applies the rules:

1. residency: a store outside a source's residency refuses the run before anything is listed or copied
   (reason ``ResidencyViolation``). Labels are hierarchical by ``-``: residency ``eu`` contains the
   regions ``eu``, ``eu-west-1`` and ``eu-central-1``; ``eu-west-1`` contains only itself (and
   ``eu-west-1-...``). A store whose region is not declared is outside every residency.
2. use: a source whose ``allowedUses`` is not empty and does not name the dataset's ``use`` is a
   violation (rule ``use_not_allowed``); a dataset without ``use`` reading such a source is refused.
3. classification: a source above the dataset's ``access.maxClassification`` is a violation (rule
   ``classification_above_maximum``). Levels are ordered public < internal < confidential < restricted.

A violation of 2 or 3 either leaves every sample of the source out, each a rejected row with the rule
as its reason (``access.onViolation: exclude``, the default) or refuses the run (``refuse``: reasons
``UseNotAllowed`` / ``ClassificationNotAllowed``); either way the current version stays intact.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from loupe_api.common import ApiModel

Use = Literal["training", "evaluation", "research"]
ALL_USES: tuple[Use, ...] = ("training", "evaluation", "research")
Classification = Literal["public", "internal", "confidential", "restricted"]
CLASSIFICATION_LEVELS: tuple[Classification, ...] = ("public", "internal", "confidential", "restricted")
ViolationAction = Literal["exclude", "refuse"]
AccessRule = Literal["use_not_allowed", "classification_above_maximum"]
USE_NOT_ALLOWED: AccessRule = "use_not_allowed"
CLASSIFICATION_ABOVE_MAXIMUM: AccessRule = "classification_above_maximum"
# RunError / Degraded condition reasons
RESIDENCY_VIOLATION = "ResidencyViolation"
REFUSAL_REASONS: dict[AccessRule, str] = {
    USE_NOT_ALLOWED: "UseNotAllowed",
    CLASSIFICATION_ABOVE_MAXIMUM: "ClassificationNotAllowed",
}

_LABEL_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"


def _check_label(text: str) -> str:
    if not re.match(_LABEL_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a region label: lowercase letters and digits in parts joined by -, "
            "e.g. eu, us, de or eu-west-1"
        )
    return text


# A jurisdiction or region label; the pattern follows the validator, so WithJsonSchema puts it in the CRD.
RegionLabel = Annotated[
    str,
    AfterValidator(_check_label),
    WithJsonSchema({"type": "string", "pattern": _LABEL_PATTERN}),
]


def classification_rank(level: Classification) -> int:
    return CLASSIFICATION_LEVELS.index(level)


def region_within(region: str, residency: str) -> bool:
    """Whether a store in ``region`` lies within ``residency``: the same label, or one of its sub-labels
    (``eu`` contains ``eu-west-1``). Case is ignored."""
    region, residency = region.lower(), residency.lower()
    return region == residency or region.startswith(residency + "-")


class AccessSpec(ApiModel):
    """What the dataset may hold, and what happens to samples of a source whose rules forbid it."""

    on_violation: ViolationAction = Field(
        default="exclude",
        description="A source whose allowedUses do not include spec.use, or whose classification is above "
        "maxClassification: exclude (its samples are left out, each a rejected row with reason "
        "use_not_allowed or classification_above_maximum) or refuse (the run fails with reason "
        "UseNotAllowed or ClassificationNotAllowed; the current version stays).",
    )
    max_classification: Classification = Field(
        default="restricted",
        description="The most sensitive source classification the dataset may hold "
        "(public < internal < confidential < restricted; default restricted: every level).",
    )


class SourceAccess(ApiModel):
    """One source's rules and what the version did with its samples."""

    source: str = Field(description="IngestSource name.")
    residency: str | None = Field(default=None, description="The source's residency (none: anywhere).")
    classification: Classification = Field(description="The source's classification.")
    allowed_uses: list[Use] = Field(
        default_factory=list, description="The source's allowed uses (empty: any use)."
    )
    decision: Literal["included", "excluded"] = Field(
        description="included: its samples were curated as usual; excluded: every one was left out."
    )
    rules: list[AccessRule] = Field(default_factory=list, description="The rules the source violated.")
    detail: str = Field(default="", description="Why, in words (names the source and the rule).")
    samples: int = Field(default=0, description="Samples of the source the decision applied to.")


class AccessStats(ApiModel):
    """The residency and access decisions of one version, per source."""

    use: Use | None = Field(default=None, description="spec.use of the version.")
    store_region: str | None = Field(default=None, description="Region of the store the version is in.")
    max_classification: Classification = Field(description="spec.access.maxClassification.")
    on_violation: ViolationAction = Field(description="spec.access.onViolation.")
    sources: list[SourceAccess] = Field(default_factory=list, description="Per source, sorted by name.")
    excluded: int = Field(default=0, description="Samples left out by access rules.")
