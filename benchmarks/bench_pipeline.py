"""Loupe data-plane benchmark: per-object pipeline vs plain Pillow decode, and 1M-hash grouping.

Run:  .venv/bin/python benchmarks/bench_pipeline.py [--files N] [--hashes N] [--out results.json]

Prints figures and writes JSON; it asserts nothing (targets are labelled MEETS / MISSES only).
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CORPUS_VERSION = 2
GROUPS: dict[str, tuple[int, int]] = {"640x480": (640, 480), "1920x1080": (1920, 1080)}
# Real photographs shipped inside scikit-image (no download needed). Synthetic ones (colorwheel, logo,
# text, horse) are left out; greyscale photos are turned into RGB.
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "retina",
    "page",
    "moon",
    "grass",
    "gravel",
    "brick",
    "cell",
    "clock",
    "stereo_motorcycle",
)
TARGETS = {
    "ratio_1920x1080": 1.0,
    "ratio_640x480": 0.8,
    "grouping_seconds": 60.0,
    "grouping_rss_mb": 2048.0,
}
Json = dict[str, Any]


# --------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(message, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_times() -> list[int]:
    """The machine-wide 'cpu' line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return []


class Conditions:
    """What else the machine did while a measurement ran: load average, and from /proc/stat the share
    of all CPUs that was busy (this run included), waiting for I/O, or stolen by the hypervisor."""

    def __enter__(self) -> Conditions:
        self.load_before = loadavg()
        self.times = _cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        after = _cpu_times()
        self.record: Json = {"loadavg_before": self.load_before, "loadavg_after": loadavg()}
        if self.times and len(after) >= 8:
            delta = [b - a for a, b in zip(self.times, after, strict=False)]
            total = max(1, sum(delta[:8]))
            idle = delta[3] + delta[4]
            self.record["machine_busy_pct"] = round(100 * (total - idle) / total, 1)
            self.record["iowait_pct"] = round(100 * delta[4] / total, 1)
            self.record["steal_pct"] = round(100 * delta[7] / total, 1)


def maxrss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class LoadSampler:
    """Samples the 1-minute load average in the background for the whole run."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> Json:
        s = self.samples or [os.getloadavg()[0]]
        return {
            "samples": len(s),
            "min": round(min(s), 2),
            "mean": round(sum(s) / len(s), 2),
            "max": round(max(s), 2),
        }


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a fresh spawned process, so its peak RSS is its own and nothing is shared."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


CODE_ENV = "LOUPE_BENCH_CODE"


def _ensure_import_path() -> None:
    """Import loupe_api / loupe_workers from --code (default: this checkout), ahead of the venv's copy."""
    code = Path(os.environ.get(CODE_ENV) or REPO)
    for sub in ("workers", "api"):
        path = str(code / sub)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


# ---------------------------------------------------------------------------------------------- corpus

_PHOTOS: list[Any] = []
_NOISE: dict[tuple[Any, ...], Any] = {}
NOISE_MARGIN = 64


def _load_photos() -> list[Any]:
    """The skimage photos that load offline, as HxWx3 uint8 arrays."""
    import numpy as np
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        try:
            image = loader()
        except Exception:  # needs a download (pooch) or is missing in this skimage version
            continue
        if isinstance(image, tuple):  # stereo pairs
            image = image[0]
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            continue
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos.append((name, np.ascontiguousarray(image[..., :3])))
    return photos


def _init_worker() -> None:
    _PHOTOS.extend(_load_photos())


def _noise_tile(group_index: int, seed: int, noise: float) -> Any:
    """A per-worker tile of sensor-like noise (int16), a little larger than the frame; each file takes a
    random window of it, which is far cheaper than drawing fresh normal samples for every pixel."""
    import numpy as np

    key = ("noise", group_index, seed, noise)
    cached = _NOISE.get(key)
    if cached is None:
        width, height = list(GROUPS.values())[group_index]
        rng = np.random.default_rng([seed, 999, group_index])
        shape = (height + NOISE_MARGIN, width + NOISE_MARGIN, 3)
        cached = np.rint(rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)).astype(np.int16)
        _NOISE[key] = cached
    return cached


