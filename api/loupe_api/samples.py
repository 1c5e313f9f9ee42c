"""The closed vocabularies of a manifest row, and one typed definition of the row itself.

Every vocabulary is a ``StrEnum``: a member *is* its string (``Disposition.ACCEPTED == "accepted"``, it
hashes, formats, JSON-encodes and converts to Arrow as the string), so rows built with members and rows
read back from Parquet (plain strings) compare equal, and the Parquet written is byte-for-byte what string
literals gave: content-addressed manifest parts keep their sha256 (tests/storage/test_sample_rows.py).

Open vocabularies stay plain strings: ``reason`` (gate names, fail reasons, ``privacy:KIND``,
``relative:GATE``, sampling and access reasons...), ``fail_reason`` (whatever a decoder reports) and
``keep_reason`` (a sentence: "best original: larger resolution", "published earlier").
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypedDict


class Disposition(StrEnum):
    """What curation decided about a sample: kept in the version, or left out and why."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"  # a copy dropped by dedup (the kept copy is accepted)


LEFT_OUT = frozenset({Disposition.REJECTED, Disposition.QUARANTINED})  # dropped by a gate (not by dedup)


class Gate(StrEnum):
    """The absolute quality gates (spec.qualityGates) that judge a decoded sample, by the name a row's
    ``reason`` or ``flags`` carry. (corrupt and maxPixels only judge undecodable files: their name is the
    row's ``fail_reason``; they never flag.)"""

    FORMAT = "format"
    EXTENSION = "extension"
    RESOLUTION = "resolution"
    ASPECT_RATIO = "aspect_ratio"
    LOW_INFORMATION = "low_information"
    DARK = "dark"
    BRIGHT = "bright"
    LOW_CONTRAST = "low_contrast"
    BLUR = "blur"
    NOISE = "noise"


RELATIVE_PREFIX = "relative:"  # a dataset-relative verdict of a gate (curation.outliers)
PRIVACY_PREFIX = "privacy:"  # a face or plate found (privacy action flag; reason of a privacy reject)
RESTRICTED_PREFIX = "restricted:"  # a face or plate found (privacy action restrict): left out of exports


class PrivacyKind(StrEnum):
    """What the privacy detectors look for."""

    FACE = "face"
    PLATE = "plate"


class Flag(StrEnum):
    """Every flag a row's ``flags`` can carry: an absolute gate whose action is flag, a relative gate's
    verdict (``relative:GATE``, the gates with a relative section), or a privacy finding."""

    FORMAT = Gate.FORMAT.value
    EXTENSION = Gate.EXTENSION.value
    RESOLUTION = Gate.RESOLUTION.value
    ASPECT_RATIO = Gate.ASPECT_RATIO.value
    LOW_INFORMATION = Gate.LOW_INFORMATION.value
    DARK = Gate.DARK.value
    BRIGHT = Gate.BRIGHT.value
    LOW_CONTRAST = Gate.LOW_CONTRAST.value
    BLUR = Gate.BLUR.value
    NOISE = Gate.NOISE.value
    RELATIVE_BLUR = RELATIVE_PREFIX + Gate.BLUR.value
    RELATIVE_NOISE = RELATIVE_PREFIX + Gate.NOISE.value
    RELATIVE_DARK = RELATIVE_PREFIX + Gate.DARK.value
    RELATIVE_BRIGHT = RELATIVE_PREFIX + Gate.BRIGHT.value
    RELATIVE_LOW_CONTRAST = RELATIVE_PREFIX + Gate.LOW_CONTRAST.value
    PRIVACY_FACE = PRIVACY_PREFIX + PrivacyKind.FACE.value
    PRIVACY_PLATE = PRIVACY_PREFIX + PrivacyKind.PLATE.value
    RESTRICTED_FACE = RESTRICTED_PREFIX + PrivacyKind.FACE.value
    RESTRICTED_PLATE = RESTRICTED_PREFIX + PrivacyKind.PLATE.value

    @staticmethod
    def relative(gate: str) -> Flag:
        """The flag of a relative verdict of ``gate`` (ValueError: a gate without a relative section)."""
        return Flag(RELATIVE_PREFIX + gate)

    @staticmethod
    def privacy(kind: str, *, restricted: bool = False) -> Flag:
        return Flag((RESTRICTED_PREFIX if restricted else PRIVACY_PREFIX) + kind)


