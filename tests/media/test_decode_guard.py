"""One decode guard for every decode: header checks (format, pixels, PNG chunks, memory estimate), one
reduced decode, a budgeted full decode for exact pixels; a corrupt or hostile file never stops a run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.compute.process import ProcessSettings
from loupe_workers.curation import privacy
from loupe_workers.embedding import embed
from loupe_workers.media import decode as media
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def png(image: Image.Image, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()


def photo(name: str = "astronaut", size: int = 256) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((size, size))


def request(images: Path, store: Path, dedup: dict[str, Any] | None = None, **gates: Any) -> RunRequest:
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    spec = DatasetSpec.model_validate(
        {"sources": [{"name": "cams"}], "qualityGates": gates, "dedup": dedup or {}}
    )
    return RunRequest(dataset="guard", spec=spec, sources={"cams": source}, store_uri=str(store))


def outcome(store: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    local = LocalStore(store)
    record = list_versions(local, "guard")[-1]
    accepted = {r["key"]: r for r in manifest.read_version_rows(local, record)}
    others = {r["key"]: r for r in manifest.read_version_rows(local, record, "rejected")}
    return accepted, others


@cache
def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A 1-bit all-black PNG of width x height (400 MP by default) in well under 100 KB, streamed so
    the test never holds its pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def idat_offsets(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every IDAT chunk's data."""
    pos, out = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            out.append((pos + 8, pos + 8 + length))
        pos += 12 + length
    return out


