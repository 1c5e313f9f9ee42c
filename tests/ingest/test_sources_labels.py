"""Listing sources (globs, sidecars, media kinds, listing digest), sample metadata and label import."""

from __future__ import annotations

import io
import json
import os
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loupe_api.ingest import IngestSourceSpec, LabelImport
from loupe_api.listing import glob_regex, matches_any, media_kind
from loupe_storage.store import LocalStore
from loupe_workers.ingest.annotate import (
    LabelError,
    LabelSet,
    load_labels,
    path_pattern_regex,
    sample_metadata,
)
from loupe_workers.ingest.sources import list_media, listing_digest


@cache
def jpeg(name: str = "astronaut", box: tuple[int, int, int, int] = (0, 0, 96, 64)) -> bytes:
    from skimage import data

    image = Image.fromarray(np.ascontiguousarray(getattr(data, name)())).convert("RGB").crop(box)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write(root: Path, key: str, data: bytes | str) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def source(root: Path, **wire: Any) -> IngestSourceSpec:
    return IngestSourceSpec.model_validate({"filesystem": {"path": str(root)}, **wire})


TREE = {
    "root.jpg": "astronaut",
    "a/x.jpg": "chelsea",
    "a/UPPER.JPG": "coffee",
    "a/b/y.jpg": "rocket",
    "a/b/c/deep.jpg": "astronaut",
    "c/z.png": "camera",
    "c/scan.tif": "coffee",
}
SIDECARS = ["a/notes.txt", "a/x.json", "labels.csv", "c/README.md", "meta/info.yaml"]
VIDEOS = ["a/clip.mp4", "c/line.MOV"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for key, name in TREE.items():
        write(root, key, jpeg(name))
    for key in SIDECARS:
        write(root, key, f"sidecar {key}\n")
    for key in VIDEOS:
        write(root, key, b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    write(root, "a/.tmp-0123", b"half-written")  # a store's temporary file: never listed
    return root


def listed_keys(root: Path, **wire: Any) -> list[str]:
    media, _ = list_media("cams", source(root, **wire), LocalStore(root))
    return [o.key for o in media]


def test_default_lists_every_media_object_sorted(tree: Path) -> None:
    media, others = list_media("cams", source(tree), LocalStore(tree))
    assert [o.key for o in media] == sorted([*TREE, *VIDEOS])
    assert sorted(o.key for o in others) == sorted(SIDECARS)  # sidecars are kept apart, not media
    by_key = {o.key: o for o in media}
    x = by_key["a/x.jpg"]
    assert (x.source, x.kind, x.size) == ("cams", "image", (tree / "a/x.jpg").stat().st_size)
    assert x.uri == str(tree / "a" / "x.jpg") and x.etag
    assert by_key["a/clip.mp4"].kind == by_key["c/line.MOV"].kind == "video"
    assert by_key["c/scan.tif"].kind == "image"


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["**/*.jpg"], [], ["a/b/c/deep.jpg", "a/b/y.jpg", "a/x.jpg", "root.jpg"]),
        (["a/*"], [], ["a/UPPER.JPG", "a/clip.mp4", "a/x.jpg"]),
        (["a/**"], [], ["a/UPPER.JPG", "a/b/c/deep.jpg", "a/b/y.jpg", "a/clip.mp4", "a/x.jpg"]),
        (["**"], ["a/**"], ["c/line.MOV", "c/scan.tif", "c/z.png", "root.jpg"]),
        (["**/*.jpg"], ["**/b/**"], ["a/x.jpg", "root.jpg"]),
        (["**/*.jpg", "**/*.png"], ["root.*"], ["a/b/c/deep.jpg", "a/b/y.jpg", "a/x.jpg", "c/z.png"]),
        (["*"], [], ["root.jpg"]),
        (["c/?.png"], [], ["c/z.png"]),
        (["a/**/*.jpg"], [], ["a/b/c/deep.jpg", "a/b/y.jpg", "a/x.jpg"]),
        (["nothing/**"], [], []),
    ],
)
def test_include_and_exclude_globs(
    tree: Path, include: list[str], exclude: list[str], expected: list[str]
) -> None:
    assert listed_keys(tree, include=include, exclude=exclude) == expected


