"""Semantic version decision: pure comparison of two manifests."""

from __future__ import annotations

from dataclasses import dataclass

from loupe_api.versions import Bump, VersionChange

FIRST_VERSION = "1.0.0"


@dataclass(frozen=True)
class SampleState:
    """What the bump rules look at for one sample."""

    labels: str | None  # the labels column (JSON; null only in a row written without labels)
    split: str | None
    derived: str  # digest of derived metadata (metrics, metadata, flags, groups)


def next_version(parent: str | None, bump: Bump) -> str:
    if parent is None:
        return FIRST_VERSION
    major, minor, patch = (int(p) for p in parent.split("."))
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def version_key(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


def decide(
    before: dict[str, SampleState] | None,
    after: dict[str, SampleState],
    spec_changed: bool,
    *,
    mapping_changed: bool = False,
) -> VersionChange | None:
    """MAJOR: samples removed, relabelled or moved between splits. MINOR: only additions.
    PATCH: only derived metadata (or the spec alone) changed. None: nothing changed.

    ``mapping_changed``: spec.labels (classes, mapping, unmapped action) differs from the parent's;
    relabelled samples are then reported as "label mapping changed: N samples relabelled" (a mapping
    that relabels nothing is only a spec change: PATCH)."""
    if before is None:
        return VersionChange(bump="major", reasons=["first version"], added=len(after))
    added = after.keys() - before.keys()
    removed = before.keys() - after.keys()
    common = after.keys() & before.keys()
    relabeled = sum(1 for s in common if before[s].labels != after[s].labels)
    resplit = sum(1 for s in common if before[s].split != after[s].split)
    updated = sum(1 for s in common if before[s].derived != after[s].derived)
    reasons: list[str] = []
    if removed:
        reasons.append(f"{len(removed)} samples removed")
    if relabeled:
        prefix = "label mapping changed: " if mapping_changed else ""
        reasons.append(f"{prefix}{relabeled} samples relabelled")
    if resplit:
        reasons.append(f"{resplit} samples moved between splits")
    bump: Bump
    if reasons:
        bump = "major"
    elif added:
        bump = "minor"
        reasons.append(f"{len(added)} samples added")
    elif updated or spec_changed:
        bump = "patch"
        reasons.append(f"derived metadata of {updated} samples changed" if updated else "spec changed")
    else:
        return None
    if bump == "major" and added:
        reasons.append(f"{len(added)} samples added")
    return VersionChange(
        bump=bump,
        reasons=reasons,
        added=len(added),
        removed=len(removed),
        relabeled=relabeled,
        resplit=resplit,
        updated=updated,
    )
