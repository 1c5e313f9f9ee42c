"""Exports of a version in the layouts training code reads: ImageFolder, COCO, YOLO, Hugging Face, WebDataset.

Every writer takes the samples to export (accepted rows, restricted ones already left out by the caller)
and streams their bytes one blob at a time from the store: nothing holds more than one image in memory.
Each exported file carries the stored bytes unchanged (its sha256 is the manifest's), named
``<sample_id>.<real extension>`` (the format found in the bytes, not the source file's extension).

Boxes come from the labels imported with the source (COCO JSON: pixels ``[x, y, w, h]``; YOLO txt:
normalised ``[cx, cy, w, h]``) and are written in the target's own convention. Coordinates are those of
the stored file (EXIF orientation not applied), which is what the labels were drawn on. A COCO
annotation without a ``bbox`` contributes its category only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from loupe_api.samples import SampleRow
from loupe_storage.store import ObjectStore, StoreError, blob_key

FORMATS = ("imagefolder", "coco", "yolo", "hf", "webdataset")
# real format (as the manifest stores it, lower-case) -> file extension
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tif", "gif": "gif"}
UNLABELLED = "unlabelled"
DEFAULT_SHARD_SAMPLES = 1000
LISTING_FIELDS = ["path", "sample_id", "sha256", "label", "split", "source_uri"]
_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class ExportError(RuntimeError):
    """An export that cannot be written; the message is one line naming the sample or the setting."""


@dataclass(frozen=True)
class Box:
    """One object box in pixels of the stored image: top-left corner, width and height."""

    category: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Sample:
    """What an export needs of one manifest row."""

    sample_id: str
    sha256: str
    split: str
    label: str | None
    extension: str
    width: int
    height: int
    source_uri: str
    boxes: tuple[Box, ...] = ()
    classes: tuple[str, ...] = ()  # every class named by its annotations, boxes or not
    metadata: Mapping[str, str] = field(default_factory=dict)
    # a rendition's object and digest (export --rendition), read instead of the raw blob
    data_key: str | None = None
    data_sha256: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.sample_id}.{self.extension}"


@dataclass
class ExportResult:
    """What was written: samples per split, boxes, and the files a reader opens first."""

    format: str
    out_dir: Path
    splits: dict[str, int] = field(default_factory=dict)
    boxes: int = 0
    categories: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(self.splits.values())


def extension_of(fmt: object) -> str:
    """The file extension of a stored format name (any case); 'bin' for an unknown one."""
    return EXTENSIONS.get(str(fmt or "").lower(), "bin")


def pixel_boxes(labels: Mapping[str, Any], width: int, height: int) -> tuple[Box, ...]:
    """The boxes of a manifest ``labels`` object in pixels: YOLO's normalised centre boxes are scaled by
    the image size, COCO's pixel boxes kept; annotations without coordinates are skipped."""
    out: list[Box] = []
    for box in labels.get("boxes") or ():
        values = box.get("bbox")
        if not isinstance(values, list | tuple) or len(values) != 4:
            continue
        a, b, c, d = (float(v) for v in values)
        if box.get("format") == "yolo":
            a, b, c, d = (a - c / 2) * width, (b - d / 2) * height, c * width, d * height
        out.append(Box(str(box.get("class")), round(a, 3), round(b, 3), round(c, 3), round(d, 3)))
    return tuple(out)


def samples_from_rows(
    rows: Iterable[SampleRow], rendition: str | None = None, store: ObjectStore | None = None
) -> list[Sample]:
    """Export samples of manifest rows, ordered by split, then sample id; with ``rendition``, each
    sample's rendition of that name (spec.renditions) instead of its raw bytes, boxes moved onto it
    (``store``: where the raw headers are read for the EXIF orientation of samples with boxes)."""
    out = []
    for row in rows:
        if rendition is not None:
            out.append(_rendition_sample(row, rendition, store))
            continue
        labels = json.loads(row.get("labels") or "{}") or {}
        width, height = int(row.get("width") or 0), int(row.get("height") or 0)
        metadata = json.loads(row.get("metadata") or "{}") or {}
        out.append(
            Sample(
                sample_id=str(row["sample_id"]),
                sha256=str(row["sha256"]),
                split=str(row.get("split") or "all"),
                label=row.get("label") or None,
                extension=extension_of(row.get("format")),
                width=width,
                height=height,
                source_uri=str(row.get("uri") or ""),
                boxes=pixel_boxes(labels, width, height),
                classes=tuple(str(b.get("class")) for b in labels.get("boxes") or () if b.get("class")),
                metadata={str(k): str(v) for k, v in metadata.items()},
            )
        )
    return sorted(out, key=lambda s: (s.split, s.sample_id))


