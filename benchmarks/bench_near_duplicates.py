"""Near-duplicate benchmark on real photographs: precision, recall and F1 per transform, for Loupe's
default spec, for Loupe without the flipped/turned hashes, and for imagededup's pHash (threshold 10)
when it is installed in a throwaway venv; images/s side by side; which copy each keep policy kept.

Run:  .venv/bin/python benchmarks/bench_near_duplicates.py [--long-side 640] [--imagededup /tmp/nd-venv/bin/python]
                                                            [--photos all|a|b] [--embedding]

``--embedding`` adds two columns: dedup.embedding on (built-in MobileNetV2, cosine 0.8) with its pairs
merged as they come (``verify: false``) and verified by ORB keypoints, directly or mirrored (the default).

``--photos a`` keeps every other photo (by sorted name) that is not a test photo (tests/support/photos.py),
``--photos b`` the others, the test photos included: the crop candidate and verification thresholds are
tuned on half a, so half b shows they were not overfitted.

Corpus: scikit-image's photos plus the camera photographs of the development corpus (benchmarks/corpus.py:
Debian wallpaper packages, fetched once into ~/.cache/loupe-tools/dev-corpus; skipped if unavailable),
each reduced to a long side of 640 px (web size) and saved as a JPEG (quality 95): the originals. Every
original gets one copy per labelled edit below. A copy is found when Loupe puts it in its original's
group (imagededup: lists it as a duplicate of the original). Recall is over (original, copy) pairs;
precision is over every predicted pair (a pair of two copies of one photo is right, a pair across two
photos is a false match). Also printed: the smallest hash distance between any two images of different
photos, as stored (identity) and over the 8 flips and quarter turns, which bounds a safe threshold.
It prints figures and asserts nothing.

Install imagededup outside the checkout:  uv venv /tmp/nd-venv && uv pip install --python /tmp/nd-venv imagededup
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from loupe_api.dataset import DedupSpec  # noqa: E402
from loupe_workers.curation import geometry  # noqa: E402
from loupe_workers.curation.dedup import find_duplicates  # noqa: E402
from loupe_workers.curation.hamming import hex_to_u64  # noqa: E402
from loupe_workers.media import decode as media  # noqa: E402

SKIMAGE = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "immunohistochemistry",
           "hubble_deep_field", "motorcycle", "page", "moon", "retina", "skin", "eagle", "brick", "grass",
           "gravel", "text", "clock", "cell")  # fmt: skip

Edit = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, str, int]]
_MIRROR_RNG = np.random.default_rng(1)


def _resize(
    image: Image.Image, fx: float, fy: float | None = None, method: Any = Image.Resampling.LANCZOS
) -> Image.Image:
    fy = fx if fy is None else fy
    return image.resize((max(1, round(image.width * fx)), max(1, round(image.height * fy))), method)


def _crop_area(image: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    """An off-centre crop keeping ``area`` of the pixels, at a random place."""
    side = math.sqrt(area)
    w, h = image.size
    cw, ch = round(w * side), round(h * side)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def _rotate_small(image: Image.Image, degrees: float) -> Image.Image:
    """A straightened photo: rotated, then cropped to the largest centred frame without corners."""
    turned = image.rotate(degrees, Image.Resampling.BICUBIC, expand=False)
    a = math.radians(abs(degrees))
    w, h = image.size
    keep = 1 / (math.cos(a) + math.sin(a) * max(w / h, h / w))
    return _crop_area(turned, keep * keep, np.random.default_rng(0)).resize(
        image.size, Image.Resampling.LANCZOS
    )


def _pad(
    image: Image.Image, width: int, height: int, colour: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    canvas = Image.new("RGB", (width, height), colour)
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


def _letterbox(image: Image.Image) -> Image.Image:
    """Bars above and below: the photo in a taller frame (square for a landscape photo)."""
    w, h = image.size
    return _pad(image, w, max(h + 2, w if w > h else round(h * 1.3)))


def _pillarbox(image: Image.Image) -> Image.Image:
    """Bars left and right, white this time."""
    w, h = image.size
    return _pad(image, max(w + 2, round(w * 1.33)), h, (255, 255, 255))


def _jpeg(quality: int) -> Callable[[Image.Image], tuple[Image.Image, str, int]]:
    return lambda image: (image, "JPEG", quality)


EDITS: dict[str, Edit] = {
    "recompress_q50": lambda i, r: (i, "JPEG", 50),
    "resize_50": lambda i, r: (_resize(i, 0.5), "JPEG", 90),
    "brightness_120": lambda i, r: (ImageEnhance.Brightness(i).enhance(1.2), "JPEG", 90),
    "webp": lambda i, r: (i, "WEBP", 80),
    "hflip": lambda i, r: (ImageOps.mirror(i), "JPEG", 90),
    "vflip": lambda i, r: (ImageOps.flip(i), "JPEG", 90),
    "rot90": lambda i, r: (i.transpose(Image.Transpose.ROTATE_90), "JPEG", 90),
    "rot180": lambda i, r: (i.transpose(Image.Transpose.ROTATE_180), "JPEG", 90),
    "rot270": lambda i, r: (i.transpose(Image.Transpose.ROTATE_270), "JPEG", 90),
    "rot3": lambda i, r: (_rotate_small(i, 3), "JPEG", 90),
    "rot7": lambda i, r: (_rotate_small(i, -7), "JPEG", 90),
    "letterbox": lambda i, r: (_letterbox(i), "JPEG", 90),
    "pillarbox_white": lambda i, r: (_pillarbox(i), "JPEG", 90),
    "crop90": lambda i, r: (_crop_area(i, 0.9, r), "JPEG", 90),
    "crop75": lambda i, r: (_crop_area(i, 0.75, r), "JPEG", 90),
    "crop60": lambda i, r: (_crop_area(i, 0.6, r), "JPEG", 90),
    # its own random places, so adding it left the other edits' crops where they were
    "crop75_mirror": lambda i, r: (ImageOps.mirror(_crop_area(i, 0.75, _MIRROR_RNG)), "JPEG", 90),
    "chain_resize_flip_q70": lambda i, r: (ImageOps.mirror(_resize(i, 0.7)), "JPEG", 70),
    "chain_rot90_letterbox": lambda i, r: (_letterbox(i.transpose(Image.Transpose.ROTATE_90)), "JPEG", 85),
    "upscale_150": lambda i, r: (_resize(i, 1.5, method=Image.Resampling.BICUBIC), "JPEG", 90),
    "stretch_130": lambda i, r: (_resize(i, 1.3, 1.0, Image.Resampling.BICUBIC), "JPEG", 90),
    "blur": lambda i, r: (i.filter(ImageFilter.GaussianBlur(1.5)), "JPEG", 90),
}
GROUPS = {
    "easy (recompress, resize, brightness, webp)": ("recompress_q50", "resize_50", "brightness_120", "webp"),
    "flips": ("hflip", "vflip"),
    "90/180/270 rotations": ("rot90", "rot180", "rot270"),
    "small rotations 3-7 deg": ("rot3", "rot7"),
    "letterbox / pillarbox": ("letterbox", "pillarbox_white"),
    "crops 90 %": ("crop90",),
    "crops 75 / 60 %": ("crop75", "crop60"),
    "mirrored crops 75 %": ("crop75_mirror",),
    "chains": ("chain_resize_flip_q70", "chain_rot90_letterbox"),
    "upscale / stretch / blur": ("upscale_150", "stretch_130", "blur"),
}
# a kept copy that is one of these is a processed variant, not the original
PROCESSED = {"recompress_q50", "resize_50", "webp", "letterbox", "pillarbox_white", "crop90", "crop75",
             "crop60", "crop75_mirror", "chain_resize_flip_q70", "chain_rot90_letterbox", "upscale_150",
             "stretch_130", "blur", "rot3", "rot7"}  # fmt: skip


def originals(long_side: int) -> list[tuple[str, Image.Image]]:
    out: list[tuple[str, Image.Image]] = []
    import skimage.data

    for name in SKIMAGE:
        try:  # a few of scikit-image's photos are downloaded on first use (pooch): skipped offline
            loaded = (
                skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
            )
        except Exception:
            continue
        array = np.asarray(loaded)
        if array.dtype != np.uint8:
            array = (array.astype(np.float64) / max(float(array.max()), 1.0) * 255).astype(np.uint8)
        out.append((f"skimage-{name}", Image.fromarray(array).convert("RGB")))
    try:
        import corpus

        for path in corpus.photos():
            with Image.open(path) as image:
                # plasma's photos are all named by their size: name them by their folder
                name = path.parents[2].name if path.stem[:1].isdigit() else path.stem
                out.append((f"dev-{name}", ImageOps.exif_transpose(image).convert("RGB")))
    except Exception as error:  # no network, no apt-get: scikit-image's photos only
        print(f"(development corpus unavailable: {error}; scikit-image photos only)")
    reduced = []
    for name, image in out:
        scale = long_side / max(image.size)
        reduced.append((name, _resize(image, scale) if scale < 1 else image))
    return reduced


def encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=quality)
    return buffer.getvalue()


def half(photos: list[tuple[str, Image.Image]], which: str) -> list[tuple[str, Image.Image]]:
    """Every photo (all), or one half: a holds every other photo (by sorted name) that is not one of the
    test photos (tests/support/photos.py), b the others, every test photo included."""
    if which == "all":
        return photos
    sys.path.insert(0, str(REPO / "tests"))
    from support.photos import PHOTO_NAMES

    tested = {f"skimage-{name}" for name in PHOTO_NAMES}
    untested = sorted(name for name, _ in photos if name not in tested)
    in_a = set(untested[0::2])
    return [(name, image) for name, image in photos if (name in in_a) == (which == "a")]


def build(folder: Path, long_side: int, photos: str = "all") -> list[dict[str, Any]]:
    items = []
    rng = np.random.default_rng(0)
    for photo_name, image in half(originals(long_side), photos):
        data = encode(image, "JPEG", 95)
        items.append(
            {"photo": photo_name, "edit": "original", "file": f"{photo_name}__original.jpg", "data": data}
        )
        for edit, make in EDITS.items():
            edited, fmt, quality = make(image, rng)
            suffix = ".webp" if fmt == "WEBP" else ".jpg"
            items.append({"photo": photo_name, "edit": edit, "file": f"{photo_name}__{edit}{suffix}",
                          "data": encode(edited, fmt, quality)})  # fmt: skip
    for item in items:
        (folder / item["file"]).write_bytes(item["data"])
    return items


def analyse(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    start = time.process_time()
    records = []
    for item in items:
        analysis = media.analyze_image(item["data"], max_pixels=100_000_000)
        sha = hashlib.sha256(item["data"]).hexdigest()
        records.append({
            "sample_id": sha, "sha256": sha, "source": "bench", "key": item["file"],
            "size": len(item["data"]), "format": analysis.format, "width": analysis.width,
            "height": analysis.height, "sharpness": analysis.metrics["sharpness"],
            "hash": analysis.hashes["phash"], "hash_variants": analysis.hash_variants, "status": "ok",
        })  # fmt: skip
    return records, time.process_time() - start


VERIFIED: dict[str, tuple[int, float]] = {}  # label -> (pairs verified, CPU seconds of verification)


def embedding_pairs(items: list[dict[str, Any]], threshold: float) -> list[tuple[int, int]]:
    """Index pairs (a < b) whose built-in MobileNetV2 embeddings (as the embedding stage computes them)
    have a cosine of at least ``threshold``: what dedup.embedding hands find_duplicates."""
    from loupe_workers.embedding.embed import EmbedConfig, Embedder, decode_for_model

    embedder = Embedder(EmbedConfig())
    vectors = []
    for start in range(0, len(items), 32):
        batch = items[start : start + 32]
        pixels = np.stack([
            decode_for_model(item["data"], embedder.size, max_pixels=100_000_000, crop=embedder.crop)
            for item in batch
        ])  # fmt: skip
        vectors.append(embedder.infer([str(i) for i in range(len(batch))], pixels).vectors)
    matrix = np.concatenate(vectors)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    similar = np.triu(matrix @ matrix.T >= threshold, k=1)
    return [(int(a), int(b)) for a, b in zip(*np.nonzero(similar), strict=True)]


def loupe_groups(
    items: list[dict[str, Any]],
    records: list[dict[str, Any]],
    spec: DedupSpec,
    label: str = "",
    extra: list[tuple[int, int]] | None = None,
) -> tuple[set[tuple[int, int]], dict[int, int], float, dict[int, str]]:
    data = {r["sample_id"]: item["data"] for r, item in zip(records, items, strict=True)}
    verifier = geometry.Verifier(
        lambda sha: data[sha], max_pixels=100_000_000, memory_limit=media.DEFAULT_MEMORY_LIMIT,
        min_inliers=spec.perceptual.min_inliers, min_ratio=spec.perceptual.min_inlier_ratio,
    )  # fmt: skip
    spent = [0.0]

    class Timed:
        """The verifier, timed; it forwards find_duplicates' hint of the records verified mirrored."""

        def __call__(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
            begin = time.process_time()
            try:
                return verifier(a, b)
            finally:
                spent[0] += time.process_time() - begin

        def expect_mirrored(self, shas: set[str]) -> None:
            verifier.expect_mirrored(shas)

    verify = Timed()

    digests: dict[str, str] = {}
    measured: dict[str, dict[str, float]] = {}

    def digest(r: Mapping[str, Any]) -> str:
        """The exact-pixel digest, its decode giving the keep measures too, as a run does."""
        if r["sample_id"] not in digests:
            keep: dict[str, float] = {}
            digests[r["sample_id"]] = media.pixel_digest(data[r["sample_id"]], keep=keep)
            measured.setdefault(r["sample_id"], keep)
        return digests[r["sample_id"]]

    def keep(r: Mapping[str, Any]) -> dict[str, float] | None:
        if r["sample_id"] not in measured:
            measured[r["sample_id"]] = media.keep_measures(data[r["sample_id"]])
        return measured[r["sample_id"]] or None

    def shape(r: Mapping[str, Any]) -> dict[str, float] | None:
        if r["sample_id"] in measured:
            return measured[r["sample_id"]] or None
        return media.shape_measures(data[r["sample_id"]])

    start = time.process_time()
    result = find_duplicates(
        records, spec, is_new=[True] * len(records), previously_kept=set(),
        pixel_digest=digest, keep_measures=keep, shape_measures=shape, verify=verify,
        extra_pairs=extra or [],
    )  # fmt: skip
    elapsed = time.process_time() - start
    VERIFIED[label] = (verifier.checked, spent[0])
    by_group: dict[str, list[int]] = {}
    for i, info in enumerate(result):
        if info.group:
            by_group.setdefault(info.group, []).append(i)
    pairs = {(a, b) for members in by_group.values() for a in members for b in members if a < b}
    keeper = {}
    index = {r["sample_id"]: i for i, r in enumerate(records)}
    for i, info in enumerate(result):
        if info.group:
            keeper[i] = i if info.of is None else index[info.of]
    reasons = {i: info.reason for i, info in enumerate(result) if info.reason}
    return pairs, keeper, elapsed, reasons


IMAGEDEDUP_STARTUP_CPU: list[float] = []  # CPU seconds of its command outside find_duplicates
LOUPE_SPEC = """apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: bench}}
spec:
  filesystem: {{path: {folder}}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: bench}}
spec:
  sources: [{{name: bench}}]
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loupe_run_cpu(folder: Path, work: Path) -> tuple[float, float, str]:
    """CPU seconds of a whole ``loupe run`` (default Dataset spec, local folder store, inline executor:
    one process) over ``folder``, and of the same command on an empty folder (start-up: interpreter,
    imports, listing, an empty commit); and the run's last line."""
    loupe = Path(sys.executable).with_name("loupe")
    out = []
    for name, source in (("empty", work / "empty-source"), ("full", folder)):
        source.mkdir(exist_ok=True)
        spec = work / f"{name}.yaml"
        spec.write_text(LOUPE_SPEC.format(folder=json.dumps(str(source))))
        before = _children_cpu()
        done = subprocess.run(
            [str(loupe), "run", "-f", str(spec), "--executor", "inline", "--store", str(work / f"store-{name}")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        out.append(_children_cpu() - before)
        if done.returncode != 0:
            print(f"(loupe run failed: {(done.stdout + done.stderr).strip().splitlines()[-3:]})")
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return out[1], out[0], last


def imagededup_pairs(
    python: str, folder: Path, items: list[dict[str, Any]]
) -> tuple[set[tuple[int, int]], float] | None:
    if not Path(python).exists():
        return None
    # imagededup's package imports its CNN (torch, torchvision) and plotting (matplotlib) modules even for
    # hashing: they get stand-ins, which PHash never calls (a venv that has torch would otherwise spend
    # some 15 s of CPU importing it, more than the hashing). "0 workers" still hashes in a pool of one
    # worker process, so the CPU counted is the process's own and its children's.
    script = (
        "import importlib.abc, importlib.machinery, json, sys, time\n"
        "from unittest import mock\n"
        "class Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'matplotlib', 'sklearn'):\n"
        "            return importlib.machinery.ModuleSpec(name, self, is_package=True)\n"
        "    def create_module(self, spec):\n"
        "        module = mock.MagicMock(); module.__path__ = []; module.__spec__ = spec; return module\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "sys.meta_path.insert(0, Stub())\n"
        "import resource\n"
        "from imagededup.methods import PHash\n"
        "def cpu():\n"
        "    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime\n"
        "start = cpu()\n"
        "found = PHash(verbose=False).find_duplicates(image_dir=sys.argv[1], max_distance_threshold=10,\n"
        "    num_enc_workers=0, num_dist_workers=0)\n"
        "print(json.dumps({'seconds': cpu() - start, 'found': found}))\n"
    )
    middle = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([python, "-c", script, str(folder)], capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        print(f"(imagededup failed: {done.stderr.strip().splitlines()[-1:]})")
        return None
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # The CPU of find_duplicates itself (its pool worker included), timed inside the process: start-up
    # (interpreter, imports) is left out without a second run on an empty folder to subtract.
    cpu = float(out["seconds"])
    whole = after.ru_utime + after.ru_stime - middle.ru_utime - middle.ru_stime
    IMAGEDEDUP_STARTUP_CPU.append(max(0.0, whole - cpu))  # what the whole command spent besides
    index = {item["file"]: i for i, item in enumerate(items)}
    pairs = set()
    for name, dups in out["found"].items():
        for other in dups:
            a, b = index[name], index[other]
            pairs.add((min(a, b), max(a, b)))
    return pairs, cpu


def score(items: list[dict[str, Any]], pairs: set[tuple[int, int]]) -> dict[str, tuple[float, int]]:
    """Recall per edit over (original, copy) pairs, and precision over the predicted pairs."""
    original = {item["photo"]: i for i, item in enumerate(items) if item["edit"] == "original"}
    recall: dict[str, tuple[float, int]] = {}
    for edit in EDITS:
        copies = [i for i, item in enumerate(items) if item["edit"] == edit]
        found = sum(
            (min(original[items[i]["photo"]], i), max(original[items[i]["photo"]], i)) in pairs
            for i in copies
        )
        recall[edit] = (found / max(1, len(copies)), len(copies))
    return recall


def precision(items: list[dict[str, Any]], pairs: set[tuple[int, int]]) -> tuple[float, int]:
    wrong = sum(items[a]["photo"] != items[b]["photo"] for a, b in pairs)
    return (1 - wrong / len(pairs) if pairs else 1.0), wrong


def closest_distinct(
    items: list[dict[str, Any]], records: list[dict[str, Any]]
) -> tuple[int, int, list[int]]:
    """Smallest Hamming distance between images of different photos: identity hashes, and best of the
    8 orientations; and the counts of cross-photo pairs at distances 0..12 (8 orientations)."""
    ident = hex_to_u64([r["hash"] for r in records])
    variants = np.stack([ident, *[hex_to_u64([r["hash_variants"][k] for r in records]) for k in range(7)]])
    photo = np.array([hash(item["photo"]) for item in items])
    other = photo[:, None] != photo[None, :]
    d_id = np.bitwise_count(ident[:, None] ^ ident[None, :])
    d_all = np.min(np.bitwise_count(variants[:, :, None] ^ ident[None, None, :]), axis=0)
    histogram = [int(((d_all == d) & other).sum() // 2) for d in range(13)]
    return int(d_id[other].min()), int(d_all[other].min()), histogram


def report(
    name: str, items: list[dict[str, Any]], pairs: set[tuple[int, int]], seconds: float
) -> dict[str, float]:
    recall = score(items, pairs)
    p, wrong = precision(items, pairs)
    row: dict[str, float] = {
        "precision": p,
        "false_pairs": wrong,
        "images_per_s": len(items) / max(seconds, 1e-9),
    }
    for group, edits in GROUPS.items():
        row[group] = float(np.mean([recall[e][0] for e in edits]))
    core = [e for e in EDITS if e not in ("crop75", "crop60", "crop75_mirror")]
    row["recall (all but crops 75/60)"] = float(np.mean([recall[e][0] for e in core]))
    row["recall (all)"] = float(np.mean([recall[e][0] for e in EDITS]))
    r = row["recall (all)"]
    row["F1 (all)"] = 2 * p * r / (p + r) if p + r else 0.0
    row["_per_edit"] = recall  # type: ignore[assignment]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-side", type=int, default=640)
    parser.add_argument(
        "--imagededup", default="/tmp/nd-venv/bin/python", help="python of a venv with imagededup"
    )
    parser.add_argument("--photos", choices=("all", "a", "b"), default="all", help="all photos or one half")
    parser.add_argument(
        "--embedding",
        action="store_true",
        help="also dedup.embedding on (threshold 0.8), unverified and verified",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = build(folder, args.long_side, args.photos)
        photos = len({i["photo"] for i in items})
        print(
            f"{photos} photos x {len(EDITS)} edits + originals = {len(items)} images, long side {args.long_side}"
        )
        records, analyse_s = analyse(items)
        d_id, d_all, histogram = closest_distinct(items, records)
        print(
            f"closest two images of different photos: {d_id} bits (identity hash), {d_all} bits (8 orientations)"
        )
        print(f"cross-photo pairs at distance 0..12 over 8 orientations: {histogram}")
        rows: dict[str, dict[str, float]] = {}
        variants = {
            "loupe default (8 orientations, t=8)": DedupSpec(),
            "loupe without crop candidates": DedupSpec.model_validate({"perceptual": {"crops": False}}),
            "loupe identity hash only (t=8)": DedupSpec.model_validate(
                {"perceptual": {"transforms": False, "crops": False}}
            ),
        }
        extra: dict[str, list[tuple[int, int]]] = {}
        if args.embedding:
            started = time.process_time()
            near = embedding_pairs(items, 0.8)
            print(
                f"embeddings: {len(near)} pairs at cosine >= 0.8 ({time.process_time() - started:.1f} CPU s)"
            )
            for label, verify in (
                ("loupe + embedding, unverified", False),
                ("loupe + embedding, verified", True),
            ):
                variants[label] = DedupSpec.model_validate(
                    {"embedding": {"threshold": 0.8, "verify": verify}}
                )
                extra[label] = near
        kept: dict[str, dict[int, int]] = {}
        reasons: dict[int, str] = {}
        for label, spec in variants.items():
            pairs, keeper, group_s, why = loupe_groups(items, records, spec, label, extra.get(label))
            checked, verify_s = VERIFIED[label]
            rows[label] = report(label, items, pairs, analyse_s + group_s)
            # images per CPU-second of decode + hashes, and of decode + hashes + crop verification
            rows[label]["images_per_s (hashes)"] = len(items) / analyse_s
            rows[label]["images_per_s (hashes + verify)"] = len(items) / (analyse_s + verify_s)
            kept[label] = keeper
            reasons = reasons or why
            print(
                f"{label}: decode + hashes {len(items) / analyse_s:.0f} images/s; grouping {group_s:.1f} s "
                "(full decodes for exact pixels and for the keep policy of group members), of which "
                f"crop verification {verify_s:.1f} s for {checked} candidate pairs"
            )
        for policy in ("highestResolution",):
            spec = DedupSpec.model_validate({"keep": policy})
            _, kept[f"keep {policy}"], _, _ = loupe_groups(items, records, spec)
        run_work = Path(tempfile.mkdtemp(prefix="loupe-run-"))
        try:
            run_cpu, run_startup, run_line = loupe_run_cpu(folder, run_work)
        finally:
            shutil.rmtree(run_work, ignore_errors=True)
        theirs = imagededup_pairs(args.imagededup, folder, items)
        if theirs is not None:
            rows["imagededup pHash (t=10)"] = report("imagededup", items, theirs[0], theirs[1])
        else:
            print(f"(imagededup not found at {args.imagededup}: its column is left out)")
    n = len(items)
    print("\nspeed per CPU-second, same files, one process each (the machine's other load does not count):")
    print(f"  loupe run (default spec, inline executor), whole command:  {n / run_cpu:7.1f} images/CPU-s"
          f"  ({run_cpu:.1f} s; {run_line})")  # fmt: skip
    print(f"  loupe run, less its start-up on an empty folder ({run_startup:.1f} s): "
          f"{n / max(run_cpu - run_startup, 1e-9):7.1f} images/CPU-s")  # fmt: skip
    print(f"  loupe analysis stage alone (decode, metrics, hashes):      {n / analyse_s:7.1f} images/CPU-s")
    if theirs is not None:
        dedup_rate = n / max(theirs[1], 1e-9)
        startup = IMAGEDEDUP_STARTUP_CPU[-1] if IMAGEDEDUP_STARTUP_CPU else 0.0
        print(f"  imagededup pHash, less its start-up ({startup:.1f} s):          {dedup_rate:7.1f} images/CPU-s"
              f"; whole command {n / max(theirs[1] + startup, 1e-9):.1f}")  # fmt: skip
        print(f"  ratio loupe / imagededup: end to end {n / max(run_cpu - run_startup, 1e-9) / dedup_rate:.2f} "
              f"(whole commands {(theirs[1] + startup) / run_cpu:.2f}), analysis stage {n / analyse_s / dedup_rate:.2f}")  # fmt: skip
        # Every file costs the analysis; what the run spends beyond it (grouping: full decodes of group
        # members, crop verification; and the commit) is charged to the group members, which this
        # corpus has far more of than most datasets: the same figures at other shares of grouped files.
        default = kept["loupe default (8 orientations, t=8)"]
        members = len(set(default) | set(default.values()))
        per_member = max(run_cpu - run_startup - analyse_s, 0.0) / max(1, members)

        def modelled(share: float) -> float:
            return 1 / (analyse_s / n + share * per_member)

        even = (n / dedup_rate - analyse_s) / (n * per_member) if per_member else math.inf
        shares = "; ".join(f"{share:.0%} grouped {modelled(share):.1f} ({modelled(share) / dedup_rate:.2f}x)" for share in (0.05, 0.2, 0.5))  # fmt: skip
        # below 0: the analysis alone is slower than imagededup's whole run, at any share
        parity = (
            f"as fast as imagededup up to {min(even, 1.0):.0%} grouped"
            if even >= 0
            else f"slower than imagededup even with no file grouped (analysis alone {n / analyse_s / dedup_rate:.2f}x)"
        )
        print(f"  modelled at other shares of files in duplicate groups ({1000 * analyse_s / n:.1f} ms a file, "
              f"+{1000 * per_member:.1f} ms a group member, measured here with {members / n:.0%} grouped): "
              f"{shares}; {parity}")  # fmt: skip
    labels = list(rows)
    width = max(len(k) for k in next(iter(rows.values())) if not k.startswith("_"))
    print()
    print(f"{'':{width}}  " + "  ".join(f"{label:>36}" for label in labels))
    for key in rows[labels[0]]:
        if key.startswith("_"):
            continue
        cells = []
        for label in labels:
            value = rows[label].get(key, float("nan"))
            cells.append(
                f"{value:>36.1f}"
                if key.startswith("images_per_s")
                else f"{value:>36.3f}"
                if isinstance(value, float)
                else f"{value:>36}"
            )
        print(f"{key:{width}}  " + "  ".join(cells))
    print("\nrecall per edit:")
    for edit in EDITS:
        cells = "  ".join(f"{rows[label]['_per_edit'][edit][0]:>6.2f}" for label in labels)  # type: ignore[index]
        print(f"  {edit:<24} {cells}")
    print("\nkept copy of each group holding an original (processed = " + ", ".join(sorted(PROCESSED)) + "):")
    original = {i for i, item in enumerate(items) if item["edit"] == "original"}
    for label in ("loupe default (8 orientations, t=8)", "keep highestResolution"):
        keeper = kept[label]
        groups = {keeper[i] for i in original if i in keeper}
        bad = sorted(items[k]["edit"] for k in groups if items[k]["edit"] in PROCESSED)
        print(f"  {label:<40} {len(groups)} groups, processed variant kept in {len(bad)}: {', '.join(bad)}")
        if label.startswith("loupe default"):
            for k in sorted(groups):
                if items[k]["edit"] in PROCESSED:
                    print(f"      {items[k]['file']}: {reasons.get(k)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
