"""Renditions (spec.renditions): colour, depth, alpha and EXIF handled correctly, deterministic bytes,
computed once per source and parameters, reused across runs and datasets, exported on request."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import ExifTags, Image

from loupe_api.keys import RENDITIONS
from loupe_api.renditions import RenditionSpec
from loupe_storage.store import LocalStore, ObjectStore, S3Store, put_blob
from loupe_storage.versions import latest_version, list_versions
from loupe_workers.media import decode
from loupe_workers.media.renditions import render
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.use.client import open_dataset
from support.cli import loupe
from support.photos import jpeg, photo
from support.runs import request, rows_of

# --- colour: an ICC profile built here (Display P3 primaries, gamma 2.2), reference computed by hand ---

P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
D65 = (0.3127, 0.3290)
D50_XYZ = np.array([0.9642, 1.0, 0.8249])
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
GAMMA_U8F8 = 0x0233  # 2.19921875, as a curveType stores it


def _rgb_to_xyz(primaries: tuple[tuple[float, float], ...], white: tuple[float, float]) -> npt.NDArray[Any]:
    """The RGB -> XYZ matrix of a colour space from its chromaticities (white Y = 1)."""
    columns = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(columns, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))
    return columns * scale


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def p3_profile() -> bytes:
    """A v2 matrix/TRC display profile: P3 primaries adapted to the D50 PCS (Bradford), gamma 2.2."""
    white65 = _rgb_to_xyz(P3, D65) @ np.ones(3)
    cone = np.diag((BRADFORD @ D50_XYZ) / (BRADFORD @ white65))
    colorants = np.linalg.inv(BRADFORD) @ cone @ BRADFORD @ _rgb_to_xyz(P3, D65)

    def xyz(values: npt.NDArray[Any]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(_s15(float(v)) for v in values)

    text = b"P3 test\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 12 + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, GAMMA_U8F8) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(D50_XYZ))]
    tags += [(name, xyz(colorants[:, i])) for i, name in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))]
    tags += [(name, curve) for name in (b"rTRC", b"gTRC", b"bTRC")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for name, data in tags:
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
    header += b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
    header += b"".join(_s15(float(v)) for v in D50_XYZ) + b"\0" * 48
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def p3_to_srgb_reference(rgb: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """P3 (gamma 2.2) 8-bit values as sRGB 8-bit values, by the matrices alone (no colour library)."""
    linear = (rgb / 255.0) ** (GAMMA_U8F8 / 256)
    srgb_linear = np.linalg.solve(_rgb_to_xyz(SRGB, D65), _rgb_to_xyz(P3, D65) @ linear.T).T
    assert srgb_linear.min() > 0.01 and srgb_linear.max() < 0.99, "test colours must be inside sRGB"
    encoded = np.where(
        srgb_linear <= 0.0031308, 12.92 * srgb_linear, 1.055 * srgb_linear ** (1 / 2.4) - 0.055
    )
    return np.asarray(encoded * 255.0)


PATCHES = np.array([[180, 120, 90], [90, 160, 200], [128, 128, 128], [120, 170, 90], [200, 80, 120]])


def patch_image(colours: npt.NDArray[Any], mode: str = "RGB", side: int = 16) -> Image.Image:
    """One uniform square per colour, side by side (JPEG blocks stay inside a patch)."""
    strip = np.repeat(np.repeat(colours[None, :, :], side, axis=0), side, axis=1).astype(np.uint8)
    return Image.fromarray(strip, mode)


def centres(data: bytes, count: int, side: int = 16) -> npt.NDArray[Any]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return np.array([image.getpixel((i * side + side // 2, side // 2)) for i in range(count)], dtype=float)


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


PNG = RenditionSpec(format="png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_embedded_icc_profile_is_converted_to_srgb(fmt: str) -> None:
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    tagged = encoded(patch_image(PATCHES), fmt, icc_profile=p3_profile(), **options)
    made = render(tagged, PNG)
    got = centres(made.data, len(PATCHES))
    expected = p3_to_srgb_reference(PATCHES.astype(float))
    assert np.abs(got - expected).max() <= 2.5, (got, expected)
    # the conversion moved the colours (P3 is wider): an untagged copy would have kept them
    assert np.abs(expected - PATCHES).max() > 10
    untagged = centres(render(encoded(patch_image(PATCHES), "PNG"), PNG).data, len(PATCHES))
    assert np.abs(untagged - PATCHES).max() <= 1
    assert "icc_profile" not in Image.open(io.BytesIO(made.data)).info  # output is plain sRGB


def test_cmyk_jpeg_becomes_the_expected_rgb() -> None:
    inks = np.array([[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0], [0, 0, 0, 255], [0, 0, 0, 128],
                     [64, 128, 0, 32]])  # fmt: skip
    data = encoded(patch_image(inks, "CMYK"), "JPEG", quality=100, subsampling=0)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    got = centres(render(data, PNG).data, len(inks))
    expected = (255 - inks[:, :3]) * (255 - inks[:, 3:]) / 255  # no CMYK profile: the device formula
    assert np.abs(got - expected).max() <= 3, (got, expected)
    assert tuple(got[0]) == (255, 255, 255) and tuple(got[1]) == pytest.approx((0, 255, 255), abs=3)


def png_48bit(pixels: npt.NDArray[np.uint16]) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow writes none)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(name: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16_bit_images_are_scaled_to_8_bits() -> None:
    levels = np.array([0, 257, 32768, 65535], dtype=np.uint16)
    grey = np.tile(levels, (4, 1))
    for fmt in ("PNG", "TIFF"):
        made = render(encoded(Image.fromarray(grey), fmt), PNG)
        assert np.asarray(Image.open(io.BytesIO(made.data)))[0, :, 0].tolist() == [0, 1, 128, 255], fmt
    rgb = np.zeros((2, 4, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = levels, levels[::-1], 0x8000
    made = np.asarray(Image.open(io.BytesIO(render(png_48bit(rgb), PNG).data)))
    assert made[0, :, 0].tolist() == [0, 1, 128, 255]
    assert made[0, :, 1].tolist() == [255, 128, 1, 0] and set(made[..., 2].ravel()) == {128}


def test_palette_with_transparency_over_white_or_kept() -> None:
    palette = Image.new("P", (8, 4))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (4, 0, 8, 4))  # left red (index 0, transparent), right blue
    data = encoded(palette, "PNG", transparency=0)
    flat = Image.open(io.BytesIO(render(data, RenditionSpec(format="jpeg", quality=100)).data))
    assert flat.mode == "RGB"
    assert np.abs(np.array(flat.getpixel((1, 1)), dtype=int) - 255).max() <= 2  # white, not red
    assert np.abs(np.array(flat.getpixel((6, 1)), dtype=int) - (0, 0, 255)).max() <= 3
    kept = Image.open(io.BytesIO(render(data, RenditionSpec(format="png", keepAlpha=True)).data))
    assert kept.mode == "RGBA" and kept.getpixel((1, 1))[3] == 0 and kept.getpixel((6, 1)) == (0, 0, 255, 255)


def gps_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (52.0, 22.0, 1.5), 3: "E", 4: (4.0, 53.0, 0.0)}
    return jpeg_with(photo("chelsea", 200), exif=exif.tobytes())


def jpeg_with(image: Image.Image, **options: Any) -> bytes:
    return encoded(image, "JPEG", quality=92, **options)


def test_exif_and_gps_stripped_after_the_orientation_is_applied() -> None:
    source = gps_jpeg(orientation=6)
    stored = Image.open(io.BytesIO(source)).size
    stripped = render(source, RenditionSpec(maxSide=100))
    image = Image.open(io.BytesIO(stripped.data))
    assert (image.width, image.height) == (round(100 * stored[1] / stored[0]), 100)  # turned upright
    assert not image.getexif() and "exif" not in image.info and "icc_profile" not in image.info
    assert b"GPS" not in stripped.data and b"TestCam" not in stripped.data
    kept = Image.open(io.BytesIO(render(source, RenditionSpec(maxSide=100, stripExif=False)).data))
    exif = kept.getexif()
    assert (
        exif.get_ifd(ExifTags.IFD.GPSInfo)[2] == (52.0, 22.0, 1.5) and exif[ExifTags.Base.Make] == "TestCam"
    )
    assert exif[ExifTags.Base.Orientation] == 1 and kept.size == image.size  # never turned twice


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_same_input_and_parameters_give_the_same_bytes(fmt: str) -> None:
    source = jpeg(photo("astronaut", 512))
    spec = RenditionSpec(format=fmt, maxSide=200, quality=80)
    first, second = render(source, spec), render(source, spec)
    assert first.data == second.data and first.sha256 == hashlib.sha256(first.data).hexdigest()
    assert (first.width, first.height) == (200, 200) and Image.open(
        io.BytesIO(first.data)
    ).format == fmt.upper()
    other = spec.model_copy(update={"quality": 60})
    if fmt == "png":  # lossless: the quality changes nothing, not even the stored key
        assert render(source, other).data == first.data and other.digest() == spec.digest()
    else:
        assert render(source, other).data != first.data and other.digest() != spec.digest()
    small = render(jpeg(photo("coins", 150)), spec)  # never scaled up
    assert max(small.width, small.height) == 150


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header declaring a huge image over a few bytes of data."""

    def chunk(name: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_the_decode_guard_refuses_bombs_and_large_decodes() -> None:
    with pytest.raises(decode.ImageRejected) as refused:
        render(bomb_png(), PNG, max_pixels=10_000_000)
    assert refused.value.reason == "max_pixels"
    big = jpeg(photo("astronaut", 512))  # 512 x 512 RGB: 1 MiB decoded
    with pytest.raises(decode.ImageRejected, match="memory limit"):
        render(big, PNG, memory_limit=512 << 10)
    # drafted towards maxSide, the same file decodes within that limit
    assert render(big, RenditionSpec(maxSide=128), memory_limit=512 << 10).width == 128


# --- in a run: computed once, reused across runs and datasets, exported on request --------------------

SPECS = {
    "train-256": {"format": "jpeg", "quality": 90, "maxSide": 256, "colorSpace": "sRGB", "stripExif": True},
    "thumb": {"format": "webp", "quality": 70, "maxSide": 64},
}
MEMORY_LIMIT = 4 << 20  # the big photo's full decode (16 MiB) is refused; its drafted analysis is not


def write_sources(root: Path) -> dict[str, bytes]:
    """A small source folder of real photos in every input kind a rendition must handle, plus a bomb
    and one photo too large to decode in full within MEMORY_LIMIT."""
    camera16 = (np.asarray(photo("camera", 240).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    files = {
        "animals/chelsea-gps.jpg": gps_jpeg(),
        "things/coffee-p3.png": encoded(photo("coffee", 240), "PNG", icc_profile=p3_profile()),
        "things/rocket.jpg": jpeg(photo("rocket", 240)),
        "people/astronaut-cmyk.jpg": encoded(photo("astronaut", 240).convert("CMYK"), "JPEG", quality=92),
        "things/camera-16bit.png": encoded(Image.fromarray(camera16), "PNG"),
        "things/bomb.png": bomb_png(),
        "things/motorcycle-big.jpg": jpeg(photo("motorcycle", 512).resize((2048, 1536))),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def spec(renditions: dict[str, Any] = SPECS, memory_limit: int = 1 << 30) -> dict[str, Any]:
    return {
        "renditions": renditions,
        "qualityGates": {"maxPixels": {"limit": 50_000_000, "memoryLimit": memory_limit}},
    }


def rendition_files(store: ObjectStore) -> dict[str, bytes]:
    return {info.key: store.get(info.key) for info in store.list(RENDITIONS)}


def entries(store: ObjectStore, dataset: str = "defects") -> dict[str, dict[str, Any]]:
    record = latest_version(store, dataset)
    assert record is not None
    return {r["key"]: json.loads(r["renditions"] or "null") for r in rows_of(store, record)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("renditions") / "images"
    return root, write_sources(root)


@pytest.fixture(scope="module")
def built(sources: tuple[Path, dict[str, bytes]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder store with one version of the sources and its renditions."""
    store = tmp_path_factory.mktemp("store")
    result = run_dataset(request(sources[0], str(store), **spec()))
    assert result.version == "1.0.0", result.message
    return store


def test_renditions_are_recorded_and_made_by_the_transform(
    built: Path, sources: tuple[Path, dict[str, bytes]]
) -> None:
    store = LocalStore(built)
    rows = entries(store)
    accepted = set(sources[1]) - {"things/bomb.png"}
    assert set(rows) == accepted
    files = rendition_files(store)
    assert len(files) == 2 * len(accepted)  # one object per sample and rendition, nothing else
    for key, made in rows.items():
        assert set(made) == set(SPECS)
        for name, entry in made.items():
            data = files[entry["key"]]
            expected = render(sources[1][key], RenditionSpec.model_validate(SPECS[name]))
            assert data == expected.data and entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert (entry["width"], entry["height"], entry["bytes"]) == (
                expected.width,
                expected.height,
                len(data),
            )
            longest = max(Image.open(io.BytesIO(sources[1][key])).size)
            assert max(entry["width"], entry["height"]) == min(longest, SPECS[name]["maxSide"])
    gps = Image.open(io.BytesIO(files[rows["animals/chelsea-gps.jpg"]["train-256"]["key"]]))
    assert not gps.getexif() and gps.height > gps.width  # stripped, and turned upright (orientation 6)
    rejected = rows_of(store, list_versions(store, "defects")[0], "rejected")
    (bomb,) = [r for r in rejected if r["key"] == "things/bomb.png"]
    assert bomb["disposition"] == "quarantined" and bomb["reason"] == "max_pixels" and not bomb["renditions"]


def test_byte_identical_across_runs_and_reused_by_a_second_dataset(
    built: Path, sources: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    first = LocalStore(built)
    before = rendition_files(first)
    listed = sorted((i.key, i.etag) for i in first.list(RENDITIONS))
    elsewhere = tmp_path / "other-store"
    again = run_dataset(request(sources[0], str(elsewhere), **spec()))
    assert again.stats.renditions_computed == len(before)
    assert rendition_files(LocalStore(elsewhere)) == before  # the same bytes from a separate run
    # a second dataset over the same photos, in the same store: everything found, nothing written
    second = request(sources[0], str(built), **spec()).model_copy(update={"dataset": "defects-copy"})
    done = run_dataset(second)
    assert done.version == "1.0.0"
    assert (done.stats.renditions_computed, done.stats.renditions_reused) == (0, len(before))
    assert sorted((i.key, i.etag) for i in first.list(RENDITIONS)) == listed  # not even rewritten
    assert entries(first, "defects-copy") == entries(first)
    # the same dataset again: no version, nothing computed
    unchanged = run_dataset(request(sources[0], str(built), **spec()))
    assert not unchanged.created and unchanged.stats.renditions_computed == 0


def test_new_parameters_make_new_renditions_in_a_patch_version(
    sources: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    store_dir = str(tmp_path / "store")
    assert run_dataset(request(sources[0], store_dir, **spec())).version == "1.0.0"
    store = LocalStore(store_dir)
    old = rendition_files(store)
    changed = {**SPECS, "thumb": {**SPECS["thumb"], "quality": 50}}
    result = run_dataset(request(sources[0], store_dir, **spec(changed)))
    assert result.version == "1.0.1" and result.stats.renditions_computed == len(old) // 2
    assert result.stats.renditions_reused == 0  # train-256 came from the parent's rows, untouched
    now = rendition_files(store)
    assert old.items() <= now.items() and len(now) == len(old) + len(old) // 2  # old ones stay
    thumbs = {made["thumb"]["key"] for made in entries(store).values()}
    assert thumbs.isdisjoint(old) and thumbs <= now.keys()


def test_a_rendition_the_guard_refuses_quarantines_the_sample(
    sources: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    full = {"full": {"format": "png"}}  # no maxSide: the whole image is decoded
    result = run_dataset(request(sources[0], str(tmp_path / "store"), **spec(full, MEMORY_LIMIT)))
    assert result.version == "1.0.0" and result.stats.quarantined.get("rendition") == 1
    store = LocalStore(tmp_path / "store")
    record = list_versions(store, "defects")[0]
    (big,) = [r for r in rows_of(store, record, "rejected") if r["key"] == "things/motorcycle-big.jpg"]
    assert big["disposition"] == "quarantined" and big["reason"] == "rendition"
    assert "memory limit" in big["detail"] and not big["renditions"]
    accepted = rows_of(store, record)
    assert len(accepted) == record.samples == 5 and all(json.loads(r["renditions"])["full"] for r in accepted)


def test_export_and_readers_stream_rendition_bytes(built: Path, tmp_path: Path) -> None:
    store = LocalStore(built)
    made = entries(store)
    done = loupe("export", "defects", "--out", str(tmp_path / "out"), "--rendition", "train-256",
                 "--store", str(built))  # fmt: skip
    assert done.returncode == 0, done.stderr
    exported = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.jpg")}
    expected = {entry["train-256"]["sha256"] for entry in made.values()}
    assert {hashlib.sha256(data).hexdigest() for data in exported.values()} == expected
    raw = loupe("export", "defects", "--out", str(tmp_path / "raw"), "--store", str(built))
    assert raw.returncode == 0 and (tmp_path / "raw" / "manifest.csv").exists()
    assert (
        not {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "raw").rglob("*.*")} & expected
    )
    missing = loupe("export", "defects", "--out", str(tmp_path / "none"), "--rendition", "train-1024",
                    "--store", str(built))  # fmt: skip
    assert missing.returncode == 1 and "no rendition 'train-1024'" in missing.stderr + missing.stdout
    version = open_dataset("defects", built).version()
    for sample in version.samples(rendition="thumb"):
        data = sample.read_bytes(verify=True)
        assert Image.open(io.BytesIO(data)).format == "WEBP" and sample.format == "webp"
        assert max(sample.width or 0, sample.height or 0) == 64
    with pytest.raises(ValueError, match="no rendition 'large'"):
        next(version.samples(rendition="large"))


@pytest.mark.s3
def test_on_minio_renditions_are_identical_and_reused(
    built: Path, sources: tuple[Path, dict[str, bytes]], minio: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = minio.make_bucket("renditions")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    on_s3 = request(sources[0], f"s3://{bucket}/loupe", **spec()).model_copy(
        update={"store_endpoint": minio.endpoint}
    )
    first = run_dataset(on_s3)
    s3 = S3Store(bucket, "loupe", endpoint=minio.endpoint)
    local = rendition_files(LocalStore(built))
    assert first.version == "1.0.0" and first.stats.renditions_computed == len(local)
    assert rendition_files(s3) == local  # the same keys and bytes as on the folder store
    listed = sorted((i.key, i.etag) for i in s3.list(RENDITIONS))
    second = run_dataset(on_s3.model_copy(update={"dataset": "defects-copy"}))
    assert (second.stats.renditions_computed, second.stats.renditions_reused) == (0, len(local))
    assert sorted((i.key, i.etag) for i in s3.list(RENDITIONS)) == listed
    assert entries(s3, "defects-copy") == entries(LocalStore(built))


@pytest.mark.ray
def test_renditions_compute_on_ray_with_the_same_bytes(
    built: Path, sources: tuple[Path, dict[str, bytes]], local_ray: None, tmp_path: Path
) -> None:
    from loupe_workers.compute.executor import RayExecutor
    from loupe_workers.compute.renditions import Limits, ensure_renditions

    local = LocalStore(built)
    store = LocalStore(tmp_path / "store")
    shas = {hashlib.sha256(data).hexdigest(): data for name, data in sources[1].items() if "bomb" not in name}
    for sha, data in shas.items():
        put_blob(store, data, sha)
    specs = {name: RenditionSpec.model_validate(value) for name, value in SPECS.items()}
    done = ensure_renditions(store, shas, specs, executor=RayExecutor(), limits=Limits())
    assert done.computed == 2 * len(shas) and not done.failed
    assert rendition_files(store) == rendition_files(local)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "06-renditions"


def test_the_renditions_example_runs_as_its_readme_says(corpus: tuple[Path, Any], tmp_path: Path) -> None:
    import shutil
    import tarfile

    shutil.copy(EXAMPLE / "loupe.yaml", tmp_path / "loupe.yaml")
    run = ("run", "-f", "loupe.yaml", "--executor", "inline", "--json")
    first = loupe(*run, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (report,) = json.loads(first.stdout)
    assert report["created"] and report["stats"]["renditionsComputed"] == 2 * report["stats"]["samples"]
    second = loupe(*run, cwd=tmp_path)
    (again,) = json.loads(second.stdout)
    assert not again["created"] and again["stats"]["renditionsComputed"] == 0
    shards = tmp_path / "shards"
    done = loupe("export", "photos", "--rendition", "train-512", "--format", "webdataset", "--out", str(shards),
                 cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = LocalStore(tmp_path / ".loupe")
    record = latest_version(store, "photos")
    assert record is not None
    # by sample: a video's frames share their source key
    wanted = {json.loads(r["renditions"])["train-512"]["sha256"] for r in rows_of(store, record)}
    got = set()
    for shard in shards.glob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    got.add(hashlib.sha256(handle.read()).hexdigest())
    assert got == wanted and len(wanted) == report["stats"]["samples"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("small: {format: jpeg, keepAlpha: true}", "keepAlpha needs format png or webp"),
        ("small: {format: tiff}", "format"),
        ("small: {maxSide: 0}", "maxSide"),
        ("small: {colorSpace: AdobeRGB}", "colorSpace"),
        ("Train 1024: {maxSide: 64}", "rendition name 'Train 1024'"),
    ],
)
def test_an_invalid_rendition_is_refused_before_anything_is_written(
    entry: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(jpeg(photo("coffee", 64)))
    (tmp_path / "loupe.yaml").write_text(
        "apiVersion: loupe.dev/v1alpha1\nkind: IngestSource\nmetadata: {name: cams}\n"
        "spec: {filesystem: {path: ./images}}\n---\n"
        "apiVersion: loupe.dev/v1alpha1\nkind: Dataset\nmetadata: {name: defects}\n"
        f"spec:\n  sources: [{{name: cams}}]\n  renditions:\n    {entry}\n"
    )
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", cwd=tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "spec.renditions" in said and message in said and "Traceback" not in said
    assert not (tmp_path / ".loupe").exists()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exported_boxes_follow_the_rendition(orientation: int, tmp_path: Path) -> None:
    from loupe_workers.use.exports import samples_from_rows

    canvas = np.zeros((120, 200, 3), dtype=np.uint8)
    canvas[20:50, 30:90] = (255, 0, 0)  # the labelled object: x 30, y 20, w 60, h 30 (stored pixels)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    source = encoded(Image.fromarray(canvas), "PNG", exif=exif.tobytes())
    store = LocalStore(tmp_path)
    sha = put_blob(store, source)
    rendition = RenditionSpec(format="png", maxSide=100)
    made = render(source, rendition)
    key = f"{RENDITIONS}x/{sha}.png"
    store.put(key, made.data)
    row = {
        "sample_id": sha, "sha256": sha, "split": "train", "label": "thing", "format": "png",
        "width": 200, "height": 120,
        "labels": json.dumps({"label": "thing", "boxes": [{"class": "thing", "bbox": [30, 20, 60, 30]}]}),
        "renditions": json.dumps({"small": {"key": key, "sha256": made.sha256, "format": "png",
                                            "width": made.width, "height": made.height, "bytes": len(made.data)}}),
    }  # fmt: skip
    (sample,) = samples_from_rows([row], "small", store)
    (box,) = sample.boxes
    red = np.argwhere(np.asarray(Image.open(io.BytesIO(made.data)).convert("RGB"))[..., 0] > 128)
    (top, left), (bottom, right) = red.min(axis=0), red.max(axis=0) + 1
    assert (sample.width, sample.height) == (made.width, made.height)
    assert (box.x, box.y, box.x + box.width, box.y + box.height) == pytest.approx(
        (left, top, right, bottom), abs=1.5
    )