def categories(samples: Iterable[Sample]) -> list[str]:
    """Every class of the export, sorted: sample labels and box classes. One list for every split."""
    names: set[str] = set()
    for sample in samples:
        names.update(sample.classes)
        names.update(box.category for box in sample.boxes)
        if sample.label:
            names.add(sample.label)
    return sorted(names)


def read_blob(store: ObjectStore, sample: Sample) -> bytes:
    """The stored bytes of one sample, checked against its sha256; a one-line ExportError otherwise."""
    where = f"sample {sample.sample_id} ({sample.source_uri or 'no source URI'})"
    key, expected = sample.data_key or blob_key(sample.sha256), sample.data_sha256 or sample.sha256
    try:
        data = store.get(key)
    except KeyError as exc:
        raise ExportError(f"{where}: its blob {key} is missing from {store.uri}") from exc
    except StoreError as exc:
        raise ExportError(f"{where}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != expected:
        raise ExportError(f"{where}: its blob {key} in {store.uri} is corrupt (sha256 differs)")
    return data


def folder_name(label: str | None) -> str:
    """A label as one safe path segment (no separators, never '.' or '..')."""
    name = re.sub(r"[/\\\x00]", "_", label or UNLABELLED)
    return "_" + name if name in (".", "..") else name


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_text(path: Path, text: str) -> None:
    _write(path, text.encode())


def _listing(out_dir: Path, listed: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LISTING_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(listed)
    _write_text(out_dir / "manifest.csv", buffer.getvalue())


def _listed(path: str, sample: Sample) -> dict[str, str]:
    return {"path": path, "sample_id": sample.sample_id, "sha256": sample.sha256, "label": sample.label or "",
            "split": sample.split, "source_uri": sample.source_uri}  # fmt: skip


def _result(fmt: str, out_dir: Path, samples: list[Sample], files: list[str]) -> ExportResult:
    return ExportResult(
        format=fmt,
        out_dir=out_dir,
        splits=dict(Counter(s.split for s in samples)),
        boxes=sum(len(s.boxes) for s in samples),
        categories=categories(samples),
        files=files,
    )


def export_imagefolder(store: ObjectStore, samples: list[Sample], out_dir: Path) -> ExportResult:
    """``SPLIT/LABEL/<sample_id>.<ext>`` plus ``manifest.csv``: torchvision's ImageFolder (one split
    folder) and Hugging Face's ``imagefolder`` loader (split and label from the folder names) read it."""
    listed = []
    for sample in samples:
        relative = f"{folder_name(sample.split)}/{folder_name(sample.label)}/{sample.file_name}"
        _write(out_dir / relative, read_blob(store, sample))
        listed.append(_listed(relative, sample))
    _listing(out_dir, listed)
    return _result("imagefolder", out_dir, samples, ["manifest.csv"])


def export_coco(store: ObjectStore, samples: list[Sample], out_dir: Path) -> ExportResult:
    """``images/SPLIT/<file>`` and ``annotations/instances_SPLIT.json`` (images, annotations with
    ``bbox`` ``[x, y, w, h]`` in pixels, categories with the same ids in every split). The label of each
    image is kept in its ``label`` field (COCO has no image-level class); a dataset without boxes has
    images and categories and no annotations."""
    names = categories(samples)
    category_ids = {name: index + 1 for index, name in enumerate(names)}
    by_split: dict[str, list[Sample]] = {}
    for sample in samples:
        by_split.setdefault(sample.split, []).append(sample)
    listed, files = [], []
    for split, members in by_split.items():
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, sample in enumerate(members, start=1):
            relative = f"images/{folder_name(split)}/{sample.file_name}"
            _write(out_dir / relative, read_blob(store, sample))
            listed.append(_listed(relative, sample))
            images.append({"id": image_id, "file_name": sample.file_name, "width": sample.width,
                           "height": sample.height, "label": sample.label, "sample_id": sample.sample_id,
                           "sha256": sample.sha256})  # fmt: skip
            for box in sample.boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": category_ids[box.category],
                                    "bbox": [box.x, box.y, box.width, box.height],
                                    "area": round(box.width * box.height, 3), "iscrowd": 0})  # fmt: skip
        document = {
            "info": {"description": "exported by loupe", "version": "1.0"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in category_ids.items()],
        }
        name = f"annotations/instances_{folder_name(split)}.json"
        _write_text(out_dir / name, json.dumps(document, indent=1))
        files.append(name)
    _listing(out_dir, listed)
    return _result("coco", out_dir, samples, files)


