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


def class_key(name: str) -> str:
    """The name two class spellings are compared by: case-folded, without whitespace, ``_`` or ``-``."""
    return _ALIAS_NOISE.sub("", name).casefold()


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
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
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
