"""Residency and access rules (pure): which sources a dataset may store and use, decided once per run
from the specs, before anything is listed or copied (loupe_api.access documents the rules).

A run asks ``AccessRules.refusal`` first: a store outside a source's residency, a source with
allowedUses read by a dataset that declares no use, or (``onViolation: refuse``) any violation fails
the run there, so nothing is written. With ``onViolation: exclude`` the listed objects of a violating
source are marked (``mark``) with the rule as their problem: the processing stage records them unread
(no byte of them is copied into the store) and curation rejects them with the rule as the reason.
``stats`` is what the version record keeps; ``withhold`` is what exports and the Python API apply to a
version's rows for another use than the one the dataset declared.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from loupe_api.access import (
    CLASSIFICATION_ABOVE_MAXIMUM,
    REFUSAL_REASONS,
    RESIDENCY_VIOLATION,
    USE_NOT_ALLOWED,
    AccessRule,
    AccessSpec,
    AccessStats,
    SourceAccess,
    Use,
    classification_rank,
    region_within,
)
from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.samples import Disposition, SampleRow

ACCESS_RULES: frozenset[str] = frozenset({USE_NOT_ALLOWED, CLASSIFICATION_ABOVE_MAXIMUM})


class Listed(Protocol):
    """What ``mark`` needs of a listed object (loupe_workers.ingest.sources.ListedObject)."""

    @property
    def source(self) -> str: ...

    @property
    def problem(self) -> str | None: ...


L = TypeVar("L", bound=Listed)
R = TypeVar("R", bound=SampleRow)  # a manifest row (or a CurationRow), handed back in its own type


@dataclass(frozen=True)
class Refusal:
    """Why the run must not start: a Degraded reason and a message that names the source and the rule."""

    reason: str
    message: str


@dataclass(frozen=True)
class Violation:
    source: str
    rules: tuple[AccessRule, ...]
    detail: str


def uses_text(uses: Sequence[str]) -> str:
    """``training only`` / ``training and research``: how a source's allowed uses read in a message."""
    if len(uses) == 1:
        return f"{uses[0]} only"
    return f"{', '.join(uses[:-1])} and {uses[-1]}"


def residency_problem(name: str, source: IngestSourceSpec, store_region: str | None) -> str | None:
    """Why a store in ``store_region`` may not hold the source's data, or None."""
    if source.residency is None:
        return None
    if store_region is None:
        return (
            f"IngestSource {name} must stay in {source.residency} (spec.residency), but the store declares "
            f"no region: set spec.storage.region to a region within {source.residency}; nothing was copied"
        )
    if region_within(store_region, source.residency):
        return None
    return (
        f"IngestSource {name} must stay in {source.residency} (spec.residency), but the store is in "
        f"{store_region} (spec.storage.region): use a store within {source.residency}; nothing was copied"
    )


def violation(name: str, source: IngestSourceSpec, spec: DatasetSpec) -> Violation | None:
    """The use and classification rules the source breaks for this dataset, or None."""
    rules: list[AccessRule] = []
    details: list[str] = []
    if source.allowed_uses and spec.use is not None and spec.use not in source.allowed_uses:
        rules.append(USE_NOT_ALLOWED)
        details.append(
            f"source {name} allows {uses_text(source.allowed_uses)} (spec.allowedUses), "
            f"the dataset serves {spec.use} (spec.use)"
        )
    maximum = spec.access.max_classification
    if classification_rank(source.classification) > classification_rank(maximum):
        rules.append(CLASSIFICATION_ABOVE_MAXIMUM)
        details.append(
            f"source {name} is {source.classification} (spec.classification), above the dataset's "
            f"maximum {maximum} (spec.access.maxClassification)"
        )
    if not rules:
        return None
    return Violation(name, tuple(rules), "; ".join(details))


