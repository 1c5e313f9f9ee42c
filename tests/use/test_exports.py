"""`loupe export` in every format, read back by the reader its users use.

One small dataset of real photos is built through the real CLI: folder labels (with a PNG, a WebP and a
PNG named .jpg), COCO boxes in pixels (one annotation without a box), YOLO boxes (normalised), a static
metadata field on one source, and one photo with a face that privacy restricts. Readers: Hugging Face
``datasets`` (imagefolder loader) for imagefolder and hf, ``webdataset`` for shards, ``pycocotools``
for COCO, and a check of the YOLO format (data.yaml with yaml, labels with numpy) for yolo.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from loupe_storage.store import LocalStore, blob_key
from loupe_storage.versions import list_versions
from loupe_workers.storage import manifest
from loupe_workers.use.exports import ExportError, parse_shard_size
from support.cli import loupe
from support.photos import photo

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the imagefolder loader is packaged: nothing to fetch
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SPEC = """\
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: folders}
spec:
  filesystem: {path: ./images/folders}
  labels: {format: folder}
  metadata: {static: {site: plant-a}}
---
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: coco}
spec:
  filesystem: {path: ./images/coco}
  include: ["pics/**"]
  labels: {format: coco, path: instances.json}
---
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: yolo}
spec:
  filesystem: {path: ./images/yolo}
  include: ["images/**"]
  labels: {format: yolo, path: labels, classNames: [planet, wheel]}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {name: pets}
spec:
  sources: [{name: folders}, {name: coco}, {name: yolo}]
  privacy: {faces: {enabled: true, action: restrict}}
  splits: {train: 0.6, val: 0.2, test: 0.2, seed: 3}
