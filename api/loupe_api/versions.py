"""Records written to object storage: the contract between workers (writers) and operator (reader)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePath
from typing import Literal

from pydantic import Field

from loupe_api.common import ApiModel
from loupe_api.dataset import DatasetStats, DriftSummary, HealthSummary
from loupe_api.label_qa import LabelQaStats
from loupe_api.outliers import RelativeGateStats
from loupe_api.sampling import SamplingSummary
from loupe_api.synthetic import SyntheticSummary

Bump = Literal["major", "minor", "patch"]


class VersionChange(ApiModel):
    """What differs from the parent version, and the bump it implies."""

    bump: Bump = Field(description="major, minor or patch.")
    reasons: list[str] = Field(default_factory=list, description="Why this bump, in words.")
    added: int = Field(default=0, description="Samples added.")
    removed: int = Field(default=0, description="Samples removed.")
    relabeled: int = Field(default=0, description="Samples whose labels changed.")
    resplit: int = Field(default=0, description="Samples whose split changed.")
    updated: int = Field(default=0, description="Samples whose derived metadata changed.")


PartKind = Literal["accepted", "rejected", "lineage"]
PARTS_SUFFIX = ".parts.json"


class ManifestPart(ApiModel):
    """One Parquet part of a version's rows: content-addressed, shared by every version that holds
    exactly these rows."""

    key: str = Field(description="Store-relative key: datasets/<dataset>/parts/<sha256>.parquet.")
    rows: int = Field(description="Rows in the part.")
    bytes: int = Field(description="Size of the Parquet file.")
    sha256: str = Field(description="sha256 of the Parquet file (also its name).")
    # kept in the list, not in the Parquet metadata, so that the part's bytes stay a function of its rows
    first_id: str | None = Field(
        default=None,
        description="Smallest sample id in the part (None in lists written before: may hold any id).",
    )
    last_id: str | None = Field(
        default=None,
        description="Largest sample id in the part (None in lists written before: may hold any id).",
    )

    def may_hold(self, sample_id: str) -> bool:
        """Whether ``sample_id`` can be one of the part's rows (always, for a part without statistics)."""
        return self.may_hold_any([sample_id])

    def may_hold_any(self, sorted_ids: Sequence[str]) -> bool:
        """Whether one of ``sorted_ids`` (sorted) can be one of the part's rows: by its id range, in
        log time; always, for a part without statistics."""
        if self.first_id is None or self.last_id is None:
            return True
        at = bisect.bisect_left(sorted_ids, self.first_id)
        return at < len(sorted_ids) and sorted_ids[at] <= self.last_id


class PartList(ApiModel):
    """The rows of one kind of a version (runs/<run>/<kind>.parts.json): the union of its parts' rows.

    Parts are written before the list, and the list before the version record, so a record never names
    a missing part; parts of a run that never committed are referenced by nothing (a collector may
    remove parts no record names). Readers sort the union (accepted: by sample id; rejected: by
    source, key, sample id; lineage: accepted edges first), so the part boundaries never show.
    """

    kind: PartKind = Field(description="accepted (the manifest), rejected or lineage.")
    version: str = Field(description="The version (lineage parts do not store it; readers add it back).")
    rows: int = Field(description="Rows in all parts together.")
    bytes: int = Field(description="Bytes of all parts together.")
    parts: list[ManifestPart] = Field(default_factory=list, description="The parts.")


def is_part_list(key: str) -> bool:
    """Whether a record's manifest, rejected or lineage key names a part list (else one Parquet file)."""
    return key.endswith(PARTS_SUFFIX)


class VersionRecord(ApiModel):
    """The immutable record of one committed version (version.json)."""

    dataset: str = Field(description="Dataset name (namespace/name on Kubernetes).")
    version: str = Field(description="Semantic version.")
    parent: str | None = Field(default=None, description="Parent version.")
    created: datetime = Field(description="Commit time.")
    run_id: str = Field(description="Run that produced it.")
    spec_digest: str = Field(description="Digest of the curation-relevant spec.")
    source_digest: str = Field(description="Digest of the source listings.")
    content_digest: str = Field(description="Digest of the manifest content (sample ids, labels, splits).")
    code_version: str = Field(description="Loupe version that produced it.")
    manifest_uri: str = Field(
        description="Manifest of accepted samples: its part list (*.parts.json, a PartList) or, in "
        "versions written before parts, one Parquet file."
    )
    rejected_uri: str = Field(
        description="Rejected, quarantined and dropped samples: a part list (*.parts.json) or one Parquet file."
    )
    lineage_uri: str = Field(
        description="Object -> sample -> version edges: a part list (*.parts.json) or one Parquet file."
    )
    samples: int = Field(description="Samples in the manifest.")
    stats: DatasetStats = Field(description="Counts.")
    change: VersionChange | None = Field(default=None, description="Difference from the parent.")
    health: HealthSummary | None = Field(default=None, description="Health summary of the version.")
    drift: DriftSummary | None = Field(default=None, description="Drift of its new samples.")
    outliers: list[RelativeGateStats] = Field(
        default_factory=list,
        description="Per-stratum statistics of the gates' relative sections (dataset-relative outliers).",
    )
    sampling: SamplingSummary | None = Field(
        default=None,
        description="How spec.sampling chose the samples: budgets, strategy, per class and stratum.",
    )
    label_qa: LabelQaStats | None = Field(
        default=None,
        description="Agreement of the label sets (sources labelling the same bytes), consensus and golden accuracy.",
    )
    synthetic: SyntheticSummary | None = Field(
        default=None,
        description="Real and synthetic counts and the synthetic-to-real gap (when there are synthetic samples).",
    )
    inputs_digest: str | None = Field(
        default=None,
        description="Digest of everything the run that built it read (spec, source listings, label files, "
        "predictions, code and processing settings): a later run with the same digest commits nothing and "
        "reads no manifest. None in records written before it existed.",
    )


def absolute_uri(store_uri: str, key: str) -> str:
    """A store-relative key as a URI a person can open: s3://bucket/prefix/key or a folder path."""
    if not store_uri or "://" in key or key.startswith("/"):
        return key
    if "://" in store_uri:
        return f"{store_uri.rstrip('/')}/{key}"
    return str(PurePath(store_uri) / key)
