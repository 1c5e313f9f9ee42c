"""Near duplicates that survive flips, quarter turns, letterboxing, crops and small rotations (crop
candidates confirmed by geometric verification); groups that do not chain; a published sample never
dropped by an append; the best original kept."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from loupe_api.dataset import DatasetSpec, DedupSpec
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore, blob_key
from loupe_storage.versions import list_versions
from loupe_workers.compute.process import ProcessSettings, process_image
from loupe_workers.curation import geometry
from loupe_workers.curation.dedup import (
    PADDED_FRACTION,
    DuplicateInfo,
    crop_candidates,
    find_duplicates,
    split_variants,
    window_candidates,
)
from loupe_workers.ingest.sources import ListedObject
from loupe_workers.media import decode as media
from loupe_workers.media import metrics
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest
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


@dataclass
class Judged:
    """A verifier (dedup.Verify) that judges pairs by a plain function: it decodes nothing, so the
    mirrored hint has nothing to save."""

    judge: Callable[[Record, Record], float | None]

    def __call__(self, a: Record, b: Record) -> float | None:
        return self.judge(a, b)

    def expect_mirrored(self, shas: Collection[str]) -> None:
        pass


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

    def verifier(self, spec: DedupSpec | None = None) -> geometry.Verifier:
        perceptual = (spec or DedupSpec()).perceptual
        return geometry.Verifier(
            lambda sha: self.blobs.get(blob_key(sha)),
            max_pixels=SETTINGS.max_pixels,
            memory_limit=SETTINGS.memory_limit,
            min_inliers=perceptual.min_inliers,
            min_ratio=perceptual.min_inlier_ratio,
        )

    def run(
        self, keys: list[str], spec: DedupSpec | None = None, verify: Any = "default"
    ) -> dict[str, DuplicateInfo]:
        records = [self.records[k] for k in keys]
        result = find_duplicates(
            records,
            spec or DedupSpec(),
            is_new=[True] * len(records),
            previously_kept=set(),
            pixel_digest=lambda r: media.pixel_digest(self.data(r)),
            keep_measures=lambda r: media.keep_measures(self.data(r)),
            verify=self.verifier(spec) if verify == "default" else verify,
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
            for variant in [a["hash"], *split_variants(a)[0]]:
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


def test_what_a_star_leaves_is_judged_only_against_what_it_is_linked_to() -> None:
    # k - b, b - c1, b - c2, b - c3, b - stretched, stretched - original: k is kept and takes b; the
    # three c's are then alone, and the original (4:3) and its stretched copy (16:9, fewer pixels) are
    # judged between themselves: the c's shapes must not make 16:9 "the shape most copies share"
    sets = iter(bits(5, 5 * k) for k in range(6))
    k_bits, c1, c2, c3, s_bits, o_bits = (next(sets) for _ in range(6))
    wide = {"width": 1920, "height": 1080}
    records = [
        synthetic("k", k_bits, width=2000, height=1125), synthetic("b", 0, **wide),
        synthetic("c1", c1, width=640, height=360), synthetic("c2", c2, width=640, height=360),
        synthetic("c3", c3, width=640, height=360), synthetic("stretched", s_bits, width=1280, height=720),
        synthetic("original", s_bits | o_bits, width=1600, height=1200),
    ]  # fmt: skip
    result = find_duplicates(
        records, DedupSpec(), is_new=[True] * len(records), previously_kept=set(),
        pixel_digest=lambda r: r["sha256"],
    )  # fmt: skip
    by_key = dict(zip((r["key"] for r in records), result, strict=True))
    assert by_key["k"].kept and by_key["b"].of == records[0]["sample_id"]
    assert all(by_key[c].group is None for c in ("c1", "c2", "c3"))
    assert by_key["original"].kept and by_key["stretched"].of == records[-1]["sample_id"]


@pytest.mark.parametrize("largest", [256, 3])
def test_a_long_chain_of_similar_photos_is_grouped_in_stars(
    largest: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 400 newcomers whose hashes walk 3 bits at a time: one connected set. Above LARGEST_COMPARED it is
    # grouped around its best-connected members; either way every group is a star whose members are
    # each within max_distance of the kept copy, and every linked newcomer is grouped or kept
    from loupe_workers.curation import dedup

    monkeypatch.setattr(dedup, "LARGEST_COMPARED", largest)
    rng = np.random.default_rng(7)
    value, records = 0, []
    for k in range(400):
        for bit in rng.choice(64, size=3, replace=False).tolist():
            value ^= 1 << bit
        records.append(synthetic(f"r{k:03d}", value, width=int(rng.integers(90, 110))))
    spec = DedupSpec.model_validate({"perceptual": {"transforms": False, "crops": False}})
    result = find_duplicates(records, spec, is_new=[True] * len(records), previously_kept=set(),
                             pixel_digest=lambda r: r["sha256"])  # fmt: skip
    index = {r["sample_id"]: i for i, r in enumerate(records)}
    hashes = [int(r["hash"], 16) for r in records]
    copies = [(i, index[info.of]) for i, info in enumerate(result) if not info.kept]
    assert len(copies) > 100
    for i, keeper in copies:
        assert result[keeper].kept and result[keeper].of is None and result[keeper].group == result[i].group
        assert (hashes[i] ^ hashes[keeper]).bit_count() <= spec.perceptual.max_distance
    # a kept copy that names a group has members in it
    members = Counter(keeper for _, keeper in copies)
    assert all(members[i] >= 1 for i, info in enumerate(result) if info.group is not None and info.kept)


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
    # blends of one cat are crops of nothing but show the same cat: keypoint verification would (rightly)
    # merge them, so the hash-only rule this test is about is asked for
    spec = DatasetSpec.model_validate(
        {"sources": [{"name": "cams"}], "dedup": {"perceptual": {"crops": False}}}
    )
    request = RunRequest(dataset="d", spec=spec, sources={"cams": source}, store_uri=str(tmp_path / "store"))
    first = run_dataset(request)
    assert first.version == "1.0.0" and first.stats.samples == 2
    blend(one, other, middle).save(images / "cats" / "c.jpg", quality=90)  # a duplicate of a or b
    base("rocket").save(images / "cats" / "d.jpg", quality=90)  # and a new photo: an append
    second = run_dataset(request)
    store = LocalStore(tmp_path / "store")
    record = list_versions(store, "d")[-1]
    assert second.version == "1.1.0", record.change
    rows = {r["key"]: r for r in manifest.read_version_rows(store, record)}
    assert {"cats/a.jpg", "cats/b.jpg"} <= set(rows)
    assert record.change is not None and record.change.removed == 0 and record.change.added == 1
    kept_copy = next(k for k in ("cats/a.jpg", "cats/b.jpg") if rows[k]["dup_group"])
    assert rows[kept_copy]["keep_reason"] == "published earlier"
    left_out = {r["key"]: r for r in manifest.read_version_rows(store, record, "rejected")}
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


@pytest.fixture(scope="module")
def soft(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """A soft original (blurred at its own size, as many camera photos are at their own pixels: as soft
    as the softer ones of the development corpus at camera size), its 2x and 1.5x bicubic upscales and
    its half-size copy."""
    f = Files(tmp_path_factory.mktemp("soft"))
    for name in ("chelsea", "coffee", "astronaut"):
        image = base(name).filter(ImageFilter.GaussianBlur(0.75))
        w, h = image.size
        f.add(f"{name}/z_original.jpg", encode(image, quality=95))  # sorts last: never kept by key order
        for key, scale in (("a_upscaled_2x", 2.0), ("b_upscaled_1.5x", 1.5), ("c_half", 0.5)):
            method = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
            copy = image.resize((round(w * scale), round(h * scale)), method)
            f.add(f"{name}/{key}.jpg", encode(copy, quality=90))
    return f


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
def test_a_soft_original_is_kept_over_its_upscales_and_resize(soft: Files, name: str) -> None:
    # a soft original has little spectrum above its half-size copy's Nyquist, as an upscale would:
    # the spectral share alone took it for an upscale of that copy; the resampling traces do not
    keys = [f"{name}/{c}.jpg" for c in ("a_upscaled_2x", "b_upscaled_1.5x", "c_half", "z_original")]
    result = soft.run(keys)
    original = soft.records[keys[-1]]["sample_id"]
    kept = result[keys[-1]]
    assert kept.kept and kept.reason and "not upscaled" in kept.reason, kept
    for key in keys[:-1]:
        assert result[key].of == original, (key, result[key])


# --- crops and small rotations: sub-window candidates, confirmed by geometric verification -----------


def crop_area(image: Image.Image, area: float, x: float, y: float) -> Image.Image:
    """A crop keeping ``area`` of the pixels, its top-left corner at (x, y) of the free margin."""
    w, h = image.size
    cw, ch = round(w * area**0.5), round(h * area**0.5)
    left, top = round((w - cw) * x), round((h - ch) * y)
    return image.crop((left, top, left + cw, top + ch))


def straightened(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated, cropped to the centred frame without corners, resized back: a straightened photo."""
    import math

    turned = image.rotate(degrees, Image.Resampling.BICUBIC)
    a = math.radians(abs(degrees))
    w, h = image.size
    keep = 1 / (math.cos(a) + math.sin(a) * max(w / h, h / w))
    return crop_area(turned, keep * keep, 0.5, 0.5).resize(image.size, Image.Resampling.LANCZOS)


