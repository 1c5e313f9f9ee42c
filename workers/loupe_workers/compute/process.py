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
from loupe_api.samples import SampleRow, Status
from loupe_storage.store import ObjectStore, put_blob
from loupe_workers.curation.privacy import Detectors, record_fields
from loupe_workers.ingest.sources import UNREADABLE, ListedObject, SourceReadError
from loupe_workers.media import decode as media

PROCESSING_VERSION = "8"  # bump when per-object results change, so stored results are recomputed
# 2: decode before EXIF (undecodable PNGs were accepted), PNG chunk CRCs, 16-bit images shifted to 8 bits
# 3: hashes taken without uniform borders, plus the hashes of the 7 flips and quarter turns
# 4: blur, noise and over-exposure measured anew (sharpness, noise, clipped), contrast added
# 6: black_level and tonal_range added (the low-contrast gate reads them)
# 7: clipped read on the detail image; noise of texture that does not halve when halved taken out


@dataclass(frozen=True)
class ProcessSettings:
    """Inputs that change per-object results; a stored record is reused only under equal settings."""

    hash_kind: str
    max_pixels: int
    privacy: Detectors | None = None  # None (privacy off) keeps the key, so stored results are reused
    memory_limit: int = media.DEFAULT_MEMORY_LIMIT  # largest decode in bytes (maxPixels.memoryLimit)

    def key(self) -> str:
        base = f"v{PROCESSING_VERSION}:{self.hash_kind}:{self.max_pixels}:{self.memory_limit}"
        return f"{base}:{self.privacy.key()}" if self.privacy else base


def _base(obj: ListedObject, settings: ProcessSettings) -> SampleRow:
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


def _measures(metrics: dict[str, float]) -> SampleRow:
    """The measure columns of media.analyze_image's metrics (each one named after its column)."""
    return {
        "brightness_p99": metrics["brightness_p99"],
        "brightness_p5": metrics["brightness_p5"],
        "clipped": metrics["clipped"],
        "contrast": metrics["contrast"],
        "black_level": metrics["black_level"],
        "tonal_range": metrics["tonal_range"],
        "sharpness": metrics["sharpness"],
        "noise": metrics["noise"],
        "entropy": metrics["entropy"],
        "aspect_ratio": metrics["aspect_ratio"],
    }


def _analysis_fields(analysis: media.ImageAnalysis, settings: ProcessSettings) -> SampleRow:
    return {
        "status": Status.OK,
        "fail_reason": None,
        "fail_detail": None,
        "format": analysis.format,
        "width": analysis.width,
        "height": analysis.height,
        **_measures(analysis.metrics),
        "hash_kind": settings.hash_kind,
        "hash": analysis.hashes[settings.hash_kind],
        "hash_variants": analysis.hash_variants,
        "exif": json.dumps(analysis.exif, sort_keys=True),
    }


def _failure(error: media.ImageRejected) -> SampleRow:
    return {
        "status": Status.FAILED,
        "fail_reason": error.reason,
        "fail_detail": error.detail,
        "format": error.format,
        "width": error.width or None,
        "height": error.height or None,
        "exif": "{}",
    }


def process_image(obj: ListedObject, data: bytes, blobs: ObjectStore, settings: ProcessSettings) -> SampleRow:
    record = _base(obj, settings)
    sha = hashlib.sha256(data).hexdigest()
    record["sha256"] = sha
    record["sample_id"] = sha
    try:
        analysis = media.analyze_image(
            data,
            max_pixels=settings.max_pixels,
            memory_limit=settings.memory_limit,
            hash_kind=settings.hash_kind,
        )
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
    limits = {"max_pixels": settings.max_pixels, "memory_limit": settings.memory_limit}
    record.update(record_fields(data, settings.privacy, **limits))
    return record


def _unread(obj: ListedObject, settings: ProcessSettings, reason: str, detail: str) -> SampleRow:
    """The record of a listed object whose bytes were never read (no blob, an id of its own)."""
    sample_id = obj.unread_id()
    record = _base(obj, settings) | {"sha256": sample_id, "sample_id": sample_id, "media": obj.kind}
    return record | _failure(media.ImageRejected(reason, detail))


def _frame_selector(spec: IngestSourceSpec) -> tuple[int | None, float | None]:
    if spec.video.every_nth_frame is not None:
        return spec.video.every_nth_frame, None
    return None, spec.video.fps if spec.video.fps is not None else 1.0


# A hostile header may declare any frame rate; the decode budget trusts it only within these bounds.
_RATE_BOUNDS = (1.0, 1000.0)


def _decode_budget(stream: Any, nth: int | None, fps: float | None, max_frames: int) -> int:
    """How many frames to decode at most while looking for the sampled ones.

    Every nth frame needs ``max_frames * nth`` decodes; ``fps`` sampling needs about
    ``max_frames * rate / fps``, with the stream's declared rate taken within ``_RATE_BOUNDS`` (30 fps
    when it declares none). Timestamps that stall, go backwards or jump therefore stop the decode here
    instead of at the end of a stream of any length.
    """
    import math

    if nth is not None:
        step = nth
    else:
        assert fps is not None
        declared = stream.average_rate or stream.guessed_rate
        rate = float(declared) if declared else 30.0
        rate = min(max(rate, _RATE_BOUNDS[0]), _RATE_BOUNDS[1])
        step = max(1, math.ceil(rate / fps))
    return max_frames * step + step


def _refused_size(logs: list[tuple[int, str, str]]) -> tuple[int, int] | None:
    """The frame size FFmpeg refused under its max_pixels option, from its captured log."""
    import re

    for _level, _name, message in reversed(logs):  # the latest refusal
        found = re.search(r"Picture size (\d+)x(\d+) exceeds specified max pixel count", message)
        if found:
            return int(found[1]), int(found[2])
    return None