def test_glob_semantics() -> None:
    assert glob_regex("**/*.jpg").match("x.jpg") and glob_regex("**/*.jpg").match("a/b/x.jpg")
    assert not glob_regex("*.jpg").match("a/x.jpg")  # * stays within one segment
    assert glob_regex("a/*").match("a/x") and not glob_regex("a/*").match("a/b/x")
    assert glob_regex("**").match("a/b/c") and glob_regex("**").match("")
    assert glob_regex("cam?/*.png").match("cam1/f.png") and not glob_regex("cam?/*.png").match("cam12/f.png")
    assert not glob_regex("?").match("/")
    # everything else is literal
    assert glob_regex("[a].jpg").match("[a].jpg") and not glob_regex("[a].jpg").match("a.jpg")
    assert glob_regex("a+b (1).jpg").match("a+b (1).jpg")
    assert not glob_regex("x.jpg").match("xajpg")
    assert matches_any("a/x.jpg", ["*.png", "a/*"]) and not matches_any("a/x.jpg", [])


def test_media_kinds_filter(tree: Path) -> None:
    assert listed_keys(tree, mediaKinds=["image"]) == sorted(TREE)
    assert listed_keys(tree, mediaKinds=["video"]) == sorted(VIDEOS)
    _, others = list_media("cams", source(tree, mediaKinds=["video"]), LocalStore(tree))
    assert sorted(o.key for o in others) == sorted(SIDECARS)  # still reported, whatever the kinds


def test_media_kind_by_extension() -> None:
    assert media_kind("a/b.mkv") == media_kind("b.WEBM") == "video"
    for sidecar in ("a.txt", "b.JSON", "c.csv", "notes.md", "d.yaml", "e.yml", "f.xml"):
        assert media_kind(sidecar) is None, sidecar
    # anything else is an image candidate: its bytes decide later
    assert media_kind("photo.jpg") == media_kind("scan.tiff") == media_kind("no_extension") == "image"


def test_sidecars_are_skipped_even_when_included(tree: Path) -> None:
    media, others = list_media("cams", source(tree, include=["a/*"]), LocalStore(tree))
    assert "a/notes.txt" not in [o.key for o in media]
    assert sorted(o.key for o in others) == ["a/notes.txt", "a/x.json"]


def test_listing_digest_changes_when_a_file_changes(tree: Path) -> None:
    spec, store = source(tree), LocalStore(tree)

    def digest() -> str:
        return listing_digest(list_media("cams", spec, store)[0])

    first = digest()
    assert digest() == first  # a relisting of unchanged files
    assert listing_digest(list(reversed(list_media("cams", spec, store)[0]))) == first
    write(tree, "a/notes.txt", "edited sidecar\n")  # not media: the listing digest ignores it
    assert digest() == first
    write(tree, "a/x.jpg", jpeg("coffee"))  # new content
    changed = digest()
    assert changed != first
    path = tree / "a/x.jpg"
    data = path.read_bytes()
    path.write_bytes(bytes(reversed(data)))  # same size, new bytes: the mtime tells
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    same_size = digest()
    assert same_size != changed
    write(tree, "new/extra.png", jpeg("camera"))
    added = digest()
    assert added not in (first, changed, same_size)
    (tree / "new/extra.png").unlink()
    assert digest() == same_size
    (tree / "root.jpg").unlink()
    assert digest() != same_size
    other = list_media("other", spec, store)[0]  # the source name is part of it
    assert listing_digest(other) != digest()


# --- sample metadata -----------------------------------------------------------------------------


def record(key: str, exif: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"key": key, "exif": json.dumps(exif or {}), "media": "image", **extra}


def test_path_pattern_metadata(tmp_path: Path) -> None:
    spec = source(
        tmp_path,
        metadata={
            "pathPattern": "{site}/{line}/{date}/{camera}/*",
            "static": {"site": "unknown", "operator": "ann"},
        },
    )
    meta = sample_metadata(record("plant-3/line-2/2024-05-01/cam-7/img_001.jpg"), spec)
    assert meta == {
        "site": "plant-3",
        "line": "line-2",
        "date": "2024-05-01",
        "camera": "cam-7",
        "operator": "ann",
    }
    # a key that does not fit the pattern keeps only the static fields
    assert sample_metadata(record("plant-3/line-2/img_001.jpg"), spec) == {
        "site": "unknown",
        "operator": "ann",
    }
    assert sample_metadata(record("a/b/c/d/e/img.jpg"), spec) == {"site": "unknown", "operator": "ann"}