CROPS = {
    "crop80_corner": lambda i: crop_area(i, 0.8, 0.1, 0.9),
    "crop65_offcentre": lambda i: crop_area(i, 0.65, 0.8, 0.3),
    "rot5": lambda i: straightened(i, 5),
    "rot_minus3": lambda i: straightened(i, -3),
}


@pytest.fixture(scope="module")
def cropped(tmp_path_factory: pytest.TempPathFactory) -> Files:
    f = Files(tmp_path_factory.mktemp("crops"))
    for name in PHOTO_NAMES:
        f.add(f"{name}/original.jpg", encode(base(name)))
        for edit, make in CROPS.items():
            f.add(f"{name}/{edit}.jpg", encode(make(base(name)), quality=88))
    return f


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee", "rocket"])
def test_crops_and_small_rotations_join_their_original(cropped: Files, name: str) -> None:
    keys = [f"{name}/original.jpg", *(f"{name}/{edit}.jpg" for edit in CROPS)]
    original = cropped.records[keys[0]]["sample_id"]
    result = cropped.run(keys)
    assert result[keys[0]].kept and result[keys[0]].reason
    for key in keys[1:]:
        assert result[key] == DuplicateInfo(original[:16], False, "near_duplicate", original), key
    # the whole hashes alone miss them: without crop candidates (or without a verifier) they stay apart
    for plain in (
        cropped.run(keys, DedupSpec.model_validate({"perceptual": {"crops": False}})),
        cropped.run(keys, verify=None),
    ):
        assert plain[f"{name}/crop65_offcentre.jpg"].of != original
        assert plain[f"{name}/rot5.jpg"].of != original


