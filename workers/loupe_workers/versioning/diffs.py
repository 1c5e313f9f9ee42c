"""What changed between two versions: samples added, removed, relabelled and moved between splits.

One comparison for every reader: ``loupe diff`` prints it, ``loupe serve`` shows it with thumbnails.
Samples are matched by sample id; only the manifests' accepted rows take part.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from loupe_api.samples import SampleRow


@dataclass(frozen=True)
class VersionDiff:
    """Sample ids (sorted) of each kind of change from version ``a`` to version ``b``."""

    added: tuple[str, ...]  # in b only
    removed: tuple[str, ...]  # in a only
    relabeled: tuple[str, ...]  # in both, labels (class or boxes) differ
    resplit: tuple[str, ...]  # in both, split differs
    unchanged: int  # samples in both (whether or not relabelled or moved)
    # relabelled sample id -> (its class in a, its class in b); the same class when only boxes changed
    classes: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)


def sample_class(row: SampleRow) -> str | None:
    """A row's class: its ``label`` column, else the class in its ``labels`` JSON."""
    if "label" in row:
        return None if row["label"] is None else str(row["label"])
    try:
        found = json.loads(row.get("labels") or "{}").get("label")
    except (ValueError, AttributeError):
        return None
    return None if found is None else str(found)


def diff_rows(rows_a: Iterable[SampleRow], rows_b: Iterable[SampleRow]) -> VersionDiff:
    """Compare two manifests' accepted rows (each needs ``sample_id``, ``labels`` and ``split``)."""
    by_a = {r["sample_id"]: r for r in rows_a}
    by_b = {r["sample_id"]: r for r in rows_b}
    common = by_a.keys() & by_b.keys()
    relabeled = tuple(sorted(s for s in common if by_a[s].get("labels") != by_b[s].get("labels")))
    return VersionDiff(
        added=tuple(sorted(by_b.keys() - by_a.keys())),
        removed=tuple(sorted(by_a.keys() - by_b.keys())),
        relabeled=relabeled,
        resplit=tuple(sorted(s for s in common if by_a[s].get("split") != by_b[s].get("split"))),
        unchanged=len(common),
        classes={s: (sample_class(by_a[s]), sample_class(by_b[s])) for s in relabeled},
    )