def test_path_pattern_regex() -> None:
    deep = path_pattern_regex("{site}/**/{camera}/*.jpg")
    match = deep.match("plant-1/x/y/z/cam-2/f.jpg")
    assert match and match.groupdict() == {"site": "plant-1", "camera": "cam-2"}
    assert not deep.match("plant-1/cam-2/f.png")
    partial = path_pattern_regex("/{day}_*/{shift}/*/")  # slashes at the ends are ignored
    match = partial.match("2024-01-01_rainy/night/frame.png")
    assert match and match.groupdict() == {"day": "2024-01-01", "shift": "night"}
    assert path_pattern_regex("{a}.{b}/*").match("x.y/z")
    assert not path_pattern_regex("{a}.{b}/*").match("xzy/z")  # a dot is a dot


def test_exif_and_frame_metadata(tmp_path: Path) -> None:
    exif = {"camera_make": "Loupe", "capture_time": "2024-03-05T07:08:09", "gps_lat": 48.8}
    spec = source(tmp_path, metadata={"pathPattern": "{site}/*", "static": {"camera_make": "static"}})
    meta = sample_metadata(record("plant-9/a.jpg", exif), spec)
    assert meta == {
        "camera_make": "Loupe",
        "capture_time": "2024-03-05T07:08:09",
        "gps_lat": "48.8",
        "site": "plant-9",
    }
    no_exif = source(tmp_path, metadata={"exif": False})
    assert sample_metadata(record("plant-9/a.jpg", exif), no_exif) == {}
    frame = record("videos/line.mp4", media="frame", frame_index=12, frame_time=2.4)
    assert sample_metadata(frame, source(tmp_path)) == {"frame_index": "12", "frame_time": "2.400"}


# --- labels --------------------------------------------------------------------------------------


def labels(root: Path, keys: list[str], **spec: Any) -> dict[str, LabelSet]:
    return load_labels(LabelImport.model_validate(spec), LocalStore(root), keys)


def test_folder_labels(tmp_path: Path) -> None:
    keys = ["cats/chelsea.jpg", "objects/coffee.jpg", "plant/line/scratch/a.jpg", "loose.jpg"]
    for key in keys:
        write(tmp_path, key, jpeg())
    found = labels(tmp_path, keys, format="folder")
    assert found == {
        "cats/chelsea.jpg": LabelSet("cats"),
        "objects/coffee.jpg": LabelSet("objects"),
        "plant/line/scratch/a.jpg": LabelSet("scratch"),  # the parent folder, not the top one
    }
    assert found["cats/chelsea.jpg"].to_json() == '{"boxes": [], "label": "cats"}'


def test_folder_labels_are_pathlibs_parent_name_for_odd_keys(tmp_path: Path) -> None:
    # folder labels parse each folder once: any key must still get PurePosixPath(key).parent.name,
    # and two keys of different folders never share a label through the per-folder memo
    keys = ["a/x.jpg", "b/x.jpg", "a//y.jpg", "a/./z.jpg", "./w.jpg", "/v.jpg", "//u.jpg", "a/b/..",
            "a/b/", "a/b/.", "a/b//", "x.jpg", "", "a/b/c.jpg", "b/a/c.jpg", "a/x.jpg", "/a/x.jpg"]  # fmt: skip
    expected = {k: LabelSet(PurePosixPath(k).parent.name) for k in keys if PurePosixPath(k).parent.name}
    found = labels(tmp_path, keys, format="folder")
    assert found == expected and list(found) == list(expected)
    assert found["a/x.jpg"].label == "a" and found["b/x.jpg"].label == "b" and found["b/a/c.jpg"].label == "a"


def test_csv_labels(tmp_path: Path) -> None:
    write(
        tmp_path,
        "labels.csv",
        "\ufeffpath,label,notes\n./a/x.jpg, scratch ,first\na/b/y.jpg,dent,\nroot.jpg,ok,\n",
    )
    found = labels(tmp_path, [], format="csv", path="labels.csv")
    assert found == {
        "a/x.jpg": LabelSet("scratch"),
        "a/b/y.jpg": LabelSet("dent"),
        "root.jpg": LabelSet("ok"),
    }
    write(tmp_path, "meta/classes.csv", "file,class\nx.jpg,cat\n")
    custom = labels(
        tmp_path, [], format="csv", path="meta/classes.csv", pathColumn="file", labelColumn="class"
    )
    assert custom == {"x.jpg": LabelSet("cat")}
    with pytest.raises(LabelError, match="missing column"):
        labels(tmp_path, [], format="csv", path="meta/classes.csv")
    with pytest.raises(KeyError):
        labels(tmp_path, [], format="csv", path="absent.csv")