def _variant(task: tuple[str, int, int, int, float, int]) -> int:
    """Write one distinct JPEG: random crop + resize + flip + colour jitter + mild sensor noise."""
    import numpy as np
    from PIL import Image

    path_str, group_index, index, seed, noise, quality = task
    path = Path(path_str)
    width, height = list(GROUPS.values())[group_index]
    rng = np.random.default_rng([seed, group_index, index])
    _, photo = _PHOTOS[int(rng.integers(len(_PHOTOS)))]
    src_h, src_w = photo.shape[:2]
    aspect = width / height
    crop_w = min(src_w, src_h * aspect)
    scale = rng.uniform(0.55, 1.0)
    crop_w, crop_h = max(16, int(crop_w * scale)), max(16, int(crop_w * scale / aspect))
    left = int(rng.integers(0, src_w - crop_w + 1))
    top = int(rng.integers(0, src_h - crop_h + 1))
    image = Image.fromarray(photo).crop((left, top, left + crop_w, top + crop_h))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # colour jitter: a per-channel gain and offset, applied as one lookup table
    gain = rng.uniform(0.9, 1.1, size=3)
    offset = rng.uniform(-10, 10, size=3)
    levels = np.arange(256, dtype=np.float64)
    lut = np.concatenate([np.clip(levels * g + o + 0.5, 0, 255) for g, o in zip(gain, offset, strict=True)])
    image = image.point(lut.astype(np.uint8).tolist())
    if noise > 0:
        tile = _noise_tile(group_index, seed, noise)
        dy, dx = (int(v) for v in rng.integers(0, NOISE_MARGIN, size=2))
        pixels = np.asarray(image, dtype=np.int16)
        pixels += tile[dy : dy + height, dx : dx + width]
        np.clip(pixels, 0, 255, out=pixels)
        image = Image.fromarray(pixels.astype(np.uint8))
    temp = path.with_name(f".tmp-{path.name}")
    image.save(temp, format="JPEG", quality=quality)
    temp.replace(path)
    return index


def build_corpus(root: Path, per_group: int, seed: int, noise: float, quality: int) -> Json:
    """Create (or complete) the cached corpus; every file is a deterministic function of its index."""
    params = {"version": CORPUS_VERSION, "seed": seed, "noise": noise, "quality": quality}
    manifest = root / "corpus.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if {k: old.get(k) for k in params} != params:
            log(f"corpus at {root} was made with {old}; regenerating with {params}")
            for group in GROUPS:
                shutil.rmtree(root / group, ignore_errors=True)
    tasks = []
    for group_index, group in enumerate(GROUPS):
        folder = root / group
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_group):
            path = folder / f"{index:06d}.jpg"
            if not path.exists():
                tasks.append((str(path), group_index, index, seed, noise, quality))
    t0 = time.perf_counter()
    if tasks:
        log(f"generating {len(tasks)} corpus files under {root} (2 processes)...")
        with mp.get_context("spawn").Pool(2, initializer=_init_worker) as pool:
            for done, _ in enumerate(pool.imap_unordered(_variant, tasks, chunksize=8), 1):
                if done % 500 == 0:
                    log(f"  {done}/{len(tasks)}")
    photos = [name for name, _ in _load_photos()]
    manifest.write_text(json.dumps({**params, "photos": photos}, indent=2))
    info: Json = {"root": str(root), "generated": len(tasks), "seconds": round(time.perf_counter() - t0, 1)}
    info["photos"] = photos
    for group in GROUPS:
        files = sorted((root / group).glob("*.jpg"))[:per_group]
        sizes = [f.stat().st_size for f in files]
        info[group] = {"files": len(files), "mean_kb": round(sum(sizes) / max(1, len(sizes)) / 1024, 1)}
    return info


def group_files(root: Path, group: str, count: int) -> list[Path]:
    return sorted((root / group).glob("*.jpg"))[:count]


def warm_cache(paths: list[Path]) -> int:
    return sum(len(p.read_bytes()) for p in paths)


# ------------------------------------------------------------------------------------ pipeline (child)


def _listed(folder: str, limit: int) -> tuple[Any, Any, list[Any]]:
    _ensure_import_path()
    from loupe_api.ingest import IngestSourceSpec
    from loupe_storage.store import LocalStore
    from loupe_workers.ingest.sources import list_media

    spec = IngestSourceSpec(filesystem={"path": folder})  # type: ignore[arg-type]
    store = LocalStore(folder)
    objects, _ = list_media("bench", spec, store)
    return spec, store, objects[:limit]


