"""Quality-gate benchmark on real photographs: precision and recall of every gate at its default threshold.

Run:  .venv/bin/python benchmarks/bench_quality.py [--sizes 640 full] [--cleanvision /tmp/bench-venv/bin/python]
      .venv/bin/python benchmarks/bench_quality.py --strata     # dataset-relative gates per camera only

Prints figures (and writes JSON with --out); it asserts nothing. The photos are the development corpus
(benchmarks/corpus.py: camera photographs from Debian's wallpaper packages, never the test photos). Each
photo is written at every size (640: long side 640 px; full: its own size, long side capped at 2560 px, so
1.3-4 MP) clean and with every degradation of DEGRADATIONS at a known strength, as JPEG quality 92, into
a cache folder. Each file goes through ``media.analyze_image`` (Loupe's one decode: blur and grain on the
detail image, at least 512 px long, the other measures on the 128-255 px working image reduced from it;
grain of a JPEG of 2048 px or more on a second, grey decode at half its size) and
``gates.failed_gates`` with the default QualityGates; with --cleanvision PYTHON, cleanvision's Imagelab
runs on the same files in that interpreter (a throwaway venv: it is not a Loupe dependency; found by
default at /tmp/cv-venv, made with ``python3 -m venv /tmp/cv-venv && /tmp/cv-venv/bin/pip install
cleanvision``).

Against overfitting, the photos are split by the parity of their place in name order: the even ones are
the tuning half (thresholds were chosen on it; the sweep prints it alone), the odd ones are held out, and
every figure is printed for both. Photos that are themselves faulty as shot are listed in ORIGINAL_FAULTS:
a flag of that fault on any copy of such a photo is right, so it is neither a false flag nor a hit; the
report says whether each tool saw it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "api"), str(REPO / "workers"), str(REPO / "benchmarks")]

import corpus  # noqa: E402
from loupe_api.dataset import QualityGates  # noqa: E402
from loupe_workers.curation import gates  # noqa: E402
from loupe_workers.media import decode as media  # noqa: E402

CORPUS_VERSION = 1
FULL_CAP = 2560  # the "full" size keeps the photo's own pixels, long side capped here (1.3-4 MP)
GATES = ("blur", "dark", "bright", "low_contrast", "noise")
HALVES = ("tune", "held")
# photos that are faulty as shot (looked at one by one): Storm is taken from a moving car (motion blur over
# the whole foreground, soft clouds); Wood is pale wood grain whose tones span about an eighth of the range
ORIGINAL_FAULTS = {"Storm": "blur", "Wood": "low_contrast"}
DEFAULT_CLEANVISION = Path("/tmp/cv-venv/bin/python")
Array = np.ndarray[Any, Any]


def _linear(x: Array) -> Array:
    return np.asarray((x / 255.0) ** 2.2)


def _srgb(x: Array) -> Array:
    return np.asarray(np.clip(x, 0.0, 1.0) ** (1 / 2.2) * 255.0)


def _gaussian(sigma_share: float) -> Callable[[Array, np.random.Generator], Array]:
    def apply(x: Array, _: np.random.Generator) -> Array:
        import cv2

        sigma = sigma_share * max(x.shape[:2])
        return np.asarray(cv2.GaussianBlur(x, (0, 0), sigma))

    return apply


def _defocus(radius_share: float) -> Callable[[Array, np.random.Generator], Array]:
    def apply(x: Array, _: np.random.Generator) -> Array:
        import cv2

        r = max(1, round(radius_share * max(x.shape[:2])))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = (xx**2 + yy**2 <= r * r).astype(np.float32)
        return np.asarray(cv2.filter2D(x, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT))

    return apply


def _exposure(stops: float) -> Callable[[Array, np.random.Generator], Array]:
    """A camera's exposure error: linear light times 2**stops, clipped at white."""
    return lambda x, _: _srgb(_linear(x) * 2.0**stops)


def _low_contrast(keep: float) -> Callable[[Array, np.random.Generator], Array]:
    """The tones squeezed toward their mean: ``keep`` of the original spread remains."""
    return lambda x, _: x.mean() + (x - x.mean()) * keep


def _noise(sigma: float) -> Callable[[Array, np.random.Generator], Array]:
    """Gaussian sensor noise, sigma on the 0-255 scale, independent per channel and pixel."""
    return lambda x, rng: x + rng.normal(0.0, sigma, x.shape)


def _poisson(peak: float) -> Callable[[Array, np.random.Generator], Array]:
    """Shot noise: ``peak`` photons at white (fewer photons, more noise)."""
    return lambda x, rng: rng.poisson(np.clip(x, 0, 255) / 255.0 * peak) / peak * 255.0


