"""Deterministic, sticky, leak-free train/val/test assignment over groups of samples."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitUnit:
    """Samples that must share a split (a near-duplicate group, or one sample)."""

    members: tuple[str, ...]  # sample ids
    stratum: str


def _priority(seed: int, unit: SplitUnit) -> str:
    return hashlib.sha256(f"{seed}:{min(unit.members)}".encode()).hexdigest()


def assign_splits(
    units: list[SplitUnit],
    ratios: dict[str, float],
    seed: int,
    previous: dict[str, str],
) -> dict[str, str]:
    """Split of every sample id.

    A unit with members seen before keeps their (majority) split; new units are taken in a
    seed-determined order and each goes to the split furthest below its target share of the stratum.
    """
    result: dict[str, str] = {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    fresh: list[SplitUnit] = []
    for unit in units:
        known = [previous[m] for m in unit.members if m in previous]
        if not known:
            fresh.append(unit)
            continue
        tally = Counter(known)
        split = max(SPLIT_NAMES, key=lambda s: (tally[s], -SPLIT_NAMES.index(s)))
        for member in unit.members:
            result[member] = split
        counts[unit.stratum][split] += len(unit.members)
    for unit in sorted(fresh, key=lambda u: _priority(seed, u)):
        stratum = counts[unit.stratum]
        total = sum(stratum.values()) + len(unit.members)
        split = max(
            (s for s in SPLIT_NAMES if ratios.get(s, 0.0) > 0),
            key=lambda s: (ratios[s] * total - stratum[s], ratios[s], -SPLIT_NAMES.index(s)),
        )
        for member in unit.members:
            result[member] = split
        stratum[split] += len(unit.members)
    return result