class AccessRules:
    """The decisions of one run: per source included or excluded, or a refusal of the whole run."""

    def __init__(
        self, spec: DatasetSpec, sources: Mapping[str, IngestSourceSpec], store_region: str | None
    ) -> None:
        self.spec = spec
        self.sources = dict(sorted(sources.items()))
        self.store_region = store_region
        found = (violation(name, src, spec) for name, src in self.sources.items())
        self.violations: dict[str, Violation] = {v.source: v for v in found if v is not None}

    def refusal(self) -> Refusal | None:
        """Why the run is refused before anything is listed or written, or None."""
        for name, source in self.sources.items():
            problem = residency_problem(name, source, self.store_region)
            if problem is not None:
                return Refusal(RESIDENCY_VIOLATION, problem)
        for name, source in self.sources.items():
            if source.allowed_uses and self.spec.use is None:
                return Refusal(
                    REFUSAL_REASONS[USE_NOT_ALLOWED],
                    f"IngestSource {name} allows {uses_text(source.allowed_uses)} (spec.allowedUses), but "
                    "the dataset declares no use: set spec.use (training, evaluation or research)",
                )
        if self.spec.access.on_violation == "refuse" and self.violations:
            first = next(iter(self.violations.values()))
            others = len(self.violations) - 1
            more = f" (and {others} more source{'s' if others > 1 else ''})" if others else ""
            return Refusal(
                REFUSAL_REASONS[first.rules[0]],
                f"{first.detail}{more}; spec.access.onViolation is refuse, so no version was built: "
                "remove the source, or set onViolation: exclude to leave its samples out",
            )
        return None

    def excluded(self, source: str) -> Violation | None:
        return self.violations.get(source)

    def mark(self, listed: Iterable[L]) -> list[L]:
        """The listing with every object of an excluded source marked with its first rule (never read)."""
        out: list[L] = []
        for obj in listed:
            found = self.violations.get(obj.source)
            if found is not None and obj.problem is None:
                obj = dataclasses.replace(obj, problem=found.rules[0], detail=found.detail)  # type: ignore[type-var]
            out.append(obj)
        return out

    def reusable(self, rows: Iterable[R]) -> list[R]:
        """The previous version's rows a run may carry by (source, key, ETag): not those of a source
        excluded now (they are recorded unread instead), nor those an access rule left out unread
        before (a lifted rule must read them)."""
        return [
            r
            for r in rows
            if r.get("fail_reason") not in ACCESS_RULES and r.get("source") not in self.violations
        ]

    def stats(self, rows: Iterable[SampleRow]) -> AccessStats | None:
        """What the version record keeps: per source its rules and decision, and the samples it covered.
        None when no source declares a rule and the dataset declares nothing (nothing to record)."""
        if not self._declared():
            return None
        excluded: Counter[str] = Counter()
        accepted: Counter[str] = Counter()
        for row in rows:
            if row.get("reason") in ACCESS_RULES:
                excluded[str(row["source"])] += 1
            elif row.get("disposition") == Disposition.ACCEPTED:
                accepted[str(row["source"])] += 1
        entries = []
        for name, source in self.sources.items():
            found = self.violations.get(name)
            entries.append(
                SourceAccess(
                    source=name,
                    residency=source.residency,
                    classification=source.classification,
                    allowed_uses=list(source.allowed_uses),
                    decision="excluded" if found else "included",
                    rules=list(found.rules) if found else [],
                    detail=found.detail if found else self._included_detail(name, source),
                    samples=excluded[name] if found else accepted[name],
                )
            )
        return AccessStats(
            use=self.spec.use,
            store_region=self.store_region,
            max_classification=self.spec.access.max_classification,
            on_violation=self.spec.access.on_violation,
            sources=entries,
            excluded=sum(excluded.values()),
        )

    def _declared(self) -> bool:
        spec = self.spec
        dataset = spec.use is not None or spec.access.max_classification != "restricted"
        return dataset or any(
            s.residency is not None or s.allowed_uses or s.classification != "internal"
            for s in self.sources.values()
        )

    def _included_detail(self, name: str, source: IngestSourceSpec) -> str:
        parts = []
        if source.residency is not None:
            parts.append(f"store region {self.store_region} is within residency {source.residency}")
        if source.allowed_uses:
            parts.append(f"allows {self.spec.use}")
        parts.append(f"{source.classification} is within {self.spec.access.max_classification}")
        return f"source {name}: " + "; ".join(parts)


def describe(stats: AccessStats) -> list[str]:
    """The decisions of a version in words, one line per source (``loupe show``)."""
    where = f"store region {stats.store_region or 'not declared'}"
    lines = [f"access: use {stats.use or 'not declared'}, {where}, up to {stats.max_classification}"]
    for entry in stats.sources:
        rules = f" ({', '.join(entry.rules)})" if entry.rules else ""
        lines.append(f"  {entry.source}: {entry.decision}{rules}, {entry.samples} samples: {entry.detail}")
    return lines


def digest_fields(spec: DatasetSpec) -> dict[str, Any]:
    """What the spec digest adds for the dataset's use and access rules (nothing when neither is set,
    so the digests of datasets that declare none stay as they were)."""
    if spec.use is None and spec.access == AccessSpec():
        return {}
    return {"access": {"use": spec.use, **spec.access.to_wire()}}


# --- using a version: exports and the Python API -------------------------------------------------


@dataclass(frozen=True)
class Withheld:
    """Samples of one source left out of an export or a Python view because its rules forbid the use."""

    source: str
    samples: int
    allowed_uses: tuple[Use, ...]
    use: Use

    @property
    def message(self) -> str:
        return (
            f"withheld {self.samples} sample{'s' if self.samples != 1 else ''}: source {self.source} "
            f"allows {uses_text(self.allowed_uses)}, not {self.use}"
        )


def forbidden_sources(access: AccessStats | None, use: Use | None) -> dict[str, tuple[Use, ...]]:
    """Sources of a version whose allowed uses exclude ``use``, with those uses. A version recorded
    before access rules (no ``access``) or no ``use`` asked for: none."""
    if access is None or use is None:
        return {}
    return {
        s.source: tuple(s.allowed_uses)
        for s in access.sources
        if s.allowed_uses and use not in s.allowed_uses
    }


def withheld_mask(
    sources: Iterable[str | None], access: AccessStats | None, use: Use | None
) -> tuple[list[bool], list[Withheld]]:
    """For each row's source, whether ``use`` may have it; and per source what was withheld (by name)."""
    forbidden = forbidden_sources(access, use)
    mask: list[bool] = []
    held: Counter[str] = Counter()
    for source in sources:
        allowed = source not in forbidden
        mask.append(allowed)
        if not allowed:
            held[str(source)] += 1
    if use is None:
        return mask, []
    return mask, [Withheld(name, held[name], forbidden[name], use) for name in sorted(held)]


def _source(row: SampleRow) -> str | None:
    # typed: ``.get`` on a row typed by a TypeVar (R) reads as ``object`` to mypy, on a SampleRow it does not
    return row.get("source")


def withhold(
    rows: Sequence[R], access: AccessStats | None, use: Use | None
) -> tuple[list[R], list[Withheld]]:
    """The rows a ``use`` may have, and per source what was withheld (sorted by source)."""
    mask, withheld = withheld_mask((_source(r) for r in rows), access, use)
    return [r for r, keep in zip(rows, mask, strict=True) if keep], withheld
