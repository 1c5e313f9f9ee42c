"""Quality gates on real photos: every gate fires on a faulty copy and stays quiet on the original.

Faults are made here from scikit-image photos with PIL/numpy, so the transform is the label. Each
file goes through ``process_image`` (one decode, blobs in a LocalStore) and ``gates.evaluate``.
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFilter

from loupe_api.dataset import QualityGates
from loupe_storage.store import LocalStore, blob_key
from loupe_workers.compute.process import ProcessSettings, process_image
from loupe_workers.curation import gates
from loupe_workers.ingest.sources import ListedObject
from loupe_workers.media import decode as media
from loupe_workers.media import metrics

SETTINGS = ProcessSettings(hash_kind="phash", max_pixels=100_000_000)
DEFAULT = QualityGates()
PILLOW_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's own decompression-bomb limit


@cache
def _photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(np.ascontiguousarray(getattr(data, name)()))


def photo(name: str, mode: str = "RGB") -> Image.Image:
    return _photo(name).convert(mode)


def encode(img: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    if fmt == "JPEG":
        options.setdefault("quality", 92)
    elif fmt == "PNG":
        options.setdefault("compress_level", 1)
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def from_array(values: np.ndarray, mode: str | None = None) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode)


def scaled(img: Image.Image, gain: float, offset: float = 0.0) -> Image.Image:
    return from_array(np.asarray(img, dtype=np.float32) * gain + offset, img.mode)


def noisy(img: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    values = np.asarray(img, dtype=np.float32)
    return from_array(values + np.random.default_rng(seed).normal(0.0, sigma, values.shape), img.mode)


@pytest.fixture
def blobs(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "blobs")


def process(blobs: LocalStore, key: str, data: bytes, settings: ProcessSettings = SETTINGS) -> dict[str, Any]:
    obj = ListedObject("cams", key, len(data), f"etag-{len(data)}", "image", f"/images/{key}")
    return process_image(obj, data, blobs, settings)


def verdict(
    blobs: LocalStore,
    key: str,
    data: bytes,
    quality: QualityGates = DEFAULT,
    settings: ProcessSettings = SETTINGS,
) -> gates.GateOutcome:
    return gates.evaluate(process(blobs, key, data, settings), quality)


def custom(**wire: Any) -> QualityGates:
    """Gates as a user writes them in a Dataset spec (camelCase)."""
    return QualityGates.model_validate(wire)


def failed_names(record: dict[str, Any], quality: QualityGates = DEFAULT) -> set[str]:
    return {name for name, _, _ in gates.failed_gates(record, quality)}


def test_gate_defaults_match_the_api() -> None:
    assert DEFAULT.corrupt.action == "quarantine"
    assert DEFAULT.max_pixels.action == "quarantine"
    assert DEFAULT.format.action == DEFAULT.resolution.action == "reject"
    for gate in (
        "extension",
        "blur",
        "dark",
        "bright",
        "low_contrast",
        "noise",
        "low_information",
        "aspect_ratio",
    ):
        assert getattr(DEFAULT, gate).action == "flag", gate


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera", "rocket"])
def test_clean_photos_pass_every_gate(blobs: LocalStore, name: str) -> None:
    record = process(blobs, f"{name}.jpg", encode(photo(name)))
    assert record["status"] == "ok" and record["format"] == "jpeg"
    assert gates.failed_gates(record, DEFAULT) == [], record
    assert gates.evaluate(record, DEFAULT) == gates.GateOutcome("accepted")
    assert blobs.get(blob_key(record["sha256"])) is not None


# --- corrupt -------------------------------------------------------------------------------------


@cache
def _corrupt_files() -> dict[str, bytes]:
    jpeg = encode(photo("astronaut"))
    return {
        "zero_bytes": b"",
        "truncated_half": jpeg[: len(jpeg) // 2],
        "truncated_header": jpeg[:600],
        "random_bytes": np.random.default_rng(7).bytes(20_000),
        "text_named_jpg": b"Shift report, line 3: camera 2 offline.\n" * 40,
    }


@pytest.mark.parametrize(
    "kind", ["zero_bytes", "truncated_half", "truncated_header", "random_bytes", "text_named_jpg"]
)
def test_corrupt_files_are_quarantined_with_a_reason(blobs: LocalStore, kind: str) -> None:
    data = _corrupt_files()[kind]
    record = process(blobs, f"line1/{kind}.jpg", data)  # never raises
    assert record["status"] == "failed" and record["fail_reason"] == "corrupt"
    outcome = gates.evaluate(record, DEFAULT)
    assert outcome.disposition == "quarantined" and outcome.reason == "corrupt"
    assert outcome.detail, outcome
    if data:  # the bytes are kept so a quarantined file can be inspected
        assert blobs.get(blob_key(record["sha256"])) == data
    else:
        assert outcome.detail == "empty file"
    # with another action the same file is rejected instead
    rejected = gates.evaluate(record, custom(corrupt={"action": "reject"}))
    assert (rejected.disposition, rejected.reason) == ("rejected", "corrupt")


def test_truncated_jpeg_is_corrupt_even_though_its_header_reads(blobs: LocalStore) -> None:
    jpeg = encode(photo("coffee"))
    media.open_image(jpeg[: len(jpeg) // 2], max_pixels=SETTINGS.max_pixels)  # the header is fine
    record = process(blobs, "coffee.jpg", jpeg[: len(jpeg) // 2])
    assert record["fail_reason"] == "corrupt" and record["format"] == "jpeg"
    assert "truncated" in record["fail_detail"]


def test_flag_action_never_accepts_an_undecodable_file(blobs: LocalStore) -> None:
    with pytest.raises(ValueError, match=r"corrupt\.action"):
        custom(corrupt={"action": "flag"})  # refused by the API: an undecodable file cannot be kept
    with pytest.raises(ValueError, match=r"maxPixels\.action"):
        custom(maxPixels={"action": "flag"})
    unsupported = {**process(blobs, "notes.jpg", b"not an image"), "fail_reason": "format"}
    outcome = gates.evaluate(unsupported, custom(format={"action": "flag"}))
    assert outcome.disposition == "rejected"


# --- format and extension ------------------------------------------------------------------------


def test_format_gate_rejects_formats_outside_the_allowed_list(blobs: LocalStore) -> None:
    only_jpeg = custom(format={"allowed": ["jpeg"]})
    png = verdict(blobs, "chelsea.png", encode(photo("chelsea"), "PNG"), only_jpeg)
    assert (png.disposition, png.reason) == ("rejected", "format")
    assert verdict(blobs, "chelsea.jpg", encode(photo("chelsea")), only_jpeg).disposition == "accepted"
    # the real format counts, not the name: PNG bytes named .jpg are still a PNG
    renamed = verdict(blobs, "chelsea.jpg", encode(photo("chelsea"), "PNG"), only_jpeg)
    assert (renamed.disposition, renamed.reason) == ("rejected", "format")
    quarantine = custom(format={"allowed": ["jpeg"], "action": "quarantine"})
    assert verdict(blobs, "chelsea.png", encode(photo("chelsea"), "PNG"), quarantine).disposition == (
        "quarantined"
    )


def test_a_format_loupe_does_not_read_is_rejected_by_the_format_gate(blobs: LocalStore) -> None:
    record = process(blobs, "astronaut.ppm", encode(photo("astronaut"), "PPM"))
    assert (record["status"], record["fail_reason"]) == ("failed", "format")
    assert (record["width"], record["height"]) == (512, 512)
    outcome = gates.evaluate(record, DEFAULT)
    assert (outcome.disposition, outcome.reason) == ("rejected", "format")


def test_extension_mismatch_is_flagged(blobs: LocalStore) -> None:
    png_bytes = encode(photo("rocket"), "PNG")
    wrong = verdict(blobs, "rocket.jpg", png_bytes)
    assert wrong.disposition == "accepted" and wrong.flags == ["extension"]
    for key in ("rocket.png", "ROCKET.PNG"):
        assert verdict(blobs, key, png_bytes).flags == []
    for key in ("rocket.jpg", "rocket.JPEG", "rocket.jfif"):
        assert verdict(blobs, key, encode(photo("rocket"))).flags == []
    record = process(blobs, "rocket", png_bytes)
    assert any("(no extension)" in detail for _, _, detail in gates.failed_gates(record, DEFAULT))
    assert verdict(blobs, "rocket.jpg", png_bytes, custom(extension={"enabled": False})).flags == []
    rejected = verdict(blobs, "rocket.jpg", png_bytes, custom(extension={"action": "reject"}))
    assert (rejected.disposition, rejected.reason) == ("rejected", "extension")


# --- resolution and pixel limit ------------------------------------------------------------------


def test_resolution_minimum(blobs: LocalStore) -> None:
    coins = photo("coins")
    thumb = coins.crop((40, 0, 343, 303)).resize((24, 24), Image.Resampling.LANCZOS)
    small = verdict(blobs, "coins_thumb.jpg", encode(thumb))
    assert (small.disposition, small.reason) == ("rejected", "resolution")
    assert "below 32x32" in (small.detail or "")
    at_limit = process(blobs, "coins_32.png", encode(coins.resize((32, 32)), "PNG"))
    assert "resolution" not in failed_names(at_limit)
    assert verdict(blobs, "thumb.jpg", encode(thumb), custom(resolution={"enabled": False})).reason is None
    stricter = custom(resolution={"minWidth": 500, "minHeight": 300})
    assert verdict(blobs, "chelsea.jpg", encode(photo("chelsea")), stricter).reason == "resolution"


def test_resolution_maximum(blobs: LocalStore) -> None:
    capped = custom(resolution={"maxWidth": 500, "maxHeight": 400})
    big = verdict(blobs, "astronaut.jpg", encode(photo("astronaut")), capped)  # 512 x 512
    assert (big.disposition, big.reason) == ("rejected", "resolution")
    assert "above 500x400" in (big.detail or "")
    assert verdict(blobs, "chelsea.jpg", encode(photo("chelsea")), capped).disposition == "accepted"
    assert verdict(blobs, "astronaut.jpg", encode(photo("astronaut"))).disposition == "accepted"


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def bomb_png(side: int = 50_000) -> bytes:
    """A few dozen bytes of PNG whose header declares side x side RGB pixels (7.5 GB decoded)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"\0" * 1024)),
            _chunk(b"IEND", b""),
        ]
    )


