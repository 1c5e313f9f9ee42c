"""Dataset: a curated, validated, deduplicated and versioned set of samples."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from loupe_api.access import AccessSpec, AccessStats, Use
from loupe_api.common import ApiModel, Condition, GateAction, ObjectMeta, SecretReference, cel_rules
from loupe_api.constants import KIND_DATASET
from loupe_api.label_qa import LabelQaCounts
from loupe_api.labels import ALL_SOURCES, LabelErrorStats, LabelMappingStats, LabelsSpec
from loupe_api.outliers import RelativeGate
from loupe_api.renditions import Renditions
from loupe_api.retention import RetentionSpec, RetentionStatus
from loupe_api.sampling import EMBEDDING_STRATEGIES, SamplingCounts, SamplingSpec
from loupe_api.synthetic import SyntheticCounts, SyntheticSpec

ImageFormat = Literal["jpeg", "png", "webp", "bmp", "tiff", "gif"]
ALL_IMAGE_FORMATS: tuple[ImageFormat, ...] = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
RayMode = Literal["local", "submit", "kuberay"]
HashKind = Literal["phash", "dhash", "ahash", "whash"]
KeepPolicy = Literal["bestOriginal", "highestResolution", "largestFile", "earliest", "first"]
DuplicateAction = Literal["drop", "flag"]
DropAction = Literal["reject", "quarantine"]
SPLIT_RATIO_TOLERANCE = 1e-6
# Quality-gate defaults, chosen on a development corpus of real photographs (benchmarks/bench_quality.py)
BLUR_THRESHOLD = 0.5
BRIGHT_THRESHOLD = 0.3
LOW_CONTRAST_THRESHOLD = 0.3
# or: the tones span less than a third of the scale with no black below 0.2 (chosen on the tuning half of
# the development photos: recall of squeezed tones 0.83 -> 0.92 there, no clean photo flagged)
LOW_CONTRAST_MAX_RANGE = 0.33
LOW_CONTRAST_MIN_BLACK = 0.2
DARK_THRESHOLD = 0.38  # measured: P 0.96/0.91, R 0.91/0.93 on the tuning / held-out dev photos
NOISE_THRESHOLD = 1.0


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
    region: str | None = Field(
        default=None,
        description="Where the store lives: the S3 region, or a region label for a folder store (eu, "
        "eu-west-1). Every source's residency must contain it (eu contains eu-west-1), or the run is "
        "refused before anything is copied.",
    )
    credentials_secret_ref: SecretReference | None = Field(
        default=None, description="Secret holding the S3 credentials."
    )

    @field_validator("uri")
    @classmethod
    def _store_scheme(cls, uri: str | None) -> str | None:
        """Only what workers' open_store opens: s3://bucket/prefix, file://PATH or a folder path
        (a one-letter scheme is a Windows drive). Anything else (ftp://, s4://) used to fail mid-run."""
        if uri is None:
            return uri
        parsed = urlparse(uri)
        if parsed.scheme == "s3" and not parsed.netloc:
            raise ValueError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        if parsed.scheme not in ("s3", "file", "") and len(parsed.scheme) != 1:
            raise ValueError(
                f"unsupported scheme in {uri!r}: use s3://bucket/prefix, file://PATH or a folder path"
            )
        return uri


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
    """Decompression-bomb guard: images declaring more pixels, or needing more memory to decode, are
    refused from their header, before any pixel is decoded."""

    limit: int = Field(default=100_000_000, ge=1, description="Largest accepted width x height.")
    memory_limit: int = Field(
        default=1 << 30,
        ge=1 << 20,
        description="Largest decode, in bytes: width x height x bytes per pixel of the stored mode "
        "(16-bit and alpha count), for every frame that must be decoded.",
    )
    action: DropAction = Field(
        default="quarantine", description="reject or quarantine (never decoded, so never kept)."
    )


class MaxFileSizeGate(ApiModel):
    """Files larger than the limit are refused from the listing, before a byte is read."""

    limit: int = Field(
        default=1 << 30,
        ge=1,
        description="Largest accepted file size in bytes (default 1 GiB); larger files are rejected "
        "with reason max_file_size and never read.",
    )


class BlurGate(ApiModel):
    """Blurry images. The sharpness score compares the finest detail of the photo with the next-coarser
    detail at the photo's own resolution (its most detailed 512 x 512 px, read from a decode of at least
    512 px on the long side, 1/2 to 1/8 of a large JPEG), so it does not depend on brightness or
    contrast: a dark or low-contrast but sharp photo is not called blurry, and a sharp subject in front of
    a soft background keeps the photo sharp. Sharp camera photos score about 0.6 to 5; a blur of 0.25 % of
    the long side (a slight defocus) brings them to about 0.2 to 0.45."""

    enabled: bool = Field(default=True, description="Check blur.")
    threshold: float = Field(
        default=BLUR_THRESHOLD,
        ge=0,
        description="Sharpness (finest over next-coarser detail energy, at native resolution) below which "
        "an image is blurry.",
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")
    relative: RelativeGate | None = Field(
        default=None,
        description="Also judge samples that are outliers of sharpness (too soft) for their own stratum (camera, site, "
        "any metadata field): robust z-score against the stratum's median and MAD.",
    )


class DarkGate(ApiModel):
    """Under-exposure: the 99th percentile of perceived brightness is below the threshold."""

    enabled: bool = Field(default=True, description="Check under-exposure.")
    threshold: float = Field(
        default=DARK_THRESHOLD, ge=0, le=1, description="Brightness (0-1) of the 99th percentile."
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")
    relative: RelativeGate | None = Field(
        default=None,
        description="Also judge samples that are outliers of brightness (too dark) for their own stratum (camera, site, "
        "any metadata field): robust z-score against the stratum's median and MAD.",
    )


class BrightGate(ApiModel):
    """Over-exposure: more of the frame than the threshold is blown out (a colour channel at 250/255 or
    more, where detail is lost). Camera photos with a bright sky or a saturated flower stay below a
    quarter; one or two stops of over-exposure blow out a third to all of the frame."""

    enabled: bool = Field(default=True, description="Check over-exposure.")
    threshold: float = Field(
        default=BRIGHT_THRESHOLD,
        ge=0,
        le=1,
        description="Share of the pixels (0-1) with a blown-out channel above which an image is "
        "over-exposed.",
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")
    relative: RelativeGate | None = Field(
        default=None,
        description="Also judge samples that are outliers of blown-out share (too bright) for their own stratum (camera, site, "
        "any metadata field): robust z-score against the stratum's median and MAD.",
    )


class LowContrastGate(ApiModel):
    """Low contrast (washed out, hazy, flat tones): the spread of the tones against their level,
    (p99 - p1) / (p99 + p1) of perceived brightness, is below the threshold, or the tones span less than
    maxRange of the brightness scale (p99 - p1) while even the darkest 1 % is lifted above minBlack (no
    true black: squeezed tones of a darker scene, whose ratio stays fair). A change of exposure alone
    does not change the ratio, and a dark photo keeps its blacks, so a dark photo is the dark gate's, not
    this one's; a photo with more than 5 % of its pixels blown out (over-exposure squeezes the tones
    too) is not called low-contrast. Camera photos score about 0.4 to 1 and span 0.4 or more."""

    enabled: bool = Field(default=True, description="Check contrast.")
    threshold: float = Field(
        default=LOW_CONTRAST_THRESHOLD,
        ge=0,
        le=1,
        description="Contrast (0-1) below which an image is low-contrast.",
    )
    max_range: float = Field(
        default=LOW_CONTRAST_MAX_RANGE,
        ge=0,
        le=1,
        description="Tonal range (p99 - p1 of brightness, 0-1) below which an image whose blacks are "
        "lifted (see minBlack) is low-contrast; 0 turns this second test off.",
    )
    min_black: float = Field(
        default=LOW_CONTRAST_MIN_BLACK,
        ge=0,
        le=1,
        description="Black level (p1 of brightness, 0-1) above which the tonal range is checked.",
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")
    relative: RelativeGate | None = Field(
        default=None,
        description="Also judge samples that are outliers of contrast (too flat) for their own stratum (camera, site, "
        "any metadata field): robust z-score against the stratum's median and MAD.",
    )


class NoiseGate(ApiModel):
    """Sensor noise (grain), measured at about the photo's own resolution (a decode of at least 512 px on
    the long side; a JPEG of 2048 px or more at half its size, 1/4 from 4096 px) and only in its flattest
    tenth (sky, walls, skin), so texture such as foliage or a wall is not taken for noise; in a grey photo
    and in a large JPEG grain is told from texture by scale (grain halves when the image is halved,
    texture does not). A photo with no flat part at all (a scene filled with rocks and leaves) can read
    as noisy."""

    enabled: bool = Field(default=True, description="Check noise.")
    threshold: float = Field(
        default=NOISE_THRESHOLD,
        ge=0,
        description="Estimated noise sigma (0-255 scale, in the flattest regions at native resolution) "
        "above which an image is noisy.",
    )
    action: GateAction = Field(default="flag", description="reject, flag or quarantine.")
    relative: RelativeGate | None = Field(
        default=None,
        description="Also judge samples that are outliers of noise (too grainy) for their own stratum (camera, site, "
        "any metadata field): robust z-score against the stratum's median and MAD.",
    )


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
    max_file_size: MaxFileSizeGate = Field(
        default_factory=MaxFileSizeGate, description="Largest file read from a source."
    )
    blur: BlurGate = Field(default_factory=BlurGate, description="Blurry images.")
    dark: DarkGate = Field(default_factory=DarkGate, description="Under-exposed images.")
    bright: BrightGate = Field(default_factory=BrightGate, description="Over-exposed images.")
    noise: NoiseGate = Field(default_factory=NoiseGate, description="Noisy images.")
    low_contrast: LowContrastGate = Field(
        default_factory=LowContrastGate, description="Low-contrast (washed-out, hazy) images."
    )
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
    transforms: bool = Field(
        default=True,
        description="Also match flipped and rotated copies: each new sample's hash is compared in all 8 "
        "flips and quarter turns (hashes are always taken without uniform letterbox or pillarbox bars).",
    )
    crops: bool = Field(
        default=True,
        description="Also match crops, re-framings and small rotations: hashes of sub-windows of each "
        "sample (27 windows, 60-86 % of the area) are compared with other samples' hashes, and (with "
        "transforms) their left-right mirrored hashes, for crops of a mirrored copy, within "
        "crop_distance, and each such candidate pair merges only if keypoint matching (ORB features, "
        "RANSAC similarity transform, the candidate mirrored if it was found mirrored) on reduced "
        "decodes of both confirms it (pHash only).",
    )
    crop_distance: int = Field(
        default=16,
        ge=0,
        le=32,
        description="Largest Hamming distance between a sub-window hash and a whole hash for a crop "
        "candidate (a candidate is only a pair to verify, never a match by itself).",
    )
    max_candidates: int = Field(
        default=8,
        ge=0,
        le=64,
        description="Crop candidates verified per new sample at most (its closest by hash distance): "
        "bounds the verification work per new sample.",
    )
    min_inliers: int = Field(
        default=20,
        ge=4,
        description="Keypoint matches that one rotation, scale and shift must map onto each other for a "
        "crop candidate to be confirmed.",
    )
    min_inlier_ratio: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of the keypoint matches (after the ratio test) that must agree with that "
        "transform for a crop candidate to be confirmed.",
    )


class EmbeddingDedup(ApiModel):
    """Near duplicates by embedding similarity (flips, crops, re-framing that hashes miss), found with an
    approximate nearest-neighbour index kept in storage and updated with each version's new samples."""

    enabled: bool = Field(default=True, description="Find near duplicates by embedding.")
    model: str | None = Field(
        default=None,
        description="Embedding model (default: embedding.model, else the built-in mobilenet_v2).",
    )
    threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Cosine similarity at or above which two samples are near duplicates.",
    )
    verify: bool = Field(
        default=True,
        description="Merge an embedding pair only when ORB keypoints of the two images agree on one "
        "rotation-scale-shift transform, directly or mirrored (perceptual.minInliers and minInlierRatio): "
        "two photos of one scene are often as similar as a photo and its crop.",
    )


class DedupSpec(ApiModel):
    """How duplicates are found and which copy is kept."""

    exact: ExactDedup = Field(default_factory=ExactDedup, description="Exact duplicates.")
    perceptual: PerceptualDedup = Field(default_factory=PerceptualDedup, description="Near duplicates.")
    embedding: EmbeddingDedup | None = Field(
        default=None, description="Near duplicates by embedding similarity (off when absent)."
    )
    action: DuplicateAction = Field(
        default="drop",
        description="drop: only the kept copy enters the dataset; flag: every copy stays, grouped.",
    )
    keep: KeepPolicy = Field(
        default="bestOriginal",
        description="Which copy of a group is kept: bestOriginal (the least-processed copy: not "
        "letterboxed, not stretched, not upscaled, then the highest resolution, the least compressed, "
        "the sharpest), highestResolution, largestFile, earliest (capture time, then first seen) or "
        "first (by source key). A copy already published stays kept.",
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


COMMIT_ANNOTATION = "loupe.dev/commit"  # manual versioning: a new value asks the operator for a version


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
    max_removed_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A run whose source listing has lost more than this fraction of the objects the "
        "current version was built from is refused (reason SuspiciousShrink) and the current version "
        "stays; 1 turns the check off. loupe run --allow-shrink accepts one such run.",
    )


QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


class PodResources(ApiModel):
    """CPU, memory and GPUs of one Ray pod (requests equal limits, as KubeRay recommends)."""

    cpu: str = Field(default="2", pattern=QUANTITY_PATTERN, description="CPU quantity, e.g. 2 or 500m.")
    memory: str = Field(default="4Gi", pattern=QUANTITY_PATTERN, description="Memory quantity, e.g. 4Gi.")
    gpu: int = Field(default=0, ge=0, le=16, description="NVIDIA GPUs (nvidia.com/gpu).")


EmbeddingDevice = Literal["cpu", "gpu"]


class EmbeddingSpec(ApiModel):
    """Image embeddings per sample, stored by (sha256, model) and reused across versions; they feed
    embedding near-duplicates and similarity and text search."""

    enabled: bool = Field(default=False, description="Compute embeddings for every accepted sample.")
    model: str = Field(
        default="mobilenet_v2",
        min_length=1,
        description="A registered model name (mobilenet_v2 is built in) or the URI of an ONNX file "
        "(a path or s3://bucket/key; options in a .json file beside it, including textModel and tokenizer "
        "for the text tower of a CLIP-style pair, which text search then uses).",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Images per inference batch.")
    device: EmbeddingDevice = Field(
        default="cpu", description="cpu, or gpu (CUDA through onnxruntime-gpu; falls back to CPU)."
    )
    num_gpus: float = Field(default=1.0, gt=0, description="GPUs per inference actor when device is gpu.")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs per inference actor.")
    concurrency: int | None = Field(
        default=None, ge=1, description="Inference actors (default: 1 per GPU, or 1 on CPU)."
    )


PrivacyAction = Literal["flag", "reject", "restrict"]
# Detections are stored down to these floors, so raising a threshold later re-decides without decoding.
FACE_SCORE_FLOOR = 0.5
PLATE_VOTES_FLOOR = 3


class FacePrivacy(ApiModel):
    """Faces found by RetinaFace (MobileNet-0.25, ONNX)."""

    enabled: bool = Field(default=False, description="Detect faces.")
    action: PrivacyAction = Field(
        default="flag",
        description="flag: kept with the flag privacy:face; reject: left out; restrict: kept with the "
        "flag restricted:face and left out of exports unless explicitly allowed.",
    )
    min_score: float = Field(
        default=0.9,
        ge=FACE_SCORE_FLOOR,
        le=1,
        description="Detector confidence at or above which a face counts.",
    )


class PlatePrivacy(ApiModel):
    """Licence plates found by OpenCV's Haar cascade (haarcascade_russian_plate_number)."""

    enabled: bool = Field(default=False, description="Detect licence plates.")
    action: PrivacyAction = Field(
        default="flag",
        description="flag: kept with the flag privacy:plate; reject: left out; restrict: kept with the "
        "flag restricted:plate and left out of exports unless explicitly allowed.",
    )
    min_votes: int = Field(
        default=12,
        ge=PLATE_VOTES_FLOOR,
        le=1000,
        description="Overlapping cascade detections (neighbours) at or above which a plate counts.",
    )


class PrivacySpec(ApiModel):
    """Faces and licence plates: boxes and scores stored per sample, then flag, reject or restrict."""

    faces: FacePrivacy = Field(default_factory=FacePrivacy, description="Face detection.")
    plates: PlatePrivacy = Field(default_factory=PlatePrivacy, description="Licence-plate detection.")
    detection_size: int = Field(
        default=640,
        ge=128,
        le=4096,
        description="Long side in pixels images are reduced to for detection: larger finds smaller "
        "faces and plates, at a higher cost.",
    )

    def active(self) -> bool:
        """Whether any detector runs."""
        return self.faces.enabled or self.plates.enabled


class RaySpec(ApiModel):
    """How the job runs."""

    model_config = cel_rules(
        (
            "!has(self.clusterSelector) || size(self.clusterSelector) == 0 || "
            "(!has(self.workers) && !has(self.image) && !has(self.head) && !has(self.worker))",
            "clusterSelector runs on an existing RayCluster: do not also set image, workers, head or worker",
        ),
        (
            "!has(self.address) || !has(self.mode) || self.mode == 'submit'",
            "address is only used by mode submit",
        ),
    )

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
    image: str | None = Field(
        default=None, min_length=1, description="kuberay: image of the Ray pods (default: the operator's)."
    )
    workers: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="kuberay: worker pods besides the head (default: the operator's).",
    )
    head: PodResources | None = Field(default=None, description="kuberay: resources of the head pod.")
    worker: PodResources | None = Field(default=None, description="kuberay: resources of each worker pod.")
    cluster_selector: dict[str, str] = Field(
        default_factory=dict,
        description="kuberay: labels of an existing RayCluster to run on (e.g. ray.io/cluster: shared) "
        "instead of creating one per job.",
    )
    service_account_name: str | None = Field(
        default=None, min_length=1, description="kuberay: ServiceAccount of the Ray pods."
    )

    @model_validator(mode="after")
    def _exclusive_fields(self) -> RaySpec:
        if self.cluster_selector and any(
            value is not None for value in (self.workers, self.image, self.head, self.worker)
        ):
            raise ValueError(
                "clusterSelector runs on an existing RayCluster: do not also set image, workers, head or worker"
            )
        if self.address is not None and self.mode not in (None, "submit"):
            raise ValueError("address is only used by mode submit")
        return self


class HealthSpec(ApiModel):
    """Which metadata slices must be covered, for the health figures of each version."""

    slices: list[list[str]] = Field(
        default_factory=list,
        description="Field combinations whose coverage is checked, e.g. [[camera, timeOfDay], [site]]. "
        "Fields: metadata fields, label, split, and from the capture time hourOfDay and timeOfDay.",
    )
    expected: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Values each field should have (e.g. camera: ['1', ..., '8']); default: the values seen.",
    )
    min_samples: int = Field(default=1, ge=1, description="Fewer samples than this in a slice is a gap.")


class DriftSpec(ApiModel):
    """How incoming data is compared with a reference, and when that counts as drift."""

    threshold: float = Field(
        default=0.25,
        gt=0,
        description="Drift score above which the Dataset reports Drifted (PSI-like scale).",
    )
    reference_version: str | None = Field(
        default=None,
        pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$",
        description="Compare with this version (e.g. the one the current model trained on); default: the parent.",
    )
    min_samples: int = Field(
        default=20,
        ge=2,
        description="Fewer new samples than this are reported, not scored (too few to judge).",
    )


class DatasetSpec(ApiModel):
    """A curated, versioned dataset built from one or more sources."""

    model_config = cel_rules(
        (
            "!has(self.sampling) || !has(self.sampling.strategy) || "
            "!(self.sampling.strategy in ['kCenter', 'uniqueness']) || "
            "(has(self.embedding) && has(self.embedding.enabled) && self.embedding.enabled)",
            "sampling.strategy kCenter and uniqueness select on embeddings: set spec.embedding.enabled: true",
        )
    )

    sources: list[SourceRef] = Field(min_length=1, description="IngestSources the samples come from.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Where versions are stored.")
    quality_gates: QualityGates = Field(default_factory=QualityGates, description="Quality gates.")
    dedup: DedupSpec = Field(default_factory=DedupSpec, description="Deduplication.")
    splits: SplitSpec = Field(default_factory=SplitSpec, description="Train/val/test splits.")
    versioning: VersioningSpec = Field(default_factory=VersioningSpec, description="Versioning policy.")
    ray: RaySpec = Field(default_factory=RaySpec, description="Execution.")
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec, description="Image embeddings.")
    privacy: PrivacySpec = Field(
        default_factory=PrivacySpec, description="Face and licence-plate detection (off by default)."
    )
    health: HealthSpec = Field(default_factory=HealthSpec, description="Health figures and slice coverage.")
    drift: DriftSpec = Field(default_factory=DriftSpec, description="Drift of incoming data.")
    retention: RetentionSpec = Field(
        default_factory=RetentionSpec,
        description="Which versions to keep; the rest are expired and their unshared bytes collected.",
    )
    labels: LabelsSpec = Field(
        default_factory=LabelsSpec,
        description="One taxonomy across sources: the dataset's classes, each source's class names "
        "mapped to them, and what happens to an unmapped class.",
    )
    synthetic: SyntheticSpec = Field(
        default_factory=SyntheticSpec,
        description="Synthetic samples: how they are marked, capped, kept out of val and test, and "
        "compared with real ones.",
    )
    use: Use | None = Field(
        default=None,
        description="What the dataset serves: training, evaluation or research. A source whose "
        "allowedUses do not name it is handled by spec.access; a dataset reading a source with "
        "allowedUses must declare it.",
    )
    access: AccessSpec = Field(
        default_factory=AccessSpec,
        description="The highest source classification the dataset may hold, and whether a source "
        "that breaks a rule has its samples left out or refuses the version.",
    )
    renditions: Renditions = Field(
        default_factory=dict,
        description="Named derived forms of every accepted sample (e.g. train-1024: jpeg, maxSide 1024, "
        "sRGB, EXIF stripped), computed once per sample and parameters, shared across versions and "
        "datasets; exports and readers stream them instead of the raw bytes when asked.",
    )
    sampling: SamplingSpec | None = Field(
        default=None,
        description="A budget of samples (overall, per class, per stratum) chosen by a strategy; the rest "
        "are left out with reason sampling, kept to label next. Off by default.",
    )

    @model_validator(mode="after")
    def _sampling_inputs(self) -> DatasetSpec:
        strategy = self.sampling.strategy if self.sampling is not None else None
        if strategy in EMBEDDING_STRATEGIES and not self.embedding.enabled:
            raise ValueError(
                f"sampling.strategy {strategy} selects on embeddings: set spec.embedding.enabled: true"
            )
        return self

    @model_validator(mode="after")
    def _mapped_sources_exist(self) -> DatasetSpec:
        names = {ref.name for ref in self.sources}
        unknown = sorted(set(self.labels.mapping) - names - {ALL_SOURCES})
        if unknown:
            raise ValueError(
                f"labels.mapping names {', '.join(unknown)}, not a source of spec.sources "
                f"({', '.join(sorted(names))}; * maps every source)"
            )
        golden = self.labels.golden_source()  # a metadata tag names no source
        if golden is not None and golden not in names:
            raise ValueError(
                f"labels.golden names {golden}, not a source of spec.sources ({', '.join(sorted(names))}; "
                "or a tag metadata.NAME=VALUE)"
            )
        return self


class VersionSummary(ApiModel):
    """One committed version, as listed in status."""

    version: str = Field(description="Semantic version.")
    created: datetime = Field(description="When it was committed.")
    manifest_uri: str = Field(
        description="Manifest of the version: its part list (manifest.parts.json, naming Parquet parts) "
        "or, for versions written before parts, one Parquet file."
    )
    samples: int = Field(description="Samples in the version.")
    digest: str = Field(description="Digest of the manifest content.")


class DatasetStats(ApiModel):
    """Counts of the latest run."""

    scanned: int = Field(default=0, description="Objects listed in the sources.")
    processed: int = Field(
        default=0,
        description="Objects read and decoded in this run (new or changed), whatever curation then did "
        "with them; not those carried unchanged from the parent, nor those left unread (access rules, "
        "maxFileSize, unreadable).",
    )
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
    embedding_model: str | None = Field(
        default=None, description="Id of the model that embedded the samples."
    )
    embedded: int = Field(default=0, description="Samples with a stored embedding.")
    embeddings_computed: int = Field(
        default=0, description="Embeddings computed in this run (others reused)."
    )
    embedding_pairs: int = Field(
        default=0, description="Near-duplicate pairs found by embedding similarity (before grouping)."
    )
    renditions_computed: int = Field(
        default=0, description="Renditions (spec.renditions) rendered and written by this run."
    )
    renditions_reused: int = Field(
        default=0,
        description="Renditions already in the store (an earlier version or another dataset made them).",
    )
    privacy: dict[str, int] = Field(
        default_factory=dict,
        description="Privacy counts: samples with a face or plate (face, plate), restricted samples "
        "(restricted) and samples rejected for privacy (rejected).",
    )
    label_mapping: LabelMappingStats | None = Field(
        default=None, description="What spec.labels did: unmapped classes per source, renamed samples."
    )
    label_qa: LabelQaCounts | None = Field(
        default=None,
        description="Label QA across label sets (counts; agreement figures are in the version record).",
    )
    access: AccessStats | None = Field(
        default=None,
        description="Residency and access decisions per source: its rules, included or excluded, why.",
    )
    label_errors: LabelErrorStats | None = Field(
        default=None, description="What spec.labels.errors found: samples checked, candidates kept."
    )
    sampling: SamplingCounts | None = Field(
        default=None, description="What spec.sampling did: candidates, selected, left out (counts)."
    )


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
    commit_request: str = Field(
        default="",
        description="In manual versioning mode, the value of the loupe.dev/commit annotation this job "
        "was started for.",
    )


class HealthSummary(ApiModel):
    """Health of the current version in a few numbers (the full figures are in storage)."""

    classes: int = Field(default=0, description="Distinct labels.")
    imbalance: float | None = Field(default=None, description="Largest class over smallest (1 is balanced).")
    duplicate_rate: float = Field(default=0.0, description="Exact and near duplicates over all samples seen.")
    flagged_rate: float = Field(default=0.0, description="Accepted samples with a quality flag.")
    gaps: list[str] = Field(default_factory=list, description="Uncovered slices, in words (at most 10).")
    newest_sample: str | None = Field(default=None, description="Latest capture time among the samples.")
    report_uri: str | None = Field(default=None, description="Full health and drift figures (JSON).")


class DriftSummary(ApiModel):
    """Drift of the samples new in this version against a reference version."""

    score: float = Field(description="Largest drift figure (PSI scale: above 0.25 is significant).")
    reference: str = Field(description="Reference version.")
    new_samples: int = Field(default=0, description="Samples compared with the reference.")
    embedding: float | None = Field(default=None, description="Embedding two-sample statistic (0: same).")
    top: list[str] = Field(default_factory=list, description="The figures that drifted most, in words.")
    exceeded: bool = Field(default=False, description="Whether the score is above spec.drift.threshold.")


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
    health: HealthSummary | None = Field(default=None, description="Health of the current version.")
    drift: DriftSummary | None = Field(default=None, description="Drift of the current version's new data.")
    retention: RetentionStatus | None = Field(
        default=None,
        description="The operator's last gc job (spec.retention.schedule): what it expired and freed.",
    )
    synthetic: SyntheticCounts | None = Field(
        default=None,
        description="Real and synthetic samples of the current version (when it has synthetic ones).",
    )


class Dataset(ApiModel):
    """A curated, versioned image dataset."""

    api_version: Literal["loupe.dev/v1alpha1"] = Field(
        default="loupe.dev/v1alpha1", description="loupe.dev/v1alpha1"
    )
    kind: Literal["Dataset"] = Field(default=KIND_DATASET, description="Dataset")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: DatasetSpec = Field(description="What the dataset must satisfy.")
    status: DatasetStatus | None = Field(default=None, description="Observed state.")