def peak_rss_mib(code: str, timeout: int = 300) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; its peak RSS (MiB) and stdout."""
    runner = textwrap.dedent(f"""
        import resource, subprocess, sys
        child = subprocess.run([sys.executable, "-c", {code!r}], capture_output=True, text=True)
        sys.stdout.write(child.stdout)
        sys.stderr.write(child.stderr)
        print("PEAK", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        sys.exit(child.returncode)
    """)
    done = subprocess.run(
        [sys.executable, "-c", runner], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peak = float(done.stdout.rsplit("PEAK", 1)[1])
    return peak, done.stdout


# --- 1. a truncated copy with a same-size look-alike never stops the run ---------------------------


def test_truncated_copy_and_look_alike_are_quarantined_not_fatal(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    original = photo("astronaut")
    valid = png(original)
    (images / "valid.png").write_bytes(valid)
    (images / "truncated.png").write_bytes(valid[: len(valid) * 2 // 3])  # same declared size
    # a bit flipped in the image data: it decoded partly, with the hash of the valid one, so the
    # exact-pixel check decoded both in full and the run died on its error
    start, end = idat_offsets(valid)[-1]
    damaged = bytearray(valid)
    damaged[start + (end - start) * 9 // 10] ^= 0x10
    (images / "damaged.png").write_bytes(bytes(damaged))
    look_alike = np.asarray(original).copy()
    look_alike[100:104, 100:104] ^= 8  # same size, hash within the pixel-check distance
    (images / "look_alike.png").write_bytes(png(Image.fromarray(look_alike)))
    store = tmp_path / "store"
    exact_only = {"perceptual": {"enabled": False}}  # the exact-pixel check still compares all three
    first = run_dataset(request(images, store, exact_only))
    assert first.created and first.version == "1.0.0"
    accepted, others = outcome(store)
    for key in ("truncated.png", "damaged.png"):
        assert others[key]["disposition"] == "quarantined"
        assert others[key]["reason"] == "corrupt" and others[key]["detail"], others[key]
    assert set(accepted) == {"valid.png", "look_alike.png"}
    again = run_dataset(request(images, store, exact_only))
    assert not again.created and again.current_version == "1.0.0", again.message


def test_a_full_decode_failing_in_the_pixel_check_quarantines_that_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the exact-pixel check's full decode raises becomes a corrupt row, never an aborted run,
    and the row stays quarantined in later runs (nothing new is compared then)."""
    images = tmp_path / "images"
    images.mkdir()
    original = photo("astronaut")
    copy = png(original, compress_level=1)  # same pixels, other bytes: the pixel check runs
    (images / "a.png").write_bytes(png(original))
    (images / "b.png").write_bytes(copy)
    real = media.pixel_digest

    def flaky(data: bytes, **limits: int) -> str:
        if data == copy:
            raise OSError("decoder exploded")
        return real(data, **limits)

    monkeypatch.setattr(media, "pixel_digest", flaky)
    store = tmp_path / "store"
    result = run_dataset(request(images, store))
    assert result.created
    accepted, others = outcome(store)
    assert set(accepted) == {"a.png"}
    assert others["b.png"]["disposition"] == "quarantined" and others["b.png"]["reason"] == "corrupt"
    assert "decoder exploded" in others["b.png"]["detail"]
    assert result.stats.quarantined == {"corrupt": 1}
    again = run_dataset(request(images, store))
    assert not again.created, again.message


@pytest.mark.parametrize("failing", ["keep_measures", "shape_measures"])
def test_a_full_decode_failing_in_the_keep_policy_quarantines_that_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The bestOriginal keep policy's full decodes (keep and shape measures) fail like the pixel check's:
    the file is corrupt, quarantined with the reason, and its copies are grouped without it."""
    images = tmp_path / "images"
    images.mkdir()
    original = photo("astronaut")
    # an upscale (another size: no pixel check), whose full measures the upscale test reads
    larger = png(original.resize((original.width * 3 // 2, original.height * 3 // 2)))
    (images / "a.png").write_bytes(png(original))
    (images / "b.png").write_bytes(larger)
    real = getattr(media, failing)

    def flaky(data: bytes, **limits: int) -> Any:
        if data == larger:
            raise OSError("decoder exploded")
        return real(data, **limits)

    monkeypatch.setattr(media, failing, flaky)
    store = tmp_path / "store"
    result = run_dataset(request(images, store))
    assert result.created
    accepted, others = outcome(store)
    assert set(accepted) == {"a.png"} and not accepted["a.png"].get("dup_group")
    assert others["b.png"]["disposition"] == "quarantined" and others["b.png"]["reason"] == "corrupt"
    assert others["b.png"]["detail"] == "full decode failed: OSError: decoder exploded"
    assert result.stats.quarantined == {"corrupt": 1} and result.stats.near_duplicates == 0
    again = run_dataset(request(images, store))
    assert not again.created, again.message


# --- 2. PNG mutants are never accepted ----------------------------------------------------------


def mutants(valid: bytes) -> dict[str, bytes]:
    out = {f"cut{i}.png": valid[: len(valid) * i // 10] for i in range(1, 10)}
    out["cut_before_iend.png"] = valid[:-12]
    out["cut_last_byte.png"] = valid[:-1]
    for n, (start, end) in enumerate(idat_offsets(valid)[:3]):
        for where in (0.1, 0.5, 0.9):
            flipped = bytearray(valid)
            flipped[start + int((end - start) * where)] ^= 0x10
            out[f"flip{n}_{where}.png"] = bytes(flipped)
    # an IDAT flip with its CRC fixed up: zlib or the row filters must catch it, or it decodes fully
    start, end = idat_offsets(valid)[0]
    patched = bytearray(valid)
    patched[start + (end - start) // 2] ^= 0x01
    patched[end : end + 4] = zlib.crc32(bytes(patched[start - 4 : end])).to_bytes(4, "big")
    out["flip_crc_fixed.png"] = bytes(patched)
    return out


def test_png_mutants_are_never_accepted(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    originals = {"orig_a.png": photo("astronaut"), "orig_b.png": photo("coffee")}
    made = 0
    for name, image in originals.items():
        valid = png(image, compress_level=6)
        (images / name).write_bytes(valid)
        for mutant, data in mutants(valid).items():
            (images / f"{name[:-4]}_{mutant}").write_bytes(data)
            made += 1
    store = tmp_path / "store"
    assert run_dataset(request(images, store)).created
    accepted, others = outcome(store)
    # every original is kept: none is dropped as a duplicate of its corrupt copy
    assert {"orig_a.png", "orig_b.png"} <= set(accepted), {k: others[k] for k in originals if k in others}
    assert len(others) == made  # here every mutant is caught (a CRC-fixed flip could decode)
    for key in accepted:
        data = (images / key).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # no accepted sample fails a full decode
        assert media.pixel_digest(data) == media.pixel_digest(data)
    for row in others.values():
        assert row["disposition"] in ("quarantined", "duplicate"), row
        if row["disposition"] == "quarantined":
            assert row["reason"] == "corrupt" and row["detail"], row


def test_truncated_png_is_corrupt_in_processing() -> None:
    """Reading EXIF ran the PNG decode inside its error handling: the image was accepted."""
    valid = png(photo("astronaut"))
    with pytest.raises(media.ImageRejected) as caught:
        media.analyze_image(valid[: len(valid) // 2], max_pixels=10**8)
    assert caught.value.reason == "corrupt"
    with pytest.raises(media.ImageRejected) as full:
        media.pixel_digest(valid[: len(valid) // 2])
    assert full.value.reason == "corrupt"


def test_strips_match_whole_image_conversions() -> None:
    """Converting and transposing a strip at a time gives the bytes of the whole-image operations."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    for orientation in range(1, 9):
        method = media.EXIF_TRANSPOSE.get(orientation)
        whole = base.transpose(method) if method is not None else base
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = png(base, exif=exif.tobytes())
        strips = b"".join(s.tobytes() for s in media._oriented_strips(base, orientation))
        assert strips == whole.tobytes()
        digest = media.pixel_digest(data)
        assert digest == media.pixel_digest(png(whole))  # the orientation is applied
    for mode in ("RGBA", "L", "P", "LA", "1", "CMYK"):
        image = base.resize((203, 301)).convert(mode)
        for factor in (1, 3):
            reduced = media._to_rgb(image)
            expected = reduced.reduce(factor) if factor > 1 else reduced
            assert media._reduced_rgb(image, factor).tobytes() == expected.tobytes()


# --- 3. memory: refused from the header above memoryLimit; 16-bit decodes stay small ---------------


@cache
def big_png16(size: int) -> bytes:
    ramp = np.arange(size, dtype=np.uint16)
    return png(
        Image.fromarray(ramp[None, :] * np.uint16(13) + ramp[:, None] * np.uint16(7)), compress_level=1
    )


def test_memory_limit_refuses_from_the_header() -> None:
    deep = big_png16(3000)  # 9 MP at 2 bytes: 17 MiB to decode
    webp = io.BytesIO()
    photo("coffee", 64).resize((3000, 3000)).save(webp, format="WEBP", quality=30, method=0)
    for data, what in ((deep, "I;16 png"), (webp.getvalue(), "webp")):
        with pytest.raises(media.ImageRejected) as caught:
            media.check_image(data, max_pixels=10**8, memory_limit=8 * MiB)
        assert caught.value.reason == "max_pixels"
        assert what in caught.value.detail and "MiB" in caught.value.detail, caught.value.detail
        media.check_image(data, max_pixels=10**8, memory_limit=1 << 30)  # passes with the default
    # every decode path honours the limit
    settings = ProcessSettings(hash_kind="phash", max_pixels=10**8, memory_limit=8 * MiB)
    assert settings.key() != ProcessSettings(hash_kind="phash", max_pixels=10**8).key()
    with pytest.raises(media.ImageRejected, match="memory limit"):
        media.pixel_digest(deep, memory_limit=8 * MiB)
    with pytest.raises(media.ImageRejected, match="memory limit"):
        embed.decode_for_model(deep, 224, max_pixels=10**8, memory_limit=8 * MiB)
    # the estimate counts the stored mode: the same size in 8-bit grey needs half
    grey = png(Image.new("L", (3000, 3000), 7))
    assert (
        media.check_image(grey, max_pixels=10**8).decode_bytes * 2
        == media.check_image(deep, max_pixels=10**8).decode_bytes
    )


def test_memory_limit_refuses_in_a_run(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "deep.png").write_bytes(big_png16(3000))
    (images / "photo.png").write_bytes(png(photo("astronaut")))
    store = tmp_path / "store"
    result = run_dataset(request(images, store, maxPixels={"memoryLimit": 8 * MiB}))
    assert result.created
    accepted, others = outcome(store)
    assert set(accepted) == {"photo.png"}
    assert others["deep.png"]["reason"] == "max_pixels" and "memory limit" in others["deep.png"]["detail"]


def test_16_bit_png_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """6000x6000 16-bit grey: 69 MiB of pixels. Scaling it through float64 took about 700 MiB."""
    path = tmp_path / "deep.png"
    path.write_bytes(big_png16(6000))
    code = textwrap.dedent(f"""
        from pathlib import Path
        from loupe_workers.media import decode as media
        data = Path({str(path)!r}).read_bytes()
        analysis = media.analyze_image(data, max_pixels=10**8)
        print(analysis.width, analysis.height, media.pixel_digest(data)[:8])
    """)
    peak, out = peak_rss_mib(code)
    assert "6000 6000" in out
    assert peak < 400, f"peak RSS {peak:.0f} MiB"


# --- 4. loupe report on a version whose quarantine holds a bomb ----------------------------------


def test_report_on_a_quarantined_bomb_stays_small(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "photo.png").write_bytes(png(photo("astronaut")))
    bomb = bomb_png()  # 400 MP
    assert len(bomb) < 200_000
    (images / "bomb.png").write_bytes(bomb)
    store = tmp_path / "store"
    assert run_dataset(request(images, store)).created
    _, others = outcome(store)
    assert others["bomb.png"]["reason"] == "max_pixels"
    out = tmp_path / "report.html"
    code = textwrap.dedent(f"""
        from loupe_workers.insights.report import build_report
        from loupe_storage.store import LocalStore
        page = build_report(LocalStore({str(store)!r}), "guard", "1.0.0")
        open({str(out)!r}, "w").write(page)
    """)
    peak, _ = peak_rss_mib(code)
    assert peak < 700, f"peak RSS {peak:.0f} MiB"
    page = out.read_text()
    assert 'data-reason="max_pixels"' in page and "20000x20000" in page


def test_report_cli_on_a_quarantined_bomb(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "photo.png").write_bytes(png(photo("astronaut")))
    (images / "bomb.png").write_bytes(bomb_png())
    store = tmp_path / "store"
    assert run_dataset(request(images, store)).created
    out = tmp_path / "report.html"
    code = textwrap.dedent(f"""
        import sys
        from loupe_workers.cli.main import main
        sys.argv = ["loupe", "report", "guard", "--store", {str(store)!r}, "--out", {str(out)!r}]
        main()
    """)
    peak, _ = peak_rss_mib(code)
    assert peak < 700, f"peak RSS {peak:.0f} MiB"
    assert 'data-reason="max_pixels"' in out.read_text()


# --- 5. embeddings, privacy and thumbnails share the guard ---------------------------------------


def test_embedding_and_privacy_decodes_use_the_guard() -> None:
    bomb = bomb_png()
    valid = png(photo("astronaut", 512))
    truncated = valid[: len(valid) // 2]
    for data, reason in ((bomb, "max_pixels"), (truncated, "corrupt")):
        with pytest.raises(media.ImageRejected) as caught:
            media.decode_reduced(data, side=128, max_pixels=10**8)
        assert caught.value.reason == reason
        with pytest.raises(media.ImageRejected) as via_embed:
            embed.decode_for_model(data, 224, max_pixels=10**8)
        assert via_embed.value.reason == reason
        run = privacy.Detectors(faces=True, plates=False, size=640)
        found = privacy.detect_bytes(data, run, max_pixels=10**8)
        assert found.error and found.error.startswith("ImageRejected"), found
    assert embed.decode_for_model(valid, 224, max_pixels=10**8).shape == (224, 224, 3)
    decoded = media.decode_reduced(valid, side=128, max_pixels=10**8)
    assert (decoded.width, decoded.height) == (512, 512) and decoded.image.size == (128, 128)
    # the memory limit reaches privacy's decode too
    deep = big_png16(3000)
    found = privacy.detect_bytes(deep, run, max_pixels=10**8, memory_limit=8 * MiB)
    assert found.error and "memory limit" in found.error
    fields = privacy.record_fields(truncated, run, max_pixels=10**8)
    assert "truncated" in json.loads(fields["privacy"])["error"]
