"""One taxonomy across sources: ``spec.labels`` of a Dataset, and what each version records of it.

Sources name their classes as their annotators did ("Cat", "kitty", "cat"); ``spec.labels.mapping``
maps each source's class names to the dataset's classes, and ``spec.labels.unmapped`` says what
happens to a sample whose source class is not mapped. How a source class name is resolved, in
order (the first that matches wins; loupe_workers.curation.taxonomy applies it):

1. the source's own mapping (``mapping.<source>``): the exact name, then by alias;
2. the shared mapping (``mapping."*"``): the exact name, then by alias;
3. the dataset's classes (``classes``, or when empty every mapping target): the exact name, then by
   alias, giving the class's own spelling.

An alias match compares ``class_key`` of the names: case-insensitive, and blind to whitespace,
``_`` and ``-`` ("Golden Retriever", "golden_retriever" and "GoldenRetriever" are one name). A source
mapping is applied before the shared one so that one source can override it. A spec with no
``classes`` and no ``mapping`` changes nothing (every label stays as the source names it).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from loupe_api.common import ApiModel

UnmappedAction = Literal["keep", "unknown", "drop", "refuse"]
ALL_SOURCES = "*"  # the key of the shared mapping, applied to every source
UNKNOWN_CLASS = "unknown"  # what unmapped: unknown labels an unmapped class with
UNMAPPED_REASON = "unmapped_label"  # rejection reason of a sample left out by unmapped: drop

_ALIAS_NOISE = re.compile(r"[\s_\-]+")
# spec.labels.golden as a metadata tag. A string, not a {source|tag} object: a CRD's structural schema
# cannot say "string or object", and "=" cannot occur in a source (Kubernetes object) name.
GOLDEN_TAG_PREFIX = "metadata."
_GOLDEN_TAG = re.compile(r"^metadata\.([A-Za-z0-9_][A-Za-z0-9_.-]*)=(.*\S.*)$")


def class_key(name: str) -> str:
    """The name two class spellings are compared by: case-folded, without whitespace, ``_`` or ``-``."""
    return _ALIAS_NOISE.sub("", name).casefold()


LabelErrorMethod = Literal["neighbours", "predictions", "both"]


class LabelErrorsSpec(ApiModel):
    """Label-error candidates without a second annotator: samples whose label disagrees with their
    neighbourhood in embedding space, or with a confident imported prediction (confident learning)."""

    enabled: bool = Field(
        default=False,
        description="Find label-error candidates in every version (embeds the samples with "
        "spec.embedding.model, even when spec.embedding is off) and send them to the review queue.",
    )
    method: LabelErrorMethod = Field(
        default="both",
        description="neighbours (the k nearest samples by embedding), predictions (imported predictions, "
        "confident learning: another class above its per-class threshold beats the label) or both.",
    )
    k: int = Field(default=10, ge=1, le=100, description="Neighbours each labelled sample is compared with.")
    min_score: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Smallest score kept: 1 minus the similarity-weighted share of the sample's own label "
        "among its neighbours, or the margin by which a confident prediction beats the label.",
    )
    max_candidates: int = Field(
        default=200, ge=1, le=100_000, description="Candidates kept per version, highest score first."
    )


class LabelErrorStats(ApiModel):
    """What the label-error search found in one version (absent when spec.labels.errors is off)."""

    method: LabelErrorMethod = Field(description="spec.labels.errors.method of the version.")
    k: int = Field(default=10, description="spec.labels.errors.k of the version.")
    min_score: float = Field(default=0.5, description="spec.labels.errors.minScore of the version.")
    max_candidates: int = Field(default=200, description="spec.labels.errors.maxCandidates of the version.")
    checked: int = Field(default=0, description="Labelled samples with an embedding that were compared.")
    candidates: int = Field(default=0, description="Candidates kept (at most maxCandidates).")
    uri: str = Field(default="", description="Key of the candidates file (Parquet) in the store.")


class LabelsSpec(ApiModel):
    """The dataset's classes, how each source's class names map to them, and what happens to a class
    that is not mapped."""

    classes: list[str] = Field(
        default_factory=list,
        description="The dataset's taxonomy. When given, every mapping target must be one of them and a "
        "source class that names one (exactly or by alias) needs no mapping. Empty: the mapping targets.",
    )
    mapping: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per source name (or * for every source): source class -> dataset class. A source's "
        "own mapping wins over *. Names match exactly first, then ignoring case, whitespace, _ and -.",
    )
    unmapped: UnmappedAction = Field(
        default="keep",
        description="A sample whose class (or a box's class) is not mapped: keep (its source class "
        "stays, counted), unknown (labelled unknown), drop (left out, reason unmapped_label) or refuse "
        "(the run fails with reason UnmappedLabels, listing the classes; the current version stays).",
    )
    # label QA across label sets (loupe_api.label_qa): each source labelling the same bytes is one set
    golden: str | None = Field(
        default=None,
        min_length=1,
        description="Ground truth: a source name (its labels are truth wherever it labels a sample), or a "
        "metadata tag metadata.NAME=VALUE (the samples whose metadata carries it are the golden set, and "
        "the label of the source whose copy carries the tag is truth; VALUE compares ignoring case). The "
        "golden label wins the consensus, and every other source's accuracy (precision, recall per class) "
        "is measured against it.",
    )
    min_agreement: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Floor of the label sets' kappa (Cohen's for two sets, Fleiss' for more; the box "
        "agreement when no sample has two classes): below it the version is refused (reason "
        "LabelAgreementTooLow) and the current version stays. Empty: no floor.",
    )
    box_iou: float | None = Field(  # None (0.5) keeps specs written before it at the same digest
        default=None,
        gt=0,
        le=1,
        description="IoU at which two label sets' boxes of one class match (box agreement, consensus "
        "boxes). Empty: 0.5.",
    )
    errors: LabelErrorsSpec = Field(
        default_factory=LabelErrorsSpec,
        description="Label-error candidates from embedding neighbours and imported predictions (off by default).",
    )

    @field_validator("golden")
    @classmethod
    def _golden_tag_form(cls, golden: str | None) -> str | None:
        if golden is not None and golden.startswith(GOLDEN_TAG_PREFIX) and not _GOLDEN_TAG.match(golden):
            raise ValueError(
                f"golden {golden!r} is neither a source name nor a tag metadata.NAME=VALUE "
                "(e.g. metadata.reviewed=true)"
            )
        return golden

    def golden_tag(self) -> tuple[str, str] | None:
        """spec.labels.golden as a metadata tag: (field name, value in lower case), or None."""
        found = _GOLDEN_TAG.match(self.golden or "")
        return (found.group(1), found.group(2).strip().casefold()) if found else None

    def golden_source(self) -> str | None:
        """spec.labels.golden as a source name, or None (no golden set, or a metadata tag)."""
        return None if self.golden is None or self.golden_tag() is not None else self.golden

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for name in classes:
            if not name.strip():
                raise ValueError("a class name is empty")
            first = seen.setdefault(class_key(name), name)
            if first != name or classes.count(name) > 1:
                raise ValueError(
                    f"classes {first!r} and {name!r} are the same class (names ignore case, whitespace, _ and -)"
                )
        return classes

    @field_validator("mapping")
    @classmethod
    def _targets_are_classes(
        cls, mapping: dict[str, dict[str, str]], info: ValidationInfo
    ) -> dict[str, dict[str, str]]:
        classes: list[str] = info.data.get("classes") or []
        for source, table in mapping.items():
            aliases: dict[str, tuple[str, str]] = {}
            for name, target in table.items():
                if classes and target not in classes:
                    raise ValueError(
                        f"{source}.{name} maps to {target!r}, which is not in spec.labels.classes "
                        f"({', '.join(classes)})"
                    )
                first = aliases.setdefault(class_key(name), (name, target))
                if first[1] != target:
                    raise ValueError(
                        f"{source}: {first[0]!r} and {name!r} are the same name (ignoring case, whitespace, "
                        f"_ and -) but map to {first[1]!r} and {target!r}"
                    )
        return mapping

    def active(self) -> bool:
        """Whether the spec maps anything (without classes or a mapping every label stays as it is)."""
        return bool(self.classes or self.mapping)

    def digest(self) -> str:
        """Digest of the taxonomy, mapping and action: versions compare it to tell a mapping change."""
        if not self.active():
            return ""
        # errors finds candidates and renames nothing: it is no mapping change
        # nor do golden, minAgreement and boxIou: a consensus they change shows as relabelled samples
        qa = {"golden", "min_agreement", "box_iou"}
        text = json.dumps(
            self.model_dump(mode="json", by_alias=True, exclude={"errors", *qa}), sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class LabelMappingStats(ApiModel):
    """What the label mapping did in one version (absent when spec.labels maps nothing)."""

    action: UnmappedAction = Field(description="spec.labels.unmapped of the version.")
    mapping_digest: str = Field(description="Digest of spec.labels: a change of it is a mapping change.")
    mapped: int = Field(default=0, description="Samples whose class or a box's class the mapping renamed.")
    unmapped: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Per source, its classes that are not mapped and how many samples carry each.",
    )
    dropped: int = Field(default=0, description="Samples left out for an unmapped class (unmapped: drop).")
    unknown: int = Field(default=0, description="Samples labelled unknown (unmapped: unknown).")
