"""One taxonomy across sources: each sample's labels mapped to the dataset's classes (``spec.labels``).

Pure: a ``Taxonomy`` is compiled once per run from ``LabelsSpec`` and maps one sample's ``LabelSet``
(its class and its boxes' classes) given the source it came from; ``pipeline.curate`` applies it to
the stored rows before any decision that reads labels (stratified splits, health), so a mapping
change re-decides labels without decoding anything again (it is not part of ``processing_key``).
How names resolve (source mapping, then ``*``, then the classes; exact, then by alias) is described in
``loupe_api.labels``.

What happens to a class that resolves to nothing (``spec.labels.unmapped``):

- ``keep`` (the default): the source's class stays as it is; it is counted as unmapped.
- ``unknown``: the class becomes ``unknown`` (in the sample's class and in its boxes).
- ``drop``: the sample is left out: disposition rejected, reason ``unmapped_label``, a detail naming
  the source and the classes (a sample already left out by a gate keeps the gate's reason).
- ``refuse``: the run fails (``RunError`` reason ``UnmappedLabels``) listing per source the unmapped
  classes and how many samples carry each; nothing is committed and the current version stays.

A sample without labels is never unmapped. A sample's class that was the majority of its boxes'
classes (COCO, YOLO) is taken again as the majority of the mapped boxes' classes, as two source
classes may now be one. Counts are per source and class, in samples (a sample carrying a class in
several boxes counts once), over every sample of the dataset (after the sources' metadata filter)
whatever the gates decided of its image: it is the labels that are judged, so a refusal does not
depend on which images happen to be blurry.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loupe_api.labels import (
    ALL_SOURCES,
    UNKNOWN_CLASS,
    UNMAPPED_REASON,
    LabelMappingStats,
    LabelsSpec,
    UnmappedAction,
    class_key,
)
from loupe_workers.ingest.annotate import LabelSet

SHOWN_CLASSES = 10  # unmapped classes named per source in a refusal or detail; the rest are counted


@dataclass(frozen=True)
class Mapped:
    """One sample's labels after the mapping."""

    labels: LabelSet
    unmapped: tuple[str, ...] = ()  # source classes that resolved to nothing (sorted, distinct)
    renamed: bool = False  # the mapping changed a class name (an unmapped class made unknown counts too)
    drop: bool = False  # unmapped: drop leaves this sample out


def _majority(classes: list[str]) -> str | None:
    if not classes:
        return None
    counts = Counter(classes)
    return min(counts, key=lambda c: (-counts[c], c))


class Taxonomy:
    """``spec.labels`` compiled for lookups; ``apply`` maps one sample's labels."""

    def __init__(self, spec: LabelsSpec) -> None:
        self.spec = spec
        self.action: UnmappedAction = spec.unmapped
        self.active = spec.active()
        self._exact = {source: dict(table) for source, table in spec.mapping.items()}
        self._alias = {
            source: {class_key(name): target for name, target in table.items()}
            for source, table in spec.mapping.items()
        }
        targets = list(spec.classes) or sorted({t for table in spec.mapping.values() for t in table.values()})
        self._classes = set(targets)
        self._class_alias = {class_key(c): c for c in targets}

    def resolve(self, source: str, name: str) -> str | None:
        """The dataset class of a source class name, or None when it is not mapped."""
        if not self.active:
            return name
        for table in (source, ALL_SOURCES):
            if name in self._exact.get(table, {}):
                return self._exact[table][name]
            found = self._alias.get(table, {}).get(class_key(name))
            if found is not None:
                return found
        if name in self._classes:
            return name
        return self._class_alias.get(class_key(name))

    def apply(self, source: str, labels: LabelSet) -> Mapped:
        """``labels`` of a sample of ``source`` in the dataset's classes, per ``spec.labels.unmapped``."""
        if not self.active or (labels.label is None and not labels.boxes):
            return Mapped(labels)
        unmapped: set[str] = set()

        def rename(name: str) -> str:
            target = self.resolve(source, name)
            if target is not None:
                return target
            unmapped.add(name)
            return UNKNOWN_CLASS if self.action == "unknown" else name

        boxes: list[dict[str, Any]] = [
            {**box, "class": rename(str(box["class"]))} if "class" in box else dict(box)
            for box in labels.boxes
        ]
        label = labels.label
        if label is not None:
            classes = [str(b["class"]) for b in labels.boxes if "class" in b]
            if classes and label == _majority(classes):  # the boxes' majority: taken again from them
                label = _majority([str(b["class"]) for b in boxes if "class" in b])
            else:
                label = rename(label)
        mapped = LabelSet(label, boxes)
        renamed = mapped.to_json() != labels.to_json()
        return Mapped(mapped, tuple(sorted(unmapped)), renamed, bool(unmapped) and self.action == "drop")


def drop_detail(source: str, classes: tuple[str, ...]) -> str:
    """The detail of a sample left out by unmapped: drop."""
    names = ", ".join(repr(c) for c in classes[:SHOWN_CLASSES])
    more = f" and {len(classes) - SHOWN_CLASSES} more" if len(classes) > SHOWN_CLASSES else ""
    return f"IngestSource {source}: class {names}{more} not mapped by spec.labels (unmapped: drop)"


@dataclass
class Tally:
    """What the mapping did over a run's samples, gathered while curating."""

    taxonomy: Taxonomy
    unmapped: dict[str, Counter[str]] = field(default_factory=dict)
    mapped: int = 0
    dropped: int = 0
    unknown: int = 0

    def add(self, source: str, result: Mapped) -> None:
        """Count one sample of the dataset (after the metadata filter)."""
        if result.renamed:
            self.mapped += 1
        if result.unmapped:
            self.unmapped.setdefault(source, Counter()).update(result.unmapped)
            if self.taxonomy.action == "unknown":
                self.unknown += 1

    def stats(self) -> LabelMappingStats | None:
        """The version's record of the mapping; None when spec.labels maps nothing."""
        if not self.taxonomy.active:
            return None
        return LabelMappingStats(
            action=self.taxonomy.action,
            mapping_digest=self.taxonomy.spec.digest(),
            mapped=self.mapped,
            unmapped={s: dict(sorted(c.items())) for s, c in sorted(self.unmapped.items())},
            dropped=self.dropped,
            unknown=self.unknown,
        )

    def refusal(self) -> str | None:
        """Why unmapped: refuse refuses this run (per source its unmapped classes and counts), or None."""
        if self.taxonomy.action != "refuse" or not self.unmapped:
            return None
        parts = []
        for source, counts in sorted(self.unmapped.items()):
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{name!r} {n}" for name, n in ranked[:SHOWN_CLASSES])
            more = f" and {len(ranked) - SHOWN_CLASSES} more classes" if len(ranked) > SHOWN_CLASSES else ""
            parts.append(f"IngestSource {source}: {shown}{more}")
        return (
            "unmapped labels (spec.labels.unmapped: refuse): "
            + "; ".join(parts)
            + ". Map them in spec.labels.mapping or choose another action; the current version stays"
        )


__all__ = ["UNMAPPED_REASON", "Mapped", "Tally", "Taxonomy", "drop_detail"]
