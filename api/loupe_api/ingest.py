"""IngestSource: where raw images and videos come from."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from loupe_api.access import Classification, RegionLabel, Use
from loupe_api.common import ApiModel, Condition, Duration, ObjectMeta, SecretReference, cel_rules
from loupe_api.constants import KIND_INGEST_SOURCE

MediaKind = Literal["image", "video"]
LabelFormat = Literal["folder", "csv", "coco", "yolo"]
ALL_MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "video")


class S3Location(ApiModel):
    """A bucket and prefix on any S3-compatible store (AWS S3, MinIO, ...)."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    prefix: str = Field(default="", description="Only keys under this prefix are listed.")
    endpoint: str | None = Field(
        default=None,
        description="Endpoint URL (e.g. http://minio:9000). Empty means AWS S3 for the region.",
    )
    region: str | None = Field(default=None, description="Region of the bucket.")
    credentials_secret_ref: SecretReference | None = Field(
        default=None,
        description="Secret holding the credentials. Empty means the ambient credentials "
        "(environment, instance role, IRSA).",
    )


class FilesystemLocation(ApiModel):
    """A folder: a mounted volume on Kubernetes, a local folder in embedded mode."""

    path: str = Field(min_length=1, description="Folder path; relative paths are relative to the spec file.")
    follow_symlinks: Literal["never", "insideRoot"] = Field(
        default="insideRoot",
        description="Symbolic links: insideRoot follows a link only when it resolves to a regular file or "
        "folder inside the source folder; never follows none. Links that are not followed, and devices, "
        "FIFOs and sockets, are never read: each is listed with its reason.",
    )


class VideoSampling(ApiModel):
    """How frames are taken from videos."""

    model_config = cel_rules(
        ("!(has(self.everyNthFrame) && has(self.fps))", "set at most one of everyNthFrame and fps")
    )

    every_nth_frame: int | None = Field(
        default=None, ge=1, description="Keep every Nth decoded frame. Exclusive with fps."
    )
    fps: float | None = Field(
        default=None, gt=0, description="Keep frames at this rate (frames per second). Default 1 fps."
    )
    max_frames_per_video: int = Field(default=300, ge=1, description="At most this many frames per video.")

    @model_validator(mode="after")
    def _one_rate(self) -> VideoSampling:
        if self.every_nth_frame is not None and self.fps is not None:
            raise ValueError("set at most one of everyNthFrame and fps")
        return self


class MetadataSpec(ApiModel):
    """Metadata attached to every sample of the source."""

    static: dict[str, str] = Field(
        default_factory=dict,
        description="Fields set on every sample (device, site, line, operator, synthetic, ...).",
    )
    path_pattern: str | None = Field(
        default=None,
        description="Pattern matched against the key relative to the source root; each {field} "
        "captures one path segment, * matches any segment, ** any number of segments. "
        "Example: {site}/{line}/{date}/{camera}/*",
    )
    exif: bool = Field(default=True, description="Read capture time, camera make/model and GPS from EXIF.")


class LabelImport(ApiModel):
    """Where the labels of the images come from."""

    model_config = cel_rules(
        ("self.format == 'folder' || has(self.path)", "path is required for csv, coco and yolo labels")
    )

    format: LabelFormat = Field(
        description="folder: the parent folder name is the class; csv: a file with path and label "
        "columns; coco: a COCO JSON file; yolo: a folder of YOLO txt files."
    )
    path: str | None = Field(
        default=None,
        description="Key of the CSV or COCO file, or of the YOLO labels folder, relative to the source root.",
    )
    path_column: str = Field(default="path", description="CSV column holding the image key.")
    label_column: str = Field(default="label", description="CSV column holding the label.")
    class_names: list[str] = Field(
        default_factory=list, description="YOLO class names by index (class 0 first)."
    )

    @model_validator(mode="after")
    def _path_when_needed(self) -> LabelImport:
        if self.format != "folder" and not self.path:
            raise ValueError(f"path is required for {self.format} labels")
        return self


class IngestSourceSpec(ApiModel):
    """Where raw data comes from and how it is read."""

    model_config = cel_rules(("has(self.s3) != has(self.filesystem)", "set exactly one of s3 and filesystem"))

    s3: S3Location | None = Field(default=None, description="Read from an S3-compatible bucket.")
    filesystem: FilesystemLocation | None = Field(default=None, description="Read from a folder.")
    include: list[str] = Field(
        default_factory=lambda: ["**"], description="Glob patterns of keys to read (** crosses folders)."
    )
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of keys to skip.")
    media_kinds: list[MediaKind] = Field(
        default_factory=lambda: list(ALL_MEDIA_KINDS),
        min_length=1,
        description="Which kinds of media to ingest.",
    )
    video: VideoSampling = Field(
        default_factory=VideoSampling, description="How frames are taken from videos."
    )
    metadata: MetadataSpec = Field(default_factory=MetadataSpec, description="Metadata attached to samples.")
    labels: LabelImport | None = Field(default=None, description="Annotation import.")
    poll_interval: Duration | None = Field(
        default=None, description="Rescan the source this often (e.g. 5m). Empty: scan on change only."
    )
    synthetic: bool = Field(
        default=False,
        description="Every sample of this source is synthetic (rendered or generated): counted apart, "
        "kept out of val and test by default (Dataset spec.synthetic).",
    )
    residency: RegionLabel | None = Field(
        default=None,
        description="Where the source's data may be stored: a jurisdiction or region label (eu, us, de, "
        "eu-west-1). A dataset whose spec.storage.region is not within it (eu contains eu-west-1) is "
        "refused before anything is copied. Empty: anywhere.",
    )
    allowed_uses: list[Use] = Field(
        default_factory=list,
        description="What the data may be used for (training, evaluation, research); a dataset whose "
        "spec.use is not listed leaves the source's samples out or is refused (spec.access). Empty: any use.",
    )
    classification: Classification = Field(
        default="internal",
        description="How sensitive the data is: public, internal, confidential or restricted (ordered); "
        "a dataset holds sources up to its spec.access.maxClassification.",
    )

    @model_validator(mode="after")
    def _one_location(self) -> IngestSourceSpec:
        if (self.s3 is None) == (self.filesystem is None):
            raise ValueError("set exactly one of s3 and filesystem")
        return self

    def location_uri(self) -> str:
        """A URI naming the source root: s3://bucket/prefix or file://path."""
        if self.s3 is not None:
            return f"s3://{self.s3.bucket}/{self.s3.prefix}"
        assert self.filesystem is not None
        return f"file://{self.filesystem.path}"


class ScanSummary(ApiModel):
    """The result of the latest listing of the source."""

    time: datetime | None = Field(default=None, description="When the listing finished.")
    objects: int = Field(default=0, description="Objects that matched include/exclude.")
    bytes: int = Field(default=0, description="Total size of those objects.")
    listing_digest: str = Field(default="", description="Digest of (key, size, etag) of every listed object.")


class IngestSourceStatus(ApiModel):
    """What the operator last observed about the source."""

    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and Degraded conditions.")
    last_scan: ScanSummary | None = Field(default=None, description="The latest listing.")


class IngestSource(ApiModel):
    """A source of raw images and videos."""

    api_version: Literal["loupe.dev/v1alpha1"] = Field(
        default="loupe.dev/v1alpha1", description="loupe.dev/v1alpha1"
    )
    kind: Literal["IngestSource"] = Field(default=KIND_INGEST_SOURCE, description="IngestSource")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: IngestSourceSpec = Field(description="Where raw data comes from.")
    status: IngestSourceStatus | None = Field(default=None, description="Observed state.")