class Status(StrEnum):
    """Whether the per-object work could read and decode the sample (``fail_reason`` says why not)."""

    OK = "ok"
    FAILED = "failed"


class DupKind(StrEnum):
    """Why a member of a duplicate group is a copy of its kept member."""

    EXACT = "exact_duplicate"  # the same bytes, or the same pixels
    NEAR = "near_duplicate"  # a perceptual-hash match, verified


class LabelConsensus(StrEnum):
    """How the consensus label of a sample labelled by several sources was reached."""

    SINGLE = "single"  # one set had a label
    UNANIMOUS = "unanimous"
    GOLDEN = "golden"  # the sets disagreed; the golden source decided
    MAJORITY = "majority"
    TIE = "tie"  # no label won: the sample goes to review


class SampleRow(TypedDict, total=False):
    """One manifest row (accepted or not) as the pipeline builds it and ``to_pylist`` reads it back: one
    key per column of ``loupe_workers.storage.manifest.SCHEMA``, in its order, with the Python type of
    the column (tests/storage/test_sample_rows.py holds the two together). Every column is nullable in
    Parquet; the ``X | None`` ones are null in practice (a failed decode has no measures, older manifests
    lack newer columns), the others are set on every row the pipeline writes. Enum columns hold the
    member or, read back, its plain string: typed ``str``, which both are. JSON columns hold JSON text."""

    sample_id: str
    sha256: str
    disposition: str  # Disposition
    reason: str | None
    detail: str | None
    source: str
    key: str
    uri: str
    etag: str | None
    size: int | None
    blob_uri: str | None
    media: str  # image, frame (of a video) or video (one that could not be read)
    frame_index: int | None
    frame_time: float | None
    video_sha256: str | None
    format: str | None
    extension: str | None
    width: int | None
    height: int | None
    brightness_p99: float | None
    brightness_p5: float | None
    clipped: float | None
    contrast: float | None
    black_level: float | None
    tonal_range: float | None
    sharpness: float | None
    noise: float | None
    entropy: float | None
    aspect_ratio: float | None
    hash_kind: str | None
    hash: str | None
    hash_variants: list[str] | None
    pixel_sha256: str | None
    keep_measures: str | None
    exif: str | None
    privacy: str | None
    metadata: str | None
    label: str | None
    labels: str | None
    label_sets: str | None
    label_support: float | None
    label_consensus: str | None  # LabelConsensus
    flags: list[str] | None  # Flag
    split: str | None
    synthetic: bool | None
    dup_group: str | None
    dup_kind: str | None  # DupKind
    duplicate_of: str | None
    keep_reason: str | None
    status: str  # Status
    fail_reason: str | None
    fail_detail: str | None
    processing_key: str | None
    renditions: str | None


class CurationRow(SampleRow, total=False):
    """A manifest row while a run curates it: the columns, plus what curation reads and the manifest
    does not store (``manifest.to_table`` writes the columns only, so the parts are the same bytes)."""

    capture_time: str | None  # the metadata's capture time: what dedup's keep policy "earliest" orders by


class LineageEdge(TypedDict, total=False):
    """One lineage edge (listed object -> sample) as a version's lineage reads back: the version, then one
    key per column of ``loupe_workers.storage.manifest.LINEAGE_SCHEMA`` in its order (parts store no
    ``version``: the reader adds it from the part list). ``reason`` and ``detail`` are null on accepted
    edges and in older lineage parts."""

    version: str
    sample_id: str
    disposition: str  # Disposition
    source: str
    key: str
    uri: str
    etag: str | None
    raw_sha256: str  # the video's sha256 for a frame, else the sample's
    blob: str
    frame_index: int | None
    reason: str | None
    detail: str | None
