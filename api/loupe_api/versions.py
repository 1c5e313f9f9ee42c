"""Records written to object storage: the contract between workers (writers) and operator (reader)."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Literal

from pydantic import Field

from loupe_api.common import ApiModel
from loupe_api.dataset import DatasetStats, DriftSummary, HealthSummary

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
    manifest_uri: str = Field(description="Parquet manifest of accepted samples.")
    rejected_uri: str = Field(description="Parquet file of rejected, quarantined and dropped samples.")
    lineage_uri: str = Field(description="Parquet file of object -> sample -> version edges.")
    samples: int = Field(description="Samples in the manifest.")
    stats: DatasetStats = Field(description="Counts.")
    change: VersionChange | None = Field(default=None, description="Difference from the parent.")
    health: HealthSummary | None = Field(default=None, description="Health summary of the version.")
    drift: DriftSummary | None = Field(default=None, description="Drift of its new samples.")


def absolute_uri(store_uri: str, key: str) -> str:
    """A store-relative key as a URI a person can open: s3://bucket/prefix/key or a folder path."""
    if not store_uri or "://" in key or key.startswith("/"):
        return key
    if "://" in store_uri:
        return f"{store_uri.rstrip('/')}/{key}"
    return str(PurePath(store_uri) / key)
