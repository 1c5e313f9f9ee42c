"""Retention: which versions a dataset keeps, and the records left behind by the ones it expired."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Literal, Self

from pydantic import Field, model_validator

from loupe_api.common import ApiModel, Duration, parse_duration

# S3 storage classes. GLACIER (Flexible Retrieval) and DEEP_ARCHIVE objects cannot be read until a
# restore-object completes; every other class, GLACIER_IR included, reads at once (a retrieval fee aside).
StorageClass = Literal["STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                       "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"]  # fmt: skip
ARCHIVE_CLASSES: tuple[str, ...] = ("GLACIER", "DEEP_ARCHIVE")
TIER_TAG = "loupe-tier"  # the object tag naming the tier, set with every transition


class TierRule(ApiModel):
    """Versions older than ``after`` move their sample bytes to a storage class (S3 stores only)."""

    after: Duration = Field(description="Age of a version after which its sample bytes move, e.g. 30d.")
    storage_class: StorageClass | None = Field(
        default=None,
        description="S3 storage class to copy the bytes to (e.g. STANDARD_IA, GLACIER_IR). A store that "
        "refuses the class (MinIO without a tier) gets the object tag loupe-tier=<class> instead.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Object tags to set as well, for bucket lifecycle rules that filter on tags.",
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.storage_class is None and not self.tags:
            raise ValueError("a tier needs storageClass or tags")
        return self

    @property
    def label(self) -> str:
        return self.storage_class or ",".join(f"{k}={v}" for k, v in sorted(self.tags.items()))


class RetentionSpec(ApiModel):
    """Which versions to keep. A version is kept when any rule keeps it; the current version, every
    tagged version and every version a model was trained on are always kept. With no rule set,
    every version is kept (the default)."""

    keep_last: int | None = Field(default=None, ge=1, description="Keep the newest N versions.")
    keep_for: Duration | None = Field(
        default=None, description="Keep versions younger than this, e.g. 30d or 12h."
    )
    tiers: list[TierRule] = Field(
        default_factory=list,
        description="Storage tiers by age, youngest first, e.g. [{after: 30d, storageClass: STANDARD_IA}, "
        "{after: 180d, storageClass: GLACIER_IR}]. The current version, tagged versions and the newest "
        "keepLast stay where they are, and so does every blob a younger version shares.",
    )
    schedule: str | None = Field(
        default=None,
        pattern=r"^\S+(\s+\S+){4}$",
        description="Cron schedule, five fields (e.g. 0 3 * * *): on Kubernetes the operator runs a gc job "
        "(expiry, tiers, then collection) at these times. Without it, one runs after each new version.",
    )

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Self:
        ages = [parse_duration(t.after) for t in self.tiers]
        if any(b <= a for a, b in pairwise(ages)):
            raise ValueError("tiers: list them youngest first, each 'after' longer than the one before")
        return self

    def active(self) -> bool:
        return self.keep_last is not None or self.keep_for is not None


class ExpiredVersion(ApiModel):
    """datasets/<dataset>/expired/<version>.json: what is left of an expired version, so that asking
    for it says what happened instead of "not found", and lineage shows where the chain was cut."""

    dataset: str = Field(description="Dataset name.")
    version: str = Field(description="The expired version.")
    created: datetime = Field(description="When the version was committed.")
    expired: datetime = Field(description="When retention expired it.")
    reason: str = Field(description="The rule that let it go, in words.")
    samples: int = Field(description="Samples it held.")
    run_id: str = Field(description="The run that produced it.")
    parent: str | None = Field(default=None, description="Its parent version.")


class TierRecord(ApiModel):
    """datasets/<dataset>/tiers/<version>.json: where the sample bytes of a version were moved, so that
    `loupe versions` says so and reading an archived version is refused with the way back."""

    dataset: str = Field(description="Dataset name.")
    version: str = Field(description="The version.")
    storage_class: str = Field(description="The class its bytes were moved to (STANDARD after a restore).")
    applied: Literal["storageClass", "tags", "restored"] = Field(
        description="storageClass: the objects were copied into the class; tags: the store refused the "
        "class, so the objects carry the tag loupe-tier=<class> for a lifecycle rule; restored: moved back."
    )
    since: datetime = Field(description="When the move was made.")
    blobs: int = Field(default=0, description="Blobs moved.")
    bytes: int = Field(default=0, description="Bytes moved.")
    shared: int = Field(
        default=0, description="Blobs left in a warmer class because a younger or kept version shares them."
    )
    moved: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 -> tier of each blob this version moved, so that a blob a newer version holds "
        "again (the same photo back) is moved back where that version needs it.",
    )

    def archived(self) -> bool:
        """True when the bytes cannot be read before a restore (S3 GLACIER and DEEP_ARCHIVE)."""
        return self.applied != "restored" and self.storage_class in ARCHIVE_CLASSES


class GcResult(ApiModel):
    """datasets/<dataset>/gc/<job id>.json: what one gc job did, read back by the operator."""

    dataset: str = Field(description="Dataset name.")
    job_id: str = Field(description="The gc job.")
    time: datetime = Field(description="When it finished.")
    expired: list[str] = Field(
        default_factory=list,
        description="Versions expired by retention: by this job, or by the runs before it whose bytes this job freed.",
    )
    tiered: dict[str, str] = Field(default_factory=dict, description="Versions moved, to their class.")
    deleted: int = Field(default=0, description="Objects deleted by the collection.")
    freed_bytes: int = Field(default=0, description="Bytes the collection freed.")
    skipped: str = Field(default="", description="Why nothing was collected, when nothing could be.")


class RetentionStatus(ApiModel):
    """Retention as the operator runs it: the last gc job and what it did."""

    job_id: str | None = Field(default=None, description="The running or last gc job.")
    job_state: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Its state."
    )
    last_slot: datetime | None = Field(default=None, description="The latest schedule slot acted on.")
    last_version: str | None = Field(
        default=None,
        description="The current version when the last gc job started (without a schedule, "
        "one runs after each new version).",
    )
    last_gc_time: datetime | None = Field(default=None, description="When the last gc job finished.")
    expired_versions: list[str] = Field(
        default_factory=list,
        description="Versions the last gc job expired or freed the bytes of (a run expires what its retention lets go; the gc job after it frees their bytes).",
    )
    tiered: dict[str, str] = Field(default_factory=dict, description="Versions it moved, to their class.")
    freed_bytes: int = Field(default=0, description="Bytes it freed.")
    message: str = Field(default="", description="What it did, in words.")
