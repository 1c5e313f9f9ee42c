"""Tests for the deterministic demo corpus generator."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from loupe_api.dataset import QualityGates
from loupe_workers.ingest.demo import (
    DEFAULT_ACTIONS,
    KIND_GATES,
    DemoFile,
    build_demo_corpus,
    expect_for,
    truth_path,
    write_truth,
)

KINDS = {
    "original", "exact_copy", "reencoded_png", "near_resized", "near_brightness", "near_jpeg_q",
    "blurry", "dark", "bright", "noisy", "low_contrast", "low_information", "odd_aspect", "too_small", "truncated",
    "zero_bytes", "text_as_jpg", "bomb", "wrong_extension", "video", "exif",
}  # fmt: skip
LABELS = {"people", "animals", "objects", "space", "textures", "documents", "science", "videos"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoFile]]:
    root = tmp_path_factory.mktemp("a") / "corpus"
    return root, build_demo_corpus(root, size="small", seed=0)


def one(files: list[DemoFile], kind: str) -> DemoFile:
    return next(f for f in files if f.kind == kind)


def test_byte_identical_rebuild(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    root, files = corpus
    # A fresh process too: some encoders (x264's mbtree) differ only on a process's first encode.
    code = (
        "import sys; from pathlib import Path; from loupe_workers.ingest.demo import build_demo_corpus as b; "
    )
    code += "b(Path(sys.argv[1]), seed=0)"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "corpus")], check=True, timeout=300)
    again = build_demo_corpus(tmp_path / "again", seed=0)
    assert again == files
    for f in files:
        assert (root / f.path).read_bytes() == (tmp_path / "again" / f.path).read_bytes(), f.path
    for f in files:
        assert (root / f.path).read_bytes() == (tmp_path / "corpus" / f.path).read_bytes(), f.path
    assert write_truth(root, files).read_bytes() == write_truth(tmp_path / "corpus", files).read_bytes()


def test_layout_and_truth(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus
    assert set(Counter(f.kind for f in files)) >= KINDS
    assert 30 <= len(files) <= 50
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == [f.path for f in files]
    assert sum((root / f.path).stat().st_size for f in files) < 10_000_000
    by_path = {f.path: f for f in files}
    for f in files:
        assert f.label == f.path.split("/")[0] and f.label in LABELS
        assert f.path.count("/") == 1
        assert f.expect in {"accept", "exact_duplicate", "pixel_duplicate", "near_duplicate"} or (
            f.expect.split(":")[0] in {"reject", "quarantine", "flag"}
        )
        if f.of is not None:
            assert by_path[f.of].kind == "original" and f.of < f.path
    truth = write_truth(root, files)
    assert truth == truth_path(root) and root not in truth.parents
    doc = json.loads(truth.read_text())
    assert [e["path"] for e in doc["files"]] == [f.path for f in files]


def test_expectations_follow_the_gate_defaults(corpus: tuple[Path, list[DemoFile]]) -> None:
    defaults = QualityGates()
    for gate, action in DEFAULT_ACTIONS.items():
        assert getattr(defaults, gate).action == action, gate
    assert set(KIND_GATES.values()) <= set(DEFAULT_ACTIONS)
    fixed = {"original": "accept", "exif": "accept", "video": "accept", "exact_copy": "exact_duplicate"}
    fixed |= {"reencoded_png": "pixel_duplicate", "near_resized": "near_duplicate"}
    for f in corpus[1]:
        assert f.expect == (expect_for(f.kind) if f.kind in KIND_GATES else fixed.get(f.kind, f.expect))


def test_duplicates(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus
    copy = one(files, "exact_copy")
    assert copy.of and (root / copy.path).read_bytes() == (root / copy.of).read_bytes()
    png = one(files, "reencoded_png")
    assert png.of and png.of.endswith(".jpg") and png.path.endswith(".png")
    assert (root / png.path).read_bytes() != (root / png.of).read_bytes()
    with Image.open(root / png.path) as a, Image.open(root / png.of) as b:
        assert a.format == "PNG" and b.format == "JPEG"
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for kind in ("near_resized", "near_brightness", "near_jpeg_q"):
        near = one(files, kind)
        assert near.expect == "near_duplicate" and near.of
        with Image.open(root / near.path) as im:
            im.load()


def test_truncated_fails_to_load(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus
    f = one(files, "truncated")
    assert f.of and (root / f.path).stat().st_size == (root / f.of).stat().st_size * 6 // 10
    with pytest.raises(OSError), Image.open(root / f.path) as im:
        im.load()


def test_bomb_is_small_lazy_and_valid(
    corpus: tuple[Path, list[DemoFile]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, files = corpus
    path = root / one(files, "bomb").path
    data = path.read_bytes()
    assert len(data) < 1_000_000
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 89_478_485
    )  # Pillow's default (loupe_workers.media.decode lifts it)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as im:  # lazy: header only
        assert im.format == "PNG" and im.width * im.height >= 2.5e9
    # The IDAT stream is a complete, valid zlib stream of all-zero scanlines.
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(tag + body)
        idat += body if tag == b"IDAT" else b""
        pos += 12 + n
    d, total, rest = zlib.decompressobj(), 0, idat
    while rest:
        out = d.decompress(rest, 1 << 24)
        assert not out.strip(b"\0")
        total, rest = total + len(out), d.unconsumed_tail
    assert d.eof and total == 50_000 * (50_000 // 8 + 1)


def test_broken_and_mislabelled_files(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus
    assert (root / one(files, "zero_bytes").path).stat().st_size == 0
    text = root / one(files, "text_as_jpg").path
    assert text.suffix == ".jpg"
    with pytest.raises(UnidentifiedImageError):
        Image.open(text)
    wrong = root / one(files, "wrong_extension").path
    assert wrong.suffix == ".jpg" and wrong.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(wrong) as im:
        assert im.format == "PNG"
    with Image.open(root / one(files, "too_small").path) as im:
        assert max(im.size) <= 32
    with Image.open(root / one(files, "odd_aspect").path) as im:
        assert max(im.size) / min(im.size) >= 8


def test_quality_defects_are_measurable(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus

    def luma(path: str) -> np.ndarray:
        with Image.open(root / path) as im:
            return np.asarray(im.convert("L"), dtype=np.float64)

    assert luma(one(files, "dark").path).mean() < 25
    assert np.percentile(luma(one(files, "bright").path), 5) >= 240
    assert luma(one(files, "low_information").path).std() < 2
    blurry = one(files, "blurry")
    assert blurry.of and np.diff(luma(blurry.path), axis=1).std() < np.diff(luma(blurry.of), axis=1).std() / 4
    hazy = one(files, "low_contrast")
    assert hazy.of and luma(hazy.path).std() < luma(hazy.of).std() / 3
    noisy = one(files, "noisy")
    assert noisy.of and np.diff(luma(noisy.path), axis=1).std() > 3 * np.diff(luma(noisy.of), axis=1).std()


def test_video_decodes(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus
    video = one(files, "video")
    assert video.label == "videos" and video.path.endswith(".mp4")
    with av.open(str(root / video.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        assert sum(1 for _ in container.decode(video=0)) >= 20


def test_exif_reads_back(corpus: tuple[Path, list[DemoFile]]) -> None:
    root, files = corpus
    with Image.open(root / one(files, "exif").path) as im:
        exif = im.getexif()
        assert exif[ExifTags.Base.Orientation] == 6
        assert (exif[ExifTags.Base.Make], exif[ExifTags.Base.Model]) == ("Loupe", "DemoCam 1")
        assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2021:06:01 12:34:56"
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        assert gps[ExifTags.GPS.GPSLatitudeRef] == "N" and gps[ExifTags.GPS.GPSLongitudeRef] == "E"
        lat = [float(v) for v in gps[ExifTags.GPS.GPSLatitude]]
        assert lat[0] + lat[1] / 60 + lat[2] / 3600 == pytest.approx(48.858, abs=1e-3)
        w, h = im.size
        upright = ImageOps.exif_transpose(im)
        assert upright.size == (h, w) and upright.width > upright.height


def test_large_corpus(tmp_path: Path) -> None:
    files = build_demo_corpus(tmp_path / "big", size="large", seed=1)
    kinds = Counter(f.kind for f in files)
    assert 150 <= len(files) <= 250 and set(kinds) >= KINDS | {"near_crop", "near_flip"}
    assert len({f.path for f in files}) == len(files)
    with pytest.raises(FileExistsError):
        build_demo_corpus(tmp_path / "big")
    with pytest.raises(ValueError, match="size"):
        build_demo_corpus(tmp_path / "other", size="huge")
