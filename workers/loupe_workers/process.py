"""Per-object work that runs on Ray workers: read, store by content, decode once, measure."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import PurePosixPath
from typing import Any

from loupe_api.ingest import IngestSourceSpec
from loupe_workers import media
from loupe_workers.privacy import Detectors, record_fields
from loupe_workers.sources import ListedObject
from loupe_workers.store import ObjectStore, put_blob

PROCESSING_VERSION = "1"  # bump when per-object results change, so stored results are recomputed
Record = dict[str, Any]


@dataclass(frozen=True)
class ProcessSettings:
    """Inputs that change per-object results; a stored record is reused only under equal settings."""

    hash_kind: str
    max_pixels: int
    privacy: Detectors | None = None  # None (privacy off) keeps the key, so stored results are reused

    def key(self) -> str:
        base = f"v{PROCESSING_VERSION}:{self.hash_kind}:{self.max_pixels}"
        return f"{base}:{self.privacy.key()}" if self.privacy else base


def _base(obj: ListedObject, settings: ProcessSettings) -> Record:
    return {
        "source": obj.source,
        "key": obj.key,
        "etag": obj.etag,
        "size": obj.size,
        "uri": obj.uri,
        "extension": PurePosixPath(obj.key).suffix.lower(),
        "processing_key": settings.key(),
        "media": "image",
        "frame_index": None,
        "frame_time": None,
        "video_sha256": None,
        "pixel_sha256": None,
    }


def _analysis_fields(analysis: media.ImageAnalysis, settings: ProcessSettings) -> Record:
    return {
        "status": "ok",
        "fail_reason": None,
        "fail_detail": None,
        "format": analysis.format,
        "width": analysis.width,
        "height": analysis.height,
        **analysis.metrics,
        "hash_kind": settings.hash_kind,
        "hash": analysis.hashes[settings.hash_kind],
        "exif": json.dumps(analysis.exif, sort_keys=True),
    }


def _failure(error: media.ImageRejected) -> Record:
    return {
        "status": "failed",
        "fail_reason": error.reason,
        "fail_detail": error.detail,
        "format": error.format,
        "width": error.width or None,
        "height": error.height or None,
        "exif": "{}",
    }


def process_image(obj: ListedObject, data: bytes, blobs: ObjectStore, settings: ProcessSettings) -> Record:
    record = _base(obj, settings)
    sha = hashlib.sha256(data).hexdigest()
    record["sha256"] = sha
    record["sample_id"] = sha
    try:
        analysis = media.analyze_image(data, max_pixels=settings.max_pixels, hash_kind=settings.hash_kind)
    except media.ImageRejected as error:
        record.update(_failure(error))
        if data:
            put_blob(blobs, data, sha)  # kept so a quarantined file can be inspected
        return record
    except Exception as error:  # anything else a hostile file can trigger must not stop the run
        record.update(_failure(media.ImageRejected("corrupt", f"{type(error).__name__}: {error}")))
        return record
    put_blob(blobs, data, sha)
    record.update(_analysis_fields(analysis, settings))
    record.update(record_fields(data, settings.privacy, max_pixels=settings.max_pixels))
    return record


def _frame_selector(spec: IngestSourceSpec) -> tuple[int | None, float | None]:
    if spec.video.every_nth_frame is not None:
        return spec.video.every_nth_frame, None
    return None, spec.video.fps if spec.video.fps is not None else 1.0


def process_video(
    obj: ListedObject, data: bytes, blobs: ObjectStore, settings: ProcessSettings, spec: IngestSourceSpec
) -> list[Record]:
    """Frames sampled from a video, each a sample with frame index and timestamp."""
    import av
    from PIL import Image

    video_sha = hashlib.sha256(data).hexdigest()
    failed = _base(obj, settings) | {"sha256": video_sha, "sample_id": video_sha, "media": "video"}
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as error:
        if data:
            put_blob(blobs, data, video_sha)
        return [failed | _failure(media.ImageRejected("corrupt", f"not a readable video: {error}"))]
    records: list[Record] = []
    try:
        with container:
            stream = container.streams.video[0]
            nth, fps = _frame_selector(spec)
            next_time = 0.0
            for index, frame in enumerate(container.decode(stream)):
                if len(records) >= spec.video.max_frames_per_video:
                    break
                time = float(frame.time) if frame.time is not None else float(index * Fraction(1, 30))
                if nth is not None:
                    if index % nth:
                        continue
                else:
                    assert fps is not None
                    if time + 1e-6 < next_time:
                        continue
                    next_time += 1.0 / fps
                    while next_time <= time:
                        next_time += 1.0 / fps
                image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=1)
                frame_bytes = buffer.getvalue()
                record = process_image(obj, frame_bytes, blobs, settings)
                record.update(
                    media="frame",
                    frame_index=index,
                    frame_time=round(time, 6),
                    video_sha256=video_sha,
                    extension=".png",
                )
                records.append(record)
    except Exception as error:
        if not records:
            put_blob(blobs, data, video_sha)
            return [failed | _failure(media.ImageRejected("corrupt", f"video decode failed: {error}"))]
    put_blob(blobs, data, video_sha)
    if not records:
        return [failed | _failure(media.ImageRejected("corrupt", "video has no decodable frames"))]
    return records


def process_object(
    obj: ListedObject,
    source: ObjectStore,
    blobs: ObjectStore,
    settings: ProcessSettings,
    spec: IngestSourceSpec,
) -> list[Record]:
    """Every record one listed object yields; never raises for bad content."""
    try:
        data = source.get(obj.key)
    except KeyError:
        return []  # removed between listing and processing: the next run sees it gone
    if obj.kind == "video" and media.sniff_format(data) == "video":
        return process_video(obj, data, blobs, settings, spec)
    return [process_image(obj, data, blobs, settings)]