def _run_pipeline(spec: Any, store: Any, objects: list[Any], blob_parent: str) -> tuple[list[Any], Path]:
    from loupe_storage.store import LocalStore
    from loupe_workers.compute.executor import InlineExecutor
    from loupe_workers.compute.process import ProcessSettings

    blob_dir = Path(tempfile.mkdtemp(prefix="loupe-bench-blobs-", dir=blob_parent))
    records = InlineExecutor().process(
        objects,
        {"bench": (spec, store)},
        LocalStore(blob_dir),
        ProcessSettings(hash_kind="phash", max_pixels=100_000_000),
        progress=lambda n: None,
    )
    return records, blob_dir


def pipeline_child(folder: str, limit: int, blob_parent: str, trace: bool) -> Json:
    """One timed pass of the full per-object pipeline over ``limit`` files, in a fresh process."""
    import tracemalloc

    spec, store, objects = _listed(folder, limit)
    records, warm_dir = _run_pipeline(spec, store, objects[:2], blob_parent)  # imports, lazy init
    shutil.rmtree(warm_dir, ignore_errors=True)
    base_rss = maxrss_mb()
    base_now = current_rss_mb()
    if trace:
        tracemalloc.start()
    wall, cpu, (records, blob_dir) = timed(lambda: _run_pipeline(spec, store, objects, blob_parent))
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    if trace:
        tracemalloc.stop()
    blob_count = sum(1 for _ in blob_dir.rglob("*") if _.is_file())
    shutil.rmtree(blob_dir, ignore_errors=True)
    statuses = [r.get("status") for r in records]
    return {
        "files": len(objects),
        "records": len(records),
        "ok": statuses.count("ok"),
        "failed": len(records) - statuses.count("ok"),
        "blobs_written": blob_count,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_baseline_mb": round(base_rss, 1),
        "rss_current_before_mb": round(base_now, 1),
        "rss_peak_mb": round(maxrss_mb(), 1),
        "rss_growth_mb": round(maxrss_mb() - base_rss, 1),
        "tracemalloc_peak_mb": None if traced_peak is None else round(traced_peak, 2),
        "hashes": [r.get("hash") for r in records],
    }


def stages_child(folder: str, limit: int, blob_parent: str) -> Json:
    """Per-stage seconds of the pipeline's steps, each timed on its own (from memory where possible)."""
    import hashlib

    _, store, objects = _listed(folder, limit)
    from loupe_storage.store import LocalStore, put_blob
    from loupe_workers.media import decode as media

    media.analyze_image(store.get(objects[0].key), max_pixels=100_000_000, hash_kind="phash")
    totals = dict.fromkeys(("read", "sha256", "analyze_image", "put_blob"), 0.0)
    blob_dir = Path(tempfile.mkdtemp(prefix="loupe-bench-stages-", dir=blob_parent))
    blobs = LocalStore(blob_dir)
    t_all = time.perf_counter()
    for obj in objects:
        t0 = time.perf_counter()
        data = store.get(obj.key)
        t1 = time.perf_counter()
        sha = hashlib.sha256(data).hexdigest()
        t2 = time.perf_counter()
        media.analyze_image(data, max_pixels=100_000_000, hash_kind="phash")
        t3 = time.perf_counter()
        put_blob(blobs, data, sha)
        t4 = time.perf_counter()
        totals["read"] += t1 - t0
        totals["sha256"] += t2 - t1
        totals["analyze_image"] += t3 - t2
        totals["put_blob"] += t4 - t3
    total = time.perf_counter() - t_all
    shutil.rmtree(blob_dir, ignore_errors=True)
    n = max(1, len(objects))
    out: Json = {
        k: {"ms_per_image": round(v / n * 1000, 3), "share": round(v / total, 3)} for k, v in totals.items()
    }
    out["total_ms_per_image"] = round(total / n * 1000, 3)
    return out


def profile_child(folder: str, limit: int, blob_parent: str, top: int) -> str:
    import cProfile
    import io
    import pstats

    spec, store, objects = _listed(folder, limit)
    _, warm_dir = _run_pipeline(spec, store, objects[:2], blob_parent)
    shutil.rmtree(warm_dir, ignore_errors=True)
    profiler = cProfile.Profile()
    profiler.enable()
    _, blob_dir = _run_pipeline(spec, store, objects, blob_parent)
    profiler.disable()
    shutil.rmtree(blob_dir, ignore_errors=True)
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- plain decoding