# name -> (the gate that must flag it, or None for "must not be flagged", the transform, JPEG quality)
DEGRADATIONS: dict[str, tuple[str | None, Callable[[Array, np.random.Generator], Array] | None, int]] = {
    "clean": (None, None, 92),
    "jpeg_q50": (None, None, 50),
    "jpeg_q25": (None, None, 25),
    "blur_0.25%": ("blur", _gaussian(0.0025), 92),
    "blur_0.5%": ("blur", _gaussian(0.005), 92),
    "blur_1%": ("blur", _gaussian(0.01), 92),
    "defocus_0.5%": ("blur", _defocus(0.005), 92),
    "defocus_1%": ("blur", _defocus(0.01), 92),
    "over_+1": ("bright", _exposure(1.0), 92),
    "over_+2": ("bright", _exposure(2.0), 92),
    "over_+3": ("bright", _exposure(3.0), 92),
    "under_-3": ("dark", _exposure(-3.0), 92),
    "under_-4": ("dark", _exposure(-4.0), 92),
    "under_-5": ("dark", _exposure(-5.0), 92),
    "contrast_30%": ("low_contrast", _low_contrast(0.3), 92),
    "contrast_20%": ("low_contrast", _low_contrast(0.2), 92),
    "noise_5": ("noise", _noise(5.0), 92),
    "noise_10": ("noise", _noise(10.0), 92),
    "noise_20": ("noise", _noise(20.0), 92),
    "poisson_80": ("noise", _poisson(80.0), 92),
    "poisson_20": ("noise", _poisson(20.0), 92),
}
BLUR_NOTE = "blur strengths are Gaussian sigma / defocus radius as a share of the long side"


def _resized(image: Image.Image, size: str) -> Image.Image:
    side = 640 if size == "640" else min(FULL_CAP, max(image.size))
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def build(cache: Path, sizes: list[str], seed: int) -> list[dict[str, Any]]:
    """Write (once) every photo x size x degradation; return one row per file."""
    folder = cache / f"bench-quality-v{CORPUS_VERSION}-seed{seed}"
    rows: list[dict[str, Any]] = []
    sources = corpus.photos(cache)
    for index, source in enumerate(sources):
        name_of = source.parent.parent.parent.name if source.name[0].isdigit() else source.stem
        photo_id = f"{index:02d}-{name_of}"
        half = HALVES[index % 2]  # photo ids sort in index order: the parity of the place in name order
        base: dict[str, Image.Image] = {}
        for size in sizes:
            for name, (gate, transform, quality) in DEGRADATIONS.items():
                path = folder / size / f"{photo_id}__{name}.jpg"
                rows.append({
                    "path": path, "photo": photo_id, "size": size, "kind": name, "expect": gate, "half": half,
                    "original_fault": ORIGINAL_FAULTS.get(name_of),
                })  # fmt: skip
                if path.exists():
                    continue
                if size not in base:
                    with Image.open(source) as opened:
                        base[size] = _resized(opened.convert("RGB"), size)
                pixels = np.asarray(base[size], dtype=np.float32)
                if transform is not None:
                    rng = np.random.default_rng([seed, index, list(DEGRADATIONS).index(name)])
                    pixels = transform(pixels, rng)
                out = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                out.save(tmp, "JPEG", quality=quality)
                tmp.rename(path)
        print(f"  corpus: {index + 1}/{len(sources)} photos", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return rows


# The "blown-out" labelling of the exposure edits (printed beside the labelling by edit): a "+k stops"
# edit counts as over-exposed only when its own pixels show it, measured with numpy on the written file,
# independent of Loupe's measures: at least BLOWN_GAIN more of the frame has a channel at 250 or more than
# the clean copy of the same size, or the median luma (Rec. 601, 0-1) is at least BLOWN_MEDIAN (about
# 1.5 stops above middle grey). One stop more on a night scene or a dark forest clips nothing and leaves it
# normally exposed: under this labelling it is a non-positive (flagging it is a false flag), not a miss.
BLOWN_GAIN = 0.2
BLOWN_MEDIAN = 0.75


def _exposure_stats(path: Path) -> tuple[float, float]:
    """(share of pixels with a channel at 250+, median Rec. 601 luma in 0-1) of a written file."""
    with Image.open(path) as opened:
        x = np.asarray(opened.convert("RGB"), dtype=np.float32)
    luma = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]) / 255.0
    return float((x.max(axis=-1) >= 250).mean()), float(np.median(luma))


def blown_labels(rows: list[dict[str, Any]]) -> None:
    """Set ``expect_blown`` on every row: ``expect`` except for the over-exposure edits, which are
    "bright" only when they measurably blow highlights or push the mid-tones up (BLOWN_GAIN,
    BLOWN_MEDIAN), else None."""
    clean = {(r["photo"], r["size"]): r["path"] for r in rows if r["kind"] == "clean"}
    blown_of_clean: dict[Path, float] = {}
    for r in rows:
        r["expect_blown"] = r["expect"]
        if r["expect"] != "bright":
            continue
        blown, median = _exposure_stats(r["path"])
        reference = clean[(r["photo"], r["size"])]
        if reference not in blown_of_clean:
            blown_of_clean[reference] = _exposure_stats(reference)[0]
        blown_clean = blown_of_clean[reference]
        r["blown"] = (blown - blown_clean, median)
        r["expect_blown"] = "bright" if blown - blown_clean >= BLOWN_GAIN or median >= BLOWN_MEDIAN else None


