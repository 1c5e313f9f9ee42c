"""Dataset: a curated, validated, deduplicated and versioned set of samples."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from loupe_api.common import ApiModel, Condition, GateAction, ObjectMeta, SecretReference, cel_rules
from loupe_api.constants import KIND_DATASET

ImageFormat = Literal["jpeg", "png", "webp", "bmp", "tiff", "gif"]
ALL_IMAGE_FORMATS: tuple[ImageFormat, ...] = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
RayMode = Literal["local", "submit", "kuberay"]
HashKind = Literal["phash", "dhash", "ahash", "whash"]
KeepPolicy = Literal["highestResolution", "largestFile", "earliest", "first"]
DuplicateAction = Literal["drop", "flag"]
DropAction = Literal["reject", "quarantine"]
SPLIT_RATIO_TOLERANCE = 1e-6


class SourceRef(ApiModel):
    """An IngestSource the dataset reads, with an optional metadata filter."""

    name: str = Field(min_length=1, description="Name of the IngestSource, in the dataset's namespace.")
    filter: dict[str, str] = Field(
        default_factory=dict,
        description="Only samples whose metadata equals every given field (e.g. site: plant-3).",
    )


class StorageSpec(ApiModel):
    """Where blobs, manifests and lineage are written."""

    uri: str | None = Field(
        default=None,
        description="s3://bucket/prefix or a folder path. Empty: the operator's default storage "
        "(./.loupe in embedded mode).",
    )
    endpoint: str | None = Field(default=None, description="S3 endpoint URL for S3-compatible stores.")
    region: str | None = Field(default=None, description="S3 region.")
    credentials_secret_ref: SecretReference | None = Field(
        default=None, description="Secret holding the S3 credentials."
    )


class CorruptGate(ApiModel):
    """Files that cannot be decoded: empty, truncated, not an image at all (never kept: no flag)."""

    action: DropAction = Field(default="quarantine", description="reject or quarantine.")


class FormatGate(ApiModel):
    """Which real formats (found from the bytes, not the extension) are accepted."""

    allowed: list[ImageFormat] = Field(
        default_factory=lambda: list(ALL_IMAGE_FORMATS), min_length=1, description="Accepted formats."
    )
    action: GateAction = Field(
        default="reject",
        description="Action for any other format. A format Loupe cannot decode is never kept: flag acts as reject.",
    )


class ExtensionGate(ApiModel):
    """Files whose extension does not match their real format (a PNG named .jpg)."""

    enabled: bool = Field(default=True, description="Check the extension.")
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class ResolutionGate(ApiModel):
    """Minimum and maximum width and height, in pixels."""

    enabled: bool = Field(default=True, description="Check the resolution.")
    min_width: int = Field(default=32, ge=1, description="Smallest accepted width.")
    min_height: int = Field(default=32, ge=1, description="Smallest accepted height.")
    max_width: int | None = Field(default=None, ge=1, description="Largest accepted width (none by default).")
    max_height: int | None = Field(
        default=None, ge=1, description="Largest accepted height (none by default)."
    )
    action: GateAction = Field(default="reject", description="reject, flag or quarantine.")


class MaxPixelsGate(ApiModel):
    """Decompression-bomb guard: images declaring more pixels are refused before decoding."""

    limit: int = Field(default=100_000_000, ge=1, description="Largest accepted width x height.")
    action: DropAction = Field(
        default="quarantine", description="reject or quarantine (never decoded, so never kept)."
    )


class BlurGate(ApiModel):
    """Blur: sharpness 1 - exp(-s / 20), s the spread of an edge filter over a 64 px grey thumbnail."""

    enabled: bool = Field(default=True, description="Check blur.")
    threshold: float = Field(
        default=0.5, ge=0, le=1, description="Sharpness score in [0, 1] below which an image is blurry."
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class DarkGate(ApiModel):
    """Under-exposure: the 99th percentile of perceived brightness is below the threshold."""

    enabled: bool = Field(default=True, description="Check under-exposure.")
    threshold: float = Field(default=0.32, ge=0, le=1, description="Brightness (0-1) of the 99th percentile.")
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class BrightGate(ApiModel):
    """Over-exposure: 1 - the 5th percentile of perceived brightness is below the threshold."""

    enabled: bool = Field(default=True, description="Check over-exposure.")
    threshold: float = Field(default=0.05, ge=0, le=1, description="1 - brightness of the 5th percentile.")
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class NoiseGate(ApiModel):
    """Sensor noise, as the standard deviation of a Laplacian-based noise estimate (0-255 scale)."""

    enabled: bool = Field(default=True, description="Check noise.")
    threshold: float = Field(
        default=12.0, ge=0, description="Estimated noise sigma above which an image is noisy."
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class LowInformationGate(ApiModel):
    """Nearly empty images: Shannon entropy of the grey histogram below the threshold."""

    enabled: bool = Field(default=True, description="Check information content.")
    threshold: float = Field(default=3.0, ge=0, le=8, description="Entropy in bits.")
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class AspectRatioGate(ApiModel):
    """Odd aspect ratios: min(w/h, h/w) below the threshold."""

    enabled: bool = Field(default=True, description="Check the aspect ratio.")
    min_ratio: float = Field(default=0.35, gt=0, le=1, description="Smallest accepted min(w/h, h/w).")
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")


class QualityGates(ApiModel):
    """What every sample must satisfy. reject drops it, quarantine drops it and keeps its bytes
    for review, flag keeps it with the reason recorded."""

    corrupt: CorruptGate = Field(default_factory=CorruptGate, description="Undecodable or truncated files.")
    format: FormatGate = Field(default_factory=FormatGate, description="Accepted real formats.")
    extension: ExtensionGate = Field(default_factory=ExtensionGate, description="Extension vs real format.")
    resolution: ResolutionGate = Field(default_factory=ResolutionGate, description="Width and height limits.")
    max_pixels: MaxPixelsGate = Field(default_factory=MaxPixelsGate, description="Decompression-bomb guard.")
    blur: BlurGate = Field(default_factory=BlurGate, description="Blurry images.")
    dark: DarkGate = Field(default_factory=DarkGate, description="Under-exposed images.")
    bright: BrightGate = Field(default_factory=BrightGate, description="Over-exposed images.")
    noise: NoiseGate = Field(default_factory=NoiseGate, description="Noisy images.")
    low_information: LowInformationGate = Field(
        default_factory=LowInformationGate, description="Nearly empty images."
    )
    aspect_ratio: AspectRatioGate = Field(default_factory=AspectRatioGate, description="Odd aspect ratios.")


class ExactDedup(ApiModel):
    """Exact duplicates: identical bytes, or identical decoded pixels in another encoding."""

    enabled: bool = Field(default=True, description="Find exact duplicates.")
    pixels: bool = Field(
        default=True, description="Also compare decoded pixels, so a lossless re-encode is caught."
    )


class PerceptualDedup(ApiModel):
    """Near duplicates by a 64-bit perceptual hash and a Hamming-distance threshold."""

    enabled: bool = Field(default=True, description="Find near duplicates.")
    hash: HashKind = Field(default="phash", description="phash, dhash, ahash or whash (64 bits).")
    max_distance: int = Field(
        default=8, ge=0, le=32, description="Largest Hamming distance between hashes of near duplicates."
    )


class DedupSpec(ApiModel):
    """How duplicates are found and which copy is kept."""

    exact: ExactDedup = Field(default_factory=ExactDedup, description="Exact duplicates.")
    perceptual: PerceptualDedup = Field(default_factory=PerceptualDedup, description="Near duplicates.")
    action: DuplicateAction = Field(
        default="drop",
        description="drop: only the kept copy enters the dataset; flag: every copy stays, grouped.",
    )
    keep: KeepPolicy = Field(
        default="highestResolution",
        description="Which copy of a group is kept: highestResolution, largestFile, earliest "
        "(capture time, then first seen) or first (by source key).",
    )


class SplitSpec(ApiModel):
    """Deterministic train/val/test assignment; near-duplicate groups never straddle splits and
    a sample keeps its split in later versions."""

    model_config = cel_rules(
        (
            "self.train + self.val + self.test > 0.999999 && self.train + self.val + self.test < 1.000001",
            "train + val + test must equal 1",
        )
    )

    train: float = Field(default=0.8, ge=0, le=1, description="Fraction of samples for training.")
    val: float = Field(default=0.1, ge=0, le=1, description="Fraction of samples for validation.")
    test: float = Field(default=0.1, ge=0, le=1, description="Fraction of samples for testing.")
    stratify_by: str | None = Field(
        default=None, description="Keep ratios within each value of this field: label or a metadata field."
    )
    seed: int = Field(default=0, description="Seed of the assignment.")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > SPLIT_RATIO_TOLERANCE:
            raise ValueError(f"train + val + test must equal 1, got {total:g}")
        return self


class VersioningSpec(ApiModel):
    """When new versions are made."""

    mode: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: a new version whenever the result changes; manual: only when asked "
        "(loupe run --commit, or the annotation loupe.dev/commit).",
    )
    min_new_samples: int = Field(
        default=1,
        ge=1,
        description="In auto mode, a version that only adds samples needs at least this many.",
    )
    history_limit: int = Field(default=20, ge=1, le=200, description="Versions listed in status.")


class RaySpec(ApiModel):
    """How the job runs."""

    mode: RayMode | None = Field(
        default=None,
        description="local: embedded Ray; submit: Ray Job Submission API of an existing cluster; "
        "kuberay: a ray.io/v1 RayJob. Empty: the operator's default.",
    )
    address: str | None = Field(default=None, description="Ray address for submit mode (http://head:8265).")
    parallelism: int | None = Field(
        default=None, ge=1, description="Concurrent decode tasks (default: CPUs)."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job after this long."
    )


class DatasetSpec(ApiModel):
    """A curated, versioned dataset built from one or more sources."""

    sources: list[SourceRef] = Field(min_length=1, description="IngestSources the samples come from.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Where versions are stored.")
    quality_gates: QualityGates = Field(default_factory=QualityGates, description="Quality gates.")
    dedup: DedupSpec = Field(default_factory=DedupSpec, description="Deduplication.")
    splits: SplitSpec = Field(default_factory=SplitSpec, description="Train/val/test splits.")
    versioning: VersioningSpec = Field(default_factory=VersioningSpec, description="Versioning policy.")
    ray: RaySpec = Field(default_factory=RaySpec, description="Execution.")


class VersionSummary(ApiModel):
    """One committed version, as listed in status."""

    version: str = Field(description="Semantic version.")
    created: datetime = Field(description="When it was committed.")
    manifest_uri: str = Field(description="Parquet manifest of the version.")
    samples: int = Field(description="Samples in the version.")
    digest: str = Field(description="Digest of the manifest content.")


class DatasetStats(ApiModel):
    """Counts of the latest run."""

    scanned: int = Field(default=0, description="Objects listed in the sources.")
    processed: int = Field(default=0, description="Objects decoded in this run (new or changed).")
    samples: int = Field(default=0, description="Samples in the version.")
    accepted: int = Field(default=0, description="Samples that passed every reject/quarantine gate.")
    flagged: int = Field(default=0, description="Accepted samples with at least one flag.")
    rejected: dict[str, int] = Field(default_factory=dict, description="Rejected samples by reason.")
    quarantined: dict[str, int] = Field(default_factory=dict, description="Quarantined samples by reason.")
    flags: dict[str, int] = Field(default_factory=dict, description="Flags by reason.")
    exact_duplicates: int = Field(default=0, description="Samples identical to another (bytes or pixels).")
    near_duplicates: int = Field(default=0, description="Samples within the perceptual threshold of another.")
    duplicate_groups: int = Field(default=0, description="Groups of two or more copies.")
    splits: dict[str, int] = Field(default_factory=dict, description="Samples per split.")


class JobStatus(ApiModel):
    """The job currently or last run for the dataset."""

    id: str = Field(description="Run id (also the Ray job submission id or RayJob name).")
    mode: RayMode = Field(description="How it runs.")
    state: Literal["Pending", "Running", "Succeeded", "Failed"] = Field(description="Job state.")
    start_time: datetime | None = Field(default=None, description="When it started.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")
    message: str = Field(default="", description="Why it is in this state.")
    inputs_digest: str = Field(
        default="", description="Digest of the inputs the job runs on (spec generation and source listings)."
    )
    attempts: int = Field(
        default=1, ge=1, description="Attempt number for these inputs (failed jobs are retried)."
    )


class DatasetStatus(ApiModel):
    """Observed state of the dataset."""

    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing and Degraded.")
    current_version: str | None = Field(default=None, description="Latest committed version.")
    samples: int | None = Field(default=None, description="Samples in the current version.")
    versions: list[VersionSummary] = Field(default_factory=list, description="Latest versions, newest first.")
    stats: DatasetStats | None = Field(default=None, description="Counts of the latest run.")
    job: JobStatus | None = Field(default=None, description="The running or last job.")
    lineage_uri: str | None = Field(default=None, description="Lineage records of the current version.")


class Dataset(ApiModel):
    """A curated, versioned image dataset."""

    api_version: Literal["loupe.dev/v1alpha1"] = Field(
        default="loupe.dev/v1alpha1", description="loupe.dev/v1alpha1"
    )
    kind: Literal["Dataset"] = Field(default=KIND_DATASET, description="Dataset")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: DatasetSpec = Field(description="What the dataset must satisfy.")
    status: DatasetStatus | None = Field(default=None, description="Observed state.")
