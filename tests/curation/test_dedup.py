"""Duplicate search: multi-index Hamming search against brute force, and grouping of real photos."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import ExifTags, Image, ImageEnhance, ImageOps

from loupe_api.dataset import DedupSpec
from loupe_storage.store import LocalStore, blob_key
from loupe_workers.compute.process import ProcessSettings, process_image
from loupe_workers.curation import hamming
from loupe_workers.curation.dedup import DuplicateInfo, find_duplicates
from loupe_workers.curation.hamming import band_layout, connected_groups, hamming_pairs
from loupe_workers.ingest.sources import ListedObject
from loupe_workers.media import decode as media

Pairs = set[tuple[int, int]]

# --- hamming_pairs -------------------------------------------------------------------------------


def planted_hashes(n: int, seed: int) -> npt.NDArray[np.uint64]:
    """Random 64-bit hashes, a tenth of them copies of another with 0-14 bits flipped, some chained."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 1 << 63, size=n, dtype=np.int64).astype(np.uint64)
    hashes ^= rng.integers(0, 2, size=n).astype(np.uint64) << np.uint64(63)
    copies = rng.choice(np.arange(1, n), size=n // 10, replace=False)
    for target in copies.tolist():
        origin = int(rng.integers(0, target))
        flips = rng.choice(64, size=int(rng.integers(0, 15)), replace=False)
        mask = sum(1 << int(b) for b in flips)
        hashes[target] = hashes[origin] ^ np.uint64(mask)
    return hashes


def brute_force(hashes: npt.NDArray[np.uint64], max_distance: int) -> dict[tuple[int, int], int]:
    """Every pair (i < j) within max_distance, and its distance, by comparing all pairs."""
    found: dict[tuple[int, int], int] = {}
    for start in range(0, len(hashes), 512):
        stop = min(start + 512, len(hashes))
        distances = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, start:])  # j >= i only
        r, c = np.nonzero(distances <= max_distance)
        i, j = r + start, c + start
        keep = i < j
        for a, b, d in zip(
            i[keep].tolist(), j[keep].tolist(), distances[r[keep], c[keep]].tolist(), strict=True
        ):
            found[(a, b)] = d
    return found