def bright_table(rows: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """The bright gate under both labellings (by edit, and blown-out), per size and half."""
    out: dict[str, Any] = {}
    print("\nBright gate under both labellings (precision / recall; flagged of positives):")
    print(f"  labelling: by edit = every over_+k; blown-out = only edits that blow {BLOWN_GAIN:.0%} more of "
          f"the frame or lift the median luma to {BLOWN_MEDIAN}")  # fmt: skip
    for size, half, subset in _subsets(rows):
        cells = []
        for tool in tools:
            for key in ("expect", "expect_blown"):
                flagged = [r for r in subset if "bright" in r[tool]]
                positives = [r for r in subset if r[key] == "bright"]
                tp = sum(1 for r in flagged if r[key] == "bright")
                p = tp / len(flagged) if flagged else float("nan")
                rec = tp / len(positives) if positives else float("nan")
                out.setdefault(tool, {}).setdefault(key, {})[f"{size}/{half}"] = {
                    "precision": p,
                    "recall": rec,
                }
                cells.append(f"{tool} {'edit' if key == 'expect' else 'blown'} P {p:4.2f} R {rec:4.2f} "
                             f"({len(flagged):>3}/{len(positives):>3})")  # fmt: skip
        print(f"  {size:<6}{half:<6}" + "  ".join(cells))
    missed = sorted({f"{r['photo']}:{r['kind']}@{r['size']}" for r in rows
                     if r["expect_blown"] == "bright" and "bright" not in r["loupe"]})  # fmt: skip
    print(f"  loupe misses (blown-out labelling): {' '.join(missed) or 'none'}")
    return out


def loupe(rows: list[dict[str, Any]], spec: QualityGates) -> dict[str, float]:
    """Analyse every file (timed per size, bytes already in memory), then apply the gates."""
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        data = row["path"].read_bytes()
        start = time.process_time()
        analysis = media.analyze_image(data, max_pixels=media.DEFAULT_MAX_PIXELS)
        seconds[row["size"]] += time.process_time() - start
        counts[row["size"]] += 1
        record = {
            "status": "ok", "format": analysis.format, "width": analysis.width, "height": analysis.height,
            "media": "image", "extension": ".jpg", **analysis.metrics,
        }  # fmt: skip
        row["metrics"] = analysis.metrics
        row["loupe"] = {name for name, _, _ in gates.failed_gates(record, spec) if name in GATES}
    return {size: counts[size] / seconds[size] for size in counts if seconds[size] > 0}


_CLEANVISION = textwrap.dedent(
    """
    import json, sys, time
    from cleanvision import Imagelab
    paths = json.load(open(sys.argv[1]))
    start = time.process_time()
    lab = Imagelab(filepaths=paths)
    lab.find_issues({"blurry": {}, "dark": {}, "light": {}, "low_information": {}}, n_jobs=1, verbose=False)
    cpu = time.process_time() - start
    issues = lab.issues
    out = {}
    for path in paths:
        row = issues.loc[path]
        out[path] = [k for k in ("blurry", "dark", "light", "low_information") if bool(row[f"is_{k}_issue"])]
    json.dump({"flags": out, "cpu_s": cpu}, open(sys.argv[2], "w"))
    """
)
# cleanvision's issue -> the gate it stands for (it has no noise check; low information is its closest
# to low contrast)
_CV_GATES = {"blurry": "blur", "dark": "dark", "light": "bright", "low_information": "low_contrast"}


def cleanvision(rows: list[dict[str, Any]], python: str) -> dict[str, float]:
    per_size: dict[str, float] = {}
    for size in sorted({r["size"] for r in rows}):
        subset = [r for r in rows if r["size"] == size]
        with tempfile.TemporaryDirectory() as tmp:
            paths, out = Path(tmp) / "paths.json", Path(tmp) / "out.json"
            paths.write_text(json.dumps([str(r["path"]) for r in subset]))
            script = Path(tmp) / "cv.py"
            script.write_text(_CLEANVISION)
            subprocess.run([python, str(script), str(paths), str(out)], check=True, capture_output=True)
            result = json.loads(out.read_text())
        for r in subset:
            r["cleanvision"] = {_CV_GATES[k] for k in result["flags"][str(r["path"])]}
        per_size[size] = len(subset) / result["cpu_s"]
    return per_size


def _pr(rows: list[dict[str, Any]], tool: str, gate: str) -> tuple[float, float, int, int]:
    flagged = [r for r in rows if gate in r[tool]]
    positives = [r for r in rows if r["expect"] == gate]
    tp = sum(1 for r in flagged if r["expect"] == gate)
    precision = tp / len(flagged) if flagged else float("nan")
    recall = tp / len(positives) if positives else float("nan")
    return precision, recall, len(flagged), len(positives)


def set_original_faults(rows: list[dict[str, Any]], tools: list[str]) -> dict[str, list[str]]:
    """Take the fault a photo has as shot out of each tool's flags (kept in ``<tool>_original``): right,
    but not what the degradation tests. Returns, per tool, the photos whose clean copy it flagged so."""
    seen: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        fault = r["original_fault"]
        if fault is None:
            continue
        for tool in tools:
            r[f"{tool}_original"] = fault in r[tool]
            r[tool] = r[tool] - {fault}
            if r["kind"] == "clean" and r[f"{tool}_original"]:
                seen[tool].append(f"{r['photo']}@{r['size']}:{fault}")
    return seen


def _subsets(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    sizes = sorted({r["size"] for r in rows})
    out = []
    for size in [*sizes, "all"]:
        for half in [*HALVES, "both"]:
            subset = [r for r in rows if size in ("all", r["size"]) and half in ("both", r["half"])]
            out.append((size, half, subset))
    return out


def report(
    rows: list[dict[str, Any]],
    tools: list[str],
    speed: dict[str, dict[str, float]],
    originals: dict[str, list[str]],
) -> dict[str, Any]:
    out: dict[str, Any] = {"per_gate": {}, "per_kind": {}, "clean_flagged": {}, "images_per_cpu_s": speed}
    sizes = sorted({r["size"] for r in rows})
    photos = sorted({r["photo"] for r in rows})
    tune = [p for p in photos if any(r["half"] == "tune" for r in rows if r["photo"] == p)]
    print(f"\n{len(photos)} photos x {len(DEGRADATIONS)} variants x sizes {sizes} = {len(rows)} files")
    print(f"  tuning half ({len(tune)}): {' '.join(tune)}")
    print(f"  held-out half ({len(photos) - len(tune)}): {' '.join(p for p in photos if p not in tune)}")
    print("\nPer gate at the default threshold (precision / recall; flagged of positives):")
    header = f"  {'gate':<13}{'size':<6}{'half':<6}" + "".join(f"{t:>30}" for t in tools)
    print(header)
    for gate in GATES:
        for size, half, subset in _subsets(rows):
            cells = []
            for tool in tools:
                p, rec, flagged, positives = _pr(subset, tool, gate)
                out["per_gate"].setdefault(tool, {}).setdefault(gate, {})[f"{size}/{half}"] = {
                    "precision": p, "recall": rec, "flagged": flagged, "positives": positives,
                }  # fmt: skip
                cells.append(f"P {p:4.2f} R {rec:4.2f} ({flagged:>4}/{positives:>4})")
            print(f"  {gate:<13}{size:<6}{half:<6}" + "".join(f"{c:>30}" for c in cells))
    print(
        "\nPer transform: share flagged by the gate it belongs to (clean ones: by any gate), and by any other"
    )
    print(f"  {'transform':<15}{'size':<6}" + "".join(f"{t:>26}" for t in tools))
    for kind, (gate, _, _) in DEGRADATIONS.items():
        for size in sizes:
            subset = [r for r in rows if r["kind"] == kind and r["size"] == size]
            cells = []
            for tool in tools:
                if gate is None:
                    hit = sum(1 for r in subset if r[tool]) / len(subset)
                    other = hit
                else:
                    hit = sum(1 for r in subset if gate in r[tool]) / len(subset)
                    other = sum(1 for r in subset if r[tool] - {gate}) / len(subset)
                out["per_kind"].setdefault(tool, {}).setdefault(kind, {})[size] = {"hit": hit, "other": other}
                cells.append(f"{hit:5.2f} (other {other:4.2f})")
            print(f"  {kind:<15}{size:<6}" + "".join(f"{c:>26}" for c in cells))
    print(f"  ({BLUR_NOTE}; exposure in stops of linear light; noise sigma on 0-255 at the file's own size)")
    print("\nClean photos (clean and recompressed) flagged by any gate:")
    for tool in tools:
        for size, half, subset in _subsets(rows):
            clean = [r for r in subset if r["expect"] is None]
            flagged = [r for r in clean if r[tool]]
            out["clean_flagged"].setdefault(tool, {})[f"{size}/{half}"] = len(flagged) / len(clean)
            names = sorted(
                {f"{r['photo']}:{r['kind']}@{r['size']}:{','.join(sorted(r[tool]))}" for r in flagged}
            )
            print(
                f"  {tool:<12}{size:<6}{half:<6}{len(flagged):>3}/{len(clean):<4} = {len(flagged) / len(clean):.3f}"
                f"  {' '.join(names[:8])}"
            )
    print("\nPhotos faulty as shot (ORIGINAL_FAULTS), their clean copy flagged for that fault:")
    for tool in tools:
        print(f"  {tool}: {' '.join(originals.get(tool, [])) or 'none'}")
    print("\nImages per CPU second (analysis only, one core):")
    for tool, per_size in speed.items():
        print(f"  {tool}: " + ", ".join(f"{size} {value:.1f}" for size, value in sorted(per_size.items())))
    return out


def metric_table(rows: list[dict[str, Any]]) -> None:
    """Median (10th-90th percentile) of each stored measure per transform, to choose thresholds."""
    keys = (
        "sharpness", "noise", "clipped", "contrast", "tonal_range", "black_level", "brightness_p99",
        "brightness_p5",
    )  # fmt: skip
    print("\nMeasures per transform: median [p10, p90] (min, max) over photos")
    for size in sorted({r["size"] for r in rows}):
        print(f"  size {size}")
        for kind in DEGRADATIONS:
            values = [r["metrics"] for r in rows if r["kind"] == kind and r["size"] == size]
            cells = []
            for key in keys:
                v = np.array([m[key] for m in values])
                p10, p50, p90 = np.percentile(v, (10, 50, 90))
                cells.append(f"{key[:7]} {p50:6.3f} [{p10:6.3f},{p90:6.3f}] ({v.min():6.3f},{v.max():6.3f})")
            print(f"    {kind:<14}" + "  ".join(cells))


# gate -> (stored measure, flagged when below (True) or above, thresholds to try)
SWEEPS: dict[str, tuple[str, bool, tuple[float, ...]]] = {
    "blur": ("sharpness", True, (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)),
    "dark": ("brightness_p99", True, (0.25, 0.3, 0.32, 0.35, 0.4, 0.45)),
    "bright": ("clipped", False, (0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)),
    "low_contrast": ("contrast", True, (0.2, 0.25, 0.3, 0.33, 0.36, 0.4)),
    "noise": ("noise", False, (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5)),
}


def sweep(rows: list[dict[str, Any]]) -> None:
    """Precision / recall / clean photos flagged of each gate's measure alone, at several thresholds."""
    print(
        "\nThreshold sweep on the tuning half (each measure alone; clean = clean and recompressed flagged):"
    )
    tuning = [r for r in rows if r["half"] == "tune"]
    for gate, (key, below, thresholds) in SWEEPS.items():
        cells = []
        rows = [r for r in tuning if r["original_fault"] != gate]
        clean = [r for r in rows if r["expect"] is None]
        for t in thresholds:
            hit = [r for r in rows if (r["metrics"][key] < t if below else r["metrics"][key] > t)]
            tp = sum(1 for r in hit if r["expect"] == gate)
            positives = sum(1 for r in rows if r["expect"] == gate)
            fp_clean = sum(1 for r in hit if r["expect"] is None)
            p = tp / len(hit) if hit else float("nan")
            cells.append(f"{t:g}: P{p:.2f} R{tp / positives:.2f} c{fp_clean / len(clean):.3f}")
        print(f"  {gate:<13}{'<' if below else '>'} " + " | ".join(cells))
    # the low-contrast gate's second test: the contrast ratio at its default, or a tonal range below each
    # threshold with the darkest 1 % above each black level (as gates.low_contrast, photos more than 5 %
    # blown out left to the bright gate)
    default = QualityGates().low_contrast
    rows = [r for r in tuning if r["original_fault"] != "low_contrast"]
    clean = [r for r in rows if r["expect"] is None]
    positives = sum(1 for r in rows if r["expect"] == "low_contrast")
    for black in (0.15, 0.18, 0.2, 0.22, 0.25):
        cells = []
        for t in (0.25, 0.28, 0.3, 0.33, 0.36, 0.4):
            spec = default.model_copy(update={"max_range": t, "min_black": black})
            hit = [r for r in rows if gates.low_contrast(r["metrics"], spec)]
            tp = sum(1 for r in hit if r["expect"] == "low_contrast")
            fp_clean = sum(1 for r in hit if r["expect"] is None)
            p = tp / len(hit) if hit else float("nan")
            cells.append(f"{t:g}: P{p:.2f} R{tp / positives:.2f} c{fp_clean / len(clean):.3f}")
        print(f"  {'low_contrast':<13}contrast < {default.threshold:g} or range < t, black > {black:g}: "
              + " | ".join(cells))  # fmt: skip


# --- dataset-relative gates per stratum (--strata) ----------------------------------------------------
#
# A corpus of three "cameras" made from the development photos: each photo gives STRATA_SHOTS shots (crops
# of 70 % of each side at fixed places, long side STRATA_SIDE px), and every shot is taken by each camera:
#   sharp: the photo's own pixels;
#   soft:  a lens that is always softer (Gaussian blur, sigma 0.1 % of the long side), so its clean shots
#          sit about at the absolute blur threshold;
#   grainy: a noisier sensor (Gaussian grain, sigma 2.5 on 0-255), clean shots about at the noise threshold.
# A known share of each camera's shots (STRATA_FAULTY) gets one more fault on top of its camera's look,
# mild or strong, drawn by a seeded generator (the labels): extra blur, extra grain, under- or
# over-exposure, or squeezed tones. Each half (tune / held, by the photos' parity in name order, as above)
# is its own dataset: the stratum statistics of the held-out half are made on the held-out half alone.
# The strengths and the cameras were fixed before any relative figure was looked at; maxZ, the log scale
# of sharpness and noise and the spread floors were chosen on the tuning half (the sweep prints it alone).
STRATA_VERSION = 1
STRATA_SIDE = 1280
STRATA_SHOTS = 4
STRATA_FAULTY = 0.3
STRATA_CROPS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))  # crop places in the free margin
CAMERAS: dict[str, Callable[[Array, np.random.Generator], Array] | None] = {
    "sharp": None,
    "soft": _gaussian(0.001),
    "grainy": _noise(2.5),
}
# gate -> (mild, strong) extra fault on top of the camera's look
STRATA_FAULTS: dict[str, tuple[Callable[[Array, np.random.Generator], Array], ...]] = {
    "blur": (_gaussian(0.0012), _gaussian(0.0025)),
    "noise": (_noise(4.0), _noise(8.0)),
    "dark": (_exposure(-2.5), _exposure(-4.0)),
    "bright": (_exposure(1.0), _exposure(2.0)),
    "low_contrast": (_low_contrast(0.45), _low_contrast(0.3)),
}