def yolo_line(box: Box, class_id: int, width: int, height: int) -> str | None:
    """``class cx cy w h`` normalised to the image, the box clipped to it; None when nothing is left."""
    left, top = max(0.0, box.x), max(0.0, box.y)
    right, bottom = min(float(width), box.x + box.width), min(float(height), box.y + box.height)
    if right <= left or bottom <= top or width <= 0 or height <= 0:
        return None
    cx, cy = (left + right) / 2 / width, (top + bottom) / 2 / height
    return f"{class_id} {cx:.6f} {cy:.6f} {(right - left) / width:.6f} {(bottom - top) / height:.6f}"


def export_yolo(store: ObjectStore, samples: list[Sample], out_dir: Path) -> ExportResult:
    """``images/SPLIT/<file>``, ``labels/SPLIT/<sample_id>.txt`` (``class cx cy w h``, normalised, one
    line per box, empty for an image without boxes) and ``data.yaml`` (path, splits, names), the layout
    Ultralytics reads. Boxes are clipped to the image."""
    names = categories(samples)
    class_ids = {name: index for index, name in enumerate(names)}
    listed, splits = [], []
    for sample in samples:
        split = folder_name(sample.split)
        if split not in splits:
            splits.append(split)
        relative = f"images/{split}/{sample.file_name}"
        _write(out_dir / relative, read_blob(store, sample))
        listed.append(_listed(relative, sample))
        lines = [yolo_line(b, class_ids[b.category], sample.width, sample.height) for b in sample.boxes]
        text = "".join(f"{line}\n" for line in lines if line is not None)
        _write_text(out_dir / "labels" / split / f"{sample.sample_id}.txt", text)
    data: dict[str, Any] = {"path": str(out_dir.resolve())}
    order = {"train": 0, "val": 1, "test": 2}
    for split in sorted(splits, key=lambda s: (order.get(s, 3), s)):
        data[split] = f"images/{split}"
    data["names"] = dict(enumerate(names))
    _write_text(out_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    _listing(out_dir, listed)
    return _result("yolo", out_dir, samples, ["data.yaml"])


def _hf_schema(metadata_fields: list[str], names: list[str], with_boxes: bool) -> pa.Schema:
    """metadata.parquet's schema, the same in every split, with the Hugging Face features (label as a
    ClassLabel) in the schema metadata, where ``datasets`` looks for them."""
    columns = [("file_name", pa.string()), ("label", pa.int64()), ("sample_id", pa.string()),
               ("sha256", pa.string()), ("width", pa.int64()), ("height", pa.int64())]  # fmt: skip
    features: dict[str, Any] = {
        "file_name": {"dtype": "string", "_type": "Value"},
        "label": {"names": names, "_type": "ClassLabel"},
        "sample_id": {"dtype": "string", "_type": "Value"},
        "sha256": {"dtype": "string", "_type": "Value"},
        "width": {"dtype": "int64", "_type": "Value"},
        "height": {"dtype": "int64", "_type": "Value"},
    }
    fields: list[pa.Field] = [pa.field(n, t) for n, t in columns]
    if with_boxes:
        box = pa.struct([("bbox", pa.list_(pa.float64(), 4)), ("category", pa.int64())])
        fields.append(pa.field("objects", pa.list_(box)))
        features["objects"] = {
            "feature": {
                "bbox": {"feature": {"dtype": "float64", "_type": "Value"}, "length": 4, "_type": "List"},
                "category": {"names": names, "_type": "ClassLabel"},
            },
            "_type": "List",
        }
    if metadata_fields:
        fields.append(pa.field("metadata", pa.struct([(n, pa.string()) for n in metadata_fields])))
        features["metadata"] = {n: {"dtype": "string", "_type": "Value"} for n in metadata_fields}
    hf = {"info": {"features": features}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def export_hf(store: ObjectStore, samples: list[Sample], out_dir: Path) -> ExportResult:
    """``SPLIT/<file>`` plus ``SPLIT/metadata.parquet`` per split, for
    ``datasets.load_dataset("imagefolder", data_dir=DIR)``: an ``image``, ``label`` (a ClassLabel, -1 when
    unlabelled), ``sample_id``, ``sha256``, ``width``, ``height``, ``objects`` (``bbox`` in pixels
    ``[x, y, w, h]`` and ``category``, when the dataset has boxes) and ``metadata`` (when it has any).
    Parquet rather than JSON lines: its schema is fixed, so a split without boxes or metadata loads with
    the same features as the others."""
    names = categories(samples)
    class_ids = {name: index for index, name in enumerate(names)}
    metadata_fields = sorted({k for s in samples for k in s.metadata})
    with_boxes = any(s.boxes for s in samples)
    schema = _hf_schema(metadata_fields, names, with_boxes)
    by_split: dict[str, list[Sample]] = {}
    for sample in samples:
        by_split.setdefault(folder_name(sample.split), []).append(sample)
    listed, files = [], []
    for split, members in by_split.items():
        rows: list[dict[str, Any]] = []
        for sample in members:
            _write(out_dir / split / sample.file_name, read_blob(store, sample))
            listed.append(_listed(f"{split}/{sample.file_name}", sample))
            row: dict[str, Any] = {
                "file_name": sample.file_name,
                "label": class_ids[sample.label] if sample.label else -1,
                "sample_id": sample.sample_id,
                "sha256": sample.sha256,
                "width": sample.width,
                "height": sample.height,
            }
            if with_boxes:
                row["objects"] = [{"bbox": [b.x, b.y, b.width, b.height], "category": class_ids[b.category]}
                                  for b in sample.boxes]  # fmt: skip
            if metadata_fields:
                row["metadata"] = {k: sample.metadata.get(k) for k in metadata_fields}
            rows.append(row)
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
        _write(out_dir / split / "metadata.parquet", sink.getvalue())
        files.append(f"{split}/metadata.parquet")
    _listing(out_dir, listed)
    return _result("hf", out_dir, samples, files)


def parse_shard_size(text: str) -> tuple[int | None, int | None]:
    """``--shard-size``: a number of samples (``1000``) or of bytes (``500MB``, ``1GiB``, ``4096B``).
    Returns (samples, bytes), one of them None."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and match.group(2).lower() not in _BYTE_UNITS):
        raise ExportError(f"--shard-size {text!r}: give a number of samples (1000) or of bytes (500MB, 1GiB)")
    number, unit = int(match.group(1)), match.group(2).lower()
    return (None, number * _BYTE_UNITS[unit]) if unit else (number, None)


def webdataset_key(sample: Sample) -> str:
    """The key of a sample's files in a shard: its id, which has no dots (webdataset splits at the first)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", sample.sample_id)


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(
    store: ObjectStore,
    samples: list[Sample],
    out_dir: Path,
    shard_samples: int | None = DEFAULT_SHARD_SAMPLES,
    shard_bytes: int | None = None,
) -> ExportResult:
    """Tar shards ``SPLIT-000000.tar``, ... holding ``<key>.<ext>`` and ``<key>.json`` (label, boxes in
    pixels, metadata, sample id, sha256, size) per sample, each shard closed at ``shard_samples`` samples
    or before it would pass ``shard_bytes`` of image bytes (a larger single image gets a shard of its own)."""
    listed, files = [], []
    tar: tarfile.TarFile | None = None
    current: tuple[str, int] = ("", -1)  # split, shard number
    in_shard = bytes_in_shard = 0
    try:
        for sample in samples:
            split = folder_name(sample.split)
            data = read_blob(store, sample)
            full = tar is not None and (
                (shard_samples is not None and in_shard >= shard_samples)
                or (shard_bytes is not None and in_shard and bytes_in_shard + len(data) > shard_bytes)
            )
            if tar is None or current[0] != split or full:
                if tar is not None:
                    tar.close()
                current = (split, current[1] + 1 if current[0] == split else 0)
                name = f"{split}-{current[1]:06d}.tar"
                try:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    tar = tarfile.open(out_dir / name, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed below)
                except OSError as exc:
                    raise ExportError(f"cannot write {out_dir / name}: {exc.strerror or exc}") from exc
                files.append(name)
                in_shard = bytes_in_shard = 0
            key = webdataset_key(sample)
            described = {
                "sample_id": sample.sample_id,
                "sha256": sample.sha256,
                "label": sample.label,
                "split": sample.split,
                "width": sample.width,
                "height": sample.height,
                "boxes": [
                    {"category": b.category, "bbox": [b.x, b.y, b.width, b.height]} for b in sample.boxes
                ],
                "metadata": dict(sample.metadata),
                "source_uri": sample.source_uri,
            }
            try:
                _tar_member(tar, f"{key}.{sample.extension}", data)
                _tar_member(tar, f"{key}.json", json.dumps(described, sort_keys=True).encode())
            except OSError as exc:
                raise ExportError(f"cannot write {out_dir / files[-1]}: {exc.strerror or exc}") from exc
            in_shard += 1
            bytes_in_shard += len(data)
            listed.append(_listed(f"{files[-1]}#{key}.{sample.extension}", sample))
    finally:
        if tar is not None:
            tar.close()
    _listing(out_dir, listed)
    return _result("webdataset", out_dir, samples, files)


def export_samples(
    store: ObjectStore, samples: list[Sample], fmt: str, out_dir: Path, shard_size: str | None = None
) -> ExportResult:
    """Write ``samples`` to ``out_dir`` in ``fmt`` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if shard_size is not None and fmt != "webdataset":
        raise ExportError("--shard-size applies to --format webdataset only")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    if fmt == "webdataset":
        shard_samples, shard_bytes = (
            parse_shard_size(shard_size) if shard_size else (DEFAULT_SHARD_SAMPLES, None)
        )
        return export_webdataset(store, samples, out_dir, shard_samples, shard_bytes)
    writer = {"imagefolder": export_imagefolder, "coco": export_coco, "yolo": export_yolo, "hf": export_hf}[
        fmt
    ]
    return writer(store, samples, out_dir)


# --- renditions -----------------------------------------------------------------------------------


def _oriented_box(box: Box, orientation: int, width: int, height: int) -> Box:
    """``box`` (stored pixels of a ``width`` x ``height`` image) after the EXIF ``orientation`` is
    applied, as a rendition applies it."""
    x, y, w, h = box.x, box.y, box.width, box.height
    moved = {
        2: (width - x - w, y, w, h),
        3: (width - x - w, height - y - h, w, h),
        4: (x, height - y - h, w, h),
        5: (y, x, h, w),
        6: (height - y - h, x, h, w),
        7: (height - y - h, width - x - w, h, w),
        8: (y, width - x - w, h, w),
    }.get(orientation, (x, y, w, h))
    return Box(box.category, *moved)


def _orientation(store: ObjectStore | None, sha256: str) -> int:
    """The EXIF orientation of a raw blob, from its header (the decode guard's lazy open, nothing decoded)."""
    from PIL import ExifTags

    from loupe_workers.media import decode

    if store is None:
        return 1
    try:
        header = decode.check_image(store.get(blob_key(sha256)), max_pixels=decode.DEFAULT_MAX_PIXELS)
        return int(header.image.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except Exception:  # no readable EXIF: the pixels were not turned either
        return 1


def _rendition_sample(row: SampleRow, name: str, store: ObjectStore | None) -> Sample:
    """The export sample of a row's rendition ``name``; a one-line ExportError when it has none."""
    try:
        entries = json.loads(row.get("renditions") or "{}") or {}
    except ValueError:
        entries = {}
    entry = entries.get(name)
    if not isinstance(entry, dict):
        have = ", ".join(sorted(entries)) or "none"
        raise ExportError(
            f"sample {row['sample_id']} has no rendition {name!r} (it has: {have}); add it to "
            "spec.renditions and run the dataset again"
        )
    (raw,) = samples_from_rows([row])
    width, height = int(entry["width"]), int(entry["height"])
    boxes = raw.boxes
    if boxes:
        orientation = _orientation(store, raw.sha256)
        turned = orientation in (5, 6, 7, 8)
        upright = (raw.height, raw.width) if turned else (raw.width, raw.height)
        sx, sy = width / max(1, upright[0]), height / max(1, upright[1])
        turned_boxes = (_oriented_box(box, orientation, raw.width, raw.height) for box in boxes)
        boxes = tuple(
            Box(b.category, *(round(v, 3) for v in (b.x * sx, b.y * sy, b.width * sx, b.height * sy)))
            for b in turned_boxes
        )
    return dataclasses.replace(
        raw, extension=extension_of(entry.get("format")), width=width, height=height, boxes=boxes,
        data_key=str(entry["key"]), data_sha256=str(entry["sha256"]),
    )  # fmt: skip
