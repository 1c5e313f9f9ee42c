"""Near duplicates that survive flips, quarter turns and letterboxing; groups that do not chain; a
published sample never dropped by an append; the best original kept."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from loupe_api.dataset import DatasetSpec, DedupSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_workers import manifest, media, metrics
from loupe_workers.dedup import DuplicateInfo, find_duplicates
from loupe_workers.pipeline import run_dataset
from loupe_workers.process import ProcessSettings, process_image
from loupe_workers.sources import ListedObject
from loupe_workers.store import LocalStore, blob_key
from loupe_workers.versions import list_versions
from support.photos import PHOTO_NAMES, jpeg, photo

SETTINGS = ProcessSettings(hash_kind="phash", max_pixels=100_000_000)
Record = dict[str, Any]


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 92)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pad(image: Image.Image, width: int, height: int, colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    canvas = Image.new("RGB", (width, height), colour)
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


class Files:
    """Processed records over a LocalStore, as the pipeline hands them to find_duplicates."""

    def __init__(self, root: Path) -> None:
        self.blobs = LocalStore(root)
        self.records: dict[str, Record] = {}

    def add(self, key: str, data: bytes) -> Record:
        obj = ListedObject("cams", key, len(data), f"{len(data)}-0", "image", key)
        record = process_image(obj, data, self.blobs, SETTINGS)
        assert record["status"] == "ok", record
        self.records[key] = record
        return record

    def data(self, record: Record) -> bytes:
        return self.blobs.get(blob_key(record["sha256"]))

    def run(self, keys: list[str], spec: DedupSpec | None = None) -> dict[str, DuplicateInfo]:
        records = [self.records[k] for k in keys]
        result = find_duplicates(
            records,
            spec or DedupSpec(),
            is_new=[True] * len(records),
            previously_kept=set(),
            pixel_digest=lambda r: media.pixel_digest(self.data(r)),
            keep_measures=lambda r: media.keep_measures(self.data(r)),
        )
        return dict(zip(keys, result, strict=True))


@cache
def base(name: str) -> Image.Image:
    return photo(name, long_side=480)


EDITS = {
    "hflip": ImageOps.mirror,
    "vflip": ImageOps.flip,
    "rot90": lambda i: i.transpose(Image.Transpose.ROTATE_90),
    "rot270": lambda i: i.transpose(Image.Transpose.ROTATE_270),
    "letterbox": lambda i: pad(i, i.width, i.width if i.width > i.height else round(i.height * 1.3)),
    "pillarbox": lambda i: pad(i, round(i.width * 1.33), i.height, (255, 255, 255)),
    "flip_letterbox": lambda i: pad(ImageOps.mirror(i), i.width, round(i.height * 1.3)),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    f = Files(tmp_path_factory.mktemp("near"))
    for name in PHOTO_NAMES:
        f.add(f"{name}/original.jpg", encode(base(name)))
        for edit, make in EDITS.items():
            f.add(f"{name}/{edit}.jpg", encode(make(base(name)), quality=85))
    return f


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_flips_turns_and_letterboxes_are_found(files: Files, name: str) -> None:
    keys = [f"{name}/original.jpg", *(f"{name}/{edit}.jpg" for edit in EDITS)]
    result = files.run(keys)
    original = files.records[keys[0]]["sample_id"]
    assert result[keys[0]].kept and result[keys[0]].group == original[:16]
    for key in keys[1:]:
        assert result[key] == DuplicateInfo(original[:16], False, "near_duplicate", original), key
    # with the transformed hashes off, flips and turns are missed again
    plain = files.run(keys, DedupSpec.model_validate({"perceptual": {"transforms": False}}))
    assert plain[f"{name}/hflip.jpg"].of != original and plain[f"{name}/rot90.jpg"].of != original


def test_distinct_photos_are_never_merged(files: Files) -> None:
    keys = [f"{name}/{edit}.jpg" for name in PHOTO_NAMES for edit in ("original", *EDITS)]
    result = files.run(keys, DedupSpec.model_validate({"action": "flag"}))
    photo_of_group: dict[str, str] = {}
    for key, info in result.items():
        if info.group:
            assert photo_of_group.setdefault(info.group, key.split("/")[0]) == key.split("/")[0], key


def test_distinct_photos_are_far_apart_in_every_orientation(files: Files) -> None:
    """The margin behind the default threshold (8): different photos stay at least 11 bits apart."""
    originals = [files.records[f"{name}/original.jpg"] for name in PHOTO_NAMES]
    closest = 64
    for i, a in enumerate(originals):
        for b in originals[i + 1 :]:
            for variant in [a["hash"], *a["hash_variants"]]:
                closest = min(closest, metrics.hamming(variant, b["hash"]))
    assert closest > 10


def test_border_trimming() -> None:
    image = base("coffee")
    grey = np.asarray(pad(image, image.width + 40, image.height + 90).convert("L"))
    top, bottom, left, right = metrics.border_box(grey)
    assert (top, bottom, left, right) == (45, 45 + image.height, 20, 20 + image.width)
    plain = np.asarray(image.convert("L"))
    assert metrics.border_box(plain) == (0, image.height, 0, image.width)


def test_hash_variants_include_the_flipped_hash() -> None:
    grey = base("chelsea").convert("L")
    variants = metrics.hash_variants(grey, "phash")
    assert variants[0] == metrics.perceptual_hash(grey, "phash") and len(set(variants)) == 8
    for method in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90, Image.Transpose.TRANSVERSE):
        moved = metrics.perceptual_hash(grey.transpose(method), "phash")
        assert min(metrics.hamming(moved, v) for v in variants) <= 2
    assert len(metrics.hash_variants(grey, "dhash")) == 8


def test_groups_are_stable_across_orders_and_runs(files: Files) -> None:
    keys = [f"{name}/{edit}.jpg" for name in ("chelsea", "coffee") for edit in ("original", *EDITS)]
    first = files.run(keys)
    assert files.run(keys[::-1]) == first
    # the next run, with nothing new, keeps every group and kept copy as it was
    records = [
        dict(files.records[k], dup_group=first[k].group, dup_kind=first[k].kind, keep_reason=first[k].reason)
        for k in keys
    ]
    kept = {r["sample_id"] for r, k in zip(records, keys, strict=True) if first[k].kept}
    again = find_duplicates(
        records, DedupSpec(), is_new=[False] * len(keys), previously_kept=kept,
        pixel_digest=lambda r: r["sha256"],
    )  # fmt: skip
    assert dict(zip(keys, again, strict=True)) == first
    assert [i.reason for i in again] == [first[k].reason for k in keys]


# --- groups are stars around their kept copy ---------------------------------------------------------


def synthetic(key: str, value: int, **extra: Any) -> Record:
    return {
        "sample_id": key * 8, "sha256": key * 8, "source": "s", "key": key, "frame_index": None,
        "width": 100, "height": 100, "size": 1000, "format": "jpeg", "sharpness": 0.5,
        "hash": f"{value:016x}", "hash_variants": [], "status": "ok", **extra,
    }  # fmt: skip


def bits(n: int, start: int = 0) -> int:
    return sum(1 << b for b in range(start, start + n))


def test_groups_do_not_chain() -> None:
    # a - b - c - d: neighbours 6 bits apart, a and c 12 apart: a holds b, c holds d
    chain = [synthetic("a", 0), synthetic("b", bits(6)), synthetic("c", bits(12)), synthetic("d", bits(18))]
    result = find_duplicates(
        chain, DedupSpec.model_validate({"keep": "first"}), is_new=[True] * 4,
        previously_kept=set(), pixel_digest=lambda r: r["sha256"],
    )  # fmt: skip
    a, _, c, _ = (r["sample_id"] for r in chain)
    assert [(i.kept, i.of) for i in result] == [(True, None), (False, a), (True, None), (False, c)]
    assert result[0].group != result[2].group


def test_an_append_never_drops_a_published_sample() -> None:
    published = [synthetic("p", 0), synthetic("q", bits(12))]  # 12 bits apart: two samples
    bridge = synthetic("n", bits(6))  # 6 bits from each
    records = [*published, bridge]
    result = find_duplicates(
        records, DedupSpec(), is_new=[False, False, True],
        previously_kept={r["sample_id"] for r in published}, pixel_digest=lambda r: r["sha256"],
    )  # fmt: skip
    assert result[0].kept and result[1].kept and result[0].group != result[1].group
    assert not result[2].kept and result[2].of in {r["sample_id"] for r in published}
    # the same three, all new: the bridge sorts first, so it is kept, and both are within 8 bits of it
    fresh = find_duplicates(
        records, DedupSpec.model_validate({"keep": "first"}), is_new=[True] * 3,
        previously_kept=set(), pixel_digest=lambda r: r["sha256"],
    )  # fmt: skip
    assert [(i.kept, i.of) for i in fresh] == [(False, bridge["sample_id"])] * 2 + [(True, None)]


def blend(a: Image.Image, b: Image.Image, alpha: float) -> Image.Image:
    return Image.blend(a, b.resize(a.size), alpha)


def test_appending_a_bridging_photo_is_a_minor_version(tmp_path: Path) -> None:
    """Two published photos 12+ bits apart and a newcomer within 8 of both: the version is MINOR."""
    one, other = base("chelsea"), base("coffee")
    hashes = {}
    for step in range(0, 41):
        alpha = step / 100
        hashes[alpha] = media.analyze_image(jpeg(blend(one, other, alpha)), max_pixels=10**8).hashes["phash"]
    found = [
        (a, b, m)
        for a in hashes for b in hashes for m in hashes
        if a < m < b and metrics.hamming(hashes[a], hashes[b]) >= 12
        and metrics.hamming(hashes[a], hashes[m]) <= 8 and metrics.hamming(hashes[m], hashes[b]) <= 8
    ]  # fmt: skip
    assert found, "no bridging blend"
    low, high, middle = found[0]
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    blend(one, other, low).save(images / "cats" / "a.jpg", quality=90)
    blend(one, other, high).save(images / "cats" / "b.jpg", quality=90)
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    spec = DatasetSpec.model_validate({"sources": [{"name": "cams"}]})
    request = RunRequest(dataset="d", spec=spec, sources={"cams": source}, store_uri=str(tmp_path / "store"))
    first = run_dataset(request)
    assert first.version == "1.0.0" and first.stats.samples == 2
    blend(one, other, middle).save(images / "cats" / "c.jpg", quality=90)  # a duplicate of a or b
    base("rocket").save(images / "cats" / "d.jpg", quality=90)  # and a new photo: an append
    second = run_dataset(request)
    store = LocalStore(tmp_path / "store")
    record = list_versions(store, "d")[-1]
    assert second.version == "1.1.0", record.change
    rows = {r["key"]: r for r in manifest.read_rows(store, record.manifest_uri)}
    assert {"cats/a.jpg", "cats/b.jpg"} <= set(rows)
    assert record.change is not None and record.change.removed == 0 and record.change.added == 1
    kept_copy = next(k for k in ("cats/a.jpg", "cats/b.jpg") if rows[k]["dup_group"])
    assert rows[kept_copy]["keep_reason"] == "published earlier"
    left_out = {r["key"]: r for r in manifest.read_rows(store, record.rejected_uri)}
    assert left_out["cats/c.jpg"]["reason"] == "near_duplicate"
    assert left_out["cats/c.jpg"]["duplicate_of"] in {
        rows["cats/a.jpg"]["sample_id"],
        rows["cats/b.jpg"]["sample_id"],
    }


# --- the best original is kept -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Files:
    f = Files(tmp_path_factory.mktemp("keep"))
    for name in ("chelsea", "coffee", "astronaut"):
        image = base(name)
        w, h = image.size
        f.add(f"{name}/z_original.jpg", encode(image, quality=92))  # sorts last: never kept by key order
        f.add(
            f"{name}/a_upscaled.jpg", encode(image.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC))
        )
        f.add(f"{name}/b_stretched.jpg", encode(image.resize((w * 13 // 10, h), Image.Resampling.BICUBIC)))
        f.add(f"{name}/c_recompressed.jpg", encode(image, quality=40))
        f.add(f"{name}/d_blurred.jpg", encode(image.filter(ImageFilter.GaussianBlur(1.5))))
        f.add(
            f"{name}/e_smaller.jpg", encode(image.resize((w * 4 // 5, h * 4 // 5), Image.Resampling.LANCZOS))
        )
    return f


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
def test_best_original_is_kept(variants: Files, name: str) -> None:
    copies = ["a_upscaled", "b_stretched", "c_recompressed", "d_blurred", "e_smaller"]
    keys = [f"{name}/{c}.jpg" for c in copies] + [f"{name}/z_original.jpg"]
    result = variants.run(keys)
    original = variants.records[f"{name}/z_original.jpg"]["sample_id"]
    kept = result[f"{name}/z_original.jpg"]
    assert kept.kept and kept.reason and kept.reason.startswith("best original"), kept
    for key in keys[:-1]:
        assert result[key].of == original, (key, result[key])
    # against each processed copy alone, too
    for copy in copies:
        pair = variants.run([f"{name}/{copy}.jpg", f"{name}/z_original.jpg"])
        assert pair[f"{name}/z_original.jpg"].kept, (copy, pair)
    # the old rule kept the upscaled copy
    old = variants.run(keys, DedupSpec.model_validate({"keep": "highestResolution"}))
    assert old[f"{name}/a_upscaled.jpg"].kept