def build_strata(cache: Path, seed: int) -> list[dict[str, Any]]:
    """Write (once) every photo x shot x camera, a seeded STRATA_FAULTY share with one extra fault."""
    folder = cache / f"bench-strata-v{STRATA_VERSION}-seed{seed}"
    rows: list[dict[str, Any]] = []
    sources = corpus.photos(cache)
    for index, source in enumerate(sources):
        name_of = source.parent.parent.parent.name if source.name[0].isdigit() else source.stem
        photo_id = f"{index:02d}-{name_of}"
        shots: list[Array] | None = None
        for shot in range(STRATA_SHOTS):
            for c, camera in enumerate(CAMERAS):
                rng = np.random.default_rng([seed, index, shot, c])
                fault = None
                if rng.random() < STRATA_FAULTY:
                    fault = list(STRATA_FAULTS)[int(rng.integers(len(STRATA_FAULTS)))]
                strength = int(rng.integers(2))
                path = folder / f"{photo_id}__{shot}__{camera}.jpg"
                rows.append({
                    "path": path, "photo": photo_id, "camera": camera, "lens": camera, "expect": fault,
                    "strength": ("mild", "strong")[strength] if fault else None,
                    "half": HALVES[index % 2], "original_fault": ORIGINAL_FAULTS.get(name_of),
                })  # fmt: skip
                if path.exists():
                    continue
                if shots is None:
                    with Image.open(source) as opened:
                        whole = opened.convert("RGB")
                    shots = []
                    for x, y in STRATA_CROPS:
                        w, h = round(whole.width * 0.7), round(whole.height * 0.7)
                        left, top = round((whole.width - w) * x), round((whole.height - h) * y)
                        crop = _resized(whole.crop((left, top, left + w, top + h)), "full")
                        scale = STRATA_SIDE / max(crop.size)
                        if scale < 1:
                            size = (round(crop.width * scale), round(crop.height * scale))
                            crop = crop.resize(size, Image.Resampling.LANCZOS)
                        shots.append(np.asarray(crop, dtype=np.float32))
                pixels = shots[shot]
                look = CAMERAS[camera]
                if look is not None:  # clipped as the camera writes it, before any fault on top
                    pixels = np.clip(np.rint(look(pixels, rng)), 0, 255)
                if fault is not None:
                    pixels = STRATA_FAULTS[fault][strength](pixels, rng)
                out = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                out.save(tmp, "JPEG", quality=92)
                tmp.rename(path)
        print(f"  strata corpus: {index + 1}/{len(sources)} photos", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return rows


# The second corpus is the line engineer's: fixed cameras, each looking at one scene. Every development
# photo is one camera (so the tuning and held-out halves have 18 cameras each, none shared); each camera
# takes FIXED_SHOTS shots, crops of 80 % of each side at a seeded random place (the part moves on the line)
# with a seeded exposure jitter of +-0.15 stops (the light), long side FIXED_SIDE px; a third of the cameras
# have the soft lens and a third the grainy sensor of CAMERAS. The faults are those of STRATA_FAULTS, on a
# STRATA_FAULTY share of the shots. Fixed before any relative figure was looked at.
FIXED_SHOTS = 24
FIXED_SIDE = 1024


def build_fixed(cache: Path, seed: int) -> list[dict[str, Any]]:
    """Write (once) FIXED_SHOTS shots of every fixed camera (one per development photo)."""
    folder = cache / f"bench-fixed-v{STRATA_VERSION}-seed{seed}"
    rows: list[dict[str, Any]] = []
    sources = corpus.photos(cache)
    lenses = list(CAMERAS)
    for index, source in enumerate(sources):
        name_of = source.parent.parent.parent.name if source.name[0].isdigit() else source.stem
        photo_id = f"{index:02d}-{name_of}"
        lens = lenses[index % len(lenses)]
        whole: Image.Image | None = None
        for shot in range(FIXED_SHOTS):
            rng = np.random.default_rng([seed, index, shot, 99])
            fault = None
            if rng.random() < STRATA_FAULTY:
                fault = list(STRATA_FAULTS)[int(rng.integers(len(STRATA_FAULTS)))]
            strength = int(rng.integers(2))
            x, y, stops = float(rng.random()), float(rng.random()), float(rng.uniform(-0.15, 0.15))
            path = folder / f"{photo_id}__{shot:02d}.jpg"
            rows.append({
                "path": path, "photo": photo_id, "camera": f"cam{index:02d}", "lens": lens, "expect": fault,
                "strength": ("mild", "strong")[strength] if fault else None,
                "half": HALVES[index % 2], "original_fault": ORIGINAL_FAULTS.get(name_of),
            })  # fmt: skip
            if path.exists():
                continue
            if whole is None:
                with Image.open(source) as opened:
                    whole = _resized(opened.convert("RGB"), "full")
            w, h = round(whole.width * 0.8), round(whole.height * 0.8)
            left, top = round((whole.width - w) * x), round((whole.height - h) * y)
            crop = whole.crop((left, top, left + w, top + h))
            scale = FIXED_SIDE / max(crop.size)
            crop = crop.resize(
                (round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS
            )
            pixels = np.clip(_exposure(stops)(np.asarray(crop, dtype=np.float32), rng), 0, 255)
            look = CAMERAS[lens]
            if look is not None:
                pixels = np.clip(np.rint(look(pixels, rng)), 0, 255)
            if fault is not None:
                pixels = STRATA_FAULTS[fault][strength](pixels, rng)
            out = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            out.save(tmp, "JPEG", quality=92)
            tmp.rename(path)
        print(f"  fixed-camera corpus: {index + 1}/{len(sources)} cameras", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return rows


def _strata_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records = []
    for row in rows:
        if "metrics" not in row:
            analysis = media.analyze_image(row["path"].read_bytes(), max_pixels=media.DEFAULT_MAX_PIXELS)
            row["metrics"], row["shape"] = (
                analysis.metrics,
                (analysis.format, analysis.width, analysis.height),
            )
        fmt, width, height = row["shape"]
        records.append({
            "status": "ok", "format": fmt, "width": width, "height": height, "media": "image",
            "extension": ".jpg", "sha256": str(row["path"]), "source": "bench",
            "metadata": json.dumps({"camera": row["camera"]}), **row["metrics"],
        })  # fmt: skip
    return records


def _strata_flags(
    rows: list[dict[str, Any]], records: list[dict[str, Any]], spec: QualityGates
) -> list[dict[str, set[str]]]:
    """Per row: the gates the absolute gate, the relative gate and either of them flag (the halves are
    judged as separate datasets)."""
    from loupe_workers.curation import outliers

    out: list[dict[str, set[str]]] = [{} for _ in rows]
    for half in HALVES:
        members = [i for i, r in enumerate(rows) if r["half"] == half]
        judgement = outliers.judge([records[i] for i in members], spec)
        for position, i in enumerate(members):
            absolute = {n for n, _, _ in gates.failed_gates(records[i], spec) if n in GATES}
            relative = {v.gate for v in judgement.verdicts.get(position, [])}
            fault = rows[i]["original_fault"]  # faulty as shot: that flag is right, neither hit nor miss
            if fault is not None:
                absolute, relative = absolute - {fault}, relative - {fault}
            out[i] = {"absolute": absolute, "relative": relative, "both": absolute | relative}
    return out


def _relative_spec(max_z: float | None = None, min_samples: int = 20) -> QualityGates:
    relative = {"by": "metadata.camera", "minSamples": min_samples}
    if max_z is not None:
        relative["maxZ"] = max_z
    return QualityGates.model_validate({g: {"relative": relative} for g in GATES})


def strata_report(rows: list[dict[str, Any]], title: str) -> dict[str, Any]:
    records = _strata_records(rows)
    spec = _relative_spec()
    flags = _strata_flags(rows, records, spec)
    methods = ("absolute", "relative", "both")
    out: dict[str, Any] = {"per_gate": {}, "clean_flagged": {}}
    strata = {h: len({r["camera"] for r in rows if r["half"] == h}) for h in HALVES}
    print(f"\n{title}: {len(rows)} files, strata (metadata.camera) per half {strata}, "
          f"{STRATA_FAULTY:.0%} with one extra fault")  # fmt: skip
    print("Median sharpness / noise of the clean shots per lens (tuning half):")
    for camera in CAMERAS:
        clean = [
            r["metrics"] for r in rows if r["lens"] == camera and r["expect"] is None and r["half"] == "tune"
        ]
        print(f"  {camera:<8} sharpness {np.median([m['sharpness'] for m in clean]):.3f}"
              f"  noise {np.median([m['noise'] for m in clean]):.3f}")  # fmt: skip
    print("\nPer gate, default thresholds, relative by metadata.camera at maxZ 3.5 (precision / recall; "
          "flagged of positives):")  # fmt: skip
    print(f"  {'gate':<13}{'half':<6}" + "".join(f"{m:>30}" for m in methods))
    for gate in GATES:
        for half in HALVES:
            cells = []
            for method in methods:
                subset = [(r, f) for r, f in zip(rows, flags, strict=True) if r["half"] == half]
                hit = [r for r, f in subset if gate in f[method]]
                positives = [r for r, _ in subset if r["expect"] == gate]
                tp = sum(1 for r in hit if r["expect"] == gate)
                p = tp / len(hit) if hit else float("nan")
                rec = tp / len(positives) if positives else float("nan")
                out["per_gate"].setdefault(method, {}).setdefault(gate, {})[half] = {
                    "precision": p, "recall": rec, "flagged": len(hit), "positives": len(positives)
                }  # fmt: skip
                cells.append(f"P {p:4.2f} R {rec:4.2f} ({len(hit):>4}/{len(positives):>4})")
            print(f"  {gate:<13}{half:<6}" + "".join(f"{c:>30}" for c in cells))
    print("\nAll five gates together (a flag counts when its gate is the fault's):")
    for half in HALVES:
        cells = []
        for method in methods:
            subset = [(r, f) for r, f in zip(rows, flags, strict=True) if r["half"] == half]
            hit = sum(len(f[method]) for _, f in subset)
            tp = sum(1 for r, f in subset if r["expect"] in f[method])
            positives = sum(1 for r, _ in subset if r["expect"] is not None)
            cells.append(f"P {tp / max(hit, 1):4.2f} R {tp / positives:4.2f} ({hit:>4}/{positives:>4})")
        print(f"  {'all':<13}{half:<6}" + "".join(f"{c:>30}" for c in cells))
    print("\nClean shots flagged by any gate, per lens:")
    for half in HALVES:
        for camera in [*CAMERAS, "all"]:
            clean = [f for r, f in zip(rows, flags, strict=True)
                     if r["half"] == half and r["expect"] is None and camera in ("all", r["lens"])]  # fmt: skip
            cells = []
            for method in methods:
                share = sum(1 for f in clean if f[method]) / len(clean)
                out["clean_flagged"].setdefault(method, {})[f"{half}/{camera}"] = share
                cells.append(f"{sum(1 for f in clean if f[method]):>4}/{len(clean):<4} = {share:.3f}")
            print(f"  {half:<6}{camera:<8}" + "".join(f"{c:>24}" for c in cells))
    print("\nRecall per lens and strength (absolute / relative / both), held-out half:")
    for gate in GATES:
        cells = []
        for camera in CAMERAS:
            for strength in ("mild", "strong"):
                pos = [f for r, f in zip(rows, flags, strict=True) if r["half"] == "held" and r["expect"] == gate
                       and r["lens"] == camera and r["strength"] == strength]  # fmt: skip
                if not pos:
                    cells.append(f"{camera}/{strength} -")
                    continue
                rates = "/".join(f"{sum(1 for f in pos if gate in f[m]) / len(pos):.2f}" for m in methods[:3])
                cells.append(f"{camera}/{strength} {rates} (n {len(pos)})")
        print(f"  {gate:<13}" + "  ".join(cells))
    print("\nmaxZ sweep of the relative gate alone, tuning half (all gates: P / R / clean flagged):")
    tuning = [i for i, r in enumerate(rows) if r["half"] == "tune"]
    for max_z in (2.5, 3.0, 3.5, 4.0, 5.0):
        swept = _strata_flags(rows, records, _relative_spec(max_z))
        hit = sum(len(swept[i]["relative"]) for i in tuning)
        tp = sum(1 for i in tuning if rows[i]["expect"] in swept[i]["relative"])
        positives = sum(1 for i in tuning if rows[i]["expect"] is not None)
        clean = [i for i in tuning if rows[i]["expect"] is None]
        fp = sum(1 for i in clean if swept[i]["relative"]) / len(clean)
        print(f"  maxZ {max_z:<4g} P {tp / max(hit, 1):.2f} R {tp / positives:.2f} clean {fp:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["640", "full"], choices=["640", "full"])
    parser.add_argument("--cache", type=Path, default=None, help="default: ~/.cache/loupe-tools/dev-corpus")
    parser.add_argument(
        "--cleanvision",
        default=str(DEFAULT_CLEANVISION) if DEFAULT_CLEANVISION.exists() else None,
        help=f"a Python with cleanvision installed (default: {DEFAULT_CLEANVISION} when it exists; 'none': skip)",
    )
    parser.add_argument("--gates", default="{}", help="QualityGates as JSON (camelCase), default: defaults")
    parser.add_argument("--measures", action="store_true", help="also print each measure per transform")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument(
        "--strata", action="store_true", help="only the dataset-relative (per camera) benchmark"
    )
    args = parser.parse_args(argv)
    cache = args.cache or corpus.default_cache()
    if args.strata:
        figures = {
            "mixed_scenes": strata_report(
                build_strata(cache, args.seed), "Three cameras, every scene shot by each (mixed scenes)"
            ),
            "fixed_cameras": strata_report(
                build_fixed(cache, args.seed), "Fixed cameras, one scene each (a line or a site)"
            ),
        }
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2, default=str))
        return 0
    rows = build(cache, args.sizes, args.seed)
    spec = QualityGates.model_validate(json.loads(args.gates))
    speed = {"loupe": loupe(rows, spec)}
    tools = ["loupe"]
    if args.cleanvision and args.cleanvision != "none":
        speed["cleanvision"] = cleanvision(rows, args.cleanvision)
        tools.append("cleanvision")
    originals = set_original_faults(rows, tools)
    if args.measures:
        metric_table(rows)
        sweep(rows)
    figures = report(rows, tools, speed, originals)
    blown_labels(rows)
    figures["bright_labellings"] = bright_table(rows, tools)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