def test_decompression_bomb_is_refused_before_decoding(
    blobs: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bomb_png()
    assert len(data) < 200
    # Pillow's own limit is not what protects Loupe: restore it, Loupe must still report max_pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_MAX_PIXELS)
    with pytest.raises(media.ImageRejected) as caught:
        media.open_image(data, max_pixels=SETTINGS.max_pixels)
    assert caught.value.reason == "max_pixels"
    assert (caught.value.width, caught.value.height, caught.value.format) == (50_000, 50_000, "png")
    started = time.perf_counter()
    record = process(blobs, "space/deep_field_mosaic.png", data)
    assert time.perf_counter() - started < 2.0  # a decode of 2.5 G pixels would take minutes
    assert (record["status"], record["fail_reason"]) == ("failed", "max_pixels")
    assert (record["width"], record["height"]) == (50_000, 50_000)
    outcome = gates.evaluate(record, DEFAULT)
    assert (outcome.disposition, outcome.reason) == ("quarantined", "max_pixels")
    assert "50000x50000" in (outcome.detail or "")
    assert blobs.get(blob_key(record["sha256"])) == data
    rejected = gates.evaluate(record, custom(maxPixels={"action": "reject"}))
    assert (rejected.disposition, rejected.reason) == ("rejected", "max_pixels")


def test_the_pixel_limit_is_loupes_own(blobs: LocalStore) -> None:
    low = ProcessSettings(hash_kind="phash", max_pixels=200_000)  # far below Pillow's limit
    big = verdict(blobs, "astronaut.jpg", encode(photo("astronaut")), settings=low)  # 262 144 px
    assert (big.disposition, big.reason) == ("quarantined", "max_pixels")
    assert verdict(blobs, "chelsea.jpg", encode(photo("chelsea")), settings=low).disposition == (
        "accepted"  # 135 300 px
    )
    with pytest.raises(media.ImageRejected) as caught:
        media.open_image(encode(photo("astronaut")), max_pixels=512 * 512 - 1)
    assert caught.value.reason == "max_pixels"
    media.open_image(encode(photo("astronaut")), max_pixels=512 * 512)


# --- pixel-quality gates -------------------------------------------------------------------------


def blurred(img: Image.Image, share: float) -> Image.Image:
    """Gaussian blur of ``share`` of the long side (the benchmark's strengths)."""
    return img.filter(ImageFilter.GaussianBlur(share * max(img.size)))


def exposed(img: Image.Image, stops: float) -> Image.Image:
    """A camera's exposure error: linear light times 2**stops, clipped at white."""
    linear = (np.asarray(img, dtype=np.float32) / 255.0) ** 2.2 * 2.0**stops
    return from_array(np.clip(linear, 0, 1) ** (1 / 2.2) * 255.0, img.mode)


def squeezed(img: Image.Image, keep: float) -> Image.Image:
    """The tones squeezed toward their mean, ``keep`` of the spread left (low contrast)."""
    values = np.asarray(img, dtype=np.float32)
    return from_array(values.mean() + (values - values.mean()) * keep, img.mode)


QUALITY_PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket")


@pytest.mark.parametrize("name", QUALITY_PHOTOS)
def test_blur(blobs: LocalStore, name: str) -> None:
    original = process(blobs, f"{name}.jpg", encode(photo(name)))
    assert "blur" not in failed_names(original), original["sharpness"]
    for share in (0.01, 0.02):
        soft = process(blobs, f"{name}_blur{share}.jpg", encode(blurred(photo(name), share)))
        assert "blur" in failed_names(soft), (name, share, soft["sharpness"])
        assert gates.evaluate(soft, DEFAULT).flags == ["blur"]
        assert soft["sharpness"] < original["sharpness"] / 2


@pytest.mark.parametrize("name", QUALITY_PHOTOS)
def test_blur_spares_dark_flat_and_recompressed_sharp_photos(blobs: LocalStore, name: str) -> None:
    """The score does not depend on brightness or contrast (the old edge-spread score called every dark
    or flat photo blurry)."""
    sharp = photo(name)
    for kind, img, quality in (
        ("dark", scaled(sharp, 0.08), 92),
        ("flat", squeezed(sharp, 0.2), 92),
        ("recompressed", sharp, 30),
    ):
        record = process(blobs, f"{name}_{kind}.jpg", encode(img, quality=quality))
        assert "blur" not in failed_names(record), (name, kind, record["sharpness"])
    assert metrics.sharpness(np.full((120, 160), 7, np.uint8)) == 1.0  # a flat frame is not blurry


def test_blur_threshold_and_action(blobs: LocalStore) -> None:
    sharp = process(blobs, "chelsea.jpg", encode(photo("chelsea")))
    picky = custom(blur={"threshold": sharp["sharpness"] + 0.1, "action": "reject"})
    assert gates.evaluate(sharp, picky).reason == "blur"
    assert gates.evaluate(sharp, custom(blur={"enabled": False, "threshold": 50})).flags == []


def test_dark(blobs: LocalStore) -> None:
    for name in ("astronaut", "coffee", "rocket"):
        original = process(blobs, f"{name}.jpg", encode(photo(name)))
        dark = process(blobs, f"{name}_dark.jpg", encode(scaled(photo(name), 0.08)))
        assert "dark" not in failed_names(original), original["brightness_p99"]
        # a very dark frame also holds little information (entropy); it is neither blurry, flat nor noisy
        assert {"dark"} <= failed_names(dark) <= {"dark", "low_information"}, dark
        assert dark["brightness_p99"] < 0.15 < 0.6 < original["brightness_p99"]
    dark = process(blobs, "astronaut_dark.jpg", encode(scaled(photo("astronaut"), 0.08)))
    quarantine = gates.evaluate(dark, custom(dark={"action": "quarantine"}))
    assert (quarantine.disposition, quarantine.reason) == ("quarantined", "dark")
    assert "dark" not in failed_names(dark, custom(dark={"threshold": 0.05}))


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])  # rocket is a dark photo
def test_bright(blobs: LocalStore, name: str) -> None:
    original = process(blobs, f"{name}.jpg", encode(photo(name)))
    assert "bright" not in failed_names(original), original["clipped"]
    for stops in (2.0, 3.0):
        over = process(blobs, f"{name}_over{stops}.jpg", encode(exposed(photo(name), stops)))
        assert "bright" in failed_names(over), (name, stops, over["clipped"])
        assert "dark" not in failed_names(over) and "blur" not in failed_names(over)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_bright_one_stop_over(blobs: LocalStore, name: str) -> None:
    """One stop over a photo of ordinary exposure blows out about a third of it: flagged. A clean photo
    of a bright scene (white paper, its brightest 1 % near 0.93) blows out nothing and is not."""
    over = process(blobs, f"{name}_over1.jpg", encode(exposed(photo(name), 1.0)))
    assert "bright" in failed_names(over), (name, over["clipped"])
    assert "low_contrast" not in failed_names(over)
    page = process(blobs, "page.jpg", encode(photo("page")))
    assert page["brightness_p99"] > 0.9 and "bright" not in failed_names(page), page