"""
COCO_BOXES = {  # key -> (class, [x, y, w, h] in pixels)
    "pics/clock.jpg": [("dial", [60.0, 20.5, 150.0, 200.0])],
    "pics/coins.jpg": [("coin", [10.0, 12.0, 40.0, 40.0]), ("coin", [200.25, 100.0, 50.0, 48.0])],
}
YOLO_BOXES = {
    "images/moon.jpg": [(0, [0.5, 0.5, 0.4, 0.4])],
    "images/motorcycle.jpg": [(1, [0.25, 0.7, 0.2, 0.3])],
}
YOLO_NAMES = ["planet", "wheel"]
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exports")
    folders = root / "images" / "folders"
    for relative, name, fmt, side in [
        ("cats/chelsea.jpg", "chelsea", "JPEG", 320),
        ("cats/horse.png", "horse", "PNG", 320),
        ("things/coffee.webp", "coffee", "WEBP", 320),
        ("things/rocket.jpg", "rocket", "JPEG", 320),
        ("things/brick.jpg", "brick", "PNG", 256),  # a PNG named .jpg: exported as .png
        ("people/astronaut.jpg", "astronaut", "JPEG", 640),  # a face: restricted
    ]:
        (folders / relative).parent.mkdir(parents=True, exist_ok=True)
        photo(name, long_side=side).save(folders / relative, format=fmt)
    coco_root = root / "images" / "coco"
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, name in enumerate(("clock", "coins", "grass"), start=1):
        key = f"pics/{name}.jpg"
        (coco_root / key).parent.mkdir(parents=True, exist_ok=True)
        image = photo(name)
        image.save(coco_root / key, format="JPEG", quality=90)
        images.append({"id": index, "file_name": key, "width": image.width, "height": image.height})
        for cls, bbox in COCO_BOXES.get(key, []):
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": 1 if cls == "dial" else 2, "bbox": bbox})  # fmt: skip
    annotations.append({"id": 99, "image_id": 2, "category_id": 2})  # no box: the class only
    categories = [{"id": 1, "name": "dial"}, {"id": 2, "name": "coin"}]
    (coco_root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))  # fmt: skip
    yolo_root = root / "images" / "yolo"
    for key, boxes in YOLO_BOXES.items():
        (yolo_root / key).parent.mkdir(parents=True, exist_ok=True)
        photo(Path(key).stem).save(yolo_root / key, format="JPEG", quality=90)
        label = yolo_root / "labels" / f"{Path(key).stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{c} {' '.join(map(str, b))}\n" for c, b in boxes))
    (root / "loupe.yaml").write_text(SPEC)
    done = loupe("run", "-f", "loupe.yaml", "--store", "store", "--executor", "inline", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def rows(project: Path) -> list[dict[str, Any]]:
    store = LocalStore(project / "store")
    [record] = list_versions(store, "pets")
    accepted = [r for r in manifest.read_version_rows(store, record) if r["disposition"] == "accepted"]
    assert len(accepted) == 11, [r["key"] for r in accepted]
    restricted = [r for r in accepted if any(f.startswith("restricted:") for f in r["flags"] or ())]
    assert [r["key"] for r in restricted] == ["people/astronaut.jpg"]
    return accepted


def export(project: Path, out: str, *args: str) -> Path:
    done = loupe("export", "pets", "--store", "store", "--out", out, *args, cwd=project)
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout and "Traceback" not in done.stderr
    return project / out


def exported(rows: list[dict[str, Any]], restricted: bool = False) -> list[dict[str, Any]]:
    return [r for r in rows if restricted or not any(f.startswith("restricted:") for f in r["flags"] or ())]


def per_split(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(r["split"]) for r in rows)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_boxes(row: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """The boxes of a row in pixels [x, y, w, h], from the annotation files the test wrote."""
    if row["source"] == "coco":
        return [(c, list(b)) for c, b in COCO_BOXES.get(row["key"], [])]
    w, h = row["width"], row["height"]
    return [(YOLO_NAMES[c], [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h])
            for c, (cx, cy, bw, bh) in YOLO_BOXES.get(row["key"], [])]  # fmt: skip


EXTENSION = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def test_imagefolder_read_by_hugging_face_imagefolder(project: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:  # fmt: skip
    import datasets  # type: ignore[import-untyped,unused-ignore]

    default = export(project, "out-default")  # imagefolder is the default
    out = export(project, "out-imagefolder", "--format", "imagefolder")
    assert sorted(p.relative_to(default).as_posix() for p in default.rglob("*")) == sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*")
    )
    by_id = {r["sample_id"]: r for r in rows}
    listed = list(csv.DictReader((out / "manifest.csv").open()))
    want = exported(rows)
    assert sorted(r["sample_id"] for r in listed) == sorted(r["sample_id"] for r in want)
    for entry in listed:
        row = by_id[entry["sample_id"]]
        path = out / entry["path"]
        assert path.relative_to(out).parts == (row["split"], row["label"] or "unlabelled", path.name)
        assert path.suffix == "." + EXTENSION[row["format"]] and sha(path) == row["sha256"]
    assert any(r["key"] == "things/brick.jpg" and r["format"] == "png" for r in want)  # named .jpg, a PNG

    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    names = loaded["train"].features["label"].names
    split_of = {"train": "train", "validation": "val", "test": "test"}
    assert {split_of[s]: n for s, n in loaded.num_rows.items()} == per_split(want)
    for split, part in loaded.items():
        part = part.cast_column("image", datasets.Image(decode=False))
        for item in part:
            row = by_id[Path(item["image"]["path"]).stem]
            assert row["split"] == split_of[split] and names[item["label"]] == (row["label"] or "unlabelled")
            assert hashlib.sha256(Path(item["image"]["path"]).read_bytes()).hexdigest() == row["sha256"]

    allowed = export(project, "out-restricted", "--allow-restricted")
    listed = list(csv.DictReader((allowed / "manifest.csv").open()))
    assert len(listed) == len(rows) and any(r["label"] == "people" for r in listed)
    assert not (out / next(r["split"] for r in rows if r["label"] == "people") / "people").exists()


def test_coco_read_by_pycocotools(project: Path, rows: list[dict[str, Any]]) -> None:
    from pycocotools.coco import COCO  # type: ignore[import-untyped]

    out = export(project, "out-coco", "--format", "coco")
    want = exported(rows)
    by_id = {r["sample_id"]: r for r in want}
    seen: list[str] = []
    boxes = 0
    category_lists = []
    for split, count in per_split(want).items():
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        category_lists.append(coco.loadCats(coco.getCatIds()))
        names = {c["id"]: c["name"] for c in category_lists[-1]}
        assert {"dial", "coin", "planet", "wheel", "cats", "things"} <= set(names.values())
        assert "people" not in names.values()  # the restricted sample's label went with it
        assert len(coco.getImgIds()) == count
        for image in coco.loadImgs(coco.getImgIds()):
            row = by_id[image["sample_id"]]
            seen.append(row["sample_id"])
            path = out / "images" / split / image["file_name"]
            assert path.suffix == "." + EXTENSION[row["format"]] and sha(path) == row["sha256"]
            assert (image["width"], image["height"]) == (row["width"], row["height"])
            assert image["label"] == row["label"]
            found = [
                (names[a["category_id"]], a["bbox"])
                for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            ]
            expected = expected_boxes(row)
            assert [c for c, _ in found] == [c for c, _ in expected]
            for (_, got), (_, box) in zip(found, expected, strict=True):
                np.testing.assert_allclose(got, box, atol=0.01)
            boxes += len(found)
    assert sorted(seen) == sorted(by_id) and boxes == 5
    assert all(c == category_lists[0] for c in category_lists)  # the same ids in every split


def test_yolo_layout_and_labels(project: Path, rows: list[dict[str, Any]]) -> None:
    out = export(project, "out-yolo", "--format", "yolo")
    want = exported(rows)
    by_id = {r["sample_id"]: r for r in want}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert Path(data["path"]) == out.resolve()
    assert [k for k in data if k in SPLITS] == [s for s in SPLITS if s in per_split(want)]  # train, val, test
    names = data["names"]
    assert {"planet", "wheel", "dial", "coin"} <= set(names.values()) and sorted(names) == list(
        range(len(names))
    )
    boxes = 0
    for split, count in per_split(want).items():
        images = sorted((Path(data["path"]) / data[split]).iterdir())
        assert len(images) == count
        for image in images:
            row = by_id[image.stem]
            assert image.suffix == "." + EXTENSION[row["format"]] and sha(image) == row["sha256"]
            label_file = out / "labels" / split / f"{image.stem}.txt"
            text = label_file.read_text()  # empty for an image without boxes
            table = np.loadtxt(io.StringIO(text), ndmin=2).reshape(-1, 5) if text else np.empty((0, 5))
            assert ((table[:, 1:] >= 0) & (table[:, 1:] <= 1)).all()
            assert (table[:, 0] == table[:, 0].astype(int)).all() and (table[:, 0] < len(names)).all()
            expected = expected_boxes(row)
            assert [names[int(c)] for c in table[:, 0]] == [c for c, _ in expected]
            w, h = row["width"], row["height"]
            for (cx, cy, bw, bh), (_, box) in zip(table[:, 1:], expected, strict=True):
                pixels = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
                np.testing.assert_allclose(pixels, box, atol=0.01)
            boxes += len(table)
    assert boxes == 5


def test_hf_read_by_hugging_face_datasets(project: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    import datasets  # type: ignore[import-untyped,unused-ignore]

    out = export(project, "out-hf", "--format", "hf")
    want = exported(rows)
    by_id = {r["sample_id"]: r for r in want}
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    split_of = {"train": "train", "validation": "val", "test": "test"}
    assert {split_of[s]: n for s, n in loaded.num_rows.items()} == per_split(want)
    features = loaded["train"].features
    names = features["label"].names
    assert {"cats", "things", "coin", "planet"} <= set(names) and "people" not in names
    assert features["objects"].feature["category"].names == names
    boxes = 0
    for split, part in loaded.items():
        part = part.cast_column("image", datasets.Image(decode=False))
        for item in part:
            row = by_id[item["sample_id"]]
            assert row["split"] == split_of[split]
            assert names[item["label"]] == row["label"] if row["label"] else item["label"] == -1
            path = Path(item["image"]["path"])
            assert path.suffix == "." + EXTENSION[row["format"]] and sha(path) == row["sha256"]
            assert item["metadata"]["site"] == ("plant-a" if row["source"] == "folders" else None)
            expected = expected_boxes(row)
            assert [names[o["category"]] for o in item["objects"]] == [c for c, _ in expected]
            for obj, (_, box) in zip(item["objects"], expected, strict=True):
                np.testing.assert_allclose(obj["bbox"], box, atol=0.01)
            boxes += len(item["objects"])
    assert boxes == 5
    first = loaded["train"][0]["image"]  # decodes as a picture
    assert first.size[0] > 0


def test_webdataset_shards_read_by_webdataset(project: Path, rows: list[dict[str, Any]]) -> None:
    import webdataset as wds  # type: ignore[import-untyped]

    out = export(project, "out-wds", "--format", "webdataset", "--shard-size", "2")
    want = exported(rows)
    by_id = {r["sample_id"]: r for r in want}
    seen = []
    for split, count in per_split(want).items():
        shards = sorted(out.glob(f"{split}-*.tar"))
        assert [p.name for p in shards] == [f"{split}-{i:06d}.tar" for i in range((count + 1) // 2)]
        reader = wds.WebDataset([str(p) for p in shards], shardshuffle=False)
        items = list(reader)
        assert len(items) == count
        for item in items:
            described = json.loads(item["json"])
            row = by_id[described["sample_id"]]
            seen.append(row["sample_id"])
            assert item["__key__"] == row["sample_id"] and "." not in item["__key__"]
            data = item[EXTENSION[row["format"]]]
            assert hashlib.sha256(data).hexdigest() == row["sha256"] == described["sha256"]
            assert described["label"] == row["label"] and described["split"] == split
            expected = expected_boxes(row)
            assert [b["category"] for b in described["boxes"]] == [c for c, _ in expected]
            for box, (_, pixels) in zip(described["boxes"], expected, strict=True):
                np.testing.assert_allclose(box["bbox"], pixels, atol=0.01)
            assert described["metadata"] == ({"site": "plant-a"} if row["source"] == "folders" else {})
    assert sorted(seen) == sorted(by_id)
    by_bytes = export(
        project, "out-wds-bytes", "--format", "webdataset", "--shard-size", "1B", "--split", "train"
    )
    assert len(list(by_bytes.glob("train-*.tar"))) == per_split(want)["train"]  # one image per shard
    assert not list(by_bytes.glob("val-*.tar"))


def test_export_errors_are_one_line(project: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    unknown = loupe("export", "pets", "--store", "store", "--out", str(tmp_path / "x"), "--format", "tfrecord", cwd=project)  # fmt: skip
    assert unknown.returncode == 2 and "unknown --format 'tfrecord'" in unknown.stderr
    bad_size = loupe("export", "pets", "--store", "store", "--out", str(tmp_path / "x"), "--format", "webdataset",
                     "--shard-size", "lots", cwd=project)  # fmt: skip
    assert bad_size.returncode == 2 and "--shard-size" in bad_size.stderr
    store = tmp_path / "store"
    shutil.copytree(project / "store", store)
    victim = next(r for r in exported(rows) if r["split"] == "train")
    (store / blob_key(victim["sha256"])).unlink()
    for fmt in ("imagefolder", "webdataset"):
        done = loupe("export", "pets", "--store", str(store), "--out", str(tmp_path / fmt), "--format", fmt, cwd=project)  # fmt: skip
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert victim["sample_id"] in lines[0] and "missing" in lines[0] and victim["uri"] in lines[0]


def test_shard_size_parsing() -> None:
    assert parse_shard_size("1000") == (1000, None)
    assert parse_shard_size("500MB") == (None, 500_000_000)
    assert parse_shard_size("1GiB") == (None, 2**30)
    for bad in ("0", "-3", "10 parsecs", ""):
        with pytest.raises(ExportError, match="--shard-size"):
            parse_shard_size(bad)
