"""What a version changes against its parent, row by row: the input of ``manifest.write_change``.

Pure (no store): the pipeline has the parent's rows (read for curation anyway) and the new version's
rows; this says which sample ids are new, gone or changed, comparing rows on the manifest columns as
``manifest.to_table`` writes them, so that a row whose stored bytes would not change is not rewritten.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loupe_api.samples import Disposition
from loupe_workers.storage import manifest

Row = Mapping[str, Any]  # rows are only read here (the pipeline's: loupe_api.samples.SampleRow)

# Measured (bench_scale's synthetic rows, 100,000 in 25 parts of 4,096, folder store, labels of rows
# at random ids changed):
# 10 rows touch ~8 parts and write_change takes 0.46x a write_parts rebuild; 100 rows or more touch
# every part, and write_change (which reads each touched part, then rewrites it) takes 1.1x-2.3x.
# Random touches hit most parts once they number about the parts, so that is where a rebuild wins
# (clustered changes, a relabelled folder, touch fewer parts; and the rebuild was timed from an Arrow
# table, without the pipeline's conversion of every row: the bound errs towards rebuilding).
REBUILD_TOUCHES_PER_PART = 1.0


@dataclass
class RowChange:
    """A version as its parent plus ``added`` rows (ids the parent lacks), minus ``deletes`` (parent
    ids gone), with ``upserts`` replacing every parent row of their ids (accepted and rejected)."""

    added: list[Row] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    upserts: list[Row] = field(default_factory=list)

    @property
    def touched(self) -> int:
        """Rows (or ids) the change makes ``write_change`` look up in the parent's parts."""
        return len(self.deletes) + len(self.upserts)


def _kind(row: Row) -> str:
    return "accepted" if row.get("disposition") == Disposition.ACCEPTED else "rejected"


def _by_id(rows: Iterable[Row]) -> dict[str, list[Row]] | None:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        sample_id = row.get("sample_id")
        if sample_id is None:
            return None  # write_change places rows by id: a row without one needs a rebuild
        grouped[sample_id].append(row)
    return grouped


def _ordered(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda t: tuple(str(v) for v in t))


def _values(row: Row) -> tuple[Any, ...]:
    return tuple(map(row.get, manifest.COLUMNS))  # every row of the version passes here: no generator


def _raw(rows: list[Row]) -> list[tuple[Any, ...]]:
    if len(rows) == 1:  # the common case: no sort (it would format every value)
        return [_values(rows[0])]
    return _ordered(_values(r) for r in rows)


def _written(groups: dict[str, list[Row]], ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of ``ids`` as they are stored (types of the manifest schema), converted in one batch."""
    rows = [r for i in ids for r in groups[i]]
    stored: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in manifest.to_table(rows).to_pylist() if rows else []:
        stored[row["sample_id"]].append(tuple(row.values()))
    return {i: _ordered(stored[i]) for i in ids}


def _one_per_kind(rows: list[Row]) -> bool:
    kinds = [_kind(r) for r in rows]
    return len(set(kinds)) == len(kinds)


def rebuild_is_cheaper(change: RowChange, parent_parts: int) -> bool:
    """Whether writing ``change`` through write_change would cost more than a write_parts rebuild."""
    return change.touched > max(1.0, REBUILD_TOUCHES_PER_PART * parent_parts)


def diff_rows(parent: Iterable[Row], rows: Iterable[Row]) -> RowChange | None:
    """The change from ``parent``'s rows (all kinds) to ``rows``; None when write_change cannot place
    it: rows without a sample id, or a changed id holding two rows of one kind (byte-identical copies:
    write_change places one row per id and kind)."""
    before, after = _by_id(parent), _by_id(rows)
    if before is None or after is None:
        return None
    change = RowChange(deletes=sorted(set(before) - set(after)))
    suspects: list[str] = []
    for sample_id, now in after.items():
        old = before.get(sample_id)
        if old is None:
            change.added.extend(now)
        elif len(old) != len(now) or _raw(old) != _raw(now):
            suspects.append(sample_id)  # differs as Python values: compare again as stored
    old_stored, new_stored = _written(before, suspects), _written(after, suspects)
    for sample_id in suspects:
        if old_stored[sample_id] != new_stored[sample_id]:
            change.upserts.extend(after[sample_id])
    changed = {r["sample_id"] for r in change.added + change.upserts} | set(change.deletes)
    if any(not _one_per_kind(before.get(i, [])) or not _one_per_kind(after.get(i, [])) for i in changed):
        return None
    return change