def plain_decode(paths: list[Path], mode: str) -> tuple[float, float]:
    """(wall, cpu) seconds to decode every file with plain Pillow.

    mode: 'load' = Image.open(path).load(); 'rgb' = .convert('RGB') as a real consumer does;
    'draft' = the same DCT-scaled decode that Loupe's working image uses, then load().
    """
    from PIL import Image

    def run() -> None:
        for path in paths:
            with Image.open(path) as image:
                if mode == "draft":
                    w, h = image.size
                    scale = 128 / max(w, h)
                    image.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
                    image.load()
                elif mode == "rgb":
                    image.convert("RGB")
                else:
                    image.load()

    run_paths = paths[:2]
    for path in run_paths:  # first-call costs (plugin import) outside the timing
        with Image.open(path) as image:
            image.load()
    wall, cpu, _ = timed(run)
    return wall, cpu


# --------------------------------------------------------------------------------- hash grouping


def _planted_hashes(n: int, planted: int, threshold: int, seed: int) -> tuple[Any, Any, Any]:
    """n random 64-bit hashes; the first ``planted`` pairs (2k, 2k+1) differ in 0..threshold+2 bits."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    distances = rng.integers(0, threshold + 3, size=planted)
    for k, d in enumerate(distances):
        bits = rng.choice(64, size=int(d), replace=False)
        mask = 0
        for b in bits:
            mask |= 1 << int(b)
        hashes[2 * k + 1] = hashes[2 * k] ^ np.uint64(mask)
    return hashes, distances, rng


def _brute_pairs(hashes: Any, threshold: int) -> set[tuple[int, int]]:
    import numpy as np

    found: set[tuple[int, int]] = set()
    n = len(hashes)
    for start in range(0, n, 256):
        rows = np.arange(start, min(n, start + 256))
        dist = np.bitwise_count(hashes[rows, None] ^ hashes[None, :])
        r, c = np.nonzero(dist <= threshold)
        for i, j in zip(rows[r].tolist(), c.tolist(), strict=True):
            if i < j:
                found.add((i, j))
    return found


def _partition(labels: Any) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def spot_check_child(n: int, threshold: int, seed: int) -> Json:
    """hamming_pairs + connected_groups against brute force on n hashes with planted near pairs."""
    _ensure_import_path()
    import numpy as np

    from loupe_workers.curation.hamming import BRUTE_FORCE_LIMIT, connected_groups, hamming_pairs

    hashes, _, _ = _planted_hashes(n, n // 10, threshold, seed)
    # a few chains a-b-c so that grouping must be transitive
    for k in range(20):
        base = n // 5 * 2 + 3 * k
        hashes[base + 1] = hashes[base] ^ np.uint64((1 << (threshold - 1)) - 1)
        hashes[base + 2] = hashes[base + 1] ^ np.uint64(((1 << (threshold - 1)) - 1) << 20)
    firsts, seconds = hamming_pairs(hashes, threshold)
    got = set(zip(firsts.tolist(), seconds.tolist(), strict=True))
    want = _brute_pairs(hashes, threshold)
    labels = connected_groups(n, firsts, seconds)
    # union-find over brute-force pairs for the reference grouping
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in want:
        parent[find(i)] = find(j)
    truth = np.array([find(i) for i in range(n)])
    return {
        "n": n,
        "threshold": threshold,
        "multi_index_path": n > BRUTE_FORCE_LIMIT,
        "pairs_found": len(got),
        "pairs_brute_force": len(want),
        "missing": len(want - got),
        "extra": len(got - want),
        "groups_match": _partition(labels) == _partition(truth),
        "correct": got == want and _partition(labels) == _partition(truth),
    }


def grouping_child(n: int, threshold: int, seed: int) -> Json:
    """Time hamming_pairs + connected_groups on n random hashes; peak RSS growth of this process."""
    _ensure_import_path()
    import numpy as np

    from loupe_workers.curation.hamming import band_layout, connected_groups, hamming_pairs

    planted = min(1000, n // 4)
    hashes, distances, _ = _planted_hashes(n, planted, threshold, seed)
    connected_groups(4, np.array([0]), np.array([1]))  # import scipy before the baseline
    hamming_pairs(hashes[:5000], threshold)
    base = maxrss_mb()
    wall_pairs, cpu_pairs, (firsts, seconds) = timed(lambda: hamming_pairs(hashes, threshold))
    wall_groups, cpu_groups, labels = timed(lambda: connected_groups(n, firsts, seconds))
    peak = maxrss_mb()
    got = set(zip(firsts.tolist(), seconds.tolist(), strict=True))
    expected = {(2 * k, 2 * k + 1) for k in range(planted) if distances[k] <= threshold}
    sizes = np.bincount(labels)
    layout = band_layout(n, threshold)
    return {
        "n": n,
        "threshold": threshold,
        "bands": [w for _, w in layout],
        "probe_radius": threshold // len(layout),
        "pairs_seconds": round(wall_pairs, 2),
        "groups_seconds": round(wall_groups, 2),
        "total_seconds": round(wall_pairs + wall_groups, 2),
        "cpu_seconds": round(cpu_pairs + cpu_groups, 2),
        "pairs": len(got),
        "groups_with_2_plus": int((sizes > 1).sum()),
        "planted_within_threshold": len(expected),
        "planted_found": len(expected & got),
        "rss_baseline_mb": round(base, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_growth_mb": round(peak - base, 1),
    }


def corpus_grouping(hashes: list[str | None], threshold: int) -> Json:
    """Grouping over the real pHashes the pipeline produced (variants of few photos: many near pairs)."""
    _ensure_import_path()
    import numpy as np

    from loupe_workers.curation.hamming import connected_groups, hamming_pairs

    values = np.array([int(h, 16) for h in hashes if h], dtype=np.uint64)
    wall, _, (firsts, seconds) = timed(lambda: hamming_pairs(values, threshold))
    labels = connected_groups(len(values), firsts, seconds)
    sizes = np.bincount(labels)
    return {
        "n": len(values),
        "seconds": round(wall, 3),
        "pairs": len(firsts),
        "groups": len(sizes),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
    }


# ----------------------------------------------------------------------------------- other tools

_COMPARE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, types, importlib.util
    tool, folder = sys.argv[1], sys.argv[2]
    if tool == "imagededup":
        if importlib.util.find_spec("torch") is None:
            # imagededup.methods imports its CNN module (torch) eagerly; PHash does not use it.
            for name, attr in (("imagededup.methods.cnn", "CNN"), ("imagededup.utils.models", "CustomModel")):
                stub = types.ModuleType(name); setattr(stub, attr, None); sys.modules[name] = stub
        from imagededup.methods import PHash
        import imagededup
        encoder = PHash(verbose=False)
        t0 = time.perf_counter()
        encodings = encoder.encode_images(image_dir=folder, num_enc_workers=1)
        out = {"seconds": time.perf_counter() - t0, "images": len(encodings),
               "version": imagededup.__version__}
    else:
        import cleanvision
        from cleanvision import Imagelab
        t0 = time.perf_counter()
        lab = Imagelab(data_path=folder, verbose=False)
        lab.find_issues(n_jobs=1, verbose=False)
        out = {"seconds": time.perf_counter() - t0, "images": int(len(lab.issues)),
               "version": cleanvision.__version__}
    print("RESULT " + json.dumps(out))
    """
)