def process_video(
    obj: ListedObject, data: bytes, blobs: ObjectStore, settings: ProcessSettings, spec: IngestSourceSpec
) -> list[SampleRow]:
    """Frames sampled from a video, each a sample with frame index and timestamp.

    Decompression bombs never reach memory: FFmpeg's own ``max_pixels`` option (the dataset's limit)
    makes the stream probe and every decode refuse a larger picture before allocating it, a stream
    declaring a larger frame size is refused before any frame is decoded, and each decoded frame is
    checked again before it is converted (a stream may change size mid-stream). Decoding stops after
    ``_decode_budget`` frames, whatever the timestamps say.
    """
    import math

    import av
    import av.logging
    from PIL import Image

    video_sha = hashlib.sha256(data).hexdigest()
    failed = _base(obj, settings) | {"sha256": video_sha, "sample_id": video_sha, "media": "video"}

    def refused(reason: str, detail: str, width: int = 0, height: int = 0) -> SampleRow:
        return failed | _failure(media.ImageRejected(reason, detail, width=width, height=height))

    def over_limit(what: str, width: int, height: int) -> SampleRow:
        pixels = width * height
        detail = f"{what} {width}x{height} = {pixels} pixels, above the limit of {settings.max_pixels}"
        return refused("max_pixels", detail, width, height)

    limit = {"max_pixels": str(max(1, min(settings.max_pixels, (1 << 63) - 1)))}
    records: list[SampleRow] = []
    stopped: SampleRow | None = None  # why decoding stopped early, recorded next to the frames taken
    decoded = budget = 0
    # FFmpeg reports a refused size only in its log: capture its errors, each one (PyAV drops a message
    # equal to the previous one, which would hide the second bomb of a run)
    previous_level, previous_skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture(True) as logs:
            try:
                container = av.open(io.BytesIO(data), mode="r", options=limit)
            except Exception as error:
                if data:
                    put_blob(blobs, data, video_sha)
                size = _refused_size(logs)
                if size is not None:
                    return [over_limit("declares frames of", *size)]
                return [refused("corrupt", f"not a readable video: {error}")]
            try:
                with container:
                    if not container.streams.video:
                        put_blob(blobs, data, video_sha)
                        return [refused("corrupt", "no video stream")]
                    stream = container.streams.video[0]
                    declared = (int(stream.codec_context.width or 0), int(stream.codec_context.height or 0))
                    size = _refused_size(logs) or declared
                    if size[0] * size[1] > settings.max_pixels:  # before any frame is decoded
                        put_blob(blobs, data, video_sha)
                        return [over_limit("declares frames of", *size)]
                    stream.codec_context.options = limit
                    nth, fps = _frame_selector(spec)
                    budget = _decode_budget(stream, nth, fps, spec.video.max_frames_per_video)
                    next_time = 0.0
                    for index, frame in enumerate(container.decode(stream)):
                        if len(records) >= spec.video.max_frames_per_video or index >= budget:
                            break
                        decoded = index + 1
                        if frame.width * frame.height > settings.max_pixels:  # the size changed mid-stream
                            stopped = over_limit(f"frame {index} is", frame.width, frame.height)
                            break
                        time = float(frame.time) if frame.time is not None else float(index * Fraction(1, 30))
                        if not math.isfinite(time):
                            time = float(index * Fraction(1, 30))
                        if nth is not None:
                            if index % nth:
                                continue
                        else:
                            assert fps is not None
                            if time + 1e-6 < next_time:
                                continue
                            # the first sample time after this frame, computed: a jump of 10^14 s is one step
                            step = 1.0 / fps
                            next_time = max(next_time + step, (math.floor(time / step + 1e-6) + 1) * step)
                        image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
                        buffer = io.BytesIO()
                        image.save(buffer, format="PNG", compress_level=1)
                        frame_bytes = buffer.getvalue()
                        del image
                        record = process_image(obj, frame_bytes, blobs, settings)
                        record.update(
                            {
                                "media": "frame",
                                "frame_index": index,
                                "frame_time": round(time, 6),
                                "video_sha256": video_sha,
                                "extension": ".png",
                            }
                        )
                        records.append(record)
            except Exception as error:
                size = _refused_size(logs)
                if size is not None:  # FFmpeg refused a frame that grew past the limit mid-stream
                    stopped = over_limit(f"frame {decoded} is", *size)
                elif not records:
                    put_blob(blobs, data, video_sha)
                    return [refused("corrupt", f"video decode failed: {error}")]
    finally:
        av.logging.set_level(previous_level)
        av.logging.set_skip_repeated(previous_skip)
    put_blob(blobs, data, video_sha)
    if stopped is not None:
        return [*records, stopped]
    if not records:
        if budget and decoded >= budget:
            return [refused("corrupt", f"no frame to sample in the first {budget} decoded frames")]
        return [refused("corrupt", "video has no decodable frames")]
    return records


def process_object(
    obj: ListedObject,
    source: ObjectStore,
    blobs: ObjectStore,
    settings: ProcessSettings,
    spec: IngestSourceSpec,
) -> list[SampleRow]:
    """Every record one listed object yields; never raises for bad content."""
    if obj.problem is not None:  # listed with a reason, never read
        return [_unread(obj, settings, obj.problem, obj.detail or obj.problem)]
    try:
        data = source.get(obj.key)
    except KeyError:
        return [_unread(obj, settings, UNREADABLE, "deleted after it was listed")]
    except SourceReadError as error:
        return [_unread(obj, settings, UNREADABLE, error.detail)]
    if obj.kind == "video" and media.sniff_format(data) == "video":
        return process_video(obj, data, blobs, settings, spec)
    return [process_image(obj, data, blobs, settings)]