def test_coco_labels(tmp_path: Path) -> None:
    coco = {
        "images": [
            {"id": 1, "file_name": "images/chelsea.jpg", "width": 451, "height": 300},
            {"id": 2, "file_name": "images/coffee.jpg", "width": 600, "height": 400},
            {"id": 3, "file_name": "images/empty.jpg", "width": 600, "height": 400},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "cup"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [120.12345, 30, 200.5, 250]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [10, 20, 30, 40]},
            {"id": 3, "image_id": 2, "category_id": 9, "bbox": [50, 60, 70, 80]},
            {"id": 4, "image_id": 2, "category_id": 7},  # no box: still counts for the class
            {"id": 5, "image_id": 2, "category_id": 42, "bbox": [1, 2, 3, 4]},  # unknown category
            {"id": 6, "image_id": 99, "category_id": 7, "bbox": [1, 2, 3, 4]},  # unknown image: ignored
        ],
    }
    write(tmp_path, "annotations/instances.json", json.dumps(coco))
    found = labels(tmp_path, [], format="coco", path="annotations/instances.json")
    assert set(found) == {"images/chelsea.jpg", "images/coffee.jpg", "images/empty.jpg"}
    assert found["images/chelsea.jpg"] == LabelSet(
        "cat", [{"class": "cat", "bbox": [120.123, 30.0, 200.5, 250.0]}]
    )
    coffee = found["images/coffee.jpg"]
    assert coffee.label == "cup"  # the majority class
    assert [b["class"] for b in coffee.boxes] == ["cup", "cup", "cat", "42"]
    assert coffee.boxes[2] == {"class": "cat"}
    assert found["images/empty.jpg"] == LabelSet(None, [])


def test_yolo_labels(tmp_path: Path) -> None:
    keys = ["images/train/a.jpg", "images/train/b.jpg", "images/val/c.jpg", "images/val/unlabelled.jpg"]
    for key in keys:
        write(tmp_path, key, jpeg())
    write(tmp_path, "labels/train/a.txt", "0 0.5 0.5 0.2 0.3\n1 0.1 0.2 0.05 0.05\n1 0.7 0.7 0.1 0.1\n")
    write(tmp_path, "labels/train/b.txt", "2 0.5 0.5 1 1\n\nbroken line\n0 0.25 0.25 0.5 0.5\n")
    write(tmp_path, "labels/val/c.txt", "")  # an image with no objects
    found = labels(tmp_path, keys, format="yolo", path="labels", classNames=["scratch", "dent"])
    assert set(found) == {"images/train/a.jpg", "images/train/b.jpg", "images/val/c.jpg"}
    a = found["images/train/a.jpg"]
    assert a.label == "dent"
    assert a.boxes[0] == {"class": "scratch", "bbox": [0.5, 0.5, 0.2, 0.3], "format": "yolo"}
    b = found["images/train/b.jpg"]
    assert [box["class"] for box in b.boxes] == ["2", "scratch"]  # an index past the names stays a number
    assert b.label == "2"  # a tie goes to the smallest name
    assert found["images/val/c.jpg"] == LabelSet(None, [])
    # keys outside images/ map to the same relative path under the labels folder
    write(tmp_path, "cam1/d.jpg", jpeg())
    write(tmp_path, "yolo/cam1/d.txt", "1 0.5 0.5 0.1 0.1\n")
    assert labels(tmp_path, ["cam1/d.jpg"], format="yolo", path="/yolo/", classNames=["scratch", "dent"]) == {
        "cam1/d.jpg": LabelSet("dent", [{"class": "dent", "bbox": [0.5, 0.5, 0.1, 0.1], "format": "yolo"}])
    }


def test_label_import_needs_a_path() -> None:
    LabelImport.model_validate({"format": "folder"})
    for fmt in ("csv", "coco", "yolo"):
        with pytest.raises(ValueError, match="path is required"):
            LabelImport.model_validate({"format": fmt})