def test_bright_threshold_and_action(blobs: LocalStore) -> None:
    over = process(blobs, "coffee_over.jpg", encode(exposed(photo("coffee"), 2.0)))
    assert over["clipped"] > DEFAULT.bright.threshold
    loose = custom(bright={"threshold": min(1.0, over["clipped"] + 0.01), "action": "reject"})
    assert gates.evaluate(over, loose).disposition == "accepted"
    assert gates.evaluate(over, custom(bright={"action": "reject"})).reason == "bright"


@pytest.mark.parametrize("name", QUALITY_PHOTOS)
def test_low_contrast(blobs: LocalStore, name: str) -> None:
    original = process(blobs, f"{name}.jpg", encode(photo(name)))
    assert "low_contrast" not in failed_names(original), original["contrast"]
    for keep in (0.25, 0.15):
        flat = process(blobs, f"{name}_flat{keep}.jpg", encode(squeezed(photo(name), keep)))
        assert "low_contrast" in failed_names(flat), (name, keep, flat["contrast"])
        assert "low_information" not in failed_names(flat)  # entropy alone never saw these
    # exposure alone does not change contrast: a dark photo is the dark gate's
    dark = process(blobs, f"{name}_dark.jpg", encode(scaled(photo(name), 0.08)))
    assert "low_contrast" not in failed_names(dark), dark["contrast"]
    flat = process(blobs, f"{name}_flat.jpg", encode(squeezed(photo(name), 0.2)))
    assert "low_contrast" not in gates.evaluate(flat, custom(lowContrast={"enabled": False})).flags


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_low_contrast_by_tonal_range(blobs: LocalStore, name: str) -> None:
    """Tones squeezed to 30 % keep a contrast ratio just above 0.3 on these photos (their mean is dark),
    but span less than a third of the scale with no black below 0.2: flagged by the tonal range. The same
    photo under-exposed spans as little but keeps its blacks: not low-contrast (the dark gate's)."""
    original = process(blobs, f"{name}.jpg", encode(photo(name)))
    assert original["tonal_range"] > 0.6 and "low_contrast" not in failed_names(original)
    flat = process(blobs, f"{name}_flat0.3.jpg", encode(squeezed(photo(name), 0.3)))
    assert flat["contrast"] > DEFAULT.low_contrast.threshold  # the ratio alone misses it
    assert flat["tonal_range"] < DEFAULT.low_contrast.max_range
    assert flat["black_level"] > DEFAULT.low_contrast.min_black
    assert "low_contrast" in failed_names(flat), flat
    detail = next(d for n, _, d in gates.failed_gates(flat, DEFAULT) if n == "low_contrast")
    assert detail == f"tonal range {flat['tonal_range']:.3f}"
    assert "low_contrast" not in failed_names(flat, custom(lowContrast={"maxRange": 0}))
    assert "low_contrast" not in failed_names(flat, custom(lowContrast={"minBlack": 0.5}))
    dark = process(blobs, f"{name}_dark0.3.jpg", encode(scaled(photo(name), 0.3)))
    assert dark["tonal_range"] < DEFAULT.low_contrast.max_range and dark["black_level"] < 0.05
    assert "low_contrast" not in failed_names(dark), dark
    # a stored row measured before the tonal range existed is judged by the ratio alone
    old = {k: v for k, v in flat.items() if k not in ("tonal_range", "black_level")}
    assert "low_contrast" not in failed_names(old)


