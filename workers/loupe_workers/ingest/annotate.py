"""Sample metadata (static, path pattern, EXIF, frames) and label import (folder, CSV, COCO, YOLO)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from loupe_api.ingest import IngestSourceSpec, LabelImport
from loupe_api.samples import SampleRow
from loupe_storage.store import ObjectStore


@lru_cache(maxsize=64)
def path_pattern_regex(pattern: str) -> re.Pattern[str]:
    """{field} captures one segment, * matches one segment (or part of one), ** any number of segments."""
    out = ""
    for token in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\}|\*\*|\*)", pattern.strip("/")):
        if token == "**":
            out += ".*"
        elif token == "*":
            out += "[^/]*"
        elif token.startswith("{"):
            out += f"(?P<{token[1:-1]}>[^/]+)"
        else:
            out += re.escape(token)
    return re.compile(f"^{out}$")


def sample_metadata(record: SampleRow, spec: IngestSourceSpec) -> dict[str, str]:
    """Static fields, then fields parsed from the key, then EXIF, then frame fields."""
    meta: dict[str, str] = dict(spec.metadata.static)
    if spec.metadata.path_pattern:
        match = path_pattern_regex(spec.metadata.path_pattern).match(record["key"])
        if match:
            meta.update({k: v for k, v in match.groupdict().items() if v is not None})
    if spec.metadata.exif and (exif := record.get("exif")):
        meta.update({k: str(v) for k, v in json.loads(exif).items()})
    if record.get("media") == "frame":
        meta["frame_index"] = str(record["frame_index"])
        meta["frame_time"] = f"{record['frame_time']:.3f}"
    return meta


@dataclass
class LabelSet:
    """Labels of one sample: its class (for classification and stratification) and any boxes."""

    label: str | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"label": self.label, "boxes": self.boxes}, sort_keys=True)


class LabelError(ValueError):
    """An annotation file that cannot be read."""


def _majority(classes: list[str]) -> str | None:
    if not classes:
        return None
    counts = Counter(classes)
    return min(counts, key=lambda c: (-counts[c], c))


def _folder_labels(keys: list[str]) -> dict[str, LabelSet]:
    """Each key's parent folder name (``PurePosixPath(key).parent.name``) as its label, where it has one.
    pathlib parses once per folder, not once per key: every run lists every key, and pathlib is slow."""
    by_folder: dict[str, str] = {}
    out: dict[str, LabelSet] = {}
    for key in keys:
        folder, _, name = key.rpartition("/")
        if not folder or name in ("", "."):  # no folder part, or a last part pathlib drops: pathlib decides
            label = PurePosixPath(key).parent.name
        elif (found := by_folder.get(folder)) is not None:
            label = found
        else:  # "folder/name" parses as folder's parts, then name: its parent is folder
            label = by_folder[folder] = PurePosixPath(folder).name
        if label:
            out[key] = LabelSet(label)
    return out


def load_labels(spec: LabelImport, store: ObjectStore, keys: list[str]) -> dict[str, LabelSet]:
    """Labels for the given media keys of one source; keys without labels are absent."""
    if spec.format == "folder":
        return _folder_labels(keys)
    assert spec.path is not None
    if spec.format == "csv":
        return _csv_labels(spec, store.get(spec.path).decode("utf-8-sig"))
    if spec.format == "coco":
        return _coco_labels(json.loads(store.get(spec.path)))
    return _yolo_labels(spec, store, keys)


def label_files(spec: LabelImport, keys: list[str]) -> list[str]:
    """The keys of the files ``load_labels`` reads for these media keys (folder labels read none)."""
    if spec.format == "folder":
        return []
    assert spec.path is not None
    if spec.format in ("csv", "coco"):
        return [spec.path]
    return [_yolo_label_key(spec.path, key) for key in keys]


def _csv_labels(spec: LabelImport, text: str) -> dict[str, LabelSet]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {spec.path_column, spec.label_column} - set(reader.fieldnames or [])
    if missing:
        raise LabelError(f"{spec.path}: missing column(s) {', '.join(sorted(missing))}")
    return {
        row[spec.path_column].strip().removeprefix("./"): LabelSet(row[spec.label_column].strip())
        for row in reader
    }


def _coco_labels(coco: dict[str, Any]) -> dict[str, LabelSet]:
    categories = {c["id"]: c["name"] for c in coco.get("categories", [])}
    images = {img["id"]: img["file_name"] for img in coco.get("images", [])}
    boxes: dict[str, list[dict[str, Any]]] = {name: [] for name in images.values()}
    for ann in coco.get("annotations", []):
        name = images.get(ann["image_id"])
        if name is None:
            continue
        box = {"class": categories.get(ann["category_id"], str(ann["category_id"]))}
        if "bbox" in ann:
            box["bbox"] = [round(float(v), 3) for v in ann["bbox"]]
        boxes[name].append(box)
    return {name: LabelSet(_majority([b["class"] for b in found]), found) for name, found in boxes.items()}


def _yolo_label_key(labels_path: str, key: str) -> str:
    parts: tuple[str, ...] = PurePosixPath(key).with_suffix(".txt").parts
    if parts and parts[0] == "images":
        parts = parts[1:]
    return str(PurePosixPath(labels_path.strip("/"), *parts))


def _yolo_labels(spec: LabelImport, store: ObjectStore, keys: list[str]) -> dict[str, LabelSet]:
    assert spec.path is not None
    out: dict[str, LabelSet] = {}
    for key in keys:
        try:
            text = store.get(_yolo_label_key(spec.path, key)).decode()
        except KeyError:
            continue
        boxes: list[dict[str, Any]] = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            index = int(fields[0])
            name = spec.class_names[index] if index < len(spec.class_names) else str(index)
            boxes.append({"class": name, "bbox": [float(v) for v in fields[1:5]], "format": "yolo"})
        out[key] = LabelSet(_majority([str(b["class"]) for b in boxes]), boxes)
    return out
