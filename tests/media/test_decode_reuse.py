"""One guarded full decode per duplicate-group member, and none again for samples seen before: the
exact-pixel digest and the keep measures come from the same decode, and both are carried by sha256
from version to version (manifest columns pixel_sha256 and keep_measures)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from skimage import data as skdata

from loupe_api.dataset import DatasetSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.media import decode as media
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def request(images: Path, store: Path, **gates: Any) -> RunRequest:
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}], "qualityGates": gates})
    return RunRequest(dataset="reuse", spec=spec, sources={"cams": source}, store_uri=str(store))


def rows(store: Path) -> dict[str, dict[str, Any]]:
    local = LocalStore(store)
    record = list_versions(local, "reuse")[-1]
    found = manifest.read_version_rows(local, record) + manifest.read_version_rows(local, record, "rejected")
    return {r["key"]: r for r in found}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A photo, a lossless re-encode of it (same pixels: the exact-pixel check decodes both), a smaller
    copy (a near duplicate: only the keep policy decodes it) and an unrelated photo."""
    images = tmp_path / "images"
    images.mkdir()
    astronaut = Image.fromarray(skdata.astronaut()).convert("RGB").resize((320, 320))
    (images / "original.png").write_bytes(encoded(astronaut, "PNG"))
    (images / "reencoded.png").write_bytes(encoded(astronaut, "PNG", compress_level=1))
    (images / "smaller.jpg").write_bytes(encoded(astronaut.resize((240, 240)), "JPEG", quality=90))
    coffee = Image.fromarray(skdata.coffee()).convert("RGB")
    (images / "coffee.jpg").write_bytes(encoded(coffee, "JPEG", quality=90))
    return images


@pytest.fixture
def shapes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Decodes at the working scale for the shape measures alone, by the sha256 of the bytes decoded."""
    counts: Counter[str] = Counter()
    shape = media.shape_measures

    def counted_shape(data: bytes, **options: Any) -> dict[str, float]:
        counts[hashlib.sha256(data).hexdigest()] += 1
        return shape(data, **options)

    monkeypatch.setattr(media, "shape_measures", counted_shape)
    return counts


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Full decodes by the sha256 of the bytes decoded (both full-decode entry points are counted)."""
    counts: Counter[str] = Counter()
    digest, measures = media.pixel_digest, media.keep_measures

    def counted_digest(data: bytes, **options: Any) -> str:
        counts[hashlib.sha256(data).hexdigest()] += 1
        return digest(data, **options)

    def counted_measures(data: bytes, **options: Any) -> dict[str, float]:
        counts[hashlib.sha256(data).hexdigest()] += 1
        return measures(data, **options)

    monkeypatch.setattr(media, "pixel_digest", counted_digest)
    monkeypatch.setattr(media, "keep_measures", counted_measures)
    return counts


def test_one_full_decode_per_group_member(
    folder: Path, tmp_path: Path, decodes: Counter[str], shapes: Counter[str]
) -> None:
    result = run_dataset(request(folder, tmp_path / "store"))
    assert result.created
    found = rows(tmp_path / "store")
    assert found["reencoded.png"]["reason"] == "exact_duplicate", found["reencoded.png"]
    assert found["smaller.jpg"]["reason"] == "near_duplicate", found["smaller.jpg"]
    pngs = {found[k]["sha256"] for k in ("original.png", "reencoded.png")}
    assert set(decodes) == pngs  # the unrelated photo is never decoded in full
    assert all(n == 1 for n in decodes.values()), decodes  # digest and keep measures share one decode
    # the smaller copy has nothing smaller to be an upscale of and leaves at "highest resolution":
    # its shape (for the letterbox test) is all the keep policy reads of it, at the working scale
    assert shapes == Counter({found["smaller.jpg"]["sha256"]: 1}), shapes
    for key in ("original.png", "reencoded.png", "smaller.jpg"):
        stored = json.loads(found[key]["keep_measures"])
        assert stored["version"] == media.KEEP_MEASURES_VERSION
        data = folder.joinpath(key).read_bytes()
        expected = media.shape_measures(data) if key == "smaller.jpg" else media.keep_measures(data)
        assert stored["measures"] == expected
    assert found["coffee.jpg"]["keep_measures"] is None


def test_no_full_decode_again_for_unchanged_samples(
    folder: Path, tmp_path: Path, decodes: Counter[str]
) -> None:
    store = tmp_path / "store"
    first = run_dataset(request(folder, store))
    assert first.created
    before = rows(store)
    decodes.clear()
    again = run_dataset(request(folder, store))  # the same spec: nothing is processed again
    assert not again.created, again.message
    assert not decodes, decodes
    # another maxPixels limit changes the processing key: every file is analysed and grouped again,
    # but the pixel digests and keep measures of the same bytes are carried, not decoded
    regrouped = run_dataset(request(folder, store, maxPixels={"limit": 50_000_000}))
    assert regrouped.created, regrouped.message
    assert not decodes, decodes
    after = rows(store)
    for key, row in before.items():  # the same groups, the same kept copies, the same measures
        for column in ("disposition", "reason", "dup_kind", "duplicate_of", "pixel_sha256", "keep_measures"):
            assert after[key][column] == row[column], (key, column)


def test_keep_measures_of_another_version_are_measured_again(
    folder: Path, tmp_path: Path, decodes: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    assert run_dataset(request(folder, store)).created
    decodes.clear()
    monkeypatch.setattr(media, "KEEP_MEASURES_VERSION", media.KEEP_MEASURES_VERSION + 1)
    assert run_dataset(request(folder, store, maxPixels={"limit": 50_000_000})).created
    found = rows(store)
    assert decodes and all(n == 1 for n in decodes.values()), decodes
    assert set(decodes) <= {found[k]["sha256"] for k in ("original.png", "reencoded.png", "smaller.jpg")}
    for row in found.values():  # measures of the old version are neither used nor carried
        if row["keep_measures"] is not None:
            assert row["sha256"] in decodes
            assert json.loads(row["keep_measures"])["version"] == media.KEEP_MEASURES_VERSION


def test_merged_decode_gives_what_the_two_decodes_gave(folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        keep: dict[str, float] = {}
        assert media.pixel_digest(data, keep=keep) == media.pixel_digest(data)
        assert keep == media.keep_measures(data)


def test_shape_measures_are_the_keep_measures_shape_at_any_size_and_format() -> None:
    """shape_measures gives exactly keep_measures' padded and content_aspect: a large letterboxed JPEG
    (the box is not the frame), a small one, a grey one, lossless ones."""
    photo = Image.fromarray(skdata.astronaut()).convert("RGB")
    boxed = Image.new("RGB", (2400, 1500), (0, 0, 0))
    boxed.paste(photo.resize((1500, 1500)), (450, 0))
    cases = {
        "large jpeg": encoded(boxed, "JPEG", quality=90),
        "small jpeg": encoded(photo.resize((300, 300)), "JPEG", quality=90),
        "grey jpeg": encoded(boxed.convert("L"), "JPEG", quality=90),
        "png": encoded(boxed.resize((1200, 750)), "PNG"),
        "webp": encoded(boxed.resize((1200, 750)), "WEBP", lossless=True),
    }
    for name, data in cases.items():
        whole = media.keep_measures(data)
        shape = media.shape_measures(data)
        assert set(shape) == set(media.SHAPE_MEASURES), name
        assert shape == {k: whole[k] for k in media.SHAPE_MEASURES}, name
        if name != "small jpeg":
            assert shape["padded"] > 0.3 and abs(shape["content_aspect"] - 1.0) < 0.05, (name, shape)