def as_set(pairs: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> Pairs:
    a, b = pairs
    assert np.all(a < b)
    result = set(zip(a.tolist(), b.tolist(), strict=True))
    assert len(result) == len(a)  # no pair reported twice
    return result


@cache
def reference(n: int, seed: int) -> tuple[npt.NDArray[np.uint64], dict[tuple[int, int], int]]:
    hashes = planted_hashes(n, seed)
    return hashes, brute_force(hashes, 16)


def expected(n: int, seed: int, max_distance: int, query: npt.NDArray[np.bool_] | None = None) -> Pairs:
    _, pairs = reference(n, seed)
    return {
        (a, b) for (a, b), d in pairs.items() if d <= max_distance and (query is None or query[a] or query[b])
    }


@pytest.mark.parametrize("max_distance", [0, 4, 8, 12])
@pytest.mark.parametrize("n", [1000, 5000])
def test_hamming_pairs_equals_brute_force(n: int, max_distance: int) -> None:
    hashes, _ = reference(n, 1)
    want = expected(n, 1, max_distance)
    assert len(want) >= (1 if max_distance == 0 else n // 40)  # the planted pairs are there
    assert as_set(hamming_pairs(hashes, max_distance)) == want


@pytest.mark.parametrize("max_distance", [0, 4, 8, 12])
def test_hamming_pairs_with_a_query_mask(max_distance: int) -> None:
    n = 5000
    hashes, _ = reference(n, 1)
    rng = np.random.default_rng(max_distance)
    query = rng.random(n) < 0.2  # the new items of a version
    want = expected(n, 1, max_distance, query)
    assert want and want != expected(n, 1, max_distance)
    assert as_set(hamming_pairs(hashes, max_distance, query)) == want


def test_hamming_pairs_at_12000() -> None:
    n = 12_000
    hashes, _ = reference(n, 2)
    for max_distance in (0, 8):
        assert as_set(hamming_pairs(hashes, max_distance)) == expected(n, 2, max_distance)
    query = np.zeros(n, dtype=bool)
    query[-2000:] = True  # an increment of 2000 new items
    assert as_set(hamming_pairs(hashes, 8, query)) == expected(n, 2, 8, query)


@pytest.mark.parametrize("max_distance", list(range(0, 17)))
def test_multi_index_path_below_the_brute_force_limit(
    monkeypatch: pytest.MonkeyPatch, max_distance: int
) -> None:
    monkeypatch.setattr(hamming, "BRUTE_FORCE_LIMIT", 100)
    hashes, _ = reference(1000, 3)
    want = expected(1000, 3, max_distance)
    assert as_set(hamming_pairs(hashes, max_distance)) == want
    query = np.zeros(1000, dtype=bool)
    query[::7] = True
    assert as_set(hamming_pairs(hashes, max_distance, query)) == expected(1000, 3, max_distance, query)


def test_hamming_pairs_edge_cases() -> None:
    hashes, _ = reference(1000, 1)
    empty = hamming_pairs(hashes, 8, np.zeros(1000, dtype=bool))
    assert len(empty[0]) == len(empty[1]) == 0
    assert len(hamming_pairs(hashes[:1], 8)[0]) == 0
    assert len(hamming_pairs(hashes, -1)[0]) == 0
    same = np.array([5, 5, 5], dtype=np.uint64)
    assert as_set(hamming_pairs(same, 0)) == {(0, 1), (0, 2), (1, 2)}
    extremes = np.array([0, (1 << 64) - 1, (1 << 63), 1], dtype=np.uint64)
    assert as_set(hamming_pairs(extremes, 1)) == {(0, 2), (0, 3)}
    assert as_set(hamming_pairs(extremes, 64)) == {(a, b) for a in range(4) for b in range(a + 1, 4)}


@pytest.mark.parametrize("n", [2, 100, 3001, 10_000, 100_000, 1 << 20, 1 << 23, 1 << 30])
@pytest.mark.parametrize("max_distance", list(range(0, 24)))
def test_band_layout_respects_the_pigeonhole_bound(n: int, max_distance: int) -> None:
    layout = band_layout(n, max_distance)
    bands = len(layout)
    offsets = [offset for offset, _ in layout]
    widths = [width for _, width in layout]
    assert sum(widths) == 64 and offsets == [sum(widths[:i]) for i in range(bands)]  # a partition
    assert max(widths) - min(widths) <= 1
    # the counting table of a band must fit in memory: at most 2**24 entries
    assert max(widths) <= hamming.MAX_BAND_BITS <= 24
    # pigeonhole: two hashes within max_distance agree within radius on at least one band
    radius = max_distance // bands
    assert bands * (radius + 1) > max_distance


def test_pigeonhole_bound_on_random_pairs() -> None:
    rng = np.random.default_rng(5)
    for max_distance in (0, 3, 8, 12, 20):
        layout = band_layout(50_000, max_distance)
        radius = max_distance // len(layout)
        for _ in range(200):
            flips = rng.choice(64, size=max_distance, replace=False)
            diff = sum(1 << int(b) for b in flips)
            per_band = [((diff >> offset) & ((1 << width) - 1)).bit_count() for offset, width in layout]
            assert min(per_band) <= radius


def test_connected_groups() -> None:
    labels = connected_groups(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels[0] == labels[1] == labels[2] != labels[3]
    assert labels[4] == labels[5] not in (labels[0], labels[3])


# --- find_duplicates on real photos --------------------------------------------------------------

SETTINGS = ProcessSettings(hash_kind="phash", max_pixels=100_000_000)


@cache
def _photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(np.ascontiguousarray(getattr(data, name)())).convert("RGB")


def encode(img: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    if fmt == "JPEG":
        options.setdefault("quality", 92)
    elif fmt == "PNG":
        options.setdefault("compress_level", 1)
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def resized(img: Image.Image, factor: float) -> Image.Image:
    return img.resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.LANCZOS)


def exif_taken(when: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = when
    return exif.tobytes()


class Corpus:
    """Processed records over a LocalStore, as the pipeline hands them to find_duplicates."""

    def __init__(self, root: Path) -> None:
        self.blobs = LocalStore(root)
        self.records: dict[str, dict[str, Any]] = {}

    def add(self, key: str, data: bytes) -> dict[str, Any]:
        obj = ListedObject("cams", key, len(data), f"{len(data)}-0", "image", key)
        record = process_image(obj, data, self.blobs, SETTINGS)
        assert record["status"] == "ok", record
        record["capture_time"] = json.loads(record["exif"]).get("capture_time")
        self.records[key] = record
        return record

    def pixel_digest(self, record: dict[str, Any]) -> str:
        return media.pixel_digest(self.blobs.get(blob_key(record["sha256"])))

    def run(
        self,
        keys: list[str],
        spec: DedupSpec | None = None,
        *,
        new: set[str] | None = None,
        kept: set[str] | None = None,
    ) -> dict[str, DuplicateInfo]:
        records = [self.records[k] for k in keys]
        result = find_duplicates(
            records,
            spec or DedupSpec(),
            is_new=[new is None or k in new for k in keys],
            previously_kept=kept or set(),
            pixel_digest=self.pixel_digest,
        )
        return dict(zip(keys, result, strict=True))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    c = Corpus(tmp_path_factory.mktemp("dedup"))
    for name in ("astronaut", "chelsea", "coffee", "camera", "rocket", "coins", "immunohistochemistry"):
        c.add(f"{name}/{name}.jpg", encode(_photo(name)))  # sorts before its copies
    astronaut = _photo("astronaut")
    jpeg = encode(astronaut)
    c.add("astronaut/astronaut_copy.jpg", jpeg)
    c.add("astronaut/astronaut_lossless.png", encode(decoded(jpeg), "PNG"))
    c.add("astronaut/astronaut_resized80.jpg", encode(resized(astronaut, 0.8)))
    c.add("astronaut/astronaut_q60.jpg", encode(decoded(jpeg), quality=60))
    c.add("astronaut/astronaut_brighter.jpg", encode(ImageEnhance.Brightness(astronaut).enhance(1.1)))
    coffee = _photo("coffee")
    c.add("coffee/coffee_resized80.jpg", encode(resized(coffee, 0.8)))
    c.add("coffee/coffee_lossless.png", encode(decoded(encode(coffee)), "PNG"))
    # a group where every keep policy picks a different member
    chelsea = _photo("chelsea")
    c.add("keep/a_brighter.jpg", encode(ImageEnhance.Brightness(resized(chelsea, 0.9)).enhance(1.1)))
    c.add("keep/b_full_q40.jpg", encode(chelsea, quality=40, exif=exif_taken("2023:05:01 10:00:00")))
    c.add("keep/c_small.png", encode(resized(chelsea, 0.8), "PNG"))
    c.add(
        "keep/d_q70.jpg", encode(resized(chelsea, 0.95), quality=70, exif=exif_taken("2021:01:02 03:04:05"))
    )
    return c


ORIGINALS = [
    f"{n}/{n}.jpg"
    for n in ("astronaut", "chelsea", "coffee", "camera", "rocket", "coins", "immunohistochemistry")
]


def test_distinct_photos_are_never_grouped(corpus: Corpus) -> None:
    for spec in (DedupSpec(), DedupSpec.model_validate({"perceptual": {"maxDistance": 16}})):
        result = corpus.run(ORIGINALS, spec)
        assert all(info == DuplicateInfo(None, True, None, None) for info in result.values()), result


def test_exact_and_near_duplicates_of_a_photo(corpus: Corpus) -> None:
    keys = [*ORIGINALS, "astronaut/astronaut_copy.jpg", "astronaut/astronaut_lossless.png", "astronaut/astronaut_resized80.jpg",
            "astronaut/astronaut_q60.jpg", "astronaut/astronaut_brighter.jpg", "coffee/coffee_resized80.jpg", "coffee/coffee_lossless.png"]  # fmt: skip
    result = corpus.run(keys)
    astronaut = corpus.records["astronaut/astronaut.jpg"]
    coffee = corpus.records["coffee/coffee.jpg"]
    assert result["astronaut/astronaut.jpg"] == DuplicateInfo(astronaut["sample_id"][:16], True, None, None)
    assert result["coffee/coffee.jpg"] == DuplicateInfo(coffee["sample_id"][:16], True, None, None)
    kinds = {
        "astronaut/astronaut_copy.jpg": "exact_duplicate",  # the same bytes
        "astronaut/astronaut_lossless.png": "exact_duplicate",  # the same pixels
        "astronaut/astronaut_resized80.jpg": "near_duplicate",
        "astronaut/astronaut_q60.jpg": "near_duplicate",
        "astronaut/astronaut_brighter.jpg": "near_duplicate",
        "coffee/coffee_resized80.jpg": "near_duplicate",
        "coffee/coffee_lossless.png": "exact_duplicate",
    }
    for key, kind in kinds.items():
        keeper = astronaut if key.startswith("astronaut") else coffee
        assert result[key] == DuplicateInfo(keeper["sample_id"][:16], False, kind, keeper["sample_id"]), key
    for key in ORIGINALS[1:]:
        if key != "coffee/coffee.jpg":
            assert result[key].group is None and result[key].kept


def test_pixel_comparison_can_be_turned_off(corpus: Corpus) -> None:
    keys = ["astronaut/astronaut.jpg", "astronaut/astronaut_copy.jpg", "astronaut/astronaut_lossless.png"]
    no_pixels = corpus.run(keys, DedupSpec.model_validate({"exact": {"pixels": False}}))
    assert no_pixels["astronaut/astronaut_copy.jpg"].kind == "exact_duplicate"
    assert no_pixels["astronaut/astronaut_lossless.png"].kind == "near_duplicate"
    exact_only = corpus.run(keys, DedupSpec.model_validate({"perceptual": {"enabled": False}}))
    assert exact_only["astronaut/astronaut_lossless.png"].kind == "exact_duplicate"
    near_off = corpus.run(
        ["astronaut/astronaut.jpg", "astronaut/astronaut_q60.jpg"],
        DedupSpec.model_validate({"perceptual": {"enabled": False}}),
    )
    assert all(info.group is None for info in near_off.values())
    nothing = corpus.run(
        keys, DedupSpec.model_validate({"exact": {"enabled": False}, "perceptual": {"enabled": False}})
    )
    assert all(info.group is None and info.kept for info in nothing.values())


KEEP_GROUP = ["keep/a_brighter.jpg", "keep/b_full_q40.jpg", "keep/c_small.png", "keep/d_q70.jpg"]


@pytest.mark.parametrize(
    ("policy", "keeper"),
    [
        ("highestResolution", "keep/b_full_q40.jpg"),  # 451 x 300, the others are scaled down
        ("largestFile", "keep/c_small.png"),  # lossless PNG
        ("first", "keep/a_brighter.jpg"),  # by source key
        ("earliest", "keep/d_q70.jpg"),  # EXIF capture time 2021, then 2023, then unknown
    ],
)
def test_keep_policies(corpus: Corpus, policy: str, keeper: str) -> None:
    records = [corpus.records[k] for k in KEEP_GROUP]
    assert len({(r["width"], r["height"]) for r in records}) == 4
    assert max(records, key=lambda r: r["size"])["key"] == "keep/c_small.png"
    others = [k for k in ORIGINALS if k != "chelsea/chelsea.jpg"]  # it would tie with b_full_q40
    result = corpus.run([*others, *KEEP_GROUP], DedupSpec.model_validate({"keep": policy}))
    kept_id = corpus.records[keeper]["sample_id"]
    assert result[keeper] == DuplicateInfo(kept_id[:16], True, None, None)
    for key in KEEP_GROUP:
        if key != keeper:
            assert result[key] == DuplicateInfo(kept_id[:16], False, "near_duplicate", kept_id), key
    assert all(result[k].group is None for k in others)


def test_a_previously_kept_sample_stays_kept(corpus: Corpus) -> None:
    small = corpus.records["astronaut/astronaut_resized80.jpg"]
    keys = ["astronaut/astronaut_resized80.jpg", "coffee/coffee.jpg", "astronaut/astronaut.jpg"]
    result = corpus.run(
        keys,
        new={"astronaut/astronaut.jpg"},
        kept={small["sample_id"], corpus.records["coffee/coffee.jpg"]["sample_id"]},
    )
    assert result["astronaut/astronaut_resized80.jpg"] == DuplicateInfo(
        small["sample_id"][:16], True, None, None
    )
    assert result["astronaut/astronaut.jpg"] == DuplicateInfo(
        small["sample_id"][:16], False, "near_duplicate", small["sample_id"]
    )
    # without that history the higher-resolution newcomer would have won
    fresh = corpus.run(keys)
    assert fresh["astronaut/astronaut.jpg"].kept and not fresh["astronaut/astronaut_resized80.jpg"].kept


def test_flag_action_keeps_every_copy(corpus: Corpus) -> None:
    keys = [
        "astronaut/astronaut.jpg",
        "astronaut/astronaut_copy.jpg",
        "astronaut/astronaut_lossless.png",
        "astronaut/astronaut_q60.jpg",
    ]
    result = corpus.run(keys, DedupSpec.model_validate({"action": "flag"}))
    keeper = corpus.records["astronaut/astronaut.jpg"]["sample_id"]
    assert all(info.kept and info.group == keeper[:16] for info in result.values())
    assert [result[k].kind for k in keys] == [None, "exact_duplicate", "exact_duplicate", "near_duplicate"]
    assert [result[k].of for k in keys] == [None, keeper, keeper, keeper]


def test_incremental_newcomer_joins_the_old_group(corpus: Corpus) -> None:
    old_keys = [
        "astronaut/astronaut.jpg",
        "astronaut/astronaut_copy.jpg",
        "coffee/coffee.jpg",
        "chelsea/chelsea.jpg",
    ]
    first = corpus.run(old_keys)  # version 1: everything new
    previous = {k: (info.group, info.kind) for k, info in first.items()}
    kept = {corpus.records[k]["sample_id"] for k, info in first.items() if info.kept}
    old = [dict(corpus.records[k], dup_group=previous[k][0], dup_kind=previous[k][1]) for k in old_keys]
    newcomers = ["astronaut/astronaut_q60.jpg", "coffee/coffee_resized80.jpg", "rocket/rocket.jpg"]
    records = old + [corpus.records[k] for k in newcomers]
    result = find_duplicates(
        records,
        DedupSpec(),
        is_new=[False] * len(old) + [True] * len(newcomers),
        previously_kept=kept,
        pixel_digest=corpus.pixel_digest,
    )
    by_key = dict(zip(old_keys + newcomers, result, strict=True))
    astronaut = corpus.records["astronaut/astronaut.jpg"]["sample_id"]
    coffee = corpus.records["coffee/coffee.jpg"]["sample_id"]
    assert by_key["astronaut/astronaut.jpg"] == first["astronaut/astronaut.jpg"]
    assert (
        by_key["astronaut/astronaut_copy.jpg"] == first["astronaut/astronaut_copy.jpg"]
    )  # still an exact duplicate
    assert by_key["astronaut/astronaut_q60.jpg"] == DuplicateInfo(
        astronaut[:16], False, "near_duplicate", astronaut
    )
    assert by_key["coffee/coffee.jpg"] == DuplicateInfo(coffee[:16], True, None, None)
    assert by_key["coffee/coffee_resized80.jpg"] == DuplicateInfo(
        coffee[:16], False, "near_duplicate", coffee
    )
    assert by_key["rocket/rocket.jpg"].group is None and by_key["chelsea/chelsea.jpg"].group is None


def test_old_samples_are_not_compared_again(corpus: Corpus) -> None:
    """Only pairs with a new record are searched: two old unique samples stay as they were."""
    keys = ["astronaut/astronaut.jpg", "astronaut/astronaut_q60.jpg", "rocket/rocket.jpg"]
    result = corpus.run(keys, new={"rocket/rocket.jpg"})
    assert all(info.group is None for info in result.values())
    assert (
        corpus.run(keys, new={"astronaut/astronaut_q60.jpg"})["astronaut/astronaut_q60.jpg"].kind
        == "near_duplicate"
    )


def test_empty_input() -> None:
    assert find_duplicates([], DedupSpec(), is_new=[], previously_kept=set(), pixel_digest=lambda r: "") == []


def test_embedding_pairs_merge_only_when_keypoints_agree_directly_or_mirrored(tmp_path: Path) -> None:
    """dedup.embedding hands over pairs by cosine alone; with verify (the default) a pair merges only
    when ORB keypoints agree on one transform: a mirrored crop of a photo (which no hash finds) joins it,
    two different photos that an embedding called close do not. ``verify: false`` merges both."""
    from loupe_workers.curation.geometry import Verifier

    c = Corpus(tmp_path)
    astronaut = _photo("astronaut")
    w, h = astronaut.size
    mirrored_crop = ImageOps.mirror(astronaut).crop(
        (int(w * 0.1), int(h * 0.05), int(w * 0.9), int(h * 0.85))
    )
    keys = ["a/astronaut.jpg", "a/astronaut_mirrored_crop.jpg", "b/chelsea.jpg", "b/coffee.jpg"]
    for key, image in zip(keys, (astronaut, mirrored_crop, _photo("chelsea"), _photo("coffee")), strict=True):
        c.add(key, encode(image))
    records = [c.records[k] for k in keys]
    verifier = Verifier(lambda sha: c.blobs.get(blob_key(sha)), max_pixels=100_000_000, memory_limit=1 << 30)
    pairs = [(0, 1), (2, 3)]  # what an embedding search at a loose threshold would hand over

    def groups(verify: bool, extra: list[tuple[int, int]]) -> list[str | None]:
        spec = DedupSpec.model_validate(
            {"perceptual": {"crops": False}, "embedding": {"threshold": 0.8, "verify": verify}}
        )
        result = find_duplicates(
            records, spec, is_new=[True] * 4, previously_kept=set(), pixel_digest=c.pixel_digest,
            extra_pairs=extra, verify=verifier,
        )  # fmt: skip
        return [info.group for info in result]

    alone = groups(True, [])
    assert alone[0] is None or alone[0] != alone[1]  # no hash finds the mirrored crop
    checked = groups(True, pairs)
    assert checked[0] is not None and checked[0] == checked[1]
    assert checked[2] is None or checked[2] != checked[3]
    unchecked = groups(False, pairs)
    assert unchecked[2] is not None and unchecked[2] == unchecked[3]