def _python_with(module: str, candidates: list[str]) -> str | None:
    for python in candidates:
        check = subprocess.run(
            [
                python,
                "-c",
                f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)",
            ],
            capture_output=True,
            check=False,
        )
        if check.returncode == 0:
            return python
    return None


def compare_tools(paths: list[Path], compare_python: str | None, blob_parent: str) -> Json:
    candidates = [sys.executable] + ([compare_python] if compare_python else [])
    results: Json = {"files": len(paths)}
    work = Path(tempfile.mkdtemp(prefix="loupe-bench-compare-", dir=blob_parent))
    try:
        for path in paths:
            target = work / path.name
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        warm_cache(paths)
        loupe = in_child(pipeline_child, str(work), len(paths), blob_parent, False)
        results["loupe_images_per_s"] = round(loupe["files"] / loupe["wall_s"], 1)
        wall, _ = plain_decode(sorted(work.glob("*.jpg")), "rgb")
        results["plain_rgb_images_per_s"] = round(len(paths) / wall, 1)
        for tool in ("imagededup", "cleanvision"):
            python = _python_with(tool, [c for c in candidates if c and Path(c).exists()])
            if python is None:
                results[tool] = {
                    "skipped": f"{tool} not importable here; install it in a throwaway venv and pass "
                    "--compare-python (see benchmarks/README.md)"
                }
                log(f"  {tool}: skipped (not importable)")
                continue
            proc = subprocess.run(
                [python, "-c", _COMPARE_SCRIPT, tool, str(work)],
                capture_output=True,
                text=True,
                check=False,
                timeout=1800,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                results[tool] = {"skipped": f"failed: {proc.stderr.strip()[-400:]}"}
                log(f"  {tool}: failed ({proc.stderr.strip()[-200:]})")
                continue
            data = json.loads(line[len("RESULT ") :])
            data["images_per_s"] = round(len(paths) / data["seconds"], 1)
            data["python"] = python
            results[tool] = data
            log(f"  {tool} {data['version']}: {data['images_per_s']} images/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


# ------------------------------------------------------------------------------------------ driver


def measure_group(args: argparse.Namespace, root: Path, group: str, per_group: int) -> Json:
    folder = root / group
    paths = group_files(root, group, per_group)
    n = len(paths)
    log(f"\n== {group}: {n} files")
    warm_cache(paths)
    warm_cache(paths)
    runs: dict[str, list[Json]] = {"pipeline": [], "plain_load": [], "plain_rgb": [], "plain_draft": []}
    hashes: list[str | None] = []
    for repeat in range(args.repeats):
        with Conditions() as conditions:
            result = in_child(pipeline_child, str(folder), n, args.tmp, False)
        hashes = result.pop("hashes")
        result.update(conditions.record)
        runs["pipeline"].append(result)
        log(
            f"  [{repeat + 1}/{args.repeats}] pipeline    {n / result['wall_s']:8.1f} img/s "
            f"(cpu/wall {result['cpu_s'] / result['wall_s']:.2f}, {_conditions_text(conditions.record)})"
        )
        for mode in ("load", "rgb", "draft"):
            with Conditions() as conditions:
                wall, cpu = plain_decode(paths, mode)
            runs[f"plain_{mode}"].append({"wall_s": wall, "cpu_s": cpu, **conditions.record})
            log(
                f"  [{repeat + 1}/{args.repeats}] plain {mode:5s} {n / wall:8.1f} img/s "
                f"(cpu/wall {cpu / wall:.2f}, {_conditions_text(conditions.record)})"
            )
    log("  memory pass (tracemalloc on; not timed)...")
    traced = in_child(pipeline_child, str(folder), n, args.tmp, True)
    traced.pop("hashes")
    log("  stage breakdown pass...")
    stages = in_child(stages_child, str(folder), n, args.tmp)

    def rate(key: str) -> float:
        return round(n / median([r["wall_s"] for r in runs[key]]), 1)

    def cpu_rate(key: str) -> float:
        return round(n / median([r["cpu_s"] for r in runs[key]]), 1)

    first = runs["pipeline"][0]
    out: Json = {
        "files": n,
        "repeats": args.repeats,
        "pipeline_ok": first["ok"],
        "pipeline_failed": first["failed"],
        "images_per_s": {k: rate(k) for k in runs},
        "images_per_cpu_s": {k: cpu_rate(k) for k in runs},
        "ratio_pipeline_vs_plain_load": round(rate("pipeline") / rate("plain_load"), 3),
        "ratio_pipeline_vs_plain_rgb": round(rate("pipeline") / rate("plain_rgb"), 3),
        "ratio_pipeline_vs_plain_draft": round(rate("pipeline") / rate("plain_draft"), 3),
        "ratio_pipeline_vs_plain_load_cpu": round(cpu_rate("pipeline") / cpu_rate("plain_load"), 3),
        # each repeat's pipeline and plain runs are adjacent in time: their ratio cancels slow drifts
        "ratio_per_repeat": [
            round(q["wall_s"] / p["wall_s"], 3)
            for p, q in zip(runs["pipeline"], runs["plain_load"], strict=True)
        ],
        "images_per_s_range": {
            k: [round(n / max(r["wall_s"] for r in v), 1), round(n / min(r["wall_s"] for r in v), 1)]
            for k, v in runs.items()
        },
        "memory": {
            "rss_peak_mb": max(r["rss_peak_mb"] for r in runs["pipeline"]),
            "rss_growth_mb": max(r["rss_growth_mb"] for r in runs["pipeline"]),
            "rss_baseline_mb": first["rss_baseline_mb"],
            "tracemalloc_peak_mb": traced["tracemalloc_peak_mb"],
            "tracemalloc_pass_rss_peak_mb": traced["rss_peak_mb"],
        },
        "stages": stages,
        "runs": {
            k: [{kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in r.items()} for r in v]
            for k, v in runs.items()
        },
        "corpus_phash_grouping": corpus_grouping(hashes, args.threshold),
    }
    log(
        f"  median: pipeline {out['images_per_s']['pipeline']} img/s, plain load {out['images_per_s']['plain_load']}, "
        f"plain rgb {out['images_per_s']['plain_rgb']} -> ratio {out['ratio_pipeline_vs_plain_load']} "
        f"(vs rgb {out['ratio_pipeline_vs_plain_rgb']})"
    )
    if args.profile:
        log(f"  cProfile of the pipeline on {args.profile} files...")
        out["profile"] = in_child(profile_child, str(folder), args.profile, args.tmp, 30)
        log(out["profile"])
    return out


def _conditions_text(record: Json) -> str:
    text = f"load {record['loadavg_after'][0]}"
    if "machine_busy_pct" in record:
        text += f", machine busy {record['machine_busy_pct']}% steal {record['steal_pct']}%"
        text += f" iowait {record['iowait_pct']}%"
    return text


def environment() -> Json:
    import numpy
    import PIL
    from PIL import features

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "libjpeg_version": features.version("jpg"),
        "numpy": numpy.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value < target
    return "MEETS" if ok else "MISSES"


def print_table(results: Json) -> None:
    rows: list[tuple[str, str, str]] = []
    for group in GROUPS:
        g = results["groups"].get(group)
        if not g:
            continue
        ips = g["images_per_s"]
        target = TARGETS[f"ratio_{group}"]
        rows += [
            (f"{group} pipeline (InlineExecutor)", f"{ips['pipeline']:.1f} img/s", ""),
            (f"{group} plain Pillow load()", f"{ips['plain_load']:.1f} img/s", ""),
            (f"{group} plain Pillow convert('RGB')", f"{ips['plain_rgb']:.1f} img/s", ""),
            (
                f"{group} plain Pillow draft+load()",
                f"{ips['plain_draft']:.1f} img/s",
                "(lower bound of decode)",
            ),
            (
                f"{group} ratio pipeline/plain load",
                f"{g['ratio_pipeline_vs_plain_load']:.3f}",
                f"target >= {target}: {verdict(g['ratio_pipeline_vs_plain_load'], target, True)}",
            ),
            (f"{group} ratio pipeline/plain rgb", f"{g['ratio_pipeline_vs_plain_rgb']:.3f}", ""),
            (
                f"{group} ratio, CPU-time based",
                f"{g['ratio_pipeline_vs_plain_load_cpu']:.3f}",
                "(load-insensitive)",
            ),
            (
                f"{group} pipeline peak RSS",
                f"{g['memory']['rss_peak_mb']:.0f} MB",
                f"growth {g['memory']['rss_growth_mb']:.1f} MB",
            ),
            (f"{group} pipeline tracemalloc peak", f"{g['memory']['tracemalloc_peak_mb']:.2f} MB", ""),
        ]
        stages = g["stages"]
        split = ", ".join(
            f"{k} {stages[k]['ms_per_image']:.2f}" for k in ("read", "sha256", "analyze_image", "put_blob")
        )
        rows.append((f"{group} stage ms/image", f"{stages['total_ms_per_image']:.2f}", split))
    grouping = results.get("grouping")
    if grouping:
        rows += [
            (
                f"grouping {grouping['n']:,} hashes t={grouping['threshold']}",
                f"{grouping['total_seconds']:.1f} s",
                f"target < {TARGETS['grouping_seconds']:.0f} s: "
                + verdict(grouping["total_seconds"], TARGETS["grouping_seconds"], False),
            ),
            (
                "grouping peak RSS growth",
                f"{grouping['rss_growth_mb']:.0f} MB",
                f"target < {TARGETS['grouping_rss_mb']:.0f} MB: "
                + verdict(grouping["rss_growth_mb"], TARGETS["grouping_rss_mb"], False),
            ),
            (
                "grouping planted pairs found",
                f"{grouping['planted_found']}/{grouping['planted_within_threshold']}",
                "",
            ),
        ]
    spot = results.get("spot_check")
    if spot:
        rows.append(
            (
                f"spot check {spot['n']} hashes vs brute force",
                "correct" if spot["correct"] else "WRONG",
                f"{spot['pairs_found']}/{spot['pairs_brute_force']} pairs, groups match {spot['groups_match']}",
            )
        )
    comp = results.get("compare")
    if comp:
        rows.append(
            (
                f"compare: Loupe pipeline ({comp['files']} x 640x480)",
                f"{comp['loupe_images_per_s']} img/s",
                "",
            )
        )
        for tool in ("imagededup", "cleanvision"):
            entry = comp.get(tool, {})
            value = f"{entry['images_per_s']} img/s" if "images_per_s" in entry else "skipped"
            rows.append((f"compare: {tool}", value, str(entry.get("skipped", ""))[:60]))
    load = results.get("load")
    if load:
        rows.append(
            (
                "load average (1 min) during run",
                f"mean {load['mean']}",
                f"min {load['min']} max {load['max']}; machine busy {load.get('machine_busy_pct')}%, "
                f"steal {load.get('steal_pct')}%, iowait {load.get('iowait_pct')}%",
            )
        )
    width = max(len(r[0]) for r in rows)
    log("\n" + "=" * (width + 40))
    for name, value, note in rows:
        log(f"{name:<{width}}  {value:>14}  {note}")
    log("=" * (width + 40))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000, help="corpus files in total, half per resolution")
    parser.add_argument("--hashes", type=int, default=1_000_000, help="random hashes for the grouping run")
    parser.add_argument("--threshold", type=int, default=8, help="Hamming threshold for grouping")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("~/.cache/loupe-bench/corpus-v1").expanduser(),
        help="corpus cache",
    )
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--noise", type=float, default=2.0, help="sensor-like noise sigma added to variants")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the corpus")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="parent folder of the blob stores")
    parser.add_argument(
        "--compare-files", type=int, default=300, help="640x480 files for imagededup/cleanvision"
    )
    parser.add_argument("--compare-python", default=None, help="python of a venv with imagededup/cleanvision")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-grouping", action="store_true")
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--profile", type=int, default=0, help="cProfile the pipeline on N files per group")
    parser.add_argument(
        "--code",
        type=Path,
        default=None,
        help="a folder with api/ and workers/ to benchmark instead of this checkout "
        "(e.g. a `git archive` snapshot, to measure a fixed commit while the tree changes)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    args.tmp = str(Path(args.tmp).expanduser().resolve())
    if args.code is not None:
        args.code = args.code.expanduser().resolve()
        os.environ[CODE_ENV] = str(args.code)  # inherited by every spawned measurement process
    return args


def code_info(code: Path | None) -> Json:
    """Which code was measured: the folder, and for a git checkout its commit and uncommitted changes."""
    root = code or REPO
    info: Json = {"path": str(root)}
    if (root / ".git").exists():

        def git(*argv: str) -> str:
            proc = subprocess.run(
                ["git", "-C", str(root), *argv], capture_output=True, text=True, check=False
            )
            return proc.stdout.strip()

        info["commit"] = git("rev-parse", "HEAD")
        info["uncommitted"] = git("status", "--porcelain", "--", "api", "workers").splitlines()
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    per_group = max(1, args.files // len(GROUPS))
    results: Json = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(),
        "code": code_info(args.code),
        "targets": TARGETS,
        "loadavg_start": loadavg(),
        "groups": {},
    }
    log(f"Loupe pipeline benchmark; load average at start {results['loadavg_start']}, {os.cpu_count()} CPUs")
    log(f"code: {json.dumps(results['code'])}")
    with LoadSampler() as sampler, Conditions() as whole_run:
        results["corpus"] = build_corpus(args.corpus, per_group, args.seed, args.noise, args.quality)
        log(f"corpus: {json.dumps({k: v for k, v in results['corpus'].items() if k != 'photos'})}")
        for group in args.groups:
            results["groups"][group] = measure_group(args, args.corpus, group, per_group)
        if not args.skip_grouping:
            log(f"\n== grouping {args.hashes:,} random 64-bit hashes at threshold {args.threshold}")
            results["spot_check"] = in_child(spot_check_child, 5000, args.threshold, args.seed)
            log(f"  spot check: {results['spot_check']}")
            with Conditions() as conditions:
                results["grouping"] = in_child(grouping_child, args.hashes, args.threshold, args.seed)
            results["grouping"].update(conditions.record)
            log(f"  grouping: {results['grouping']}")
        if not args.skip_compare:
            log(f"\n== other tools on {args.compare_files} 640x480 files")
            paths = group_files(args.corpus, "640x480", min(args.compare_files, per_group))
            results["compare"] = compare_tools(paths, args.compare_python, args.tmp)
    results["load"] = sampler.summary() | {
        k: v for k, v in whole_run.record.items() if not k.startswith("loadavg")
    }
    results["loadavg_end"] = loadavg()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