@pytest.mark.parametrize("name", QUALITY_PHOTOS)
def test_noise(blobs: LocalStore, name: str) -> None:
    clean = process(blobs, f"{name}.png", encode(photo(name), "PNG"))
    assert "noise" not in failed_names(clean), clean["noise"]
    for sigma in (20.0, 40.0):
        grainy = process(blobs, f"{name}_iso{sigma}.jpg", encode(noisy(photo(name), sigma)))
        assert "noise" in failed_names(grainy), (name, sigma, grainy["noise"])
        assert gates.evaluate(grainy, DEFAULT).flags == ["noise"]


def test_noise_ignores_texture(blobs: LocalStore) -> None:
    """Fine texture is not noise: measured in the flattest blocks only."""
    for name in ("gravel", "brick"):  # grey photos: told apart by scale
        record = process(blobs, f"{name}.jpg", encode(photo(name)))
        assert "noise" not in failed_names(record), (name, record["noise"])
    for name in ("astronaut", "coffee"):  # colour: noise is in the colour too, texture is not
        textured = photo(name).resize((1024, 1024 * photo(name).height // photo(name).width))
        record = process(blobs, f"{name}_big.jpg", encode(textured))
        assert "noise" not in failed_names(record), (name, record["noise"])
    small = photo("astronaut").resize((240, 240), Image.Resampling.LANCZOS)
    assert "noise" not in failed_names(process(blobs, "small.png", encode(small, "PNG")))
    faint = process(blobs, "camera_faint.png", encode(noisy(photo("camera", "L"), 1.0), "PNG"))
    assert 0 < faint["noise"] < DEFAULT.noise.threshold  # faint grain passes the default ...
    strict = custom(noise={"threshold": faint["noise"] / 2, "action": "reject"})
    assert gates.evaluate(faint, strict).reason == "noise"  # ... not a stricter threshold


def test_low_information(blobs: LocalStore) -> None:
    flat = process(blobs, "wall.png", encode(Image.new("RGB", (640, 480), (128, 126, 120)), "PNG"))
    assert flat["entropy"] == 0.0
    assert "low_information" in failed_names(flat)
    plain = from_array(np.full((480, 640, 3), 128.0) + np.random.default_rng(1).normal(0, 1.0, (480, 640, 3)))
    nearly = process(blobs, "plain_wall.jpg", encode(plain))
    assert "low_information" in failed_names(nearly), nearly["entropy"]
    for name in ("astronaut", "camera"):
        assert "low_information" not in failed_names(process(blobs, f"{name}.jpg", encode(photo(name))))


def test_aspect_ratio(blobs: LocalStore) -> None:
    wide = photo("coffee").resize((1200, 800), Image.Resampling.LANCZOS).crop((0, 340, 1200, 460))
    strip = process(blobs, "coffee_strip.jpg", encode(wide))
    assert (strip["width"], strip["height"]) == (1200, 120)
    assert strip["aspect_ratio"] == pytest.approx(0.1)
    assert gates.evaluate(strip, DEFAULT).flags == ["aspect_ratio"]
    assert "aspect_ratio" not in failed_names(process(blobs, "coffee.jpg", encode(photo("coffee"))))
    tall = process(blobs, "tall.png", encode(wide.transpose(Image.Transpose.ROTATE_90), "PNG"))
    assert "aspect_ratio" in failed_names(tall)
    assert "aspect_ratio" not in failed_names(strip, custom(aspectRatio={"minRatio": 0.05}))


# --- several gates at once -----------------------------------------------------------------------


def test_quarantine_beats_reject_beats_flag(blobs: LocalStore) -> None:
    tiny_dark = scaled(photo("astronaut").resize((24, 24), Image.Resampling.LANCZOS), 0.08)
    record = process(blobs, "tiny_dark.png", encode(tiny_dark, "PNG"))
    assert {"resolution", "dark"} <= failed_names(record)
    rejected = gates.evaluate(record, DEFAULT)  # resolution rejects, dark only flags
    assert (rejected.disposition, rejected.reason) == ("rejected", "resolution")
    assert "dark" in rejected.flags and "resolution" not in rejected.flags
    quarantined = gates.evaluate(record, custom(dark={"action": "quarantine"}))
    assert (quarantined.disposition, quarantined.reason) == ("quarantined", "dark")
    assert "dark" not in quarantined.flags and "resolution" not in quarantined.flags
    accepted = gates.evaluate(record, custom(resolution={"action": "flag"}))
    assert accepted.disposition == "accepted" and accepted.reason is None
    assert {"resolution", "dark"} <= set(accepted.flags)


def test_flags_accumulate(blobs: LocalStore) -> None:
    wide = photo("coffee").resize((1200, 800), Image.Resampling.LANCZOS).crop((0, 340, 1200, 460))
    outcome = gates.evaluate(process(blobs, "strip_dark.jpg", encode(scaled(wide, 0.08))), DEFAULT)
    assert outcome.disposition == "accepted"
    assert {"aspect_ratio", "dark"} <= set(outcome.flags)
    more = gates.evaluate(process(blobs, "strip_dark.jpg", encode(scaled(wide, 0.08), "PNG")), DEFAULT)
    assert more.disposition == "accepted"
    assert {"extension", "aspect_ratio", "dark"} <= set(more.flags)
    # fixed order, whatever fired
    order = [
        "format",
        "extension",
        "resolution",
        "aspect_ratio",
        "low_information",
        "dark",
        "bright",
        "low_contrast",
        "blur",
        "noise",
    ]
    assert more.flags == sorted(more.flags, key=order.index)


# --- decoding ------------------------------------------------------------------------------------


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Loupe"
    exif[ExifTags.Base.Model] = "LineCam 2"
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:03:05 07:08:09"
    return exif.tobytes()


def test_exif_orientation_6_swaps_width_and_height(blobs: LocalStore) -> None:
    upright = photo("coffee")  # 600 x 400 as displayed
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 400 x 600 as stored by the camera
    record = process(blobs, "coffee_rotated.jpg", encode(stored, exif=_exif(6)))
    assert (record["width"], record["height"]) == (600, 400)
    assert record["aspect_ratio"] == pytest.approx(400 / 600, abs=1e-6)
    exif = json.loads(record["exif"])
    assert exif == {
        "camera_make": "Loupe",
        "camera_model": "LineCam 2",
        "capture_time": "2024-03-05T07:08:09",
    }
    plain = process(blobs, "coffee.jpg", encode(upright))
    assert metrics.hamming(record["hash"], plain["hash"]) <= 4  # measured upright, like the original
    unrotated = process(blobs, "coffee_unrotated.jpg", encode(stored, exif=_exif(1)))
    assert (unrotated["width"], unrotated["height"]) == (400, 600)
    assert metrics.hamming(unrotated["hash"], plain["hash"]) > 10


def test_gif_uses_the_first_frame(blobs: LocalStore) -> None:
    frame = photo("astronaut").quantize(256)
    palette = frame.getpalette() or []
    darkest = int(np.asarray(palette).reshape(-1, 3).sum(axis=1).argmin())
    black = Image.new("P", frame.size, darkest)
    black.putpalette(palette)
    animated = encode(frame, "GIF", save_all=True, append_images=[black], duration=100, loop=0)
    black_first = encode(black, "GIF", save_all=True, append_images=[frame], duration=100, loop=0)
    with Image.open(io.BytesIO(animated)) as gif:
        assert getattr(gif, "n_frames", 1) == 2
    record = process(blobs, "astronaut.gif", animated)
    assert (record["status"], record["format"], record["width"], record["height"]) == ("ok", "gif", 512, 512)
    assert gates.evaluate(record, DEFAULT) == gates.GateOutcome("accepted")
    single = process(blobs, "astronaut_still.gif", encode(frame, "GIF"))
    assert metrics.hamming(record["hash"], single["hash"]) <= 2
    assert "dark" in failed_names(process(blobs, "black_first.gif", black_first))


@cache
def _formats() -> dict[str, tuple[str, str, bytes]]:
    astronaut = photo("astronaut")
    rgba = astronaut.convert("RGBA")
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[:, :128] = 128
    rgba.putalpha(Image.fromarray(alpha))
    camera16 = Image.fromarray(np.asarray(photo("camera", "L"), dtype=np.uint16) * 257)
    return {
        "webp": ("astronaut.webp", "webp", encode(astronaut, "WEBP", quality=90)),
        "webp_lossless": ("astronaut.webp", "webp", encode(astronaut, "WEBP", lossless=True, method=0)),
        "bmp": ("astronaut.bmp", "bmp", encode(astronaut, "BMP")),
        "tiff": ("astronaut.tif", "tiff", encode(astronaut, "TIFF", compression="tiff_deflate")),
        "png16": ("camera16.png", "png", encode(camera16, "PNG")),
        "palette_png": ("astronaut_p.png", "png", encode(astronaut.quantize(256), "PNG")),
        "rgba_png": ("astronaut_rgba.png", "png", encode(rgba, "PNG")),
        "grey_jpeg": ("camera.jpg", "jpeg", encode(photo("camera", "L"))),
    }


@pytest.mark.parametrize(
    "kind", ["webp", "webp_lossless", "bmp", "tiff", "png16", "palette_png", "rgba_png", "grey_jpeg"]
)
def test_formats_decode(blobs: LocalStore, kind: str) -> None:
    key, fmt, data = _formats()[kind]
    record = process(blobs, key, data)
    assert record["status"] == "ok", record
    assert (record["format"], record["width"], record["height"]) == (fmt, 512, 512)
    assert gates.evaluate(record, DEFAULT) == gates.GateOutcome("accepted"), record
    reference_name = "camera" if kind in ("png16", "grey_jpeg") else "astronaut"
    reference = process(blobs, "ref.png", encode(photo(reference_name), "PNG"))
    assert metrics.hamming(record["hash"], reference["hash"]) <= 8


def test_sixteen_bit_png_is_really_sixteen_bit() -> None:
    _, _, data = _formats()["png16"]
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode.startswith("I")


def test_metrics_are_deterministic(tmp_path: Path) -> None:
    data = encode(noisy(photo("rocket"), 10.0))
    first = process(LocalStore(tmp_path / "a"), "rocket.jpg", data)
    second = process(LocalStore(tmp_path / "b"), "rocket.jpg", data)
    assert first == second
    analysis = media.analyze_image(data, max_pixels=SETTINGS.max_pixels, hash_kind="dhash")
    assert analysis == media.analyze_image(data, max_pixels=SETTINGS.max_pixels, hash_kind="dhash")
    assert set(analysis.metrics) == {
        "brightness_p99",
        "brightness_p5",
        "clipped",
        "contrast",
        "black_level",
        "tonal_range",
        "sharpness",
        "noise",
        "entropy",
        "aspect_ratio",
    }


def _metrics_of(working: Image.Image, detail: Image.Image, width: int, height: int) -> dict[str, float]:
    grey = working.convert("L")
    thumb = metrics.thumbnail(working)
    p99, p5 = metrics.exposure(np.asarray(thumb, dtype=np.uint8))
    rgb = np.asarray(working, dtype=np.uint8)
    fine = np.asarray(detail.convert("L"), dtype=np.uint8)
    values = {
        "brightness_p99": p99,
        "brightness_p5": p5,
        "clipped": metrics.clipped_highlights(np.asarray(detail.convert("RGB"), dtype=np.uint8)),
        "contrast": metrics.contrast(rgb),
        "black_level": metrics.tones(rgb)[1],
        "tonal_range": metrics.tones(rgb)[2],
        "sharpness": metrics.fine_sharpness(fine, None, np.asarray(grey, dtype=np.uint8)),
        "noise": metrics.fine_noise(fine, metrics.is_grey(np.asarray(thumb, dtype=np.uint8))),
        "entropy": metrics.entropy_bits(np.asarray(grey, dtype=np.uint8)),
        "aspect_ratio": metrics.aspect_ratio(width, height),
    }
    return {k: round(v, 6) for k, v in values.items()}


def test_large_jpeg_is_measured_on_a_reduced_decode() -> None:
    big = photo("coffee").resize((1920, 1280), Image.Resampling.LANCZOS).crop((0, 100, 1920, 1180))
    jpeg = encode(big)
    with Image.open(io.BytesIO(jpeg)) as decoded:
        png = encode(decoded.convert("RGB"), "PNG")  # the same pixels, losslessly
    a_jpeg = media.analyze_image(jpeg, max_pixels=SETTINGS.max_pixels)
    a_png = media.analyze_image(png, max_pixels=SETTINGS.max_pixels)
    # reported at full size ...
    assert (a_jpeg.width, a_jpeg.height) == (a_png.width, a_png.height) == (1920, 1080)
    assert media.pixel_digest(jpeg) == media.pixel_digest(png)
    assert metrics.hamming(a_jpeg.hashes["phash"], a_png.hashes["phash"]) <= 10
    # ... but measured on one decode: the JPEG drafted (DCT scaling in the decoder) only down to a long
    # side of DETAIL_SIDE-2047 px, where blur and grain are measured, then box-reduced to the working
    # image (long side in [WORKING_SIZE, 2 * WORKING_SIZE)) that feeds every other measure and the hash;
    # the PNG box-reduced to both.
    size, detail = media.WORKING_SIZE, media.DETAIL_SIDE
    with Image.open(io.BytesIO(jpeg)) as draft:
        draft.draft("RGB", (math.ceil(1920 * detail / 1920), math.ceil(1080 * detail / 1920)))
        draft.load()
        assert detail <= max(draft.size) < 2 * detail and draft.size == (960, 540)
        working = draft.convert("RGB").reduce(960 // size)
        assert size <= max(working.size) < 2 * size
        assert a_jpeg.metrics == _metrics_of(working, draft.convert("RGB"), 1920, 1080)
    with Image.open(io.BytesIO(png)) as full:
        rgb = full.convert("RGB")
        reduced = rgb.reduce(1920 // size)
        assert size <= max(reduced.size) < 2 * size
        assert a_png.metrics == _metrics_of(reduced, rgb.reduce(1920 // detail), 1920, 1080)
    with Image.open(io.BytesIO(jpeg)) as full_jpeg:  # a full decode would have measured otherwise
        rgb = full_jpeg.convert("RGB")
        assert _metrics_of(rgb.reduce(15), rgb, 1920, 1080) != a_jpeg.metrics


# --- blur and grain at native resolution (a full-size photo, measured on its own pixels) -----------------


@cache
def _full_size() -> Image.Image:
    """A 1536 x 800 real photograph at its own pixels (nothing upscaled): six scikit-image photos, each a
    512 x 400 crop at native resolution, side by side, the size of a small camera frame. (The quality
    benchmark uses other photos: the dev corpus of benchmarks/corpus.py.)"""
    import skimage.data

    tiles = []
    for name in ("astronaut", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry", "chelsea"):
        loaded = getattr(skimage.data, name)()
        array = loaded[0] if name == "stereo_motorcycle" else loaded
        tile = Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
        if tile.height < 400:  # chelsea is 451 x 300: the only tile not at its own size (two tiles of six)
            tile = tile.resize((round(tile.width * 400 / tile.height), 400), Image.Resampling.LANCZOS)
        left, top = (tile.width - 512) // 2, (tile.height - 400) // 2
        tiles.append(tile.crop((left, top, left + 512, top + 400)))
    out = Image.new("RGB", (1536, 800))
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % 3) * 512, (i // 3) * 400))
    return out


def _old_working_scale(data: bytes) -> dict[str, float]:
    """Sharpness and noise as Loupe measured them before: on the 128-255 px working image only."""
    working = media.decode_reduced(data, side=media.WORKING_SIZE, max_pixels=SETTINGS.max_pixels).image
    grey = np.asarray(working.convert("L"), dtype=np.uint8)
    ycbcr = np.asarray(working.convert("YCbCr"), dtype=np.uint8)
    return {"sharpness": metrics.sharpness(grey), "noise": metrics.noise_level(ycbcr)}


def test_a_sharp_full_size_photo_passes_every_gate(blobs: LocalStore) -> None:
    record = process(blobs, "full.jpg", encode(_full_size()))
    assert (record["width"], record["height"]) == (1536, 800)
    assert failed_names(record) == set(), record


@pytest.mark.parametrize("kind", ["gaussian", "defocus"])
def test_mild_blur_of_a_full_size_photo_is_flagged(blobs: LocalStore, kind: str) -> None:
    """A blur of 0.25 % of the long side (Gaussian sigma 3.8 px, or a 0.5 % defocus disc) is plain at 100 %
    zoom but gone at the 128-255 px working scale, where the old score still called the photo sharp."""
    sharp = _full_size()
    if kind == "gaussian":
        soft = sharp.filter(ImageFilter.GaussianBlur(0.0025 * 1536))
    else:
        import cv2

        r = round(0.005 * 1536)
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disc = (xx**2 + yy**2 <= r * r).astype(np.float32)
        soft = from_array(cv2.filter2D(np.asarray(sharp, np.float32), -1, disc / disc.sum()))
    data = encode(soft)
    record = process(blobs, f"full_{kind}.jpg", data)
    assert gates.evaluate(record, DEFAULT).flags == ["blur"], record
    assert _old_working_scale(data)["sharpness"] > DEFAULT.blur.threshold  # the old measure missed it


def test_a_sharp_subject_before_a_soft_background_is_not_blurry(blobs: LocalStore) -> None:
    """Shallow depth of field: the background blurred by 1 % of the long side, a subject in focus. The
    blur window lands on the subject, so the photo stays sharp; the same photo blurred all over is not."""
    sharp = _full_size()
    background = sharp.filter(ImageFilter.GaussianBlur(0.01 * 1536))
    mask = Image.new("L", sharp.size, 0)
    mask.paste(255, (512 + 64, 400 - 200, 1024 - 64, 400 + 200))  # the middle of the mosaic, in focus
    mask = mask.filter(ImageFilter.GaussianBlur(8))
    portrait = Image.composite(sharp, background, mask)
    record = process(blobs, "portrait.jpg", encode(portrait))
    assert "blur" not in failed_names(record), record["sharpness"]
    assert "blur" in failed_names(process(blobs, "all_soft.jpg", encode(background)))


@pytest.mark.parametrize("sigma", [5.0, 10.0])
def test_grain_of_a_full_size_photo_is_flagged(blobs: LocalStore, sigma: float) -> None:
    """Sensor noise of sigma 5-10 at the photo's own pixels: averaged away at the working scale (the old
    measure passed it), plain in the flat parts of the native-resolution image."""
    data = encode(noisy(_full_size(), sigma))
    record = process(blobs, f"full_noise{sigma}.jpg", data)
    assert gates.evaluate(record, DEFAULT).flags == ["noise"], record
    if sigma == 5.0:
        assert _old_working_scale(data)["noise"] < DEFAULT.noise.threshold  # the old measure missed it


def test_recompressed_full_size_photo_is_neither_blurry_nor_noisy(blobs: LocalStore) -> None:
    for quality in (50, 25):
        record = process(blobs, f"full_q{quality}.jpg", encode(_full_size(), quality=quality))
        assert failed_names(record) == set(), (quality, record)


def test_fine_measures_use_a_bounded_window() -> None:
    """Blur is judged on at most 512 x 512 native pixels, where the photo has most structure."""
    grey = np.zeros((800, 1536), np.uint8)
    grey[500:700, 1200:1400] = np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)
    window = metrics.detail_window(grey)
    assert window.shape == (512, 512)
    assert window.std() > 20  # it holds the textured patch
    small = np.full((300, 400), 9, np.uint8)
    assert metrics.detail_window(small) is small