@pytest.fixture(scope="module")
def dark_edged(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """The cameraman, whose own dark edge reads as a uniform bar, with a letterboxed copy and a copy
    straightened by 3 degrees (whose edges are no longer uniform)."""
    f = Files(tmp_path_factory.mktemp("dark_edged"))
    image = base("camera")
    f.add("camera/z_original.jpg", encode(image))  # sorts last: never kept by key order
    f.add("camera/a_letterbox.jpg", encode(EDITS["letterbox"](image), quality=85))
    f.add("camera/b_rot3.jpg", encode(straightened(image, 3), quality=88))
    return f


def test_an_original_with_a_dark_edge_is_not_taken_for_a_letterboxed_copy(dark_edged: Files) -> None:
    keys = ["camera/a_letterbox.jpg", "camera/b_rot3.jpg", "camera/z_original.jpg"]
    original = dark_edged.records[keys[-1]]
    # its dark edge is measured as bars, as the letterboxed copy's are
    assert media.keep_measures(dark_edged.data(original))["padded"] > PADDED_FRACTION
    result = dark_edged.run(keys)
    kept = result[keys[-1]]
    # bars read on content of no other copy's shape are the photo's own: the letterboxed copy (its
    # content the original's frame) still loses as letterboxed, the original is kept
    assert kept.kept and kept.reason and "not letterboxed" in kept.reason, kept
    for key in keys[:-1]:
        assert result[key].of == original["sample_id"], (key, result[key])


def test_crops_of_distinct_photos_are_never_merged(cropped: Files) -> None:
    keys = [f"{name}/{edit}.jpg" for name in PHOTO_NAMES for edit in ("original", *CROPS)]
    result = cropped.run(keys, DedupSpec.model_validate({"action": "flag"}))
    photo_of_group: dict[str, str] = {}
    for key, info in result.items():
        if info.group:
            assert photo_of_group.setdefault(info.group, key.split("/")[0]) == key.split("/")[0], key
    # and most crops find their photo (horse, a silhouette, has few keypoints to verify with)
    assert sum(1 for info in result.values() if info.of) >= 0.9 * len(PHOTO_NAMES) * len(CROPS)


def test_verification_refuses_candidates_of_different_photos(cropped: Files) -> None:
    """Every pair made a candidate (distance 32, 64 per sample): verification merges no two photos,
    though a verifier that accepts everything would; brick, grass and moon are similar textures."""
    names = ("brick", "grass", "moon", "coins", "camera")
    keys = [f"{name}/original.jpg" for name in names]
    loose = DedupSpec.model_validate(
        {"action": "flag", "perceptual": {"crop_distance": 32, "max_candidates": 64}}
    )
    verifier = cropped.verifier(loose)
    result = cropped.run(keys, loose, verify=verifier)
    assert all(info.group is None for info in result.values()), result
    assert verifier.checked == len(names) * (len(names) - 1) // 2  # every pair was a candidate
    merged = cropped.run(keys, loose, verify=Judged(lambda a, b: 1.0))
    assert len({info.group for info in merged.values()}) == 1
    # and as features: two textures fail, a crop of one passes
    grey = {n: np.asarray(base(n).convert("L")) for n in ("brick", "grass")}
    brick, grass = geometry.features(grey["brick"]), geometry.features(grey["grass"])
    assert geometry.verified(brick, grass) is None and geometry.verified(grass, brick) is None
    part = geometry.features(np.ascontiguousarray(grey["brick"][40:-30, 20:-60]))
    scale = geometry.verified(brick, part)  # the crop shows a part of brick: a scale above 1
    assert scale is not None and 1.05 < scale < 1.3
    # a flat image has no keypoints, one keypoint has no second neighbour: nothing to match either way
    flat = geometry.features(np.full((64, 64), 128, np.uint8))
    one = geometry.Features(brick.points[:1], brick.descriptors[:1], brick.side)
    for few in (flat, one):
        assert geometry.match(brick, few) == geometry.match(few, brick) == geometry.Match(0, 0, 0.0)
        assert geometry.verified(brick, few) is None and geometry.verified(few, brick) is None


def test_ratio_matches_are_those_of_bfmatcher_knnmatch() -> None:
    """The ratio test on batchDistance's arrays keeps exactly the matches BFMatcher.knnMatch's DMatch
    objects did (the same pairs in the same order, so RANSAC sees the same points): copies, two
    different photos, and an image against itself with repeated descriptors (ties for the nearest)."""
    import cv2

    grey = {n: np.asarray(base(n).convert("L")) for n in ("brick", "chelsea", "coins")}
    feats = {n: geometry.features(g) for n, g in grey.items()}
    feats["part"] = geometry.features(np.ascontiguousarray(grey["chelsea"][30:-20, 40:-10]))
    brick = feats["brick"]
    twice = np.concatenate([brick.descriptors, brick.descriptors])
    feats["twice"] = geometry.Features(np.concatenate([brick.points, brick.points]), twice, brick.side)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for a, b in [("chelsea", "part"), ("part", "chelsea"), ("brick", "coins"), ("brick", "twice"),
                 ("twice", "brick"), ("brick", "brick")]:  # fmt: skip
        first, second = feats[a], feats[b]
        knn = matcher.knnMatch(first.descriptors, second.descriptors, k=2)
        expected = [(p[0].queryIdx, p[0].trainIdx) for p in knn if p[0].distance < 0.8 * p[1].distance]
        query, train = geometry._ratio_matches(first, second)
        assert list(zip(query.tolist(), train.tolist(), strict=True)) == expected, (a, b)
    assert len(geometry._ratio_matches(feats["chelsea"], feats["part"])[0]) >= geometry.MIN_INLIERS
    assert len(geometry._ratio_matches(brick, feats["twice"])[0]) == 0  # every nearest is a tie


def test_verification_of_an_undecodable_blob_verifies_nothing(cropped: Files) -> None:
    blobs = {"good": encode(base("chelsea")), "bad": b"\xff\xd8\xff\xe0 not a jpeg at all", "empty": b""}

    def load(sha: str) -> bytes:
        if sha == "missing":
            raise FileNotFoundError(sha)
        return blobs[sha]

    verifier = geometry.Verifier(load, max_pixels=10**8, memory_limit=SETTINGS.memory_limit)
    for other in ("bad", "empty", "missing"):
        assert verifier({"sha256": "good"}, {"sha256": other}) is None
        assert verifier.cache[other] is None
    assert verifier({"sha256": "good"}, {"sha256": "good"}) == pytest.approx(1.0, abs=0.01)
    assert verifier.checked == 1
    # in find_duplicates: a crop whose blob became unreadable is a candidate that is not confirmed
    keys = ["chelsea/original.jpg", "chelsea/crop65_offcentre.jpg"]
    records = [dict(cropped.records[k]) for k in keys]
    fine = cropped.run(keys)
    assert fine[keys[1]].of == records[0]["sample_id"]
    broken = geometry.Verifier(
        lambda sha: b"garbage" if sha == records[1]["sha256"] else cropped.blobs.get(blob_key(sha)),
        max_pixels=10**8,
        memory_limit=SETTINGS.memory_limit,
    )
    result = cropped.run(keys, verify=broken)
    assert result[keys[1]].of is None and broken.cache[records[1]["sha256"]] is None


def test_a_blob_expected_mirrored_is_decoded_once_for_both_orientations() -> None:
    """expect_mirrored: the blob's one decode gives both orientations' features, the same as two
    separate decodes do (and a broken blob is None in both)."""
    blobs = {"cat": encode(base("chelsea")), "bad": b"garbage"}
    loads: list[str] = []

    def load(sha: str) -> bytes:
        loads.append(sha)
        return blobs[sha]

    plain = geometry.Verifier(load, max_pixels=10**8, memory_limit=SETTINGS.memory_limit)
    alone = [plain.features_of("cat"), plain.features_of("cat", mirror=True)]
    assert loads == ["cat", "cat"]
    hinted = geometry.Verifier(load, max_pixels=10**8, memory_limit=SETTINGS.memory_limit)
    hinted.expect_mirrored({"cat", "bad"})
    loads.clear()
    shared = [hinted.features_of("cat", mirror=True), hinted.features_of("cat")]
    assert loads == ["cat"]
    for one, other in zip(alone, shared[::-1], strict=True):
        assert one is not None and other is not None
        assert np.array_equal(one.points, other.points) and np.array_equal(one.descriptors, other.descriptors)
    assert not np.array_equal(alone[0].descriptors, alone[1].descriptors)  # ORB is not mirror-invariant
    assert hinted.features_of("bad") is None and hinted.cache["bad:mirror"] is None
    assert loads.count("bad") == 1


def test_crop_candidates_are_bounded_per_new_record(cropped: Files) -> None:
    keys = [f"{name}/{edit}.jpg" for name in PHOTO_NAMES for edit in ("original", *CROPS)]
    records = [cropped.records[k] for k in keys]
    query = np.ones(len(records), dtype=bool)
    every = crop_candidates(records, query, 32, 1000, lambda a, b: False)
    assert len(every) == len(records) * (len(records) - 1) // 2
    for k in (1, 3):
        bounded = crop_candidates(records, query, 32, k, lambda a, b: False)
        assert len(bounded) <= k * len(records)
        per: dict[int, int] = {}
        for a, b, _, _ in bounded:
            per[a] = per.get(a, 0) + 1
            per[b] = per.get(b, 0) + 1
        assert max(per.values()) >= k
    # only pairs with a new record are searched, and skipped pairs are left out
    one_new = np.zeros(len(records), dtype=bool)
    one_new[0] = True
    found = crop_candidates(records, one_new, 32, 1000, lambda a, b: b == 1)
    assert found and all(a == 0 and b not in (0, 1) for a, b, _, _ in found)


def test_window_hashes_find_a_crop() -> None:
    grey = base("astronaut").convert("L")
    windows = metrics.window_hashes(grey)
    assert len(windows) == metrics.WINDOW_COUNT == 27 and len(set(windows)) > 20
    part = crop_area(base("astronaut"), 0.65, 0.9, 0.1).convert("L")
    whole = metrics.perceptual_hash(part, "phash")
    nearest = min(metrics.hamming(whole, w) for w in windows)
    assert nearest <= 12 and nearest < metrics.hamming(whole, metrics.perceptual_hash(grey, "phash"))
    stored = media.analyze_image(encode(base("astronaut")), max_pixels=10**8).hash_variants
    assert (
        len(stored) == 7 + metrics.WINDOW_COUNT and split_variants({"hash_variants": stored})[1] == stored[7:]
    )


def test_a_crop_joins_a_kept_copy_only_if_it_verifies_against_it() -> None:
    """A new crop that is a candidate of a published copy (not of its kept copy) joins the kept copy
    when it verifies against the kept copy itself, and otherwise stays apart: no chains."""
    patterns = (0x5555, 0x3333, 0x0F0F, 0x00FF, 0xAAAA, 0xCCCC, 0xF0F0)
    far = [f"{p * 0x0001000100010001:016x}" for p in patterns]  # 32 bits from every whole hash below
    keeper = synthetic("p", 0, hash_variants=far, dup_group="g", dup_kind=None)
    copy = synthetic("q", bits(3), hash_variants=[*far, f"{bits(32, 32):016x}"], dup_group="g")
    copy["dup_kind"] = "near_duplicate"
    crop = synthetic("n", bits(32, 32), hash_variants=far)  # 32+ bits from both whole hashes
    records = [keeper, copy, crop]
    asked: list[tuple[str, str]] = []

    def run(accept: set[str]) -> list[DuplicateInfo]:
        asked.clear()

        def verify(a: Record, b: Record) -> float | None:
            asked.append((a["key"], b["key"]))
            return 1.2 if {a["key"], b["key"]} - {"n"} <= accept else None

        return find_duplicates(
            records, DedupSpec(), is_new=[False, False, True], previously_kept={keeper["sample_id"]},
            pixel_digest=lambda r: r["sha256"], verify=Judged(verify),
        )  # fmt: skip

    joined = run({"p", "q"})
    assert joined[2] == DuplicateInfo("g", False, "near_duplicate", keeper["sample_id"])
    assert ("q", "n") in asked and ("p", "n") in asked
    alone = run({"q"})  # verified against the copy only: it stays a sample of its own
    assert alone[2].of is None and alone[2].kept and alone[0].kept and alone[1].of == keeper["sample_id"]


MIRRORED_NAMES = ("chelsea", "astronaut", "coffee", "rocket")


def mirrored_crop(image: Image.Image) -> Image.Image:
    """A 75 % off-centre crop of the left-right mirrored photo."""
    return ImageOps.mirror(crop_area(image, 0.75, 0.2, 0.7))


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> Files:
    f = Files(tmp_path_factory.mktemp("mirrored"))
    for name in MIRRORED_NAMES:
        f.add(f"{name}/original.jpg", encode(base(name)))
        f.add(f"{name}/crop75_mirror.jpg", encode(mirrored_crop(base(name)), quality=88))
    return f


@pytest.mark.parametrize("name", MIRRORED_NAMES)
def test_a_mirrored_crop_joins_its_original(mirrored: Files, name: str) -> None:
    keys = [f"{name}/original.jpg", f"{name}/crop75_mirror.jpg"]
    first, crop = (mirrored.records[k] for k in keys)
    original = first["sample_id"]
    result = mirrored.run(keys)
    assert result[keys[1]] == DuplicateInfo(original[:16], False, "near_duplicate", original)
    # the candidate comes from the mirrored hash, and only the mirrored keypoints confirm it
    found = window_candidates([first, crop], np.ones(2, dtype=bool), 16, 8, lambda a, b: False)
    assert any(flip for *_, flip in found)
    verifier = mirrored.verifier()
    assert verifier(first, crop) is None
    scale = verifier(first, {**crop, "mirror": True})
    assert scale is not None and scale > 1.03  # the crop shows a part of the original


def test_find_duplicates_says_which_blobs_it_verifies_mirrored(mirrored: Files) -> None:
    """The mirrored candidate's blob is named before verification, so the verifier decodes it once."""
    keys = ["chelsea/original.jpg", "chelsea/crop75_mirror.jpg"]
    first, crop = (mirrored.records[k] for k in keys)
    seen: list[set[str]] = []
    loads: list[str] = []

    class Spy(geometry.Verifier):
        def expect_mirrored(self, shas: Iterable[str]) -> None:
            seen.append(set(shas))
            super().expect_mirrored(shas)

    def load(sha: str) -> bytes:
        loads.append(sha)
        return mirrored.blobs.get(blob_key(sha))

    spy = Spy(load, max_pixels=SETTINGS.max_pixels, memory_limit=SETTINGS.memory_limit)
    result = mirrored.run(keys, verify=spy)
    assert result[keys[1]].of == first["sample_id"]
    assert seen == [{crop["sha256"]}]
    assert f"{crop['sha256']}:mirror" in spy.cache and loads.count(crop["sha256"]) == 1


def test_mirrored_crops_of_different_photos_are_not_grouped(mirrored: Files) -> None:
    keys = [f"{name}/{edit}.jpg" for name in MIRRORED_NAMES for edit in ("original", "crop75_mirror")]
    result = mirrored.run(keys, DedupSpec.model_validate({"action": "flag"}))
    photo_of_group: dict[str, str] = {}
    for key, info in result.items():
        assert info.group, key  # every photo has its crop, in a group of its own photo
        assert photo_of_group.setdefault(info.group, key.split("/")[0]) == key.split("/")[0], key
    assert len(photo_of_group) == len(MIRRORED_NAMES)


def _window_candidates_by_dict(
    records: list[Record],
    query: Any,
    max_distance: int,
    per_record: int,
    skip: Callable[[int, int], bool],
    mirrored: bool,
) -> list[tuple[int, int, int, int, bool]]:
    """window_candidates as it was written before its reduction moved into arrays: a dict of each pair's
    best hit, then each query record's closest pairs, in Python, each query record's whole hash searched
    against every window (the reference it must agree with). Two fixes: the dict stored (distance,
    inner, mirrored) but compared (distance, mirrored, inner) with it, so a direct hit did not always win
    over a mirrored one at equal distance, as it was meant to; and a query whole hash's hit named the
    window's record as the inner one (the crop), not its own."""
    from loupe_workers.curation.dedup import MIRRORED
    from loupe_workers.curation.hamming import cross_pairs, hex_to_u64

    n = len(records)
    variants = [split_variants(r) for r in records]
    windows = [value for _, sub in variants for value in sub]
    owner = np.repeat(np.arange(n, dtype=np.int64), [len(sub) for _, sub in variants])
    hashes = hex_to_u64(windows)
    whole_owner, whole_hex = list(range(n)), [r["hash"] for r in records]
    if mirrored:
        for i, (turned, _) in enumerate(variants):
            if len(turned) > MIRRORED:
                whole_owner.append(i)
                whole_hex.append(turned[MIRRORED])
    whole, of_whole = hex_to_u64(whole_hex), np.array(whole_owner, dtype=np.int64)
    flipped = np.arange(len(whole_owner)) >= n
    best: dict[tuple[int, int], tuple[int, bool, int]] = {}  # pair -> (distance, mirrored, inner)

    def add(outer: Any, inner: Any, d: Any, flips: Any) -> None:
        for a, b, distance, flip in zip(
            outer.tolist(), inner.tolist(), d.tolist(), flips.tolist(), strict=True
        ):
            if a == b:
                continue
            pair = (min(a, b), max(a, b))
            if (distance, flip, b) < best.get(pair, (max_distance + 1, True, 0)) and not skip(*pair):
                best[pair] = (distance, flip, b)

    queried, mine = np.flatnonzero(query[of_whole]), np.flatnonzero(query[owner])
    qi, ti, d = cross_pairs(hashes[mine], whole, max_distance)
    add(owner[mine[qi]], of_whole[ti], d, flipped[ti])
    qi, ti, d = cross_pairs(whole[queried], hashes, max_distance)
    add(owner[ti], of_whole[queried[qi]], d, flipped[queried[qi]])
    per: dict[int, list[tuple[int, bool, int, int, int]]] = {}
    for (a, b), (distance, flip, inner) in best.items():
        for end in (a, b):
            if query[end]:
                per.setdefault(end, []).append((distance, flip, a, b, inner))
    chosen: set[tuple[int, int, int, int, bool]] = set()
    for found in per.values():
        chosen.update(
            (a, b, distance, inner, flip) for distance, flip, a, b, inner in sorted(found)[:per_record]
        )
    return sorted(chosen, key=lambda c: (c[2], c[4], c[0], c[1]))


def _chained_records(n: int, seed: int) -> list[Record]:
    """Records whose hashes walk a few bits at a time (neighbours close, a chain of similar images),
    each with 7 orientation hashes and windows a few bits from its own hash or from a neighbour's."""
    rng = np.random.default_rng(seed)
    value = int(rng.integers(0, 1 << 63))
    out: list[Record] = []

    def flipped(x: int, bits: int) -> str:
        for bit in rng.choice(64, size=bits, replace=False).tolist():
            x ^= 1 << bit
        return f"{x:016x}"

    for k in range(n):
        value = int(flipped(value, 3), 16)
        turned = [flipped(value, int(rng.integers(0, 20))) for _ in range(7)]
        windows = [flipped(value, int(rng.integers(2, 14))) for _ in range(int(rng.integers(0, 9)))]
        out.append(
            {"hash": f"{value:016x}", "hash_variants": turned + windows if windows or k % 2 else turned}
        )
    return out


@pytest.mark.parametrize(("seed", "block"), [(0, 1 << 31), (1, 1 << 31), (2, 1 << 31), (0, 700), (1, 3000)])
def test_window_candidates_are_those_of_the_per_pair_dict(
    seed: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # many hits per pair (windows near a chain of hashes), equal distances direct and mirrored, ties
    # broken by index, skipped pairs, old and new records: the array reduction must give the very list,
    # searched in one block or in many (a pair's hits then spread over blocks)
    from loupe_workers.curation import dedup

    monkeypatch.setattr(dedup, "SEARCH_BLOCK", block)
    records = _chained_records(120, seed)
    rng = np.random.default_rng(seed)
    query = rng.random(len(records)) < 0.6
    linked = {(a, a + d) for a in range(len(records)) for d in (1, 2) if rng.random() < 0.3}

    def skip(a: int, b: int) -> bool:
        return (a, b) in linked

    for mirrored in (True, False):
        for distance, per_record in ((16, 8), (10, 2), (20, 1000), (12, 0)):
            expected = _window_candidates_by_dict(records, query, distance, per_record, skip, mirrored)
            found = window_candidates(records, query, distance, per_record, skip, mirrored=mirrored)
            assert found == expected, (mirrored, distance, per_record)
            assert all(type(c[4]) is bool and type(c[2]) is int for c in found)
            if per_record in (8, 2):
                assert expected  # the case exercises the ranking
